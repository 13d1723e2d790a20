/*
 * policy_lfu.c — least frequently used, with dynamic aging (LFU-DA).
 *
 * Each cached block counts its uses: 1 when it enters the index, +1 per
 * prefix hit.  Plain LFU would keep a block that was hot an hour ago forever,
 * so the count is aged the LFU-DA way: the policy keeps an age L, equal to
 * the key of the last block evicted, and a block that becomes evictable is
 * keyed
 *
 *     key = L + uses        (ties: the earlier released goes first)
 *
 * L only grows, so a block released now with few uses can outrank one that
 * collected many uses long ago once enough evictions have passed; no count
 * is ever halved and no periodic sweep is needed.  The evictable blocks sit
 * in a min-heap on (key, release stamp): on_evictable / on_pinned /
 * on_remove are O(log n), the others O(1).
 *
 * Removals: the age moves when the block removed is the current victim
 * (the heap's top) — the eviction case.  A reset removing the top does the
 * same, which only ages the survivors a little faster.
 *
 * Args: "max_uses=N" caps the count (default 65536), so that one very hot
 * block cannot outlive every aging step.
 */
#include "policy_util.h"

typedef struct lfu_state {
  uint64_t age;      /* L: key of the last victim removed */
  uint64_t clock;    /* releases so far */
  uint32_t max_uses;
  uint32_t *uses;
  pkv__bheap evictable; /* k1 = age at release + uses, k2 = release stamp */
} lfu_state;

static void lfu_destroy(void *state) {
  lfu_state *st = state;
  if (!st) return;
  pkv__bheap_free(&st->evictable);
  pkv__free(st->uses);
  pkv__free(st);
}

static int lfu_create(void **out, uint32_t num_blocks, const char *args) {
  double max_uses = 65536;
  const pkv__policy_arg spec[] = {
      {"max_uses", &max_uses, 1, 1u << 30, true},
  };
  int rc = pkv__policy_check_create("lfu", out, num_blocks);
  if (!rc) rc = pkv__policy_args_parse("lfu", args, spec, 1);
  if (rc) return rc;
  lfu_state *st = pkv__calloc(1, sizeof *st);
  if (!st) return pkv__err(PKV_ENOMEM, "policy lfu: state allocation");
  st->max_uses = (uint32_t)max_uses;
  st->uses = pkv__calloc(num_blocks, sizeof(uint32_t));
  if (!st->uses || !pkv__bheap_alloc(&st->evictable, num_blocks)) {
    lfu_destroy(st);
    return pkv__err(PKV_ENOMEM, "policy lfu: %u-block arrays", num_blocks);
  }
  *out = st;
  return 0;
}

static void lfu_on_insert(void *state, int32_t block,
                          const pkv_block_meta *meta) {
  (void)meta;
  lfu_state *st = state;
  st->uses[block] = 1;
}

static void lfu_on_hit(void *state, int32_t block,
                       const pkv_block_meta *meta) {
  (void)meta;
  lfu_state *st = state;
  if (st->uses[block] < st->max_uses) st->uses[block]++;
}

static void lfu_on_evictable(void *state, int32_t block,
                             const pkv_block_meta *meta) {
  (void)meta;
  lfu_state *st = state;
  pkv__bheap_set(&st->evictable, block, st->age + st->uses[block],
                 ++st->clock);
}

static void lfu_on_pinned(void *state, int32_t block,
                          const pkv_block_meta *meta) {
  (void)meta;
  lfu_state *st = state;
  pkv__bheap_remove(&st->evictable, block);
}

static int32_t lfu_choose_victim(void *state, uint64_t now) {
  (void)now;
  const lfu_state *st = state;
  return pkv__bheap_top(&st->evictable);
}

static void lfu_on_remove(void *state, int32_t block) {
  lfu_state *st = state;
  if (pkv__bheap_top(&st->evictable) == block)
    st->age = pkv__bheap_k1(&st->evictable, block);
  pkv__bheap_remove(&st->evictable, block);
}

const pkv_policy_ops pkv__policy_lfu = {
    .version = PKV_POLICY_VERSION,
    .name = "lfu",
    .create = lfu_create,
    .destroy = lfu_destroy,
    .on_insert = lfu_on_insert,
    .on_hit = lfu_on_hit,
    .on_evictable = lfu_on_evictable,
    .on_pinned = lfu_on_pinned,
    .choose_victim = lfu_choose_victim,
    .on_remove = lfu_on_remove,
};
