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
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"

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
  /* Block ids and positions are 32-bit in the replays' tables. */
  if (n_pos >= UINT32_MAX) {
    snprintf(err, err_cap, "%llu block lookups at block size %u: more than a replay can index "
             "(%u); use a larger --block-size or a shorter trace",
             (unsigned long long)n_pos, block_size, UINT32_MAX - 1);
    sim_stream_free(s);
    return -1;
  }
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
        /* Everything held, or the newcomer itself is needed last: do not
         * cache it.  Under --hold the manager has no such choice (a held
         * request keeps its blocks), so this is a relaxation: the bound can
         * only rise, and stays above what the manager can reach. */
        if (!found || v.key < nu) {
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
  const char *args;          /* the policy's --policy-args, or NULL */
  uint32_t capacity;         /* as asked (the table's) */
  uint32_t run_capacity;     /* as replayed: at most the trace's lookups */
  bool isolate;              /* a --policy-lib plug-in: replay in a child */
  pid_t pid;                 /* that child, once started */
  int fd;                    /* and the pipe its result comes through */
  sim_result res;
} sim_job;

typedef struct sim_plan {
  const sim_stream *stream;
  sim_model model;
  uint32_t hold;
  sim_job *jobs;
  size_t n_jobs;
  _Atomic size_t next_job;
  _Atomic size_t jobs_done;
  _Atomic uint64_t progress;
} sim_plan;

static void replay(sim_plan *pl, sim_job *j, sim_result *r, _Atomic uint64_t *progress) {
  if (pl->model == SIM_MODEL_SIMPLE)
    sim_run_simple(pl->stream, j->ops, j->args, j->run_capacity, r, progress);
  else
    sim_run_manager(pl->stream, j->ops, j->args, j->run_capacity, pl->hold, r, progress);
}

/* A plug-in's replay runs in a child process, its result coming back
 * through a pipe: the probe (probe_plugin) tries only a few calls, and a
 * plug-in that crashes under real traffic must be reported naming it, not
 * take the whole run down with it.  The children are forked by run_jobs
 * before any worker thread exists (a fork beside running threads can
 * inherit a lock one of them holds: it hung under ASan), so they run
 * alongside the worker threads; a worker collects each one's result. */
static void isolated_start(sim_plan *pl, sim_job *j) {
  sim_result *r = &j->res;
  snprintf(r->policy, sizeof r->policy, "%s", j->ops->name);
  int fds[2];
  j->pid = -1;
  if (pipe(fds) == 0 && (j->pid = fork()) < 0) {
    close(fds[0]);
    close(fds[1]);
  }
  if (j->pid < 0) {
    r->rc = PKV_ENOMEM;
    snprintf(r->err, sizeof r->err, "cannot start the plug-in's replay process: %s", strerror(errno));
    return;
  }
  if (j->pid == 0) {
    close(fds[0]);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDERR_FILENO);
    sim_result cr = *r;
    replay(pl, j, &cr, NULL);
    const char *p = (const char *)&cr;
    size_t left = sizeof cr;
    while (left) {
      ssize_t w = write(fds[1], p, left);
      if (w <= 0 && errno != EINTR) _exit(1);
      if (w > 0) p += w, left -= (size_t)w;
    }
    _exit(0);
  }
  close(fds[1]);
  j->fd = fds[0];
}

static void isolated_finish(sim_plan *pl, sim_job *j) {
  sim_result *r = &j->res;
  if (j->pid < 0) return; /* could not start: res says why */
  sim_result cr;
  size_t got = 0;
  ssize_t k;
  while (got < sizeof cr && ((k = read(j->fd, (char *)&cr + got, sizeof cr - got)) > 0 ||
                             (k < 0 && errno == EINTR)))
    if (k > 0) got += (size_t)k;
  close(j->fd);
  int wst = 0;
  while (waitpid(j->pid, &wst, 0) < 0 && errno == EINTR) {}
  atomic_fetch_add_explicit(&pl->progress, pl->stream->n_reqs, memory_order_relaxed);
  if (WIFSIGNALED(wst)) {
    r->rc = PKV_ECORRUPT;
    snprintf(r->err, sizeof r->err, "the plug-in crashed during the replay (signal %d, %s)",
             WTERMSIG(wst), strsignal(WTERMSIG(wst)));
  } else if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0 || got != sizeof cr) {
    r->rc = PKV_ECORRUPT;
    snprintf(r->err, sizeof r->err, "the plug-in's replay died (exit status %d)",
             WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
  } else {
    *r = cr;
  }
}

