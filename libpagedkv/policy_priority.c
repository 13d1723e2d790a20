/*
 * policy_priority.c — retention priorities, TensorRT-LLM style.
 *
 * Each block carries a priority 0..100 (meta.priority, 35 = default) and an
 * optional deadline (meta.priority_until, a clock value; 0 = never) after
 * which it counts as the default priority.  The lowest effective priority
 * goes first; within a priority, the least recently released.
 *
 * Structures, all over per-block arrays sized num_blocks:
 *
 *   main     min-heap of the evictable blocks on (applied priority, release
 *            stamp).  "Applied" = own priority, or 35 once a hook has seen
 *            the deadline pass.
 *   expiry   min-heap on deadline of the evictable blocks whose own,
 *            non-default priority has not yet been replaced by 35.
 *
 * Every hook that knows the time (meta.now) first applies the deadlines that
 * have passed: pops them from expiry and re-keys them in main to (35, same
 * stamp).  choose_victim(now) must not change state, yet deadlines may have
 * passed since the last hook; it finds the exact answer without mutating:
 *
 *   - blocks expired since the last hook ("stale") are exactly the entries
 *     of expiry with deadline <= now, found by walking the top of that heap
 *     (O(k) for k stale blocks); each competes with key (35, stamp);
 *   - among the other blocks, the minimum of main is found by walking main
 *     from the root, stepping over stale nodes into their children: a
 *     non-stale node's stored key is its true key and, by heap order, no
 *     greater than any non-stale node below it.
 *
 * k is the number of deadlines passed since the last hook, normally 0 or a
 * few, so choose_victim is O(log n) in practice and every other hook
 * O(log n) amortized.
 */
#include "policy_util.h"

typedef struct prio_state {
  uint64_t clock;   /* releases so far */
  uint8_t *prio;    /* own priority, 0..100 */
  uint64_t *until;  /* own deadline, 0 = never */
  int32_t *stack;   /* choose_victim's walk, num_blocks entries */
  pkv__bheap main;   /* k1 = applied priority, k2 = release stamp */
  pkv__bheap expiry; /* k1 = deadline */
} prio_state;

static void prio_destroy(void *state) {
  prio_state *st = state;
  if (!st) return;
  pkv__bheap_free(&st->main);
  pkv__bheap_free(&st->expiry);
  pkv__free(st->prio);
  pkv__free(st->until);
  pkv__free(st->stack);
  pkv__free(st);
}

static int prio_create(void **out, uint32_t num_blocks, const char *args) {
  int rc = pkv__policy_check_create("priority", out, num_blocks);
  if (!rc) rc = pkv__policy_args_parse("priority", args, NULL, 0);
  if (rc) return rc;
  prio_state *st = pkv__calloc(1, sizeof *st);
  if (!st) return pkv__err(PKV_ENOMEM, "policy priority: state allocation");
  st->prio = pkv__calloc(num_blocks, 1);
  st->until = pkv__calloc(num_blocks, sizeof(uint64_t));
  st->stack = pkv__malloc(sizeof(int32_t) * num_blocks);
  if (!st->prio || !st->until || !st->stack ||
      !pkv__bheap_alloc(&st->main, num_blocks) ||
      !pkv__bheap_alloc(&st->expiry, num_blocks)) {
    prio_destroy(st);
    return pkv__err(PKV_ENOMEM, "policy priority: %u-block arrays",
                    num_blocks);
  }
  *out = st;
  return 0;
}

/* Deadlines passed by now: the block falls back to the default priority. */
static void apply_expiries(prio_state *st, uint64_t now) {
  for (;;) {
    int32_t b = pkv__bheap_top(&st->expiry);
    if (b == PKV__NIL || st->until[b] > now) return;
    pkv__bheap_remove(&st->expiry, b);
    pkv__bheap_set(&st->main, b, PKV__PRIORITY_DEFAULT,
                   pkv__bheap_k2(&st->main, b));
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
  pkv__bheap_set(&st->main, block, p, ++st->clock);
  if (p != PKV__PRIORITY_DEFAULT && st->until[block] != 0)
    pkv__bheap_set(&st->expiry, block, st->until[block], 0);
  else
    pkv__bheap_remove(&st->expiry, block);
}

static void prio_on_pinned(void *state, int32_t block,
                           const pkv_block_meta *meta) {
  prio_state *st = state;
  apply_expiries(st, meta->now);
  pkv__bheap_remove(&st->main, block);
  pkv__bheap_remove(&st->expiry, block);
}

static void prio_on_remove(void *state, int32_t block) {
  prio_state *st = state;
  pkv__bheap_remove(&st->main, block);
  pkv__bheap_remove(&st->expiry, block);
}

/* Stale: its deadline passed after the last hook applied deadlines. */
static bool is_stale(const prio_state *st, int32_t b, uint64_t now) {
  return pkv__bheap_has(&st->expiry, b) && st->until[b] <= now;
}

static bool key_less(uint64_t p1, uint64_t s1, uint64_t p2, uint64_t s2) {
  return p1 < p2 || (p1 == p2 && s1 < s2);
}

/* Pushes the children of heap entry i onto the walk's stack. */
static uint32_t push_children(int32_t *stack, uint32_t top, uint32_t i,
                              uint32_t len) {
  for (uint32_t c = PKV__HEAP_ARITY * i + 1;
       c <= PKV__HEAP_ARITY * i + PKV__HEAP_ARITY && c < len; c++)
    stack[top++] = (int32_t)c;
  return top;
}

static int32_t prio_choose_victim(void *state, uint64_t now) {
  const prio_state *st = state;
  int32_t best = PKV__NIL;
  uint64_t best_p = 0, best_s = 0;
  /* Walk 1: main from the root, through stale nodes to their children. */
  uint32_t top = 0;
  if (st->main.len) st->stack[top++] = 0;
  while (top) {
    const pkv__bheap_ent *e = &st->main.ent[st->stack[--top]];
    if (is_stale(st, e->block, now)) {
      top = push_children(st->stack, top, (uint32_t)(e - st->main.ent),
                          st->main.len);
      continue;
    }
    if (best == PKV__NIL || key_less(e->k1, e->k2, best_p, best_s)) {
      best = e->block;
      best_p = e->k1;
      best_s = e->k2;
    }
  }
  /* Walk 2: the stale blocks, at the default priority. */
  if (st->expiry.len) st->stack[top++] = 0;
  while (top) {
    uint32_t i = (uint32_t)st->stack[--top];
    int32_t b = st->expiry.ent[i].block;
    if (st->until[b] > now) continue; /* nothing below is stale either */
    uint64_t stamp = pkv__bheap_k2(&st->main, b);
    if (best == PKV__NIL ||
        key_less(PKV__PRIORITY_DEFAULT, stamp, best_p, best_s)) {
      best = b;
      best_p = PKV__PRIORITY_DEFAULT;
      best_s = stamp;
    }
    top = push_children(st->stack, top, i, st->expiry.len);
  }
  return best;
}

const pkv_policy_ops pkv__policy_priority = {
    .version = PKV_POLICY_VERSION,
    .name = "priority",
    .create = prio_create,
    .destroy = prio_destroy,
    .on_insert = prio_on_insert,
    .on_hit = prio_on_hit,
    .on_evictable = prio_on_evictable,
    .on_pinned = prio_on_pinned,
    .choose_victim = prio_choose_victim,
    .on_remove = prio_on_remove,
};
