/*
 * check_engine_fuzz.c — non-finite and extreme inputs through every back
 * end (issue 12, engine items 1-3), and the engine fuzz harness's body in
 * the ordinary suite.
 *
 * The named cases are the reproductions the issue gave, run on every back
 * end this CPU has and every storage type:
 *   causal_mask_no_leak   prefill rows never see a later position's V: row
 *                         0 equals V[0] bit for bit while V[p > 0] is inf,
 *                         NaN or 1e5 (inf once stored as f16), n = 2, 40, 130
 *   nan_k_poisons_rows    a NaN in K at position p makes exactly the rows
 *                         that see p NaN (all of each row), on every back end
 *   huge_scores_finite    |q.k| far beyond f32 range: finite outputs, equal
 *                         to the reference (the weight of the arg-max key)
 *   vmax_sum_finite       V at the bf16 maximum (and 3e38 in f32) over a
 *                         thousand keys: the running sums stay finite
 * Then the harness (tests/fuzz/fuzz_engine.c, which compares the class of
 * every output element, and finite values, with the reference): the seed
 * corpus tests/fuzz/corpus_engine/ and a fixed-seed random batch.
 */
#define PKV_FUZZ_NO_MAIN
#include "fuzz/fuzz_engine.c"

#include <check.h>

#include "tu_core.h"

static const pkv_dtype all_dt[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};

/* Prefill of tokens [0, n) of p (one chunk) on back end b; out [n][Hq][D]. */
static int run_prefill(int b, tu_paged *p, uint32_t G, uint32_t n, const float *q, float *out,
                       float scale) {
  if (!pkv__backend_supported(fe_backends[b])) return 0;
  pkv__attn a;
  const uint32_t Hkv = p->n_kv_heads;
  ck_assert_int_eq(pkv__attn_init(&a, pkv__kernels_select(fe_backends[b]), 1, Hkv * G, Hkv,
                                  p->view.head_dim, scale), 0);
  ck_assert_int_eq(pkv__attn_prefill(&a, &p->view, 0, n, q, out), 0);
  pkv__attn_fini(&a);
  return 1;
}

static int run_decode(int b, tu_paged *p, uint32_t G, uint32_t n, uint32_t threads,
                      const float *q, float *out, float scale) {
  if (!pkv__backend_supported(fe_backends[b])) return 0;
  pkv__attn a;
  const uint32_t Hkv = p->n_kv_heads;
  ck_assert_int_eq(pkv__attn_init(&a, pkv__kernels_select(fe_backends[b]), threads, Hkv * G, Hkv,
                                  p->view.head_dim, scale), 0);
  pkv__decode_seq s = {.kv = p->view, .n_tokens = n, .q = q, .out = out};
  ck_assert_int_eq(pkv__attn_decode(&a, &s, 1), 0);
  pkv__attn_fini(&a);
  return 1;
}

/* Sets every element of V (which = 1) or K (0) of token t, all heads. */
static void set_row(tu_paged *p, uint32_t t, int which, float val) {
  const uint32_t H = p->n_kv_heads, D = p->view.head_dim;
  float *k = malloc(sizeof(float) * H * D), *v = malloc(sizeof(float) * H * D);
  for (uint32_t h = 0; h < H; h++) {
    memcpy(k + h * D, p->kc + ((size_t)h * p->cap_tokens + t) * D, D * sizeof(float));
    memcpy(v + h * D, p->vc + ((size_t)h * p->cap_tokens + t) * D, D * sizeof(float));
  }
  for (uint32_t i = 0; i < H * D; i++) (which ? v : k)[i] = val;
  tu_paged_store(p, t, k, v);
  free(k);
  free(v);
}

