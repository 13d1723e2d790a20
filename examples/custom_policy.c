/*
 * custom_policy.c — an eviction policy written only against the public
 * headers: LRU-2 (O'Neil, O'Neil & Weikum, SIGMOD'93).
 *
 * LRU-2 evicts the block whose second-to-last use is oldest.  A block used
 * once has no second-to-last use and goes before any block used twice, so a
 * burst of one-off prompts cannot flush a prefix that was reused — the same
 * intuition as the built-in "fwlru", in a dozen lines of logic.  (What it
 * lacks: a memory of evicted keys.  A prefix evicted once comes back as
 * "used once" and goes first again, so on the Mooncake trace it does worse
 * than LRU — see docs/POLICIES.md.)
 *
 * Two ways to use it:
 *
 *   1. Link it in and register it (what main() below does):
 *        pkv_policy_register(&pkv_user_policy);   cfg.policy = "lru2";
 *      or skip the registry: cfg.policy_ops = &pkv_user_policy;
 *   2. Build it as a shared object (make builds
 *      build/<mode>/examples/custom_policy.so with -DPKV_POLICY_PLUGIN, which
 *      leaves main() out) and load it into the simulator:
 *        pagedkv sim --policy-lib build/release/examples/custom_policy.so
 *      The loader looks up the symbol `pkv_user_policy`.
 *
 * The hook contract (policy.h): the manager calls the hooks with the cache
 * lock held, so no locking here; choose_victim must not change state; the
 * manager follows it with on_remove(victim).  A policy allocates in create
 * only, so every other hook is allocation-free and O(log n) here (a binary
 * heap of the evictable blocks keyed by (second-to-last use, last use)).
 */
#include "pagedkv/pagedkv.h"
#include "pagedkv/policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lru2 {
  uint64_t clock;   /* uses so far */
  uint64_t *last;   /* last use of each block */
  uint64_t *before; /* the use before that; 0 = used once */
  int32_t *heap;    /* evictable blocks, min-heap on (before, last) */
  int32_t *pos;     /* index in heap, -1 when not evictable */
  uint32_t len;
} lru2;

static int lru2_create(void **out, uint32_t num_blocks, const char *args) {
  if (args && *args) return PKV_EINVAL; /* no tunables */
  lru2 *p = calloc(1, sizeof *p);
  if (!p) return PKV_ENOMEM;
  p->last = calloc(num_blocks, sizeof *p->last);
  p->before = calloc(num_blocks, sizeof *p->before);
  p->heap = calloc(num_blocks, sizeof *p->heap);
  p->pos = malloc(num_blocks * sizeof *p->pos);
  if (!p->last || !p->before || !p->heap || !p->pos) {
    free(p->last), free(p->before), free(p->heap), free(p->pos), free(p);
    return PKV_ENOMEM;
  }
  memset(p->pos, 0xff, num_blocks * sizeof *p->pos);
  *out = p;
  return 0;
}

static void lru2_destroy(void *state) {
  lru2 *p = state;
  if (!p) return;
  free(p->last), free(p->before), free(p->heap), free(p->pos), free(p);
}

static int older(const lru2 *p, int32_t a, int32_t b) {
  if (p->before[a] != p->before[b]) return p->before[a] < p->before[b];
  return p->last[a] < p->last[b];
}

static void put(lru2 *p, uint32_t i, int32_t b) {
  p->heap[i] = b;
  p->pos[b] = (int32_t)i;
}

