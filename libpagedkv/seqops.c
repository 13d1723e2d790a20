/*
 * seqops.c — the sequence operations llama.cpp users expect: list the live
 * sequences, keep one and drop the rest, and remove a range of positions
 * (context shift).
 *
 * Context shift, pkv_seq_remove_range(seq, begin, end), d = end - begin:
 *
 *   before   [0 ........ begin)[begin ... end)[end ............ n)
 *   after    [0 ........ begin)[end - d ...................... n - d)
 *
 * Token ids and K/V of positions >= end move down by d; nothing is
 * recomputed, so each moved K keeps the rotary embedding of its old
 * position (the engine re-rotates by -d, as llama.cpp's K-shift does).
 * Two ways, chosen per call:
 *
 *   - block-aligned (begin and d multiples of block_size): the table drops
 *     the d / block_size entries and the later entries slide down — no
 *     copy, no new block, the moved blocks keep their ids;
 *   - otherwise every table entry from begin's block on is rebuilt into
 *     fresh blocks by slot copies (owned storage: done at once; external:
 *     queued pkv_copy with slot offsets, which hold their blocks until
 *     drained).  New block j is filled, then the old blocks no later new
 *     block reads are released, so in owned storage the sequence needs at
 *     most one block more than it had at any moment (a dry run checks the
 *     pool first: all or nothing).  External storage keeps the old blocks
 *     until the copies are drained, so it needs the new blocks in full.
 *
 * The moved K/V was computed in a context that included the removed
 * tokens, so it must never be served as the K/V of the new token sequence:
 * the sequence's table entries from begin's block on never enter the prefix
 * index afterwards (pkv__seq.index_limit), whatever is committed.
 */
#include "core.h"

#include <string.h>

int pkv_seq_list(pkv_cache *cache, pkv_seq_id *out, uint32_t cap,
                 uint32_t *n_seqs) {
  PKV_ENTER(cache, "seq_list");
  PKV_CHECK(n_seqs, "seq_list: n_seqs is NULL");
  PKV_CHECK_OUT(out, cap, "seq_list");
  PKV_LOCK(cache);
  int rc = 0;
  uint32_t n = cache->n_seqs;
  if (cap < n) {
    rc = pkv__err(PKV_ENOSPC, "seq_list: %u sequences do not fit in cap %u",
                  n, cap);
  } else {
    uint32_t k = 0;
    for (uint32_t i = 0; i < cache->seq_cap && k < n; i++)
      if (cache->seqs[i]) out[k++] = PKV_SEQ_HANDLE(i, cache->seqs[i]->gen);
  }
  *n_seqs = n;
  return pkv__leave_ro(cache, rc);
}

int pkv_seq_keep(pkv_cache *cache, pkv_seq_id seq) {
  PKV_ENTER(cache, "seq_keep");
  PKV_LOCK_SEQ(cache, seq, keep);
  for (uint32_t i = 0; i < cache->seq_cap; i++) {
    pkv__seq *s = cache->seqs[i];
    if (s && s != keep) pkv__seq_release(cache, s);
  }
  return pkv__leave(cache, 0);
}

/* The old position whose K/V new position p lands on. */
static inline uint32_t shift_src(uint32_t p, uint32_t begin, uint32_t d) {
  return p < begin ? p : p + d;
}

/* End (exclusive) of the old positions new block j reads. */
static uint64_t read_end(uint32_t j, uint32_t bs, uint32_t new_len,
                         uint32_t begin, uint32_t d) {
  uint64_t last = (uint64_t)(j + 1) * bs;
  if (last > new_len) last = new_len;
  return (uint64_t)shift_src((uint32_t)last - 1, begin, d) + 1;
}

/* The blocks the copy path needs from the pool, at its peak. */
static uint64_t shift_peak(const pkv_cache *c, const pkv__seq *s,
                           uint32_t kb, uint32_t new_nb, uint32_t begin,
                           uint32_t d) {
  const uint32_t bs = c->block_size;
  bool external = c->cfg.storage == PKV_STORAGE_EXTERNAL;
  uint64_t held = 0, peak = 0;
  uint32_t next_old = kb;
  for (uint32_t j = kb; j < new_nb; j++) {
    if (++held > peak) peak = held;
    uint64_t end = read_end(j, bs, s->n_tokens - d, begin, d);
    for (; next_old < s->n_blocks && (uint64_t)(next_old + 1) * bs <= end; next_old++)
      if (!external && c->refcount[s->blocks[next_old]] == 1 && held > 0)
        held--; /* our reference was its only one: it returns to the pool */
  }
  return peak;
}

/* Rebuilds table entries [kb, new_nb) of s from fresh blocks; the pool and
 * copy queue have been checked to suffice, so only a policy fault (a victim
 * in use: PKV_ECORRUPT, error set) stops it early.  Returns the number of
 * table entries now valid; every old block past them is released. */
