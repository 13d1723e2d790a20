/*
 * kern_i8dot.h — int8 K/V decode with integer dot products (AVX-512 VNNI).
 *
 * Included by kern_body.h just before decode_body.  On the AVX-512 back end
 * decode over PKV_DTYPE_I8 takes both products in 16-bit integers with
 * vpdpwssd (32 multiply-adds per instruction, twice an f32 FMA's 16), so
 * that halving the bytes is not undone by the arithmetic (docs/ENGINE.md,
 * "Quantized K/V"):
 *
 *   Q·K   each query row is rounded to int16 against its own maximum
 *         (q16 = round(q * 16383 / max|q|)); a K row's int8 codes are
 *         sign-extended to int16; score = dot(q16, codes) * max|q| / 16383,
 *         then times the row's K scale (q_scale_rows).
 *   P·V   the weights, already multiplied by their V rows' scales, are
 *         rounded to int16 against the tile's largest (per head); two
 *         tokens' codes are interleaved (vpunpck{l,h}wd) so that one
 *         vpdpwssd adds both tokens' products into each output element; the
 *         sums are de-interleaved (vpermt2d) and scaled back into the f32
 *         accumulator with the online-softmax rescale.
 *
 * Bounds: |q16|, |p16| <= 16383 and |codes| <= 127, so a lane's sum stays
 * below 2^31 for head_dim <= 576 (Q·K) and 64-token tiles (P·V).  Rounding q
 * and p to 15 bits adds an output error of order 1e-4 (asserted in
 * check_quant.c), below int8 storage's own.  A query row, weight or scale
 * that is not finite sends that head group's tile through the f32 kernels,
 * so non-finite inputs give exactly the f32 path's results.
 */
#ifndef PKV_KERN_I8DOT_H
#define PKV_KERN_I8DOT_H

#include <float.h>

#if defined(PKV_SIMD_AVX512)
#define I8DOT(dt) ((dt) == PKV_DTYPE_I8)
#define I8_ONE 16383.0f
#define I8_DMAX 576 /* the largest head_dim the bound above allows */

/* q16[g][0 .. Dp) for HG rows, Dp = D rounded up to 32 (zero padded);
 * inv[g] = the factor back to q's units.  0 if a row is not finite. */
AI int i8_pack_q(const float *q, uint32_t D, const uint32_t HG, int16_t *q16, float *inv) {
  const uint32_t Dp = (D + 31u) & ~31u;
  for (uint32_t g = 0; g < HG; g++) {
    const float *qg = q + (size_t)g * D;
    __m512 m = _mm512_setzero_ps();
    for (uint32_t d = 0; d < D; d += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(qg + d)));
    float mx = _mm512_reduce_max_ps(m);
    for (uint32_t d = 0; d < D; d += 16) /* a NaN lane may hide from max: look */
      if (_mm512_cmp_ps_mask(_mm512_loadu_ps(qg + d), _mm512_loadu_ps(qg + d), _CMP_UNORD_Q)) return 0;
    if (!(mx <= FLT_MAX)) return 0;
    const __m512 f = _mm512_set1_ps(mx > 0.0f ? I8_ONE / mx : 0.0f);
    inv[g] = mx / I8_ONE;
    int16_t *o = q16 + (size_t)g * Dp;
    uint32_t d = 0;
    for (; d < D; d += 16)
      _mm256_store_si256((__m256i *)(o + d), _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(qg + d), f))));
    for (; d < Dp; d += 16) _mm256_store_si256((__m256i *)(o + d), _mm256_setzero_si256());
  }
  return 1;
}

/* 32 codes of a row from d as int16 (the upper 16 zero when only 16 remain). */
AI __m512i i8_row32(const uint8_t *row, uint32_t d, uint32_t D) {
  if (d + 32 <= D) return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(row + d)));
  return _mm512_cvtepi8_epi16(_mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(row + d))));
}

/* sc[g][j] = q_g . k_j for j < n, HG heads, in q's units (before the K
 * scale); prefetches as dec_qk.  0 (nothing written) if q is not finite. */
