/*
 * check_prefix.c — the prefix index and eviction as a user sees them:
 * sharing (same block ids, each sequence its own tail), dedup on commit,
 * verification under deliberately weakened keys, namespace and adapter
 * isolation, pins, retention expiry on a test clock, orphans, prefix_reset,
 * and an event consumer that rebuilds the exact set of cached keys.
 * pkv_check runs after every step.
 */
#include "tu_core.h"

#include <stdio.h>
#include <stdlib.h>

#include <xxhash.h>

#include "core.h" /* white box: the cached key set, the weak-key hook */

#define BS 4

static int32_t prompt[256];

static void fill_prompt(uint32_t seed) {
  for (int i = 0; i < 256; i++) prompt[i] = (int32_t)(seed * 1000 + (uint32_t)i);
}

static pkv_cache *open_cache(pkv_storage storage, uint32_t nb,
                             const char *policy) {
  pkv_config cfg;
  tu_config(&cfg, storage, nb, BS);
  if (policy) cfg.policy = policy;
  return tu_cache(&cfg);
}

/* Creates a sequence over tokens[0..n), matching first; writes the K/V
 * pattern (tag) of every token it computes; commits all. */
static pkv_seq_id run_prompt(pkv_cache *c, const pkv_seq_opts *o,
                             const int32_t *tokens, uint32_t n, uint32_t tag,
                             uint32_t *matched_out) {
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, o, &s), 0);
  uint32_t matched = 0;
  ck_assert_int_eq(pkv_seq_match_prefix(c, s, tokens, n, n - 1, &matched), 0);
  int64_t slots[256];
  ck_assert_int_eq(pkv_seq_append(c, s, tokens + matched, n - matched, slots), 0);
  if (pkv_cache_config(c)->storage == PKV_STORAGE_OWNED)
    for (uint32_t i = 0; i < n - matched; i++) tu_write_slot(c, slots[i], tag, matched + i);
  ck_assert_int_eq(pkv_seq_commit(c, s, n), 0);
  TU_CHECK(c);
  if (matched_out) *matched_out = matched;
  return s;
}

static uint32_t blocks_of(pkv_cache *c, pkv_seq_id s, int32_t *b) {
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(c, s, b, 64, &n), 0);
  return n;
}

/* Match walks the cached chain (children of the block just matched) before
 * hashing.  With more siblings than the walk looks at, and siblings that
 * differ only in their last token, every prompt must still attach exactly its
 * own blocks (the walk or the index), and read its own data. */
START_TEST(match_finds_child_among_many) {
  enum { FAN = 20, LEN = 3 * BS };
  pkv_cache *c = open_cache(PKV_STORAGE_OWNED, 256, NULL);
  int32_t p[FAN][LEN];
  pkv_seq_id owners[FAN];
  for (int f = 0; f < FAN; f++) {
    for (int i = 0; i < LEN; i++) p[f][i] = 7000 + i; /* common first block */
    p[f][2 * BS - 1] = 100 + f;  /* block 1 differs in its last token */
    p[f][LEN - 1] = 500 + f;     /* block 2 too */
    owners[f] = run_prompt(c, NULL, p[f], LEN, (uint32_t)(10 + f), NULL);
  }
  int32_t first_owner_blocks[64];
  blocks_of(c, owners[0], first_owner_blocks);
  pkv_stats before;
  ck_assert_int_eq(pkv_stats_get(c, &before), 0);
  for (int f = 0; f < FAN; f++) {
    pkv_seq_id s;
    uint32_t matched = 0;
    ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
    ck_assert_int_eq(pkv_seq_match_prefix(c, s, p[f], LEN, 0, &matched), 0);
    ck_assert_uint_eq(matched, LEN);
    int32_t got[64], want[64];
    ck_assert_uint_eq(blocks_of(c, s, got), 3);
    blocks_of(c, owners[f], want);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(got[i], want[i]);
    ck_assert_int_eq(got[0], first_owner_blocks[0]); /* the shared root */
    int64_t slots[LEN];
    ck_assert_int_eq(pkv_slot_mapping(c, s, 0, LEN, slots), 0);
    for (uint32_t i = BS; i < LEN; i++)
      ck_assert(tu_slot_matches(c, slots[i], (uint32_t)(10 + f), i));
    ck_assert_int_eq(pkv_seq_free(c, s), 0);
    TU_CHECK(c);
  }
  pkv_stats after;
  ck_assert_int_eq(pkv_stats_get(c, &after), 0);
  ck_assert_uint_eq(after.prefix_hit_tokens - before.prefix_hit_tokens, (uint64_t)FAN * LEN);
  ck_assert_uint_eq(after.prefix_collisions, before.prefix_collisions);
  for (int f = 0; f < FAN; f++) ck_assert_int_eq(pkv_seq_free(c, owners[f]), 0);
  pkv_cache_destroy(c);
}
END_TEST

/* ------------------------------------------------ sharing */

