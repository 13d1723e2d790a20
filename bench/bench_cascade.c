/*
 * bench_cascade.c — shared-prefix (cascade) decode beside plain paged
 * decode, measured in the same run on the same cache and page tables.
 *
 * The case of issue 13: MEMBERS sequences forked from one PREFIX-token
 * prompt, each with SUFFIX private tokens (the last one is the decode
 * step's own position), Llama-3-8B attention (32 query heads, 8 KV heads,
 * head_dim 128), block size 16, one layer.  K/V are written straight into
 * the arena (random values in [-1, 1), rounded to the cache dtype) so that
 * building the case does not cost a 4k prefill.  Two engines share the
 * cache: the default (cascade automatic) and one made with cascade = 1
 * (plain decode).  One pkv_decode of the whole batch is timed (wall clock,
 * the engine's threads included), alternating the two engines, REPS times
 * each; medians.  Both write the same K/V into the same slots and read the
 * same page tables, so their outputs are compared: the maximum difference
 * is printed and must stay below TOL (else the benchmark fails).
 *
 * Rows: per dtype (f32, f16, bf16) and thread count (1, 2), the 64 x 4k +
 * 256 case; then, f16 at 1 thread, where it pays: fewer members (2, 4, 8,
 * 16) and shorter shared prefixes (64 .. 1024 tokens).
 *
 * Reported: tokens/s (sequences decoded per second — one token each) of
 * the cascade beside plain decode; the ratio is the speed-up.  Also the
 * plain path's K/V read rate (bytes it must read / time) and both paths'
 * GFLOP/s (4 * tokens * q heads * head_dim per sequence), since the cascade
 * removes bytes, not arithmetic: its floor is the FMA throughput.
 *
 * PKV_BENCH_QUICK=1: fewer repetitions and only the main case.
 */
#include "bu_bench.h"
#include "engine_internal.h"
#include "pagedkv/engine.h"
#include "pagedkv/policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HKV 8
#define HQ 32
#define D 128
#define BS 16
#define TOL 2e-6

static int reps = 7;

static void die(int rc, const char *what) {
  if (rc == 0) return;
  fprintf(stderr, "bench_cascade: %s: %s (%s)\n", what, pkv_err_name(rc), pkv_last_error());
  exit(1);
}

static uint64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)(rng >> 40) / (float)(1u << 23) - 1.0f;
}

static const char *dtype_name(pkv_dtype dt) {
  return dt == PKV_DTYPE_F32 ? "f32" : dt == PKV_DTYPE_F16 ? "f16" : "bf16";
}

typedef struct result {
  double t_plain, t_casc; /* seconds per decode step, medians */
  double diff;
} result;

