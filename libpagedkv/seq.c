/*
 * seq.c — sequences: handles, page tables, append / fork / truncate /
 * commit / free, and the engine-facing views.
 *
 *   handle (gen<<32 | idx+1) ──► seqs[idx] ──► pkv__seq
 *                                              ├ blocks[0..n_blocks)  page table
 *                                              ├ n_tokens   reserved slots
 *                                              ├ n_committed  ≤ n_tokens
 *                                              └ n_hashed   leading blocks with keys
 *
 *   token i lives in slot  blocks[i / block_size] * block_size + i % block_size
 *
 * Invariants:
 *   - n_blocks == ceil(n_tokens / block_size): no empty tail block is kept;
 *   - n_hashed * block_size <= n_committed <= n_tokens;
 *   - every block of the table that a write may still reach (the partial
 *     tail) is written only when PKV_BLOCK_IS_WRITABLE; otherwise the append
 *     copies it first (copy-on-write);
 *   - a pkv__seq is one allocation that never moves, and its blocks[] is
 *     reallocated only by operations on that sequence (the engine reads it
 *     without the lock).
 *
 * All-or-nothing: every operation first works out what it needs (blocks,
 * table capacity, copy-queue room), acquires it, and only then changes the
 * sequence; a failure before that point releases what it took.
 */
#include "core.h"

#include <string.h>

#define PKV_DEFAULT_PRIORITY 35

pkv__seq *pkv__seq_lookup_fail(pkv_cache *c, pkv_seq_id id) {
  (void)c;
  pkv__err(PKV_ENOSEQ, "seq %#llx: unknown, freed or stale handle",
           (unsigned long long)id);
  return NULL;
}

/* Makes sure a free handle slot exists. */
static int seq_slots_reserve(pkv_cache *c) {
  if (c->n_seq_free > 0) return 0;
  if (c->seq_cap >= (1u << 30))
    return pkv__err(PKV_ENOMEM, "too many sequences (%u)", c->seq_cap);
  uint32_t cap = c->seq_cap ? c->seq_cap * 2 : 16;
  pkv__seq **seqs = pkv__realloc(c->seqs, cap * sizeof *seqs);
  if (!seqs) goto oom;
  c->seqs = seqs;
  uint32_t *gen = pkv__realloc(c->seq_gen, cap * sizeof *gen);
  if (!gen) goto oom;
  c->seq_gen = gen;
  uint32_t *fr = pkv__realloc(c->seq_free, cap * sizeof *fr);
  if (!fr) goto oom;
  c->seq_free = fr;
  for (uint32_t i = c->seq_cap; i < cap; i++) {
    c->seqs[i] = NULL;
    c->seq_gen[i] = 1;
  }
  /* Push in reverse so the lowest index is handed out first. */
  for (uint32_t i = cap; i > c->seq_cap; i--) c->seq_free[c->n_seq_free++] = i - 1;
  c->seq_cap = cap;
  return 0;
oom:
  return pkv__err(PKV_ENOMEM, "no memory for %u sequence handles", cap);
}

int pkv__seq_table_reserve(pkv__seq *s, uint64_t n_blocks) {
  if (n_blocks <= s->cap_blocks) return 0;
  uint64_t cap = s->cap_blocks ? s->cap_blocks : 4;
  while (cap < n_blocks) cap *= 2;
  if (cap > UINT32_MAX) cap = UINT32_MAX;
  int32_t *b = pkv__realloc(s->blocks, (size_t)cap * sizeof *b);
  if (!b)
    return pkv__err(PKV_ENOMEM, "no memory for a %llu-block page table",
                    (unsigned long long)cap);
  s->blocks = b;
  s->cap_blocks = (uint32_t)cap;
  return 0;
}

/* Allocates a sequence with room for cap_blocks and a handle slot; on
 * success it is live (seq_handle names it); NULL with the error set. */
static pkv__seq *seq_new(pkv_cache *c, uint32_t cap_blocks, uint32_t ns_id) {
  if (seq_slots_reserve(c)) return NULL;
  pkv__seq *s = pkv__calloc(1, sizeof *s);
  if (!s) {
    pkv__err(PKV_ENOMEM, "no memory for a sequence");
    return NULL;
  }
  if (cap_blocks && pkv__seq_table_reserve(s, cap_blocks)) {
    pkv__free(s);
    return NULL;
  }
  s->index = c->seq_free[--c->n_seq_free];
  s->gen = c->seq_gen[s->index];
  s->ns_id = ns_id;
  c->seqs[s->index] = s;
  c->n_seqs++;
  return s;
}

