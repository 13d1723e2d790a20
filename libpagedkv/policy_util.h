/*
 * policy_util.h — pieces shared by the built-in eviction policies.
 *
 * Intrusive block lists.  A policy keeps one pair of arrays prev[] / next[]
 * indexed by block id (sized num_blocks, allocated in create) and any number
 * of list heads over them; a block is on at most one list of a given node
 * pair at a time, so pushing, unlinking and moving are O(1) with no
 * allocation.  PKV__NIL ends a list.
 *
 *     head ─► b7 ⇄ b2 ⇄ b9 ◄─ tail        prev[2] = 7, next[2] = 9
 *
 * Arguments.  policy_args is "name=value,name=value" (spaces allowed around
 * the separators).  pkv__policy_args_parse fills numbers from a spec table
 * and refuses an unknown name, a malformed number or one outside [min, max]
 * with PKV_EINVAL and a detail naming the policy and the argument.
 */
#ifndef PKV_POLICY_UTIL_H
#define PKV_POLICY_UTIL_H

#include "internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PKV__NIL ((int32_t)-1)

typedef struct pkv__blist {
  int32_t head; /* oldest end: victims are taken here */
  int32_t tail; /* newest end: pushes go here */
  uint32_t len;
} pkv__blist;

typedef struct pkv__bnodes {
  int32_t *prev;
  int32_t *next;
} pkv__bnodes;

static inline void pkv__blist_init(pkv__blist *l) {
  l->head = l->tail = PKV__NIL;
  l->len = 0;
}

static inline void pkv__blist_push_tail(pkv__blist *l, pkv__bnodes *n,
                                        int32_t b) {
  n->prev[b] = l->tail;
  n->next[b] = PKV__NIL;
  if (l->tail != PKV__NIL)
    n->next[l->tail] = b;
  else
    l->head = b;
  l->tail = b;
  l->len++;
}

static inline void pkv__blist_push_head(pkv__blist *l, pkv__bnodes *n,
                                        int32_t b) {
  n->next[b] = l->head;
  n->prev[b] = PKV__NIL;
  if (l->head != PKV__NIL)
    n->prev[l->head] = b;
  else
    l->tail = b;
  l->head = b;
  l->len++;
}

static inline void pkv__blist_unlink(pkv__blist *l, pkv__bnodes *n,
                                     int32_t b) {
  int32_t p = n->prev[b], x = n->next[b];
  if (p != PKV__NIL) n->next[p] = x; else l->head = x;
  if (x != PKV__NIL) n->prev[x] = p; else l->tail = p;
  n->prev[b] = n->next[b] = PKV__NIL;
  l->len--;
}

/* Allocates prev/next for num_blocks blocks, all unlinked.  false on
 * allocation failure (nothing left allocated). */
bool pkv__bnodes_alloc(pkv__bnodes *n, uint32_t num_blocks);
void pkv__bnodes_free(pkv__bnodes *n);

/* Indexed binary min-heap of blocks, ordered by (k1, k2) lexicographically.
 * pos[b] is b's index in heap[] or -1, so that any block can be removed or
 * re-keyed in O(log n).  All arrays sized num_blocks, allocated once. */
typedef struct pkv__bheap {
  int32_t *heap;
  int32_t *pos;
  uint64_t *k1, *k2; /* per block; valid while pos[b] >= 0 */
  uint32_t len;
} pkv__bheap;

bool pkv__bheap_alloc(pkv__bheap *h, uint32_t num_blocks);
void pkv__bheap_free(pkv__bheap *h);
/* Inserts b (not in the heap) or re-keys it (in the heap). */
void pkv__bheap_set(pkv__bheap *h, int32_t b, uint64_t k1, uint64_t k2);
/* Removes b if it is in the heap. */
void pkv__bheap_remove(pkv__bheap *h, int32_t b);
static inline bool pkv__bheap_has(const pkv__bheap *h, int32_t b) {
  return h->pos[b] >= 0;
}
static inline int32_t pkv__bheap_top(const pkv__bheap *h) {
  return h->len ? h->heap[0] : PKV__NIL;
}
/* (a's keys) < (b's keys). */
static inline bool pkv__bheap_less(const pkv__bheap *h, int32_t a,
                                   int32_t b) {
  return h->k1[a] < h->k1[b] || (h->k1[a] == h->k1[b] && h->k2[a] < h->k2[b]);
}

/* Ghost queue (policy_ghost.c): the last `cap` keys added, with a byte of
 * memory each; add and take are O(1) expected. */
typedef struct pkv__ghost_entry {
  pkv_hash128 key;
  int32_t next, prev; /* bucket chain; prev == -2: dead slot */
  uint8_t value;
} pkv__ghost_entry;

typedef struct pkv__ghost {
  uint32_t cap;  /* ring entries; 0 = no ghost (add and take do nothing) */
  uint32_t head; /* next ring slot to (over)write */
  uint32_t mask; /* hash buckets - 1 */
  int32_t *bucket;
  pkv__ghost_entry *ring;
} pkv__ghost;

/* ratio * num_blocks entries, capped at 2^30. */
uint32_t pkv__ghost_cap(double ratio, uint32_t num_blocks);
/* false on allocation failure (call pkv__ghost_free all the same). */
bool pkv__ghost_alloc(pkv__ghost *g, uint32_t cap);
void pkv__ghost_free(pkv__ghost *g);
/* Adds k as the newest entry; an older entry of k is dropped, and the oldest
 * entry falls out when the ring is full. */
void pkv__ghost_add(pkv__ghost *g, pkv_hash128 k, uint8_t value);
/* Removes k; returns its value, or -1 if k was not there. */
int pkv__ghost_take(pkv__ghost *g, pkv_hash128 k);

/* Checks create's common arguments: out not NULL, 1 <= num_blocks <=
 * INT32_MAX (block ids are int32_t).  0 or PKV_EINVAL with detail. */
int pkv__policy_check_create(const char *policy, void **out,
                             uint32_t num_blocks);

/* One tunable of a policy: value receives the parsed number, which must lie
 * in [min, max]; integral requires a whole number. */
typedef struct pkv__policy_arg {
  const char *name;
  double *value;
  double min, max;
  bool integral;
} pkv__policy_arg;

/* Parses args (NULL or "" = keep every default) against spec.  0 or
 * PKV_EINVAL (pkv__err detail "policy <policy>: ..."); on failure the values
 * already parsed may have changed, so callers parse into locals. */
int pkv__policy_args_parse(const char *policy, const char *args,
                           const pkv__policy_arg *spec, size_t n_spec);

/* Priority of a block at time now: its own while priority_until is 0 or in
 * the future, the default (35) afterwards. */
#define PKV__PRIORITY_DEFAULT 35u
#define PKV__PRIORITY_MAX 100u
static inline uint32_t pkv__meta_priority(const pkv_block_meta *meta,
                                          uint64_t now) {
  uint32_t p = meta->priority > PKV__PRIORITY_MAX ? PKV__PRIORITY_MAX
                                                  : meta->priority;
  if (meta->priority_until != 0 && now >= meta->priority_until)
    return PKV__PRIORITY_DEFAULT;
  return p;
}

/* The built-ins, in the order pkv_policy_names() lists them. */
extern const pkv_policy_ops pkv__policy_lru;
extern const pkv_policy_ops pkv__policy_fifo;
extern const pkv_policy_ops pkv__policy_lfu;
extern const pkv_policy_ops pkv__policy_s3fifo;
extern const pkv_policy_ops pkv__policy_priority;

#endif /* PKV_POLICY_UTIL_H */
