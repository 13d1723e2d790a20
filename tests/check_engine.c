/*
 * check_engine.c — the attention engine against its plain reference.
 *
 * Kernel-level cases run on synthetic paged layers (tu_paged.c): shuffled
 * block lists over an arena whose unused slots hold huge garbage, so a
 * kernel that reads the wrong slot fails loudly.  The reference is
 * pkv__attn_row_ref in double over contiguous f32 copies of what was stored
 * (after dtype rounding), which also makes every case a paged-versus-
 * contiguous comparison.  API-level cases (check_engine_api.c) go through a
 * real cache.
 *
 * Tolerances (absolute, on outputs of magnitude <= 1):
 *   TOL_OUT    f32 kernels vs the double reference, any storage type (the
 *              reference reads the same rounded K/V, so dtype adds nothing)
 *   TOL_SPLIT  split-K merge vs one pass, same back end
 *   TOL_BF16DOT  the bf16-dot decode (bf16 K/V, q rounded to bf16) vs the
 *              double reference on the unrounded q.  Rounding q to bf16
 *              changes each q_d by at most 2^-9 relatively, so a score
 *              moves by at most 2^-9 * sum_d |q_d k_d| * scale (~0.01-0.03
 *              at worst on these inputs: |q| <= 2, |k| <= 1, head_dim <=
 *              256); the per-element rounding errors are independent and
 *              cancel like a random walk, ~sqrt(head_dim) times smaller
 *              (~1e-3), and the outputs (|v| <= 1, convex combinations)
 *              move by no more than the weights: 2e-3 (5.4e-4 measured).
 *              Against the reference on the bf16-rounded q the path is held
 *              to TOL_OUT like every other kernel.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "tu_core.h"
#include "tu_paged.h"

#ifndef TOL_OUT
#define TOL_OUT 2e-6
#endif
#ifndef TOL_BF16DOT
#define TOL_BF16DOT 2e-3
#endif
#ifndef TOL_SPLIT
#define TOL_SPLIT 5e-7
#endif

#ifdef PKV_SANITIZE
#define LONG_CTX 1200
#define PREFILL_N 160
#else
#define LONG_CTX 5000
#define PREFILL_N 700
#endif

static const char *const backend_names[] = {"avx512", "avx2", "scalar"};
static const pkv_dtype dtypes[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};
static const char *const dtype_names[] = {"f32", "f16", "bf16"};

static const pkv__kernels *backend(int i) {
  if (!pkv__backend_supported(backend_names[i])) {
    static int said[3];
    if (!said[i]++) fprintf(stderr, "check_engine: skipping back end %s: this CPU lacks it\n", backend_names[i]);
    return NULL;
  }
  return pkv__kernels_select(backend_names[i]);
}

/* Reference decode output of one sequence over tokens [0, n). */
static void ref_decode(const tu_paged *p, uint32_t Hq, uint32_t n, const float *q,
                       float scale, float *out) {
  const uint32_t D = p->view.head_dim, G = Hq / p->n_kv_heads;
  for (uint32_t hq = 0; hq < Hq; hq++) {
    size_t c = (size_t)(hq / G) * p->cap_tokens * D;
    pkv__attn_row_ref(q + (size_t)hq * D, p->kc + c, p->vc + c, D, n, D, scale,
                      out + (size_t)hq * D);
  }
}

/* The end of a case: its query, output and reference rows and its paged
 * layer go; returns diff, the case's result. */
static double case_done(double diff, tu_paged *p, float *q, float *out, float *ref) {
  free(q);
  free(out);
  free(ref);
  tu_paged_free(p);
  return diff;
}

/* Runs decode of one sequence of n tokens through pkv__attn with threads;
 * returns the max difference to the reference. */
