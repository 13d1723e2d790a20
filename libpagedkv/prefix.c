/*
 * prefix.c — the prefix index (floor 2, core.h): block keys, registration
 * on commit, deduplication, the verified walk (probe; seq.c matches with
 * it), reset and events.  Namespaces are interned in ns.c.
 *
 * Key of a full block (documented, stable across processes and machines):
 *
 *   key(block i) = XXH3_128bits_withSeed(bytes, len, PKV__KEY_SEED) over
 *       parent.lo, parent.hi        (u64 LE; zero for block 0)
 *       extra.lo,  extra.hi         (u64 LE; the namespace digest below)
 *       tokens[0 .. block_size)     (i32 LE)
 *   extra = XXH3_128bits_withSeed over the typed encoding
 *       0x01 'N' u64-LE ns_len  ns bytes
 *       0x02 'A' u64-LE 8       adapter_id (u64 LE)
 *   PKV__KEY_SEED = 0x706b76206b657931 ("pkv key1"; core.h)
 *
 * Every element is tagged with its type and length, so no two different
 * (namespace, adapter) pairs encode to the same bytes, and the parent key
 * chains each block to its whole prefix.
 *
 * Index: buckets heads[key.lo & mask] chained through blk[].hash_next;
 * num_blocks <= buckets, so chains stay short.  Verification: a candidate is
 * a hit only if its stored token ids, its namespace and its parent key equal
 * ours — a key collision costs a miss (counted), never wrong K/V.  A test
 * hook (pkv__test_weaken_keys) makes the index look at only the low bits of
 * the key, so tests can force collisions and watch verification work.
 *
 * Cached blocks are linked under their cached parent (first_child /
 * siblings).  When a parent leaves the index its children become orphans:
 * they stay cached (they are reachable again as soon as the parent is
 * recomputed and re-registered, since the key chain is unchanged) unless
 * PKV_CACHE_EVICT_ORPHANS_FIRST asks the eviction driver to take them before
 * anything else (see evict.c).
 *
 * Duplicates: a commit without dedup (the default: stable tables) caches a
 * block whose key is already cached right after its twin in the bucket
 * chain, so lookups find the first; with dedup the table is remapped to the
 * cached block and the replaced one keeps a deferred reference.
 *
 * Events are emitted under the lock, numbered 1, 2, 3, ... without gaps, to
 * the push callback (with pkv__tls_emitting naming the cache, so a call back
 * into it gets PKV_EBUSY) and/or the pull queue (serve.c).  The read-only
 * probe (pkv_prefix_probe) shares the match's walk and changes nothing.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ------------------------------------------------ init */

int pkv__prefix_init(pkv_cache *c) {
  c->key_mask_lo = ~0ull;
  int rc = pkv__ns_init(c);
  if (rc) return rc;
  uint32_t buckets = 16;
  while (buckets < c->num_blocks && buckets < (1u << 31)) buckets *= 2;
  c->heads = pkv__malloc((size_t)buckets * sizeof *c->heads);
  c->hash_buf = pkv__malloc(32 + (size_t)c->block_size * 4);
  if (!c->heads || !c->hash_buf)
    return pkv__err(PKV_ENOMEM, "no memory for the prefix index");
  memset(c->heads, 0xff, (size_t)buckets * sizeof *c->heads);
  c->hash_mask = buckets - 1;
  return 0;
}

void pkv__prefix_destroy(pkv_cache *c) {
  pkv__ns_destroy(c);
  pkv__free(c->heads);
  pkv__free(c->hash_buf);
}

void pkv__test_weaken_keys(pkv_cache *cache, unsigned bits) {
  if (pkv__lock(cache)) return;
  cache->key_mask_lo = bits >= 64 ? ~0ull : ((1ull << bits) - 1);
  /* Buckets depend on the mask: rebuild the chains. */
  for (uint32_t h = 0; h <= cache->hash_mask; h++) cache->heads[h] = -1;
  for (uint32_t b = 0; b < cache->num_blocks; b++) {
    if (!PKV_BLOCK_IS_CACHED(cache, b)) continue;
    uint32_t h = pkv__bucket(cache, cache->blk[b].key);
    cache->blk[b].hash_next = cache->heads[h];
    cache->heads[h] = (int32_t)b;
  }
  PKV_ASSERT_VALID(cache);
  pkv__unlock(cache);
}

