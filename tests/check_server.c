/*
 * check_server.c — the calls a serving scheduler makes every step: the
 * read-only probe and attaching its hit, stable tables and explicit dedup
 * with deferred release, lookahead slots, deltas, batch append/free, pulled
 * events and callback re-entry, capacity, evict(n) and common prefixes.
 *
 * Every refused call is checked to leave the statistics, the capacity and
 * pkv_check exactly as they were.
 */
#include "tu_core.h"
#include "pagedkv/policy.h"

#include <stdio.h>

#define BS 4

static int32_t prompt[256];

static void fill_prompt(uint32_t seed) {
  for (int i = 0; i < 256; i++) prompt[i] = (int32_t)(seed * 1000 + (uint32_t)i);
}

static pkv_cache *open_cache(uint32_t nb, uint32_t flags, uint32_t evq) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, nb, BS);
  cfg.flags = flags;
  cfg.event_queue_cap = evq;
  return tu_cache(&cfg);
}

/* A computed, committed sequence over tokens[0..n) (no match). */
static pkv_seq_id computed(pkv_cache *c, const pkv_seq_opts *o,
                           const int32_t *tokens, uint32_t n) {
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, o, &s), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, tokens, n, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(c, s, n), 0);
  return s;
}

static uint32_t blocks_of(pkv_cache *c, pkv_seq_id s, int32_t *b) {
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(c, s, b, 64, &n), 0);
  return n;
}

/* Hands out every queued copy-on-write copy (they hold their blocks). */
static void drain_copies(pkv_cache *c) {
  pkv_copy q[16];
  uint32_t n, pending;
  do {
    ck_assert_int_eq(pkv_pool_drain_copies(c, q, 16, &n, &pending), 0);
  } while (pending);
}

static pkv_capacity cap_of(pkv_cache *c) {
  pkv_capacity k;
  ck_assert_int_eq(pkv_cache_capacity(c, &k), 0);
  return k;
}

/* A refused call: same stats (but the counters a refusal may not touch
 * anyway), same capacity, pkv_check clean. */
typedef struct snap {
  pkv_stats st;
  pkv_capacity cap;
} snap;
static snap snap_of(pkv_cache *c) { return (snap){tu_stats(c), cap_of(c)}; }
static void assert_same(pkv_cache *c, const snap *before) {
  snap now = snap_of(c);
  TU_STATS_SAME(before->st, now.st);
  ck_assert(memcmp(&before->cap, &now.cap, sizeof now.cap) == 0);
  TU_CHECK(c);
}

/* ------------------------------------------------ a policy that counts */

static const pkv_policy_ops *lru;
static uint64_t hooks;
static int cnt_create(void **s, uint32_t n, const char *a) { return lru->create(s, n, a); }
static void cnt_destroy(void *s) { lru->destroy(s); }
static void cnt_insert(void *s, int32_t b, const pkv_block_meta *m) { hooks++; lru->on_insert(s, b, m); }
static void cnt_hit(void *s, int32_t b, const pkv_block_meta *m) { hooks++; lru->on_hit(s, b, m); }
static void cnt_evictable(void *s, int32_t b, const pkv_block_meta *m) { hooks++; lru->on_evictable(s, b, m); }
static void cnt_pinned(void *s, int32_t b, const pkv_block_meta *m) { hooks++; lru->on_pinned(s, b, m); }
static int32_t cnt_victim(void *s, uint64_t now) { hooks++; return lru->choose_victim(s, now); }
static void cnt_remove(void *s, int32_t b) { hooks++; lru->on_remove(s, b); }
static const pkv_policy_ops counting =
    TU_POLICY_OPS("counting-lru", cnt_create, cnt_destroy, cnt_insert, cnt_hit, cnt_evictable,
                  cnt_pinned, cnt_victim, cnt_remove);

/* ------------------------------------------------ probe + attach */

START_TEST(probe_changes_nothing) {
  lru = pkv_policy_find("lru");
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 32, BS);
  cfg.policy_ops = &counting;
  pkv_cache *c = tu_cache(&cfg);
  fill_prompt(1);
  pkv_seq_id a = computed(c, NULL, prompt, 14); /* 3 full blocks cached */
  int32_t ba[64];
  blocks_of(c, a, ba);
  ck_assert_int_eq(pkv_seq_free(c, a), 0); /* evictable now */
  snap before = snap_of(c);
  uint64_t hooks_before = hooks;
  int32_t hit[8];
  uint32_t ht = 99;
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 20, 0, hit, 8, &ht), 0);
  ck_assert_uint_eq(ht, 12);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(hit[i], ba[i]);
  /* cap: keep one token to compute; blocks_cap; no ids wanted */
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 12, 11, hit, 8, &ht), 0);
  ck_assert_uint_eq(ht, 8);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 20, 0, hit, 1, &ht), 0);
  ck_assert_uint_eq(ht, 4);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 20, 0, NULL, 0, &ht), 0);
  ck_assert_uint_eq(ht, 12);
  /* another namespace (never interned, then interned) sees nothing */
  pkv_seq_opts o = {.ns = "tenant", .ns_len = 6};
  ck_assert_int_eq(pkv_prefix_probe(c, &o, prompt, 20, 0, NULL, 0, &ht), 0);
  ck_assert_uint_eq(ht, 0);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.prefix_probes, before.st.prefix_probes + 5);
  st.prefix_probes = before.st.prefix_probes;
  TU_STATS_SAME(before.st, st);
  ck_assert(memcmp(&before.cap, &(pkv_capacity){0}, 0) == 0);
  pkv_capacity k = cap_of(c);
  ck_assert(memcmp(&before.cap, &k, sizeof k) == 0);
  ck_assert_uint_eq(hooks, hooks_before); /* the policy heard nothing */
  pkv_seq_id t;
  ck_assert_int_eq(pkv_seq_create(c, &o, &t), 0);
  ck_assert_int_eq(pkv_prefix_probe(c, &o, prompt, 20, 0, NULL, 0, &ht), 0);
  ck_assert_uint_eq(ht, 0);
  /* bad input */
  ck_assert_int_eq(pkv_prefix_probe(NULL, NULL, prompt, 4, 0, NULL, 0, &ht), PKV_EINVAL);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, NULL, 4, 0, NULL, 0, &ht), PKV_EINVAL);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 4, 0, NULL, 3, &ht), PKV_EINVAL);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 4, 0, NULL, 0, NULL), PKV_EINVAL);
  TU_DONE(c);
}
END_TEST

