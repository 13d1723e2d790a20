/*
 * policy/util.h — pieces shared by the built-in eviction policies.
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
#define PKV__NELEMS(a) (sizeof(a) / sizeof((a)[0]))
/* The per-block helpers the hooks share: inlined whatever the compiler's
 * size heuristics say, so a hook costs what it did written out by hand. */
#define PKV__HOT static inline __attribute__((always_inline))

typedef struct pkv__blist {
  int32_t head; /* oldest end: victims are taken here */
  int32_t tail; /* newest end: pushes go here */
  uint32_t len;
} pkv__blist;

typedef struct pkv__bnodes {
  int32_t *prev;
  int32_t *next;
  /* log2 of the int32_t elements from one block's link to the next
   * block's: 0 for the plain arrays of pkv__bnodes_alloc; a policy keeping
   * one record per block (a power-of-two size) points prev / next into
   * record 0 and sets log2(record size / 4).  A shift, not a multiply, on
   * every list step. */
  uint32_t shift;
} pkv__bnodes;

static inline int32_t *pkv__bn_prev(const pkv__bnodes *n, int32_t b) {
  return &n->prev[(size_t)b << n->shift];
}
static inline int32_t *pkv__bn_next(const pkv__bnodes *n, int32_t b) {
  return &n->next[(size_t)b << n->shift];
}

static inline void pkv__blist_init(pkv__blist *l) {
  l->head = l->tail = PKV__NIL;
  l->len = 0;
}

/* Links b at the tail (newest end) of l, or at its head. */
static inline void pkv__blist_push_end(pkv__blist *l, pkv__bnodes *n,
                                       int32_t b, bool at_tail) {
  int32_t *end = at_tail ? &l->tail : &l->head;
  int32_t *inward = at_tail ? pkv__bn_prev(n, b) : pkv__bn_next(n, b);
  int32_t *outward = at_tail ? pkv__bn_next(n, b) : pkv__bn_prev(n, b);
  *inward = *end;
  *outward = PKV__NIL;
  if (*end != PKV__NIL)
    *(at_tail ? pkv__bn_next(n, *end) : pkv__bn_prev(n, *end)) = b;
  else
    *(at_tail ? &l->head : &l->tail) = b;
  *end = b;
  l->len++;
}
static inline void pkv__blist_push_tail(pkv__blist *l, pkv__bnodes *n,
                                        int32_t b) {
  pkv__blist_push_end(l, n, b, true);
}
static inline void pkv__blist_push_head(pkv__blist *l, pkv__bnodes *n,
                                        int32_t b) {
  pkv__blist_push_end(l, n, b, false);
}

static inline void pkv__blist_unlink(pkv__blist *l, pkv__bnodes *n,
                                     int32_t b) {
  int32_t p = *pkv__bn_prev(n, b), x = *pkv__bn_next(n, b);
  if (p != PKV__NIL) *pkv__bn_next(n, p) = x; else l->head = x;
  if (x != PKV__NIL) *pkv__bn_prev(n, x) = p; else l->tail = p;
  *pkv__bn_prev(n, b) = *pkv__bn_next(n, b) = PKV__NIL;
  l->len--;
}

/* Inserts b (on no list) just before / after at, which is on l. */
static inline void pkv__blist_insert_before(pkv__blist *l, pkv__bnodes *n,
                                            int32_t at, int32_t b) {
  int32_t p = *pkv__bn_prev(n, at);
  *pkv__bn_prev(n, b) = p;
  *pkv__bn_next(n, b) = at;
  *pkv__bn_prev(n, at) = b;
  if (p != PKV__NIL) *pkv__bn_next(n, p) = b; else l->head = b;
  l->len++;
}

static inline void pkv__blist_insert_after(pkv__blist *l, pkv__bnodes *n,
                                           int32_t at, int32_t b) {
  int32_t x = *pkv__bn_next(n, at);
  *pkv__bn_next(n, b) = x;
  *pkv__bn_prev(n, b) = at;
  *pkv__bn_next(n, at) = b;
  if (x != PKV__NIL) *pkv__bn_prev(n, x) = b; else l->tail = b;
  l->len++;
}

/* Moves b (on from) to the tail of to (which may be from: b becomes its
 * newest). */
PKV__HOT void pkv__blist_move(pkv__blist *from, pkv__blist *to,
                                   pkv__bnodes *n, int32_t b) {
  pkv__blist_unlink(from, n, b);
  pkv__blist_push_tail(to, n, b);
}

