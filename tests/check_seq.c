/*
 * check_seq.c — sequences: handles, every bad input (exact code, state and
 * stats unchanged, pkv_check passes), append, fork and copy-on-write in both
 * storage modes, truncate, commit, and the engine-facing views.
 */
#include "tu_core.h"

#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static const int32_t toks[64] = {
    11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
    43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58,
    59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74};

/* ------------------------------------------------ bad inputs */

typedef struct fixture {
  pkv_cache *c;
  pkv_seq_id a, b, freed, stale_lookalike;
} fixture;

static void fx_open(fixture *f) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  f->c = tu_cache(&cfg);
  ck_assert_int_eq(pkv_seq_create(f->c, NULL, &f->a), 0);
  ck_assert_int_eq(pkv_seq_append(f->c, f->a, toks, 6, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(f->c, f->a, 4), 0);
  ck_assert_int_eq(pkv_seq_fork(f->c, f->a, &f->b), 0);
  ck_assert_int_eq(pkv_seq_create(f->c, NULL, &f->freed), 0);
  ck_assert_int_eq(pkv_seq_free(f->c, f->freed), 0);
  /* The freed slot is reused with a new generation. */
  ck_assert_int_eq(pkv_seq_create(f->c, NULL, &f->stale_lookalike), 0);
  ck_assert_uint_ne(f->stale_lookalike, f->freed);
  ck_assert_uint_eq(f->stale_lookalike & 0xffffffffu, f->freed & 0xffffffffu);
}

typedef struct bad_call {
  const char *what;
  int (*call)(fixture *f);
  int code;
} bad_call;

static int32_t out_blocks[64];
static int64_t out_slots[64];

static int b_append_freed(fixture *f) { return pkv_seq_append(f->c, f->freed, toks, 1, NULL); }
static int b_append_unknown(fixture *f) { return pkv_seq_append(f->c, 0x5500000007ull, toks, 1, NULL); }
static int b_append_zero_handle(fixture *f) { return pkv_seq_append(f->c, PKV_SEQ_NONE, toks, 1, NULL); }
static int b_append_0(fixture *f) { return pkv_seq_append(f->c, f->a, toks, 0, NULL); }
static int b_append_null(fixture *f) { return pkv_seq_append(f->c, f->a, NULL, 1, NULL); }
static int b_append_null_cache(fixture *f) { (void)f; return pkv_seq_append(NULL, 1, toks, 1, NULL); }
static int b_append_capacity(fixture *f) {
  /* 8 blocks of 4; 2 (a) + 0 new: needs 7 more blocks, 6 free. */
  return pkv_seq_append(f->c, f->a, toks, 2 + 4 * 7, out_slots);
}
static int b_free_freed(fixture *f) { return pkv_seq_free(f->c, f->freed); }
static int b_fork_freed(fixture *f) { pkv_seq_id x; return pkv_seq_fork(f->c, f->freed, &x); }
static int b_fork_null(fixture *f) { return pkv_seq_fork(f->c, f->a, NULL); }
static int b_trunc_past(fixture *f) { return pkv_seq_truncate(f->c, f->a, 7); }
static int b_trunc_freed(fixture *f) { return pkv_seq_truncate(f->c, f->freed, 0); }
static int b_commit_past(fixture *f) { return pkv_seq_commit(f->c, f->a, 7); }
static int b_commit_back(fixture *f) { return pkv_seq_commit(f->c, f->a, 3); }
static int b_info_null(fixture *f) { return pkv_seq_info_get(f->c, f->a, NULL); }
static int b_info_freed(fixture *f) { pkv_seq_info i; return pkv_seq_info_get(f->c, f->freed, &i); }
static int b_blocks_small(fixture *f) { uint32_t n; return pkv_seq_blocks(f->c, f->a, out_blocks, 1, &n); }
static int b_blocks_null(fixture *f) { return pkv_seq_blocks(f->c, f->a, out_blocks, 4, NULL); }
static int b_blocks_nullbuf(fixture *f) { uint32_t n; return pkv_seq_blocks(f->c, f->a, NULL, 4, &n); }
static int b_create_null(fixture *f) { return pkv_seq_create(f->c, NULL, NULL); }
static int b_create_ns(fixture *f) {
  pkv_seq_opts o = {.ns = NULL, .ns_len = 3};
  pkv_seq_id x;
  return pkv_seq_create(f->c, &o, &x);
}
static int b_create_prio(fixture *f) {
  pkv_seq_opts o = {.priority = 101};
  pkv_seq_id x;
  return pkv_seq_create(f->c, &o, &x);
}
static int b_prio_empty(fixture *f) { return pkv_seq_set_priority(f->c, f->a, 4, 4, 50, 0); }
static int b_prio_big(fixture *f) { return pkv_seq_set_priority(f->c, f->a, 0, 4, 101, 0); }
static int b_prio_freed(fixture *f) { return pkv_seq_set_priority(f->c, f->freed, 0, 4, 50, 0); }
static int b_table_small(fixture *f) {
  pkv_seq_id s[2] = {f->a, f->b};
  return pkv_block_table(f->c, s, 2, out_blocks, 1, NULL);
}
static int b_table_freed(fixture *f) {
  pkv_seq_id s[2] = {f->a, f->freed};
  return pkv_block_table(f->c, s, 2, out_blocks, 4, NULL);
}
static int b_table_null(fixture *f) {
  pkv_seq_id s[1] = {f->a};
  return pkv_block_table(f->c, s, 1, NULL, 4, NULL);
}
static int b_slots_range(fixture *f) { return pkv_slot_mapping(f->c, f->a, 2, 7, out_slots); }
static int b_slots_rev(fixture *f) { return pkv_slot_mapping(f->c, f->a, 3, 2, out_slots); }
static int b_slots_null(fixture *f) { return pkv_slot_mapping(f->c, f->a, 0, 2, NULL); }
/* pkv_kv_csr of {a, second} into out_blocks[cap], with or without the
 * last-block lengths. */
