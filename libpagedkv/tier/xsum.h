/*
 * tier/xsum.h — the tiers' checksum, XXH3-64, on the widest vector path the
 * CPU runs (internal).
 *
 * libxxhash as Debian builds it takes the baseline SSE2 path: about 8 GB/s
 * here, a quarter of a 2 MiB put's time in the Redis tier.  The same
 * function compiled for AVX2 (xsum_avx2.c, xxhash's header inlined) runs at
 * 25-30 GB/s.  XXH3's result does not depend on the path: values written by
 * either verify under the other (check_redis: xsum_paths).
 */
#ifndef PKV_TIER_XSUM_H
#define PKV_TIER_XSUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Streaming state (an XXH3_state_t of either path, which one is chosen once
 * per process); reset before use. */
typedef struct pkv__xsum {
  _Alignas(64) unsigned char s[640];
} pkv__xsum;

void pkv__xsum_reset(pkv__xsum *st);
void pkv__xsum_update(pkv__xsum *st, const void *p, size_t n);
uint64_t pkv__xsum_digest(const pkv__xsum *st);

/* XXH3-64 of one buffer (the same digest as reset + update + digest). */
uint64_t pkv__xsum64(const void *p, size_t n);

/* Whether the AVX2 path is in use (the CPU has AVX2). */
bool pkv__xsum_avx2(void);

/* The AVX2 path itself (xsum_avx2.c; call only when the CPU has AVX2). */
void pkv__xsum_reset_avx2(pkv__xsum *st);
void pkv__xsum_update_avx2(pkv__xsum *st, const void *p, size_t n);
uint64_t pkv__xsum_digest_avx2(const pkv__xsum *st);
/* The baseline path (libxxhash), whatever the CPU. */
void pkv__xsum_reset_base(pkv__xsum *st);
void pkv__xsum_update_base(pkv__xsum *st, const void *p, size_t n);
uint64_t pkv__xsum_digest_base(const pkv__xsum *st);

#endif /* PKV_TIER_XSUM_H */
