/*
 * check_concurrency.c — many threads on one cache, under memory pressure.
 *
 * N worker threads (2, 4, 8) each run their own sequences the way a serving
 * loop does: create, prefix match against a handful of shared prompts
 * (so threads hit each other's cached blocks), append the rest of the prompt,
 * write its K/V, commit; then decode steps (append one token, write, commit),
 * fork (parallel sampling), truncate (speculative rollback), free — and on
 * PKV_ENOMEM they preempt (free) a sequence of theirs and go on.  A
 * pressure thread meanwhile grabs large runs of blocks (forcing evictions of
 * the others' cached blocks), resets the prefix cache, and reads stats and
 * pkv_check while the workers run.
 *
 * K/V bytes are written and read the way the engine does: through the page
 * table returned by the engine-facing view, into the arena, without the
 * cache lock.  The value of every element is a function of (token id,
 * position, layer, K|V, head, element), so a block shared by fork or by a
 * prefix hit reads the same for every holder.
 *
 * Every `rounds` operations all threads meet at a barrier (quiescent
 * point): one thread runs pkv_check, compares the gauges with the sum of the
 * threads' models, and verifies every K/V element of every live sequence of
 * every thread through its page table; then all resume.  A worker also
 * verifies a sequence of its own after each operation on it, while the
 * others run.
 *
 * What it proves (with `make tsan`, under ThreadSanitizer): no data race on
 * the manager's state (every entry point locks), none between a lock-free
 * reader/writer of K/V and the manager handing the same block to another
 * thread (a block in use is never evicted or reused), and no lost or
 * cross-wired data (a shared or cached block is never written: copy first).
 */
#include "tu_core.h"
#include "internal.h"
#include "pagedkv/engine.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>

#define CC_MAX_THREADS 8
#define CC_SEQS_PER_THREAD 4
#define CC_MAX_TOK 96
#define CC_PROMPTS 5
#define CC_PROMPT_LEN 40

#ifdef PKV_SANITIZE
#define CC_OPS 1500
#else
#define CC_OPS 6000
#endif
#define CC_ROUND 250 /* operations between quiescent points */

typedef struct cc_seq {
  pkv_seq_id id; /* 0 = slot empty */
  uint32_t n, committed;
  int32_t tok[CC_MAX_TOK];
} cc_seq;

typedef struct cc_thread {
  struct cc_world *w;
  uint32_t index;
  uint64_t rng;
  cc_seq s[CC_SEQS_PER_THREAD];
  pkv_engine *eng; /* one per thread: one engine call at a time each */
  uint64_t ops, enomem, hits, forks, engine_calls;
} cc_thread;

typedef struct cc_world {
  pkv_cache *c;
  pkv_kv_layout L;
  uint32_t bs, n_layers, n_heads, head_dim;
  uint8_t *k[4], *v[4];
  uint32_t n_threads;
  cc_thread t[CC_MAX_THREADS];
  pthread_barrier_t barrier;
  atomic_int failed;
  atomic_int stop;
  char why[512];
  pthread_mutex_t why_lock;
  int32_t prompts[CC_PROMPTS][CC_PROMPT_LEN];
  uint64_t evictions_seen;
} cc_world;

__attribute__((format(printf, 2, 3))) static void cc_fail(cc_world *w,
                                                           const char *fmt,
                                                           ...) {
  va_list ap;
  va_start(ap, fmt);
  tu_fail_first(&w->failed, &w->why_lock, w->why, sizeof w->why, fmt, ap);
  va_end(ap);
}

/* Element d of head h of layer l's K (kv 0) or V (kv 1) for token tok at
 * position pos: 16 bits of a hash as a float in [-0.5, 0.5), exact in f32
 * so the engine's f32 store reads back bit for bit. */
static float cc_val(int32_t tok, uint32_t pos, uint32_t l, int kv, uint32_t h,
                    uint32_t d) {
  uint32_t x = (uint32_t)tok * 0x9e3779b1u ^ (pos * 0x85ebca6bu) ^
               (l << 20 | (uint32_t)kv << 19 | h << 12 | d);
  x ^= x >> 15;
  x *= 0x2c1b3c6du;
  x ^= x >> 12;
  return (float)(x & 0xffff) / 65536.0f - 0.5f;
}