static int csr_of(fixture *f, pkv_seq_id second, uint32_t cap, bool with_last) {
  pkv_seq_id s[2] = {f->a, second};
  int32_t indptr[3], last[2];
  uint32_t n;
  return pkv_kv_csr(f->c, s, 2, indptr, out_blocks, cap, with_last ? last : NULL, &n);
}
static int b_csr_small(fixture *f) { return csr_of(f, f->b, 3, true); }
static int b_csr_null(fixture *f) { return csr_of(f, f->b, 8, false); }
static int b_csr_freed(fixture *f) { return csr_of(f, f->freed, 8, true); }
static int b_match_nonempty(fixture *f) {
  uint32_t m;
  return pkv_seq_match_prefix(f->c, f->a, toks, 8, 0, &m);
}
static int b_match_null(fixture *f) {
  return pkv_seq_match_prefix(f->c, f->stale_lookalike, toks, 8, 0, NULL);
}
static int b_pin_uncommitted(fixture *f) { pkv_pin_id p; return pkv_pin_create(f->c, f->a, 5, &p); }
static int b_pin_partial(fixture *f) { pkv_pin_id p; return pkv_pin_create(f->c, f->a, 3, &p); }
static int b_pin_release(fixture *f) { (void)f; return pkv_pin_release(f->c, 0x100000001ull); }
static int b_drain_null(fixture *f) { return pkv_pool_drain_copies(f->c, NULL, 4, NULL, NULL); }
static int b_writable_shared(fixture *f) { return pkv__seq_check_writable(f->c, f->a, 4, 1); }
static int b_writable_past(fixture *f) { return pkv__seq_check_writable(f->c, f->a, 4, 3); }
static int b_view_freed(fixture *f) { pkv__seq_view v; return pkv__seq_view_get(f->c, f->freed, &v); }

