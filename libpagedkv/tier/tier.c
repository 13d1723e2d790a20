/*
 * tier.c — the chain of stores below the block pool: demotion, promotion,
 * per-tier statistics and the external-mode copy queue.
 *
 * Demotion.  The eviction driver (evict.c) calls pkv__tier_demote with the
 * victim just before it leaves the index: the block's identity (key, parent,
 * namespace fold, token ids) and its K/V — gathered from the arena's
 * 2 * n_layers regions into one staging buffer — are put into the first
 * tier configured.  A tier that is full passes its own victims one tier
 * down (the host tier to the file tier, and so on); the last one drops
 * them.  In external storage the library holds no K/V: the host tier keeps
 * the metadata and a slot number, and a pkv_tier_copy (pool block -> host
 * slot) is queued for the caller, who performs it before the freed block is
 * written again (pkv_tier_drain_copies).
 *
 * Promotion.  pkv_seq_match_prefix walks the pool's index first; where the
 * cached run ends at block k it calls pkv__tier_promote, which
 *   1. computes the chained key of each following block from the request's
 *      tokens and asks the tiers, top first, whether they hold it
 *      (contains: no payload moved) — the run ends at the first block no
 *      tier has;
 *   2. takes one pool block per block of the run, all or none (the pool's
 *      free + evictable count is checked first; a run that does not fit is
 *      not promoted at all);
 *   3. fetches each block's payload (get: key, parent, namespace, tokens and
 *      checksum verified) into its pool block and enters it into the index
 *      (STORED, then PROMOTED).  A block that fails verification now ends
 *      the run there (a counted miss); the pool blocks taken for the rest go
 *      back to the free list.
 * The matched blocks [0, k) are referenced before step 2, so the evictions
 * step 2 causes never touch them.
 *
 * Redis, from pkv_seq_match_prefix, without the cache lock
 * (pkv__tier_promote_remote).  The pool's and the local tiers' run is
 * promoted and published in the sequence first (its table holds them);
 * then, for the blocks after it:
 *   1. their chained keys, under the lock;
 *   2. the lock released: one pipelined STRLEN round trip says how long a
 *      run Redis holds;
 *   3. the lock retaken, the sequence looked up again (a concurrent call
 *      on it — the caller's race — is refused, never followed): one pool
 *      block per block of that run, all or none, held in the sequence's
 *      table as lookahead slots (reserved, no token ids: private, never
 *      shared, cached or evicted), so every invariant holds meanwhile;
 *   4. the lock released: the GETs (max_batch per round trip), each value
 *      verified and copied straight into its reserved block's regions
 *      (nothing written otherwise);
 *   5. the lock retaken and the sequence checked again: the leading
 *      verified run enters the index (STORED, PROMOTED), the rest of the
 *      reservation goes back to the pool.
 * The Redis link stays valid across the gaps (a detached link lives until
 * the cache is destroyed, its fetches hold the link's flush lock so a
 * detach waits for them).  match_prefix then tries the local tiers again
 * for what follows.  pkv_prefix_promote (no sequence to hold the
 * reservation) still makes its Redis round trips under the lock.
 */
#include "tier/tier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pkv__tiers {
  pkv__tier *t[PKV_TIER_MAX];
  pkv__tier *below_host;       /* the first tier under the host tier */
  pkv__tier *below_file;       /* ... under the file tier (redis) */
  pkv__tier **grave;           /* detached redis links (remote.c) */
  uint32_t n_grave;
  size_t kv_bytes;             /* one block, all layers, K and V */
  uint8_t *stage;              /* kv_bytes: one block in flight */
  uint8_t *rstage;             /* redis max_batch blocks fetched at once */
  pkv__tier_block *rtb;        /* their identities */
  uint8_t *rfound;
  char host_policy[32];
  pkv_tier_copy *q;            /* external mode queue [q_head, +q_len) */
  uint32_t q_head, q_len, q_cap;
};

/* ------------------------------------------------ payload */

void pkv__tier_gather(const pkv_cache *c, int32_t b, void *kv) {
  size_t chunk = c->layout.block_stride;
  uint8_t *out = kv;
  for (uint32_t r = 0; r < 2 * c->cfg.n_layers; r++)
    memcpy(out + r * chunk,
           c->kv + (size_t)r * c->kv_region_stride + (size_t)b * chunk, chunk);
}

