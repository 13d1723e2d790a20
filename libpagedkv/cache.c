/*
 * cache.c — configuration, validation, creation and layout of a cache.
 *
 * Validation checks every field in a fixed order and names the first bad
 * one in pkv_last_error(); all size arithmetic is done in 64 bits with an
 * explicit overflow check, since a 4096-layer, 65536-token-block config is a
 * legal-looking input whose product does not fit.
 *
 * Owned-mode arena layout (one allocation, 64-byte aligned regions):
 *
 *   kv ─► [layer 0 K][layer 0 V][layer 1 K][layer 1 V] ... [layer L-1 V]
 *          each region: [block][kv_head][slot][head_dim] elements
 *          region stride = layer_bytes rounded up to 64
 *
 * so pkv_kv_layout's formula (b*block_stride + h*head_stride + s*slot_stride
 * + d*elem_size) holds from each region's base, and one block id addresses
 * the same slot range in every layer.  External mode allocates no arena; the
 * caller mirrors the same layout wherever its tensors live.
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PKV_MAX_BLOCK_SIZE 65536u
#define PKV_KNOWN_FLAGS \
  (PKV_CACHE_EVICT_ORPHANS_FIRST | PKV_CACHE_NO_PREFIX_CACHE | \
   PKV_CACHE_COMMIT_DEDUP)
/* A pull queue holds at most this many events (~100 MB of pkv_event). */
#define PKV_MAX_EVENT_QUEUE (1u << 20)

size_t pkv_dtype_size(pkv_dtype dtype) {
  pkv__err_clear();
  switch (dtype) {
  case PKV_DTYPE_F32: return 4;
  case PKV_DTYPE_F16: return 2;
  case PKV_DTYPE_BF16: return 2;
  case PKV_DTYPE_I8:
  case PKV_DTYPE_FP8_E4M3:
  case PKV_DTYPE_FP8_E5M2: return 1;
  }
  return 0;
}

/* a*b into *out; false on overflow. */
static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
  return !__builtin_mul_overflow(a, b, out);
}

/* Bytes of one slot of one head: the elements, then the f32 scale of the
 * quantized types (pkv_kv_layout). */
static uint64_t slot_bytes(const pkv_config *cfg) {
  uint64_t x = pkv_dtype_size(cfg->dtype);
  if (!mul_ok(x, cfg->head_dim, &x)) return 0;
  return x + (cfg->dtype >= PKV_DTYPE_I8 ? sizeof(float) : 0);
}

/* Bytes of one block's K (or V) in one layer; 0 on overflow. */
static uint64_t block_stride_bytes(const pkv_config *cfg) {
  uint64_t x = slot_bytes(cfg);
  if (!x || !mul_ok(x, cfg->block_size, &x) || !mul_ok(x, cfg->n_kv_heads, &x))
    return 0;
  return x;
}

uint64_t pkv_config_block_bytes(const pkv_config *cfg) {
  pkv__err_clear();
  if (!cfg || !cfg->n_layers || !cfg->n_kv_heads || !cfg->head_dim ||
      !cfg->block_size || !pkv_dtype_size(cfg->dtype))
    return 0;
  uint64_t x = block_stride_bytes(cfg);
  if (!x || !mul_ok(x, 2u * (uint64_t)cfg->n_layers, &x)) return 0;
  return x;
}