START_TEST(attach_probed_hit) {
  pkv_cache *c = open_cache(32, 0, 0);
  fill_prompt(2);
  pkv_seq_id a = computed(c, NULL, prompt, 12);
  int32_t ba[64], bb[64];
  blocks_of(c, a, ba);
  int32_t hit[8];
  uint32_t ht;
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 18, 17, hit, 8, &ht), 0);
  ck_assert_uint_eq(ht, 12);
  pkv_seq_id b;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &b), 0);
  int64_t slots[16];
  int32_t fresh[8];
  pkv_append req = {.tokens = prompt, .n_tokens = 18, .hit_blocks = hit,
                    .n_hit_blocks = 3, .slots = slots, .new_blocks = fresh,
                    .new_cap = 8};
  pkv_delta d;
  ck_assert_int_eq(pkv_seq_append_ex(c, b, &req, &d), 0);
  ck_assert_uint_eq(d.first_new, 3);
  ck_assert_uint_eq(d.n_new, 2);
  ck_assert_int_eq(d.cow_index, -1);
  ck_assert_uint_eq(d.n_known, 18);
  ck_assert_uint_eq(d.n_tokens, 18);
  ck_assert_uint_eq(blocks_of(c, b, bb), 5);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(bb[i], ba[i]);
  ck_assert_int_eq(bb[3], fresh[0]);
  ck_assert_int_eq(bb[4], fresh[1]);
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(slots[i], (int64_t)bb[(12 + i) / BS] * BS + (12 + i) % BS);
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(c, b, &info), 0);
  ck_assert_uint_eq(info.n_committed, 12);
  TU_CHECK(c);

  /* A hit attaches only to an empty sequence. */
  snap before = snap_of(c);
  ck_assert_int_eq(pkv_seq_append_ex(c, b, &req, &d), PKV_ESTATE);
  assert_same(c, &before);
  /* Stale: evicted between probe and allocate. */
  ck_assert_int_eq(pkv_seq_commit(c, b, 18), 0);
  ck_assert_int_eq(pkv_seq_free(c, a), 0);
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 18, 17, hit, 8, &ht), 0);
  ck_assert_uint_eq(ht, 16);
  ck_assert_int_eq(pkv_evict(c, tu_stats(c).blocks_evictable), 0);
  pkv_seq_id e;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &e), 0);
  before = snap_of(c);
  req.n_hit_blocks = 4;
  ck_assert_int_eq(pkv_seq_append_ex(c, e, &req, &d), PKV_ESTATE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "stale hit"));
  assert_same(c, &before);
  /* Stale: the block id now holds something else. */
  fill_prompt(3);
  pkv_seq_id other = computed(c, NULL, prompt, 16);
  fill_prompt(2);
  before = snap_of(c);
  ck_assert_int_eq(pkv_seq_append_ex(c, e, &req, &d), PKV_ESTATE);
  assert_same(c, &before);
  /* Wrong namespace. */
  ck_assert_int_eq(pkv_seq_free(c, other), 0);
  pkv_seq_id n1 = computed(c, NULL, prompt, 8);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 8, 0, hit, 8, &ht), 0);
  ck_assert_uint_eq(ht, 8);
  pkv_seq_opts o = {.ns = "x", .ns_len = 1};
  pkv_seq_id n2;
  ck_assert_int_eq(pkv_seq_create(c, &o, &n2), 0);
  pkv_append r2 = {.tokens = prompt, .n_tokens = 8, .hit_blocks = hit, .n_hit_blocks = 2};
  before = snap_of(c);
  ck_assert_int_eq(pkv_seq_append_ex(c, n2, &r2, NULL), PKV_ESTATE);
  assert_same(c, &before);
  /* bad arguments */
  r2.n_tokens = 7; /* fewer tokens than the hit covers */
  ck_assert_int_eq(pkv_seq_append_ex(c, n1, &r2, NULL), PKV_EINVAL);
  ck_assert_int_eq(pkv_seq_append_ex(c, n1, NULL, NULL), PKV_EINVAL);
  ck_assert_int_eq(pkv_seq_append_ex(c, 12345, &req, NULL), PKV_ENOSEQ);
  assert_same(c, &before);
  pkv_cache_destroy(c);
}
END_TEST

/* ------------------------------------------------ stable tables, dedup */