static void run_job(sim_plan *pl, sim_job *j) {
  sim_result *r = &j->res;
  snprintf(r->policy, sizeof r->policy, "%s", j->ops ? j->ops->name : "belady");
  if (j->isolate)
    isolated_finish(pl, j);
  else if (!j->ops)
    sim_run_belady(pl->stream, j->run_capacity, pl->model == SIM_MODEL_MANAGER,
                   pl->model == SIM_MODEL_MANAGER ? pl->hold : 0, r, &pl->progress);
  else
    replay(pl, j, r, &pl->progress);
  r->capacity = j->capacity;
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

static void print_table(FILE *f, const sim_plan *pl, const uint64_t *caps, size_t n_caps) {
  bool mgr = pl->model == SIM_MODEL_MANAGER;
  fprintf(f, "%-10s %-12s %10s %10s %10s %9s %8s %8s\n", "capacity", "policy",
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
      fprintf(f, "%-10u %-12s %10.4f %10.4f %10s %9llu %8llu %8.3f\n", r->capacity, r->policy,
              headline(pl, r), ratio(r->block_hits, r->lookups), gap,
              (unsigned long long)r->evictions, (unsigned long long)r->dropped, r->seconds);
    }
  }
}

/* What the table cannot show: notes on stdout after it, so a figure is
 * never read without its caveat. */
static void print_notes(FILE *f, const sim_plan *pl, const trace *t, const uint64_t *caps,
                        size_t n_caps) {
  const sim_stream *s = pl->stream;
  if (t->format == TRACE_AZURE)
    fprintf(f, "note: an Azure trace has lengths only (no block hashes): no two requests share "
               "content, so hits cannot exist in this format and every ratio above is 0 by "
               "construction\n");
  for (size_t c = 0; c < n_caps; c++) {
    const sim_job *j = NULL;
    for (size_t i = 0; i < pl->n_jobs && !j; i++)
      if (pl->jobs[i].capacity == caps[c]) j = &pl->jobs[i];
    if (j && j->run_capacity < j->capacity)
      fprintf(f, "note: capacity %llu is more than the trace's %llu block lookups: everything "
                 "fits, so it was replayed at %u blocks (same result)\n",
              (unsigned long long)caps[c], (unsigned long long)s->n_pos, j->run_capacity);
    if (pl->model != SIM_MODEL_MANAGER) continue;
    /* Requests whose prompt alone needs more blocks than the pool. */
    size_t too_long = 0;
    uint32_t longest = 0;
    for (size_t q = 0; q < s->n_reqs; q++) {
      uint64_t nb = s->req_pos[q + 1] - s->req_pos[q];
      if (nb > caps[c]) {
        too_long++;
        if (t->reqs[q].input_len > longest) longest = t->reqs[q].input_len;
      }
    }
    if (too_long)
      fprintf(f, "note: at capacity %llu, %zu requests need more blocks than the cache has "
                 "(longest %u tokens): they cannot run and are counted in 'dropped', not as "
                 "misses of a truncated prompt\n",
              (unsigned long long)caps[c], too_long, longest);
    const sim_result *bel = find_result(pl, "belady", (uint32_t)caps[c]);
    for (size_t i = 0; bel && i < pl->n_jobs; i++) {
      const sim_result *r = &pl->jobs[i].res;
      if (r->capacity == caps[c] && r != bel && headline(pl, r) > headline(pl, bel) + 1e-9)
        fprintf(f, "note: at capacity %u, %s (%.4f) is above belady (%.4f): farthest-next-use "
                   "with --hold %u pinning blocks is not proven optimal, and here it is not a "
                   "bound (%llu requests dropped)\n",
                r->capacity, r->policy, headline(pl, r), headline(pl, bel), pl->hold,
                (unsigned long long)r->dropped);
    }
  }
}