static double decode_case(const pkv__kernels *k, pkv_dtype dt, uint32_t Hkv, uint32_t G,
                          uint32_t D, uint32_t bs, uint32_t n, uint32_t threads) {
  tu_paged p;
  tu_paged_init(&p, dt, Hkv, D, bs, n, n * 31u + D + G);
  uint32_t Hq = Hkv * G;
  float *q = malloc(sizeof(float) * Hq * D), *out = malloc(sizeof(float) * Hq * D),
        *ref = malloc(sizeof(float) * Hq * D);
  uint64_t rs = 99 + n;
  tu_fill(q, (size_t)Hq * D, 2.0f, &rs);
  float scale = 1.0f / sqrtf((float)D);
  pkv__attn a;
  ck_assert_int_eq(pkv__attn_init(&a, k, threads, Hq, Hkv, D, scale), 0);
  pkv__decode_seq s = {.kv = p.view, .n_tokens = n, .q = q, .out = out};
  ck_assert_int_eq(pkv__attn_decode(&a, &s, 1), 0);
  ref_decode(&p, Hq, n, q, scale, ref);
  double diff = tu_max_diff(out, ref, (size_t)Hq * D);
  pkv__attn_fini(&a);
  return case_done(diff, &p, q, out, ref);
}

/* Prefill of tokens [pos0, pos0+n) in chunks of `chunk` over a layer that
 * already holds all K/V; max difference to the reference. */
static double prefill_case(const pkv__kernels *k, pkv_dtype dt, uint32_t Hkv, uint32_t G,
                           uint32_t D, uint32_t bs, uint32_t pos0, uint32_t n,
                           uint32_t chunk, uint32_t threads) {
  tu_paged p;
  uint32_t total = pos0 + n;
  tu_paged_init(&p, dt, Hkv, D, bs, total, total * 17u + D + G + bs);
  uint32_t Hq = Hkv * G;
  size_t row = (size_t)Hq * D;
  float *q = malloc(sizeof(float) * n * row), *out = malloc(sizeof(float) * n * row),
        *ref = malloc(sizeof(float) * row);
  uint64_t rs = 7 + n;
  tu_fill(q, n * row, 2.0f, &rs);
  float scale = 1.0f / sqrtf((float)D);
  pkv__attn a;
  ck_assert_int_eq(pkv__attn_init(&a, k, threads, Hq, Hkv, D, scale), 0);
  for (uint32_t c = 0; c < n; c += chunk) {
    uint32_t m = n - c < chunk ? n - c : chunk;
    ck_assert_int_eq(pkv__attn_prefill(&a, &p.view, pos0 + c, m, q + c * row, out + c * row), 0);
  }
  double worst = 0;
  for (uint32_t i = 0; i < n; i++) {
    for (uint32_t hq = 0; hq < Hq; hq++) {
      size_t cc = (size_t)(hq / G) * p.cap_tokens * D;
      pkv__attn_row_ref(q + i * row + (size_t)hq * D, p.kc + cc, p.vc + cc, D, pos0 + i + 1, D,
                        scale, ref + (size_t)hq * D);
    }
    double d = tu_max_diff(out + i * row, ref, row);
    if (!(d <= worst)) worst = d;
  }
  pkv__attn_fini(&a);
  return case_done(worst, &p, q, out, ref);
}

/* ------------------------------------------------------------ decode */

/* The decode and prefill matrices: every back end x dtype x GQA ratio x
 * head_dim, block size 16, each case's diff to the reference under TOL_OUT.
 * phase(k, dtype, G, D, gi, di, &n) runs one case of n tokens. */
typedef double (*matrix_phase)(const pkv__kernels *k, pkv_dtype dtype, uint32_t G, uint32_t D,
                               uint32_t gi, uint32_t di, uint32_t *n);
static void run_matrix(const char *what, matrix_phase phase) {
  static const uint32_t gs[] = {1, 4, 8}, ds[] = {64, 80, 96, 128, 256};
  for (int b = 0; b < 3; b++) {
    const pkv__kernels *k = backend(b);
    if (!k) continue;
    for (int t = 0; t < 3; t++)
      for (uint32_t gi = 0; gi < 3; gi++)
        for (uint32_t di = 0; di < 5; di++) {
          uint32_t n;
          double d = phase(k, dtypes[t], gs[gi], ds[di], gi, di, &n);
          ck_assert_msg(d < TOL_OUT, "%s %s %s G=%u D=%u n=%u: diff %g > %g", what,
                        backend_names[b], dtype_names[t], gs[gi], ds[di], n, d, TOL_OUT);
        }
  }
}