START_TEST(tables_stable_by_default) {
  pkv_cache *c = open_cache(64, 0, 0);
  fill_prompt(4);
  pkv_seq_id a, b;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &a), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &b), 0);
  ck_assert_int_eq(pkv_seq_append(c, a, prompt, 10, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, b, prompt, 10, NULL), 0);
  int32_t before_b[64], after_b[64];
  blocks_of(c, b, before_b);
  ck_assert_int_eq(pkv_seq_commit(c, a, 10), 0);
  ck_assert_int_eq(pkv_seq_commit(c, b, 10), 0);
  blocks_of(c, b, after_b);
  ck_assert(memcmp(before_b, after_b, 3 * sizeof(int32_t)) == 0);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.commit_duplicates, 2);
  ck_assert_uint_eq(st.dedup_blocks, 0);
  ck_assert_uint_eq(st.blocks_cached, 4); /* twins cached side by side */
  ck_assert_uint_eq(st.blocks_used, 6);
  /* Either twin serves a hit: free a, evict its blocks, b's still hit. */
  ck_assert_int_eq(pkv_seq_free(c, a), 0);
  ck_assert_int_eq(pkv_evict(c, 2), 0);
  uint32_t ht;
  int32_t hit[4];
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, prompt, 10, 9, hit, 4, &ht), 0);
  ck_assert_uint_eq(ht, 8);
  ck_assert_int_eq(hit[0], after_b[0]);
  ck_assert_int_eq(hit[1], after_b[1]);
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 62);
  ck_assert_uint_eq(tu_stats(c).blocks_evictable, 2);
  TU_DONE(c);
}
END_TEST

START_TEST(dedup_remaps_and_defers) {
  tu_events log = {0};
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 64, BS);
  cfg.on_event = tu_event_log;
  cfg.event_user = &log;
  pkv_cache *c = tu_cache(&cfg);
  fill_prompt(5);
  pkv_seq_id a, b;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &a), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &b), 0);
  ck_assert_int_eq(pkv_seq_append(c, a, prompt, 10, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, b, prompt, 10, NULL), 0);
  int32_t ba[64], bb0[64], bb[64];
  blocks_of(c, b, bb0);
  ck_assert_int_eq(pkv_seq_commit(c, a, 10), 0);
  blocks_of(c, a, ba);
  /* remaps too small: refused, nothing changed */
  pkv_remap rm[4];
  uint32_t n_rm = 77;
  snap before = snap_of(c);
  ck_assert_int_eq(pkv_seq_commit_ex(c, b, 10, PKV_COMMIT_DEDUP, rm, 1, &n_rm), PKV_ENOSPC);
  ck_assert_uint_eq(n_rm, 77);
  assert_same(c, &before);
  ck_assert_int_eq(pkv_seq_commit_ex(c, b, 10, PKV_COMMIT_DEDUP | PKV_COMMIT_NO_DEDUP, rm, 4, &n_rm), PKV_EINVAL);
  ck_assert_int_eq(pkv_seq_commit_ex(c, b, 10, 0x80, rm, 4, &n_rm), PKV_EINVAL);
  ck_assert_int_eq(pkv_seq_commit_ex(c, b, 10, PKV_COMMIT_DEDUP, rm, 4, NULL), PKV_EINVAL);
  assert_same(c, &before);
  uint32_t ev0 = log.n;
  ck_assert_int_eq(pkv_seq_commit_ex(c, b, 10, PKV_COMMIT_DEDUP, rm, 4, &n_rm), 0);
  ck_assert_uint_eq(n_rm, 2);
  blocks_of(c, b, bb);
  for (uint32_t i = 0; i < 2; i++) {
    ck_assert_uint_eq(rm[i].index, i);
    ck_assert_int_eq(rm[i].old_block, bb0[i]);
    ck_assert_int_eq(rm[i].new_block, ba[i]);
    ck_assert_int_eq(bb[i], ba[i]);
    const pkv_event *ev = &log.ev[ev0 + i];
    ck_assert_int_eq(ev->type, PKV_EVENT_REMAPPED);
    ck_assert_uint_eq(ev->seq, b);
    ck_assert_uint_eq(ev->index, i);
    ck_assert_int_eq(ev->old_block, bb0[i]);
    ck_assert_int_eq(ev->block, ba[i]);
  }
  /* The old blocks are still in use (the device may read them). */
  pkv_capacity k = cap_of(c);
  ck_assert_uint_eq(k.deferred, 2);
  ck_assert_uint_eq(k.in_use, 6);
  TU_CHECK(c);
  /* Releasing a block without a deferred reference: nothing released. */
  int32_t bad[3] = {bb0[0], bb0[1], bb0[2]};
  before = snap_of(c);
  ck_assert_int_eq(pkv_blocks_release(c, bad, 3), PKV_ENOENT);
  int32_t twice[2] = {bb0[0], bb0[0]};
  ck_assert_int_eq(pkv_blocks_release(c, twice, 2), PKV_ENOENT);
  int32_t range[1] = {64};
  ck_assert_int_eq(pkv_blocks_release(c, range, 1), PKV_ENOENT);
  ck_assert_int_eq(pkv_blocks_release(c, NULL, 1), PKV_EINVAL);
  assert_same(c, &before);
  ck_assert_int_eq(pkv_blocks_release(c, bad, 2), 0);
  k = cap_of(c);
  ck_assert_uint_eq(k.deferred, 0);
  ck_assert_uint_eq(k.in_use, 4);
  ck_assert_uint_eq(k.free, 60);
  TU_DONE(c);

  /* Cache-wide dedup through plain pkv_seq_commit: reported by event. */
  log.n = 0;
  cfg.flags = PKV_CACHE_COMMIT_DEDUP;
  c = tu_cache(&cfg);
  a = computed(c, NULL, prompt, 8);
  b = tu_seq_new(c, prompt, 8);
  ck_assert_int_eq(pkv_seq_commit(c, b, 8), 0);
  uint32_t remapped = 0;
  int32_t old[2];
  for (uint32_t i = 0; i < log.n; i++)
    if (log.ev[i].type == PKV_EVENT_REMAPPED) old[remapped++] = log.ev[i].old_block;
  ck_assert_uint_eq(remapped, 2);
  ck_assert_uint_eq(tu_stats(c).blocks_deferred, 2);
  /* NO_DEDUP overrides the cache flag per call */
  pkv_seq_id d2 = tu_seq_new(c, prompt, 8);
  ck_assert_int_eq(pkv_seq_commit_ex(c, d2, 8, PKV_COMMIT_NO_DEDUP, NULL, 0, NULL), 0);
  ck_assert_uint_eq(tu_stats(c).remaps, 2);
  /* Freeing the sequence does not drop a deferred reference. */
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_deferred, 2);
  ck_assert_int_eq(pkv_blocks_release(c, old, 2), 0);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ lookahead, deltas */

