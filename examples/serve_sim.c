/*
 * serve_sim.c — a serving scenario on the public API of libpagedkv only.
 *
 * Four chat requests share a 100-token system prompt: the first computes it,
 * the others find it in the prefix cache.  All decode together; one request
 * samples four completions in parallel (fork, copy-on-write on the shared
 * tail); one uses speculative decoding (append a draft, truncate what the
 * verifier rejects).  A burst of unrelated requests then pushes the cache
 * into eviction, and a late request shows the system prompt survived
 * because it was pinned.  Every step prints what the manager did; the run
 * ends with the statistics and a full invariant check.
 *
 * The "model" here writes a recognizable value into each token's K/V so the
 * end of the run can verify every sequence reads its own data.
 */
#include <pagedkv/pagedkv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 16
#define SYS_LEN 100
#define MAX_SEQS 16

static pkv_cache *cache;
static pkv_kv_layout layout;
static uint32_t n_layers;

static void must(int rc, const char *what) {
  if (rc == 0) return;
  fprintf(stderr, "serve_sim: %s: %s (%s)\n", what, pkv_err_name(rc),
          pkv_last_error());
  exit(1);
}

/* K/V of layer 0, head 0, element 0 of a slot, as float (f32 cache). */
static float *kv_at(int64_t slot, uint32_t layer, int is_v) {
  void *k, *v;
  must(pkv_cache_kv(cache, layer, &k, &v), "cache_kv");
  uint8_t *base = is_v ? v : k;
  return (float *)(base + (slot / BLOCK) * layout.block_stride +
                   (slot % BLOCK) * layout.slot_stride);
}

/* The stand-in for attention: K/V of a token depend on its whole prefix. */
static float prefix_value(const int32_t *toks, uint32_t pos) {
  uint32_t h = 2166136261u;
  for (uint32_t i = 0; i <= pos; i++) h = (h ^ (uint32_t)toks[i]) * 16777619u;
  return (float)(h % 1000003u);
}

typedef struct request {
  const char *name;
  pkv_seq_id seq;
  int32_t toks[512];
  uint32_t n;
} request;

/* Writes K/V for tokens [from, r->n) through their slots, then commits. */
static void compute(request *r, uint32_t from, const int64_t *slots) {
  for (uint32_t i = from; i < r->n; i++)
    for (uint32_t l = 0; l < n_layers; l++) {
      *kv_at(slots[i - from], l, 0) = prefix_value(r->toks, i);
      *kv_at(slots[i - from], l, 1) = -prefix_value(r->toks, i);
    }
  must(pkv_seq_commit(cache, r->seq, r->n), "commit");
}

static void admit(request *r, const char *name, const int32_t *prompt,
                  uint32_t n) {
  r->name = name;
  memcpy(r->toks, prompt, n * sizeof *prompt);
  r->n = n;
  must(pkv_seq_create(cache, NULL, &r->seq), "seq_create");
  uint32_t hit;
  must(pkv_seq_match_prefix(cache, r->seq, prompt, n, n - 1, &hit),
       "match_prefix");
  int64_t slots[512];
  must(pkv_seq_append(cache, r->seq, prompt + hit, n - hit, slots), "prefill");
  compute(r, hit, slots);
  printf("  %-10s prompt %3u tokens: %3u from the prefix cache, %3u computed\n",
         name, n, hit, n - hit);
}

static void decode(request *r, int32_t tok) {
  int64_t slot;
  r->toks[r->n++] = tok;
  must(pkv_seq_append(cache, r->seq, &tok, 1, &slot), "decode append");
  compute(r, r->n - 1, &slot);
}

static int verify(const request *r) {
  int64_t slots[512];
  must(pkv_slot_mapping(cache, r->seq, 0, r->n, slots), "slot_mapping");
  for (uint32_t i = 0; i < r->n; i++)
    for (uint32_t l = 0; l < n_layers; l++)
      if (*kv_at(slots[i], l, 0) != prefix_value(r->toks, i) ||
          *kv_at(slots[i], l, 1) != -prefix_value(r->toks, i))
        return 0;
  return 1;
}

static void print_stats(const char *when) {
  pkv_stats st;
  must(pkv_stats_get(cache, &st), "stats");
  printf("  [%s] blocks: %u free, %u used, %u cached (%u evictable, %u pinned);"
         " %u seqs, %llu tokens, %llu waste slots\n",
         when, st.blocks_free, st.blocks_used, st.blocks_cached,
         st.blocks_evictable, st.blocks_pinned, st.n_seqs,
         (unsigned long long)st.tokens, (unsigned long long)st.waste_slots);
}

