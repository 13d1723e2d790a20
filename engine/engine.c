/*
 * engine.c — the public attention engine: validation, K/V writes, and the
 * hand-off to the threaded drivers (attn.c).
 *
 *   pkv_prefill / pkv_decode
 *        │ 1. validate everything (shapes, layer, sequences, reserved and
 *        │    writable positions, batch duplicates) — any error returns
 *        │    here, before a byte is written
 *        │ 2. plan the work (the only step that may allocate; grow-only)
 *        │ 3. write the new K/V rows into their slots, converting to the
 *        │    cache dtype, one (block, kv head) run of slots at a time
 *        ▼ 4. attend (kernels on pkv__kv_view built from the page table)
 *
 * The engine reads page tables only through pkv__seq_view_get and checks
 * writability with pkv__seq_check_writable; the arena comes from
 * pkv_cache_kv/pkv_cache_layout.  The caller promises (engine.h) not to
 * mutate the sequences during a call, which is what keeps the views valid
 * without holding the cache lock while computing.
 */
#include "pagedkv/engine.h"

#include "engine_internal.h"
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 256
#define MAX_HEAD_DIM 576

struct pkv_engine {
  pkv_cache *cache;
  pkv_config cfg;         /* copy of the cache's validated config */
  pkv_kv_layout layout;
  pkv__attn attn;
  /* decode batch state, grown to the largest batch seen */
  pkv__decode_seq *batch;
  pkv_seq_id *sorted;     /* duplicate check */
  uint32_t batch_cap;
};

void pkv_engine_config_init(pkv_engine_config *cfg) {
  pkv__err_clear();
  if (!cfg) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->n_threads = 1;
  cfg->version = PKV_ENGINE_CONFIG_VERSION;
}

/* Where each older version's fields end (libpagedkv/abi.c). */
static const size_t engine_config_ends[] = {PKV__V1_END(pkv_engine_config),
                                            PKV__END_AT(pkv_engine_config, cascade)};
_Static_assert(sizeof engine_config_ends / sizeof engine_config_ends[0] >=
                   PKV_ENGINE_CONFIG_VERSION - 1, "one entry per older version");

