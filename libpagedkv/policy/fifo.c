/*
 * policy/fifo.c — first in, first out: the block that entered the prefix
 * index earliest goes first, however often it was used since.
 *
 * Blocks in use cannot be evicted, so the victim is the evictable block
 * inserted earliest, and a block released again competes at its original
 * place in the order.  Each cached block holds a position, handed out in
 * insertion order from a counter; a hierarchical bitset marks the positions
 * of the evictable blocks, so the victim is the first set bit:
 *
 *     pos:   0   1   2   3   4   5   6  ...  next
 *     at[]:  b4  -   b9  b2  -   b7  b1
 *     ev:    0       1   1       0   1        victim = at[first(ev)] = b9
 *
 * Positions come from a range of R >= 2 * num_blocks.  When the counter
 * reaches R, compact() renumbers the cached blocks 0, 1, ... in the same
 * order; at most num_blocks are cached, so that happens once per >= R/2
 * insertions and costs O(R / 64 + cached): O(1) amortized.  Every other
 * hook is O(1) (a bitset update touches one word per level, 3 levels for a
 * pool of 2^17 blocks) and choose_victim is three count-trailing-zeros.
 * The order is exactly that of a min-heap on insertion stamps.
 */
#include "policy/util.h"


#define FIFO_NOWHERE UINT32_MAX

typedef struct fifo_state {
  uint32_t range; /* R: positions 0 .. R-1 */
  uint32_t next;  /* next position to hand out */
  uint32_t *pos;  /* position of each cached block, FIFO_NOWHERE if absent */
  int32_t *at;    /* block at each position, PKV__NIL if none */
  pkv__bset evictable; /* positions of the evictable blocks */
} fifo_state;

static bool fifo_setup(void *state, uint32_t num_blocks, const double *arg) {
  (void)arg;
  fifo_state *st = state;
  uint64_t range = 64;
  while (range < 2ull * num_blocks) range <<= 1;
  st->range = (uint32_t)(range > UINT32_MAX ? UINT32_MAX : range);
  return true;
}

static const pkv__policy_part fifo_parts[] = {
    PKV__PART_ARRAY_OF(fifo_state, pos, 0xff),          /* FIFO_NOWHERE */
    PKV__PART_ARRAY_N(fifo_state, at, 0xff, range),     /* PKV__NIL */
    PKV__PART_N(PKV__PART_BSET, fifo_state, evictable, range),
};
static const pkv__policy_desc fifo_desc = {
    .name = "fifo", .size = sizeof(fifo_state), .setup = fifo_setup,
    .parts = fifo_parts, .n_parts = PKV__NELEMS(fifo_parts),
};
PKV__POLICY_LIFECYCLE(fifo, fifo_desc)

/* Renumbers the cached blocks 0, 1, ... keeping their order. */
static void compact(fifo_state *st) {
  uint32_t q = 0;
  for (uint32_t p = 0; p < st->next; p++) {
    int32_t b = st->at[p];
    if (b == PKV__NIL) continue;
    bool ev = pkv__bset_test(&st->evictable, p);
    if (ev) pkv__bset_clear(&st->evictable, p);
    st->at[p] = PKV__NIL;
    st->at[q] = b; /* q <= p: positions below p are already renumbered */
    st->pos[b] = q;
    if (ev) pkv__bset_set(&st->evictable, q);
    q++;
  }
  st->next = q;
}

static void fifo_on_insert(void *state, int32_t block,
                           const pkv_block_meta *meta) {
  (void)meta;
  fifo_state *st = state;
  if (st->next == st->range) compact(st);
  st->pos[block] = st->next;
  st->at[st->next++] = block;
}

static void fifo_on_hit(void *state, int32_t block,
                        const pkv_block_meta *meta) {
  (void)state, (void)block, (void)meta; /* use does not matter to FIFO */
}

/* Marks block's position evictable or not (a block not cached has none). */
PKV__HOT void mark(fifo_state *st, int32_t block, bool evictable) {
  uint32_t p = st->pos[block];
  if (p == FIFO_NOWHERE) return;
  if (evictable)
    pkv__bset_set(&st->evictable, p);
  else
    pkv__bset_clear(&st->evictable, p);
}

static void fifo_on_evictable(void *state, int32_t block,
                              const pkv_block_meta *meta) {
  (void)meta;
  mark(state, block, true);
}

static void fifo_on_pinned(void *state, int32_t block,
                           const pkv_block_meta *meta) {
  (void)meta;
  mark(state, block, false);
}

static int32_t fifo_choose_victim(void *state, uint64_t now) {
  (void)now;
  const fifo_state *st = state;
  int64_t p = pkv__bset_first(&st->evictable);
  return p < 0 ? PKV__NIL : st->at[p];
}

static void fifo_on_remove(void *state, int32_t block) {
  fifo_state *st = state;
  uint32_t p = st->pos[block];
  if (p == FIFO_NOWHERE) return;
  pkv__bset_clear(&st->evictable, p);
  st->at[p] = PKV__NIL;
  st->pos[block] = FIFO_NOWHERE;
}

static int fifo_check(const void *state, const uint8_t *evictable,
                      uint32_t num_blocks, char *msg, size_t cap) {
  const fifo_state *st = state;
  for (uint32_t b = 0; b < num_blocks; b++) {
    uint32_t p = st->pos[b];
    if (p != FIFO_NOWHERE && (p >= st->next || st->at[p] != (int32_t)b))
      return pkv__policy_check_fail(msg, cap, "block %u at position %u, "
                                    "which holds %d", b, p,
                                    p < st->range ? st->at[p] : -2);
    bool mine = p != FIFO_NOWHERE && pkv__bset_test(&st->evictable, p);
    int rc = pkv__policy_check_block((int32_t)b, mine, evictable, msg, cap);
    if (rc) return rc;
  }
  uint64_t total = 0;
  for (int64_t p = pkv__bset_first(&st->evictable); p >= 0;
       p = pkv__bset_next(&st->evictable, (uint64_t)p + 1)) {
    int32_t b = (uint64_t)p < st->next ? st->at[p] : PKV__NIL;
    if (b < 0 || (uint32_t)b >= num_blocks || st->pos[b] != (uint32_t)p)
      return pkv__policy_check_fail(msg, cap, "position %lld marked "
                                    "evictable holds no block", (long long)p);
    total++;
  }
  return pkv__policy_check_total(total, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_fifo = PKV__POLICY_OPS("fifo", fifo);
