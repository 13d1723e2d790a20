/*
 * check_engine_api.c — the public engine on a real cache: prefill and
 * decode through pkv_seq_append / pkv_prefill / pkv_decode / commit,
 * against a model that keeps each sequence's K/V history as contiguous
 * rows (rounded to the cache dtype) and the double-precision reference.
 * Covers prefix reuse, fork with copy-on-write on both branches, mixed
 * batches, and every validation error (with nothing written on error).
 *
 * Tolerance TOL_OUT: as in check_engine.c (f32 compute vs double reference
 * over the same stored values); TOL_BF16DOT likewise (the bf16-dot decode
 * option, q rounded to bf16, vs the reference on the unrounded q).
 */
#include <check.h>
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
#define TOL_BF16DOT 2e-3
#define MAXTOK 1024

enum { HKV = 2, G = 4, HQ = HKV * G, D = 64 };
#define KVROW ((size_t)HKV * D)
#define QROW ((size_t)HQ * D)

/* The model of one sequence: every K/V row it holds, as stored. */
typedef struct model {
  float k[MAXTOK][HKV * D], v[MAXTOK][HKV * D];
  uint32_t n;
} model;

static pkv_cache *cache;
static pkv_engine *engine;
static pkv_dtype cur_dtype;
static uint64_t rng = 1;
static double decode_tol = TOL_OUT; /* of decode_checked */
static uint32_t engine_bf16_dot;    /* of setup_with */

static void setup_with(pkv_dtype dt, uint32_t block_size, uint32_t threads) {
  const tu_engine_shape shape = {.dtype = dt, .n_layers = 2, .n_kv_heads = HKV, .head_dim = D,
                                 .block_size = block_size, .num_blocks = 4096 / block_size + 64,
                                 .n_q_heads = HQ, .n_threads = threads};
  pkv_config cfg;
  pkv_engine_config ec;
  tu_engine_config(&shape, &cfg, &ec);
  ck_assert_int_eq(pkv_cache_create(&cfg, &cache), 0);
  ec.bf16_dot = engine_bf16_dot;
  ck_assert_int_eq(pkv_engine_create(cache, &ec, &engine), 0);
  cur_dtype = dt;
}

static void teardown(void) {
  pkv_engine_destroy(engine);
  pkv_cache_destroy(cache);
  engine = NULL;
  cache = NULL;
}

static void round_rows(float *dst, const float *src, size_t n) {
  uint16_t tmp[HKV * D * 2];
  for (size_t i = 0; i < n; i += KVROW) {
    pkv__store_row(tmp, src + i, (uint32_t)KVROW, cur_dtype);
    pkv__load_row(dst + i, tmp, (uint32_t)KVROW, cur_dtype);
  }
}

static void model_add(model *m, const float *k, const float *v, uint32_t n) {
  ck_assert_uint_le(m->n + n, MAXTOK);
  round_rows(m->k[m->n], k, n * KVROW);
  round_rows(m->v[m->n], v, n * KVROW);
  m->n += n;
}

/* Checks out[QROW] of the query at position pos (attending [0, pos]). */
static double model_check(const model *m, uint32_t pos, const float *q, const float *out) {
  float ref[D];
  double worst = 0;
  float kh[MAXTOK * D], vh[MAXTOK * D];
  for (uint32_t h = 0; h < HKV; h++) {
    for (uint32_t t = 0; t <= pos; t++) {
      memcpy(kh + (size_t)t * D, m->k[t] + h * D, sizeof(float) * D);
      memcpy(vh + (size_t)t * D, m->v[t] + h * D, sizeof(float) * D);
    }
    for (uint32_t g = 0; g < G; g++) {
      uint32_t hq = h * G + g;
      pkv__attn_row_ref(q + hq * D, kh, vh, D, pos + 1, D, 1.0f / sqrtf(D), ref);
      for (uint32_t d = 0; d < D; d++) {
        double e = fabs((double)ref[d] - out[hq * D + d]);
        if (!(e <= worst)) worst = e;
      }
    }
  }
  return worst;
}

