/*
 * check_abi.c — versions and the caller-filled structs' ABI (abi.c): the
 * sizes stay fixed within major 0, *_init sets the version, zeroed structs
 * count as version 1, reserved bytes must be zero, a newer caller's unknown
 * fields are refused unless zero, and an older caller's missing fields get
 * their defaults.  (tests/host/host_abi.c runs a caller compiled against a
 * frozen 0.1 copy of the structs; tests/host/abi_symbols.py checks the
 * exported symbols.)
 */
#include "tu_core.h"

#include "internal.h"
#include "pagedkv/engine.h"

#include <stdio.h>

START_TEST(version_numbers) {
  ck_assert_uint_eq(pkv_version(), PKV_VERSION_HEX);
  ck_assert_uint_eq(PKV_VERSION_HEX >> 16, PKV_VERSION_MAJOR);
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", PKV_VERSION_MAJOR, PKV_VERSION_MINOR,
           PKV_VERSION_PATCH);
  ck_assert_str_eq(pkv_version_string(), want);
}
END_TEST

/* The sizes of major version 0 on LP64: a new field must take reserved
 * space, never grow a struct (a caller's struct is the library's size). */
START_TEST(sizes_frozen) {
  ck_assert_uint_eq(sizeof(pkv_config), 168);
  ck_assert_uint_eq(sizeof(pkv_seq_opts), 64);
  ck_assert_uint_eq(sizeof(pkv_append), 88);
  ck_assert_uint_eq(sizeof(pkv_engine_config), 96);
  ck_assert_uint_eq(offsetof(pkv_config, version), 100);
  ck_assert_uint_eq(offsetof(pkv_config, host_tier_bytes), 112);
  ck_assert_uint_eq(offsetof(pkv_config, reserved), 128);
  ck_assert_uint_eq(offsetof(pkv_seq_opts, version), 28);
  ck_assert_uint_eq(offsetof(pkv_append, version), 52);
  ck_assert_uint_eq(offsetof(pkv_engine_config, version), 28);
}
END_TEST

/* The rules every versioned struct follows, tried through `attempt` (which
 * makes the call with the struct and undoes it on success): the current
 * version and version 0 are accepted; a set reserved byte is PKV_EINVAL; a
 * newer version is PKV_ENOTSUP while it sets a field this library does not
 * know, and accepted when that field is left zero. */
typedef int (*attempt_fn)(void *ctx);
static char attempt_err[256]; /* pkv_last_error() right after the call */
#define KEEP_ERROR() snprintf(attempt_err, sizeof attempt_err, "%s", pkv_last_error())

static void expect_version_rules(attempt_fn attempt, void *ctx, uint32_t *version,
                                 uint64_t *reserved, size_t n_reserved, uint32_t current) {
  ck_assert_uint_eq(*version, current); /* as *_init set it */
  for (size_t i = 0; i < n_reserved; i++) ck_assert_uint_eq(reserved[i], 0);
  ck_assert_int_eq(attempt(ctx), 0);
  *version = 0; /* a zeroed or {0}-initialized struct */
  ck_assert_int_eq(attempt(ctx), 0);
  *version = current;
  reserved[n_reserved - 1] = 1; /* not filled by *_init */
  ck_assert_int_eq(attempt(ctx), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(attempt_err, "reserved byte"));
  reserved[n_reserved - 1] = 0;
  *version = current + 1; /* a newer caller using a field of its version */
  reserved[0] = 7;
  ck_assert_int_eq(attempt(ctx), PKV_ENOTSUP);
  ck_assert_ptr_nonnull(strstr(attempt_err, "does not know"));
  reserved[0] = 0; /* ... or leaving it at its default */
  ck_assert_int_eq(attempt(ctx), 0);
}

typedef struct abi_ctx {
  pkv_config cfg;
  pkv_cache *cache;
  pkv_seq_opts opts;
  pkv_append req;
  pkv_engine_config ecfg;
} abi_ctx;

static int attempt_cache(void *p) {
  abi_ctx *x = p;
  pkv_cache *c = (pkv_cache *)x; /* must be reset to NULL on failure */
  int rc = pkv_cache_create(&x->cfg, &c);
  KEEP_ERROR();
  if (rc) {
    ck_assert_ptr_null(c);
    return rc;
  }
  ck_assert_uint_eq(pkv_cache_config(c)->version, PKV_CONFIG_VERSION);
  pkv_cache_destroy(c);
  return 0;
}

static int attempt_seq(void *p) {
  abi_ctx *x = p;
  pkv_stats before = tu_stats(x->cache);
  pkv_seq_id s;
  int rc = pkv_seq_create(x->cache, &x->opts, &s);
  KEEP_ERROR();
  if (rc) {
    pkv_stats after = tu_stats(x->cache);
    TU_STATS_SAME(before, after);
    return rc;
  }
  ck_assert_int_eq(pkv_seq_free(x->cache, s), 0);
  return 0;
}

