/*
 * kern_scalar.c — the scalar back end: kern_body.h compiled with
 * PKV_SIMD_SCALAR.
 */
#define PKV_SIMD_SCALAR 1
#define KERN_TABLE_NAME pkv__kernels_scalar
#include "kern_body.h"
