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
  uint8_t *where; /* LRU_* per block */
  pkv__bnodes nodes;
  pkv__blist evictable;
} lru_state;

static const pkv__policy_part lru_parts[] = {
    PKV__PART_ARRAY_OF(lru_state, where, 0),
    PKV__PART_OF(PKV__PART_BNODES, lru_state, nodes),
    PKV__PART_INLINE_LISTS_OF(lru_state, evictable),
};
static const pkv__policy_desc lru_desc = {
    .name = "lru", .size = sizeof(lru_state),
    .parts = lru_parts, .n_parts = PKV__NELEMS(lru_parts),
};
PKV__POLICY_LIFECYCLE(lru, lru_desc)

/* Takes block off the list if it is there and records where it goes. */
PKV__HOT void leave(lru_state *st, int32_t block, uint8_t to) {
  pkv__blist_leave(&st->evictable, &st->nodes, block, &st->where[block],
                   LRU_EVICTABLE, to);
}

static void lru_on_evictable(void *state, int32_t block,
                             const pkv_block_meta *meta) {
  (void)meta;
  lru_state *st = state;
  leave(st, block, LRU_EVICTABLE);
  pkv__blist_push_tail(&st->evictable, &st->nodes, block);
}

static void lru_on_pinned(void *state, int32_t block,
                          const pkv_block_meta *meta) {
  (void)meta;
  leave(state, block, LRU_IN_USE);
}

static void lru_on_remove(void *state, int32_t block) {
  leave(state, block, LRU_ABSENT);
}

/* A new block is in use, on no list: what on_pinned records. */
static void lru_on_insert(void *state, int32_t block,
                          const pkv_block_meta *meta) {
  lru_on_pinned(state, block, meta);
}

static void lru_on_hit(void *state, int32_t block,
                       const pkv_block_meta *meta) {
  (void)state, (void)block, (void)meta; /* recency counts from release */
}

static int32_t lru_choose_victim(void *state, uint64_t now) {
  (void)now;
  const lru_state *st = state;
  return st->evictable.head;
}

static int lru_check(const void *state, const uint8_t *evictable,
                     uint32_t num_blocks, char *msg, size_t cap) {
  const lru_state *st = state;
  const pkv__check_lists c = {
      .where = st->where, .value = LRU_EVICTABLE, .equal = true,
      .lists = &st->evictable, .n_lists = 1, .nodes = &st->nodes,
      .what = "lru list"};
  return pkv__policy_check_lists(&c, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_lru = PKV__POLICY_OPS("lru", lru);