static pkv_seq_id seq_handle(const pkv_cache *c, const pkv__seq *s) {
  return PKV_SEQ_HANDLE(s->index, c->seq_gen[s->index]);
}

static void seq_destroy(pkv_cache *c, pkv__seq *s) {
  c->seqs[s->index] = NULL;
  uint32_t g = c->seq_gen[s->index] + 1;
  if (g != 0) {
    c->seq_gen[s->index] = g;
    c->seq_free[c->n_seq_free++] = s->index;
  } else {
    /* Every generation of this slot has been handed out: retire it, so no
     * stale handle of it can ever match again. */
    c->seq_gen[s->index] = 0;
    c->n_seq_retired++;
  }
  c->n_seqs--;
  pkv__free(s->blocks);
  pkv__free(s->ranges);
  pkv__free(s);
}

int pkv_seq_create(pkv_cache *cache, const pkv_seq_opts *opts,
                   pkv_seq_id *out) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_create: cache is NULL");
  if (!out) return pkv__err(PKV_EINVAL, "seq_create: out is NULL");
  pkv_seq_opts o = {0};
  if (opts) o = *opts;
  if (o.ns_len > 0 && o.ns == NULL)
    return pkv__err(PKV_EINVAL, "seq_create: ns is NULL with ns_len %zu",
                    o.ns_len);
  if (o.priority > 100)
    return pkv__err(PKV_EINVAL, "seq_create: priority %u > 100", o.priority);
  pkv__lock(cache);
  uint32_t ns_id;
  int rc = pkv__ns_intern(cache, o.ns, o.ns_len, o.adapter_id, &ns_id);
  if (rc == 0) {
    pkv__seq *s = seq_new(cache, 0, ns_id);
    if (!s) {
      pkv__ns_unref(cache, ns_id);
      rc = PKV_ENOMEM;
    } else {
      s->priority = o.priority ? o.priority : PKV_DEFAULT_PRIORITY;
      *out = seq_handle(cache, s);
    }
  }
  PKV_ASSERT_VALID(cache);
  pkv__unlock(cache);
  return rc;
}

int pkv_seq_free(pkv_cache *cache, pkv_seq_id seq) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_free: cache is NULL");
  pkv__lock(cache);
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (!s) {
    pkv__unlock(cache);
    return PKV_ENOSEQ;
  }
  /* Tail first: the deepest blocks become evictable first, so an LRU
   * policy drops a chain from its end and keeps the shared root longest. */
  for (uint32_t i = s->n_blocks; i-- > 0;) pkv__block_unref(cache, s->blocks[i]);
  pkv__ns_unref(cache, s->ns_id);
  seq_destroy(cache, s);
  PKV_ASSERT_VALID(cache);
  pkv__unlock(cache);
  return 0;
}

/* Writes tokens into slots [n_tokens, n_tokens + n) of s, whose blocks are
 * all reserved and writable; fills slots[] if given. */
static void seq_write_tokens(pkv_cache *c, pkv__seq *s, const int32_t *tokens,
                             uint32_t n, int64_t *slots) {
  uint32_t bs = c->block_size;
  uint32_t pos = s->n_tokens;
  uint32_t bi = pos / bs, off = pos - bi * bs;
  uint32_t i = 0;
  while (i < n) {
    int32_t b = s->blocks[bi];
    uint32_t chunk = bs - off;
    if (chunk > n - i) chunk = n - i;
    int32_t *dst = c->block_tokens + (size_t)b * bs + off;
    memcpy(dst, tokens + i, chunk * sizeof *dst);
    if (slots) {
      int64_t base = (int64_t)b * bs + off;
      for (uint32_t j = 0; j < chunk; j++) slots[i + j] = base + j;
    }
    i += chunk;
    bi++;
    off = 0;
  }
}