void pkv__tier_scatter(pkv_cache *c, int32_t b, const void *kv) {
  size_t chunk = c->layout.block_stride;
  const uint8_t *in = kv;
  for (uint32_t r = 0; r < 2 * c->cfg.n_layers; r++)
    memcpy(c->kv + (size_t)r * c->kv_region_stride + (size_t)b * chunk,
           in + r * chunk, chunk);
}

/* ------------------------------------------------ open / close */

typedef struct pkv__tiers tiers_t;
static void tier_demote(pkv_cache *c, int32_t b);

/* A tier's lower neighbour is the first tier configured under it. */
static pkv__tier *first_below(tiers_t *T, unsigned index) {
  for (unsigned i = index + 1; i < PKV_TIER_MAX; i++)
    if (T->t[i]) return T->t[i];
  return NULL;
}
static void relink(tiers_t *T) {
  T->below_host = first_below(T, PKV_TIER_HOST);
  T->below_file = first_below(T, PKV_TIER_FILE);
}

static tiers_t *tiers_get(pkv_cache *c) {
  if (c->tiers) return c->tiers;
  tiers_t *T = pkv__calloc(1, sizeof *T);
  if (!T) return NULL;
  T->kv_bytes = pkv__tier_kv_bytes(c);
  if (c->cfg.storage == PKV_STORAGE_OWNED) {
    T->stage = pkv__malloc(T->kv_bytes);
    if (!T->stage) {
      pkv__free(T);
      return NULL;
    }
  }
  c->tiers = T;
  c->up_demote = tier_demote;
  return T;
}

int pkv__tiers_open(pkv_cache *c) {
  if (c->cfg.host_tier_bytes == 0) {
    c->cfg.host_tier_policy = NULL;
    return 0;
  }
  const char *pol = c->cfg.host_tier_policy ? c->cfg.host_tier_policy : "lru";
  if (!pkv_policy_find(pol) || strlen(pol) >= 32)
    return pkv__err(PKV_ENOENT, "config: unknown host_tier_policy '%.40s'", pol);
  uint64_t block = pkv__tier_kv_bytes(c);
  if (c->cfg.host_tier_bytes < block)
    return pkv__err(PKV_EINVAL, "config: host_tier_bytes %llu below one block "
                    "(%llu bytes)", (unsigned long long)c->cfg.host_tier_bytes,
                    (unsigned long long)block);
  tiers_t *T = tiers_get(c);
  if (!T) return pkv__err(PKV_ENOMEM, "config: no memory for the host tier");
  pkv__tier *h = NULL;
  int rc = pkv__host_create(T->kv_bytes, c->block_size, c->cfg.host_tier_bytes,
                            pol, c->cfg.storage == PKV_STORAGE_EXTERNAL, &h);
  if (rc) {
    pkv__tiers_close(c);
    return rc;
  }
  T->t[PKV_TIER_HOST] = h;
  pkv__host_set_below(h, &T->below_host);
  snprintf(T->host_policy, sizeof T->host_policy, "%s", pol);
  c->cfg.host_tier_policy = T->host_policy; /* the caller's string is gone */
  return 0;
}

void pkv__tiers_close(pkv_cache *c) {
  tiers_t *T = c->tiers;
  if (!T) return;
  for (unsigned i = 0; i < PKV_TIER_MAX; i++)
    if (T->t[i]) T->t[i]->ops->destroy(T->t[i]);
  for (uint32_t i = 0; i < T->n_grave; i++) T->grave[i]->ops->destroy(T->grave[i]);
  PKV__FREE_ALL(T->grave, T->rstage, T->rtb, T->rfound, T->stage, T->q, T);
  c->tiers = NULL;
  c->up_demote = NULL;
}

int pkv__tier_attach(pkv_cache *c, unsigned index, pkv__tier *t) {
  if (index >= PKV_TIER_MAX)
    return pkv__err(PKV_EINVAL, "tier %u: no such tier", index);
  tiers_t *T = tiers_get(c);
  if (!T) return pkv__err(PKV_ENOMEM, "no memory for the tier chain");
  if (T->t[index])
    return pkv__err(PKV_ESTATE, "tier %u (%s) is already configured", index,
                    T->t[index]->ops->name);
  T->t[index] = t;
  relink(T);
  if (index == PKV_TIER_FILE) pkv__file_set_below(t, &T->below_file);
  return 0;
}

