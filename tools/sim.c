/*
 * sim.c — `pagedkv sim`: eviction policies replayed on a trace, beside
 * Belady's offline optimum.
 *
 *   trace ──► sim_stream (block ids per request, next-use indices)
 *                 │
 *     ┌───────────┼──────────────────────────┐
 *   simple      manager (sim_manager.c)    Belady
 *   policy      real pkv_cache, external   farthest next use,
 *   vtable      mode: match_prefix,        lazy max-heap,
 *   directly    append, commit, hold, free O(log n) per access
 *
 * Every (policy, capacity) pair is one job; jobs share only the read-only
 * stream and run on --jobs threads.  The simple model is exactly the one
 * ../shared/traces/README.md states (requests in order; look up every block;
 * then insert or refresh every block in request order), so its LRU and
 * Belady figures can be checked against the reference there.
 */
#include "sim.h"

#include <dlfcn.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* ================================================================ stream */

/* Open-addressing map uint64 -> dense uint32 (renumbering block keys). */
typedef struct idmap {
  uint64_t *keys; /* key + 1; 0 = empty */
  uint32_t *vals;
  size_t cap, n;
} idmap;

static uint64_t mix64(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static bool idmap_init(idmap *m, size_t expect) {
  m->cap = 1024;
  while (m->cap < expect * 2) m->cap *= 2;
  m->keys = calloc(m->cap, sizeof *m->keys);
  m->vals = calloc(m->cap, sizeof *m->vals);
  m->n = 0;
  return m->keys && m->vals;
}

static uint32_t idmap_get(idmap *m, uint64_t key) {
  size_t mask = m->cap - 1, i = mix64(key) & mask;
  while (m->keys[i]) {
    if (m->keys[i] == key + 1) return m->vals[i];
    i = (i + 1) & mask;
  }
  m->keys[i] = key + 1;
  m->vals[i] = (uint32_t)m->n;
  return (uint32_t)m->n++;
}

static void idmap_free(idmap *m) {
  free(m->keys);
  free(m->vals);
}

int sim_stream_build(const trace *t, uint32_t block_size, sim_stream *s,
                     char *err, size_t err_cap) {
  memset(s, 0, sizeof *s);
  s->t = t;
  s->block_size = block_size;
  s->n_reqs = t->n_reqs;
  const uint32_t B512 = TRACE_MOONCAKE_BLOCK;
  s->off512 = malloc((t->n_reqs + 1) * sizeof *s->off512);
  s->req_pos = malloc((t->n_reqs + 1) * sizeof *s->req_pos);
  if (!s->off512 || !s->req_pos) goto oom;
  /* 512-token content ids: the trace's, or fresh ones per request block. */
  uint64_t n512 = 0, n_pos = 0;
  for (size_t r = 0; r < t->n_reqs; r++) {
    uint32_t len = t->reqs[r].input_len;
    s->off512[r] = n512;
    n512 += (len + B512 - 1) / B512;
    n_pos += (len + block_size - 1) / block_size;
    if (len > s->max_input) s->max_input = len;
  }
  s->off512[t->n_reqs] = n512;
  if (t->n_hash) {
    s->ids512 = t->hash_ids;
  } else {
    s->own_ids512 = malloc((n512 ? n512 : 1) * sizeof *s->own_ids512);
    if (!s->own_ids512) goto oom;
    for (uint64_t i = 0; i < n512; i++) s->own_ids512[i] = i;
    s->ids512 = s->own_ids512;
  }
  s->n_pos = n_pos;
  s->id = malloc((n_pos ? n_pos : 1) * sizeof *s->id);
  s->partial = malloc(n_pos ? n_pos : 1);
  s->next_all = malloc((n_pos ? n_pos : 1) * sizeof *s->next_all);
  s->next_full = malloc((n_pos ? n_pos : 1) * sizeof *s->next_full);
  if (!s->id || !s->partial || !s->next_all || !s->next_full) goto oom;

  idmap map;
  if (!idmap_init(&map, n_pos)) {
    idmap_free(&map);
    goto oom;
  }
  uint64_t p = 0;
  for (size_t r = 0; r < t->n_reqs; r++) {
    uint32_t len = t->reqs[r].input_len;
    const uint64_t *ids = s->ids512 + s->off512[r];
    s->req_pos[r] = p;
    for (uint32_t begin = 0; begin < len; begin += block_size, p++) {
      uint32_t end = begin + block_size < len ? begin + block_size : len;
      uint32_t last = end - 1;
      uint64_t key;
      /* At the ids' own size a block is its id (a partial tail's id already
       * stands for its shorter content); otherwise the 512-block holding
       * the last token and that token's offset fix the content. */
      if (block_size == B512) key = ids[last / B512];
      else key = ids[last / B512] * B512 + last % B512;
      s->id[p] = idmap_get(&map, key);
      s->partial[p] = end - begin < block_size;
      s->n_full += !s->partial[p];
    }
  }
  s->req_pos[t->n_reqs] = p;
  s->n_ids = (uint32_t)map.n;
  idmap_free(&map);

  /* Next-use indices, one backward pass each. */
  uint64_t *last_all = malloc((s->n_ids ? s->n_ids : 1) * sizeof *last_all);
  uint64_t *last_full = malloc((s->n_ids ? s->n_ids : 1) * sizeof *last_full);
  if (!last_all || !last_full) {
    free(last_all);
    free(last_full);
    goto oom;
  }
  for (uint32_t i = 0; i < s->n_ids; i++) last_all[i] = last_full[i] = UINT64_MAX;
  for (uint64_t q = n_pos; q-- > 0;) {
    uint32_t id = s->id[q];
    s->next_all[q] = last_all[id] == UINT64_MAX ? SIM_NEVER + q : last_all[id];
    last_all[id] = q;
    if (!s->partial[q]) {
      s->next_full[q] = last_full[id] == UINT64_MAX ? SIM_NEVER + q : last_full[id];
      last_full[id] = q;
    } else {
      s->next_full[q] = SIM_NEVER + q;
    }
  }
  free(last_all);
  free(last_full);
  return 0;
oom:
  snprintf(err, err_cap, "out of memory building the access stream");
  sim_stream_free(s);
  return -1;
}

void sim_stream_free(sim_stream *s) {
  free(s->req_pos);
  free(s->id);
  free(s->partial);
  free(s->next_all);
  free(s->next_full);
  free(s->off512);
  free(s->own_ids512);
  memset(s, 0, sizeof *s);
}

void sim_request_tokens(const sim_stream *s, size_t r, int32_t *out) {
  const uint64_t *ids = s->ids512 + s->off512[r];
  uint32_t len = s->t->reqs[r].input_len;
  for (uint32_t i = 0; i < len; i += TRACE_MOONCAKE_BLOCK) {
    uint64_t base = mix64(ids[i / TRACE_MOONCAKE_BLOCK] ^ UINT64_C(0x5bd1e995));
    uint32_t end = i + TRACE_MOONCAKE_BLOCK < len ? i + TRACE_MOONCAKE_BLOCK : len;
    for (uint32_t j = i; j < end; j++)
      out[j] = (int32_t)(mix64(base + (j - i)) & 0x7fffffff);
  }
}

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

int sim_run_belady(const sim_stream *s, uint32_t capacity, bool full_only,
                   uint32_t hold, sim_result *r, _Atomic uint64_t *progress) {
  uint64_t t0 = cli_now_ns();
  const uint64_t ABSENT = UINT64_MAX;
  const uint64_t *next = full_only ? s->next_full : s->next_all;
  uint64_t *cur = malloc((s->n_ids ? s->n_ids : 1) * sizeof *cur);
  uint32_t *pins = calloc(s->n_ids ? s->n_ids : 1, sizeof *pins);
  maxheap heap = {0}, stash = {0};
  int rc = 0;
  if (!cur || !pins) {
    rc = PKV_ENOMEM;
    goto out;
  }
  for (uint32_t i = 0; i < s->n_ids; i++) cur[i] = ABSENT;
  uint32_t resident = 0;
  snprintf(r->policy, sizeof r->policy, "belady");
  r->capacity = capacity;
  for (size_t q = 0; q < s->n_reqs; q++) {
    uint64_t p0 = s->req_pos[q], p1 = s->req_pos[q + 1];
    bool run = true;
    uint32_t bs = s->block_size, len = s->t->reqs[q].input_len;
    r->prompt_tokens += len;
    r->lookups += p1 - p0;
    for (uint64_t p = p0; p < p1; p++) {
      bool hit = cur[s->id[p]] != ABSENT && !(full_only && s->partial[p]);
      if (full_only) { /* prefix matching stops at the first miss */
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
    for (uint64_t p = p0; p < p1; p++) {
      if (full_only && s->partial[p]) continue;
      uint32_t id = s->id[p];
      uint64_t nu = next[p];
      if (hold) pins[id]++;
      if (cur[id] != ABSENT) {
        cur[id] = nu;
        if (!heap_push(&heap, nu, id)) { rc = PKV_ENOMEM; goto out; }
        continue;
      }
      if (resident == capacity) {
        /* Farthest next use among the evictable residents. */
        heap_ent v = {0, 0};
        bool found = false;
        stash.n = 0;
        while (heap.n) {
          heap_ent e = heap_pop(&heap);
          if (cur[e.id] != e.key) continue; /* stale */
          if (pins[e.id]) {
            if (!heap_push(&stash, e.key, e.id)) { rc = PKV_ENOMEM; goto out; }
            continue;
          }
          v = e;
          found = true;
          break;
        }
        for (size_t i = 0; i < stash.n; i++)
          if (!heap_push(&heap, stash.v[i].key, stash.v[i].id)) { rc = PKV_ENOMEM; goto out; }
        /* Everything held, or (nothing held beyond this request) the newcomer
         * itself is needed last: do not cache it. */
        if (!found || (!hold && v.key < nu)) {
          if (found && !heap_push(&heap, v.key, v.id)) { rc = PKV_ENOMEM; goto out; }
          continue;
        }
        cur[v.id] = ABSENT;
        resident--;
        r->evictions++;
      }
      cur[id] = nu;
      resident++;
      if (!heap_push(&heap, nu, id)) { rc = PKV_ENOMEM; goto out; }
    }
    if (hold && q >= hold) { /* request q - hold is freed now */
      for (uint64_t p = s->req_pos[q - hold]; p < s->req_pos[q - hold + 1]; p++)
        if (!(full_only && s->partial[p])) pins[s->id[p]]--;
    }
    if (heap.n > 4 * (size_t)capacity + 4096 && !heap_compact(&heap, cur)) {
      rc = PKV_ENOMEM;
      goto out;
    }
    if (progress) atomic_fetch_add_explicit(progress, 1, memory_order_relaxed);
  }
out:
  if (rc) snprintf(r->err, sizeof r->err, "belady: out of memory");
  free(cur);
  free(pins);
  free(heap.v);
  free(stash.v);
  r->seconds = (double)(cli_now_ns() - t0) / 1e9;
  return r->rc = rc;
}

/* ================================================================ command */

typedef struct sim_job {
  const pkv_policy_ops *ops; /* NULL = Belady */
  uint32_t capacity;
  sim_result res;
} sim_job;

typedef struct sim_plan {
  const sim_stream *stream;
  sim_model model;
  uint32_t hold;
  const char *policy_args;
  sim_job *jobs;
  size_t n_jobs;
  _Atomic size_t next_job;
  _Atomic size_t jobs_done;
  _Atomic uint64_t progress;
} sim_plan;

static void run_job(sim_plan *pl, sim_job *j) {
  sim_result *r = &j->res;
  r->capacity = j->capacity;
  snprintf(r->policy, sizeof r->policy, "%s", j->ops ? j->ops->name : "belady");
  if (!j->ops)
    sim_run_belady(pl->stream, j->capacity, pl->model == SIM_MODEL_MANAGER,
                   pl->model == SIM_MODEL_MANAGER ? pl->hold : 0, r, &pl->progress);
  else if (pl->model == SIM_MODEL_SIMPLE)
    sim_run_simple(pl->stream, j->ops, pl->policy_args, j->capacity, r, &pl->progress);
  else
    sim_run_manager(pl->stream, j->ops, pl->policy_args, j->capacity, pl->hold, r,
                    &pl->progress);
}

static void *worker(void *arg) {
  sim_plan *pl = arg;
  for (;;) {
    size_t i = atomic_fetch_add(&pl->next_job, 1);
    if (i >= pl->n_jobs) break;
    run_job(pl, &pl->jobs[i]);
    atomic_fetch_add(&pl->jobs_done, 1);
  }
  return NULL;
}

static double ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0; }

/* The figure plotted and compared: prefix hits through the manager, block
 * hits in the simple model (the reference's measure). */
static double headline(const sim_plan *pl, const sim_result *r) {
  return pl->model == SIM_MODEL_MANAGER ? ratio(r->hit_tokens, r->prompt_tokens)
                                        : ratio(r->block_hits, r->lookups);
}

static const sim_result *find_result(const sim_plan *pl, const char *policy,
                                     uint32_t capacity) {
  for (size_t i = 0; i < pl->n_jobs; i++)
    if (pl->jobs[i].res.capacity == capacity && !strcmp(pl->jobs[i].res.policy, policy))
      return &pl->jobs[i].res;
  return NULL;
}

static void print_table(const sim_plan *pl, const uint64_t *caps, size_t n_caps) {
  bool mgr = pl->model == SIM_MODEL_MANAGER;
  printf("%-10s %-12s %10s %10s %10s %9s %8s %8s\n", "capacity", "policy",
         mgr ? "prefix_hit" : "hit_ratio", "block_hit", "gap_closed", "evictions",
         "dropped", "time_s");
  for (size_t c = 0; c < n_caps; c++) {
    const sim_result *lru = find_result(pl, "lru", (uint32_t)caps[c]);
    const sim_result *bel = find_result(pl, "belady", (uint32_t)caps[c]);
    for (size_t i = 0; i < pl->n_jobs; i++) {
      const sim_result *r = &pl->jobs[i].res;
      if (r->capacity != caps[c]) continue;
      char gap[16] = "-";
      if (lru && bel) {
        double span = headline(pl, bel) - headline(pl, lru);
        if (span > 1e-9)
          snprintf(gap, sizeof gap, "%.1f%%", 100 * (headline(pl, r) - headline(pl, lru)) / span);
      }
      printf("%-10u %-12s %10.4f %10.4f %10s %9llu %8llu %8.3f\n", r->capacity, r->policy,
             headline(pl, r), ratio(r->block_hits, r->lookups), gap,
             (unsigned long long)r->evictions, (unsigned long long)r->dropped, r->seconds);
    }
  }
}

static int write_csv(const sim_plan *pl, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return cli_error("sim", "%s: cannot write: %m", path);
  fprintf(f, "model,policy,capacity,block_size,hold,requests,lookups,block_hits,block_hit_ratio,"
             "prompt_tokens,hit_tokens,prefix_hit_ratio,evictions,dropped,seconds\n");
  for (size_t i = 0; i < pl->n_jobs; i++) {
    const sim_result *r = &pl->jobs[i].res;
    fprintf(f, "%s,%s,%u,%u,%u,%zu,%llu,%llu,%.6f,%llu,%llu,%.6f,%llu,%llu,%.4f\n",
            pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", r->policy, r->capacity,
            pl->stream->block_size, pl->hold, pl->stream->n_reqs,
            (unsigned long long)r->lookups, (unsigned long long)r->block_hits,
            ratio(r->block_hits, r->lookups), (unsigned long long)r->prompt_tokens,
            (unsigned long long)r->hit_tokens, ratio(r->hit_tokens, r->prompt_tokens),
            (unsigned long long)r->evictions, (unsigned long long)r->dropped, r->seconds);
  }
  if (fclose(f)) return cli_error("sim", "%s: write failed: %m", path);
  return 0;
}

static int write_json(const sim_plan *pl, const char *trace_path, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return cli_error("sim", "%s: cannot write: %m", path);
  fprintf(f, "{\n  \"trace\": ");
  cli_json_string(f, trace_path);
  fprintf(f, ",\n  \"model\": \"%s\",\n  \"block_size\": %u,\n  \"hold\": %u,\n"
             "  \"requests\": %zu,\n  \"results\": [\n",
          pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", pl->stream->block_size,
          pl->hold, pl->stream->n_reqs);
  for (size_t i = 0; i < pl->n_jobs; i++) {
    const sim_result *r = &pl->jobs[i].res;
    fprintf(f, "    {\"policy\": ");
    cli_json_string(f, r->policy);
    fprintf(f, ", \"capacity\": %u, \"lookups\": %llu, \"block_hits\": %llu, "
               "\"block_hit_ratio\": %.6f, \"prompt_tokens\": %llu, \"hit_tokens\": %llu, "
               "\"prefix_hit_ratio\": %.6f, \"evictions\": %llu, \"dropped\": %llu, "
               "\"seconds\": %.4f}%s\n",
            r->capacity, (unsigned long long)r->lookups, (unsigned long long)r->block_hits,
            ratio(r->block_hits, r->lookups), (unsigned long long)r->prompt_tokens,
            (unsigned long long)r->hit_tokens, ratio(r->hit_tokens, r->prompt_tokens),
            (unsigned long long)r->evictions, (unsigned long long)r->dropped, r->seconds,
            i + 1 < pl->n_jobs ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  if (fclose(f)) return cli_error("sim", "%s: write failed: %m", path);
  return 0;
}

static int write_plot(const sim_plan *pl, const char *trace_path, const char *path,
                      const uint64_t *caps, size_t n_caps, char **names, size_t n_names) {
  size_t cap = 4096, len = 0;
  char *sc = malloc(cap);
  if (!sc) return cli_error("sim", "out of memory");
#define EMIT(...)                                                             \
  do {                                                                        \
    int k_ = snprintf(sc + len, cap - len, __VA_ARGS__);                      \
    if (k_ < 0) break;                                                        \
    if ((size_t)k_ >= cap - len) {                                            \
      cap = 2 * (cap + (size_t)k_);                                           \
      char *n_ = realloc(sc, cap);                                            \
      if (!n_) { free(sc); return cli_error("sim", "out of memory"); }        \
      sc = n_;                                                                \
      snprintf(sc + len, cap - len, __VA_ARGS__);                             \
    }                                                                         \
    len += (size_t)k_;                                                        \
  } while (0)
  uint64_t lo = caps[0], hi = caps[0];
  for (size_t c = 0; c < n_caps; c++) {
    if (caps[c] < lo) lo = caps[c];
    if (caps[c] > hi) hi = caps[c];
  }
  const char *base = strrchr(trace_path, '/');
  base = base ? base + 1 : trace_path;
  EMIT("set terminal pngcairo size 900,560 noenhanced\nset output '%s'\n", path);
  EMIT("set title '%s: %s hit ratio vs capacity (%s model, block %u, hold %u)'\n", base,
       pl->model == SIM_MODEL_MANAGER ? "prefix" : "block",
       pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", pl->stream->block_size, pl->hold);
  EMIT("set xlabel 'capacity (blocks)'\nset ylabel 'hit ratio'\nset key left top\nset grid\n"
       "set yrange [0:*]\n");
  if (hi >= 10 * lo) EMIT("set logscale x\n");
  if (hi == lo) EMIT("set xrange [%llu:%llu]\n", (unsigned long long)(lo / 2), (unsigned long long)(hi * 3 / 2 + 1));
  for (size_t k = 0; k < n_names; k++) {
    EMIT("$d%zu << EOD\n", k);
    for (size_t c = 0; c < n_caps; c++) {
      const sim_result *r = find_result(pl, names[k], (uint32_t)caps[c]);
      if (r) EMIT("%u %.6f\n", r->capacity, headline(pl, r));
    }
    EMIT("EOD\n");
  }
  EMIT("plot ");
  for (size_t k = 0; k < n_names; k++)
    EMIT("%s$d%zu using 1:2 with linespoints %s title '%s'", k ? ", " : "", k,
         strcmp(names[k], "belady") ? "lw 2" : "lw 2 dt 2 lc rgb 'black'", names[k]);
  EMIT("\n");
#undef EMIT
  int rc = cli_gnuplot("sim", sc);
  free(sc);
  return rc ? 1 : 0;
}

static void sim_help(void) {
  printf(
      "Usage: pagedkv sim TRACE [OPTIONS]\n"
      "\n"
      "Replays a trace (Mooncake JSONL with hash_ids, or Azure CSV) and reports the\n"
      "hit ratios of eviction policies at each capacity, beside Belady's offline\n"
      "optimum on the same access stream.\n"
      "\n"
      "Options:\n"
      "  -p, --policy LIST      policies, comma-separated, or 'all' (default: all built-ins)\n"
      "  -c, --capacity LIST    capacities in blocks, e.g. 1000,10000 or 1k,10k (default 1000,10000)\n"
      "  -b, --block-size N     tokens per block (default: the trace's, 512 for Mooncake)\n"
      "      --hold N           a request keeps its blocks for N following requests (default 0)\n"
      "  -m, --model M          manager: the real cache manager, external mode (default);\n"
      "                         simple: the model of ../shared/traces/README.md\n"
      "      --policy-args S    argument string passed to every policy's create hook\n"
      "      --policy-lib F.so  also run the policy a shared object exports as\n"
      "                         'const pkv_policy_ops pkv_user_policy'\n"
      "      --no-belady        skip Belady's bound\n"
      "      --format F         mooncake or azure (default: from the file name)\n"
      "      --csv FILE         results as CSV\n"
      "      --json FILE        results as JSON\n"
      "      --plot FILE.png    hit ratio vs capacity, one line per policy (gnuplot)\n"
      "  -j, --jobs N           parallel replays (default: number of CPUs)\n"
      "  -q, --quiet            no progress bar\n"
      "  -h, --help             this help\n"
      "\n"
      "Manager model: each request creates a sequence, matches its prompt's\n"
      "prefix (prefix_hit = matched tokens / prompt tokens), appends and commits\n"
      "the rest, holds it for --hold requests, then frees it.  block_hit = hit\n"
      "blocks / block lookups.  gap_closed = share of the LRU-to-Belady gap.\n");
}

int cmd_sim(int argc, char **argv) {
  static const struct option longopts[] = {
      {"policy", required_argument, NULL, 'p'},
      {"capacity", required_argument, NULL, 'c'},
      {"block-size", required_argument, NULL, 'b'},
      {"hold", required_argument, NULL, 'H'},
      {"model", required_argument, NULL, 'm'},
      {"policy-args", required_argument, NULL, 'A'},
      {"policy-lib", required_argument, NULL, 'L'},
      {"no-belady", no_argument, NULL, 'N'},
      {"format", required_argument, NULL, 'F'},
      {"csv", required_argument, NULL, 'C'},
      {"json", required_argument, NULL, 'J'},
      {"plot", required_argument, NULL, 'P'},
      {"jobs", required_argument, NULL, 'j'},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *policy_list = "all", *cap_list = "1000,10000", *policy_args = NULL;
  const char *policy_lib = NULL, *csv = NULL, *json = NULL, *plot = NULL;
  uint64_t block_size = 0, hold = 0, jobs = cli_nproc();
  sim_model model = SIM_MODEL_MANAGER;
  trace_format fmt = TRACE_AUTO;
  bool belady = true, quiet = false;
  int opt;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":p:c:b:m:j:qh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'p': policy_list = optarg; break;
    case 'c': cap_list = optarg; break;
    case 'b':
      if (!cli_parse_u64(optarg, 1, 65536, &block_size))
        return cli_usage_error("sim", "--block-size: '%s' is not an integer in 1..65536", optarg);
      break;
    case 'H':
      if (!cli_parse_u64(optarg, 0, 1000000, &hold))
        return cli_usage_error("sim", "--hold: '%s' is not an integer in 0..1000000", optarg);
      break;
    case 'm':
      if (!strcmp(optarg, "manager")) model = SIM_MODEL_MANAGER;
      else if (!strcmp(optarg, "simple")) model = SIM_MODEL_SIMPLE;
      else return cli_usage_error("sim", "--model: '%s' is not 'manager' or 'simple'", optarg);
      break;
    case 'A': policy_args = optarg; break;
    case 'L': policy_lib = optarg; break;
    case 'N': belady = false; break;
    case 'F':
      if (trace_format_parse(optarg, &fmt))
        return cli_usage_error("sim", "--format: '%s' is not 'mooncake' or 'azure'", optarg);
      break;
    case 'C': csv = optarg; break;
    case 'J': json = optarg; break;
    case 'P': plot = optarg; break;
    case 'j':
      if (!cli_parse_u64(optarg, 1, 1024, &jobs))
        return cli_usage_error("sim", "--jobs: '%s' is not an integer in 1..1024", optarg);
      break;
    case 'q': quiet = true; break;
    case 'h': sim_help(); return 0;
    case ':': return cli_usage_error("sim", "option '%s' needs a value", argv[optind - 1]);
    default: return cli_usage_error("sim", "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc) return cli_usage_error("sim", "missing TRACE (a .jsonl or .csv file)");
  if (optind + 1 < argc) return cli_usage_error("sim", "unexpected argument '%s'", argv[optind + 1]);
  const char *trace_path = argv[optind];

  uint64_t *caps = NULL;
  size_t n_caps = 0;
  if (!cli_parse_u64_list(cap_list, 1, &caps, &n_caps))
    return cli_usage_error("sim", "--capacity: '%s' is not a list of block counts >= 1", cap_list);
  for (size_t i = 0; i < n_caps; i++)
    if (caps[i] > UINT32_MAX / 2) {
      free(caps);
      return cli_usage_error("sim", "--capacity: %llu blocks is too many", (unsigned long long)caps[i]);
    }

  /* Policies: the built-ins by name, then the user's shared object. */
  const pkv_policy_ops *ops[64];
  size_t n_ops = 0;
  int status = 0;
  char **names = NULL;
  size_t n_names = 0;
  void *lib = NULL;
  if (!strcmp(policy_list, "all")) {
    for (const char *const *n = pkv_policy_names(); *n && n_ops < 63; n++) {
      const pkv_policy_ops *o = pkv_policy_find(*n);
      if (o) ops[n_ops++] = o;
    }
  } else if (strcmp(policy_list, "none")) {
    char **want;
    size_t n_want;
    if (!cli_split_names(policy_list, &want, &n_want)) {
      free(caps);
      return cli_usage_error("sim", "--policy: '%s' is not a comma-separated list", policy_list);
    }
    for (size_t i = 0; i < n_want && n_ops < 63; i++) {
      const pkv_policy_ops *o = pkv_policy_find(want[i]);
      if (!strcmp(want[i], "belady")) continue; /* always computed unless --no-belady */
      if (!o) {
        fprintf(stderr, "pagedkv sim: --policy: unknown policy '%s' (known:", want[i]);
        for (const char *const *n = pkv_policy_names(); *n; n++) fprintf(stderr, " %s", *n);
        fprintf(stderr, ", belady)\n");
        cli_free_names(want);
        free(caps);
        return CLI_EXIT_USAGE;
      }
      ops[n_ops++] = o;
    }
    cli_free_names(want);
  }
  if (policy_lib) {
    lib = dlopen(policy_lib, RTLD_NOW | RTLD_LOCAL);
    const pkv_policy_ops *user = lib ? dlsym(lib, "pkv_user_policy") : NULL;
    if (!user) {
      status = cli_error("sim", "--policy-lib %s: %s", policy_lib,
                         lib ? "no symbol 'pkv_user_policy'" : dlerror());
      goto out;
    }
    int rc = pkv_policy_register(user);
    if (rc && rc != PKV_ESTATE) {
      status = cli_error("sim", "--policy-lib %s: %s (%s)", policy_lib, pkv_strerror(rc),
                         pkv_last_error());
      goto out;
    }
    if (rc == PKV_ESTATE && pkv_policy_find(user->name) != user) {
      status = cli_error("sim", "--policy-lib %s: policy name '%s' is taken by a built-in",
                         policy_lib, user->name);
      goto out;
    }
    ops[n_ops++] = user;
  }
  if (!n_ops && !belady) {
    status = cli_usage_error("sim", "nothing to run (no policy and --no-belady)");
    goto out;
  }

  trace t;
  char err[512];
  if (trace_load(trace_path, fmt, &t, err, sizeof err)) {
    status = cli_error("sim", "%s", err);
    goto out;
  }
  if (!block_size) block_size = t.block_size ? t.block_size : TRACE_MOONCAKE_BLOCK;
  sim_stream stream;
  if (sim_stream_build(&t, (uint32_t)block_size, &stream, err, sizeof err)) {
    trace_free(&t);
    status = cli_error("sim", "%s", err);
    goto out;
  }

  sim_plan pl = {.stream = &stream, .model = model, .hold = (uint32_t)hold,
                 .policy_args = policy_args};
  pl.n_jobs = n_caps * (n_ops + belady);
  pl.jobs = calloc(pl.n_jobs, sizeof *pl.jobs);
  names = calloc(n_ops + 2, sizeof *names);
  if (!pl.jobs || !names) {
    status = cli_error("sim", "out of memory");
    goto done;
  }
  for (size_t k = 0; k < n_ops; k++) names[n_names++] = (char *)ops[k]->name;
  if (belady) names[n_names++] = "belady";
  size_t j = 0;
  for (size_t c = 0; c < n_caps; c++) {
    for (size_t k = 0; k < n_ops; k++) pl.jobs[j++] = (sim_job){.ops = ops[k], .capacity = (uint32_t)caps[c]};
    if (belady) pl.jobs[j++] = (sim_job){.ops = NULL, .capacity = (uint32_t)caps[c]};
  }

  size_t n_threads = jobs < pl.n_jobs ? jobs : pl.n_jobs;
  pthread_t *th = calloc(n_threads, sizeof *th);
  if (!th) {
    status = cli_error("sim", "out of memory");
    goto done;
  }
  cli_progress prog;
  cli_progress_init(&prog, "sim", (uint64_t)pl.n_jobs * stream.n_reqs, quiet);
  uint64_t t0 = cli_now_ns();
  size_t started = 0;
  for (; started < n_threads; started++)
    if (pthread_create(&th[started], NULL, worker, &pl)) break;
  if (!started) worker(&pl); /* no thread could start: run here */
  while (atomic_load(&pl.jobs_done) < pl.n_jobs) {
    char tail[96];
    double secs = (double)(cli_now_ns() - t0) / 1e9;
    snprintf(tail, sizeof tail, "replays %zu/%zu, %.1f s", atomic_load(&pl.jobs_done), pl.n_jobs, secs);
    cli_progress_update(&prog, atomic_load(&pl.progress), tail);
    nanosleep(&(struct timespec){0, 50000000}, NULL);
  }
  for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
  free(th);
  cli_progress_update(&prog, atomic_load(&pl.progress), "done");
  cli_progress_finish(&prog);

  for (size_t i = 0; i < pl.n_jobs; i++)
    if (pl.jobs[i].res.rc) {
      status = cli_error("sim", "%s at capacity %u: %s", pl.jobs[i].res.policy,
                         pl.jobs[i].res.capacity, pl.jobs[i].res.err);
    }
  if (status) goto done; /* nothing partial */

  printf("trace %s: %zu requests, %llu prompt tokens, %llu block lookups (%llu full), "
         "block size %u, %s model, hold %llu\n",
         trace_path, stream.n_reqs, (unsigned long long)t.prompt_tokens,
         (unsigned long long)stream.n_pos, (unsigned long long)stream.n_full,
         stream.block_size, model == SIM_MODEL_MANAGER ? "manager" : "simple",
         (unsigned long long)hold);
  print_table(&pl, caps, n_caps);
  if (csv && write_csv(&pl, csv)) status = 1;
  if (json && write_json(&pl, trace_path, json)) status = 1;
  if (plot && write_plot(&pl, trace_path, plot, caps, n_caps, names, n_names)) status = 1;
done:
  free(pl.jobs);
  sim_stream_free(&stream);
  trace_free(&t);
out:
  free(names);
  free(caps);
  /* The user's policy stays registered until exit, so the library is not
   * unloaded under the registry. */
  (void)lib;
  return status;
}
