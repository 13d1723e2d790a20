/*
 * check_misuse.c — every public function, given bad input.
 *
 * One table row per (function, bad input): the call runs on a fresh
 * fixture (an owned cache with a live sequence, a freed one, a pin and an
 * engine), and must return the expected PKV_E* code, say what was wrong in
 * pkv_last_error(), and leave the stats byte-for-byte and every invariant
 * as they were.  With PKV_MISUSE_TABLE=FILE the test writes the table it
 * checked — function, input, code, message — as Markdown for
 * docs/RELIABILITY.md, so the document shows what the library really says.
 */
#include "tu_core.h"
#include "pagedkv/engine.h"

#include <stdio.h>
#include <stdlib.h>

#define HD 16

typedef struct fx {
  pkv_cache *c;
  pkv_engine *e;
  pkv_seq_id live, freed, empty;
  pkv_pin_id pin, released_pin;
  int32_t toks[64];
  float q[64 * 2 * HD], k[64 * 2 * HD], v[64 * 2 * HD], out[64 * 2 * HD];
} fx;

static void fx_up(fx *f) {
  memset(f, 0, sizeof *f);
  f->c = tu_fixture_cache(f->toks, &f->live, &f->freed);
  ck_assert_int_eq(pkv_seq_create(f->c, NULL, &f->empty), 0);
  ck_assert_int_eq(pkv_pin_create(f->c, f->live, 4, &f->pin), 0);
  ck_assert_int_eq(pkv_pin_create(f->c, f->live, 4, &f->released_pin), 0);
  ck_assert_int_eq(pkv_pin_release(f->c, f->released_pin), 0);
  f->e = tu_fixture_engine(f->c);
}

static void fx_down(fx *f) {
  pkv_engine_destroy(f->e);
  pkv_cache_destroy(f->c);
}

#define ROW(name) static int name(fx *f)
#define UNUSED (void)f

/* ---- cache */
ROW(create_null_cfg) { UNUSED; pkv_cache *c; return pkv_cache_create(NULL, &c); }
/* A small valid config with one field changed by `set`; creates (and
 * destroys, should it succeed) a cache from it. */
