/*
 * attn.c — dividing attention work among the engine's threads.
 *
 * This layer knows shapes, threads and page-table views, but not the
 * manager: engine.c validates and writes K/V, then calls here.
 *
 * Decode.  A work item is (sequence, context range) over every KV head:
 * the kernel walks a tile of tokens head by head, so the K/V of a block —
 * whose heads' tiles are adjacent in the arena — is read as one long run,
 * which is what makes 16-token pages as fast as a contiguous buffer.  All
 * G query heads sharing a KV head are computed together, so each K/V byte
 * is read once per step.  With enough sequences to keep every thread busy
 * an item covers the whole context and writes its output directly.
 * Otherwise (few sequences, long contexts) the context is split ("split-K")
 * into parts of at least MIN_SPLIT tokens; each part leaves its online
 * softmax state (M, S, unnormalised O) in a partial slot and the caller's
 * thread merges them with the log-sum-exp rule
 *     M = max_p M_p,  S = sum_p S_p 2^(M_p - M),  O = sum_p O_p 2^(M_p - M),
 *     out = O / S.
 *
 * Prefill.  A work item is (KV head, query tile of rows_max / G tokens).
 * Tiles near the end of the chunk see more keys, so items are handed out
 * last tile first to balance the causal triangle.
 *
 * Items are claimed from an atomic counter; per-thread scratch is allocated
 * once at init and padded to cache lines, so threads never share a line.
 */
#include "engine_internal.h"
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#define MIN_SPLIT 512      /* tokens: smaller parts cost more to merge than they save */
#define ITEMS_PER_THREAD 4 /* enough items to even out unequal sequences */

typedef struct decode_item {
  uint32_t seq, t0, t1;
  int32_t part; /* partial slot, or -1: write the output directly */
} decode_item;

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

int pkv__attn_init(pkv__attn *a, const pkv__kernels *kern, uint32_t n_threads,
                   uint32_t n_q_heads, uint32_t n_kv_heads, uint32_t head_dim,
                   float scale) {
  memset(a, 0, sizeof *a);
  a->kern = kern;
  a->n_q_heads = n_q_heads;
  a->n_kv_heads = n_kv_heads;
  a->head_dim = head_dim;
  a->v_dim = head_dim;
  a->G = n_q_heads / n_kv_heads;
  a->scale = scale;
  uint32_t tok = a->G >= PKV__PREFILL_ROWS ? 1 : PKV__PREFILL_ROWS / a->G;
  a->rows_max = tok * a->G;
  size_t dec = pkv__decode_thread_floats(a->G, n_q_heads, head_dim);
  size_t pre = pkv__prefill_scratch_floats(head_dim, a->rows_max);
  a->thread_floats = round_up(dec > pre ? dec : pre, 16); /* 64-byte lines */
  int rc = pkv__threads_create(n_threads, &a->threads);
  if (rc) return rc;
  a->scratch_bytes = a->thread_floats * sizeof(float) * pkv__threads_size(a->threads);
  a->scratch = pkv__arena_alloc(a->scratch_bytes);
  if (!a->scratch) {
    pkv__threads_destroy(a->threads);
    a->threads = NULL;
    return pkv__err(PKV_ENOMEM, "engine: cannot allocate %zu bytes of scratch", a->scratch_bytes);
  }
  return 0;
}

void pkv__attn_set_v_dim(pkv__attn *a, uint32_t v_dim) {
  PKV_ENGINE_ASSERT(v_dim >= 1 && v_dim <= a->head_dim); /* scratch is sized by head_dim */
  a->v_dim = v_dim;
}

void pkv__attn_fini(pkv__attn *a) {
  pkv__threads_destroy(a->threads);
  if (a->scratch) pkv__arena_free(a->scratch, a->scratch_bytes);
  pkv__free(a->work);
  pkv__free(a->partials);
  pkv__cascade_free(a);
  memset(a, 0, sizeof *a);
}

/* ---------------------------------------------------------------- decode */

typedef struct decode_job {
  pkv__attn *a;
  const pkv__decode_seq *seqs;
  const decode_item *items;
  uint32_t n_items;
  atomic_uint next;
} decode_job;

static size_t partial_floats(const pkv__attn *a) {
  return (size_t)a->n_q_heads * (a->head_dim + 3); /* M[Hq], S[Hq], C[Hq], O[Hq][D] */
}

