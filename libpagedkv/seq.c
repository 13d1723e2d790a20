/*
 * seq.c — sequences: handles, page tables, append / fork / truncate /
 * commit / free, and the engine-facing views.
 *
 *   handle (gen<<32 | idx+1) ──► seqs[idx] ──► pkv__seq
 *                                              ├ blocks[0..n_blocks)  page table
 *                                              ├ n_tokens   reserved slots
 *                                              ├ n_known    slots with ids ≤ n_tokens
 *                                              ├ n_committed  ≤ n_known
 *                                              └ n_hashed   leading blocks with keys
 *
 *   token i lives in slot  blocks[i / block_size] * block_size + i % block_size
 *
 * Invariants:
 *   - n_blocks == ceil(n_tokens / block_size): no empty tail block is kept;
 *   - n_hashed * block_size <= n_committed <= n_known <= n_tokens; slots in
 *     [n_known, n_tokens) are lookahead slots (no ids yet: draft tokens);
 *     the blocks holding them are writable and unhashed (never shared, so
 *     fork refuses; never committed, so never cached), and an append fills
 *     them in order before it allocates;
 *   - block ids never change at a table position except by truncate, free,
 *     the copy-on-write of a partial tail (reported in the delta) and an
 *     opt-in commit dedup (reported as a remap);
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
  if (!pkv__grow_u32((void **)&s->blocks, &s->cap_blocks, n_blocks,
                     sizeof *s->blocks, 4))
    return pkv__err(PKV_ENOMEM, "no memory for a %llu-block page table",
                    (unsigned long long)n_blocks);
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
  s->index_limit = UINT32_MAX;
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
  PKV_ENTER(cache, "seq_create");
  PKV_CHECK(out, "seq_create: out is NULL");
  pkv_seq_opts o;
  pkv_seq_opts_init(&o);
  if (opts) {
    int abi_rc = pkv__seq_opts_in(&o, opts);
    if (abi_rc) return abi_rc;
  }
  PKV_CHECK(o.ns || o.ns_len == 0, "seq_create: ns is NULL with ns_len %zu",
            o.ns_len);
  PKV_CHECK(o.priority <= 100, "seq_create: priority %u > 100", o.priority);
  PKV_LOCK(cache);
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
  return pkv__leave(cache, rc);
}

/* Releases s's blocks and namespace and retires its handle. */
void pkv__seq_release(pkv_cache *c, pkv__seq *s) {
  /* Tail first: the deepest blocks become evictable first, so an LRU
   * policy drops a chain from its end and keeps the shared root longest. */
  for (uint32_t i = s->n_blocks; i-- > 0;) pkv__block_unref(c, s->blocks[i]);
  pkv__ns_unref(c, s->ns_id);
  c->sum_tokens -= s->n_tokens;
  c->sum_blocks -= s->n_blocks;
  seq_destroy(c, s);
}

int pkv_seq_free(pkv_cache *cache, pkv_seq_id seq) {
  PKV_ENTER(cache, "seq_free");
  PKV_LOCK_SEQ(cache, seq, s);
  pkv__seq_release(cache, s);
  return pkv__leave(cache, 0);
}

/* Writes ids (tokens, or -1 for lookahead slots when tokens is NULL) into
 * positions [pos, pos + n) of s, whose blocks are all reserved and
 * writable; fills slots[] if given. */
static void seq_write_tokens(pkv_cache *c, pkv__seq *s, uint32_t pos,
                             const int32_t *tokens, uint32_t n,
                             int64_t *slots) {
  uint32_t bs = c->block_size;
  uint32_t bi = pos / bs, off = pos - bi * bs;
  uint32_t i = 0;
  while (i < n) {
    int32_t b = s->blocks[bi];
    uint32_t chunk = bs - off;
    if (chunk > n - i) chunk = n - i;
    int32_t *dst = c->block_tokens + (size_t)b * bs + off;
    if (tokens)
      memcpy(dst, tokens + i, chunk * sizeof *dst);
    else
      for (uint32_t j = 0; j < chunk; j++) dst[j] = -1;
    if (slots) {
      int64_t base = (int64_t)b * bs + off;
      for (uint32_t j = 0; j < chunk; j++) slots[i + j] = base + j;
    }
    i += chunk;
    bi++;
    off = 0;
  }
}

