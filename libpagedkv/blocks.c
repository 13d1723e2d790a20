/*
 * blocks.c — the block pool (floor 1 of the manager's stack, core.h): free
 * list, refcounts, copy-on-write copies, and what the policy hears when a
 * block changes state.
 *
 * Every block is in exactly one of three states (named in core.h):
 *
 *          blocks_take_free                  unref to 0, cached
 *   FREE ─────────────────► USED ─────────────────────────► EVICTABLE
 *    ▲  (refcount 0,        (refcount > 0:     ◄───────────  (refcount 0,
 *    │   not cached,         table entries      block_ref    in the index)
 *    │   on the free list)   + pins)                              │
 *    │                         │ unref to 0, not cached           │
 *    ◄─────────────────────────┘                                  │
 *    ◄──────────────────── evict (policy victim) ─────────────────┘
 *
 * Invariants (checked by pkv__cache_is_valid):
 *   - n_free + n_used + n_evictable == num_blocks, where n_used counts
 *     refcount > 0 (cached or not);
 *   - the free list holds exactly the FREE blocks, each once;
 *   - refcount[b] == (entries of b in all page tables) + pins[b];
 *   - n_evictable == number of cached blocks with refcount 0, and the policy
 *     has been told of each (on_evictable) and of nothing else.
 *
 * The free list is an intrusive LIFO stack through blk[].next_free: a just
 * freed block is the warmest one to hand out again.  Allocation and release
 * are O(1); eviction costs one policy call.  This file never evicts: an
 * allocation that may evict is pkv__block_take (evict.c, a floor up), which
 * runs the driver when the free list is empty and then takes from it.  The
 * policy is told of state changes here through its vtable (on_evictable,
 * on_pinned), and evictable orphans are pushed on the ORPHANS_FIRST
 * candidate stack that the driver pops.
 *
 * Copy-on-write: a sequence never writes into a block that is shared
 * (refcount > 1) or cached.  Before its first write it takes a fresh block
 * and copies the slots filled so far — in owned mode the K and V of every
 * layer and head, in external mode a pkv_copy queued for the caller — and
 * the token ids in both (they live beside the block, not in the sequence).
 *
 * A queued copy holds a reference on its source and its destination until
 * pkv_pool_drain_copies hands it to the caller: however lazily the caller
 * drains, the source is not evicted, reused or written in place (its owner
 * sees it shared and copies first), and the destination is not reused for
 * another sequence, so the copy still moves the right K/V when it runs.
 * refcount[b] therefore counts table entries + pins + queued copies naming
 * b; the copies into b do not make b "shared" for its owner, who may write
 * the slots past them (pkv__block_writable_at).
 */
#include "core.h"

#include <string.h>

void pkv__block_meta(pkv_cache *c, int32_t b, pkv_block_meta *m) {
  const pkv__block *blk = &c->blk[b];
  m->now = pkv__now(c);
  m->key = blk->key;
  m->parent = blk->parent;
  m->depth = blk->depth;
  m->priority = blk->priority;
  m->priority_until = blk->priority_until;
  m->parent_block = c->fam[b].parent_block;
}

/* Drops stale entries (blocks freed since they were pushed lose their
 * ORPHAN_Q flag with all their flags) and duplicates (a block freed and
 * queued again), so the stack never holds more than num_blocks entries. */
static void orphan_compact(pkv_cache *c) {
  uint32_t k = 0;
  for (uint32_t i = 0; i < c->n_orphans; i++) {
    int32_t b = c->orphans[i];
    if (!(c->blk[b].flags & PKV_BLK_ORPHAN_Q)) continue;
    c->blk[b].flags &= (uint16_t)~PKV_BLK_ORPHAN_Q; /* keep the first only */
    c->orphans[k++] = b;
  }
  for (uint32_t i = 0; i < k; i++) c->blk[c->orphans[i]].flags |= PKV_BLK_ORPHAN_Q;
  c->n_orphans = k;
}

