/*
 * check_cascade.c — shared-prefix (cascade) decode against plain decode.
 *
 * Kernel level: one synthetic paged layer (tu_paged.c) whose blocks are
 * handed out to hand-built page tables with a chosen sharing pattern — none,
 * all, several groups, a shared prefix that ends mid-block, a sequence whose
 * table is a prefix of another's.  Each batch is decoded with the cascade
 * forced on (PKV__CASCADE_ALWAYS), automatic, and off; the cascade result
 * must equal the plain one within TOL_CASCADE on every back end, dtype
 * (f32, f16, bf16 and the quantized int8 / fp8) and thread count, and the plan must be (or not be) a cascade as the pattern
 * says.  Non-finite K/V in the shared and private parts must give the same
 * class of result (finite / NaN / ±Inf) per element as plain decode.
 * API level: forks of one prompt through a real cache, pkv_decode with the
 * default engine against an engine made with cascade = 1, and the default
 * engine's first cascade batch under a failing allocator (every failure is
 * PKV_ENOMEM with no K/V and no output written).
 *
 * TOL_CASCADE (absolute, outputs of magnitude <= 1): the cascade runs the
 * same kernel over the same values and only cuts the context's tiles at the
 * shared length instead of at multiples of the tile, so the two differ by
 * the rounding of a differently ordered f32 sum (measured <= 3e-7).
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

#ifndef TOL_CASCADE
#define TOL_CASCADE 2e-6
#endif

static const char *const backend_names[] = {"avx512", "avx2", "scalar"};
static const pkv_dtype dtypes[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};

enum { MAXSEQ = 12, MAXBLK = 320 };

/* A batch over one layer: each sequence's table picks blocks of the layer. */
typedef struct batch {
  tu_paged layer;
  uint32_t n_seqs, next_block; /* next unused block of layer.blocks */
  uint32_t pool_blocks;
  int32_t tables[MAXSEQ][MAXBLK];
  uint32_t n_tokens[MAXSEQ];
} batch;

static void batch_init(batch *b, pkv_dtype dt, uint32_t Hkv, uint32_t D, uint32_t bs,
                       uint64_t seed) {
  memset(b, 0, sizeof *b);
  b->pool_blocks = bs >= 16 ? 256 : bs >= 7 ? 400 : 1200; /* what the patterns use */
  tu_paged_init(&b->layer, dt, Hkv, D, bs, b->pool_blocks * bs, seed);
}

/* Appends a sequence of n tokens whose first `share_blocks` blocks are
 * those of sequence `from` (-1: none) and the rest fresh. */
static void add_seq(batch *b, int from, uint32_t share_blocks, uint32_t n) {
  const uint32_t bs = b->layer.view.block_size, nb = (n + bs - 1) / bs;
  uint32_t s = b->n_seqs++;
  ck_assert_uint_le(nb, MAXBLK);
  for (uint32_t i = 0; i < nb; i++) {
    if (from >= 0 && i < share_blocks) {
      b->tables[s][i] = b->tables[from][i];
    } else {
      ck_assert_uint_lt(b->next_block, b->pool_blocks);
      b->tables[s][i] = b->layer.blocks[b->next_block++];
    }
  }
  b->n_tokens[s] = n;
}

static int fclass(float x) { return isnan(x) ? 0 : isinf(x) ? (x > 0 ? 1 : 2) : 3; }

/* V head dim of the views (0: head_dim), for the shape cases. */
static uint32_t test_vdim;

/* Decodes the batch with cascade mode `mode`; returns whether the plan was
 * a cascade. */
static int run(const batch *b, const pkv__kernels *k, uint32_t threads, uint32_t G, int mode,
               int bf16_dot, const float *q, float *out) {
  const uint32_t Hkv = b->layer.n_kv_heads, D = b->layer.view.head_dim, Hq = Hkv * G;
  pkv__decode_seq seqs[MAXSEQ];
  for (uint32_t s = 0; s < b->n_seqs; s++) {
    seqs[s] = (pkv__decode_seq){.kv = b->layer.view, .n_tokens = b->n_tokens[s],
                                .q = q + (size_t)s * Hq * D, .out = out + (size_t)s * Hq * D};
    seqs[s].kv.blocks = b->tables[s];
    seqs[s].kv.v_dim = test_vdim;
  }
  pkv__attn a;
  ck_assert_int_eq(pkv__attn_init(&a, k, threads, Hq, Hkv, D, 1.0f / sqrtf((float)D)), 0);
  if (test_vdim) pkv__attn_set_v_dim(&a, test_vdim);
  a.cascade_mode = mode;
  a.bf16_dot = bf16_dot && k->decode_bf16dot && b->layer.view.dtype == PKV_DTYPE_BF16;
  ck_assert_int_eq(pkv__attn_decode(&a, seqs, b->n_seqs), 0);
  int active = pkv__cascade_active(&a);
  pkv__attn_fini(&a);
  return active;
}