static int32_t *tokens_of(uint32_t base, uint32_t n) {
  static int32_t t[MAXTOK];
  for (uint32_t i = 0; i < n; i++) t[i] = (int32_t)(base + i);
  return t;
}

/* Prefills [pos0, pos0+n) of seq in layer 0 with fresh random rows, checks
 * every output, adds the rows to m. */
static void prefill_checked(pkv_seq_id s, model *m, uint32_t pos0, uint32_t n) {
  float *q = malloc(sizeof(float) * n * QROW), *k = malloc(sizeof(float) * n * KVROW),
        *v = malloc(sizeof(float) * n * KVROW), *out = malloc(sizeof(float) * n * QROW);
  tu_fill(q, n * QROW, 2.0f, &rng);
  tu_fill(k, n * KVROW, 1.0f, &rng);
  tu_fill(v, n * KVROW, 1.0f, &rng);
  ck_assert_int_eq(pkv_prefill(engine, s, 0, pos0, n, q, k, v, out), 0);
  ck_assert_uint_eq(m->n, pos0);
  model_add(m, k, v, n);
  for (uint32_t i = 0; i < n; i++) {
    double d = model_check(m, pos0 + i, q + i * QROW, out + i * QROW);
    ck_assert_msg(d < TOL_OUT, "prefill pos %u: diff %g", pos0 + i, d);
  }
  free(q); free(k); free(v); free(out);
}

/* A new sequence holding tok[0..n), prefilled in chunks of `chunk` tokens
 * (each checked against m, which starts empty) and committed. */
static pkv_seq_id prefilled_seq(model *m, const int32_t *tok, uint32_t n, uint32_t chunk) {
  pkv_seq_id s;
  m->n = 0;
  ck_assert_int_eq(pkv_seq_create(cache, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_append(cache, s, tok, n, NULL), 0);
  for (uint32_t pos = 0; pos < n; pos += chunk)
    prefill_checked(s, m, pos, n - pos < chunk ? n - pos : chunk);
  ck_assert_int_eq(pkv_seq_commit(cache, s, n), 0);
  return s;
}

/* The end of a compute test: the cache's invariants hold, then both go. */
static void checked_teardown(void) {
  char msg[256];
  ck_assert_msg(pkv_check(cache, msg, sizeof msg) == 0, "%s", msg);
  teardown();
}

/* One decode step for a batch: append, decode, check each against its model. */
static void decode_checked(const pkv_seq_id *seqs, model **ms, uint32_t n) {
  float q[8 * QROW], k[8 * KVROW], v[8 * KVROW], out[8 * QROW];
  ck_assert_uint_le(n, 8);
  /* distinct token ids: equal ids would let the prefix index deduplicate
   * blocks whose (random) K/V differ */
  static int32_t next_tok = 500000;
  for (uint32_t i = 0; i < n; i++) {
    int32_t tok = next_tok++;
    ck_assert_int_eq(pkv_seq_append(cache, seqs[i], &tok, 1, NULL), 0);
  }
  tu_fill(q, n * QROW, 2.0f, &rng);
  tu_fill(k, n * KVROW, 1.0f, &rng);
  tu_fill(v, n * KVROW, 1.0f, &rng);
  ck_assert_int_eq(pkv_decode(engine, seqs, n, 0, q, k, v, out), 0);
  for (uint32_t i = 0; i < n; i++) {
    model_add(ms[i], k + i * KVROW, v + i * KVROW, 1);
    double d = model_check(ms[i], ms[i]->n - 1, q + i * QROW, out + i * QROW);
    ck_assert_msg(d < decode_tol, "decode batch entry %u (len %u): diff %g", i, ms[i]->n, d);
    ck_assert_int_eq(pkv_seq_commit(cache, seqs[i], ms[i]->n), 0);
  }
}

/* ------------------------------------------------------------ tests */

START_TEST(prefill_then_decode_each_dtype) {
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};
  static const uint32_t bss[] = {16, 1, 512};
  for (int i = 0; i < 3; i++) {
    setup_with(dts[i], bss[i], (uint32_t)i + 1);
    static model m;
    pkv_seq_id s = prefilled_seq(&m, tokens_of(0, 100), 100, 60); /* [0,60) then [60,100) */
    model *ms[1] = {&m};
    for (int step = 0; step < 5; step++) decode_checked(&s, ms, 1);
    checked_teardown();
  }
}
END_TEST

