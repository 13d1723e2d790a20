/*
 * evict.c — the eviction driver, the cache's policy instance, and pins.
 *
 * The driver runs only when an allocation finds the free list empty.  It
 * asks for a victim, validates it (a policy that returns a block in use or
 * not cached is refused: a block with refcount > 0 is never evicted), takes
 * it out of the index (policy on_remove, REMOVED event, children orphaned),
 * and hands it to the pool as free.  The manager counts evictable blocks
 * itself, so an append knows up front whether it can succeed.
 *
 * Orphans — cached blocks whose parent left the index.  Default: keep them
 * and let the policy order them like any other block; the key chain is
 * unchanged, so the block is reachable again as soon as its parent is
 * recomputed and re-registered (a multi-turn conversation whose first block
 * was evicted under pressure keeps its later blocks).  With
 * PKV_CACHE_EVICT_ORPHANS_FIRST the driver first pops a stack of orphan
 * candidates (pushed when a block becomes an evictable orphan), re-checking
 * each lazily — its parent may have been registered again since — and only
 * then consults the policy.  stats.orphan_evictions counts evicted blocks
 * whose parent was absent either way, so the simulator can compare.
 *
 * Pins hold a reference on each pinned block, exactly like a page-table
 * entry: a pinned block is never evictable and never written (copy-on-write
 * treats it as shared).  Pin handles carry a generation like sequences
 * (odd = live); a slot whose generation wraps is retired, never reused.
 */
#include "core.h"

#include <string.h>

int pkv__policy_open(pkv_cache *c) {
  const pkv_policy_ops *ops = c->cfg.policy_ops;
  if (!ops) {
    ops = pkv_policy_find(c->cfg.policy);
    if (!ops)
      return pkv__err(PKV_ENOENT, "config: unknown policy '%s'", c->cfg.policy);
  }
  if (ops->version < PKV_POLICY_VERSION_MIN || ops->version > PKV_POLICY_VERSION)
    return pkv__err(PKV_ENOTSUP, "config: policy ops version %d, this library "
                    "speaks %d..%d", ops->version, PKV_POLICY_VERSION_MIN,
                    PKV_POLICY_VERSION);
  PKV_CHECK(ops->name && ops->create && ops->destroy && ops->on_insert &&
                ops->on_hit && ops->on_evictable && ops->on_pinned &&
                ops->choose_victim && ops->on_remove,
            "config: policy '%s' lacks a name or a hook",
            ops->name ? ops->name : "?");
  void *state = NULL;
  int rc = ops->create(&state, c->num_blocks, c->cfg.policy_args);
  if (rc)
    return pkv__err(rc < 0 ? rc : PKV_EINVAL, "config: policy '%s' create "
                    "failed: %s", ops->name, pkv_strerror(rc));
  c->policy = ops;
  c->policy_state = state;
  return 0;
}

void pkv__policy_close(pkv_cache *c) {
  if (c->policy) c->policy->destroy(c->policy_state);
  c->policy = NULL;
  c->policy_state = NULL;
}

/* An evictable orphan from the candidate stack, or -1. Entries are checked
 * lazily: they may have been referenced, evicted or re-adopted since. */
static int32_t orphan_pop(pkv_cache *c) {
  while (c->n_orphans > 0) {
    int32_t b = c->orphans[--c->n_orphans];
    if (!(c->blk[b].flags & PKV_BLK_ORPHAN_Q)) continue; /* freed since */
    c->blk[b].flags &= (uint16_t)~PKV_BLK_ORPHAN_Q;
    if (PKV_BLOCK_IS_EVICTABLE(c, b) && pkv__block_is_orphan(c, b)) return b;
  }
  return -1;
}

int32_t pkv__evict_one(pkv_cache *c) {
  if (c->n_evictable <= c->n_protected) {
    pkv__err(PKV_ECORRUPT, "eviction: no evictable block");
    return -1;
  }
  int32_t v = -1;
  if (c->quota) {
    if ((v = c->quota_up->victim(c)) < 0) return -1;
  } else if (c->cfg.flags & PKV_CACHE_EVICT_ORPHANS_FIRST) {
    v = orphan_pop(c);
  }
  if (v < 0) {
    v = c->policy->choose_victim(c->policy_state, pkv__now(c));
    if (v < 0) {
      pkv__err(PKV_ECORRUPT, "policy '%s' named no victim (%d) with %u "
               "blocks evictable", c->policy->name, v, c->n_evictable);
      return -1;
    }
    if ((uint32_t)v >= c->num_blocks || !PKV_BLOCK_IS_EVICTABLE(c, v)) {
      pkv__err(PKV_ECORRUPT, "policy '%s' chose block %d, which is not "
               "evictable", c->policy->name, v);
      return -1;
    }
  }
  if (pkv__block_is_orphan(c, v)) c->st.orphan_evictions++;
  if (c->up_demote) c->up_demote(c, v);
  pkv__prefix_remove(c, v, true);
  c->st.evictions++;
  pkv__blocks_release_evicted(c, v);
  return v;
}