START_TEST(lookahead_slots) {
  pkv_cache *c = open_cache(8, 0, 0);
  fill_prompt(6);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  int64_t slots[16];
  int32_t fresh[4];
  pkv_delta d;
  /* 5 known tokens + 3 draft slots = 8 slots, 2 blocks */
  pkv_append req = {.tokens = prompt, .n_tokens = 5, .n_lookahead = 3,
                    .slots = slots, .new_blocks = fresh, .new_cap = 4};
  ck_assert_int_eq(pkv_seq_append_ex(c, s, &req, &d), 0);
  ck_assert_uint_eq(d.n_known, 5);
  ck_assert_uint_eq(d.n_tokens, 8);
  ck_assert_uint_eq(d.n_new, 2);
  int64_t draft_slots[3] = {slots[5], slots[6], slots[7]};
  int64_t map[8];
  ck_assert_int_eq(pkv_slot_mapping(c, s, 0, 8, map), 0);
  for (int i = 0; i < 8; i++) ck_assert_int_eq(map[i], slots[i]);
  /* never committed past the known ids */
  snap before = snap_of(c);
  ck_assert_int_eq(pkv_seq_commit(c, s, 6), PKV_ERANGE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "lookahead"));
  /* no fork while ids are unknown */
  pkv_seq_id f;
  ck_assert_int_eq(pkv_seq_fork(c, s, &f), PKV_ESTATE);
  assert_same(c, &before);
  /* two drafts accepted: append fills the reserved slots, no allocation */
  ck_assert_int_eq(pkv_seq_append_ex(c, s, &(pkv_append){.tokens = prompt + 5,
                   .n_tokens = 2, .slots = slots}, &d), 0);
  ck_assert_int_eq(slots[0], draft_slots[0]);
  ck_assert_int_eq(slots[1], draft_slots[1]);
  ck_assert_uint_eq(d.n_new, 0);
  ck_assert_uint_eq(d.n_known, 7);
  ck_assert_uint_eq(d.n_tokens, 8);
  /* the third rejected: dropped */
  ck_assert_int_eq(pkv_seq_truncate(c, s, 7), 0);
  ck_assert_int_eq(pkv_seq_commit(c, s, 7), 0);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_cached, 1); /* the full known block only */
  /* lookahead beyond the pool: refused, nothing changed */
  before = snap_of(c);
  ck_assert_int_eq(pkv_seq_append_ex(c, s, &(pkv_append){.n_lookahead = 40}, NULL),
                   PKV_ENOMEM);
  assert_same(c, &before);
  /* a lookahead already covered allocates nothing */
  ck_assert_int_eq(pkv_seq_append_ex(c, s, &(pkv_append){.n_lookahead = 1}, &d), 0);
  ck_assert_uint_eq(d.n_tokens, 8);
  ck_assert_uint_eq(d.n_new, 0);
  ck_assert_int_eq(pkv_seq_append_ex(c, s, &(pkv_append){.n_lookahead = 1}, &d), 0);
  ck_assert_uint_eq(d.n_tokens, 8);
  /* plain append fills the lookahead slot, then extends */
  ck_assert_int_eq(pkv_seq_append(c, s, prompt + 7, 3, slots), 0);
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(c, s, &info), 0);
  ck_assert_uint_eq(info.n_known, 10);
  ck_assert_uint_eq(info.n_tokens, 10);
  ck_assert_int_eq(pkv_slot_mapping(c, s, 7, 10, map), 0);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(map[i], slots[i]);
  TU_DONE(c);
}
END_TEST

START_TEST(deltas_report_new_and_copied) {
  pkv_cache *c = open_cache(16, 0, 0);
  fill_prompt(7);
  pkv_seq_id p;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &p), 0);
  int32_t fresh[8], tbl[64];
  pkv_delta d;
  pkv_append req = {.tokens = prompt, .n_tokens = 6, .new_blocks = fresh, .new_cap = 8};
  ck_assert_int_eq(pkv_seq_append_ex(c, p, &req, &d), 0);
  ck_assert_uint_eq(blocks_of(c, p, tbl), 2);
  ck_assert_uint_eq(d.first_new, 0);
  ck_assert_uint_eq(d.n_new, 2);
  ck_assert_int_eq(fresh[0], tbl[0]);
  ck_assert_int_eq(fresh[1], tbl[1]);
  /* Shared partial tail: the append copies it and says so. */
  pkv_seq_id ch;
  ck_assert_int_eq(pkv_seq_fork(c, p, &ch), 0);
  req = (pkv_append){.tokens = prompt + 6, .n_tokens = 3, .new_blocks = fresh, .new_cap = 8};
  ck_assert_int_eq(pkv_seq_append_ex(c, ch, &req, &d), 0);
  int32_t ct[64];
  ck_assert_uint_eq(blocks_of(c, ch, ct), 3);
  ck_assert_int_eq(d.cow_index, 1);
  ck_assert_int_eq(d.cow_old, tbl[1]);
  ck_assert_int_eq(d.cow_new, ct[1]);
  ck_assert_int_ne(ct[1], tbl[1]);
  ck_assert_uint_eq(d.first_new, 2);
  ck_assert_uint_eq(d.n_new, 1);
  ck_assert_int_eq(fresh[0], ct[2]);
  ck_assert_int_eq(ct[0], tbl[0]); /* the rest of the table never moved */
  /* new_cap too small: refused before anything changes */
  snap before = snap_of(c);
  req = (pkv_append){.tokens = prompt, .n_tokens = 12, .new_blocks = fresh, .new_cap = 2};
  ck_assert_int_eq(pkv_seq_append_ex(c, ch, &req, &d), PKV_ENOSPC);
  req.new_blocks = NULL;
  ck_assert_int_eq(pkv_seq_append_ex(c, ch, &req, &d), PKV_EINVAL);
  assert_same(c, &before);
  /* nothing asked: a no-op */
  ck_assert_int_eq(pkv_seq_append_ex(c, ch, &(pkv_append){0}, &d), 0);
  ck_assert_uint_eq(d.n_new, 0);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ batch */