START_TEST(sharing_same_blocks) {
  pkv_cache *c = open_cache(PKV_STORAGE_OWNED, 64, NULL);
  fill_prompt(1);
  int32_t p2[40];
  memcpy(p2, prompt, sizeof p2);
  p2[13] = -5; /* differs inside block 3 */
  uint32_t m1, m2;
  pkv_seq_id a = run_prompt(c, NULL, prompt, 22, 1, &m1);
  pkv_seq_id b = run_prompt(c, NULL, p2, 22, 2, &m2);
  ck_assert_uint_eq(m1, 0);
  ck_assert_uint_eq(m2, 12); /* blocks 0..2 */
  int32_t ba[64], bb[64];
  ck_assert_uint_eq(blocks_of(c, a, ba), 6);
  ck_assert_uint_eq(blocks_of(c, b, bb), 6);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(ba[i], bb[i]);
  for (int i = 3; i < 6; i++) ck_assert_int_ne(ba[i], bb[i]);
  /* Each sees its own tail: b's tokens from 12 on carry b's pattern. */
  int64_t slots[22];
  ck_assert_int_eq(pkv_slot_mapping(c, b, 0, 22, slots), 0);
  for (uint32_t i = 0; i < 22; i++)
    ck_assert(tu_slot_matches(c, slots[i], i < 12 ? 1 : 2, i));
  ck_assert_int_eq(pkv_slot_mapping(c, a, 0, 22, slots), 0);
  for (uint32_t i = 0; i < 22; i++) ck_assert(tu_slot_matches(c, slots[i], 1, i));
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.prefix_queries, 2);
  ck_assert_uint_eq(st.prefix_hit_tokens, 12);
  ck_assert_uint_eq(st.blocks_cached, 5 + 2); /* a: 5 full, b: blocks 3,4 */
  /* Both freed: blocks stay cached; a third sequence hits them. */
  ck_assert_int_eq(pkv_seq_free(c, a), 0);
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_cached, 7);
  ck_assert_uint_eq(st.blocks_evictable, 7);
  ck_assert_uint_eq(st.blocks_used, 0);
  uint32_t m3;
  pkv_seq_id d = run_prompt(c, NULL, prompt, 22, 3, &m3);
  ck_assert_uint_eq(m3, 20);
  int32_t bd[64];
  blocks_of(c, d, bd);
  for (int i = 0; i < 5; i++) ck_assert_int_eq(bd[i], ba[i]);
  ck_assert_int_eq(pkv_slot_mapping(c, d, 0, 22, slots), 0);
  for (uint32_t i = 0; i < 22; i++)
    ck_assert(tu_slot_matches(c, slots[i], i < 20 ? 1 : 3, i));
  /* max_tokens caps the match; a cap below one block matches nothing. */
  ck_assert_uint_eq(tu_match_new(c, prompt, 22, 9, NULL), 8);
  ck_assert_uint_eq(tu_match_new(c, prompt, 22, 3, NULL), 0);
  TU_DONE(c);
}
END_TEST

START_TEST(dedup_on_commit) {
  pkv_cache *c = open_cache(PKV_STORAGE_EXTERNAL, 64, NULL);
  fill_prompt(2);
  /* Both prefill the same prompt before either commits (no match). */
  pkv_seq_id a, b;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &a), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &b), 0);
  ck_assert_int_eq(pkv_seq_append(c, a, prompt, 10, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, b, prompt, 10, NULL), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_used, 6);
  ck_assert_int_eq(pkv_seq_commit(c, a, 10), 0);
  /* Dedup is the caller's choice (stable tables by default); here the
   * replaced blocks go back at once (see check_server for deferral). */
  ck_assert_int_eq(pkv_seq_commit_ex(c, b, 10,
                                     PKV_COMMIT_DEDUP | PKV_COMMIT_RELEASE_NOW,
                                     NULL, 0, NULL), 0);
  int32_t ba[64], bb[64];
  blocks_of(c, a, ba);
  blocks_of(c, b, bb);
  ck_assert_int_eq(ba[0], bb[0]);
  ck_assert_int_eq(ba[1], bb[1]);
  ck_assert_int_ne(ba[2], bb[2]);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.dedup_blocks, 2);
  ck_assert_uint_eq(st.blocks_used, 4); /* b's two copies went back */
  ck_assert_uint_eq(st.blocks_free, 60);
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(c, b, &info), 0);
  ck_assert_uint_eq(info.n_cached_blocks, 2);
  TU_DONE(c);
}
END_TEST

START_TEST(no_prefix_cache_flag) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 32, BS);
  cfg.flags = PKV_CACHE_NO_PREFIX_CACHE;
  pkv_cache *c = tu_cache(&cfg);
  fill_prompt(3);
  uint32_t m;
  pkv_seq_id a = run_prompt(c, NULL, prompt, 12, 0, &m);
  pkv_seq_id b = run_prompt(c, NULL, prompt, 12, 0, &m);
  ck_assert_uint_eq(m, 0);
  ck_assert_uint_eq(tu_stats(c).blocks_cached, 0);
  ck_assert_int_eq(pkv_seq_free(c, a), 0);
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 32);
  pkv_cache_destroy(c);
}
END_TEST

