/*
 * host.c — the host tier: evicted blocks kept in host memory.
 *
 *   slots[n_slots]     key, parent, namespace fold, checksum, chain link
 *   data[n_slots]      owned mode: [tokens (block_size i32)][K/V (kv_bytes)]
 *   heads[]            key buckets, chained through slots[].next
 *
 * n_slots = max_bytes / (kv_bytes + token bytes) in owned mode; in external
 * mode the K/V live in the caller's host buffer (slot * kv_bytes into it),
 * so n_slots = max_bytes / kv_bytes and only the metadata is here.
 *
 * Order: a built-in eviction policy (pkv_policy_find), the same code the
 * pool uses, over slot numbers.  Every stored slot is evictable for it
 * (on_insert + on_evictable); a hit refreshes it (on_pinned, on_hit,
 * on_evictable); choose_victim picks the slot to give up when a put finds
 * no free slot, and the victim goes to the tier below when there is one.
 * A promotion takes the block out (exclusive tiers: a block lives in one
 * place, so capacity adds up).
 */
#include "tier/tier.h"

#include <stdio.h>
#include <string.h>

#define NONE (-1)

typedef struct host_slot {
  pkv_hash128 key, parent;
  uint64_t checksum;
  uint32_t ns_fold;
  int32_t next;          /* bucket chain while used, free list while free */
  uint8_t used;
} host_slot;

typedef struct host {
  pkv__tier base;
  const pkv_policy_ops *pol;
  void *pst;
  size_t kv_bytes;
  uint32_t block_size;
  uint32_t n_slots, n_used;
  bool external;
  size_t stride;         /* bytes of one slot's data (owned) */
  uint8_t *data;
  size_t data_bytes;
  host_slot *slots;
  int32_t *heads;
  uint32_t mask;
  int32_t free_head;
  uint64_t clock;        /* logical time for the policy */
  pkv__tier **below;
  pkv_tier_stats st;
} host;

static uint8_t *slot_tokens(host *h, int32_t s) { return h->data + (size_t)s * h->stride; }
static uint8_t *slot_kv(host *h, int32_t s) {
  return slot_tokens(h, s) + (size_t)h->block_size * sizeof(int32_t);
}

static void meta(host *h, int32_t s, pkv_block_meta *m) {
  memset(m, 0, sizeof *m);
  m->now = ++h->clock;
  m->key = h->slots[s].key;
  m->parent = h->slots[s].parent;
  m->parent_block = -1;
}

static int32_t find(host *h, const pkv__tier_block *b) {
  for (int32_t s = h->heads[b->key.lo & h->mask]; s != NONE; s = h->slots[s].next) {
    const host_slot *e = &h->slots[s];
    if (e->key.lo == b->key.lo && e->key.hi == b->key.hi) return s;
  }
  return NONE;
}

/* Whether slot s is b: parent, namespace and token ids (the key matched). */
static bool same_block(host *h, int32_t s, const pkv__tier_block *b) {
  const host_slot *e = &h->slots[s];
  if (e->parent.lo != b->parent.lo || e->parent.hi != b->parent.hi ||
      e->ns_fold != b->ns_id_hash || b->ntok != h->block_size)
    return false;
  return h->external ||
         memcmp(slot_tokens(h, s), b->tokens, b->ntok * sizeof(int32_t)) == 0;
}

static void unlink_slot(host *h, int32_t s) {
  int32_t *pp = &h->heads[h->slots[s].key.lo & h->mask];
  while (*pp != s) pp = &h->slots[*pp].next;
  *pp = h->slots[s].next;
  h->pol->on_remove(h->pst, s);
  h->slots[s].used = 0;
  h->slots[s].next = h->free_head;
  h->free_head = s;
  h->n_used--;
}

