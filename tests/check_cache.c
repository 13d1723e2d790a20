/*
 * check_cache.c — configuration validation, creation in both storage modes,
 * layout and arena, error names.
 */
#include "tu_core.h"

#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------ config validation */

typedef struct bad_cfg {
  const char *what;
  void (*mutate)(pkv_config *cfg);
  int code;
  const char *msg_has; /* substring of pkv_last_error() */
} bad_cfg;

static void m_layers(pkv_config *c) { c->n_layers = 0; }
static void m_heads(pkv_config *c) { c->n_kv_heads = 0; }
static void m_hdim(pkv_config *c) { c->head_dim = 0; }
static void m_bs0(pkv_config *c) { c->block_size = 0; }
static void m_bsbig(pkv_config *c) { c->block_size = 65537; }
static void m_dtype(pkv_config *c) { c->dtype = (pkv_dtype)7; }
static void m_storage(pkv_config *c) { c->storage = (pkv_storage)9; }
static void m_flags(pkv_config *c) { c->flags = 0x80; }
static void m_nomem(pkv_config *c) { c->num_blocks = 0; c->memory_bytes = 0; }
static void m_small(pkv_config *c) { c->num_blocks = 0; c->memory_bytes = 100; }
static void m_overflow(pkv_config *c) {
  c->n_layers = 0xffffffffu; c->n_kv_heads = 0xffffffffu; c->head_dim = 0xffffffffu;
  c->block_size = 65536;
}
static void m_total(pkv_config *c) {
  c->n_layers = 4096; c->n_kv_heads = 64; c->head_dim = 256; c->block_size = 65536;
  c->num_blocks = 0x7fffffff;
}
static void m_nblocks(pkv_config *c) { c->num_blocks = 0x80000000u; }
static void m_policy(pkv_config *c) { c->policy = "no-such-policy"; }
static void m_policy_long(pkv_config *c) {
  c->policy = "a-policy-name-that-is-far-too-long-for-stats";
}
static const pkv_policy_ops bad_version = {.version = 99, .name = "v99"};
static void m_policy_ver(pkv_config *c) { c->policy_ops = &bad_version; }
static const pkv_policy_ops no_hooks = {.version = PKV_POLICY_VERSION, .name = "nohooks"};
static void m_policy_hooks(pkv_config *c) { c->policy_ops = &no_hooks; }

static const bad_cfg bad_cfgs[] = {
    {"n_layers 0", m_layers, PKV_EINVAL, "n_layers"},
    {"n_kv_heads 0", m_heads, PKV_EINVAL, "n_kv_heads"},
    {"head_dim 0", m_hdim, PKV_EINVAL, "head_dim"},
    {"block_size 0", m_bs0, PKV_EINVAL, "block_size"},
    {"block_size 65537", m_bsbig, PKV_EINVAL, "block_size"},
    {"dtype", m_dtype, PKV_EINVAL, "dtype"},
    {"storage", m_storage, PKV_EINVAL, "storage"},
    {"flags", m_flags, PKV_EINVAL, "flags"},
    {"no size", m_nomem, PKV_EINVAL, "num_blocks or memory_bytes"},
    {"memory < one block", m_small, PKV_EINVAL, "too small"},
    {"block bytes overflow", m_overflow, PKV_EINVAL, "overflows"},
    {"total overflow", m_total, PKV_EINVAL, "overflow"},
    {"num_blocks > INT32_MAX", m_nblocks, PKV_EINVAL, "num_blocks"},
    {"unknown policy", m_policy, PKV_ENOENT, "no-such-policy"},
    {"policy name too long", m_policy_long, PKV_EINVAL, "too long"},
    {"policy version", m_policy_ver, PKV_ENOTSUP, "version"},
    {"policy hooks", m_policy_hooks, PKV_EINVAL, "hook"},
};

START_TEST(config_bad_fields) {
  const bad_cfg *t = &bad_cfgs[_i];
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  t->mutate(&cfg);
  pkv_cache *c = (pkv_cache *)0x1;
  int rc = pkv_cache_create(&cfg, &c);
  ck_assert_msg(rc == t->code, "%s: got %s want %s (%s)", t->what,
                pkv_err_name(rc), pkv_err_name(t->code), pkv_last_error());
  ck_assert_ptr_null(c);
  ck_assert_msg(strstr(pkv_last_error(), t->msg_has) != NULL,
                "%s: message '%s' lacks '%s'", t->what, pkv_last_error(),
                t->msg_has);
}
END_TEST

START_TEST(config_null_args) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  ck_assert_int_eq(pkv_cache_create(&cfg, NULL), PKV_EINVAL);
  pkv_cache *c = (pkv_cache *)0x1;
  ck_assert_int_eq(pkv_cache_create(NULL, &c), PKV_EINVAL);
  ck_assert_ptr_null(c);
  pkv_config_init(NULL); /* no crash */
  pkv_cache_destroy(NULL);
}
END_TEST