START_TEST(prefill_after_cached_prefix) {
  setup_with(PKV_DTYPE_BF16, 16, 2);
  static model a, b;
  b.n = 0;
  pkv_seq_id sb;
  const uint32_t n = 70;
  int32_t *tok = tokens_of(1000, n);
  prefilled_seq(&a, tok, n, n);
  /* b shares the prompt: the full committed blocks are matched */
  ck_assert_int_eq(pkv_seq_create(cache, NULL, &sb), 0);
  uint32_t matched = 0;
  ck_assert_int_eq(pkv_seq_match_prefix(cache, sb, tok, n, n - 1, &matched), 0);
  ck_assert_uint_eq(matched, 64);
  /* the model of b: a's stored rows for the matched part */
  memcpy(b.k, a.k, sizeof(float) * KVROW * matched);
  memcpy(b.v, a.v, sizeof(float) * KVROW * matched);
  b.n = matched;
  ck_assert_int_eq(pkv_seq_append(cache, sb, tok + matched, n - matched, NULL), 0);
  prefill_checked(sb, &b, matched, n - matched); /* attends over the cached prefix */
  ck_assert_int_eq(pkv_seq_commit(cache, sb, n), 0);
  checked_teardown();
}
END_TEST

START_TEST(decode_after_fork_both_branches) {
  setup_with(PKV_DTYPE_F16, 16, 2);
  static model a, b;
  /* 40 = 2 full blocks + a shared partial tail */
  pkv_seq_id sa = prefilled_seq(&a, tokens_of(0, 40), 40, 40), sb;
  ck_assert_int_eq(pkv_seq_fork(cache, sa, &sb), 0);
  b = a;
  /* before its own append, the parent's tail is shared: not writable */
  {
    float q[QROW] = {0}, k[KVROW] = {0}, v[KVROW] = {0}, out[QROW];
    ck_assert_int_eq(pkv_decode(engine, &sa, 1, 0, q, k, v, out), PKV_ESTATE);
    ck_assert_str_ne(pkv_last_error(), "");
  }
  pkv_seq_id both[2] = {sa, sb};
  model *ms[2] = {&a, &b};
  for (int step = 0; step < 20; step++) decode_checked(both, ms, 2); /* diverge */
  /* each branch still sees its own history only */
  ck_assert_uint_eq(a.n, 60);
  ck_assert_uint_eq(b.n, 60);
  checked_teardown();
}
END_TEST

START_TEST(decode_mixed_lengths_batch) {
  setup_with(PKV_DTYPE_F32, 16, 2);
  static model m[5];
  static const uint32_t lens[] = {1, 17, 300, 64, 900};
  pkv_seq_id s[5];
  model *ms[5];
  for (int i = 0; i < 5; i++) {
    ms[i] = &m[i];
    s[i] = prefilled_seq(&m[i], tokens_of(10000u * (uint32_t)i, lens[i]), lens[i], lens[i]);
  }
  for (int step = 0; step < 3; step++) decode_checked(s, ms, 5);
  teardown();
}
END_TEST

/* ------------------------------------------------------------ errors */

static uint8_t *snapshot(size_t *bytes) {
  pkv_kv_layout l;
  ck_assert_int_eq(pkv_cache_layout(cache, &l), 0);
  void *k, *v;
  ck_assert_int_eq(pkv_cache_kv(cache, 0, &k, &v), 0);
  *bytes = l.layer_bytes;
  uint8_t *s = malloc(2 * l.layer_bytes);
  memcpy(s, k, l.layer_bytes);
  memcpy(s + l.layer_bytes, v, l.layer_bytes);
  return s;
}

static void assert_unchanged(const uint8_t *snap, size_t bytes) {
  void *k, *v;
  ck_assert_int_eq(pkv_cache_kv(cache, 0, &k, &v), 0);
  ck_assert_msg(memcmp(snap, k, bytes) == 0 && memcmp(snap + bytes, v, bytes) == 0,
                "K/V written by a failed call");
}