/* ------------------------------------------------ verification */

START_TEST(weak_keys_never_share_wrong_blocks) {
  pkv_cache *c = open_cache(PKV_STORAGE_OWNED, 512, NULL);
  int32_t early[8] = {5, 5, 5, 5, 6, 6, 6, 6};
  uint32_t me;
  pkv_seq_id e = run_prompt(c, NULL, early, 8, 99, &me);
  pkv__test_weaken_keys(c, 3); /* 8 buckets, 8 distinct keys; rehashes */
  TU_CHECK(c);
  ck_assert_int_eq(pkv_seq_free(c, e), 0);
  e = run_prompt(c, NULL, early, 8, 99, &me);
  ck_assert_uint_eq(me, 4); /* still found under the weak buckets */
  pkv_seq_id s[40];
  /* 40 prompts of 3 blocks: first blocks differ, later blocks are equal
   * across prompts (only the parent differs): the parent check must hold. */
  for (uint32_t p = 0; p < 40; p++) {
    int32_t t[12];
    for (int i = 0; i < 12; i++) t[i] = i < 4 ? (int32_t)(p * 10 + (uint32_t)i) : 77 + i;
    uint32_t m;
    s[p] = run_prompt(c, NULL, t, 12, 100 + p, &m);
    ck_assert_uint_eq(m, 0);
  }
  pkv_stats st = tu_stats(c);
  ck_assert_uint_gt(st.prefix_collisions, 0);
  /* early's 2 blocks, and the twin of its block 2 that its rerun computed
   * again (stable table: no dedup, the twin is cached beside it) */
  ck_assert_uint_eq(st.blocks_cached, 40 * 3 + 3);
  ck_assert_uint_eq(st.commit_duplicates, 1);
  ck_assert_uint_eq(st.dedup_blocks, 0);
  for (uint32_t p = 0; p < 40; p++) {
    int64_t slots[12];
    ck_assert_int_eq(pkv_slot_mapping(c, s[p], 0, 12, slots), 0);
    for (uint32_t i = 0; i < 12; i++) ck_assert(tu_slot_matches(c, slots[i], 100 + p, i));
  }
  /* A true repeat still hits every block, despite the crowded buckets. */
  int32_t t[13];
  for (int i = 0; i < 13; i++) t[i] = i < 4 ? 170 + i : 77 + i;
  t[12] = 5;
  uint32_t m;
  pkv_seq_id r = run_prompt(c, NULL, t, 13, 999, &m);
  ck_assert_uint_eq(m, 12);
  int32_t br[64], b17[64];
  blocks_of(c, r, br);
  blocks_of(c, s[17], b17);
  ck_assert_mem_eq(br, b17, 3 * sizeof *br);
  /* 16 namespaces, identical tokens: 8 weak keys force index collisions
   * across namespaces, and still none shares. */
  int32_t first[64];
  for (uint32_t k = 0; k < 16; k++) {
    char ns[8];
    snprintf(ns, sizeof ns, "ns%u", k);
    pkv_seq_opts o = {.ns = ns, .ns_len = strlen(ns)};
    int32_t tt[5] = {4, 3, 2, 1, 0};
    pkv_seq_id q = run_prompt(c, &o, tt, 5, 500 + k, &m);
    ck_assert_uint_eq(m, 0);
    int32_t bq[64];
    blocks_of(c, q, bq);
    first[k] = bq[0];
    for (uint32_t j = 0; j < k; j++) ck_assert_int_ne(first[j], first[k]);
  }
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ namespaces */

START_TEST(namespaces_isolate) {
  pkv_cache *c = open_cache(PKV_STORAGE_OWNED, 64, NULL);
  fill_prompt(4);
  pkv_seq_opts A = {.ns = "alice", .ns_len = 5};
  pkv_seq_opts B = {.ns = "bob", .ns_len = 3};
  pkv_seq_opts A2 = {.ns = "alice", .ns_len = 5, .adapter_id = 9};
  /* Tricky encodings: "ab"+"c" vs "a"+"bc" cannot collide with the typed
   * encoding; here simply: empty namespace vs "\0". */
  pkv_seq_opts Z = {.ns = "\0", .ns_len = 1};
  uint32_t m;
  pkv_seq_id a = run_prompt(c, &A, prompt, 9, 1, &m);
  pkv_seq_id b = run_prompt(c, &B, prompt, 9, 2, &m);
  ck_assert_uint_eq(m, 0);
  pkv_seq_id a2 = run_prompt(c, &A2, prompt, 9, 3, &m);
  ck_assert_uint_eq(m, 0);
  pkv_seq_id d = run_prompt(c, NULL, prompt, 9, 4, &m);
  ck_assert_uint_eq(m, 0);
  pkv_seq_id z = run_prompt(c, &Z, prompt, 9, 5, &m);
  ck_assert_uint_eq(m, 0);
  pkv_seq_id a3 = run_prompt(c, &A, prompt, 9, 6, &m);
  ck_assert_uint_eq(m, 8); /* same namespace: shared */
  pkv_seq_id all[6] = {a, b, a2, d, z, a3};
  int32_t blk[6][64];
  for (int i = 0; i < 6; i++) blocks_of(c, all[i], blk[i]);
  for (int i = 0; i < 5; i++)
    for (int j = i + 1; j < 5; j++) ck_assert_int_ne(blk[i][0], blk[j][0]);
  ck_assert_int_eq(blk[5][0], blk[0][0]);
  ck_assert_uint_eq(tu_stats(c).dedup_blocks, 0);
  TU_DONE(c);
}
END_TEST

START_TEST(many_namespaces_churn) {
  pkv_cache *c = open_cache(PKV_STORAGE_EXTERNAL, 512, NULL);
  int32_t t[5] = {9, 8, 7, 6, 5};
  pkv_seq_id s[300];
  int32_t first[300];
  uint32_t m;
  for (uint32_t round = 0; round < 2; round++) {
    for (uint32_t k = 0; k < 300; k++) {
      char ns[16];
      snprintf(ns, sizeof ns, "tenant-%u", k % 150);
      pkv_seq_opts o = {.ns = ns, .ns_len = strlen(ns)};
      pkv_seq_id q;
      ck_assert_int_eq(pkv_seq_create(c, &o, &q), 0);
      ck_assert_int_eq(pkv_seq_match_prefix(c, q, t, 5, 4, &m), 0);
      /* Same tenant as k - 150 (live in this round): shares its block. */
      ck_assert_uint_eq(m, k >= 150 ? 4u : 0u);
      ck_assert_int_eq(pkv_seq_append(c, q, t + m, 5 - m, NULL), 0);
      ck_assert_int_eq(pkv_seq_commit(c, q, 5), 0);
      int32_t b[4];
      blocks_of(c, q, b);
      first[k] = b[0];
      if (k >= 150) ck_assert_int_eq(first[k], first[k - 150]);
      s[k] = q;
    }
    TU_CHECK(c);
    for (uint32_t k = 0; k < 300; k++) ck_assert_int_eq(pkv_seq_free(c, s[k]), 0);
    /* Releases every namespace the index does not hold either. */
    ck_assert_int_eq(pkv_prefix_reset(c), 0);
    TU_CHECK(c);
  }
  pkv_cache_destroy(c);
}
END_TEST

/* ------------------------------------------------ pins */

START_TEST(pins_survive_pressure) {
  pkv_cache *c = open_cache(PKV_STORAGE_EXTERNAL, 8, NULL);
  fill_prompt(5);
  uint32_t m;
  pkv_seq_id sys = run_prompt(c, NULL, prompt, 8, 0, &m); /* system prompt */
  pkv_pin_id pin;
  ck_assert_int_eq(pkv_pin_create(c, sys, 8, &pin), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_pinned, 2);
  ck_assert_int_eq(pkv_seq_free(c, sys), 0);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_used, 2); /* held by the pin */
  ck_assert_uint_eq(st.blocks_evictable, 0);
  /* Fill everything else, twice over, with other cached prompts. */
  for (uint32_t k = 0; k < 6; k++) {
    fill_prompt(50 + k);
    pkv_seq_id o = run_prompt(c, NULL, prompt, 24, 0, &m);
    ck_assert_int_eq(pkv_seq_free(c, o), 0);
  }
  ck_assert_uint_gt(tu_stats(c).evictions, 0);
  /* A request that needs the whole pool cannot have the pinned blocks. */
  pkv_seq_id big;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &big), 0);
  ck_assert_int_eq(pkv_seq_append(c, big, prompt, 25, NULL), PKV_ENOMEM);
  ck_assert_int_eq(pkv_seq_append(c, big, prompt, 24, NULL), 0);
  ck_assert_int_eq(pkv_seq_free(c, big), 0);
  fill_prompt(5);
  pkv_seq_id again = run_prompt(c, NULL, prompt, 9, 0, &m);
  ck_assert_uint_eq(m, 8);
  ck_assert_int_eq(pkv_seq_free(c, again), 0);
  /* Released: the blocks become evictable and the pool is whole again. */
  ck_assert_int_eq(pkv_pin_release(c, pin), 0);
  ck_assert_int_eq(pkv_pin_release(c, pin), PKV_ENOENT);
  st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_pinned, 0);
  ck_assert_uint_eq(st.blocks_used, 0);
  big = tu_seq_new(c, prompt, 32);
  TU_DONE(c);
}
END_TEST