int main(void) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = n_layers = 4;
  cfg.n_kv_heads = 2;
  cfg.head_dim = 64;
  cfg.block_size = BLOCK;
  cfg.dtype = PKV_DTYPE_F32;
  cfg.num_blocks = 96;
  cfg.policy = "lru";
  must(pkv_cache_create(&cfg, &cache), "cache_create");
  must(pkv_cache_layout(cache, &layout), "layout");
  printf("pagedkv serve_sim: %u blocks of %u tokens, %u layers, policy %s, "
         "%.1f MiB of K/V\n",
         cfg.num_blocks, BLOCK, cfg.n_layers, pkv_cache_config(cache)->policy,
         (double)layout.layer_bytes * 2 * cfg.n_layers / (1 << 20));

  int32_t sys[SYS_LEN];
  for (int i = 0; i < SYS_LEN; i++) sys[i] = 1000 + i;
  static request req[MAX_SEQS];
  int n_req = 0;

  printf("\n1. four requests share a %d-token system prompt\n", SYS_LEN);
  for (int k = 0; k < 4; k++) {
    int32_t prompt[160];
    memcpy(prompt, sys, sizeof sys);
    uint32_t n = SYS_LEN + 10 + 7 * (uint32_t)k;
    for (uint32_t i = SYS_LEN; i < n; i++) prompt[i] = 5000 + 100 * k + (int32_t)i;
    static const char *names[] = {"chat-A", "chat-B", "chat-C", "chat-D"};
    admit(&req[n_req++], names[k], prompt, n);
  }
  pkv_pin_id sys_pin;
  must(pkv_pin_create(cache, req[0].seq, SYS_LEN, &sys_pin), "pin");
  printf("  pinned the system prompt's %d full blocks\n", SYS_LEN / BLOCK);
  print_stats("after prefill");

  printf("\n2. chat-B samples 4 completions in parallel (fork)\n");
  for (int k = 0; k < 3; k++) {
    request *c = &req[n_req++];
    *c = req[1];
    c->name = "chat-B/fork";
    must(pkv_seq_fork(cache, req[1].seq, &c->seq), "fork");
  }
  print_stats("after fork");

  printf("\n3. 24 decode steps for every sequence\n");
  for (int step = 0; step < 24; step++)
    for (int k = 0; k < n_req; k++) decode(&req[k], 7 * step + 13 * k);
  pkv_stats st;
  must(pkv_stats_get(cache, &st), "stats");
  printf("  copy-on-write copies: %llu (%llu slots) — each fork copied the "
         "shared partial tail once\n",
         (unsigned long long)st.cow_copies,
         (unsigned long long)st.cow_copied_slots);
  print_stats("after decode");

  printf("\n4. chat-C speculates 5 draft tokens, the verifier keeps 2\n");
  {
    request *r = &req[2];
    uint32_t before = r->n;
    int32_t draft[5] = {42, 43, 44, 45, 46};
    int64_t slots[5];
    memcpy(r->toks + r->n, draft, sizeof draft);
    r->n += 5;
    must(pkv_seq_append(cache, r->seq, draft, 5, slots), "draft");
    compute(r, before, slots);
    must(pkv_seq_truncate(cache, r->seq, before + 2), "rollback");
    r->n = before + 2;
    printf("  %u -> %u -> %u tokens\n", before, before + 5, before + 2);
  }

  printf("\n5. requests finish; their full blocks stay cached\n");
  for (int k = 0; k < n_req; k++) {
    if (!verify(&req[k])) {
      printf("  %s reads wrong K/V!\n", req[k].name);
      return 1;
    }
    must(pkv_seq_free(cache, req[k].seq), "free");
  }
  printf("  all %d sequences read their own K/V through their page tables\n",
         n_req);
  print_stats("after free");

  printf("\n6. a burst of unrelated requests forces eviction\n");
  for (int k = 0; k < 10; k++) {
    request r;
    int32_t prompt[200];
    for (int i = 0; i < 200; i++) prompt[i] = 90000 + 1000 * k + i;
    char name[24]; /* "burst-" + any int: no truncation at any -O */
    snprintf(name, sizeof name, "burst-%d", k);
    admit(&r, name, prompt, 200);
    must(pkv_seq_free(cache, r.seq), "free");
  }
  must(pkv_stats_get(cache, &st), "stats");
  printf("  evictions: %llu; the pinned system prompt was never a candidate\n",
         (unsigned long long)st.evictions);

  printf("\n7. a late request still finds the pinned system prompt\n");
  {
    request r;
    int32_t prompt[120];
    memcpy(prompt, sys, sizeof sys);
    for (int i = SYS_LEN; i < 120; i++) prompt[i] = 7 * i;
    admit(&r, "late", prompt, 120);
    if (!verify(&r)) return 1;
    must(pkv_seq_free(cache, r.seq), "free");
  }
  must(pkv_pin_release(cache, sys_pin), "unpin");

  must(pkv_stats_get(cache, &st), "stats");
  printf("\nstatistics\n");
  printf("  appends %llu (%llu tokens), forks %llu, truncates %llu, commits %llu\n",
         (unsigned long long)st.appends, (unsigned long long)st.appended_tokens,
         (unsigned long long)st.forks, (unsigned long long)st.truncates,
         (unsigned long long)st.commits);
  printf("  prefix: %llu queries, %llu of %llu prompt tokens hit (%.1f%%), %llu "
         "collisions, %llu dedups\n",
         (unsigned long long)st.prefix_queries,
         (unsigned long long)st.prefix_hit_tokens,
         (unsigned long long)st.prefix_query_tokens,
         st.prefix_query_tokens ? 100.0 * (double)st.prefix_hit_tokens / (double)st.prefix_query_tokens : 0.0,
         (unsigned long long)st.prefix_collisions,
         (unsigned long long)st.dedup_blocks);
  printf("  evictions %llu (%llu orphans), events %llu, copy-on-write %llu\n",
         (unsigned long long)st.evictions, (unsigned long long)st.orphan_evictions,
         (unsigned long long)st.events, (unsigned long long)st.cow_copies);
  char msg[256];
  int rc = pkv_check(cache, msg, sizeof msg);
  printf("pkv_check: %s\n", rc == 0 ? "ok" : msg);
  pkv_cache_destroy(cache);
  return rc == 0 ? 0 : 1;
}