int pkv__tier_replace(pkv_cache *c, unsigned index, pkv__tier *t) {
  tiers_t *T = c->tiers;
  if (!T && !t) return 0;
  if (!T && !(T = tiers_get(c)))
    return pkv__err(PKV_ENOMEM, "no memory for the tier chain");
  pkv__tier *old = T->t[index];
  if (t && index == PKV_TIER_REDIS) { /* the fetch batch's room */
    uint32_t mb = pkv__remote_max_batch(t);
    uint8_t *st = pkv__malloc((size_t)mb * T->kv_bytes);
    pkv__tier_block *tb = pkv__calloc(mb, sizeof *tb);
    uint8_t *f = pkv__malloc(mb);
    pkv__tier **g = old ? pkv__realloc(T->grave, (T->n_grave + 1) * sizeof *g) : T->grave;
    if (g) T->grave = g;
    if (!st || !tb || !f || (old && !g)) {
      pkv__free(st);
      pkv__free(tb);
      pkv__free(f);
      return pkv__err(PKV_ENOMEM, "no memory for %u blocks of redis fetch "
                      "batch", mb);
    }
    pkv__free(T->rstage);
    pkv__free(T->rtb);
    pkv__free(T->rfound);
    T->rstage = st;
    T->rtb = tb;
    T->rfound = f;
  } else if (old) {
    pkv__tier **g = pkv__realloc(T->grave, (T->n_grave + 1) * sizeof *g);
    if (!g) return pkv__err(PKV_ENOMEM, "no memory to detach a tier");
    T->grave = g;
  }
  if (old) { /* closed now, freed with the chain (see remote.c) */
    pkv__remote_detach(old);
    T->grave[T->n_grave++] = old;
  }
  T->t[index] = t;
  relink(T);
  return 0;
}

/* ------------------------------------------------ external copy queue */

static int queue_reserve(tiers_t *T, uint32_t extra) {
  if (T->q_head > 0 && T->q_head + T->q_len + extra > T->q_cap) {
    memmove(T->q, T->q + T->q_head, T->q_len * sizeof *T->q);
    T->q_head = 0;
  }
  uint64_t need = (uint64_t)T->q_len + extra;
  if (need <= T->q_cap) return 0;
  if (need > UINT32_MAX / 2)
    return pkv__err(PKV_ENOMEM, "tier copy queue full (%u pending)", T->q_len);
  uint32_t cap = T->q_cap ? T->q_cap : 16;
  while (cap < need) cap *= 2;
  pkv_tier_copy *q = pkv__realloc(T->q, (size_t)cap * sizeof *q);
  if (!q) return pkv__err(PKV_ENOMEM, "no memory for the tier copy queue");
  T->q = q;
  T->q_cap = cap;
  return 0;
}

static void queue_push(tiers_t *T, uint32_t op, int32_t block, int32_t slot) {
  T->q[T->q_head + T->q_len++] =
      (pkv_tier_copy){.op = op, .block = block, .slot = (uint32_t)slot,
                      .tier = PKV_TIER_HOST};
}

/* ------------------------------------------------ demote */

static pkv__tier_block block_of(const pkv_cache *c, int32_t b, void *kv,
                                size_t kv_bytes) {
  const pkv__block *blk = &c->blk[b];
  return (pkv__tier_block){.key = blk->key, .parent = blk->parent,
                           .ns_id_hash = pkv__ns_fold(c->ns[blk->ns_id].digest),
                           .ntok = c->block_size,
                           .tokens = c->block_tokens + (size_t)b * c->block_size,
                           .kv = kv, .kv_bytes = kv_bytes};
}

/* c->up_demote: cached block b (refcount 0) is about to leave the index as
 * a victim: keep it in the first tier.  Never fails (a tier that cannot
 * take it counts a skip). */
static void tier_demote(pkv_cache *c, int32_t b) {
  tiers_t *T = c->tiers;
  unsigned i = 0;
  while (i < PKV_TIER_MAX && !T->t[i]) i++;
  if (i == PKV_TIER_MAX) return;
  pkv__tier *t = T->t[i];
  if (c->cfg.storage == PKV_STORAGE_EXTERNAL) {
    if (i != PKV_TIER_HOST) return; /* lower tiers need the bytes */
    pkv__tier_block tb = block_of(c, b, NULL, T->kv_bytes);
    if (queue_reserve(T, 1)) {
      pkv__err_clear(); /* eviction goes on; the block is simply dropped */
      return;
    }
    int32_t slot = pkv__host_put_slot(t, &tb);
    if (slot < 0) return;
    queue_push(T, PKV_TIER_COPY_DEMOTE, b, slot);
  } else {
    pkv__tier_block tb = block_of(c, b, T->stage, T->kv_bytes);
    pkv__tier_gather(c, b, T->stage);
    if (i == PKV_TIER_REDIS) { /* queued for the call's end (remote.c) */
      if (t->ops->put(t, &tb, 1) != 0) pkv__err_clear();
    } else {
      pkv_tier_stats before, after;
      t->ops->stats(t, &before);
      if (t->ops->put(t, &tb, 1) != 0) pkv__err_clear();
      t->ops->stats(t, &after);
      if (after.puts == before.puts) return; /* skipped (counted there) */
    }
  }
  pkv__emit_seq(c, PKV_EVENT_DEMOTED, b, NULL, i, -1);
}

