/*
 * bench_manager.c — the block manager's hot paths, each beside a baseline
 * measured in the same run (medians of REPS repetitions):
 *
 *   decode append   1 token to each of 256 sequences, repeated; baseline: a
 *                   plain per-sequence int32 array push (what a server does
 *                   without a paged manager)
 *   block alloc+free  append one block's worth of tokens, truncate to 0;
 *                   baseline: jemalloc/libc malloc+free of one block's
 *                   metadata-sized object
 *   fork            fork a 32k-token sequence (block 16: 2048 blocks), per
 *                   block; baseline: memcpy of the page table (4 bytes/block)
 *   export          dense block table of 256 sequences x 4k tokens;
 *                   baseline: memcpy of the same table bytes
 *
 * External storage: these paths never touch K/V bytes, and it keeps the
 * pool (65536 blocks) free of a multi-GB arena.
 *
 * Timing uses the thread's CPU clock, not the wall clock: the build machine
 * is shared, and a descheduled thread would otherwise count other
 * processes' time as ours.  Both sides of every ratio use the same clock.
 */
#include "bu_bench.h"
#include "pagedkv/pagedkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPS 7
#define BS BU_BLOCK_SIZE
#define N_SEQS 256

/* ------------------------------------------------ decode append */

#define DECODE_PROMPT 100
#define DECODE_STEPS 1024

static double decode_append_ns(void) {
  pkv_cache *c = bu_cache_8b(N_SEQS * ((DECODE_PROMPT + DECODE_STEPS) / BS + 2), NULL, 0);
  pkv_seq_id s[N_SEQS];
  bu_seqs_prefilled(c, s, N_SEQS, DECODE_PROMPT);
  int64_t slot;
  uint64_t t0 = bu_cpu_ns();
  for (int step = 0; step < DECODE_STEPS; step++) {
    int32_t tok = step;
    for (int i = 0; i < N_SEQS; i++) pkv_seq_append(c, s[i], &tok, 1, &slot);
  }
  uint64_t t1 = bu_cpu_ns();
  bu_sink(&slot);
  pkv_cache_destroy(c);
  return (double)(t1 - t0) / ((double)N_SEQS * DECODE_STEPS);
}

static double decode_baseline_ns(void) {
  typedef struct vec { int32_t *p; size_t n, cap; } vec;
  vec v[N_SEQS];
  for (int i = 0; i < N_SEQS; i++) {
    v[i].cap = DECODE_PROMPT;
    v[i].n = DECODE_PROMPT;
    v[i].p = calloc(v[i].cap, sizeof(int32_t));
  }
  uint64_t t0 = bu_cpu_ns();
  for (int step = 0; step < DECODE_STEPS; step++) {
    for (int i = 0; i < N_SEQS; i++) {
      vec *x = &v[i];
      if (x->n == x->cap) {
        x->cap *= 2;
        x->p = realloc(x->p, x->cap * sizeof(int32_t));
      }
      x->p[x->n++] = step;
    }
  }
  uint64_t t1 = bu_cpu_ns();
  for (int i = 0; i < N_SEQS; i++) {
    bu_sink(v[i].p);
    free(v[i].p);
  }
  return (double)(t1 - t0) / ((double)N_SEQS * DECODE_STEPS);
}

/* ------------------------------------------------ alloc + free */

#define ALLOC_ROUNDS 200000

static double alloc_free_ns(void) {
  pkv_cache *c = bu_cache_8b(1024, NULL, 0);
  pkv_seq_id s;
  bu_check(pkv_seq_create(c, NULL, &s), "seq_create");
  static int32_t toks[BS];
  uint64_t t0 = bu_cpu_ns();
  for (int i = 0; i < ALLOC_ROUNDS; i++) {
    pkv_seq_append(c, s, toks, BS, NULL);
    pkv_seq_truncate(c, s, 0);
  }
  uint64_t t1 = bu_cpu_ns();
  pkv_cache_destroy(c);
  return (double)(t1 - t0) / ALLOC_ROUNDS;
}

static double malloc_free_ns(void) {
  uint64_t t0 = bu_cpu_ns();
  for (int i = 0; i < ALLOC_ROUNDS; i++) {
    void *p = malloc(64);
    bu_sink(p);
    free(p);
  }
  uint64_t t1 = bu_cpu_ns();
  return (double)(t1 - t0) / ALLOC_ROUNDS;
}

/* ------------------------------------------------ fork */

#define FORK_TOKENS 32768
#define FORK_BLOCKS (FORK_TOKENS / BS)
#define FORK_CHILDREN 32