/* Output to a file, or to standard output for "-". */
static FILE *open_out(const char *path) {
  return strcmp(path, "-") ? fopen(path, "w") : stdout;
}

static int close_out(FILE *f, const char *path) {
  bool std = f == stdout;
  if (std ? fflush(f) != 0 || ferror(f) : fclose(f) != 0)
    return cli_error("sim", "%s: write failed: %m", std ? "standard output" : path);
  return 0;
}

/* The columns whose meaning depends on the model are named by it:
 * manager: prefix_hit_tokens (matched by prefix matching, a leading run);
 * simple: block_hit_tokens (tokens of hit blocks, anywhere in the prompt). */
static const char *hit_tokens_name(const sim_plan *pl) {
  return pl->model == SIM_MODEL_MANAGER ? "prefix_hit_tokens" : "block_hit_tokens";
}

static const char *hit_ratio_name(const sim_plan *pl) {
  return pl->model == SIM_MODEL_MANAGER ? "prefix_hit_ratio" : "block_hit_token_ratio";
}

static int write_csv(const sim_plan *pl, const char *path) {
  FILE *f = open_out(path);
  if (!f) return cli_error("sim", "%s: cannot write: %m", path);
  fprintf(f, "model,policy,capacity,block_size,hold,requests,lookups,block_hits,block_hit_ratio,"
             "prompt_tokens,%s,%s,evictions,dropped,seconds\n",
          hit_tokens_name(pl), hit_ratio_name(pl));
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
  return close_out(f, path);
}

static int write_json(const sim_plan *pl, const char *trace_path, const char *path) {
  FILE *f = open_out(path);
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
               "\"block_hit_ratio\": %.6f, \"prompt_tokens\": %llu, \"%s\": %llu, "
               "\"%s\": %.6f, \"evictions\": %llu, \"dropped\": %llu, "
               "\"seconds\": %.4f}%s\n",
            r->capacity, (unsigned long long)r->lookups, (unsigned long long)r->block_hits,
            ratio(r->block_hits, r->lookups), (unsigned long long)r->prompt_tokens,
            hit_tokens_name(pl), (unsigned long long)r->hit_tokens, hit_ratio_name(pl),
            ratio(r->hit_tokens, r->prompt_tokens), (unsigned long long)r->evictions,
            (unsigned long long)r->dropped, r->seconds, i + 1 < pl->n_jobs ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  return close_out(f, path);
}

/* Every string that reaches the script (the output path, the trace's name,
 * policy names from a plug-in) goes through cli_buf_gnuplot_string. */