/* ------------------------------------------------ promote */

/* Fetches tb's payload from tier `from` or any below it (owned mode; the
 * host tier gives its copy up: the block moves into the pool).  The tier
 * that served, or -1 (a verified miss everywhere). */
static int fetch(tiers_t *T, int from, pkv__tier_block *tb) {
  for (int i = from; i < PKV_TIER_MAX; i++) {
    pkv__tier *t = T->t[i];
    if (!t) continue;
    uint8_t found = 0;
    if (i == PKV_TIER_HOST)
      found = pkv__host_take(t, tb) == 1;
    else if (t->ops->get(t, tb, 1, &found) != 0)
      found = 0;
    if (found) return i;
  }
  return -1;
}

static void count_promotion(tiers_t *T, int i) {
  if (i == PKV_TIER_HOST) pkv__host_count_promotion(T->t[i], 1);
  else if (i == PKV_TIER_FILE) pkv__file_count_promotion(T->t[i], 1);
  else pkv__remote_count_promotion(T->t[i], 1);
}

/* Keys tbs[from, to) of a run (tokens: the run's first block), chained
 * from *parent, which ends as the last key. */
static void key_blocks(pkv_cache *c, uint32_t ns_id, uint32_t fold,
                       pkv_hash128 *parent, const int32_t *tokens, uint32_t from,
                       uint32_t to, pkv__tier_block *tbs) {
  size_t bs = c->block_size;
  for (uint32_t n = from; n < to; n++) {
    const int32_t *t = tokens + n * bs;
    tbs[n] = (pkv__tier_block){.key = pkv__block_key(c, parent, ns_id, t),
                               .parent = *parent, .ns_id_hash = fold,
                               .ntok = (uint32_t)bs, .tokens = t,
                               .kv_bytes = c->tiers->kv_bytes};
    *parent = tbs[n].key;
  }
}

/* A promoted block's last step: its token ids, the index, the counters and
 * the event.  Returns its key (the next block's parent). */
static pkv_hash128 install(pkv_cache *c, int32_t b, const int32_t *tokens,
                           pkv_hash128 parent, uint32_t depth, uint32_t ns_id,
                           uint8_t priority, int tier) {
  memcpy(c->block_tokens + (size_t)b * c->block_size, tokens,
         c->block_size * sizeof *tokens);
  parent = pkv__prefix_insert_block(c, b, parent, depth, ns_id, priority);
  count_promotion(c->tiers, tier);
  pkv__emit_seq(c, PKV_EVENT_PROMOTED, b, NULL, (uint32_t)tier, -1);
  return parent;
}

/* Step 1 of a promotion: from[k] = the first tier (top down) holding
 * block k of tbs[0, room) — local tiers one block at a time, redis for the
 * whole rest of the run in one round trip — until a block no tier holds.
 * tbs[k] gets its key chained from parent.  Returns the run's length. */
static uint32_t find_run(pkv_cache *c, uint32_t ns_id, pkv_hash128 parent,
                         const int32_t *tokens, uint32_t room, bool external,
                         bool remote, pkv__tier_block *tbs, uint8_t *from,
                         uint8_t *yes) {
  tiers_t *T = c->tiers;
  uint32_t fold = pkv__ns_fold(c->ns[ns_id].digest), keyed = 0, asked = 0;
  pkv__tier *r = external || !remote ? NULL : T->t[PKV_TIER_REDIS];
  for (uint32_t n = 0; n < room; n++) {
    if (n == keyed) key_blocks(c, ns_id, fold, &parent, tokens, n, ++keyed, tbs);
    int i = -1;
    for (int j = 0; j < PKV_TIER_REDIS && i < 0; j++)
      if (T->t[j] && T->t[j]->ops->contains(T->t[j], &tbs[n]) == 1) i = j;
    if (i < 0 && r) {
      if (n >= asked) { /* key the rest, ask redis about all of it at once */
        key_blocks(c, ns_id, fold, &parent, tokens, keyed, room, tbs);
        keyed = room;
        r->ops->contains_n(r, tbs + n, room - n, yes + n);
        asked = room;
      }
      if (yes[n]) i = PKV_TIER_REDIS;
    }
    if (i < 0 || (external && i != PKV_TIER_HOST)) return n;
    from[n] = (uint8_t)i;
  }
  return room;
}