void pkv__orphan_push(pkv_cache *c, int32_t b) {
  if (!(c->cfg.flags & PKV_CACHE_EVICT_ORPHANS_FIRST)) return;
  pkv__block *blk = &c->blk[b];
  if (blk->flags & PKV_BLK_ORPHAN_Q) return;
  if (c->n_orphans >= c->num_blocks) orphan_compact(c);
  blk->flags |= PKV_BLK_ORPHAN_Q;
  c->orphans[c->n_orphans++] = b;
}

void pkv__block_unhash(pkv_cache *c, int32_t b) {
  pkv__block *blk = &c->blk[b];
  PKV_ASSERT(!PKV_BLOCK_IS_CACHED(c, b));
  PKV_ASSERT(blk->flags & PKV_BLK_HASHED);
  pkv__ns_unref(c, blk->ns_id);
  blk->flags &= (uint16_t)~(PKV_BLK_HASHED | PKV_BLK_ORPHAN);
}

int32_t pkv__blocks_take_free(pkv_cache *c) {
  int32_t b = c->free_head;
  if (b < 0) return -1;
  pkv__block *blk = &c->blk[b];
  PKV_ASSERT(PKV_BLOCK_IS_FREE(c, b));
  c->free_head = blk->next_free;
  blk->next_free = -1;
  c->n_free--;
  c->refcount[b] = 1;
  if (c->quota) c->quota_up->live(c, b, +1);
  return b;
}

/* Puts a FREE block (refcount 0, not cached) on the free list. */
static void pool_push_free(pkv_cache *c, int32_t b) {
  pkv__block *blk = &c->blk[b];
  if (c->quota) c->quota_up->live(c, b, -1);
  if (blk->flags & PKV_BLK_HASHED) pkv__block_unhash(c, b);
  blk->flags = 0;
  blk->next_free = c->free_head;
  c->free_head = b;
  c->n_free++;
}

void pkv__block_ref(pkv_cache *c, int32_t b) {
  if (c->refcount[b] == 0) {
    PKV_ASSERT(PKV_BLOCK_IS_CACHED(c, b));
    c->n_evictable--;
    if (c->quota) c->quota_up->evictable(c, b, -1);
    if (c->policy) {
      pkv_block_meta m;
      pkv__block_meta(c, b, &m);
      c->policy->on_pinned(c->policy_state, b, &m);
    }
  }
  c->refcount[b]++;
}

void pkv__block_unref(pkv_cache *c, int32_t b) {
  PKV_ASSERT(c->refcount[b] > 0);
  if (--c->refcount[b] != 0) return;
  if (PKV_BLOCK_IS_CACHED(c, b)) {
    c->n_evictable++;
    if (c->quota) c->quota_up->evictable(c, b, +1);
    if (c->policy) {
      pkv_block_meta m;
      pkv__block_meta(c, b, &m);
      c->policy->on_evictable(c->policy_state, b, &m);
    }
    if (c->blk[b].flags & PKV_BLK_ORPHAN) pkv__orphan_push(c, b);
  } else {
    pool_push_free(c, b);
  }
}

void pkv__blocks_release_evicted(pkv_cache *c, int32_t b) {
  PKV_ASSERT(PKV_BLOCK_IS_FREE(c, b));
  pool_push_free(c, b);
}

int pkv__copies_reserve(pkv_cache *c, uint32_t extra) {
  if (c->cfg.storage != PKV_STORAGE_EXTERNAL) return 0;
  if (c->copies_head > 0 && c->copies_head + c->copies_len + extra > c->copies_cap) {
    memmove(c->copies, c->copies + c->copies_head,
            c->copies_len * sizeof *c->copies);
    c->copies_head = 0;
  }
  uint64_t need = (uint64_t)c->copies_len + extra;
  if (need <= c->copies_cap) return 0;
  if (need > UINT32_MAX / 2)
    return pkv__err(PKV_ENOMEM, "copy queue full (%u pending copies)",
                    c->copies_len);
  if (!pkv__grow_u32((void **)&c->copies, &c->copies_cap, need,
                     sizeof *c->copies, 16))
    return pkv__err(PKV_ENOMEM, "no memory for the copy queue");
  return 0;
}

