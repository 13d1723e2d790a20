/*
 * pagedkv.h — the public interface of libpagedkv, a paged KV-cache manager.
 *
 * A cache is a pool of fixed-size blocks (pages) of `block_size` token slots;
 * every block holds K and V for every layer and every KV head.  Sequences own
 * page tables (lists of block ids); blocks are shared between sequences by
 * fork and by prefix matching, with copy-on-write on the first write into a
 * shared or cached block.  Full, committed blocks enter a prefix index keyed
 * by a chained 128-bit hash; unreferenced cached blocks are evicted by a
 * pluggable policy (see policy.h).
 *
 * Conventions
 *   - Every call returns 0 or a negative PKV_E* code; pkv_strerror() names the
 *     code and pkv_last_error() (thread-local) says exactly what was wrong.
 *   - A call that fails leaves the cache exactly as it was.
 *   - Every call may be made from any thread; the cache serializes them
 *     internally.  A sequence must not be mutated by two threads at once, nor
 *     mutated while the engine computes on it (see docs/DESIGN.md).
 *   - Destroy functions accept NULL.
 */
#ifndef PAGEDKV_H
#define PAGEDKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PKV_API __declspec(dllexport)
#elif defined(__GNUC__)
#define PKV_API __attribute__((visibility("default")))
#else
#define PKV_API
#endif

#define PKV_VERSION_MAJOR 0
#define PKV_VERSION_MINOR 1
#define PKV_VERSION_PATCH 0

/* ---------------------------------------------------------------- errors */

/* XX(name, value, message).  Codes are negative; 0 is success. */
#define PKV_ERRNO_MAP(XX)                                                     \
  XX(EINVAL, -1, "invalid argument")                                          \
  XX(ENOMEM, -2, "out of memory (no free or evictable block, or allocation failed)") \
  XX(ENOSEQ, -3, "no such sequence (unknown, freed or stale handle)")         \
  XX(ERANGE, -4, "position or length out of range")                           \
  XX(ENOSPC, -5, "output buffer too small")                                   \
  XX(ESTATE, -6, "operation not valid in the object's current state")         \
  XX(ENOTSUP, -7, "not supported by this cache or build")                     \
  XX(ECORRUPT, -8, "internal invariant violated")                             \
  XX(ENOENT, -9, "no such object (pin, policy or name)")

typedef enum pkv_errno {
#define PKV__ERR_ENUM(name, value, msg) PKV_##name = (value),
  PKV_ERRNO_MAP(PKV__ERR_ENUM)
#undef PKV__ERR_ENUM
  PKV_OK = 0
} pkv_errno;

/* Static text for a code ("invalid argument"); "unknown error" otherwise. */
PKV_API const char *pkv_strerror(int err);
/* Short name of a code ("PKV_EINVAL"). */
PKV_API const char *pkv_err_name(int err);
/* Thread-local detail of the last failed call on this thread
 * (e.g. "seq 7: truncate to 90 > length 64"); "" if none.  Valid until the
 * next pkv_ call on this thread. */
PKV_API const char *pkv_last_error(void);

/* ---------------------------------------------------------------- config */

typedef enum pkv_dtype {
  PKV_DTYPE_F32 = 0,
  PKV_DTYPE_F16 = 1,
  PKV_DTYPE_BF16 = 2,
  /* Quantized (docs/ENGINE.md, "Quantized K/V"): each stored row of
   * head_dim elements (one token, one KV head) is head_dim 1-byte codes
   * followed by its f32 scale; element = decode(code) * scale. */
  PKV_DTYPE_I8 = 3,       /* symmetric int8, codes -127..127, scale = amax/127 */
  PKV_DTYPE_FP8_E4M3 = 4, /* OCP fp8 E4M3 (max 448), scale = amax/448 */
  PKV_DTYPE_FP8_E5M2 = 5  /* OCP fp8 E5M2 (max 57344), scale = amax/57344 */
} pkv_dtype;

