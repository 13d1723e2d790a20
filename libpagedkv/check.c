/*
 * check.c — the full invariant validator (pkv_check) and statistics.
 *
 * pkv__cache_is_valid walks every structure and returns false with the first
 * violation as text.  It allocates nothing (its counters live in
 * cache->scratch, sized at create), so it also runs inside the out-of-memory
 * tests.  Checked, in order:
 *   1. sequences: handle table, n_blocks == ceil(n_tokens / bs),
 *      n_hashed * bs <= n_committed <= n_known <= n_tokens, block ids in
 *      range, the blocks over lookahead slots writable and unhashed, and
 *      the maintained sums of lengths and table sizes;
 *   2. pins: block ids in range, blk[].pins == number of pin entries;
 *   3. refcount[b] == page-table entries of b + pins of b + queued copies
 *      naming b (source or destination) + deferred references;
 *   4. state counts: free + used + evictable == num_blocks, the free list
 *      holds exactly the FREE blocks once each, n_evictable and n_cached
 *      match, a FREE block carries no flags;
 *   5. prefix index: every chain entry is a cached block in its own bucket,
 *      every cached block is reached once, its key recomputes from its
 *      stored parent, namespace and token ids (a cached block is never
 *      rewritten), its namespace slot is live;
 *   6. the copy queue: within its capacity, empty in owned mode, and each
 *      block's count and reach of the copies into it; the event queue
 *      within its capacity;
 *   7. the policy: choose_victim names a candidate (-1 exactly when there
 *      is none), and the policy's own check (version-2 hook, every
 *      built-in has one) finds its lists equal to the evictable set.
 * O(num_blocks * block_size + total table length).
 */
#include "core.h"
#include "policy/util.h" /* pkv__policy_check_fail */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Writes the reason into msg and returns false (the policies' check hooks
 * format theirs the same way: policy/util.c). */
#define fail(msg, cap, ...) \
  (pkv__policy_check_fail(msg, cap, __VA_ARGS__), false)

/* 7. the policy: its victim is a candidate (or -1 exactly when there is
 * none), and its own check, if it has one, agrees on the candidate set. */
static bool policy_is_valid(pkv_cache *c, char *msg, size_t cap) {
  if (!c->policy) return true;
  const uint32_t nb = c->num_blocks;
  int32_t v = c->policy->choose_victim(c->policy_state, pkv__now(c));
  if (c->n_evictable == 0 ? v != -1
                          : (v < 0 || (uint32_t)v >= nb || !PKV_BLOCK_IS_EVICTABLE(c, v)))
    return fail(msg, cap, "policy '%s' would evict block %d with %u candidates",
                c->policy->name, v, c->n_evictable);
  int (*check)(const void *, const uint8_t *, uint32_t, char *, size_t) =
      PKV__POLICY_HOOK_V2(c->policy, check);
  if (!check) return true;
  uint8_t *ev = (uint8_t *)c->scratch; /* nb bytes fit in nb counters */
  for (uint32_t b = 0; b < nb; b++) ev[b] = PKV_BLOCK_IS_EVICTABLE(c, b);
  char detail[200] = "";
  if (check(c->policy_state, ev, nb, detail, sizeof detail) == 0) return true;
  return fail(msg, cap, "policy '%s': %s", c->policy->name, detail);
}