static int create_with(void (*set)(pkv_config *)) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  set(&cfg);
  pkv_cache *c = NULL;
  int rc = pkv_cache_create(&cfg, &c);
  pkv_cache_destroy(c); /* keeps pkv_last_error() */
  return rc;
}
static void set_zero_heads(pkv_config *c) { c->n_kv_heads = 0; }
static void set_bad_policy(pkv_config *c) { c->policy = "mru"; }
static void set_bad_args(pkv_config *c) { c->policy_args = "bogus=1"; }
static void set_huge(pkv_config *c) {
  c->n_layers = c->n_kv_heads = c->head_dim = 4096;
  c->block_size = 65536;
  c->num_blocks = 0;
  c->memory_bytes = UINT64_MAX;
}
ROW(create_null_out) {
  UNUSED;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, 4);
  return pkv_cache_create(&cfg, NULL);
}
ROW(create_zero_heads) { UNUSED; return create_with(set_zero_heads); }
ROW(create_bad_policy) { UNUSED; return create_with(set_bad_policy); }
ROW(create_bad_policy_args) { UNUSED; return create_with(set_bad_args); }
ROW(create_huge) { UNUSED; return create_with(set_huge); }
ROW(layout_null) { return pkv_cache_layout(f->c, NULL); }
ROW(kv_layer) { void *k, *v; return pkv_cache_kv(f->c, 2, &k, &v); }
ROW(kv_null) { void *v; return pkv_cache_kv(f->c, 0, NULL, &v); }
/* ---- sequences */
ROW(seq_create_ns) {
  pkv_seq_opts o = {NULL, 5, 0, 0};
  pkv_seq_id s;
  return pkv_seq_create(f->c, &o, &s);
}
ROW(seq_create_prio) {
  pkv_seq_opts o = {NULL, 0, 0, 200};
  pkv_seq_id s;
  return pkv_seq_create(f->c, &o, &s);
}
ROW(seq_free_stale) { return pkv_seq_free(f->c, f->freed); }
ROW(seq_free_zero) { return pkv_seq_free(f->c, PKV_SEQ_NONE); }
ROW(seq_free_forged) { return pkv_seq_free(f->c, f->live + ((uint64_t)5 << 32)); }
ROW(append_stale) { return pkv_seq_append(f->c, f->freed, f->toks, 1, NULL); }
ROW(append_zero) { return pkv_seq_append(f->c, f->live, f->toks, 0, NULL); }
ROW(append_null) { return pkv_seq_append(f->c, f->live, NULL, 3, NULL); }
ROW(append_oversize) {
  static int32_t big[40 * 4];
  return pkv_seq_append(f->c, f->live, big, 40 * 4, NULL);
}
ROW(append_null_cache) { return pkv_seq_append(NULL, f->live, f->toks, 1, NULL); }
ROW(fork_stale) { pkv_seq_id c; return pkv_seq_fork(f->c, f->freed, &c); }
ROW(fork_null) { return pkv_seq_fork(f->c, f->live, NULL); }
ROW(truncate_past) { return pkv_seq_truncate(f->c, f->live, 11); }
ROW(truncate_stale) { return pkv_seq_truncate(f->c, f->freed, 0); }
ROW(commit_past) { return pkv_seq_commit(f->c, f->live, 11); }
ROW(commit_back) { return pkv_seq_commit(f->c, f->live, 7); }
ROW(match_nonempty) {
  uint32_t m;
  return pkv_seq_match_prefix(f->c, f->live, f->toks, 8, 0, &m);
}
ROW(match_null_tokens) {
  uint32_t m;
  return pkv_seq_match_prefix(f->c, f->empty, NULL, 8, 0, &m);
}
ROW(match_null_out) { return pkv_seq_match_prefix(f->c, f->empty, f->toks, 8, 0, NULL); }
ROW(match_stale) {
  uint32_t m;
  return pkv_seq_match_prefix(f->c, f->freed, f->toks, 8, 0, &m);
}
ROW(info_stale) { pkv_seq_info i; return pkv_seq_info_get(f->c, f->freed, &i); }
ROW(info_null) { return pkv_seq_info_get(f->c, f->live, NULL); }
ROW(blocks_small) { int32_t b[1]; uint32_t n; return pkv_seq_blocks(f->c, f->live, b, 1, &n); }
ROW(blocks_null) { uint32_t n; return pkv_seq_blocks(f->c, f->live, NULL, 4, &n); }
ROW(prio_empty) { return pkv_seq_set_priority(f->c, f->live, 4, 4, 50, 0); }
ROW(prio_big) { return pkv_seq_set_priority(f->c, f->live, 0, 4, 101, 0); }
ROW(prio_stale) { return pkv_seq_set_priority(f->c, f->freed, 0, 4, 50, 0); }
/* ---- pins */
ROW(pin_uncommitted) { pkv_pin_id p; return pkv_pin_create(f->c, f->live, 9, &p); }
ROW(pin_partial) { pkv_pin_id p; return pkv_pin_create(f->c, f->live, 3, &p); }
ROW(pin_stale_seq) { pkv_pin_id p; return pkv_pin_create(f->c, f->freed, 4, &p); }
ROW(pin_null) { return pkv_pin_create(f->c, f->live, 4, NULL); }
ROW(pin_release_twice) { return pkv_pin_release(f->c, f->released_pin); }
ROW(pin_release_forged) { return pkv_pin_release(f->c, f->pin + ((uint64_t)2 << 32)); }
/* ---- exports */
ROW(table_narrow) {
  int32_t t[2];
  return pkv_block_table(f->c, &f->live, 1, t, 2, NULL);
}
ROW(table_stale) {
  int32_t t[8];
  pkv_seq_id s[2] = {f->live, f->freed};
  return pkv_block_table(f->c, s, 2, t, 4, NULL);
}
ROW(table_null) { return pkv_block_table(f->c, &f->live, 1, NULL, 4, NULL); }
ROW(slots_past) { int64_t s[16]; return pkv_slot_mapping(f->c, f->live, 0, 11, s); }
ROW(slots_reversed) { int64_t s[16]; return pkv_slot_mapping(f->c, f->live, 5, 2, s); }
ROW(slots_null) { return pkv_slot_mapping(f->c, f->live, 0, 4, NULL); }
ROW(csr_small) {
  int32_t ip[2], ind[2], last[1];
  uint32_t n;
  return pkv_kv_csr(f->c, &f->live, 1, ip, ind, 2, last, &n);
}
ROW(csr_null) {
  int32_t ind[8], last[1];
  uint32_t n;
  return pkv_kv_csr(f->c, &f->live, 1, NULL, ind, 8, last, &n);
}
ROW(drain_null) { pkv_copy q[1]; return pkv_pool_drain_copies(f->c, q, 1, NULL, NULL); }
ROW(drain_null_buf) { uint32_t n; return pkv_pool_drain_copies(f->c, NULL, 4, &n, NULL); }
/* ---- whole cache */
ROW(reset_null) { UNUSED; return pkv_prefix_reset(NULL); }
ROW(stats_null) { return pkv_stats_get(f->c, NULL); }
ROW(check_null) { UNUSED; char m[8]; return pkv_check(NULL, m, sizeof m); }
ROW(allocator_partial) { UNUSED; return pkv_replace_allocator(malloc, NULL, NULL, free); }
/* ---- policies */
static int noop_create(void **s, uint32_t n, const char *a) { (void)n; (void)a; *s = NULL; return 0; }
ROW(policy_register_hooks) {
  UNUSED;
  static const pkv_policy_ops ops = {.version = PKV_POLICY_VERSION,
                                     .name = "misuse-nohooks",
                                     .create = noop_create};
  return pkv_policy_register(&ops);
}
ROW(policy_register_version) {
  UNUSED;
  static const pkv_policy_ops ops = {.version = 99, .name = "misuse-v99"};
  return pkv_policy_register(&ops);
}
ROW(policy_register_taken) { UNUSED; return pkv_policy_register(pkv_policy_find("lru")); }
ROW(policy_register_null) { UNUSED; return pkv_policy_register(NULL); }
/* ---- engine */
ROW(engine_external) {
  UNUSED;
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, 8, 4);
  cfg.head_dim = HD;
  pkv_cache *c = tu_cache(&cfg);
  pkv_engine_config ec;
  pkv_engine_config_init(&ec);
  ec.n_q_heads = 2;
  pkv_engine *e;
  int rc = pkv_engine_create(c, &ec, &e);
  pkv_cache_destroy(c); /* keeps pkv_last_error() */
  return rc;
}
static int engine_with(fx *f, uint32_t q_heads, const char *backend,
                       float scale) {
  pkv_engine_config ec;
  pkv_engine_config_init(&ec);
  ec.n_q_heads = q_heads;
  ec.backend = backend;
  ec.scale = scale;
  pkv_engine *e = NULL;
  int rc = pkv_engine_create(f->c, &ec, &e);
  pkv_engine_destroy(e);
  return rc;
}
ROW(engine_heads) { return engine_with(f, 3, NULL, 0.0f); }
ROW(engine_backend) { return engine_with(f, 2, "neon", 0.0f); }
ROW(engine_scale) { return engine_with(f, 2, NULL, -1.0f); }
ROW(prefill_unreserved) {
  return pkv_prefill(f->e, f->live, 0, 8, 4, f->q, f->k, f->v, f->out);
}
ROW(prefill_cached) {
  /* positions 0..3 are in a committed, cached (and pinned) block */
  return pkv_prefill(f->e, f->live, 0, 0, 4, f->q, f->k, f->v, f->out);
}
ROW(prefill_layer) { return pkv_prefill(f->e, f->live, 2, 8, 2, f->q, f->k, f->v, f->out); }
ROW(prefill_null) { return pkv_prefill(f->e, f->live, 0, 8, 2, NULL, f->k, f->v, f->out); }
ROW(prefill_stale) { return pkv_prefill(f->e, f->freed, 0, 0, 1, f->q, f->k, f->v, f->out); }
ROW(decode_dup) {
  pkv_seq_id s[2] = {f->live, f->live};
  return pkv_decode(f->e, s, 2, 0, f->q, f->k, f->v, f->out);
}
ROW(decode_empty_seq) { return pkv_decode(f->e, &f->empty, 1, 0, f->q, f->k, f->v, f->out); }
ROW(decode_zero) { return pkv_decode(f->e, &f->live, 0, 0, f->q, f->k, f->v, f->out); }
ROW(decode_stale) { return pkv_decode(f->e, &f->freed, 1, 0, f->q, f->k, f->v, f->out); }