/* The general append: new blocks and/or a copy of the tail. */
static int seq_append_slow(pkv_cache *c, pkv__seq *s, const int32_t *tokens,
                           uint32_t n, int64_t *slots) {
  uint32_t bs = c->block_size;
  uint64_t new_len = (uint64_t)s->n_tokens + n;
  uint64_t room = (uint64_t)s->n_blocks * bs - s->n_tokens;
  int32_t tail = s->n_blocks ? s->blocks[s->n_blocks - 1] : -1;
  bool cow = room > 0 && !pkv__block_writable_at(c, tail, bs - (uint32_t)room);
  uint64_t new_blocks = n > room ? (n - room + bs - 1) / bs : 0;
  uint64_t want = new_blocks + (cow ? 1 : 0);
  if (want > pkv__pool_available(c))
    return pkv__err(PKV_ENOMEM,
                    "seq %u: append of %u tokens needs %llu blocks, %u "
                    "available (%u free + %u evictable)",
                    s->index, n, (unsigned long long)want,
                    pkv__pool_available(c), c->n_free, c->n_evictable);
  int rc = pkv__seq_table_reserve(s, s->n_blocks + new_blocks);
  if (rc == 0 && cow) rc = pkv__copies_reserve(c, 1);
  if (rc) return rc;

  /* Take every block before touching the sequence. */
  int32_t copy_to = -1;
  uint32_t taken = 0;
  if (cow && (copy_to = pkv__pool_take(c)) < 0) goto undo;
  for (; taken < new_blocks; taken++) {
    int32_t b = pkv__pool_take(c);
    if (b < 0) goto undo;
    s->blocks[s->n_blocks + taken] = b;
  }

  if (cow) {
    uint32_t used = bs - (uint32_t)room;
    pkv__block_copy(c, tail, copy_to, used);
    pkv__block_unref(c, tail);
    s->blocks[s->n_blocks - 1] = copy_to;
  } else if (room > 0 && (c->blk[tail].flags & PKV_BLK_HASHED)) {
    /* Sole owner again of a block some other table saw full: forget its
     * key, we are about to rewrite it. */
    pkv__block_unhash(c, tail);
  }
  s->n_blocks += (uint32_t)new_blocks;
  seq_write_tokens(c, s, tokens, n, slots);
  s->n_tokens = (uint32_t)new_len;
  /* Whatever path we came by, the tail is now a fresh block, our copy, or
   * a block already ours alone. */
  s->tail = s->blocks[s->n_blocks - 1];
  s->tail_writable = true;
  return 0;

undo:
  for (uint32_t i = 0; i < taken; i++)
    pkv__block_unref(c, s->blocks[s->n_blocks + i]);
  if (copy_to >= 0) pkv__block_unref(c, copy_to);
  return PKV_ECORRUPT; /* the eviction driver said why */
}

int pkv_seq_append(pkv_cache *cache, pkv_seq_id seq, const int32_t *tokens,
                   uint32_t n_tokens, int64_t *slots) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_append: cache is NULL");
  if (!tokens) return pkv__err(PKV_EINVAL, "seq_append: tokens is NULL");
  if (n_tokens == 0)
    return pkv__err(PKV_EINVAL, "seq_append: n_tokens is 0");
  pkv__lock(cache);
  int rc = 0;
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (!s) {
    rc = PKV_ENOSEQ;
    goto out;
  }
  if ((uint64_t)s->n_tokens + n_tokens > INT32_MAX) {
    rc = pkv__err(PKV_ERANGE, "seq %u: length %u + %u exceeds %d", s->index,
                  s->n_tokens, n_tokens, INT32_MAX);
    goto out;
  }
  uint32_t bs = cache->block_size;
  uint32_t room = s->n_blocks * bs - s->n_tokens;
  if (s->tail_writable && n_tokens <= room) {
    /* Decode fast path: the tail is ours and has room. */
    int32_t tail = s->tail;
    uint32_t off = bs - room;
    int32_t *dst = cache->block_tokens + (size_t)tail * bs + off;
    if (n_tokens == 1)
      *dst = tokens[0];
    else
      memcpy(dst, tokens, n_tokens * sizeof *dst);
    if (slots) {
      int64_t base = (int64_t)tail * bs + off;
      for (uint32_t j = 0; j < n_tokens; j++) slots[j] = base + j;
    }
    s->n_tokens += n_tokens;
  } else {
    rc = seq_append_slow(cache, s, tokens, n_tokens, slots);
    if (rc) goto out;
  }
  cache->st.appends++;
  cache->st.appended_tokens += n_tokens;
out:
  PKV_ASSERT_VALID(cache);
  pkv__unlock(cache);
  return rc;
}

