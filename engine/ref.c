/*
 * ref.c — plain reference kernels and the scalar dtype conversions.
 *
 * The references are deliberately naive: one query row at a time, scores
 * and the softmax in double, no tiling, no online rescaling.  Tests compare
 * every back end against them with named tolerances.  The conversions round
 * to nearest even and are what the engine uses to write K/V into the cache,
 * so a test can predict the stored value exactly.
 */
#include "engine_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

uint16_t pkv__f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

float pkv__bf16_to_f32_scalar(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

uint16_t pkv__f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);       /* NaN */
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);      /* rounds to inf */
  if (ax < 0x38800000u) {                                         /* subnormal or 0 */
    if (ax < 0x33000000u) return (uint16_t)sign;                  /* < half of min subnormal */
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - (ax >> 23);                           /* 14 .. 24 */
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t h = ((ax >> 13) - (112u << 10));
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

float pkv__f16_to_f32_scalar(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float f;
  if (e == 0) {
    f = ldexpf((float)man, -24);
    return sign ? -f : f;
  }
  uint32_t bits = e == 0x1f ? (sign | 0x7f800000u | (man << 13))
                            : (sign | ((e + 112u) << 23) | (man << 13));
  memcpy(&f, &bits, sizeof f);
  return f;
}

void pkv__store_row(void *dst, const float *src, uint32_t n, pkv_dtype dtype) {
  if (pkv__dtype_is_quant(dtype)) { /* codes then scale: quant.c */
    pkv__quant_store_row(dst, src, n, dtype);
    return;
  }
  if (dtype == PKV_DTYPE_F32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
  } else if (dtype == PKV_DTYPE_F16) {
    uint16_t *d = dst;
    for (uint32_t i = 0; i < n; i++) d[i] = pkv__f32_to_f16(src[i]);
  } else {
    uint16_t *d = dst;
    for (uint32_t i = 0; i < n; i++) d[i] = pkv__f32_to_bf16(src[i]);
  }
}

void pkv__load_row(float *dst, const void *src, uint32_t n, pkv_dtype dtype) {
  if (pkv__dtype_is_quant(dtype)) {
    pkv__quant_load_row(dst, src, n, dtype);
    return;
  }
  if (dtype == PKV_DTYPE_F32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
  } else if (dtype == PKV_DTYPE_F16) {
    const uint16_t *s = src;
    for (uint32_t i = 0; i < n; i++) dst[i] = pkv__f16_to_f32_scalar(s[i]);
  } else {
    const uint16_t *s = src;
    for (uint32_t i = 0; i < n; i++) dst[i] = pkv__bf16_to_f32_scalar(s[i]);
  }
}

int pkv__q_prescale_exp(double amax, uint32_t n, float qscale, double *f) {
  /* the smallest e >= 0 with amax * qscale * 2^-e <= 1 / (4n) */
  double lim = 1.0 / (4.0 * n), a = amax * qscale;
  int e = 0;
  if (a > lim) {
    (void)frexp(a / lim, &e); /* a / lim = fr * 2^e, fr in [0.5, 1) */
    if (e > 126) e = 126;
  }
  *f = (double)qscale * ldexp(1.0, -e);
  return e;
}

float pkv__q_prescale(const float *q, uint32_t n, float qscale, float *out) {
  double amax = 0.0, f;
  for (uint32_t i = 0; i < n; i++) {
    double a = fabs((double)q[i]);
    if (a > amax && a <= FLT_MAX) amax = a; /* finite elements only */
  }
  int e = pkv__q_prescale_exp(amax, n, qscale, &f);
  for (uint32_t i = 0; i < n; i++) out[i] = (float)((double)q[i] * f);
  return ldexpf(1.0f, e);
}

/* Shared by both references: keys come from a row accessor.  The rules are
 * those of docs/API-engine.md ("Non-finite and extreme inputs"), evaluated
 * in double on the kernels' scaled query (pkv__q_prescale), one key at a
 * time: a score that is NaN or +inf makes the row NaN; otherwise key t has
 * weight 2^max((s_t - max) * c - PKV__W_OFF, -126) (a -inf score is at
 * the floor), and out[d] = sum_t w_t v_t[d] / sum_t w_t with IEEE
 * arithmetic (a NaN or infinite V element reaches only its own column). */
typedef const float *(*row_fn)(const void *ctx, int which, uint32_t t, float *buf);

static double score(const float *qp, const float *k, uint32_t D) {
  double dot = 0.0;
  for (uint32_t d = 0; d < D; d++) dot += (double)qp[d] * k[d];
  return dot;
}

static void attn_row(const float *q, row_fn row, const void *ctx, uint32_t n_keys,
                     uint32_t D, uint32_t Dv, float scale, float *out) {
  double m = -INFINITY, s = 0.0, acc[1024];
  float buf[1024], qp[1024];
  const double c = pkv__q_prescale(q, D, scale * PKV__LOG2E, qp);
  int poison = 0;
  /* two passes: the maximum, then the weights */
  for (uint32_t t = 0; t < n_keys; t++) {
    double dot = score(qp, row(ctx, 0, t, buf), D);
    if (dot != dot || dot == INFINITY) poison = 1;
    if (dot > m) m = dot;
  }
  for (uint32_t d = 0; d < Dv; d++) acc[d] = poison ? NAN : 0.0;
  for (uint32_t t = 0; t < n_keys && !poison; t++) {
    double x = (score(qp, row(ctx, 0, t, buf), D) - m) * c - PKV__W_OFF;
    double w = exp2(x > -126.0 ? x : -126.0);
    s += w;
    const float *v = row(ctx, 1, t, buf);
    for (uint32_t d = 0; d < Dv; d++) acc[d] += w * v[d];
  }
  for (uint32_t d = 0; d < Dv; d++) out[d] = poison ? NAN : (float)(acc[d] / s);
}

typedef struct contig_ctx {
  const float *k, *v;
  size_t ld;
} contig_ctx;

static const float *contig_row(const void *ctx, int which, uint32_t t, float *buf) {
  const contig_ctx *c = ctx;
  (void)buf;
  return (which ? c->v : c->k) + (size_t)t * c->ld;
}

void pkv__attn_row_ref(const float *q, const float *k, const float *v, size_t ld,
                       uint32_t n_keys, uint32_t head_dim, float scale, float *out) {
  pkv__attn_row_ref_dv(q, k, v, ld, n_keys, head_dim, head_dim, scale, out);
}

void pkv__attn_row_ref_dv(const float *q, const float *k, const float *v, size_t ld,
                          uint32_t n_keys, uint32_t head_dim, uint32_t v_dim, float scale,
                          float *out) {
  contig_ctx c = {k, v, ld};
  attn_row(q, contig_row, &c, n_keys, head_dim, v_dim, scale, out);
}

typedef struct paged_ctx {
  const pkv__kv_view *kv;
  uint32_t head;
} paged_ctx;

static const float *paged_row(const void *ctx, int which, uint32_t t, float *buf) {
  const paged_ctx *c = ctx;
  const pkv__kv_view *kv = c->kv;
  size_t off = (size_t)kv->blocks[t / kv->block_size] * kv->block_stride +
               (size_t)c->head * kv->head_stride +
               (size_t)(t % kv->block_size) * pkv__row_bytes(kv->head_dim, kv->dtype);
  pkv__load_row(buf, (which ? kv->v : kv->k) + off, kv->head_dim, kv->dtype);
  return buf;
}

void pkv__attn_row_paged_ref(const pkv__kv_view *kv, uint32_t kv_head, const float *q,
                             uint32_t n_keys, float scale, float *out) {
  paged_ctx c = {kv, kv_head};
  attn_row(q, paged_row, &c, n_keys, kv->head_dim, PKV__VDIM(kv), scale, out);
}