/* A free slot, evicting (and passing down) the policy's victim if none. */
static int32_t slot_alloc(host *h) {
  if (h->free_head == NONE) {
    int32_t v = h->pol->choose_victim(h->pst, h->clock);
    if (v < 0 || (uint32_t)v >= h->n_slots || !h->slots[v].used) return NONE;
    pkv__tier *down = h->below ? *h->below : NULL;
    if (down && !h->external) {
      pkv__tier_block vb = {.key = h->slots[v].key, .parent = h->slots[v].parent,
                            .ns_id_hash = h->slots[v].ns_fold,
                            .ntok = h->block_size,
                            .tokens = (const int32_t *)slot_tokens(h, v),
                            .kv = slot_kv(h, v), .kv_bytes = h->kv_bytes};
      if (down->ops->put(down, &vb, 1) != 0) pkv__err_clear();
    }
    unlink_slot(h, v);
    h->st.evictions++;
  }
  int32_t s = h->free_head;
  h->free_head = h->slots[s].next;
  return s;
}

/* Stores b in a slot; the slot, or NONE (already there: refreshed). */
static int32_t store(host *h, const pkv__tier_block *b) {
  if (b->ntok != h->block_size || b->kv_bytes != h->kv_bytes) {
    h->st.skipped++;
    return NONE;
  }
  int32_t s = find(h, b);
  if (s != NONE) { /* already kept (a twin evicted twice): refresh only */
    pkv_block_meta m;
    meta(h, s, &m);
    h->pol->on_pinned(h->pst, s, &m);
    h->pol->on_evictable(h->pst, s, &m);
    return h->external ? s : NONE;
  }
  if ((s = slot_alloc(h)) == NONE) {
    h->st.skipped++;
    return NONE;
  }
  host_slot *e = &h->slots[s];
  e->key = b->key;
  e->parent = b->parent;
  e->ns_fold = b->ns_id_hash;
  e->used = 1;
  if (!h->external) {
    memcpy(slot_tokens(h, s), b->tokens, b->ntok * sizeof(int32_t));
    memcpy(slot_kv(h, s), b->kv, h->kv_bytes);
    e->checksum = pkv__tier_checksum(b->tokens, b->ntok, b->kv, h->kv_bytes);
  }
  uint32_t bucket = b->key.lo & h->mask;
  e->next = h->heads[bucket];
  h->heads[bucket] = s;
  h->n_used++;
  pkv_block_meta m;
  meta(h, s, &m);
  h->pol->on_insert(h->pst, s, &m);
  h->pol->on_evictable(h->pst, s, &m);
  h->st.puts++;
  h->st.put_bytes += h->kv_bytes + b->ntok * sizeof(int32_t);
  return s;
}

static int host_put(pkv__tier *t, const pkv__tier_block *b, size_t n) {
  host *h = (host *)t;
  for (size_t i = 0; i < n; i++) store(h, &b[i]);
  return 0;
}

/* The verified slot holding b, or NONE (counted). */
static int32_t lookup(host *h, const pkv__tier_block *b) {
  h->st.gets++;
  int32_t s = find(h, b);
  if (s == NONE) {
    h->st.misses++;
    return NONE;
  }
  if (!same_block(h, s, b) ||
      (!h->external &&
       pkv__tier_checksum((const int32_t *)slot_tokens(h, s), h->block_size,
                          slot_kv(h, s), h->kv_bytes) != h->slots[s].checksum)) {
    h->st.misses++;
    h->st.errors++;
    return NONE;
  }
  h->st.hits++;
  return s;
}

static int host_get(pkv__tier *t, pkv__tier_block *b, size_t n, uint8_t *found) {
  host *h = (host *)t;
  for (size_t i = 0; i < n; i++) {
    int32_t s = h->external || b[i].kv_bytes != h->kv_bytes ? NONE : lookup(h, &b[i]);
    found[i] = s != NONE;
    if (s == NONE) continue;
    memcpy(b[i].kv, slot_kv(h, s), h->kv_bytes);
    pkv_block_meta m;
    meta(h, s, &m);
    h->pol->on_pinned(h->pst, s, &m);
    h->pol->on_hit(h->pst, s, &m);
    h->pol->on_evictable(h->pst, s, &m);
  }
  return 0;
}

static int host_contains(pkv__tier *t, const pkv__tier_block *b) {
  host *h = (host *)t;
  int32_t s = find(h, b);
  return s != NONE && same_block(h, s, b);
}

