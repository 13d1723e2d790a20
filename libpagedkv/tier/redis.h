/*
 * tier/redis.h — the Redis tier's constructor and its detailed counters
 * (internal; the cache attaches it through pkv_cache_set_remote_tier, tests
 * and the benchmark use it directly).
 */
#ifndef PKV_TIER_REDIS_H
#define PKV_TIER_REDIS_H

#include "tier/tier.h"

/* Creates a Redis tier from opts (the caller's layout: read through the
 * versioned-struct rules).  Does not connect: the first call does, and an
 * unreachable server is counted, not refused.  PKV_EINVAL (bad address,
 * prefix or reserved bytes), PKV_ENOTSUP (libhiredis not loadable),
 * PKV_ENOMEM. */
int pkv__redis_tier_create(const pkv_redis_opts *opts, pkv__tier **out);

/* Why things failed, beyond pkv_tier_stats.errors. */
typedef struct pkv__redis_counters {
  uint64_t connects;          /* connections made */
  uint64_t connect_failures;  /* attempts that failed (refused, timed out) */
  uint64_t io_failures;       /* round trips cut by an I/O error or timeout */
  uint64_t skipped_calls;     /* calls refused at once during the backoff */
  uint64_t wrong_size;        /* values of the wrong length */
  uint64_t foreign;           /* values of another block (key, parent, ns,
                                 tokens differ) */
  uint64_t corrupt;           /* bad magic/version or checksum */
  uint64_t error_replies;     /* the server answered with an error */
  uint64_t bytes_read;        /* reply bytes received */
} pkv__redis_counters;
void pkv__redis_counters_get(pkv__tier *t, pkv__redis_counters *out);

/* The stored value: this header (little-endian), then ntok int32 token ids,
 * then kv_bytes of K/V.  The checksum is XXH3-64 over tokens + kv. */
#define PKV__REDIS_MAGIC 0x524b5650u /* "PVKR" read as bytes */
#define PKV__REDIS_FORMAT 1u
#define PKV__REDIS_HDR 64u
/* The key under which block b is stored (NUL-terminated); returns its
 * length, or 0 if cap is too small. */
size_t pkv__redis_key(pkv__tier *t, const pkv__tier_block *b, char *out,
                      size_t cap);
/* Serializes b's header into hdr[PKV__REDIS_HDR] (checksum computed). */
void pkv__redis_header(const pkv__tier_block *b, uint8_t *hdr);

#endif /* PKV_TIER_REDIS_H */