START_TEST(pinned_block_is_copied_before_write) {
  pkv_cache *c = open_cache(PKV_STORAGE_EXTERNAL, 16, NULL);
  pkv_config cfg = *pkv_cache_config(c);
  (void)cfg;
  fill_prompt(6);
  pkv_seq_id s;
  uint32_t m;
  s = run_prompt(c, NULL, prompt, 8, 0, &m);
  pkv_pin_id pin;
  ck_assert_int_eq(pkv_pin_create(c, s, 8, &pin), 0);
  ck_assert_int_eq(pkv_seq_truncate(c, s, 6), 0);
  ck_assert_int_eq(pkv__seq_check_writable(c, s, 5, 1), PKV_ESTATE);
  ck_assert_int_eq(pkv_seq_append(c, s, prompt, 1, NULL), 0);
  ck_assert_uint_eq(tu_stats(c).cow_copies, 1);
  ck_assert_int_eq(pkv_pin_release(c, pin), 0);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ retention */

static uint64_t fake_now;
static uint64_t fake_clock(void *user) {
  (void)user;
  return fake_now;
}

/* A (priority 90 for 1000 ns) is released before B (default): which one
 * survives one eviction at time `at`? Returns 1 if A survived. */
static int retention_run(uint64_t at) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 3, BS);
  cfg.policy = "priority";
  cfg.clock = fake_clock;
  fake_now = 100;
  pkv_cache *c = tu_cache(&cfg);
  int32_t ta[4] = {1, 2, 3, 4}, tb[4] = {5, 6, 7, 8};
  pkv_seq_id a, b;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &a), 0);
  ck_assert_int_eq(pkv_seq_set_priority(c, a, 0, 4, 90, 1000), 0);
  ck_assert_int_eq(pkv_seq_append(c, a, ta, 4, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(c, a, 4), 0);
  b = tu_seq_new(c, tb, 4);
  ck_assert_int_eq(pkv_seq_commit(c, b, 4), 0);
  ck_assert_int_eq(pkv_seq_free(c, a), 0);
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  fake_now = at;
  pkv_seq_id x;
  int32_t tx[8] = {9, 9, 9, 9, 9, 9, 9, 9};
  ck_assert_int_eq(pkv_seq_create(c, NULL, &x), 0);
  ck_assert_int_eq(pkv_seq_append(c, x, tx, 8, NULL), 0); /* evicts one */
  ck_assert_uint_eq(tu_stats(c).evictions, 1);
  pkv_seq_id probe;
  uint32_t m;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &probe), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, probe, ta, 4, 0, &m), 0);
  TU_DONE(c);
  return m == 4;
}