/* ------------------------------------------------ keys */

pkv_hash128 pkv__block_key(pkv_cache *c, const pkv_hash128 *parent,
                           uint32_t ns_id, const int32_t *tokens) {
  uint8_t *buf = c->hash_buf;
  size_t n = c->block_size;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  pkv__put_u64(buf, parent->lo);
  pkv__put_u64(buf + 8, parent->hi);
  pkv__put_u64(buf + 16, c->ns[ns_id].digest.lo);
  pkv__put_u64(buf + 24, c->ns[ns_id].digest.hi);
  for (size_t i = 0; i < n; i++) {
    uint32_t t = (uint32_t)tokens[i];
    buf[32 + 4 * i] = (uint8_t)t;
    buf[33 + 4 * i] = (uint8_t)(t >> 8);
    buf[34 + 4 * i] = (uint8_t)(t >> 16);
    buf[35 + 4 * i] = (uint8_t)(t >> 24);
  }
#else
  /* Little-endian host: the documented byte order is the memory order. */
  /* The parent key was usually just stored as two 8-byte halves (a hash
   * result in registers); a 16-byte reload of it would miss store
   * forwarding and stall ~15 cycles per block, so copy it as two 8-byte
   * words and keep the compiler from merging them. */
  uint64_t lo = parent->lo, hi = parent->hi;
  __asm__("" : "+r"(lo), "+r"(hi));
  memcpy(buf, &lo, 8);
  memcpy(buf + 8, &hi, 8);
  memcpy(buf + 16, &c->ns[ns_id].digest, 16);
  memcpy(buf + 32, tokens, n * 4);
#endif
  XXH128_hash_t h = XXH3_128bits_withSeed(buf, 32 + n * 4, PKV__KEY_SEED);
  return (pkv_hash128){h.low64, h.high64};
}

static bool key_eq(pkv_hash128 a, pkv_hash128 b) {
  return a.lo == b.lo && a.hi == b.hi;
}

/* Looks as the index looks: through the (possibly weakened) key mask. */
static bool index_key_eq(const pkv_cache *c, pkv_hash128 a, pkv_hash128 b) {
  if (c->key_mask_lo != ~0ull) return (a.lo & c->key_mask_lo) == (b.lo & c->key_mask_lo);
  return key_eq(a, b);
}

int32_t pkv__index_find_key(pkv_cache *c, pkv_hash128 key, uint32_t ns_id) {
  for (int32_t b = c->heads[pkv__bucket(c, key)]; b >= 0; b = c->blk[b].hash_next)
    if (key_eq(c->blk[b].key, key) && c->blk[b].ns_id == ns_id) return b;
  return -1;
}

/* A cached block that verifies as block `depth` of a chain under `parent`
 * with these tokens, or -1.  *collided counts candidates the index offered
 * that failed verification. */
static int32_t index_find(pkv_cache *c, pkv_hash128 key, pkv_hash128 parent,
                          uint32_t ns_id, const int32_t *tokens,
                          uint64_t *collided) {
  size_t bs = c->block_size;
  for (int32_t b = c->heads[pkv__bucket(c, key)]; b >= 0; b = c->blk[b].hash_next) {
    const pkv__block *blk = &c->blk[b];
    if (!index_key_eq(c, blk->key, key)) continue;
    if (blk->ns_id == ns_id && key_eq(blk->parent, parent) &&
        memcmp(c->block_tokens + (size_t)b * bs, tokens, bs * sizeof *tokens) == 0)
      return b;
    (*collided)++;
  }
  return -1;
}

int32_t pkv__index_lookup(pkv_cache *c, pkv_hash128 key, pkv_hash128 parent,
                          uint32_t ns_id, const int32_t *tokens) {
  uint64_t collided = 0;
  int32_t b = index_find(c, key, parent, ns_id, tokens, &collided);
  c->st.prefix_collisions += collided;
  return b;
}

/* How many cached children of the previous matched block a match looks at
 * before it falls back to hashing. */
#define PKV_CHILD_SCAN 8

/* The cached child of parent_block holding these tokens in namespace ns_id,
 * or -1.  Such a child is exactly the block index_find would verify (its key
 * is a function of its parent key, namespace and tokens, all compared here),
 * found without computing a key.  A wide fan-out, an orphan not yet
 * re-linked under a recomputed parent, or weakened test keys (which exist to
 * exercise the index) return -1 and the caller hashes. */
