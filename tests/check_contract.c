/*
 * check_contract.c — promises of the API that an independent model of it
 * found broken (issue 12, items 14-16), one TCase each:
 *
 *   last_error   every public function clears pkv_last_error() on success;
 *                the reporters and the destroy functions keep it.  The list
 *                of functions is checked against the installed headers, so
 *                a new function without a row here fails the test.
 *   match_out    pkv_seq_match_prefix leaves *matched untouched on failure.
 *   policy_check pkv_check verifies the policy's state: each built-in's
 *                check hook catches a missed on_evictable.
 *   dedup_hook   on_hit means a prefix match; a commit dedup calls on_dedup
 *                (never on_hit), and LFU does not count a dedup as a use.
 *   generations  a slot (sequence or pin) whose generation would wrap is
 *                retired: a stale handle is refused forever.
 *
 * Run from the repository root (or set PKV_SRCDIR) for the header scan.
 */
#include "tu_core.h"
#include "pagedkv/engine.h"
#include "pagedkv/groups.h"

#include <stdio.h>
#include <stdlib.h>

int pkv__test_set_seq_gen(pkv_cache *cache, uint32_t slot, uint32_t gen);
int pkv__test_set_pin_gen(pkv_cache *cache, uint32_t slot, uint32_t gen);

#define HD 16

/* ------------------------------------------------------------ last_error */

typedef struct fx {
  pkv_cache *c;
  pkv_engine *e;
  pkv_seq_id live, freed, fresh;
  int32_t toks[64];
  float q[4 * 2 * HD], k[4 * 2 * HD], v[4 * 2 * HD], out[4 * 2 * HD];
} fx;

static void fx_up(fx *f) {
  memset(f, 0, sizeof *f);
  for (int i = 0; i < 4 * 2 * HD; i++) f->q[i] = f->k[i] = f->v[i] = 0.01f * (float)i;
  f->c = tu_fixture_cache(f->toks, &f->live, &f->freed);
  ck_assert_int_eq(pkv_seq_create(f->c, NULL, &f->fresh), 0);
  ck_assert_int_eq(pkv_seq_append(f->c, f->fresh, f->toks + 20, 4, NULL), 0);
  f->e = tu_fixture_engine(f->c);
}

static void fx_down(fx *f) {
  pkv_engine_destroy(f->e);
  pkv_cache_destroy(f->c);
}

/* A successful call of one public function. */
typedef struct ok_row {
  const char *fn;
  int (*run)(fx *f); /* 0 on success */
} ok_row;

