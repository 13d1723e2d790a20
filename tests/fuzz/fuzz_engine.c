/*
 * fuzz_engine.c — libFuzzer harness for the attention kernels: a byte
 * string becomes a shape (dtype — f32, f16, bf16, int8, fp8 E4M3/E5M2 —
 * KV heads, group size, head_dim — any
 * multiple of 8 — and a V head dim that may be smaller, block size, context
 * length, prefill chunking, threads, softmax scale) and a list
 * of values planted into Q, K and V — NaN, +-inf, huge (1e30, up to the bf16
 * and f32 maxima), tiny and subnormal, f16-overflowing (1e5), zero — over a
 * random finite background.  Decode (one query over the whole context, one
 * and two threads, so split-K merging is exercised) and causal prefill (in
 * chunks) run through every back end this CPU has and are compared with the
 * plain double reference (engine/ref.c, pkv__attn_row_ref) element by
 * element:
 *   - the class (finite, NaN, +inf, -inf) must be equal, always: the rules
 *     of docs/API-engine.md, "Non-finite and extreme inputs", are the same
 *     on every back end and in the reference;
 *   - finite values must agree within a tolerance scaled by the row's
 *     largest |V| whenever the scores are well conditioned (the f32 score
 *     error bound, head_dim * 2^-24 * sum_d |q_d k_d| in base-2 units, at
 *     most 2^-10); with huge scores f32 rounding legitimately moves the
 *     weights, and only classes are compared.
 * Quantized K/V: the reference sees the rows as stored (codes x scale; a
 * row with a non-finite element reads back all NaN, docs/ENGINE.md), so the
 * same rules hold.
 * Queries are kept to |q| <= 1e30 so scores stay inside the range the
 * engine guarantees (pkv__q_prescale); K and V take any value.
 *
 * Any mismatch prints the case and aborts (libFuzzer records the input).
 * The body is linked into the Check suite too (tests/check_engine_fuzz.c)
 * to replay tests/fuzz/corpus_engine/ and a fixed-seed random batch.
 */
#include "engine_internal.h"
#include "../tu_paged.h"
#include "fuzz_common.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FE_MAX_INJECT 24

typedef pkv_fuzz_in fe_in;

static unsigned fe_byte(fe_in *in) { return pkv_fuzz_byte(in); }
static unsigned fe_u16(fe_in *in) { return fe_byte(in) | fe_byte(in) << 8; }

static const float fe_special[] = {
    NAN, INFINITY, -INFINITY, 1e30f, -1e30f, 1e5f, -1e5f, 1e-30f, 1e-42f, 0.0f, -0.0f,
    65504.0f, 3.3895314e38f /* bf16 max */, -3.3895314e38f, 3.0e38f, 1e20f, 7.5f, -7.5f};
#define FE_N_SPECIAL (sizeof fe_special / sizeof fe_special[0])

/* Value classes: 0 finite, 1 NaN, 2 +inf, 3 -inf. */
static int fe_class(float x) {
  if (x != x) return 1;
  if (x == INFINITY) return 2;
  if (x == -INFINITY) return 3;
  return 0;
}

static const char *const fe_backends[] = {"avx512", "avx2", "scalar"};

typedef struct fe_case {
  pkv_dtype dt;
  uint32_t Hkv, G, D, Dv, bs, total, pos0, n, chunk, threads;
  float scale;
} fe_case;

static void fe_fail(const fe_case *c, const char *what, const char *be, uint32_t row,
                    uint32_t d, float got, float want) {
  pkv_fuzz_fail("fuzz_engine",
                "%s on %s: row %u elem %u: got %a (%g), reference %a (%g)\n"
                "  dtype %d Hkv %u G %u D %u Dv %u block %u total %u pos0 %u n %u chunk %u threads %u "
                "scale %g",
                what, be, row, d, (double)got, (double)got, (double)want, (double)want, (int)c->dt,
                c->Hkv, c->G, c->D, c->Dv, c->bs, c->total, c->pos0, c->n, c->chunk, c->threads,
                (double)c->scale);
}

/* Reference of one query row over keys [0, n_keys) of kv head h, and the
 * tolerance its finite elements are held to (negative: classes only). */