/* Cascade (forced and automatic) vs plain for one batch, every thread
 * count; expect_cascade: whether the forced plan must be a cascade. */
static void compare(const batch *b, const pkv__kernels *k, uint32_t G, int expect_cascade,
                    int bf16_dot, const char *what) {
  const uint32_t Hq = b->layer.n_kv_heads * G, D = b->layer.view.head_dim;
  const size_t n = (size_t)b->n_seqs * Hq * D;
  float *q = malloc(sizeof(float) * n), *plain = calloc(n, sizeof(float)),
        *casc = calloc(n, sizeof(float));
  uint64_t rs = 11 + b->n_seqs + G;
  tu_fill(q, n, 2.0f, &rs);
  for (uint32_t threads = 1; threads <= 2; threads++) {
    ck_assert_int_eq(run(b, k, threads, G, PKV__CASCADE_OFF, bf16_dot, q, plain), 0);
    int on = run(b, k, threads, G, PKV__CASCADE_ALWAYS, bf16_dot, q, casc);
    ck_assert_msg(on == expect_cascade, "%s %s: cascade %d, expected %d", what, k->name, on,
                  expect_cascade);
    double d = tu_max_diff(casc, plain, n);
    ck_assert_msg(d < TOL_CASCADE, "%s %s dtype %d G %u threads %u: diff %g", what, k->name,
                  (int)b->layer.view.dtype, G, threads, d);
    (void)run(b, k, threads, G, PKV__CASCADE_AUTO, bf16_dot, q, casc);
    d = tu_max_diff(casc, plain, n);
    ck_assert_msg(d < TOL_CASCADE, "%s %s auto threads %u: diff %g", what, k->name, threads, d);
  }
  free(q);
  free(plain);
  free(casc);
}

/* The sharing patterns, on block size bs. */
static void patterns(const pkv__kernels *k, pkv_dtype dt, uint32_t bs, uint32_t G, int bf16_dot) {
  const uint32_t Hkv = 2, D = 64;
  static batch b; /* large: off the stack */
  /* none: every table its own */
  batch_init(&b, dt, Hkv, D, bs, 1);
  for (uint32_t s = 0; s < 4; s++) add_seq(&b, -1, 0, 100 + 37 * s);
  compare(&b, k, G, 0, bf16_dot, "none");
  tu_paged_free(&b.layer);
  /* all: one prompt of 20 blocks, private suffixes of various lengths */
  batch_init(&b, dt, Hkv, D, bs, 2);
  add_seq(&b, -1, 0, 20 * bs + 3);
  for (uint32_t s = 1; s < 9; s++) add_seq(&b, 0, 20, 20 * bs + 1 + 11 * s);
  compare(&b, k, G, 1, bf16_dot, "all");
  tu_paged_free(&b.layer);
  /* several groups (different prefix lengths) and a loner */
  batch_init(&b, dt, Hkv, D, bs, 3);
  add_seq(&b, -1, 0, 9 * bs + 5);
  add_seq(&b, 0, 9, 9 * bs + 40);
  add_seq(&b, 0, 6, 12 * bs); /* shares only 6 of 0's blocks: group prefix 6 blocks */
  add_seq(&b, -1, 0, 300);
  add_seq(&b, -1, 0, 4 * bs + 9);
  add_seq(&b, 4, 4, 5 * bs);
  add_seq(&b, 4, 4, 4 * bs + 10);
  add_seq(&b, 4, 2, 7 * bs);
  compare(&b, k, G, 1, bf16_dot, "groups");
  tu_paged_free(&b.layer);
  /* shared prefix ending mid-block, and a table that is a prefix of
   * another's: sequence 0 holds 5.5 blocks, all of them in 1's table */
  batch_init(&b, dt, Hkv, D, bs, 4);
  add_seq(&b, -1, 0, 5 * bs + bs / 2 + 1);
  add_seq(&b, 0, 6, 11 * bs + 2);
  add_seq(&b, 0, 6, 6 * bs); /* also all of 0's table, ends at a block edge */
  compare(&b, k, G, 1, bf16_dot, "mid-block/prefix-of");
  tu_paged_free(&b.layer);
}