#define OK(name) static int ok_##name(fx *f)
OK(config_init) { (void)f; pkv_config c; pkv_config_init(&c); return 0; }
OK(seq_opts_init) { (void)f; pkv_seq_opts o; pkv_seq_opts_init(&o); return 0; }
OK(append_init) { (void)f; pkv_append r; pkv_append_init(&r); return 0; }
OK(dtype_size) { (void)f; return pkv_dtype_size(PKV_DTYPE_F16) == 2 ? 0 : 1; }
OK(block_bytes) { return pkv_config_block_bytes(pkv_cache_config(f->c)) ? 0 : 1; }
OK(cache_config) { return pkv_cache_config(f->c) ? 0 : 1; }
OK(cache_create) {
  (void)f;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 4, 4);
  pkv_cache *c;
  int rc = pkv_cache_create(&cfg, &c);
  pkv_cache_destroy(c);
  /* destroy keeps the (empty) detail create left */
  return rc;
}
OK(layout) { pkv_kv_layout l; return pkv_cache_layout(f->c, &l); }
OK(kv) { void *k, *v; return pkv_cache_kv(f->c, 0, &k, &v); }
OK(seq_create) { pkv_seq_id s; return pkv_seq_create(f->c, NULL, &s); }
OK(seq_free) { return pkv_seq_free(f->c, f->fresh); }
OK(seq_append) { return pkv_seq_append(f->c, f->live, f->toks, 1, NULL); }
OK(seq_fork) { pkv_seq_id s; return pkv_seq_fork(f->c, f->live, &s); }
OK(seq_truncate) { return pkv_seq_truncate(f->c, f->live, 9); }
OK(seq_commit) { return pkv_seq_commit(f->c, f->live, 9); }
OK(seq_match) {
  pkv_seq_id s;
  uint32_t m;
  int rc = pkv_seq_create(f->c, NULL, &s);
  return rc ? rc : pkv_seq_match_prefix(f->c, s, f->toks, 10, 9, &m);
}
OK(seq_info) { pkv_seq_info i; return pkv_seq_info_get(f->c, f->live, &i); }
OK(seq_blocks) { int32_t b[8]; uint32_t n; return pkv_seq_blocks(f->c, f->live, b, 8, &n); }
OK(seq_priority) { return pkv_seq_set_priority(f->c, f->live, 0, 4, 50, 0); }
OK(pin_create) { pkv_pin_id p; return pkv_pin_create(f->c, f->live, 4, &p); }
OK(pin_release) {
  pkv_pin_id p;
  int rc = pkv_pin_create(f->c, f->live, 4, &p);
  if (rc) return rc;
  (void)pkv_seq_free(f->c, f->freed); /* sets the detail again */
  return pkv_pin_release(f->c, p);
}
OK(prefix_reset) { return pkv_prefix_reset(f->c); }
OK(block_table) {
  int32_t t[8], lens[1];
  return pkv_block_table(f->c, &f->live, 1, t, 8, lens);
}
OK(slot_mapping) { int64_t s[4]; return pkv_slot_mapping(f->c, f->live, 0, 4, s); }
OK(kv_csr) {
  int32_t indptr[2], idx[8], last[1];
  uint32_t n;
  return pkv_kv_csr(f->c, &f->live, 1, indptr, idx, 8, last, &n);
}
OK(drain) { pkv_copy q[2]; uint32_t n; return pkv_pool_drain_copies(f->c, q, 2, &n, NULL); }
OK(stats) { pkv_stats s; return pkv_stats_get(f->c, &s); }
OK(check) { return pkv_check(f->c, NULL, 0); }
OK(replace_allocator) { (void)f; return pkv_replace_allocator(NULL, NULL, NULL, NULL); }
OK(policy_find) { (void)f; return pkv_policy_find("lru") ? 0 : 1; }
OK(policy_names) { (void)f; return pkv_policy_names()[0] ? 0 : 1; }
OK(policy_register) {
  (void)f;
  static pkv_policy_ops ops;
  ops = tu_policy_lowest;
  ops.name = "contract-registered";
  return pkv_policy_register(&ops);
}
OK(prefix_probe) {
  int32_t blocks[4];
  uint32_t hit;
  return pkv_prefix_probe(f->c, NULL, f->toks, 10, 9, blocks, 4, &hit);
}
OK(append_ex) {
  pkv_append req = {.tokens = f->toks, .n_tokens = 2, .n_lookahead = 1};
  pkv_delta d;
  return pkv_seq_append_ex(f->c, f->fresh, &req, &d);
}
OK(commit_ex) {
  uint32_t n;
  pkv_remap r[4];
  return pkv_seq_commit_ex(f->c, f->live, 10, PKV_COMMIT_DEDUP, r, 4, &n);
}
OK(blocks_release) {
  /* A dedup remap leaves a deferred reference to release. */
  pkv_seq_id s;
  pkv_remap r[4];
  uint32_t n;
  int rc = pkv_seq_create(f->c, NULL, &s);
  if (!rc) rc = pkv_seq_append(f->c, s, f->toks, 8, NULL);
  if (!rc) rc = pkv_seq_commit_ex(f->c, s, 8, PKV_COMMIT_DEDUP, r, 4, &n);
  if (rc || n == 0) return rc ? rc : 1;
  (void)pkv_seq_free(f->c, f->freed); /* sets the detail again */
  return pkv_blocks_release(f->c, &r[0].old_block, 1);
}
OK(batch_append) {
  int64_t slot;
  return pkv_batch_append(f->c, &f->fresh, f->toks, 1, &slot, NULL);
}
OK(batch_free) { return pkv_batch_free(f->c, &f->fresh, 1, NULL); }
OK(batch_commit) {
  uint32_t n = 0;
  return pkv_batch_commit(f->c, &f->fresh, &n, 1, NULL);
}
OK(events_drain) {
  (void)f;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 4, 4);
  cfg.event_queue_cap = 8;
  pkv_cache *c = tu_cache(&cfg);
  pkv_event ev[2];
  uint32_t n;
  (void)pkv_seq_free(c, PKV_SEQ_NONE); /* sets the detail again */
  int rc = pkv_events_drain(c, ev, 2, &n, NULL);
  pkv_cache_destroy(c);
  return rc;
}
OK(capacity) { pkv_capacity cap; return pkv_cache_capacity(f->c, &cap); }
OK(evict) { return pkv_evict(f->c, 0); }
OK(redis_opts_init) { (void)f; pkv_redis_opts o; pkv_redis_opts_init(&o); return 0; }
OK(set_remote_tier) {
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  o.address = "127.0.0.1:1"; /* attaching connects to nothing yet */
  int rc = pkv_cache_set_remote_tier(f->c, &o);
  return rc ? rc : pkv_cache_set_remote_tier(f->c, NULL);
}
OK(remote_stats) {
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  o.address = "127.0.0.1:1";
  int rc = pkv_cache_set_remote_tier(f->c, &o);
  pkv_tier_stats st;
  (void)pkv_seq_free(f->c, PKV_SEQ_NONE); /* sets the detail again */
  if (!rc) rc = pkv_cache_remote_stats(f->c, &st);
  (void)pkv_cache_set_remote_tier(f->c, NULL);
  return rc;
}
OK(common_prefix) {
  pkv_seq_id seqs[2] = {f->live, f->fresh};
  uint32_t n;
  return pkv_common_prefix_blocks(f->c, seqs, 2, &n);
}
/* tiers, save, quotas (issue 14) */
OK(tier_stats_get) {
  (void)f;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  cfg.host_tier_bytes = 1 << 16;
  pkv_cache *c = tu_cache(&cfg);
  pkv_tier_stats st;
  (void)pkv_seq_free(c, PKV_SEQ_NONE); /* sets the detail again */
  int rc = pkv_tier_stats_get(c, PKV_TIER_HOST, &st);
  pkv_cache_destroy(c);
  return rc;
}
static char g_tmp[64];
static const char *tmp_dir(void) {
  if (!g_tmp[0]) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/pkv_contract_XXXXXX");
    if (!mkdtemp(g_tmp)) return "/nonexistent";
  }
  return g_tmp;
}
static void tmp_rm(void) {
  char cmd[128];
  if (!g_tmp[0]) return;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
  if (system(cmd) != 0) ck_abort_msg("cannot remove %s", g_tmp);
  g_tmp[0] = 0;
}
OK(set_file_tier) {
  char d[128];
  snprintf(d, sizeof d, "%s/tier", tmp_dir());
  int rc = pkv_cache_set_file_tier(f->c, d, 0);
  tmp_rm();
  return rc;
}
OK(tier_drain_copies) {
  pkv_tier_copy q[2];
  uint32_t n;
  return pkv_tier_drain_copies(f->c, q, 2, &n, NULL);
}
OK(cache_save) {
  int rc = pkv_cache_save(f->c, tmp_dir());
  tmp_rm();
  return rc;
}
OK(seq_save) {
  int rc = pkv_seq_save(f->c, f->live, tmp_dir());
  tmp_rm();
  return rc;
}
OK(cache_load) {
  int rc = pkv_cache_save(f->c, tmp_dir());
  (void)pkv_seq_free(f->c, PKV_SEQ_NONE);
  if (rc == 0) rc = pkv_cache_load(f->c, tmp_dir());
  tmp_rm();
  return rc;
}
OK(prefix_promote) {
  uint32_t n;
  return pkv_prefix_promote(f->c, NULL, f->toks, 8, 0, &n);
}
OK(ns_set_quota) { return pkv_ns_set_quota(f->c, NULL, 4, 1); }
OK(seq_list) { pkv_seq_id ids[8]; uint32_t n; return pkv_seq_list(f->c, ids, 8, &n); }
OK(seq_keep) { return pkv_seq_keep(f->c, f->live); }
OK(seq_remove_range) { return pkv_seq_remove_range(f->c, f->live, 1, 3); }
static const pkv_group_spec two[2] = {{PKV_ATTN_FULL, 0}, {PKV_ATTN_SLIDING, 4}};
OK(groups_create) {
  pkv_groups *g;
  int rc = pkv_groups_create(f->c, two, 2, 64, &g);
  pkv_groups_destroy(g);
  return rc;
}
/* Runs op on a fresh two-group request after setting the detail again. */
static int with_groups(fx *f, int op) {
  pkv_groups *g;
  pkv_seq_id ids[2];
  uint32_t x;
  int rc = pkv_groups_create(f->c, two, 2, 64, &g);
  if (!rc && op > 0) rc = pkv_groups_seq_create(g, NULL, ids);
  if (!rc && op > 1) rc = pkv_groups_append(g, ids, f->toks, 8, NULL);
  if (rc) return rc;
  (void)pkv_seq_free(f->c, f->freed); /* sets the detail again */
  switch (op) {
  case 0: { pkv_seq_id fresh[2]; rc = pkv_groups_seq_create(g, NULL, fresh); break; }
  case 1: rc = pkv_groups_append(g, ids, f->toks, 8, NULL); break;
  case 2: rc = pkv_groups_commit(g, ids, 8); break;
  case 3: rc = pkv_groups_first_pos(g, ids, 1, &x); break;
  case 4: rc = pkv_groups_seq_free(g, ids); break;
  case 6: {
    int32_t b[4];
    (void)pkv_groups_commit(g, ids, 8);
    (void)pkv_seq_free(f->c, f->freed);
    rc = pkv_groups_probe(g, NULL, f->toks, 9, 0, b, 2, &x);
    break;
  }
  case 7: {
    pkv_append r;
    pkv_delta d[2];
    pkv_append_init(&r);
    r.tokens = f->toks + 8;
    r.n_tokens = 1;
    r.n_lookahead = 2;
    rc = pkv_groups_append_ex(g, ids, &r, d);
    break;
  }
  default: {
    pkv_seq_id m[2];
    rc = pkv_groups_seq_create(g, NULL, m);
    (void)pkv_seq_free(f->c, f->freed);
    if (!rc) rc = pkv_groups_match(g, m, f->toks, 8, 0, &x);
  }
  }
  pkv_groups_destroy(g);
  return rc;
}
OK(groups_seq_create) { return with_groups(f, 0); }
OK(groups_append) { return with_groups(f, 1); }
OK(groups_commit) { return with_groups(f, 2); }
OK(groups_first_pos) { return with_groups(f, 3); }
OK(groups_seq_free) { return with_groups(f, 4); }
OK(groups_match) { return with_groups(f, 5); }
OK(groups_probe) { return with_groups(f, 6); }
OK(groups_append_ex) { return with_groups(f, 7); }
OK(engine_config_init) { (void)f; pkv_engine_config e; pkv_engine_config_init(&e); return 0; }
OK(engine_create) {
  pkv_engine_config ec;
  pkv_engine_config_init(&ec);
  ec.n_q_heads = 2;
  pkv_engine *e;
  int rc = pkv_engine_create(f->c, &ec, &e);
  pkv_engine_destroy(e);
  return rc;
}
OK(engine_backend) { return pkv_engine_backend(f->e)[0] ? 0 : 1; }
OK(engine_bf16) { return pkv_engine_uses_bf16_dot(f->e) >= 0 ? 0 : 1; }
OK(prefill) { return pkv_prefill(f->e, f->fresh, 0, 0, 4, f->q, f->k, f->v, f->out); }
OK(decode) { return pkv_decode(f->e, &f->fresh, 1, 0, f->q, f->k, f->v, f->out); }