int pkv_engine_create(pkv_cache *cache, const pkv_engine_config *cfg_in, pkv_engine **out) {
  pkv__err_clear();
  if (!out) return pkv__err(PKV_EINVAL, "engine_create: out is NULL");
  *out = NULL;
  if (!cache) return pkv__err(PKV_EINVAL, "engine_create: cache is NULL");
  if (!cfg_in) return pkv__err(PKV_EINVAL, "engine_create: cfg is NULL");
  static const pkv__abi_struct abi = PKV__ABI_STRUCT(
      pkv_engine_config, "engine_config", PKV_ENGINE_CONFIG_VERSION, engine_config_ends);
  pkv_engine_config cfg_def, cfg_res;
  pkv_engine_config_init(&cfg_def);
  int abi_rc = pkv__abi_in(&abi, &cfg_res, cfg_in, &cfg_def);
  if (abi_rc) return abi_rc;
  const pkv_engine_config *cfg = &cfg_res;
  const pkv_config *cc = pkv_cache_config(cache);
  if (!cc) return pkv__err(PKV_EINVAL, "engine_create: cache has no config");
  if (cc->storage != PKV_STORAGE_OWNED)
    return pkv__err(PKV_ENOTSUP, "engine_create: the cache uses external storage; the "
                                 "engine computes only on an owned arena");
  if (cfg->n_q_heads == 0 || cfg->n_q_heads % cc->n_kv_heads != 0)
    return pkv__err(PKV_EINVAL, "engine_create: n_q_heads %u is not a positive multiple of "
                                "the cache's n_kv_heads %u", cfg->n_q_heads, cc->n_kv_heads);
  const uint32_t dv = cc->v_head_dim ? cc->v_head_dim : cc->head_dim;
  if (cc->head_dim % 8 != 0 || cc->head_dim > MAX_HEAD_DIM)
    return pkv__err(PKV_EINVAL, "engine_create: head_dim %u unsupported: the kernels take whole "
                                "8-float vectors (a multiple of 8, at most %d)",
                    cc->head_dim, MAX_HEAD_DIM);
  if (dv % 8 != 0)
    return pkv__err(PKV_EINVAL, "engine_create: v_head_dim %u unsupported: not a multiple of 8",
                    dv);
  if (dv != cc->head_dim && pkv__dtype_is_quant(cc->dtype))
    return pkv__err(PKV_EINVAL, "engine_create: v_head_dim %u != head_dim %u is supported for "
                                "f32, f16 and bf16 storage only (a quantized row's scale sits "
                                "after head_dim codes)", dv, cc->head_dim);
  if (cfg->n_threads > MAX_THREADS)
    return pkv__err(PKV_EINVAL, "engine_create: n_threads %u > %d", cfg->n_threads, MAX_THREADS);
  if (!(cfg->scale >= 0.0f) || isinf(cfg->scale))
    return pkv__err(PKV_EINVAL, "engine_create: scale %g is not a finite value >= 0 "
                                "(0 = 1/sqrt(head_dim))", (double)cfg->scale);
  if (cfg->bf16_dot > 1)
    return pkv__err(PKV_EINVAL, "engine_create: bf16_dot %u is not 0 or 1", cfg->bf16_dot);
  if (cfg->cascade > 1)
    return pkv__err(PKV_EINVAL, "engine_create: cascade %u is not 0 or 1", cfg->cascade);
  const pkv__kernels *kern = pkv__kernels_select(cfg->backend);
  if (!kern) {
    const char *name = cfg->backend && cfg->backend[0] ? cfg->backend : getenv("PKV_BACKEND");
    char why[160];
    snprintf(why, sizeof why, "%s", pkv_last_error());
    return pkv__err(pkv__backend_known(name) ? PKV_ENOTSUP : PKV_EINVAL, "engine_create: %s%s",
                    cfg->backend && cfg->backend[0] ? "" : "PKV_BACKEND: ", why);
  }
  /* the AVX-512 kernels take 16-float vectors: other multiples of 8 run on
   * the AVX2 kernels (pkv_engine_backend says so) */
  if (kern == &pkv__kernels_avx512 && (cc->head_dim % 16 != 0 || dv % 16 != 0))
    kern = &pkv__kernels_avx2;
  pkv_engine *e = pkv__calloc(1, sizeof *e);
  if (!e) return pkv__err(PKV_ENOMEM, "engine_create: allocation failed");
  e->cache = cache;
  e->cfg = *cc;
  int rc = pkv_cache_layout(cache, &e->layout);
  if (rc) {
    pkv__free(e);
    return rc;
  }
  float scale = cfg->scale > 0.0f ? cfg->scale : 1.0f / sqrtf((float)cc->head_dim);
  rc = pkv__attn_init(&e->attn, kern, cfg->n_threads ? cfg->n_threads : 1, cfg->n_q_heads,
                      cc->n_kv_heads, cc->head_dim, scale);
  if (rc) {
    pkv__free(e);
    return rc;
  }
  const char *env = getenv("PKV_BF16_DOT");
  int want = cfg->bf16_dot || (env && strcmp(env, "1") == 0);
  e->attn.bf16_dot = want && cc->dtype == PKV_DTYPE_BF16 && kern->decode_bf16dot != NULL;
  pkv__attn_set_v_dim(&e->attn, dv);
  e->attn.cascade_mode = cfg->cascade ? PKV__CASCADE_OFF : PKV__CASCADE_AUTO;
  if (dv != cc->head_dim) e->attn.cascade_mode = PKV__CASCADE_OFF; /* cascade: V = K width only */
  *out = e;
  return 0;
}

void pkv_engine_destroy(pkv_engine *engine) {
  if (!engine) return; /* keeps pkv_last_error(), like pkv_cache_destroy */
  pkv__attn_fini(&engine->attn);
  pkv__free(engine->batch);
  pkv__free(engine->sorted);
  pkv__free(engine);
}