static double fork_ns_per_block(double *baseline) {
  pkv_cache *c = bu_cache_8b(FORK_BLOCKS + 64, NULL, 0);
  pkv_seq_id p, kids[FORK_CHILDREN];
  bu_check(pkv_seq_create(c, NULL, &p), "seq_create");
  int32_t *toks = calloc(FORK_TOKENS, sizeof *toks);
  bu_check(pkv_seq_append(c, p, toks, FORK_TOKENS, NULL), "prefill");
  /* Warm the handle table so its growth is not timed. */
  for (int i = 0; i < FORK_CHILDREN; i++) bu_check(pkv_seq_create(c, NULL, &kids[i]), "warm");
  for (int i = 0; i < FORK_CHILDREN; i++) pkv_seq_free(c, kids[i]);
  uint64_t t0 = bu_cpu_ns();
  for (int i = 0; i < FORK_CHILDREN; i++) pkv_seq_fork(c, p, &kids[i]);
  uint64_t t1 = bu_cpu_ns();
  for (int i = 0; i < FORK_CHILDREN; i++) bu_check(pkv_seq_free(c, kids[i]), "free child");
  /* Baseline: copying the table alone, into fresh memory like the fork. */
  int32_t *table = calloc(FORK_BLOCKS, sizeof *table);
  uint32_t nb;
  bu_check(pkv_seq_blocks(c, p, table, FORK_BLOCKS, &nb), "blocks");
  int32_t *copies[FORK_CHILDREN];
  uint64_t t2 = bu_cpu_ns();
  for (int i = 0; i < FORK_CHILDREN; i++) {
    copies[i] = malloc(FORK_BLOCKS * sizeof *table);
    memcpy(copies[i], table, FORK_BLOCKS * sizeof *table);
  }
  uint64_t t3 = bu_cpu_ns();
  for (int i = 0; i < FORK_CHILDREN; i++) {
    bu_sink(copies[i]);
    free(copies[i]);
  }
  free(table);
  free(toks);
  pkv_cache_destroy(c);
  *baseline = (double)(t3 - t2) / ((double)FORK_CHILDREN * FORK_BLOCKS);
  return (double)(t1 - t0) / ((double)FORK_CHILDREN * FORK_BLOCKS);
}

/* ------------------------------------------------ export */

#define EXPORT_TOKENS 4096
#define EXPORT_BLOCKS (EXPORT_TOKENS / BS)

static double export_us(double *baseline) {
  pkv_cache *c = bu_cache_8b(N_SEQS * EXPORT_BLOCKS, NULL, 0);
  pkv_seq_id s[N_SEQS];
  int32_t *toks = calloc(EXPORT_TOKENS, sizeof *toks);
  for (int i = 0; i < N_SEQS; i++) {
    bu_check(pkv_seq_create(c, NULL, &s[i]), "seq_create");
    bu_check(pkv_seq_append(c, s[i], toks, EXPORT_TOKENS, NULL), "prefill");
  }
  size_t bytes = (size_t)N_SEQS * EXPORT_BLOCKS * sizeof(int32_t);
  int32_t *table = malloc(bytes), *copy = malloc(bytes);
  int32_t lens[N_SEQS];
  bu_check(pkv_block_table(c, s, N_SEQS, table, EXPORT_BLOCKS, lens), "warm");
  memcpy(copy, table, bytes);
  const int iters = 20;
  uint64_t t0 = bu_cpu_ns();
  for (int i = 0; i < iters; i++) pkv_block_table(c, s, N_SEQS, table, EXPORT_BLOCKS, lens);
  uint64_t t1 = bu_cpu_ns();
  for (int i = 0; i < iters; i++) {
    memcpy(copy, table, bytes);
    bu_sink(copy);
  }
  uint64_t t2 = bu_cpu_ns();
  free(table);
  free(copy);
  free(toks);
  pkv_cache_destroy(c);
  *baseline = (double)(t2 - t1) / iters / 1e3;
  return (double)(t1 - t0) / iters / 1e3;
}

int main(void) {
  double v[REPS], b[REPS];
  printf("bench_manager: medians of %d runs; block_size %d, external storage\n",
         REPS, BS);
  for (int r = 0; r < REPS; r++) {
    v[r] = decode_append_ns();
    b[r] = decode_baseline_ns();
  }
  bu_report_vs("manager.decode_append (256 seqs)", bu_median(v, REPS), "ns",
               "plain array push", bu_median(b, REPS), "manager/plain");
  for (int r = 0; r < REPS; r++) {
    v[r] = alloc_free_ns();
    b[r] = malloc_free_ns();
  }
  bu_report_vs("manager.block_alloc_free", bu_median(v, REPS), "ns",
               "malloc+free(64)", bu_median(b, REPS), "manager/malloc");
  for (int r = 0; r < REPS; r++) v[r] = fork_ns_per_block(&b[r]);
  bu_report_vs("manager.fork_32k (per block)", bu_median(v, REPS), "ns",
               "table memcpy", bu_median(b, REPS), "fork/memcpy");
  for (int r = 0; r < REPS; r++) v[r] = export_us(&b[r]);
  bu_report_vs("manager.block_table_256x4k", bu_median(v, REPS), "us",
               "memcpy of the table", bu_median(b, REPS), "export/memcpy");
  return 0;
}
