/*
 * check_quant.c — quantized K/V (int8, fp8 E4M3, fp8 E5M2).
 *
 *   codes        every fp8 code decodes and re-encodes to itself; encoding
 *                rounds to nearest even and saturates; int8 rounds half to
 *                even within ±127
 *   rows         the stored row format (codes, then the f32 scale) and its
 *                edge cases: zeros, non-finite elements (the row reads back
 *                as NaN), values near FLT_MAX and subnormals (no overflow)
 *   kernels      decode and prefill on every back end against the double
 *                reference over the dequantized values (TOL_OUT: the
 *                kernels decode codes exactly), and against the reference
 *                over the original f32 values (TOL_<dtype>: the accuracy
 *                the format gives, docs/ENGINE.md)
 *   non-finite   a NaN row in K or V: every back end gives the same class
 *                of result (finite / NaN) per element
 *   cache        through pkv_prefill / pkv_decode on a quantized cache,
 *                with a fork whose copy-on-write carries the scales; the
 *                layout pkv_cache_layout reports (owned and external)
 *
 * Tolerances (absolute; outputs are convex combinations of |v| <= 1, q in
 * [-2, 2), head_dim 128, scale 1/sqrt(128)).  A row's elements carry a
 * relative error up to half a code step of the row's amax: int8 2^-8
 * (1/254), E4M3 2^-4 relative per element, E5M2 2^-3.  Scores move by at
 * most sum_d |q_d| |dk_d| * scale, which cancels like a random walk, and the
 * output moves by the V error plus the weight changes:
 *   TOL_I8    3e-3   (worst measured 7.9e-4 over back ends, G 1/4/8, decode and prefill)
 *   TOL_E4M3  2e-2   (worst measured 5.2e-3)
 *   TOL_E5M2  4e-2   (worst measured 1.0e-2)
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "pagedkv/engine.h"
#include "pagedkv/policy.h"
#include "tu_core.h"
#include "tu_paged.h"

#define TOL_OUT 2e-6
#define TOL_I8 3e-3
#define TOL_E4M3 2e-2
#define TOL_E5M2 4e-2

static const char *const backend_names[] = {"avx512", "avx2", "scalar"};
static const pkv_dtype qtypes[] = {PKV_DTYPE_I8, PKV_DTYPE_FP8_E4M3, PKV_DTYPE_FP8_E5M2};
static const char *const qnames[] = {"i8", "e4m3", "e5m2"};
static const double qtol[] = {TOL_I8, TOL_E4M3, TOL_E5M2};

/* ------------------------------------------------------------ codes */

START_TEST(fp8_codes_round_trip) {
  for (int c = 0; c < 256; c++) {
    uint8_t code = (uint8_t)c;
    if ((code & 0x7f) != 0x7f) { /* E4M3: 0x7f / 0xff are NaN, never written */
      float x = pkv__fp8_e4m3_to_f32(code);
      ck_assert_msg(isfinite(x) && fabsf(x) <= 448.0f, "e4m3 %#x -> %g", c, (double)x);
      ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(x), code);
    }
    if ((code & 0x7c) != 0x7c) { /* E5M2: exponent 31 is Inf/NaN, never written */
      float x = pkv__fp8_e5m2_to_f32(code);
      ck_assert_msg(isfinite(x) && fabsf(x) <= 57344.0f, "e5m2 %#x -> %g", c, (double)x);
      ck_assert_uint_eq(pkv__f32_to_fp8_e5m2(x), code);
      /* E5M2 is the top byte of the f16 of the same value */
      ck_assert_float_eq(pkv__f16_to_f32_scalar((uint16_t)(code << 8)), x);
    }
  }
  /* known values, ties to even, saturation, subnormals */
  ck_assert_float_eq(pkv__fp8_e4m3_to_f32(0x7e), 448.0f);
  ck_assert_float_eq(pkv__fp8_e4m3_to_f32(0x01), ldexpf(1.0f, -9));
  ck_assert_float_eq(pkv__fp8_e5m2_to_f32(0x7b), 57344.0f);
  ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(1e9f), 0x7e);
  ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(-1e9f), 0xfe);
  ck_assert_uint_eq(pkv__f32_to_fp8_e5m2(1e9f), 0x7b);
  ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(1.0625f), 0x38); /* 1 + 1/16: tie -> even (1.0) */
  ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(1.1875f), 0x3a); /* 1 + 3/16: tie -> even (1.25) */
  ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(ldexpf(1.0f, -10)), 0x00); /* half the least: even */
  ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(ldexpf(3.0f, -10)), 0x02);
  ck_assert_uint_eq(pkv__f32_to_fp8_e5m2(1.125f), 0x3c);    /* tie -> 1.0 */
  ck_assert_uint_eq(pkv__f32_to_fp8_e4m3(-0.0f), 0x80);
}
END_TEST

