/*
 * sim_replay.c — the replays of `pagedkv sim` that need no cache manager:
 * the simple model (a policy vtable driven directly, the model of the
 * traces' README) and Belady's MIN, the offline bound every policy is
 * measured against.  The manager model is in sim_manager.c.
 *
 * Each replay owns its state and reads the stream only, so any number run
 * at once on the command's worker threads.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ================================================================ simple */

int sim_run_simple(const sim_stream *s, const pkv_policy_ops *ops,
                   const char *args, uint32_t capacity, sim_result *r,
                   _Atomic uint64_t *progress) {
  uint64_t t0 = cli_now_ns();
  void *st = NULL;
  int32_t *slot_of = malloc((s->n_ids ? s->n_ids : 1) * sizeof *slot_of);
  uint32_t *id_of = malloc(capacity * sizeof *id_of);
  int rc = (slot_of && id_of) ? ops->create(&st, capacity, args) : PKV_ENOMEM;
  if (rc) {
    snprintf(r->err, sizeof r->err, "policy %s: create: %s (%s)", ops->name,
             pkv_strerror(rc), pkv_last_error());
    free(slot_of);
    free(id_of);
    return r->rc = rc;
  }
  for (uint32_t i = 0; i < s->n_ids; i++) slot_of[i] = -1;
  uint32_t used = 0;
  uint64_t clock = 0;
  pkv_block_meta meta = {.priority = 35};
  for (size_t q = 0; q < s->n_reqs; q++) {
    uint64_t p0 = s->req_pos[q], p1 = s->req_pos[q + 1];
    uint32_t len = s->t->reqs[q].input_len;
    for (uint64_t p = p0; p < p1; p++)
      if (slot_of[s->id[p]] >= 0) {
        r->block_hits++;
        r->hit_tokens += p + 1 < p1 ? s->block_size : len - (uint32_t)(p - p0) * s->block_size;
      }
    r->lookups += p1 - p0;
    r->prompt_tokens += len;
    for (uint64_t p = p0; p < p1; p++) {
      uint32_t id = s->id[p];
      meta.now = ++clock;
      meta.depth = (uint32_t)(p - p0);
      meta.parent = meta.key;
      if (p == p0) meta.parent = (pkv_hash128){0, 0};
      meta.key = (pkv_hash128){id + 1u, 0};
      int32_t b = slot_of[id];
      if (b >= 0) { /* refresh: referenced again, hit, released */
        ops->on_pinned(st, b, &meta);
        ops->on_hit(st, b, &meta);
        ops->on_evictable(st, b, &meta);
        continue;
      }
      if (used < capacity) {
        b = (int32_t)used++;
      } else {
        b = ops->choose_victim(st, meta.now);
        if (b < 0 || (uint32_t)b >= capacity || slot_of[id_of[b]] != b) {
          snprintf(r->err, sizeof r->err, "policy %s: choose_victim returned %d with %u candidates",
                   ops->name, b, capacity);
          ops->destroy(st);
          free(slot_of);
          free(id_of);
          return r->rc = PKV_ECORRUPT;
        }
        ops->on_remove(st, b);
        slot_of[id_of[b]] = -1;
        r->evictions++;
      }
      slot_of[id] = b;
      id_of[b] = id;
      ops->on_insert(st, b, &meta);
      ops->on_evictable(st, b, &meta);
    }
    if (progress) atomic_fetch_add_explicit(progress, 1, memory_order_relaxed);
  }
  ops->destroy(st);
  free(slot_of);
  free(id_of);
  r->seconds = (double)(cli_now_ns() - t0) / 1e9;
  return r->rc = 0;
}

/* ================================================================ Belady */

/* Max-heap of (next use, id) with lazy deletion: an entry is live while
 * cur[id] == its key, so a refresh pushes a new entry and the old one is
 * skipped when it surfaces.  Keys are unique (positions, or SIM_NEVER +
 * position), so the order is total. */
typedef struct heap_ent {
  uint64_t key;
  uint32_t id;
} heap_ent;

typedef struct maxheap {
  heap_ent *v;
  size_t n, cap;
} maxheap;

static bool heap_push(maxheap *h, uint64_t key, uint32_t id) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? 2 * h->cap : 1024;
    heap_ent *n = realloc(h->v, cap * sizeof *n);
    if (!n) return false;
    h->v = n;
    h->cap = cap;
  }
  size_t i = h->n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (h->v[parent].key >= key) break;
    h->v[i] = h->v[parent];
    i = parent;
  }
  h->v[i] = (heap_ent){key, id};
  return true;
}

static heap_ent heap_pop(maxheap *h) {
  heap_ent top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->v[c + 1].key > h->v[c].key) c++;
    if (h->v[c].key <= last.key) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = last;
  return top;
}

/* The heap accumulates stale entries; rebuild it from the live set when it
 * grows past a few times the capacity so memory stays bounded. */
static bool heap_compact(maxheap *h, const uint64_t *cur) {
  size_t j = 0;
  for (size_t i = 0; i < h->n; i++)
    if (cur[h->v[i].id] == h->v[i].key) h->v[j++] = h->v[i];
  size_t n = j;
  h->n = 0;
  heap_ent *old = malloc((n ? n : 1) * sizeof *old);
  if (!old) return false;
  memcpy(old, h->v, n * sizeof *old);
  for (size_t i = 0; i < n; i++) heap_push(h, old[i].key, old[i].id);
  free(old);
  return true;
}

/* A Belady replay's state: residency (cur[id] = next use, or BELADY_ABSENT),
 * pins of held requests, and the heap of residents by next use. */
