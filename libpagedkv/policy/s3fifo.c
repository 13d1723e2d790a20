/*
 * policy/s3fifo.c — S3-FIFO (Yang et al., SOSP'23) adapted to blocks that
 * may be in use.
 *
 * Three queues:
 *
 *   S  small FIFO, ~10% of the evictable blocks: new blocks land here, so a
 *      block used once leaves quickly ("quick demotion");
 *   M  main FIFO: blocks that were reused while in S, or whose key was
 *      recently evicted from S;
 *   G  ghost: keys (pkv_hash128, never block ids — ids are reused for other
 *      content) of blocks recently evicted from S, no data.
 *
 * Each block has a 2-bit use counter (0..3), bumped by on_hit.  The
 * algorithm's eviction step is
 *
 *   if |S| >= small * (|S| + |M|) or M is empty:
 *       t = oldest of S; uses(t) >= promote ? move t to M : evict t (key → G)
 *   else:
 *       t = oldest of M; uses(t) > 0 ? uses(t)--, move t to M's new end
 *                                    : evict t
 *
 * Adaptations.  (1) Blocks in use cannot be evicted, so S and M hold only
 * the evictable blocks; a block keeps its queue (S or M) while in use and
 * re-enters at that queue's new end when released.  (2) choose_victim must
 * not change state, but the step above moves blocks until it reaches one to
 * evict.  So the moves are done eagerly: after every hook, settle() runs the
 * step until the oldest block of the queue it looks at is one it would
 * evict, and records that block as the victim; choose_victim returns it.
 * The moves settle() makes are the ones the next eviction would make; the
 * only difference from the textbook order is that a hit arriving between the
 * move and the eviction lands on the moved block.  Each promotion happens
 * once per block and each rotation spends one use, so settle() is O(1)
 * amortized per hook.
 *
 * Ghost (policy/ghost.c): the last `ghost * num_blocks` keys evicted from
 * S; a key found there at on_insert is taken out and the block starts in M.
 *
 * Args: small=0.1 (share of S, 0..1), ghost=0.9 (ghost entries per block,
 * 0..4), promote=1 (uses in S that earn M, 1..3).
 */
#include "policy/util.h"

enum { Q_SMALL = 0, Q_MAIN = 1 };
enum { ST_ABSENT = 0, ST_IN_USE = 1, ST_EVICTABLE = 2 };
#define S3_MAX_USES 3

/* ------------------------------------------------------------ policy */

typedef struct s3_state {
  double small;
  uint8_t promote;
  uint8_t *where;  /* ST_* */
  uint8_t *queue;  /* Q_* (kept while in use) */
  uint8_t *uses;   /* 0..S3_MAX_USES */
  pkv_hash128 *key;
  pkv__bnodes nodes;
  pkv__blist q[2];
  int32_t victim;  /* what settle() found */
  uint32_t ghost_cap; /* keys the ghost remembers */
  pkv__ghost g;
} s3_state;

enum { S3_ARG_SMALL, S3_ARG_GHOST, S3_ARG_PROMOTE };
static const pkv__policy_arg s3_args[] = {
    [S3_ARG_SMALL] = {"small", 0.1, 0, 1, false},
    [S3_ARG_GHOST] = {"ghost", 0.9, 0, 4, false},
    [S3_ARG_PROMOTE] = {"promote", 1, 1, S3_MAX_USES, true},
};

static bool s3_setup(void *state, uint32_t num_blocks, const double *arg) {
  s3_state *st = state;
  st->small = arg[S3_ARG_SMALL];
  st->promote = (uint8_t)arg[S3_ARG_PROMOTE];
  st->victim = PKV__NIL;
  st->ghost_cap = pkv__ghost_cap(arg[S3_ARG_GHOST], num_blocks);
  return true;
}

