/*
 * tier/remote.c — the cache's remote tier (Redis) and its two hooks.
 *
 *   evict   cached block b leaves the index ──► gather b's K/V (2 x n_layers
 *           regions) into one buffer ──► tier put (SET key value PX ttl)
 *   match   local chain ends at block k < want ──► keys of blocks k.. chained
 *           from block k-1 ──► tier get, max_batch blocks per round trip
 *           ──► the verified run from k: take a block each, scatter K/V,
 *           tokens into block_tokens, append to the table, then
 *           pkv__prefix_commit_ex hashes and indexes them like a commit
 *
 * All of it runs under the cache lock, like every other mutation; a dead
 * or slow server costs each call at most the tier's timeout (the tier fails
 * at once while its reconnect backoff runs).  A fetch stops at the first
 * block that is not found or does not verify: a prefix is a chain, and a
 * hole ends it.  Owned storage only: in external mode the library holds no
 * K/V.  When the host/file tier chain lands, these hooks become the last
 * link of it.
 */
#include "core.h"
#include "tier/redis.h"

#include <string.h>

typedef struct pkv__remote {
  pkv__tier *tier;
  uint32_t max_batch;    /* blocks per get round trip */
  size_t region_bytes;   /* one block in one K or V region (block_stride) */
  size_t block_bytes;    /* 2 * n_layers * region_bytes */
  uint8_t *stage;        /* max_batch * block_bytes: fetched K/V */
  uint8_t *put_stage;    /* block_bytes: an evicted block's K/V */
  pkv__tier_block *tb;   /* max_batch */
  uint8_t *found;        /* max_batch */
} pkv__remote;

static void remote_free(pkv__remote *r) {
  if (!r) return;
  if (r->tier) r->tier->ops->destroy(r->tier);
  pkv__free(r->stage);
  pkv__free(r->put_stage);
  pkv__free(r->tb);
  pkv__free(r->found);
  pkv__free(r);
}

static void remote_destroy(pkv_cache *c) {
  remote_free(c->remote);
  c->remote = NULL;
}

/* 32-bit fold of a namespace's digest (portable across processes, unlike
 * the interned ns id). */
static uint32_t ns_fold(const pkv_cache *c, uint32_t ns_id) {
  pkv_hash128 d = c->ns[ns_id].digest;
  uint64_t x = d.lo ^ d.hi;
  return (uint32_t)(x ^ (x >> 32));
}

static uint8_t *region(const pkv_cache *c, uint32_t r, int32_t b) {
  return c->kv + (size_t)r * c->kv_region_stride + (size_t)b * c->layout.block_stride;
}

static void remote_demote(pkv_cache *c, int32_t b) {
  pkv__remote *r = c->remote;
  const pkv__block *blk = &c->blk[b];
  if (!(blk->flags & PKV_BLK_HASHED)) return;
  uint32_t n_regions = 2 * c->cfg.n_layers;
  for (uint32_t i = 0; i < n_regions; i++)
    memcpy(r->put_stage + (size_t)i * r->region_bytes, region(c, i, b), r->region_bytes);
  pkv__tier_block tb = {
      .key = blk->key, .parent = blk->parent, .ns_id_hash = ns_fold(c, blk->ns_id),
      .ntok = c->block_size, .tokens = c->block_tokens + (size_t)b * c->block_size,
      .kv = r->put_stage, .kv_bytes = r->block_bytes};
  /* Best effort: a failure is counted by the tier; eviction goes on. */
  (void)r->tier->ops->put(r->tier, &tb, 1);
}

