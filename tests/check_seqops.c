/*
 * check_seqops.c — llama.cpp-style sequence operations (issue 11 item 8):
 * pkv_seq_list, pkv_seq_keep, pkv_seq_remove_range (context shift).
 *
 *   model   seeded random operations (create, append, fork, truncate,
 *           commit, free, remove_range aligned and not) in owned and
 *           external storage: every position of every sequence must read
 *           the K/V written for the token now there (owned: the arena;
 *           external: a shadow that executes the drained copies);
 *   aligned a block-aligned shift moves no byte and keeps the block ids;
 *   index   shifted blocks never enter the prefix index;
 *   full    a shift of a sequence filling the whole pool succeeds in owned
 *           storage (at most one block more at any moment);
 *   bad     end past the length, begin > end, unknown handles, lookahead,
 *           a pool too small: the code, a detail, nothing changed.
 */
#include "tu_core.h"

#include <stdlib.h>

#define MAX_SEQS 8
#define MAX_LEN 80

/* ------------------------------------------------------------ model */

typedef struct mseq {
  bool live;
  pkv_seq_id id;
  uint32_t n, committed;
  int32_t tok[MAX_LEN];
  uint32_t tag[MAX_LEN]; /* what was written for the token now at p */
} mseq;

typedef struct world {
  pkv_cache *c;
  bool external;
  uint32_t bs, nb;
  uint32_t *shadow; /* external: tag per slot */
  mseq s[MAX_SEQS];
  uint64_t rng;
  uint32_t next_tag;
  uint64_t shifts, aligned_shifts, enomem;
} world;

static void drain_all(world *w) {
  if (!w->external) return;
  pkv_copy q[8];
  uint32_t n, pending;
  do {
    ck_assert_int_eq(pkv_pool_drain_copies(w->c, q, 8, &n, &pending), 0);
    for (uint32_t i = 0; i < n; i++) {
      ck_assert_int_ne(q[i].src_block, q[i].dst_block);
      memcpy(w->shadow + (size_t)q[i].dst_block * w->bs + q[i].dst_slot,
             w->shadow + (size_t)q[i].src_block * w->bs + q[i].src_slot,
             q[i].n_slots * sizeof *w->shadow);
    }
  } while (pending);
}

static void verify(world *w) {
  drain_all(w);
  TU_CHECK(w->c);
  for (int i = 0; i < MAX_SEQS; i++) {
    mseq *m = &w->s[i];
    if (!m->live) continue;
    pkv_seq_info info;
    ck_assert_int_eq(pkv_seq_info_get(w->c, m->id, &info), 0);
    TU_ASSERT(info.n_tokens == m->n && info.n_committed == m->committed,
              "seq %d: %u/%u tokens, model %u/%u", i, info.n_tokens,
              info.n_committed, m->n, m->committed);
    if (!m->n) continue;
    int64_t slots[MAX_LEN];
    ck_assert_int_eq(pkv_slot_mapping(w->c, m->id, 0, m->n, slots), 0);
    for (uint32_t p = 0; p < m->n; p++) {
      if (w->external)
        TU_ASSERT(w->shadow[slots[p]] == m->tag[p], "seq %d pos %u reads %u, "
                  "want %u", i, p, w->shadow[slots[p]], m->tag[p]);
      else
        TU_ASSERT(tu_slot_matches(w->c, slots[p], m->tag[p], 0),
                  "seq %d pos %u reads the wrong K/V", i, p);
    }
  }
}

static int pick(world *w, bool live) {
  int cand[MAX_SEQS], k = 0;
  for (int i = 0; i < MAX_SEQS; i++)
    if (w->s[i].live == live) cand[k++] = i;
  return k ? cand[tu_rand(&w->rng) % (uint64_t)k] : -1;
}

