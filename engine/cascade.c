/*
 * cascade.c — shared-prefix ("cascade") decode.
 *
 * When sequences of one decode batch share leading blocks (forks, prefix
 * cache hits), plain decode reads the shared K/V once per sequence.  Here
 * the shared tokens are attended once for every query row of every
 * sequence that shares them, and each sequence then continues over its own
 * suffix (the cascade idea of FlashInfer):
 *
 *    seq A: [b0 b1 b2 | a3 a4]      shared part, per KV head h:
 *    seq B: [b0 b1 b2 | c3]           rows = (member, grouped head) of h,
 *    seq C: [b0 b1 b2 | d3 d4 d5]     tokens [0, n_shared): one K/V read
 *                                   private part, per sequence:
 *                                     tokens [n_shared, n_tokens), starting
 *                                     from the shared part's state
 *
 * Exactness.  Each part is the online-softmax state (M, S, O) of the kernels
 * (kern_body.h): running max, sum of 2^(s - M), unnormalised output.  The
 * private part does not merge two finished states: it *continues* the
 * shared state, so the result is the same computation as plain decode with
 * the tiles cut at n_shared — the same kernel, the same arithmetic and the
 * same non-finite semantics, only a different tile boundary (and so a
 * rounding difference of a few ulps).
 *
 * The shared part stacks the members' rows as one query tile: rows (member
 * m, head g) of KV head h are packed as q[m * G + g].  An item of at least
 * CASCADE_GEMM_ROWS rows runs the prefill kernel in its non-causal form
 * (kern_body.h: a register-blocked product of the rows by each key tile,
 * leaving M, S and unnormalised O); a smaller item runs the decode kernel
 * with G' = rows grouped heads.  Either way a tile of K/V is loaded once and
 * used by all the item's rows, so the shared bytes come from memory once
 * per item instead of once per sequence.  Items are (group, KV head, a tile
 * of at most ROWS_PER_ITEM rows), claimed from an atomic counter; a second
 * pass runs one item per sequence for the private parts.
 *
 * Detection is cheap: sequences are sorted by their first block id; each
 * run of equal first blocks is a candidate group, whose shared length is the
 * common prefix of its block lists (compared against the run's first
 * member), capped by the shortest member's token count, so a shared prefix
 * may end mid-block and a sequence may be a prefix of another's table.  A
 * group is used when it has at least two members and CASCADE_MIN_SHARED
 * shared tokens; when no group qualifies the plain plan runs.
 */
#include "engine_internal.h"
#include "internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Shorter shared prefixes are not worth a second pass over the batch
 * (bench_cascade: the plain path wins or ties below a few tiles). */
#define CASCADE_MIN_SHARED (4 * PKV__DECODE_CH)
/* Query rows of one shared item: the prefill kernel's tile (a->rows_max,
 * PKV__PREFILL_ROWS rounded to whole members), which also keeps the decode
 * kernel's score buffer ([rows][tile]) in L1. */
#define ROWS_PER_ITEM PKV__PREFILL_ROWS
/* Items of at least this many rows run the prefill kernel's register-blocked
 * product; fewer rows fill too little of its row vectors. */
#define CASCADE_GEMM_ROWS 32

typedef struct cgroup {
  uint32_t first, n;   /* members: order[first .. first + n) */
  uint32_t n_shared;   /* tokens [0, n_shared) are common to all members */
  size_t q_off;        /* floats into qpack: [n_kv_heads][n * G][head_dim], then the
                          rows' prescale factors C [n_kv_heads][n * G] */
  size_t p_off;        /* floats into partials: M [H][rows], S [H][rows], O [H][rows][v_dim] */
} cgroup;

typedef struct citem {
  uint32_t group, head, m0, nm; /* members [m0, m0 + nm) of group, KV head */
} citem;

struct pkv__cascade {
  void *buf;            /* order, group_of, member, groups, items (one block) */
  size_t buf_cap;       /* bytes */
  float *fbuf;          /* qpack then partials */
  size_t fbuf_cap;      /* bytes */
  uint32_t *order;      /* batch indices, grouped */
  int32_t *group_of;    /* [n_seqs]: group of a batch entry, -1 if none */
  uint32_t *member;     /* [n_seqs]: index within its group */
  cgroup *groups;
  citem *items;
  float *qpack, *partials;
  uint32_t n_seqs, n_groups, n_items;
  int active;           /* the last plan chose cascade */
};

