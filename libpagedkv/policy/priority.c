/*
 * policy/priority.c — retention priorities, TensorRT-LLM style.
 *
 * Each block carries a priority 0..100 (meta.priority, 35 = default) and an
 * optional deadline (meta.priority_until, a clock value; 0 = never) after
 * which it counts as the default priority.  The lowest effective priority
 * goes first; within a priority, the least recently released.
 *
 * Structures, all over per-block arrays sized num_blocks:
 *
 *   level[p] for p = 0..100: an intrusive list of the evictable blocks whose
 *            applied priority is p, in release order (a release pushes at
 *            the tail with the newest stamp, so each list is sorted).
 *            "Applied" = own priority, or 35 once a hook has seen the
 *            deadline pass.  A bitset marks the non-empty levels, so the
 *            lowest is a count-trailing-zeros away.
 *   late     min-heap on release stamp of the blocks whose deadline a hook
 *            applied: they compete at 35 with their old stamp, which may be
 *            older than level[35]'s head, so they cannot join that list.
 *   expiry   min-heap on deadline of the evictable blocks whose own,
 *            non-default priority has not yet been replaced by 35.
 *
 * Every hook that knows the time (meta.now) first applies the deadlines that
 * have passed: pops them from expiry, moves them from their level to late.
 * choose_victim(now) must not change state, yet deadlines may have passed
 * since the last hook ("stale" blocks: exactly the entries of expiry with
 * deadline <= now, found by walking the top of that heap); it answers
 * exactly without mutating:
 *
 *   1. levels 0..34 in order: the first block of a level that is not stale
 *      wins (a stale one really sits at 35, so it is stepped over);
 *   2. else at 35: the least stamp among level[35]'s head, late's top and
 *      the stale blocks;
 *   3. else the head of the lowest non-empty level above 35 (no block is
 *      stale, or step 2 would have found it).
 *
 * The steps over stale blocks cost O(k) for k deadlines passed since the
 * last hook, normally 0 or a few.  So choose_victim and the hooks are O(1)
 * but for the heaps, which hold only blocks with deadlines: O(log d) for d
 * such blocks.  A pool without deadlines never touches a heap.
 */
#include "policy/util.h"


#define PRIO_LEVELS (PKV__PRIORITY_MAX + 1)
#define PRIO_LATE PRIO_LEVELS /* where[]: in late */
#define PRIO_OUT 0xff         /* where[]: not evictable */

typedef struct prio_state {
  uint64_t clock;   /* releases so far */
  uint32_t n_levels; /* PRIO_LEVELS (the busy set's size) */
  uint8_t *prio;    /* own priority, 0..100 */
  uint8_t *where;   /* level 0..100, PRIO_LATE or PRIO_OUT */
  uint64_t *until;  /* own deadline, 0 = never */
  uint64_t *stamp;  /* release stamp */
  int32_t *stack;   /* choose_victim's walk, num_blocks entries */
  pkv__bnodes nodes;
  pkv__blist level[PRIO_LEVELS];
  pkv__bset busy;    /* non-empty levels */
  pkv__bheap late;   /* k1 = release stamp */
  pkv__bheap expiry; /* k1 = deadline */
} prio_state;

static bool prio_setup(void *state, uint32_t num_blocks, const double *arg) {
  (void)num_blocks, (void)arg;
  ((prio_state *)state)->n_levels = PRIO_LEVELS;
  return true;
}

static const pkv__policy_part prio_parts[] = {
    PKV__PART_ARRAYS_OF(prio_state, 0, prio, until, stamp, stack),
    PKV__PART_ARRAY_OF(prio_state, where, PRIO_OUT),
    PKV__PART_INLINE_LISTS_OF(prio_state, level),
    PKV__PART_OF(PKV__PART_BNODES, prio_state, nodes),
    PKV__PART_N(PKV__PART_BSET, prio_state, busy, n_levels),
    PKV__PART_OF(PKV__PART_BHEAP, prio_state, late),
    PKV__PART_OF(PKV__PART_BHEAP, prio_state, expiry),
};
static const pkv__policy_desc prio_desc = {
    .name = "priority", .size = sizeof(prio_state), .setup = prio_setup,
    .parts = prio_parts, .n_parts = PKV__NELEMS(prio_parts),
};
PKV__POLICY_LIFECYCLE(prio, prio_desc)

/* Takes block off its level or out of late. */
static void unlink_block(prio_state *st, int32_t block) {
  uint8_t w = st->where[block];
  if (w < PRIO_LEVELS) {
    pkv__blists_unlink(st->level, &st->busy, &st->nodes, w, block);
  } else if (w == PRIO_LATE) {
    pkv__bheap_remove(&st->late, block);
  }
  st->where[block] = PRIO_OUT;
}

/* Deadlines passed by now: the block falls back to the default priority. */
static void apply_expiries(prio_state *st, uint64_t now) {
  for (;;) {
    int32_t b = pkv__bheap_top(&st->expiry);
    if (b == PKV__NIL || st->until[b] > now) return;
    pkv__bheap_remove(&st->expiry, b);
    unlink_block(st, b);
    pkv__bheap_set(&st->late, b, st->stamp[b], 0);
    st->where[b] = PRIO_LATE;
  }
}

static void remember(prio_state *st, int32_t block,
                     const pkv_block_meta *meta) {
  st->prio[block] = (uint8_t)(meta->priority > PKV__PRIORITY_MAX
                                  ? PKV__PRIORITY_MAX : meta->priority);
  st->until[block] = meta->priority_until;
}

