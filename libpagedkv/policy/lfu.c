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
  uint32_t *uses;
  uint8_t *where;    /* LFU_*: which structure holds the evictable block */
  uint64_t *key;     /* age at release + uses */
  uint64_t *stamp;   /* release stamp */
  pkv__bnodes nodes;
  pkv__blist *ring;  /* W buckets */
  pkv__bset busy;    /* non-empty buckets */
  pkv__bheap hot;    /* released with >= W uses: k1 = key, k2 = stamp */
} lfu_state;

static void lfu_destroy(void *state) {
  lfu_state *st = state;
  if (!st) return;
  pkv__bheap_free(&st->hot);
  pkv__bset_free(&st->busy);
  pkv__bnodes_free(&st->nodes);
  pkv__free(st->ring);
  pkv__free(st->uses);
  pkv__free(st->where);
  pkv__free(st->key);
  pkv__free(st->stamp);
  pkv__free(st);
}

static int lfu_create(void **out, uint32_t num_blocks, const char *args) {
  double max_uses = 65536, ring = 1024;
  const pkv__policy_arg spec[] = {
      {"max_uses", &max_uses, 1, 1u << 30, true},
      {"ring", &ring, 1, 1u << 20, true},
  };
  int rc;
  lfu_state *st = pkv__policy_state_new("lfu", out, num_blocks, args,
                                        spec, 2, sizeof *st, &rc);
  if (!st) return rc;
  st->max_uses = (uint32_t)max_uses;
  /* W: a power of two >= ring, but no more than max_uses + 1 needs. */
  uint32_t w = 1;
  while (w < (uint32_t)ring && w < st->max_uses + 1u) w <<= 1;
  st->ring_mask = w - 1;
  st->uses = pkv__calloc(num_blocks, sizeof(uint32_t));
  st->where = pkv__calloc(num_blocks, 1);
  st->key = pkv__calloc(num_blocks, sizeof(uint64_t));
  st->stamp = pkv__calloc(num_blocks, sizeof(uint64_t));
  st->ring = pkv__malloc(sizeof(pkv__blist) * w);
  if (st->ring)
    for (uint32_t i = 0; i < w; i++) pkv__blist_init(&st->ring[i]);
  if (!st->uses || !st->where || !st->key || !st->stamp || !st->ring ||
      !pkv__bnodes_alloc(&st->nodes, num_blocks) ||
      !pkv__bset_alloc(&st->busy, w) ||
      !pkv__bheap_alloc(&st->hot, num_blocks)) {
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

/* Takes block out of whichever structure holds it. */
static void unlink_block(lfu_state *st, int32_t block) {
  if (st->where[block] == LFU_RING) {
    uint32_t i = (uint32_t)(st->key[block] & st->ring_mask);
    pkv__blist_unlink(&st->ring[i], &st->nodes, block);
    if (!st->ring[i].len) pkv__bset_clear(&st->busy, i);
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
    uint32_t i = (uint32_t)(key & st->ring_mask);
    if (!st->ring[i].len) pkv__bset_set(&st->busy, i);
    pkv__blist_push_tail(&st->ring[i], &st->nodes, block);
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

static int lfu_check(const void *state, const uint8_t *evictable,
                     uint32_t num_blocks, char *msg, size_t cap) {
  const lfu_state *st = state;
  int rc = 0;
  for (uint32_t b = 0; b < num_blocks && !rc; b++)
    rc = pkv__policy_check_block((int32_t)b, st->where[b] != LFU_OUT, evictable,
                                 msg, cap);
  uint64_t total = 0;
  for (uint32_t i = 0; i <= st->ring_mask && !rc; i++) {
    const pkv__blist *l = &st->ring[i];
    if ((l->len != 0) != pkv__bset_test(&st->busy, i))
      return pkv__policy_check_fail(msg, cap, "bucket %u: %u blocks, busy bit "
                                    "%d", i, l->len, pkv__bset_test(&st->busy, i));
    rc = pkv__blist_check(l, &st->nodes, evictable, num_blocks, "lfu bucket",
                          &total, msg, cap);
    for (int32_t b = l->head; !rc && b != PKV__NIL; b = *pkv__bn_next(&st->nodes, b))
      if (st->where[b] != LFU_RING || (st->key[b] & st->ring_mask) != i)
        rc = pkv__policy_check_fail(msg, cap, "block %d in bucket %u, keyed "
                                    "for %llu", b, i,
                                    (unsigned long long)(st->key[b] & st->ring_mask));
  }
  if (!rc) rc = pkv__bheap_check(&st->hot, evictable, num_blocks, "lfu heap",
                                 &total, msg, cap);
  for (uint32_t i = 0; !rc && i < st->hot.len; i++)
    if (st->where[st->hot.ent[i].block] != LFU_HEAP)
      rc = pkv__policy_check_fail(msg, cap, "heap holds block %d, recorded "
                                  "elsewhere", st->hot.ent[i].block);
  return rc ? rc : pkv__policy_check_total(total, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_lfu = PKV__POLICY_OPS("lfu", lfu);