START_TEST(decode_bf16_dot_option) {
  /* by the config field and by the environment variable; prefill stays
   * exact (TOL_OUT), decode is held to TOL_BF16DOT */
  const int avail = pkv__kernels_select(NULL)->decode_bf16dot != NULL;
  for (int how = 0; how < 2; how++) {
    if (how == 0) engine_bf16_dot = 1;
    else setenv("PKV_BF16_DOT", "1", 1);
    setup_with(PKV_DTYPE_BF16, 16, 2);
    ck_assert_int_eq(pkv_engine_uses_bf16_dot(engine), avail);
    decode_tol = TOL_BF16DOT;
    static model m;
    pkv_seq_id s = prefilled_seq(&m, tokens_of(7000, 700), 700, 700);
    model *ms[1] = {&m};
    for (int step = 0; step < 3; step++) decode_checked(&s, ms, 1);
    decode_tol = TOL_OUT;
    engine_bf16_dot = 0;
    unsetenv("PKV_BF16_DOT");
    teardown();
  }
  /* other storage types keep the exact path */
  engine_bf16_dot = 1;
  setup_with(PKV_DTYPE_F32, 16, 1);
  ck_assert_int_eq(pkv_engine_uses_bf16_dot(engine), 0);
  teardown();
  engine_bf16_dot = 0;
  setup_with(PKV_DTYPE_BF16, 16, 1);
  ck_assert_int_eq(pkv_engine_uses_bf16_dot(engine), 0);
  teardown();
  ck_assert_int_eq(pkv_engine_uses_bf16_dot(NULL), 0);
}
END_TEST

/* DeepSeek-style MLA through a real cache: K 576 / V 512, one KV head, 16
 * query heads, every storage type; prefill of 37 tokens then a decode step,
 * every output against the double reference on the stored (rounded) K/V. */
START_TEST(mla_576_512) {
  enum { DK = 576, DV = 512, NQ = 16, N = 37 };
  for (int di = 0; di < 3; di++) {
    const pkv_dtype dt = (pkv_dtype)di;
    const tu_engine_shape shape = {.dtype = dt, .n_layers = 1, .n_kv_heads = 1, .head_dim = DK,
                                   .v_head_dim = DV, .block_size = 16, .num_blocks = 8,
                                   .n_q_heads = NQ};
    pkv_cache *c;
    pkv_engine *e;
    ck_assert_int_eq(tu_engine_open(&shape, &c, &e), 0);
    pkv_seq_id s;
    ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
    ck_assert_int_eq(pkv_seq_append(c, s, tokens_of(1, N), N, NULL), 0);
    float *q = malloc(sizeof(float) * (N + 1) * NQ * DK), *k = malloc(sizeof(float) * (N + 1) * DK),
          *v = malloc(sizeof(float) * (N + 1) * DV), *out = malloc(sizeof(float) * (N + 1) * NQ * DV);
    float *kr = malloc(sizeof(float) * (N + 1) * DK), *vr = malloc(sizeof(float) * (N + 1) * DK);
    float ref[DV];
    uint32_t tmp[DK]; /* a stored row: 4 bytes per element for f32 */
    tu_fill(q, (size_t)(N + 1) * NQ * DK, 2.0f, &rng);
    tu_fill(k, (size_t)(N + 1) * DK, 1.0f, &rng);
    tu_fill(v, (size_t)(N + 1) * DV, 1.0f, &rng);
    for (uint32_t t = 0; t <= N; t++) { /* what the cache stores, at V stride DK */
      pkv__store_row(tmp, k + (size_t)t * DK, DK, dt);
      pkv__load_row(kr + (size_t)t * DK, tmp, DK, dt);
      pkv__store_row(tmp, v + (size_t)t * DV, DV, dt);
      pkv__load_row(vr + (size_t)t * DK, tmp, DV, dt);
    }
    ck_assert_int_eq(pkv_prefill(e, s, 0, 0, N, q, k, v, out), 0);
    ck_assert_int_eq(pkv_seq_append(c, s, tokens_of(100, 1), 1, NULL), 0);
    ck_assert_int_eq(pkv_decode(e, &s, 1, 0, q + (size_t)N * NQ * DK, k + (size_t)N * DK,
                                v + (size_t)N * DV, out + (size_t)N * NQ * DV), 0);
    for (uint32_t t = 0; t <= N; t++)
      for (uint32_t h = 0; h < NQ; h++) {
        pkv__attn_row_ref_dv(q + ((size_t)t * NQ + h) * DK, kr, vr, DK, t + 1, DK, DV,
                             1.0f / sqrtf(DK), ref);
        for (uint32_t d = 0; d < DV; d++)
          ck_assert_msg(fabs((double)ref[d] - out[((size_t)t * NQ + h) * DV + d]) <= TOL_OUT,
                        "dtype %d token %u head %u elem %u: %g vs %g (%s)", di, t, h, d,
                        (double)out[((size_t)t * NQ + h) * DV + d], (double)ref[d],
                        pkv_engine_backend(e));
      }
    free(q);
    free(k);
    free(v);
    free(out);
    free(kr);
    free(vr);
    tu_engine_close(c, e);
  }
}
END_TEST

