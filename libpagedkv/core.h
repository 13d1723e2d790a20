/*
 * core.h — the manager's private data structures and the helpers of every
 * floor of its stack (listed below, "the stack"), and the entry macros every
 * public call uses.  Nothing outside libpagedkv/ includes it (the engine
 * goes through internal.h).
 *
 *   pkv_cache
 *    ├─ refcount[num_blocks]      hot: table entries + pins per block
 *    ├─ blk[num_blocks]           cold: flags, free link, prefix metadata
 *    ├─ block_tokens[num_blocks * block_size]
 *    │                            token id of every slot, kept with the block
 *    │                            (like its K/V), so fork copies no tokens
 *    ├─ seqs[] ──► pkv__seq (one allocation each, never moved)
 *    │               └─ blocks[] (page table; realloc'd only by its own
 *    │                            mutations)
 *    ├─ copies[]                  external mode: queued copy-on-write copies
 *    ├─ kv arena (owned mode)     [layer][K|V][block][kv_head][slot][head_dim]
 *    └─ prefix index              heads[] chained through blk[].hash_next
 *
 * Locking rule: one mutex per cache (cache->lock) guards everything above.
 * Every public entry point takes it exactly once (PKV_LOCK / PKV_LOCK_SEQ,
 * released by pkv__leave) and calls only pkv__* helpers that assume it is
 * held (suffix-free names; no helper locks).  From inside the cache's own
 * event callback the lock is not taken: the entry point returns PKV_EBUSY
 * (pkv__lock).  The
 * engine reads a sequence's blocks[] without the lock; that is safe because
 * a sequence's array is only reallocated or rewritten by operations on that
 * sequence, which the caller promises not to run concurrently with the
 * engine, and blocks in use are never evicted or reused.
 */
#ifndef PKV_CORE_H
#define PKV_CORE_H

#include "internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------ graded asserts */

#ifndef PKV_DEBUG
#define PKV_DEBUG 0
#endif

void pkv__assert_fail(const char *expr, const char *file, int line,
                      const char *detail);
