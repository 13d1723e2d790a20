/*
 * serve.c — the calls a serving scheduler makes every step that are not
 * sequence mutations: the pulled event queue, pool capacity, eviction on
 * demand, the common prefix of a batch (cascade attention), and the
 * release of references a commit dedup deferred.
 *
 * Pulled events.  pkv__emit (prefix.c) appends every event to a ring of
 * config.event_queue_cap entries.  When the ring is full the event is
 * dropped and counted; from then on every event is dropped until the
 * consumer has drained the whole ring, and that drain ends with one
 * PKV_EVENT_LOST {seqno = first lost, n_lost}.  So the stream a consumer
 * sees is gap-free: seqnos are consecutive, a LOST marker standing for the
 * run it replaces.  A consumer that drains every step with a buffer as big
 * as the ring never loses anything.
 *
 * Deferred references.  A dedup remap (pkv_seq_commit_ex) moves the table's
 * reference on the replaced block into blk[].deferred, so the block stays
 * in use (never evicted or reused) while a device may still read it through
 * the table it was given; pkv_blocks_release drops them.  refcount ==
 * table entries + pins + deferred (checked by pkv__cache_is_valid).
 *
 * Capacity: every gauge is a maintained counter (n_free, n_evictable,
 * n_cached, n_deferred, sum_tokens, sum_blocks), so these calls and
 * pkv_stats_get are O(1).
 */
#include "core.h"

#include <string.h>

int pkv_events_drain(pkv_cache *cache, pkv_event *out, uint32_t cap,
                     uint32_t *n_out, uint32_t *pending) {
  PKV_ENTER(cache, "events_drain");
  PKV_CHECK(n_out, "events_drain: n_out is NULL");
  PKV_CHECK_OUT(out, cap, "events_drain");
  if (cache->cfg.event_queue_cap == 0) /* immutable after create */
    return pkv__err(PKV_ENOTSUP, "events_drain: no pull queue "
                    "(config.event_queue_cap is 0)");
  PKV_LOCK(cache);
  uint32_t n = 0;
  while (n < cap && cache->evq_len > 0) {
    out[n++] = cache->evq[cache->evq_head];
    if (++cache->evq_head == cache->evq_cap) cache->evq_head = 0;
    cache->evq_len--;
  }
  if (n < cap && cache->evq_len == 0 && cache->evq_lost > 0) {
    pkv_event *m = &out[n++];
    memset(m, 0, sizeof *m);
    m->type = PKV_EVENT_LOST;
    m->seqno = cache->evq_lost_first;
    m->block = m->old_block = -1;
    m->n_lost = cache->evq_lost;
    cache->evq_lost = 0;
  }
  if (cache->evq_len == 0) cache->evq_head = 0;
  *n_out = n;
  if (pending) *pending = cache->evq_len + (cache->evq_lost > 0);
  return pkv__leave_ro(cache, 0);
}

int pkv_cache_capacity(pkv_cache *cache, pkv_capacity *out) {
  PKV_ENTER(cache, "cache_capacity");
  PKV_CHECK(out, "cache_capacity: out is NULL");
  PKV_LOCK(cache);
  out->num_blocks = cache->num_blocks;
  out->free = cache->n_free;
  out->evictable = cache->n_evictable;
  out->in_use = cache->num_blocks - cache->n_free - cache->n_evictable;
  out->cached = cache->n_cached;
  out->deferred = cache->n_deferred;
  out->usage = (double)out->in_use / cache->num_blocks;
  return pkv__leave_ro(cache, 0);
}

int pkv_evict(pkv_cache *cache, uint32_t n_blocks) {
  PKV_ENTER(cache, "evict");
  PKV_LOCK(cache);
  int rc = 0;
  if (n_blocks > cache->n_evictable - cache->n_protected) {
    rc = pkv__err(PKV_ERANGE, "evict: %u blocks asked, %u evictable (%u kept "
                  "by namespace reservations)", n_blocks,
                  cache->n_evictable - cache->n_protected, cache->n_protected);
  } else {
    for (uint32_t i = 0; i < n_blocks && rc == 0; i++)
      if (pkv__evict_one(cache) < 0) rc = PKV_ECORRUPT; /* policy said why */
  }
  return pkv__leave(cache, rc);
}

int pkv_common_prefix_blocks(pkv_cache *cache, const pkv_seq_id *seqs,
                             uint32_t n_seqs, uint32_t *n_common) {
  PKV_ENTER(cache, "common_prefix_blocks");
  PKV_CHECK(n_common && (seqs || n_seqs == 0), "common_prefix_blocks: seqs or "
            "n_common is NULL");
  PKV_LOCK(cache);
  int rc = 0;
  uint32_t common = 0;
  const pkv__seq *first = NULL;
  for (uint32_t i = 0; i < n_seqs; i++) {
    const pkv__seq *s = pkv__seq_lookup(cache, seqs[i]);
    if (!s) {
      rc = PKV_ENOSEQ;
      goto out;
    }
    if (!first) {
      first = s;
      common = s->n_blocks;
      continue;
    }
    uint32_t k = 0;
    while (k < common && k < s->n_blocks && s->blocks[k] == first->blocks[k]) k++;
    common = k;
  }
  *n_common = common;
out:
  return pkv__leave_ro(cache, rc);
}

int pkv_blocks_release(pkv_cache *cache, const int32_t *blocks,
                       uint32_t n_blocks) {
  PKV_ENTER(cache, "blocks_release");
  PKV_CHECK(blocks || n_blocks == 0, "blocks_release: blocks is NULL");
  PKV_LOCK(cache);
  int rc = 0;
  /* Validate everything before changing anything: ids in range, then
   * occurrences (counted in scratch, which is not kept zeroed between
   * calls, so the listed entries are zeroed first) <= deferred refs. */
  uint32_t *seen = cache->scratch;
  for (uint32_t i = 0; i < n_blocks && rc == 0; i++) {
    int32_t b = blocks[i];
    if (b < 0 || (uint32_t)b >= cache->num_blocks)
      rc = pkv__err(PKV_ENOENT, "blocks_release: entry %u, %d is not a block",
                    i, b);
    else
      seen[b] = 0;
  }
  for (uint32_t i = 0; i < n_blocks && rc == 0; i++) {
    int32_t b = blocks[i];
    if (++seen[b] > cache->blk[b].deferred)
      rc = pkv__err(PKV_ENOENT, "blocks_release: block %d holds %u deferred "
                    "reference(s), listed more often", b,
                    cache->blk[b].deferred);
  }
  if (rc == 0) {
    for (uint32_t j = 0; j < n_blocks; j++) {
      cache->blk[blocks[j]].deferred--;
      cache->n_deferred--;
      pkv__block_unref(cache, blocks[j]);
    }
  }
  return pkv__leave(cache, rc);
}