static const ok_row ok_rows[] = {
    {"pkv_config_init", ok_config_init},
    {"pkv_seq_opts_init", ok_seq_opts_init},
    {"pkv_append_init", ok_append_init},
    {"pkv_dtype_size", ok_dtype_size},
    {"pkv_config_block_bytes", ok_block_bytes},
    {"pkv_cache_config", ok_cache_config},
    {"pkv_cache_create", ok_cache_create},
    {"pkv_cache_layout", ok_layout},
    {"pkv_cache_kv", ok_kv},
    {"pkv_seq_create", ok_seq_create},
    {"pkv_seq_free", ok_seq_free},
    {"pkv_seq_append", ok_seq_append},
    {"pkv_seq_fork", ok_seq_fork},
    {"pkv_seq_truncate", ok_seq_truncate},
    {"pkv_seq_commit", ok_seq_commit},
    {"pkv_seq_match_prefix", ok_seq_match},
    {"pkv_seq_info_get", ok_seq_info},
    {"pkv_seq_blocks", ok_seq_blocks},
    {"pkv_seq_set_priority", ok_seq_priority},
    {"pkv_pin_create", ok_pin_create},
    {"pkv_pin_release", ok_pin_release},
    {"pkv_prefix_reset", ok_prefix_reset},
    {"pkv_block_table", ok_block_table},
    {"pkv_slot_mapping", ok_slot_mapping},
    {"pkv_kv_csr", ok_kv_csr},
    {"pkv_pool_drain_copies", ok_drain},
    {"pkv_stats_get", ok_stats},
    {"pkv_check", ok_check},
    {"pkv_replace_allocator", ok_replace_allocator},
    {"pkv_policy_find", ok_policy_find},
    {"pkv_policy_names", ok_policy_names},
    {"pkv_policy_register", ok_policy_register},
    {"pkv_prefix_probe", ok_prefix_probe},
    {"pkv_seq_append_ex", ok_append_ex},
    {"pkv_groups_probe", ok_groups_probe},
    {"pkv_groups_append_ex", ok_groups_append_ex},
    {"pkv_seq_commit_ex", ok_commit_ex},
    {"pkv_blocks_release", ok_blocks_release},
    {"pkv_batch_append", ok_batch_append},
    {"pkv_batch_free", ok_batch_free},
    {"pkv_batch_commit", ok_batch_commit},
    {"pkv_events_drain", ok_events_drain},
    {"pkv_cache_capacity", ok_capacity},
    {"pkv_evict", ok_evict},
    {"pkv_redis_opts_init", ok_redis_opts_init},
    {"pkv_cache_set_remote_tier", ok_set_remote_tier},
    {"pkv_cache_remote_stats", ok_remote_stats},
    {"pkv_common_prefix_blocks", ok_common_prefix},
    {"pkv_tier_stats_get", ok_tier_stats_get},
    {"pkv_cache_set_file_tier", ok_set_file_tier},
    {"pkv_tier_drain_copies", ok_tier_drain_copies},
    {"pkv_cache_save", ok_cache_save},
    {"pkv_seq_save", ok_seq_save},
    {"pkv_cache_load", ok_cache_load},
    {"pkv_ns_set_quota", ok_ns_set_quota},
    {"pkv_prefix_promote", ok_prefix_promote},
    {"pkv_seq_list", ok_seq_list},
    {"pkv_seq_keep", ok_seq_keep},
    {"pkv_seq_remove_range", ok_seq_remove_range},
    {"pkv_groups_create", ok_groups_create},
    {"pkv_groups_seq_create", ok_groups_seq_create},
    {"pkv_groups_append", ok_groups_append},
    {"pkv_groups_commit", ok_groups_commit},
    {"pkv_groups_first_pos", ok_groups_first_pos},
    {"pkv_groups_seq_free", ok_groups_seq_free},
    {"pkv_groups_match", ok_groups_match},
    {"pkv_engine_config_init", ok_engine_config_init},
    {"pkv_engine_create", ok_engine_create},
    {"pkv_engine_backend", ok_engine_backend},
    {"pkv_engine_uses_bf16_dot", ok_engine_bf16},
    {"pkv_prefill", ok_prefill},
    {"pkv_decode", ok_decode},
};
#define N_OK (sizeof ok_rows / sizeof ok_rows[0])

