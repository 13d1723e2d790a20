/*
 * tier.h — stores below the block pool (internal, not installed).
 *
 *   pool (device / arena) ──evict──► host ──full──► file ──► redis
 *        ▲                             │              │         │
 *        └──────── promote on a prefix match (verified) ─────────┘
 *
 * A tier holds blocks by chained key: payload = all layers' K and V of one
 * block (the arena's 2 * n_layers region chunks of block_stride bytes, in
 * region order) plus its token ids.  Every implementation verifies what it
 * returns (key, parent, namespace, tokens, XXH3-64 of tokens + kv): a wrong
 * or damaged block costs a miss, counted, never data.
 *
 * tier.c owns the chain (cache->tiers): demotion from evict.c, promotion
 * from prefix.c, per-tier stats, the external-mode copy queue.  host.c,
 * file.c (and redis.c) implement pkv__tier_ops.  save.c writes and loads
 * whole caches; quota.c keeps namespace quotas.  The cache lock is held in
 * every function here, except across the Redis round trips of
 * pkv__tier_promote_remote (tier.c), which releases and retakes it.
 */
#ifndef PKV_TIER_H
#define PKV_TIER_H

#include "core.h"

typedef struct pkv__tier pkv__tier;      /* a store below the block pool */
typedef struct pkv__tier_block {         /* one block's identity + payload */
  pkv_hash128 key, parent;               /* chained key, as in the index */
  uint32_t ns_id_hash;                   /* namespace digest (32-bit fold) */
  uint32_t ntok;                         /* tokens in the block (= block_size) */
  const int32_t *tokens;                 /* ntok token ids */
  void *kv;                              /* kv_bytes: all layers' K and V */
  size_t kv_bytes;
  /* get into a pool block in place (redis only; host and file take a
   * contiguous kv): with kv_chunks > 1 the K/V lands as kv_chunks equal
   * pieces, piece r at kv + r * kv_stride (the arena's regions). */
  uint32_t kv_chunks;
  size_t kv_stride;
} pkv__tier_block;
typedef struct pkv__tier_ops {
  const char *name;                      /* "host", "file", "redis" */
  /* Store n blocks (best effort: a block that does not fit is skipped and
   * counted).  Returns PKV_OK or an error code for a failure of the store. */
  int (*put)(pkv__tier *t, const pkv__tier_block *b, size_t n);
  /* Fetch n blocks in one round trip into b[i].kv; found[i] = 1 only when
   * the stored key, parent, ns, tokens AND checksum all verify; anything
   * else (absent, short, corrupt, foreign) is found[i] = 0 and counted. */
  int (*get)(pkv__tier *t, pkv__tier_block *b, size_t n, uint8_t *found);
  int (*contains)(pkv__tier *t, const pkv__tier_block *b); /* 1/0, no payload */
  void (*stats)(pkv__tier *t, pkv_tier_stats *out);       /* public struct */
  void (*destroy)(pkv__tier *t);
  /* Optional (NULL: ask contains one block at a time): yes[i] = contains
   * of b[i], all n in one round trip (redis: pipelined STRLEN). */
  void (*contains_n)(pkv__tier *t, const pkv__tier_block *b, size_t n,
                     uint8_t *yes);
} pkv__tier_ops;
struct pkv__tier { const pkv__tier_ops *ops; };  /* implementations embed it first */

/* The checksum every tier stores: XXH3-64 over tokens then kv. */
uint64_t pkv__tier_checksum(const int32_t *tokens, uint32_t ntok,
                            const void *kv, size_t kv_bytes);
/* The 32-bit fold of a namespace digest (ns_id_hash). */
static inline uint32_t pkv__ns_fold(pkv_hash128 d) {
  uint64_t x = d.lo ^ d.hi;
  return (uint32_t)(x ^ (x >> 32));
}

/* Little-endian fields of the on-disk formats (file.c, save.c). */
static inline void pkv__put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void pkv__put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t pkv__get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static inline uint64_t pkv__get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* ------------------------------------------------ the chain (tier.c) */

/* Opens the tiers the config asks for (host).  PKV_E* with the error set. */
int pkv__tiers_open(pkv_cache *c);
void pkv__tiers_close(pkv_cache *c);
/* Installs t as tier `index` (PKV_TIER_*); the chain owns it from then on
 * (destroy).  PKV_ESTATE if that tier exists. */
int pkv__tier_attach(pkv_cache *c, unsigned index, pkv__tier *t);
/* The Redis link's attach: replaces tier `index` with t (NULL = none); the
 * old one is closed (pkv__remote_detach) and kept until the chain closes. */
int pkv__tier_replace(pkv_cache *c, unsigned index, pkv__tier *t);
/* seq.c: s (empty) matched blocks [0, k) of tokens (already referenced
 * in its table); looks blocks k.. want-1 up in the local tiers (host,
 * file: no network) and promotes the run found, all or none.  Returns the
 * new k.  pkv__tier_promote_remote (core.h) goes on from Redis. */