/* Step 3 for a redis block k: its payload, fetched with the blocks after it
 * that come from redis too (max_batch per round trip).  *base, *cnt is the
 * batch in T->rstage.  The block's K/V, or NULL (not verified). */
static const uint8_t *redis_payload(tiers_t *T, pkv__tier_block *tbs,
                                    const uint8_t *from, uint32_t n, uint32_t k,
                                    uint32_t *base, uint32_t *cnt) {
  if (k < *base || k >= *base + *cnt) {
    pkv__tier *r = T->t[PKV_TIER_REDIS];
    uint32_t mb = pkv__remote_max_batch(r), m = 0;
    while (k + m < n && m < mb && from[k + m] == PKV_TIER_REDIS) {
      T->rtb[m] = tbs[k + m];
      T->rtb[m].kv = T->rstage + (size_t)m * T->kv_bytes;
      T->rtb[m].kv_bytes = T->kv_bytes;
      m++;
    }
    if (r->ops->get(r, T->rtb, m, T->rfound) != 0) memset(T->rfound, 0, m);
    *base = k;
    *cnt = m;
  }
  return T->rfound[k - *base] ? T->rstage + (size_t)(k - *base) * T->kv_bytes : NULL;
}

/* Promotes the run of blocks the tiers hold for tokens (block `depth0` of a
 * chain under `parent` in namespace ns_id), at most room blocks, into pool
 * blocks written to out[] (each cached, refcount 1).  Redis only if
 * `remote` (its round trips then run under the lock).  Returns how many. */
static uint32_t promote_run(pkv_cache *c, uint32_t ns_id, uint8_t priority,
                            pkv_hash128 parent, const int32_t *tokens,
                            uint32_t depth0, uint32_t room, bool remote,
                            int32_t *out) {
  tiers_t *T = c->tiers;
  bool external = c->cfg.storage == PKV_STORAGE_EXTERNAL;
  uint32_t got = 0, n = 0, rbase = 0, rcnt = 0;
  int32_t *taken = pkv__malloc((size_t)room * sizeof *taken);
  uint8_t *from = pkv__malloc(2 * (size_t)room);
  pkv__tier_block *tbs = pkv__malloc((size_t)room * sizeof *tbs);
  if (!taken || !from || !tbs) goto done;
  /* 1. the run the tiers hold */
  n = find_run(c, ns_id, parent, tokens, room, external, remote, tbs, from,
               from + room);
  /* 2. pool blocks for all of it, or none */
  if (n == 0 || n > pkv__blocks_available(c)) goto done;
  for (uint32_t j = 0; j < n; j++) {
    taken[j] = pkv__block_take(c);
    if (taken[j] < 0) { /* the policy misbehaved: give back, no promotion */
      while (j-- > 0) pkv__block_unref(c, taken[j]);
      goto done;
    }
  }
  /* room for the promotion copies, reserved after the takes: the
   * evictions they caused queued demotion copies of their own */
  if (external && queue_reserve(T, n)) {
    for (uint32_t j = 0; j < n; j++) pkv__block_unref(c, taken[j]);
    goto done;
  }
  /* 3. payload, verified, then into the index */
  for (; got < n; got++) {
    int32_t b = taken[got];
    pkv__tier_block tb = tbs[got];
    tb.kv = T->stage;
    tb.kv_bytes = T->kv_bytes;
    int i;
    if (external) {
      int32_t slot = pkv__host_take_slot(T->t[PKV_TIER_HOST], &tb);
      if (slot < 0) break;
      queue_push(T, PKV_TIER_COPY_PROMOTE, b, slot);
      i = PKV_TIER_HOST;
    } else if (from[got] == PKV_TIER_REDIS) {
      const uint8_t *kv = redis_payload(T, tbs, from, n, got, &rbase, &rcnt);
      if (!kv) break;
      pkv__tier_scatter(c, b, kv);
      i = PKV_TIER_REDIS;
    } else {
      if ((i = fetch(T, from[got], &tb)) < 0) break;
      pkv__tier_scatter(c, b, T->stage);
    }
    parent = install(c, b, tb.tokens, parent, depth0 + got, ns_id, priority, i);
    out[got] = b;
  }
  for (uint32_t j = got; j < n; j++) pkv__block_unref(c, taken[j]);
done:
  pkv__err_clear(); /* a promotion that cannot happen is no error */
  pkv__free(taken);
  pkv__free(from);
  pkv__free(tbs);
  return got;
}