static void do_append(world *w, mseq *m, uint32_t n) {
  if (m->n + n > MAX_LEN) return;
  int32_t t[MAX_LEN];
  int64_t slots[MAX_LEN];
  for (uint32_t k = 0; k < n; k++) t[k] = (int32_t)(tu_rand(&w->rng) % 4);
  int rc = pkv_seq_append(w->c, m->id, t, n, slots);
  if (rc == PKV_ENOMEM) {
    w->enomem++;
    return;
  }
  ck_assert_msg(rc == 0, "append: %s", pkv_last_error());
  drain_all(w); /* the copy-on-write copies land before our writes */
  for (uint32_t k = 0; k < n; k++) {
    uint32_t tag = ++w->next_tag;
    m->tok[m->n + k] = t[k];
    m->tag[m->n + k] = tag;
    if (w->external)
      w->shadow[slots[k]] = tag;
    else
      tu_write_slot(w->c, slots[k], tag, 0);
  }
  m->n += n;
}

static void do_shift(world *w, mseq *m) {
  uint32_t begin, end;
  if (tu_rand(&w->rng) % 3 == 0) { /* block-aligned */
    uint32_t blocks = m->n / w->bs;
    if (blocks < 1) return;
    begin = (uint32_t)(tu_rand(&w->rng) % blocks) * w->bs;
    uint32_t span = (m->n - begin) / w->bs;
    end = begin + (1 + (uint32_t)(tu_rand(&w->rng) % span)) * w->bs;
  } else {
    begin = (uint32_t)(tu_rand(&w->rng) % (m->n + 1));
    end = begin + (uint32_t)(tu_rand(&w->rng) % (m->n - begin + 1));
  }
  pkv_stats before = tu_stats(w->c);
  int rc = pkv_seq_remove_range(w->c, m->id, begin, end);
  if (rc == PKV_ENOMEM) {
    w->enomem++;
    pkv_stats after = tu_stats(w->c);
    TU_STATS_SAME(before, after);
    return;
  }
  ck_assert_msg(rc == 0, "remove_range [%u, %u) of %u: %s", begin, end, m->n,
                pkv_last_error());
  uint32_t d = end - begin;
  if (d && end < m->n) {
    w->shifts++;
    if (begin % w->bs == 0 && d % w->bs == 0) {
      w->aligned_shifts++;
      ck_assert_uint_eq(tu_stats(w->c).shift_copied_slots,
                        before.shift_copied_slots);
    }
  }
  memmove(m->tok + begin, m->tok + end, (m->n - end) * sizeof *m->tok);
  memmove(m->tag + begin, m->tag + end, (m->n - end) * sizeof *m->tag);
  m->n -= d;
  if (d && m->committed > begin) m->committed = begin; /* begin == end: no-op */
}

static void step(world *w) {
  uint64_t r = tu_rand(&w->rng) % 100;
  int i = pick(w, true);
  if (r < 10 || i < 0) {
    int f = pick(w, false);
    if (f < 0) return;
    memset(&w->s[f], 0, sizeof w->s[f]);
    ck_assert_int_eq(pkv_seq_create(w->c, NULL, &w->s[f].id), 0);
    w->s[f].live = true;
    return;
  }
  mseq *m = &w->s[i];
  if (r < 45) {
    do_append(w, m, 1 + (uint32_t)(tu_rand(&w->rng) % (3 * w->bs)));
  } else if (r < 52) {
    int f = pick(w, false);
    if (f < 0) return;
    pkv_seq_id id;
    ck_assert_int_eq(pkv_seq_fork(w->c, m->id, &id), 0);
    w->s[f] = *m;
    w->s[f].id = id;
  } else if (r < 58) {
    uint32_t n = (uint32_t)(tu_rand(&w->rng) % (m->n + 1));
    ck_assert_int_eq(pkv_seq_truncate(w->c, m->id, n), 0);
    m->n = n;
    if (m->committed > n) m->committed = n;
  } else if (r < 70) {
    uint32_t n = m->committed + (uint32_t)(tu_rand(&w->rng) % (m->n - m->committed + 1));
    ck_assert_int_eq(pkv_seq_commit(w->c, m->id, n), 0);
    m->committed = n;
  } else if (r < 92) {
    do_shift(w, m);
  } else {
    ck_assert_int_eq(pkv_seq_free(w->c, m->id), 0);
    m->live = false;
  }
}