START_TEST(batch_decode_step) {
  enum { N = 256 };
  pkv_cache *c = open_cache(N * 3 + 4, 0, 0);
  fill_prompt(8);
  pkv_seq_id s[N];
  for (int i = 0; i < N; i++) {
    s[i] = tu_seq_new(c, prompt, 2 + (uint32_t)i % 3);
  }
  int32_t tok[N];
  int64_t slots[N];
  pkv_step_result r[N];
  for (uint32_t step = 0; step < 6; step++) {
    for (int i = 0; i < N; i++) tok[i] = 500 + (int32_t)step;
    ck_assert_int_eq(pkv_batch_append(c, s, tok, N, slots, r), 0);
    for (int i = 0; i < N; i++) {
      pkv_seq_info info;
      ck_assert_int_eq(pkv_seq_info_get(c, s[i], &info), 0);
      int64_t want;
      ck_assert_int_eq(pkv_slot_mapping(c, s[i], info.n_tokens - 1, info.n_tokens, &want), 0);
      ck_assert_int_eq(slots[i], want);
      ck_assert_int_eq(r[i].rc, 0);
      int32_t tbl[64];
      blocks_of(c, s[i], tbl);
      ck_assert_uint_eq(r[i].index, (info.n_tokens - 1) / BS);
      ck_assert_int_eq(r[i].block, tbl[r[i].index]);
      ck_assert_uint_eq(r[i].change, (info.n_tokens - 1) % BS == 0 ? PKV_STEP_APPENDED
                                                                   : PKV_STEP_NONE);
    }
  }
  ck_assert_uint_eq(tu_stats(c).batch_calls, 6);
  TU_CHECK(c);
  /* A shared tail is copied: reported per sequence. */
  pkv_seq_id f;
  ck_assert_int_eq(pkv_seq_fork(c, s[1], &f), 0); /* s[1]: 9 tokens, tail shared */
  int32_t ft[64];
  blocks_of(c, f, ft);
  pkv_seq_id two[2] = {f, 999};
  int32_t t2[2] = {1, 2};
  int64_t sl2[2];
  pkv_step_result r2[2];
  ck_assert_int_eq(pkv_batch_append(c, two, t2, 2, sl2, r2), PKV_ENOSEQ);
  ck_assert_int_eq(r2[0].rc, 0);
  ck_assert_uint_eq(r2[0].change, PKV_STEP_COPIED);
  ck_assert_int_eq(r2[0].replaced, ft[2]);
  ck_assert_int_ne(r2[0].block, ft[2]);
  ck_assert_int_eq(r2[1].rc, PKV_ENOSEQ);
  ck_assert_int_eq(sl2[1], -1);
  TU_CHECK(c);
  /* Pool runs out mid-batch: later sequences fail whole, earlier ones
   * succeed; each failed one is unchanged. */
  drain_copies(c); /* a queued copy out of s[1]'s tail would cost a block */
  int need = 0;
  for (int i = 0; i < N; i++) {
    pkv_seq_info info;
    ck_assert_int_eq(pkv_seq_info_get(c, s[i], &info), 0);
    need += info.n_tokens % BS == 0;
  }
  pkv_capacity k = cap_of(c);
  pkv_seq_id filler;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &filler), 0);
  ck_assert_int_eq(pkv_seq_append(c, filler, prompt,
                                  (k.free + k.evictable - (uint32_t)need / 2) * BS, NULL), 0);
  k = cap_of(c);
  uint32_t avail = k.free + k.evictable;
  ck_assert_int_gt(need, (int)avail);
  ck_assert_int_eq(pkv_batch_append(c, s, tok, N, slots, r), PKV_ENOMEM);
  int ok = 0, failed = 0;
  for (int i = 0; i < N; i++) {
    if (r[i].rc == 0) ok++;
    else {
      failed++;
      ck_assert_int_eq(r[i].rc, PKV_ENOMEM);
      ck_assert_int_eq(slots[i], -1);
    }
  }
  ck_assert_int_eq(failed, need - (int)avail);
  ck_assert_int_eq(ok + failed, N);
  TU_CHECK(c);
  /* lookahead slots by batch (tokens NULL) */
  pkv_seq_id one[1] = {s[0]};
  pkv_seq_info i0, i1;
  ck_assert_int_eq(pkv_seq_info_get(c, s[0], &i0), 0);
  ck_assert_int_eq(pkv_batch_free(c, s + 128, 128, NULL), 0);
  ck_assert_int_eq(pkv_batch_append(c, one, NULL, 1, slots, r), 0);
  ck_assert_int_eq(pkv_batch_append(c, one, NULL, 1, slots, r), 0);
  ck_assert_int_eq(pkv_seq_info_get(c, s[0], &i1), 0);
  ck_assert_uint_eq(i1.n_tokens, i0.n_tokens + 2);
  ck_assert_uint_eq(i1.n_known, i0.n_known);
  /* batch free: unknown and repeated ids are reported, the rest freed */
  pkv_seq_id fr[4] = {s[0], s[2], s[2], 0};
  int32_t res[4];
  ck_assert_int_eq(pkv_batch_free(c, fr, 4, res), PKV_ENOSEQ);
  ck_assert_int_eq(res[0], 0);
  ck_assert_int_eq(res[1], 0);
  ck_assert_int_eq(res[2], PKV_ENOSEQ);
  ck_assert_int_eq(res[3], PKV_ENOSEQ);
  ck_assert_int_eq(pkv_batch_free(c, NULL, 1, res), PKV_EINVAL);
  /* batch commit: each as pkv_seq_commit; a bad one is reported and left
   * unchanged, the others are committed */
  {
    pkv_seq_id cs[3] = {s[1], s[3], s[2]};
    pkv_seq_info a1, a3;
    ck_assert_int_eq(pkv_seq_info_get(c, s[1], &a1), 0);
    ck_assert_int_eq(pkv_seq_info_get(c, s[3], &a3), 0);
    uint32_t nt[3] = {a1.n_known, a3.n_known + 1, 1};
    uint64_t commits0 = tu_stats(c).commits;
    ck_assert_int_eq(pkv_batch_commit(c, cs, nt, 3, res), PKV_ERANGE);
    ck_assert_int_eq(res[0], 0);
    ck_assert_int_eq(res[1], PKV_ERANGE);
    ck_assert_int_eq(res[2], PKV_ENOSEQ);
    ck_assert_int_eq(pkv_seq_info_get(c, s[1], &i1), 0);
    ck_assert_uint_eq(i1.n_committed, a1.n_known);
    ck_assert_uint_eq(i1.n_cached_blocks, a1.n_known / BS);
    ck_assert_int_eq(pkv_seq_info_get(c, s[3], &i1), 0);
    ck_assert_uint_eq(i1.n_committed, a3.n_committed);
    ck_assert_uint_eq(tu_stats(c).commits, commits0 + 1);
    ck_assert_int_eq(pkv_batch_commit(c, NULL, nt, 1, res), PKV_EINVAL);
    ck_assert_int_eq(pkv_batch_commit(c, cs, NULL, 1, res), PKV_EINVAL);
    ck_assert_int_eq(pkv_batch_commit(NULL, cs, nt, 1, res), PKV_EINVAL);
    ck_assert_int_eq(pkv_batch_commit(c, NULL, NULL, 0, NULL), 0);
  }
  ck_assert_int_eq(pkv_batch_append(c, NULL, tok, 1, slots, r), PKV_EINVAL);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ events */