static bool core_is_valid(pkv_cache *c, char *msg, size_t cap) {
  const uint32_t nb = c->num_blocks, bs = c->block_size;
  uint32_t *refs = c->scratch;
  memset(refs, 0, nb * sizeof *refs);

  /* 1. sequences */
  uint32_t live = 0;
  uint64_t sum_tokens = 0, sum_blocks = 0;
  for (uint32_t i = 0; i < c->seq_cap; i++) {
    pkv__seq *s = c->seqs[i];
    if (!s) continue;
    live++;
    if (s->index != i) return fail(msg, cap, "seq slot %u holds index %u", i, s->index);
    if (s->ns_id >= c->n_ns || c->ns[s->ns_id].refs == 0)
      return fail(msg, cap, "seq %u: dead namespace %u", i, s->ns_id);
    uint64_t want = ((uint64_t)s->n_tokens + bs - 1) / bs;
    if (s->n_blocks != want)
      return fail(msg, cap, "seq %u: %u blocks for %u tokens (want %llu)", i,
                  s->n_blocks, s->n_tokens, (unsigned long long)want);
    if (s->n_committed > s->n_known || s->n_known > s->n_tokens)
      return fail(msg, cap, "seq %u: committed %u, known %u, length %u out "
                  "of order", i, s->n_committed, s->n_known, s->n_tokens);
    sum_tokens += s->n_tokens;
    sum_blocks += s->n_blocks;
    for (uint32_t j = s->n_known / bs; s->n_known < s->n_tokens && j < s->n_blocks; j++) {
      int32_t b = s->blocks[j];
      uint32_t from = j == s->n_known / bs ? s->n_known % bs : 0;
      if (b >= 0 && (uint32_t)b < nb &&
          (!pkv__block_writable_at(c, b, from) ||
           (c->blk[b].flags & PKV_BLK_HASHED)))
        return fail(msg, cap, "seq %u: entry %u (block %d) holds lookahead "
                    "slots but is shared, cached or hashed", i, j, b);
    }
    if (s->n_hashed > s->index_limit)
      return fail(msg, cap, "seq %u: %u hashed blocks past its shift limit %u",
                  i, s->n_hashed, s->index_limit);
    if ((uint64_t)s->n_hashed * bs > s->n_committed)
      return fail(msg, cap, "seq %u: %u hashed blocks > committed %u", i,
                  s->n_hashed, s->n_committed);
    if (s->gen != c->seq_gen[i])
      return fail(msg, cap, "seq %u: generation %u, slot says %u", i, s->gen,
                  c->seq_gen[i]);
    if (s->tail_writable &&
        (s->n_blocks == 0 || s->tail != s->blocks[s->n_blocks - 1] ||
         !PKV_BLOCK_IS_WRITABLE(c, s->tail) ||
         (c->blk[s->tail].flags & PKV_BLK_HASHED)))
      return fail(msg, cap, "seq %u: tail marked writable but block %d is "
                  "shared, cached or hashed", i, s->n_blocks ? s->blocks[s->n_blocks - 1] : -1);
    for (uint32_t j = 0; j < s->n_blocks; j++) {
      int32_t b = s->blocks[j];
      if (b < 0 || (uint32_t)b >= nb)
        return fail(msg, cap, "seq %u: entry %u = block %d out of range", i, j, b);
      refs[b]++;
      if (j < s->n_hashed && !(c->blk[b].flags & PKV_BLK_HASHED))
        return fail(msg, cap, "seq %u: entry %u (block %d) counted hashed but "
                    "has no key", i, j, b);
    }
  }
  if (live != c->n_seqs)
    return fail(msg, cap, "n_seqs %u but %u live sequences", c->n_seqs, live);
  if (sum_tokens != c->sum_tokens || sum_blocks != c->sum_blocks)
    return fail(msg, cap, "sums: %llu tokens / %llu blocks in tables, "
                "counters say %llu / %llu", (unsigned long long)sum_tokens,
                (unsigned long long)sum_blocks,
                (unsigned long long)c->sum_tokens,
                (unsigned long long)c->sum_blocks);
  if ((uint64_t)live + c->n_seq_free + c->n_seq_retired != c->seq_cap)
    return fail(msg, cap, "%u live + %u free + %u retired handle slots != %u",
                live, c->n_seq_free, c->n_seq_retired, c->seq_cap);
  for (uint32_t i = 0; i < c->n_seq_free; i++) {
    uint32_t slot = c->seq_free[i];
    if (slot >= c->seq_cap || c->seqs[slot] || c->seq_gen[slot] == 0)
      return fail(msg, cap, "free handle slot %u is live or retired", slot);
  }

  /* 2. pins */
  uint32_t pinned = 0;
  for (uint32_t b = 0; b < nb; b++) pinned += c->blk[b].pins > 0;
  if (pinned != c->n_pinned)
    return fail(msg, cap, "n_pinned %u but %u blocks carry pins", c->n_pinned,
                pinned);
  {
    /* Pin entries in total == pins counted on blocks; the per-block split
     * is covered by the refcount check below. */
    uint64_t entries = 0, sum = 0;
    for (uint32_t p = 0; p < c->n_pins; p++) {
      if (!(c->pins[p].gen & 1)) continue;
      for (uint32_t j = 0; j < c->pins[p].n_blocks; j++) {
        int32_t b = c->pins[p].blocks[j];
        if (b < 0 || (uint32_t)b >= nb)
          return fail(msg, cap, "pin %u: block %d out of range", p, b);
        entries++;
      }
    }
    for (uint32_t b = 0; b < nb; b++) sum += c->blk[b].pins;
    if (entries != sum)
      return fail(msg, cap, "%llu pin entries but blocks count %llu pins",
                  (unsigned long long)entries, (unsigned long long)sum);
  }

  /* 3. refcounts (queued copies hold their source and destination);
   * 4. states */
  if ((uint64_t)c->copies_head + c->copies_len > c->copies_cap)
    return fail(msg, cap, "copy queue [%u, +%u) beyond capacity %u",
                c->copies_head, c->copies_len, c->copies_cap);
  for (uint32_t i = 0; i < c->copies_len; i++) {
    const pkv_copy *q = &c->copies[c->copies_head + i];
    if (q->src_block < 0 || (uint32_t)q->src_block >= nb || q->dst_block < 0 ||
        (uint32_t)q->dst_block >= nb || q->src_block == q->dst_block ||
        (uint64_t)q->src_slot + q->n_slots > bs ||
        (uint64_t)q->dst_slot + q->n_slots > bs)
      return fail(msg, cap, "queued copy %u (%d+%u -> %d+%u, %u slots) out of "
                  "range", i, q->src_block, q->src_slot, q->dst_block,
                  q->dst_slot, q->n_slots);
    refs[q->src_block]++;
    refs[q->dst_block]++;
  }
  uint32_t n_free = 0, n_used = 0, n_evictable = 0, n_cached = 0;
  uint64_t n_deferred = 0;
  for (uint32_t b = 0; b < nb; b++) {
    const pkv__block *blk = &c->blk[b];
    if (c->refcount[b] != refs[b] + blk->pins + blk->deferred)
      return fail(msg, cap, "block %u: refcount %u != %u table refs and "
                  "queued copies + %u pins + %u deferred", b, c->refcount[b],
                  refs[b], blk->pins, blk->deferred);
    n_deferred += blk->deferred;
    if (PKV_BLOCK_IS_CACHED(c, b)) {
      n_cached++;
      if (!(blk->flags & PKV_BLK_HASHED))
        return fail(msg, cap, "block %u: cached without a key", b);
    }
    if (PKV_BLOCK_IS_FREE(c, b)) {
      n_free++;
      if (blk->flags)
        return fail(msg, cap, "free block %u has flags 0x%x", b, blk->flags);
    } else if (PKV_BLOCK_IS_EVICTABLE(c, b)) {
      n_evictable++;
    } else {
      n_used++;
    }
  }
  if (n_deferred != c->n_deferred)
    return fail(msg, cap, "n_deferred %u but blocks hold %llu", c->n_deferred,
                (unsigned long long)n_deferred);
  if (n_free + n_used + n_evictable != nb)
    return fail(msg, cap, "free %u + used %u + evictable %u != %u blocks",
                n_free, n_used, n_evictable, nb);
  if (n_free != c->n_free)
    return fail(msg, cap, "n_free %u but %u blocks are free", c->n_free, n_free);
  if (n_evictable != c->n_evictable)
    return fail(msg, cap, "n_evictable %u but %u blocks are evictable",
                c->n_evictable, n_evictable);
  if (n_cached != c->n_cached)
    return fail(msg, cap, "n_cached %u but %u blocks are cached", c->n_cached,
                n_cached);
  /* The free list: refs[] is reused as a visited mark. */
  memset(refs, 0, nb * sizeof *refs);
  uint32_t walked = 0;
  for (int32_t b = c->free_head; b >= 0; b = c->blk[b].next_free) {
    if ((uint32_t)b >= nb) return fail(msg, cap, "free list: block %d out of range", b);
    if (refs[b]++) return fail(msg, cap, "free list: block %d twice (cycle)", b);
    if (!PKV_BLOCK_IS_FREE(c, b))
      return fail(msg, cap, "free list: block %d is not free (refcount %u)", b,
                  c->refcount[b]);
    if (++walked > nb) return fail(msg, cap, "free list longer than the pool");
  }
  if (walked != n_free)
    return fail(msg, cap, "free list holds %u blocks, %u are free", walked,
                n_free);

  /* 5. prefix index */
  memset(refs, 0, nb * sizeof *refs);
  uint32_t reached = 0;
  if (c->heads) {
    for (uint32_t h = 0; h <= c->hash_mask; h++) {
      for (int32_t b = c->heads[h]; b >= 0; b = c->blk[b].hash_next) {
        if ((uint32_t)b >= nb)
          return fail(msg, cap, "index bucket %u: block %d out of range", h, b);
        if (!PKV_BLOCK_IS_CACHED(c, b))
          return fail(msg, cap, "index bucket %u: block %d not cached", h, b);
        if (pkv__bucket(c, c->blk[b].key) != h)
          return fail(msg, cap, "index: block %d in bucket %u, key says %llu",
                      b, h, (unsigned long long)pkv__bucket(c, c->blk[b].key));
        if (refs[b]++) return fail(msg, cap, "index: block %d reached twice", b);
        if (++reached > nb) return fail(msg, cap, "index chains cycle");
      }
    }
  }
  if (reached != n_cached)
    return fail(msg, cap, "index reaches %u blocks, %u are cached", reached,
                n_cached);
  for (uint32_t b = 0; b < nb; b++) {
    const pkv__block *blk = &c->blk[b];
    if (!(blk->flags & PKV_BLK_HASHED)) continue;
    if (blk->ns_id >= c->n_ns || c->ns[blk->ns_id].refs == 0)
      return fail(msg, cap, "block %u: dead namespace %u", b, blk->ns_id);
    if (!(blk->flags & PKV_BLK_CACHED)) continue;
    pkv_hash128 k = pkv__block_key(c, &blk->parent, blk->ns_id,
                                   c->block_tokens + (size_t)b * bs);
    if (k.lo != blk->key.lo || k.hi != blk->key.hi)
      return fail(msg, cap, "cached block %u was modified (key no longer "
                  "matches its token ids)", b);
  }

  /* Namespace table: every live entry reachable once through its digest
   * bucket, every free one on the free list. */
  {
    uint32_t live_ns = 0, reached_ns = 0, free_ns = 0;
    for (uint32_t i = 0; i < c->n_ns; i++) live_ns += c->ns[i].refs > 0;
    for (uint32_t h = 0; c->ns_heads && h <= c->ns_mask; h++)
      for (uint32_t i = c->ns_heads[h]; i != UINT32_MAX; i = c->ns[i].next) {
        if (i >= c->n_ns || c->ns[i].refs == 0 ||
            ((uint32_t)c->ns[i].digest.lo & c->ns_mask) != h)
          return fail(msg, cap, "namespace index: bad entry %u in bucket %u", i, h);
        if (++reached_ns > c->n_ns) return fail(msg, cap, "namespace chains cycle");
      }
    for (uint32_t i = c->ns_free; i != UINT32_MAX; i = c->ns[i].next) {
      if (i >= c->n_ns || c->ns[i].refs != 0)
        return fail(msg, cap, "namespace free list: bad entry %u", i);
      if (++free_ns > c->n_ns) return fail(msg, cap, "namespace free list cycles");
    }
    if (reached_ns != live_ns || live_ns + free_ns != c->n_ns)
      return fail(msg, cap, "namespaces: %u live, %u indexed, %u free of %u",
                  live_ns, reached_ns, free_ns, c->n_ns);
  }

  /* 6. copies: each block's record of the copies into it */
  if (c->cfg.storage == PKV_STORAGE_OWNED && c->copies_len)
    return fail(msg, cap, "owned mode has %u queued copies", c->copies_len);
  if (c->copy_in) {
    memset(refs, 0, nb * sizeof *refs);
    for (uint32_t i = 0; i < c->copies_len; i++) {
      const pkv_copy *q = &c->copies[c->copies_head + i];
      refs[q->dst_block]++;
      if (q->dst_slot + q->n_slots > c->copy_in[q->dst_block].end)
        return fail(msg, cap, "block %d: queued copy reaches slot %u, block "
                    "records %u", q->dst_block, q->dst_slot + q->n_slots,
                    c->copy_in[q->dst_block].end);
    }
    for (uint32_t b = 0; b < nb; b++)
      if (c->copy_in[b].n != refs[b] || (refs[b] == 0 && c->copy_in[b].end))
        return fail(msg, cap, "block %u: records %u queued copies into it "
                    "(end %u), the queue has %u", b, c->copy_in[b].n,
                    c->copy_in[b].end, refs[b]);
  }
  if (c->evq_len > c->evq_cap || (c->evq_cap && c->evq_head >= c->evq_cap))
    return fail(msg, cap, "event queue [%u, +%u) beyond capacity %u",
                c->evq_head, c->evq_len, c->evq_cap);
  return true;
}