/* Functions that leave pkv_last_error() as it is, and why: the reporters
 * and version queries (so `printf("%s: %s", pkv_strerror(rc),
 * pkv_last_error())` works in any
 * evaluation order) and the destroy functions, which cannot fail (so a
 * caller can clean up after a failed call, then report). */
static const char *const keeps[] = {"pkv_strerror", "pkv_err_name",
                                    "pkv_last_error", "pkv_version",
                                    "pkv_version_string", "pkv_cache_destroy",
                                    "pkv_engine_destroy", "pkv_groups_destroy"};
#define N_KEEPS (sizeof keeps / sizeof keeps[0])

static void provoke(fx *f) {
  ck_assert_int_eq(pkv_seq_free(f->c, f->freed), PKV_ENOSEQ);
  ck_assert(pkv_last_error()[0] != '\0');
}

START_TEST(cleared_on_success) {
  const ok_row *r = &ok_rows[_i];
  fx f;
  fx_up(&f);
  provoke(&f);
  int rc = r->run(&f);
  ck_assert_msg(rc == 0, "%s: setup call failed: %s", r->fn, pkv_last_error());
  ck_assert_msg(pkv_last_error()[0] == '\0', "%s succeeded but left \"%s\"",
                r->fn, pkv_last_error());
  fx_down(&f);
}
END_TEST