static double decode_matrix_case(const pkv__kernels *k, pkv_dtype dtype, uint32_t G, uint32_t D,
                                 uint32_t gi, uint32_t di, uint32_t *n) {
  (void)gi;
  *n = 37 + 50 * di;
  return decode_case(k, dtype, 2, G, D, 16, *n, 1);
}

START_TEST(decode_matrix) { run_matrix("decode", decode_matrix_case); }
END_TEST

/* Decode (1 and 2 threads, split) and prefill (chunks of 29, the last 40 positions) of one sequence
 * with K head dim D and V head dim Dv <= D (V slots D wide, as the cache
 * lays them out); max difference to the reference. */
static double shape_case(const pkv__kernels *k, pkv_dtype dt, uint32_t Hkv, uint32_t G,
                         uint32_t D, uint32_t Dv, uint32_t n) {
  tu_paged p;
  tu_paged_init(&p, dt, Hkv, D, 16, n, n + D + Dv + G);
  p.view.v_dim = Dv;
  const uint32_t Hq = Hkv * G, np = n < 40 ? n : 40; /* prefill the last np */
  float *q = malloc(sizeof(float) * (np + 1) * Hq * D), *out = malloc(sizeof(float) * np * Hq * Dv),
        *ref = malloc(sizeof(float) * Dv);
  uint64_t rs = 3 + D;
  tu_fill(q, (size_t)(np + 1) * Hq * D, 2.0f, &rs);
  const float scale = 1.0f / sqrtf((float)D);
  double worst = 0;
  for (uint32_t threads = 1; threads <= 2; threads++) {
    pkv__attn a;
    ck_assert_int_eq(pkv__attn_init(&a, k, threads, Hq, Hkv, D, scale), 0);
    pkv__attn_set_v_dim(&a, Dv);
    pkv__decode_seq sq = {.kv = p.view, .n_tokens = n, .q = q + (size_t)np * Hq * D, .out = out};
    ck_assert_int_eq(pkv__attn_decode(&a, &sq, 1), 0);
    for (uint32_t hq = 0; hq < Hq; hq++) {
      size_t c = (size_t)(hq / G) * p.cap_tokens * D;
      pkv__attn_row_ref_dv(sq.q + (size_t)hq * D, p.kc + c, p.vc + c, D, n, D, Dv, scale, ref);
      double d = tu_max_diff(out + (size_t)hq * Dv, ref, Dv);
      worst = d > worst ? d : worst;
    }
    for (uint32_t c0 = 0; c0 < np; c0 += 29) {
      uint32_t m = np - c0 < 29 ? np - c0 : 29;
      ck_assert_int_eq(pkv__attn_prefill(&a, &p.view, n - np + c0, m, q + (size_t)c0 * Hq * D,
                                         out + (size_t)c0 * Hq * Dv), 0);
    }
    for (uint32_t i = 0; i < np; i++)
      for (uint32_t hq = 0; hq < Hq; hq++) {
        size_t c = (size_t)(hq / G) * p.cap_tokens * D;
        pkv__attn_row_ref_dv(q + ((size_t)i * Hq + hq) * D, p.kc + c, p.vc + c, D, n - np + i + 1,
                             D, Dv, scale, ref);
        double d = tu_max_diff(out + ((size_t)i * Hq + hq) * Dv, ref, Dv);
        worst = d > worst ? d : worst;
      }
    pkv__attn_fini(&a);
  }
  return case_done(worst, &p, q, out, ref);
}