START_TEST(config_defaults_and_sizes) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  ck_assert_int_eq(cfg.dtype, PKV_DTYPE_F32);
  ck_assert_int_eq(cfg.storage, PKV_STORAGE_OWNED);
  ck_assert_str_eq(cfg.policy, "lru");
  ck_assert_uint_eq(pkv_dtype_size(PKV_DTYPE_F32), 4);
  ck_assert_uint_eq(pkv_dtype_size(PKV_DTYPE_F16), 2);
  ck_assert_uint_eq(pkv_dtype_size(PKV_DTYPE_BF16), 2);
  ck_assert_uint_eq(pkv_dtype_size(PKV_DTYPE_I8), 1);
  ck_assert_uint_eq(pkv_dtype_size(PKV_DTYPE_FP8_E5M2), 1);
  ck_assert_uint_eq(pkv_dtype_size((pkv_dtype)6), 0);
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 16);
  cfg.dtype = PKV_DTYPE_F16;
  /* 2 layers * 2 (K,V) * 2 heads * 16 slots * 4 dims * 2 bytes */
  ck_assert_uint_eq(pkv_config_block_bytes(&cfg), 2 * 2 * 2 * 16 * 4 * 2);
  ck_assert_uint_eq(pkv_config_block_bytes(NULL), 0);
  cfg.head_dim = 0;
  ck_assert_uint_eq(pkv_config_block_bytes(&cfg), 0);
}
END_TEST

START_TEST(config_memory_bytes) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 0, 16);
  uint64_t bb = pkv_config_block_bytes(&cfg);
  cfg.memory_bytes = bb * 37 + bb / 2;
  pkv_cache *c = tu_cache(&cfg);
  ck_assert_uint_eq(pkv_cache_config(c)->num_blocks, 37);
  ck_assert_str_eq(pkv_cache_config(c)->policy, "lru");
  pkv_stats st = tu_stats(c);
  ck_assert_uint_eq(st.blocks_free, 37);
  ck_assert_uint_eq(st.kv_bytes, 0);
  ck_assert_str_eq(st.policy, "lru");
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------ layout */

START_TEST(layout_owned) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 5, 3);
  cfg.dtype = PKV_DTYPE_BF16;
  cfg.head_dim = 5; /* odd sizes: regions must still be 64-aligned */
  pkv_cache *c = tu_cache(&cfg);
  pkv_kv_layout L;
  ck_assert_int_eq(pkv_cache_layout(c, &L), 0);
  ck_assert_uint_eq(L.elem_size, 2);
  ck_assert_uint_eq(L.slot_stride, 10);
  ck_assert_uint_eq(L.head_stride, 30);
  ck_assert_uint_eq(L.block_stride, 60);
  ck_assert_uint_eq(L.layer_bytes, 300);
  uint8_t *prev_end = NULL;
  for (uint32_t l = 0; l < cfg.n_layers; l++) {
    void *k, *v;
    ck_assert_int_eq(pkv_cache_kv(c, l, &k, &v), 0);
    ck_assert_uint_eq((uintptr_t)k % 64, 0);
    ck_assert_uint_eq((uintptr_t)v % 64, 0);
    ck_assert((uint8_t *)v >= (uint8_t *)k + L.layer_bytes);
    if (prev_end) ck_assert((uint8_t *)k >= prev_end);
    prev_end = (uint8_t *)v + L.layer_bytes;
    memset(k, 0x11, L.layer_bytes); /* whole regions are ours (ASan) */
    memset(v, 0x22, L.layer_bytes);
  }
  void *k, *v;
  ck_assert_int_eq(pkv_cache_kv(c, 2, &k, &v), PKV_ERANGE);
  ck_assert_int_eq(pkv_cache_kv(c, 0, NULL, &v), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_layout(c, NULL), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_layout(NULL, &L), PKV_EINVAL);
  pkv_stats st = tu_stats(c);
  ck_assert_uint_ge(st.kv_bytes, 4 * L.layer_bytes);
  TU_DONE(c);
}
END_TEST

START_TEST(layout_external) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_EXTERNAL, 5, 3);
  void *k, *v;
  ck_assert_int_eq(pkv_cache_kv(c, 0, &k, &v), PKV_ENOTSUP);
  pkv_kv_layout L;
  ck_assert_int_eq(pkv_cache_layout(c, &L), 0);
  ck_assert_uint_eq(L.block_stride, 2 * 3 * 4 * 4);
  pkv_cache_destroy(c);
}
END_TEST

/* ------------------------------------------------ errors */

START_TEST(error_names) {
  ck_assert_str_eq(pkv_err_name(PKV_EINVAL), "PKV_EINVAL");
  ck_assert_str_eq(pkv_err_name(PKV_ENOENT), "PKV_ENOENT");
  ck_assert_str_eq(pkv_err_name(0), "PKV_OK");
  ck_assert_str_eq(pkv_strerror(PKV_ENOSEQ),
                   "no such sequence (unknown, freed or stale handle)");
  ck_assert_str_eq(pkv_strerror(-100), "unknown error");
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  cfg.head_dim = 0;
  pkv_cache *c;
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), PKV_EINVAL);
  ck_assert_str_ne(pkv_last_error(), "");
  pkv_config_init(&cfg);
  ck_assert_uint_eq(pkv_dtype_size(PKV_DTYPE_F32), 4);
  /* A successful call clears the detail. */
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  c = tu_cache(&cfg);
  ck_assert_str_eq(pkv_last_error(), "");
  pkv_cache_destroy(c);
}
END_TEST

TU_MAIN("cache",
    {"config", 0, {{config_bad_fields, 0, (int)(sizeof bad_cfgs / sizeof bad_cfgs[0])},
                  {config_null_args}, {config_defaults_and_sizes}, {config_memory_bytes}}},
    {"layout", 0, {{layout_owned}, {layout_external}}},
    {"errors", 0, {{error_names}}})