AI int i8_qk(const uint8_t *kbase, const uint8_t *vbase, const size_t *off, uint32_t n,
             const uint8_t *pkbase, const size_t *pre, uint32_t n_pre, uint32_t D, const float *q,
             float *sc, const int prefetch, const int vcur, const uint32_t HG) {
  const size_t row_bytes = pkv__row_bytes(D, PKV_DTYPE_I8), ld = PKV__DECODE_CH + PKV_VL;
  const uint32_t Dp = (D + 31u) & ~31u, T = PKV_VL / HG;
  int16_t q16[DEC_HG * I8_DMAX] __attribute__((aligned(64)));
  float inv[DEC_HG];
  if (!i8_pack_q(q, D, HG, q16, inv)) return 0;
  uint32_t j = 0;
  for (; j + T <= n; j += T) {
    if (prefetch) dec_prefetch(vbase, off, pkbase, pre, n_pre, j, T, row_bytes, vcur);
    __m512i a[PKV_VL];
#pragma GCC unroll 16
    for (uint32_t i = 0; i < PKV_VL; i++) a[i] = _mm512_setzero_si512();
    for (uint32_t d = 0; d < Dp; d += 32) {
      __m512i qv[DEC_HG];
#pragma GCC unroll 8
      for (uint32_t g = 0; g < HG; g++) qv[g] = _mm512_load_si512(q16 + (size_t)g * Dp + d);
#pragma GCC unroll 16
      for (uint32_t t = 0; t < T; t++) {
        __m512i kv = i8_row32(kbase + off[j + t], d, D);
#pragma GCC unroll 8
        for (uint32_t g = 0; g < HG; g++) a[t * HG + g] = _mm512_dpwssd_epi32(a[t * HG + g], kv, qv[g]);
      }
    }
    pkv_vf af[PKV_VL];
#pragma GCC unroll 16
    for (uint32_t i = 0; i < PKV_VL; i++) af[i] = _mm512_cvtepi32_ps(a[i]);
    dec_put_scores(af, sc, j, HG);
  }
  for (; j < n; j++) {
    if (prefetch) dec_prefetch(vbase, off, pkbase, pre, n_pre, j, 1, row_bytes, vcur);
    __m512i a[DEC_HG];
#pragma GCC unroll 8
    for (uint32_t g = 0; g < HG; g++) a[g] = _mm512_setzero_si512();
    for (uint32_t d = 0; d < Dp; d += 32) {
      __m512i kv = i8_row32(kbase + off[j], d, D);
#pragma GCC unroll 8
      for (uint32_t g = 0; g < HG; g++)
        a[g] = _mm512_dpwssd_epi32(a[g], kv, _mm512_load_si512(q16 + (size_t)g * Dp + d));
    }
#pragma GCC unroll 8
    for (uint32_t g = 0; g < HG; g++) sc[(size_t)g * ld + j] = (float)_mm512_reduce_add_epi32(a[g]);
  }
  for (uint32_t g = 0; g < HG; g++)
    for (j = 0; j < n; j++) sc[(size_t)g * ld + j] *= inv[g];
  return 1;
}

/* All G heads' scores through i8_qk (head groups of DEC_HG, 2, 1);
 * 0 if a query row is not finite or head_dim does not suit (f32 path). */
AI int i8_qk_heads(const uint8_t *kb, const uint8_t *vb, const size_t *cur, uint32_t n,
                   const uint8_t *pkb, const size_t *pre, uint32_t npre, uint32_t D,
                   const float *qh, uint32_t G, float *sc, size_t ld, const int vcur) {
  /* a refusal part way leaves scores the f32 loops then rewrite in full */
  if (D % 16 != 0 || D > I8_DMAX) return 0;
  uint32_t g = 0;
  for (; g + DEC_HG <= G; g += DEC_HG)
    if (!i8_qk(kb, vb, cur, n, pkb, pre, npre, D, qh + (size_t)g * D, sc + g * ld, g == 0, vcur, DEC_HG))
      return 0;
  for (; g + 2 <= G; g += 2)
    if (!i8_qk(kb, vb, cur, n, pkb, pre, npre, D, qh + (size_t)g * D, sc + g * ld, g == 0, vcur, 2))
      return 0;
  for (; g < G; g++)
    if (!i8_qk(kb, vb, cur, n, pkb, pre, npre, D, qh + (size_t)g * D, sc + g * ld, g == 0, vcur, 1))
      return 0;
  return 1;
}