START_TEST(head_shapes) {
  /* head dims that are multiples of 8 (the AVX-512 kernels take multiples
   * of 16; the engine runs the others on AVX2), K/V dims that differ (MLA
   * 576/512, 192/128), MQA (1 KV head) to MHA (G = 1) */
  static const uint32_t shp[][4] = {
      /* D, Dv, Hkv, G */
      {8, 8, 2, 4},     {40, 40, 2, 3},  {72, 72, 1, 8},   {80, 80, 4, 1},   {96, 96, 2, 2},
      {136, 136, 1, 5}, {576, 576, 1, 4}, {576, 512, 1, 16}, {192, 128, 2, 4}, {64, 32, 8, 1},
      {120, 24, 3, 7}};
  int ran = 0;
  for (int b = 0; b < 3; b++) {
    const pkv__kernels *k = backend(b);
    if (!k) continue;
    for (unsigned i = 0; i < sizeof shp / sizeof shp[0]; i++) {
      const uint32_t D = shp[i][0], Dv = shp[i][1];
      if (b == 0 && (D % 16 || Dv % 16)) continue; /* AVX-512: whole 16-float vectors */
      for (int t = 0; t < 3; t++) {
        uint32_t n = D > 256 ? 90 : 560; /* > 512: the 2-thread decode splits */
        double d = shape_case(k, dtypes[t], shp[i][2], shp[i][3], D, Dv, n);
        ck_assert_msg(d < TOL_OUT, "%s %s D=%u Dv=%u Hkv=%u G=%u: diff %g", backend_names[b],
                      dtype_names[t], D, Dv, shp[i][2], shp[i][3], d);
        ran++;
      }
    }
  }
  ck_assert_int_gt(ran, 0);
}
END_TEST

/* The bf16-dot decode (kern->decode_bf16dot) on bf16 K/V: *exact_diff is
 * the max difference to the reference on q rounded to bf16 as the kernel
 * does it (bf16(q * scale * log2e)), *loose_diff to the reference on q. */
static void bf16dot_case(const pkv__kernels *k, uint32_t Hkv, uint32_t G, uint32_t D,
                         uint32_t bs, uint32_t n, uint32_t threads, double *exact_diff,
                         double *loose_diff) {
  tu_paged p;
  tu_paged_init(&p, PKV_DTYPE_BF16, Hkv, D, bs, n, n * 13u + D + G);
  uint32_t Hq = Hkv * G;
  size_t rows = (size_t)Hq * D;
  float *q = malloc(sizeof(float) * rows), *qr = malloc(sizeof(float) * rows),
        *out = malloc(sizeof(float) * rows), *ref = malloc(sizeof(float) * rows);
  uint64_t rs = 5 + n + D;
  tu_fill(q, rows, 2.0f, &rs);
  float scale = 1.0f / sqrtf((float)D), qs = scale * PKV__LOG2E;
  for (size_t i = 0; i < rows; i++) {
    uint16_t h = pkv__f32_to_bf16(q[i] * qs);
    qr[i] = pkv__bf16_to_f32_scalar(h) / qs;
  }
  pkv__attn a;
  ck_assert_int_eq(pkv__attn_init(&a, k, threads, Hq, Hkv, D, scale), 0);
  a.bf16_dot = 1;
  pkv__decode_seq s = {.kv = p.view, .n_tokens = n, .q = q, .out = out};
  ck_assert_int_eq(pkv__attn_decode(&a, &s, 1), 0);
  ref_decode(&p, Hq, n, qr, scale, ref);
  *exact_diff = tu_max_diff(out, ref, rows);
  ref_decode(&p, Hq, n, q, scale, ref);
  *loose_diff = tu_max_diff(out, ref, rows);
  pkv__attn_fini(&a);
  free(q);
  free(qr);
  free(out);
  free(ref);
  tu_paged_free(&p);
}