/* The general append: attaches a verified hit (empty sequence), writes
 * n_new known ids from the known length on (filling lookahead slots first),
 * reserves lookahead slots up to known + n_lookahead, taking new blocks
 * and/or copying a shared or cached tail.  All or nothing: everything is
 * counted and acquired before the sequence changes. */
int pkv__seq_grow(pkv_cache *c, pkv__seq *s, const int32_t *hits,
                  uint32_t n_hits, const int32_t *tokens, uint32_t n_new,
                  uint32_t n_lookahead, int64_t *slots, int32_t *new_blocks,
                  uint32_t new_cap, pkv_delta *d) {
  uint32_t bs = c->block_size;
  uint32_t hit_tokens = n_hits * bs; /* caller checked: fits, s empty */
  uint32_t known0 = s->n_known + hit_tokens, len0 = s->n_tokens + hit_tokens;
  uint32_t nblk0 = s->n_blocks + n_hits;
  uint64_t new_known = (uint64_t)known0 + n_new;
  uint64_t want_len = new_known + n_lookahead;
  uint64_t new_len = want_len > len0 ? want_len : len0;
  if (new_len > INT32_MAX)
    return pkv__err(PKV_ERANGE, "seq %u: length %u + %u known + %u lookahead "
                    "exceeds %d", s->index, known0, n_new, n_lookahead,
                    INT32_MAX);
  uint64_t room = (uint64_t)nblk0 * bs - len0;
  uint64_t ext = new_len - len0;
  int32_t tail = n_hits ? hits[n_hits - 1] : nblk0 ? s->blocks[nblk0 - 1] : -1;
  bool cow = ext > 0 && room > 0 &&
             !pkv__block_writable_at(c, tail, bs - (uint32_t)room);
  uint64_t n_fresh = ext > room ? (ext - room + bs - 1) / bs : 0;
  if (new_blocks && n_fresh > new_cap)
    return pkv__err(PKV_ENOSPC, "seq %u: append needs %llu new blocks, "
                    "new_cap is %u", s->index, (unsigned long long)n_fresh,
                    new_cap);
  /* Hit blocks nobody holds are evictable now and stop being so. */
  uint32_t hits_evictable = 0;
  for (uint32_t i = 0; i < n_hits; i++) hits_evictable += c->refcount[hits[i]] == 0;
  uint64_t want = n_fresh + (cow ? 1 : 0);
  if (want > pkv__blocks_available(c) - hits_evictable)
    return pkv__err(PKV_ENOMEM,
                    "seq %u: append of %u tokens + %u lookahead needs %llu "
                    "blocks, %u available (%u free + %u evictable, %u of "
                    "them the hit)",
                    s->index, n_new, n_lookahead, (unsigned long long)want,
                    pkv__blocks_available(c) - hits_evictable, c->n_free,
                    c->n_evictable, hits_evictable);
  int rc = pkv__seq_table_reserve(s, nblk0 + n_fresh);
  if (rc == 0 && cow) rc = pkv__copies_reserve(c, 1);
  if (rc) return rc;

  /* Take every block before touching the sequence; the hit first, so no
   * eviction can pick it. */
  for (uint32_t i = 0; i < n_hits; i++) {
    pkv__block_ref(c, hits[i]);
    s->blocks[i] = hits[i];
  }
  int32_t copy_to = -1;
  uint32_t taken = 0;
  c->take_ns = s->ns_id; /* quotas count the blocks it holds */
  if (cow && (copy_to = pkv__block_take(c)) < 0) goto undo;
  for (; taken < n_fresh; taken++) {
    int32_t b = pkv__block_take(c);
    if (b < 0) goto undo;
    s->blocks[nblk0 + taken] = b;
  }

  uint32_t len_before = s->n_tokens, nblk_before = s->n_blocks;
  if (n_hits) {
    for (uint32_t i = 0; i < n_hits; i++) pkv__prefix_hit(c, hits[i]);
    s->n_hashed = n_hits;
    s->n_committed = hit_tokens;
    s->tail_writable = false;
    c->st.prefix_hit_tokens += hit_tokens;
  }
  if (d) {
    d->cow_index = d->cow_old = d->cow_new = -1;
    d->first_new = nblk0;
    d->n_new = (uint32_t)n_fresh;
  }
  if (cow) {
    pkv__block_copy(c, tail, copy_to, bs - (uint32_t)room);
    pkv__block_unref(c, tail);
    s->blocks[nblk0 - 1] = copy_to;
    if (d) {
      d->cow_index = (int32_t)(nblk0 - 1);
      d->cow_old = tail;
      d->cow_new = copy_to;
    }
  } else if (ext > 0 && room > 0 && (c->blk[tail].flags & PKV_BLK_HASHED)) {
    /* Sole owner again of a block some other table saw full: forget its
     * key, we are about to rewrite it. */
    pkv__block_unhash(c, tail);
  }
  s->n_blocks = nblk0 + (uint32_t)n_fresh;
  if (new_blocks && n_fresh)
    memcpy(new_blocks, s->blocks + nblk0, n_fresh * sizeof *new_blocks);
  /* Known ids from known0 (lookahead slots first), then -1 for new
   * lookahead slots; slots for [known0, want_len). */
  seq_write_tokens(c, s, known0, tokens, n_new, slots);
  uint32_t la_from = new_known > len0 ? (uint32_t)new_known : len0;
  if (new_len > la_from)
    seq_write_tokens(c, s, la_from, NULL, (uint32_t)(new_len - la_from),
                     NULL);
  if (slots && want_len > new_known) {
    /* lookahead slots asked for (some may have been reserved before) */
    uint32_t bi, p = (uint32_t)new_known;
    for (; p < want_len; p++) {
      bi = p / bs;
      slots[p - known0] = (int64_t)s->blocks[bi] * bs + (p - bi * bs);
    }
  }
  s->n_known = (uint32_t)new_known;
  s->n_tokens = (uint32_t)new_len;
  c->sum_tokens += s->n_tokens - len_before;
  c->sum_blocks += s->n_blocks - nblk_before;
  if (ext > 0) {
    /* Whatever path we came by, the tail is now a fresh block, our copy,
     * or a block already ours alone. */
    s->tail = s->blocks[s->n_blocks - 1];
    s->tail_writable = true;
  }
  if (d) {
    d->n_known = s->n_known;
    d->n_tokens = s->n_tokens;
  }
  return 0;

undo:
  for (uint32_t i = 0; i < taken; i++)
    pkv__block_unref(c, s->blocks[nblk0 + i]);
  if (copy_to >= 0) pkv__block_unref(c, copy_to);
  for (uint32_t i = n_hits; i-- > 0;) pkv__block_unref(c, hits[i]);
  return PKV_ECORRUPT; /* the eviction driver said why */
}