static int32_t child_with_tokens(pkv_cache *c, int32_t parent_block,
                                 uint32_t ns_id, const int32_t *tokens) {
  if (c->key_mask_lo != ~0ull) return -1;
  size_t bs = c->block_size;
  pkv_hash128 parent_key = c->blk[parent_block].key;
  int scanned = 0;
  for (int32_t ch = c->fam[parent_block].first_child;
       ch >= 0 && scanned < PKV_CHILD_SCAN; ch = c->fam[ch].next_sibling, scanned++) {
    const pkv__block *blk = &c->blk[ch];
    if (blk->ns_id == ns_id && key_eq(blk->parent, parent_key) &&
        memcmp(c->block_tokens + (size_t)ch * bs, tokens, bs * sizeof *tokens) == 0)
      return ch;
  }
  return -1;
}

/* ------------------------------------------------ events */

/* Appends ev to the pull queue, or counts it lost (see pkv_events_drain:
 * once the queue has filled, everything is dropped until it is empty). */
static void evq_push(pkv_cache *c, const pkv_event *ev) {
  if (c->evq_lost || c->evq_len == c->evq_cap) {
    if (c->evq_lost++ == 0) c->evq_lost_first = ev->seqno;
    c->st.events_lost++;
    return;
  }
  uint32_t at = c->evq_head + c->evq_len;
  if (at >= c->evq_cap) at -= c->evq_cap;
  c->evq[at] = *ev;
  c->evq[at].ns = NULL; /* the bytes may be gone by the time it is pulled */
  c->evq_len++;
}

void pkv__emit(pkv_cache *c, pkv_event_type type, int32_t b) {
  pkv__emit_seq(c, type, b, NULL, 0, -1);
}

void pkv__emit_seq(pkv_cache *c, pkv_event_type type, int32_t b,
                   const pkv__seq *s, uint32_t index, int32_t old_block) {
  c->event_seqno++;
  c->st.events++;
  if (!c->cfg.on_event && !c->evq_cap) return;
  pkv_event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.seqno = c->event_seqno;
  ev.block = -1;
  ev.old_block = old_block;
  ev.index = index; /* table index, or the tier of DEMOTED / PROMOTED */
  if (s) ev.seq = PKV_SEQ_HANDLE(s->index, s->gen);
  if (b >= 0) {
    const pkv__block *blk = &c->blk[b];
    const pkv__ns *ns = &c->ns[blk->ns_id];
    ev.key = blk->key;
    ev.parent = blk->parent;
    ev.block = b;
    ev.n_tokens = c->block_size;
    ev.ns = ns->bytes;
    ev.ns_len = ns->len;
    ev.adapter_id = ns->adapter_id;
  }
  if (c->evq_cap) evq_push(c, &ev);
  if (c->cfg.on_event) {
    const pkv_cache *outer = pkv__tls_emitting;
    pkv__tls_emitting = c;
    c->cfg.on_event(&ev, c->cfg.event_user);
    pkv__tls_emitting = outer;
  }
}

/* ------------------------------------------------ family links */

static void unlink_from_parent(pkv_cache *c, int32_t b) {
  pkv__family *f = &c->fam[b];
  if (f->parent_block < 0) return;
  if (f->prev_sibling >= 0)
    c->fam[f->prev_sibling].next_sibling = f->next_sibling;
  else
    c->fam[f->parent_block].first_child = f->next_sibling;
  if (f->next_sibling >= 0)
    c->fam[f->next_sibling].prev_sibling = f->prev_sibling;
  f->parent_block = f->next_sibling = f->prev_sibling = -1;
}

static void link_under(pkv_cache *c, int32_t b, int32_t parent) {
  pkv__family *f = &c->fam[b];
  f->parent_block = parent;
  f->prev_sibling = -1;
  f->next_sibling = c->fam[parent].first_child;
  if (f->next_sibling >= 0) c->fam[f->next_sibling].prev_sibling = b;
  c->fam[parent].first_child = b;
  c->blk[b].flags &= (uint16_t)~PKV_BLK_ORPHAN;
}

/* Links b under its cached parent if there is one; marks it an orphan
 * otherwise (a first block is never an orphan). */