/* Validates cfg and fills *res (a resolved copy).  Returns 0 or PKV_E*. */
static int config_validate(const pkv_config *cfg_in, pkv_config *res) {
  PKV_CHECK(cfg_in, "config: cfg is NULL");
  int abi_rc = pkv__config_in(res, cfg_in);
  if (abi_rc) return abi_rc;
  const pkv_config *cfg = res; /* the caller's fields in this version's layout */
  PKV_CHECK(cfg->n_layers > 0, "config: n_layers is 0");
  PKV_CHECK(cfg->n_kv_heads > 0, "config: n_kv_heads is 0");
  PKV_CHECK(cfg->head_dim > 0, "config: head_dim is 0");
  PKV_CHECK(cfg->v_head_dim <= cfg->head_dim, "config: v_head_dim %u > "
            "head_dim %u (V slots are head_dim wide)", cfg->v_head_dim,
            cfg->head_dim);
  PKV_CHECK(cfg->block_size >= 1 && cfg->block_size <= PKV_MAX_BLOCK_SIZE,
            "config: block_size %u not in 1..%u", cfg->block_size,
            PKV_MAX_BLOCK_SIZE);
  PKV_CHECK(pkv_dtype_size(cfg->dtype) > 0, "config: unknown dtype %d",
            (int)cfg->dtype);
  PKV_CHECK(cfg->storage == PKV_STORAGE_OWNED ||
                cfg->storage == PKV_STORAGE_EXTERNAL,
            "config: unknown storage mode %d", (int)cfg->storage);
  PKV_CHECK((cfg->flags & ~PKV_KNOWN_FLAGS) == 0, "config: unknown flags 0x%x",
            cfg->flags & ~PKV_KNOWN_FLAGS);
  PKV_CHECK(cfg->event_queue_cap <= PKV_MAX_EVENT_QUEUE, "config: "
            "event_queue_cap %u > %u", cfg->event_queue_cap,
            PKV_MAX_EVENT_QUEUE);
  uint64_t block_bytes = pkv_config_block_bytes(cfg);
  PKV_CHECK(block_bytes > 0, "config: block size in bytes overflows (%u layers "
            "x %u heads x %u head_dim x %u slots)", cfg->n_layers,
            cfg->n_kv_heads, cfg->head_dim, cfg->block_size);
  uint64_t nb = cfg->num_blocks;
  if (nb == 0) {
    PKV_CHECK(cfg->memory_bytes > 0, "config: set num_blocks or memory_bytes "
            "(both are 0)");
    PKV_CHECK(cfg->memory_bytes >= block_bytes, "config: memory_bytes %llu too "
            "small for one block of %llu bytes",
            (unsigned long long)cfg->memory_bytes,
            (unsigned long long)block_bytes);
    nb = cfg->memory_bytes / block_bytes;
    if (nb > INT32_MAX) nb = INT32_MAX;
  }
  PKV_CHECK(nb <= INT32_MAX, "config: num_blocks %llu > %d",
            (unsigned long long)nb, INT32_MAX);
  uint64_t total, slots;
  PKV_CHECK(mul_ok(nb, block_bytes, &total) &&
                total <= (uint64_t)(SIZE_MAX / 2) &&
                mul_ok(nb, cfg->block_size, &slots) &&
                mul_ok(slots, sizeof(int32_t), &slots) &&
                slots <= (uint64_t)(SIZE_MAX / 2),
            "config: %llu blocks of %llu bytes overflow the address space",
            (unsigned long long)nb, (unsigned long long)block_bytes);
  res->num_blocks = (uint32_t)nb;
  if (cfg->policy_ops == NULL) {
    const char *name = cfg->policy ? cfg->policy : PKV__DEFAULT_POLICY;
    if (strlen(name) >= sizeof(((pkv_stats *)0)->policy))
      return pkv__err(PKV_EINVAL, "config: policy name '%.40s' too long", name);
    res->policy = name;
  }
  return 0;
}

const pkv_config *pkv_cache_config(const pkv_cache *cache) {
  pkv__err_clear();
  return cache ? &cache->cfg : NULL;
}

static void cache_free(pkv_cache *c) {
  if (!c) return;
  if (c->seqs) {
    for (uint32_t i = 0; i < c->seq_cap; i++) {
      pkv__seq *s = c->seqs[i];
      if (!s) continue;
      pkv__free(s->blocks);
      pkv__free(s->ranges);
      pkv__free(s);
    }
  }
  pkv__free(c->seqs);
  pkv__free(c->seq_gen);
  pkv__free(c->seq_free);
  pkv__pins_destroy(c);
  pkv__tiers_close(c);
  pkv__quota_destroy(c);
  pkv__policy_close(c);
  pkv__prefix_destroy(c);
  PKV__FREE_ALL(c->copies, c->evq, c->copy_in, c->orphans, c->scratch,
                c->block_tokens, c->blk_raw, c->fam, c->refcount);
  if (c->kv) pkv__arena_free(c->kv, c->kv_bytes);
  pthread_mutex_destroy(&c->lock);
  pkv__free(c);
}