START_TEST(causal_mask_no_leak) {
  static const uint32_t ns[] = {2, 40, 130};
  static const float bad[] = {INFINITY, -INFINITY, NAN, 1e5f};
  const uint32_t D = 64, G = 4, Hkv = 2, Hq = Hkv * G;
  int ran = 0;
  for (int di = 0; di < 3; di++)
    for (unsigned ni = 0; ni < 3; ni++)
      for (unsigned bi = 0; bi < 4; bi++) {
        const uint32_t n = ns[ni];
        tu_paged p;
        tu_paged_init(&p, all_dt[di], Hkv, D, 16, n, 5 + n);
        for (uint32_t t = 1; t < n; t++) set_row(&p, t, 1, bad[bi]);
        float *q = malloc(sizeof(float) * n * Hq * D), *out = malloc(sizeof(float) * n * Hq * D);
        uint64_t rs = 3;
        tu_fill(q, (size_t)n * Hq * D, 2.0f, &rs);
        for (int b = 0; b < 3; b++) {
          if (!run_prefill(b, &p, G, n, q, out, 1.0f / 8)) continue;
          ran++;
          for (uint32_t hq = 0; hq < Hq; hq++)
            for (uint32_t d = 0; d < D; d++) {
              float v0 = p.vc[(size_t)(hq / G) * p.cap_tokens * D + d];
              ck_assert_msg(memcmp(&out[(size_t)hq * D + d], &v0, sizeof v0) == 0,
                            "%s dtype %d n %u V=%g: row 0 head %u elem %u is %g, V[0] %g",
                            fe_backends[b], di, n, (double)bad[bi], hq, d,
                            (double)out[(size_t)hq * D + d], (double)v0);
            }
          /* every later row sees the bad rows: its class is theirs */
          for (uint32_t i = 1; i < n; i++)
            for (uint32_t x = 0; x < Hq * D; x++) {
              float o = out[(size_t)i * Hq * D + x];
              float stored = p.vc[(size_t)((x / D) / G) * p.cap_tokens * D + (size_t)i * D + x % D];
              ck_assert_msg(fe_class(o) == fe_class(stored), "%s dtype %d n %u: row %u elem %u %g",
                            fe_backends[b], di, n, i, x, (double)o);
            }
        }
        free(q);
        free(out);
        tu_paged_free(&p);
      }
  ck_assert_int_gt(ran, 0);
}
END_TEST

START_TEST(nan_k_poisons_rows) {
  const uint32_t D = 32, G = 3, Hkv = 2, Hq = Hkv * G, n = 70, p_bad = 33;
  for (int di = 0; di < 3; di++) {
    tu_paged p;
    tu_paged_init(&p, all_dt[di], Hkv, D, 8, n, 77);
    /* one NaN element in head 1's K at position p_bad */
    float *k = malloc(sizeof(float) * Hkv * D), *v = malloc(sizeof(float) * Hkv * D);
    for (uint32_t h = 0; h < Hkv; h++) {
      memcpy(k + h * D, p.kc + ((size_t)h * p.cap_tokens + p_bad) * D, D * sizeof(float));
      memcpy(v + h * D, p.vc + ((size_t)h * p.cap_tokens + p_bad) * D, D * sizeof(float));
    }
    k[D + 5] = NAN;
    tu_paged_store(&p, p_bad, k, v);
    float *q = malloc(sizeof(float) * n * Hq * D), *out = malloc(sizeof(float) * n * Hq * D);
    uint64_t rs = 11;
    tu_fill(q, (size_t)n * Hq * D, 2.0f, &rs);
    for (int b = 0; b < 3; b++) {
      if (!run_prefill(b, &p, G, n, q, out, 0.2f)) continue;
      for (uint32_t i = 0; i < n; i++)
        for (uint32_t hq = 0; hq < Hq; hq++)
          for (uint32_t d = 0; d < D; d++) {
            int want_nan = hq / G == 1 && i >= p_bad;
            float o = out[((size_t)i * Hq + hq) * D + d];
            ck_assert_msg(want_nan ? o != o : isfinite(o), "%s dtype %d row %u head %u: %g",
                          fe_backends[b], di, i, hq, (double)o);
          }
      ck_assert(run_decode(b, &p, G, n, 1, q, out, 0.2f));
      for (uint32_t x = 0; x < Hq * D; x++)
        ck_assert_msg((x / D) / G == 1 ? out[x] != out[x] : isfinite(out[x]), "%s decode %u",
                      fe_backends[b], x);
    }
    free(k);
    free(v);
    free(q);
    free(out);
    tu_paged_free(&p);
  }
}
END_TEST

/* max |out - ref| over Hq rows of a decode, relative to vmax */
static void check_decode_vs_ref(tu_paged *p, uint32_t G, uint32_t n, uint32_t threads,
                                const float *q, float scale, double rel, double vmax) {
  const uint32_t Hq = p->n_kv_heads * G, D = p->view.head_dim;
  float *out = malloc(sizeof(float) * Hq * D), *ref = malloc(sizeof(float) * D);
  for (int b = 0; b < 3; b++) {
    if (!run_decode(b, p, G, n, threads, q, out, scale)) continue;
    for (uint32_t hq = 0; hq < Hq; hq++) {
      size_t c = (size_t)(hq / G) * p->cap_tokens * D;
      pkv__attn_row_ref(q + (size_t)hq * D, p->kc + c, p->vc + c, D, n, D, scale, ref);
      for (uint32_t d = 0; d < D; d++) {
        float o = out[(size_t)hq * D + d];
        ck_assert_msg(isfinite(o) && fabs((double)o - ref[d]) <= rel * vmax,
                      "%s threads %u head %u elem %u: %g, reference %g", fe_backends[b],
                      threads, hq, d, (double)o, (double)ref[d]);
      }
    }
  }
  free(out);
  free(ref);
}

