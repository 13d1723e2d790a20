/*
 * scheduler.c — continuous batching over a paged KV cache (see scheduler.h).
 *
 * One step:
 *
 *   admit      while a sequence slot, token budget and memory (free +
 *              evictable blocks beyond a watermark) allow: create a
 *              sequence, match the prompt's cached prefix, queue the rest
 *   prefill    oldest first, a chunk per sequence within the token budget:
 *              append (reserve) -> compute -> commit; a finished prompt
 *              forks its parallel samples
 *   decode     every decoding sequence appends one token -> one batched
 *              compute call -> commit; finished sequences are freed
 *
 * The running list is kept in admission order, so the youngest sequence is
 * always the last one: when an append returns PKV_ENOMEM the scheduler
 * preempts the last sequence (frees it; its committed full blocks stay in
 * the prefix cache) and puts it at the head of the queue with the tokens it
 * had generated, to be recomputed — usually mostly from the cache.  A
 * sequence that runs out of memory while it is the only one running can
 * never finish, so its request is rejected instead of looping.
 */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void sched_config_init(sched_config *c) {
  memset(c, 0, sizeof *c);
  c->max_seqs = 256;
  c->max_batch_tokens = 2048;
  c->prefill_chunk = 512;
  c->watermark_blocks = 0; /* 0 = 1% of the pool */
  c->headroom_blocks = 2;
}

static uint64_t hash3(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = a * UINT64_C(0x9e3779b97f4a7c15) ^ (b + UINT64_C(0x632be59bd9b4e019)) * UINT64_C(0xbf58476d1ce4e5b9) ^
               (c + 1) * UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  x *= UINT64_C(0xd6e8feb86659fd93);
  return x ^ (x >> 32);
}

int32_t sched_gen_token(size_t req, uint32_t sample, uint32_t pos) {
  return (int32_t)(hash3(req, sample, pos) & 0x7fffffff);
}

/* A unit of work waiting to be admitted: a request's sample, with the
 * tokens it generated before a preemption. */
typedef struct entry {
  uint32_t req, sample, generated;
  bool fork_pending; /* sample 0 still has to fork the others after prefill */
  bool readmit;      /* preempted before: its admission recomputes */
} entry;

typedef struct deque {
  entry *v;
  size_t head, n, cap;
} deque;

static bool dq_grow(deque *d) {
  if (d->n < d->cap) return true;
  size_t cap = d->cap ? 2 * d->cap : 256;
  entry *v = malloc(cap * sizeof *v);
  if (!v) return false;
  for (size_t i = 0; i < d->n; i++) v[i] = d->v[(d->head + i) % d->cap];
  free(d->v);
  d->v = v;
  d->head = 0;
  d->cap = cap;
  return true;
}

static bool dq_push_back(deque *d, entry e) {
  if (!dq_grow(d)) return false;
  d->v[(d->head + d->n++) % d->cap] = e;
  return true;
}

static bool dq_push_front(deque *d, entry e) {
  if (!dq_grow(d)) return false;
  d->head = (d->head + d->cap - 1) % d->cap;
  d->v[d->head] = e;
  d->n++;
  return true;
}

static entry dq_pop_front(deque *d) {
  entry e = d->v[d->head];
  d->head = (d->head + 1) % d->cap;
  d->n--;
  return e;
}

typedef enum { PH_PREFILL, PH_DECODE } phase;

typedef struct running {
  pkv_seq_id seq;
  uint32_t req, sample;
  phase ph;
  uint32_t target;    /* tokens to prefill: prompt + generated before */
  uint32_t computed;  /* committed tokens */
  uint32_t generated; /* generated tokens so far */
  bool fork_pending;
  int32_t *tokens;    /* prefill tokens (freed after prefill) */
} running;

typedef struct sched {
  pkv_cache *cache;
  const sched_workload *w;
  const sched_config *cfg;
  const sched_compute *cc;
  sched_stats *st;
  deque wait;
  running *run;
  size_t n_run, cap_run;
  uint32_t *samples_left; /* per request */
  bool *rejected;
  pkv_seq_id *batch;
  size_t cap_batch;
  double *decode_ms;
  size_t n_decode_ms, cap_decode_ms;
  char *err;
  size_t err_cap;
} sched;