static int write_plot(const sim_plan *pl, const char *trace_path, const char *path,
                      const uint64_t *caps, size_t n_caps, const char *const *names,
                      size_t n_names) {
  cli_buf b = {0};
  uint64_t lo = caps[0], hi = caps[0];
  for (size_t c = 0; c < n_caps; c++) {
    if (caps[c] < lo) lo = caps[c];
    if (caps[c] > hi) hi = caps[c];
  }
  const char *base = strrchr(trace_path, '/');
  base = base ? base + 1 : trace_path;
  char title[512];
  snprintf(title, sizeof title, "%s: %s hit ratio vs capacity (%s model, block %u, hold %u)", base,
           pl->model == SIM_MODEL_MANAGER ? "prefix" : "block",
           pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", pl->stream->block_size, pl->hold);
  cli_buf_printf(&b, "set terminal pngcairo size 900,560 noenhanced\nset output ");
  cli_buf_gnuplot_string(&b, path);
  cli_buf_printf(&b, "\nset title ");
  cli_buf_gnuplot_string(&b, title);
  cli_buf_printf(&b, "\nset xlabel 'capacity (blocks)'\nset ylabel 'hit ratio'\nset key left top\n"
                     "set grid\nset yrange [0:*]\n");
  if (hi >= 10 * lo) cli_buf_printf(&b, "set logscale x\n");
  if (hi == lo)
    cli_buf_printf(&b, "set xrange [%llu:%llu]\n", (unsigned long long)(lo / 2),
                   (unsigned long long)(hi * 3 / 2 + 1));
  for (size_t k = 0; k < n_names; k++) {
    cli_buf_printf(&b, "$d%zu << EOD\n", k);
    for (size_t c = 0; c < n_caps; c++) {
      const sim_result *r = find_result(pl, names[k], (uint32_t)caps[c]);
      if (r) cli_buf_printf(&b, "%u %.6f\n", r->capacity, headline(pl, r));
    }
    cli_buf_printf(&b, "EOD\n");
  }
  cli_buf_printf(&b, "plot ");
  for (size_t k = 0; k < n_names; k++) {
    cli_buf_printf(&b, "%s$d%zu using 1:2 with linespoints %s title ", k ? ", " : "", k,
                   strcmp(names[k], "belady") ? "lw 2" : "lw 2 dt 2 lc rgb 'black'");
    cli_buf_gnuplot_string(&b, names[k]);
  }
  cli_buf_printf(&b, "\n");
  int rc = b.oom ? cli_error("sim", "out of memory (plot script)") : cli_gnuplot("sim", b.s) ? 1 : 0;
  free(b.s);
  return rc;
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
      "  -p, --policy LIST      policies, comma-separated, or 'all' (default: all built-ins);\n"
      "                         a name given twice runs once\n"
      "  -c, --capacity LIST    capacities in blocks, e.g. 1000,10000 or 1k,10k (default 1000,10000;\n"
      "                         1 .. 2147483647)\n"
      "  -b, --block-size N     tokens per block (default: the trace's, 512 for Mooncake)\n"
      "      --hold N           a request keeps its blocks for N following requests (default 0;\n"
      "                         manager model only)\n"
      "  -m, --model M          manager: the real cache manager, external mode (default);\n"
      "                         simple: the model of ../shared/traces/README.md\n"
      "      --policy-args P:S  argument string S for policy P's create hook, e.g.\n"
      "                         fwlru:cold=1 (repeatable; plain S if one policy runs)\n"
      "      --policy-lib F.so  also run the policy a shared object exports as\n"
      "                         'const pkv_policy_ops pkv_user_policy' (tried in a child\n"
      "                         process first; its replays run in child processes)\n"
      "      --no-belady        skip Belady's bound\n"
      "      --format F         mooncake or azure (default: from the file name)\n"
      "      --csv FILE         results as CSV ('-': standard output)\n"
      "      --json FILE        results as JSON ('-': standard output; the table then goes\n"
      "                         to stderr)\n"
      "      --plot FILE.png    hit ratio vs capacity, one line per policy (gnuplot,\n"
      "                         checked before the run)\n"
      "  -j, --jobs N           parallel replays (default: number of CPUs)\n"
      "  -q, --quiet            no progress bar\n"
      "  -h, --help             this help\n"
      "\n"
      "Manager model: each request creates a sequence, matches its prompt's\n"
      "prefix (prefix_hit = matched tokens / prompt tokens), appends and commits\n"
      "the rest, holds it for --hold requests, then frees it.  block_hit = hit\n"
      "blocks / block lookups.  gap_closed = share of the LRU-to-Belady gap.\n");
}

/* ---------------------------------------------------------------- policies */

enum { SIM_MAX_POLICIES = 64 };

typedef struct policy_set {
  const pkv_policy_ops *ops[SIM_MAX_POLICIES];
  const char *args[SIM_MAX_POLICIES];
  size_t n;
  const pkv_policy_ops *user; /* the --policy-lib plug-in, or NULL */
} policy_set;

/* Adds ops once: a policy named twice runs once. */
static void policy_add(policy_set *ps, const pkv_policy_ops *ops) {
  for (size_t i = 0; i < ps->n; i++)
    if (ps->ops[i] == ops || !strcmp(ps->ops[i]->name, ops->name)) return;
  if (ps->n < SIM_MAX_POLICIES) ps->ops[ps->n++] = ops;
}

/* Loads --policy-lib and registers its policy; *user is it, or NULL with
 * the error printed. */
