/*
 * check_oom_sites.c — out of memory, site by site and block by block
 * (check_oom.c runs one whole scenario per failing allocation; this file
 * sweeps each call separately, for every policy and both storage modes).
 *
 * 1. Host allocations (libuv test-loop-oom style).  For every operation of
 *    the public API that may allocate, the sweep fails allocation k (and
 *    every later one) for k = 1, 2, ... until the call succeeds without
 *    reaching k.  Each failing call must return PKV_ENOMEM, leave pkv_check
 *    valid and the stats byte-for-byte unchanged; the count of live
 *    allocations may grow by at most one kept table capacity, and reaches
 *    zero when the cache is destroyed (nothing leaked; ASan and valgrind
 *    check the same).  The cache must then still do the same call once
 *    memory is back.  Because the sweep keeps the same cache across k, a call that
 *    half-changed its state is caught by the next iteration too.
 *
 * 2. The pool running out of blocks in the middle of a multi-block append,
 *    a copy-on-write after a fork, and an append after a prefix match: all
 *    or nothing — the sequence, its data, the pool, the copy queue and the
 *    cached (evictable) blocks are untouched, nothing was evicted.
 */
#include "tu_core.h"
#include "pagedkv/engine.h"

#include <stdio.h>
#include <stdlib.h>

/* Everything a failed call must leave as it was. */
typedef struct snap {
  pkv_stats st;
  long live;
} snap;

static snap take(pkv_cache *c) {
  snap s;
  s.st = tu_stats(c);
  s.live = tu_alloc_live();
  return s;
}

static void same(pkv_cache *c, const snap *a, const char *what, long k) {
  TU_CHECK(c);
  snap b = take(c);
  ck_assert_msg(memcmp(&a->st, &b.st, sizeof a->st) == 0,
                "%s: failing allocation %ld changed the stats", what, k);
  /* A failed call may keep a table it grew before the failing allocation
   * (capacity, freed with the cache); it may not free what it owned.  Real
   * leaks show at teardown, where every allocation must be gone. */
  ck_assert_msg(b.live >= a->live && b.live <= a->live + 1,
                "%s: failing allocation %ld: live allocations %ld -> %ld",
                what, k, a->live, b.live);
}

/* One operation under test: returns its code; undo (may be NULL) reverts a
 * success so the sweep can be rerun from the same state. */
typedef int (*op_fn)(pkv_cache *c, void *arg);

/* The sweep.  Returns how many allocation sites the call went through. */
static long sweep(pkv_cache *c, const char *what, op_fn op, void *arg) {
  for (long k = 1; k < 10000; k++) {
    snap before = take(c);
    tu_alloc_install(k);
    int rc = op(c, arg);
    long attempts = tu_alloc_count();
    char detail[256];
    snprintf(detail, sizeof detail, "%s", pkv_last_error());
    tu_alloc_install(0); /* (clears the thread's error detail) */
    if (rc == 0) {
      ck_assert_msg(attempts < k,
                    "%s: succeeded although allocation %ld failed", what, k);
      TU_CHECK(c);
      return k - 1;
    }
    ck_assert_msg(rc == PKV_ENOMEM, "%s: failing allocation %ld gave %s (%s)",
                  what, k, pkv_err_name(rc), detail);
    ck_assert_msg(detail[0] != '\0', "%s: ENOMEM without detail", what);
    same(c, &before, what, k);
  }
  ck_abort_msg("%s: never succeeded", what);
  return 0;
}

/* ------------------------------------------------ cache creation */

static const char *const policies[] = {"lru",      "fifo",  "lfu",     "s3fifo",
                                       "priority", "fwlru", "adaptive"};
#define N_POLICIES (int)(sizeof policies / sizeof policies[0])

START_TEST(create_every_site) {
  /* _i: policy × storage × pool sizing */
  pkv_config cfg;
  tu_config(&cfg, (_i & 1) ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED, 24, 4);
  cfg.policy = policies[(_i / 2) % N_POLICIES];
  if (_i >= 10) {
    cfg.memory_bytes = 24 * pkv_config_block_bytes(&cfg);
    cfg.num_blocks = 0;
  }
  long sites = 0;
  for (long k = 1; k < 1000; k++) {
    tu_alloc_install(k);
    long live0 = tu_alloc_live();
    pkv_cache *c = (pkv_cache *)0x1;
    int rc = pkv_cache_create(&cfg, &c);
    long attempts = tu_alloc_count();
    tu_alloc_install(0);
    if (rc == 0) {
      ck_assert_msg(attempts < k, "create succeeded past a failure");
      TU_DONE(c);
      ck_assert_int_eq(tu_alloc_live(), live0);
      sites = k - 1;
      break;
    }
    ck_assert_msg(rc == PKV_ENOMEM, "create, failing allocation %ld: %s", k,
                  pkv_err_name(rc));
    ck_assert_msg(c == NULL, "failed create left *out set");
    ck_assert_msg(tu_alloc_live() == live0, "create leaked at site %ld", k);
  }
  tu_alloc_restore();
  ck_assert_msg(sites >= 5, "create went through only %ld allocations", sites);
}
END_TEST

