/*
 * work.c — the engine's work buffers and per-row decode state, one floor
 * below the drivers.
 *
 * attn.c (plain decode, prefill) and cascade.c (shared-prefix decode) both
 * run the decode kernel on a thread's scratch and both grow their plans'
 * buffers; what they share lives here, so that neither calls the other for
 * it (engine.c -> attn.c -> cascade.c -> work.c, threads.c, ref.c: no
 * file calls one above it).
 *
 * A decode thread's scratch, from a->scratch + thread * a->thread_floats:
 *   kernel scratch   pkv__decode_scratch_floats(G)
 *   qs [HQ][D]       the prescaled query rows
 *   acc [HQ][D]      O of the online softmax (rows of the V head dim)
 *   M, S, C [HQ]     running maximum, running sum, the rows' prescale factors
 */
#include "engine_internal.h"
#include "internal.h"

#include <math.h>
#include <string.h>

static size_t round16(size_t n) { return (n + 15u) / 16u * 16u; }

size_t pkv__decode_scratch_floats(uint32_t G) {
  /* scores [G][CH + widest VL], alpha [G] (rounded to 16), then two
   * tiles of row offsets [2][CH] size_t */
  return round16((size_t)G * (PKV__DECODE_CH + 16u)) + round16(G) +
         2 * PKV__DECODE_CH * (sizeof(size_t) / sizeof(float));
}

size_t pkv__prefill_scratch_floats(uint32_t head_dim, uint32_t rows_max) {
  size_t ldq = round16(rows_max);
  return (size_t)head_dim * ldq + (size_t)PKV__PREFILL_BC * ldq + ldq * head_dim +
         4 * ldq + 2 * (size_t)PKV__PREFILL_BC * head_dim;
}

size_t pkv__decode_thread_floats(uint32_t G, uint32_t n_q_heads, uint32_t head_dim) {
  return pkv__decode_scratch_floats(G) + (size_t)n_q_heads * head_dim * 2 +
         round16(3 * (size_t)n_q_heads);
}

int pkv__engine_grow(void **p, size_t *cap, size_t need) {
  if (pkv__grow(p, cap, need, 1, 4096)) return 0;
  return pkv__err(PKV_ENOMEM, "engine: cannot grow work buffers to %zu bytes",
                  need);
}

pkv__decode_rows pkv__decode_rows_of(const pkv__attn *a, uint32_t thread) {
  const size_t rows = (size_t)a->n_q_heads * a->head_dim;
  pkv__decode_rows r;
  r.kscratch = a->scratch + (size_t)thread * a->thread_floats;
  r.qs = r.kscratch + pkv__decode_scratch_floats(a->G);
  r.acc = r.qs + rows;
  r.M = r.acc + rows;
  r.S = r.M + a->n_q_heads;
  r.C = r.S + a->n_q_heads;
  return r;
}

void pkv__decode_rows_reset(float *M, float *S, float *acc, size_t n_rows, uint32_t v_dim) {
  for (size_t r = 0; r < n_rows; r++) {
    M[r] = -INFINITY;
    S[r] = 0.0f;
  }
  memset(acc, 0, n_rows * v_dim * sizeof *acc);
}

void pkv__decode_rows_prescale(const pkv__attn *a, const float *q, size_t n_rows, float *qs,
                               float *C) {
  const uint32_t D = a->head_dim;
  const float qscale = a->scale * PKV__LOG2E;
  for (size_t r = 0; r < n_rows; r++) C[r] = pkv__q_prescale(q + r * D, D, qscale, qs + r * D);
}

void pkv__decode_rows_finish(const float *S, const float *acc, size_t n_rows, uint32_t v_dim,
                             float *out) {
  for (size_t r = 0; r < n_rows; r++) {
    float inv = 1.0f / S[r];
    for (uint32_t d = 0; d < v_dim; d++) out[r * v_dim + d] = acc[r * v_dim + d] * inv;
  }
}

void pkv__decode_call(const pkv__attn *a, const pkv__decode_args *args) {
  if (a->bf16_dot && a->kern->decode_bf16dot) a->kern->decode_bf16dot(args);
  else a->kern->decode(args);
}
