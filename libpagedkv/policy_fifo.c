/*
 * policy_fifo.c — first in, first out: the block that entered the prefix
 * index earliest goes first, however often it was used since.
 *
 * Blocks in use cannot be evicted, so FIFO order is kept among the
 * evictable ones only: a min-heap keyed by the block's insertion stamp.  A
 * block released again re-enters the heap at its original position in the
 * order.  on_insert stamps, on_evictable pushes, on_pinned / on_remove pop:
 * O(log n) each, choose_victim O(1).
 */
#include "policy_util.h"

typedef struct fifo_state {
  uint64_t clock;     /* insertions so far */
  uint64_t *inserted; /* stamp of each block's insertion */
  pkv__bheap evictable;
} fifo_state;

static void fifo_destroy(void *state) {
  fifo_state *st = state;
  if (!st) return;
  pkv__bheap_free(&st->evictable);
  pkv__free(st->inserted);
  pkv__free(st);
}

static int fifo_create(void **out, uint32_t num_blocks, const char *args) {
  int rc = pkv__policy_check_create("fifo", out, num_blocks);
  if (!rc) rc = pkv__policy_args_parse("fifo", args, NULL, 0);
  if (rc) return rc;
  fifo_state *st = pkv__calloc(1, sizeof *st);
  if (!st) return pkv__err(PKV_ENOMEM, "policy fifo: state allocation");
  st->inserted = pkv__calloc(num_blocks, sizeof(uint64_t));
  if (!st->inserted || !pkv__bheap_alloc(&st->evictable, num_blocks)) {
    fifo_destroy(st);
    return pkv__err(PKV_ENOMEM, "policy fifo: %u-block arrays", num_blocks);
  }
  *out = st;
  return 0;
}

static void fifo_on_insert(void *state, int32_t block,
                           const pkv_block_meta *meta) {
  (void)meta;
  fifo_state *st = state;
  st->inserted[block] = ++st->clock;
}

static void fifo_on_hit(void *state, int32_t block,
                        const pkv_block_meta *meta) {
  (void)state, (void)block, (void)meta; /* use does not matter to FIFO */
}

static void fifo_on_evictable(void *state, int32_t block,
                              const pkv_block_meta *meta) {
  (void)meta;
  fifo_state *st = state;
  pkv__bheap_set(&st->evictable, block, st->inserted[block], 0);
}

static void fifo_on_pinned(void *state, int32_t block,
                           const pkv_block_meta *meta) {
  (void)meta;
  fifo_state *st = state;
  pkv__bheap_remove(&st->evictable, block);
}

static int32_t fifo_choose_victim(void *state, uint64_t now) {
  (void)now;
  const fifo_state *st = state;
  return pkv__bheap_top(&st->evictable);
}

static void fifo_on_remove(void *state, int32_t block) {
  fifo_state *st = state;
  pkv__bheap_remove(&st->evictable, block);
}

const pkv_policy_ops pkv__policy_fifo = {
    .version = PKV_POLICY_VERSION,
    .name = "fifo",
    .create = fifo_create,
    .destroy = fifo_destroy,
    .on_insert = fifo_on_insert,
    .on_hit = fifo_on_hit,
    .on_evictable = fifo_on_evictable,
    .on_pinned = fifo_on_pinned,
    .choose_victim = fifo_choose_victim,
    .on_remove = fifo_on_remove,
};