/* ------------------------------------------------ sequence operations */

typedef struct fixture {
  pkv_cache *c;
  pkv_seq_id a, b;  /* a: 3 committed blocks + partial tail; b: empty */
  int32_t toks[256];
  pkv_seq_id out;
  pkv_pin_id pin;
  uint32_t matched;
} fixture;

static uint64_t n_events;
static void count_event(const pkv_event *ev, void *user) {
  (void)ev;
  (void)user;
  n_events++;
}

static void fx_setup(fixture *f, pkv_storage storage, const char *policy) {
  tu_alloc_install(0); /* count every allocation of the cache from birth */
  pkv_config cfg;
  tu_config(&cfg, storage, 64, 4);
  cfg.policy = policy;
  cfg.on_event = count_event;
  f->c = tu_cache(&cfg);
  for (int i = 0; i < 256; i++) f->toks[i] = 1000 + i;
  ck_assert_int_eq(pkv_seq_create(f->c, NULL, &f->a), 0);
  ck_assert_int_eq(pkv_seq_create(f->c, NULL, &f->b), 0);
  ck_assert_int_eq(pkv_seq_append(f->c, f->a, f->toks, 14, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(f->c, f->a, 14), 0);
  TU_CHECK(f->c);
}

static void fx_teardown(fixture *f) {
  pkv_cache_destroy(f->c);
  ck_assert_msg(tu_alloc_live() == 0, "%ld allocations outlive the cache",
                tu_alloc_live());
  tu_alloc_restore();
}

static int op_seq_create_ns(pkv_cache *c, void *arg) {
  fixture *f = arg;
  pkv_seq_opts o = {"a-new-tenant", 12, 3, 50};
  return pkv_seq_create(c, &o, &f->out);
}
static int op_seq_create_many(pkv_cache *c, void *arg) {
  /* The 17th handle grows the handle table. */
  fixture *f = arg;
  return pkv_seq_create(c, NULL, &f->out);
}
static int op_append_blocks(pkv_cache *c, void *arg) {
  /* 40 tokens: new blocks and a page table that must grow. */
  fixture *f = arg;
  return pkv_seq_append(c, f->a, f->toks + 14, 40, NULL);
}
static int op_append_cow(pkv_cache *c, void *arg) {
  fixture *f = arg; /* f->out is a fork of a: its tail is shared */
  return pkv_seq_append(c, f->out, f->toks + 100, 3, NULL);
}
static int op_fork(pkv_cache *c, void *arg) {
  fixture *f = arg;
  return pkv_seq_fork(c, f->a, &f->out);
}
static int op_match(pkv_cache *c, void *arg) {
  fixture *f = arg;
  return pkv_seq_match_prefix(c, f->b, f->toks, 14, 0, &f->matched);
}
static int op_commit(pkv_cache *c, void *arg) {
  fixture *f = arg;
  return pkv_seq_commit(c, f->a, 54);
}
static int op_pin(pkv_cache *c, void *arg) {
  fixture *f = arg;
  return pkv_pin_create(c, f->a, 12, &f->pin);
}
static int op_priority(pkv_cache *c, void *arg) {
  fixture *f = arg;
  return pkv_seq_set_priority(c, f->a, 0, 8, 90, 0);
}

START_TEST(seq_ops_every_site) {
  fixture f;
  const pkv_storage storage = (_i & 1) ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED;
  fx_setup(&f, storage, policies[(_i / 2) % N_POLICIES]);
  long total = 0;

  total += sweep(f.c, "seq_create (new namespace)", op_seq_create_ns, &f);
  ck_assert_int_eq(pkv_seq_free(f.c, f.out), 0);
  pkv_seq_id extra[14];
  for (int i = 0; i < 14; i++)
    ck_assert_int_eq(pkv_seq_create(f.c, NULL, &extra[i]), 0);
  total += sweep(f.c, "seq_create (handle table grows)", op_seq_create_many, &f);
  ck_assert_int_eq(pkv_seq_free(f.c, f.out), 0);
  for (int i = 0; i < 14; i++) ck_assert_int_eq(pkv_seq_free(f.c, extra[i]), 0);

  total += sweep(f.c, "set_priority", op_priority, &f);
  total += sweep(f.c, "fork (with priority ranges)", op_fork, &f);
  total += sweep(f.c, "append with copy-on-write", op_append_cow, &f);
  ck_assert_int_eq(pkv_seq_free(f.c, f.out), 0);
  total += sweep(f.c, "append of 40 tokens", op_append_blocks, &f);
  total += sweep(f.c, "commit", op_commit, &f);
  total += sweep(f.c, "match_prefix", op_match, &f);
  ck_assert_int_eq(f.matched, 12);
  total += sweep(f.c, "pin_create", op_pin, &f);

  /* Calls that must not need memory at all: with every allocation failing
   * they still succeed. */
  tu_alloc_install(1);
  ck_assert_int_eq(pkv_pin_release(f.c, f.pin), 0);
  ck_assert_int_eq(pkv_seq_truncate(f.c, f.a, 5), 0);
  ck_assert_int_eq(pkv_seq_free(f.c, f.b), 0);
  ck_assert_int_eq(pkv_prefix_reset(f.c), 0);
  uint32_t n_out = 0, pending = 0;
  pkv_copy q[8];
  ck_assert_int_eq(pkv_pool_drain_copies(f.c, q, 8, &n_out, &pending), 0);
  pkv_stats st;
  ck_assert_int_eq(pkv_stats_get(f.c, &st), 0);
  char msg[128];
  ck_assert_int_eq(pkv_check(f.c, msg, sizeof msg), 0);
  ck_assert_int_eq(tu_alloc_count(), 0);
  tu_alloc_install(0);
  ck_assert_msg(total >= 4, "only %ld allocation sites swept", total);
  ck_assert_msg(n_events > 0, "events never fired");
  fx_teardown(&f);
}
END_TEST

/* ------------------------------------------------ the pool runs dry */

/* A cache of 8 blocks of 4 slots, owned storage, with:
 *   seq p: 10 tokens (3 blocks), committed → 2 cached full blocks
 *   seq q: 5 tokens (2 blocks)
 *   1 evictable block (a freed sequence's committed block)
 * so 8 - 3 - 2 - 1 = 2 blocks are free and 3 are available. */
typedef struct dry {
  pkv_cache *c;
  pkv_seq_id p, q;
  int32_t toks[64];
} dry;

static void write_all(pkv_cache *c, pkv_seq_id s, uint32_t tag, uint32_t from,
                      uint32_t to) {
  int64_t slots[64];
  ck_assert_int_eq(pkv_slot_mapping(c, s, from, to, slots), 0);
  for (uint32_t i = from; i < to; i++) tu_write_slot(c, slots[i - from], tag, i);
}
static void verify_all(pkv_cache *c, pkv_seq_id s, uint32_t tag, uint32_t n) {
  int64_t slots[64];
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(c, s, &info), 0);
  ck_assert_uint_eq(info.n_tokens, n);
  ck_assert_int_eq(pkv_slot_mapping(c, s, 0, n, slots), 0);
  for (uint32_t i = 0; i < n; i++)
    ck_assert_msg(tu_slot_matches(c, slots[i], tag, i),
                  "token %u of the sequence lost its K/V", i);
}

