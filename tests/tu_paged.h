/*
 * tu_paged.h — a synthetic paged KV layer for engine tests and benchmarks:
 * an arena laid out exactly as pkv_kv_layout describes, a shuffled block
 * list, and contiguous f32 copies of what was stored (after dtype rounding)
 * for the reference.  No cache manager involved.
 */
#ifndef TU_PAGED_H
#define TU_PAGED_H

#include "engine_internal.h"

typedef struct tu_paged {
  pkv__kv_view view;
  uint8_t *k, *v;          /* arena regions */
  size_t region_bytes;
  int32_t *blocks;
  uint32_t num_blocks, n_kv_heads, cap_tokens;
  float *kc, *vc;          /* contiguous [head][token][head_dim], as stored */
} tu_paged;

/* Builds a layer holding cap_tokens tokens in shuffled blocks (seeded), all
 * K/V random in [-1, 1) (seeded). */
void tu_paged_init(tu_paged *p, pkv_dtype dtype, uint32_t n_kv_heads,
                   uint32_t head_dim, uint32_t block_size, uint32_t cap_tokens,
                   uint64_t seed);
void tu_paged_free(tu_paged *p);
/* Overwrites token t of every head from k, v [n_kv_heads][head_dim]. */
void tu_paged_store(tu_paged *p, uint32_t t, const float *k, const float *v);

/* Deterministic (xorshift, seeded by *state) uniform floats in
 * [-amplitude, amplitude). */
void tu_fill(float *x, size_t n, float amplitude, uint64_t *state);

#endif