/* The query of a position (any values do; these are small and exact). */
static float cc_q(uint32_t pos, uint32_t h, uint32_t d) {
  return (float)((pos * 31 + h * 7 + d * 3) % 17) / 16.0f - 0.5f;
}

static float *cc_elem(cc_world *w, int64_t slot, uint32_t l, int kv,
                         uint32_t h, uint32_t d) {
  int64_t b = slot / w->bs, s = slot % w->bs;
  uint8_t *base = kv ? w->v[l] : w->k[l];
  return (float *)(base + (size_t)b * w->L.block_stride +
                   h * w->L.head_stride + (size_t)s * w->L.slot_stride +
                   d * sizeof(float));
}

/* Writes the K/V of positions [from, s->n) as the engine would: page table
 * from the view, no lock held. */
static int cc_write(cc_world *w, const cc_seq *s, uint32_t from) {
  pkv__seq_view view;
  int rc = pkv__seq_view_get(w->c, s->id, &view);
  if (rc) {
    cc_fail(w, "view of a held seq: %s", pkv_err_name(rc));
    return rc;
  }
  if (view.n_tokens != s->n) {
    cc_fail(w, "view: %u tokens, model %u", view.n_tokens, s->n);
    return -1;
  }
  rc = pkv__seq_check_writable(w->c, s->id, from, s->n - from);
  if (rc) {
    cc_fail(w, "freshly appended slots not writable: %s", pkv_last_error());
    return rc;
  }
  for (uint32_t i = from; i < s->n; i++) {
    int64_t slot = (int64_t)view.blocks[i / w->bs] * w->bs + i % w->bs;
    for (uint32_t l = 0; l < w->n_layers; l++)
      for (int kv = 0; kv < 2; kv++)
        for (uint32_t h = 0; h < w->n_heads; h++)
          for (uint32_t d = 0; d < w->head_dim; d++)
            *cc_elem(w, slot, l, kv, h, d) = cc_val(s->tok[i], i, l, kv, h, d);
  }
  return 0;
}

/* Reads every element of s through its page table (no lock held). */
static int cc_verify(cc_world *w, const cc_seq *s) {
  pkv__seq_view view;
  int rc = pkv__seq_view_get(w->c, s->id, &view);
  if (rc) {
    cc_fail(w, "view of a held seq %#llx: %s", (unsigned long long)s->id,
            pkv_err_name(rc));
    return rc;
  }
  if (view.n_tokens != s->n || view.n_committed != s->committed ||
      view.n_blocks != (s->n + w->bs - 1) / w->bs) {
    cc_fail(w, "seq %#llx: view %u/%u tokens, model %u/%u",
            (unsigned long long)s->id, view.n_tokens, view.n_committed, s->n,
            s->committed);
    return -1;
  }
  for (uint32_t i = 0; i < s->n; i++) {
    int64_t slot = (int64_t)view.blocks[i / w->bs] * w->bs + i % w->bs;
    for (uint32_t l = 0; l < w->n_layers; l++)
      for (int kv = 0; kv < 2; kv++)
        for (uint32_t h = 0; h < w->n_heads; h++)
          for (uint32_t d = 0; d < w->head_dim; d++)
            if (*cc_elem(w, slot, l, kv, h, d) !=
                cc_val(s->tok[i], i, l, kv, h, d)) { /* exact: same bits */
              cc_fail(w, "seq %#llx token %u (block %d): K/V overwritten",
                      (unsigned long long)s->id, i, view.blocks[i / w->bs]);
              return -1;
            }
  }
  return 0;
}


#define CC_HEAD_DIM 16
#define CC_TOL 1e-4

/* Attention of the query at position p over the model's K/V of positions
 * [0, p] of s, in double: what the engine must have computed. */
