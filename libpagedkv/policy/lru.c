/*
 * policy/lru.c — least recently released first (the default policy).
 *
 * One intrusive list holds the evictable blocks in the order they became
 * evictable: on_evictable pushes at the tail, choose_victim reads the head,
 * on_pinned and on_remove unlink.  "Recently used" means recently released:
 * a block in use cannot be evicted anyway, and its last use ends when its
 * refcount falls to 0.  So when a sequence is freed, the order in which the
 * manager releases its blocks decides which goes first; releasing the tail
 * of a chain first (as vLLM does) makes the chain's deep blocks go before
 * its root.
 *
 * Every hook is O(1); state is three per-block arrays.
 */
#include "policy/util.h"

enum { LRU_ABSENT = 0, LRU_IN_USE = 1, LRU_EVICTABLE = 2 };

typedef struct lru_state {
  uint32_t num_blocks;
  uint8_t *where; /* LRU_* per block */
  pkv__bnodes nodes;
  pkv__blist evictable;
} lru_state;

static int lru_create(void **out, uint32_t num_blocks, const char *args) {
  int rc;
  lru_state *st = pkv__policy_state_new("lru", out, num_blocks, args,
                                        NULL, 0, sizeof *st, &rc);
  if (!st) return rc;
  st->num_blocks = num_blocks;
  st->where = pkv__calloc(num_blocks, 1);
  if (!st->where || !pkv__bnodes_alloc(&st->nodes, num_blocks)) {
    pkv__free(st->where);
    pkv__free(st);
    return pkv__err(PKV_ENOMEM, "policy lru: %u-block arrays", num_blocks);
  }
  pkv__blist_init(&st->evictable);
  *out = st;
  return 0;
}

static void lru_destroy(void *state) {
  lru_state *st = state;
  if (!st) return;
  pkv__bnodes_free(&st->nodes);
  pkv__free(st->where);
  pkv__free(st);
}

static void lru_on_insert(void *state, int32_t block,
                          const pkv_block_meta *meta) {
  (void)meta;
  lru_state *st = state;
  st->where[block] = LRU_IN_USE;
}

static void lru_on_hit(void *state, int32_t block,
                       const pkv_block_meta *meta) {
  (void)state, (void)block, (void)meta; /* recency counts from release */
}

static void lru_on_evictable(void *state, int32_t block,
                             const pkv_block_meta *meta) {
  (void)meta;
  lru_state *st = state;
  if (st->where[block] == LRU_EVICTABLE)
    pkv__blist_unlink(&st->evictable, &st->nodes, block);
  pkv__blist_push_tail(&st->evictable, &st->nodes, block);
  st->where[block] = LRU_EVICTABLE;
}

static void lru_on_pinned(void *state, int32_t block,
                          const pkv_block_meta *meta) {
  (void)meta;
  lru_state *st = state;
  if (st->where[block] == LRU_EVICTABLE)
    pkv__blist_unlink(&st->evictable, &st->nodes, block);
  st->where[block] = LRU_IN_USE;
}

static int32_t lru_choose_victim(void *state, uint64_t now) {
  (void)now;
  const lru_state *st = state;
  return st->evictable.head;
}

static void lru_on_remove(void *state, int32_t block) {
  lru_state *st = state;
  if (st->where[block] == LRU_EVICTABLE)
    pkv__blist_unlink(&st->evictable, &st->nodes, block);
  st->where[block] = LRU_ABSENT;
}

static int lru_check(const void *state, const uint8_t *evictable,
                     uint32_t num_blocks, char *msg, size_t cap) {
  const lru_state *st = state;
  int rc = 0;
  for (uint32_t b = 0; b < num_blocks && !rc; b++)
    rc = pkv__policy_check_block((int32_t)b, st->where[b] == LRU_EVICTABLE,
                                 evictable, msg, cap);
  uint64_t total = 0;
  if (!rc) rc = pkv__blist_check(&st->evictable, &st->nodes, evictable,
                                 num_blocks, "lru list", &total, msg, cap);
  return rc ? rc : pkv__policy_check_total(total, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_lru = PKV__POLICY_OPS("lru", lru);