static const bad_call bad_calls[] = {
    {"append freed", b_append_freed, PKV_ENOSEQ},
    {"append unknown", b_append_unknown, PKV_ENOSEQ},
    {"append handle 0", b_append_zero_handle, PKV_ENOSEQ},
    {"append 0 tokens", b_append_0, PKV_EINVAL},
    {"append NULL tokens", b_append_null, PKV_EINVAL},
    {"append NULL cache", b_append_null_cache, PKV_EINVAL},
    {"append beyond capacity", b_append_capacity, PKV_ENOMEM},
    {"free freed", b_free_freed, PKV_ENOSEQ},
    {"fork freed", b_fork_freed, PKV_ENOSEQ},
    {"fork NULL out", b_fork_null, PKV_EINVAL},
    {"truncate past end", b_trunc_past, PKV_ERANGE},
    {"truncate freed", b_trunc_freed, PKV_ENOSEQ},
    {"commit past end", b_commit_past, PKV_ERANGE},
    {"commit backwards", b_commit_back, PKV_ERANGE},
    {"info NULL out", b_info_null, PKV_EINVAL},
    {"info freed", b_info_freed, PKV_ENOSEQ},
    {"blocks cap too small", b_blocks_small, PKV_ENOSPC},
    {"blocks NULL count", b_blocks_null, PKV_EINVAL},
    {"blocks NULL buffer", b_blocks_nullbuf, PKV_EINVAL},
    {"create NULL out", b_create_null, PKV_EINVAL},
    {"create ns NULL with length", b_create_ns, PKV_EINVAL},
    {"create priority > 100", b_create_prio, PKV_EINVAL},
    {"priority empty range", b_prio_empty, PKV_ERANGE},
    {"priority > 100", b_prio_big, PKV_EINVAL},
    {"priority freed", b_prio_freed, PKV_ENOSEQ},
    {"block table too small", b_table_small, PKV_ENOSPC},
    {"block table freed", b_table_freed, PKV_ENOSEQ},
    {"block table NULL", b_table_null, PKV_EINVAL},
    {"slot mapping past end", b_slots_range, PKV_ERANGE},
    {"slot mapping reversed", b_slots_rev, PKV_ERANGE},
    {"slot mapping NULL", b_slots_null, PKV_EINVAL},
    {"csr too small", b_csr_small, PKV_ENOSPC},
    {"csr NULL last_page_len", b_csr_null, PKV_EINVAL},
    {"csr freed", b_csr_freed, PKV_ENOSEQ},
    {"match on non-empty", b_match_nonempty, PKV_ESTATE},
    {"match NULL out", b_match_null, PKV_EINVAL},
    {"pin uncommitted", b_pin_uncommitted, PKV_ERANGE},
    {"pin no full block", b_pin_partial, PKV_ERANGE},
    {"pin release unknown", b_pin_release, PKV_ENOENT},
    {"drain NULL", b_drain_null, PKV_EINVAL},
    {"writable shared tail", b_writable_shared, PKV_ESTATE},
    {"writable past end", b_writable_past, PKV_ERANGE},
    {"view freed", b_view_freed, PKV_ENOSEQ},
};

START_TEST(bad_input) {
  const bad_call *t = &bad_calls[_i];
  fixture f;
  fx_open(&f);
  pkv_stats before = tu_stats(f.c);
  int32_t ta[8], tb[8];
  uint32_t na, nb;
  ck_assert_int_eq(pkv_seq_blocks(f.c, f.a, ta, 8, &na), 0);
  ck_assert_int_eq(pkv_seq_blocks(f.c, f.b, tb, 8, &nb), 0);
  memset(out_blocks, 0x5a, sizeof out_blocks);
  memset(out_slots, 0x5a, sizeof out_slots);
  int rc = t->call(&f);
  ck_assert_msg(rc == t->code, "%s: got %s want %s (%s)", t->what,
                pkv_err_name(rc), pkv_err_name(t->code), pkv_last_error());
  ck_assert_msg(pkv_last_error()[0] != '\0', "%s: no detail", t->what);
  pkv_stats after = tu_stats(f.c);
  TU_STATS_SAME(before, after);
  TU_CHECK(f.c);
  /* Tables and output buffers untouched. */
  int32_t ta2[8], tb2[8];
  uint32_t na2, nb2;
  ck_assert_int_eq(pkv_seq_blocks(f.c, f.a, ta2, 8, &na2), 0);
  ck_assert_int_eq(pkv_seq_blocks(f.c, f.b, tb2, 8, &nb2), 0);
  ck_assert_uint_eq(na, na2);
  ck_assert_uint_eq(nb, nb2);
  ck_assert_mem_eq(ta, ta2, na * sizeof *ta);
  ck_assert_mem_eq(tb, tb2, nb * sizeof *tb);
  for (size_t i = 0; i < 64; i++) {
    ck_assert_int_eq(out_blocks[i], 0x5a5a5a5a);
    ck_assert_int_eq(out_slots[i], 0x5a5a5a5a5a5a5a5all);
  }
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(f.c, f.a, &info), 0);
  ck_assert_uint_eq(info.n_tokens, 6);
  ck_assert_uint_eq(info.n_committed, 4);
  pkv_cache_destroy(f.c);
}
END_TEST