static double fe_ref_row(const tu_paged *p, const fe_case *c, uint32_t h, const float *q,
                         uint32_t n_keys, float *out) {
  const uint32_t D = c->D;
  const float *kc = p->kc + (size_t)h * p->cap_tokens * D;
  const float *vc = p->vc + (size_t)h * p->cap_tokens * D;
  pkv__attn_row_ref_dv(q, kc, vc, D, n_keys, D, c->Dv, c->scale, out);
  float qp[1024];
  double cs = pkv__q_prescale(q, D, c->scale * PKV__LOG2E, qp);
  double cond = 0.0, vmax = 0.0;
  for (uint32_t t = 0; t < n_keys; t++) {
    double a = 0.0;
    for (uint32_t d = 0; d < D; d++) {
      a += fabs((double)qp[d] * kc[(size_t)t * D + d]);
      double v = d < c->Dv ? fabs((double)vc[(size_t)t * D + d]) : 0.0;
      if (v > vmax && v <= FLT_MAX) vmax = v;
    }
    a *= cs;
    if (a > cond || a != a) cond = a;
  }
  double err = cond * D * 0x1p-24;
  if (!(err <= 0x1p-10)) return -1.0;
  /* weights move by ~err relatively; the outputs (convex combinations) by
   * about that times the largest |v|, plus f32 rounding of the sums */
  return (4.0 * err + 1e-5) * vmax + 1e-30;
}

static void fe_compare(const fe_case *c, const char *what, const char *be, uint32_t row,
                       const float *got, const float *want, double tol) {
  for (uint32_t d = 0; d < c->Dv; d++) {
    if (fe_class(got[d]) != fe_class(want[d])) fe_fail(c, what, be, row, d, got[d], want[d]);
    if (tol >= 0 && fe_class(want[d]) == 0 && !(fabs((double)got[d] - want[d]) <= tol))
      fe_fail(c, what, be, row, d, got[d], want[d]);
  }
}