static void cc_reference(cc_world *w, const cc_seq *s, uint32_t l, uint32_t p,
                         uint32_t h, double *out) {
  double scale = 1.0 / sqrt((double)CC_HEAD_DIM), m = -INFINITY, sum = 0;
  double logit[CC_MAX_TOK];
  for (uint32_t j = 0; j <= p; j++) {
    double dot = 0;
    for (uint32_t d = 0; d < CC_HEAD_DIM; d++)
      dot += (double)cc_q(p, h, d) * cc_val(s->tok[j], j, l, 0, h, d);
    logit[j] = dot * scale;
    if (logit[j] > m) m = logit[j];
  }
  for (uint32_t d = 0; d < CC_HEAD_DIM; d++) out[d] = 0;
  for (uint32_t j = 0; j <= p; j++) {
    double e = exp(logit[j] - m);
    sum += e;
    for (uint32_t d = 0; d < CC_HEAD_DIM; d++)
      out[d] += e * cc_val(s->tok[j], j, l, 1, h, d);
  }
  for (uint32_t d = 0; d < CC_HEAD_DIM; d++) out[d] /= sum;
  (void)w;
}

/* Positions [from, s->n) were just reserved: the engine writes their K/V
 * (prefill for several, decode for one) in every layer and attends; the
 * output of every query is compared with the reference. */
static int cc_engine_step(cc_thread *t, const cc_seq *s, uint32_t from) {
  cc_world *w = t->w;
  uint32_t n = s->n - from, H = w->n_heads, D = CC_HEAD_DIM;
  size_t row = (size_t)H * D;
  float *q = malloc(n * row * sizeof(float)), *k = malloc(n * row * sizeof(float)),
        *v = malloc(n * row * sizeof(float)), *out = malloc(n * row * sizeof(float));
  int rc = (q && k && v && out) ? 0 : -1;
  if (rc) cc_fail(w, "test out of memory");
  for (uint32_t l = 0; rc == 0 && l < w->n_layers; l++) {
    for (uint32_t i = 0; i < n; i++)
      for (uint32_t h = 0; h < H; h++)
        for (uint32_t d = 0; d < D; d++) {
          size_t at = i * row + h * D + d;
          q[at] = cc_q(from + i, h, d);
          k[at] = cc_val(s->tok[from + i], from + i, l, 0, h, d);
          v[at] = cc_val(s->tok[from + i], from + i, l, 1, h, d);
        }
    rc = n == 1 ? pkv_decode(t->eng, &s->id, 1, l, q, k, v, out)
                : pkv_prefill(t->eng, s->id, l, from, n, q, k, v, out);
    t->engine_calls++;
    if (rc) {
      cc_fail(w, "%s: %s (%s)", n == 1 ? "decode" : "prefill", pkv_err_name(rc),
              pkv_last_error());
      break;
    }
    for (uint32_t i = 0; rc == 0 && i < n; i++)
      for (uint32_t h = 0; rc == 0 && h < H; h++) {
        double ref[CC_HEAD_DIM];
        cc_reference(w, s, l, from + i, h, ref);
        for (uint32_t d = 0; d < D; d++)
          if (fabs(out[i * row + h * D + d] - ref[d]) > CC_TOL) {
            cc_fail(w, "%s seq %#llx pos %u layer %u head %u: out %g, reference %g",
                    n == 1 ? "decode" : "prefill", (unsigned long long)s->id,
                    from + i, l, h, (double)out[i * row + h * D + d], ref[d]);
            rc = -1;
            break;
          }
      }
  }
  free(q);
  free(k);
  free(v);
  free(out);
  return rc;
}

/* Appends toks, writes their K/V and commits them.  PKV_ENOMEM is normal
 * under pressure (nothing changed); anything else is a failure. */
static int cc_extend(cc_thread *t, cc_seq *s, const int32_t *toks, uint32_t n) {
  cc_world *w = t->w;
  if (s->n + n > CC_MAX_TOK) n = CC_MAX_TOK - s->n;
  if (n == 0) return 0;
  int rc = pkv_seq_append(w->c, s->id, toks, n, NULL);
  if (rc == PKV_ENOMEM) return rc;
  if (rc) {
    cc_fail(w, "append: %s (%s)", pkv_err_name(rc), pkv_last_error());
    return rc;
  }
  uint32_t from = s->n;
  memcpy(s->tok + from, toks, n * sizeof *toks);
  s->n += n;
  /* Half the threads compute through the engine, half write K/V directly
   * (the engine's own protocol), so both paths run against each other. */
  rc = (t->eng && t->index % 2 == 0) ? cc_engine_step(t, s, from)
                                     : cc_write(w, s, from);
  if (rc) return rc;
  if ((rc = pkv_seq_commit(w->c, s->id, s->n)) != 0) {
    cc_fail(w, "commit: %s", pkv_err_name(rc));
    return rc;
  }
  s->committed = s->n;
  return 0;
}

