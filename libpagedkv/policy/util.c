/*
 * policy/util.c — the helpers the built-in policies share (policy/util.h):
 * intrusive lists over block ids, the keyed heap, bit sets, argument
 * parsing and the check hooks' common steps.  The bottom of the policy
 * room: it calls nothing but the allocator shim and error.c, and the
 * built-ins call it, never the registry (policy/registry.c) above them.
 */
#include "policy/util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pkv__policy_check_fail(char *msg, size_t cap, const char *fmt, ...) {
  if (msg && cap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
  }
  return PKV_ECORRUPT;
}

int pkv__blist_check(const pkv__blist *l, const pkv__bnodes *n,
                     const uint8_t *evictable, uint32_t num_blocks,
                     const char *what, uint64_t *total, char *msg, size_t cap) {
  uint32_t k = 0;
  int32_t prev = PKV__NIL;
  for (int32_t b = l->head; b != PKV__NIL; prev = b, b = *pkv__bn_next(n, b)) {
    if (b < 0 || (uint32_t)b >= num_blocks || ++k > l->len)
      return pkv__policy_check_fail(msg, cap, "%s: entry %u is block %d (list "
                                    "of %u)", what, k, b, l->len);
    if (*pkv__bn_prev(n, b) != prev)
      return pkv__policy_check_fail(msg, cap, "%s: block %d links back to %d, "
                                    "not %d", what, b, *pkv__bn_prev(n, b), prev);
    if (!evictable[b])
      return pkv__policy_check_fail(msg, cap, "%s: holds block %d, which is "
                                    "not evictable", what, b);
  }
  if (k != l->len || l->tail != prev)
    return pkv__policy_check_fail(msg, cap, "%s: %u entries ending at %d, the "
                                  "list says %u ending at %d", what, k, prev,
                                  l->len, l->tail);
  *total += k;
  return 0;
}

int pkv__bheap_check(const pkv__bheap *h, const uint8_t *where, uint8_t value,
                     const uint8_t *evictable, uint32_t num_blocks,
                     const char *what, uint64_t *total, char *msg, size_t cap) {
  if (h->len > num_blocks)
    return pkv__policy_check_fail(msg, cap, "%s: %u entries", what, h->len);
  for (uint32_t i = 0; i < h->len; i++) {
    int32_t b = h->ent[i].block;
    if (b < 0 || (uint32_t)b >= num_blocks || h->pos[b] != (int32_t)i)
      return pkv__policy_check_fail(msg, cap, "%s: entry %u (block %d) and its "
                                    "position disagree", what, i, b);
    if (!evictable[b])
      return pkv__policy_check_fail(msg, cap, "%s: holds block %d, which is "
                                    "not evictable", what, b);
    if (where && where[b] != value)
      return pkv__policy_check_fail(msg, cap, "%s: holds block %d, recorded "
                                    "elsewhere", what, b);
    const pkv__bheap_ent *up = &h->ent[i ? (i - 1) / PKV__HEAP_ARITY : 0];
    if (i && (h->ent[i].k1 < up->k1 ||
              (h->ent[i].k1 == up->k1 && h->ent[i].k2 < up->k2)))
      return pkv__policy_check_fail(msg, cap, "%s: entry %u is less than its "
                                    "parent", what, i);
  }
  *total += h->len;
  return 0;
}

int pkv__policy_check_total(uint64_t total, const uint8_t *evictable,
                            uint32_t num_blocks, char *msg, size_t cap) {
  uint64_t n = 0;
  for (uint32_t b = 0; b < num_blocks; b++) n += evictable[b] != 0;
  if (n == total) return 0;
  return pkv__policy_check_fail(msg, cap, "holds %llu candidates, the manager "
                                "has %llu", (unsigned long long)total,
                                (unsigned long long)n);
}

