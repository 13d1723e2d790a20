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
 *   PKV_I8_LOAD(p)              PKV_VL int8 codes as floats (exact)
 *   PKV_E5M2_LOAD(p)            PKV_VL fp8 E5M2 codes as floats (exact: the
 *                               code is the top byte of an f16)
 *   PKV_E4M3_LOAD(p)            PKV_VL fp8 E4M3 codes as floats times 2^-8
 *                               (exact: the code's bits placed in an f16;
 *                               the kernels fold the 2^8 into the row scale,
 *                               pkv__quant_unit)
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
 *
 * Optional: bf16 dot products (a back end that has them defines
 * PKV_HAS_BF16_DOT; the bodies then offer the bf16_dot decode):
 *   pkv_vbh                     a vector of 2*PKV_VL bfloat16 (pairs)
 *   PKV_BH_LOAD(p)              2*PKV_VL bf16 from p (64-byte aligned)
 *   PKV_BH_ROW(r,d,D)           bf16 row r from element d: 2*PKV_VL lanes,
 *                               those at or past D zero (D - d >= PKV_VL)
 *   PKV_BH_PACK(o,q,m)          q[0 .. 2*PKV_VL) (m = 2) or q[0 .. PKV_VL)
 *                               then zeros (m = 1) rounded to bf16 (nearest
 *                               even) into o
 *   PKV_BH_DOT(acc,a,b)         acc + sum of the products of each lane pair
 *                               (f32 accumulate, products exact)
 *
 * The bodies (kern_body.h, kern_quant.h) use nothing else of the ISA: a new
 * back end is a new section here (docs/ENGINE.md, "Adding a back end").
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

/* prefetcht0: into L1 and L2.  Measured against prefetcht2 (L2 only on
 * AMD) and prefetchnta in one process, decode from DRAM, 1 thread:
 * t0 3-25 % faster for f32 on both vector back ends, 0-6 % for bf16 (2026-12-03,
 * docs/PERFORMANCE.md). */
#define PKV_PREFETCH(p) __builtin_prefetch((p), 0, 3)

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

/* for the shared exp2 (pkv__exp2_vec, after the ISA sections) */
#define PKV__F32_MIN(a, b) _mm512_min_ps((a), (b))
#define PKV__F32_ROUND(v) _mm512_roundscale_ps((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define PKV__F32_SCALE2(p, n) /* p * 2^n, n integral: added to the exponent */         \
  _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p),                          \
                                       _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23)))

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

#define PKV_I8_LOAD(p)                                                        \
  _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p))))
#define PKV_E5M2_LOAD(p)                                                      \
  _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p))), 8))
/* Sign-extending the code to 16 bits and shifting left by 7 puts its
 * exponent and mantissa in f16 position and its sign in bits 15 and 14;
 * clearing bit 14 leaves the f16 of value * 2^-8. */
static inline __m512 pkv__e4m3_load(const void *p) {
  __m256i x = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)), 7);
  return _mm512_cvtph_ps(_mm256_and_si256(x, _mm256_set1_epi16((short)0xbfff)));
}
#define PKV_E4M3_LOAD(p) pkv__e4m3_load(p)

/* bf16 dot products (AVX512_BF16 vdpbf16ps) */
#define PKV_HAS_BF16_DOT 1
typedef __m512bh pkv_vbh;
#define PKV_BH_LOAD(p) ((__m512bh)_mm512_load_si512(p))
static inline __m512bh pkv__bh_row_avx512(const uint16_t *r, uint32_t d, uint32_t D) {
  if (d + 32 <= D) return (__m512bh)_mm512_loadu_si512(r + d);
  return (__m512bh)_mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(r + d)));
}
#define PKV_BH_ROW(r, d, D) pkv__bh_row_avx512((r), (d), (D))
static inline void pkv__bh_pack_avx512(uint16_t *o, const float *q, int m) {
  if (m == 2)
    _mm512_storeu_si512(o, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 16), _mm512_loadu_ps(q)));
  else
    _mm512_storeu_si512(o, _mm512_zextsi256_si512((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(q))));
}
#define PKV_BH_PACK(o, q, m) pkv__bh_pack_avx512((o), (q), (m))
#define PKV_BH_DOT(acc, a, b) _mm512_dpbf16_ps((acc), (a), (b))

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

#define PKV__F32_MIN(a, b) _mm256_min_ps((a), (b))
#define PKV__F32_ROUND(v) _mm256_round_ps((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define PKV__F32_SCALE2(p, n)                                                 \
  _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p),                \
                                       _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23)))

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

#define PKV_I8_LOAD(p)                                                        \
  _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define PKV_E5M2_LOAD(p)                                                      \
  _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(p))), 8))
static inline __m256 pkv__e4m3_load(const void *p) { /* as the AVX-512 one */
  __m128i x = _mm_slli_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p)), 7);
  return _mm256_cvtph_ps(_mm_and_si128(x, _mm_set1_epi16((short)0xbfff)));
}
#define PKV_E4M3_LOAD(p) pkv__e4m3_load(p)

#endif

#if defined(PKV_SIMD_AVX512) || defined(PKV_SIMD_AVX2)
/* 2^x = 2^n * 2^f with n = round(x), f in [-0.5, 0.5]; 2^f by a degree-6
 * minimax-like polynomial (relative error ~2e-7), 2^n added to the exponent
 * field.  x is clamped to [-126, 127], x as max/min's second operand so
 * that NaN passes through (and comes out NaN). */
static inline pkv_vf pkv__exp2_vec(pkv_vf x) {
  x = PKV__F32_MIN(PKV_F32_BROADCAST(127.0f), PKV_F32_MAX(PKV_F32_BROADCAST(-126.0f), x));
  pkv_vf n = PKV__F32_ROUND(x), f = PKV_F32_SUB(x, n), p;
  PKV__EXP2_POLY(p, f, PKV_F32_FMA, PKV_F32_BROADCAST);
  return PKV__F32_SCALE2(p, n);
}
#define PKV_F32_EXP2(v) pkv__exp2_vec(v)

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
#define PKV_I8_LOAD(p) ((float)*(const int8_t *)(p))
#define PKV_E5M2_LOAD(p) pkv__f16_to_f32((uint16_t)(*(const uint8_t *)(p) << 8))
static inline float pkv__e4m3_load(const void *p) { /* as the vector ones: value * 2^-8 */
  uint8_t b = *(const uint8_t *)p;
  return pkv__f16_to_f32((uint16_t)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}
#define PKV_E4M3_LOAD(p) pkv__e4m3_load(p)

#endif

#endif /* PKV_SIMD_H */
