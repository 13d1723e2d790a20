/*
 * kern_quant.h — decoding the quantized K/V types inside the kernels
 * (included by kern_body.h after simd.h; see quant.c for the format).
 *
 *   PKV_I8_LOAD(p)     PKV_VL int8 codes as floats (exact)
 *   PKV_E5M2_LOAD(p)   PKV_VL fp8 E5M2 codes as floats (exact: the code is
 *                      the top byte of an f16)
 *   PKV_E4M3_LOAD(p)   PKV_VL fp8 E4M3 codes as floats times 2^-8 (exact:
 *                      the code's bits placed in an f16); the kernels fold
 *                      the 2^8 into the row scale (pkv__quant_unit)
 *
 * A row's scale multiplies its scores (K) or its softmax weights (V) once
 * per token — q_scale_rows — rather than every element.
 */
#ifndef PKV_KERN_QUANT_H
#define PKV_KERN_QUANT_H

#if defined(PKV_SIMD_AVX512)
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
#elif defined(PKV_SIMD_AVX2)
#define PKV_I8_LOAD(p)                                                        \
  _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define PKV_E5M2_LOAD(p)                                                      \
  _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(p))), 8))
static inline __m256 pkv__e4m3_load(const void *p) {
  __m128i x = _mm_slli_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p)), 7);
  return _mm256_cvtph_ps(_mm_and_si128(x, _mm_set1_epi16((short)0xbfff)));
}
#else
#define PKV_I8_LOAD(p) ((float)*(const int8_t *)(p))
#define PKV_E5M2_LOAD(p) pkv__f16_to_f32((uint16_t)(*(const uint8_t *)(p) << 8))
static inline float pkv__e4m3_load(const void *p) {
  uint8_t b = *(const uint8_t *)p;
  return pkv__f16_to_f32((uint16_t)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}
#endif
#define PKV_E4M3_LOAD(p) pkv__e4m3_load(p)

/* sc[g][j] *= scale of row j (at base + off[j] + D) for G rows of
 * scores or weights, row stride ld. */
static inline __attribute__((always_inline)) void q_scale_rows(const uint8_t *base,
                                                               const size_t *off, uint32_t n,
                                                               uint32_t D, float *sc, size_t ld,
                                                               uint32_t G, const int dt) {
  float f[PKV__DECODE_CH];
  const float unit = pkv__quant_unit(dt);
  for (uint32_t j = 0; j < n; j++) {
    memcpy(&f[j], base + off[j] + D, sizeof(float));
    f[j] *= unit;
  }
  for (uint32_t g = 0; g < G; g++)
    for (uint32_t j = 0; j < n; j++) sc[(size_t)g * ld + j] *= f[j];
}

#endif /* PKV_KERN_QUANT_H */