static void prio_on_insert(void *state, int32_t block,
                           const pkv_block_meta *meta) {
  prio_state *st = state;
  apply_expiries(st, meta->now);
  remember(st, block, meta);
}

static void prio_on_hit(void *state, int32_t block,
                        const pkv_block_meta *meta) {
  (void)block;
  apply_expiries(state, meta->now);
}

static void prio_on_evictable(void *state, int32_t block,
                              const pkv_block_meta *meta) {
  prio_state *st = state;
  apply_expiries(st, meta->now);
  uint32_t p = pkv__meta_priority(meta, meta->now);
  remember(st, block, meta);
  unlink_block(st, block);
  st->stamp[block] = ++st->clock;
  pkv__blists_push(st->level, &st->busy, &st->nodes, p, block);
  st->where[block] = (uint8_t)p;
  if (p != PKV__PRIORITY_DEFAULT && st->until[block] != 0)
    pkv__bheap_set(&st->expiry, block, st->until[block], 0);
  else
    pkv__bheap_remove(&st->expiry, block);
}

static void prio_on_pinned(void *state, int32_t block,
                           const pkv_block_meta *meta) {
  prio_state *st = state;
  apply_expiries(st, meta->now);
  unlink_block(st, block);
  pkv__bheap_remove(&st->expiry, block);
}

static void prio_on_remove(void *state, int32_t block) {
  prio_state *st = state;
  unlink_block(st, block);
  pkv__bheap_remove(&st->expiry, block);
}

/* Stale: its deadline passed after the last hook applied deadlines. */
static bool is_stale(const prio_state *st, int32_t b, uint64_t now) {
  return pkv__bheap_has(&st->expiry, b) && st->until[b] <= now;
}

/* First block of level p that is not stale, or -1. */
static int32_t first_fresh(const prio_state *st, uint32_t p, uint64_t now) {
  int32_t b = st->level[p].head;
  while (b != PKV__NIL && is_stale(st, b, now)) b = *pkv__bn_next(&st->nodes, b);
  return b;
}

/* Pushes the children of heap entry i onto the walk's stack. */
static uint32_t push_children(int32_t *stack, uint32_t top, uint32_t i,
                              uint32_t len) {
  for (uint32_t c = PKV__HEAP_ARITY * i + 1;
       c <= PKV__HEAP_ARITY * i + PKV__HEAP_ARITY && c < len; c++)
    stack[top++] = (int32_t)c;
  return top;
}

static void keep_oldest(const prio_state *st, int32_t b, int32_t *best) {
  if (b != PKV__NIL && (*best == PKV__NIL || st->stamp[b] < st->stamp[*best]))
    *best = b;
}

static int32_t prio_choose_victim(void *state, uint64_t now) {
  const prio_state *st = state;
  /* 1. below the default */
  for (int64_t p = pkv__bset_first(&st->busy);
       p >= 0 && p < PKV__PRIORITY_DEFAULT;
       p = pkv__bset_next(&st->busy, (uint64_t)p + 1)) {
    int32_t b = first_fresh(st, (uint32_t)p, now);
    if (b != PKV__NIL) return b;
  }
  /* 2. at the default: level 35, late, and the stale blocks */
  int32_t best = PKV__NIL;
  keep_oldest(st, st->level[PKV__PRIORITY_DEFAULT].head, &best);
  keep_oldest(st, pkv__bheap_top(&st->late), &best);
  uint32_t top = 0;
  if (st->expiry.len) st->stack[top++] = 0;
  while (top) {
    uint32_t i = (uint32_t)st->stack[--top];
    int32_t b = st->expiry.ent[i].block;
    if (st->until[b] > now) continue; /* nothing below is stale either */
    keep_oldest(st, b, &best);
    top = push_children(st->stack, top, i, st->expiry.len);
  }
  if (best != PKV__NIL) return best;
  /* 3. above the default: nothing is stale here */
  int64_t p = pkv__bset_next(&st->busy, PKV__PRIORITY_DEFAULT + 1);
  return p < 0 ? PKV__NIL : st->level[p].head;
}

/* The level prio_check expects block b on, -1 if b is on none. */
static int64_t level_of(const void *state, int32_t b) {
  const prio_state *st = state;
  return st->where[b] < PRIO_LEVELS ? st->where[b] : -1;
}

static int prio_check(const void *state, const uint8_t *evictable,
                      uint32_t num_blocks, char *msg, size_t cap) {
  const prio_state *st = state;
  uint64_t in_late = 0, deadlines = 0;
  int rc = pkv__bheap_check(&st->late, st->where, PRIO_LATE, evictable,
                            num_blocks, "late heap", &in_late, msg, cap);
  if (!rc) rc = pkv__bheap_check(&st->expiry, NULL, 0, evictable, num_blocks,
                                 "deadline heap", &deadlines, msg, cap);
  const pkv__check_lists c = {
      .where = st->where, .value = PRIO_OUT, .equal = false,
      .lists = st->level, .n_lists = PRIO_LEVELS, .busy = &st->busy,
      .nodes = &st->nodes, .what = "priority level", .recorded = level_of,
      .state = st, .others = in_late};
  return rc ? rc : pkv__policy_check_lists(&c, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_priority = PKV__POLICY_OPS("priority", prio);