/* Restores heap order around index i. */
static void sift(lru2 *p, uint32_t i) {
  int32_t b = p->heap[i];
  while (i > 0 && older(p, b, p->heap[(i - 1) / 2])) {
    put(p, i, p->heap[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  for (;;) {
    uint32_t c = 2 * i + 1;
    if (c >= p->len) break;
    if (c + 1 < p->len && older(p, p->heap[c + 1], p->heap[c])) c++;
    if (!older(p, p->heap[c], b)) break;
    put(p, i, p->heap[c]);
    i = c;
  }
  put(p, i, b);
}

static void heap_drop(lru2 *p, int32_t b) {
  if (p->pos[b] < 0) return;
  uint32_t i = (uint32_t)p->pos[b];
  p->pos[b] = -1;
  int32_t last = p->heap[--p->len];
  if (i < p->len) {
    put(p, i, last);
    sift(p, i);
  }
}

static void use(lru2 *p, int32_t b) {
  p->before[b] = p->last[b];
  p->last[b] = ++p->clock;
}

static void lru2_on_insert(void *state, int32_t b, const pkv_block_meta *m) {
  (void)m;
  lru2 *p = state;
  p->last[b] = 0; /* new content: forget the previous owner of the id */
  use(p, b);
}

static void lru2_on_hit(void *state, int32_t b, const pkv_block_meta *m) {
  (void)m;
  use(state, b);
}

static void lru2_on_evictable(void *state, int32_t b,
                              const pkv_block_meta *m) {
  (void)m;
  lru2 *p = state;
  if (p->pos[b] >= 0) return;
  put(p, p->len++, b);
  sift(p, p->len - 1);
}

static void lru2_on_pinned(void *state, int32_t b, const pkv_block_meta *m) {
  (void)m;
  heap_drop(state, b);
}

static int32_t lru2_choose_victim(void *state, uint64_t now) {
  (void)now;
  const lru2 *p = state;
  return p->len ? p->heap[0] : -1;
}

static void lru2_on_remove(void *state, int32_t b) { heap_drop(state, b); }

PKV_API const pkv_policy_ops pkv_user_policy = {
    .version = PKV_POLICY_VERSION, .name = "lru2",
    .create = lru2_create, .destroy = lru2_destroy,
    .on_insert = lru2_on_insert, .on_hit = lru2_on_hit,
    .on_evictable = lru2_on_evictable, .on_pinned = lru2_on_pinned,
    .choose_victim = lru2_choose_victim, .on_remove = lru2_on_remove};

#ifndef PKV_POLICY_PLUGIN
/* ------------------------------------------------------------ demo */

#define BLOCK 4

static int check(int rc, const char *what) {
  if (rc) {
    fprintf(stderr, "%s: %s (%s)\n", what, pkv_strerror(rc), pkv_last_error());
    exit(1);
  }
  return rc;
}

/* One request: match what is cached, compute (append + commit) the rest,
 * free.  A prompt is `n_blocks` blocks of tokens derived from `doc`. */
static uint32_t request(pkv_cache *c, int doc, uint32_t n_blocks) {
  int32_t tokens[64];
  uint32_t n = n_blocks * BLOCK, matched = 0;
  for (uint32_t t = 0; t < n; t++) tokens[t] = doc * 1000 + (int32_t)t;
  pkv_seq_id s;
  check(pkv_seq_create(c, NULL, &s), "seq_create");
  check(pkv_seq_match_prefix(c, s, tokens, n, n - 1, &matched), "match");
  check(pkv_seq_append(c, s, tokens + matched, n - matched, NULL), "append");
  check(pkv_seq_commit(c, s, n), "commit");
  check(pkv_seq_free(c, s), "seq_free");
  return matched / BLOCK;
}

static double run(const char *policy) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = 1; cfg.n_kv_heads = 1; cfg.head_dim = 8;
  cfg.block_size = BLOCK; cfg.num_blocks = 12;
  cfg.storage = PKV_STORAGE_EXTERNAL; /* ids only: no K/V memory */
  cfg.policy = policy;
  pkv_cache *c;
  check(pkv_cache_create(&cfg, &c), "cache_create");
  /* A 4-block system prompt (doc 0), sent twice to start with, then once
   * after every burst of three one-off 4-block prompts (docs 1, 2, ...).
   * 12 blocks cannot hold the prompt and a whole burst: LRU keeps the burst
   * and loses the prompt every time; LRU-2 sees that the prompt was used
   * twice and the one-offs once.  (A match leaves at least one token to
   * compute, so at most 3 of the 4 blocks can hit.) */
  uint32_t hit = 0, asked = 0;
  int next_doc = 1;
  request(c, 0, 4);
  for (int round = 1; round <= 5; round++) {
    uint32_t h = request(c, 0, 4);
    hit += h, asked += 3;
    printf("  %-5s round %d: system prompt hit %u/3 blocks\n", policy, round,
           h);
    for (int k = 0; k < 3; k++) request(c, next_doc++, 4);
  }
  pkv_stats st;
  check(pkv_stats_get(c, &st), "stats");
  printf("  %-5s evictions %llu, prefix hit tokens %llu of %llu\n", policy,
         (unsigned long long)st.evictions,
         (unsigned long long)st.prefix_hit_tokens,
         (unsigned long long)st.prefix_query_tokens);
  pkv_cache_destroy(c);
  return (double)hit / asked;
}

int main(void) {
  /* Registering makes the policy available by name to every cache. */
  check(pkv_policy_register(&pkv_user_policy), "policy_register");
  printf("policies:");
  for (const char *const *n = pkv_policy_names(); *n; n++) printf(" %s", *n);
  printf("\n");
  /* Registering the same name twice is refused. */
  if (pkv_policy_register(&pkv_user_policy) != PKV_ESTATE) return 1;

  double lru = run("lru"), mine = run("lru2");
  printf("system-prompt block hit ratio: lru %.2f, lru2 %.2f\n", lru, mine);
  return mine > lru ? 0 : 1;
}
#endif