START_TEST(create_validation) {
  const tu_engine_shape shape = {.dtype = PKV_DTYPE_F32, .n_layers = 1, .n_kv_heads = 2,
                                 .head_dim = 64, .block_size = 16, .num_blocks = 8};
  pkv_config cfg;
  pkv_engine_config ec;
  tu_engine_config(&shape, &cfg, &ec);
  pkv_cache *c;
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), 0);
  pkv_engine *e = (pkv_engine *)1;
  ec.n_q_heads = 6; /* 2 kv heads: fine */
  ck_assert_int_eq(pkv_engine_create(NULL, &ec, &e), PKV_EINVAL);
  ck_assert_ptr_null(e);
  ck_assert_int_eq(pkv_engine_create(c, NULL, &e), PKV_EINVAL);
  ck_assert_int_eq(pkv_engine_create(c, &ec, NULL), PKV_EINVAL);
  ec.n_q_heads = 3;
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "n_q_heads"));
  ec.n_q_heads = 0;
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
  ec.n_q_heads = 4;
  ec.scale = -1.0f;
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
  ec.scale = NAN;
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
  ec.scale = 0;
  ec.bf16_dot = 2;
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "bf16_dot"));
  ck_assert_ptr_null(e);
  ec.bf16_dot = 0;
  ec.backend = "neon";
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "neon"));
  ec.backend = "scalar";
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), 0);
  ck_assert_str_eq(pkv_engine_backend(e), "scalar");
  pkv_engine_destroy(e);
  ec.backend = NULL;
  setenv("PKV_BACKEND", "avx2", 1);
  if (pkv__backend_supported("avx2")) {
    ck_assert_int_eq(pkv_engine_create(c, &ec, &e), 0);
    ck_assert_str_eq(pkv_engine_backend(e), "avx2");
    pkv_engine_destroy(e);
  }
  setenv("PKV_BACKEND", "bogus", 1);
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "PKV_BACKEND"));
  unsetenv("PKV_BACKEND");
  pkv_engine_destroy(NULL);
  pkv_cache_destroy(c);
  /* unsupported head shapes, each refused with the reason; 40 runs */
  static const uint32_t bad_dims[][2] = {{36, 0}, {584, 0}, {4, 0}, {64, 60}};
  for (int i = 0; i < 4; i++) {
    cfg.head_dim = bad_dims[i][0];
    cfg.v_head_dim = bad_dims[i][1];
    ck_assert_int_eq(pkv_cache_create(&cfg, &c), 0);
    ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_EINVAL);
    ck_assert_ptr_nonnull(strstr(pkv_last_error(), "head_dim"));
    ck_assert_ptr_nonnull(strstr(pkv_last_error(), "multiple of 8"));
    pkv_cache_destroy(c);
  }
  cfg.v_head_dim = 0;
  cfg.head_dim = 40;
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), 0);
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), 0);
  ck_assert_str_ne(pkv_engine_backend(e), "avx512"); /* 40 is not whole 16-float vectors */
  pkv_engine_destroy(e);
  pkv_cache_destroy(c);
  cfg.v_head_dim = 72; /* V wider than K: refused by the cache */
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "v_head_dim"));
  cfg.v_head_dim = 0;
  cfg.head_dim = 64;
  cfg.storage = PKV_STORAGE_EXTERNAL;
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), 0);
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), PKV_ENOTSUP);
  pkv_cache_destroy(c);
}
END_TEST

