/*
 * engine.h — CPU attention on a paged KV cache.
 *
 * The engine computes exact attention over a sequence's page table in an
 * owned-storage cache.  Activations (q, k, v, out) are f32, row-major:
 *   q   : [n_tokens][n_q_heads][head_dim]
 *   k   : [n_tokens][n_kv_heads][head_dim]
 *   v   : [n_tokens][n_kv_heads][v_head_dim]   (v_head_dim of the cache
 *   out : [n_tokens][n_q_heads][v_head_dim]     config; 0 = head_dim)
 * head_dim: any multiple of 8 up to 576; v_head_dim a multiple of 8 up to
 * head_dim (MLA: 576 / 512).
 * K/V are converted to the cache's dtype when written; compute is f32.
 *
 * Protocol per step (the manager reserves, the engine writes and attends):
 *   prefill:  pkv_seq_append(tokens)          reserve positions [pos0, pos0+n)
 *             for each layer: pkv_prefill(...) write K/V, attend causally
 *             pkv_seq_commit(pos0 + n)
 *   decode:   pkv_seq_append(&token, 1)       for every sequence of the batch
 *             for each layer: pkv_decode(...)  write the last slot, attend
 *             pkv_seq_commit(length)
 *
 * Thread-safety: one engine call at a time per engine; the caller must not
 * mutate the sequences an engine call is using until it returns.
 */
#ifndef PAGEDKV_ENGINE_H
#define PAGEDKV_ENGINE_H

#include "pagedkv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pkv_engine pkv_engine;

typedef struct pkv_engine_config {
  uint32_t n_q_heads; /* multiple of the cache's n_kv_heads (GQA/MQA) */
  uint32_t n_threads; /* 0 = 1 */
  float scale;        /* softmax scale; 0 = 1/sqrt(head_dim) */
  /* "avx512", "avx2", "scalar" or NULL for the best the CPU has.  The
   * environment variable PKV_BACKEND overrides NULL. */
  const char *backend;
  /* bf16 K/V only: 1 = decode takes Q.K with bf16 dot products (AVX512_BF16
   * vdpbf16ps), q rounded to bf16 once per step — faster compute, scores no
   * longer exact in f32 (docs/ENGINE.md, "bf16 dot products"); 0 = f32
   * compute, the exact path (default).  The environment variable
   * PKV_BF16_DOT=1 turns it on when this is 0.  Ignored (exact path) on back
   * ends without bf16 dot products and for other storage types. */
  uint32_t bf16_dot;
  uint32_t version;      /* PKV_ENGINE_CONFIG_VERSION (init); 0 = 1 */
  /* ---- version 2 (fields of a later version take the front of reserved) */
  /* Shared-prefix ("cascade") decode (docs/ENGINE.md, "Cascade decode"):
   * 0 = automatic (default): when sequences of a pkv_decode batch share
   * leading blocks (forks, prefix hits) and the shared part is long enough
   * to pay, its K/V is read once for all of them; results equal plain
   * decode within float rounding.  1 = never (always plain decode). */
  uint32_t cascade;
  uint64_t reserved[7];  /* zero: room for new fields */
} pkv_engine_config;
#define PKV_ENGINE_CONFIG_VERSION 2

PKV_API void pkv_engine_config_init(pkv_engine_config *cfg);
/* The cache must use owned storage.  The engine keeps a pointer to cache;
 * destroy the engine first. */
PKV_API int pkv_engine_create(pkv_cache *cache, const pkv_engine_config *cfg,
                              pkv_engine **out);
PKV_API void pkv_engine_destroy(pkv_engine *engine);
/* Name of the back end in use ("avx512", "avx2", "scalar"). */
PKV_API const char *pkv_engine_backend(const pkv_engine *engine);
/* 1 if this engine's decode uses bf16 dot products (bf16_dot asked for, the
 * cache stores bf16 and the back end has them), else 0 (also for NULL). */
PKV_API int pkv_engine_uses_bf16_dot(const pkv_engine *engine);

/* Writes the K/V rows of positions [pos0, pos0+n) (which must be reserved)
 * into their slots, then computes causal attention of the n queries over
 * positions [0, pos0+n).  Nothing is written on error. */
PKV_API int pkv_prefill(pkv_engine *engine, pkv_seq_id seq, uint32_t layer,
                        uint32_t pos0, uint32_t n, const float *q,
                        const float *k, const float *v, float *out);

/* For each of the n_seqs sequences: writes k[i], v[i] into the slot of its
 * last reserved position, then attends its query q[i] over all its
 * positions.  Nothing is written on error. */
PKV_API int pkv_decode(pkv_engine *engine, const pkv_seq_id *seqs,
                       uint32_t n_seqs, uint32_t layer, const float *q,
                       const float *k, const float *v, float *out);

#ifdef __cplusplus
}
#endif
#endif /* PAGEDKV_ENGINE_H */