/* ------------------------------------------------ handles */

START_TEST(handles_generations) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_EXTERNAL, 8, 4);
  pkv_seq_id ids[40];
  for (int i = 0; i < 40; i++) {
    ck_assert_int_eq(pkv_seq_create(c, NULL, &ids[i]), 0);
    ck_assert_uint_ne(ids[i], PKV_SEQ_NONE);
    for (int j = 0; j < i; j++) ck_assert_uint_ne(ids[i], ids[j]);
  }
  for (int i = 0; i < 40; i += 2) ck_assert_int_eq(pkv_seq_free(c, ids[i]), 0);
  for (int i = 0; i < 40; i += 2) {
    pkv_seq_id x;
    ck_assert_int_eq(pkv_seq_create(c, NULL, &x), 0);
    for (int j = 0; j < 40; j++) ck_assert_uint_ne(x, ids[j]);
    ck_assert_int_eq(pkv_seq_free(c, ids[i]), PKV_ENOSEQ);
  }
  ck_assert_uint_eq(tu_stats(c).n_seqs, 40);
  TU_CHECK(c);
  pkv_cache_destroy(c); /* frees live sequences */
}
END_TEST

/* ------------------------------------------------ append */

START_TEST(append_slots) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 8, 4);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  int64_t slots[16];
  ck_assert_int_eq(pkv_seq_append(c, s, toks, 6, slots), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, toks + 6, 1, slots + 6), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, toks + 7, 3, slots + 7), 0);
  int32_t blocks[8];
  uint32_t nb;
  ck_assert_int_eq(pkv_seq_blocks(c, s, blocks, 8, &nb), 0);
  ck_assert_uint_eq(nb, 3);
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(slots[i], (int64_t)blocks[i / 4] * 4 + i % 4);
  int64_t map[10];
  ck_assert_int_eq(pkv_slot_mapping(c, s, 0, 10, map), 0);
  ck_assert_mem_eq(map, slots, sizeof map);
  pkv_stats st = tu_stats(c);
  TU_EXPECT(TU_FIG(st.blocks_used, 3), TU_FIG(st.blocks_free, 5), TU_FIG(st.tokens, 10),
            TU_FIG(st.waste_slots, 2), TU_FIG(st.appends, 3), TU_FIG(st.appended_tokens, 10),
            TU_FIG(st.slots_reserved, 12));
  TU_DONE(c);
}
END_TEST

START_TEST(append_exhausts_pool_exactly) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_EXTERNAL, 4, 4);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, toks, 17, NULL), PKV_ENOMEM);
  ck_assert_int_eq(pkv_seq_append(c, s, toks, 16, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, toks, 1, NULL), PKV_ENOMEM);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 0);
  ck_assert_int_eq(pkv_seq_truncate(c, s, 5), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 2);
  ck_assert_int_eq(pkv_seq_truncate(c, s, 0), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 4);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ fork / copy-on-write */

