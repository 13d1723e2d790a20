/*
 * simd.h — the SIMD vocabulary the attention kernels are written in.
 *
 * A kernel body (kern_body.h) is written once against these names; each
 * back-end translation unit defines exactly one of
 *   PKV_SIMD_AVX512   16 f32 lanes, 32 vector registers (kern_avx512.c)
 *   PKV_SIMD_AVX2      8 f32 lanes, 16 vector registers (kern_avx2.c)
 *   PKV_SIMD_SCALAR    1 lane, plain C             (kern_scalar.c)
 * before including this header, and the Makefile compiles the file with the
 * matching -m flags.  Nothing here may be used outside those files: the rest
 * of the library is built for the baseline ISA.
 *
 *   pkv_vf                      a vector of PKV_VL floats
 *   PKV_F32_ZERO()              all lanes 0
 *   PKV_F32_BROADCAST(x)        all lanes x
 *   PKV_F32_LOAD(p)/STORE(p,v)  unaligned load/store of PKV_VL floats
 *   PKV_F16_LOAD(p)             PKV_VL halves (uint16_t*) converted to f32
 *   PKV_BF16_LOAD(p)            PKV_VL bfloat16 (uint16_t*) converted to f32
 *   PKV_F16_STORE(p,v)          v rounded to nearest even, stored as halves
 *   PKV_BF16_STORE(p,v)         v rounded to nearest even, stored as bf16
 *   PKV_F32_FMA(a,b,c)          a*b + c
 *   PKV_F32_MUL/ADD/SUB/MAX(a,b)
 *   PKV_F32_REDUCE(v)           sum of the lanes (float)
 *   PKV_F32_REDUCE_MAX(v)       max of the lanes (float)
 *   PKV_F32_SUM_LANES(v)        v: array of PKV_VL vectors; a vector whose
 *                               lane i is the sum of v[i]'s lanes (a
 *                               transpose-and-add tree: ~3 ops per input
 *                               instead of a full reduction each)
 *   PKV_F32_EXP2(v)             2^v per lane, v clamped to [-126, 127]:
 *                               never 0, never a subnormal (-inf gives
 *                               2^-126); NaN gives NaN on every back end
 *   PKV_PREFETCH(p)             read prefetch into all cache levels
 */
#ifndef PKV_SIMD_H
#define PKV_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine_internal.h"

#if defined(PKV_SIMD_AVX512) + defined(PKV_SIMD_AVX2) + defined(PKV_SIMD_SCALAR) != 1
#error "define exactly one of PKV_SIMD_AVX512, PKV_SIMD_AVX2, PKV_SIMD_SCALAR"
#endif

#define PKV_PREFETCH(p) __builtin_prefetch((p), 0, 1)

/* 2^f for f in [-0.5, 0.5]: degree-6 polynomial in Horner form (relative
 * error ~2e-7), shared by the vector back ends. */
#define PKV__EXP2_POLY(p, f, FMA, SET1)                                       \
  do {                                                                        \
    (p) = FMA(SET1(1.5353362e-4f), (f), SET1(1.3398874e-3f));                 \
    (p) = FMA((p), (f), SET1(9.6181291e-3f));                                 \
    (p) = FMA((p), (f), SET1(5.5504109e-2f));                                 \
    (p) = FMA((p), (f), SET1(2.4022651e-1f));                                 \
    (p) = FMA((p), (f), SET1(6.9314718e-1f));                                 \
    (p) = FMA((p), (f), SET1(1.0f));                                          \
  } while (0)

/* pkv__exp2_clamped (engine_internal.h) is the scalar form of PKV_F32_EXP2. */

/* ------------------------------------------------------------- AVX-512 */
#if defined(PKV_SIMD_AVX512)
#include <immintrin.h>

#define PKV_BACKEND_NAME "avx512"
#define PKV_VL 16
#define PKV_NREG 32
typedef __m512 pkv_vf;

