/* tu_paged.c — see tu_paged.h. */
#include "tu_paged.h"
#include "pagedkv/policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static uint64_t paged_rand(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

void tu_fill(float *x, size_t n, float amplitude, uint64_t *state) {
  for (size_t i = 0; i < n; i++)
    x[i] = amplitude * ((float)(paged_rand(state) >> 40) / (float)(1ull << 23) - 1.0f);
}

#define TU_HUGE ((size_t)2 << 20)

void tu_paged_init(tu_paged *p, pkv_dtype dtype, uint32_t n_kv_heads,
                   uint32_t head_dim, uint32_t block_size, uint32_t cap_tokens,
                   uint64_t seed) {
  memset(p, 0, sizeof *p);
  size_t row = pkv__row_bytes(head_dim, dtype);
  uint32_t need = (cap_tokens + block_size - 1) / block_size;
  p->num_blocks = need + 3; /* spare blocks the table never uses */
  p->n_kv_heads = n_kv_heads;
  p->cap_tokens = cap_tokens;
  size_t head_stride = (size_t)block_size * row;
  size_t block_stride = head_stride * n_kv_heads;
  p->region_bytes = block_stride * p->num_blocks;
  /* 2 MiB aligned and huge-page advised, like the library's own arena */
  size_t alloc = (p->region_bytes + TU_HUGE - 1) / TU_HUGE * TU_HUGE;
  p->k = aligned_alloc(TU_HUGE, alloc);
  p->v = aligned_alloc(TU_HUGE, alloc);
  (void)madvise(p->k, alloc, MADV_HUGEPAGE);
  (void)madvise(p->v, alloc, MADV_HUGEPAGE);
  memset(p->k, 0x7f, p->region_bytes); /* garbage: unused slots must not matter */
  memset(p->v, 0x7f, p->region_bytes);
  p->blocks = malloc(sizeof(int32_t) * (need ? need : 1));
  /* a random permutation of block ids, skipping a few */
  int32_t *perm = malloc(sizeof(int32_t) * p->num_blocks);
  for (uint32_t i = 0; i < p->num_blocks; i++) perm[i] = (int32_t)i;
  uint64_t st = seed * 7919 + 1;
  for (uint32_t i = p->num_blocks - 1; i > 0; i--) {
    uint32_t j = (uint32_t)(paged_rand(&st) % (i + 1));
    int32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  memcpy(p->blocks, perm, sizeof(int32_t) * need);
  free(perm);
  p->view = (pkv__kv_view){.k = p->k, .v = p->v, .blocks = p->blocks,
                           .block_stride = block_stride, .head_stride = head_stride,
                           .block_size = block_size, .head_dim = head_dim, .dtype = dtype};
  size_t n = (size_t)n_kv_heads * cap_tokens * head_dim;
  p->kc = malloc(sizeof(float) * (n ? n : 1));
  p->vc = malloc(sizeof(float) * (n ? n : 1));
  float *k = malloc(sizeof(float) * n_kv_heads * head_dim);
  float *v = malloc(sizeof(float) * n_kv_heads * head_dim);
  uint64_t rs = seed + 12345;
  for (uint32_t t = 0; t < cap_tokens; t++) {
    tu_fill(k, (size_t)n_kv_heads * head_dim, 1.0f, &rs);
    tu_fill(v, (size_t)n_kv_heads * head_dim, 1.0f, &rs);
    tu_paged_store(p, t, k, v);
  }
  free(k);
  free(v);
}

void tu_paged_store(tu_paged *p, uint32_t t, const float *k, const float *v) {
  const pkv__kv_view *w = &p->view;
  size_t row = pkv__row_bytes(w->head_dim, w->dtype);
  for (uint32_t h = 0; h < p->n_kv_heads; h++) {
    size_t off = (size_t)w->blocks[t / w->block_size] * w->block_stride +
                 (size_t)h * w->head_stride + (size_t)(t % w->block_size) * row;
    pkv__store_row(p->k + off, k + (size_t)h * w->head_dim, w->head_dim, w->dtype);
    pkv__store_row(p->v + off, v + (size_t)h * w->head_dim, w->head_dim, w->dtype);
    size_t c = ((size_t)h * p->cap_tokens + t) * w->head_dim;
    pkv__load_row(p->kc + c, p->k + off, w->head_dim, w->dtype);
    pkv__load_row(p->vc + c, p->v + off, w->head_dim, w->dtype);
  }
}

double tu_max_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= m)) m = d; /* NaN propagates as a failure */
  }
  return m;
}

void tu_paged_free(tu_paged *p) {
  free(p->k);
  free(p->v);
  free(p->blocks);
  free(p->kc);
  free(p->vc);
  memset(p, 0, sizeof *p);
}

void tu_engine_config(const tu_engine_shape *s, pkv_config *cfg, pkv_engine_config *ec) {
  if (cfg) {
    pkv_config_init(cfg);
    /* the core resolves policy names through a weak reference to the
     * registry; naming it here makes a static link pull the registry in */
    cfg->policy_ops = pkv_policy_find("lru");
    cfg->dtype = s->dtype;
#define TU_SET(field, value) if (value) cfg->field = (value)
    TU_SET(n_layers, s->n_layers);
    TU_SET(n_kv_heads, s->n_kv_heads);
    TU_SET(head_dim, s->head_dim);
    TU_SET(v_head_dim, s->v_head_dim);
    TU_SET(block_size, s->block_size);
    TU_SET(num_blocks, s->num_blocks);
#undef TU_SET
  }
  if (ec) {
    pkv_engine_config_init(ec);
    ec->n_q_heads = s->n_q_heads;
    if (s->n_threads) ec->n_threads = s->n_threads;
  }
}

int tu_engine_open(const tu_engine_shape *s, pkv_cache **cache, pkv_engine **engine) {
  pkv_config cfg;
  pkv_engine_config ec;
  tu_engine_config(s, &cfg, &ec);
  int rc = pkv_cache_create(&cfg, cache);
  if (rc) return rc;
  rc = pkv_engine_create(*cache, &ec, engine);
  if (rc) {
    pkv_cache_destroy(*cache);
    *cache = NULL;
  }
  return rc;
}

void tu_engine_close(pkv_cache *cache, pkv_engine *engine) {
  if (engine) pkv_engine_destroy(engine);
  if (cache) pkv_cache_destroy(cache);
}