bool pkv__cache_is_valid(pkv_cache *c, char *msg, size_t cap) {
  return core_is_valid(c, msg, cap) && policy_is_valid(c, msg, cap) &&
         (!c->quota || pkv__quota_is_valid(c, msg, cap));
}

/* PKV_DEBUG=2 validates after every mutation of caches up to 2^16 slots;
 * a larger cache is validated after every k-th mutation, k = slots / 2^16,
 * so the validator's O(slots) cost stays a bounded factor of the work (a
 * 130k-block, 512-token-block simulation would otherwise take hours). */
void pkv__assert_valid(pkv_cache *c, const char *file, int line) {
  uint64_t every = ((uint64_t)c->num_blocks * c->block_size) >> 16;
  if (every > 1 && ++c->debug_mutations % every != 0) return;
  char msg[256];
  /* The library's own policies are checked too; a user's policy only by
   * pkv_check (a test may install a broken one on purpose). */
  if (!core_is_valid(c, msg, sizeof msg) ||
      (pkv__policy_is_builtin(c->policy) && !policy_is_valid(c, msg, sizeof msg)))
    pkv__assert_fail("pkv__cache_is_valid(cache)", file, line, msg);
}

int pkv_check(pkv_cache *cache, char *msg, size_t msg_cap) {
  pkv__err_clear();
  if (msg && msg_cap) msg[0] = '\0';
  PKV_CHECK(cache, "check: cache is NULL");
  PKV_LOCK(cache);
  bool ok = pkv__cache_is_valid(cache, msg, msg_cap);
  pkv__unlock(cache);
  if (ok) return 0;
  return pkv__err(PKV_ECORRUPT, "check: %s", msg ? msg : "invariant violated");
}

int pkv_stats_get(pkv_cache *cache, pkv_stats *out) {
  PKV_ENTER(cache, "stats_get");
  PKV_CHECK(out, "stats_get: out is NULL");
  PKV_LOCK(cache);
  pkv_stats st = cache->st;
  const uint32_t bs = cache->block_size;
  st.num_blocks = cache->num_blocks;
  st.block_size = bs;
  st.blocks_free = cache->n_free;
  st.blocks_evictable = cache->n_evictable;
  st.blocks_used = cache->num_blocks - cache->n_free - cache->n_evictable;
  st.blocks_cached = cache->n_cached;
  st.blocks_pinned = cache->n_pinned;
  st.n_seqs = cache->n_seqs;
  st.slots_reserved = (uint64_t)st.blocks_used * bs;
  st.kv_bytes = cache->kv_bytes;
  st.tokens = cache->sum_tokens;
  st.waste_slots = cache->sum_blocks * bs - cache->sum_tokens;
  st.blocks_deferred = cache->n_deferred;
  st.events_queued = cache->evq_len;
  pkv__unlock(cache);
  pkv__alloc_stats(st.allocator, sizeof st.allocator, &st.allocator_bytes);
  *out = st;
  return 0;
}