int pkv__policy_check_lists(const pkv__check_lists *c,
                            const uint8_t *evictable, uint32_t num_blocks,
                            char *msg, size_t cap) {
  int rc = c->where ? pkv__policy_check_where(c->where, c->value, c->equal,
                                              num_blocks, evictable, msg, cap)
                    : 0;
  uint64_t total = c->others;
  for (uint32_t i = 0; i < c->n_lists && !rc; i++) {
    const pkv__blist *l = &c->lists[i];
    if (c->busy && (l->len != 0) != pkv__bset_test(c->busy, i))
      return pkv__policy_check_fail(msg, cap, "%s %u: %u blocks, busy bit %d",
                                    c->what, i, l->len,
                                    pkv__bset_test(c->busy, i));
    rc = pkv__blist_check(l, c->nodes, evictable, num_blocks, c->what, &total,
                          msg, cap);
    for (int32_t b = l->head; !rc && c->recorded && b != PKV__NIL;
         b = *pkv__bn_next(c->nodes, b))
      if (c->recorded(c->state, b) != (int64_t)i)
        rc = pkv__policy_check_fail(msg, cap, "block %d on %s %u, recorded "
                                    "on %lld", b, c->what, i,
                                    (long long)c->recorded(c->state, b));
  }
  return rc ? rc : pkv__policy_check_total(total, evictable, num_blocks, msg, cap);
}

bool pkv__bnodes_alloc(pkv__bnodes *n, uint32_t num_blocks) {
  /* prev and next in one allocation: next = prev + num_blocks */
  size_t half = sizeof(int32_t) * num_blocks;
  n->shift = 0;
  n->prev = pkv__malloc(2 * half);
  n->next = n->prev ? n->prev + num_blocks : NULL;
  if (n->prev) memset(n->prev, 0xff, 2 * half); /* all PKV__NIL */
  return n->prev != NULL;
}

void pkv__bnodes_free(pkv__bnodes *n) {
  pkv__free(n->prev);
  n->prev = n->next = NULL;
}

int pkv__policy_check_create(const char *policy, void **out,
                             uint32_t num_blocks) {
  if (!out) return pkv__err(PKV_EINVAL, "policy %s: state pointer is NULL",
                            policy);
  if (num_blocks == 0 || num_blocks > (uint32_t)INT32_MAX)
    return pkv__err(PKV_EINVAL, "policy %s: num_blocks %u outside "
                    "[1, INT32_MAX]", policy, num_blocks);
  return 0;
}

static uint32_t part_count(const void *st, const pkv__policy_part *p,
                           uint32_t num_blocks) {
  uint32_t n = num_blocks;
  if (p->count_at != PKV__PER_BLOCK)
    memcpy(&n, (const char *)st + p->count_at, sizeof n);
  return n;
}

static bool part_alloc(void *st, const pkv__policy_part *p,
                       uint32_t num_blocks) {
  void *field = (char *)st + p->offset;
  uint32_t n = part_count(st, p, num_blocks);
  void *mem = NULL;
  switch (p->kind) {
  case PKV__PART_ARRAY: {
    size_t bytes = (size_t)(n ? n : 1) * p->elem;
    mem = p->fill ? pkv__malloc(bytes) : pkv__calloc(1, bytes);
    if (mem && p->fill) memset(mem, p->fill, bytes);
    break;
  }
  case PKV__PART_LISTS:
    mem = pkv__malloc(sizeof(pkv__blist) * (n ? n : 1));
    if (mem) pkv__blists_init(mem, n);
    break;
  case PKV__PART_BNODES: return pkv__bnodes_alloc(field, n);
  case PKV__PART_BSET: return pkv__bset_alloc(field, n);
  case PKV__PART_BHEAP: return pkv__bheap_alloc(field, n);
  case PKV__PART_GHOST: return pkv__ghost_alloc(field, n);
  case PKV__PART_INLINE_LISTS: pkv__blists_init(field, p->elem); return true;
  }
  memcpy(field, &mem, sizeof mem);
  return mem != NULL;
}