static int load_plugin(const char *path, const pkv_policy_ops **user) {
  *user = NULL;
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  const pkv_policy_ops *u = lib ? dlsym(lib, "pkv_user_policy") : NULL;
  if (!u)
    return cli_error("sim", "--policy-lib %s: %s", path, lib ? "no symbol 'pkv_user_policy'" : dlerror());
  int rc = pkv_policy_register(u);
  if (rc && rc != PKV_ESTATE)
    return cli_error("sim", "--policy-lib %s: %s (%s)", path, pkv_strerror(rc), pkv_last_error());
  if (rc == PKV_ESTATE && pkv_policy_find(u->name) != u)
    return cli_error("sim", "--policy-lib %s: policy name '%s' is taken by a built-in", path, u->name);
  /* The library stays loaded until exit: the registry points into it. */
  *user = u;
  return 0;
}

/* Tries a plug-in in a child process: create at 8 blocks with its args,
 * 8 blocks inserted and released, one choose_victim that must name one of
 * them, destroy.  A crash or a garbage victim is reported naming the
 * policy, and nothing is run.  The child's stderr is discarded (a
 * sanitizer's report of the plug-in's crash belongs to the child). */
static int probe_plugin(const char *path, const pkv_policy_ops *ops, const char *args) {
  int fds[2];
  if (pipe(fds)) return cli_error("sim", "pipe: %m");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return cli_error("sim", "fork: %m");
  }
  if (pid == 0) {
    close(fds[0]);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDERR_FILENO);
    char msg[256] = "";
    void *st = NULL;
    enum { N = 8 };
    int rc = ops->create(&st, N, args);
    if (rc) {
      snprintf(msg, sizeof msg, "create failed: %s (%s)", pkv_strerror(rc), pkv_last_error());
    } else {
      pkv_block_meta meta = {.priority = 35};
      for (int32_t b = 0; b < N; b++) {
        meta.now = (uint64_t)b + 1;
        meta.key = (pkv_hash128){(uint64_t)b + 1, 0};
        ops->on_insert(st, b, &meta);
        ops->on_evictable(st, b, &meta);
      }
      int32_t v = ops->choose_victim(st, N + 1);
      if (v < 0 || v >= N)
        snprintf(msg, sizeof msg, "choose_victim returned block %d with blocks 0..%d evictable",
                 (int)v, N - 1);
      ops->destroy(st);
    }
    size_t len = strlen(msg) + 1;
    ssize_t w = write(fds[1], msg, len);
    _exit(w == (ssize_t)len ? 0 : 1);
  }
  close(fds[1]);
  char msg[256];
  size_t got = 0;
  ssize_t k;
  while (got < sizeof msg && (k = read(fds[0], msg + got, sizeof msg - got)) > 0) got += (size_t)k;
  close(fds[0]);
  int wst = 0;
  while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {}
  if (WIFSIGNALED(wst))
    return cli_error("sim", "policy '%s' (--policy-lib %s) crashed when tried (signal %d, %s); "
                            "nothing was run", ops->name, path, WTERMSIG(wst), strsignal(WTERMSIG(wst)));
  if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0 || got == 0 || msg[got - 1] != '\0')
    return cli_error("sim", "policy '%s' (--policy-lib %s) died when tried (exit status %d); "
                            "nothing was run", ops->name, path, WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
  if (msg[0])
    return cli_error("sim", "policy '%s' (--policy-lib %s): %s; nothing was run", ops->name, path, msg);
  return 0;
}