START_TEST(model) {
  world *w = calloc(1, sizeof *w);
  w->external = _i & 1;
  w->bs = (_i & 2) ? 3 : 4;
  w->nb = 60;
  w->rng = 0xc0ffee00ull + (uint64_t)_i;
  pkv_config cfg;
  tu_config(&cfg, w->external ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED, w->nb, w->bs);
  w->c = tu_cache(&cfg);
  if (w->external) w->shadow = calloc((size_t)w->nb * w->bs, sizeof *w->shadow);
  int n_ops = TU_SCALE(4000);
  for (int k = 0; k < n_ops; k++) {
    step(w);
    verify(w);
  }
  ck_assert_uint_gt(w->shifts, (uint64_t)n_ops / 40);
  ck_assert_uint_gt(w->aligned_shifts, (uint64_t)n_ops / 800);
  ck_assert_uint_gt(tu_stats(w->c).shift_copied_slots, 0);
  pkv_cache_destroy(w->c);
  free(w->shadow);
  free(w);
}
END_TEST

/* ------------------------------------------------------------ fixtures */

static pkv_cache *small_cache(pkv_storage storage, uint32_t nb) {
  pkv_config cfg;
  tu_config(&cfg, storage, nb, 4);
  return tu_cache(&cfg);
}

static pkv_seq_id filled(pkv_cache *c, uint32_t n, int32_t base) {
  int32_t t[256];
  ck_assert_uint_le(n, 256);
  for (uint32_t i = 0; i < n; i++) t[i] = base + (int32_t)i;
  pkv_seq_id s = tu_seq_new(c, t, n);
  return s;
}

START_TEST(list_and_keep) {
  pkv_cache *c = small_cache(PKV_STORAGE_OWNED, 32);
  pkv_seq_id a = filled(c, 6, 0), b = filled(c, 9, 100), x = filled(c, 1, 7);
  ck_assert_int_eq(pkv_seq_free(c, x), 0);
  pkv_seq_id d = filled(c, 3, 200);
  pkv_seq_id out[4] = {0, 0, 0, 0};
  uint32_t n = 0;
  ck_assert_int_eq(pkv_seq_list(c, NULL, 0, &n), PKV_ENOSPC);
  ck_assert_uint_eq(n, 3);
  ck_assert_int_eq(pkv_seq_list(c, out, 2, &n), PKV_ENOSPC);
  ck_assert_uint_eq(out[0], 0); /* untouched */
  ck_assert_int_eq(pkv_seq_list(c, out, 4, &n), 0);
  ck_assert_uint_eq(n, 3);
  ck_assert_uint_eq(out[0], a);
  ck_assert_uint_eq(out[1], b);
  ck_assert_uint_eq(out[2], d); /* reused slot 2, new generation */
  ck_assert_uint_ne(d, x);
  /* keep: an unknown handle frees nothing */
  pkv_stats before = tu_stats(c);
  ck_assert_int_eq(pkv_seq_keep(c, x), PKV_ENOSEQ);
  ck_assert(pkv_last_error()[0] != '\0');
  pkv_stats after = tu_stats(c);
  TU_STATS_SAME(before, after);
  ck_assert_int_eq(pkv_seq_keep(c, b), 0);
  ck_assert_int_eq(pkv_seq_list(c, out, 4, &n), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_uint_eq(out[0], b);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 32 - 3);
  ck_assert_int_eq(pkv_seq_free(c, a), PKV_ENOSEQ);
  ck_assert_int_eq(pkv_seq_keep(c, b), 0); /* alone already: nothing */
  TU_DONE(c);
}
END_TEST

