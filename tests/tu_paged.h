/*
 * tu_paged.h — a synthetic paged KV layer for engine tests and benchmarks:
 * an arena laid out exactly as pkv_kv_layout describes, a shuffled block
 * list, and contiguous f32 copies of what was stored (after dtype rounding)
 * for the reference.  No cache manager involved.
 */
#ifndef TU_PAGED_H
#define TU_PAGED_H

#include "engine_internal.h"
#include "pagedkv/engine.h"

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
/* max |a[i] - b[i]| over i < n: the engine tests' accuracy measure. */
double tu_max_diff(const float *a, const float *b, size_t n);

/* The shape of a one-cache engine test: an owned-storage cache (LRU
 * policy) and an engine of n_q_heads query heads over it.  Zero fields keep
 * the defaults of pkv_config_init / pkv_engine_config_init. */
typedef struct tu_engine_shape {
  pkv_dtype dtype;
  uint32_t n_layers, n_kv_heads, head_dim, v_head_dim, block_size, num_blocks;
  uint32_t n_q_heads, n_threads;
} tu_engine_shape;
/* Fills cfg and ec (either may be NULL) with the shape. */
void tu_engine_config(const tu_engine_shape *s, pkv_config *cfg, pkv_engine_config *ec);
/* Creates the cache and the engine: 0, or the failing call's code with
 * nothing left behind. */
int tu_engine_open(const tu_engine_shape *s, pkv_cache **cache, pkv_engine **engine);
/* Destroys both (NULL-safe). */
void tu_engine_close(pkv_cache *cache, pkv_engine *engine);

#endif
