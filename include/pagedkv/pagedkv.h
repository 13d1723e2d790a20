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
 *
 * ABI (docs/API.md, "Versions and ABI")
 *   The structs a caller fills (pkv_config, pkv_seq_opts, pkv_append,
 *   pkv_engine_config)
 *   end with a `version` field and zeroed `reserved` space; their size never
 *   changes within a major version: new fields take reserved space.  The
 *   *_init functions set version and zero the rest; a zero-initialized struct
 *   ({0}, memset) counts as version 1.  The library accepts an older
 *   caller's struct (its missing fields get their defaults) and a newer one
 *   whose fields this library does not know are zero; otherwise
 *   PKV_ENOTSUP.  Only the symbols declared in these headers are exported.
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
/* (major << 16) | (minor << 8) | patch, comparable with < and >. */
#define PKV_VERSION_HEX                                                       \
  ((PKV_VERSION_MAJOR << 16) | (PKV_VERSION_MINOR << 8) | PKV_VERSION_PATCH)

/* The version of the library actually loaded (PKV_VERSION_HEX of its build),
 * which may differ from the header's the caller was compiled with. */
PKV_API unsigned pkv_version(void);
/* The same as "MAJOR.MINOR.PATCH" (static storage). */
PKV_API const char *pkv_version_string(void);

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
  XX(ENOENT, -9, "no such object (pin, policy or name)")                     \
  XX(EBUSY, -10, "called from inside this cache's event callback")

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
 * (e.g. "seq 7: truncate to 90 > length 64").  Every pkv_ function clears it
 * on entry, so it is "" after a success, except eight that leave it as
 * it is: pkv_strerror, pkv_err_name, pkv_last_error, pkv_version and
 * pkv_version_string (so they can be used to report in any evaluation
 * order) and pkv_cache_destroy, pkv_engine_destroy, pkv_groups_destroy
 * (which cannot fail: clean up, then report).  Valid until the next pkv_
 * call on this thread other than those eight. */
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
   * "priority", "fwlru" — frequency-weighted LRU, "adaptive" — fwlru with
   * its weights chosen online, never measured below LRU by more than 0.002;
   * see docs/POLICIES.md) or by ops (overrides the name).  policy_args is passed to the policy's create hook (may be NULL),
   * e.g. "small=0.1" for s3fifo or "p=2,cold=0.1,hist=8" for fwlru. */
  const char *policy;
  const struct pkv_policy_ops *policy_ops;
  const char *policy_args;
  pkv_event_fn on_event; /* may be NULL; called with the cache lock held:
                            a call into this cache from inside it is refused
                            with PKV_EBUSY (never a deadlock) */
  void *event_user;
  pkv_clock_fn clock;    /* may be NULL */
  void *clock_user;
  uint32_t flags;        /* PKV_CACHE_* */
  uint32_t version;      /* PKV_CONFIG_VERSION (init); 0 = 1 */
  /* ---- version 2 (fields of a later version take the front of reserved) */
  /* Capacity of the pull queue of events (pkv_events_drain), in events;
   * 0 = no queue (push callback only). */
  uint32_t event_queue_cap;
  /* V head dim when it differs from K's (MLA: head_dim 576, v_head_dim
   * 512); 0 = head_dim.  At most head_dim: V slots keep K's width
   * (slot_stride) and use their first v_head_dim elements. */
  uint32_t v_head_dim;
  /* ---- version 3 */
  /* Host tier (docs/MANAGER.md, "Tiers"): bytes of host memory that keep
   * the cached blocks the policy evicts (demoted instead of dropped; a
   * prefix match promotes them back).  0 = no host tier. */
  uint64_t host_tier_bytes;
  /* The host tier's own eviction policy, by name (any built-in; NULL =
   * "lru"). */
  const char *host_tier_policy;
  uint64_t reserved[5];  /* zero: room for new fields */
} pkv_config;
#define PKV_CONFIG_VERSION 3

/* Keep a cached block whose parent was evicted (default: the policy decides
 * normally).  With this flag a block whose parent leaves the index is evicted
 * before any other candidate, since no lookup can reach it until the parent is
 * recomputed. */
#define PKV_CACHE_EVICT_ORPHANS_FIRST 0x1u
/* Disable the prefix index entirely (no commit registration, no matching). */
#define PKV_CACHE_NO_PREFIX_CACHE 0x2u
/* Commit deduplicates: a newly full block whose key is already cached is
 * replaced in the table by the cached block (reported as a remap; see
 * pkv_seq_commit_ex).  Without it (the default) block tables are stable: a
 * block id, once in a table, stays at its position until truncate or free,
 * and a duplicate block is cached beside its twin (either serves a hit;
 * stats.commit_duplicates). */
#define PKV_CACHE_COMMIT_DEDUP 0x4u

