/*
 * quota.c — namespace quotas: a cap and a reservation per namespace.
 *
 * A namespace's usage is every pool block it holds: its blocks in the
 * prefix index (in use or evictable) plus the blocks its sequences hold
 * that are not cached (tails being written, uncommitted blocks).  `live`
 * counts them: a block is charged to a quota when it leaves the free list
 * (blocks.c, for the namespace in c->take_ns that seq.c / seqops.c set
 * before taking blocks for a sequence), moved when it enters the index
 * under another namespace, and uncharged when it goes back to the free
 * list (tag[] remembers where each block is charged).  `cached` and
 * `evictable` follow the index (hooks in prefix.c: a block entered / left)
 * and the refcount (blocks.c: a cached block went evictable / in use).  Quotas live in their own table, keyed by the namespace's digest
 * and bytes, so they outlive the namespace's interned slot; a slot is bound
 * to its quota when it is interned (quota_bind, through c->quota_up).
 *
 *   over cap     live > cap: eviction takes from these first.
 *   protected    an evictable block whose eviction would bring its namespace
 *                below its reservation (live <= reserve).  Per namespace
 *                max(0, evictable - max(0, live - reserve)) of its evictable
 *                blocks are protected; c->n_protected sums them, and the
 *                pool's availability (pkv__blocks_available) leaves them out,
 *                so an allocation that would need one fails with PKV_ENOMEM
 *                before it changes anything.
 *
 * The victim.  While some namespace is over its cap and has an evictable
 * block, the victim is its least recently released evictable block: each
 * quota keeps its evictable blocks in a list in the order they became
 * evictable (lprev / lnext), so this costs no policy call and disturbs no
 * other block's place in the policy's order (the policy hears on_remove, as
 * for any block leaving the index).  Otherwise the policy chooses; a
 * candidate that is protected is set aside (on_pinned) and the policy asked
 * again, and the set-aside blocks are handed back (on_evictable) afterwards,
 * in the order they came — which moves protected blocks ahead in recency
 * order, harmless since they cannot go while the reservation holds them.
 * With no quota set none of this runs (c->quota is NULL).
 */
#include "tier/tier.h"

#include <stdio.h>
#include <string.h>

#define UNBOUND UINT32_MAX

typedef struct quota {
  uint8_t *bytes;
  size_t len;
  uint64_t adapter_id;
  uint32_t cap, reserve;      /* cap 0 = none */
  uint32_t ns_id;             /* bound slot, or UNBOUND */
  uint32_t cached, evictable; /* counters of the bound namespace */
  uint32_t live;              /* blocks charged to it: cached + held */
  uint32_t protected_;        /* its share of c->n_protected */
  int32_t oldest, newest;     /* its evictable blocks, oldest first */
} quota;

struct pkv__quotas {
  quota *q;
  uint32_t n, cap;
  int32_t *aside;             /* num_blocks: set-aside candidates */
  int32_t *lprev, *lnext;     /* num_blocks: the quotas' evictable lists */
  uint32_t *tag;              /* num_blocks: the quota a block is charged
                                 to, or UNBOUND */
};

static quota *quota_of(pkv_cache *c, uint32_t ns_id) {
  uint32_t i = c->ns[ns_id].quota;
  return i == UNBOUND ? NULL : &c->quota->q[i];
}

static uint32_t protected_of(const quota *q) {
  uint32_t spare = q->live > q->reserve ? q->live - q->reserve : 0;
  return q->evictable > spare ? q->evictable - spare : 0;
}

static void reprotect(pkv_cache *c, quota *q) {
  uint32_t p = protected_of(q);
  c->n_protected = c->n_protected - q->protected_ + p;
  q->protected_ = p;
}

/* The quota index of namespace slot ns_id if it is live, else UNBOUND. */
static uint32_t quota_index(const pkv_cache *c, uint32_t ns_id) {
  return ns_id < c->n_ns && c->ns[ns_id].refs > 0 ? c->ns[ns_id].quota : UNBOUND;
}

/* Charges block b to quota index i (UNBOUND: to none). */
static void charge(pkv_cache *c, int32_t b, uint32_t i) {
  struct pkv__quotas *Q = c->quota;
  uint32_t was = Q->tag[b];
  if (was == i) return;
  if (was != UNBOUND) {
    Q->q[was].live--;
    reprotect(c, &Q->q[was]);
  }
  Q->tag[b] = i;
  if (i != UNBOUND) {
    Q->q[i].live++;
    reprotect(c, &Q->q[i]);
  }
}

static void quota_live(pkv_cache *c, int32_t b, int delta) {
  charge(c, b, delta > 0 ? quota_index(c, c->take_ns) : UNBOUND);
}

