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

#include <string.h>

#define PRIO_LEVELS (PKV__PRIORITY_MAX + 1)
#define PRIO_LATE PRIO_LEVELS /* where[]: in late */
#define PRIO_OUT 0xff         /* where[]: not evictable */

typedef struct prio_state {
  uint64_t clock;   /* releases so far */
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

static void prio_destroy(void *state) {
  prio_state *st = state;
  if (!st) return;
  pkv__bnodes_free(&st->nodes);
  pkv__bset_free(&st->busy);
  pkv__bheap_free(&st->late);
  pkv__bheap_free(&st->expiry);
  pkv__free(st->prio);
  pkv__free(st->where);
  pkv__free(st->until);
  pkv__free(st->stamp);
  pkv__free(st->stack);
  pkv__free(st);
}

static int prio_create(void **out, uint32_t num_blocks, const char *args) {
  int rc;
  prio_state *st = pkv__policy_state_new("priority", out, num_blocks, args,
                                         NULL, 0, sizeof *st, &rc);
  if (!st) return rc;
  for (uint32_t p = 0; p < PRIO_LEVELS; p++) pkv__blist_init(&st->level[p]);
  st->prio = pkv__calloc(num_blocks, 1);
  st->where = pkv__malloc(num_blocks);
  st->until = pkv__calloc(num_blocks, sizeof(uint64_t));
  st->stamp = pkv__calloc(num_blocks, sizeof(uint64_t));
  st->stack = pkv__malloc(sizeof(int32_t) * num_blocks);
  if (!st->prio || !st->where || !st->until || !st->stamp || !st->stack ||
      !pkv__bnodes_alloc(&st->nodes, num_blocks) ||
      !pkv__bset_alloc(&st->busy, PRIO_LEVELS) ||
      !pkv__bheap_alloc(&st->late, num_blocks) ||
      !pkv__bheap_alloc(&st->expiry, num_blocks)) {
    prio_destroy(st);
    return pkv__err(PKV_ENOMEM, "policy priority: %u-block arrays",
                    num_blocks);
  }
  memset(st->where, PRIO_OUT, num_blocks);
  *out = st;
  return 0;
}

/* Takes block off its level or out of late. */
static void unlink_block(prio_state *st, int32_t block) {
  uint8_t w = st->where[block];
  if (w < PRIO_LEVELS) {
    pkv__blist_unlink(&st->level[w], &st->nodes, block);
    if (!st->level[w].len) pkv__bset_clear(&st->busy, w);
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
  if (!st->level[p].len) pkv__bset_set(&st->busy, p);
  pkv__blist_push_tail(&st->level[p], &st->nodes, block);
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

static int prio_check(const void *state, const uint8_t *evictable,
                      uint32_t num_blocks, char *msg, size_t cap) {
  const prio_state *st = state;
  int rc = 0;
  for (uint32_t b = 0; b < num_blocks && !rc; b++)
    rc = pkv__policy_check_block((int32_t)b, st->where[b] != PRIO_OUT, evictable,
                                 msg, cap);
  uint64_t total = 0, deadlines = 0;
  for (uint32_t p = 0; p < PRIO_LEVELS && !rc; p++) {
    const pkv__blist *l = &st->level[p];
    if ((l->len != 0) != pkv__bset_test(&st->busy, p))
      return pkv__policy_check_fail(msg, cap, "level %u: %u blocks, busy bit "
                                    "%d", p, l->len, pkv__bset_test(&st->busy, p));
    rc = pkv__blist_check(l, &st->nodes, evictable, num_blocks, "priority level",
                          &total, msg, cap);
    for (int32_t b = l->head; !rc && b != PKV__NIL; b = *pkv__bn_next(&st->nodes, b))
      if (st->where[b] != p)
        rc = pkv__policy_check_fail(msg, cap, "block %d on level %u, recorded "
                                    "at %u", b, p, st->where[b]);
  }
  if (!rc) rc = pkv__bheap_check(&st->late, evictable, num_blocks, "late heap",
                                 &total, msg, cap);
  for (uint32_t i = 0; !rc && i < st->late.len; i++)
    if (st->where[st->late.ent[i].block] != PRIO_LATE)
      rc = pkv__policy_check_fail(msg, cap, "late heap holds block %d, "
                                  "recorded elsewhere", st->late.ent[i].block);
  if (!rc) rc = pkv__bheap_check(&st->expiry, evictable, num_blocks,
                                 "deadline heap", &deadlines, msg, cap);
  return rc ? rc : pkv__policy_check_total(total, evictable, num_blocks, msg, cap);
}

const pkv_policy_ops pkv__policy_priority = PKV__POLICY_OPS("priority", prio);