int pkv_seq_fork(pkv_cache *cache, pkv_seq_id parent, pkv_seq_id *child) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_fork: cache is NULL");
  if (!child) return pkv__err(PKV_EINVAL, "seq_fork: child is NULL");
  pkv__lock(cache);
  int rc = 0;
  pkv__seq *p = pkv__seq_lookup(cache, parent);
  if (!p) {
    rc = PKV_ENOSEQ;
    goto out;
  }
  pkv__prio_range *ranges = NULL;
  if (p->n_ranges) {
    ranges = pkv__malloc(p->n_ranges * sizeof *ranges);
    if (!ranges) {
      rc = pkv__err(PKV_ENOMEM, "seq_fork: no memory for priority ranges");
      goto out;
    }
    memcpy(ranges, p->ranges, p->n_ranges * sizeof *ranges);
  }
  pkv__seq *s = seq_new(cache, p->n_blocks, p->ns_id);
  if (!s) {
    pkv__free(ranges);
    rc = PKV_ENOMEM;
    goto out;
  }
  cache->ns[p->ns_id].refs++;
  s->ranges = ranges;
  s->n_ranges = s->cap_ranges = p->n_ranges;
  s->priority = p->priority;
  /* Every block of the parent is referenced, so none is evictable and a
   * plain increment is the whole refcount effect. */
  uint32_t *rc_arr = cache->refcount;
  const int32_t *src = p->blocks;
  int32_t *dst = s->blocks;
  for (uint32_t i = 0; i < p->n_blocks; i++) {
    int32_t b = src[i];
    dst[i] = b;
    rc_arr[b]++;
  }
  p->tail_writable = false; /* now shared */
  s->n_blocks = p->n_blocks;
  s->n_tokens = p->n_tokens;
  s->n_committed = p->n_committed;
  s->n_hashed = p->n_hashed;
  cache->st.forks++;
  *child = seq_handle(cache, s);
out:
  PKV_ASSERT_VALID(cache);
  pkv__unlock(cache);
  return rc;
}

int pkv_seq_truncate(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_truncate: cache is NULL");
  pkv__lock(cache);
  int rc = 0;
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (!s) {
    rc = PKV_ENOSEQ;
    goto out;
  }
  if (n_tokens > s->n_tokens) {
    rc = pkv__err(PKV_ERANGE, "seq %u: truncate to %u > length %u", s->index,
                  n_tokens, s->n_tokens);
    goto out;
  }
  uint32_t bs = cache->block_size;
  uint32_t keep = (n_tokens + bs - 1) / bs;
  for (uint32_t i = s->n_blocks; i-- > keep;)
    pkv__block_unref(cache, s->blocks[i]);
  s->n_blocks = keep;
  s->n_tokens = n_tokens;
  s->tail_writable = false;
  if (s->n_committed > n_tokens) s->n_committed = n_tokens;
  if (s->n_hashed > n_tokens / bs) s->n_hashed = n_tokens / bs;
  cache->st.truncates++;
out:
  PKV_ASSERT_VALID(cache);
  pkv__unlock(cache);
  return rc;
}

int pkv_seq_commit(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_commit: cache is NULL");
  pkv__lock(cache);
  int rc = 0;
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (!s) {
    rc = PKV_ENOSEQ;
    goto out;
  }
  if (n_tokens > s->n_tokens) {
    rc = pkv__err(PKV_ERANGE, "seq %u: commit of %u > length %u", s->index,
                  n_tokens, s->n_tokens);
    goto out;
  }
  if (n_tokens < s->n_committed) {
    rc = pkv__err(PKV_ERANGE,
                  "seq %u: commit of %u < already committed %u (use truncate "
                  "to move back)",
                  s->index, n_tokens, s->n_committed);
    goto out;
  }
  s->n_committed = n_tokens;
  s->tail_writable = false; /* a full tail may enter the index */
  if (!(cache->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE))
    pkv__prefix_commit(cache, s);
  cache->st.commits++;
out:
  PKV_ASSERT_VALID(cache);
  pkv__unlock(cache);
  return rc;
}

int pkv_seq_info_get(pkv_cache *cache, pkv_seq_id seq, pkv_seq_info *out) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_info_get: cache is NULL");
  if (!out) return pkv__err(PKV_EINVAL, "seq_info_get: out is NULL");
  pkv__lock(cache);
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (s) {
    out->n_tokens = s->n_tokens;
    out->n_committed = s->n_committed;
    out->n_blocks = s->n_blocks;
    uint32_t nc = 0;
    for (uint32_t i = 0; i < s->n_blocks; i++)
      nc += PKV_BLOCK_IS_CACHED(cache, s->blocks[i]);
    out->n_cached_blocks = nc;
  }
  pkv__unlock(cache);
  return s ? 0 : PKV_ENOSEQ;
}