static void part_free(void *st, const pkv__policy_part *p) {
  void *field = (char *)st + p->offset, *mem;
  switch (p->kind) {
  case PKV__PART_ARRAY:
  case PKV__PART_LISTS:
    memcpy(&mem, field, sizeof mem);
    pkv__free(mem);
    break;
  case PKV__PART_BNODES: pkv__bnodes_free(field); break;
  case PKV__PART_BSET: pkv__bset_free(field); break;
  case PKV__PART_BHEAP: pkv__bheap_free(field); break;
  case PKV__PART_GHOST: pkv__ghost_free(field); break;
  case PKV__PART_INLINE_LISTS: break; /* nothing allocated */
  }
}

void pkv__policy_destroy(const pkv__policy_desc *d, void *state) {
  if (!state) return;
  if (d->fini) d->fini(state);
  for (size_t i = 0; i < d->n_parts; i++) part_free(state, &d->parts[i]);
  pkv__free(state);
}

int pkv__policy_create(const pkv__policy_desc *d, void **out,
                       uint32_t num_blocks, const char *args) {
  double arg[PKV__POLICY_MAX_ARGS];
  for (size_t i = 0; i < d->n_args; i++) arg[i] = d->args[i].def;
  int rc = pkv__policy_check_create(d->name, out, num_blocks);
  if (!rc) rc = pkv__policy_args_parse(d->name, args, d->args, d->n_args, arg);
  if (rc) return rc;
  void *st = pkv__calloc(1, d->size);
  if (!st) return pkv__err(PKV_ENOMEM, "policy %s: state allocation", d->name);
  bool ok = !d->setup || d->setup(st, num_blocks, arg);
  for (size_t i = 0; ok && i < d->n_parts; i++)
    ok = part_alloc(st, &d->parts[i], num_blocks);
  if (!ok) {
    pkv__policy_destroy(d, st);
    return pkv__err(PKV_ENOMEM, "policy %s: %u-block arrays", d->name,
                    num_blocks);
  }
  *out = st;
  return 0;
}

bool pkv__bheap_alloc(pkv__bheap *h, uint32_t num_blocks) {
  /* ent and pos in one allocation: pos follows the num_blocks entries */
  h->len = 0;
  h->ent = pkv__malloc((sizeof(pkv__bheap_ent) + sizeof(int32_t)) * num_blocks);
  h->pos = h->ent ? (int32_t *)(h->ent + num_blocks) : NULL;
  if (h->pos) memset(h->pos, 0xff, sizeof(int32_t) * num_blocks);
  return h->ent != NULL;
}

void pkv__bheap_free(pkv__bheap *h) {
  pkv__free(h->ent);
  memset(h, 0, sizeof *h);
}

static bool ent_less(const pkv__bheap_ent *a, const pkv__bheap_ent *b) {
  return a->k1 < b->k1 || (a->k1 == b->k1 && a->k2 < b->k2);
}

/* Places e at index i, moving it up or down until the heap order holds. */
static void heap_fix(pkv__bheap *h, uint32_t i, pkv__bheap_ent e) {
  while (i > 0) {
    uint32_t up = (i - 1) / PKV__HEAP_ARITY;
    if (!ent_less(&e, &h->ent[up])) break;
    h->ent[i] = h->ent[up];
    h->pos[h->ent[i].block] = (int32_t)i;
    i = up;
  }
  for (;;) {
    uint32_t c = PKV__HEAP_ARITY * i + 1, best = c;
    if (c >= h->len) break;
    uint32_t end = c + PKV__HEAP_ARITY < h->len ? c + PKV__HEAP_ARITY : h->len;
    for (uint32_t j = c + 1; j < end; j++)
      if (ent_less(&h->ent[j], &h->ent[best])) best = j;
    if (!ent_less(&h->ent[best], &e)) break;
    h->ent[i] = h->ent[best];
    h->pos[h->ent[i].block] = (int32_t)i;
    i = best;
  }
  h->ent[i] = e;
  h->pos[e.block] = (int32_t)i;
}