static void adopt(pkv_cache *c, int32_t b) {
  pkv__block *blk = &c->blk[b];
  if (blk->depth == 0) return;
  int32_t p = pkv__index_find_key(c, blk->parent, blk->ns_id);
  if (p >= 0)
    link_under(c, b, p);
  else
    blk->flags |= PKV_BLK_ORPHAN;
}

bool pkv__block_is_orphan(pkv_cache *c, int32_t b) {
  if (c->blk[b].depth == 0) return false;
  if (c->fam[b].parent_block >= 0) return false;
  /* Possibly re-registered since: adopt lazily. */
  adopt(c, b);
  return (c->blk[b].flags & PKV_BLK_ORPHAN) != 0;
}

/* ------------------------------------------------ insert / remove */

static uint8_t range_priority(pkv_cache *c, const pkv__seq *s, uint32_t bi,
                              uint64_t *until) {
  uint32_t lo = bi * c->block_size, hi = lo + c->block_size;
  *until = 0;
  for (uint32_t r = s->n_ranges; r-- > 0;) {
    const pkv__prio_range *pr = &s->ranges[r];
    if (pr->begin < hi && pr->end > lo) {
      if (pr->duration_ns) *until = pkv__now(c) + pr->duration_ns;
      return pr->priority;
    }
  }
  return s->priority;
}

/* Enters b (block bi of s) into the index: at the head of its bucket, or
 * right after `twin` (a cached block with the same key), so lookups keep
 * finding the block cached first and its twin serves only once it is gone. */
static void index_link(pkv_cache *c, const pkv__seq *s, uint32_t bi,
                       int32_t b, int32_t twin, uint8_t priority) {
  pkv__block *blk = &c->blk[b];
  int32_t *link = twin >= 0 ? &c->blk[twin].hash_next
                            : &c->heads[pkv__bucket(c, blk->key)];
  blk->hash_next = *link;
  *link = b;
  blk->flags |= PKV_BLK_CACHED;
  if (s) {
    blk->priority = range_priority(c, s, bi, &blk->priority_until);
  } else {
    blk->priority = priority;
    blk->priority_until = 0;
  }
  c->n_cached++;
  if (c->quota) c->quota_up->cached(c, b, +1);
  adopt(c, b);
  if (c->policy) {
    pkv_block_meta m;
    pkv__block_meta(c, b, &m);
    c->policy->on_insert(c->policy_state, b, &m);
  }
  pkv__emit_seq(c, PKV_EVENT_STORED, b, s, bi, -1);
}

static void index_insert(pkv_cache *c, const pkv__seq *s, uint32_t bi,
                         int32_t b, int32_t twin) {
  index_link(c, s, bi, b, twin, 0);
}

pkv_hash128 pkv__prefix_insert_block(pkv_cache *c, int32_t b,
                                     pkv_hash128 parent, uint32_t depth,
                                     uint32_t ns_id, uint8_t priority) {
  pkv__block *blk = &c->blk[b];
  PKV_ASSERT(c->refcount[b] > 0 && !(blk->flags & PKV_BLK_HASHED));
  blk->key = pkv__block_key(c, &parent, ns_id,
                            c->block_tokens + (size_t)b * c->block_size);
  blk->parent = parent;
  blk->depth = depth;
  blk->ns_id = ns_id;
  c->ns[ns_id].refs++;
  blk->flags |= PKV_BLK_HASHED;
  index_link(c, NULL, depth, b, pkv__index_find_key(c, blk->key, ns_id),
             priority);
  return blk->key;
}

void pkv__prefix_remove(pkv_cache *c, int32_t b, bool emit) {
  pkv__block *blk = &c->blk[b];
  PKV_ASSERT(PKV_BLOCK_IS_CACHED(c, b));
  int32_t *pp = &c->heads[pkv__bucket(c, blk->key)];
  while (*pp != b) pp = &c->blk[*pp].hash_next;
  *pp = blk->hash_next;
  blk->hash_next = -1; /* the pool links it next (shared field) */
  if (emit) pkv__emit(c, PKV_EVENT_REMOVED, b);
  blk->flags &= (uint16_t)~(PKV_BLK_CACHED | PKV_BLK_ORPHAN);
  c->n_cached--;
  if (c->refcount[b] == 0) c->n_evictable--;
  if (c->quota) {
    if (c->refcount[b] == 0) c->quota_up->evictable(c, b, -1);
    c->quota_up->cached(c, b, -1);
  }
  if (c->policy) c->policy->on_remove(c->policy_state, b);
  unlink_from_parent(c, b);
  for (int32_t ch = c->fam[b].first_child; ch >= 0;) {
    int32_t next = c->fam[ch].next_sibling;
    c->fam[ch].parent_block = c->fam[ch].next_sibling = c->fam[ch].prev_sibling = -1;
    c->blk[ch].flags |= PKV_BLK_ORPHAN;
    if (c->refcount[ch] == 0) pkv__orphan_push(c, ch);
    ch = next;
  }
  c->fam[b].first_child = -1;
}