int pkv_engine_uses_bf16_dot(const pkv_engine *engine) {
  pkv__err_clear();
  return engine ? engine->attn.bf16_dot : 0;
}

const char *pkv_engine_backend(const pkv_engine *engine) {
  pkv__err_clear();
  return engine ? engine->attn.kern->name : "";
}

/* A view of seq's table over layer's arena. */
static int seq_view(pkv_engine *e, pkv_seq_id seq, uint32_t layer, pkv__kv_view *kv,
                    pkv__seq_view *sv, const char *op) {
  void *k, *v;
  if (pkv__seq_view_get(e->cache, seq, sv) != 0)
    return pkv__err(PKV_ENOSEQ, "%s: sequence %#llx is unknown, freed or stale", op,
                    (unsigned long long)seq);
  int rc = pkv_cache_kv(e->cache, layer, &k, &v);
  if (rc) return rc;
  *kv = (pkv__kv_view){.k = k, .v = v, .blocks = sv->blocks,
                       .block_stride = e->layout.block_stride,
                       .head_stride = e->layout.head_stride,
                       .block_size = e->cfg.block_size, .head_dim = e->cfg.head_dim,
                       .dtype = e->cfg.dtype, .v_dim = e->attn.v_dim};
  return 0;
}

/* Writes rows of positions [pos0, pos0+n): k [n][n_kv_heads][head_dim],
 * v [n][n_kv_heads][v_dim] (the first v_dim elements of a V slot), one
 * contiguous run of slots of one (block, head) at a time. */
static void write_kv(const pkv_engine *e, const pkv__kv_view *kv, uint32_t pos0, uint32_t n,
                     const float *k, const float *v) {
  const uint32_t bs = e->cfg.block_size, H = e->cfg.n_kv_heads, D = e->cfg.head_dim,
                 Dv = e->attn.v_dim;
  const size_t row = (size_t)H * D, vrow = (size_t)H * Dv, slot = e->layout.slot_stride;
  for (uint32_t t = pos0; t < pos0 + n;) {
    uint32_t off = t % bs, run = bs - off;
    if (run > pos0 + n - t) run = pos0 + n - t;
    size_t blk = (size_t)kv->blocks[t / bs] * kv->block_stride;
    for (uint32_t h = 0; h < H; h++) {
      uint8_t *kd = (uint8_t *)kv->k + blk + (size_t)h * kv->head_stride + (size_t)off * slot;
      uint8_t *vd = (uint8_t *)kv->v + blk + (size_t)h * kv->head_stride + (size_t)off * slot;
      for (uint32_t i = 0; i < run; i++) {
        size_t src = (size_t)(t - pos0 + i) * row + (size_t)h * D;
        size_t vsrc = (size_t)(t - pos0 + i) * vrow + (size_t)h * Dv;
        e->attn.kern->store(kd + (size_t)i * slot, k + src, D, e->cfg.dtype);
        e->attn.kern->store(vd + (size_t)i * slot, v + vsrc, Dv, e->cfg.dtype);
      }
    }
    t += run;
  }
}

int pkv_prefill(pkv_engine *engine, pkv_seq_id seq, uint32_t layer, uint32_t pos0, uint32_t n,
                const float *q, const float *k, const float *v, float *out) {
  pkv__err_clear();
  if (!engine) return pkv__err(PKV_EINVAL, "prefill: engine is NULL");
  if (!q || !k || !v || !out) return pkv__err(PKV_EINVAL, "prefill: q, k, v and out must be non-NULL");
  if (n == 0) return pkv__err(PKV_EINVAL, "prefill: n is 0");
  if (layer >= engine->cfg.n_layers)
    return pkv__err(PKV_ERANGE, "prefill: layer %u >= n_layers %u", layer, engine->cfg.n_layers);
  if ((uint64_t)pos0 + n > UINT32_MAX) return pkv__err(PKV_ERANGE, "prefill: pos0 + n overflows");
  pkv__kv_view kv;
  pkv__seq_view sv;
  int rc = seq_view(engine, seq, layer, &kv, &sv, "prefill");
  if (rc) return rc;
  if (pos0 + n > sv.n_tokens)
    return pkv__err(PKV_ERANGE, "prefill: positions [%u, %u) not reserved (sequence length %u; "
                                "pkv_seq_append first)", pos0, pos0 + n, sv.n_tokens);
  rc = pkv__seq_check_writable(engine->cache, seq, pos0, n);
  if (rc) return rc;
  write_kv(engine, &kv, pos0, n, k, v);
  return pkv__attn_prefill(&engine->attn, &kv, pos0, n, q, out);
}

