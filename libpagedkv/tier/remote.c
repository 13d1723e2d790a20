/*
 * tier/remote.c — the Redis tier as the chain's last link (PKV_TIER_REDIS).
 *
 *   demote (pool, host or file victim) ──► put: copied into the call's
 *          batch (no I/O) ──► pkv__leave, after the cache lock is released:
 *          one pipelined SET round trip for the whole batch (flush)
 *   promote (tier.c) ──► contains_n: one pipelined STRLEN round trip for
 *          the run ──► get: the run's verified GETs, one pipeline
 *
 * The link wraps the store (redis.c) and adds write-behind batching, so
 * that the network writes of a call happen outside the cache lock: a call
 * that evicts k blocks into Redis copies them into the link's batch under
 * the lock and sends them in one pipeline after releasing it (a call that
 * queued nothing returns from the flush at once).  pkv_seq_match_prefix
 * makes its promotion round trips without the lock too (tier.c).  What the
 * lock is still held across: pkv_prefix_promote's round trips, and a batch
 * that fills up within one call (max_batch blocks: it is sent at once,
 * under the lock, to bound the memory).  A block demoted but not yet
 * flushed is invisible to promotion (a concurrent match misses it; it is
 * never wrong).  The store has one connection: a flush waits for a fetch
 * in flight and the reverse (without the cache lock).
 *
 * Detach (pkv_cache_set_remote_tier NULL or a replacement) flushes and
 * closes the store, but keeps the link's shell until the cache is destroyed
 * (tier.c keeps it in a list): a thread that released the lock a moment
 * before may still enter the flush with its pointer, and finds it empty.
 *
 * Owned storage only: in external mode the library holds no K/V.
 */
#include "tier/redis.h"

#include <pthread.h>
#include <string.h>

typedef struct batch {
  pkv__tier_block *b;
  uint8_t *data;  /* max_batch x (tokens + kv) */
  uint32_t n;
} batch;

typedef struct link {
  pkv__tier base;
  pkv__tier *store;      /* redis.c; NULL once detached */
  uint32_t max_batch, block_size;
  size_t kv_bytes, slot_bytes;
  pthread_mutex_t fill_mu;   /* `fill` */
  pthread_mutex_t flush_mu;  /* one flusher at a time (owns `spare`); the
                                fetches hold it to keep `store` alive */
  batch fill, spare;
  uint64_t promotions;
} link_t;

static void batch_free(batch *q) {
  pkv__free(q->b);
  pkv__free(q->data);
}

static bool batch_alloc(link_t *l, batch *q) {
  q->b = pkv__calloc(l->max_batch, sizeof *q->b);
  q->data = pkv__malloc((size_t)l->max_batch * l->slot_bytes);
  return q->b && q->data;
}

/* Sends q (then empties it); the store counts what failed. */
static void batch_send(link_t *l, batch *q) {
  if (q->n && l->store && l->store->ops->put(l->store, q->b, q->n) != 0)
    pkv__err_clear(); /* best effort: counted by the store */
  q->n = 0;
}

/* After the lock: send what the call queued. */
void pkv__remote_flush(void *arg) {
  link_t *l = arg;
  /* Nothing queued (most calls): return at once, not behind a flush or a
   * promotion's fetch that holds flush_mu.  A put queued after this look
   * is sent by its own call's flush. */
  pthread_mutex_lock(&l->fill_mu);
  uint32_t queued = l->fill.n;
  pthread_mutex_unlock(&l->fill_mu);
  if (queued == 0) return;
  pthread_mutex_lock(&l->flush_mu);
  pthread_mutex_lock(&l->fill_mu);
  batch t = l->fill;
  l->fill = l->spare;
  l->spare = t;
  pthread_mutex_unlock(&l->fill_mu);
  batch_send(l, &l->spare);
  pthread_mutex_unlock(&l->flush_mu);
}

static int link_put(pkv__tier *tier, const pkv__tier_block *b, size_t n) {
  link_t *l = (link_t *)tier;
  pthread_mutex_lock(&l->fill_mu);
  for (size_t i = 0; i < n && l->store; i++) {
    if (b[i].ntok != l->block_size || b[i].kv_bytes != l->kv_bytes) continue;
    batch *q = &l->fill;
    if (q->n == l->max_batch) batch_send(l, q); /* full: now, under the lock */
    uint8_t *slot = q->data + (size_t)q->n * l->slot_bytes;
    size_t tok = (size_t)b[i].ntok * sizeof(int32_t);
    memcpy(slot, b[i].tokens, tok);
    memcpy(slot + tok, b[i].kv, b[i].kv_bytes);
    q->b[q->n] = b[i];
    q->b[q->n].tokens = (const int32_t *)slot;
    q->b[q->n].kv = slot + tok;
    q->n++;
  }
  pthread_mutex_unlock(&l->fill_mu);
  return 0;
}

