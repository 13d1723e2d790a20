/*
 * bench_concurrency.c — does the one cache mutex limit appends?
 *
 * Workload: decode-style appends (one token per call) on sequences each
 * thread owns, plus a prefill (64 tokens, fresh sequence) every 256 steps
 * and a free when a sequence reaches 512 tokens — the manager calls of a
 * serving loop without the attention between them, i.e. the worst case for
 * lock contention.
 *
 * Figures (median of BENCH_REPS repetitions, all in the same run):
 *   1 thread, one cache                         (baseline)
 *   2 threads, one shared cache                 vs 1 thread
 *   2 threads, one cache each (no shared lock)  — what sharding would give
 *   shared / per-thread at 2 threads            — the cost of the mutex
 */
#include "bu_bench.h"
#include "pagedkv/pagedkv.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define SEQS_PER_THREAD 8
#define STEPS 2000000

typedef struct job {
  pkv_cache *cache;
  uint64_t appends;
  int failed;
} job;

static pkv_cache *make_cache(uint32_t blocks) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = 1;
  cfg.n_kv_heads = 1;
  cfg.head_dim = 8;
  cfg.block_size = 16;
  cfg.num_blocks = blocks;
  cfg.storage = PKV_STORAGE_EXTERNAL; /* metadata only: no arena to touch */
  pkv_cache *c = NULL;
  if (pkv_cache_create(&cfg, &c) != 0) {
    fprintf(stderr, "bench_concurrency: cache_create: %s\n", pkv_last_error());
    exit(1);
  }
  return c;
}

static void *run(void *arg) {
  job *j = arg;
  pkv_seq_id s[SEQS_PER_THREAD] = {0};
  int32_t prompt[64];
  for (int i = 0; i < 64; i++) prompt[i] = 1 + i;
  uint64_t n = 0;
  for (uint32_t step = 0; step < STEPS; step++) {
    uint32_t k = step % SEQS_PER_THREAD;
    if (s[k] == 0 || step % 256 == k) {
      if (s[k]) pkv_seq_free(j->cache, s[k]);
      if (pkv_seq_create(j->cache, NULL, &s[k]) ||
          pkv_seq_append(j->cache, s[k], prompt, 64, NULL)) {
        j->failed = 1;
        break;
      }
      n++;
      continue;
    }
    int32_t tok = (int32_t)step;
    int rc = pkv_seq_append(j->cache, s[k], &tok, 1, NULL);
    if (rc) {
      j->failed = 1;
      break;
    }
    n++;
  }
  for (int k = 0; k < SEQS_PER_THREAD; k++)
    if (s[k]) pkv_seq_free(j->cache, s[k]);
  j->appends = n;
  return NULL;
}

/* Appends per second of n_threads threads; shared: one cache for all. */
static double measure(int n_threads, int shared) {
  pkv_cache *caches[2];
  caches[0] = make_cache(4096);
  caches[1] = shared ? caches[0] : make_cache(4096);
  job jobs[2] = {{0}};
  pthread_t tid[2];
  uint64_t t0 = bu_now_ns();
  for (int i = 0; i < n_threads; i++) {
    jobs[i].cache = caches[i];
    pthread_create(&tid[i], NULL, run, &jobs[i]);
  }
  uint64_t total = 0;
  for (int i = 0; i < n_threads; i++) {
    pthread_join(tid[i], NULL);
    if (jobs[i].failed) {
      fprintf(stderr, "bench_concurrency: an append failed: %s\n",
              pkv_last_error());
      exit(1);
    }
    total += jobs[i].appends;
  }
  double secs = (double)(bu_now_ns() - t0) * 1e-9;
  pkv_cache_destroy(caches[0]);
  if (!shared) pkv_cache_destroy(caches[1]);
  return (double)total / secs;
}

int main(void) {
  const char *r = getenv("BENCH_REPS");
  int reps = r ? atoi(r) : 5;
  if (reps < 1 || reps > 64) reps = 5;
  double one[64], two[64], own[64];
  for (int i = 0; i < reps; i++) { /* interleaved: noise hits all alike */
    one[i] = measure(1, 1);
    two[i] = measure(2, 1);
    own[i] = measure(2, 0);
  }
  double m1 = bu_median(one, reps), m2 = bu_median(two, reps),
         mo = bu_median(own, reps);
  bu_report("concurrency.appends_1thread", m1, "appends/s");
  bu_report_vs("concurrency.appends_2threads_shared", m2, "appends/s",
               "1 thread", m1, "2T/1T");
  bu_report_vs("concurrency.appends_2threads_own_cache", mo, "appends/s",
               "1 thread", m1, "2T/1T");
  bu_report_vs("concurrency.shared_vs_own_2threads", m2, "appends/s",
               "one cache per thread", mo, "shared/own");
  return 0;
}