START_TEST(call_validation_writes_nothing) {
  setup_with(PKV_DTYPE_BF16, 16, 1);
  pkv_seq_id s, freed, other;
  ck_assert_int_eq(pkv_seq_create(cache, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_append(cache, s, tokens_of(0, 20), 20, NULL), 0);
  ck_assert_int_eq(pkv_seq_create(cache, NULL, &other), 0);
  ck_assert_int_eq(pkv_seq_append(cache, other, tokens_of(0, 5), 5, NULL), 0);
  ck_assert_int_eq(pkv_seq_create(cache, NULL, &freed), 0);
  ck_assert_int_eq(pkv_seq_free(cache, freed), 0);
  static float q[32 * QROW], k[32 * KVROW], v[32 * KVROW], out[32 * QROW];
  tu_fill(q, sizeof q / sizeof *q, 1.0f, &rng);
  tu_fill(k, sizeof k / sizeof *k, 1.0f, &rng);
  tu_fill(v, sizeof v / sizeof *v, 1.0f, &rng);
  for (size_t i = 0; i < sizeof out / sizeof *out; i++) out[i] = 12345.0f;
  size_t bytes;
  uint8_t *snap = snapshot(&bytes);
  /* prefill */
  ck_assert_int_eq(pkv_prefill(NULL, s, 0, 0, 4, q, k, v, out), PKV_EINVAL);
  ck_assert_int_eq(pkv_prefill(engine, s, 0, 0, 4, NULL, k, v, out), PKV_EINVAL);
  ck_assert_int_eq(pkv_prefill(engine, s, 0, 0, 0, q, k, v, out), PKV_EINVAL);
  ck_assert_int_eq(pkv_prefill(engine, s, 2, 0, 4, q, k, v, out), PKV_ERANGE);
  ck_assert_int_eq(pkv_prefill(engine, freed, 0, 0, 4, q, k, v, out), PKV_ENOSEQ);
  ck_assert_int_eq(pkv_prefill(engine, 0, 0, 0, 4, q, k, v, out), PKV_ENOSEQ);
  ck_assert_int_eq(pkv_prefill(engine, s, 0, 10, 11, q, k, v, out), PKV_ERANGE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "not reserved"));
  ck_assert_int_eq(pkv_prefill(engine, s, 0, UINT32_MAX, 2, q, k, v, out), PKV_ERANGE);
  /* decode */
  pkv_seq_id dup[2] = {s, s}, bad[2] = {s, freed};
  ck_assert_int_eq(pkv_decode(engine, dup, 2, 0, q, k, v, out), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "twice"));
  ck_assert_int_eq(pkv_decode(engine, bad, 2, 0, q, k, v, out), PKV_ENOSEQ);
  ck_assert_int_eq(pkv_decode(engine, &s, 0, 0, q, k, v, out), PKV_EINVAL);
  ck_assert_int_eq(pkv_decode(engine, &s, 1, 5, q, k, v, out), PKV_ERANGE);
  ck_assert_int_eq(pkv_decode(engine, NULL, 1, 0, q, k, v, out), PKV_EINVAL);
  /* a sequence with nothing reserved */
  pkv_seq_id empty;
  ck_assert_int_eq(pkv_seq_create(cache, NULL, &empty), 0);
  pkv_seq_id withempty[2] = {s, empty};
  ck_assert_int_eq(pkv_decode(engine, withempty, 2, 0, q, k, v, out), PKV_ERANGE);
  /* a cached (committed, full) block is immutable: prefill into it fails */
  assert_unchanged(snap, bytes);
  for (size_t i = 0; i < sizeof out / sizeof *out; i++) ck_assert_float_eq(out[i], 12345.0f);
  ck_assert_int_eq(pkv_prefill(engine, s, 0, 0, 20, q, k, v, out), 0);
  ck_assert_int_eq(pkv_seq_commit(cache, s, 20), 0);
  free(snap);
  snap = snapshot(&bytes);
  ck_assert_int_eq(pkv_prefill(engine, s, 0, 0, 4, q, k, v, out), PKV_ESTATE);
  assert_unchanged(snap, bytes);
  free(snap);
  teardown();
}
END_TEST