START_TEST(fork_shares_everything) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 16, 4);
  pkv_seq_id p, ch;
  int64_t slots[16];
  ck_assert_int_eq(pkv_seq_create(c, NULL, &p), 0);
  ck_assert_int_eq(pkv_seq_append(c, p, toks, 10, slots), 0);
  for (int i = 0; i < 10; i++) tu_write_slot(c, slots[i], 1, (uint32_t)i);
  ck_assert_int_eq(pkv_seq_fork(c, p, &ch), 0);
  int32_t bp[8], bc[8];
  uint32_t np, nc;
  ck_assert_int_eq(pkv_seq_blocks(c, p, bp, 8, &np), 0);
  ck_assert_int_eq(pkv_seq_blocks(c, ch, bc, 8, &nc), 0);
  ck_assert_uint_eq(np, 3);
  ck_assert_uint_eq(nc, 3);
  ck_assert_mem_eq(bp, bc, 3 * sizeof *bp); /* tail included */
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_used, 3);
  ck_assert_uint_eq(st.forks, 1);
  /* Engine view: both tails shared, so neither may write there. */
  ck_assert_int_eq(pkv__seq_check_writable(c, p, 8, 2), PKV_ESTATE);
  ck_assert_int_eq(pkv__seq_check_writable(c, ch, 9, 1), PKV_ESTATE);

  /* Child writes first: it copies the tail; the parent keeps its block. */
  int64_t s_child;
  ck_assert_int_eq(pkv_seq_append(c, ch, toks + 10, 1, &s_child), 0);
  tu_write_slot(c, s_child, 2, 10);
  ck_assert_int_eq(pkv_seq_blocks(c, ch, bc, 8, &nc), 0);
  ck_assert_int_eq(bc[0], bp[0]);
  ck_assert_int_eq(bc[1], bp[1]);
  ck_assert_int_ne(bc[2], bp[2]);
  ck_assert_int_eq(s_child, (int64_t)bc[2] * 4 + 2);
  st = tu_stats(c);
  ck_assert_uint_eq(st.cow_copies, 1);
  ck_assert_uint_eq(st.cow_copied_slots, 2);
  ck_assert_uint_eq(st.blocks_used, 4);
  /* The copy carries the filled slots of every layer, K and V. */
  for (int i = 8; i < 10; i++)
    ck_assert(tu_slot_matches(c, (int64_t)bc[2] * 4 + i % 4, 1, (uint32_t)i));
  /* Parent writes next: its tail is now its own, no copy. */
  int64_t s_parent;
  ck_assert_int_eq(pkv_seq_append(c, p, toks + 10, 1, &s_parent), 0);
  ck_assert_int_eq(s_parent, (int64_t)bp[2] * 4 + 2);
  tu_write_slot(c, s_parent, 1, 10);
  ck_assert_uint_eq(tu_stats(c).cow_copies, 1);
  ck_assert(tu_slot_matches(c, s_child, 2, 10));
  ck_assert(tu_slot_matches(c, s_parent, 1, 10));
  ck_assert_int_eq(pkv__seq_check_writable(c, p, 8, 3), 0);
  ck_assert_int_eq(pkv__seq_check_writable(c, ch, 8, 3), 0);
  ck_assert_int_eq(pkv__seq_check_writable(c, ch, 0, 1), PKV_ESTATE);
  TU_CHECK(c);
  /* Freeing the parent leaves the child's shared blocks alive. */
  ck_assert_int_eq(pkv_seq_free(c, p), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_used, 3);
  for (int i = 0; i < 8; i++)
    ck_assert(tu_slot_matches(c, (int64_t)bc[i / 4] * 4 + i % 4, 1, (uint32_t)i));
  ck_assert_int_eq(pkv_seq_free(c, ch), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 16);
  TU_DONE(c);
}
END_TEST

/* An external cache of 16 blocks of 4 where parent *p (n_parent tokens) was
 * forked into *ch, then both grew: p by 1 token, ch by n_child. */
static pkv_cache *forked_then_grown(uint32_t n_parent, uint32_t n_child, pkv_seq_id *p,
                                    pkv_seq_id *ch) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_EXTERNAL, 16, 4);
  *p = tu_seq_new(c, toks, n_parent);
  ck_assert_int_eq(pkv_seq_fork(c, *p, ch), 0);
  ck_assert_int_eq(pkv_seq_append(c, *p, toks, 1, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, *ch, toks, n_child, NULL), 0);
  return c;
}