/* The fetches hold flush_mu: a promotion makes them without the cache
 * lock, and a detach (link_close, under the cache lock) must not destroy
 * the store under them — it waits for the round trip instead. */
static int link_get(pkv__tier *tier, pkv__tier_block *b, size_t n, uint8_t *found) {
  link_t *l = (link_t *)tier;
  pthread_mutex_lock(&l->flush_mu);
  int rc = 0;
  if (l->store)
    rc = l->store->ops->get(l->store, b, n, found);
  else
    memset(found, 0, n);
  pthread_mutex_unlock(&l->flush_mu);
  return rc;
}

static int link_contains(pkv__tier *tier, const pkv__tier_block *b) {
  link_t *l = (link_t *)tier;
  pthread_mutex_lock(&l->flush_mu);
  int yes = l->store ? l->store->ops->contains(l->store, b) : 0;
  pthread_mutex_unlock(&l->flush_mu);
  return yes;
}

static void link_contains_n(pkv__tier *tier, const pkv__tier_block *b, size_t n,
                            uint8_t *yes) {
  link_t *l = (link_t *)tier;
  pthread_mutex_lock(&l->flush_mu);
  if (l->store)
    l->store->ops->contains_n(l->store, b, n, yes);
  else
    memset(yes, 0, n);
  pthread_mutex_unlock(&l->flush_mu);
}

static void link_stats(pkv__tier *tier, pkv_tier_stats *out) {
  link_t *l = (link_t *)tier;
  memset(out, 0, sizeof *out);
  if (l->store) l->store->ops->stats(l->store, out);
  out->promotions = l->promotions;
}

/* Flushes and closes the store; the shell stays (see the top). */
static void link_close(link_t *l) {
  pkv__remote_flush(l);
  pthread_mutex_lock(&l->flush_mu);
  pthread_mutex_lock(&l->fill_mu);
  if (l->store) l->store->ops->destroy(l->store);
  l->store = NULL;
  pthread_mutex_unlock(&l->fill_mu);
  pthread_mutex_unlock(&l->flush_mu);
}

static void link_destroy(pkv__tier *tier) {
  link_t *l = (link_t *)tier;
  if (!l) return;
  link_close(l);
  pthread_mutex_destroy(&l->fill_mu);
  pthread_mutex_destroy(&l->flush_mu);
  batch_free(&l->fill);
  batch_free(&l->spare);
  pkv__free(l);
}

static const pkv__tier_ops link_ops = {
    .name = "redis", .put = link_put, .get = link_get, .contains = link_contains,
    .stats = link_stats, .destroy = link_destroy, .contains_n = link_contains_n};

uint32_t pkv__remote_max_batch(pkv__tier *t) { return ((link_t *)t)->max_batch; }
void pkv__remote_count_promotion(pkv__tier *t, uint64_t n) {
  ((link_t *)t)->promotions += n;
}
void pkv__remote_detach(pkv__tier *t) { link_close((link_t *)t); }

/* ------------------------------------------------ create */

int pkv__remote_create(const pkv_redis_opts *opts, uint32_t block_size,
                       size_t kv_bytes, pkv__tier **out) {
  link_t *l = pkv__calloc(1, sizeof *l);
  if (!l) return pkv__err(PKV_ENOMEM, "set_remote_tier: out of memory");
  int rc = pkv__redis_tier_create(opts, &l->store);
  if (rc) {
    pkv__free(l);
    return rc;
  }
  l->base.ops = &link_ops;
  pthread_mutex_init(&l->fill_mu, NULL);
  pthread_mutex_init(&l->flush_mu, NULL);
  l->max_batch = opts->max_batch ? opts->max_batch : 16;
  l->block_size = block_size;
  l->kv_bytes = kv_bytes;
  l->slot_bytes = kv_bytes + (size_t)block_size * sizeof(int32_t);
  if (!batch_alloc(l, &l->fill) || !batch_alloc(l, &l->spare)) {
    link_destroy(&l->base);
    return pkv__err(PKV_ENOMEM, "set_remote_tier: out of memory for 2 x %u "
                    "blocks of batch", opts->max_batch ? opts->max_batch : 16);
  }
  *out = &l->base;
  return 0;
}
