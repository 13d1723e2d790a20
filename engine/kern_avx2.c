/*
 * kern_avx2.c — the avx2 back end: kern_body.h compiled with
 * PKV_SIMD_AVX2 (the Makefile adds the -m flags for *_avx2.c).
 */
#define PKV_SIMD_AVX2 1
#define KERN_TABLE_NAME pkv__kernels_avx2
#include "kern_body.h"