START_TEST(pulled_events_match_pushed) {
  tu_events log = {0};
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 8, BS);
  cfg.on_event = tu_event_log;
  cfg.event_user = &log;
  cfg.event_queue_cap = 64;
  pkv_cache *c = tu_cache(&cfg);
  pkv_event out[64];
  uint32_t n, pending;
  for (uint32_t r = 0; r < 6; r++) {
    fill_prompt(10 + r);
    pkv_seq_id s = computed(c, NULL, prompt, 12); /* evicts earlier rounds */
    ck_assert_int_eq(pkv_seq_free(c, s), 0);
  }
  ck_assert_int_eq(pkv_prefix_reset(c), 0);
  ck_assert_int_eq(pkv_events_drain(c, out, 64, &n, &pending), 0);
  ck_assert_uint_eq(pending, 0);
  ck_assert_uint_eq(n, log.n);
  for (uint32_t i = 0; i < n; i++) {
    ck_assert_uint_eq(out[i].seqno, i + 1);
    ck_assert_int_eq(out[i].type, log.ev[i].type);
    ck_assert_int_eq(out[i].block, log.ev[i].block);
    ck_assert(out[i].key.lo == log.ev[i].key.lo && out[i].key.hi == log.ev[i].key.hi);
    ck_assert_ptr_null(out[i].ns);
  }
  ck_assert_int_eq(out[n - 1].type, PKV_EVENT_CLEARED);
  ck_assert_int_eq(out[0].type, PKV_EVENT_STORED);
  ck_assert_uint_eq(out[0].index, 0);
  ck_assert_uint_eq(out[1].index, 1);
  /* partial drains keep order */
  fill_prompt(30);
  pkv_seq_id s = computed(c, NULL, prompt, 12);
  ck_assert_int_eq(pkv_events_drain(c, out, 2, &n, &pending), 0);
  ck_assert_uint_eq(n, 2);
  ck_assert_uint_eq(pending, 1);
  ck_assert_uint_eq(out[1].seqno, log.n - 1);
  ck_assert_int_eq(pkv_events_drain(c, out, 2, &n, &pending), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_uint_eq(out[0].seqno, log.n);
  ck_assert_uint_eq(out[0].seq, s);
  ck_assert_int_eq(pkv_events_drain(c, NULL, 1, &n, NULL), PKV_EINVAL);
  TU_DONE(c);
  /* no queue configured */
  c = open_cache(8, 0, 0);
  ck_assert_int_eq(pkv_events_drain(c, out, 4, &n, NULL), PKV_ENOTSUP);
  pkv_cache_destroy(c);
}
END_TEST