static void decode_task(void *ctx, uint32_t thread) {
  decode_job *job = ctx;
  pkv__attn *a = job->a;
  const uint32_t Dv = a->v_dim, HQ = a->n_q_heads;
  const pkv__decode_rows w = pkv__decode_rows_of(a, thread);
  for (;;) {
    uint32_t i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
    if (i >= job->n_items) return;
    const decode_item *it = &job->items[i];
    const pkv__decode_seq *sq = &job->seqs[it->seq];
    pkv__decode_rows_prescale(a, sq->q, HQ, w.qs, w.C);
    pkv__decode_rows_reset(w.M, w.S, w.acc, HQ, Dv);
    const pkv__decode_args args = {.kv = &sq->kv, .h0 = 0, .nh = a->n_kv_heads, .t0 = it->t0,
                                   .t1 = it->t1, .G = a->G, .q = w.qs, .qc = w.C, .M = w.M,
                                   .S = w.S, .acc = w.acc, .scratch = w.kscratch};
    pkv__decode_call(a, &args);
    if (it->part < 0) {
      pkv__decode_rows_finish(w.S, w.acc, HQ, Dv, sq->out);
    } else {
      float *p = a->partials + (size_t)it->part * partial_floats(a);
      memcpy(p, w.M, HQ * sizeof *p);
      memcpy(p + HQ, w.S, HQ * sizeof *p);
      memcpy(p + 2 * HQ, w.C, HQ * sizeof *p);
      memcpy(p + 3 * HQ, w.acc, (size_t)HQ * Dv * sizeof *p);
    }
  }
}

/* Merges parts [first, first+n) of one sequence into out[Hq][D], with the
 * kernels' rules for non-finite values: M may be -inf (every score of the
 * part -inf) or NaN, and a part's weight is pkv__exp2_clamped, so it is 0
 * only for a -inf difference. */
static void merge_parts(const pkv__attn *a, uint32_t first, uint32_t n, float *out) {
  const uint32_t HQ = a->n_q_heads, D = a->v_dim;
  const size_t pf = partial_floats(a);
  for (uint32_t r = 0; r < HQ; r++) {
    float m = -INFINITY;
    for (uint32_t p = 0; p < n; p++) {
      float mp = a->partials[(first + p) * pf + r];
      m = mp > m ? mp : m;
    }
    const float mu = m > -FLT_MAX ? m : -FLT_MAX;
    const float c = a->partials[first * pf + 2 * HQ + r];
    float s = 0.0f;
    float *o = out + (size_t)r * D;
    for (uint32_t d = 0; d < D; d++) o[d] = 0.0f;
    for (uint32_t p = 0; p < n; p++) {
      const float *part = a->partials + (first + p) * pf;
      float w = pkv__exp2_clamped((part[r] - mu) * c);
      s += part[HQ + r] * w;
      const float *op = part + 3 * HQ + (size_t)r * D;
      for (uint32_t d = 0; d < D; d++) o[d] += op[d] * w;
    }
    float inv = 1.0f / s;
    for (uint32_t d = 0; d < D; d++) o[d] *= inv;
  }
}

int pkv__attn_decode_plan(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n_seqs) {
  int crc = pkv__cascade_plan(a, seqs, n_seqs); /* shared prefixes: cascade.c */
  if (crc) return crc < 0 ? crc : 0;
  const uint32_t T = pkv__threads_size(a->threads);
  uint64_t total = 0;
  for (uint32_t s = 0; s < n_seqs; s++) total += seqs[s].n_tokens;
  /* split only when sequences are too few to feed the threads */
  uint64_t chunk = UINT32_MAX;
  if (T > 1 && n_seqs < (uint64_t)T * ITEMS_PER_THREAD) {
    chunk = (total + (uint64_t)T * ITEMS_PER_THREAD - 1) / ((uint64_t)T * ITEMS_PER_THREAD);
    if (chunk < MIN_SPLIT) chunk = MIN_SPLIT;
  }
  size_t n_items = 0, n_parts = 0;
  for (uint32_t s = 0; s < n_seqs; s++) {
    uint64_t parts = (seqs[s].n_tokens + chunk - 1) / chunk;
    if (parts == 0) parts = 1;
    n_items += parts;
    if (parts > 1) n_parts += parts;
  }
  int rc = pkv__engine_grow(&a->work, &a->work_cap, n_items * sizeof(decode_item));
  if (!rc) {
    size_t cap = a->partials_cap * sizeof(float);
    rc = pkv__engine_grow((void **)&a->partials, &cap, n_parts * partial_floats(a) * sizeof(float));
    a->partials_cap = cap / sizeof(float);
  }
  if (rc) return rc;
  decode_item *items = a->work;
  size_t k = 0;
  uint32_t part = 0;
  for (uint32_t s = 0; s < n_seqs; s++) {
    uint32_t len = seqs[s].n_tokens;
    uint32_t parts = (uint32_t)((len + chunk - 1) / chunk);
    if (parts <= 1) {
      items[k++] = (decode_item){s, 0, len, -1};
      continue;
    }
    uint32_t step = (len + parts - 1) / parts;
    for (uint32_t p = 0; p < parts; p++) {
      uint32_t t0 = p * step, t1 = t0 + step < len ? t0 + step : len;
      items[k++] = (decode_item){s, t0, t1, (int32_t)part++};
    }
  }
  a->n_items = (uint32_t)k;
  a->n_split = part;
  PKV_ENGINE_ASSERT_EXPENSIVE(pkv__attn_plan_is_valid(a, seqs, n_seqs));
  return 0;
}