uint32_t pkv__tier_promote(pkv_cache *c, pkv__seq *s, const int32_t *tokens,
                           uint32_t k, uint32_t want) {
  if (k >= want) return k;
  pkv_hash128 parent = k > 0 ? c->blk[s->blocks[k - 1]].key : (pkv_hash128){0, 0};
  return k + promote_run(c, s->ns_id, s->priority, parent,
                         tokens + (size_t)k * c->block_size, k, want - k,
                         false, s->blocks + k);
}

/* Retakes the lock released for a round trip and finds s again: NULL
 * (error set) unless it is still the sequence left behind — n_blocks
 * blocks, n_tokens tokens, first block `first` (a concurrent call on the
 * same sequence is the caller's race: refused, never followed). */
static pkv__seq *relock(pkv_cache *c, pkv_seq_id id, uint32_t n_blocks,
                        uint32_t n_tokens, uint32_t k, int32_t first, int *rc) {
  int busy = pkv__lock(c); /* cannot be refused: this thread released it */
  PKV_ASSERT(!busy);
  (void)busy;
  pkv__seq *s = pkv__seq_lookup(c, id);
  if (!s) {
    *rc = PKV_ENOSEQ;
  } else if (s->n_blocks != n_blocks || s->n_tokens != n_tokens ||
             (n_blocks > k && s->blocks[k] != first)) {
    *rc = pkv__err(PKV_ESTATE, "seq %u: changed by another call during its "
                   "match (calls on one sequence must not overlap)", s->index);
    s = NULL;
  }
  return s;
}

/* The reservation of a promotion in flight: s's blocks [k, k + n) are the
 * pool blocks taken for it, held as lookahead slots (reserved tokens with
 * no ids: private, writable, never cached), so every invariant holds while
 * the lock is released and nothing else can evict, share or reuse them.
 * reserve_end shrinks s to its match plus the g blocks installed. */
static void reserve_set(pkv_cache *c, pkv__seq *s, uint32_t k, uint32_t n) {
  uint32_t bs = c->block_size;
  s->n_blocks = k + n;
  s->n_tokens = (k + n) * bs;
  c->sum_tokens += (uint64_t)n * bs;
  c->sum_blocks += n;
}
static void reserve_end(pkv_cache *c, pkv__seq *s, uint32_t k, uint32_t n, uint32_t g) {
  uint32_t bs = c->block_size;
  for (uint32_t j = g; j < n; j++) pkv__block_unref(c, s->blocks[k + j]);
  s->n_blocks = s->n_hashed = k + g;
  s->n_tokens = s->n_known = s->n_committed = (k + g) * bs;
  c->sum_tokens -= (uint64_t)(n - g) * bs;
  c->sum_blocks -= n - g;
}