/* acc[g][d0 .. d0 + NC*32) = alpha[g]*acc + sum_j p[g][j] v_j for HG heads,
 * p16[g][j] the int16 weights (zero from n on), pinv[g] their factor back. */
AI void i8_pv(const uint8_t *vbase, const size_t *off, uint32_t n, uint32_t D, uint32_t d0,
              const int16_t *p16, const float *pinv, const float *alpha, float *acc,
              const uint8_t *pvbase, const size_t *pre, uint32_t n_pre, const uint32_t HG,
              const uint32_t NC) {
  const uint32_t np = (n + 1) / 2;
  __m512i lo[DEC_HG][2], hi[DEC_HG][2];
#pragma GCC unroll 8
  for (uint32_t g = 0; g < HG; g++)
#pragma GCC unroll 2
    for (uint32_t c = 0; c < NC; c++) lo[g][c] = hi[g][c] = _mm512_setzero_si512();
  const size_t row_bytes = pkv__row_bytes(D, PKV_DTYPE_I8);
  for (uint32_t p = 0; p < np; p++) {
    const uint32_t j = 2 * p;
    const uint8_t *ra = vbase + off[j], *rb = j + 1 < n ? vbase + off[j + 1] : ra;
    for (uint32_t t = j; t < j + 2 && t < n_pre; t++)
      for (size_t b = 0; b < row_bytes; b += 64) PKV_PREFETCH(pvbase + pre[t] + b);
#pragma GCC unroll 2
    for (uint32_t c = 0; c < NC; c++) {
      __m512i A = i8_row32(ra, d0 + 32 * c, D), B = i8_row32(rb, d0 + 32 * c, D);
      __m512i ul = _mm512_unpacklo_epi16(A, B), uh = _mm512_unpackhi_epi16(A, B);
#pragma GCC unroll 8
      for (uint32_t g = 0; g < HG; g++) {
        uint32_t w; /* the weights of tokens j and j + 1 */
        memcpy(&w, p16 + (size_t)g * PKV__DECODE_CH + j, sizeof w);
        __m512i pb = _mm512_set1_epi32((int)w);
        lo[g][c] = _mm512_dpwssd_epi32(lo[g][c], ul, pb);
        hi[g][c] = _mm512_dpwssd_epi32(hi[g][c], uh, pb);
      }
    }
  }
  /* lane i of lo holds element 8*(i/4) + i%4 of the 32, of hi that + 4 */
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
#pragma GCC unroll 8
  for (uint32_t g = 0; g < HG; g++) {
    const __m512 al = _mm512_set1_ps(alpha[g]), pf = _mm512_set1_ps(pinv[g]);
#pragma GCC unroll 2
    for (uint32_t c = 0; c < NC; c++) {
      float *o = acc + (size_t)g * D + d0 + 32 * c;
      __m512 r0 = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(lo[g][c], first, hi[g][c]));
      _mm512_storeu_ps(o, _mm512_fmadd_ps(r0, pf, _mm512_mul_ps(al, _mm512_loadu_ps(o))));
      if (d0 + 32 * c + 16 < D) {
        __m512 r1 = _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(lo[g][c], second, hi[g][c]));
        _mm512_storeu_ps(o + 16, _mm512_fmadd_ps(r1, pf, _mm512_mul_ps(al, _mm512_loadu_ps(o + 16))));
      }
    }
  }
}