int pkv_seq_append(pkv_cache *cache, pkv_seq_id seq, const int32_t *tokens,
                   uint32_t n_tokens, int64_t *slots) {
  PKV_ENTER(cache, "seq_append");
  PKV_CHECK(tokens, "seq_append: tokens is NULL");
  PKV_CHECK(n_tokens > 0, "seq_append: n_tokens is 0");
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if ((uint64_t)s->n_tokens + n_tokens > INT32_MAX) {
    rc = pkv__err(PKV_ERANGE, "seq %u: length %u + %u exceeds %d", s->index,
                  s->n_tokens, n_tokens, INT32_MAX);
    goto out;
  }
  uint32_t bs = cache->block_size;
  uint32_t room = s->n_blocks * bs - s->n_tokens;
  if (s->tail_writable && n_tokens <= room && s->n_known == s->n_tokens) {
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
    s->n_known = s->n_tokens;
    cache->sum_tokens += n_tokens;
  } else {
    rc = pkv__seq_grow(cache, s, NULL, 0, tokens, n_tokens, 0, slots, NULL, 0,
                  NULL);
    if (rc) goto out;
  }
  cache->st.appends++;
  cache->st.appended_tokens += n_tokens;
out:
  return pkv__leave(cache, rc);
}

int pkv_seq_append_ex(pkv_cache *cache, pkv_seq_id seq,
                      const pkv_append *req_in, pkv_delta *delta) {
  PKV_ENTER(cache, "seq_append_ex");
  PKV_CHECK(req_in, "seq_append_ex: req is NULL");
  pkv_append req_res;
  int abi_rc = pkv__append_in(&req_res, req_in);
  if (abi_rc) return abi_rc;
  const pkv_append *req = &req_res; /* in this version's layout */
  PKV_CHECK(req->tokens || req->n_tokens == 0, "seq_append_ex: tokens is NULL "
            "with n_tokens %u", req->n_tokens);
  PKV_CHECK(req->hit_blocks || req->n_hit_blocks == 0, "seq_append_ex: "
            "hit_blocks is NULL with n_hit_blocks %u", req->n_hit_blocks);
  PKV_CHECK(req->new_blocks || req->new_cap == 0, "seq_append_ex: new_blocks "
            "is NULL with new_cap %u", req->new_cap);
  uint64_t hit_tokens = (uint64_t)req->n_hit_blocks * cache->block_size;
  PKV_CHECK(hit_tokens <= req->n_tokens, "seq_append_ex: %u hit blocks cover "
            "%llu tokens, n_tokens is %u", req->n_hit_blocks,
            (unsigned long long)hit_tokens, req->n_tokens);
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if (req->n_hit_blocks) {
    if (s->n_tokens != 0) {
      rc = pkv__err(PKV_ESTATE, "seq %u: a hit attaches only to an empty "
                    "sequence (this one has %u tokens)", s->index,
                    s->n_tokens);
      goto out;
    }
    if (!pkv__prefix_verify(cache, s->ns_id, req->tokens, req->hit_blocks, 0,
                            req->n_hit_blocks)) {
      rc = PKV_ESTATE;
      goto out;
    }
  }
  uint32_t n_new = req->n_tokens - (uint32_t)hit_tokens;
  rc = pkv__seq_grow(cache, s, req->hit_blocks, req->n_hit_blocks,
                req->tokens ? req->tokens + hit_tokens : NULL, n_new,
                req->n_lookahead, req->slots, req->new_blocks, req->new_cap,
                delta);
  if (rc == 0 && n_new) {
    cache->st.appends++;
    cache->st.appended_tokens += n_new;
  }
out:
  return pkv__leave(cache, rc);
}