/* The per-block step every list-keeping built-in takes when a block leaves
 * its candidacy (pinned, removed) or re-enters it: *where is the policy's
 * record of b; b is on l exactly when *where == on.  Takes b off l if it
 * is there, records to, and says whether b was there. */
PKV__HOT bool pkv__blist_leave(pkv__blist *l, pkv__bnodes *n, int32_t b,
                                    uint8_t *where, uint8_t on, uint8_t to) {
  bool was_on = *where == on;
  if (was_on) pkv__blist_unlink(l, n, b);
  *where = to;
  return was_on;
}

/* Allocates prev/next for num_blocks blocks, all unlinked.  false on
 * allocation failure (nothing left allocated). */
bool pkv__bnodes_alloc(pkv__bnodes *n, uint32_t num_blocks);
void pkv__bnodes_free(pkv__bnodes *n);

/* Indexed 4-ary min-heap of blocks, ordered by (k1, k2) lexicographically.
 * Keys live inside the heap entries, so a sift reads contiguous memory;
 * pos[b] is b's entry index or -1, so that any block can be removed or
 * re-keyed in O(log n).  Arrays sized num_blocks, allocated once. */
#define PKV__HEAP_ARITY 4
typedef struct pkv__bheap_ent {
  uint64_t k1, k2;
  int32_t block;
} pkv__bheap_ent;

typedef struct pkv__bheap {
  pkv__bheap_ent *ent;
  int32_t *pos;
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
  return h->len ? h->ent[0].block : PKV__NIL;
}
/* Keys of b, which must be in the heap. */
static inline uint64_t pkv__bheap_k1(const pkv__bheap *h, int32_t b) {
  return h->ent[h->pos[b]].k1;
}
static inline uint64_t pkv__bheap_k2(const pkv__bheap *h, int32_t b) {
  return h->ent[h->pos[b]].k2;
}

/* Hierarchical bitset over [0, n): level 0 holds the bits, each word of
 * level k+1 says which words of level k are non-zero, the top level is one
 * word.  set / clear touch one word per level until a word's emptiness does
 * not change; first / next descend with count-trailing-zeros, so with
 * 64-bit words a 2^18-bit set answers in 3 steps.  Used as an ordered set
 * of small integers (positions, priority levels, key buckets). */
#define PKV__BSET_MAX_LEVELS 6
typedef struct pkv__bset {
  uint32_t levels;
  uint32_t words[PKV__BSET_MAX_LEVELS]; /* words per level */
  uint64_t *lv[PKV__BSET_MAX_LEVELS];   /* one allocation, lv[0] first */
} pkv__bset;

/* All bits clear.  false on allocation failure (nothing left allocated). */
bool pkv__bset_alloc(pkv__bset *s, uint64_t n);
void pkv__bset_free(pkv__bset *s);
static inline bool pkv__bset_test(const pkv__bset *s, uint64_t i) {
  return (s->lv[0][i >> 6] >> (i & 63)) & 1;
}
static inline void pkv__bset_set(pkv__bset *s, uint64_t i) {
  for (uint32_t k = 0; k < s->levels; k++, i >>= 6) {
    uint64_t *w = &s->lv[k][i >> 6], was = *w;
    *w = was | 1ull << (i & 63);
    if (was) return;
  }
}
static inline void pkv__bset_clear(pkv__bset *s, uint64_t i) {
  for (uint32_t k = 0; k < s->levels; k++, i >>= 6) {
    uint64_t *w = &s->lv[k][i >> 6];
    *w &= ~(1ull << (i & 63));
    if (*w) return;
  }
}
/* Smallest set bit, or -1. */
static inline int64_t pkv__bset_first(const pkv__bset *s) {
  uint64_t i = 0;
  for (uint32_t k = s->levels; k-- > 0;) {
    uint64_t w = s->lv[k][i];
    if (!w) return -1; /* only possible at the top */
    i = i << 6 | (uint64_t)__builtin_ctzll(w);
  }
  return (int64_t)i;
}
/* Smallest set bit >= i (i may be >= n), or -1. */
int64_t pkv__bset_next(const pkv__bset *s, uint64_t i);

