/*
 * tier.h — the interface of a store below the block pool (internal, not
 * installed).  The host tier, the file tier and the Redis tier implement it;
 * the cache talks to every tier through these ops only.
 *
 * A block travels with its identity (chained key, parent key, namespace
 * digest, token ids) so that a store can prove on the way back that what it
 * returns is the block that was asked for: get() sets found[i] only when
 * every part of the identity and the XXH3-64 checksum over tokens + kv
 * verify; anything else is a miss and a counted error, never data.
 */
#ifndef PKV_TIER_H
#define PKV_TIER_H

#include <stddef.h>
#include <stdint.h>

#include "pagedkv/pagedkv.h"

typedef struct pkv__tier pkv__tier;      /* a store below the block pool */
typedef struct pkv__tier_block {         /* one block's identity + payload */
  pkv_hash128 key, parent;               /* chained key, as in the index */
  uint32_t ns_id_hash;                   /* namespace digest (32-bit fold) */
  uint32_t ntok;                         /* tokens in the block (= block_size) */
  const int32_t *tokens;                 /* ntok token ids */
  void *kv;                              /* kv_bytes: all layers' K and V */
  size_t kv_bytes;
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
} pkv__tier_ops;
struct pkv__tier { const pkv__tier_ops *ops; };  /* implementations embed it first */

#endif /* PKV_TIER_H */