START_TEST(huge_scores_finite) {
  const uint32_t D = 64, G = 2, Hkv = 2, Hq = Hkv * G, n = 1500;
  for (int di = 0; di < 3; di++) {
    tu_paged p;
    tu_paged_init(&p, all_dt[di], Hkv, D, 16, n, 9);
    /* K of magnitude 1e18 (1e4 when f16 cannot hold it), q of 1e20:
     * scores ~1e38 * D, beyond f32 */
    float kscale = all_dt[di] == PKV_DTYPE_F16 ? 1e4f : 1e18f;
    float *k = malloc(sizeof(float) * Hkv * D), *v = malloc(sizeof(float) * Hkv * D);
    uint64_t rs = 21;
    for (uint32_t t = 0; t < n; t++) {
      tu_fill(k, (size_t)Hkv * D, kscale, &rs);
      tu_fill(v, (size_t)Hkv * D, 1.0f, &rs);
      tu_paged_store(&p, t, k, v);
    }
    float *q = malloc(sizeof(float) * Hq * D);
    tu_fill(q, (size_t)Hq * D, 1e20f, &rs);
    check_decode_vs_ref(&p, G, n, 1, q, 1.0f / 8, 1e-6, 1.0);
    check_decode_vs_ref(&p, G, n, 2, q, 1.0f / 8, 1e-6, 1.0);
    free(k);
    free(v);
    free(q);
    tu_paged_free(&p);
  }
}
END_TEST

START_TEST(vmax_sum_finite) {
  const uint32_t D = 32, G = 4, Hkv = 1, Hq = Hkv * G, n = 1100;
  static const pkv_dtype dts[] = {PKV_DTYPE_BF16, PKV_DTYPE_F32};
  static const float vals[] = {3.3895314e38f /* bf16 max */, 3.0e38f};
  for (int di = 0; di < 2; di++) {
    tu_paged p;
    tu_paged_init(&p, dts[di], Hkv, D, 16, n, 4);
    float *k = malloc(sizeof(float) * Hkv * D), *v = malloc(sizeof(float) * Hkv * D);
    uint64_t rs = 8;
    for (uint32_t t = 0; t < n; t++) {
      tu_fill(k, (size_t)Hkv * D, 0.01f, &rs); /* near-uniform weights */
      for (uint32_t d = 0; d < D; d++) v[d] = d % 3 ? vals[di] : (t & 1 ? vals[di] : -vals[di]);
      tu_paged_store(&p, t, k, v);
    }
    float *q = malloc(sizeof(float) * Hq * D);
    tu_fill(q, (size_t)Hq * D, 1.0f, &rs);
    check_decode_vs_ref(&p, G, n, 1, q, 0.2f, 1e-4, vals[di]);
    check_decode_vs_ref(&p, G, n, 2, q, 0.2f, 1e-4, vals[di]);
    /* prefill of all n rows */
    float *qp = malloc(sizeof(float) * n * Hq * D), *out = malloc(sizeof(float) * n * Hq * D);
    tu_fill(qp, (size_t)n * Hq * D, 1.0f, &rs);
    for (int b = 0; b < 3; b++) {
      if (!run_prefill(b, &p, G, n, qp, out, 0.2f)) continue;
      for (size_t x = 0; x < (size_t)n * Hq * D; x++)
        ck_assert_msg(isfinite(out[x]), "%s prefill elem %zu: %g", fe_backends[b], x,
                      (double)out[x]);
    }
    free(qp);
    free(out);
    free(k);
    free(v);
    free(q);
    tu_paged_free(&p);
  }
}
END_TEST

START_TEST(seed_corpus) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus_engine", tu_srcdir());
  int n = tu_replay_dir(dir, pkv_fuzz_engine_run);
  ck_assert_msg(n >= 0, "no seed corpus in %s (run from the repo root or set PKV_SRCDIR)", dir);
  ck_assert_int_gt(n, 0);
}
END_TEST

START_TEST(random_inputs) {
#if PKV_SANITIZE
  const int runs = 12;
#else
  const int runs = 50;
#endif
  static uint8_t buf[256];
  uint64_t st = 0x243f6a8885a308d3ull + (uint64_t)_i; /* fixed: failures reproduce */
  for (int r = 0; r < runs; r++) {
    size_t len = 12 + tu_rand(&st) % (sizeof buf - 12);
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)tu_rand(&st);
    pkv_fuzz_engine_run(buf, len);
  }
}
END_TEST

TU_MAIN("engine_fuzz",
    {"nonfinite", 300, {{causal_mask_no_leak}, {nan_k_poisons_rows}, {huge_scores_finite},
                        {vmax_sum_finite}, {seed_corpus}, {random_inputs, 0, 4}}})
