/*
 * kern_avx512.c — the avx512 back end: kern_body.h compiled with
 * PKV_SIMD_AVX512 (the Makefile adds the -m flags for *_avx512.c).
 */
#define PKV_SIMD_AVX512 1
#define KERN_TABLE_NAME pkv__kernels_avx512
#include "kern_body.h"