/* The policy hears that a prefix lookup (a match, or an append_ex attach
 * of a probed hit) reused cached block b: on_hit. */
void pkv__prefix_hit(pkv_cache *c, int32_t b) {
  if (c->policy) {
    pkv_block_meta m;
    pkv__block_meta(c, b, &m);
    c->policy->on_hit(c->policy_state, b, &m);
  }
}

/* A commit that dedups into cached block b takes a reference on it and
 * tells the policy (on_dedup, if it has one: a dedup is not a hit, see
 * policy.h).  A prefix match is a hit instead (pkv__prefix_hit). */
static void reuse_cached(pkv_cache *c, int32_t b) {
  pkv__block_ref(c, b);
  void (*hook)(void *, int32_t, const pkv_block_meta *) =
      c->policy ? PKV__POLICY_HOOK_V2(c->policy, on_dedup) : NULL;
  if (hook) {
    pkv_block_meta m;
    pkv__block_meta(c, b, &m);
    hook(c->policy_state, b, &m);
  }
}

/* ------------------------------------------------ commit */

void pkv__prefix_commit_ex(pkv_cache *c, pkv__seq *s, bool dedup,
                           bool release_now, pkv_remap *remaps,
                           uint32_t *n_remaps) {
  uint32_t full = s->n_committed / c->block_size;
  if (full > s->index_limit) full = s->index_limit; /* shifted K/V */
  uint64_t collided = 0;
  for (uint32_t i = s->n_hashed; i < full; i++) {
    int32_t b = s->blocks[i];
    pkv__block *blk = &c->blk[b];
    if (!(blk->flags & PKV_BLK_HASHED)) {
      pkv_hash128 parent = {0, 0};
      if (i > 0)
        parent = c->blk[s->blocks[i - 1]].key;
      else if (s->n_dropped > 0) /* a window: chain on from the front */
        parent = s->dropped_key;
      blk->key = pkv__block_key(c, &parent, s->ns_id,
                                c->block_tokens + (size_t)b * c->block_size);
      blk->parent = parent;
      blk->depth = i + s->n_dropped;
      blk->ns_id = s->ns_id;
      c->ns[s->ns_id].refs++;
      blk->flags |= PKV_BLK_HASHED;
    }
    if (!(blk->flags & PKV_BLK_CACHED)) {
      int32_t hit = index_find(c, blk->key, blk->parent, blk->ns_id,
                               c->block_tokens + (size_t)b * c->block_size,
                               &collided);
      if (hit >= 0 && !dedup) {
        /* Stable table: keep our block and cache it beside its twin (as
         * vLLM does): either one serves a hit, so the prefix stays
         * reachable while any copy lives or stays cached. */
        c->st.commit_duplicates++;
        index_insert(c, s, i, b, hit);
      } else if (hit >= 0) {
        /* Same prefix, same tokens already cached: use that copy.  Our
         * table reference on b becomes a deferred one unless released now
         * (the device may still read b through the old table). */
        reuse_cached(c, hit);
        s->blocks[i] = hit;
        if (release_now) {
          pkv__block_unref(c, b);
        } else {
          c->blk[b].deferred++;
          c->n_deferred++;
        }
        c->st.dedup_blocks++;
        c->st.remaps++;
        if (remaps) remaps[(*n_remaps)++] = (pkv_remap){i, b, hit};
        pkv__emit_seq(c, PKV_EVENT_REMAPPED, hit, s, i, b);
      } else {
        index_insert(c, s, i, b, -1);
      }
    }
    s->n_hashed = i + 1;
  }
}

/* ------------------------------------------------ match, probe */