static uint32_t shift_copy(pkv_cache *c, pkv__seq *s, int32_t *old,
                           uint32_t kb, uint32_t new_nb, uint32_t begin,
                           uint32_t d) {
  const uint32_t bs = c->block_size, old_nb = s->n_blocks;
  const uint32_t new_len = s->n_tokens - d;
  uint32_t next_old = kb;
  c->take_ns = s->ns_id; /* quotas count the blocks it holds */
  for (uint32_t j = kb; j < new_nb; j++) {
    int32_t nb = pkv__block_take(c);
    if (nb < 0) {
      for (; next_old < old_nb; next_old++) pkv__block_unref(c, old[next_old - kb]);
      return j;
    }
    uint32_t p = j * bs, stop = (j + 1) * bs < new_len ? (j + 1) * bs : new_len;
    while (p < stop) {
      uint32_t src = shift_src(p, begin, d);
      uint32_t len = stop - p;
      if (p < begin && begin - p < len) len = begin - p;
      if (bs - src % bs < len) len = bs - src % bs;
      pkv__slots_copy(c, old[src / bs - kb], src % bs, nb, p % bs, len);
      p += len;
    }
    s->blocks[j] = nb;
    uint64_t end = read_end(j, bs, new_len, begin, d);
    for (; next_old < old_nb && (uint64_t)(next_old + 1) * bs <= end; next_old++)
      pkv__block_unref(c, old[next_old - kb]);
  }
  for (; next_old < old_nb; next_old++) pkv__block_unref(c, old[next_old - kb]);
  c->st.shift_copied_slots += (uint64_t)(new_len - kb * bs);
  return new_nb;
}

int pkv_seq_remove_range(pkv_cache *cache, pkv_seq_id seq, uint32_t begin,
                         uint32_t end) {
  PKV_ENTER(cache, "seq_remove_range");
  if (begin > end)
    return pkv__err(PKV_ERANGE, "seq_remove_range: begin %u > end %u", begin,
                    end);
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  int32_t *old = NULL;
  if (end > s->n_tokens) {
    rc = pkv__err(PKV_ERANGE, "seq %u: remove [%u, %u) past length %u",
                  s->index, begin, end, s->n_tokens);
    goto out;
  }
  if (s->n_known < s->n_tokens) {
    rc = pkv__err(PKV_ESTATE, "seq %u: %u lookahead slots reserved (fill or "
                  "truncate them before a context shift)", s->index,
                  s->n_tokens - s->n_known);
    goto out;
  }
  if (begin == end) goto out;
  const uint32_t bs = cache->block_size, d = end - begin;
  const uint32_t old_nb = s->n_blocks, kb = begin / bs;
  const bool moved = end < s->n_tokens;
  uint32_t new_len = s->n_tokens - d;
  uint32_t new_nb = (uint32_t)(((uint64_t)new_len + bs - 1) / bs);
  if (!moved) {
    /* Nothing moves: the tail goes, as truncate would drop it. */
    for (uint32_t i = old_nb; i-- > new_nb;) pkv__block_unref(cache, s->blocks[i]);
  } else if (begin % bs == 0 && d % bs == 0) {
    /* Whole blocks: drop them, slide the later entries down. */
    uint32_t gone = d / bs;
    for (uint32_t i = kb; i < kb + gone; i++) pkv__block_unref(cache, s->blocks[i]);
    memmove(s->blocks + kb, s->blocks + kb + gone,
            (old_nb - kb - gone) * sizeof *s->blocks);
  } else {
    uint64_t peak = shift_peak(cache, s, kb, new_nb, begin, d);
    if (peak > pkv__blocks_available(cache)) {
      rc = pkv__err(PKV_ENOMEM, "seq %u: context shift of [%u, %u) needs %llu "
                    "blocks, %u available", s->index, begin, end,
                    (unsigned long long)peak, pkv__blocks_available(cache));
      goto out;
    }
    if ((rc = pkv__copies_reserve(cache, 2 * (new_nb - kb) + 1)) != 0) goto out;
    old = pkv__malloc((old_nb - kb) * sizeof *old);
    if (!old) {
      rc = pkv__err(PKV_ENOMEM, "seq %u: no memory for a context shift",
                    s->index);
      goto out;
    }
    memcpy(old, s->blocks + kb, (old_nb - kb) * sizeof *old);
    uint32_t made = shift_copy(cache, s, old, kb, new_nb, begin, d);
    if (made < new_nb) {
      /* A policy fault: keep what was moved, consistently (the sequence
       * ends where the rebuilt entries end). */
      rc = PKV_ECORRUPT;
      new_nb = made;
      if (new_len > made * bs) new_len = made * bs;
    }
  }
  cache->sum_tokens -= s->n_tokens - new_len;
  cache->sum_blocks -= old_nb - new_nb;
  s->n_blocks = new_nb;
  s->n_tokens = s->n_known = new_len;
  s->tail_writable = false;
  if (s->n_committed > begin) s->n_committed = begin;
  if (s->n_hashed > begin / bs) s->n_hashed = begin / bs;
  if (moved && kb < s->index_limit) s->index_limit = kb;
  cache->st.range_removals++;
out:
  pkv__free(old);
  return pkv__leave(cache, rc);
}