/* Fills *cfg with defaults: f32, owned, LRU, no blocks (caller sets shape and
 * either num_blocks or memory_bytes); version = PKV_CONFIG_VERSION, reserved
 * zero. */
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
 * freed or stale handle is refused with PKV_ENOSEQ forever (a slot whose
 * 32-bit generation would wrap is retired, never reused). */
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
  uint32_t version;     /* PKV_SEQ_OPTS_VERSION (pkv_seq_opts_init); 0 = 1 */
  uint64_t reserved[4]; /* zero: room for new fields */
} pkv_seq_opts;
#define PKV_SEQ_OPTS_VERSION 1

/* Fills *opts with defaults: default namespace, no adapter, priority 0;
 * version = PKV_SEQ_OPTS_VERSION.  (A zero-initialized struct is valid too.) */
PKV_API void pkv_seq_opts_init(pkv_seq_opts *opts);

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
 * the sequence and the pool are unchanged.  n_tokens must be >= 1.  The
 * tokens fill lookahead slots reserved by pkv_seq_append_ex first (their
 * slots were handed out then); only the rest allocates. */
PKV_API int pkv_seq_append(pkv_cache *cache, pkv_seq_id seq,
                           const int32_t *tokens, uint32_t n_tokens,
                           int64_t *slots);
/* Creates a child that shares every block of parent, the partial tail
 * included (refcount + 1 each).  The first write into a shared block on
 * either side copies it.  PKV_ESTATE while parent has lookahead slots
 * (their ids are unknown: fill or truncate them first). */
PKV_API int pkv_seq_fork(pkv_cache *cache, pkv_seq_id parent,
                         pkv_seq_id *child);
/* Drops the tokens past n_tokens (n_tokens <= length) and releases blocks
 * wholly past the end.  A kept cached block is never written again: the next
 * append copies it. */
PKV_API int pkv_seq_truncate(pkv_cache *cache, pkv_seq_id seq,
                             uint32_t n_tokens);
/* Marks tokens [0, n_tokens) as computed in every layer (n_tokens <= the
 * known length, see pkv_seq_append_ex; never moves backwards except through
 * truncate).  Newly full committed blocks are registered in the prefix
 * index.  = pkv_seq_commit_ex(cache, seq, n_tokens, 0, NULL, 0, NULL): the
 * table changes only with PKV_CACHE_COMMIT_DEDUP. */
PKV_API int pkv_seq_commit(pkv_cache *cache, pkv_seq_id seq,
                           uint32_t n_tokens);
/* On an empty sequence: attaches the longest run of cached full blocks whose
 * keys and stored token ids equal tokens[0..n_tokens), at most max_tokens
 * tokens (0 = no cap; pass n_tokens - 1 to keep one token to compute).
 * *matched = number of tokens attached (a multiple of block_size); they are
 * committed.  The caller then appends tokens[*matched ..].  On failure
 * *matched is not written. */
PKV_API int pkv_seq_match_prefix(pkv_cache *cache, pkv_seq_id seq,
                                 const int32_t *tokens, uint32_t n_tokens,
                                 uint32_t max_tokens, uint32_t *matched);