static void cc_release(cc_world *w, cc_seq *s) {
  int rc = pkv_seq_free(w->c, s->id);
  if (rc) cc_fail(w, "free: %s", pkv_err_name(rc));
  s->id = 0;
}

static cc_seq *cc_slot(cc_thread *t, bool empty) {
  uint32_t start = (uint32_t)(tu_rand(&t->rng) % CC_SEQS_PER_THREAD);
  for (uint32_t k = 0; k < CC_SEQS_PER_THREAD; k++) {
    cc_seq *s = &t->s[(start + k) % CC_SEQS_PER_THREAD];
    if ((s->id == 0) == empty) return s;
  }
  return NULL;
}

static void cc_step(cc_thread *t) {
  cc_world *w = t->w;
  uint64_t r = tu_rand(&t->rng);
  cc_seq *s = cc_slot(t, false);
  t->ops++;
  switch (r % 8) {
  case 0:
  case 1: { /* a new request: match a shared prompt, compute the rest */
    cc_seq *e = cc_slot(t, true);
    if (!e) break;
    const int32_t *prompt = w->prompts[(r >> 8) % CC_PROMPTS];
    uint32_t len = 8 + (uint32_t)((r >> 16) % (CC_PROMPT_LEN - 8));
    memset(e, 0, sizeof *e);
    int rc = pkv_seq_create(w->c, NULL, &e->id);
    if (rc) {
      cc_fail(w, "create: %s", pkv_err_name(rc));
      break;
    }
    uint32_t matched = 0;
    rc = pkv_seq_match_prefix(w->c, e->id, prompt, len, len - 1, &matched);
    if (rc || matched >= len || matched % w->bs) {
      cc_fail(w, "match: %s, %u of %u", pkv_err_name(rc), matched, len);
      break;
    }
    memcpy(e->tok, prompt, matched * sizeof *prompt);
    e->n = e->committed = matched;
    if (matched) t->hits++;
    if (cc_verify(w, e)) break; /* hit blocks carry the right K/V */
    if (cc_extend(t, e, prompt + matched, len - matched) == PKV_ENOMEM) {
      t->enomem++;
      cc_release(w, e); /* preempted before it ran */
    }
    break;
  }
  case 2:
  case 3:
  case 4: { /* decode steps */
    if (!s) break;
    for (int k = 0; k < 4 && s->n < CC_MAX_TOK; k++) {
      int32_t tok = (int32_t)(7000 + t->index * 100 + (r >> (8 + k)) % 50);
      if (cc_extend(t, s, &tok, 1) == PKV_ENOMEM) {
        t->enomem++;
        cc_release(w, s); /* preempt */
        return;
      }
    }
    if (s->n >= CC_MAX_TOK) cc_release(w, s);
    break;
  }
  case 5: { /* parallel sampling */
    cc_seq *e = cc_slot(t, true);
    if (!s || !e) break;
    pkv_seq_id child;
    int rc = pkv_seq_fork(w->c, s->id, &child);
    if (rc) {
      cc_fail(w, "fork: %s", pkv_err_name(rc));
      break;
    }
    *e = *s;
    e->id = child;
    t->forks++;
    break;
  }
  case 6: { /* speculative rollback */
    if (!s || s->n == 0) break;
    uint32_t back = 1 + (uint32_t)((r >> 8) % 6);
    uint32_t to = back > s->n ? 0 : s->n - back;
    int rc = pkv_seq_truncate(w->c, s->id, to);
    if (rc) {
      cc_fail(w, "truncate: %s", pkv_err_name(rc));
      break;
    }
    s->n = to;
    if (s->committed > to) s->committed = to;
    break;
  }
  default:
    if (s) cc_release(w, s);
    break;
  }
  if (s && s->id && !atomic_load(&w->failed)) cc_verify(w, s);
}

