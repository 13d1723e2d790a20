/*
 * policy/fwlru.c — frequency-weighted LRU, the policy tuned for prefix
 * caches (name "fwlru").
 *
 * Why.  On real prefix-sharing traces (Mooncake, see docs/POLICIES.md) a
 * block seen once comes back rarely and late, while a block already reused
 * a few times comes back much sooner: in synthetic_trace.jsonl the median
 * gap before the next use falls from ~560 requests after the first use to
 * ~40 after the eighth.  LRU treats them alike and flushes the reused
 * prefixes with one-off prompts.  fwlru ranks blocks by age *divided by a
 * weight that grows with the block's use count*, so a block used k times
 * may sit idle about (k+1)^p times longer than a block used once.
 *
 * Structure.  Uses are bucketed into 8 classes (1, 2, ..., 7, 8+).  Each
 * class keeps its evictable blocks in an intrusive list in release order,
 * so its oldest block is at the head.  With a global release clock,
 *
 *     victim = the class head maximising (clock - stamp + 1) / w[class]
 *     w[k]   = (k+1)^p, and w[0] = cold * 1 for blocks used once
 *
 * choose_victim compares 8 heads: O(1) and pure.  Every other hook is O(1).
 *
 * Use counts outlive eviction.  A block's count goes, keyed by its pkv_hash128
 * key, into a ghost queue of hist * num_blocks entries when it leaves the
 * index, and comes back (+1) when the same content is inserted again.
 * Without this memory a re-inserted hot prefix would restart as "used once"
 * and the policy would degrade to LRU (or worse).
 *
 * Chains.  Prefix matching stops at the first missing block, so a parent
 * must not go before its children.  Counts and recency already favour
 * parents (every use of a child is a use of its parent), which leaves ties:
 * the blocks of one sequence released together.  When a block is released
 * right after its parent or its child (the key/parent links in meta) and
 * both fall in the same class, it is placed next to it with the same stamp,
 * deeper block nearer the head, whether the manager releases a chain root
 * first or leaf first.
 *
 * Args: p=2 (weight exponent, 0..4; 0 = plain LRU by classes), cold=0.1
 * (weight of blocks used once, 0.01..1), hist=8 (ghost entries per block,
 * 0..64).  The ghost costs about 40 bytes per entry.
 */
#include "policy/util.h"

#include <math.h>
#include <string.h>

#include "policy/fw.h"

void pkv__fw_fini(fw_state *st) {
  pkv__ghost_free(&st->hist);
  pkv__kmap_free(&st->blocks);
  pkv__free(st->rec_raw);
  st->rec_raw = NULL;
  st->rec = NULL;
}

void pkv__fw_weights(double inv_weight[FW_CLASSES], double p, double cold) {
  for (int k = 0; k < FW_CLASSES; k++)
    inv_weight[k] = 1.0 / (pow(k + 1, p) * (k == 0 ? cold : 1.0));
}

bool pkv__fw_init(fw_state *st, uint32_t num_blocks, double p, double cold,
                  double hist) {
  pkv__fw_weights(st->inv_weight, p, cold);
  for (int k = 0; k < FW_CLASSES; k++) pkv__blist_init(&st->q[k]);
  st->last_released = PKV__NIL;
  st->num_blocks = num_blocks;
  st->rec_raw = pkv__malloc((size_t)num_blocks * sizeof(fw_rec) + 63);
  if (st->rec_raw) {
    st->rec = (fw_rec *)(((uintptr_t)st->rec_raw + 63) & ~(uintptr_t)63);
    memset(st->rec, 0, (size_t)num_blocks * sizeof(fw_rec));
    for (uint32_t b = 0; b < num_blocks; b++)
      st->rec[b].prev = st->rec[b].next = PKV__NIL;
    st->nodes.prev = &st->rec[0].prev;
    st->nodes.next = &st->rec[0].next;
    st->nodes.shift = 4; /* 64-byte records = 16 int32_t */
  }
  return st->rec_raw &&
         pkv__ghost_alloc(&st->hist, pkv__ghost_cap(hist, num_blocks)) &&
         pkv__kmap_alloc(&st->blocks, num_blocks);
}

enum { FW_ARG_P, FW_ARG_COLD, FW_ARG_HIST };
static const pkv__policy_arg fw_args[] = {
    [FW_ARG_P] = {"p", 2, 0, 4, false},
    [FW_ARG_COLD] = {"cold", 0.1, 0.01, 1, false},
    [FW_ARG_HIST] = {"hist", 8, 0, 64, false},
};