#if PKV_DEBUG >= 1
#define PKV_ASSERT(e) \
  ((e) ? (void)0 : pkv__assert_fail(#e, __FILE__, __LINE__, ""))
#else
#define PKV_ASSERT(e) ((void)0)
#endif
/* Level 2: the full validator after every mutation (pkv__cache_is_valid is
 * always compiled; only the call is graded). */
#if PKV_DEBUG >= 2
#define PKV_ASSERT_VALID(c) pkv__assert_valid(c, __FILE__, __LINE__)
#else
#define PKV_ASSERT_VALID(c) ((void)0)
#endif

/* ------------------------------------------------ blocks */

#define PKV_BLK_CACHED 0x01u    /* in the prefix index */
#define PKV_BLK_HASHED 0x02u    /* key/parent/depth valid (full, committed) */
#define PKV_BLK_ORPHAN 0x04u    /* cached, and its parent left the index */
#define PKV_BLK_ORPHAN_Q 0x08u  /* on the orphan candidate stack */

/* One cache line per block: everything a prefix lookup, a refcount-0
 * transition or an eviction reads.  The family links used only for orphan
 * tracking live apart (pkv__family). */
typedef struct pkv__block {
  pkv_hash128 key, parent; /* valid while HASHED */
  uint64_t priority_until;
  union {
    int32_t next_free;    /* free list link; only while free */
    int32_t hash_next;    /* index chain link; only while cached */
  };
  uint32_t ns_id;         /* extra-key namespace; valid while HASHED */
  uint32_t depth;         /* index in its chain; valid while HASHED */
  uint32_t pins;          /* pin references (included in refcount) */
  uint16_t flags;         /* PKV_BLK_* */
  uint8_t priority;       /* retention priority while cached */
  uint8_t unused_;
  uint32_t deferred;      /* references a dedup remap left for
                             pkv_blocks_release (included in refcount) */
} pkv__block;

_Static_assert(sizeof(pkv__block) == 64, "pkv__block is one cache line");

typedef struct pkv__family {
  int32_t parent_block;   /* cached parent we are linked under, or -1 */
  int32_t first_child;    /* cached children, linked through siblings */
  int32_t next_sibling, prev_sibling;
} pkv__family;

/* Named states (refcount lives in the hot array cache->refcount). */
#define PKV_BLOCK_IS_CACHED(c, b) (((c)->blk[b].flags & PKV_BLK_CACHED) != 0)
#define PKV_BLOCK_IS_USED(c, b) ((c)->refcount[b] > 0)
#define PKV_BLOCK_IS_FREE(c, b) \
  ((c)->refcount[b] == 0 && !PKV_BLOCK_IS_CACHED(c, b))
#define PKV_BLOCK_IS_EVICTABLE(c, b) \
  ((c)->refcount[b] == 0 && PKV_BLOCK_IS_CACHED(c, b))
/* A sequence may write into block b only if it is the sole reference and the
 * block is not in the index (cached blocks are immutable).  A queued copy
 * into b holds a reference that does not count here (b's owner may write
 * the slots past the copy's range: pkv__block_writable_at); a queued copy
 * out of b does count, so b's owner copies before writing. */
#define PKV_BLOCK_IS_WRITABLE(c, b) \
  ((c)->refcount[b] - pkv__copies_into(c, b) == 1 && !PKV_BLOCK_IS_CACHED(c, b))

/* ------------------------------------------------ sequences */

typedef struct pkv__prio_range {
  uint32_t begin, end;
  uint8_t priority;
  uint64_t duration_ns;
} pkv__prio_range;

typedef struct pkv__seq {
  uint32_t index;        /* slot in cache->seqs */
  uint32_t gen;          /* handle generation (copy of seq_gen[index]) */
  int32_t tail;          /* blocks[n_blocks - 1] while tail_writable */
  bool tail_writable;    /* hint: tail is ours alone and not hashed; set
                            only by append, cleared by every operation that
                            may share, cache or pin it (fork, truncate,
                            commit, match, pin); false is always safe */
  uint32_t ns_id;        /* interned (namespace, adapter) */
  int32_t *blocks;       /* page table */
  uint32_t n_blocks, cap_blocks;
  uint32_t n_tokens;     /* reserved (known + lookahead) */
  uint32_t n_known;      /* leading slots with token ids; the blocks over
                            [n_known, n_tokens) are writable (never shared,
                            cached or hashed) */
  uint32_t n_committed;
  uint32_t n_hashed;     /* leading blocks whose keys are known */
  uint8_t priority;      /* default retention priority */
  pkv__prio_range *ranges;
  uint32_t n_ranges, cap_ranges;
  uint32_t index_limit;  /* table entries at or past this index never enter
                            the prefix index: their K/V was computed before
                            a context shift (pkv_seq_remove_range) moved
                            them; UINT32_MAX = no limit */
  uint32_t n_dropped;    /* leading blocks released from the front (a
                            sliding window, groups.c): table entry 0 is
                            block n_dropped of the token stream */
  pkv_hash128 dropped_key; /* key of the last dropped block (the parent of
                              entry 0), valid while n_dropped > 0 */
} pkv__seq;

/* Handle = generation << 32 | (index + 1); generation starts at 1 and grows
 * on every free, so 0 is never a handle and a stale handle never matches.
 * A slot whose generation would wrap (after 2^32 - 1 sequences) is retired
 * instead, never to be handed out again: a stale handle stays refused
 * forever (one slot of 8 bytes lost per 2^32 frees). */
#define PKV_SEQ_HANDLE(idx, gen) (((uint64_t)(gen) << 32) | ((uint64_t)(idx) + 1))

/* External storage: the queued copies writing into a block.  Each queued
 * copy holds a reference on its source and one on its destination until
 * pkv_pool_drain_copies hands it out, so neither is evicted or reused
 * before the caller has the copy, and the source is never written in place
 * (its owner copies it first).  The destination's owner may write past
 * `end` meanwhile: that is where the next tokens go. */
typedef struct pkv__copy_in {
  uint32_t n;   /* queued copies into the block */
  uint32_t end; /* highest dst_slot + n_slots among them; 0 when n == 0 */
} pkv__copy_in;

/* ------------------------------------------------ namespaces */

typedef struct pkv__ns {
  uint8_t *bytes;        /* NULL when len == 0 */
  size_t len;
  uint64_t adapter_id;
  pkv_hash128 digest;    /* XXH3-128 of the typed encoding */
  uint32_t refs;         /* sequences + hashed blocks using it; 0 = slot free */
  uint32_t next;         /* digest chain while live, free list while free */
  uint32_t quota;        /* tier/quota.c: its quota's index, or UINT32_MAX */
} pkv__ns;

/* ------------------------------------------------ pins */

typedef struct pkv__pin {
  uint32_t gen;          /* odd = live */
  bool retired;          /* gen wrapped: the slot is never used again */
  int32_t *blocks;
  uint32_t n_blocks;
} pkv__pin;

/* ------------------------------------------------ the cache */

struct pkv_cache {
  pthread_mutex_t lock;
  const pkv_cache *held_prev;  /* pkv__tls_held before this lock was taken */
  pkv_config cfg;              /* validated; strings point into names below */
  char policy_name[32];
  pkv_kv_layout layout;
  uint32_t block_size;
  uint32_t num_blocks;
  size_t kv_region_stride;     /* distance between regions, 64-aligned */
  uint8_t *kv;                 /* owned arena: 2 * n_layers regions */
  size_t kv_bytes;

  uint32_t *refcount;          /* per block: table entries + pins */
  pkv__block *blk;             /* 64-byte aligned, one line per block */
  void *blk_raw;               /* allocation behind blk */
  pkv__family *fam;
  int32_t *block_tokens;       /* num_blocks * block_size */
  int32_t free_head;
  uint32_t n_free, n_cached, n_evictable, n_pinned;

  pkv__seq **seqs;             /* NULL = free slot */
  uint32_t *seq_gen;
  uint32_t *seq_free;          /* stack of free slot indices */
  uint32_t n_seq_free, seq_cap, n_seqs;
  uint32_t n_seq_retired;      /* slots whose generation ran out */

  pkv_copy *copies;            /* external mode queue [head, len) */
  pkv__copy_in *copy_in;       /* external mode: per block; NULL if owned */
  uint32_t copies_head, copies_len, copies_cap;

  pkv__ns *ns;                 /* ns[0] = default namespace */
  uint32_t n_ns, cap_ns;
  uint32_t *ns_heads;          /* digest buckets over ns[] */
  uint32_t ns_mask, ns_free;

  pkv__pin *pins;
  uint32_t n_pins, cap_pins;

  /* prefix index */
  int32_t *heads;              /* hash buckets, -1 = empty */
  uint32_t hash_mask;
  uint8_t *hash_buf;           /* scratch: parent + extra + tokens */
  uint64_t key_mask_lo;        /* ~0, or the test hook's weak-key mask */

  /* eviction */
  const pkv_policy_ops *policy;
  void *policy_state;
  int32_t *orphans;            /* candidate stack (ORPHANS_FIRST) */
  uint32_t n_orphans;

  uint32_t *scratch;           /* num_blocks counters for pkv_check */
  uint64_t debug_mutations;    /* PKV_DEBUG=2: mutations since create */
  uint64_t now;                /* clock of the current call, if now_valid */
  bool now_valid;
  uint64_t event_seqno;
  pkv_event *evq;              /* pull queue ring [evq_head, +evq_len) */
  uint32_t evq_head, evq_len, evq_cap;
  uint64_t evq_lost, evq_lost_first; /* dropped since the queue filled */
  uint64_t sum_tokens;         /* sum of live sequences' n_tokens */
  uint64_t sum_blocks;         /* sum of live sequences' n_blocks */
  uint32_t n_deferred;         /* sum of blk[].deferred */
  pkv_stats st;                /* counters only; gauges computed on read */
  /* tier/ (above seq.c in the stack): the lower floors call it only
   * through these pointers, set while a tier / a quota exists. */
  struct pkv__tiers *tiers;    /* stores below the pool, or NULL */
  void (*up_demote)(pkv_cache *c, int32_t b); /* evict.c: keep the victim */
  struct pkv__quotas *quota;   /* namespace quotas, or NULL */
  const struct pkv__quota_up *quota_up; /* set with quota */
  uint32_t n_protected;        /* evictable blocks a reservation keeps */
  uint32_t take_ns;            /* namespace the next taken block is for */
  /* tier/remote.c: sends the Redis puts a call queued, after the call
   * releases the lock (pkv__leave); NULL without a Redis tier. */
  void (*up_flush)(void *arg);
  void *up_flush_arg;
};

/* The quota hooks of the lower floors (tier/quota.c fills them). */
typedef struct pkv__quota_up {
  /* a cached block entered (+1) / left (-1) the index (prefix.c) */
  void (*cached)(pkv_cache *c, int32_t b, int delta);
  /* a cached block's refcount reached (+1) / left (-1) 0 (blocks.c) */
  void (*evictable)(pkv_cache *c, int32_t b, int delta);
  /* the victim, quota-aware (evict.c); -1 with the error set */
  int32_t (*victim)(pkv_cache *c);
  /* namespace slot id was (re)interned (ns.c) */
  void (*bind)(pkv_cache *c, uint32_t id);
  /* block b left the free list (+1, for namespace c->take_ns) / went back
   * to it (-1) (blocks.c): a namespace's usage counts blocks in use too */
  void (*live)(pkv_cache *c, int32_t b, int delta);
} pkv__quota_up;

/* ------------------------------------------------ the stack
 *
 * The manager's files form a stack; a file calls only files on its own
 * floor's left or below it (scripts/layer-check.py fails `make test` on any
 * cycle between files):
 *
 *   5  cache.c seqops.c serve.c groups.c export.c check.c   public face
 *   4  seq.c                  sequences, page tables, match, batch calls
 *   3  evict.c                eviction driver, policy instance, pins,
 *                             pkv__block_take (allocation that may evict)
 *   2  prefix.c               keys, index, commit registration, events
 *   1  blocks.c               free list, refcounts, CoW copies, the policy's
 *                             block-state hooks, orphan candidates
 *   0  ns.c  entry.c  abi.c  alloc.c  error.c      namespaces, entry
 *                             machinery, versioned structs, memory, errors
 *   policy/ (registry.c over the built-ins over util.c) is reached only
 *   through the vtable in pkv_cache (c->policy) and pkv_policy_find.
 *   tier/ sits above floor 5: it calls down, and the stack reaches it only
 *   through c->up_demote, c->quota_up and c->up_flush.
 */

/* ------------------------------------------------ helpers (lock held) */

static inline uint32_t pkv__copies_into(const pkv_cache *c, int32_t b) {
  return c->copy_in ? c->copy_in[b].n : 0;
}
/* Whether b's owner may write slots from `slot` on in place: writable, and
 * no queued copy into b reaches that far. */
static inline bool pkv__block_writable_at(const pkv_cache *c, int32_t b,
                                          uint32_t slot) {
  return PKV_BLOCK_IS_WRITABLE(c, b) &&
         (!c->copy_in || c->copy_in[b].n == 0 || slot >= c->copy_in[b].end);
}

/* Little-endian u64 into p (key and namespace encodings). */
static inline void pkv__put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
/* Seed of every key and namespace digest ("pkv key1"; prefix.c). */
#define PKV__KEY_SEED 0x706b76206b657931ull

/* ------------------------------------------------ 0: entry.c
 *
 * The way into the library.  Every public call of the manager reads
 *
 *   int pkv_x(pkv_cache *cache, pkv_seq_id seq, T *out) {
 *     PKV_ENTER(cache, "x");                     clear error, cache != NULL
 *     PKV_CHECK(out, "x: out is NULL");          argument checks (EINVAL)
 *     PKV_LOCK_SEQ(cache, seq, s);               lock (EBUSY), handle (ENOSEQ)
 *     int rc = ...;                              the call's own work
 *     return pkv__leave(cache, rc);              validate, unlock, rc
 *   }
 *
 * (PKV_LOCK for calls without a sequence; pkv__leave_ro after a read-only
 * call.)  Checks come before the lock, so a refused call changes nothing. */

/* The clock, read at most once per API call: one call is one instant for
 * every hook it makes (and a clock read costs more than most hooks). */
uint64_t pkv__default_clock(void *user);
static inline uint64_t pkv__now(pkv_cache *c) {
  if (!c->now_valid) {
    c->now = c->cfg.clock ? c->cfg.clock(c->cfg.clock_user)
                          : pkv__default_clock(NULL);
    c->now_valid = true;
  }
  return c->now;
}

/* The cache whose event callback this thread is running, if any: a call
 * into it from the callback is refused (it would deadlock on the lock). */
extern _Thread_local const pkv_cache *pkv__tls_emitting
    __attribute__((tls_model("initial-exec")));
/* The cache whose lock this thread holds (the innermost, when a callback
 * of one cache calls into another; the chain is kept in held_prev), or
 * NULL.  Whatever the library calls with the lock held — policy hooks,
 * event callbacks, the clock, an allocator — that calls back into the same
 * cache is refused instead of deadlocking on the lock. */
extern _Thread_local const pkv_cache *pkv__tls_held
    __attribute__((tls_model("initial-exec")));
int pkv__lock_busy(const pkv_cache *c);
/* Takes the cache lock; PKV_EBUSY (error set, lock not taken, nothing
 * changed) when this thread already holds it (a call from a policy hook or
 * another callback the cache runs) or runs its event callback (PKV_LOCK). */
__attribute__((warn_unused_result)) static inline int pkv__lock(pkv_cache *c) {
  if (__builtin_expect(pkv__tls_held == c || pkv__tls_emitting == c, 0))
    return pkv__lock_busy(c);
  pthread_mutex_lock(&c->lock);
  c->held_prev = pkv__tls_held;
  pkv__tls_held = c;
  c->now_valid = false;
  return 0;
}
static inline void pkv__unlock(pkv_cache *c) {
  pkv__tls_held = c->held_prev;
  pthread_mutex_unlock(&c->lock);
}

/* The refusal path of pkv__seq_lookup: sets the error, returns NULL. */
pkv__seq *pkv__seq_lookup_fail(pkv_cache *c, pkv_seq_id id);
/* The live sequence a handle names, or NULL with PKV_ENOSEQ's detail set.
 * Inline: it is on every call's path (idx1 - 1 wraps for handle 0). */
static inline pkv__seq *pkv__seq_lookup(pkv_cache *c, pkv_seq_id id) {
  uint32_t idx = (uint32_t)(id & 0xffffffffu) - 1u;
  pkv__seq *s;
  if (__builtin_expect(idx < c->seq_cap, 1) && (s = c->seqs[idx]) != NULL &&
      s->gen == (uint32_t)(id >> 32))
    return s;
  return pkv__seq_lookup_fail(c, id);
}

#define PKV_LOCK(cache)                         \
  do {                                          \
    if (pkv__lock(cache)) return PKV_EBUSY;     \
  } while (0)
#define PKV_LOCK_SEQ(cache, id, s)                   \
  PKV_LOCK(cache);                                   \
  pkv__seq *s = pkv__seq_lookup(cache, id);          \
  if (!s) return pkv__leave_ro(cache, PKV_ENOSEQ)
void pkv__assert_valid(pkv_cache *c, const char *file, int line); /* check.c */
/* The epilogue after a mutation: the full validator (PKV_DEBUG=2), the
 * unlock, rc. */
static inline int pkv__leave(pkv_cache *c, int rc) {
  PKV_ASSERT_VALID(c);
  void (*flush)(void *) = c->up_flush;
  void *arg = c->up_flush_arg;
  pkv__unlock(c);
  if (__builtin_expect(flush != NULL, 0)) flush(arg); /* no lock held */
  return rc;
}
/* The epilogue of a read-only call. */
static inline int pkv__leave_ro(pkv_cache *c, int rc) {
  pkv__unlock(c);
  return rc;
}

/* ------------------------------------------------ 0: ns.c */

int pkv__ns_init(pkv_cache *c);
void pkv__ns_destroy(pkv_cache *c);
int pkv__ns_intern(pkv_cache *c, const void *ns, size_t len,
                   uint64_t adapter_id, uint32_t *out);
void pkv__ns_unref(pkv_cache *c, uint32_t id);
/* The interned id of (ns, adapter) if it exists; false otherwise (or on
 * allocation failure, with the error set and *rc = PKV_ENOMEM). */
bool pkv__ns_find(pkv_cache *c, const void *ns, size_t len,
                  uint64_t adapter_id, uint32_t *out, int *rc);

/* ------------------------------------------------ 1: blocks.c */

/* Blocks a caller may obtain right now (free + evictable). */
static inline uint32_t pkv__blocks_available(const pkv_cache *c) {
  return c->n_free + c->n_evictable - c->n_protected; /* minus reserved */
}
/* Takes the first free block; refcount becomes 1.  -1 when the free list
 * is empty (pkv__block_take, evict.c, evicts first). */
int32_t pkv__blocks_take_free(pkv_cache *c);
/* One more reference to b (a table entry or a pin). */
void pkv__block_ref(pkv_cache *c, int32_t b);
/* One reference fewer; at 0 the block becomes free or evictable. */
void pkv__block_unref(pkv_cache *c, int32_t b);
/* Copies slots [0, n_slots) of src into dst (K/V of every layer in owned
 * mode, a queued pkv_copy in external mode, which holds src and dst until
 * drained; token ids in both).  The copy queue must have room
 * (pkv__copies_reserve).  Counted as a copy-on-write copy. */
void pkv__block_copy(pkv_cache *c, int32_t src, int32_t dst, uint32_t n_slots);
/* The same from slot src_slot of src to slot dst_slot of dst (src != dst). */
void pkv__slots_copy(pkv_cache *c, int32_t src, uint32_t src_slot, int32_t dst,
                     uint32_t dst_slot, uint32_t n_slots);
/* Moves up to cap entries of elem bytes from the front of the ring
 * [*head, *head + *len) at base into out (*head resets once it is empty);
 * how many moved.  The copy queues' drain (pool copies, tier copies). */
uint32_t pkv__ring_take(const void *base, size_t elem, uint32_t *head,
                        uint32_t *len, void *out, uint32_t cap);
int pkv__copies_reserve(pkv_cache *c, uint32_t extra);
/* A block that left the index (eviction, reset) goes back on the free list
 * (refcount 0). */
void pkv__blocks_release_evicted(pkv_cache *c, int32_t b);
/* What the policy hears about block b. */
void pkv__block_meta(pkv_cache *c, int32_t b, pkv_block_meta *m);
/* ORPHANS_FIRST: b is an evictable orphan, a candidate for eviction. */
void pkv__orphan_push(pkv_cache *c, int32_t b);
/* A block left the HASHED state (rewritten or freed): drop its ns ref. */
void pkv__block_unhash(pkv_cache *c, int32_t b);

/* ------------------------------------------------ 2: prefix.c */

int pkv__prefix_init(pkv_cache *c);
void pkv__prefix_destroy(pkv_cache *c);
/* Removes b from the index (eviction or reset); emits REMOVED if asked. */
void pkv__prefix_remove(pkv_cache *c, int32_t b, bool emit);
void pkv__emit(pkv_cache *c, pkv_event_type type, int32_t b);
/* An event about sequence s's table entry `index` (STORED, REMAPPED). */
void pkv__emit_seq(pkv_cache *c, pkv_event_type type, int32_t b,
                   const pkv__seq *s, uint32_t index, int32_t old_block);
/* Hashes and registers the newly full committed blocks of s; with dedup,
 * replaces duplicates by the cached block (remaps written if not NULL). */
void pkv__prefix_commit_ex(pkv_cache *c, pkv__seq *s, bool dedup,
                           bool release_now, pkv_remap *remaps,
                           uint32_t *n_remaps);
/* The longest run of cached blocks equal to tokens[0 .. want*bs) in
 * namespace ns_id, written to out (may be NULL); read-only. */
uint32_t pkv__prefix_walk(pkv_cache *c, uint32_t ns_id, const int32_t *tokens,
                          uint32_t want, int32_t *out, uint64_t *collided);
/* Whether blocks[from..n) are still the cached chain for tokens in ns_id
 * (a probed hit about to be attached; entries before from are not read: a
 * sliding window's hit starts later); sets the error if not. */
bool pkv__prefix_verify(pkv_cache *c, uint32_t ns_id, const int32_t *tokens,
                        const int32_t *blocks, uint32_t from, uint32_t n);
/* The policy hears that a table reused cached block b (already ref'd). */
void pkv__prefix_hit(pkv_cache *c, int32_t b);
/* Key of a full block: XXH3-128 (seed PKV__KEY_SEED) over parent, the
 * namespace digest and the block's token ids (see prefix.c). */
pkv_hash128 pkv__block_key(pkv_cache *c, const pkv_hash128 *parent,
                           uint32_t ns_id, const int32_t *tokens);
/* Index bucket of a key (weakened by the test hook). */
static inline uint32_t pkv__bucket(const pkv_cache *c, pkv_hash128 k) {
  return (uint32_t)(k.lo & c->key_mask_lo) & c->hash_mask;
}
/* Whether cached block b's parent is absent from the index (re-adopts it
 * under a parent registered since it was orphaned). */
bool pkv__block_is_orphan(pkv_cache *c, int32_t b);
/* A cached block with key `key` whose namespace is ns_id, or -1. */
int32_t pkv__index_find_key(pkv_cache *c, pkv_hash128 key, uint32_t ns_id);
/* A cached block verifying as (key, parent, ns, tokens), or -1. */
int32_t pkv__index_lookup(pkv_cache *c, pkv_hash128 key, pkv_hash128 parent,
                          uint32_t ns_id, const int32_t *tokens);

/* ------------------------------------------------ 3: evict.c */

/* The optional hooks of a version-2 policy; NULL for a version-1 vtable
 * (which ends before them: never read past it). */
#define PKV__POLICY_HOOK_V2(ops, hook) \
  ((ops)->version >= 2 ? (ops)->hook : NULL)
/* policy/registry.c: whether ops is one of the library's own policies. */
bool pkv__policy_is_builtin(const pkv_policy_ops *ops);

int pkv__policy_open(pkv_cache *c);
void pkv__policy_close(pkv_cache *c);
/* Evicts one cached block with refcount 0; returns it (now free) or -1. */
int32_t pkv__evict_one(pkv_cache *c);
/* Takes one block (evicting if none is free); refcount becomes 1. -1 when
 * nothing is available or the policy misbehaved (error set). */
int32_t pkv__block_take(pkv_cache *c);
void pkv__pins_destroy(pkv_cache *c);

/* ------------------------------------------------ 4: seq.c */

/* Frees s (its blocks, namespace, handle); the lock is held. */
void pkv__seq_release(pkv_cache *c, pkv__seq *s);
/* The general append of pkv_seq_append_ex on s (lock held): attaches the
 * verified hit hits[0..n_hits) (s empty), writes n_new known ids, reserves
 * lookahead slots; all or nothing (groups.c runs it per group). */
int pkv__seq_grow(pkv_cache *c, pkv__seq *s, const int32_t *hits,
                  uint32_t n_hits, const int32_t *tokens, uint32_t n_new,
                  uint32_t n_lookahead, int64_t *slots, int32_t *new_blocks,
                  uint32_t new_cap, pkv_delta *d);
int pkv__seq_table_reserve(pkv__seq *s, uint64_t n_blocks);



/* ------------------------------------------------ 4½: tier/
 *
 * Called by seq.c and the floor-5 files; tier/tier.h has the rest.  The
 * lower floors reach tier/ only through c->up_demote and c->quota_up. */
/* seq.c: extend s's match [0, k) from the local tiers; returns the new k. */
uint32_t pkv__tier_promote(pkv_cache *c, pkv__seq *s, const int32_t *tokens,
                           uint32_t k, uint32_t want);
/* seq.c: extend s's published match (s->n_blocks blocks) from the Redis
 * tier, releasing the cache lock for each round trip (tier.c).  *sp is the
 * sequence looked up again after the last one; PKV_ENOSEQ / PKV_ESTATE
 * (*sp NULL) when a concurrent call freed or changed it meanwhile. */
int pkv__tier_promote_remote(pkv_cache *c, pkv_seq_id id, pkv__seq **sp,
                             const int32_t *tokens, uint32_t want);
void pkv__tiers_close(pkv_cache *c);
int pkv__tiers_open(pkv_cache *c);
void pkv__quota_destroy(pkv_cache *c);
/* The quota counters and lists against a recount (check.c). */
bool pkv__quota_is_valid(pkv_cache *c, char *msg, size_t cap);

/* ------------------------------------------------ 2: prefix.c (for tier/) */
/* Enters pool block b (refcount > 0, token ids written) into the
 * index as block `depth` of a chain under `parent` in namespace ns_id, with
 * its key computed (promotion, load).  Returns its key. */
pkv_hash128 pkv__prefix_insert_block(pkv_cache *c, int32_t b,
                                     pkv_hash128 parent, uint32_t depth,
                                     uint32_t ns_id, uint8_t priority);

/* ------------------------------------------------ 5: check.c */

bool pkv__cache_is_valid(pkv_cache *c, char *msg, size_t cap);
void pkv__assert_valid(pkv_cache *c, const char *file, int line);

/* Test hooks (not part of the public ABI; tests link the static library). */
void pkv__test_weaken_keys(pkv_cache *cache, unsigned bits);
/* Sets the generation the next sequence in free handle slot `slot` (or the
 * next pin in released pin slot `slot`) gets, e.g. near the wrap.  PKV_ESTATE
 * if the slot is not free. */
int pkv__test_set_seq_gen(pkv_cache *cache, uint32_t slot, uint32_t gen);
int pkv__test_set_pin_gen(pkv_cache *cache, uint32_t slot, uint32_t gen);

#endif /* PKV_CORE_H */