static void host_stats(pkv__tier *t, pkv_tier_stats *out) {
  host *h = (host *)t;
  *out = h->st;
  snprintf(out->name, sizeof out->name, "host");
  size_t per = h->external ? h->kv_bytes : h->stride;
  out->bytes_used = (uint64_t)h->n_used * per;
  out->capacity_bytes = (uint64_t)h->n_slots * per;
  out->blocks = h->n_used;
}

static void host_destroy(pkv__tier *t) {
  host *h = (host *)t;
  if (!h) return;
  if (h->pol && h->pst) h->pol->destroy(h->pst);
  if (h->data) pkv__arena_free(h->data, h->data_bytes);
  pkv__free(h->slots);
  pkv__free(h->heads);
  pkv__free(h);
}

static const pkv__tier_ops host_ops = {
    .name = "host", .put = host_put, .get = host_get,
    .contains = host_contains, .stats = host_stats, .destroy = host_destroy};

int pkv__host_create(size_t kv_bytes, uint32_t block_size, uint64_t max_bytes,
                     const char *policy, bool external, pkv__tier **out) {
  const pkv_policy_ops *pol = pkv_policy_find(policy ? policy : "lru");
  if (!pol) return pkv__err(PKV_ENOENT, "host tier: unknown policy '%s'", policy);
  size_t stride = kv_bytes + (size_t)block_size * sizeof(int32_t);
  uint64_t n = max_bytes / (external ? kv_bytes : stride);
  if (n == 0)
    return pkv__err(PKV_EINVAL, "host tier: %llu bytes hold no block",
                    (unsigned long long)max_bytes);
  if (n > INT32_MAX / 2) n = INT32_MAX / 2;
  host *h = pkv__calloc(1, sizeof *h);
  if (!h) return pkv__err(PKV_ENOMEM, "host tier: no memory");
  h->base.ops = &host_ops;
  h->pol = pol;
  h->kv_bytes = kv_bytes;
  h->block_size = block_size;
  h->n_slots = (uint32_t)n;
  h->external = external;
  h->stride = stride;
  uint32_t buckets = 16;
  while (buckets < n) buckets *= 2;
  h->mask = buckets - 1;
  h->slots = pkv__malloc((size_t)n * sizeof *h->slots);
  h->heads = pkv__malloc((size_t)buckets * sizeof *h->heads);
  if (!external) {
    h->data_bytes = (size_t)n * stride;
    h->data = pkv__arena_alloc(h->data_bytes);
  }
  if (!h->slots || !h->heads || (!external && !h->data)) {
    if (!h->data) h->data_bytes = 0;
    host_destroy(&h->base);
    return pkv__err(PKV_ENOMEM, "host tier: no memory for %llu slots",
                    (unsigned long long)n);
  }
  for (uint32_t i = 0; i < buckets; i++) h->heads[i] = NONE;
  for (uint32_t i = 0; i < n; i++) {
    h->slots[i].used = 0;
    h->slots[i].next = i + 1 < n ? (int32_t)(i + 1) : NONE;
  }
  h->free_head = 0;
  int rc = pol->create(&h->pst, h->n_slots, NULL);
  if (rc) {
    h->pst = NULL;
    host_destroy(&h->base);
    return pkv__err(rc < 0 ? rc : PKV_EINVAL, "host tier: policy '%s' create "
                    "failed", pol->name);
  }
  *out = &h->base;
  return 0;
}

void pkv__host_set_below(pkv__tier *t, pkv__tier **below) {
  ((host *)t)->below = below;
}

int32_t pkv__host_put_slot(pkv__tier *t, const pkv__tier_block *b) {
  return store((host *)t, b);
}

int32_t pkv__host_take_slot(pkv__tier *t, const pkv__tier_block *b) {
  host *h = (host *)t;
  int32_t s = lookup(h, b);
  if (s != NONE) unlink_slot(h, s);
  return s;
}

int pkv__host_take(pkv__tier *t, pkv__tier_block *b) {
  host *h = (host *)t;
  int32_t s = lookup(h, b);
  if (s == NONE) return 0;
  memcpy(b->kv, slot_kv(h, s), h->kv_bytes);
  unlink_slot(h, s);
  return 1;
}

void pkv__host_count_promotion(pkv__tier *t, uint64_t n) {
  ((host *)t)->st.promotions += n;
}