START_TEST(fork_external_queues_copies) {
  pkv_seq_id p, ch;
  pkv_cache *c = forked_then_grown(7, 3, &p, &ch);
  int32_t bp[4], bc[4];
  uint32_t np, nc;
  ck_assert_int_eq(pkv_seq_blocks(c, p, bp, 4, &np), 0);
  ck_assert_int_eq(pkv_seq_blocks(c, ch, bc, 4, &nc), 0);
  pkv_copy q[4];
  uint32_t n, pending;
  /* The parent copied the shared tail; the queued copy still holds the old
   * tail, so the child copies it too instead of writing into it in place
   * before the caller has run the parent's copy (issue 12 item 13). */
  ck_assert_uint_eq(tu_stats(c).blocks_free, 16 - 5);
  ck_assert_int_eq(pkv_pool_drain_copies(c, q, 4, &n, &pending), 0);
  ck_assert_uint_eq(n, 2);
  ck_assert_uint_eq(pending, 0);
  ck_assert_int_eq(q[0].dst_block, bp[1]);
  ck_assert_int_eq(q[1].dst_block, bc[1]);
  ck_assert_int_eq(q[0].src_block, q[1].src_block);
  ck_assert_int_ne(q[0].src_block, bp[1]);
  ck_assert_int_ne(q[0].src_block, bc[1]);
  ck_assert_uint_eq(q[0].n_slots, 3);
  ck_assert_uint_eq(q[1].n_slots, 3);
  ck_assert_uint_eq(q[0].src_slot + q[0].dst_slot + q[1].src_slot + q[1].dst_slot, 0);
  /* Drained: the old tail is released. */
  ck_assert_uint_eq(tu_stats(c).blocks_free, 16 - 4);
  TU_CHECK(c);
  ck_assert_int_eq(pkv_pool_drain_copies(c, q, 4, &n, NULL), 0);
  ck_assert_uint_eq(n, 0);
  /* Partial drains keep order. */
  pkv_seq_id k1, k2;
  ck_assert_int_eq(pkv_seq_append(c, p, toks, 1, NULL), 0); /* 9 tokens */
  ck_assert_int_eq(pkv_seq_fork(c, p, &k1), 0);
  ck_assert_int_eq(pkv_seq_fork(c, p, &k2), 0);
  ck_assert_int_eq(pkv_seq_append(c, k1, toks, 1, NULL), 0);
  ck_assert_int_eq(pkv_seq_append(c, k2, toks, 1, NULL), 0);
  ck_assert_int_eq(pkv_pool_drain_copies(c, q, 1, &n, &pending), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_uint_eq(pending, 1);
  int32_t bk[4];
  uint32_t nk;
  ck_assert_int_eq(pkv_seq_blocks(c, k1, bk, 4, &nk), 0);
  ck_assert_int_eq(q[0].dst_block, bk[2]);
  ck_assert_int_eq(pkv_pool_drain_copies(c, q, 4, &n, &pending), 0);
  ck_assert_int_eq(pkv_seq_blocks(c, k2, bk, 4, &nk), 0);
  ck_assert_int_eq(q[0].dst_block, bk[2]);
  ck_assert_uint_eq(q[0].n_slots, 1);
  ck_assert_uint_eq(pending, 0);
  TU_DONE(c);
}
END_TEST

START_TEST(fork_at_block_boundary_copies_nothing) {
  pkv_seq_id p, ch;
  pkv_cache *c = forked_then_grown(8, 1, &p, &ch);
  ck_assert_uint_eq(tu_stats(c).cow_copies, 0);
  ck_assert_uint_eq(tu_stats(c).blocks_used, 4);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ truncate / commit */

START_TEST(truncate_then_append_copies_cached_tail) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 16, 4);
  pkv_seq_id s;
  int64_t slots[12];
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, toks, 12, slots), 0);
  for (int i = 0; i < 12; i++) tu_write_slot(c, slots[i], 3, (uint32_t)i);
  ck_assert_int_eq(pkv_seq_commit(c, s, 12), 0);
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(c, s, &info), 0);
  ck_assert_uint_eq(info.n_cached_blocks, 3);
  /* Speculative rollback into the middle of cached block 1. */
  ck_assert_int_eq(pkv_seq_truncate(c, s, 6), 0);
  ck_assert_int_eq(pkv_seq_info_get(c, s, &info), 0);
  ck_assert_uint_eq(info.n_tokens, 6);
  ck_assert_uint_eq(info.n_committed, 6);
  ck_assert_uint_eq(info.n_blocks, 2);
  ck_assert_int_eq(pkv__seq_check_writable(c, s, 5, 1), PKV_ESTATE);
  int64_t ns;
  ck_assert_int_eq(pkv_seq_append(c, s, toks + 40, 1, &ns), 0);
  ck_assert_int_ne(ns / 4, slots[6] / 4); /* a copy, not the cached block */
  tu_write_slot(c, ns, 4, 6);
  ck_assert(tu_slot_matches(c, slots[6], 3, 6)); /* cached block intact */
  ck_assert(tu_slot_matches(c, ns - 1, 3, 5));   /* filled slots copied */
  ck_assert_uint_eq(tu_stats(c).cow_copies, 1);
  ck_assert_uint_eq(tu_stats(c).truncates, 1);
  TU_DONE(c);
}
END_TEST