/* P·V of all G heads for the tile (weights p = sc, already times the V
 * scales).  0 (nothing written) if a weight is not finite: f32 path. */
AI int i8_pv_heads(const uint8_t *vb, const size_t *cur, uint32_t n, uint32_t D, const float *sc,
                   size_t ld, const float *alpha, float *acch, uint32_t G, const uint8_t *pvb,
                   const size_t *pre, uint32_t vpre) {
  if (D % 16 != 0 || D > I8_DMAX) return 0;
  int16_t p16[DEC_HG * PKV__DECODE_CH] __attribute__((aligned(64)));
  float pinv[DEC_HG];
  const uint32_t nv = (n + 15) / 16;
  for (uint32_t g = 0; g < G; g++) { /* every head first: a refusal must touch no output */
    __mmask16 bad = 0;
    for (uint32_t c = 0; c < nv; c++) {
      uint32_t left = n - 16 * c;
      __m512 w = _mm512_maskz_loadu_ps(left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1),
                                       sc + (size_t)g * ld + 16 * c);
      bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(w), _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);
    }
    if (bad) return 0; /* NaN or infinite weight: the f32 path */
  }
  for (uint32_t g0 = 0; g0 < G;) {
    const uint32_t hg = G - g0 >= DEC_HG ? DEC_HG : G - g0 >= 2 ? 2 : 1;
    for (uint32_t g = 0; g < hg; g++) {
      const float *p = sc + (size_t)(g0 + g) * ld;
      __m512 w[PKV__DECODE_CH / 16], m = _mm512_setzero_ps();
      for (uint32_t c = 0; c < nv; c++) {
        uint32_t left = n - 16 * c;
        w[c] = _mm512_maskz_loadu_ps(left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1), p + 16 * c);
        m = _mm512_max_ps(m, _mm512_abs_ps(w[c]));
      }
      const float mx = _mm512_reduce_max_ps(m);
      const __m512 f = _mm512_set1_ps(mx > 0.0f ? I8_ONE / mx : 0.0f);
      pinv[g] = mx / I8_ONE;
      int16_t *o = p16 + (size_t)g * PKV__DECODE_CH;
      for (uint32_t c = 0; c < nv; c++)
        _mm256_store_si256((__m256i *)(o + 16 * c),
                           _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(w[c], f))));
      if (n % 2) o[n] = 0; /* the odd token's pair partner */
    }
    float *ag = acch + (size_t)g0 * D;
    const float *alg = alpha + g0;
    uint32_t d0 = 0, npre = g0 == 0 ? vpre : 0;
    for (; d0 + 64 <= D; d0 += 64, npre = 0) {
      if (hg == DEC_HG) i8_pv(vb, cur, n, D, d0, p16, pinv, alg, ag, pvb, pre, npre, DEC_HG, 2);
      else if (hg == 2) i8_pv(vb, cur, n, D, d0, p16, pinv, alg, ag, pvb, pre, npre, 2, 2);
      else i8_pv(vb, cur, n, D, d0, p16, pinv, alg, ag, pvb, pre, npre, 1, 2);
    }
    for (; d0 < D; d0 += 32, npre = 0) {
      if (hg == DEC_HG) i8_pv(vb, cur, n, D, d0, p16, pinv, alg, ag, pvb, pre, npre, DEC_HG, 1);
      else if (hg == 2) i8_pv(vb, cur, n, D, d0, p16, pinv, alg, ag, pvb, pre, npre, 2, 1);
      else i8_pv(vb, cur, n, D, d0, p16, pinv, alg, ag, pvb, pre, npre, 1, 1);
    }
    g0 += hg;
  }
  return 1;
}
#else
#define I8DOT(dt) 0
#define i8_qk_heads(kb, vb, cur, n, pkb, pre, npre, D, qh, G, sc, ld, vcur) 0
#define i8_pv_heads(vb, cur, n, D, sc, ld, alpha, acch, G, pvb, pre, vpre) 0
#endif

#endif /* PKV_KERN_I8DOT_H */