typedef enum pkv_storage {
  /* The library allocates the KV arena; the engine computes on it. */
  PKV_STORAGE_OWNED = 0,
  /* Ids and metadata only; K/V live with the caller (e.g. GPU memory).
   * Copies the manager needs are queued for pkv_pool_drain_copies(). */
  PKV_STORAGE_EXTERNAL = 1
} pkv_storage;

struct pkv_policy_ops; /* policy.h */
struct pkv_event;      /* below */

typedef void (*pkv_event_fn)(const struct pkv_event *ev, void *user);
/* Monotonic clock in nanoseconds, used by retention durations and recency
 * policies.  Default: CLOCK_MONOTONIC.  A simulator can install a logical
 * clock. */
typedef uint64_t (*pkv_clock_fn)(void *user);

typedef struct pkv_config {
  uint32_t n_layers;   /* >= 1 */
  uint32_t n_kv_heads; /* >= 1 */
  uint32_t head_dim;   /* >= 1 */
  uint32_t block_size; /* tokens per block, 1 .. 65536 */
  pkv_dtype dtype;     /* element type of stored K/V */
  uint32_t num_blocks; /* pool size; 0 = derive from memory_bytes */
  uint64_t memory_bytes; /* used only when num_blocks == 0 */
  pkv_storage storage;
  /* Eviction policy by name ("lru" default, "fifo", "lfu", "s3fifo",
   * "priority", "fwlru" — frequency-weighted LRU, the best of these on
   * prefix-sharing traces; see docs/POLICIES.md) or by ops (overrides the
   * name).  policy_args is passed to the policy's create hook (may be NULL),
   * e.g. "small=0.1" for s3fifo or "p=2,cold=0.1,hist=8" for fwlru. */
  const char *policy;
  const struct pkv_policy_ops *policy_ops;
  const char *policy_args;
  pkv_event_fn on_event; /* may be NULL; called with the cache lock held:
                            it must not call back into this cache */
  void *event_user;
  pkv_clock_fn clock;    /* may be NULL */
  void *clock_user;
  uint32_t flags;        /* PKV_CACHE_* */
  /* V head dim when it differs from K's (MLA: head_dim 576, v_head_dim
   * 512); 0 = head_dim.  At most head_dim: V slots keep K's width
   * (slot_stride) and use their first v_head_dim elements. */
  uint32_t v_head_dim;
} pkv_config;

/* Keep a cached block whose parent was evicted (default: the policy decides
 * normally).  With this flag a block whose parent leaves the index is evicted
 * before any other candidate, since no lookup can reach it until the parent is
 * recomputed. */
#define PKV_CACHE_EVICT_ORPHANS_FIRST 0x1u
/* Disable the prefix index entirely (no commit registration, no matching). */
#define PKV_CACHE_NO_PREFIX_CACHE 0x2u

/* Fills *cfg with defaults: f32, owned, LRU, no blocks (caller sets shape and
 * either num_blocks or memory_bytes). */
PKV_API void pkv_config_init(pkv_config *cfg);

/* Size in bytes of one element of dtype (4, 2, 2; 1 for the quantized
 * types, whose rows also carry a 4-byte scale: see pkv_kv_layout), 0 if
 * unknown. */
PKV_API size_t pkv_dtype_size(pkv_dtype dtype);

/* Bytes one block occupies in all layers (K and V). 0 on overflow/invalid. */
PKV_API uint64_t pkv_config_block_bytes(const pkv_config *cfg);

/* ---------------------------------------------------------------- cache */

typedef struct pkv_cache pkv_cache;

/* Validates cfg and creates a cache.  On error *out is NULL and nothing is
 * allocated; pkv_last_error() names the bad field. */
PKV_API int pkv_cache_create(const pkv_config *cfg, pkv_cache **out);
/* Frees everything, live sequences and pins included.  NULL is a no-op. */
PKV_API void pkv_cache_destroy(pkv_cache *cache);
/* The validated configuration (num_blocks resolved). */
PKV_API const pkv_config *pkv_cache_config(const pkv_cache *cache);