#define PKV_F32_ZERO() _mm512_setzero_ps()
#define PKV_F32_BROADCAST(x) _mm512_set1_ps(x)
#define PKV_F32_LOAD(p) _mm512_loadu_ps(p)
#define PKV_F32_STORE(p, v) _mm512_storeu_ps((p), (v))
#define PKV_F16_LOAD(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define PKV_BF16_LOAD(p)                                                      \
  _mm512_castsi512_ps(_mm512_slli_epi32(                                      \
      _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define PKV_F16_STORE(p, v)                                                   \
  _mm256_storeu_si256((__m256i *)(p),                                         \
                      _mm512_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
/* Round to nearest even on the integer bits rather than vcvtneps2bf16,
 * which flushes subnormal inputs to zero: every back end stores the same
 * bits as the scalar pkv__f32_to_bf16.  NaN stays a quiet NaN. */
static inline void pkv__bf16_store_avx512(void *p, __m512 v) {
  __m512i x = _mm512_castps_si512(v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(
      _mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
  _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}
#define PKV_BF16_STORE(p, v) pkv__bf16_store_avx512((p), (v))
#define PKV_F32_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define PKV_F32_MUL(a, b) _mm512_mul_ps((a), (b))
#define PKV_F32_ADD(a, b) _mm512_add_ps((a), (b))
#define PKV_F32_SUB(a, b) _mm512_sub_ps((a), (b))
#define PKV_F32_MAX(a, b) _mm512_max_ps((a), (b))
#define PKV_F32_REDUCE(v) _mm512_reduce_add_ps(v)
#define PKV_F32_REDUCE_MAX(v) _mm512_reduce_max_ps(v)

/* 2^x = 2^n * 2^f with n = round(x), f in [-0.5, 0.5]; 2^f by a degree-6
 * minimax-like polynomial (relative error ~2e-7), 2^n added to the exponent
 * field.  x is clamped to [-126, 127], x as max/min's second operand so
 * that NaN passes through (and comes out NaN). */
static inline pkv_vf pkv__exp2_avx512(pkv_vf x) {
  const __m512 lo = _mm512_set1_ps(-126.0f), hi = _mm512_set1_ps(127.0f);
  x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
  __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_sub_ps(x, n);
  __m512 p;
  PKV__EXP2_POLY(p, f, _mm512_fmadd_ps, _mm512_set1_ps);
  __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
  return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
}
#define PKV_F32_EXP2(v) pkv__exp2_avx512(v)

/* Lane i of the result = sum of v[i]: unpack pairs, then shuffles across
 * 64-bit, 128-bit and 256-bit lanes, adding at each level. */
static inline pkv_vf pkv__sum_lanes_avx512(const pkv_vf *v) {
  __m512 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; i++)
    s1[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                          _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; i++)
    s2[i] = _mm512_add_ps(_mm512_shuffle_ps(s1[2 * i], s1[2 * i + 1], 0x44),
                          _mm512_shuffle_ps(s1[2 * i], s1[2 * i + 1], 0xee));
  for (int i = 0; i < 2; i++)
    s3[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s2[2 * i], s2[2 * i + 1], 0x88),
                          _mm512_shuffle_f32x4(s2[2 * i], s2[2 * i + 1], 0xdd));
  /* s3[0] = [a..d(L01), e..h(L01), a..d(L23), e..h(L23)] and likewise for
   * i..p: one more cross-lane pair finishes the sums in input order */
  return _mm512_add_ps(_mm512_shuffle_f32x4(s3[0], s3[1], 0x88),
                       _mm512_shuffle_f32x4(s3[0], s3[1], 0xdd));
}
#define PKV_F32_SUM_LANES(v) pkv__sum_lanes_avx512(v)

/* --------------------------------------------------------------- AVX2 */
#elif defined(PKV_SIMD_AVX2)
#include <immintrin.h>

#define PKV_BACKEND_NAME "avx2"
#define PKV_VL 8
#define PKV_NREG 16
typedef __m256 pkv_vf;

#define PKV_F32_ZERO() _mm256_setzero_ps()
#define PKV_F32_BROADCAST(x) _mm256_set1_ps(x)
#define PKV_F32_LOAD(p) _mm256_loadu_ps(p)
#define PKV_F32_STORE(p, v) _mm256_storeu_ps((p), (v))
#define PKV_F16_LOAD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define PKV_BF16_LOAD(p)                                                      \
  _mm256_castsi256_ps(_mm256_slli_epi32(                                      \
      _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define PKV_F16_STORE(p, v)                                                   \
  _mm_storeu_si128((__m128i *)(p),                                            \
                   _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
/* Round to nearest even on the integer bits (AVX2 has no bf16 convert);
 * NaN stays a quiet NaN. */
static inline void pkv__bf16_store_avx2(void *p, __m256 v) {
  __m256i x = _mm256_castps_si256(v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  __m256i nan = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
  _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(r));
}
#define PKV_BF16_STORE(p, v) pkv__bf16_store_avx2((p), (v))
#define PKV_F32_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define PKV_F32_MUL(a, b) _mm256_mul_ps((a), (b))
#define PKV_F32_ADD(a, b) _mm256_add_ps((a), (b))
#define PKV_F32_SUB(a, b) _mm256_sub_ps((a), (b))
#define PKV_F32_MAX(a, b) _mm256_max_ps((a), (b))

static inline float pkv__reduce_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline float pkv__reduce_max_avx2(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#define PKV_F32_REDUCE(v) pkv__reduce_avx2(v)
#define PKV_F32_REDUCE_MAX(v) pkv__reduce_max_avx2(v)

static inline pkv_vf pkv__exp2_avx2(pkv_vf x) { /* as pkv__exp2_avx512 */
  const __m256 lo = _mm256_set1_ps(-126.0f), hi = _mm256_set1_ps(127.0f);
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 f = _mm256_sub_ps(x, n);
  __m256 p;
  PKV__EXP2_POLY(p, f, _mm256_fmadd_ps, _mm256_set1_ps);
  __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}
#define PKV_F32_EXP2(v) pkv__exp2_avx2(v)

static inline pkv_vf pkv__sum_lanes_avx2(const pkv_vf *v) {
  __m256 s1[4], s2[2];
  for (int i = 0; i < 4; i++)
    s1[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                          _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 2; i++)
    s2[i] = _mm256_add_ps(_mm256_shuffle_ps(s1[2 * i], s1[2 * i + 1], 0x44),
                          _mm256_shuffle_ps(s1[2 * i], s1[2 * i + 1], 0xee));
  return _mm256_add_ps(_mm256_permute2f128_ps(s2[0], s2[1], 0x20),
                       _mm256_permute2f128_ps(s2[0], s2[1], 0x31));
}
#define PKV_F32_SUM_LANES(v) pkv__sum_lanes_avx2(v)

/* ------------------------------------------------------------- scalar */
#else

#define PKV_BACKEND_NAME "scalar"
#define PKV_VL 1
#define PKV_NREG 16
typedef float pkv_vf;

static inline float pkv__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu,
           man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else { /* subnormal half: normalise */
    int e = -1;
    do { e++; man <<= 1; } while (!(man & 0x400u));
    bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}
static inline float pkv__bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

#define PKV_F32_ZERO() 0.0f
#define PKV_F32_BROADCAST(x) (x)
#define PKV_F32_LOAD(p) (*(p))
#define PKV_F32_STORE(p, v) (*(p) = (v))
#define PKV_F16_LOAD(p) pkv__f16_to_f32(*(const uint16_t *)(p))
#define PKV_BF16_LOAD(p) pkv__bf16_to_f32(*(const uint16_t *)(p))
#define PKV_F16_STORE(p, v) (*(uint16_t *)(p) = pkv__f32_to_f16(v))
#define PKV_BF16_STORE(p, v) (*(uint16_t *)(p) = pkv__f32_to_bf16(v))
#define PKV_F32_FMA(a, b, c) ((a) * (b) + (c))
#define PKV_F32_MUL(a, b) ((a) * (b))
#define PKV_F32_ADD(a, b) ((a) + (b))
#define PKV_F32_SUB(a, b) ((a) - (b))
#define PKV_F32_MAX(a, b) ((a) > (b) ? (a) : (b))
#define PKV_F32_REDUCE(v) (v)
#define PKV_F32_REDUCE_MAX(v) (v)
#define PKV_F32_EXP2(v) pkv__exp2_clamped(v)
#define PKV_F32_SUM_LANES(v) ((v)[0])

#endif

#endif /* PKV_SIMD_H */