static void quota_cached(pkv_cache *c, int32_t b, int delta) {
  if (delta > 0) charge(c, b, quota_index(c, c->blk[b].ns_id));
  quota *q = quota_of(c, c->blk[b].ns_id);
  if (!q) return;
  q->cached = (uint32_t)((int64_t)q->cached + delta);
  reprotect(c, q);
}

static void list_push(struct pkv__quotas *Q, quota *q, int32_t b) {
  Q->lprev[b] = q->newest;
  Q->lnext[b] = -1;
  if (q->newest >= 0) Q->lnext[q->newest] = b;
  else q->oldest = b;
  q->newest = b;
}

static void list_unlink(struct pkv__quotas *Q, quota *q, int32_t b) {
  if (Q->lprev[b] >= 0) Q->lnext[Q->lprev[b]] = Q->lnext[b];
  else q->oldest = Q->lnext[b];
  if (Q->lnext[b] >= 0) Q->lprev[Q->lnext[b]] = Q->lprev[b];
  else q->newest = Q->lprev[b];
}

static void quota_evictable(pkv_cache *c, int32_t b, int delta) {
  quota *q = quota_of(c, c->blk[b].ns_id);
  if (!q) return;
  if (delta > 0) list_push(c->quota, q, b);
  else list_unlink(c->quota, q, b);
  q->evictable = (uint32_t)((int64_t)q->evictable + delta);
  reprotect(c, q);
}

static bool same_ns(const quota *q, const pkv__ns *e) {
  return q->len == e->len && q->adapter_id == e->adapter_id &&
         (q->len == 0 || memcmp(q->bytes, e->bytes, q->len) == 0);
}

/* Counts the blocks of namespace ns_id now (binding an existing
 * namespace to a new quota). */
static void recount(pkv_cache *c, quota *q, uint32_t ns_id) {
  q->cached = q->evictable = 0;
  q->oldest = q->newest = -1;
  for (uint32_t b = 0; b < c->num_blocks; b++) {
    if (!PKV_BLOCK_IS_CACHED(c, b) || c->blk[b].ns_id != ns_id) continue;
    q->cached++;
    if (c->refcount[b] == 0) {
      q->evictable++;
      list_push(c->quota, q, (int32_t)b);
    }
  }
}

/* Charges every block out of the free list to its namespace's quota:
 * cached blocks by their namespace, the blocks a sequence holds outside
 * the index by the sequence's (on set and bind: rare). */
static void retag_all(pkv_cache *c) {
  struct pkv__quotas *Q = c->quota;
  for (uint32_t b = 0; b < c->num_blocks; b++)
    Q->tag[b] = PKV_BLOCK_IS_CACHED(c, b) ? quota_index(c, c->blk[b].ns_id) : UNBOUND;
  for (uint32_t i = 0; i < c->seq_cap; i++) {
    const pkv__seq *s = c->seqs[i];
    if (!s) continue;
    uint32_t qi = quota_index(c, s->ns_id);
    for (uint32_t k = 0; k < s->n_blocks; k++) {
      int32_t b = s->blocks[k];
      if (b >= 0 && (uint32_t)b < c->num_blocks && !PKV_BLOCK_IS_CACHED(c, b))
        Q->tag[b] = qi;
    }
  }
  for (uint32_t i = 0; i < Q->n; i++) Q->q[i].live = 0;
  for (uint32_t b = 0; b < c->num_blocks; b++)
    if (Q->tag[b] != UNBOUND) Q->q[Q->tag[b]].live++;
  for (uint32_t i = 0; i < Q->n; i++) reprotect(c, &Q->q[i]);
}

static void quota_bind(pkv_cache *c, uint32_t id) {
  struct pkv__quotas *Q = c->quota;
  c->ns[id].quota = UNBOUND;
  for (uint32_t i = 0; i < Q->n; i++) {
    quota *q = &Q->q[i];
    if (!same_ns(q, &c->ns[id])) continue;
    /* a namespace is interned once at a time: an earlier slot of it was
     * freed (its blocks gone, counters 0) */
    q->ns_id = id;
    c->ns[id].quota = i;
    recount(c, q, id);
    retag_all(c);
    return;
  }
}