/* Layout of K/V in the arena (owned mode) or the layout a caller in external
 * mode is expected to mirror.  For layer l, block b, KV head h, slot s,
 * element d:
 *   byte offset = b*block_stride + h*head_stride + s*slot_stride + d*elem_size
 * from the base of layer l's K (or V) region.  Quantized dtypes: the row's
 * f32 scale follows its codes, at s*slot_stride + head_dim (slot_stride =
 * head_dim + 4), so copying a slot's slot_stride bytes copies its scale. */
typedef struct pkv_kv_layout {
  size_t elem_size;
  size_t slot_stride;  /* = head_dim * elem_size (+ 4 when quantized) */
  size_t head_stride;  /* = block_size * slot_stride */
  size_t block_stride; /* = n_kv_heads * head_stride */
  size_t layer_bytes;  /* size of one layer's K (or V) region */
} pkv_kv_layout;

PKV_API int pkv_cache_layout(const pkv_cache *cache, pkv_kv_layout *out);
/* Base pointers of layer's K and V regions (owned mode only: PKV_ENOTSUP in
 * external mode).  Aligned to 64 bytes. */
PKV_API int pkv_cache_kv(pkv_cache *cache, uint32_t layer, void **k, void **v);

/* ---------------------------------------------------------------- sequences */

/* A sequence handle: index and generation; 0 is never a valid handle.  A
 * freed or stale handle is refused with PKV_ENOSEQ, never reused silently. */
typedef uint64_t pkv_seq_id;
#define PKV_SEQ_NONE ((pkv_seq_id)0)

typedef struct pkv_seq_opts {
  /* Namespace / cache salt: sequences in different namespaces never share
   * blocks.  ns_len bytes at ns; ns may be NULL when ns_len == 0. */
  const void *ns;
  size_t ns_len;
  uint64_t adapter_id; /* LoRA adapter; 0 = none */
  uint8_t priority;    /* default retention priority 0..100 (35 if 0 given
                          and no range set; see pkv_seq_set_priority) */
} pkv_seq_opts;

/* Creates an empty sequence.  opts may be NULL (default namespace, no
 * adapter). */
PKV_API int pkv_seq_create(pkv_cache *cache, const pkv_seq_opts *opts,
                           pkv_seq_id *out);
/* Releases the sequence's blocks (refcount - 1 each; committed full blocks
 * stay cached) and invalidates the handle. */
PKV_API int pkv_seq_free(pkv_cache *cache, pkv_seq_id seq);

/* Reserves n_tokens slots at the end of seq for tokens[0..n_tokens).
 * Allocates blocks (evicting cached blocks if no block is free) and copies a
 * shared or cached tail block first (copy-on-write).  If slots is not NULL it
 * receives the slot of every appended token.  All or nothing: on PKV_ENOMEM
 * the sequence and the pool are unchanged.  n_tokens must be >= 1. */
PKV_API int pkv_seq_append(pkv_cache *cache, pkv_seq_id seq,
                           const int32_t *tokens, uint32_t n_tokens,
                           int64_t *slots);
/* Creates a child that shares every block of parent, the partial tail
 * included (refcount + 1 each).  The first write into a shared block on
 * either side copies it. */
PKV_API int pkv_seq_fork(pkv_cache *cache, pkv_seq_id parent,
                         pkv_seq_id *child);
/* Drops the tokens past n_tokens (n_tokens <= length) and releases blocks
 * wholly past the end.  A kept cached block is never written again: the next
 * append copies it. */
PKV_API int pkv_seq_truncate(pkv_cache *cache, pkv_seq_id seq,
                             uint32_t n_tokens);
/* Marks tokens [0, n_tokens) as computed in every layer (n_tokens <=
 * length; never moves backwards except through truncate).  Newly full
 * committed blocks are registered in the prefix index; a block whose key is
 * already cached is replaced in the page table by the cached one. */