uint32_t pkv__prefix_walk(pkv_cache *c, uint32_t ns_id, const int32_t *tokens,
                          uint32_t want, int32_t *out, uint64_t *collided) {
  size_t bs = c->block_size;
  pkv_hash128 parent = {0, 0};
  uint32_t k = 0;
  int32_t prev = -1; /* block matched at k - 1 */
  for (; k < want; k++) {
    const int32_t *t = tokens + (size_t)k * bs;
    /* Walk the cached chain first: hashing is most of a match's cost, and a
     * hit's key is already stored with the block. */
    int32_t b = prev >= 0 ? child_with_tokens(c, prev, ns_id, t) : -1;
    pkv_hash128 key;
    if (b >= 0) {
      key = c->blk[b].key;
    } else {
      key = pkv__block_key(c, &parent, ns_id, t);
      b = index_find(c, key, parent, ns_id, t, collided);
      if (b < 0) break;
    }
    if (out) out[k] = b;
    parent = key;
    prev = b;
  }
  return k;
}

bool pkv__prefix_verify(pkv_cache *c, uint32_t ns_id, const int32_t *tokens,
                        const int32_t *blocks, uint32_t n) {
  size_t bs = c->block_size;
  pkv_hash128 parent = {0, 0};
  for (uint32_t i = 0; i < n; i++) {
    int32_t b = blocks[i];
    const char *why = NULL;
    if (b < 0 || (uint32_t)b >= c->num_blocks)
      why = "not a block id";
    else if (!PKV_BLOCK_IS_CACHED(c, b))
      why = "no longer cached (evicted since the probe?)";
    else if (c->blk[b].ns_id != ns_id || c->blk[b].depth != i ||
             !key_eq(c->blk[b].parent, parent) ||
             memcmp(c->block_tokens + (size_t)b * bs, tokens + i * bs,
                    bs * sizeof *tokens) != 0)
      why = "cached for a different prefix, namespace or tokens";
    if (why) {
      pkv__err(PKV_ESTATE, "stale hit: entry %u, block %d: %s", i, b, why);
      return false;
    }
    parent = c->blk[b].key;
  }
  return true;
}

int pkv_prefix_probe(pkv_cache *cache, const pkv_seq_opts *opts,
                     const int32_t *tokens, uint32_t n_tokens,
                     uint32_t max_tokens, int32_t *blocks, uint32_t blocks_cap,
                     uint32_t *hit_tokens) {
  PKV_ENTER(cache, "prefix_probe");
  PKV_CHECK(hit_tokens, "prefix_probe: hit_tokens is NULL");
  PKV_CHECK(tokens || n_tokens == 0, "prefix_probe: tokens is NULL");
  PKV_CHECK(blocks || blocks_cap == 0, "prefix_probe: blocks is NULL with cap "
            "%u", blocks_cap);
  PKV_CHECK(!opts || opts->ns || opts->ns_len == 0, "prefix_probe: ns is NULL "
            "with ns_len %zu", opts->ns_len);
  PKV_LOCK(cache);
  int rc = 0;
  uint32_t bs = cache->block_size;
  uint32_t limit = n_tokens;
  if (max_tokens && max_tokens < limit) limit = max_tokens;
  uint32_t want = limit / bs;
  if (blocks && want > blocks_cap) want = blocks_cap;
  uint32_t ns_id = 0, k = 0;
  if (want > 0 && !(cache->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE) &&
      (!opts || pkv__ns_find(cache, opts->ns, opts->ns_len, opts->adapter_id,
                             &ns_id, &rc))) {
    uint64_t collided = 0;
    k = pkv__prefix_walk(cache, ns_id, tokens, want, blocks, &collided);
  }
  if (rc == 0) {
    cache->st.prefix_probes++;
    *hit_tokens = k * bs;
  }
  return pkv__leave_ro(cache, rc);
}

/* ------------------------------------------------ reset */

int pkv_prefix_reset(pkv_cache *cache) {
  PKV_ENTER(cache, "prefix_reset");
  PKV_LOCK(cache);
  bool some_stay = cache->n_evictable < cache->n_cached;
  for (uint32_t b = 0; b < cache->num_blocks; b++) {
    if (!PKV_BLOCK_IS_EVICTABLE(cache, (int32_t)b)) continue;
    pkv__prefix_remove(cache, (int32_t)b, some_stay);
    pkv__blocks_release_evicted(cache, (int32_t)b);
  }
  if (!some_stay) pkv__emit(cache, PKV_EVENT_CLEARED, -1);
  return pkv__leave(cache, 0);
}