void pkv__cascade_free(pkv__attn *a) {
  pkv__cascade *c = a->cascade;
  if (!c) return;
  pkv__free(c->buf);
  pkv__free(c->fbuf);
  pkv__free(c);
  a->cascade = NULL;
}

int pkv__cascade_active(const pkv__attn *a) { return a->cascade && a->cascade->active; }

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return (a > b) - (a < b);
}

/* Tokens seqs x and y have in common: same arena, same blocks, capped by
 * both lengths. */
static uint32_t common_tokens(const pkv__decode_seq *x, const pkv__decode_seq *y) {
  const pkv__kv_view *a = &x->kv, *b = &y->kv;
  if (a->k != b->k || a->v != b->v || a->block_stride != b->block_stride ||
      a->head_stride != b->head_stride || a->block_size != b->block_size ||
      a->head_dim != b->head_dim || a->v_dim != b->v_dim || a->dtype != b->dtype)
    return 0;
  uint32_t n = x->n_tokens < y->n_tokens ? x->n_tokens : y->n_tokens;
  uint32_t nb = (n + a->block_size - 1) / a->block_size, i = 0;
  while (i < nb && a->blocks[i] == b->blocks[i]) i++;
  uint64_t t = (uint64_t)i * a->block_size;
  return t < n ? (uint32_t)t : n;
}

int pkv__cascade_plan(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n_seqs) {
  if (a->cascade) a->cascade->active = 0;
  if (a->cascade_mode == PKV__CASCADE_OFF || n_seqs < 2) return 0;
  if (!a->cascade) {
    a->cascade = pkv__calloc(1, sizeof *a->cascade);
    if (!a->cascade) return pkv__err(PKV_ENOMEM, "engine: cannot allocate the cascade plan");
  }
  pkv__cascade *c = a->cascade;
  const uint32_t G = a->G, H = a->n_kv_heads, D = a->head_dim, Dv = a->v_dim;
  const uint32_t min_shared = a->cascade_mode == PKV__CASCADE_ALWAYS ? 1 : CASCADE_MIN_SHARED;
  /* worst case: n_seqs / 2 groups, each cut into items per head */
  const uint32_t per_item = G >= ROWS_PER_ITEM ? 1 : ROWS_PER_ITEM / G;
  const size_t max_items = (size_t)H * (n_seqs / 2 + n_seqs / per_item + 1);
  size_t need = n_seqs * (sizeof(uint64_t) + sizeof(int32_t) + sizeof(uint32_t)) +
                (n_seqs / 2 + 1) * sizeof(cgroup) + max_items * sizeof(citem) + 64;
  int rc = pkv__engine_grow(&c->buf, &c->buf_cap, need);
  if (rc) return rc;
  uint64_t *key = c->buf; /* sorted (first block, index); reused as order */
  c->group_of = (int32_t *)(key + n_seqs);
  c->member = (uint32_t *)(c->group_of + n_seqs);
  c->groups = (cgroup *)(((uintptr_t)(c->member + n_seqs) + 15) & ~(uintptr_t)15);
  c->items = (citem *)(c->groups + n_seqs / 2 + 1);
  for (uint32_t i = 0; i < n_seqs; i++) {
    uint32_t b0 = seqs[i].n_tokens ? (uint32_t)seqs[i].kv.blocks[0] : UINT32_MAX;
    key[i] = (uint64_t)b0 << 32 | i;
    c->group_of[i] = -1;
  }
  qsort(key, n_seqs, sizeof *key, cmp_u64);
  c->order = (uint32_t *)key; /* compacted in place: order[i] <= key[i]'s slot */
  uint32_t n_groups = 0, n_items = 0;
  size_t qf = 0, pf = 0;
  for (uint32_t i = 0; i < n_seqs;) {
    uint32_t j = i + 1;
    while (j < n_seqs && key[j] >> 32 == key[i] >> 32) j++;
    /* run [i, j) shares its first block (unless it is the empty marker) */
    uint32_t first = (uint32_t)key[i], shared = UINT32_MAX;
    for (uint32_t x = i + 1; x < j && shared; x++) {
      uint32_t t = common_tokens(&seqs[first], &seqs[(uint32_t)key[x]]);
      if (t < shared) shared = t;
    }
    if (j - i >= 2 && shared != UINT32_MAX && shared >= min_shared) {
      cgroup *g = &c->groups[n_groups];
      *g = (cgroup){.first = i, .n = j - i, .n_shared = shared, .q_off = qf, .p_off = pf};
      size_t rows = (size_t)(j - i) * G;
      qf += (size_t)H * rows * (D + 1);
      pf += (size_t)H * rows * (Dv + 2);
      for (uint32_t x = i; x < j; x++) {
        c->group_of[(uint32_t)key[x]] = (int32_t)n_groups;
        c->member[(uint32_t)key[x]] = x - i;
      }
      for (uint32_t h = 0; h < H; h++)
        for (uint32_t m = 0; m < j - i; m += per_item)
          c->items[n_items++] = (citem){n_groups, h, m, j - i - m < per_item ? j - i - m : per_item};
      n_groups++;
    }
    i = j;
  }
  if (n_groups == 0) return 0;
  for (uint32_t i = 0; i < n_seqs; i++) c->order[i] = (uint32_t)key[i]; /* ascending: safe in place */
  size_t fcap = c->fbuf_cap;
  rc = pkv__engine_grow((void **)&c->fbuf, &fcap, (qf + pf) * sizeof(float));
  c->fbuf_cap = fcap;
  if (rc) return rc;
  c->qpack = c->fbuf;
  c->partials = c->fbuf + qf;
  c->n_seqs = n_seqs;
  c->n_groups = n_groups;
  c->n_items = n_items;
  c->active = 1;
  return 1;
}