START_TEST(aligned_shift_moves_nothing) {
  pkv_cache *c = small_cache(_i ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED, 32);
  pkv_seq_id s = filled(c, 22, 0); /* 6 blocks, the last with 2 tokens */
  int32_t before[8], after[8];
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(c, s, before, 8, &n), 0);
  pkv_stats st0 = tu_stats(c);
  ck_assert_int_eq(pkv_seq_remove_range(c, s, 4, 12), 0); /* blocks 1, 2 */
  ck_assert_int_eq(pkv_seq_blocks(c, s, after, 8, &n), 0);
  ck_assert_uint_eq(n, 4);
  ck_assert_int_eq(after[0], before[0]);
  ck_assert_int_eq(after[1], before[3]);
  ck_assert_int_eq(after[2], before[4]);
  ck_assert_int_eq(after[3], before[5]);
  pkv_stats st1 = tu_stats(c);
  ck_assert_uint_eq(st1.shift_copied_slots, st0.shift_copied_slots);
  ck_assert_uint_eq(st1.cow_copies, st0.cow_copies);
  ck_assert_uint_eq(st1.range_removals, st0.range_removals + 1);
  ck_assert_uint_eq(st1.blocks_free, st0.blocks_free + 2);
  uint32_t pending = 1;
  pkv_copy q[1];
  ck_assert_int_eq(pkv_pool_drain_copies(c, q, 1, &n, &pending), 0);
  ck_assert_uint_eq(n, 0);
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(c, s, &info), 0);
  ck_assert_uint_eq(info.n_tokens, 14);
  TU_DONE(c);
}
END_TEST

/* External storage: the queued copies carry slot offsets. */
START_TEST(unaligned_external_copies) {
  pkv_cache *c = small_cache(PKV_STORAGE_EXTERNAL, 32);
  pkv_seq_id s = filled(c, 10, 0); /* 0..9 in 3 blocks */
  int32_t old[3];
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(c, s, old, 3, &n), 0);
  ck_assert_int_eq(pkv_seq_remove_range(c, s, 2, 3), 0); /* drop token 2 */
  int32_t nw[3];
  ck_assert_int_eq(pkv_seq_blocks(c, s, nw, 3, &n), 0);
  ck_assert_uint_eq(n, 3); /* 9 tokens */
  ck_assert_int_eq(nw[0], old[0] == nw[0] ? -1 : nw[0]); /* rebuilt */
  pkv_copy q[16];
  uint32_t pending;
  ck_assert_int_eq(pkv_pool_drain_copies(c, q, 16, &n, &pending), 0);
  ck_assert_uint_eq(pending, 0);
  /* new 0 = old0[0,2) + old0[3,4) + old1[0,1); new 1 = old1[1,4) + old2[0,1);
   * new 2 = old2[1,2) */
  const pkv_copy want[] = {
      {old[0], nw[0], 2, 0, 0}, {old[0], nw[0], 1, 3, 2}, {old[1], nw[0], 1, 0, 3},
      {old[1], nw[1], 3, 1, 0}, {old[2], nw[1], 1, 0, 3}, {old[2], nw[2], 1, 1, 0},
  };
  ck_assert_uint_eq(n, 6);
  for (uint32_t i = 0; i < n; i++)
    ck_assert_msg(memcmp(&q[i], &want[i], sizeof q[i]) == 0,
                  "copy %u: %d+%u -> %d+%u x%u", i, q[i].src_block, q[i].src_slot,
                  q[i].dst_block, q[i].dst_slot, q[i].n_slots);
  /* drained: the old blocks went back to the pool */
  ck_assert_uint_eq(tu_stats(c).blocks_free, 32 - 3);
  int64_t slots[9];
  ck_assert_int_eq(pkv_slot_mapping(c, s, 0, 9, slots), 0);
  TU_DONE(c);
}
END_TEST

START_TEST(shifted_blocks_never_cached) {
  pkv_cache *c = small_cache(PKV_STORAGE_OWNED, 32);
  int32_t t[24];
  for (int i = 0; i < 24; i++) t[i] = 500 + i;
  pkv_seq_id s = tu_seq_new(c, t, 24);
  ck_assert_int_eq(pkv_seq_commit(c, s, 8), 0); /* blocks 0, 1 cached */
  ck_assert_uint_eq(tu_stats(c).blocks_cached, 2);
  ck_assert_int_eq(pkv_seq_remove_range(c, s, 9, 11), 0);
  ck_assert_int_eq(pkv_seq_commit(c, s, 22), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_cached, 2); /* nothing from block 2 on */
  pkv_seq_id f;
  ck_assert_int_eq(pkv_seq_fork(c, s, &f), 0);
  ck_assert_int_eq(pkv_seq_commit(c, f, 22), 0);
  ck_assert_uint_eq(tu_stats(c).blocks_cached, 2); /* the fork inherits it */
  /* A match of the new token sequence stops at the shifted block. */
  int32_t now[22];
  memcpy(now, t, 9 * sizeof *t);
  memcpy(now + 9, t + 11, 13 * sizeof *t);
  ck_assert_uint_eq(tu_match_new(c, now, 22, 0, NULL), 8);
  TU_DONE(c);
}
END_TEST