void pkv__bheap_set(pkv__bheap *h, int32_t b, uint64_t k1, uint64_t k2) {
  pkv__bheap_ent e = {k1, k2, b};
  uint32_t i = h->pos[b] >= 0 ? (uint32_t)h->pos[b] : h->len++;
  heap_fix(h, i, e);
}

void pkv__bheap_remove(pkv__bheap *h, int32_t b) {
  if (h->pos[b] < 0) return;
  uint32_t i = (uint32_t)h->pos[b];
  h->pos[b] = -1;
  pkv__bheap_ent last = h->ent[--h->len];
  if (i < h->len) heap_fix(h, i, last);
}

bool pkv__bset_alloc(pkv__bset *s, uint64_t n) {
  memset(s, 0, sizeof *s);
  uint64_t total = 0, w = n ? n : 1;
  do {
    w = (w + 63) / 64;
    if (s->levels == PKV__BSET_MAX_LEVELS) return false; /* > 2^36 bits */
    s->words[s->levels++] = (uint32_t)w;
    total += w;
  } while (w > 1);
  s->lv[0] = pkv__calloc(total, sizeof(uint64_t));
  if (!s->lv[0]) return false;
  for (uint32_t k = 1; k < s->levels; k++)
    s->lv[k] = s->lv[k - 1] + s->words[k - 1];
  return true;
}

void pkv__bset_free(pkv__bset *s) {
  pkv__free(s->lv[0]);
  memset(s, 0, sizeof *s);
}

int64_t pkv__bset_next(const pkv__bset *s, uint64_t i) {
  /* Climb until a word holds a set bit at or after the position, ... */
  uint32_t k = 0;
  for (;; k++, i = (i >> 6) + 1) {
    if (k == s->levels || (i >> 6) >= s->words[k]) return -1;
    uint64_t w = s->lv[k][i >> 6] & (~0ull << (i & 63));
    if (w) {
      i = (i & ~63ull) | (uint64_t)__builtin_ctzll(w);
      break;
    }
  }
  /* ... then descend to the first bit under it. */
  while (k-- > 0) i = i << 6 | (uint64_t)__builtin_ctzll(s->lv[k][i]);
  return (int64_t)i;
}

static const char *skip_space(const char *s) {
  while (*s == ' ' || *s == '\t') s++;
  return s;
}

int pkv__policy_args_parse(const char *policy, const char *args,
                           const pkv__policy_arg *spec, size_t n_spec,
                           double *value) {
  if (!args) return 0;
  const char *s = skip_space(args);
  while (*s) {
    const char *key = s;
    while (*s && *s != '=' && *s != ',' && *s != ' ' && *s != '\t') s++;
    size_t key_len = (size_t)(s - key);
    s = skip_space(s);
    if (key_len == 0 || *s != '=')
      return pkv__err(PKV_EINVAL, "policy %s: bad argument list '%s' "
                      "(want name=value,...)", policy, args);
    const pkv__policy_arg *a = NULL;
    size_t slot = 0;
    for (size_t i = 0; i < n_spec; i++)
      if (strlen(spec[i].name) == key_len &&
          memcmp(spec[i].name, key, key_len) == 0) {
        a = &spec[i];
        slot = i;
      }
    if (!a)
      return pkv__err(PKV_EINVAL, "policy %s: unknown argument '%.*s'",
                      policy, (int)key_len, key);
    s = skip_space(s + 1);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(v))
      return pkv__err(PKV_EINVAL, "policy %s: argument %s: not a number",
                      policy, a->name);
    if (v < a->min || v > a->max || (a->integral && v != floor(v)))
      return pkv__err(PKV_EINVAL, "policy %s: argument %s=%g outside "
                      "[%g, %g]%s", policy, a->name, v, a->min, a->max,
                      a->integral ? " or not whole" : "");
    value[slot] = v;
    s = skip_space(end);
    if (*s == ',')
      s = skip_space(s + 1);
    else if (*s)
      return pkv__err(PKV_EINVAL, "policy %s: argument %s: junk after "
                      "value", policy, a->name);
  }
  return 0;
}
