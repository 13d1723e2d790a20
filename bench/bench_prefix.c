/*
 * bench_prefix.c — the prefix index and the eviction driver, each beside a
 * baseline measured in the same run (medians of REPS repetitions, thread
 * CPU time — see bench_manager.c):
 *
 *   match_prefix    a 4096-token prompt that fully hits (block 16: 256
 *                   blocks, cap n-1 so 255 attach); baseline: computing the
 *                   same 256 chained XXH3-128 block keys alone, i.e. the
 *                   hashing a match cannot avoid
 *   eviction        per policy: one append that needs all 4096 blocks of a
 *                   pool whose blocks are all cached and unreferenced, so
 *                   every block is taken by eviction (policy victim, index
 *                   removal, event); baseline: the same append on an empty
 *                   pool (every block from the free list).  The figure is
 *                   the difference per block: the cost of an eviction.
 */
#include "bu_bench.h"
#include "pagedkv/pagedkv.h"
#include "pagedkv/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#define REPS 7
#define BS BU_BLOCK_SIZE

/* ------------------------------------------------ match */

#define MATCH_TOKENS 4096
#define MATCH_BATCH 64

static double match_us(double *baseline) {
  pkv_cache *c = bu_cache_8b(MATCH_TOKENS / BS + 16, "lru", 0);
  int32_t *toks = malloc(MATCH_TOKENS * sizeof *toks);
  for (int i = 0; i < MATCH_TOKENS; i++) toks[i] = (i * 7919) % 50000;
  pkv_seq_id owner;
  bu_check(pkv_seq_create(c, NULL, &owner), "seq_create");
  bu_check(pkv_seq_append(c, owner, toks, MATCH_TOKENS, NULL), "prefill");
  bu_check(pkv_seq_commit(c, owner, MATCH_TOKENS), "commit");
  pkv_seq_id s[MATCH_BATCH];
  uint32_t matched = 0;
  for (int i = 0; i < MATCH_BATCH; i++) bu_check(pkv_seq_create(c, NULL, &s[i]), "seq_create");
  uint64_t t0 = bu_cpu_ns();
  for (int i = 0; i < MATCH_BATCH; i++)
    pkv_seq_match_prefix(c, s[i], toks, MATCH_TOKENS, MATCH_TOKENS - 1, &matched);
  uint64_t t1 = bu_cpu_ns();
  if (matched != MATCH_TOKENS - BS) {
    fprintf(stderr, "bench_prefix: matched %u, want %u\n", matched, MATCH_TOKENS - BS);
    exit(1);
  }
  /* Baseline: the chained keys alone, over the same bytes layout. */
  uint8_t buf[32 + BS * 4];
  memset(buf, 0, sizeof buf);
  XXH128_hash_t h = {0, 0};
  uint64_t t2 = bu_cpu_ns();
  for (int i = 0; i < MATCH_BATCH; i++) {
    memset(buf, 0, 16);
    for (int b = 0; b < MATCH_TOKENS / BS; b++) {
      memcpy(buf, &h, 16);
      memcpy(buf + 32, toks + b * BS, BS * 4);
      h = XXH3_128bits_withSeed(buf, sizeof buf, 1);
    }
  }
  uint64_t t3 = bu_cpu_ns();
  bu_sink(&h);
  free(toks);
  pkv_cache_destroy(c);
  *baseline = (double)(t3 - t2) / MATCH_BATCH / 1e3;
  return (double)(t1 - t0) / MATCH_BATCH / 1e3;
}

/* ------------------------------------------------ eviction */

#define EV_POOL 4096

/* ns per block of one append that takes EV_POOL blocks; with pressure
 * every block comes from evicting a cached, unreferenced one (the fill
 * leaves no free block), without pressure from the free list. */
static double take_ns(const char *policy, int pressure, const int32_t *toks) {
  pkv_cache *c = bu_cache_8b(EV_POOL, policy, 0);
  if (pressure) {
    for (int i = 0; i < EV_POOL; i++) {
      pkv_seq_id s;
      bu_check(pkv_seq_create(c, NULL, &s), "seq_create");
      bu_check(pkv_seq_append(c, s, toks + (size_t)i * BS, BS, NULL), "fill");
      bu_check(pkv_seq_commit(c, s, BS), "fill commit");
      bu_check(pkv_seq_free(c, s), "fill free");
    }
  }
  pkv_seq_id s;
  bu_check(pkv_seq_create(c, NULL, &s), "seq_create");
  const int32_t *other = toks + (size_t)EV_POOL * BS; /* never cached */
  uint64_t t0 = bu_cpu_ns();
  bu_check(pkv_seq_append(c, s, other, EV_POOL * BS, NULL), "append");
  uint64_t t1 = bu_cpu_ns();
  pkv_stats st;
  bu_check(pkv_stats_get(c, &st), "stats");
  if (st.evictions != (pressure ? EV_POOL : 0)) {
    fprintf(stderr, "bench_prefix: %s: %llu evictions\n", policy,
            (unsigned long long)st.evictions);
    exit(1);
  }
  pkv_cache_destroy(c);
  return (double)(t1 - t0) / EV_POOL;
}

int main(void) {
  double v[REPS], b[REPS];
  printf("bench_prefix: medians of %d runs; block_size %d, external storage\n",
         REPS, BS);
  for (int r = 0; r < REPS; r++) v[r] = match_us(&b[r]);
  bu_report_vs("prefix.match_4k_full_hit", bu_median(v, REPS), "us",
               "chained XXH3-128 alone", bu_median(b, REPS), "match/hash");
  int32_t *toks = malloc((size_t)2 * EV_POOL * BS * sizeof *toks);
  for (size_t i = 0; i < (size_t)2 * EV_POOL * BS; i++) toks[i] = (int32_t)i;
  const char *const *names = pkv_policy_names();
  for (int p = 0; names[p]; p++) {
    double with[REPS];
    for (int r = 0; r < REPS; r++) {
      with[r] = take_ns(names[p], 1, toks);
      b[r] = take_ns(names[p], 0, toks);
    }
    double w = bu_median(with, REPS), base = bu_median(b, REPS);
    char label[64];
    snprintf(label, sizeof label, "prefix.eviction[%s]", names[p]);
    /* The figure is the eviction alone: taking a block by eviction minus
     * taking it from the free list, both inside one long append. */
    bu_report_vs(label, w - base, "ns", "block from the free list", base,
                 "eviction/free-list take");
  }
  free(toks);
  return 0;
}