/* A family of lists indexed by a small key (a priority level, a ring
 * bucket) with a bit set of the non-empty keys, so that the least
 * non-empty one is a few count-trailing-zeros away (policy/lfu.c,
 * policy/priority.c).  Push at list i's tail / unlink from list i, keeping
 * bit i equal to "list i is not empty". */
PKV__HOT void pkv__blists_push(pkv__blist *lists, pkv__bset *busy,
                                    pkv__bnodes *n, uint32_t i, int32_t b) {
  if (!lists[i].len) pkv__bset_set(busy, i);
  pkv__blist_push_tail(&lists[i], n, b);
}
PKV__HOT void pkv__blists_unlink(pkv__blist *lists, pkv__bset *busy,
                                      pkv__bnodes *n, uint32_t i, int32_t b) {
  pkv__blist_unlink(&lists[i], n, b);
  if (!lists[i].len) pkv__bset_clear(busy, i);
}
static inline void pkv__blists_init(pkv__blist *lists, uint32_t n_lists) {
  for (uint32_t i = 0; i < n_lists; i++) pkv__blist_init(&lists[i]);
}

/* Keys are XXH3 output in production but may be anything (tests, traces
 * with small integer ids), so ghost and kmap mix them (murmur3's
 * finalizer) before taking a bucket. */