START_TEST(event_queue_overflow_is_marked) {
  pkv_cache *c = open_cache(64, 0, 4);
  fill_prompt(40);
  pkv_seq_id s = computed(c, NULL, prompt, 40); /* 10 STORED, 4 fit */
  pkv_event out[8];
  uint32_t n, pending;
  ck_assert_uint_eq(tu_stats(c).events_lost, 6);
  ck_assert_uint_eq(tu_stats(c).events_queued, 4);
  ck_assert_int_eq(pkv_events_drain(c, out, 3, &n, &pending), 0);
  ck_assert_uint_eq(n, 3);
  ck_assert_uint_eq(pending, 2); /* one event + the LOST marker */
  /* still dropping until the queue is empty */
  ck_assert_int_eq(pkv_seq_free(c, s), 0);
  ck_assert_int_eq(pkv_prefix_reset(c), 0); /* 1 CLEARED, dropped */
  ck_assert_int_eq(pkv_events_drain(c, out, 8, &n, &pending), 0);
  ck_assert_uint_eq(n, 2);
  ck_assert_uint_eq(pending, 0);
  ck_assert_uint_eq(out[0].seqno, 4);
  ck_assert_int_eq(out[1].type, PKV_EVENT_LOST);
  ck_assert_uint_eq(out[1].seqno, 5);
  ck_assert_uint_eq(out[1].n_lost, 7); /* seqnos 5..11 */
  /* queue empty again: events flow */
  s = computed(c, NULL, prompt, 4);
  ck_assert_int_eq(pkv_events_drain(c, out, 8, &n, &pending), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_uint_eq(out[0].seqno, 12);
  TU_DONE(c);
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 8, BS);
  cfg.event_queue_cap = 0xffffffffu;
  pkv_cache *bad = NULL;
  ck_assert_int_eq(pkv_cache_create(&cfg, &bad), PKV_EINVAL);
  ck_assert_ptr_null(bad);
}
END_TEST

typedef struct reentry {
  pkv_cache *self, *other;
  int rc_self, rc_other, rc_drain;
  int calls;
} reentry;

static void reenter(const pkv_event *ev, void *user) {
  reentry *r = user;
  (void)ev;
  r->calls++;
  pkv_capacity k;
  r->rc_self = pkv_cache_capacity(r->self, &k);
  uint32_t n;
  pkv_event out[1];
  r->rc_drain = pkv_events_drain(r->self, out, 1, &n, NULL);
  pkv_seq_id s;
  r->rc_other = pkv_seq_create(r->other, NULL, &s);
}

START_TEST(callback_reentry_is_refused) {
  reentry r = {0};
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 8, BS);
  cfg.on_event = reenter;
  cfg.event_user = &r;
  cfg.event_queue_cap = 8;
  r.self = tu_cache(&cfg);
  r.other = open_cache(8, 0, 0);
  fill_prompt(50);
  pkv_seq_id s = computed(r.self, NULL, prompt, 4);
  ck_assert_int_eq(r.calls, 1);
  ck_assert_int_eq(r.rc_self, PKV_EBUSY);
  ck_assert_int_eq(r.rc_drain, PKV_EBUSY);
  ck_assert_int_eq(r.rc_other, 0); /* another cache is fine */
  /* after the callback the cache works from the same thread */
  ck_assert_int_eq(pkv_seq_free(r.self, s), 0);
  ck_assert_str_eq(pkv_err_name(PKV_EBUSY), "PKV_EBUSY");
  TU_DONE(r.self);
  pkv_cache_destroy(r.other);
}
END_TEST

/* A FIFO policy whose eviction hooks call back into their cache (which a
 * hook can only reach through a global: hooks get the policy's state). */
static struct {
  pkv_cache *cache;
  pkv_seq_id seq;
  int32_t q[16];
  uint32_t n;
  int victims, removes, rc_stats, rc_free, rc_remove_free;
} g_re;

static int re_create(void **st, uint32_t nb, const char *args) {
  (void)nb, (void)args;
  *st = &g_re;
  return 0;
}
static void re_destroy(void *st) { (void)st; }
static void re_none(void *st, int32_t b, const pkv_block_meta *m) { (void)st, (void)b, (void)m; }
static void re_drop(int32_t b) {
  for (uint32_t i = 0; i < g_re.n; i++)
    if (g_re.q[i] == b) {
      memmove(g_re.q + i, g_re.q + i + 1, (g_re.n - i - 1) * sizeof *g_re.q);
      g_re.n--;
      return;
    }
}
static void re_evictable(void *st, int32_t b, const pkv_block_meta *m) {
  (void)st, (void)m;
  g_re.q[g_re.n++] = b;
}
static void re_pinned(void *st, int32_t b, const pkv_block_meta *m) { (void)st, (void)m; re_drop(b); }
static int32_t re_victim(void *st, uint64_t now) {
  (void)st, (void)now;
  g_re.victims++;
  pkv_stats x;
  g_re.rc_stats = pkv_stats_get(g_re.cache, &x);
  g_re.rc_free = pkv_seq_free(g_re.cache, g_re.seq);
  return g_re.n ? g_re.q[0] : -1;
}
static void re_remove(void *st, int32_t b) {
  (void)st;
  g_re.removes++;
  g_re.rc_remove_free = pkv_seq_free(g_re.cache, g_re.seq);
  re_drop(b);
}