START_TEST(cascade_equals_plain) {
  static const uint32_t block_sizes[] = {16, 7, 1};
  for (int bi = 0; bi < 3; bi++) {
    if (!pkv__backend_supported(backend_names[bi])) {
      fprintf(stderr, "check_cascade: skipping back end %s: this CPU lacks it\n", backend_names[bi]);
      continue;
    }
    const pkv__kernels *k = pkv__kernels_select(backend_names[bi]);
    for (int t = 0; t < 3; t++)
      for (int s = 0; s < 3; s++) patterns(k, dtypes[t], block_sizes[s], 4, 0);
    patterns(k, PKV_DTYPE_F16, 16, 1, 0);
    patterns(k, PKV_DTYPE_F32, 16, 8, 0);
    patterns(k, PKV_DTYPE_BF16, 16, 4, 1); /* bf16 dot products where the back end has them */
    static const pkv_dtype quant[] = {PKV_DTYPE_I8, PKV_DTYPE_FP8_E4M3, PKV_DTYPE_FP8_E5M2};
    for (int t = 0; t < 3; t++) patterns(k, quant[t], 16, 4, 0);
  }
}
END_TEST

START_TEST(cascade_wide_groups) {
  /* more members than one shared item holds (64 rows): the group's rows
   * are cut into several items per head */
  const pkv__kernels *k = pkv__kernels_select(NULL);
  static batch b; /* large: off the stack */
  batch_init(&b, PKV_DTYPE_F16, 2, 64, 16, 5);
  add_seq(&b, -1, 0, 16 * 16 + 4);
  for (uint32_t s = 1; s < MAXSEQ; s++) add_seq(&b, 0, 16, 16 * 16 + 2 + s);
  compare(&b, k, 8, 1, 0, "wide G8");
  compare(&b, k, 16, 1, 0, "wide G16");
  tu_paged_free(&b.layer);
}
END_TEST

START_TEST(cascade_head_shapes) {
  /* head_dim 80 with V head dim 48, and head_dim 576 with V 512 (MLA),
   * through the same patterns */
  const pkv__kernels *k = pkv__kernels_select(NULL);
  static const uint32_t dk[] = {80, 576}, dv[] = {48, 512};
  for (int i = 0; i < 2; i++) {
    static batch b;
    batch_init(&b, PKV_DTYPE_F16, 1, dk[i], 16, 9);
    add_seq(&b, -1, 0, 20 * 16 + 3);
    for (uint32_t s = 1; s < 4; s++) add_seq(&b, 0, 20, 20 * 16 + 1 + 9 * s);
    test_vdim = dv[i];
    compare(&b, k, 4, 1, 0, "head shape");
    test_vdim = 0;
    tu_paged_free(&b.layer);
  }
}
END_TEST

START_TEST(cascade_auto_threshold) {
  /* automatic mode skips short shared prefixes; forced mode takes any */
  const pkv__kernels *k = pkv__kernels_select(NULL);
  static batch b; /* large: off the stack */
  batch_init(&b, PKV_DTYPE_F32, 2, 64, 16, 6);
  add_seq(&b, -1, 0, 3 * 16 + 1);
  add_seq(&b, 0, 2, 3 * 16 + 5);
  const size_t n = (size_t)2 * 8 * 64;
  float *q = calloc(n, sizeof(float)), *out = malloc(sizeof(float) * n);
  ck_assert_int_eq(run(&b, k, 1, 4, PKV__CASCADE_AUTO, 0, q, out), 0);
  ck_assert_int_eq(run(&b, k, 1, 4, PKV__CASCADE_ALWAYS, 0, q, out), 1);
  tu_paged_free(&b.layer);
  batch_init(&b, PKV_DTYPE_F32, 2, 64, 16, 7);
  add_seq(&b, -1, 0, 40 * 16 + 1);
  add_seq(&b, 0, 40, 40 * 16 + 5);
  ck_assert_int_eq(run(&b, k, 1, 4, PKV__CASCADE_AUTO, 0, q, out), 1);
  tu_paged_free(&b.layer);
  free(q);
  free(out);
}
END_TEST

/* Writes x into K (which = 0) or V (1) of token t, head 0, dimension 3. */
static void poke(batch *b, int32_t block, uint32_t slot, int which, float x) {
  const pkv__kv_view *w = &b->layer.view;
  size_t es = w->dtype == PKV_DTYPE_F32 ? 4 : 2;
  uint8_t *base = which ? b->layer.v : b->layer.k;
  uint8_t *p = base + (size_t)block * w->block_stride + (size_t)slot * w->head_dim * es + 3 * es;
  pkv__store_row(p, &x, 1, w->dtype);
}