START_TEST(kept_by_reporters_and_destroy) {
  fx f;
  fx_up(&f);
  provoke(&f);
  char before[256];
  snprintf(before, sizeof before, "%s", pkv_last_error());
  (void)pkv_strerror(PKV_ENOSEQ);
  (void)pkv_err_name(PKV_ENOSEQ);
  (void)pkv_last_error();
  pkv_engine_destroy(f.e);
  pkv_cache_destroy(f.c);
  ck_assert_str_eq(pkv_last_error(), before);
}
END_TEST

/* Every PKV_API function of the headers has a row above or is in keeps. */
START_TEST(every_function_listed) {
  const char *dir = getenv("PKV_SRCDIR") ? getenv("PKV_SRCDIR") : ".";
  const char *hdrs[] = {"pagedkv.h", "policy.h", "engine.h", "groups.h"};
  int seen = 0;
  for (size_t h = 0; h < 4; h++) {
    char path[512];
    snprintf(path, sizeof path, "%s/include/pagedkv/%s", dir, hdrs[h]);
    FILE *fp = fopen(path, "r");
    ck_assert_msg(fp != NULL, "cannot read %s (run from the repo root or set "
                  "PKV_SRCDIR)", path);
    char line[512];
    while (fgets(line, sizeof line, fp)) {
      if (strncmp(line, "PKV_API ", 8) != 0) continue;
      char *p = strstr(line, "pkv_");
      while (p && (p[-1] == '*' || p[-1] == ' ') && strchr(p, '(') &&
             strcspn(p, "(") > strcspn(p, " ;"))
        p = strstr(p + 1, "pkv_"); /* skip a pkv_ return type */
      ck_assert_msg(p != NULL, "%s: cannot parse: %s", path, line);
      char name[128];
      size_t len = strcspn(p, "(");
      ck_assert_uint_lt(len, sizeof name);
      memcpy(name, p, len);
      name[len] = '\0';
      bool found = false;
      for (size_t i = 0; i < N_OK && !found; i++) found = strcmp(ok_rows[i].fn, name) == 0;
      for (size_t i = 0; i < N_KEEPS && !found; i++) found = strcmp(keeps[i], name) == 0;
      ck_assert_msg(found, "%s: %s has no row in check_contract.c: does it "
                    "clear pkv_last_error() on success?", hdrs[h], name);
      seen++;
    }
    fclose(fp);
  }
  ck_assert_int_ge(seen, (int)(N_OK + N_KEEPS));
}
END_TEST