PKV_API int pkv_seq_commit(pkv_cache *cache, pkv_seq_id seq,
                           uint32_t n_tokens);
/* On an empty sequence: attaches the longest run of cached full blocks whose
 * keys and stored token ids equal tokens[0..n_tokens), at most max_tokens
 * tokens (0 = no cap; pass n_tokens - 1 to keep one token to compute).
 * *matched = number of tokens attached (a multiple of block_size); they are
 * committed.  The caller then appends tokens[*matched ..]. */
PKV_API int pkv_seq_match_prefix(pkv_cache *cache, pkv_seq_id seq,
                                 const int32_t *tokens, uint32_t n_tokens,
                                 uint32_t max_tokens, uint32_t *matched);

typedef struct pkv_seq_info {
  uint32_t n_tokens;    /* reserved */
  uint32_t n_committed; /* computed in all layers */
  uint32_t n_blocks;
  uint32_t n_cached_blocks; /* blocks of this table in the prefix index */
} pkv_seq_info;
PKV_API int pkv_seq_info_get(pkv_cache *cache, pkv_seq_id seq,
                             pkv_seq_info *out);
/* Copies up to cap block ids of seq's page table into blocks; *n_blocks =
 * the table's length.  PKV_ENOSPC (nothing written) if cap is too small. */
PKV_API int pkv_seq_blocks(pkv_cache *cache, pkv_seq_id seq, int32_t *blocks,
                           uint32_t cap, uint32_t *n_blocks);
/* Retention priority 0..100 for tokens [begin, end) of seq (TensorRT-LLM
 * style); after duration_ns (0 = forever) the blocks fall back to the
 * default priority.  Applies to blocks when they enter the index. */
PKV_API int pkv_seq_set_priority(pkv_cache *cache, pkv_seq_id seq,
                                 uint32_t begin, uint32_t end,
                                 uint8_t priority, uint64_t duration_ns);

/* ---------------------------------------------------------------- pins */

typedef uint64_t pkv_pin_id;
/* Pins the committed full blocks covering seq's tokens [0, n_tokens): they
 * are never evicted until the pin is released, even after seq is freed. */
PKV_API int pkv_pin_create(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens,
                           pkv_pin_id *out);
PKV_API int pkv_pin_release(pkv_cache *cache, pkv_pin_id pin);

/* ---------------------------------------------------------------- prefix */

/* Drops every cached block that no sequence or pin uses (emits
 * PKV_EVENT_CLEARED, or REMOVED per block if some stay). */
PKV_API int pkv_prefix_reset(pkv_cache *cache);

typedef struct pkv_hash128 {
  uint64_t lo, hi;
} pkv_hash128;

/* ---------------------------------------------------------------- kernels */

/* Dense block table for a batch (vLLM style): table[i*max_blocks + j] =
 * block j of seqs[i], -1 past the end; lens[i] = tokens of seqs[i] (may be
 * NULL).  PKV_ENOSPC if a sequence has more than max_blocks blocks. */
PKV_API int pkv_block_table(pkv_cache *cache, const pkv_seq_id *seqs,
                            uint32_t n_seqs, int32_t *table,
                            uint32_t max_blocks, int32_t *lens);
/* Slot of each token in [begin, end) of seq: out[i - begin]. */
PKV_API int pkv_slot_mapping(pkv_cache *cache, pkv_seq_id seq, uint32_t begin,
                             uint32_t end, int64_t *out);
/* CSR page table (FlashInfer style): indptr[n_seqs+1], indices[indptr[n]],
 * last_page_len[n_seqs].  indices_cap bounds indices; *n_indices receives
 * the total.  PKV_ENOSPC (nothing written) if indices_cap is too small. */
PKV_API int pkv_kv_csr(pkv_cache *cache, const pkv_seq_id *seqs,
                       uint32_t n_seqs, int32_t *indptr, int32_t *indices,
                       uint32_t indices_cap, int32_t *last_page_len,
                       uint32_t *n_indices);