/* ------------------------------------------------------------ rows */

static float row_scale(const uint8_t *row, uint32_t n) {
  float s;
  memcpy(&s, row + n, sizeof s);
  return s;
}

START_TEST(row_format_and_edges) {
  enum { N = 64 };
  uint8_t row[N + 4];
  float x[N], y[N];
  for (int t = 0; t < 3; t++) {
    pkv_dtype dt = qtypes[t];
    const float qmax = t == 0 ? 127.0f : t == 1 ? 448.0f : 57344.0f;
    /* ordinary row: scale = amax / qmax, the amax element exact */
    for (int i = 0; i < N; i++) x[i] = sinf((float)i) * 3.0f;
    x[7] = -5.0f;
    pkv__store_row(row, x, N, dt);
    ck_assert_float_eq(row_scale(row, N), 5.0f / qmax);
    pkv__load_row(y, row, N, dt);
    ck_assert_float_eq(y[7], -5.0f);
    double rel = t == 0 ? 0.5 / 127 : t == 1 ? 1.0 / 16 : 1.0 / 8;
    for (int i = 0; i < N; i++)
      ck_assert_msg(fabs((double)y[i] - x[i]) <= rel * 5.0 * 1.0001 + 1e-30, "%s %d: %g vs %g",
                    qnames[t], i, (double)y[i], (double)x[i]);
    if (dt == PKV_DTYPE_I8) { /* int8 codes: round half to even */
      float h[N] = {0};
      h[0] = 127.0f, h[1] = 2.5f, h[2] = -3.5f, h[3] = 0.5f;
      pkv__store_row(row, h, N, dt);
      ck_assert_int_eq((int8_t)row[1], 2);
      ck_assert_int_eq((int8_t)row[2], -4);
      ck_assert_int_eq((int8_t)row[3], 0);
    }
    /* all zeros: scale 0, reads back as zeros */
    memset(x, 0, sizeof x);
    pkv__store_row(row, x, N, dt);
    ck_assert_float_eq(row_scale(row, N), 0.0f);
    pkv__load_row(y, row, N, dt);
    for (int i = 0; i < N; i++) ck_assert(y[i] == 0.0f);
    /* a non-finite element: the whole row reads back as NaN */
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
      for (int i = 0; i < N; i++) x[i] = 0.25f * (float)i;
      x[N / 2] = bad[b];
      pkv__store_row(row, x, N, dt);
      ck_assert(isnan(row_scale(row, N)));
      pkv__load_row(y, row, N, dt);
      for (int i = 0; i < N; i++) ck_assert(isnan(y[i]));
    }
    /* near FLT_MAX and subnormal: no overflow, no Inf, relative accuracy */
    static const float mags[] = {FLT_MAX, 1e-40f};
    for (int m = 0; m < 2; m++) {
      for (int i = 0; i < N; i++) x[i] = mags[m] * (i % 2 ? 1.0f : -0.75f);
      pkv__store_row(row, x, N, dt);
      pkv__load_row(y, row, N, dt);
      for (int i = 0; i < N; i++) {
        ck_assert_msg(isfinite(y[i]), "%s mag %g: %g", qnames[t], (double)mags[m], (double)y[i]);
        /* a row whose scale is subnormal (amax < QMAX * FLT_MIN) keeps
         * only the scale's few bits: within half its magnitude */
        double rel_bound = m == 0 ? 0.13 : 0.5;
        ck_assert_msg(fabs((double)y[i] - x[i]) <= fabs((double)x[i]) * rel_bound + 1e-44,
                      "%s mag %g: %g vs %g", qnames[t], (double)mags[m], (double)y[i], (double)x[i]);
      }
    }
  }
}
END_TEST