START_TEST(decode_bf16_dot) {
  /* every back end that has it; GQA ratios that exercise the 4-, 2- and
   * 1-head groups; head_dims with and without a 16-lane tail; lengths
   * with token tails; split-K with 2 threads */
  static const uint32_t gs[] = {1, 3, 4, 8}, ds[] = {64, 80, 96, 128, 256};
  int ran = 0;
  double worst = 0;
  for (int b = 0; b < 3; b++) {
    const pkv__kernels *k = backend(b);
    if (!k || !k->decode_bf16dot) continue;
    ran++;
    for (int gi = 0; gi < 4; gi++)
      for (int di = 0; di < 5; di++) {
        uint32_t n = 29 + 67 * (uint32_t)di + (uint32_t)gi;
        double ex, lo;
        bf16dot_case(k, 2, gs[gi], ds[di], 16, n, 1, &ex, &lo);
        ck_assert_msg(ex < TOL_OUT, "%s G=%u D=%u n=%u: diff %g to the bf16-q reference",
                      backend_names[b], gs[gi], ds[di], n, ex);
        ck_assert_msg(lo < TOL_BF16DOT, "%s G=%u D=%u n=%u: diff %g > %g", backend_names[b],
                      gs[gi], ds[di], n, lo, TOL_BF16DOT);
        worst = lo > worst ? lo : worst;
      }
    double ex, lo;
    bf16dot_case(k, 2, 4, 128, 16, LONG_CTX, 2, &ex, &lo);
    ck_assert_msg(ex < TOL_OUT && lo < TOL_BF16DOT, "split-K: diffs %g, %g", ex, lo);
    /* a back end without bf16 dot products falls back to the exact path */
  }
  const pkv__kernels *sc = pkv__kernels_select("scalar");
  ck_assert_ptr_null(sc->decode_bf16dot);
  if (!ran) fprintf(stderr, "check_engine: no back end with bf16 dot products here\n");
  else fprintf(stderr, "check_engine: bf16-dot decode, worst diff to the unrounded-q reference %g\n", worst);
}
END_TEST

START_TEST(decode_block_sizes_and_lengths) {
  static const uint32_t bss[] = {1, 16, 512};
  static const uint32_t ns[] = {1, 2, 15, 16, 17, 63, 64, 65, 511, 513, LONG_CTX};
  for (int b = 0; b < 3; b++) {
    const pkv__kernels *k = backend(b);
    if (!k) continue;
    for (int bi = 0; bi < 3; bi++)
      for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        if (b == 2 && ns[ni] > 600) continue; /* scalar: the long case is slow, covered by SIMD */
        pkv_dtype dt = dtypes[(bi + ni) % 3];
        double d = decode_case(k, dt, 2, 4, 64, bss[bi], ns[ni], 1);
        ck_assert_msg(d < TOL_OUT, "%s bs=%u n=%u %s: diff %g", backend_names[b], bss[bi], ns[ni],
                      dtype_names[(bi + ni) % 3], d);
      }
  }
}
END_TEST

START_TEST(decode_split_k_threads) {
  /* one long sequence, 2 threads: split along the context and merged */
  const pkv__kernels *k = pkv__kernels_select(NULL);
  ck_assert_ptr_nonnull(k);
  for (int t = 0; t < 3; t++) {
    double d = decode_case(k, dtypes[t], 1, 8, 128, 16, LONG_CTX, 2);
    ck_assert_msg(d < TOL_OUT, "split-K %s: diff %g", dtype_names[t], d);
    d = decode_case(k, dtypes[t], 2, 4, 128, 512, LONG_CTX / 2 + 7, 3);
    ck_assert_msg(d < TOL_OUT, "split-K 3 threads %s: diff %g", dtype_names[t], d);
  }
}
END_TEST