bool pkv__quota_is_valid(pkv_cache *c, char *msg, size_t cap) {
  struct pkv__quotas *Q = c->quota;
  uint32_t protected_sum = 0;
  for (uint32_t i = 0; i < Q->n; i++) {
    const quota *q = &Q->q[i];
    uint32_t cached = 0, evictable = 0, listed = 0, live = 0;
    for (uint32_t b = 0; b < c->num_blocks; b++)
      live += Q->tag[b] == i;
    if (q->live != live) {
      snprintf(msg, cap, "quota %u: live %u, %u blocks charged to it", i,
               q->live, live);
      return false;
    }
    bool bound = q->ns_id != UNBOUND && q->ns_id < c->n_ns &&
                 c->ns[q->ns_id].refs > 0 && c->ns[q->ns_id].quota == i;
    if (bound) {
      for (uint32_t b = 0; b < c->num_blocks; b++)
        if (PKV_BLOCK_IS_CACHED(c, b) && c->blk[b].ns_id == q->ns_id) {
          cached++;
          evictable += c->refcount[b] == 0;
        }
      for (int32_t b = q->oldest; b >= 0 && listed <= evictable; b = Q->lnext[b]) {
        if (!PKV_BLOCK_IS_EVICTABLE(c, b) || c->blk[b].ns_id != q->ns_id) {
          snprintf(msg, cap, "quota %u: listed block %d is not an evictable "
                   "block of its namespace", i, b);
          return false;
        }
        listed++;
      }
    }
    if ((bound || q->cached || q->evictable) &&
        (q->cached != cached || q->evictable != evictable || listed != evictable)) {
      snprintf(msg, cap, "quota %u: counts %u cached / %u evictable / %u "
               "listed, the blocks say %u / %u", i, q->cached, q->evictable,
               listed, cached, evictable);
      return false;
    }
    if (q->protected_ != protected_of(q)) {
      snprintf(msg, cap, "quota %u: %u protected, should be %u", i,
               q->protected_, protected_of(q));
      return false;
    }
    protected_sum += q->protected_;
  }
  for (uint32_t b = 0; b < c->num_blocks; b++) {
    uint32_t want = PKV_BLOCK_IS_FREE(c, b) ? UNBOUND
                    : PKV_BLOCK_IS_CACHED(c, b) ? quota_index(c, c->blk[b].ns_id)
                                                : Q->tag[b];
    if (Q->tag[b] != want) {
      snprintf(msg, cap, "block %u: charged to quota %d, its state says %d", b,
               (int)Q->tag[b], (int)want);
      return false;
    }
  }
  if (protected_sum != c->n_protected) {
    snprintf(msg, cap, "n_protected %u, the quotas protect %u", c->n_protected,
             protected_sum);
    return false;
  }
  return true;
}

void pkv__quota_destroy(pkv_cache *c) {
  struct pkv__quotas *Q = c->quota;
  if (!Q) return;
  for (uint32_t i = 0; i < Q->n; i++) pkv__free(Q->q[i].bytes);
  PKV__FREE_ALL(Q->q, Q->aside, Q->lprev, Q->lnext, Q->tag, Q);
  c->quota = NULL;
  c->quota_up = NULL;
  c->n_protected = 0;
}

/* Whether the policy's victim v may go: its namespace stays at or above
 * its reservation. */
static bool may_evict(pkv_cache *c, int32_t v) {
  quota *q = quota_of(c, c->blk[v].ns_id);
  return !q || q->live > q->reserve;
}

static int32_t quota_victim(pkv_cache *c) {
  struct pkv__quotas *Q = c->quota;
  quota *worst = NULL; /* the namespace furthest over its cap */
  for (uint32_t i = 0; i < Q->n; i++) {
    quota *q = &Q->q[i];
    if (q->ns_id == UNBOUND || !q->cap || q->live <= q->cap || q->oldest < 0)
      continue;
    if (!worst || q->live - q->cap > worst->live - worst->cap) worst = q;
  }
  if (worst) return worst->oldest;
  uint32_t n_aside = 0;
  int32_t v = -1;
  uint64_t now = pkv__now(c);
  while (n_aside < c->n_evictable) {
    v = c->policy->choose_victim(c->policy_state, now);
    if (v < 0 || (uint32_t)v >= c->num_blocks || !PKV_BLOCK_IS_EVICTABLE(c, v)) {
      pkv__err(PKV_ECORRUPT, "policy '%s' chose block %d, which is not "
               "evictable", c->policy->name, v);
      v = -1;
      break;
    }
    if (may_evict(c, v)) break;
    pkv_block_meta m;
    pkv__block_meta(c, v, &m);
    c->policy->on_pinned(c->policy_state, v, &m);
    Q->aside[n_aside++] = v;
    v = -1;
  }
  for (uint32_t i = 0; i < n_aside; i++) {
    pkv_block_meta m;
    pkv__block_meta(c, Q->aside[i], &m);
    c->policy->on_evictable(c->policy_state, Q->aside[i], &m);
  }
  if (v < 0 && n_aside == c->n_evictable)
    pkv__err(PKV_ECORRUPT, "eviction: every evictable block is kept by a "
             "namespace reservation");
  return v;
}

static const pkv__quota_up quota_up = {.cached = quota_cached,
                                        .evictable = quota_evictable,
                                        .victim = quota_victim,
                                        .bind = quota_bind,
                                        .live = quota_live};

