/*
 * policy.h — eviction policies as a versioned const vtable.
 *
 * The manager tracks which blocks are in the prefix index and their
 * refcounts; a policy only orders the evictable ones.  The manager calls the
 * hooks below (always with the cache lock held, so a policy needs no locking
 * of its own) and never touches the policy's state.  Re-entry: a hook that
 * calls any public function on the same cache (pkv_stats_get, pkv_seq_free,
 * ...) gets PKV_EBUSY at once, with nothing changed — never a deadlock (the
 * thread's held lock is recorded in a thread-local); calls into other
 * caches work.  A policy that needs the cache's state must record what the
 * hooks tell it, or queue the work for after the call.  Block ids are
 * 0 .. num_blocks-1, so a policy can keep per-block arrays for O(1) hooks.
 *
 * Life of a cached block, as the hooks see it:
 *
 *   on_insert ──► (in use) ──on_evictable──► (evictable) ──choose_victim──►
 *       ▲            ▲  │                        │          on_remove
 *       │            │  └─ on_hit (matched)      │
 *       │            └────── on_pinned ◄─────────┘  (matched / referenced again)
 *
 * on_remove is called for every block leaving the index, evicted or reset,
 * whatever state it is in.  A block is inserted at most once between removes.
 * on_hit means exactly "a prefix match (pkv_seq_match_prefix) reused the
 * block"; a commit that finds its block already cached and takes the cached
 * copy instead (deduplication) calls on_dedup, never on_hit.
 */
#ifndef PAGEDKV_POLICY_H
#define PAGEDKV_POLICY_H

#include "pagedkv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version 2 added the optional on_dedup and check hooks at the end of the
 * vtable; ops of version 1 (which stop before them) are still accepted. */
#define PKV_POLICY_VERSION 2
#define PKV_POLICY_VERSION_MIN 1

/* What the manager knows of a block when it calls a hook. */
typedef struct pkv_block_meta {
  uint64_t now;          /* clock (ns) at the call */
  pkv_hash128 key;
  pkv_hash128 parent;    /* zero for a first block */
  uint32_t depth;        /* index of the block in its chain: 0 = first */
  uint8_t priority;      /* retention priority 0..100 (35 = default) */
  uint64_t priority_until; /* clock value when priority falls back to the
                              default; 0 = never */
  /* Block id of the cached parent (the block whose key is `parent`), or -1
   * if there is none, it is not cached, or the manager has not linked the
   * two yet.  A hint: policies check it against their own record of that
   * block's key before use, so callers that do not know it may pass -1. */
  int32_t parent_block;
} pkv_block_meta;

typedef struct pkv_policy_ops {
  int version;      /* PKV_POLICY_VERSION */
  const char *name; /* short, unique: "lru" */
  /* Allocates private state for a pool of num_blocks blocks.  args is the
   * cache's policy_args (may be NULL).  Returns 0 or a PKV_E* code. */
  int (*create)(void **state, uint32_t num_blocks, const char *args);
  void (*destroy)(void *state);
  /* block entered the prefix index (it is in use at that moment). */
  void (*on_insert)(void *state, int32_t block, const pkv_block_meta *meta);
  /* a prefix match reused block. */
  void (*on_hit)(void *state, int32_t block, const pkv_block_meta *meta);
  /* block's refcount fell to 0: it is now a candidate. */
  void (*on_evictable)(void *state, int32_t block, const pkv_block_meta *meta);
  /* block was a candidate and is referenced again: no longer a candidate. */
  void (*on_pinned)(void *state, int32_t block, const pkv_block_meta *meta);
  /* Returns a current candidate to evict, or -1 if it has none.  Must not
   * change state: the manager follows with on_remove(victim). */
  int32_t (*choose_victim)(void *state, uint64_t now);
  /* block left the index (evicted or reset); forget it. */
  void (*on_remove)(void *state, int32_t block);

  /* ---- version 2: optional, may be NULL ---- */
  /* A commit found block already cached with the same key and tokens and
   * pointed the sequence's table at it instead of its own copy (commit
   * deduplication).  Not a prefix hit: on_hit is not called.  If block was
   * evictable, on_pinned came first.  NULL: the policy ignores dedups. */
  void (*on_dedup)(void *state, int32_t block, const pkv_block_meta *meta);
  /* Verifies the policy's private state against the manager's.
   * evictable[b] (num_blocks entries) is 1 for exactly the blocks that are
   * candidates now (cached, refcount 0), 0 otherwise.  Returns 0, or
   * PKV_ECORRUPT with the first disagreement written to msg (NUL-terminated
   * within msg_cap; msg may be NULL).  Must not change state.  pkv_check
   * calls it (and PKV_DEBUG=2 builds after every mutation).  NULL: only the
   * manager's own test applies (choose_victim returns a candidate, or -1
   * exactly when there is none). */
  int (*check)(const void *state, const uint8_t *evictable,
               uint32_t num_blocks, char *msg, size_t msg_cap);
} pkv_policy_ops;

/* Built-in policies by name ("lru", "fifo", "lfu", "s3fifo", "priority",
 * "fwlru", "adaptive") or registered ones; NULL if unknown.  Thread-safe. */
PKV_API const pkv_policy_ops *pkv_policy_find(const char *name);
/* Registers ops under ops->name for lookup by name (process-wide).  Refuses
 * a version outside PKV_POLICY_VERSION_MIN .. PKV_POLICY_VERSION
 * (PKV_ENOTSUP), missing required hooks (PKV_EINVAL) or a taken name
 * (PKV_ESTATE). */
PKV_API int pkv_policy_register(const pkv_policy_ops *ops);
/* Names of the built-ins and the policies registered so far,
 * NULL-terminated: a snapshot that never changes and lives for the whole
 * process (registrations after the call publish a new snapshot; call again
 * to see them).  Thread-safe without locking, also against a concurrent
 * pkv_policy_register. */
PKV_API const char *const *pkv_policy_names(void);

#ifdef __cplusplus
}
#endif
#endif /* PAGEDKV_POLICY_H */