static int attempt_append(void *p) {
  abi_ctx *x = p;
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(x->cache, NULL, &s), 0);
  pkv_delta d;
  int rc = pkv_seq_append_ex(x->cache, s, &x->req, &d);
  KEEP_ERROR();
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(x->cache, s, &info), 0);
  ck_assert_uint_eq(info.n_tokens, rc ? 0 : x->req.n_tokens);
  ck_assert_int_eq(pkv_seq_free(x->cache, s), 0);
  return rc;
}

static int attempt_engine(void *p) {
  abi_ctx *x = p;
  pkv_engine *e = (pkv_engine *)x;
  int rc = pkv_engine_create(x->cache, &x->ecfg, &e);
  KEEP_ERROR();
  if (rc) {
    ck_assert_ptr_null(e);
    return rc;
  }
  pkv_engine_destroy(e);
  return 0;
}

#define N_RESERVED(st) (sizeof (st).reserved / sizeof (st).reserved[0])

START_TEST(struct_versions) {
  abi_ctx x;
  tu_config(&x.cfg, PKV_STORAGE_OWNED, 8, 4);
  x.cfg.head_dim = 16; /* the engine's multiple of 16 */
  expect_version_rules(attempt_cache, &x, &x.cfg.version, x.cfg.reserved, N_RESERVED(x.cfg),
                       PKV_CONFIG_VERSION);
  x.cache = tu_cache(&x.cfg);
  pkv_seq_opts_init(&x.opts);
  x.opts.ns = "tenant";
  x.opts.ns_len = 6;
  expect_version_rules(attempt_seq, &x, &x.opts.version, x.opts.reserved, N_RESERVED(x.opts),
                       PKV_SEQ_OPTS_VERSION);
  pkv_seq_opts positional = {"ns", 2, 0, 10}; /* 0.1 callers' initializers */
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(x.cache, &positional, &s), 0);
  static const int32_t toks[6] = {1, 2, 3, 4, 5, 6};
  pkv_append_init(&x.req);
  x.req.tokens = toks;
  x.req.n_tokens = 6;
  expect_version_rules(attempt_append, &x, &x.req.version, x.req.reserved, 4,
                       PKV_APPEND_VERSION);
  pkv_engine_config_init(&x.ecfg);
  x.ecfg.n_q_heads = 2;
  expect_version_rules(attempt_engine, &x, &x.ecfg.version, x.ecfg.reserved, N_RESERVED(x.ecfg),
                       PKV_ENGINE_CONFIG_VERSION);
  TU_DONE(x.cache);
}
END_TEST

/* The rule itself on a struct at version 3 whose callers may be at 1 or 2:
 * an older caller's missing fields take the defaults, nothing else moves. */
typedef struct v3_struct {
  uint32_t a;       /* version 1 */
  uint32_t version; /* version 1 ends here */
  uint32_t b;       /* version 2 */
  uint32_t c;       /* version 3 */
  uint64_t reserved[2];
} v3_struct;

START_TEST(older_callers_get_defaults) {
  static const size_t ends[] = {offsetof(v3_struct, b), offsetof(v3_struct, c)};
  static const pkv__abi_struct t = PKV__ABI_STRUCT(v3_struct, "v3", 3, ends);
  const v3_struct def = {.a = 1, .b = 20, .c = 30, .version = 3};
  v3_struct out;
  v3_struct v1 = {.a = 5, .version = 1};
  ck_assert_int_eq(pkv__abi_in(&t, &out, &v1, &def), 0);
  ck_assert_uint_eq(out.a, 5);
  ck_assert_uint_eq(out.b, 20);
  ck_assert_uint_eq(out.c, 30);
  ck_assert_uint_eq(out.version, 3);
  v3_struct v2 = {.a = 6, .version = 2, .b = 7};
  ck_assert_int_eq(pkv__abi_in(&t, &out, &v2, &def), 0);
  ck_assert_uint_eq(out.a, 6);
  ck_assert_uint_eq(out.b, 7);
  ck_assert_uint_eq(out.c, 30);
  v3_struct v2_bad = {.a = 6, .version = 2, .b = 7, .c = 1}; /* c is not v2's */
  memset(&out, 0xAB, sizeof out);
  v3_struct untouched = out;
  ck_assert_int_eq(pkv__abi_in(&t, &out, &v2_bad, &def), PKV_EINVAL);
  ck_assert_int_eq(memcmp(&out, &untouched, sizeof out), 0);
  v3_struct v4 = {.a = 1, .version = 4, .reserved = {0, 1}};
  ck_assert_int_eq(pkv__abi_in(&t, &out, &v4, &def), PKV_ENOTSUP);
}
END_TEST

TU_MAIN("abi",
    {"versions", 0, {{version_numbers}, {sizes_frozen}}},
    {"structs", 0, {{struct_versions}, {older_callers_get_defaults}}})