static bool fw_setup(void *state, uint32_t num_blocks, const double *arg) {
  return pkv__fw_init(state, num_blocks, arg[FW_ARG_P], arg[FW_ARG_COLD],
                      arg[FW_ARG_HIST]);
}

static void fw_fini(void *state) { pkv__fw_fini(state); }

static const pkv__policy_desc fw_desc = {
    .name = "fwlru", .size = sizeof(fw_state), .setup = fw_setup,
    .fini = fw_fini, .args = fw_args, .n_args = PKV__NELEMS(fw_args),
};
PKV__POLICY_LIFECYCLE(pkv__fw, fw_desc)

static bool same_key(pkv_hash128 a, pkv_hash128 b) {
  return a.lo == b.lo && a.hi == b.hi;
}

static uint8_t class_of(const fw_state *st, int32_t block) {
  return st->rec[block].uses >= FW_CLASSES ? FW_CLASSES - 1
                                       : (uint8_t)(st->rec[block].uses - 1);
}

static bool has_parent(const fw_state *st, int32_t c) {
  static const pkv_hash128 none = {0, 0};
  return !same_key(st->rec[c].parent, none);
}

/* Whether p is the held block whose key is c's parent key.  Keys of held
 * blocks are unique, so this is what the key map would answer. */
static bool is_parent(const fw_state *st, int32_t c, int32_t p) {
  return p >= 0 && (uint32_t)p < st->num_blocks && st->rec[p].where != FW_ABSENT &&
         same_key(st->rec[p].key, st->rec[c].parent);
}

/* c's parent among the held blocks, or -1: the hint if it checks out (the
 * manager's link in meta, or the id found last time), else the key map. */
static int32_t parent_of(const fw_state *st, int32_t c, int32_t hint) {
  if (!has_parent(st, c)) return PKV__NIL;
  if (is_parent(st, c, hint)) return hint;
  return pkv__kmap_get(&st->blocks, st->rec[c].parent);
}

/* A parent is used at least as often as its children (every match of a
 * child matched the parent).  When a child's count exceeds its parent's —
 * the parent was evicted and recomputed, and its count forgotten — raise
 * the parent's, and so on up the chain (at most FW_LIFT_LEVELS), moving an
 * evictable parent to its new class.  Otherwise a recomputed root would be evicted first again and
 * again, leaving its children cached but unreachable. */
static void lift_parents(fw_state *st, int32_t block) {
  int32_t c = block;
  for (int level = 0; level < FW_LIFT_LEVELS && has_parent(st, c); level++) {
    int32_t p = parent_of(st, c, st->rec[c].pblock);
    st->rec[c].pblock = p;
    if (p < 0 || st->rec[p].uses >= st->rec[c].uses) return;
    st->rec[p].uses = st->rec[c].uses;
    uint8_t k = class_of(st, p);
    if (st->rec[p].where == FW_EVICTABLE && k != st->rec[p].cls) {
      pkv__blist_move(&st->q[st->rec[p].cls], &st->q[k], &st->nodes, p);
      st->rec[p].cls = k;
    }
    c = p;
  }
}

void pkv__fw_on_insert(void *state, int32_t block,
                         const pkv_block_meta *meta) {
  fw_state *st = state;
  /* Three independent misses on a large pool (ghost bucket, key map slot,
   * parent's record): start them together. */
  pkv__ghost_prefetch(&st->hist, meta->key);
  pkv__kmap_prefetch(&st->blocks, meta->key);
  int32_t hint = meta->parent_block;
  if (hint >= 0 && (uint32_t)hint < st->num_blocks)
    __builtin_prefetch(&st->rec[hint].key);
  int before = pkv__ghost_take(&st->hist, meta->key);
  st->rec[block].uses = (uint8_t)(before < 0 ? 1
                              : before >= FW_MAX_USES ? FW_MAX_USES
                                                      : before + 1);
  st->rec[block].key = meta->key;
  st->rec[block].parent = meta->parent;
  st->rec[block].where = FW_IN_USE;
  pkv__kmap_put(&st->blocks, meta->key, block);
  st->rec[block].pblock = parent_of(st, block, hint);
  lift_parents(st, block);
}