/* The policies to run, from --policy, --policy-lib and --policy-args. */
static int resolve_policies(const sim_opts *o, policy_set *ps) {
  memset(ps, 0, sizeof *ps);
  const pkv_policy_ops *user = NULL;
  if (o->policy_lib && load_plugin(o->policy_lib, &user)) return 1;
  if (!strcmp(o->policy_list, "all")) {
    for (const char *const *n = pkv_policy_names(); *n; n++) {
      const pkv_policy_ops *p = pkv_policy_find(*n);
      if (p && p != user) policy_add(ps, p);
    }
  } else if (strcmp(o->policy_list, "none")) {
    char **want;
    size_t n_want;
    if (!cli_split_names(o->policy_list, &want, &n_want))
      return cli_usage_error("sim", "--policy: '%s' is not a comma-separated list", o->policy_list);
    for (size_t i = 0; i < n_want; i++) {
      if (!strcmp(want[i], "belady")) continue; /* always computed unless --no-belady */
      const pkv_policy_ops *p = pkv_policy_find(want[i]);
      if (!p) {
        fprintf(stderr, "pagedkv sim: --policy: unknown policy '%s' (known:", want[i]);
        for (const char *const *n = pkv_policy_names(); *n; n++) fprintf(stderr, " %s", *n);
        fprintf(stderr, ", belady)\n");
        cli_free_names(want);
        return CLI_EXIT_USAGE;
      }
      policy_add(ps, p);
    }
    cli_free_names(want);
  }
  if (user) policy_add(ps, user);
  ps->user = user;
  if (ps->n == SIM_MAX_POLICIES)
    return cli_usage_error("sim", "--policy: at most %d policies", SIM_MAX_POLICIES - 1);
  /* Each --policy-args goes to exactly one policy that runs. */
  for (size_t a = 0; a < o->n_pargs; a++) {
    const char *name = o->pargs[a].policy;
    if (!name && ps->n != 1)
      return cli_usage_error("sim", "--policy-args '%s': say which policy it is for, as NAME:ARGS "
                                    "(e.g. fwlru:cold=1); %zu policies run", o->pargs[a].args, ps->n);
    size_t k = 0;
    while (k < ps->n && name && strcmp(ps->ops[k]->name, name)) k++;
    if (k == ps->n)
      return cli_usage_error("sim", "--policy-args: policy '%s' is not among those run", name);
    ps->args[k] = o->pargs[a].args;
  }
  /* Arguments are checked by the policy itself before anything runs. */
  for (size_t k = 0; k < ps->n; k++) {
    if (ps->ops[k] == user) {
      if (probe_plugin(o->policy_lib, user, ps->args[k])) return 1;
      continue;
    }
    if (!ps->args[k]) continue;
    void *st = NULL;
    int rc = ps->ops[k]->create(&st, 16, ps->args[k]);
    if (rc)
      return cli_usage_error("sim", "--policy-args %s:%s: %s", ps->ops[k]->name, ps->args[k],
                             pkv_last_error());
    ps->ops[k]->destroy(st);
  }
  return 0;
}

/* ---------------------------------------------------------------- command */

/* Runs every job on the worker threads with a progress bar. */
static int run_jobs(sim_plan *pl, size_t jobs, bool quiet) {
  size_t n_threads = jobs < pl->n_jobs ? jobs : pl->n_jobs;
  pthread_t *th = calloc(n_threads ? n_threads : 1, sizeof *th);
  if (!th) return cli_error("sim", "out of memory");
  cli_progress prog;
  cli_progress_init(&prog, "sim", (uint64_t)pl->n_jobs * pl->stream->n_reqs, quiet);
  uint64_t t0 = cli_now_ns();
  for (size_t i = 0; i < pl->n_jobs; i++) /* before any thread: see isolated_start */
    if (pl->jobs[i].isolate) isolated_start(pl, &pl->jobs[i]);
  size_t started = 0;
  for (; started < n_threads; started++)
    if (pthread_create(&th[started], NULL, worker, pl)) break;
  if (!started) worker(pl); /* no thread could start: run here */
  while (atomic_load(&pl->jobs_done) < pl->n_jobs) {
    char tail[96];
    double secs = (double)(cli_now_ns() - t0) / 1e9;
    snprintf(tail, sizeof tail, "replays %zu/%zu, %.1f s", atomic_load(&pl->jobs_done), pl->n_jobs, secs);
    cli_progress_update(&prog, atomic_load(&pl->progress), tail);
    nanosleep(&(struct timespec){0, 50000000}, NULL);
  }
  for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
  free(th);
  cli_progress_update(&prog, atomic_load(&pl->progress), "done");
  cli_progress_finish(&prog);
  int status = 0;
  for (size_t i = 0; i < pl->n_jobs; i++)
    if (pl->jobs[i].res.rc)
      status = cli_error("sim", "policy '%s' at capacity %u: %s", pl->jobs[i].res.policy,
                         pl->jobs[i].capacity, pl->jobs[i].res.err);
  return status; /* nothing partial is printed after a failure */
}