START_TEST(retention_expires) {
  ck_assert_int_eq(retention_run(500), 1);  /* 90 beats 35 */
  ck_assert_int_eq(retention_run(5000), 0); /* expired: older goes first */
}
END_TEST

/* ------------------------------------------------ orphans */

/* Chain Y = y0 (block 0) .. y1 (block 4); chain X = blocks 1..3; all freed.
 * The test policy takes the lowest id: y0 first, leaving y1 an orphan.
 * Returns the block evicted second. */
static int32_t orphan_run(uint32_t flags, pkv_cache **keep) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 5, BS);
  cfg.policy_ops = &tu_policy_lowest;
  cfg.flags = flags;
  pkv_cache *c = tu_cache(&cfg);
  int32_t ty[8] = {1, 1, 1, 1, 2, 2, 2, 2}, tx[12] = {3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5};
  pkv_seq_id y, x;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &y), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &x), 0);
  ck_assert_int_eq(pkv_seq_append(c, y, ty, 4, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, x, tx, 12, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, y, ty + 4, 4, NULL), 0);
  int32_t by[2];
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(c, y, by, 2, &n), 0);
  ck_assert_int_eq(by[0], 0);
  ck_assert_int_eq(by[1], 4);
  ck_assert_int_eq(pkv_seq_commit(c, y, 8), 0);
  ck_assert_int_eq(pkv_seq_commit(c, x, 12), 0);
  ck_assert_int_eq(pkv_seq_free(c, y), 0);
  ck_assert_int_eq(pkv_seq_free(c, x), 0);
  pkv_seq_id z;
  int32_t tz[8] = {0};
  int32_t bz[2];
  z = tu_seq_new(c, tz, 4);
  ck_assert_int_eq(pkv_seq_append(c, z, tz, 4, NULL), 0);
  ck_assert_int_eq(pkv_seq_blocks(c, z, bz, 2, &n), 0);
  ck_assert_int_eq(bz[0], 0);
  TU_CHECK(c);
  *keep = c;
  return bz[1];
}

START_TEST(orphans_kept_by_default) {
  pkv_cache *c;
  ck_assert_int_eq(orphan_run(0, &c), 1);
  ck_assert_uint_eq(tu_stats(c).orphan_evictions, 0);
  /* y1 is still cached: recomputing y0 makes it reachable again. */
  int32_t ty[9] = {1, 1, 1, 1, 2, 2, 2, 2, 7};
  uint32_t m;
  pkv_seq_id y;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &y), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, y, ty, 9, 0, &m), 0);
  ck_assert_uint_eq(m, 0); /* y0 is gone */
  ck_assert_int_eq(pkv_seq_free(c, y), 0);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_evictable, 3);
  pkv_cache_destroy(c);
}
END_TEST