typedef struct row {
  const char *fn, *input;
  int (*run)(fx *);
  int want;
} row;

static const row rows[] = {
    {"pkv_cache_create", "cfg NULL", create_null_cfg, PKV_EINVAL},
    {"pkv_cache_create", "out NULL", create_null_out, PKV_EINVAL},
    {"pkv_cache_create", "n_kv_heads 0", create_zero_heads, PKV_EINVAL},
    {"pkv_cache_create", "unknown policy \"mru\"", create_bad_policy, PKV_ENOENT},
    {"pkv_cache_create", "policy_args \"bogus=1\" for lru", create_bad_policy_args, PKV_EINVAL},
    {"pkv_cache_create", "4096 layers x 4096 heads x 4096 dims x 65536 slots", create_huge, PKV_EINVAL},
    {"pkv_cache_layout", "out NULL", layout_null, PKV_EINVAL},
    {"pkv_cache_kv", "layer 2 of 2", kv_layer, PKV_ERANGE},
    {"pkv_cache_kv", "k NULL", kv_null, PKV_EINVAL},
    {"pkv_seq_create", "ns NULL with ns_len 5", seq_create_ns, PKV_EINVAL},
    {"pkv_seq_create", "priority 200", seq_create_prio, PKV_EINVAL},
    {"pkv_seq_free", "freed handle", seq_free_stale, PKV_ENOSEQ},
    {"pkv_seq_free", "handle 0", seq_free_zero, PKV_ENOSEQ},
    {"pkv_seq_free", "live index, forged generation", seq_free_forged, PKV_ENOSEQ},
    {"pkv_seq_append", "freed handle", append_stale, PKV_ENOSEQ},
    {"pkv_seq_append", "0 tokens", append_zero, PKV_EINVAL},
    {"pkv_seq_append", "tokens NULL", append_null, PKV_EINVAL},
    {"pkv_seq_append", "160 tokens into a 32-block pool", append_oversize, PKV_ENOMEM},
    {"pkv_seq_append", "cache NULL", append_null_cache, PKV_EINVAL},
    {"pkv_seq_fork", "freed parent", fork_stale, PKV_ENOSEQ},
    {"pkv_seq_fork", "child NULL", fork_null, PKV_EINVAL},
    {"pkv_seq_truncate", "to 11 > length 10", truncate_past, PKV_ERANGE},
    {"pkv_seq_truncate", "freed handle", truncate_stale, PKV_ENOSEQ},
    {"pkv_seq_commit", "11 > length 10", commit_past, PKV_ERANGE},
    {"pkv_seq_commit", "7 < committed 8", commit_back, PKV_ERANGE},
    {"pkv_seq_match_prefix", "non-empty sequence", match_nonempty, PKV_ESTATE},
    {"pkv_seq_match_prefix", "tokens NULL, n 8", match_null_tokens, PKV_EINVAL},
    {"pkv_seq_match_prefix", "matched NULL", match_null_out, PKV_EINVAL},
    {"pkv_seq_match_prefix", "freed handle", match_stale, PKV_ENOSEQ},
    {"pkv_seq_info_get", "freed handle", info_stale, PKV_ENOSEQ},
    {"pkv_seq_info_get", "out NULL", info_null, PKV_EINVAL},
    {"pkv_seq_blocks", "cap 1 < 3 blocks", blocks_small, PKV_ENOSPC},
    {"pkv_seq_blocks", "blocks NULL with cap 4", blocks_null, PKV_EINVAL},
    {"pkv_seq_set_priority", "empty range [4, 4)", prio_empty, PKV_ERANGE},
    {"pkv_seq_set_priority", "priority 101", prio_big, PKV_EINVAL},
    {"pkv_seq_set_priority", "freed handle", prio_stale, PKV_ENOSEQ},
    {"pkv_pin_create", "9 tokens > 8 committed", pin_uncommitted, PKV_ERANGE},
    {"pkv_pin_create", "3 tokens: no full block", pin_partial, PKV_ERANGE},
    {"pkv_pin_create", "freed sequence", pin_stale_seq, PKV_ENOSEQ},
    {"pkv_pin_create", "out NULL", pin_null, PKV_EINVAL},
    {"pkv_pin_release", "released pin", pin_release_twice, PKV_ENOENT},
    {"pkv_pin_release", "forged pin handle", pin_release_forged, PKV_ENOENT},
    {"pkv_block_table", "max_blocks 2 < 3", table_narrow, PKV_ENOSPC},
    {"pkv_block_table", "a freed handle in the batch", table_stale, PKV_ENOSEQ},
    {"pkv_block_table", "table NULL", table_null, PKV_EINVAL},
    {"pkv_slot_mapping", "end 11 > length 10", slots_past, PKV_ERANGE},
    {"pkv_slot_mapping", "begin 5 > end 2", slots_reversed, PKV_ERANGE},
    {"pkv_slot_mapping", "out NULL", slots_null, PKV_EINVAL},
    {"pkv_kv_csr", "indices_cap 2 < 3", csr_small, PKV_ENOSPC},
    {"pkv_kv_csr", "indptr NULL", csr_null, PKV_EINVAL},
    {"pkv_pool_drain_copies", "n_out NULL", drain_null, PKV_EINVAL},
    {"pkv_pool_drain_copies", "out NULL with cap 4", drain_null_buf, PKV_EINVAL},
    {"pkv_prefix_reset", "cache NULL", reset_null, PKV_EINVAL},
    {"pkv_stats_get", "out NULL", stats_null, PKV_EINVAL},
    {"pkv_check", "cache NULL", check_null, PKV_EINVAL},
    {"pkv_replace_allocator", "malloc and free only", allocator_partial, PKV_EINVAL},
    {"pkv_policy_register", "hooks missing", policy_register_hooks, PKV_EINVAL},
    {"pkv_policy_register", "version 99", policy_register_version, PKV_ENOTSUP},
    {"pkv_policy_register", "name \"lru\" taken", policy_register_taken, PKV_ESTATE},
    {"pkv_policy_register", "ops NULL", policy_register_null, PKV_EINVAL},
    {"pkv_engine_create", "external-storage cache", engine_external, PKV_ENOTSUP},
    {"pkv_engine_create", "n_q_heads 3 with 2 KV heads", engine_heads, PKV_EINVAL},
    {"pkv_engine_create", "backend \"neon\"", engine_backend, PKV_EINVAL},
    {"pkv_engine_create", "scale -1", engine_scale, PKV_EINVAL},
    {"pkv_prefill", "positions [8, 12) past length 10", prefill_unreserved, PKV_ERANGE},
    {"pkv_prefill", "positions [0, 4) in a cached block", prefill_cached, PKV_ESTATE},
    {"pkv_prefill", "layer 2 of 2", prefill_layer, PKV_ERANGE},
    {"pkv_prefill", "q NULL", prefill_null, PKV_EINVAL},
    {"pkv_prefill", "freed sequence", prefill_stale, PKV_ENOSEQ},
    {"pkv_decode", "a sequence twice in the batch", decode_dup, PKV_EINVAL},
    {"pkv_decode", "empty sequence", decode_empty_seq, PKV_ERANGE},
    {"pkv_decode", "batch of 0", decode_zero, PKV_EINVAL},
    {"pkv_decode", "freed sequence", decode_stale, PKV_ENOSEQ},
};
#define N_ROWS (sizeof rows / sizeof rows[0])