/* members forks of a prefix-token prompt, suffix private tokens each. */
static result run_case(pkv_dtype dt, uint32_t threads, uint32_t members, uint32_t prefix,
                       uint32_t suffix) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.policy_ops = pkv_policy_find("lru");
  cfg.n_layers = 1;
  cfg.n_kv_heads = HKV;
  cfg.head_dim = D;
  cfg.block_size = BS;
  cfg.dtype = dt;
  cfg.num_blocks = (prefix + BS - 1) / BS + members * ((suffix + BS - 1) / BS + 1) + 8;
  pkv_cache *cache;
  die(pkv_cache_create(&cfg, &cache), "cache_create");
  pkv_kv_layout L;
  die(pkv_cache_layout(cache, &L), "layout");
  void *kbase, *vbase;
  die(pkv_cache_kv(cache, 0, &kbase, &vbase), "cache_kv");
  /* random K/V in every slot of the arena, rounded to the dtype */
  {
    size_t n = L.layer_bytes / L.elem_size, chunk = 4096;
    float *tmp = malloc(sizeof(float) * chunk);
    for (int w = 0; w < 2; w++) {
      uint8_t *base = w ? vbase : kbase;
      for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        for (size_t j = 0; j < m; j++) tmp[j] = frand();
        pkv__store_row(base + i * L.elem_size, tmp, (uint32_t)m, dt);
      }
    }
    free(tmp);
  }
  pkv_seq_id root, *seqs = malloc(sizeof *seqs * members);
  die(pkv_seq_create(cache, NULL, &root), "seq_create");
  int32_t *toks = malloc(sizeof(int32_t) * (prefix > suffix ? prefix : suffix));
  for (uint32_t i = 0; i < prefix; i++) toks[i] = (int32_t)i;
  die(pkv_seq_append(cache, root, toks, prefix, NULL), "append prompt");
  for (uint32_t m = 0; m < members; m++) {
    die(pkv_seq_fork(cache, root, &seqs[m]), "fork");
    for (uint32_t i = 0; i < suffix; i++) toks[i] = (int32_t)(100000 + m * suffix + i);
    die(pkv_seq_append(cache, seqs[m], toks, suffix, NULL), "append suffix");
  }
  pkv_engine_config ec;
  pkv_engine_config_init(&ec);
  ec.n_q_heads = HQ;
  ec.n_threads = threads;
  pkv_engine *casc, *plain;
  die(pkv_engine_create(cache, &ec, &casc), "engine_create");
  ec.cascade = 1;
  die(pkv_engine_create(cache, &ec, &plain), "engine_create plain");
  size_t qn = (size_t)members * HQ * D, kn = (size_t)members * HKV * D;
  float *q = malloc(sizeof(float) * qn), *k = malloc(sizeof(float) * kn),
        *v = malloc(sizeof(float) * kn), *o1 = malloc(sizeof(float) * qn),
        *o2 = malloc(sizeof(float) * qn);
  for (size_t i = 0; i < qn; i++) q[i] = 2.0f * frand();
  for (size_t i = 0; i < kn; i++) k[i] = frand(), v[i] = frand();
  /* one thread: on-CPU time of this thread (the engine's only worker), so
   * that time slices lost to other processes do not count; two: wall */
  uint64_t (*clock_ns)(void) = threads == 1 ? cpu_ns : bu_now_ns;
  double tp[64], tc[64];
  die(pkv_decode(plain, seqs, members, 0, q, k, v, o1), "decode plain"); /* warm */
  die(pkv_decode(casc, seqs, members, 0, q, k, v, o2), "decode cascade");
  for (int r = 0; r < reps; r++) {
    uint64_t t0 = clock_ns();
    die(pkv_decode(plain, seqs, members, 0, q, k, v, o1), "decode plain");
    uint64_t t1 = clock_ns();
    die(pkv_decode(casc, seqs, members, 0, q, k, v, o2), "decode cascade");
    uint64_t t2 = clock_ns();
    tp[r] = (double)(t1 - t0) * 1e-9;
    tc[r] = (double)(t2 - t1) * 1e-9;
  }
  result res = {bu_median(tp, (size_t)reps), bu_median(tc, (size_t)reps), 0};
  for (size_t i = 0; i < qn; i++) {
    double d = fabs((double)o1[i] - o2[i]);
    if (!(d <= res.diff)) res.diff = d;
  }
  bu_sink(o1);
  bu_sink(o2);
  free(q);
  free(k);
  free(v);
  free(o1);
  free(o2);
  free(toks);
  free(seqs);
  pkv_engine_destroy(casc);
  pkv_engine_destroy(plain);
  pkv_cache_destroy(cache);
  if (!(res.diff < TOL)) {
    fprintf(stderr, "bench_cascade: cascade and plain decode differ by %g (> %g)\n", res.diff, TOL);
    exit(1);
  }
  return res;
}

static void report(pkv_dtype dt, uint32_t threads, uint32_t members, uint32_t prefix,
                   uint32_t suffix, int detail) {
  result r = run_case(dt, threads, members, prefix, suffix);
  char name[96];
  snprintf(name, sizeof name, "cascade_%s_t%u_%ux%u+%u", dtype_name(dt), threads, members,
           prefix, suffix);
  bu_report_vs(name, members / r.t_casc, "tok/s", "plain paged decode", members / r.t_plain,
               "x plain");
  if (!detail) return;
  double tokens = (double)members * (prefix + suffix);
  double bytes = tokens * HKV * D * 2 * pkv_dtype_size(dt);
  double flop = 4.0 * tokens * HQ * D;
  snprintf(name, sizeof name, "  plain_kv_read_%s_t%u", dtype_name(dt), threads);
  bu_report(name, bytes / r.t_plain * 1e-9, "GB/s");
  snprintf(name, sizeof name, "  gflops_%s_t%u", dtype_name(dt), threads);
  bu_report_vs(name, flop / r.t_casc * 1e-9, "GFLOP/s", "plain", flop / r.t_plain * 1e-9,
               "x plain");
  snprintf(name, sizeof name, "  max_diff_%s_t%u", dtype_name(dt), threads);
  bu_report(name, r.diff, "abs");
}

int main(void) {
  int quick = getenv("PKV_BENCH_QUICK") != NULL;
  if (quick) reps = 3;
  printf("bench_cascade: back end %s, %d repetitions, medians (1 thread: on-CPU time; 2: wall clock)\n",
         pkv__kernels_select(NULL) ? pkv__kernels_select(NULL)->name : "?", reps);
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};
  for (int t = 0; t < 3; t++)
    for (uint32_t threads = 1; threads <= 2; threads++) report(dts[t], threads, 64, 4096, 256, 1);
  if (quick) return 0;
  static const uint32_t members[] = {2, 4, 8, 16};
  for (int i = 0; i < 4; i++) report(PKV_DTYPE_F16, 1, members[i], 4096, 256, 0);
  static const uint32_t prefixes[] = {64, 128, 256, 512, 1024};
  for (int i = 0; i < 5; i++) report(PKV_DTYPE_F16, 1, 64, prefixes[i], 256, 0);
  return 0;
}