void pkv__fw_on_hit(void *state, int32_t block,
                      const pkv_block_meta *meta) {
  (void)meta;
  fw_state *st = state;
  if (st->rec[block].uses < FW_MAX_USES) st->rec[block].uses++;
}

void pkv__fw_on_evictable(void *state, int32_t block,
                            const pkv_block_meta *meta) {
  (void)meta;
  fw_state *st = state;
  if (st->rec[block].where == FW_EVICTABLE) return;
  uint8_t k = class_of(st, block);
  pkv__blist *q = &st->q[k];
  st->clock++;
  int32_t prev = st->last_released;
  bool chained = prev != PKV__NIL && st->rec[prev].where == FW_EVICTABLE &&
                 st->rec[prev].cls == k;
  if (chained && same_key(st->rec[block].parent, st->rec[prev].key)) {
    /* child released after its parent: it goes first, so before it */
    pkv__blist_insert_before(q, &st->nodes, prev, block);
    st->rec[block].stamp = st->rec[prev].stamp;
  } else if (chained && same_key(st->rec[block].key, st->rec[prev].parent)) {
    pkv__blist_insert_after(q, &st->nodes, prev, block);
    st->rec[block].stamp = st->rec[prev].stamp;
  } else {
    pkv__blist_push_tail(q, &st->nodes, block);
    st->rec[block].stamp = st->clock;
  }
  st->rec[block].cls = k;
  st->rec[block].where = FW_EVICTABLE;
  st->last_released = block;
  lift_parents(st, block);
}

/* Takes block off its class list if it is there and records where it
 * goes. */
PKV__HOT void leave(fw_state *st, int32_t block, uint8_t to) {
  pkv__blist_leave(&st->q[st->rec[block].cls], &st->nodes, block,
                   &st->rec[block].where, FW_EVICTABLE, to);
}

void pkv__fw_on_pinned(void *state, int32_t block,
                         const pkv_block_meta *meta) {
  (void)meta;
  leave(state, block, FW_IN_USE);
}

int32_t pkv__fw_pick(const pkv__blist q[FW_CLASSES],
                     const double inv_weight[FW_CLASSES], uint64_t clock,
                     const uint64_t *stamp0, uint32_t shift) {
  int32_t best = PKV__NIL;
  double best_score = 0;
  for (int k = 0; k < FW_CLASSES; k++) {
    int32_t b = q[k].head;
    if (b == PKV__NIL) continue;
    double score = (double)(clock - stamp0[(size_t)b << shift] + 1) * inv_weight[k];
    if (best == PKV__NIL || score > best_score) {
      best = b;
      best_score = score;
    }
  }
  return best;
}

int32_t pkv__fw_choose_victim(void *state, uint64_t now) {
  (void)now;
  const fw_state *st = state;
  return pkv__fw_pick(st->q, st->inv_weight, st->clock, &st->rec[0].stamp, 3);
}

void pkv__fw_on_remove(void *state, int32_t block) {
  fw_state *st = state;
  bool held = st->rec[block].where != FW_ABSENT;
  if (held) {
    pkv__ghost_prefetch(&st->hist, st->rec[block].key);
    pkv__kmap_prefetch(&st->blocks, st->rec[block].key);
  }
  leave(st, block, FW_ABSENT);
  if (held) {
    pkv__ghost_add(&st->hist, st->rec[block].key, st->rec[block].uses);
    pkv__kmap_del(&st->blocks, st->rec[block].key, block);
  }
}

/* The class pkv__fw_check expects block b in. */
static int64_t class_recorded(const void *state, int32_t b) {
  return ((const fw_state *)state)->rec[b].cls;
}

int pkv__fw_check(const void *state, const uint8_t *evictable,
                  uint32_t num_blocks, char *msg, size_t cap) {
  const fw_state *st = state;
  int rc = 0;
  for (uint32_t b = 0; b < num_blocks && !rc; b++)
    rc = pkv__policy_check_block((int32_t)b, st->rec[b].where == FW_EVICTABLE,
                                 evictable, msg, cap);
  const pkv__check_lists c = {
      .lists = st->q, .n_lists = FW_CLASSES, .nodes = &st->nodes,
      .what = "fwlru class", .recorded = class_recorded, .state = st};
  return rc ? rc : pkv__policy_check_lists(&c, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_fwlru = PKV__POLICY_OPS("fwlru", pkv__fw);
