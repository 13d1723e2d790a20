/*
 * run_engine.c — the compute of `pagedkv run`: the scheduler's prefill and
 * decode hooks run the attention engine on every layer, with deterministic
 * synthetic Q/K/V (windows of a seeded pool of floats), so throughput
 * figures are real attention work.  --dry runs without it.
 */
#include <stdlib.h>

#include "run.h"

enum { POOL_SLACK = 1 << 14 };

/* Makes room for activations of n tokens. */
static int engine_reserve(engine_ctx *e, size_t n_tokens) {
  size_t need_q = n_tokens * e->n_q * e->head_dim;
  if (need_q > e->out_n) {
    float *o = realloc(e->out, need_q * sizeof *o);
    if (!o) return PKV_ENOMEM;
    e->out = o;
    e->out_n = need_q;
  }
  if (need_q + POOL_SLACK > e->pool_n) {
    size_t n = need_q + POOL_SLACK;
    float *p = realloc(e->pool, n * sizeof *p);
    if (!p) return PKV_ENOMEM;
    uint64_t rng = 42;
    for (size_t i = 0; i < n; i++)
      p[i] = (float)((double)(run_splitmix(&rng) >> 11) * 0x1p-52 - 1.0);
    e->pool = p;
    e->pool_n = n;
  }
  return 0;
}

/* A deterministic window of the pool for (seq, pos, layer, which). */
static const float *window(const engine_ctx *e, uint64_t seq, uint32_t pos,
                           uint32_t layer, uint32_t which) {
  return e->pool + (run_tok_of(seq * 4 + which, pos, layer) % (POOL_SLACK / 16)) * 16;
}

int run_engine_prefill(void *user, pkv_seq_id seq, uint32_t pos0, uint32_t n) {
  engine_ctx *e = user;
  int rc = engine_reserve(e, n);
  if (rc) return rc;
  for (uint32_t l = 0; l < e->n_layers; l++) {
    rc = pkv_prefill(e->eng, seq, l, pos0, n, window(e, seq, pos0, l, 0),
                     window(e, seq, pos0, l, 1), window(e, seq, pos0, l, 2), e->out);
    if (rc) return rc;
  }
  return 0;
}

int run_engine_decode(void *user, const pkv_seq_id *seqs, uint32_t n) {
  engine_ctx *e = user;
  int rc = engine_reserve(e, n);
  if (rc) return rc;
  for (uint32_t l = 0; l < e->n_layers; l++) {
    rc = pkv_decode(e->eng, seqs, n, l, window(e, seqs[0], n, l, 0), window(e, seqs[0], n, l, 1),
                    window(e, seqs[0], n, l, 2), e->out);
    if (rc) return rc;
  }
  return 0;
}

void run_engine_free(engine_ctx *e) {
  if (e->eng) pkv_engine_destroy(e->eng);
  free(e->pool);
  free(e->out);
}