static uint32_t remote_fetch(pkv_cache *c, pkv__seq *s, const int32_t *tokens,
                             uint32_t want) {
  pkv__remote *r = c->remote;
  const uint32_t bs = c->block_size, n_regions = 2 * c->cfg.n_layers;
  const uint32_t ns = ns_fold(c, s->ns_id);
  const uint32_t first = s->n_blocks;
  pkv_hash128 parent = {0, 0};
  if (s->n_blocks > 0) parent = c->blk[s->blocks[s->n_blocks - 1]].key;
  bool more = true;
  while (more && s->n_blocks < want) {
    uint32_t n = want - s->n_blocks;
    if (n > r->max_batch) n = r->max_batch;
    uint32_t avail = pkv__blocks_available(c);
    if (n > avail) n = avail;
    if (n == 0) break;
    for (uint32_t i = 0; i < n; i++) {
      const int32_t *t = tokens + (size_t)(s->n_blocks + i) * bs;
      pkv_hash128 key = pkv__block_key(c, &parent, s->ns_id, t);
      r->tb[i] = (pkv__tier_block){
          .key = key, .parent = parent, .ns_id_hash = ns, .ntok = bs, .tokens = t,
          .kv = r->stage + (size_t)i * r->block_bytes, .kv_bytes = r->block_bytes};
      parent = key;
    }
    if (r->tier->ops->get(r->tier, r->tb, n, r->found) != 0) break;
    for (uint32_t i = 0; i < n; i++) {
      if (!r->found[i]) {
        more = false;
        break;
      }
      int32_t b = pkv__block_take(c); /* may evict (and demote) another block */
      if (b < 0) {
        more = false;
        break;
      }
      for (uint32_t j = 0; j < n_regions; j++)
        memcpy(region(c, j, b), (uint8_t *)r->tb[i].kv + (size_t)j * r->region_bytes,
               r->region_bytes);
      memcpy(c->block_tokens + (size_t)b * bs, r->tb[i].tokens, (size_t)bs * sizeof(int32_t));
      s->blocks[s->n_blocks++] = b;
    }
    if (more) parent = c->blk[s->blocks[s->n_blocks - 1]].key;
  }
  uint32_t added = s->n_blocks - first;
  if (added == 0) return 0;
  s->n_tokens = s->n_known = s->n_committed = s->n_blocks * bs;
  c->sum_tokens += (uint64_t)added * bs;
  c->sum_blocks += added;
  /* Hash and index them as a commit would (their keys are the ones the
   * tier verified; a twin already cached stays beside them). */
  pkv__prefix_commit_ex(c, s, false, true, NULL, NULL);
  return added;
}

static const pkv__remote_ops remote_ops = {
    .demote = remote_demote, .fetch = remote_fetch, .destroy = remote_destroy};

/* ------------------------------------------------ public */

int pkv_cache_set_remote_tier(pkv_cache *cache, const pkv_redis_opts *opts) {
  PKV_ENTER(cache, "set_remote_tier");
  pkv__remote *r = NULL;
  if (opts) {
    if (cache->cfg.storage != PKV_STORAGE_OWNED) /* immutable after create */
      return pkv__err(PKV_ENOTSUP, "set_remote_tier: external storage (the "
                      "library holds no K/V to store)");
    PKV_CHECK(opts->max_batch <= 1024, "set_remote_tier: max_batch %u > 1024",
              opts->max_batch);
    r = pkv__calloc(1, sizeof *r);
    if (!r) return pkv__err(PKV_ENOMEM, "set_remote_tier: out of memory");
    int rc = pkv__redis_tier_create(opts, &r->tier);
    if (rc) {
      pkv__free(r);
      return rc;
    }
    r->max_batch = opts->max_batch ? opts->max_batch : 16;
    r->region_bytes = cache->layout.block_stride;
    r->block_bytes = r->region_bytes * 2 * cache->cfg.n_layers;
    r->stage = pkv__malloc((size_t)r->max_batch * r->block_bytes);
    r->put_stage = pkv__malloc(r->block_bytes);
    r->tb = pkv__calloc(r->max_batch, sizeof *r->tb);
    r->found = pkv__calloc(r->max_batch, 1);
    if (!r->stage || !r->put_stage || !r->tb || !r->found) {
      remote_free(r);
      return pkv__err(PKV_ENOMEM, "set_remote_tier: out of memory for %u "
                      "blocks of staging", r->max_batch);
    }
  }
  if (pkv__lock(cache)) {
    remote_free(r);
    return PKV_EBUSY;
  }
  pkv__remote *old = cache->remote;
  cache->remote = r;
  cache->remote_ops = &remote_ops;
  pkv__unlock(cache);
  remote_free(old);
  return 0;
}

int pkv_cache_remote_stats(pkv_cache *cache, pkv_tier_stats *out) {
  PKV_ENTER(cache, "remote_stats");
  PKV_CHECK(out, "remote_stats: out is NULL");
  PKV_LOCK(cache);
  int rc = 0;
  if (cache->remote)
    cache->remote->tier->ops->stats(cache->remote->tier, out);
  else
    rc = pkv__err(PKV_ENOENT, "remote_stats: no remote tier attached");
  return pkv__leave_ro(cache, rc);
}