/* ------------------------------------------------------------ kernels */

/* Decode of one sequence and prefill of its last rows on back end k:
 * worst difference to the reference over what is stored (*exact) and over
 * the original f32 values (*acc). */
static void kernel_case(const pkv__kernels *k, pkv_dtype dt, uint32_t G, uint32_t bs, uint32_t n,
                        uint32_t threads, double *exact, double *acc) {
  const uint32_t Hkv = 2, D = 128, Hq = Hkv * G;
  tu_paged p, f; /* same seed: same block list, same values before rounding */
  tu_paged_init(&p, dt, Hkv, D, bs, n, 5 + n);
  tu_paged_init(&f, PKV_DTYPE_F32, Hkv, D, bs, n, 5 + n);
  const uint32_t npf = 40; /* prefill the last npf positions */
  float *q = malloc(sizeof(float) * npf * Hq * D), *out = malloc(sizeof(float) * npf * Hq * D),
        *ref = malloc(sizeof(float) * D);
  uint64_t rs = 17 + n;
  tu_fill(q, (size_t)npf * Hq * D, 2.0f, &rs);
  const float scale = 1.0f / sqrtf((float)D);
  pkv__attn a;
  ck_assert_int_eq(pkv__attn_init(&a, k, threads, Hq, Hkv, D, scale), 0);
  *exact = *acc = 0;
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 0) {
      pkv__decode_seq s = {.kv = p.view, .n_tokens = n, .q = q, .out = out};
      ck_assert_int_eq(pkv__attn_decode(&a, &s, 1), 0);
    } else {
      ck_assert_int_eq(pkv__attn_prefill(&a, &p.view, n - npf, npf, q, out), 0);
    }
    uint32_t rows = pass == 0 ? 1 : npf;
    for (uint32_t i = 0; i < rows; i++) {
      uint32_t len = pass == 0 ? n : n - npf + i + 1;
      for (uint32_t hq = 0; hq < Hq; hq++) {
        const float *qr = q + ((size_t)i * Hq + hq) * D, *o = out + ((size_t)i * Hq + hq) * D;
        size_t c = (size_t)(hq / G) * n * D;
        pkv__attn_row_ref(qr, p.kc + c, p.vc + c, D, len, D, scale, ref);
        double d = tu_max_diff(o, ref, D);
        if (!(d <= *exact)) *exact = d;
        pkv__attn_row_ref(qr, f.kc + c, f.vc + c, D, len, D, scale, ref);
        d = tu_max_diff(o, ref, D);
        if (!(d <= *acc)) *acc = d;
      }
    }
  }
  pkv__attn_fini(&a);
  free(q);
  free(out);
  free(ref);
  tu_paged_free(&p);
  tu_paged_free(&f);
}

START_TEST(kernels_exact_and_accurate) {
  double worst[3] = {0, 0, 0};
  for (int b = 0; b < 3; b++) {
    if (!pkv__backend_supported(backend_names[b])) {
      fprintf(stderr, "check_quant: skipping back end %s: this CPU lacks it\n", backend_names[b]);
      continue;
    }
    const pkv__kernels *k = pkv__kernels_select(backend_names[b]);
    for (int t = 0; t < 3; t++) {
      static const uint32_t gs[] = {1, 4, 8}, bss[] = {16, 7, 64};
      for (int c = 0; c < 3; c++) {
        double ex, ac;
        kernel_case(k, qtypes[t], gs[c], bss[c], 300 + 111 * (uint32_t)c, 1 + (uint32_t)(c == 1), &ex, &ac);
        ck_assert_msg(ex < TOL_OUT, "%s %s G %u: vs stored values %g", k->name, qnames[t], gs[c], ex);
        ck_assert_msg(ac < qtol[t], "%s %s G %u: vs f32 values %g (bound %g)", k->name, qnames[t],
                      gs[c], ac, qtol[t]);
        if (ac > worst[t]) worst[t] = ac;
      }
    }
  }
  fprintf(stderr, "check_quant: worst error vs f32: i8 %.3g, e4m3 %.3g, e5m2 %.3g\n", worst[0],
          worst[1], worst[2]);
}
END_TEST