#define BELADY_ABSENT UINT64_MAX
typedef struct belady {
  const sim_stream *s;
  bool full_only;
  uint64_t *cur;
  uint32_t *pins;
  maxheap heap, stash;
  uint32_t resident;
} belady;

/* Counts request q's hits before it touches the cache. */
static void belady_count(const belady *b, size_t q, sim_result *r) {
  const sim_stream *s = b->s;
  uint64_t p0 = s->req_pos[q], p1 = s->req_pos[q + 1];
  bool run = true;
  uint32_t bs = s->block_size, len = s->t->reqs[q].input_len;
  r->prompt_tokens += len;
  r->lookups += p1 - p0;
  for (uint64_t p = p0; p < p1; p++) {
    bool hit = b->cur[s->id[p]] != BELADY_ABSENT && !(b->full_only && s->partial[p]);
    if (b->full_only) { /* prefix matching stops at the first miss */
      run = run && hit;
      if (run) {
        r->block_hits++;
        r->hit_tokens += bs;
      }
    } else {
      r->block_hits += hit;
      /* The simple model has no prefix notion; count hit tokens per block. */
      if (hit) r->hit_tokens += p + 1 < p1 ? bs : len - (uint32_t)(p - p0) * bs;
    }
  }
}

/* The evictable resident with the farthest next use into *v (*found false
 * if every resident is pinned); pinned ones go back into the heap. */
static int belady_victim(belady *b, heap_ent *v, bool *found) {
  *found = false;
  b->stash.n = 0;
  while (b->heap.n) {
    heap_ent e = heap_pop(&b->heap);
    if (b->cur[e.id] != e.key) continue; /* stale */
    if (b->pins[e.id]) {
      if (!heap_push(&b->stash, e.key, e.id)) return PKV_ENOMEM;
      continue;
    }
    *v = e;
    *found = true;
    break;
  }
  for (size_t i = 0; i < b->stash.n; i++)
    if (!heap_push(&b->heap, b->stash.v[i].key, b->stash.v[i].id)) return PKV_ENOMEM;
  return 0;
}

/* Position p's block is accessed: refresh, or bring in (evicting the
 * farthest-needed resident, or not caching the newcomer at all). */
static int belady_access(belady *b, uint64_t p, uint32_t capacity, sim_result *r) {
  uint32_t id = b->s->id[p];
  uint64_t nu = b->full_only ? b->s->next_full[p] : b->s->next_all[p];
  if (b->cur[id] != BELADY_ABSENT) {
    b->cur[id] = nu;
    return heap_push(&b->heap, nu, id) ? 0 : PKV_ENOMEM;
  }
  if (b->resident == capacity) {
    heap_ent v = {0, 0};
    bool found;
    int rc = belady_victim(b, &v, &found);
    if (rc) return rc;
    /* Everything held, or the newcomer itself is needed last: do not
     * cache it.  Under --hold the manager has no such choice (a held
     * request keeps its blocks), so this is a relaxation: the bound can
     * only rise, and stays above what the manager can reach. */
    if (!found || v.key < nu) return found && !heap_push(&b->heap, v.key, v.id) ? PKV_ENOMEM : 0;
    b->cur[v.id] = BELADY_ABSENT;
    b->resident--;
    r->evictions++;
  }
  b->cur[id] = nu;
  b->resident++;
  return heap_push(&b->heap, nu, id) ? 0 : PKV_ENOMEM;
}

/* Request q: count, access every cacheable block, release request q-hold. */
static int belady_request(belady *b, size_t q, uint32_t capacity, uint32_t hold, sim_result *r) {
  const sim_stream *s = b->s;
  belady_count(b, q, r);
  for (uint64_t p = s->req_pos[q]; p < s->req_pos[q + 1]; p++) {
    if (b->full_only && s->partial[p]) continue;
    if (hold) b->pins[s->id[p]]++;
    int rc = belady_access(b, p, capacity, r);
    if (rc) return rc;
  }
  if (hold && q >= hold) { /* request q - hold is freed now */
    for (uint64_t p = s->req_pos[q - hold]; p < s->req_pos[q - hold + 1]; p++)
      if (!(b->full_only && s->partial[p])) b->pins[s->id[p]]--;
  }
  if (b->heap.n > 4 * (size_t)capacity + 4096 && !heap_compact(&b->heap, b->cur)) return PKV_ENOMEM;
  return 0;
}

int sim_run_belady(const sim_stream *s, uint32_t capacity, bool full_only,
                   uint32_t hold, sim_result *r, _Atomic uint64_t *progress) {
  uint64_t t0 = cli_now_ns();
  belady b = {.s = s, .full_only = full_only};
  b.cur = malloc((s->n_ids ? s->n_ids : 1) * sizeof *b.cur);
  b.pins = calloc(s->n_ids ? s->n_ids : 1, sizeof *b.pins);
  int rc = b.cur && b.pins ? 0 : PKV_ENOMEM;
  for (uint32_t i = 0; !rc && i < s->n_ids; i++) b.cur[i] = BELADY_ABSENT;
  snprintf(r->policy, sizeof r->policy, "belady");
  r->capacity = capacity;
  for (size_t q = 0; !rc && q < s->n_reqs; q++) {
    rc = belady_request(&b, q, capacity, hold, r);
    if (progress) atomic_fetch_add_explicit(progress, 1, memory_order_relaxed);
  }
  if (rc) snprintf(r->err, sizeof r->err, "belady: out of memory");
  free(b.cur);
  free(b.pins);
  free(b.heap.v);
  free(b.stash.v);
  r->seconds = (double)(cli_now_ns() - t0) / 1e9;
  return r->rc = rc;
}