/* Owned storage: a sequence holding the whole pool shifts in place of
 * itself (one block of headroom). */
START_TEST(full_pool_shift) {
  pkv_cache *c = small_cache(PKV_STORAGE_OWNED, 17);
  int32_t t[64];
  int64_t slots[64];
  for (int i = 0; i < 64; i++) t[i] = i;
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, t, 64, slots), 0);
  for (int i = 0; i < 64; i++) tu_write_slot(c, slots[i], 1000 + (uint32_t)i, 0);
  ck_assert_uint_eq(tu_stats(c).blocks_free, 1);
  ck_assert_int_eq(pkv_seq_remove_range(c, s, 5, 35), 0); /* llama: keep 5, drop 30 */
  ck_assert_int_eq(pkv_slot_mapping(c, s, 0, 34, slots), 0);
  for (uint32_t p = 0; p < 34; p++)
    ck_assert(tu_slot_matches(c, slots[p], 1000 + (p < 5 ? p : p + 30), 0));
  ck_assert_uint_eq(tu_stats(c).blocks_free, 17 - 9);
  TU_DONE(c);
}
END_TEST

START_TEST(bad_input) {
  pkv_cache *c = small_cache(PKV_STORAGE_EXTERNAL, 8);
  pkv_seq_id s = filled(c, 10, 0), gone = filled(c, 1, 0);
  ck_assert_int_eq(pkv_seq_free(c, gone), 0);
  (void)filled(c, 20, 50); /* the pool is full */
  struct {
    pkv_seq_id seq;
    uint32_t begin, end;
    int want;
    const char *say;
  } rows[] = {
      {s, 4, 11, PKV_ERANGE, "past length 10"},
      {s, 7, 3, PKV_ERANGE, "begin 7 > end 3"},
      {gone, 0, 1, PKV_ENOSEQ, "stale handle"},
      {PKV_SEQ_NONE, 0, 0, PKV_ENOSEQ, "stale handle"},
      {s, 1, 2, PKV_ENOMEM, "needs 3 blocks, 0 available"},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    pkv_stats before = tu_stats(c);
    ck_assert_int_eq(pkv_seq_remove_range(c, rows[i].seq, rows[i].begin, rows[i].end),
                     rows[i].want);
    ck_assert_msg(strstr(pkv_last_error(), rows[i].say) != NULL, "row %zu: %s", i,
                  pkv_last_error());
    pkv_stats after = tu_stats(c);
    TU_STATS_SAME(before, after);
    TU_CHECK(c);
  }
  ck_assert_int_eq(pkv_seq_remove_range(NULL, s, 0, 1), PKV_EINVAL);
  /* Lookahead slots reserved: refused until filled or truncated. */
  pkv_append req = {.tokens = NULL, .n_tokens = 0, .n_lookahead = 1};
  ck_assert_int_eq(pkv_seq_append_ex(c, s, &req, NULL), 0);
  pkv_stats before = tu_stats(c);
  ck_assert_int_eq(pkv_seq_remove_range(c, s, 0, 4), PKV_ESTATE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "lookahead"));
  pkv_stats after = tu_stats(c);
  TU_STATS_SAME(before, after);
  ck_assert_int_eq(pkv_seq_list(c, NULL, 1, &(uint32_t){0}), PKV_EINVAL);
  ck_assert_int_eq(pkv_seq_list(c, NULL, 0, NULL), PKV_EINVAL);
  ck_assert_int_eq(pkv_seq_keep(NULL, s), PKV_EINVAL);
  TU_DONE(c);
}
END_TEST

TU_MAIN("seqops",
    {"model", 120, {{model, 0, 4}}},
    {"ops", 0, {{list_and_keep}, {aligned_shift_moves_nothing, 0, 2},
               {unaligned_external_copies}, {shifted_blocks_never_cached}, {full_pool_shift},
               {bad_input}}})