START_TEST(decode_mixed_batch) {
  /* sequences of different lengths over one arena share nothing but the
   * call; with 2 threads some are split, some not */
  const pkv__kernels *k = pkv__kernels_select(NULL);
  const uint32_t Hkv = 2, G = 4, D = 128, Hq = Hkv * G;
  static const uint32_t lens[] = {1, 700, 33, LONG_CTX, 16};
  enum { NS = 5 };
  tu_paged p[NS];
  pkv__decode_seq seqs[NS];
  float *q = malloc(sizeof(float) * NS * Hq * D), *out = malloc(sizeof(float) * NS * Hq * D),
        *ref = malloc(sizeof(float) * Hq * D);
  uint64_t rs = 5;
  tu_fill(q, (size_t)NS * Hq * D, 2.0f, &rs);
  for (int i = 0; i < NS; i++) {
    tu_paged_init(&p[i], dtypes[i % 3], Hkv, D, 16, lens[i], (uint64_t)i + 1);
    seqs[i] = (pkv__decode_seq){.kv = p[i].view, .n_tokens = lens[i],
                                .q = q + (size_t)i * Hq * D, .out = out + (size_t)i * Hq * D};
  }
  for (uint32_t threads = 1; threads <= 2; threads++) {
    pkv__attn a;
    ck_assert_int_eq(pkv__attn_init(&a, k, threads, Hq, Hkv, D, 0.1f), 0);
    ck_assert_int_eq(pkv__attn_decode(&a, seqs, NS), 0);
    ck_assert(pkv__attn_plan_is_valid(&a, seqs, NS));
    if (threads == 2) ck_assert_uint_gt(a.n_split, 0); /* 5 sequences < 4 x 2: split */
    for (int i = 0; i < NS; i++) {
      ref_decode(&p[i], Hq, lens[i], seqs[i].q, 0.1f, ref);
      double d = tu_max_diff(seqs[i].out, ref, (size_t)Hq * D);
      ck_assert_msg(d < TOL_OUT, "batch seq %d len %u threads %u: diff %g", i, lens[i], threads, d);
    }
    pkv__attn_fini(&a);
  }
  for (int i = 0; i < NS; i++) tu_paged_free(&p[i]);
  free(q);
  free(out);
  free(ref);
}
END_TEST

START_TEST(paged_equals_contiguous) {
  /* the same tokens through a 16-slot shuffled table and through one block
   * holding the whole context: the kernels must agree to rounding */
  const pkv__kernels *k = pkv__kernels_select(NULL);
  const uint32_t Hkv = 2, G = 4, D = 128, n = 999, Hq = Hkv * G;
  tu_paged pg, ct;
  tu_paged_init(&pg, PKV_DTYPE_BF16, Hkv, D, 16, n, 3);
  tu_paged_init(&ct, PKV_DTYPE_BF16, Hkv, D, n, n, 3);
  /* same contents: copy the paged layer's stored rows into the contiguous one */
  float *kr = malloc(sizeof(float) * Hkv * D), *vr = malloc(sizeof(float) * Hkv * D);
  for (uint32_t t = 0; t < n; t++) {
    for (uint32_t h = 0; h < Hkv; h++) {
      memcpy(kr + h * D, pg.kc + ((size_t)h * n + t) * D, sizeof(float) * D);
      memcpy(vr + h * D, pg.vc + ((size_t)h * n + t) * D, sizeof(float) * D);
    }
    tu_paged_store(&ct, t, kr, vr);
  }
  float *q = malloc(sizeof(float) * Hq * D), *o1 = malloc(sizeof(float) * Hq * D),
        *o2 = malloc(sizeof(float) * Hq * D);
  uint64_t rs = 11;
  tu_fill(q, (size_t)Hq * D, 2.0f, &rs);
  pkv__attn a;
  ck_assert_int_eq(pkv__attn_init(&a, k, 1, Hq, Hkv, D, 0.0884f), 0);
  pkv__decode_seq s1 = {.kv = pg.view, .n_tokens = n, .q = q, .out = o1};
  pkv__decode_seq s2 = {.kv = ct.view, .n_tokens = n, .q = q, .out = o2};
  ck_assert_int_eq(pkv__attn_decode(&a, &s1, 1), 0);
  ck_assert_int_eq(pkv__attn_decode(&a, &s2, 1), 0);
  double d = tu_max_diff(o1, o2, (size_t)Hq * D);
  ck_assert_msg(d < TOL_SPLIT, "paged vs contiguous decode: diff %g", d);
  float *pq = malloc(sizeof(float) * 64 * Hq * D), *p1 = malloc(sizeof(float) * 64 * Hq * D),
        *p2 = malloc(sizeof(float) * 64 * Hq * D);
  tu_fill(pq, (size_t)64 * Hq * D, 2.0f, &rs);
  ck_assert_int_eq(pkv__attn_prefill(&a, &pg.view, n - 64, 64, pq, p1), 0);
  ck_assert_int_eq(pkv__attn_prefill(&a, &ct.view, n - 64, 64, pq, p2), 0);
  d = tu_max_diff(p1, p2, (size_t)64 * Hq * D);
  ck_assert_msg(d < TOL_SPLIT, "paged vs contiguous prefill: diff %g", d);
  pkv__attn_fini(&a);
  free(kr); free(vr); free(q); free(o1); free(o2); free(pq); free(p1); free(p2);
  tu_paged_free(&pg);
  tu_paged_free(&ct);
}
END_TEST