int pkv__tier_promote_remote(pkv_cache *c, pkv_seq_id id, pkv__seq **sp,
                             const int32_t *tokens, uint32_t want) {
  tiers_t *T = c->tiers;
  pkv__seq *s = *sp;
  uint32_t k = s->n_blocks, bs = c->block_size;
  pkv__tier *r = T ? T->t[PKV_TIER_REDIS] : NULL;
  if (!r || c->cfg.storage != PKV_STORAGE_OWNED || k >= want) return 0;
  uint32_t room = want - k, n = 0, g = 0;
  pkv__tier_block *tbs = pkv__malloc((size_t)room * sizeof *tbs);
  uint8_t *yes = pkv__malloc(room);
  int rc = 0;
  if (!tbs || !yes) goto out; /* no promotion; no error */
  /* 1. the run's keys (under the lock: namespaces may move) */
  pkv_hash128 parent = k ? c->blk[s->blocks[k - 1]].key : (pkv_hash128){0, 0};
  key_blocks(c, s->ns_id, pkv__ns_fold(c->ns[s->ns_id].digest), &parent,
             tokens + (size_t)k * bs, 0, room, tbs);
  /* 2. which of them Redis holds: one STRLEN round trip, unlocked (r
   * stays valid: a detached link lives until the cache is destroyed) */
  uint32_t n_tokens = s->n_tokens;
  pkv__unlock(c);
  r->ops->contains_n(r, tbs, room, yes);
  while (n < room && yes[n]) n++;
  if (!(s = relock(c, id, k, n_tokens, k, -1, &rc))) goto gone;
  /* 3. pool blocks for all of it or none, reserved in s */
  if (n == 0 || n > pkv__blocks_available(c)) goto out;
  c->take_ns = s->ns_id; /* quotas count the blocks it holds */
  for (uint32_t j = 0; j < n; j++) {
    int32_t b = pkv__block_take(c);
    if (b < 0) { /* the policy misbehaved: give back, no promotion */
      while (j-- > 0) pkv__block_unref(c, s->blocks[k + j]);
      goto out;
    }
    s->blocks[k + j] = b;
    tbs[j].kv = c->kv + (size_t)b * c->layout.block_stride;
    tbs[j].kv_chunks = 2 * c->cfg.n_layers;
    tbs[j].kv_stride = c->kv_region_stride;
  }
  reserve_set(c, s, k, n);
  /* 4. the values, verified, straight into the reserved blocks; unlocked,
   * max_batch per round trip, until one does not verify */
  int32_t first = s->blocks[k];
  uint32_t mb = pkv__remote_max_batch(r);
  pkv__unlock(c);
  memset(yes, 0, n);
  for (uint32_t at = 0, m; at < n; at += m) {
    m = n - at < mb ? n - at : mb;
    if (r->ops->get(r, tbs + at, m, yes + at) != 0) memset(yes + at, 0, m);
    if (memchr(yes + at, 0, m)) break;
  }
  if (!(s = relock(c, id, k + n, (k + n) * bs, k, first, &rc))) goto gone;
  /* 5. the leading verified run into the index; the rest back to the pool */
  parent = k ? c->blk[s->blocks[k - 1]].key : (pkv_hash128){0, 0};
  for (; g < n && yes[g]; g++)
    parent = install(c, s->blocks[k + g], tbs[g].tokens, parent, k + g, s->ns_id,
                     s->priority, PKV_TIER_REDIS);
  reserve_end(c, s, k, n, g);
out:
  pkv__err_clear(); /* a promotion that cannot happen is no error */
  pkv__free(tbs);
  pkv__free(yes);
  *sp = s;
  return 0;
gone:
  pkv__free(tbs);
  pkv__free(yes);
  *sp = NULL;
  return rc;
}

/* ------------------------------------------------ public calls */

int pkv_tier_stats_get(pkv_cache *cache, uint32_t tier, pkv_tier_stats *out) {
  PKV_ENTER(cache, "tier_stats_get");
  PKV_CHECK(out, "tier_stats_get: out is NULL");
  PKV_CHECK(tier < PKV_TIER_MAX, "tier_stats_get: tier %u >= %u", tier,
            PKV_TIER_MAX);
  PKV_LOCK(cache);
  int rc = 0;
  pkv__tier *t = cache->tiers ? cache->tiers->t[tier] : NULL;
  if (!t) {
    rc = pkv__err(PKV_ENOENT, "tier_stats_get: tier %u is not configured", tier);
  } else {
    memset(out, 0, sizeof *out);
    t->ops->stats(t, out);
  }
  return pkv__leave_ro(cache, rc);
}

int pkv_prefix_promote(pkv_cache *cache, const pkv_seq_opts *opts,
                       const int32_t *tokens, uint32_t n_tokens,
                       uint32_t max_tokens, uint32_t *promoted_tokens) {
  PKV_ENTER(cache, "prefix_promote");
  PKV_CHECK(promoted_tokens, "prefix_promote: promoted_tokens is NULL");
  PKV_CHECK(tokens || n_tokens == 0, "prefix_promote: tokens is NULL");
  PKV_CHECK(!opts || opts->ns_len == 0 || opts->ns,
            "prefix_promote: ns is NULL with ns_len %zu", opts ? opts->ns_len : 0);
  PKV_LOCK(cache);
  int rc = 0;
  uint32_t bs = cache->block_size, promoted = 0;
  uint32_t limit = max_tokens && max_tokens < n_tokens ? max_tokens : n_tokens;
  uint32_t want = limit / bs, ns_id = 0;
  int32_t *blocks = NULL;
  bool interned = false;
  if (!cache->tiers || want == 0 || (cache->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE))
    goto out;
  if (opts && (rc = pkv__ns_intern(cache, opts->ns, opts->ns_len,
                                   opts->adapter_id, &ns_id)) != 0)
    goto out;
  interned = opts != NULL;
  if (!(blocks = pkv__malloc((size_t)want * sizeof *blocks))) {
    rc = pkv__err(PKV_ENOMEM, "prefix_promote: no memory for %u block ids", want);
    goto out;
  }
  uint64_t collided = 0;
  uint32_t k = pkv__prefix_walk(cache, ns_id, tokens, want, blocks, &collided);
  /* hold the pool's run while the promotion takes blocks */
  for (uint32_t i = 0; i < k; i++) pkv__block_ref(cache, blocks[i]);
  pkv_hash128 parent = k ? cache->blk[blocks[k - 1]].key : (pkv_hash128){0, 0};
  promoted = promote_run(cache, ns_id, 0, parent, tokens + (size_t)k * bs, k,
                         want - k, true, blocks + k);
  for (uint32_t i = 0; i < k + promoted; i++) pkv__block_unref(cache, blocks[i]);
out:
  if (interned) pkv__ns_unref(cache, ns_id);
  pkv__free(blocks);
  if (rc == 0) *promoted_tokens = promoted * bs;
  return pkv__leave(cache, rc);
}