START_TEST(cascade_non_finite_like_plain) {
  for (int bi = 0; bi < 3; bi++) {
    if (!pkv__backend_supported(backend_names[bi])) continue;
    const pkv__kernels *k = pkv__kernels_select(backend_names[bi]);
    for (int t = 0; t < 3; t++) {
      static const float bad[] = {NAN, INFINITY, -INFINITY};
      for (int w = 0; w < 2; w++)
        for (int x = 0; x < 3; x++)
          for (int where = 0; where < 2; where++) {
            batch b;
            batch_init(&b, dtypes[t], 2, 64, 16, 8);
            add_seq(&b, -1, 0, 12 * 16 + 3);
            add_seq(&b, 0, 12, 12 * 16 + 30);
            add_seq(&b, 0, 12, 13 * 16 + 1);
            add_seq(&b, -1, 0, 50);
            /* in the shared part (sequence 0's block 4) or private (2's block 12) */
            if (where == 0) poke(&b, b.tables[0][4], 5, w, bad[x]);
            else poke(&b, b.tables[2][12], 0, w, bad[x]);
            const size_t n = (size_t)4 * 8 * 64;
            float *q = malloc(sizeof(float) * n), *plain = malloc(sizeof(float) * n),
                  *casc = malloc(sizeof(float) * n);
            uint64_t rs = 3;
            tu_fill(q, n, 2.0f, &rs);
            for (uint32_t threads = 1; threads <= 2; threads++) {
              ck_assert_int_eq(run(&b, k, threads, 4, PKV__CASCADE_OFF, 0, q, plain), 0);
              ck_assert_int_eq(run(&b, k, threads, 4, PKV__CASCADE_ALWAYS, 0, q, casc), 1);
              for (size_t i = 0; i < n; i++) {
                ck_assert_msg(fclass(plain[i]) == fclass(casc[i]),
                              "%s dtype %d %s=%g at %s: element %zu plain %g cascade %g", k->name,
                              (int)dtypes[t], w ? "V" : "K", (double)bad[x],
                              where ? "private" : "shared", i, (double)plain[i], (double)casc[i]);
                if (isfinite(plain[i]))
                  ck_assert_msg(fabs((double)plain[i] - casc[i]) < TOL_CASCADE, "element %zu", i);
              }
            }
            free(q);
            free(plain);
            free(casc);
            tu_paged_free(&b.layer);
          }
    }
  }
}
END_TEST

/* ------------------------------------------------------------ API level */