/* Takes one block, evicting one if none is free: the pool's free list
 * (blocks.c) knows nothing of eviction, so every allocation that may evict
 * comes through here. */
int32_t pkv__block_take(pkv_cache *c) {
  if (c->free_head < 0 && pkv__evict_one(c) < 0) return -1;
  return pkv__blocks_take_free(c);
}

/* ------------------------------------------------ pins */

#define PIN_HANDLE(idx, gen) (((uint64_t)(gen) << 32) | ((uint64_t)(idx) + 1))

int pkv__test_set_pin_gen(pkv_cache *cache, uint32_t slot, uint32_t gen) {
  PKV_LOCK(cache);
  int rc = 0;
  if (slot >= cache->n_pins || (cache->pins[slot].gen & 1) ||
      cache->pins[slot].retired || (gen & 1))
    rc = pkv__err(PKV_ESTATE, "test_set_pin_gen: slot %u not released or "
                  "gen %u odd", slot, gen);
  else
    cache->pins[slot].gen = gen;
  return pkv__leave_ro(cache, rc);
}

void pkv__pins_destroy(pkv_cache *c) {
  for (uint32_t i = 0; i < c->n_pins; i++) pkv__free(c->pins[i].blocks);
  pkv__free(c->pins);
  c->pins = NULL;
  c->n_pins = c->cap_pins = 0;
}

int pkv_pin_create(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens,
                   pkv_pin_id *out) {
  PKV_ENTER(cache, "pin_create");
  PKV_CHECK(out, "pin_create: out is NULL");
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  int32_t *blocks = NULL;
  uint32_t n = n_tokens / cache->block_size;
  if (n_tokens > s->n_committed || n == 0) {
    rc = pkv__err(PKV_ERANGE, "seq %u: pin of %u tokens needs 1..%u committed "
                  "tokens covering a full block (block_size %u)", s->index,
                  n_tokens, s->n_committed, cache->block_size);
    goto out;
  }
  uint32_t slot = cache->n_pins;
  for (uint32_t i = 0; i < cache->n_pins; i++)
    if (!(cache->pins[i].gen & 1) && !cache->pins[i].retired) {
      slot = i;
      break;
    }
  if (slot == cache->n_pins && cache->n_pins == cache->cap_pins) {
    if (!pkv__grow_u32((void **)&cache->pins, &cache->cap_pins,
                       cache->n_pins + 1ull, sizeof *cache->pins, 8)) {
      rc = pkv__err(PKV_ENOMEM, "pin_create: no memory for the pin table");
      goto out;
    }
  }
  blocks = pkv__malloc(n * sizeof *blocks);
  if (!blocks) {
    rc = pkv__err(PKV_ENOMEM, "pin_create: no memory for %u block ids", n);
    goto out;
  }
  if (slot == cache->n_pins) {
    cache->pins[slot].gen = 0;
    cache->pins[slot].retired = false;
    cache->pins[slot].blocks = NULL;
    cache->n_pins++;
  }
  pkv__pin *p = &cache->pins[slot];
  pkv__free(p->blocks);
  memcpy(blocks, s->blocks, n * sizeof *blocks);
  for (uint32_t i = 0; i < n; i++) {
    int32_t b = blocks[i];
    pkv__block_ref(cache, b);
    if (cache->blk[b].pins++ == 0) cache->n_pinned++;
  }
  p->blocks = blocks;
  p->n_blocks = n;
  s->tail_writable = false;
  p->gen++; /* even -> odd: live */
  *out = PIN_HANDLE(slot, p->gen);
out:
  return pkv__leave(cache, rc);
}

int pkv_pin_release(pkv_cache *cache, pkv_pin_id pin) {
  PKV_ENTER(cache, "pin_release");
  PKV_LOCK(cache);
  int rc = 0;
  uint64_t idx1 = pin & 0xffffffffu;
  uint32_t gen = (uint32_t)(pin >> 32);
  if (idx1 == 0 || idx1 > cache->n_pins || cache->pins[idx1 - 1].gen != gen ||
      !(gen & 1)) {
    rc = pkv__err(PKV_ENOENT, "pin %#llx: unknown or released",
                  (unsigned long long)pin);
    goto out;
  }
  pkv__pin *p = &cache->pins[idx1 - 1];
  for (uint32_t i = p->n_blocks; i-- > 0;) {
    int32_t b = p->blocks[i];
    if (--cache->blk[b].pins == 0) cache->n_pinned--;
    pkv__block_unref(cache, b);
  }
  pkv__free(p->blocks);
  p->blocks = NULL;
  p->n_blocks = 0;
  p->gen++; /* odd -> even: released */
  /* Wrapped to 0: the next pin here would reuse the first handle's
   * generation.  Retire the slot so stale handles stay refused forever. */
  if (p->gen == 0) p->retired = true;
out:
  return pkv__leave(cache, rc);
}
