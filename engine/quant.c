/*
 * quant.c — the quantized K/V types: int8, fp8 E4M3 and fp8 E5M2.
 *
 * A stored row (one token of one KV head) is head_dim 1-byte codes and then
 * one f32 scale (pkv_kv_layout: slot_stride = head_dim + 4).  An element
 * reads back as value(code) * scale.  Writing a row (prefill, decode):
 *
 *   amax  = max |x_d| over the row
 *   scale = amax / QMAX         QMAX = 127 (int8), 448 (E4M3), 57344 (E5M2),
 *                               rounded down if QMAX * scale would exceed amax
 *   code  = encode(x_d / scale) int8: round half to even, clamp to ±127;
 *                               fp8: round to nearest even, saturating
 *
 * A scale per row rather than per block: decode appends a block's rows one
 * at a time, and a block-wide scale would have to grow as larger rows
 * arrive, re-encoding rows already attended (and rows of committed, shared
 * blocks, which must not change).  The row's own scale costs 4 bytes per
 * head_dim codes (3 % at 128) and is as accurate as the code allows.
 *
 * Edge cases, defined here once and identical on every back end (the
 * kernels only decode; every back end stores through this file):
 *   - amax == 0 (an all-zero row): scale 0, codes 0 — reads back as zeros;
 *   - amax so small that x_d / scale is inexact: still exact enough, since
 *     the division is done per element (no reciprocal that could overflow);
 *   - any non-finite element (NaN, ±Inf): the scale is NaN and the codes 0,
 *     so every element of the row reads back as NaN: attention over that
 *     key or value then follows the engine's NaN rules (docs/API-engine.md);
 *   - a finite row never overflows: scale <= FLT_MAX / QMAX and every
 *     |x_d / scale| <= QMAX.
 *
 * Decoding fp8 in the kernels: an E5M2 code is the top byte of the f16 of
 * the same value, so it widens exactly through the f16 conversion
 * instruction; an E4M3 code (sign, 4 exponent bits, 3 mantissa bits, bias
 * 7) placed as (code & 0x7f) << 7 under the sign is an f16 of value * 2^-8
 * (normal and subnormal alike), so the kernels convert that and fold the
 * 2^8 into the row's scale (pkv__quant_unit).  E4M3's NaN code (0x7f) and
 * E5M2's Inf/NaN codes are never written.
 */
#include "engine_internal.h"

#include <math.h>
#include <string.h>

static float qmax(pkv_dtype dt) {
  return dt == PKV_DTYPE_I8 ? 127.0f : dt == PKV_DTYPE_FP8_E4M3 ? 448.0f : 57344.0f;
}

/* fp8 with mbits mantissa bits and exponent bias `bias`, |x| <= maxv. */
static uint8_t fp8_encode(float x, int mbits, int bias, float maxv, uint8_t max_code) {
  uint8_t sign = signbit(x) ? 0x80 : 0;
  float a = fabsf(x);
  if (a >= maxv) return sign | max_code;
  int e;
  (void)frexpf(a, &e);          /* a in [2^(e-1), 2^e) */
  int E = e - 1, emin = 1 - bias;
  if (a == 0.0f || E < emin) E = emin; /* subnormals share the smallest quantum */
  float r = nearbyintf(ldexpf(a, mbits - E)); /* exact scaling, then round to even */
  const float one = (float)(1 << mbits);
  if (r >= 2.0f * one) { /* rounded up into the next binade */
    r = one;
    E++;
  }
  if (r < one) return sign | (uint8_t)r; /* subnormal (E == emin) */
  uint8_t code = (uint8_t)(((E + bias) << mbits) | (int)(r - one));
  return code > max_code ? sign | max_code : sign | code;
}

static float fp8_decode(uint8_t code, int mbits, int bias) {
  int biased = (code & 0x7f) >> mbits, mant = code & ((1 << mbits) - 1);
  float v = biased == 0 ? ldexpf((float)mant, 1 - bias - mbits)
                        : ldexpf((float)(mant + (1 << mbits)), biased - bias - mbits);
  return code & 0x80 ? -v : v;
}

uint8_t pkv__f32_to_fp8_e4m3(float x) { return fp8_encode(x, 3, 7, 448.0f, 0x7e); }
uint8_t pkv__f32_to_fp8_e5m2(float x) { return fp8_encode(x, 2, 15, 57344.0f, 0x7b); }
float pkv__fp8_e4m3_to_f32(uint8_t code) { return fp8_decode(code, 3, 7); }
float pkv__fp8_e5m2_to_f32(uint8_t code) { return fp8_decode(code, 2, 15); }

void pkv__quant_store_row(void *dst, const float *src, uint32_t n, pkv_dtype dtype) {
  uint8_t *codes = dst;
  float amax = 0.0f;
  int finite = 1;
  for (uint32_t i = 0; i < n; i++) {
    if (!isfinite(src[i])) finite = 0;
    else if (fabsf(src[i]) > amax) amax = fabsf(src[i]);
  }
  float scale = finite ? amax / qmax(dtype) : NAN;
  /* rounded down if need be, so that QMAX * scale <= amax: a code never
   * reads back above the row's largest magnitude (nor overflows to Inf) */
  if (finite && scale * qmax(dtype) > amax) scale = nextafterf(scale, 0.0f);
  if (!finite || amax == 0.0f) {
    memset(codes, 0, n);
  } else {
    for (uint32_t i = 0; i < n; i++) {
      float y = src[i] / scale;
      if (dtype == PKV_DTYPE_I8) {
        float r = nearbyintf(y);
        codes[i] = (uint8_t)(int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r);
      } else {
        codes[i] = dtype == PKV_DTYPE_FP8_E4M3 ? pkv__f32_to_fp8_e4m3(y) : pkv__f32_to_fp8_e5m2(y);
      }
    }
  }
  memcpy(codes + n, &scale, sizeof scale);
}

void pkv__quant_load_row(float *dst, const void *src, uint32_t n, pkv_dtype dtype) {
  const uint8_t *codes = src;
  float scale;
  memcpy(&scale, codes + n, sizeof scale);
  for (uint32_t i = 0; i < n; i++) {
    float v = dtype == PKV_DTYPE_I8        ? (float)(int8_t)codes[i]
              : dtype == PKV_DTYPE_FP8_E4M3 ? pkv__fp8_e4m3_to_f32(codes[i])
                                            : pkv__fp8_e5m2_to_f32(codes[i]);
    dst[i] = v * scale;
  }
}