static uint32_t samples_of(const sched_workload *w, size_t r) {
  return w->n_samples && w->n_samples[r] ? w->n_samples[r] : 1;
}

static int fail_pkv(sched *s, const char *what, int rc) {
  snprintf(s->err, s->err_cap, "%s: %s (%s)", what, pkv_strerror(rc), pkv_last_error());
  return -1;
}

static int fail_msg(sched *s, const char *what) {
  snprintf(s->err, s->err_cap, "%s", what);
  return -1;
}

static void emit(sched *s, sched_event ev, const running *r) {
  if (s->cc->on_event) s->cc->on_event(s->cc->user, ev, r->req, r->sample, r->seq);
}

static void free_running(sched *s, running *r) {
  pkv_seq_free(s->cache, r->seq);
  free(r->tokens);
  r->tokens = NULL;
}

/* Drops request req: every waiting and running piece of it. */
static void reject(sched *s, uint32_t req) {
  if (s->rejected[req]) return;
  s->rejected[req] = true;
  s->st->requests_rejected++;
  size_t n = s->wait.n;
  for (size_t i = 0; i < n; i++) { /* rotate once, keeping the others */
    entry e = dq_pop_front(&s->wait);
    if (e.req != req) dq_push_back(&s->wait, e);
  }
  size_t j = 0;
  for (size_t i = 0; i < s->n_run; i++) {
    if (s->run[i].req == req) {
      emit(s, SCHED_REJECT, &s->run[i]);
      free_running(s, &s->run[i]);
    }
    else s->run[j++] = s->run[i];
  }
  s->n_run = j;
}

/* Preempts the youngest running sequence.  Returns false if it was the
 * only one (then its request is rejected: it can never fit). */
static bool preempt_youngest(sched *s) {
  running *r = &s->run[s->n_run - 1];
  if (s->n_run == 1) {
    reject(s, r->req);
    return false;
  }
  entry e = {.req = r->req, .sample = r->sample, .generated = r->generated,
             .fork_pending = r->fork_pending, .readmit = true};
  emit(s, SCHED_PREEMPT, r);
  free_running(s, r);
  s->n_run--;
  s->st->preemptions++;
  dq_push_front(&s->wait, e); /* the queue never shrinks below this: no failure */
  return true;
}

static uint32_t blocks_for(uint32_t tokens, uint32_t bs) { return (tokens + bs - 1) / bs; }

/* Blocks the running sequences still need to finish their prefill: an
 * admitted prompt is reserved chunk by chunk, so the pool's free count does
 * not show them yet.  Forked samples add one block each for the
 * copy-on-write of the shared tail. */
static uint64_t prefill_debt(const sched *s) {
  uint32_t bs = s->st->block_size;
  uint64_t debt = 0;
  for (size_t i = 0; i < s->n_run; i++) {
    const running *r = &s->run[i];
    if (r->ph != PH_PREFILL) continue;
    debt += blocks_for(r->target, bs) - blocks_for(r->computed, bs);
    if (r->fork_pending) debt += samples_of(s->w, r->req) - 1;
  }
  return debt;
}

/* Admits waiting entries while everything allows; *budget is the step's
 * remaining token budget. */