static const pkv__policy_part s3_parts[] = {
    PKV__PART_ARRAYS_OF(s3_state, 0, where, queue, uses, key),
    PKV__PART_INLINE_LISTS_OF(s3_state, q),
    PKV__PART_OF(PKV__PART_BNODES, s3_state, nodes),
    PKV__PART_N(PKV__PART_GHOST, s3_state, g, ghost_cap),
};
static const pkv__policy_desc s3_desc = {
    .name = "s3fifo", .size = sizeof(s3_state), .setup = s3_setup,
    .args = s3_args, .n_args = PKV__NELEMS(s3_args),
    .parts = s3_parts, .n_parts = PKV__NELEMS(s3_parts),
};
PKV__POLICY_LIFECYCLE(s3, s3_desc)

/* Runs the eviction step's moves until the block it would evict is at the
 * old end of its queue; records it in st->victim. */
static void settle(s3_state *st) {
  pkv__blist *S = &st->q[Q_SMALL], *M = &st->q[Q_MAIN];
  for (;;) {
    if (S->len && (M->len == 0 ||
                   (double)S->len >= st->small * (double)(S->len + M->len))) {
      int32_t t = S->head;
      if (st->uses[t] < st->promote) {
        st->victim = t;
        return;
      }
      pkv__blist_move(S, M, &st->nodes, t);
      st->queue[t] = Q_MAIN;
    } else if (M->len) {
      int32_t t = M->head;
      if (st->uses[t] == 0) {
        st->victim = t;
        return;
      }
      st->uses[t]--;
      pkv__blist_move(M, M, &st->nodes, t);
    } else {
      st->victim = PKV__NIL;
      return;
    }
  }
}

static void s3_on_insert(void *state, int32_t block,
                         const pkv_block_meta *meta) {
  s3_state *st = state;
  st->key[block] = meta->key;
  st->queue[block] = pkv__ghost_take(&st->g, meta->key) >= 0 ? Q_MAIN : Q_SMALL;
  st->uses[block] = 0;
  st->where[block] = ST_IN_USE;
}

static void s3_on_hit(void *state, int32_t block,
                      const pkv_block_meta *meta) {
  (void)meta;
  s3_state *st = state;
  if (st->uses[block] < S3_MAX_USES) st->uses[block]++;
  if (block == st->victim) settle(st);
}

static void s3_on_evictable(void *state, int32_t block,
                            const pkv_block_meta *meta) {
  (void)meta;
  s3_state *st = state;
  if (st->where[block] == ST_EVICTABLE) return;
  pkv__blist_push_tail(&st->q[st->queue[block]], &st->nodes, block);
  st->where[block] = ST_EVICTABLE;
  settle(st);
}

/* Takes block off its queue if it is there and records where it goes;
 * whether it was there. */
PKV__HOT bool leave(s3_state *st, int32_t block, uint8_t to) {
  return pkv__blist_leave(&st->q[st->queue[block]], &st->nodes, block,
                          &st->where[block], ST_EVICTABLE, to);
}

static void s3_on_pinned(void *state, int32_t block,
                         const pkv_block_meta *meta) {
  (void)meta;
  s3_state *st = state;
  if (leave(st, block, ST_IN_USE)) settle(st);
}

static int32_t s3_choose_victim(void *state, uint64_t now) {
  (void)now;
  const s3_state *st = state;
  return st->victim;
}

static void s3_on_remove(void *state, int32_t block) {
  s3_state *st = state;
  if (leave(st, block, ST_ABSENT) && st->queue[block] == Q_SMALL)
    pkv__ghost_add(&st->g, st->key[block], 0);
  settle(st);
}

/* The queue s3_check expects block b on. */
static int64_t queue_of(const void *state, int32_t b) {
  return ((const s3_state *)state)->queue[b];
}

static int s3_check(const void *state, const uint8_t *evictable,
                    uint32_t num_blocks, char *msg, size_t cap) {
  const s3_state *st = state;
  const pkv__check_lists c = {
      .where = st->where, .value = ST_EVICTABLE, .equal = true, .lists = st->q,
      .n_lists = 2, .nodes = &st->nodes, .what = "queue (0 small, 1 main)",
      .recorded = queue_of, .state = st};
  return pkv__policy_check_lists(&c, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_s3fifo = PKV__POLICY_OPS("s3fifo", s3);