/* The batch calls: entry i's result, and the first failure for the call. */
static inline void batch_note(int rc, uint32_t i, int32_t *results,
                              int *first_rc) {
  if (rc && !*first_rc) *first_rc = rc;
  if (results) results[i] = rc;
}
static inline int batch_leave(pkv_cache *cache, int first_rc) {
  cache->st.batch_calls++;
  return pkv__leave(cache, first_rc);
}

int pkv_batch_append(pkv_cache *cache, const pkv_seq_id *seqs,
                     const int32_t *tokens, uint32_t n_seqs, int64_t *slots,
                     pkv_step_result *results) {
  PKV_ENTER(cache, "batch_append");
  PKV_CHECK(seqs || n_seqs == 0, "batch_append: seqs is NULL");
  PKV_LOCK(cache);
  int first_rc = 0;
  uint32_t bs = cache->block_size;
  uint64_t appended = 0;
  for (uint32_t i = 0; i < n_seqs; i++) {
    pkv_step_result r = {0, PKV_STEP_NONE, 0, -1, -1};
    int64_t slot = -1;
    pkv__seq *s = pkv__seq_lookup(cache, seqs[i]);
    if (!s) {
      r.rc = PKV_ENOSEQ;
    } else if (s->tail_writable && s->n_tokens < s->n_blocks * bs &&
               (!tokens || s->n_known == s->n_tokens)) {
      /* Decode fast path: our tail has room. */
      int32_t tail = s->tail;
      uint32_t off = s->n_tokens - (s->n_blocks - 1) * bs;
      cache->block_tokens[(size_t)tail * bs + off] = tokens ? tokens[i] : -1;
      slot = (int64_t)tail * bs + off;
      s->n_tokens++;
      if (tokens) s->n_known++;
      cache->sum_tokens++;
      r.index = s->n_blocks - 1;
      r.block = tail;
    } else {
      pkv_delta d;
      uint32_t pending = s->n_tokens - s->n_known;
      /* One slot: a known token (filling a lookahead slot if any), or one
       * more lookahead slot past the reserved length. */
      r.rc = tokens ? pkv__seq_grow(cache, s, NULL, 0, tokens + i, 1, 0, NULL,
                               NULL, 0, &d)
                    : pkv__seq_grow(cache, s, NULL, 0, NULL, 0, pending + 1,
                               NULL, NULL, 0, &d);
      if (r.rc == 0) {
        uint32_t pos = tokens ? s->n_known - 1 : s->n_tokens - 1;
        r.index = pos / bs;
        r.block = s->blocks[r.index];
        slot = (int64_t)r.block * bs + (pos - r.index * bs);
        if (d.n_new) {
          r.change = PKV_STEP_APPENDED;
        } else if (d.cow_index >= 0) {
          r.change = PKV_STEP_COPIED;
          r.replaced = d.cow_old;
        }
      }
    }
    if (r.rc == 0) {
      appended += tokens != NULL;
    } else if (first_rc == 0) {
      first_rc = r.rc;
    }
    if (slots) slots[i] = slot;
    if (results) results[i] = r;
  }
  if (appended) {
    cache->st.appends += appended;
    cache->st.appended_tokens += appended;
  }
  return batch_leave(cache, first_rc);
}