typedef struct pkv_seq_info {
  uint32_t n_tokens;    /* reserved */
  uint32_t n_committed; /* computed in all layers */
  uint32_t n_blocks;
  uint32_t n_cached_blocks; /* blocks of this table in the prefix index */
  uint32_t n_known;     /* leading slots whose token ids are known; the
                           rest, up to n_tokens, are lookahead slots */
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

/* llama.cpp-style sequence operations (docs/API.md, "Sequence operations").
 *
 * Lists the live sequences, in slot order: up to cap handles into out;
 * *n_seqs = how many are live.  PKV_ENOSPC (out untouched, *n_seqs set) if
 * cap is too small; call with cap 0 to ask.  Read-only. */
PKV_API int pkv_seq_list(pkv_cache *cache, pkv_seq_id *out, uint32_t cap,
                         uint32_t *n_seqs);
/* Frees every live sequence except seq (llama_kv_self_seq_keep).  PKV_ENOSEQ
 * (nothing freed) if seq is not live.  Refcounts as pkv_seq_free. */
PKV_API int pkv_seq_keep(pkv_cache *cache, pkv_seq_id seq);
/* Context shift: removes positions [begin, end) of seq; every position
 * p >= end becomes p - (end - begin), with its token id and K/V (moved, not
 * recomputed: K keeps the rotary embedding of p, the engine re-rotates it
 * by -(end - begin)).  Block-aligned begin and length: table entries are
 * dropped and the rest slide down, no copy.  Otherwise the entries from
 * begin's block on are rebuilt by slot copies into fresh blocks (owned: at
 * once; external: queued pkv_copy with slot offsets).  n_committed is
 * clamped to begin, and the entries from begin's block on never enter the
 * prefix index afterwards.  begin == end does nothing.  Returns 0;
 * PKV_EINVAL (NULL cache), PKV_ENOSEQ, PKV_ERANGE (begin > end, end past the
 * length), PKV_ESTATE (lookahead slots reserved), PKV_ENOMEM (pool or copy
 * queue; nothing changed).  Refcounts: -1 on each dropped or rebuilt old
 * block, 1 on each new block. */
PKV_API int pkv_seq_remove_range(pkv_cache *cache, pkv_seq_id seq,
                                 uint32_t begin, uint32_t end);

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

/* Copy slots [src_slot, src_slot + n_slots) of src_block to [dst_slot,
 * dst_slot + n_slots) of dst_block, in every layer, K and V.  Copy-on-write
 * copies have src_slot = dst_slot = 0; a context shift
 * (pkv_seq_remove_range) moves tokens to other offsets.  The two ranges never
 * overlap in one block. */
typedef struct pkv_copy {
  int32_t src_block;
  int32_t dst_block;
  uint32_t n_slots;
  uint32_t src_slot;
  uint32_t dst_slot;
} pkv_copy;

/* External mode: moves up to cap queued copies into out, oldest first;
 * *n_out = how many; *pending (may be NULL) = how many remain.  Until it is
 * drained a queued copy holds its source and destination blocks (refcount):
 * the source is neither reused nor written in place, the destination not
 * reused, however late the caller drains.  The caller executes drained
 * copies in order, before any later kernel touches their destination
 * slots; once drained, the blocks may be reused by the next call. */
PKV_API int pkv_pool_drain_copies(pkv_cache *cache, pkv_copy *out, uint32_t cap,
                                  uint32_t *n_out, uint32_t *pending);

/* ---------------------------------------------------------------- events */

typedef enum pkv_event_type {
  PKV_EVENT_STORED = 1,   /* a block entered the prefix index */
  PKV_EVENT_REMOVED = 2,  /* a block left it (evicted or reset) */
  PKV_EVENT_CLEARED = 3,  /* every cached block left it */
  PKV_EVENT_REMAPPED = 4, /* commit dedup: table entry `index` of `seq` now
                             holds `block` instead of `old_block` */
  PKV_EVENT_LOST = 5,     /* pull queue overflow: n_lost events, seqno ..
                             seqno + n_lost - 1, were dropped (pull only) */
  PKV_EVENT_DEMOTED = 6,  /* an evicted block was kept in tier `index`
                             (PKV_TIER_*); REMOVED came just before */
  PKV_EVENT_PROMOTED = 7  /* a match brought `block` back from tier `index`
                             (STORED follows for the new block) */
} pkv_event_type;

typedef struct pkv_event {
  pkv_event_type type;
  uint64_t seqno;      /* 1, 2, 3, ... gap-free per cache */
  pkv_hash128 key;     /* zero for CLEARED */
  pkv_hash128 parent;  /* zero for a first block */
  int32_t block;       /* -1 for CLEARED */
  uint32_t n_tokens;   /* tokens in the block (block_size) */
  const void *ns;      /* namespace bytes of the block (valid in callback;
                          NULL in pulled events) */
  size_t ns_len;
  uint64_t adapter_id;
  pkv_seq_id seq;      /* STORED: the committing sequence; REMAPPED: the
                          sequence whose table changed; else 0 */
  uint32_t index;      /* STORED / REMAPPED: table index = depth in chain;
                          DEMOTED / PROMOTED: the tier (PKV_TIER_*) */
  int32_t old_block;   /* REMAPPED: the replaced block; else -1 */
  uint64_t n_lost;     /* LOST: events dropped; else 0 */
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
  /* Where the library's memory comes from (docs/DESIGN.md, "Memory"):
   * "jemalloc" (the process has jemalloc: a private arena), "system" (the
   * process's malloc + mmap for the KV arena), "libc" (sanitizer builds) or
   * "user" (pkv_replace_allocator). */
  char allocator[16];
  /* Bytes live in the library's private jemalloc arena, for every cache and
   * engine of the process (metadata + KV arenas); 0 for other allocators. */
  uint64_t allocator_bytes;
  uint64_t prefix_probes;     /* pkv_prefix_probe calls (read-only) */
  uint64_t commit_duplicates; /* full blocks whose key was already cached,
                                 cached beside their twin (no dedup) */
  uint64_t remaps;            /* table entries replaced by commit dedup */
  uint32_t blocks_deferred;   /* references held for pkv_blocks_release */
  uint32_t events_queued;     /* in the pull queue now */
  uint64_t events_lost;       /* dropped by a full pull queue */
  uint64_t batch_calls;       /* pkv_batch_append / _free / _commit calls */
  uint64_t range_removals;    /* pkv_seq_remove_range calls that removed */
  uint64_t shift_copied_slots; /* slots copied by those (0 when aligned) */
  uint64_t reserved[6]; /* zero; room for fields without an ABI break */
} pkv_stats;

/* A snapshot of gauges and counters, O(1) (no walk over sequences). */
PKV_API int pkv_stats_get(pkv_cache *cache, pkv_stats *out);

/* Full invariant check, the eviction policy's state included (its victim
 * is a candidate; a version-2 policy's check hook compares its lists with
 * the evictable set).  Returns 0, or PKV_ECORRUPT with the first violation
 * written to msg (NUL-terminated, truncated to msg_cap; msg may be NULL). */
PKV_API int pkv_check(pkv_cache *cache, char *msg, size_t msg_cap);

/* ---------------------------------------------------------------- remote tier */

typedef struct pkv_tier_stats pkv_tier_stats; /* defined with the tiers below */

/* The Redis tier (docs/API.md, "Remote tier"): evicted cached blocks are
 * stored in a Redis server, and a prefix match that runs past the cached
 * blocks fetches the next ones from it, so caches in several processes or
 * machines share prefixes.  Needs libhiredis at run time (loaded when a
 * tier is attached; the library itself does not depend on it). */
typedef struct pkv_redis_opts {
  /* "host:port", "[v6addr]:port", "unix:/path" or "/path" (a Unix socket).
   * Copied; required. */
  const char *address;
  /* Prepended to every key (e.g. "pkv:llama3-8b:" — one per model and
   * K/V layout, since a key names tokens, not a model).  Copied; NULL =
   * "pkv:"; at most 128 bytes. */
  const char *key_prefix;
  uint64_t ttl_ms;      /* expiry of stored blocks; 0 = none */
  uint32_t timeout_ms;  /* connect, and each wait for progress on a command;
                           0 = 250 */
  uint32_t max_batch;   /* blocks per pipelined round trip; 0 = 16 */
  uint32_t version;     /* PKV_REDIS_OPTS_VERSION (pkv_redis_opts_init) */
  uint64_t reserved[8]; /* zero: room for new fields */
} pkv_redis_opts;
#define PKV_REDIS_OPTS_VERSION 1

/* Fills *opts with defaults (no address: the caller must set one). */
PKV_API void pkv_redis_opts_init(pkv_redis_opts *opts);

/* Attaches a Redis tier as the last link of the tier chain (PKV_TIER_REDIS;
 * replacing one attached before), or detaches it when opts is NULL.  From
 * then on a block leaving the tier above it (or the pool, when no host or
 * file tier exists) is stored in Redis (SET with PX ttl_ms, pipelined once
 * per call after the cache lock is released), and a prefix match
 * (pkv_seq_match_prefix, pkv_prefix_promote) promotes the following blocks
 * from Redis like from any tier, installing those that verify (key, parent,
 * namespace, tokens, size, checksum).  Owned storage only (PKV_ENOTSUP in external mode: the library
 * holds no K/V to store).  PKV_EINVAL for a NULL cache, an unparseable
 * address or prefix, or bad reserved bytes; PKV_ENOTSUP when libhiredis
 * cannot be loaded; on failure the cache is unchanged.  An unreachable
 * server is NOT a failure: the tier counts errors, the cache serves from its
 * own blocks, and the tier reconnects (with backoff) on later calls.  Calls
 * on the cache then block for at most about timeout_ms per round trip.
 * Thread-safe (takes the cache lock). */
PKV_API int pkv_cache_set_remote_tier(pkv_cache *cache,
                                      const pkv_redis_opts *opts);

/* The attached remote tier's counters: pkv_tier_stats_get(cache,
 * PKV_TIER_REDIS, out).  PKV_EINVAL (NULL argument), PKV_ENOENT (no remote
 * tier attached). */
PKV_API int pkv_cache_remote_stats(pkv_cache *cache, pkv_tier_stats *out);

/* ---------------------------------------------------------------- serving */
/*
 * What a serving scheduler calls every step (vLLM v1's KVCacheManager maps
 * onto these one to one: get_computed_blocks -> pkv_prefix_probe,
 * allocate_slots -> pkv_seq_append_ex, cache_blocks -> pkv_seq_commit_ex
 * (the blocks a decode step filled: pkv_batch_commit), free -> pkv_seq_free
 * / pkv_batch_free, take_events -> pkv_events_drain,
 * usage -> pkv_cache_capacity, get_num_common_prefix_blocks ->
 * pkv_common_prefix_blocks).  See docs/API.md, "Serving".
 */

/* Read-only prefix probe: the longest run of cached full blocks equal to
 * tokens[0..n_tokens) in the namespace/adapter of opts (NULL = default),
 * capped at max_tokens tokens (0 = no cap; pass n_tokens - 1 to keep one
 * token to compute) and, when blocks is not NULL, at blocks_cap blocks.
 * *hit_tokens = tokens hit (a multiple of block_size); blocks[0..hit/bs) =
 * the cached block ids (may be NULL with blocks_cap 0).
 * Changes nothing: no refcount, no policy hook, no statistic but
 * stats.prefix_probes.  The result is a hint: blocks may be evicted before
 * they are attached (pkv_seq_append_ex then refuses them with PKV_ESTATE).
 * O(hit blocks).  Returns 0 (also for a miss); PKV_EINVAL. */
PKV_API int pkv_prefix_probe(pkv_cache *cache, const pkv_seq_opts *opts,
                             const int32_t *tokens, uint32_t n_tokens,
                             uint32_t max_tokens, int32_t *blocks,
                             uint32_t blocks_cap, uint32_t *hit_tokens);

/* One allocation step of a sequence (in), see pkv_seq_append_ex. */
typedef struct pkv_append {
  /* Token ids, starting at the sequence's known length (position 0 for an
   * empty sequence).  The first n_hit_blocks * block_size of them are the
   * probed hit; the rest are appended.  May be NULL when n_tokens is 0. */
  const int32_t *tokens;
  uint32_t n_tokens;
  /* Slots to reserve past the known tokens without ids (draft tokens): the
   * reserved length becomes max(current, known + n_lookahead). */
  uint32_t n_lookahead;
  /* Empty sequence only: the block ids pkv_prefix_probe returned for
   * tokens[0 .. n_hit_blocks * block_size); attached after verification. */
  const int32_t *hit_blocks;
  uint32_t n_hit_blocks;
  /* NULL, or receives the slot of every position from the first appended
   * known token to known + n_lookahead (n_tokens - hit tokens + n_lookahead
   * entries). */
  int64_t *slots;
  /* NULL (new_cap 0), or receives the ids of the blocks appended. */
  int32_t *new_blocks;
  uint32_t new_cap;
  uint32_t version;     /* PKV_APPEND_VERSION (pkv_append_init); 0 = 1 */
  uint64_t reserved[4]; /* zero: room for new fields */
} pkv_append;
#define PKV_APPEND_VERSION 1

/* Zeroes *req and sets its version (a zero-initialized struct is valid too). */
PKV_API void pkv_append_init(pkv_append *req);

/* What one allocation changed in the table (out): ship this, not tables. */
typedef struct pkv_delta {
  uint32_t first_new; /* table index of the first appended block */
  uint32_t n_new;     /* blocks appended at [first_new, first_new + n_new) */
  int32_t cow_index;  /* table index whose block was replaced by a copy
                         (copy-on-write of a shared/cached tail), or -1 */
  int32_t cow_old, cow_new; /* that entry before and after, -1 if none */
  uint32_t n_known;   /* after the call: slots with known ids */
  uint32_t n_tokens;  /* after the call: reserved slots (known + lookahead) */
} pkv_delta;

/* The general append.  In one all-or-nothing step: attaches the probed hit
 * (empty sequence only; each block is re-verified — still cached, same
 * namespace, parent key and token ids — else PKV_ESTATE, "stale hit"),
 * writes the known token ids (into lookahead slots reserved earlier first,
 * then new slots), then reserves lookahead slots.  Lookahead slots have no
 * ids; a later append fills them in order, pkv_seq_truncate drops them; they
 * are never committed (commit stops at the known length) and never cached.
 * req->new_blocks receives exactly the blocks appended (never the hit), and
 * *delta (may be NULL) the whole change, including a copy-on-write
 * replacement.  Block ids already in the table never change here except by
 * that copy-on-write (only of a partial tail that is shared or cached).
 * Nothing asked (no tokens, lookahead already reserved) is a successful
 * no-op.  Returns 0; PKV_EINVAL (NULL cache/req, tokens NULL with n_tokens
 * > 0, hit_blocks or new_blocks NULL with a count, n_tokens < hit tokens),
 * PKV_ENOSEQ, PKV_ESTATE (hit on a non-empty sequence, or stale hit: nothing
 * attached), PKV_ERANGE (length > INT32_MAX),
 * PKV_ENOSPC (new_cap < blocks needed), PKV_ENOMEM (pool or memory).  On
 * failure nothing changed (outputs untouched).
 * Refcounts: +1 on each hit block (policy on_hit), 1 on each new block, −1
 * old / 1 new for a copied tail. */
PKV_API int pkv_seq_append_ex(pkv_cache *cache, pkv_seq_id seq,
                              const pkv_append *req, pkv_delta *delta);

/* pkv_seq_commit_ex flags (override PKV_CACHE_COMMIT_DEDUP per call). */
#define PKV_COMMIT_DEDUP 0x1u       /* deduplicate this commit */
#define PKV_COMMIT_NO_DEDUP 0x2u    /* never (stable table) */
#define PKV_COMMIT_RELEASE_NOW 0x4u /* drop a replaced block's reference at
                                       once instead of deferring it */

typedef struct pkv_remap {
  uint32_t index;    /* table index */
  int32_t old_block; /* deferred: release with pkv_blocks_release */
  int32_t new_block; /* the cached block now at index */
} pkv_remap;

/* Commit with an explicit dedup choice.  Without dedup the table never
 * changes.  With dedup each newly full block whose key is already cached is
 * replaced by the cached block; each replacement is emitted as
 * PKV_EVENT_REMAPPED and, when remaps is not NULL, written to
 * remaps[0..*n_remaps) (n_remaps may be NULL only with remaps NULL).  The
 * replaced block keeps one deferred reference — the device may still read
 * it — until pkv_blocks_release, unless PKV_COMMIT_RELEASE_NOW.
 * Returns 0; PKV_EINVAL (NULL cache, unknown or contradictory flags, NULL
 * remaps with cap > 0), PKV_ENOSEQ, PKV_ERANGE (n_tokens past the known
 * length, or before the committed length), PKV_ENOSPC (remaps given and
 * remaps_cap below the number of blocks this commit makes full, which bounds
 * the remaps; nothing changed). */
PKV_API int pkv_seq_commit_ex(pkv_cache *cache, pkv_seq_id seq,
                              uint32_t n_tokens, uint32_t flags,
                              pkv_remap *remaps, uint32_t remaps_cap,
                              uint32_t *n_remaps);

/* Drops the deferred reference of each block (one per occurrence) that a
 * dedup remap left behind: call once the device no longer reads them.  All
 * or nothing: PKV_ENOENT if a block holds fewer deferred references than it
 * occurs in the list (nothing released); PKV_EINVAL. */
PKV_API int pkv_blocks_release(pkv_cache *cache, const int32_t *blocks,
                               uint32_t n_blocks);

/* Result of one sequence in a batch call. */
typedef enum pkv_step_change {
  PKV_STEP_NONE = 0,     /* the slot is in the existing tail block */
  PKV_STEP_APPENDED = 1, /* `block` was appended at `index` */
  PKV_STEP_COPIED = 2    /* `block` (a copy) replaced `replaced` at `index` */
} pkv_step_change;

typedef struct pkv_step_result {
  int32_t rc;         /* 0 or this sequence's PKV_E* (it is unchanged) */
  uint32_t change;    /* pkv_step_change */
  uint32_t index;     /* table index of the block holding the new slot */
  int32_t block;      /* that block (-1 on failure) */
  int32_t replaced;   /* PKV_STEP_COPIED: the old block; else -1 */
} pkv_step_result;

/* One decode step: appends one slot to each of seqs[0..n_seqs) — with id
 * tokens[i], or, when tokens is NULL, one lookahead slot — under one lock.
 * Each sequence is all-or-nothing on its own: results[i] (may be NULL) says
 * what happened to seqs[i], slots[i] (may be NULL) gets its slot (-1 on
 * failure).  Returns 0 if every sequence succeeded; otherwise the code of
 * the first failure — and, unlike every other call, the sequences that
 * succeeded did change (each sequence is its own call).  PKV_EINVAL (NULL
 * cache, NULL seqs with n_seqs > 0) changes nothing.  A sequence named twice
 * gets two slots.  Refcounts as pkv_seq_append. */
PKV_API int pkv_batch_append(pkv_cache *cache, const pkv_seq_id *seqs,
                             const int32_t *tokens, uint32_t n_seqs,
                             int64_t *slots, pkv_step_result *results);

/* Frees each of seqs[0..n_seqs) as pkv_seq_free; results[i] (may be NULL)
 * = 0 or PKV_ENOSEQ.  Returns 0 if all were freed, else the first error
 * (the valid ones were freed).  PKV_EINVAL changes nothing. */
PKV_API int pkv_batch_free(pkv_cache *cache, const pkv_seq_id *seqs,
                           uint32_t n_seqs, int32_t *results);

/* Commits each seqs[i] to n_tokens[i] as pkv_seq_commit (the cache's dedup
 * setting, no remap list), under one lock; results[i] (may be NULL) = 0 or
 * that sequence's code (PKV_ENOSEQ, PKV_ERANGE; it is unchanged).  Returns
 * 0 if all succeeded, else the first error — the others were committed, in
 * order (a sequence named twice is committed twice).  PKV_EINVAL (NULL
 * cache, NULL seqs or n_tokens with n_seqs > 0) changes nothing. */
PKV_API int pkv_batch_commit(pkv_cache *cache, const pkv_seq_id *seqs,
                             const uint32_t *n_tokens, uint32_t n_seqs,
                             int32_t *results);

/* Moves up to cap queued events into out, oldest first (the pull queue,
 * config.event_queue_cap); *n_out = how many, *pending (may be NULL) = how
 * many remain.  Gap-free: seqnos are consecutive across drains.  When the
 * queue is full, new events are dropped and counted until everything queued
 * has been drained; that drain then ends with one PKV_EVENT_LOST whose
 * seqno is the first lost one and n_lost the count.  Pulled events carry
 * ns = NULL.  Returns 0; PKV_EINVAL (NULL cache/n_out, NULL out with
 * cap > 0), PKV_ENOTSUP (no queue configured). */
PKV_API int pkv_events_drain(pkv_cache *cache, pkv_event *out, uint32_t cap,
                             uint32_t *n_out, uint32_t *pending);

typedef struct pkv_capacity {
  uint32_t num_blocks;
  uint32_t free;      /* on the free list */
  uint32_t evictable; /* cached, refcount 0: free on demand */
  uint32_t in_use;    /* refcount > 0 (tables, pins, deferred) */
  uint32_t cached;    /* in the prefix index (used or not) */
  uint32_t deferred;  /* references awaiting pkv_blocks_release */
  double usage;       /* in_use / num_blocks (cached-but-unused is free) */
} pkv_capacity;

/* Pool occupancy in O(1) (maintained counters).  Returns 0; PKV_EINVAL. */
PKV_API int pkv_cache_capacity(pkv_cache *cache, pkv_capacity *out);

/* Evicts n_blocks evictable blocks now (the policy chooses; REMOVED events;
 * they become free).  Returns 0; PKV_EINVAL; PKV_ERANGE if fewer than
 * n_blocks are evictable (nothing evicted). */
PKV_API int pkv_evict(pkv_cache *cache, uint32_t n_blocks);

/* *n_common = the number of leading table entries equal in every one of
 * seqs[0..n_seqs) (the shared prefix a cascade attention kernel reads
 * once).  0 for n_seqs 0.  O(n_seqs * n_common).  Returns 0; PKV_EINVAL,
 * PKV_ENOSEQ.  Read-only. */
PKV_API int pkv_common_prefix_blocks(pkv_cache *cache, const pkv_seq_id *seqs,
                                     uint32_t n_seqs, uint32_t *n_common);

/* ---------------------------------------------------------------- tiers */
/*
 * Stores below the block pool (docs/MANAGER.md, "Tiers").  A cached block
 * the policy evicts is demoted to the first tier configured (host memory,
 * then a file directory, then a remote store); a tier that fills passes its
 * own victims one tier down.  pkv_seq_match_prefix, where the cached run
 * ends, looks the following blocks up in the tiers (key, parent, namespace,
 * token ids and checksum all verified) and promotes the run it finds back
 * into pool blocks — all of it or none — before reporting the hit.
 * pkv_prefix_probe reports pool hits only (it changes nothing): the serving
 * path calls pkv_prefix_promote first.
 */
#define PKV_TIER_HOST 0  /* host memory (config.host_tier_bytes) */
#define PKV_TIER_FILE 1  /* a directory (pkv_cache_set_file_tier) */
#define PKV_TIER_REDIS 2 /* a remote store shared by servers */
#define PKV_TIER_MAX 3

typedef struct pkv_tier_stats {
  char name[16];        /* "host", "file", "redis" */
  uint64_t puts;        /* blocks stored */
  uint64_t put_bytes;   /* bytes stored (K/V + token ids) */
  uint64_t gets;        /* blocks looked up with payload */
  uint64_t hits;        /* ... found and verified */
  uint64_t misses;      /* ... absent (errors included) */
  uint64_t errors;      /* corrupt, short or foreign data, failed I/O: each a
                           miss, never data */
  uint64_t evictions;   /* blocks the tier dropped (or passed down) to
                           make room */
  uint64_t bytes_used;  /* bytes held now */
  uint64_t capacity_bytes;
  uint64_t blocks;      /* blocks held now */
  uint64_t promotions;  /* blocks promoted from this tier into the pool */
  uint64_t skipped;     /* puts refused (too large, write failed) */
  uint64_t reserved[4];
} pkv_tier_stats;

/* Statistics of tier `tier` (PKV_TIER_*).  Returns 0; PKV_EINVAL (NULL
 * cache or out, tier >= PKV_TIER_MAX), PKV_ENOENT (that tier is not
 * configured).  Read-only. */
PKV_API int pkv_tier_stats_get(pkv_cache *cache, uint32_t tier,
                               pkv_tier_stats *out);

/* The serving path's promotion (pkv_prefix_probe reports pool hits only):
 * where the pool's cached run for tokens (in the namespace of opts, NULL =
 * default; capped at max_tokens, 0 = no cap) ends, promotes the run of
 * blocks the tiers hold — all of it or none, each verified — into pool
 * blocks left cached and evictable (STORED, PROMOTED), so a pkv_prefix_probe
 * right after reports them and pkv_seq_append_ex attaches them.
 * *promoted_tokens = tokens promoted (a multiple of block_size; 0 without
 * tiers or when nothing fits).  Making room may evict (and demote) other
 * blocks.  Returns 0; PKV_EINVAL (NULL cache or promoted_tokens, NULL tokens
 * with n_tokens > 0, NULL ns bytes with a length), PKV_ENOMEM (nothing
 * promoted). */
PKV_API int pkv_prefix_promote(pkv_cache *cache, const pkv_seq_opts *opts,
                               const int32_t *tokens, uint32_t n_tokens,
                               uint32_t max_tokens, uint32_t *promoted_tokens);

/* Adds a file tier: blocks below the host tier (or directly below the pool
 * without one) are kept as one file each in dir (created if absent; files
 * already there from an earlier run of the same shape serve hits), at most
 * max_bytes of them (0 = no limit), oldest dropped first.  Each file carries
 * the block's chained key, parent key, namespace digest, token ids and an
 * XXH3-64 checksum; a read verifies all of them and a short, corrupt or
 * foreign file is a miss and a counted error, never data.  Files are written
 * to a temporary name and renamed.  Owned storage only (PKV_ENOTSUP in
 * external mode).  Once per cache: PKV_ESTATE if a file tier exists.
 * Returns 0; PKV_EINVAL (NULL cache or dir, empty dir), PKV_ENOENT (dir
 * cannot be created or opened: pkv_last_error says why), PKV_ENOMEM.
 * Nothing changes on failure. */
PKV_API int pkv_cache_set_file_tier(pkv_cache *cache, const char *dir,
                                    uint64_t max_bytes);

/* External storage: a copy between a pool block (caller memory) and a
 * host-tier slot (caller memory too) that the caller performs. */
typedef enum pkv_tier_copy_op {
  PKV_TIER_COPY_DEMOTE = 1,  /* pool `block` -> host slot `slot` */
  PKV_TIER_COPY_PROMOTE = 2  /* host slot `slot` -> pool `block` */
} pkv_tier_copy_op;
typedef struct pkv_tier_copy {
  uint32_t op;    /* pkv_tier_copy_op */
  int32_t block;  /* pool block (all layers, K and V, every slot) */
  uint32_t slot;  /* host slot: slot * block bytes into the caller's host
                     buffer of config.host_tier_bytes */
  uint32_t tier;  /* PKV_TIER_HOST */
} pkv_tier_copy;

/* External mode: moves up to cap queued tier copies into out, oldest first;
 * *n_out = how many, *pending (may be NULL) = how many remain.  The caller
 * performs them in order, before any kernel writes a block handed out by
 * the call that queued them (a demoted block is free again at once: the
 * copy must read it before its new owner writes it).  Returns 0;
 * PKV_EINVAL (NULL cache or n_out, NULL out with cap > 0). */
PKV_API int pkv_tier_drain_copies(pkv_cache *cache, pkv_tier_copy *out,
                                  uint32_t cap, uint32_t *n_out,
                                  uint32_t *pending);

/* ---------------------------------------------------------------- save */
/*
 * Save / restore (docs/MANAGER.md, "Save and restore").  A save writes a new
 * generation directory under dir (every file and the directory fsynced),
 * then atomically renames a manifest naming it, then removes the old
 * generation: a process killed at any point leaves the previous or the new
 * state loadable, never a mix.  Owned storage only (PKV_ENOTSUP otherwise).
 */

/* Saves every cached block (key chain, namespace, token ids, K/V) to dir
 * (created if absent).  Returns 0; PKV_EINVAL (NULL cache or dir),
 * PKV_ENOTSUP (external storage), PKV_ENOENT (dir unusable), PKV_ENOSPC
 * (a write failed: disk full, quota), PKV_ENOMEM.  The cache is unchanged
 * either way; a failed save leaves the previous save loadable. */
PKV_API int pkv_cache_save(pkv_cache *cache, const char *dir);
/* The same for the committed full blocks of one sequence (PKV_ENOSEQ for a
 * bad handle). */
PKV_API int pkv_seq_save(pkv_cache *cache, pkv_seq_id seq, const char *dir);
/* Loads a save into cache as cached, evictable blocks (parents first; it
 * stops when no free or evictable pool block remains; blocks already cached
 * are skipped).  The shape must match: a different block_size, n_layers,
 * n_kv_heads, head_dim, v_head_dim or dtype is PKV_EINVAL naming the field,
 * nothing loaded.  Every block is verified (checksum, key recomputed from
 * parent, namespace and tokens) before any is loaded: a corrupt or truncated
 * save is PKV_ECORRUPT, nothing loaded.  Returns 0; PKV_EINVAL, PKV_ENOTSUP
 * (external storage), PKV_ENOENT (no save in dir), PKV_ECORRUPT,
 * PKV_ENOMEM. */
PKV_API int pkv_cache_load(pkv_cache *cache, const char *dir);

/* ---------------------------------------------------------------- quotas */

/* Namespace quota (docs/MANAGER.md, "Namespace quotas").  ns names the
 * namespace as pkv_seq_create does (its ns bytes and adapter_id; NULL = the
 * default namespace).  A namespace's usage is its blocks in the prefix
 * index (in use or evictable) plus the blocks its live sequences hold
 * outside it (uncommitted tails).  Eviction takes from namespaces over their
 * cap first, and never evicts a namespace's block when that would bring it
 * below reserve_blocks: an allocation that could only be served by doing so
 * fails with PKV_ENOMEM, nothing changed.  cap_blocks 0 = no cap; cap 0
 * and reserve 0 removes the quota.  Returns 0; PKV_EINVAL (NULL cache, cap
 * below reserve, reserve above num_blocks, ns bytes NULL with a length),
 * PKV_ENOMEM (table), PKV_ERANGE (the reservations together would exceed
 * num_blocks).  Takes effect at once: a namespace already over its cap is
 * evicted from first. */
PKV_API int pkv_ns_set_quota(pkv_cache *cache, const pkv_seq_opts *ns,
                             uint32_t cap_blocks, uint32_t reserve_blocks);

/* ---------------------------------------------------------------- allocator */

/* Replaces the allocator the library uses for host metadata (not thread-safe;
 * call before any cache exists).  All four must be given, or all NULL to
 * restore the default (jemalloc's private arena when the process has
 * jemalloc, else the process's malloc and mmap; docs/DESIGN.md "Memory"). */
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