/* ------------------------------------------------------------ prefill */

static double prefill_matrix_case(const pkv__kernels *k, pkv_dtype dtype, uint32_t G, uint32_t D,
                                  uint32_t gi, uint32_t di, uint32_t *n) {
  *n = 21 + 30 * gi + 7 * di;
  return prefill_case(k, dtype, 1, G, D, 16, 0, *n, *n, 1);
}

START_TEST(prefill_matrix) { run_matrix("prefill", prefill_matrix_case); }
END_TEST

START_TEST(prefill_block_sizes_long) {
  static const uint32_t bss[] = {1, 16, 512};
  for (int b = 0; b < 3; b++) {
    const pkv__kernels *k = backend(b);
    if (!k) continue;
    for (int bi = 0; bi < 3; bi++) {
      uint32_t n = b == 2 ? 150 : PREFILL_N;
      double d = prefill_case(k, dtypes[bi], 2, 4, 64, bss[bi], 0, n, n, 2);
      ck_assert_msg(d < TOL_OUT, "%s bs=%u n=%u: diff %g", backend_names[b], bss[bi], n, d);
    }
  }
}
END_TEST

START_TEST(prefill_after_prefix_and_chunked) {
  /* a cached prefix of 96 tokens, then the rest in chunks of 50, must equal
   * the reference of one causal pass; and chunking must not change the
   * result beyond rounding */
  const pkv__kernels *k = pkv__kernels_select(NULL);
  for (int t = 0; t < 3; t++) {
    double d = prefill_case(k, dtypes[t], 2, 4, 128, 16, 96, 250, 50, 2);
    ck_assert_msg(d < TOL_OUT, "prefix+chunks %s: diff %g", dtype_names[t], d);
    d = prefill_case(k, dtypes[t], 1, 1, 64, 512, 0, 300, 1, 1); /* one token at a time */
    ck_assert_msg(d < TOL_OUT, "chunk=1 %s: diff %g", dtype_names[t], d);
  }
}
END_TEST

START_TEST(chunked_equals_one_shot) {
  const pkv__kernels *k = pkv__kernels_select(NULL);
  const uint32_t Hkv = 2, G = 4, D = 64, n = 300, Hq = Hkv * G;
  tu_paged p;
  tu_paged_init(&p, PKV_DTYPE_F16, Hkv, D, 16, n, 8);
  size_t row = (size_t)Hq * D;
  float *q = malloc(sizeof(float) * n * row), *o1 = malloc(sizeof(float) * n * row),
        *o2 = malloc(sizeof(float) * n * row);
  uint64_t rs = 3;
  tu_fill(q, n * row, 2.0f, &rs);
  pkv__attn a;
  ck_assert_int_eq(pkv__attn_init(&a, k, 2, Hq, Hkv, D, 0.125f), 0);
  ck_assert_int_eq(pkv__attn_prefill(&a, &p.view, 0, n, q, o1), 0);
  static const uint32_t cuts[] = {0, 7, 64, 65, 200, 300};
  for (int c = 0; c + 1 < 6; c++)
    ck_assert_int_eq(pkv__attn_prefill(&a, &p.view, cuts[c], cuts[c + 1] - cuts[c],
                                       q + cuts[c] * row, o2 + cuts[c] * row), 0);
  double d = tu_max_diff(o1, o2, n * row);
  ck_assert_msg(d < TOL_SPLIT, "chunked vs one-shot: diff %g", d);
  pkv__attn_fini(&a);
  free(q); free(o1); free(o2);
  tu_paged_free(&p);
}
END_TEST