static inline uint64_t pkv__key_mix(pkv_hash128 k) {
  uint64_t x = k.lo ^ (k.hi << 32 | k.hi >> 32);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* Ghost queue (policy/ghost.c): about the last `cap` keys added, with a
 * byte of memory each; add and take cost one cache line. */
#define PKV__GHOST_WAYS 4 /* slots per 64-byte bucket */
typedef struct pkv__ghost_slot {
  uint64_t fp;    /* key fingerprint; 0 = empty */
  uint32_t stamp; /* ghost clock at add (wraps; compared by difference) */
  uint8_t value;
} pkv__ghost_slot;

typedef struct pkv__ghost {
  uint32_t cap;   /* keys remembered; 0 = no ghost (add/take do nothing) */
  uint32_t clock; /* adds so far */
  uint32_t mask;  /* buckets - 1 */
  pkv__ghost_slot *slot; /* buckets * 4, 64-byte aligned */
  void *raw;             /* what was allocated */
} pkv__ghost;

/* ratio * num_blocks entries, capped at 2^28. */
uint32_t pkv__ghost_cap(double ratio, uint32_t num_blocks);
/* false on allocation failure (call pkv__ghost_free all the same). */
bool pkv__ghost_alloc(pkv__ghost *g, uint32_t cap);
void pkv__ghost_free(pkv__ghost *g);
/* Adds k as the newest key with value (replacing an older entry of k).
 * The key stays while fewer than cap keys are added after it, unless its
 * bucket fills with 4 newer live keys first. */
void pkv__ghost_add(pkv__ghost *g, pkv_hash128 k, uint8_t value);
/* Removes k; returns its value, or -1 if k is not (or no longer) there. */
int pkv__ghost_take(pkv__ghost *g, pkv_hash128 k);
/* Starts loading k's bucket, so that a later add / take of k overlaps its
 * cache miss with other work. */
static inline void pkv__ghost_prefetch(const pkv__ghost *g, pkv_hash128 k) {
  if (g->cap)
    __builtin_prefetch(&g->slot[(size_t)(pkv__key_mix(k) & g->mask) * PKV__GHOST_WAYS], 1);
}
/* The bucket k falls in (for tests that model the overflow rule). */
uint32_t pkv__ghost_bucket(const pkv__ghost *g, pkv_hash128 k);

/* Map from block key to block id (policy/ghost.c) for the blocks a policy
 * holds: open addressing with linear probing over >= 2 * num_blocks slots,
 * deletion by backward shift, so lookups stay short without tombstones. */
typedef struct pkv__kmap_slot {
  pkv_hash128 key;
  int32_t block; /* -1 = empty */
} pkv__kmap_slot;

typedef struct pkv__kmap {
  uint32_t mask;
  pkv__kmap_slot *slot;
} pkv__kmap;

bool pkv__kmap_alloc(pkv__kmap *m, uint32_t num_blocks);
void pkv__kmap_free(pkv__kmap *m);
/* Maps key to block (replacing another block mapped from key). */
void pkv__kmap_put(pkv__kmap *m, pkv_hash128 key, int32_t block);
/* Block mapped from key, or -1. */
int32_t pkv__kmap_get(const pkv__kmap *m, pkv_hash128 key);
/* Unmaps key if it maps to block. */
void pkv__kmap_del(pkv__kmap *m, pkv_hash128 key, int32_t block);
/* Starts loading key's home slot (see pkv__ghost_prefetch). */
static inline void pkv__kmap_prefetch(const pkv__kmap *m, pkv_hash128 key) {
  __builtin_prefetch(&m->slot[pkv__key_mix(key) & m->mask], 1);
}

/* Checks create's common arguments: out not NULL, 1 <= num_blocks <=
 * INT32_MAX (block ids are int32_t).  0 or PKV_EINVAL with detail. */
int pkv__policy_check_create(const char *policy, void **out,
                             uint32_t num_blocks);

/* One tunable of a policy: its number is def unless args name it; a given
 * number must lie in [min, max], and be whole when integral. */
typedef struct pkv__policy_arg {
  const char *name;
  double def;
  double min, max;
  bool integral;
} pkv__policy_arg;
#define PKV__POLICY_MAX_ARGS 8

/* Parses args (NULL or "" = keep every default) against spec into
 * value[i] for spec[i] (which the caller filled with the defaults).  0 or
 * PKV_EINVAL (pkv__err detail "policy <policy>: ..."); on failure the values
 * already parsed may have changed, so callers parse into locals. */
int pkv__policy_args_parse(const char *policy, const char *args,
                           const pkv__policy_arg *spec, size_t n_spec,
                           double *value);

/* ---- a built-in's state, described once ----
 * Each built-in's state is a struct of scalars, inline lists, and parts it
 * allocates: per-block arrays and the structures above (nodes, heaps, bit
 * sets, a ghost).  The built-in lists them in a table of pkv__policy_part;
 * pkv__policy_create allocates them all (or none) and pkv__policy_destroy
 * frees them, so no create or destroy hook repeats the allocation, the
 * unwinding on failure or the freeing by hand. */
enum {
  PKV__PART_ARRAY,  /* T *field: count elements of elem bytes, each byte fill */
  PKV__PART_LISTS,  /* pkv__blist *field: count empty lists */
  PKV__PART_BNODES, /* pkv__bnodes field: links for count blocks */
  PKV__PART_BSET,   /* pkv__bset field: count bits */
  PKV__PART_BHEAP,  /* pkv__bheap field: room for count blocks */
  PKV__PART_GHOST,  /* pkv__ghost field: count keys (0 = no ghost) */
  PKV__PART_INLINE_LISTS, /* pkv__blist field[elem] in the state: emptied */
};
#define PKV__PER_BLOCK UINT32_MAX

typedef struct pkv__policy_part {
  uint8_t kind;      /* PKV__PART_* */
  uint8_t fill;      /* ARRAY: 0 (calloc), or 0xff for all -1 / UINT*_MAX */
  uint16_t elem;     /* ARRAY: bytes per element */
  uint32_t offset;   /* of the field in the state */
  /* Elements: num_blocks (PKV__PER_BLOCK), or the uint32_t of the state at
   * this offset, which the policy's setup sets before the parts are made. */
  uint32_t count_at;
} pkv__policy_part;

#define PKV__PART_SPEC(kind, type, field, elem, fill, count_at)            \
  { (kind), (fill), (uint16_t)(elem), (uint32_t)offsetof(type, field),     \
    (uint32_t)(count_at) }
/* A per-block array of the state's element type, every byte fill. */
#define PKV__PART_ARRAY_OF(type, field, fill)                               \
  PKV__PART_SPEC(PKV__PART_ARRAY, type, field,                              \
                 sizeof *((type *)0)->field, fill, PKV__PER_BLOCK)
/* Several per-block arrays of the state, every byte fill (up to 6 fields:
 * PKV__PART_ARRAYS_OF(lfu_state, 0, uses, where, key, stamp)). */
#define PKV__PART_ARRAYS_OF(type, fill, ...)                                \
  PKV__PART_EACH(__VA_ARGS__, PKV__PART_EACH6, PKV__PART_EACH5,             \
                 PKV__PART_EACH4, PKV__PART_EACH3, PKV__PART_EACH2,         \
                 PKV__PART_EACH1)(type, fill, __VA_ARGS__)
#define PKV__PART_EACH(_1, _2, _3, _4, _5, _6, each, ...) each
#define PKV__PART_EACH1(t, f, a) PKV__PART_ARRAY_OF(t, a, f)
#define PKV__PART_EACH2(t, f, a, ...)                                       \
  PKV__PART_ARRAY_OF(t, a, f), PKV__PART_EACH1(t, f, __VA_ARGS__)
#define PKV__PART_EACH3(t, f, a, ...)                                       \
  PKV__PART_ARRAY_OF(t, a, f), PKV__PART_EACH2(t, f, __VA_ARGS__)
#define PKV__PART_EACH4(t, f, a, ...)                                       \
  PKV__PART_ARRAY_OF(t, a, f), PKV__PART_EACH3(t, f, __VA_ARGS__)
#define PKV__PART_EACH5(t, f, a, ...)                                       \
  PKV__PART_ARRAY_OF(t, a, f), PKV__PART_EACH4(t, f, __VA_ARGS__)
#define PKV__PART_EACH6(t, f, a, ...)                                       \
  PKV__PART_ARRAY_OF(t, a, f), PKV__PART_EACH5(t, f, __VA_ARGS__)
/* Lists kept in the state itself (one pkv__blist or an array of them). */
#define PKV__PART_INLINE_LISTS_OF(type, field)                              \
  PKV__PART_SPEC(PKV__PART_INLINE_LISTS, type, field,                       \
                 sizeof ((type *)0)->field / sizeof(pkv__blist), 0,         \
                 PKV__PER_BLOCK)
/* A structure sized for num_blocks, or for the state's count field. */
#define PKV__PART_OF(kind, type, field)                                     \
  PKV__PART_SPEC(kind, type, field, 0, 0, PKV__PER_BLOCK)
#define PKV__PART_N(kind, type, field, count_field)                         \
  PKV__PART_SPEC(kind, type, field, 0, 0, offsetof(type, count_field))
#define PKV__PART_ARRAY_N(type, field, fill, count_field)                   \
  PKV__PART_SPEC(PKV__PART_ARRAY, type, field, sizeof *((type *)0)->field,  \
                 fill, offsetof(type, count_field))

typedef struct pkv__policy_desc {
  const char *name;
  size_t size;                /* bytes of the state */
  const pkv__policy_arg *args; /* tunables, in the order setup reads them */
  size_t n_args;
  /* Sets the fields that follow from the parsed arguments (arg[i] for
   * args[i]) and the parts' count fields; may allocate what no part
   * describes.  false = allocation failure.  NULL: nothing to set. */
  bool (*setup)(void *state, uint32_t num_blocks, const double *arg);
  /* Frees what setup allocated (on a state setup may have left half
   * done); NULL: nothing. */
  void (*fini)(void *state);
  const pkv__policy_part *parts;
  size_t n_parts;
} pkv__policy_desc;

/* A built-in's create hook: checks out and num_blocks
 * (pkv__policy_check_create), parses args, allocates the zeroed state, runs
 * setup and makes every part.  0 with *out set, or PKV_EINVAL / PKV_ENOMEM
 * with nothing left allocated. */
int pkv__policy_create(const pkv__policy_desc *d, void **out,
                       uint32_t num_blocks, const char *args);
/* A built-in's destroy hook: fini, the parts, the state.  NULL is a no-op. */
void pkv__policy_destroy(const pkv__policy_desc *d, void *state);

/* The create and destroy hooks p_create / p_destroy of the built-in that
 * desc describes. */
#define PKV__POLICY_LIFECYCLE(p, desc)                                      \
  static int p##_create(void **out, uint32_t num_blocks, const char *args) { \
    return pkv__policy_create(&(desc), out, num_blocks, args);              \
  }                                                                         \
  static void p##_destroy(void *state) { pkv__policy_destroy(&(desc), state); }