/* ------------------------------------------------------------ match_out */

START_TEST(match_leaves_matched_on_failure) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 16, 4);
  int32_t t[16];
  for (int i = 0; i < 16; i++) t[i] = i;
  pkv_seq_id a, b;
  a = tu_seq_new(c, t, 16);
  ck_assert_int_eq(pkv_seq_commit(c, a, 16), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &b), 0);
  uint32_t matched = 777;
  int failures = 0;
  for (long k = 1; k < 50; k++) {
    tu_alloc_install(k);
    matched = 777;
    int rc = pkv_seq_match_prefix(c, b, t, 16, 15, &matched);
    tu_alloc_install(0);
    if (rc == 0) break;
    ck_assert_int_eq(rc, PKV_ENOMEM);
    ck_assert_uint_eq(matched, 777);
    failures++;
  }
  ck_assert_int_gt(failures, 0);
  ck_assert_uint_eq(matched, 12);
  /* The other refusals leave it too. */
  matched = 777;
  ck_assert_int_eq(pkv_seq_match_prefix(c, b, t, 16, 15, &matched), PKV_ESTATE);
  ck_assert_uint_eq(matched, 777);
  ck_assert_int_eq(pkv_seq_free(c, b), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, b, t, 16, 15, &matched), PKV_ENOSEQ);
  ck_assert_uint_eq(matched, 777);
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------------------ policy_check */

/* A built-in with one hook sabotaged: on_evictable forgets every third
 * block it is told of.  The built-in's own check must notice. */
static const pkv_policy_ops *wrapped;
static unsigned sabotage_count;
static void sabotaged_on_evictable(void *st, int32_t b, const pkv_block_meta *m) {
  if (++sabotage_count % 3 == 0) return;
  wrapped->on_evictable(st, b, m);
}

static const char *const builtin_names[] = {"lru", "fifo", "lfu", "s3fifo",
                                            "priority", "fwlru"};

/* Four sequences of 2 blocks each, committed and freed (8 evictable
 * blocks); returns after how many rounds pkv_check failed, each failure's
 * message containing `want` (NULL: none may fail). */
static int cached_rounds(const pkv_config *cfg, const char *want) {
  pkv_cache *c = tu_cache(cfg);
  int32_t t[8];
  char msg[256];
  int bad = 0;
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < 8; i++) t[i] = 100 * round + i;
    pkv_seq_id s = tu_seq_new(c, t, 8);
    ck_assert_int_eq(pkv_seq_commit(c, s, 8), 0);
    ck_assert_int_eq(pkv_seq_free(c, s), 0);
    if (pkv_check(c, msg, sizeof msg) != 0) {
      bad++;
      ck_assert_msg(want && strstr(msg, want) != NULL, "%s", msg);
    }
  }
  pkv_cache_destroy(c);
  return bad;
}

