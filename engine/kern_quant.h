/*
 * kern_quant.h — decoding the quantized K/V types inside the kernels
 * (included by kern_body.h after simd.h; see quant.c for the format).
 * The codes are widened by the vocabulary (PKV_I8_LOAD, PKV_E4M3_LOAD,
 * PKV_E5M2_LOAD in simd.h); this file holds what every back end shares.
 *
 * A row's scale multiplies its scores (K) or its softmax weights (V) once
 * per token — q_scale_rows — rather than every element.
 */
#ifndef PKV_KERN_QUANT_H
#define PKV_KERN_QUANT_H

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