static int cmp_seq(const void *a, const void *b) {
  pkv_seq_id x = *(const pkv_seq_id *)a, y = *(const pkv_seq_id *)b;
  return (x > y) - (x < y);
}

int pkv_decode(pkv_engine *engine, const pkv_seq_id *seqs, uint32_t n_seqs, uint32_t layer,
               const float *q, const float *k, const float *v, float *out) {
  pkv__err_clear();
  if (!engine) return pkv__err(PKV_EINVAL, "decode: engine is NULL");
  if (n_seqs == 0) return pkv__err(PKV_EINVAL, "decode: empty batch");
  if (!seqs || !q || !k || !v || !out)
    return pkv__err(PKV_EINVAL, "decode: seqs, q, k, v and out must be non-NULL");
  if (layer >= engine->cfg.n_layers)
    return pkv__err(PKV_ERANGE, "decode: layer %u >= n_layers %u", layer, engine->cfg.n_layers);
  if (n_seqs > engine->batch_cap) {
    pkv__decode_seq *b = pkv__realloc(engine->batch, sizeof *b * n_seqs);
    if (!b) return pkv__err(PKV_ENOMEM, "decode: batch of %u: allocation failed", n_seqs);
    engine->batch = b;
    pkv_seq_id *s = pkv__realloc(engine->sorted, sizeof *s * n_seqs);
    if (!s) return pkv__err(PKV_ENOMEM, "decode: batch of %u: allocation failed", n_seqs);
    engine->sorted = s;
    engine->batch_cap = n_seqs;
  }
  memcpy(engine->sorted, seqs, sizeof *seqs * n_seqs);
  qsort(engine->sorted, n_seqs, sizeof *seqs, cmp_seq);
  for (uint32_t i = 1; i < n_seqs; i++)
    if (engine->sorted[i] == engine->sorted[i - 1])
      return pkv__err(PKV_EINVAL, "decode: sequence %#llx appears twice in the batch",
                      (unsigned long long)engine->sorted[i]);
  const size_t qrow = (size_t)engine->attn.n_q_heads * engine->cfg.head_dim;
  for (uint32_t i = 0; i < n_seqs; i++) {
    pkv__seq_view sv;
    pkv__decode_seq *d = &engine->batch[i];
    int rc = seq_view(engine, seqs[i], layer, &d->kv, &sv, "decode");
    if (rc) return rc;
    if (sv.n_tokens == 0)
      return pkv__err(PKV_ERANGE, "decode: batch entry %u: sequence has no reserved position "
                                  "(pkv_seq_append first)", i);
    rc = pkv__seq_check_writable(engine->cache, seqs[i], sv.n_tokens - 1, 1);
    if (rc) return rc;
    d->n_tokens = sv.n_tokens;
    d->q = q + i * qrow;
    d->out = out + i * (size_t)engine->attn.n_q_heads * engine->attn.v_dim;
  }
  int rc = pkv__attn_decode_plan(&engine->attn, engine->batch, n_seqs);
  if (rc) return rc;
  const size_t kvrow = (size_t)engine->cfg.n_kv_heads * engine->cfg.head_dim,
               vvrow = (size_t)engine->cfg.n_kv_heads * engine->attn.v_dim;
  for (uint32_t i = 0; i < n_seqs; i++)
    write_kv(engine, &engine->batch[i].kv, engine->batch[i].n_tokens - 1, 1, k + i * kvrow,
             v + i * vvrow);
  pkv__attn_decode_run(&engine->attn, engine->batch);
  return 0;
}