typedef struct cascade_job {
  pkv__attn *a;
  const pkv__decode_seq *seqs;
  atomic_uint next;
} cascade_job;

/* Shared part: one (group, KV head, member tile) per item.  An item of at
 * least CASCADE_GEMM_ROWS rows runs the prefill kernel in its non-causal
 * form (a register-blocked product of all rows by each key tile), a smaller
 * one the decode kernel with the rows as grouped heads — as does a bf16
 * cache under the bf16_dot option, whose plain decode rounds q to bf16 (the
 * prefill kernel is exact f32, and the cascade must equal plain decode). */
static void shared_task(void *ctx, uint32_t thread) {
  cascade_job *job = ctx;
  pkv__attn *a = job->a;
  pkv__cascade *c = a->cascade;
  const uint32_t G = a->G, D = a->head_dim, Dv = a->v_dim, H = a->n_kv_heads;
  float *scratch = a->scratch + (size_t)thread * a->thread_floats;
  for (;;) {
    uint32_t i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
    if (i >= c->n_items) return;
    const citem *it = &c->items[i];
    const cgroup *g = &c->groups[it->group];
    const size_t rows = (size_t)g->n * G, r0 = (size_t)it->m0 * G, nr = (size_t)it->nm * G;
    float *q = c->qpack + g->q_off + ((size_t)it->head * rows + r0) * D;
    float *C = c->qpack + g->q_off + (size_t)H * rows * D + (size_t)it->head * rows + r0;
    float *M = c->partials + g->p_off + (size_t)it->head * rows + r0;
    float *S = M + (size_t)H * rows;
    float *O = c->partials + g->p_off + 2 * (size_t)H * rows + ((size_t)it->head * rows + r0) * Dv;
    const pkv__kv_view *kv = &job->seqs[c->order[g->first]].kv;
    if (nr >= CASCADE_GEMM_ROWS && !(a->bf16_dot && a->kern->decode_bf16dot &&
                                      kv->dtype == PKV_DTYPE_BF16)) {
      /* the members' q rows side by side (the kernel prescales them as
       * pkv__q_prescale does, so the suffix's factors C match) */
      for (uint32_t m = 0; m < it->nm; m++)
        memcpy(q + (size_t)m * G * D,
               job->seqs[c->order[g->first + it->m0 + m]].q + (size_t)it->head * G * D,
               (size_t)G * D * sizeof *q);
      PKV_ENGINE_ASSERT(nr <= a->rows_max); /* items are cut to the prefill tile */
      const pkv__prefill_tile t = {.q = q, .out = O, .row_stride = (size_t)G * D,
                                   .out_stride = (size_t)G * Dv, .n_tok = it->nm, .G = G,
                                   .kv_head = it->head, .scale = a->scale,
                                   .n_keys = g->n_shared, .M = M, .S = S};
      a->kern->prefill(kv, &t, a->rows_max, scratch);
      continue;
    }
    PKV_ENGINE_ASSERT(pkv__decode_scratch_floats((uint32_t)nr) <= a->thread_floats);
    for (uint32_t m = 0; m < it->nm; m++) /* as the plain path scales each row */
      pkv__decode_rows_prescale(a, job->seqs[c->order[g->first + it->m0 + m]].q + (size_t)it->head * G * D,
                                G, q + (size_t)m * G * D, C + (size_t)m * G);
    pkv__decode_rows_reset(M, S, O, nr, Dv);
    const pkv__decode_args args = {.kv = kv, .h0 = it->head, .nh = 1, .t0 = 0, .t1 = g->n_shared,
                                   .G = (uint32_t)nr, .q = q, .qc = C, .M = M, .S = S, .acc = O,
                                   .scratch = scratch};
    pkv__decode_call(a, &args);
  }
}