int pkv_batch_free(pkv_cache *cache, const pkv_seq_id *seqs, uint32_t n_seqs,
                   int32_t *results) {
  PKV_ENTER(cache, "batch_free");
  PKV_CHECK(seqs || n_seqs == 0, "batch_free: seqs is NULL");
  PKV_LOCK(cache);
  int first_rc = 0;
  for (uint32_t i = 0; i < n_seqs; i++) {
    pkv__seq *s = pkv__seq_lookup(cache, seqs[i]);
    if (s) pkv__seq_release(cache, s);
    batch_note(s ? 0 : PKV_ENOSEQ, i, results, &first_rc);
  }
  return batch_leave(cache, first_rc);
}

int pkv_seq_fork(pkv_cache *cache, pkv_seq_id parent, pkv_seq_id *child) {
  PKV_ENTER(cache, "seq_fork");
  PKV_CHECK(child, "seq_fork: child is NULL");
  PKV_LOCK_SEQ(cache, parent, p);
  int rc = 0;
  if (p->n_known < p->n_tokens) {
    rc = pkv__err(PKV_ESTATE, "seq %u: fork with %u lookahead slots (fill "
                  "or truncate them first)", p->index,
                  p->n_tokens - p->n_known);
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
  s->index_limit = p->index_limit;
  s->n_dropped = p->n_dropped;
  s->dropped_key = p->dropped_key;
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
  s->n_tokens = s->n_known = p->n_tokens;
  s->n_committed = p->n_committed;
  s->n_hashed = p->n_hashed;
  cache->sum_tokens += s->n_tokens;
  cache->sum_blocks += s->n_blocks;
  cache->st.forks++;
  *child = seq_handle(cache, s);
out:
  return pkv__leave(cache, rc);
}

int pkv_seq_truncate(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens) {
  PKV_ENTER(cache, "seq_truncate");
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if (n_tokens > s->n_tokens) {
    rc = pkv__err(PKV_ERANGE, "seq %u: truncate to %u > length %u", s->index,
                  n_tokens, s->n_tokens);
    goto out;
  }
  uint32_t bs = cache->block_size;
  uint32_t keep = (n_tokens + bs - 1) / bs;
  for (uint32_t i = s->n_blocks; i-- > keep;)
    pkv__block_unref(cache, s->blocks[i]);
  cache->sum_tokens -= s->n_tokens - n_tokens;
  cache->sum_blocks -= s->n_blocks - keep;
  s->n_blocks = keep;
  s->n_tokens = n_tokens;
  if (s->n_known > n_tokens) s->n_known = n_tokens;
  s->tail_writable = false;
  if (s->n_committed > n_tokens) s->n_committed = n_tokens;
  if (s->n_hashed > n_tokens / bs) s->n_hashed = n_tokens / bs;
  cache->st.truncates++;
out:
  return pkv__leave(cache, rc);
}

static int seq_commit_locked(pkv_cache *cache, pkv__seq *s, uint32_t n_tokens,
                             uint32_t flags, pkv_remap *remaps,
                             uint32_t remaps_cap, uint32_t *n_remaps);

int pkv_seq_commit(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens) {
  return pkv_seq_commit_ex(cache, seq, n_tokens, 0, NULL, 0, NULL);
}

#define PKV_COMMIT_KNOWN \
  (PKV_COMMIT_DEDUP | PKV_COMMIT_NO_DEDUP | PKV_COMMIT_RELEASE_NOW)

int pkv_seq_commit_ex(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens,
                      uint32_t flags, pkv_remap *remaps, uint32_t remaps_cap,
                      uint32_t *n_remaps) {
  PKV_ENTER(cache, "seq_commit");
  PKV_CHECK((flags & ~PKV_COMMIT_KNOWN) == 0, "seq_commit: unknown flags 0x%x",
            flags & ~PKV_COMMIT_KNOWN);
  PKV_CHECK(!(flags & PKV_COMMIT_DEDUP) || !(flags & PKV_COMMIT_NO_DEDUP),
            "seq_commit: both DEDUP and NO_DEDUP");
  PKV_CHECK(remaps ? n_remaps != NULL : remaps_cap == 0, "seq_commit: remaps "
            "%s with n_remaps %s, cap %u", remaps ? "given" : "NULL",
            n_remaps ? "given" : "NULL", remaps_cap);
  PKV_LOCK(cache);
  int rc = seq_commit_locked(cache, pkv__seq_lookup(cache, seq), n_tokens,
                             flags, remaps, remaps_cap, n_remaps);
  return pkv__leave(cache, rc);
}

/* The body of pkv_seq_commit_ex for a looked-up sequence (NULL: unknown),
 * under the lock; arguments already validated.  Changes nothing on failure. */
static int seq_commit_locked(pkv_cache *cache, pkv__seq *s, uint32_t n_tokens,
                             uint32_t flags, pkv_remap *remaps,
                             uint32_t remaps_cap, uint32_t *n_remaps) {
  if (!s) return PKV_ENOSEQ;
  int rc = 0;
  if (n_tokens > s->n_known) {
    rc = pkv__err(PKV_ERANGE, "seq %u: commit of %u > known length %u%s",
                  s->index, n_tokens, s->n_known,
                  s->n_known < s->n_tokens ? " (lookahead slots are never "
                  "committed)" : "");
    goto out;
  }
  if (n_tokens < s->n_committed) {
    rc = pkv__err(PKV_ERANGE,
                  "seq %u: commit of %u < already committed %u (use truncate "
                  "to move back)",
                  s->index, n_tokens, s->n_committed);
    goto out;
  }
  bool dedup = (flags & PKV_COMMIT_DEDUP) ||
               (!(flags & PKV_COMMIT_NO_DEDUP) &&
                (cache->cfg.flags & PKV_CACHE_COMMIT_DEDUP));
  uint32_t bound = n_tokens / cache->block_size - s->n_hashed;
  if (dedup && remaps && remaps_cap < bound) {
    rc = pkv__err(PKV_ENOSPC, "seq %u: commit may remap %u blocks, "
                  "remaps_cap is %u", s->index, bound, remaps_cap);
    goto out;
  }
  if (n_remaps) *n_remaps = 0;
  s->n_committed = n_tokens;
  s->tail_writable = false; /* a full tail may enter the index */
  if (!(cache->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE))
    pkv__prefix_commit_ex(cache, s, dedup, flags & PKV_COMMIT_RELEASE_NOW,
                          remaps, n_remaps);
  cache->st.commits++;
out:
  return rc;
}

int pkv_batch_commit(pkv_cache *cache, const pkv_seq_id *seqs,
                     const uint32_t *n_tokens, uint32_t n_seqs,
                     int32_t *results) {
  PKV_ENTER(cache, "batch_commit");
  PKV_CHECK((seqs && n_tokens) || n_seqs == 0, "batch_commit: %s is NULL",
            seqs ? "n_tokens" : "seqs");
  PKV_LOCK(cache);
  int first_rc = 0;
  for (uint32_t i = 0; i < n_seqs; i++) {
    int rc = seq_commit_locked(cache, pkv__seq_lookup(cache, seqs[i]),
                               n_tokens[i], 0, NULL, 0, NULL);
    batch_note(rc, i, results, &first_rc);
  }
  return batch_leave(cache, first_rc);
}

int pkv_seq_info_get(pkv_cache *cache, pkv_seq_id seq, pkv_seq_info *out) {
  PKV_ENTER(cache, "seq_info_get");
  PKV_CHECK(out, "seq_info_get: out is NULL");
  PKV_LOCK_SEQ(cache, seq, s);
  out->n_tokens = s->n_tokens;
  out->n_committed = s->n_committed;
  out->n_blocks = s->n_blocks;
  out->n_known = s->n_known;
  uint32_t nc = 0;
  for (uint32_t i = 0; i < s->n_blocks; i++)
    nc += PKV_BLOCK_IS_CACHED(cache, s->blocks[i]);
  out->n_cached_blocks = nc;
  return pkv__leave_ro(cache, 0);
}

int pkv_seq_blocks(pkv_cache *cache, pkv_seq_id seq, int32_t *blocks,
                   uint32_t cap, uint32_t *n_blocks) {
  PKV_ENTER(cache, "seq_blocks");
  PKV_CHECK(n_blocks, "seq_blocks: n_blocks is NULL");
  PKV_CHECK_OUT(blocks, cap, "seq_blocks");
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if (cap < s->n_blocks) {
    *n_blocks = s->n_blocks;
    rc = pkv__err(PKV_ENOSPC, "seq %u: %u blocks do not fit in cap %u",
                  s->index, s->n_blocks, cap);
  } else {
    if (s->n_blocks) memcpy(blocks, s->blocks, s->n_blocks * sizeof *blocks);
    *n_blocks = s->n_blocks;
  }
  return pkv__leave_ro(cache, rc);
}

int pkv_seq_set_priority(pkv_cache *cache, pkv_seq_id seq, uint32_t begin,
                         uint32_t end, uint8_t priority,
                         uint64_t duration_ns) {
  PKV_ENTER(cache, "seq_set_priority");
  if (begin >= end)
    return pkv__err(PKV_ERANGE, "seq_set_priority: empty range [%u, %u)",
                    begin, end);
  PKV_CHECK(priority <= 100, "seq_set_priority: priority %u > 100", priority);
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if (s->n_ranges == s->cap_ranges) {
    if (!pkv__grow_u32((void **)&s->ranges, &s->cap_ranges,
                       s->n_ranges + 1ull, sizeof *s->ranges, 4)) {
      rc = pkv__err(PKV_ENOMEM, "seq %u: no memory for priority ranges",
                    s->index);
      goto out;
    }
  }
  s->ranges[s->n_ranges++] =
      (pkv__prio_range){begin, end, priority, duration_ns};
out:
  return pkv__leave_ro(cache, rc);
}

int pkv__test_set_seq_gen(pkv_cache *cache, uint32_t slot, uint32_t gen) {
  PKV_LOCK(cache);
  int rc = 0;
  if (slot >= cache->seq_cap || cache->seqs[slot] || gen == 0 ||
      cache->seq_gen[slot] == 0)
    rc = pkv__err(PKV_ESTATE, "test_set_seq_gen: slot %u not free", slot);
  else
    cache->seq_gen[slot] = gen;
  return pkv__leave_ro(cache, rc);
}

/* ------------------------------------------------ engine-facing */

int pkv__seq_view_get(pkv_cache *cache, pkv_seq_id seq, pkv__seq_view *out) {
  pkv__err_clear();
  PKV_CHECK(cache && out, "seq_view_get: NULL argument");
  PKV_LOCK_SEQ(cache, seq, s);
  out->blocks = s->blocks;
  out->n_blocks = s->n_blocks;
  out->n_tokens = s->n_tokens;
  out->n_committed = s->n_committed;
  return pkv__leave_ro(cache, 0);
}

int pkv__seq_check_writable(pkv_cache *cache, pkv_seq_id seq, uint32_t pos0,
                            uint32_t n) {
  PKV_ENTER(cache, "seq_check_writable");
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if ((uint64_t)pos0 + n > s->n_tokens) {
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
  return pkv__leave_ro(cache, rc);
}

int pkv_seq_match_prefix(pkv_cache *cache, pkv_seq_id seq,
                         const int32_t *tokens, uint32_t n_tokens,
                         uint32_t max_tokens, uint32_t *matched) {
  PKV_ENTER(cache, "match_prefix");
  PKV_CHECK(matched, "match_prefix: matched is NULL");
  PKV_CHECK(tokens || n_tokens == 0, "match_prefix: tokens is NULL");
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if (s->n_tokens != 0) {
    rc = pkv__err(PKV_ESTATE, "seq %u: match_prefix on a sequence of %u tokens "
                  "(must be empty)", s->index, s->n_tokens);
    goto out;
  }
  if (cache->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE) {
    *matched = 0;
    goto out;
  }
  uint32_t bs = cache->block_size;
  uint32_t limit = n_tokens;
  if (max_tokens && max_tokens < limit) limit = max_tokens;
  uint32_t want = limit / bs;
  if (want > 0 && (rc = pkv__seq_table_reserve(s, want)) != 0) goto out;
  cache->st.prefix_queries++;
  cache->st.prefix_query_tokens += n_tokens;
  if (want == 0) {
    *matched = 0;
    goto out;
  }
  uint64_t collided = 0;
  uint32_t k = pkv__prefix_walk(cache, s->ns_id, tokens, want, s->blocks,
                                &collided);
  for (uint32_t i = 0; i < k; i++) {
    pkv__block_ref(cache, s->blocks[i]);
    pkv__prefix_hit(cache, s->blocks[i]);
  }
  cache->st.prefix_collisions += collided;
  s->tail_writable = false;
  /* The pool's run, then the local tiers' (under the lock), then Redis's
   * (pkv__tier_promote_remote releases the lock for its round trips, with
   * the match so far published in s), and again while a tier adds. */
  for (uint32_t k0 = 0;;) {
    if (cache->tiers) k = pkv__tier_promote(cache, s, tokens, k, want);
    s->n_blocks = s->n_hashed = k;
    s->n_tokens = s->n_known = s->n_committed = k * bs;
    cache->sum_tokens += (uint64_t)(k - k0) * bs;
    cache->sum_blocks += k - k0;
    cache->st.prefix_hit_tokens += (uint64_t)(k - k0) * bs;
    if (!cache->tiers || k >= want) break;
    k0 = k;
    if ((rc = pkv__tier_promote_remote(cache, seq, &s, tokens, want)) != 0)
      goto out; /* s was freed or changed meanwhile: nothing to report */
    if (s->n_blocks == k0) break;
    cache->st.prefix_hit_tokens += (uint64_t)(s->n_blocks - k0) * bs;
    k0 = k = s->n_blocks; /* published (and summed) there */
  }
  *matched = k * bs;
out:
  return pkv__leave(cache, rc);
}
