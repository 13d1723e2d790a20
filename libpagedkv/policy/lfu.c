/*
 * policy/lfu.c — least frequently used, with dynamic aging (LFU-DA).
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
 * is ever halved and no periodic sweep is needed.  Removals: the age moves
 * when the block removed is the current victim — the eviction case.  A
 * reset removing the victim does the same, which only ages the survivors a
 * little faster.
 *
 * Structure.  The victim is the least key; every evictable key lies in
 * [L, L + max_uses]: L is the least key when it is set, and a key made
 * later is L' + uses with L' <= L.  So keys index a ring of buckets
 * (a calendar queue):
 *
 *     bucket(key) = key mod W           W = ring size, a power of two
 *
 * and a block released with uses < W lands in the bucket of its key, at the
 * tail of that bucket's list: release stamps grow, so each list is in
 * release order and its head is the tie-break winner.  Ring keys stay in
 * [L, L + W), so the buckets from L mod W around the ring are in key order;
 * a bitset of non-empty buckets finds the first in a few count-trailing-
 * zeros.  Blocks released with >= W uses (very hot ones) go to a small
 * min-heap on (key, stamp) instead, and the victim is the lesser of the
 * ring's first head and the heap's top.  Every hook is O(1) but for that
 * heap, which only the hottest blocks enter.
 *
 * Args: "max_uses=N" caps the count (default 65536), so that one very hot
 * block cannot outlive every aging step; "ring=N" (default 1024, rounded up
 * to a power of two, never more than needed for max_uses) sets W.
 */
#include "policy/util.h"

enum { LFU_OUT = 0, LFU_RING = 1, LFU_HEAP = 2 };

typedef struct lfu_state {
  uint64_t age;      /* L: key of the last victim removed */
  uint64_t clock;    /* releases so far */
  uint32_t max_uses;
  uint32_t ring_mask; /* W - 1 */
  uint32_t ring_size; /* W */
  uint32_t *uses;
  uint8_t *where;    /* LFU_*: which structure holds the evictable block */
  uint64_t *key;     /* age at release + uses */
  uint64_t *stamp;   /* release stamp */
  pkv__bnodes nodes;
  pkv__blist *ring;  /* W buckets */
  pkv__bset busy;    /* non-empty buckets */
  pkv__bheap hot;    /* released with >= W uses: k1 = key, k2 = stamp */
} lfu_state;

enum { LFU_ARG_MAX_USES, LFU_ARG_RING };
static const pkv__policy_arg lfu_args[] = {
    [LFU_ARG_MAX_USES] = {"max_uses", 65536, 1, 1u << 30, true},
    [LFU_ARG_RING] = {"ring", 1024, 1, 1u << 20, true},
};

static bool lfu_setup(void *state, uint32_t num_blocks, const double *arg) {
  (void)num_blocks;
  lfu_state *st = state;
  st->max_uses = (uint32_t)arg[LFU_ARG_MAX_USES];
  /* W: a power of two >= ring, but no more than max_uses + 1 needs. */
  uint32_t w = 1;
  while (w < (uint32_t)arg[LFU_ARG_RING] && w < st->max_uses + 1u) w <<= 1;
  st->ring_mask = w - 1;
  st->ring_size = w;
  return true;
}

static const pkv__policy_part lfu_parts[] = {
    PKV__PART_ARRAYS_OF(lfu_state, 0, uses, where, key, stamp),
    PKV__PART_SPEC(PKV__PART_LISTS, lfu_state, ring, 0, 0,
                   offsetof(lfu_state, ring_size)),
    PKV__PART_OF(PKV__PART_BNODES, lfu_state, nodes),
    PKV__PART_N(PKV__PART_BSET, lfu_state, busy, ring_size),
    PKV__PART_OF(PKV__PART_BHEAP, lfu_state, hot),
};
static const pkv__policy_desc lfu_desc = {
    .name = "lfu", .size = sizeof(lfu_state), .setup = lfu_setup,
    .args = lfu_args, .n_args = PKV__NELEMS(lfu_args),
    .parts = lfu_parts, .n_parts = PKV__NELEMS(lfu_parts),
};
PKV__POLICY_LIFECYCLE(lfu, lfu_desc)

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

/* Takes block out of whichever structure holds it. */
static void unlink_block(lfu_state *st, int32_t block) {
  if (st->where[block] == LFU_RING) {
    pkv__blists_unlink(st->ring, &st->busy, &st->nodes,
                       (uint32_t)(st->key[block] & st->ring_mask), block);
  } else if (st->where[block] == LFU_HEAP) {
    pkv__bheap_remove(&st->hot, block);
  }
  st->where[block] = LFU_OUT;
}

static void lfu_on_evictable(void *state, int32_t block,
                             const pkv_block_meta *meta) {
  (void)meta;
  lfu_state *st = state;
  unlink_block(st, block);
  uint64_t key = st->age + st->uses[block], stamp = ++st->clock;
  st->key[block] = key;
  st->stamp[block] = stamp;
  if (st->uses[block] <= st->ring_mask) {
    pkv__blists_push(st->ring, &st->busy, &st->nodes,
                     (uint32_t)(key & st->ring_mask), block);
    st->where[block] = LFU_RING;
  } else {
    pkv__bheap_set(&st->hot, block, key, stamp);
    st->where[block] = LFU_HEAP;
  }
}

static void lfu_on_pinned(void *state, int32_t block,
                          const pkv_block_meta *meta) {
  (void)meta;
  unlink_block(state, block);
}

static int32_t victim(const lfu_state *st) {
  int64_t i = pkv__bset_next(&st->busy, st->age & st->ring_mask);
  if (i < 0) i = pkv__bset_first(&st->busy);
  int32_t r = i < 0 ? PKV__NIL : st->ring[i].head;
  int32_t h = pkv__bheap_top(&st->hot);
  if (r == PKV__NIL) return h;
  if (h == PKV__NIL) return r;
  uint64_t hk = pkv__bheap_k1(&st->hot, h), hs = pkv__bheap_k2(&st->hot, h);
  bool ring_first = st->key[r] < hk || (st->key[r] == hk && st->stamp[r] < hs);
  return ring_first ? r : h;
}

static int32_t lfu_choose_victim(void *state, uint64_t now) {
  (void)now;
  return victim(state);
}

static void lfu_on_remove(void *state, int32_t block) {
  lfu_state *st = state;
  if (st->where[block] != LFU_OUT && victim(st) == block)
    st->age = st->key[block];
  unlink_block(st, block);
}

/* The bucket lfu_check expects block b on, -1 if b is not on the ring. */
static int64_t ring_bucket(const void *state, int32_t b) {
  const lfu_state *st = state;
  return st->where[b] == LFU_RING ? (int64_t)(st->key[b] & st->ring_mask) : -1;
}

static int lfu_check(const void *state, const uint8_t *evictable,
                     uint32_t num_blocks, char *msg, size_t cap) {
  const lfu_state *st = state;
  uint64_t in_heap = 0;
  int rc = pkv__bheap_check(&st->hot, st->where, LFU_HEAP, evictable,
                            num_blocks, "lfu heap", &in_heap, msg, cap);
  const pkv__check_lists c = {
      .where = st->where, .value = LFU_OUT, .equal = false, .lists = st->ring,
      .n_lists = st->ring_size, .busy = &st->busy, .nodes = &st->nodes,
      .what = "lfu bucket", .recorded = ring_bucket, .state = st,
      .others = in_heap};
  return rc ? rc : pkv__policy_check_lists(&c, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_lfu = PKV__POLICY_OPS("lfu", lfu);