int cmd_sim(int argc, char **argv) {
  sim_opts o;
  char perr[512];
  if (sim_opts_parse(argc, argv, &o, perr, sizeof perr)) return cli_usage_error("sim", "%s", perr);
  if (o.help) {
    sim_opts_free(&o);
    sim_help();
    return 0;
  }
  int status = 0;
  trace t = {0};
  sim_stream stream = {0};
  sim_plan pl = {0};
  const char **names = NULL;
  policy_set ps;
  if ((status = resolve_policies(&o, &ps))) goto out;
  if (!ps.n && !o.belady) {
    status = cli_usage_error("sim", "nothing to run (no policy and --no-belady)");
    goto out;
  }
  if (o.plot && !cli_gnuplot_available("sim")) { /* before the run, not after */
    status = 1;
    goto out;
  }
  char err[512];
  if (trace_load(o.trace_path, o.format, &t, err, sizeof err)) {
    status = cli_error("sim", "%s", err);
    goto out;
  }
  uint32_t block_size = o.block_size ? (uint32_t)o.block_size
                                     : t.block_size ? t.block_size : TRACE_MOONCAKE_BLOCK;
  if (sim_stream_build(&t, block_size, &stream, err, sizeof err)) {
    status = cli_error("sim", "%s", err);
    goto out;
  }

  pl = (sim_plan){.stream = &stream, .model = o.model ? SIM_MODEL_SIMPLE : SIM_MODEL_MANAGER,
                  .hold = (uint32_t)o.hold};
  pl.n_jobs = o.n_caps * (ps.n + o.belady);
  pl.jobs = calloc(pl.n_jobs, sizeof *pl.jobs);
  names = calloc(ps.n + 2, sizeof *names);
  if (!pl.jobs || !names) {
    status = cli_error("sim", "out of memory");
    goto out;
  }
  size_t n_names = 0;
  for (size_t k = 0; k < ps.n; k++) names[n_names++] = ps.ops[k]->name;
  if (o.belady) names[n_names++] = "belady";
  size_t j = 0;
  for (size_t c = 0; c < o.n_caps; c++) {
    /* Beyond the trace's block lookups everything fits: the result is the
     * same at any larger capacity, so replay at that size (no 2^31-block
     * pools for a 5k-block trace). */
    uint32_t cap = (uint32_t)o.caps[c];
    uint32_t run_cap = stream.n_pos && cap > stream.n_pos ? (uint32_t)stream.n_pos : cap;
    for (size_t k = 0; k <= ps.n; k++) {
      if (k == ps.n && !o.belady) break;
      pl.jobs[j++] = (sim_job){.ops = k < ps.n ? ps.ops[k] : NULL, .args = k < ps.n ? ps.args[k] : NULL,
                               .capacity = cap, .run_capacity = run_cap,
                               .isolate = k < ps.n && ps.ops[k] == ps.user};
    }
  }
  if ((status = run_jobs(&pl, o.jobs, o.quiet))) goto out;

  /* With the JSON or CSV on standard output, the table goes to stderr. */
  FILE *tf = (o.json && !strcmp(o.json, "-")) || (o.csv && !strcmp(o.csv, "-")) ? stderr : stdout;
  fprintf(tf, "trace %s: %zu requests, %llu prompt tokens, %llu block lookups (%llu full), "
              "block size %u, %s model, hold %llu\n",
          o.trace_path, stream.n_reqs, (unsigned long long)t.prompt_tokens,
          (unsigned long long)stream.n_pos, (unsigned long long)stream.n_full, stream.block_size,
          pl.model == SIM_MODEL_MANAGER ? "manager" : "simple", (unsigned long long)o.hold);
  print_table(tf, &pl, o.caps, o.n_caps);
  print_notes(tf, &pl, &t, o.caps, o.n_caps);
  if (o.csv && write_csv(&pl, o.csv)) status = 1;
  if (o.json && write_json(&pl, o.trace_path, o.json)) status = 1;
  if (o.plot && write_plot(&pl, o.trace_path, o.plot, o.caps, o.n_caps, names, n_names)) status = 1;
out:
  free(pl.jobs);
  free(names);
  sim_stream_free(&stream);
  trace_free(&t);
  sim_opts_free(&o);
  return status;
}