int pkv_cache_create(const pkv_config *cfg, pkv_cache **out) {
  pkv__err_clear();
  PKV_CHECK(out, "cache_create: out is NULL");
  *out = NULL;
  pkv_config res;
  int rc = config_validate(cfg, &res);
  if (rc) return rc;

  pkv_cache *c = pkv__calloc(1, sizeof *c);
  if (!c) return pkv__err(PKV_ENOMEM, "cache_create: no memory for the cache");
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    pkv__free(c);
    return pkv__err(PKV_ENOMEM, "cache_create: mutex init failed");
  }
  c->cfg = res;
  c->num_blocks = res.num_blocks;
  c->block_size = res.block_size;
  c->free_head = -1;

  pkv_kv_layout *L = &c->layout;
  L->elem_size = pkv_dtype_size(res.dtype);
  L->slot_stride = (size_t)slot_bytes(&res);
  L->head_stride = (size_t)res.block_size * L->slot_stride;
  L->block_stride = (size_t)res.n_kv_heads * L->head_stride;
  L->layer_bytes = (size_t)res.num_blocks * L->block_stride;
  c->kv_region_stride = (L->layer_bytes + 63) & ~(size_t)63;

  size_t nb = res.num_blocks;
  c->refcount = pkv__calloc(nb, sizeof *c->refcount);
  c->blk_raw = pkv__calloc(nb + 1, sizeof *c->blk);
  c->blk = c->blk_raw ? (pkv__block *)(((uintptr_t)c->blk_raw + 63) & ~(uintptr_t)63)
                      : NULL;
  c->fam = pkv__malloc(nb * sizeof *c->fam);
  c->block_tokens = pkv__malloc(nb * res.block_size * sizeof(int32_t));
  c->orphans = pkv__malloc(nb * sizeof(int32_t));
  c->scratch = pkv__malloc(nb * sizeof(uint32_t));
  c->evq_cap = res.event_queue_cap;
  c->evq = c->evq_cap ? pkv__malloc(c->evq_cap * sizeof *c->evq) : NULL;
  if (res.storage == PKV_STORAGE_EXTERNAL)
    c->copy_in = pkv__calloc(nb, sizeof *c->copy_in);
  if (!c->refcount || !c->blk || !c->fam || !c->block_tokens || !c->orphans ||
      !c->scratch || (c->evq_cap && !c->evq) ||
      (res.storage == PKV_STORAGE_EXTERNAL && !c->copy_in)) {
    cache_free(c);
    return pkv__err(PKV_ENOMEM, "cache_create: no memory for %zu blocks", nb);
  }
  for (size_t b = 0; b < nb; b++) {
    c->blk[b].next_free = (b + 1 < nb) ? (int32_t)(b + 1) : -1;
    c->fam[b] = (pkv__family){-1, -1, -1, -1};
  }
  c->free_head = 0;
  c->n_free = (uint32_t)nb;

  if (res.storage == PKV_STORAGE_OWNED) {
    /* 2 * n_layers regions; validated above not to overflow. */
    c->kv_bytes = c->kv_region_stride * 2 * (size_t)res.n_layers;
    c->kv = pkv__arena_alloc(c->kv_bytes);
    if (!c->kv) {
      size_t want = c->kv_bytes;
      c->kv_bytes = 0;
      cache_free(c);
      return pkv__err(PKV_ENOMEM, "cache_create: no memory for the %zu-byte "
                      "KV arena", want);
    }
  }
  rc = pkv__prefix_init(c);
  if (rc == 0) rc = pkv__policy_open(c);
  if (rc == 0) rc = pkv__tiers_open(c);
  if (rc) {
    cache_free(c);
    return rc;
  }
  c->cfg.policy_args = NULL; /* only valid during create */
  snprintf(c->policy_name, sizeof c->policy_name, "%s",
           c->policy ? c->policy->name : "");
  c->cfg.policy = c->policy_name;
  snprintf(c->st.policy, sizeof c->st.policy, "%s", c->policy_name);
  PKV_ASSERT_VALID(c);
  *out = c;
  return 0;
}

/* Leaves pkv_last_error() as it is (it cannot fail): a caller may clean up
 * after a failed call and report afterwards. */
void pkv_cache_destroy(pkv_cache *cache) { cache_free(cache); }

int pkv_cache_layout(const pkv_cache *cache, pkv_kv_layout *out) {
  PKV_ENTER(cache, "cache_layout");
  PKV_CHECK(out, "cache_layout: out is NULL");
  *out = cache->layout; /* immutable after create: no lock needed */
  return 0;
}

int pkv_cache_kv(pkv_cache *cache, uint32_t layer, void **k, void **v) {
  PKV_ENTER(cache, "cache_kv");
  PKV_CHECK(k && v, "cache_kv: k or v is NULL");
  if (cache->cfg.storage != PKV_STORAGE_OWNED)
    return pkv__err(PKV_ENOTSUP, "cache_kv: external storage has no arena");
  if (layer >= cache->cfg.n_layers)
    return pkv__err(PKV_ERANGE, "cache_kv: layer %u >= n_layers %u", layer,
                    cache->cfg.n_layers);
  *k = cache->kv + (size_t)(2 * layer) * cache->kv_region_stride;
  *v = cache->kv + (size_t)(2 * layer + 1) * cache->kv_region_stride;
  return 0;
}