static int admit(sched *s, uint32_t budget, uint32_t watermark) {
  const sched_workload *w = s->w;
  uint32_t bs = s->st->block_size;
  while (s->wait.n && s->n_run < s->cfg->max_seqs && budget > 0) {
    entry e = s->wait.v[s->wait.head];
    uint32_t plen = w->prompt_len[e.req], total = plen + e.generated;
    /* Upper bound of the blocks the prompt needs (before prefix hits). */
    if (blocks_for(total, bs) > s->st->num_blocks - (s->st->num_blocks > watermark ? watermark : 0)) {
      dq_pop_front(&s->wait);
      reject(s, e.req); /* larger than the whole pool: can never run */
      continue;
    }
    int32_t *tokens = malloc((size_t)total * sizeof *tokens);
    if (!tokens) return fail_msg(s, "out of memory (prompt tokens)");
    w->prompt(w->ctx, e.req, tokens);
    for (uint32_t p = plen; p < total; p++) tokens[p] = sched_gen_token(e.req, e.sample, p);
    pkv_seq_id seq;
    int rc = pkv_seq_create(s->cache, NULL, &seq);
    if (rc) {
      free(tokens);
      return fail_pkv(s, "seq_create", rc);
    }
    uint32_t matched = 0;
    rc = pkv_seq_match_prefix(s->cache, seq, tokens, total, total - 1, &matched);
    if (rc) {
      free(tokens);
      pkv_seq_free(s->cache, seq);
      return fail_pkv(s, "match_prefix", rc);
    }
    pkv_stats ps;
    if ((rc = pkv_stats_get(s->cache, &ps))) {
      free(tokens);
      pkv_seq_free(s->cache, seq);
      return fail_pkv(s, "stats", rc);
    }
    uint64_t avail = (uint64_t)ps.blocks_free + ps.blocks_evictable;
    uint32_t need = blocks_for(total, bs) - matched / bs;
    /* Keep headroom_blocks per running sequence in reserve too: each of
     * them needs a new block every block_size steps, and admitting into
     * that headroom only buys a preemption a few steps later.  And count
     * what is already promised: the blocks running sequences still need
     * to finish their (chunked) prefill. */
    if (need + watermark + s->cfg->headroom_blocks * (uint64_t)s->n_run + prefill_debt(s) > avail &&
        s->n_run > 0) {
      pkv_seq_free(s->cache, seq); /* the matched blocks go back to the cache */
      free(tokens);
      break;
    }
    dq_pop_front(&s->wait);
    if (!cli_grow((void **)&s->run, &s->cap_run, s->n_run + 1, sizeof *s->run, 64)) {
      free(tokens);
      pkv_seq_free(s->cache, seq);
      return fail_msg(s, "out of memory (running list)");
    }
    s->run[s->n_run++] = (running){.seq = seq, .req = e.req, .sample = e.sample,
                                   .ph = PH_PREFILL, .target = total, .computed = matched,
                                   .generated = e.generated, .fork_pending = e.fork_pending,
                                   .tokens = tokens};
    emit(s, SCHED_ADMIT, &s->run[s->n_run - 1]);
    /* Prefix hits are what the first admission of a request's sample
     * reuses from other sequences; a preempted sequence matching its own
     * earlier work is recovery, counted apart. */
    if (e.readmit) {
      s->st->readmits++;
      s->st->readmit_tokens += total;
      s->st->readmit_hit_tokens += matched;
    } else {
      s->st->prompt_tokens += total;
      s->st->prefix_hit_tokens += matched;
    }
    budget -= budget < total - matched ? budget : total - matched;
  }
  return 0;
}

static int grow_running(sched *s, size_t extra) {
  if (!cli_grow((void **)&s->run, &s->cap_run, s->n_run + extra, sizeof *s->run, 64))
    return fail_msg(s, "out of memory (running list)");
  return 0;
}

/* Forks the other samples of a request whose prompt is computed. */
static int fork_samples(sched *s, size_t i) {
  uint32_t n = samples_of(s->w, s->run[i].req);
  if (grow_running(s, n - 1)) return -1;
  running *parent = &s->run[i];
  for (uint32_t k = 1; k < n; k++) {
    pkv_seq_id child;
    int rc = pkv_seq_fork(s->cache, parent->seq, &child);
    if (rc) return fail_pkv(s, "fork", rc);
    s->run[s->n_run++] = (running){.seq = child, .req = parent->req, .sample = k,
                                   .ph = PH_DECODE, .target = parent->target,
                                   .computed = parent->computed, .generated = parent->generated};
    emit(s, SCHED_FORK, &s->run[s->n_run - 1]);
    parent = &s->run[i];
    s->st->forks++;
  }
  parent->fork_pending = false;
  return 0;
}