START_TEST(non_finite_rows_same_on_every_back_end) {
  const uint32_t Hkv = 2, D = 64, G = 4, Hq = Hkv * G, n = 200;
  for (int t = 0; t < 3; t++)
    for (int which = 0; which < 2; which++) {
      tu_paged p;
      tu_paged_init(&p, qtypes[t], Hkv, D, 16, n, 3);
      float kv[2 * 64], good[2 * 64];
      uint64_t rs = 9;
      tu_fill(good, 2 * 64, 1.0f, &rs);
      memcpy(kv, good, sizeof kv);
      kv[5] = INFINITY; /* head 0 of token 77: its row reads back as NaN */
      tu_paged_store(&p, 77, which ? good : kv, which ? kv : good);
      float q[8 * 64], out[3][8 * 64];
      tu_fill(q, (size_t)Hq * D, 2.0f, &rs);
      int have[3] = {0};
      for (int b = 0; b < 3; b++) {
        if (!pkv__backend_supported(backend_names[b])) continue;
        pkv__attn a;
        ck_assert_int_eq(pkv__attn_init(&a, pkv__kernels_select(backend_names[b]), 1, Hq, Hkv, D, 0.125f), 0);
        pkv__decode_seq s = {.kv = p.view, .n_tokens = n, .q = q, .out = out[b]};
        ck_assert_int_eq(pkv__attn_decode(&a, &s, 1), 0);
        pkv__attn_fini(&a);
        have[b] = 1;
      }
      for (int b = 0; b < 3; b++) {
        if (!have[b]) continue;
        for (uint32_t i = 0; i < Hq * D; i++) {
          /* head 0's rows saw the NaN row; head 1's did not */
          int expect_nan = i < G * D;
          ck_assert_msg((isnan(out[b][i]) != 0) == expect_nan, "%s %s %s: element %u = %g", backend_names[b],
                        qnames[t], which ? "V" : "K", i, (double)out[b][i]);
          if (!expect_nan && have[2])
            ck_assert(fabs((double)out[b][i] - out[2][i]) < TOL_OUT);
        }
      }
      tu_paged_free(&p);
    }
}
END_TEST

/* ------------------------------------------------------------ cache */