/* ------------------------------------------------------------ misc */

START_TEST(conversions_round_to_nearest_even) {
  ck_assert_uint_eq(pkv__f32_to_bf16(1.0f), 0x3f80);
  ck_assert_uint_eq(pkv__f32_to_f16(1.0f), 0x3c00);
  ck_assert_uint_eq(pkv__f32_to_f16(65504.0f), 0x7bff);
  ck_assert_uint_eq(pkv__f32_to_f16(1e6f), 0x7c00);
  ck_assert_uint_eq(pkv__f32_to_f16(-2.0f), 0xc000);
  ck_assert_uint_eq(pkv__f32_to_f16(5.9604645e-8f), 0x0001); /* min subnormal */
  /* ties: 1 + 2^-11 is halfway between 1 and the next half, rounds to even */
  ck_assert_uint_eq(pkv__f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  ck_assert_uint_eq(pkv__f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  ck_assert_uint_eq(pkv__f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  ck_assert_uint_eq(pkv__f32_to_bf16(1.0f + 0x1p-8f + 0x1p-15f), 0x3f81);
  /* round trip of every finite half */
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ck_assert_uint_eq(pkv__f32_to_f16(pkv__f16_to_f32_scalar((uint16_t)h)), h);
  }
}
END_TEST

START_TEST(simd_store_equals_scalar) {
  /* every back end's K/V write rounds exactly like pkv__store_row */
  enum { N = 1000 };
  static float x[N];
  uint64_t rs = 77;
  tu_fill(x, N, 3.0f, &rs);
  static const float special[] = {0.0f, -0.0f, 1e-40f, -3e-39f, 6e-8f, 3e-8f, 65504.0f,
                                  65520.0f, 1e9f, -1e9f, 1.0f + 0x1p-11f, 1.0f + 0x1p-8f,
                                  1.0f + 0x1p-8f + 0x1p-15f, INFINITY, -INFINITY, NAN, -NAN};
  for (size_t i = 0; i < sizeof special / sizeof *special; i++) x[i * 7] = special[i];
  for (int b = 0; b < 3; b++) {
    const pkv__kernels *k = backend(b);
    if (!k) continue;
    for (int t = 1; t < 3; t++) {
      uint16_t want[N], got[N];
      pkv__store_row(want, x, N, dtypes[t]);
      k->store(got, x, N, dtypes[t]);
      for (int i = 0; i < N; i++)
        ck_assert_msg(want[i] == got[i], "%s %s: x=%a -> %#x, scalar %#x", backend_names[b],
                      dtype_names[t], (double)x[i], got[i], want[i]);
    }
  }
}
END_TEST

START_TEST(backend_selection) {
  ck_assert_ptr_nonnull(pkv__kernels_select("scalar"));
  ck_assert_str_eq(pkv__kernels_select("scalar")->name, "scalar");
  ck_assert_ptr_null(pkv__kernels_select("sse9"));
  if (!pkv__backend_supported("avx512")) ck_assert_ptr_null(pkv__kernels_select("avx512"));
  setenv("PKV_BACKEND", "scalar", 1);
  ck_assert_str_eq(pkv__kernels_select(NULL)->name, "scalar");
  unsetenv("PKV_BACKEND");
  ck_assert_ptr_nonnull(pkv__kernels_select(NULL));
}
END_TEST

TU_MAIN("engine",
    {"decode", 120, {{decode_matrix}, {head_shapes}, {decode_block_sizes_and_lengths},
                     {decode_split_k_threads}, {decode_mixed_batch}, {decode_bf16_dot},
                     {paged_equals_contiguous}}},
    {"prefill", 120, {{prefill_matrix}, {prefill_block_sizes_long},
                      {prefill_after_prefix_and_chunked}, {chunked_equals_one_shot}}},
    {"misc", 0, {{conversions_round_to_nearest_even}, {backend_selection},
                 {simd_store_equals_scalar}}})