static FILE *table_out;

START_TEST(bad_input) {
  const row *r = &rows[_i];
  fx f;
  fx_up(&f);
  pkv_stats before = tu_stats(f.c);
  int rc = r->run(&f);
  char msg[512];
  snprintf(msg, sizeof msg, "%s", pkv_last_error());
  pkv_stats after = tu_stats(f.c);
  ck_assert_msg(rc == r->want, "%s(%s): %s, want %s (%s)", r->fn, r->input,
                pkv_err_name(rc), pkv_err_name(r->want), msg);
  ck_assert_msg(msg[0] != '\0', "%s(%s): no detail in pkv_last_error()",
                r->fn, r->input);
  ck_assert_msg(memcmp(&before, &after, sizeof before) == 0,
                "%s(%s): refused, but the stats changed", r->fn, r->input);
  TU_CHECK(f.c);
  fx_down(&f);
  if (table_out) {
    for (char *p = msg; *p; p++)
      if (*p == '|') *p = '/';
    fprintf(table_out, "| `%s` | %s | `%s` | %s |\n", r->fn, r->input,
            pkv_err_name(rc), msg);
    fflush(table_out);
  }
}
END_TEST

int main(void) {
  const char *path = getenv("PKV_MISUSE_TABLE");
  if (path && (table_out = fopen(path, "w")) != NULL)
    fprintf(table_out, "| function | bad input | code | pkv_last_error() |\n"
                       "|---|---|---|---|\n");
  const tu_tcase tcases[] = {{"table", 0, {{bad_input, 0, (int)N_ROWS}}}, {NULL}};
  /* Rows print in order only without fork. */
  int rc = tu_run("misuse", tcases);
  if (table_out) fclose(table_out);
  return rc;
}