START_TEST(through_the_cache) {
  enum { HKV = 2, G = 4, HQ = HKV * G, D = 64, N = 40 };
  for (int t = 0; t < 3; t++) {
    const tu_engine_shape shape = {.dtype = qtypes[t], .n_layers = 2, .n_kv_heads = HKV,
                                   .head_dim = D, .block_size = 16, .num_blocks = 32,
                                   .n_q_heads = HQ};
    pkv_config cfg;
    pkv_engine_config ec;
    tu_engine_config(&shape, &cfg, &ec);
    ck_assert_uint_eq(pkv_dtype_size(qtypes[t]), 1);
    ck_assert_uint_eq(pkv_config_block_bytes(&cfg), (uint64_t)(D + 4) * 16 * HKV * 2 * 2);
    pkv_cache *cache;
    ck_assert_int_eq(pkv_cache_create(&cfg, &cache), 0);
    pkv_kv_layout L;
    ck_assert_int_eq(pkv_cache_layout(cache, &L), 0);
    ck_assert_uint_eq(L.elem_size, 1);
    ck_assert_uint_eq(L.slot_stride, D + 4);
    ck_assert_uint_eq(L.head_stride, (D + 4) * 16);
    pkv_engine *e;
    ck_assert_int_eq(pkv_engine_create(cache, &ec, &e), 0);
    /* history as stored: [token][head][D], dequantized */
    static float kh[N + 4][HKV * D], vh[N + 4][HKV * D], kb[2][N + 4][HKV * D], vb[2][N + 4][HKV * D];
    float q[N * HQ * D], k[N * HKV * D], v[N * HKV * D], out[N * HQ * D], ref[D];
    uint64_t rs = 31 + t;
    tu_fill(q, sizeof q / sizeof *q, 2.0f, &rs);
    tu_fill(k, sizeof k / sizeof *k, 1.0f, &rs);
    tu_fill(v, sizeof v / sizeof *v, 1.0f, &rs);
    uint8_t tmp[D + 4];
    for (int i = 0; i < N * HKV; i++) { /* what the cache will hold */
      pkv__store_row(tmp, k + i * D, D, qtypes[t]);
      pkv__load_row(kh[i / HKV] + (i % HKV) * D, tmp, D, qtypes[t]);
      pkv__store_row(tmp, v + i * D, D, qtypes[t]);
      pkv__load_row(vh[i / HKV] + (i % HKV) * D, tmp, D, qtypes[t]);
    }
    pkv_seq_id s, fk;
    ck_assert_int_eq(pkv_seq_create(cache, NULL, &s), 0);
    int32_t toks[N];
    for (int i = 0; i < N; i++) toks[i] = i;
    ck_assert_int_eq(pkv_seq_append(cache, s, toks, N, NULL), 0);
    ck_assert_int_eq(pkv_prefill(e, s, 1, 0, N, q, k, v, out), 0);
    float kt[(N + 4) * D], vt[(N + 4) * D];
    for (int i = 0; i < N; i += 13) /* spot rows of the prefill output */
      for (int hq = 0; hq < HQ; hq++) {
        for (int tt = 0; tt <= i; tt++) {
          memcpy(kt + tt * D, kh[tt] + (hq / G) * D, sizeof(float) * D);
          memcpy(vt + tt * D, vh[tt] + (hq / G) * D, sizeof(float) * D);
        }
        pkv__attn_row_ref(q + (i * HQ + hq) * D, kt, vt, D, (uint32_t)i + 1, D, 1.0f / 8.0f, ref);
        ck_assert_msg(tu_max_diff(out + (i * HQ + hq) * D, ref, D) < TOL_OUT, "%s prefill row %d", qnames[t], i);
      }
    /* fork in the middle of block 2: each branch's append copies the
     * partial block (codes and scales) before writing */
    ck_assert_int_eq(pkv_seq_fork(cache, s, &fk), 0);
    pkv_seq_id br[2] = {s, fk};
    for (int b = 0; b < 2; b++) {
      memcpy(kb[b], kh, sizeof(float) * N * HKV * D);
      memcpy(vb[b], vh, sizeof(float) * N * HKV * D);
    }
    for (int step = 0; step < 3; step++) {
      for (int b = 0; b < 2; b++) {
        int32_t tok = 100 + step * 2 + b;
        ck_assert_int_eq(pkv_seq_append(cache, br[b], &tok, 1, NULL), 0);
      }
      tu_fill(q, 2 * HQ * D, 2.0f, &rs);
      tu_fill(k, 2 * HKV * D, 1.0f, &rs);
      tu_fill(v, 2 * HKV * D, 1.0f, &rs);
      ck_assert_int_eq(pkv_decode(e, br, 2, 1, q, k, v, out), 0);
      uint32_t len = N + (uint32_t)step + 1;
      for (int b = 0; b < 2; b++) {
        for (int h = 0; h < HKV; h++) {
          pkv__store_row(tmp, k + (b * HKV + h) * D, D, qtypes[t]);
          pkv__load_row(kb[b][len - 1] + h * D, tmp, D, qtypes[t]);
          pkv__store_row(tmp, v + (b * HKV + h) * D, D, qtypes[t]);
          pkv__load_row(vb[b][len - 1] + h * D, tmp, D, qtypes[t]);
        }
        for (int hq = 0; hq < HQ; hq++) {
          for (uint32_t tt = 0; tt < len; tt++) {
            memcpy(kt + tt * D, kb[b][tt] + (hq / G) * D, sizeof(float) * D);
            memcpy(vt + tt * D, vb[b][tt] + (hq / G) * D, sizeof(float) * D);
          }
          pkv__attn_row_ref(q + (b * HQ + hq) * D, kt, vt, D, len, D, 1.0f / 8.0f, ref);
          ck_assert_msg(tu_max_diff(out + (b * HQ + hq) * D, ref, D) < TOL_OUT, "%s branch %d step %d",
                        qnames[t], b, step);
        }
      }
    }
    pkv_engine_destroy(e);
    pkv_cache_destroy(cache);
    /* external storage: the same layout for the caller to mirror */
    cfg.storage = PKV_STORAGE_EXTERNAL;
    ck_assert_int_eq(pkv_cache_create(&cfg, &cache), 0);
    pkv_kv_layout X;
    ck_assert_int_eq(pkv_cache_layout(cache, &X), 0);
    ck_assert_uint_eq(X.slot_stride, L.slot_stride);
    ck_assert_uint_eq(X.block_stride, L.block_stride);
    pkv_cache_destroy(cache);
  }
}
END_TEST