int pkv_ns_set_quota(pkv_cache *cache, const pkv_seq_opts *ns,
                     uint32_t cap_blocks, uint32_t reserve_blocks) {
  PKV_ENTER(cache, "ns_set_quota");
  PKV_CHECK(!ns || ns->ns_len == 0 || ns->ns,
            "ns_set_quota: ns is NULL with ns_len %zu", ns ? ns->ns_len : 0);
  PKV_CHECK(!cap_blocks || cap_blocks >= reserve_blocks,
            "ns_set_quota: cap %u below reserve %u", cap_blocks, reserve_blocks);
  PKV_LOCK(cache);
  int rc = 0;
  uint8_t *copy = NULL;
  const void *bytes = ns ? ns->ns : NULL;
  size_t len = ns ? ns->ns_len : 0;
  uint64_t adapter = ns ? ns->adapter_id : 0;
  if (reserve_blocks > cache->num_blocks) {
    rc = pkv__err(PKV_EINVAL, "ns_set_quota: reserve %u > num_blocks %u",
                  reserve_blocks, cache->num_blocks);
    goto out;
  }
  /* the namespace as interned (its digest), if live */
  uint32_t live = UNBOUND;
  if (!pkv__ns_find(cache, bytes, len, adapter, &live, &rc)) {
    if (rc) goto out;
    live = UNBOUND;
  }
  struct pkv__quotas *Q = cache->quota;
  bool fresh = Q == NULL;
  if (fresh) {
    Q = pkv__calloc(1, sizeof *Q);
    if (Q) {
      Q->aside = pkv__malloc((size_t)cache->num_blocks * sizeof *Q->aside);
      Q->lprev = pkv__malloc((size_t)cache->num_blocks * sizeof *Q->lprev);
      Q->lnext = pkv__malloc((size_t)cache->num_blocks * sizeof *Q->lnext);
      Q->tag = pkv__malloc((size_t)cache->num_blocks * sizeof *Q->tag);
    }
    if (!Q || !Q->aside || !Q->lprev || !Q->lnext || !Q->tag) {
      if (Q) {
        pkv__free(Q->aside);
        pkv__free(Q->lprev);
        pkv__free(Q->lnext);
        pkv__free(Q->tag);
      }
      pkv__free(Q);
      rc = pkv__err(PKV_ENOMEM, "ns_set_quota: no memory");
      goto out;
    }
  }
  /* the existing entry, or a new one */
  uint32_t idx = UNBOUND;
  uint64_t reserved_total = reserve_blocks;
  for (uint32_t i = 0; i < Q->n; i++) {
    quota *q = &Q->q[i];
    bool same = q->len == len && q->adapter_id == adapter &&
                (len == 0 || memcmp(q->bytes, bytes, len) == 0);
    if (same) idx = i;
    else reserved_total += q->reserve;
  }
  if (reserved_total > cache->num_blocks) {
    rc = pkv__err(PKV_ERANGE, "ns_set_quota: reservations would total %llu "
                  "blocks > num_blocks %u", (unsigned long long)reserved_total,
                  cache->num_blocks);
    goto fail;
  }
  if (idx == UNBOUND) {
    if (len && !(copy = pkv__malloc(len))) {
      rc = pkv__err(PKV_ENOMEM, "ns_set_quota: no memory");
      goto fail;
    }
    if (Q->n == Q->cap) {
      uint32_t cap = Q->cap ? Q->cap * 2 : 4;
      quota *t = pkv__realloc(Q->q, cap * sizeof *t);
      if (!t) {
        rc = pkv__err(PKV_ENOMEM, "ns_set_quota: no memory");
        goto fail;
      }
      Q->q = t;
      Q->cap = cap;
    }
  }
  /* nothing can fail from here on */
  cache->quota = Q;
  cache->quota_up = &quota_up;
  if (idx == UNBOUND) {
    idx = Q->n++;
    quota *q = &Q->q[idx];
    memset(q, 0, sizeof *q);
    if (len) memcpy(copy, bytes, len);
    q->bytes = copy;
    q->len = len;
    q->adapter_id = adapter;
    q->ns_id = UNBOUND;
    q->oldest = q->newest = -1;
    copy = NULL;
  }
  quota *q = &Q->q[idx];
  q->cap = cap_blocks;
  q->reserve = reserve_blocks;
  if (live != UNBOUND) { /* else bound when pkv__ns_intern creates it */
    cache->ns[live].quota = idx;
    q->ns_id = live;
    recount(cache, q, live);
  }
  retag_all(cache);
  goto out;
fail:
  pkv__free(copy);
  if (fresh) {
    PKV__FREE_ALL(Q->q, Q->lprev, Q->lnext, Q->aside, Q->tag, Q);
  }
out:
  return pkv__leave(cache, rc);
}