/* Quiescent point: everyone is parked; verify the whole cache. */
static void cc_quiesce(cc_world *w) {
  char msg[256];
  if (pkv_check(w->c, msg, sizeof msg) != 0) {
    cc_fail(w, "pkv_check at a quiescent point: %s", msg);
    return;
  }
  pkv_stats st;
  pkv_stats_get(w->c, &st);
  uint32_t n_seqs = 0;
  uint64_t tokens = 0;
  for (uint32_t i = 0; i < w->n_threads; i++)
    for (uint32_t j = 0; j < CC_SEQS_PER_THREAD; j++) {
      const cc_seq *s = &w->t[i].s[j];
      if (!s->id) continue;
      n_seqs++;
      tokens += s->n;
      if (cc_verify(w, s)) return;
    }
  if (st.n_seqs != n_seqs || st.tokens != tokens)
    cc_fail(w, "stats: %u seqs / %llu tokens, threads hold %u / %llu",
            st.n_seqs, (unsigned long long)st.tokens, n_seqs,
            (unsigned long long)tokens);
  w->evictions_seen = st.evictions;
}

static void *cc_worker(void *arg) {
  cc_thread *t = arg;
  cc_world *w = t->w;
  for (uint32_t op = 1; op <= CC_OPS; op++) {
    if (!atomic_load(&w->failed)) cc_step(t);
    if (op % CC_ROUND == 0) {
      /* Two barriers: park, one thread checks, resume.  The pressure
       * thread takes part. */
      if (pthread_barrier_wait(&w->barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
        cc_quiesce(w);
      pthread_barrier_wait(&w->barrier);
    }
  }
  for (uint32_t j = 0; j < CC_SEQS_PER_THREAD; j++)
    if (t->s[j].id) cc_release(w, &t->s[j]);
  return NULL;
}

/* Memory pressure: grab big runs of blocks (evicting whatever is cached),
 * reset the prefix cache now and then, read stats and check concurrently. */
static void *cc_pressure(void *arg) {
  cc_world *w = arg;
  uint64_t rng = 0xfeed;
  int32_t toks[64];
  for (int i = 0; i < 64; i++) toks[i] = 50000 + i;
  for (uint32_t round = 1; round <= CC_OPS / CC_ROUND; round++) {
    for (uint32_t k = 0; k < CC_ROUND / 10; k++) {
      if (atomic_load(&w->failed)) break;
      uint64_t r = tu_rand(&rng);
      pkv_seq_id hog;
      if (pkv_seq_create(w->c, NULL, &hog)) {
        cc_fail(w, "pressure create");
        break;
      }
      uint32_t n = 8 + (uint32_t)(r % 56);
      int rc = pkv_seq_append(w->c, hog, toks, n, NULL);
      if (rc && rc != PKV_ENOMEM) cc_fail(w, "pressure append: %s", pkv_err_name(rc));
      if (r % 16 == 0) pkv_prefix_reset(w->c);
      if (r % 4 == 0) {
        char msg[256];
        if (pkv_check(w->c, msg, sizeof msg))
          cc_fail(w, "pkv_check while running: %s", msg);
      }
      pkv_stats st;
      pkv_stats_get(w->c, &st);
      if ((uint64_t)st.blocks_free + st.blocks_used + st.blocks_evictable !=
          st.num_blocks)
        cc_fail(w, "gauges do not add up while running");
      pkv_seq_free(w->c, hog);
    }
    if (pthread_barrier_wait(&w->barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
      cc_quiesce(w);
    pthread_barrier_wait(&w->barrier);
  }
  return NULL;
}

static const char *const cc_policies[] = {"lru", "s3fifo", "lfu", "priority",
                                          "fifo"};

START_TEST(stress) {
  static const uint32_t thread_counts[] = {2, 4, 8};
  cc_world *w = calloc(1, sizeof *w);
  ck_assert_ptr_nonnull(w);
  w->n_threads = thread_counts[_i % 3];
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 24 * w->n_threads, 4);
  cfg.policy = cc_policies[_i % 5];
  cfg.head_dim = CC_HEAD_DIM; /* the engine's kernels want a multiple of 16 */
  w->c = tu_cache(&cfg);
  w->bs = 4;
  w->n_layers = cfg.n_layers;
  w->n_heads = cfg.n_kv_heads;
  w->head_dim = cfg.head_dim;
  ck_assert_int_eq(pkv_cache_layout(w->c, &w->L), 0);
  for (uint32_t l = 0; l < w->n_layers; l++) {
    void *k, *v;
    ck_assert_int_eq(pkv_cache_kv(w->c, l, &k, &v), 0);
    w->k[l] = k;
    w->v[l] = v;
  }
  pthread_mutex_init(&w->why_lock, NULL);
  for (int p = 0; p < CC_PROMPTS; p++)
    for (int i = 0; i < CC_PROMPT_LEN; i++)
      /* Prompts share their first blocks pairwise (a "system prompt"). */
      w->prompts[p][i] = i < 12 ? 100 + (p / 2) * 50 + i : 1000 * (p + 1) + i;
  pthread_barrier_init(&w->barrier, NULL, w->n_threads + 1);
  pthread_t tid[CC_MAX_THREADS + 1];
  for (uint32_t i = 0; i < w->n_threads; i++) {
    w->t[i].w = w;
    w->t[i].index = i;
    w->t[i].rng = 0x1234 + i * 7919 + (uint64_t)_i * 104729;
    pkv_engine_config ecfg;
    pkv_engine_config_init(&ecfg);
    ecfg.n_q_heads = cfg.n_kv_heads;
    ecfg.n_threads = 1;
    ck_assert_int_eq(pkv_engine_create(w->c, &ecfg, &w->t[i].eng), 0);
    ck_assert_int_eq(pthread_create(&tid[i], NULL, cc_worker, &w->t[i]), 0);
  }
  ck_assert_int_eq(pthread_create(&tid[w->n_threads], NULL, cc_pressure, w), 0);
  for (uint32_t i = 0; i <= w->n_threads; i++) pthread_join(tid[i], NULL);
  ck_assert_msg(!atomic_load(&w->failed), "%s", w->why);
  uint64_t engine_calls = 0;
  for (uint32_t i = 0; i < w->n_threads; i++) {
    engine_calls += w->t[i].engine_calls;
    pkv_engine_destroy(w->t[i].eng);
  }
  ck_assert_msg(engine_calls > 0, "the engine never ran");

  uint64_t ops = 0, enomem = 0, hits = 0, forks = 0;
  for (uint32_t i = 0; i < w->n_threads; i++) {
    ops += w->t[i].ops;
    enomem += w->t[i].enomem;
    hits += w->t[i].hits;
    forks += w->t[i].forks;
  }
  pkv_stats st = tu_stats(w->c);
  TU_CHECK(w->c);
  ck_assert_uint_eq(st.n_seqs, 0);
  ck_assert_uint_eq(st.blocks_used, 0);
  /* The run did what it claims: contention, sharing and pressure. */
  ck_assert_uint_eq(ops, (uint64_t)CC_OPS * w->n_threads);
  ck_assert_msg(hits > 0, "no prefix hit in %llu ops", (unsigned long long)ops);
  ck_assert_msg(forks > 0, "no fork");
  ck_assert_msg(st.evictions > 0, "no eviction: no memory pressure");
  ck_assert_msg(st.cow_copies > 0, "no copy-on-write");
  if (getenv("PKV_TEST_VERBOSE"))
    fprintf(stderr, "stress %d: %u threads, policy %s: %llu ops, %llu hits, "
            "%llu forks, %llu ENOMEM preemptions, %llu evictions, %llu CoW "
            "copies, %llu engine calls\n", _i, w->n_threads, cc_policies[_i % 5],
            (unsigned long long)ops, (unsigned long long)hits,
            (unsigned long long)forks, (unsigned long long)enomem,
            (unsigned long long)st.evictions, (unsigned long long)st.cow_copies,
            (unsigned long long)engine_calls);
  pthread_barrier_destroy(&w->barrier);
  pthread_mutex_destroy(&w->why_lock);
  pkv_cache_destroy(w->c);
  free(w);
}
END_TEST

/* The engine-facing view of a sequence stays valid while other threads
 * churn: its blocks are neither evicted nor reused. */
START_TEST(view_survives_pressure) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 16, 4);
  pkv_seq_id s;
  int32_t toks[12];
  for (int i = 0; i < 12; i++) toks[i] = 300 + i;
  s = tu_seq_new(c, toks, 12);
  ck_assert_int_eq(pkv_seq_commit(c, s, 12), 0);
  pkv__seq_view before;
  ck_assert_int_eq(pkv__seq_view_get(c, s, &before), 0);
  int32_t saved[3];
  memcpy(saved, before.blocks, sizeof saved);
  /* Fill the rest of the pool many times over, with eviction. */
  for (int round = 0; round < 50; round++) {
    pkv_seq_id hog;
    ck_assert_int_eq(pkv_seq_create(c, NULL, &hog), 0);
    int32_t ht[52];
    for (int i = 0; i < 52; i++) ht[i] = round * 100 + i;
    ck_assert_int_eq(pkv_seq_append(c, hog, ht, 52, NULL), 0);
    ck_assert_int_eq(pkv_seq_append(c, hog, ht, 1, NULL), PKV_ENOMEM);
    ck_assert_int_eq(pkv_seq_commit(c, hog, 52), 0);
    ck_assert_int_eq(pkv_seq_free(c, hog), 0);
  }
  pkv__seq_view after;
  ck_assert_int_eq(pkv__seq_view_get(c, s, &after), 0);
  ck_assert_ptr_eq(after.blocks, before.blocks);
  ck_assert_int_eq(memcmp(after.blocks, saved, sizeof saved), 0);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_gt(st.evictions, 0);
  TU_DONE(c);
}
END_TEST

/* pkv_policy_names() walked by readers while another thread registers
 * policies (issue 12 item 17): under ThreadSanitizer (make tsan) any
 * unsynchronized access is a report; here each reader also checks that
 * every list it gets is complete (built-ins first, NULL-terminated) and
 * that lists only grow. */
#define PN_REGISTER 24
#define PN_READERS 3
static atomic_int pn_done;
static pkv_policy_ops pn_ops[PN_REGISTER];
static char pn_name[PN_REGISTER][32];

static void *pn_reader(void *arg) {
  long *walks = arg;
  size_t last = 0;
  while (!atomic_load(&pn_done) || *walks < 100) {
    const char *const *names = pkv_policy_names();
    size_t n = 0;
    while (names[n]) {
      TU_ASSERT(names[n][0] != '\0', "empty policy name at %zu", n);
      n++;
    }
    TU_ASSERT(n >= 6 && strcmp(names[0], "lru") == 0, "list of %zu", n);
    TU_ASSERT(n >= last, "names went from %zu to %zu", last, n);
    for (size_t i = 6; i < n; i++)
      TU_ASSERT(pkv_policy_find(names[i]) != NULL, "%s not found", names[i]);
    last = n;
    (*walks)++;
  }
  return NULL;
}

START_TEST(policy_names_while_registering) {
  atomic_store(&pn_done, 0);
  size_t before = 0;
  while (pkv_policy_names()[before]) before++;
  pthread_t tid[PN_READERS];
  long walks[PN_READERS] = {0};
  for (int i = 0; i < PN_READERS; i++)
    ck_assert_int_eq(pthread_create(&tid[i], NULL, pn_reader, &walks[i]), 0);
  for (int k = 0; k < PN_REGISTER; k++) {
    pn_ops[k] = tu_policy_lowest;
    snprintf(pn_name[k], sizeof pn_name[k], "cc-names-%d", k);
    pn_ops[k].name = pn_name[k];
    ck_assert_int_eq(pkv_policy_register(&pn_ops[k]), 0);
  }
  atomic_store(&pn_done, 1);
  for (int i = 0; i < PN_READERS; i++) {
    ck_assert_int_eq(pthread_join(tid[i], NULL), 0);
    ck_assert_int_ge(walks[i], 100);
  }
  size_t after = 0;
  while (pkv_policy_names()[after]) after++;
  ck_assert_uint_eq(after, before + PN_REGISTER);
}
END_TEST

TU_MAIN("concurrency",
    {"stress", 600, {{stress, 0, 6}, {view_survives_pressure}}},
    {"policy_names", 0, {{policy_names_while_registering}}})