/* ------------------------------------------------------------ OOM */

static long alloc_budget = -1; /* allocations left before failing; -1 = no limit */

static int spend(void) {
  if (alloc_budget < 0) return 1;
  if (alloc_budget == 0) return 0;
  alloc_budget--;
  return 1;
}
static void *oom_malloc(size_t n) { return spend() ? malloc(n) : NULL; }
static void *oom_realloc(void *p, size_t n) { return spend() ? realloc(p, n) : NULL; }
static void *oom_calloc(size_t n, size_t m) { return spend() ? calloc(n, m) : NULL; }

START_TEST(out_of_memory_loop) {
  /* every allocation of engine creation and of a first large decode batch
   * fails in turn: each failure is PKV_ENOMEM and leaves nothing behind */
  ck_assert_int_eq(pkv_replace_allocator(oom_malloc, oom_realloc, oom_calloc, free), 0);
  int created = 0;
  for (long fail_at = 0; fail_at < 200 && !created; fail_at++) {
    alloc_budget = -1;
    setup_with(PKV_DTYPE_F32, 16, 1);
    pkv_engine_destroy(engine);
    engine = NULL;
    pkv_engine_config ec;
    pkv_engine_config_init(&ec);
    ec.n_q_heads = HQ;
    ec.n_threads = 2;
    pkv_engine *e = (pkv_engine *)1;
    alloc_budget = fail_at;
    int rc = pkv_engine_create(cache, &ec, &e);
    alloc_budget = -1;
    if (rc == 0) {
      created = 1;
      engine = e;
    } else {
      ck_assert_int_eq(rc, PKV_ENOMEM);
      ck_assert_ptr_null(e);
    }
    if (!created) teardown();
  }
  ck_assert_msg(created, "engine_create never succeeded within 200 allocations");
  /* a first batch of 6 sequences needs the work list to grow */
  pkv_seq_id s[6];
  for (int i = 0; i < 6; i++) {
    ck_assert_int_eq(pkv_seq_create(cache, NULL, &s[i]), 0);
    ck_assert_int_eq(pkv_seq_append(cache, s[i], tokens_of(100u * (uint32_t)i, 3), 3, NULL), 0);
  }
  static float q[6 * QROW], k[6 * KVROW], v[6 * KVROW], out[6 * QROW];
  tu_fill(k, 6 * KVROW, 1.0f, &rng);
  tu_fill(v, 6 * KVROW, 1.0f, &rng);
  size_t bytes;
  uint8_t *snap = snapshot(&bytes);
  int ok = 0;
  for (long fail_at = 0; fail_at < 50 && !ok; fail_at++) {
    alloc_budget = fail_at;
    int rc = pkv_decode(engine, s, 6, 0, q, k, v, out);
    alloc_budget = -1;
    if (rc == 0) ok = 1;
    else {
      ck_assert_int_eq(rc, PKV_ENOMEM);
      assert_unchanged(snap, bytes);
    }
  }
  ck_assert(ok);
  free(snap);
  teardown();
  ck_assert_int_eq(pkv_replace_allocator(NULL, NULL, NULL, NULL), 0);
}
END_TEST

TU_MAIN("engine_api",
    {"compute", 120, {{prefill_then_decode_each_dtype}, {prefill_after_cached_prefix},
                      {decode_after_fork_both_branches}, {decode_mixed_lengths_batch},
                      {mla_576_512}}},
    /* the bf16-dot and OOM loops compute; a loaded CI machine */
    {"validation", 120, {{create_validation}, {decode_bf16_dot_option},
                         {call_validation_writes_nothing}, {out_of_memory_loop}}})