/* Prefill chunks oldest first within budget; returns tokens computed or -1. */
static int64_t prefill(sched *s, uint32_t budget) {
  int64_t done = 0;
  for (size_t i = 0; i < s->n_run && budget > 0; i++) {
    running *r = &s->run[i];
    if (r->ph != PH_PREFILL) continue;
    uint32_t n = r->target - r->computed;
    if (n > s->cfg->prefill_chunk) n = s->cfg->prefill_chunk;
    if (n > budget) n = budget;
    int rc;
    for (;;) {
      rc = pkv_seq_append(s->cache, r->seq, r->tokens + r->computed, n, NULL);
      if (rc != PKV_ENOMEM) break;
      bool self = i == s->n_run - 1;
      if (!preempt_youngest(s) || self) break;
      r = &s->run[i];
    }
    if (rc == PKV_ENOMEM) break; /* it was preempted or rejected itself */
    if (rc) return fail_pkv(s, "append (prefill)", rc);
    if (s->cc->prefill && (rc = s->cc->prefill(s->cc->user, r->seq, r->computed, n)))
      return fail_pkv(s, "prefill compute", rc);
    rc = pkv_seq_commit(s->cache, r->seq, r->computed + n);
    if (rc) return fail_pkv(s, "commit (prefill)", rc);
    r->computed += n;
    budget -= n;
    done += n;
    if (r->computed == r->target) {
      r->ph = PH_DECODE;
      free(r->tokens);
      r->tokens = NULL;
      if (r->fork_pending && fork_samples(s, i)) return -1;
    }
  }
  return done;
}

static void finish(sched *s, size_t i) {
  running *r = &s->run[i];
  uint32_t req = r->req;
  emit(s, SCHED_FINISH, r);
  free_running(s, r);
  memmove(&s->run[i], &s->run[i + 1], (s->n_run - i - 1) * sizeof *s->run);
  s->n_run--;
  s->st->sequences_done++;
  if (--s->samples_left[req] == 0) s->st->requests_done++;
}

/* One decode step over every decoding sequence; returns the batch size. */
static int64_t decode(sched *s) {
  uint32_t nb = 0;
  for (size_t i = 0; i < s->n_run; i++) {
    running *r = &s->run[i];
    if (r->ph != PH_DECODE) continue;
    int32_t tok = sched_gen_token(r->req, r->sample, r->computed);
    int rc;
    for (;;) {
      rc = pkv_seq_append(s->cache, r->seq, &tok, 1, NULL);
      if (rc != PKV_ENOMEM) break;
      bool self = i == s->n_run - 1;
      if (!preempt_youngest(s) || self) break;
      r = &s->run[i];
    }
    if (rc == PKV_ENOMEM) break;
    if (rc) return fail_pkv(s, "append (decode)", rc);
    s->batch[nb++] = r->seq;
  }
  if (nb == 0) return 0;
  int rc;
  if (s->cc->decode && (rc = s->cc->decode(s->cc->user, s->batch, nb)))
    return fail_pkv(s, "decode compute", rc);
  /* The batch is the first nb decoding sequences in order: commit them. */
  uint32_t k = 0;
  for (size_t i = 0; i < s->n_run && k < nb;) {
    running *r = &s->run[i];
    if (r->ph != PH_DECODE || r->seq != s->batch[k]) {
      i++;
      continue;
    }
    k++;
    if ((rc = pkv_seq_commit(s->cache, r->seq, r->computed + 1)))
      return fail_pkv(s, "commit (decode)", rc);
    r->computed++;
    r->generated++;
    if (r->generated >= s->w->output_len[r->req]) finish(s, i);
    else i++;
  }
  return nb;
}

/* External storage: the copies the manager queued (copy-on-write) are the
 * caller's to execute; with no K/V bytes here there is nothing to move, but
 * the queue must be emptied.  Owned storage never queues. */