int pkv_cache_set_file_tier(pkv_cache *cache, const char *dir,
                            uint64_t max_bytes) {
  PKV_ENTER(cache, "set_file_tier");
  PKV_CHECK(dir && *dir, "set_file_tier: dir is NULL or empty");
  if (cache->cfg.storage != PKV_STORAGE_OWNED) /* immutable after create */
    return pkv__err(PKV_ENOTSUP, "set_file_tier: external storage (the "
                    "library holds no K/V to write)");
  PKV_LOCK(cache);
  int rc = 0;
  bool fresh = cache->tiers == NULL;
  pkv__tier *t = NULL;
  if (cache->tiers && cache->tiers->t[PKV_TIER_FILE]) {
    rc = pkv__err(PKV_ESTATE, "set_file_tier: the cache has a file tier");
  } else if ((rc = pkv__file_create(dir, pkv__tier_kv_bytes(cache),
                                    cache->block_size, max_bytes, &t)) == 0 &&
             (rc = pkv__tier_attach(cache, PKV_TIER_FILE, t)) != 0) {
    t->ops->destroy(t);
    if (fresh) pkv__tiers_close(cache);
  }
  return pkv__leave(cache, rc);
}

int pkv_tier_drain_copies(pkv_cache *cache, pkv_tier_copy *out, uint32_t cap,
                          uint32_t *n_out, uint32_t *pending) {
  PKV_ENTER(cache, "tier_drain_copies");
  PKV_CHECK(n_out && (out || cap == 0), "tier_drain_copies: %s",
            n_out ? "out is NULL with cap > 0" : "n_out is NULL");
  PKV_LOCK(cache);
  tiers_t *T = cache->tiers;
  uint32_t n = 0, left = 0;
  if (T) {
    n = pkv__ring_take(T->q, sizeof *out, &T->q_head, &T->q_len, out, cap);
    left = T->q_len;
  }
  *n_out = n;
  if (pending) *pending = left;
  return pkv__leave(cache, 0);
}

int pkv_cache_set_remote_tier(pkv_cache *cache, const pkv_redis_opts *opts) {
  PKV_ENTER(cache, "set_remote_tier");
  pkv__tier *t = NULL;
  if (opts) {
    if (cache->cfg.storage != PKV_STORAGE_OWNED) /* immutable after create */
      return pkv__err(PKV_ENOTSUP, "set_remote_tier: external storage (the "
                      "library holds no K/V to store)");
    PKV_CHECK(opts->max_batch <= 1024, "set_remote_tier: max_batch %u > 1024",
              opts->max_batch);
    int rc = pkv__remote_create(opts, cache->block_size,
                                pkv__tier_kv_bytes(cache), &t);
    if (rc) return rc;
  }
  if (pkv__lock(cache)) {
    if (t) t->ops->destroy(t);
    return PKV_EBUSY;
  }
  int rc = pkv__tier_replace(cache, PKV_TIER_REDIS, t);
  if (rc == 0) {
    cache->up_flush = t ? pkv__remote_flush : NULL;
    cache->up_flush_arg = t;
  }
  pkv__unlock(cache);
  if (rc && t) t->ops->destroy(t);
  return rc;
}

int pkv_cache_remote_stats(pkv_cache *cache, pkv_tier_stats *out) {
  return pkv_tier_stats_get(cache, PKV_TIER_REDIS, out);
}