static void dry_setup(dry *d, pkv_storage storage) {
  pkv_config cfg;
  tu_config(&cfg, storage, 8, 4);
  d->c = tu_cache(&cfg);
  for (int i = 0; i < 64; i++) d->toks[i] = 7 + i;
  pkv_seq_id gone;
  ck_assert_int_eq(pkv_seq_create(d->c, NULL, &gone), 0);
  int32_t other[4] = {900, 901, 902, 903};
  ck_assert_int_eq(pkv_seq_append(d->c, gone, other, 4, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(d->c, gone, 4), 0);
  ck_assert_int_eq(pkv_seq_free(d->c, gone), 0);
  ck_assert_int_eq(pkv_seq_create(d->c, NULL, &d->p), 0);
  ck_assert_int_eq(pkv_seq_append(d->c, d->p, d->toks, 10, NULL), 0);
  if (storage == PKV_STORAGE_OWNED) write_all(d->c, d->p, 1, 0, 10);
  ck_assert_int_eq(pkv_seq_commit(d->c, d->p, 10), 0);
  ck_assert_int_eq(pkv_seq_create(d->c, NULL, &d->q), 0);
  ck_assert_int_eq(pkv_seq_append(d->c, d->q, d->toks + 30, 5, NULL), 0);
  if (storage == PKV_STORAGE_OWNED) write_all(d->c, d->q, 2, 0, 5);
  pkv_stats st = tu_stats(d->c);
  ck_assert_uint_eq(st.blocks_free, 2);
  ck_assert_uint_eq(st.blocks_evictable, 1);
  TU_CHECK(d->c);
}

START_TEST(multi_block_append_all_or_nothing) {
  dry d;
  dry_setup(&d, PKV_STORAGE_OWNED);
  pkv_stats before = tu_stats(&*d.c);
  /* q has 3 free slots; 3 + 4*3 = 15 fits, 16 needs a 4th new block. */
  int64_t slots[16];
  for (int i = 0; i < 16; i++) slots[i] = -7;
  int rc = pkv_seq_append(d.c, d.q, d.toks + 40, 16, slots);
  ck_assert_int_eq(rc, PKV_ENOMEM);
  ck_assert_msg(strstr(pkv_last_error(), "available") != NULL, "detail: %s",
                pkv_last_error());
  pkv_stats after = tu_stats(d.c);
  TU_STATS_SAME(before, after); /* nothing evicted, nothing taken */
  for (int i = 0; i < 16; i++) ck_assert_int_eq(slots[i], -7);
  verify_all(d.c, d.q, 2, 5);
  verify_all(d.c, d.p, 1, 10);
  TU_CHECK(d.c);
  /* The largest append that fits takes the evictable block too. */
  ck_assert_int_eq(pkv_seq_append(d.c, d.q, d.toks + 40, 15, NULL), 0);
  after = tu_stats(d.c);
  ck_assert_uint_eq(after.blocks_free + after.blocks_evictable, 0);
  ck_assert_uint_eq(after.evictions, before.evictions + 1);
  verify_all(d.c, d.p, 1, 10);
  TU_DONE(d.c);
}
END_TEST

START_TEST(fork_cow_all_or_nothing) {
  dry d;
  dry_setup(&d, _i ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED);
  pkv_seq_id child;
  ck_assert_int_eq(pkv_seq_fork(d.c, d.p, &child), 0);
  /* Use up every available block but leave the shared tail in place. */
  pkv_seq_id hog = tu_seq_new(d.c, d.toks + 50, 12);
  pkv_stats before = tu_stats(d.c);
  ck_assert_uint_eq(before.blocks_free + before.blocks_evictable, 0);
  uint32_t pending0 = 0, n_out = 0;
  if (_i) {
    pkv_copy q[16];
    ck_assert_int_eq(pkv_pool_drain_copies(d.c, q, 0, &n_out, &pending0), 0);
  }
  /* Both sides share the partial tail: either append must copy first and
   * there is no block to copy into. */
  ck_assert_int_eq(pkv_seq_append(d.c, child, d.toks + 60, 1, NULL), PKV_ENOMEM);
  ck_assert_int_eq(pkv_seq_append(d.c, d.p, d.toks + 60, 1, NULL), PKV_ENOMEM);
  pkv_stats after = tu_stats(d.c);
  TU_STATS_SAME(before, after);
  if (_i) {
    uint32_t pending1 = 0;
    ck_assert_int_eq(pkv_pool_drain_copies(d.c, NULL, 0, &n_out, &pending1), 0);
    ck_assert_uint_eq(pending1, pending0);
  } else {
    verify_all(d.c, d.p, 1, 10);
    verify_all(d.c, child, 1, 10);
  }
  TU_CHECK(d.c);
  /* Memory back: the copy happens and the sides diverge. */
  ck_assert_int_eq(pkv_seq_free(d.c, hog), 0);
  ck_assert_int_eq(pkv_seq_append(d.c, child, d.toks + 60, 1, NULL), 0);
  after = tu_stats(d.c);
  ck_assert_uint_eq(after.cow_copies, before.cow_copies + 1);
  if (!_i) verify_all(d.c, d.p, 1, 10);
  TU_DONE(d.c);
}
END_TEST

START_TEST(match_then_append_all_or_nothing) {
  dry d;
  dry_setup(&d, PKV_STORAGE_OWNED);
  pkv_seq_id s;
  (void)tu_seq_new(d.c, d.toks + 50, 8); /* the hog */
  /* 3 blocks were available, the hog took 2 (the free ones): only the
   * evictable block is left. */
  ck_assert_int_eq(pkv_seq_create(d.c, NULL, &s), 0);
  uint32_t matched = 0;
  ck_assert_int_eq(pkv_seq_match_prefix(d.c, s, d.toks, 20, 19, &matched), 0);
  ck_assert_uint_eq(matched, 8); /* p's two committed full blocks */
  verify_all(d.c, s, 1, 8);
  pkv_stats before = tu_stats(d.c);
  ck_assert_uint_eq(before.blocks_free + before.blocks_evictable, 1);
  /* The rest of the prompt needs 3 blocks. */
  ck_assert_int_eq(pkv_seq_append(d.c, s, d.toks + 8, 12, NULL), PKV_ENOMEM);
  pkv_stats after = tu_stats(d.c);
  TU_STATS_SAME(before, after);
  verify_all(d.c, s, 1, 8);
  verify_all(d.c, d.p, 1, 10);
  /* The matched blocks stay referenced (not evictable) until s is freed. */
  ck_assert_int_eq(pkv_seq_free(d.c, d.p), 0);
  after = tu_stats(d.c);
  ck_assert_uint_eq(after.blocks_evictable, before.blocks_evictable);
  ck_assert_int_eq(pkv_seq_append(d.c, s, d.toks + 8, 4, NULL), 0);
  TU_DONE(d.c);
}
END_TEST

/* ------------------------------------------------ the engine */

typedef struct eng_fx {
  pkv_cache *c;
  pkv_engine *e;
  pkv_seq_id s[4];
  float q[4 * 4 * 16 * 8], k[4 * 2 * 16 * 8], v[4 * 2 * 16 * 8],
      out[4 * 4 * 16 * 8];
} eng_fx;

static int op_engine_create(pkv_cache *c, void *arg) {
  eng_fx *f = arg;
  pkv_engine_config ec;
  pkv_engine_config_init(&ec);
  ec.n_q_heads = 4; /* GQA: 2 query heads per KV head */
  ec.n_threads = 2; /* a worker pool to allocate */
  f->e = NULL;
  int rc = pkv_engine_create(c, &ec, &f->e);
  if (rc) ck_assert_msg(f->e == NULL, "failed engine_create left *out set");
  return rc;
}
static int op_decode_batch(pkv_cache *c, void *arg) {
  eng_fx *f = arg; /* the first batch of 4 grows the engine's batch state */
  (void)c;
  return pkv_decode(f->e, f->s, 4, 1, f->q, f->k, f->v, f->out);
}
static int op_prefill(pkv_cache *c, void *arg) {
  eng_fx *f = arg;
  (void)c;
  return pkv_prefill(f->e, f->s[0], 0, 0, 5, f->q, f->k, f->v, f->out);
}

START_TEST(engine_every_site) {
  eng_fx f;
  memset(&f, 0, sizeof f);
  for (size_t i = 0; i < sizeof f.q / sizeof f.q[0]; i++)
    f.q[i] = f.out[i] = (float)(i % 7) * 0.125f;
  for (size_t i = 0; i < sizeof f.k / sizeof f.k[0]; i++)
    f.k[i] = f.v[i] = (float)(i % 5) * 0.25f;
  tu_alloc_install(0);
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 32, 4);
  cfg.head_dim = 16;
  f.c = tu_cache(&cfg);
  int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(pkv_seq_create(f.c, NULL, &f.s[i]), 0);
    ck_assert_int_eq(pkv_seq_append(f.c, f.s[i], toks, (uint32_t)(5 + i), NULL), 0);
  }
  long sites = sweep(f.c, "engine_create", op_engine_create, &f);
  sites += sweep(f.c, "prefill", op_prefill, &f);
  sites += sweep(f.c, "decode (batch state grows)", op_decode_batch, &f);
  ck_assert_msg(sites >= 2, "engine: only %ld allocation sites", sites);
  pkv_engine_destroy(f.e);
  pkv_cache_destroy(f.c);
  ck_assert_msg(tu_alloc_live() == 0, "%ld allocations outlive the engine",
                tu_alloc_live());
  tu_alloc_restore();
}
END_TEST

TU_MAIN("oom_sites",
    /* _i / 2 walks the policies; _i >= 10 also sizes the pool by bytes */
    {"allocator", 120, {{create_every_site, 0, 2 * N_POLICIES},
                        {seq_ops_every_site, 0, 2 * N_POLICIES}, {engine_every_site}}},
    {"pool", 0, {{multi_block_append_all_or_nothing}, {fork_cow_all_or_nothing, 0, 2},
                 {match_then_append_all_or_nothing}}})