static int drain_copies(sched *s) {
  pkv_copy buf[64];
  uint32_t n = 0, pending = 0;
  do {
    int rc = pkv_pool_drain_copies(s->cache, buf, 64, &n, &pending);
    if (rc == PKV_ENOTSUP) return 0;
    if (rc) return fail_pkv(s, "drain_copies", rc);
  } while (pending);
  /* the host tier's demote / promote copies likewise */
  pkv_tier_copy tq[64];
  do {
    int rc = pkv_tier_drain_copies(s->cache, tq, 64, &n, &pending);
    if (rc) return fail_pkv(s, "tier_drain_copies", rc);
  } while (pending);
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Per-run accumulators of the step loop (means over steps at the end). */
typedef struct step_acc {
  sched_step *steps;
  size_t n_steps, cap_steps;
  double sum_used, sum_waste, sum_busy;
  uint64_t n_busy, reserved_steps, preempt_mark, t_start;
  uint32_t watermark;
} step_acc;

/* Every request's first sample queued, in order. */
static int queue_requests(sched *s) {
  const sched_workload *w = s->w;
  s->samples_left = malloc((w->n_reqs ? w->n_reqs : 1) * sizeof *s->samples_left);
  s->rejected = calloc(w->n_reqs ? w->n_reqs : 1, sizeof *s->rejected);
  if (!s->samples_left || !s->rejected) return fail_msg(s, "out of memory");
  for (size_t r = 0; r < w->n_reqs; r++) {
    if (w->prompt_len[r] == 0 || w->output_len[r] == 0) {
      snprintf(s->err, s->err_cap, "request %zu: prompt and output lengths must be >= 1", r);
      return -1;
    }
    s->samples_left[r] = samples_of(w, r);
    entry e = {.req = (uint32_t)r, .fork_pending = samples_of(w, r) > 1};
    if (!dq_push_back(&s->wait, e)) return fail_msg(s, "out of memory");
  }
  return 0;
}

/* After a step: peaks, sums for the means, the cache's counters, and the
 * step's record (if asked). */
static int account_step(sched *s, step_acc *a, uint32_t running_now, bool queue_before,
                        int64_t pf, int64_t db, uint64_t t0, uint64_t t2) {
  sched_stats *st = s->st;
  pkv_stats ps;
  int rc = pkv_stats_get(s->cache, &ps);
  if (rc) return fail_pkv(s, "stats", rc);
  if (ps.blocks_used > st->peak_blocks_used) st->peak_blocks_used = ps.blocks_used;
  st->blocks_used_now = ps.blocks_used;
  if (running_now > st->peak_running) st->peak_running = running_now;
  a->sum_used += ps.blocks_used;
  if (ps.slots_reserved) {
    a->sum_waste += (double)ps.waste_slots / (double)ps.slots_reserved;
    a->reserved_steps++;
  }
  if (queue_before) {
    a->sum_busy += running_now;
    a->n_busy++;
  }
  st->cow_copies = ps.cow_copies;
  st->evictions = ps.evictions;
  if (!s->cfg->record_steps) return 0;
  if (!cli_grow((void **)&a->steps, &a->cap_steps, a->n_steps + 1, sizeof *a->steps, 1024))
    return fail_msg(s, "out of memory");
  a->steps[a->n_steps++] = (sched_step){
      .t_s = (double)(t2 - a->t_start) / 1e9, .dt_ms = (double)(t2 - t0) / 1e6,
      .running = running_now, .decode_batch = (uint32_t)db,
      .prefill_tokens = (uint32_t)pf, .waiting = (uint32_t)s->wait.n,
      .blocks_used = ps.blocks_used, .slots_reserved = ps.slots_reserved,
      .waste_slots = ps.waste_slots, .tokens = ps.tokens};
  return 0;
}

/* One step: admit, prefill, decode, drain; then the step's accounting. */
static int run_step(sched *s, step_acc *a) {
  const sched_config *cfg = s->cfg;
  sched_stats *st = s->st;
  uint64_t t0 = cli_now_ns();
  uint32_t n_decoding = 0;
  for (size_t i = 0; i < s->n_run; i++) n_decoding += s->run[i].ph == PH_DECODE;
  uint32_t budget = cfg->max_batch_tokens > n_decoding ? cfg->max_batch_tokens - n_decoding : 0;
  bool queue_before = s->wait.n > 0;
  /* After a preemption memory is short: let the running sequences drain
   * a step before admitting more (vLLM does the same). */
  bool preempted_last = st->preemptions != a->preempt_mark;
  a->preempt_mark = st->preemptions;
  if ((!preempted_last || s->n_run == 0) && admit(s, budget, a->watermark)) return -1;
  uint32_t running_now = (uint32_t)s->n_run;
  int64_t pf = prefill(s, budget);
  if (pf < 0) return -1;
  uint64_t t1 = cli_now_ns();
  /* The batch buffer holds every running sequence (forks grow it). */
  if (!cli_grow((void **)&s->batch, &s->cap_batch, s->n_run, sizeof *s->batch, 64))
    return fail_msg(s, "out of memory");
  int64_t db = decode(s);
  if (db < 0 || drain_copies(s)) return -1;
  uint64_t t2 = cli_now_ns();
  st->steps++;
  st->prefill_tokens += (uint64_t)pf;
  st->decode_tokens += (uint64_t)db;
  st->prefill_s += (double)(t1 - t0) / 1e9;
  if (db) {
    st->decode_steps++;
    st->decode_s += (double)(t2 - t1) / 1e9;
    if (!cli_grow((void **)&s->decode_ms, &s->cap_decode_ms, s->n_decode_ms + 1,
                  sizeof *s->decode_ms, 1024))
      return fail_msg(s, "out of memory");
    s->decode_ms[s->n_decode_ms++] = (double)(t2 - t1) / 1e6;
  }
  return account_step(s, a, running_now, queue_before, pf, db, t0, t2);
}

/* The means and the decode-step percentiles, after the last step. */
static void finish_stats(sched *s, const step_acc *a) {
  sched_stats *st = s->st;
  st->wall_s = (double)(cli_now_ns() - a->t_start) / 1e9;
  if (st->steps) st->mean_blocks_used = a->sum_used / (double)st->steps;
  st->waste_fraction = a->reserved_steps ? a->sum_waste / (double)a->reserved_steps : 0;
  st->mean_running_busy = a->n_busy ? a->sum_busy / (double)a->n_busy : 0;
  if (s->n_decode_ms) {
    double sum = 0;
    for (size_t i = 0; i < s->n_decode_ms; i++) sum += s->decode_ms[i];
    st->decode_step_mean_ms = sum / (double)s->n_decode_ms;
    qsort(s->decode_ms, s->n_decode_ms, sizeof *s->decode_ms, cmp_double);
    size_t k = (size_t)(0.99 * (double)(s->n_decode_ms - 1) + 0.5);
    st->decode_step_p99_ms = s->decode_ms[k];
  }
}

int sched_run(pkv_cache *cache, const sched_workload *w, const sched_config *cfg,
              const sched_compute *compute, sched_stats *st, sched_step **steps_out,
              size_t *n_steps_out, char *err, size_t err_cap) {
  static const sched_compute none = {0};
  memset(st, 0, sizeof *st);
  if (steps_out) *steps_out = NULL;
  if (n_steps_out) *n_steps_out = 0;
  sched s = {.cache = cache, .w = w, .cfg = cfg, .cc = compute ? compute : &none, .st = st,
             .err = err, .err_cap = err_cap};
  const pkv_config *cc = pkv_cache_config(cache);
  st->num_blocks = cc->num_blocks;
  st->block_size = cc->block_size;
  st->requests = w->n_reqs;
  step_acc a = {.watermark = cfg->watermark_blocks ? cfg->watermark_blocks : cc->num_blocks / 100};
  if (!a.watermark) a.watermark = 1;
  if (cfg->max_seqs == 0 || cfg->max_batch_tokens == 0 || cfg->prefill_chunk == 0)
    return fail_msg(&s, "max_seqs, max_batch_tokens and prefill_chunk must be >= 1");
  int rc = queue_requests(&s);
  a.t_start = cli_now_ns();
  while (!rc && st->requests_done + st->requests_rejected < w->n_reqs) {
    rc = run_step(&s, &a);
    st->wall_s = (double)(cli_now_ns() - a.t_start) / 1e9;
    if (!rc && cfg->on_step) cfg->on_step(cfg->on_step_user, st);
  }
  if (!rc) finish_stats(&s, &a);
  for (size_t i = 0; i < s.n_run; i++) free_running(&s, &s.run[i]);
  free(s.run);
  free(s.wait.v);
  free(s.samples_left);
  free(s.rejected);
  free(s.batch);
  free(s.decode_ms);
  if (rc == 0 && steps_out) {
    *steps_out = a.steps;
    *n_steps_out = a.n_steps;
  } else {
    free(a.steps);
  }
  return rc;
}
