/*
 * ns.c — namespaces: the interned (namespace bytes, adapter id) pairs that
 * sequences and hashed blocks name by a 32-bit id.
 *
 * The digest of a pair is the `extra` of the block key (prefix.c has the
 * encoding): XXH3-128 with PKV__KEY_SEED over the typed encoding
 *   0x01 'N' u64-LE ns_len  ns bytes   0x02 'A' u64-LE 8  adapter_id
 * Entry 0 is the default namespace (empty, adapter 0) and is permanent.
 * An entry lives while sequences or hashed blocks refer to it (refs).
 *
 * Floor: above entry.c and alloc.c, below the block pool (blocks.c drops a
 * block's reference when it leaves the HASHED state).
 */
#include "core.h"

#include <string.h>
#include <xxhash.h>

static pkv_hash128 ns_digest(const void *ns, size_t len, uint64_t adapter,
                             uint8_t *buf_or_null) {
  size_t n = 10 + len + 10 + 8;
  uint8_t small[256];
  uint8_t *buf = buf_or_null ? buf_or_null : small;
  buf[0] = 0x01;
  buf[1] = 'N';
  pkv__put_u64(buf + 2, len);
  if (len) memcpy(buf + 10, ns, len);
  uint8_t *a = buf + 10 + len;
  a[0] = 0x02;
  a[1] = 'A';
  pkv__put_u64(a + 2, 8);
  pkv__put_u64(a + 10, adapter);
  XXH128_hash_t h = XXH3_128bits_withSeed(buf, n, PKV__KEY_SEED);
  return (pkv_hash128){h.low64, h.high64};
}

/* Namespaces are interned in a table chained by digest (ns_heads), with
 * a free list of released slots, so creating a sequence costs one hash and
 * a short chain walk however many tenants a server has. */
#define NS_NONE UINT32_MAX

static uint32_t ns_bucket(const pkv_cache *c, pkv_hash128 d) {
  return (uint32_t)d.lo & c->ns_mask;
}

/* Rebuilds the buckets for at least `want` entries. */
static int ns_rehash(pkv_cache *c, uint32_t want) {
  uint32_t n = 16;
  while (n < 2 * want) n *= 2;
  uint32_t *heads = pkv__malloc(n * sizeof *heads);
  if (!heads) return pkv__err(PKV_ENOMEM, "no memory for the namespace index");
  for (uint32_t i = 0; i < n; i++) heads[i] = NS_NONE;
  pkv__free(c->ns_heads);
  c->ns_heads = heads;
  c->ns_mask = n - 1;
  for (uint32_t i = 0; i < c->n_ns; i++) {
    if (c->ns[i].refs == 0) continue;
    uint32_t h = ns_bucket(c, c->ns[i].digest);
    c->ns[i].next = heads[h];
    heads[h] = i;
  }
  return 0;
}

/* The digest of (ns, adapter) in *d and its live entry, or NS_NONE; -1
 * (error set) when hashing needed memory that was not there. */
static int ns_lookup(pkv_cache *c, const void *ns, size_t len,
                     uint64_t adapter_id, pkv_hash128 *d, uint32_t *found) {
  if (len > SIZE_MAX / 2) return pkv__err(PKV_EINVAL, "namespace too long");
  uint8_t *scratch = NULL;
  if (len > 256 - 28) {
    scratch = pkv__malloc(len + 28);
    if (!scratch) return pkv__err(PKV_ENOMEM, "no memory to hash a namespace");
  }
  *d = ns_digest(ns, len, adapter_id, scratch);
  pkv__free(scratch);
  *found = NS_NONE;
  if (!c->ns_heads) return 0;
  for (uint32_t i = c->ns_heads[ns_bucket(c, *d)]; i != NS_NONE; i = c->ns[i].next) {
    pkv__ns *e = &c->ns[i];
    if (e->digest.lo == d->lo && e->digest.hi == d->hi && e->len == len &&
        e->adapter_id == adapter_id && (len == 0 || memcmp(e->bytes, ns, len) == 0)) {
      *found = i;
      break;
    }
  }
  return 0;
}

bool pkv__ns_find(pkv_cache *c, const void *ns, size_t len,
                  uint64_t adapter_id, uint32_t *out, int *rc) {
  pkv_hash128 d;
  *rc = ns_lookup(c, ns, len, adapter_id, &d, out);
  return *rc == 0 && *out != NS_NONE;
}

int pkv__ns_intern(pkv_cache *c, const void *ns, size_t len,
                   uint64_t adapter_id, uint32_t *out) {
  pkv_hash128 d;
  uint32_t found;
  int rc = ns_lookup(c, ns, len, adapter_id, &d, &found);
  if (rc) return rc;
  if (found != NS_NONE) {
    c->ns[found].refs++;
    *out = found;
    return 0;
  }
  uint8_t *copy = NULL;
  if (len) {
    copy = pkv__malloc(len);
    if (!copy) return pkv__err(PKV_ENOMEM, "no memory for a namespace");
    memcpy(copy, ns, len);
  }
  uint32_t id = c->ns_free;
  if (id == NS_NONE) {
    if (c->n_ns == c->cap_ns) {
      if (!pkv__grow_u32((void **)&c->ns, &c->cap_ns, c->n_ns + 1ull,
                         sizeof *c->ns, 8)) {
        pkv__free(copy);
        return pkv__err(PKV_ENOMEM, "no memory for the namespace table");
      }
    }
    if (!c->ns_heads || c->n_ns + 1 > (c->ns_mask + 1) / 2) {
      rc = ns_rehash(c, c->n_ns + 1);
      if (rc) {
        pkv__free(copy);
        return rc;
      }
    }
    id = c->n_ns++;
  } else {
    c->ns_free = c->ns[id].next;
  }
  pkv__ns *e = &c->ns[id];
  e->bytes = copy;
  e->len = len;
  e->adapter_id = adapter_id;
  e->digest = d;
  e->refs = 1;
  uint32_t h = ns_bucket(c, d);
  e->next = c->ns_heads[h];
  c->ns_heads[h] = id;
  e->quota = UINT32_MAX;
  if (c->quota) c->quota_up->bind(c, id);
  *out = id;
  return 0;
}

void pkv__ns_unref(pkv_cache *c, uint32_t id) {
  pkv__ns *e = &c->ns[id];
  PKV_ASSERT(e->refs > 0);
  if (--e->refs != 0) return;
  uint32_t *pp = &c->ns_heads[ns_bucket(c, e->digest)];
  while (*pp != id) pp = &c->ns[*pp].next;
  *pp = e->next;
  pkv__free(e->bytes);
  e->bytes = NULL;
  e->len = 0;
  e->next = c->ns_free;
  c->ns_free = id;
}

int pkv__ns_init(pkv_cache *c) {
  c->ns_free = NS_NONE;
  uint32_t id;
  return pkv__ns_intern(c, NULL, 0, 0, &id); /* ns 0: default, permanent */
}

void pkv__ns_destroy(pkv_cache *c) {
  for (uint32_t i = 0; i < c->n_ns; i++) pkv__free(c->ns[i].bytes);
  pkv__free(c->ns);
  pkv__free(c->ns_heads);
}