START_TEST(builtin_check_catches_missed_hook) {
  wrapped = pkv_policy_find(builtin_names[_i]);
  ck_assert_ptr_nonnull(wrapped);
  ck_assert_int_eq(wrapped->version, PKV_POLICY_VERSION);
  ck_assert_ptr_nonnull(wrapped->check);
  pkv_policy_ops ops = *wrapped;
  ops.name = "sabotaged";
  ops.on_evictable = sabotaged_on_evictable;
  sabotage_count = 0;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 16, 4);
  cfg.policy_ops = &ops;
  ck_assert_msg(cached_rounds(&cfg, "policy 'sabotaged'") > 0, "%s: a policy "
                "that missed on_evictable passed pkv_check", builtin_names[_i]);
  /* The unsabotaged built-in passes the same run. */
  cfg.policy_ops = wrapped;
  ck_assert_int_eq(cached_rounds(&cfg, NULL), 0);
}
END_TEST

/* ------------------------------------------------------------ dedup_hook */

static unsigned hits, dedups;
static void count_hit(void *st, int32_t b, const pkv_block_meta *m) {
  hits++;
  wrapped->on_hit(st, b, m);
}
static void count_dedup(void *st, int32_t b, const pkv_block_meta *m) {
  dedups++;
  if (wrapped->on_dedup) wrapped->on_dedup(st, b, m);
}

/* Commit dedup is opt-in (stable tables by default): ask for it, and drop
 * the replaced block at once. */
#define DEDUP (PKV_COMMIT_DEDUP | PKV_COMMIT_RELEASE_NOW)

/* Two sequences compute the same 2 blocks; the second's commit dedups
 * into the first's.  Then a match reuses them. */
START_TEST(dedup_is_not_a_hit) {
  wrapped = pkv_policy_find(builtin_names[_i]);
  pkv_policy_ops ops = *wrapped;
  ops.name = "counting";
  ops.on_hit = count_hit;
  ops.on_dedup = count_dedup;
  hits = dedups = 0;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 16, 4);
  cfg.policy_ops = &ops;
  pkv_cache *c = tu_cache(&cfg);
  int32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  pkv_seq_id a, b, m;
  a = tu_seq_new(c, t, 8);
  ck_assert_int_eq(pkv_seq_commit(c, a, 8), 0);
  b = tu_seq_new(c, t, 8);
  ck_assert_int_eq(pkv_seq_commit_ex(c, b, 8, DEDUP, NULL, 0, NULL), 0);
  ck_assert_uint_eq(tu_stats(c).dedup_blocks, 2);
  ck_assert_uint_eq(dedups, 2);
  ck_assert_uint_eq(hits, 0);
  uint32_t matched;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &m), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, m, t, 8, 0, &matched), 0);
  ck_assert_uint_eq(matched, 8);
  ck_assert_uint_eq(hits, 2);
  ck_assert_uint_eq(dedups, 2);
  TU_DONE(c);
}
END_TEST

/* LFU counts uses by prefix hits only: a block deduplicated many times
 * (recomputed content) is still "used once" and goes before a block that
 * one match reused. */
START_TEST(lfu_ignores_dedups) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  cfg.policy = "lfu";
  pkv_cache *c = tu_cache(&cfg);
  int32_t x[4] = {1, 2, 3, 4}, y[4] = {5, 6, 7, 8}, z[4] = {9, 9, 9, 9};
  pkv_seq_id sx, sy, s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &sx), 0); /* X: cached, in use */
  ck_assert_int_eq(pkv_seq_append(c, sx, x, 4, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(c, sx, 4), 0);
  for (int i = 0; i < 5; i++) { /* X recomputed and deduplicated 5 times */
    s = tu_seq_new(c, x, 4);
    ck_assert_int_eq(pkv_seq_commit_ex(c, s, 4, DEDUP, NULL, 0, NULL), 0);
    ck_assert_int_eq(pkv_seq_free(c, s), 0);
  }
  ck_assert_uint_eq(tu_stats(c).dedup_blocks, 5);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &sy), 0); /* Y: matched once */
  ck_assert_int_eq(pkv_seq_append(c, sy, y, 4, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(c, sy, 4), 0);
  ck_assert_int_eq(pkv_seq_free(c, sy), 0);
  uint32_t matched;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &sy), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, sy, y, 4, 0, &matched), 0);
  ck_assert_uint_eq(matched, 4);
  ck_assert_int_eq(pkv_seq_free(c, sy), 0);
  ck_assert_int_eq(pkv_seq_free(c, sx), 0); /* X released last */
  /* Fill the pool: the 6 free blocks, then one eviction. */
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  for (int i = 0; i < 7; i++) ck_assert_int_eq(pkv_seq_append(c, s, z, 4, NULL), 0);
  ck_assert_uint_eq(tu_stats(c).evictions, 1);
  pkv_seq_id probe;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &probe), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, probe, y, 4, 0, &matched), 0);
  ck_assert_uint_eq(matched, 4); /* Y (2 uses) stayed */
  ck_assert_int_eq(pkv_seq_free(c, probe), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &probe), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, probe, x, 4, 0, &matched), 0);
  ck_assert_uint_eq(matched, 0); /* X (1 use, 5 dedups) went */
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------------------ generations */

