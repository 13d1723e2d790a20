/*
 * policy/fw.h — the frequency-weighted LRU machinery (policy/fwlru.c),
 * shared by "fwlru" (fixed weights) and "adaptive" (policy/adaptive.c,
 * which switches the weights online).  Internal to the library.
 */
#ifndef PKV_POLICY_FW_H
#define PKV_POLICY_FW_H

#include "policy/util.h"

#define FW_CLASSES 8
#define FW_MAX_USES 255
/* How far up the chain one hook lifts counts: each released block lifts its
 * own ancestors, so a few levels reach every block of a chain whichever
 * order the manager releases it in, and the hook stays O(1). */
#define FW_LIFT_LEVELS 8

enum { FW_ABSENT = 0, FW_IN_USE = 1, FW_EVICTABLE = 2 };

/* Everything the policy keeps of a block, in one cache line: a hook that
 * touches a block (and the policy touches several per eviction on a pool
 * far larger than the caches) pays one miss, not one per array. */
typedef struct fw_rec {
  pkv_hash128 key, parent;
  uint64_t stamp;   /* clock at release */
  int32_t prev, next; /* class list links (pkv__bnodes, shift 4) */
  int32_t pblock;   /* parent's id when last found; checked before use */
  uint8_t where;    /* FW_* */
  uint8_t uses;     /* 1..FW_MAX_USES, history included */
  uint8_t cls;      /* class while evictable */
  uint8_t pad[9];
} fw_rec;
_Static_assert(sizeof(fw_rec) == 64, "fw_rec is one cache line (and "
               "nodes.shift = 4 assumes 16 int32_t per record)");

typedef struct fw_state {
  double inv_weight[FW_CLASSES]; /* 1 / weight: choose_victim multiplies */
  uint64_t clock;        /* releases so far */
  int32_t last_released; /* for chain placement; may be stale */
  uint32_t num_blocks;
  fw_rec *rec;           /* num_blocks records, 64-byte aligned */
  void *rec_raw;         /* what was allocated */
  pkv__bnodes nodes;     /* rec[].prev / rec[].next */
  pkv__blist q[FW_CLASSES];
  pkv__ghost hist;
  pkv__kmap blocks; /* key -> block, to find a block's parent */
} fw_state;

/* Sets up st (zeroed by the caller) for num_blocks blocks with weights
 * (p, cold) and a ghost of hist * num_blocks keys.  false on allocation
 * failure (call pkv__fw_fini all the same). */
bool pkv__fw_init(fw_state *st, uint32_t num_blocks, double p, double cold,
                  double hist);
void pkv__fw_fini(fw_state *st);
/* Class weights: w[k] = (k+1)^p, times cold for blocks used once. */
void pkv__fw_weights(double inv_weight[FW_CLASSES], double p, double cold);
/* The class head maximising (clock - stamp + 1) * inv_weight[class] over
 * the non-empty lists q[0..FW_CLASSES), or PKV__NIL.  Block b's stamp is
 * stamp0[b << shift] (records of 8 << shift bytes). */
int32_t pkv__fw_pick(const pkv__blist q[FW_CLASSES],
                     const double inv_weight[FW_CLASSES], uint64_t clock,
                     const uint64_t *stamp0, uint32_t shift);
/* The hooks, on a fw_state (create and destroy stay in policy/fwlru.c). */
void pkv__fw_on_insert(void *state, int32_t block, const pkv_block_meta *meta);
void pkv__fw_on_hit(void *state, int32_t block, const pkv_block_meta *meta);
void pkv__fw_on_evictable(void *state, int32_t block,
                          const pkv_block_meta *meta);
void pkv__fw_on_pinned(void *state, int32_t block, const pkv_block_meta *meta);
int32_t pkv__fw_choose_victim(void *state, uint64_t now);
void pkv__fw_on_remove(void *state, int32_t block);
/* The check hook (pkv_policy_ops.check): every class list well formed,
 * holding exactly the evictable blocks. */
int pkv__fw_check(const void *state, const uint8_t *evictable,
                  uint32_t num_blocks, char *msg, size_t cap);

#endif /* PKV_POLICY_FW_H */