/* The vtable of a built-in whose hooks are all named p_<hook> (create,
 * destroy, on_insert, on_hit, on_evictable, on_pinned, choose_victim,
 * on_remove, check); the optional hooks (on_dedup) follow as designated
 * initializers. */
#define PKV__POLICY_OPS(policy_name, p, ...)                              \
  {                                                                       \
    .version = PKV_POLICY_VERSION, .name = policy_name,                   \
    .create = p##_create, .destroy = p##_destroy,                         \
    .on_insert = p##_on_insert, .on_hit = p##_on_hit,                     \
    .on_evictable = p##_on_evictable, .on_pinned = p##_on_pinned,         \
    .choose_victim = p##_choose_victim, .on_remove = p##_on_remove,       \
    .check = p##_check, __VA_ARGS__                                       \
  }

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

/* ---- the policies' check hooks (pkv_policy_ops.check) ----
 * Each built-in verifies that its structures hold exactly the evictable
 * blocks: per block, its own record of "candidate" equals evictable[b], and
 * every list / heap it keeps is well formed and holds only candidates, so
 * that the sizes adding up proves the sets equal.  Helpers return 0 or
 * PKV_ECORRUPT with the detail in msg. */
int pkv__policy_check_fail(char *msg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Walks l: links consistent both ways, len entries, each a candidate;
 * adds len to *total. */
int pkv__blist_check(const pkv__blist *l, const pkv__bnodes *n,
                     const uint8_t *evictable, uint32_t num_blocks,
                     const char *what, uint64_t *total, char *msg, size_t cap);
/* Every entry of h a candidate, pos[] consistent, heap order holds, and
 * (where not NULL) every entry recorded in h: where[b] == value; adds len
 * to *total. */
int pkv__bheap_check(const pkv__bheap *h, const uint8_t *where, uint8_t value,
                     const uint8_t *evictable, uint32_t num_blocks,
                     const char *what, uint64_t *total, char *msg, size_t cap);
/* Block b's candidacy as the policy records it (mine) against the
 * manager's. */
static inline int pkv__policy_check_block(int32_t b, bool mine,
                                          const uint8_t *evictable, char *msg,
                                          size_t cap) {
  if (mine == (evictable[b] != 0)) return 0;
  return pkv__policy_check_fail(msg, cap, "block %d: policy says %s, the "
                                "manager says %s", b, mine ? "candidate" : "not a candidate",
                                evictable[b] ? "evictable" : "not evictable");
}

/* pkv__policy_check_block for every block, from a per-block state byte:
 * the policy holds block b as evictable when (where[b] == value) == equal
 * (equal: "is in the evictable state"; !equal: "is not in the out state"). */
static inline int pkv__policy_check_where(const uint8_t *where, uint8_t value,
                                          bool equal, uint32_t num_blocks,
                                          const uint8_t *evictable, char *msg,
                                          size_t cap) {
  int rc = 0;
  for (uint32_t b = 0; b < num_blocks && !rc; b++)
    rc = pkv__policy_check_block((int32_t)b, (where[b] == value) == equal,
                                 evictable, msg, cap);
  return rc;
}
/* The structures hold total entries; the manager has that many candidates. */
int pkv__policy_check_total(uint64_t total, const uint8_t *evictable,
                            uint32_t num_blocks, char *msg, size_t cap);

/* A check hook's common steps, for a built-in that keeps its candidates
 * on a family of lists (classes, levels, buckets, queues) and perhaps in
 * other structures it checked itself:
 *   - each block's record, (where[b] == value) == equal, against the
 *     manager's (pkv__policy_check_where; where NULL: the caller did it);
 *   - each list well formed and holding candidates (pkv__blist_check);
 *     bit i of busy (when not NULL) set exactly when list i is not empty;
 *     every block on list i recorded there: recorded(state, b) == i (when
 *     recorded is not NULL);
 *   - the lists' entries plus `others` (what the caller counted in its
 *     other structures) equal to the manager's candidates. */
typedef struct pkv__check_lists {
  const uint8_t *where;
  uint8_t value;
  bool equal;
  const pkv__blist *lists;
  uint32_t n_lists;
  const pkv__bset *busy;
  const pkv__bnodes *nodes;
  const char *what; /* a list's name in messages: "lfu bucket" */
  int64_t (*recorded)(const void *state, int32_t b);
  const void *state;
  uint64_t others;
} pkv__check_lists;
int pkv__policy_check_lists(const pkv__check_lists *c,
                            const uint8_t *evictable, uint32_t num_blocks,
                            char *msg, size_t cap);

/* The built-ins, in the order pkv_policy_names() lists them. */
extern const pkv_policy_ops pkv__policy_lru;
extern const pkv_policy_ops pkv__policy_fifo;
extern const pkv_policy_ops pkv__policy_lfu;
extern const pkv_policy_ops pkv__policy_s3fifo;
extern const pkv_policy_ops pkv__policy_priority;
extern const pkv_policy_ops pkv__policy_fwlru;
extern const pkv_policy_ops pkv__policy_adaptive;

#endif /* PKV_POLICY_UTIL_H */