START_TEST(policy_hook_reentry_is_refused) {
  static const pkv_policy_ops ops = {PKV_POLICY_VERSION, "reenter", re_create, re_destroy,
                                     re_none, re_none, re_evictable, re_pinned,
                                     re_victim, re_remove, NULL, NULL};
  memset(&g_re, 0, sizeof g_re);
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 8, BS);
  cfg.policy_ops = &ops;
  g_re.cache = tu_cache(&cfg);
  pkv_cache *c = g_re.cache;
  fill_prompt(60);
  pkv_seq_id a = computed(c, NULL, prompt, 4 * BS);  /* 4 cached blocks */
  ck_assert_int_eq(pkv_seq_free(c, a), 0);            /* ... evictable */
  g_re.seq = computed(c, NULL, prompt + 100, 2);      /* the hooks' target */
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  /* 3 free blocks: a 4-block append evicts one; the hooks run inside it. */
  ck_assert_int_eq(pkv_seq_append(c, s, prompt + 200, 4 * BS, NULL), 0);
  ck_assert_int_ge(g_re.victims, 1);
  ck_assert_int_ge(g_re.removes, 1);
  ck_assert_int_eq(g_re.rc_stats, PKV_EBUSY);
  ck_assert_int_eq(g_re.rc_free, PKV_EBUSY);
  ck_assert_int_eq(g_re.rc_remove_free, PKV_EBUSY);
  /* Nothing the refused calls asked for happened; the cache works after. */
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(c, g_re.seq, &info), 0);
  ck_assert_uint_eq(info.n_tokens, 2);
  ck_assert_uint_eq(tu_stats(c).evictions, 1);
  /* pkv_evict runs the same hooks from another entry point. */
  g_re.rc_free = 0;
  ck_assert_int_eq(pkv_evict(c, 1), 0);
  ck_assert_int_eq(g_re.rc_free, PKV_EBUSY);
  ck_assert_int_eq(pkv_seq_free(c, g_re.seq), 0);
  ck_assert_int_eq(pkv_stats_get(c, &(pkv_stats){0}), 0);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ capacity */

START_TEST(capacity_evict_common_prefix) {
  pkv_cache *c = open_cache(32, 0, 0);
  fill_prompt(60);
  pkv_capacity k = cap_of(c);
  ck_assert_uint_eq(k.free, 32);
  ck_assert(k.usage == 0.0);
  pkv_seq_id a = computed(c, NULL, prompt, 16);
  pkv_seq_id b, d;
  ck_assert_int_eq(pkv_seq_fork(c, a, &b), 0);
  ck_assert_int_eq(pkv_seq_fork(c, a, &d), 0);
  ck_assert_int_eq(pkv_seq_append(c, b, prompt + 100, 5, NULL), 0);
  ck_assert_int_eq(pkv_seq_truncate(c, d, 9), 0);
  ck_assert_int_eq(pkv_seq_append(c, d, prompt + 200, 5, NULL), 0);
  pkv_seq_id set[3] = {a, b, d};
  uint32_t common = 99;
  ck_assert_int_eq(pkv_common_prefix_blocks(c, set, 3, &common), 0);
  ck_assert_uint_eq(common, 2); /* d rewrote its third block */
  ck_assert_int_eq(pkv_common_prefix_blocks(c, set, 2, &common), 0);
  ck_assert_uint_eq(common, 4);
  ck_assert_int_eq(pkv_common_prefix_blocks(c, set, 1, &common), 0);
  ck_assert_uint_eq(common, 4);
  ck_assert_int_eq(pkv_common_prefix_blocks(c, set, 0, &common), 0);
  ck_assert_uint_eq(common, 0);
  pkv_seq_id bad[2] = {a, 4242};
  common = 77;
  ck_assert_int_eq(pkv_common_prefix_blocks(c, bad, 2, &common), PKV_ENOSEQ);
  ck_assert_uint_eq(common, 77);
  /* capacity agrees with the stats, and with usage */
  k = cap_of(c);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(k.free, st.blocks_free);
  ck_assert_uint_eq(k.evictable, st.blocks_evictable);
  ck_assert_uint_eq(k.in_use, st.blocks_used);
  ck_assert_uint_eq(k.cached, st.blocks_cached);
  ck_assert(k.usage > 0.0 && k.usage == (double)k.in_use / 32);
  ck_assert_uint_eq(st.tokens, 16 + 21 + 14);
  ck_assert_uint_eq(st.waste_slots, (4 + 6 + 4) * BS - st.tokens);
  /* evict(n) */
  ck_assert_int_eq(pkv_batch_free(c, set, 3, NULL), 0);
  drain_copies(c);
  k = cap_of(c);
  ck_assert_uint_eq(k.in_use, 0);
  ck_assert(k.usage == 0.0);
  ck_assert_uint_eq(k.evictable, 4);
  snap before = snap_of(c);
  ck_assert_int_eq(pkv_evict(c, 5), PKV_ERANGE);
  assert_same(c, &before);
  ck_assert_int_eq(pkv_evict(c, 3), 0);
  k = cap_of(c);
  ck_assert_uint_eq(k.evictable, 1);
  ck_assert_uint_eq(k.free, 31);
  ck_assert_uint_eq(tu_stats(c).evictions, 3);
  ck_assert_int_eq(pkv_evict(c, 0), 0);
  ck_assert_int_eq(pkv_evict(NULL, 1), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_capacity(c, NULL), PKV_EINVAL);
  TU_DONE(c);
}
END_TEST

TU_MAIN("server",
    {"probe", 0, {{probe_changes_nothing}, {attach_probed_hit}}},
    {"stable_tables", 0, {{tables_stable_by_default}, {dedup_remaps_and_defers}}},
    {"lookahead_deltas", 0, {{lookahead_slots}, {deltas_report_new_and_copied}}},
    {"batch", 0, {{batch_decode_step}}},
    {"events", 0, {{pulled_events_match_pushed}, {event_queue_overflow_is_marked},
                  {callback_reentry_is_refused}, {policy_hook_reentry_is_refused}}},
    {"capacity", 0, {{capacity_evict_common_prefix}}})