START_TEST(cascade_through_the_cache) {
  /* one prompt of 300 tokens, forked 6 times, each fork a few private
   * tokens; the default engine (cascade automatic) against cascade = 1 */
  enum { HKV = 2, G = 4, HQ = HKV * G, D = 64, PROMPT = 300, FORKS = 6 };
  for (int t = 0; t < 3; t++) {
    const tu_engine_shape shape = {.dtype = dtypes[t], .n_layers = 1, .n_kv_heads = HKV,
                                   .head_dim = D, .block_size = 16, .num_blocks = 256,
                                   .n_q_heads = HQ};
    pkv_cache *cache;
    pkv_engine *casc, *plain;
    ck_assert_int_eq(tu_engine_open(&shape, &cache, &casc), 0);
    pkv_engine_config ec;
    tu_engine_config(&shape, NULL, &ec);
    ec.cascade = 2;
    ck_assert_int_eq(pkv_engine_create(cache, &ec, &plain), PKV_EINVAL);
    ec.cascade = 1;
    ck_assert_int_eq(pkv_engine_create(cache, &ec, &plain), 0);
    uint64_t rs = 77;
    pkv_seq_id root, seqs[FORKS];
    ck_assert_int_eq(pkv_seq_create(cache, NULL, &root), 0);
    int32_t toks[PROMPT];
    for (int i = 0; i < PROMPT; i++) toks[i] = i;
    ck_assert_int_eq(pkv_seq_append(cache, root, toks, PROMPT, NULL), 0);
    float *q = malloc(sizeof(float) * PROMPT * HQ * D), *k = malloc(sizeof(float) * PROMPT * HKV * D),
          *v = malloc(sizeof(float) * PROMPT * HKV * D), *o = malloc(sizeof(float) * PROMPT * HQ * D);
    tu_fill(q, (size_t)PROMPT * HQ * D, 2.0f, &rs);
    tu_fill(k, (size_t)PROMPT * HKV * D, 1.0f, &rs);
    tu_fill(v, (size_t)PROMPT * HKV * D, 1.0f, &rs);
    ck_assert_int_eq(pkv_prefill(plain, root, 0, 0, PROMPT, q, k, v, o), 0);
    for (int f = 0; f < FORKS; f++) {
      ck_assert_int_eq(pkv_seq_fork(cache, root, &seqs[f]), 0);
      for (int step = 0; step < f + 1; step++) {
        int32_t tok = 1000 + f;
        ck_assert_int_eq(pkv_seq_append(cache, seqs[f], &tok, 1, NULL), 0);
        tu_fill(q, HQ * D, 2.0f, &rs);
        tu_fill(k, HKV * D, 1.0f, &rs);
        tu_fill(v, HKV * D, 1.0f, &rs);
        ck_assert_int_eq(pkv_decode(plain, &seqs[f], 1, 0, q, k, v, o), 0);
      }
    }
    /* one more step for all forks: both engines write the same K/V into
     * the same slots, so the second call sees what the first saw */
    for (int f = 0; f < FORKS; f++) {
      int32_t tok = 2000 + f;
      ck_assert_int_eq(pkv_seq_append(cache, seqs[f], &tok, 1, NULL), 0);
    }
    tu_fill(q, (size_t)FORKS * HQ * D, 2.0f, &rs);
    tu_fill(k, (size_t)FORKS * HKV * D, 1.0f, &rs);
    tu_fill(v, (size_t)FORKS * HKV * D, 1.0f, &rs);
    float *o2 = malloc(sizeof(float) * FORKS * HQ * D);
    ck_assert_int_eq(pkv_decode(plain, seqs, FORKS, 0, q, k, v, o), 0);
    /* the cascade engine's first batch allocates its plan: every failing
     * allocation gives PKV_ENOMEM with nothing written (arena, output) */
    {
      pkv_kv_layout L;
      void *kb, *vb;
      ck_assert_int_eq(pkv_cache_layout(cache, &L), 0);
      ck_assert_int_eq(pkv_cache_kv(cache, 0, &kb, &vb), 0);
      uint8_t *arena = malloc(2 * L.layer_bytes);
      float *k2 = malloc(sizeof(float) * FORKS * HKV * D);
      for (size_t i = 0; i < (size_t)FORKS * HKV * D; i++) k2[i] = k[i] + 1.0f; /* would change K */
      memcpy(arena, kb, L.layer_bytes);
      memcpy(arena + L.layer_bytes, vb, L.layer_bytes);
      long k_fail = 1;
      for (;; k_fail++) {
        memset(o2, 0x55, sizeof(float) * FORKS * HQ * D);
        tu_alloc_install(k_fail);
        int rc = pkv_decode(casc, seqs, FORKS, 0, q, k2, v, o2);
        long attempts = tu_alloc_count();
        tu_alloc_install(0);
        if (rc == 0) {
          ck_assert_int_lt(attempts, k_fail);
          break;
        }
        ck_assert_int_eq(rc, PKV_ENOMEM);
        ck_assert_msg(memcmp(arena, kb, L.layer_bytes) == 0 &&
                          memcmp(arena + L.layer_bytes, vb, L.layer_bytes) == 0,
                      "failing allocation %ld wrote K/V", k_fail);
        for (size_t i = 0; i < (size_t)FORKS * HQ * D; i++) {
          uint32_t bits;
          memcpy(&bits, &o2[i], sizeof bits);
          ck_assert_uint_eq(bits, 0x55555555u);
        }
      }
      ck_assert_int_gt(k_fail, 1); /* the plan did allocate */
      free(arena);
      free(k2);
    }
    ck_assert_int_eq(pkv_decode(casc, seqs, FORKS, 0, q, k, v, o2), 0);
    double d = tu_max_diff(o, o2, (size_t)FORKS * HQ * D);
    ck_assert_msg(d < TOL_CASCADE, "dtype %d: cascade vs plain through the cache %g", t, d);
    free(o2);
    free(q);
    free(k);
    free(v);
    free(o);
    pkv_engine_destroy(plain);
    tu_engine_close(cache, casc);
  }
}
END_TEST

TU_MAIN("cascade",
    {"kernel", 120, {{cascade_equals_plain}, {cascade_wide_groups}, {cascade_auto_threshold},
                     {cascade_head_shapes}, {cascade_non_finite_like_plain}}},
    {"api", 0, {{cascade_through_the_cache}}})