START_TEST(orphans_first) {
  pkv_cache *c;
  ck_assert_int_eq(orphan_run(PKV_CACHE_EVICT_ORPHANS_FIRST, &c), 4);
  ck_assert_uint_eq(tu_stats(c).orphan_evictions, 1);
  pkv_cache_destroy(c);
}
END_TEST

START_TEST(orphan_readopted_when_parent_returns) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 6, BS);
  cfg.policy_ops = &tu_policy_lowest;
  pkv_cache *c = tu_cache(&cfg);
  int32_t ty[9] = {1, 1, 1, 1, 2, 2, 2, 2, 7};
  uint32_t m;
  pkv_seq_id y = run_prompt(c, NULL, ty, 8, 0, &m); /* blocks 0, 1 */
  ck_assert_int_eq(pkv_seq_free(c, y), 0);
  /* Evict exactly y0 (lowest id) with a 5-block request. */
  pkv_seq_id z;
  int32_t tz[20] = {0};
  z = tu_seq_new(c, tz, 20);
  ck_assert_uint_eq(tu_stats(c).evictions, 1);
  ck_assert_int_eq(pkv_seq_free(c, z), 0);
  /* Recompute y0: the match finds no block, the commit re-registers y0
   * under the same key, and a later match reaches the orphan again. */
  pkv_seq_id y2 = run_prompt(c, NULL, ty, 5, 0, &m);
  ck_assert_uint_eq(m, 0);
  ck_assert_int_eq(pkv_seq_free(c, y2), 0);
  pkv_seq_id y3;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &y3), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, y3, ty, 9, 0, &m), 0);
  ck_assert_uint_eq(m, 8);
  int32_t b[2];
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(c, y3, b, 2, &n), 0);
  ck_assert_int_eq(b[1], 1);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ misbehaving policy */

/* Always names block 0, whatever its state. */
static int32_t bad_victim(void *st, uint64_t now) {
  (void)st;
  (void)now;
  return 0;
}

START_TEST(policy_victim_in_use_is_refused) {
  pkv_policy_ops ops = tu_policy_lowest;
  ops.name = "test-bad";
  ops.choose_victim = bad_victim;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 4, BS);
  cfg.policy_ops = &ops;
  pkv_cache *c = tu_cache(&cfg);
  int32_t t[16];
  for (int i = 0; i < 16; i++) t[i] = i;
  int64_t slots[4];
  pkv_seq_id keep, gone;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &keep), 0);
  ck_assert_int_eq(pkv_seq_append(c, keep, t, 4, slots), 0); /* block 0 */
  for (int i = 0; i < 4; i++) tu_write_slot(c, slots[i], 7, (uint32_t)i);
  ck_assert_int_eq(pkv_seq_commit(c, keep, 4), 0);
  gone = tu_seq_new(c, t + 4, 12);
  ck_assert_int_eq(pkv_seq_commit(c, gone, 12), 0);
  ck_assert_int_eq(pkv_seq_free(c, gone), 0); /* 3 evictable blocks */
  pkv_seq_id x;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &x), 0);
  pkv_stats before = tu_stats(c);
  /* The policy names block 0, which keep uses: refused, nothing taken. */
  ck_assert_int_eq(pkv_seq_append(c, x, t, 4, NULL), PKV_ECORRUPT);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "not evictable"));
  pkv_stats after = tu_stats(c);
  TU_STATS_SAME(before, after);
  /* The manager's state is intact (the policy is checked last), and
   * pkv_check names the policy that would evict a block in use. */
  char msg[256];
  ck_assert_int_eq(pkv_check(c, msg, sizeof msg), PKV_ECORRUPT);
  ck_assert_msg(strstr(msg, "policy 'test-bad' would evict block 0") != NULL, "%s", msg);
  ck_assert_int_eq(pkv_slot_mapping(c, keep, 0, 4, slots), 0);
  for (int i = 0; i < 4; i++) ck_assert(tu_slot_matches(c, slots[i], 7, (uint32_t)i));
  pkv_cache_destroy(c);
}
END_TEST

/* ------------------------------------------------ reset + events */

/* Replays events into a multiset of keys. */
typedef struct replay {
  pkv_hash128 keys[1024];
  pkv_hash128 last_parent;  /* of the last STORED */
  char last_ns[16];
  size_t last_ns_len;
  uint64_t last_adapter;
  uint32_t n;
  uint64_t last_seqno;
  uint64_t stored, removed, cleared;
} replay;