int pkv_fuzz_engine_run(const uint8_t *data, size_t size);
int pkv_fuzz_engine_run(const uint8_t *data, size_t size) {
  fe_in in = {data, size};
  static const uint32_t dims[] = {16, 32, 48, 64, 128, 80, 96, 256, 8, 40, 72, 24};
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};
  static const pkv_dtype qdts[] = {PKV_DTYPE_I8, PKV_DTYPE_FP8_E4M3, PKV_DTYPE_FP8_E5M2};
  fe_case c;
  unsigned dtb = fe_byte(&in); /* a quarter of the inputs quantized (corpus bytes < 192 kept) */
  c.dt = dtb < 192 ? dts[dtb % 3] : qdts[dtb % 3];
  c.Hkv = 1 + fe_byte(&in) % 3;
  c.G = 1 + fe_byte(&in) % 5;
  c.D = dims[fe_byte(&in) % (sizeof dims / sizeof dims[0])];
  c.bs = 1 + fe_byte(&in) % 33;
  unsigned shape = fe_byte(&in);
  /* mostly short contexts; 1 in 8 long enough for a two-thread split */
  c.total = 1 + (shape & 7 ? fe_u16(&in) % 96 : 520 + fe_u16(&in) % 600);
  /* prefill rows: up to 80 on short contexts, 6 on long ones (the double
   * reference costs rows x context) */
  c.n = 1 + fe_byte(&in) % (c.total < 80 ? c.total : c.total < 200 ? 80 : 6);
  c.pos0 = c.total - c.n;
  c.chunk = 1 + fe_byte(&in) % c.n;
  c.threads = 1 + fe_byte(&in) % 2;
  unsigned sc = fe_byte(&in);
  c.scale = sc < 128 ? 1.0f / sqrtf((float)c.D) : (float)(sc - 120) * 0.05f;
  uint64_t seed = fe_u16(&in) + 1;
  unsigned dvb = fe_byte(&in); /* V head dim: mostly D, else D - 8k (MLA-like) */
  c.Dv = dvb % 4 ? c.D : c.D - 8 * ((dvb / 4) % (c.D / 8));

  const uint32_t Hq = c.Hkv * c.G, D = c.D, Dv = c.Dv;
  const size_t qrow = (size_t)Hq * D, orow = (size_t)Hq * Dv;
  tu_paged p;
  tu_paged_init(&p, c.dt, c.Hkv, D, c.bs, c.total, seed);
  p.view.v_dim = Dv;
  float *q = malloc(sizeof(float) * (c.n + 1) * qrow); /* n prefill rows, then decode's */
  float *out = malloc(sizeof(float) * c.n * orow);
  float *ref = malloc(sizeof(float) * (c.n + 1) * orow); /* prefill rows, then decode's */
  double *tol = malloc(sizeof(double) * (c.n + 1) * Hq);
  float *kv = malloc(sizeof(float) * 2 * c.Hkv * D);
  uint64_t rs = seed * 31 + 7;
  tu_fill(q, (c.n + 1) * qrow, 2.0f, &rs);

  /* plant values: [target: q / k / v][token][head][elem][value] */
  unsigned n_inj = fe_byte(&in) % (FE_MAX_INJECT + 1);
  for (unsigned i = 0; i < n_inj && in.n >= 5; i++) {
    unsigned tgt = fe_byte(&in) % 3, tok = fe_u16(&in), h = fe_byte(&in), e = fe_byte(&in);
    float val = fe_special[fe_byte(&in) % FE_N_SPECIAL];
    if (tgt == 0) {
      if (!isnan(val) && !isinf(val) && fabsf(val) > 1e30f) continue; /* scores in range */
      q[(size_t)(tok % (c.n + 1)) * qrow + (size_t)(h % Hq) * D + e % D] = val;
    } else {
      uint32_t t = tok % c.total, hh = h % c.Hkv;
      /* read back what is stored, change one element, store again */
      for (uint32_t x = 0; x < c.Hkv; x++) {
        memcpy(kv + (size_t)x * D, p.kc + ((size_t)x * p.cap_tokens + t) * D, D * sizeof(float));
        memcpy(kv + (size_t)(c.Hkv + x) * D, p.vc + ((size_t)x * p.cap_tokens + t) * D,
               D * sizeof(float));
      }
      kv[(size_t)(tgt == 2 ? c.Hkv : 0) * D + (size_t)hh * D + e % D] = val;
      tu_paged_store(&p, t, kv, kv + (size_t)c.Hkv * D);
    }
  }

  /* the reference once: prefill row i sees [0, pos0 + i], decode all */
  for (uint32_t i = 0; i <= c.n; i++)
    for (uint32_t hq = 0; hq < Hq; hq++) {
      tol[(size_t)i * Hq + hq] =
          fe_ref_row(&p, &c, hq / c.G, q + (size_t)i * qrow + (size_t)hq * D,
                     i < c.n ? c.pos0 + i + 1 : c.total, ref + (size_t)i * orow + (size_t)hq * Dv);
    }
  for (int b = 0; b < 3; b++) {
    if (!pkv__backend_supported(fe_backends[b])) continue;
    if (b == 0 && (D % 16 || Dv % 16)) continue; /* AVX-512 takes 16-float vectors */
    const pkv__kernels *k = pkv__kernels_select(fe_backends[b]);
    pkv__attn a;
    if (pkv__attn_init(&a, k, c.threads, Hq, c.Hkv, D, c.scale) != 0) abort();
    pkv__attn_set_v_dim(&a, Dv);
    /* prefill of [pos0, total) in chunks */
    for (uint32_t t = 0; t < c.n; t += c.chunk) {
      uint32_t m = c.n - t < c.chunk ? c.n - t : c.chunk;
      if (pkv__attn_prefill(&a, &p.view, c.pos0 + t, m, q + t * qrow, out + t * orow) != 0)
        abort();
    }
    for (uint32_t i = 0; i < c.n; i++)
      for (uint32_t hq = 0; hq < Hq; hq++) {
        size_t x = (size_t)i * orow + (size_t)hq * Dv;
        fe_compare(&c, "prefill", fe_backends[b], i * Hq + hq, out + x, ref + x,
                   tol[(size_t)i * Hq + hq]);
      }
    /* decode of one query over the whole context */
    const float *qd = q + (size_t)c.n * qrow;
    pkv__decode_seq s = {.kv = p.view, .n_tokens = c.total, .q = qd, .out = out};
    if (pkv__attn_decode(&a, &s, 1) != 0) abort();
    for (uint32_t hq = 0; hq < Hq; hq++) {
      size_t x = (size_t)c.n * orow + (size_t)hq * Dv;
      fe_compare(&c, "decode", fe_backends[b], hq, out + (size_t)hq * Dv, ref + x,
                 tol[(size_t)c.n * Hq + hq]);
    }
    pkv__attn_fini(&a);
  }
  free(q);
  free(out);
  free(ref);
  free(tol);
  free(kv);
  tu_paged_free(&p);
  return 0;
}

PKV_FUZZ_ENTRY(pkv_fuzz_engine_run)