int pkv_seq_blocks(pkv_cache *cache, pkv_seq_id seq, int32_t *blocks,
                   uint32_t cap, uint32_t *n_blocks) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_blocks: cache is NULL");
  if (!n_blocks) return pkv__err(PKV_EINVAL, "seq_blocks: n_blocks is NULL");
  if (!blocks && cap > 0)
    return pkv__err(PKV_EINVAL, "seq_blocks: blocks is NULL with cap %u", cap);
  pkv__lock(cache);
  int rc = 0;
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (!s) {
    rc = PKV_ENOSEQ;
  } else if (cap < s->n_blocks) {
    *n_blocks = s->n_blocks;
    rc = pkv__err(PKV_ENOSPC, "seq %u: %u blocks do not fit in cap %u",
                  s->index, s->n_blocks, cap);
  } else {
    if (s->n_blocks) memcpy(blocks, s->blocks, s->n_blocks * sizeof *blocks);
    *n_blocks = s->n_blocks;
  }
  pkv__unlock(cache);
  return rc;
}

int pkv_seq_set_priority(pkv_cache *cache, pkv_seq_id seq, uint32_t begin,
                         uint32_t end, uint8_t priority,
                         uint64_t duration_ns) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_set_priority: cache is NULL");
  if (begin >= end)
    return pkv__err(PKV_ERANGE, "seq_set_priority: empty range [%u, %u)",
                    begin, end);
  if (priority > 100)
    return pkv__err(PKV_EINVAL, "seq_set_priority: priority %u > 100",
                    priority);
  pkv__lock(cache);
  int rc = 0;
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (!s) {
    rc = PKV_ENOSEQ;
    goto out;
  }
  if (s->n_ranges == s->cap_ranges) {
    uint32_t cap = s->cap_ranges ? s->cap_ranges * 2 : 4;
    pkv__prio_range *r = pkv__realloc(s->ranges, cap * sizeof *r);
    if (!r) {
      rc = pkv__err(PKV_ENOMEM, "seq %u: no memory for priority ranges",
                    s->index);
      goto out;
    }
    s->ranges = r;
    s->cap_ranges = cap;
  }
  s->ranges[s->n_ranges++] =
      (pkv__prio_range){begin, end, priority, duration_ns};
out:
  pkv__unlock(cache);
  return rc;
}

int pkv__test_set_seq_gen(pkv_cache *cache, uint32_t slot, uint32_t gen) {
  pkv__lock(cache);
  int rc = 0;
  if (slot >= cache->seq_cap || cache->seqs[slot] || gen == 0 ||
      cache->seq_gen[slot] == 0)
    rc = pkv__err(PKV_ESTATE, "test_set_seq_gen: slot %u not free", slot);
  else
    cache->seq_gen[slot] = gen;
  pkv__unlock(cache);
  return rc;
}

/* ------------------------------------------------ engine-facing */

int pkv__seq_view_get(pkv_cache *cache, pkv_seq_id seq, pkv__seq_view *out) {
  pkv__err_clear();
  if (!cache || !out) return pkv__err(PKV_EINVAL, "seq_view_get: NULL argument");
  pkv__lock(cache);
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (s) {
    out->blocks = s->blocks;
    out->n_blocks = s->n_blocks;
    out->n_tokens = s->n_tokens;
    out->n_committed = s->n_committed;
  }
  pkv__unlock(cache);
  return s ? 0 : PKV_ENOSEQ;
}

int pkv__seq_check_writable(pkv_cache *cache, pkv_seq_id seq, uint32_t pos0,
                            uint32_t n) {
  pkv__err_clear();
  if (!cache) return pkv__err(PKV_EINVAL, "seq_check_writable: cache is NULL");
  pkv__lock(cache);
  int rc = 0;
  pkv__seq *s = pkv__seq_lookup(cache, seq);
  if (!s) {
    rc = PKV_ENOSEQ;
  } else if ((uint64_t)pos0 + n > s->n_tokens) {
    rc = pkv__err(PKV_ERANGE, "seq %u: write [%u, %llu) past length %u",
                  s->index, pos0, (unsigned long long)pos0 + n, s->n_tokens);
  } else if (n > 0) {
    uint32_t bs = cache->block_size;
    for (uint32_t bi = pos0 / bs; bi <= (pos0 + n - 1) / bs; bi++) {
      int32_t b = s->blocks[bi];
      if (!PKV_BLOCK_IS_WRITABLE(cache, b)) {
        rc = pkv__err(PKV_ESTATE,
                      "seq %u: block %d (table entry %u) is %s; append "
                      "copies it before a write",
                      s->index, b, bi,
                      PKV_BLOCK_IS_CACHED(cache, b) ? "cached (immutable)"
                      : cache->blk[b].pins        ? "pinned"
                                                  : "shared");
        break;
      }
    }
  }
  pkv__unlock(cache);
  return rc;
}