static void on_event(const pkv_event *ev, void *user) {
  replay *r = user;
  if (ev->seqno != r->last_seqno + 1) ck_abort_msg("event gap: %llu after %llu",
      (unsigned long long)ev->seqno, (unsigned long long)r->last_seqno);
  r->last_seqno = ev->seqno;
  switch (ev->type) {
  case PKV_EVENT_STORED:
    if (ev->n_tokens != BS || ev->block < 0) ck_abort_msg("bad STORED");
    r->keys[r->n++] = ev->key;
    r->stored++;
    r->last_parent = ev->parent;
    r->last_ns_len = ev->ns_len;
    if (ev->ns_len && ev->ns_len <= sizeof r->last_ns) memcpy(r->last_ns, ev->ns, ev->ns_len);
    r->last_adapter = ev->adapter_id;
    break;
  case PKV_EVENT_REMOVED: {
    uint32_t i = 0;
    while (i < r->n && (r->keys[i].lo != ev->key.lo || r->keys[i].hi != ev->key.hi)) i++;
    if (i == r->n) ck_abort_msg("REMOVED of a key never stored");
    r->keys[i] = r->keys[--r->n];
    r->removed++;
    break;
  }
  case PKV_EVENT_CLEARED:
    r->n = 0;
    r->cleared++;
    break;
  case PKV_EVENT_REMAPPED: /* no dedup in these caches */
  case PKV_EVENT_LOST:     /* push events are never lost */
  case PKV_EVENT_DEMOTED:  /* no tiers in these caches */
  case PKV_EVENT_PROMOTED:
    ck_abort_msg("unexpected event type %d", (int)ev->type);
  }
}

static int key_cmp(const void *a, const void *b) {
  const pkv_hash128 *x = a, *y = b;
  if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
  if (x->hi != y->hi) return x->hi < y->hi ? -1 : 1;
  return 0;
}

/* The replayed multiset equals the index's keys exactly. */
static void assert_replay_matches(pkv_cache *c, replay *r) {
  pkv_hash128 live[1024];
  uint32_t n = 0;
  for (uint32_t b = 0; b < c->num_blocks; b++)
    if (PKV_BLOCK_IS_CACHED(c, b)) live[n++] = c->blk[b].key;
  ck_assert_uint_eq(n, r->n);
  pkv_hash128 mine[1024];
  memcpy(mine, r->keys, r->n * sizeof *mine);
  qsort(live, n, sizeof *live, key_cmp);
  qsort(mine, n, sizeof *mine, key_cmp);
  ck_assert_mem_eq(live, mine, n * sizeof *live);
  ck_assert_uint_eq(tu_stats(c).events, r->last_seqno);
}

START_TEST(events_replay_exact_key_set) {
  replay *r = calloc(1, sizeof *r);
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 24, BS);
  cfg.on_event = on_event;
  cfg.event_user = r;
  cfg.policy = _i ? "s3fifo" : "lru";
  pkv_cache *c = tu_cache(&cfg);
  uint64_t rng = 77;
  pkv_seq_id live[6] = {0};
  for (int step = 0; step < TU_SCALE(400); step++) {
    int k = (int)(tu_rand(&rng) % 6);
    if (live[k]) {
      ck_assert_int_eq(pkv_seq_free(c, live[k]), 0);
      live[k] = 0;
    } else {
      uint32_t fam = (uint32_t)(tu_rand(&rng) % 16), n = 4 + (uint32_t)(tu_rand(&rng) % 24);
      int32_t t[32];
      for (uint32_t i = 0; i < n; i++) t[i] = (int32_t)(fam * 100 + i % (fam / 2 + 5));
      pkv_seq_id s;
      uint32_t m;
      ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
      ck_assert_int_eq(pkv_seq_match_prefix(c, s, t, n, n - 1, &m), 0);
      if (pkv_seq_append(c, s, t + m, n - m, NULL) == 0) {
        ck_assert_int_eq(pkv_seq_commit(c, s, n), 0);
        live[k] = s;
      } else {
        ck_assert_int_eq(pkv_seq_free(c, s), 0);
      }
    }
    if (step % 97 == 96) ck_assert_int_eq(pkv_prefix_reset(c), 0);
    TU_CHECK(c);
    assert_replay_matches(c, r);
  }
  ck_assert_uint_gt(r->removed, 0);
  ck_assert_uint_gt(tu_stats(c).evictions, 0);
  pkv_cache_destroy(c);
  free(r);
}
END_TEST