/* ---------------------------------------------------------------- copies */

typedef struct pkv_copy {
  int32_t src_block;
  int32_t dst_block;
  uint32_t n_slots; /* slots [0, n_slots) of every layer, K and V */
} pkv_copy;

/* External mode: moves up to cap queued copies into out, oldest first;
 * *n_out = how many.  The caller must execute them, in order, before its
 * next kernel touches the destination blocks.  *pending (may be NULL) = how
 * many remain. */
PKV_API int pkv_pool_drain_copies(pkv_cache *cache, pkv_copy *out, uint32_t cap,
                                  uint32_t *n_out, uint32_t *pending);

/* ---------------------------------------------------------------- events */

typedef enum pkv_event_type {
  PKV_EVENT_STORED = 1,  /* a block entered the prefix index */
  PKV_EVENT_REMOVED = 2, /* a block left it (evicted or reset) */
  PKV_EVENT_CLEARED = 3  /* every cached block left it */
} pkv_event_type;

typedef struct pkv_event {
  pkv_event_type type;
  uint64_t seqno;      /* 1, 2, 3, ... gap-free per cache */
  pkv_hash128 key;     /* zero for CLEARED */
  pkv_hash128 parent;  /* zero for a first block */
  int32_t block;       /* -1 for CLEARED */
  uint32_t n_tokens;   /* tokens in the block (block_size) */
  const void *ns;      /* namespace bytes of the block (valid in callback) */
  size_t ns_len;
  uint64_t adapter_id;
} pkv_event;

/* ---------------------------------------------------------------- stats */

typedef struct pkv_stats {
  uint32_t num_blocks;
  uint32_t block_size;
  uint32_t blocks_free;      /* refcount 0, not cached */
  uint32_t blocks_used;      /* refcount > 0 (tables or pins) */
  uint32_t blocks_cached;    /* in the prefix index (used or not) */
  uint32_t blocks_evictable; /* cached with refcount 0 */
  uint32_t blocks_pinned;    /* held by at least one pin */
  uint32_t n_seqs;
  uint64_t tokens;          /* sum of sequence lengths */
  uint64_t slots_reserved;  /* blocks_used * block_size */
  uint64_t waste_slots;     /* unused slots in tail blocks of live tables */
  uint64_t appends, appended_tokens;
  uint64_t forks, truncates, commits;
  uint64_t cow_copies, cow_copied_slots;
  uint64_t prefix_queries, prefix_query_tokens, prefix_hit_tokens;
  uint64_t prefix_collisions; /* key matched, tokens differed */
  uint64_t dedup_blocks;      /* commits that reused an existing cached block */
  uint64_t evictions;
  uint64_t orphan_evictions;  /* evicted blocks whose parent had left */
  uint64_t events;
  uint64_t kv_bytes;          /* arena size (owned mode) */
  char policy[32];
} pkv_stats;

PKV_API int pkv_stats_get(pkv_cache *cache, pkv_stats *out);

/* Full invariant check.  Returns 0, or PKV_ECORRUPT with the first violation
 * written to msg (NUL-terminated, truncated to msg_cap; msg may be NULL). */
PKV_API int pkv_check(pkv_cache *cache, char *msg, size_t msg_cap);

/* ---------------------------------------------------------------- allocator */

/* Replaces the allocator the library uses for host metadata (not thread-safe;
 * call before any cache exists).  All four must be given, or all NULL to
 * restore the default (jemalloc). */
typedef void *(*pkv_malloc_fn)(size_t size);
typedef void *(*pkv_realloc_fn)(void *p, size_t size);
typedef void *(*pkv_calloc_fn)(size_t n, size_t size);
typedef void (*pkv_free_fn)(void *p);
PKV_API int pkv_replace_allocator(pkv_malloc_fn m, pkv_realloc_fn r,
                                  pkv_calloc_fn c, pkv_free_fn f);

#ifdef __cplusplus
}
#endif
#endif /* PAGEDKV_H */