uint32_t pkv__tier_promote(pkv_cache *c, pkv__seq *s, const int32_t *tokens,
                           uint32_t k, uint32_t want);
/* Whether any tier is configured (inline check for the hooks). */
static inline bool pkv__tiers_on(const pkv_cache *c) { return c->tiers != NULL; }

/* Bytes of one block's K/V over all layers (= pkv_config_block_bytes). */
static inline size_t pkv__tier_kv_bytes(const pkv_cache *c) {
  return 2 * (size_t)c->cfg.n_layers * c->layout.block_stride;
}
/* Gathers pool block b's K/V (owned mode) into kv (kv_bytes), and back. */
void pkv__tier_gather(const pkv_cache *c, int32_t b, void *kv);
void pkv__tier_scatter(pkv_cache *c, int32_t b, const void *kv);

/* ------------------------------------------------ implementations */

/* host.c: a host tier of max_bytes for blocks of kv_bytes, ordered by the
 * built-in policy `policy` (NULL = lru); payload stored unless external
 * (metadata only: the caller keeps the bytes, see pkv_tier_copy).  Blocks it
 * evicts go to *below (may be NULL) when it is set. */
int pkv__host_create(size_t kv_bytes, uint32_t block_size, uint64_t max_bytes,
                     const char *policy, bool external, pkv__tier **out);
void pkv__host_set_below(pkv__tier *host, pkv__tier **below);
/* External mode: store b's metadata, returning its slot (or -1: too small);
 * find a verified block and take it out, returning its slot (or -1). */
int32_t pkv__host_put_slot(pkv__tier *host, const pkv__tier_block *b);
int32_t pkv__host_take_slot(pkv__tier *host, const pkv__tier_block *b);
/* Owned mode: the same as get + removal (promotion moves a block up). */
int pkv__host_take(pkv__tier *host, pkv__tier_block *b);
void pkv__host_count_promotion(pkv__tier *t, uint64_t n);

/* file.c: blocks it drops to keep max_bytes go to *below (may be NULL). */
int pkv__file_create(const char *dir, size_t kv_bytes, uint32_t block_size,
                     uint64_t max_bytes, pkv__tier **out);
void pkv__file_set_below(pkv__tier *file, pkv__tier **below);
void pkv__file_count_promotion(pkv__tier *t, uint64_t n);

/* remote.c: the Redis link (pkv_cache_set_remote_tier) around a redis.c
 * store made from opts; pkv__remote_flush(link) sends the queued puts
 * (c->up_flush, called with no lock held). */
int pkv__remote_create(const pkv_redis_opts *opts, uint32_t block_size,
                       size_t kv_bytes, pkv__tier **out);
void pkv__remote_flush(void *link);
uint32_t pkv__remote_max_batch(pkv__tier *t);
void pkv__remote_count_promotion(pkv__tier *t, uint64_t n);
void pkv__remote_detach(pkv__tier *t); /* flush, close the store */

/* ------------------------------------------------ block records (file.c)
 * One block as a byte record, shared by the file tier and save files:
 *   magic "PKVB" u32 version u32 ntok u64 kv_bytes
 *   key.lo key.hi parent.lo parent.hi u32 ns_id_hash u32 depth
 *   u64 checksum (XXH3-64 of tokens then kv)
 *   tokens[ntok] (i32) kv[kv_bytes]
 * all little-endian; 80-byte header (checksum at 64). */
#define PKV__REC_HEADER 80u
size_t pkv__rec_size(uint32_t ntok, size_t kv_bytes);
void pkv__rec_header(uint8_t *h, const pkv__tier_block *b, uint32_t depth,
                     uint64_t checksum);
/* Parses and checks a header against the expected shape; 0 or a static
 * reason ("bad magic", ...) in *why. */
int pkv__rec_parse(const uint8_t *h, uint32_t ntok, size_t kv_bytes,
                   pkv__tier_block *b, uint32_t *depth, uint64_t *checksum,
                   const char **why);
/* Creates dir (mode 0755) if absent and opens it (O_DIRECTORY), checking
 * that it is writable when asked; `who` starts the messages ("save").
 * The fd, or -1 with PKV_ENOENT and the system's reason set. */
int pkv__dir_open(const char *dir, const char *who, bool writable);
/* Writes all of buf to fd (retrying short writes); 0 or errno. */
int pkv__write_all(int fd, const void *buf, size_t n);
/* Reads exactly n bytes; 0, or -1 for a short read, or errno. */
int pkv__read_all(int fd, void *buf, size_t n);

/* ------------------------------------------------ quotas (quota.c) */
/* Its hooks are c->quota_up (core.h); pkv__quota_destroy and
 * pkv__quota_is_valid are declared in core.h. */

#endif /* PKV_TIER_H */