START_TEST(v_head_dim_narrower) {
  /* head_dim 80, V head dim 48 (quantized V rows padded with zeros, the
   * scale after head_dim codes): prefill and decode against the reference */
  enum { HKV = 1, G = 4, HQ = HKV * G, D = 80, DV = 48, N = 37 };
  for (int t = 0; t < 3; t++) {
    const tu_engine_shape shape = {.dtype = qtypes[t], .n_layers = 1, .n_kv_heads = HKV,
                                   .head_dim = D, .v_head_dim = DV, .block_size = 16,
                                   .num_blocks = 8, .n_q_heads = HQ};
    pkv_cache *cache;
    pkv_engine *e;
    ck_assert_int_eq(tu_engine_open(&shape, &cache, &e), 0);
    static float q[N * HQ * D], k[N * D], v[N * DV], out[N * HQ * DV], kh[N * D], vh[N * D];
    float ref[DV];
    uint8_t tmp[D + 4];
    uint64_t rs = 71 + t;
    tu_fill(q, sizeof q / sizeof *q, 2.0f, &rs);
    tu_fill(k, sizeof k / sizeof *k, 1.0f, &rs);
    tu_fill(v, sizeof v / sizeof *v, 1.0f, &rs);
    for (int i = 0; i < N; i++) { /* as stored (a zero-padded V row has the same scale) */
      pkv__store_row(tmp, k + i * D, D, qtypes[t]);
      pkv__load_row(kh + i * D, tmp, D, qtypes[t]);
      pkv__store_row(tmp, v + i * DV, DV, qtypes[t]);
      pkv__load_row(vh + i * D, tmp, DV, qtypes[t]); /* rows at stride D, as kh */
    }
    pkv_seq_id s;
    ck_assert_int_eq(pkv_seq_create(cache, NULL, &s), 0);
    int32_t toks[N];
    for (int i = 0; i < N; i++) toks[i] = i;
    ck_assert_int_eq(pkv_seq_append(cache, s, toks, N - 1, NULL), 0);
    ck_assert_int_eq(pkv_prefill(e, s, 0, 0, N - 1, q, k, v, out), 0);
    ck_assert_int_eq(pkv_seq_append(cache, s, toks + N - 1, 1, NULL), 0);
    ck_assert_int_eq(pkv_decode(e, &s, 1, 0, q + (N - 1) * HQ * D, k + (N - 1) * D, v + (N - 1) * DV,
                                out + (N - 1) * HQ * DV), 0);
    for (int i = 0; i < N; i++)
      for (int hq = 0; hq < HQ; hq++) {
        pkv__attn_row_ref_dv(q + (i * HQ + hq) * D, kh, vh, D, (uint32_t)i + 1, D, DV,
                             1.0f / sqrtf((float)D), ref);
        ck_assert_msg(tu_max_diff(out + (i * HQ + hq) * DV, ref, DV) < TOL_OUT, "%s row %d head %d: %g",
                      qnames[t], i, hq, tu_max_diff(out + (i * HQ + hq) * DV, ref, DV));
      }
    pkv_engine_destroy(e);
    pkv_cache_destroy(cache);
  }
}
END_TEST

TU_MAIN("quant",
    {"format", 0, {{fp8_codes_round_trip}, {row_format_and_edges}}},
    {"kernels", 120, {{kernels_exact_and_accurate}, {non_finite_rows_same_on_every_back_end},
                      {through_the_cache}, {v_head_dim_narrower}}})