/* The plan covers every sequence's [0, n_tokens) exactly once, in order,
 * with consecutive partial slots for split sequences. */
bool pkv__attn_plan_is_valid(const pkv__attn *a, const pkv__decode_seq *seqs,
                             uint32_t n_seqs) {
  const decode_item *items = a->work;
  uint32_t k = 0, part = 0;
  for (uint32_t s = 0; s < n_seqs; s++) {
    uint32_t t = 0;
    bool split = k < a->n_items && items[k].part >= 0;
    do {
      if (k >= a->n_items || items[k].seq != s || items[k].t0 != t || items[k].t1 < t) return false;
      if (split ? items[k].part != (int32_t)part++ : items[k].part != -1) return false;
      t = items[k++].t1;
    } while (t < seqs[s].n_tokens);
  }
  return k == a->n_items && part == a->n_split;
}

void pkv__attn_decode_run(pkv__attn *a, const pkv__decode_seq *seqs) {
  if (pkv__cascade_active(a)) {
    pkv__cascade_run(a, seqs);
    return;
  }
  decode_item *items = a->work;
  const size_t k = a->n_items;
  decode_job job = {.a = a, .seqs = seqs, .items = items, .n_items = a->n_items};
  atomic_init(&job.next, 0);
  pkv__threads_run(a->threads, decode_task, &job);
  if (a->n_split == 0) return;
  /* merge split parts in item order: each sequence owns a run of parts */
  for (size_t i = 0; i < k;) {
    if (items[i].part < 0) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < k && items[j].seq == items[i].seq) j++;
    merge_parts(a, (uint32_t)items[i].part, (uint32_t)(j - i), seqs[items[i].seq].out);
    i = j;
  }
}

int pkv__attn_decode(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n_seqs) {
  int rc = pkv__attn_decode_plan(a, seqs, n_seqs);
  if (rc) return rc;
  pkv__attn_decode_run(a, seqs);
  return 0;
}

/* --------------------------------------------------------------- prefill */

typedef struct prefill_job {
  pkv__attn *a;
  const pkv__kv_view *kv;
  uint32_t pos0, n, tile_tok, n_tiles;
  const float *q;
  float *out;
  atomic_uint next;
} prefill_job;

static void prefill_task(void *ctx, uint32_t thread) {
  prefill_job *job = ctx;
  pkv__attn *a = job->a;
  const uint32_t H = a->n_kv_heads, G = a->G, D = a->head_dim, Dv = a->v_dim;
  const size_t row = (size_t)a->n_q_heads * D, orow = (size_t)a->n_q_heads * Dv;
  float *scratch = a->scratch + (size_t)thread * a->thread_floats;
  const uint32_t n_items = H * job->n_tiles;
  for (;;) {
    uint32_t i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
    if (i >= n_items) return;
    uint32_t tile = job->n_tiles - 1 - i / H, h = i % H;
    uint32_t tok0 = tile * job->tile_tok;
    uint32_t ntok = job->n - tok0 < job->tile_tok ? job->n - tok0 : job->tile_tok;
    pkv__prefill_tile t = {
        .q = job->q + (size_t)tok0 * row + (size_t)h * G * D,
        .out = job->out + (size_t)tok0 * orow + (size_t)h * G * Dv,
        .row_stride = row,
        .out_stride = orow,
        .pos = job->pos0 + tok0,
        .n_tok = ntok,
        .G = G,
        .kv_head = h,
        .scale = a->scale,
    };
    a->kern->prefill(job->kv, &t, a->rows_max, scratch);
  }
}

int pkv__attn_prefill(pkv__attn *a, const pkv__kv_view *kv, uint32_t pos0,
                      uint32_t n, const float *q, float *out) {
  prefill_job job = {.a = a, .kv = kv, .pos0 = pos0, .n = n, .q = q, .out = out};
  job.tile_tok = a->rows_max / a->G;
  job.n_tiles = (n + job.tile_tok - 1) / job.tile_tok;
  atomic_init(&job.next, 0);
  pkv__threads_run(a->threads, prefill_task, &job);
  return 0;
}