START_TEST(seq_slot_retired_before_wrap) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 8, 4);
  pkv_seq_id first, h1, h2, next;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &first), 0);
  ck_assert_uint_eq(first & 0xffffffffu, 1); /* slot 0 */
  ck_assert_int_eq(pkv_seq_free(c, first), 0);
  ck_assert_int_eq(pkv__test_set_seq_gen(c, 0, UINT32_MAX - 1), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &h1), 0);
  ck_assert_uint_eq(h1, ((uint64_t)(UINT32_MAX - 1) << 32) | 1);
  ck_assert_int_eq(pkv_seq_free(c, h1), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, &h2), 0);
  ck_assert_uint_eq(h2, ((uint64_t)UINT32_MAX << 32) | 1);
  ck_assert_int_eq(pkv_seq_free(c, h2), 0); /* the last generation: retired */
  TU_CHECK(c);
  /* Slot 0 is never handed out again, however many sequences come. */
  for (int i = 0; i < 100; i++) {
    ck_assert_int_eq(pkv_seq_create(c, NULL, &next), 0);
    ck_assert_uint_ne(next & 0xffffffffu, 1);
    ck_assert_int_eq(pkv_seq_free(c, next), 0);
  }
  pkv_seq_id stale[] = {first, h1, h2, ((uint64_t)1 << 32) | 1, 1};
  for (size_t i = 0; i < 5; i++) {
    pkv_seq_info info;
    ck_assert_int_eq(pkv_seq_info_get(c, stale[i], &info), PKV_ENOSEQ);
    ck_assert_int_eq(pkv_seq_free(c, stale[i]), PKV_ENOSEQ);
  }
  ck_assert_int_eq(pkv__test_set_seq_gen(c, 0, 5), PKV_ESTATE); /* retired */
  TU_DONE(c);
}
END_TEST

START_TEST(pin_slot_retired_before_wrap) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 8, 4);
  int32_t t[4] = {1, 2, 3, 4};
  pkv_seq_id s = tu_seq_new(c, t, 4);
  ck_assert_int_eq(pkv_seq_commit(c, s, 4), 0);
  pkv_pin_id first, last, next;
  ck_assert_int_eq(pkv_pin_create(c, s, 4, &first), 0);
  ck_assert_uint_eq(first, ((uint64_t)1 << 32) | 1);
  ck_assert_int_eq(pkv_pin_release(c, first), 0);
  ck_assert_int_eq(pkv__test_set_pin_gen(c, 0, UINT32_MAX - 1), 0);
  ck_assert_int_eq(pkv_pin_create(c, s, 4, &last), 0);
  ck_assert_uint_eq(last, ((uint64_t)UINT32_MAX << 32) | 1);
  ck_assert_int_eq(pkv_pin_release(c, last), 0); /* wraps: retired */
  for (int i = 0; i < 10; i++) {
    ck_assert_int_eq(pkv_pin_create(c, s, 4, &next), 0);
    ck_assert_uint_ne(next & 0xffffffffu, 1);
    ck_assert_int_eq(pkv_pin_release(c, next), 0);
  }
  ck_assert_int_eq(pkv_pin_release(c, first), PKV_ENOENT);
  ck_assert_int_eq(pkv_pin_release(c, last), PKV_ENOENT);
  ck_assert_int_eq(pkv__test_set_pin_gen(c, 0, 2), PKV_ESTATE);
  TU_DONE(c);
}
END_TEST

TU_MAIN("contract",
    {"last_error", 0, {{cleared_on_success, 0, (int)N_OK}, {kept_by_reporters_and_destroy},
                      {every_function_listed}}},
    {"match_out", 0, {{match_leaves_matched_on_failure}}},
    {"policy_check", 0, {{builtin_check_catches_missed_hook, 0, 6}}},
    {"dedup_hook", 0, {{dedup_is_not_a_hit, 0, 6}, {lfu_ignores_dedups}}},
    {"generations", 0, {{seq_slot_retired_before_wrap}, {pin_slot_retired_before_wrap}}})