START_TEST(prefix_reset_drops_unused) {
  replay *r = calloc(1, sizeof *r);
  pkv_cache *c = tu_cache_events(PKV_STORAGE_EXTERNAL, 32, BS, on_event, r);
  fill_prompt(8);
  uint32_t m;
  pkv_seq_id a = run_prompt(c, NULL, prompt, 8, 0, &m);
  fill_prompt(9);
  pkv_seq_id b = run_prompt(c, NULL, prompt, 12, 0, &m);
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_cached, 5);
  /* a still uses 2: those stay, the 3 others go, one REMOVED each. */
  ck_assert_int_eq(pkv_prefix_reset(c), 0);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_cached, 2);
  ck_assert_uint_eq(st.blocks_free, 30);
  ck_assert_uint_eq(r->removed, 3);
  ck_assert_uint_eq(r->cleared, 0);
  assert_replay_matches(c, r);
  ck_assert_uint_eq(st.prefix_hit_tokens, 0);
  pkv_seq_id b2 = run_prompt(c, NULL, prompt, 12, 0, &m);
  ck_assert_uint_eq(m, 0); /* b's blocks are gone */
  /* Nothing in use: one CLEARED. */
  ck_assert_int_eq(pkv_seq_free(c, a), 0);
  ck_assert_int_eq(pkv_seq_free(c, b2), 0);
  ck_assert_int_eq(pkv_prefix_reset(c), 0);
  ck_assert_uint_eq(r->cleared, 1);
  ck_assert_uint_eq(r->removed, 3);
  assert_replay_matches(c, r);
  st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_cached, 0);
  ck_assert_uint_eq(st.blocks_free, 32);
  TU_DONE(c);
  free(r);
}
END_TEST

/* ------------------------------------------------ keys */

START_TEST(keys_are_stable) {
  /* The documented key: same tokens, same key in every process.  Pin the
   * value of one first block so an accidental change of encoding or seed
   * fails here. */
  replay *r = calloc(1, sizeof *r);
  pkv_cache *c = tu_cache_events(PKV_STORAGE_EXTERNAL, 8, BS, on_event, r);
  int32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint32_t m;
  pkv_seq_id s = run_prompt(c, NULL, t, 8, 0, &m);
  ck_assert_uint_eq(r->stored, 2);
  pkv_hash128 k0 = r->keys[0], k1 = r->keys[1];
  ck_assert(k0.lo != k1.lo || k0.hi != k1.hi);
  /* The second block's event names the first as its parent. */
  ck_assert_uint_eq(r->last_parent.lo, k0.lo);
  ck_assert_uint_eq(r->last_parent.hi, k0.hi);
  ck_assert_uint_eq(r->last_ns_len, 0);
  /* Namespace and adapter travel with the event. */
  pkv_seq_opts o = {.ns = "acme", .ns_len = 4, .adapter_id = 42};
  pkv_seq_id q = run_prompt(c, &o, t, 5, 0, &m);
  ck_assert_uint_eq(m, 0);
  ck_assert_uint_eq(r->stored, 3);
  ck_assert_uint_eq(r->last_ns_len, 4);
  ck_assert_mem_eq(r->last_ns, "acme", 4);
  ck_assert_uint_eq(r->last_adapter, 42);
  ck_assert_uint_eq(r->last_parent.lo, 0);
  ck_assert_uint_eq(r->last_parent.hi, 0);
  ck_assert(r->keys[2].lo != k0.lo || r->keys[2].hi != k0.hi);
  ck_assert_int_eq(pkv_seq_free(c, q), 0);
  /* Recompute independently: XXH3-128 over the documented bytes. */
  uint8_t ext[10 + 0 + 18] = {0x01, 'N', 0, 0, 0, 0, 0, 0, 0, 0,
                              0x02, 'A', 8, 0, 0, 0, 0, 0, 0, 0,
                              0, 0, 0, 0, 0, 0, 0, 0};
  XXH128_hash_t e = XXH3_128bits_withSeed(ext, sizeof ext, 0x706b76206b657931ull);
  uint8_t buf[32 + 16];
  memset(buf, 0, 16);
  memcpy(buf + 16, &e.low64, 8);
  memcpy(buf + 24, &e.high64, 8);
  memcpy(buf + 32, t, 16);
  XXH128_hash_t h = XXH3_128bits_withSeed(buf, sizeof buf, 0x706b76206b657931ull);
  ck_assert_uint_eq(k0.lo, h.low64);
  ck_assert_uint_eq(k0.hi, h.high64);
  ck_assert_int_eq(pkv_seq_free(c, s), 0);
  pkv_cache_destroy(c);
  free(r);
}
END_TEST

TU_MAIN("prefix",
    {"sharing", 0, {{sharing_same_blocks}, {match_finds_child_among_many}, {dedup_on_commit},
                   {no_prefix_cache_flag}}},
    {"verification", 0, {{weak_keys_never_share_wrong_blocks}, {keys_are_stable}}},
    {"namespaces", 0, {{namespaces_isolate}, {many_namespaces_churn}}},
    {"pins", 0, {{pins_survive_pressure}, {pinned_block_is_copied_before_write}}},
    {"retention", 0, {{retention_expires}}},
    {"orphans", 0,
     {{orphans_kept_by_default}, {orphans_first}, {orphan_readopted_when_parent_returns}}},
    {"eviction", 0, {{policy_victim_in_use_is_refused}}},
    {"events_reset", 0, {{events_replay_exact_key_set, 0, 2}, {prefix_reset_drops_unused}}})