START_TEST(truncate_exclusive_tail_is_rewritten_in_place) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 16, 4);
  cfg.flags = PKV_CACHE_NO_PREFIX_CACHE;
  pkv_cache *c = tu_cache(&cfg);
  pkv_seq_id s;
  int64_t slots[12], again;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, toks, 12, slots), 0);
  ck_assert_int_eq(pkv_seq_commit(c, s, 12), 0);
  ck_assert_int_eq(pkv_seq_truncate(c, s, 6), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_used, 2);
  ck_assert_int_eq(pkv__seq_check_writable(c, s, 4, 2), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, toks, 1, &again), 0);
  ck_assert_int_eq(again, slots[6]);
  ck_assert_uint_eq(tu_stats(c).cow_copies, 0);
  TU_DONE(c);
}
END_TEST

START_TEST(engine_view) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 16, 4);
  pkv_seq_id s = tu_seq_new(c, toks, 9);
  ck_assert_int_eq(pkv_seq_commit(c, s, 5), 0);
  pkv__seq_view v;
  ck_assert_int_eq(pkv__seq_view_get(c, s, &v), 0);
  ck_assert_uint_eq(v.n_blocks, 3);
  ck_assert_uint_eq(v.n_tokens, 9);
  ck_assert_uint_eq(v.n_committed, 5);
  int32_t b[3];
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(c, s, b, 3, &n), 0);
  ck_assert_mem_eq(v.blocks, b, sizeof b);
  /* Other sequences' growth never moves this table. */
  const int32_t *before = v.blocks;
  for (int i = 0; i < 8; i++) (void)tu_seq_new(c, toks, 1);
  ck_assert_int_eq(pkv__seq_view_get(c, s, &v), 0);
  ck_assert_ptr_eq(v.blocks, before);
  /* Block 0 is full and committed: cached, so immutable. */
  ck_assert_int_eq(pkv__seq_check_writable(c, s, 0, 9), PKV_ESTATE);
  ck_assert_int_eq(pkv__seq_check_writable(c, s, 4, 5), 0);
  ck_assert_int_eq(pkv__seq_check_writable(c, s, 9, 0), 0);
  pkv_cache_destroy(c);
}
END_TEST

TU_MAIN("seq",
    {"bad_input", 0, {{bad_input, 0, (int)(sizeof bad_calls / sizeof bad_calls[0])}}},
    {"handles", 0, {{handles_generations}}},
    {"append", 0, {{append_slots}, {append_exhausts_pool_exactly}}},
    {"fork_cow", 0, {{fork_shares_everything}, {fork_external_queues_copies},
                    {fork_at_block_boundary_copies_nothing}}},
    {"truncate_commit", 0, {{truncate_then_append_copies_cached_tail},
                           {truncate_exclusive_tail_is_rewritten_in_place}}},
    {"engine", 0, {{engine_view}}})