/* Private part: one sequence per item, continuing its group's state. */
static void suffix_task(void *ctx, uint32_t thread) {
  cascade_job *job = ctx;
  pkv__attn *a = job->a;
  pkv__cascade *c = a->cascade;
  const uint32_t G = a->G, Dv = a->v_dim, H = a->n_kv_heads, HQ = a->n_q_heads;
  const pkv__decode_rows w = pkv__decode_rows_of(a, thread);
  for (;;) {
    uint32_t i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
    if (i >= c->n_seqs) return;
    const pkv__decode_seq *sq = &job->seqs[i];
    uint32_t t0 = 0;
    if (c->group_of[i] >= 0) {
      const cgroup *g = &c->groups[c->group_of[i]];
      const size_t rows = (size_t)g->n * G, r0 = (size_t)c->member[i] * G;
      const float *pM = c->partials + g->p_off, *pS = pM + (size_t)H * rows;
      const float *pO = pS + (size_t)H * rows;
      for (uint32_t h = 0; h < H; h++) {
        size_t src = (size_t)h * rows + r0;
        memcpy(w.M + (size_t)h * G, pM + src, G * sizeof *w.M);
        memcpy(w.S + (size_t)h * G, pS + src, G * sizeof *w.S);
        memcpy(w.acc + (size_t)h * G * Dv, pO + src * Dv, (size_t)G * Dv * sizeof *w.acc);
      }
      t0 = g->n_shared;
    } else {
      pkv__decode_rows_reset(w.M, w.S, w.acc, HQ, Dv);
    }
    if (t0 < sq->n_tokens) { /* the same factors C as the shared part's: same rows */
      pkv__decode_rows_prescale(a, sq->q, HQ, w.qs, w.C);
      const pkv__decode_args args = {.kv = &sq->kv, .h0 = 0, .nh = H, .t0 = t0,
                                     .t1 = sq->n_tokens, .G = G, .q = w.qs, .qc = w.C,
                                     .M = w.M, .S = w.S, .acc = w.acc, .scratch = w.kscratch};
      pkv__decode_call(a, &args);
    }
    pkv__decode_rows_finish(w.S, w.acc, HQ, Dv, sq->out);
  }
}

void pkv__cascade_run(pkv__attn *a, const pkv__decode_seq *seqs) {
  cascade_job job = {.a = a, .seqs = seqs};
  atomic_init(&job.next, 0);
  pkv__threads_run(a->threads, shared_task, &job);
  atomic_init(&job.next, 0);
  pkv__threads_run(a->threads, suffix_task, &job);
}

uint32_t pkv__cascade_groups(const pkv__attn *a, uint32_t *shared_tokens) {
  const pkv__cascade *c = a->cascade;
  if (!c || !c->active) return 0;
  uint64_t t = 0;
  for (uint32_t g = 0; g < c->n_groups; g++) t += (uint64_t)c->groups[g].n_shared * c->groups[g].n;
  if (shared_tokens) *shared_tokens = t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
  return c->n_groups;
}