void pkv__slots_copy(pkv_cache *c, int32_t src, uint32_t src_slot, int32_t dst,
                     uint32_t dst_slot, uint32_t n_slots) {
  size_t bs = c->block_size;
  PKV_ASSERT(src != dst && src_slot + n_slots <= bs && dst_slot + n_slots <= bs);
  memcpy(c->block_tokens + (size_t)dst * bs + dst_slot,
         c->block_tokens + (size_t)src * bs + src_slot,
         n_slots * sizeof(int32_t));
  if (c->cfg.storage == PKV_STORAGE_EXTERNAL) {
    PKV_ASSERT(c->copies_head + c->copies_len < c->copies_cap);
    pkv_copy *q = &c->copies[c->copies_head + c->copies_len++];
    *q = (pkv_copy){.src_block = src, .dst_block = dst, .n_slots = n_slots,
                    .src_slot = src_slot, .dst_slot = dst_slot};
    /* Hold both ends until the caller has the copy (see pkv__copy_in). */
    pkv__block_ref(c, src);
    pkv__block_ref(c, dst);
    pkv__copy_in *in = &c->copy_in[dst];
    in->n++;
    if (dst_slot + n_slots > in->end) in->end = dst_slot + n_slots;
    return;
  }
  const pkv_kv_layout *L = &c->layout;
  size_t bytes = n_slots * L->slot_stride;
  for (uint32_t r = 0; r < 2 * c->cfg.n_layers; r++) { /* K and V regions */
    uint8_t *base = c->kv + (size_t)r * c->kv_region_stride;
    uint8_t *from = base + (size_t)src * L->block_stride + src_slot * L->slot_stride;
    uint8_t *to = base + (size_t)dst * L->block_stride + dst_slot * L->slot_stride;
    for (uint32_t h = 0; h < c->cfg.n_kv_heads; h++)
      memcpy(to + h * L->head_stride, from + h * L->head_stride, bytes);
  }
}

void pkv__block_copy(pkv_cache *c, int32_t src, int32_t dst, uint32_t n_slots) {
  pkv__slots_copy(c, src, 0, dst, 0, n_slots);
  c->st.cow_copies++;
  c->st.cow_copied_slots += n_slots;
}

/* A copy left the queue: the caller has it, the holds go. */
static void copy_release(pkv_cache *c, const pkv_copy *q) {
  pkv__copy_in *in = &c->copy_in[q->dst_block];
  PKV_ASSERT(in->n > 0);
  if (--in->n == 0) in->end = 0;
  pkv__block_unref(c, q->dst_block);
  pkv__block_unref(c, q->src_block);
}

uint32_t pkv__ring_take(const void *base, size_t elem, uint32_t *head,
                        uint32_t *len, void *out, uint32_t cap) {
  uint32_t n = *len < cap ? *len : cap;
  if (n) memcpy(out, (const uint8_t *)base + (size_t)*head * elem, (size_t)n * elem);
  *head += n;
  *len -= n;
  if (*len == 0) *head = 0;
  return n;
}

int pkv_pool_drain_copies(pkv_cache *cache, pkv_copy *out, uint32_t cap,
                          uint32_t *n_out, uint32_t *pending) {
  PKV_ENTER(cache, "drain_copies");
  PKV_CHECK(n_out, "drain_copies: n_out is NULL");
  PKV_CHECK_OUT(out, cap, "drain_copies");
  PKV_LOCK(cache);
  uint32_t n = pkv__ring_take(cache->copies, sizeof *out, &cache->copies_head,
                              &cache->copies_len, out, cap);
  for (uint32_t i = 0; i < n; i++) copy_release(cache, &out[i]);
  *n_out = n;
  if (pending) *pending = cache->copies_len;
  return pkv__leave(cache, 0);
}
