/*
 * tu_core.h — helpers shared by the manager's test suites: small cache
 * configurations, the invariant check as an assertion, a failing allocator
 * with a live-allocation count, a seeded RNG, and a per-token K/V pattern.
 */
#ifndef TU_CORE_H
#define TU_CORE_H

#include "pagedkv/engine.h"
#include "pagedkv/pagedkv.h"
#include "pagedkv/policy.h"

#include <check.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifdef PKV_SANITIZE
#define TU_SCALE(n) ((n) / 8 > 0 ? (n) / 8 : 1)
#define TU_SAN_OR(sanitized, full) (sanitized)
#else
#define TU_SCALE(n) (n)
#define TU_SAN_OR(sanitized, full) (full)
#endif

/* Shape: 2 layers, 2 KV heads, head_dim 4, f32; the given pool. */
void tu_config(pkv_config *cfg, pkv_storage storage, uint32_t num_blocks,
               uint32_t block_size);
/* pkv_config_init, then any shape and pool (f32, owned, lru unless the
 * caller changes them after). */
void tu_config_shape(pkv_config *cfg, uint32_t n_layers, uint32_t n_kv_heads,
                     uint32_t head_dim, uint32_t block_size, uint32_t num_blocks);
pkv_cache *tu_cache(const pkv_config *cfg);
/* tu_config then tu_cache: a cache of that shape with the given pool. */
pkv_cache *tu_cache_new(pkv_storage storage, uint32_t num_blocks, uint32_t block_size);
/* tu_cache_new with every event passed to on_event(ev, user). */
pkv_cache *tu_cache_events(pkv_storage storage, uint32_t num_blocks, uint32_t block_size,
                           void (*on_event)(const pkv_event *ev, void *user), void *user);
/* A new sequence (default options) holding tokens[0..n): pkv_seq_create
 * and, when n > 0, pkv_seq_append, each asserted to succeed. */
pkv_seq_id tu_seq_new(pkv_cache *c, const int32_t *tokens, uint32_t n);
/* A new sequence (default options) matched against the prefix index:
 * pkv_seq_create and pkv_seq_match_prefix(tokens, n, max_tokens), each
 * asserted to succeed; returns the tokens matched, the sequence in *seq
 * (NULL: not wanted; it stays in the cache either way). */
uint32_t tu_match_new(pkv_cache *c, const int32_t *tokens, uint32_t n, uint32_t max_tokens,
                      pkv_seq_id *seq);

/* The fixture the contract and misuse tables share, in two steps so each
 * file adds its own objects in between: an owned cache (tu_config with
 * head_dim 16, 32 blocks of 4), toks[i] = 10 + i (64 of them), *live with
 * 10 tokens of which 8 committed, *freed a handle already freed; then an
 * engine over it with 2 query heads. */
pkv_cache *tu_fixture_cache(int32_t toks[64], pkv_seq_id *live, pkv_seq_id *freed);
pkv_engine *tu_fixture_engine(pkv_cache *c);

#define TU_CHECK(cache)                                                  \
  do {                                                                   \
    char tu_msg_[256];                                                   \
    if (pkv_check((cache), tu_msg_, sizeof tu_msg_) != 0)                \
      ck_abort_msg("pkv_check: %s", tu_msg_);                            \
  } while (0)
/* The end of most tests: the invariants hold, then the cache goes. */
#define TU_DONE(cache)              \
  do {                              \
    TU_CHECK(cache);                \
    pkv_cache_destroy(cache);       \
  } while (0)
/* An assertion for hot loops: ck_assert_* writes to a pipe per call when
 * Check forks, which dominates a stress test's run time. */
#define TU_ASSERT(cond, ...)                                             \
  do {                                                                   \
    if (!(cond)) ck_abort_msg(__VA_ARGS__);                              \
  } while (0)

/* Stats snapshot without the fields that legitimately move on a refused
 * call (none do today; kept as one place to say so). */
pkv_stats tu_stats(pkv_cache *cache);
#define TU_STATS_SAME(a, b) \
  ck_assert_msg(memcmp(&(a), &(b), sizeof(a)) == 0, "stats changed")

/* Expected figures as data: TU_EXPECT(TU_FIG(st.blocks_used, 3),
 * TU_FIG(st.tokens, 10), ...) checks each in order; the first that differs
 * fails naming its expression, the value and the expected one.  Every figure
 * is one assertion, as if written with ck_assert_uint_eq. */
typedef struct tu_fig {
  const char *expr;
  uint64_t got, want;
} tu_fig;
#define TU_FIG(expr, want) {#expr, (uint64_t)(expr), (uint64_t)(want)}
void tu_expect_figs(const char *file, int line, const tu_fig *figs, size_t n);
#define TU_EXPECT(...)                                    \
  do {                                                    \
    const tu_fig tu_figs_[] = {__VA_ARGS__};              \
    size_t tu_n_ = sizeof tu_figs_ / sizeof tu_figs_[0];  \
    tu_expect_figs(__FILE__, __LINE__, tu_figs_, tu_n_);  \
  } while (0)

/* Failing allocator: after tu_alloc_install(k), the k-th allocation from
 * now on (k >= 1) and every later one fail; k = 0 never fails. */
void tu_alloc_install(long fail_at);
void tu_alloc_restore(void);
long tu_alloc_live(void);   /* allocations not yet freed */
long tu_alloc_count(void);  /* allocations attempted since install */

uint64_t tu_rand(uint64_t *state);
/* Distinct value for (seq tag, position, layer, K/V, head, element). */
float tu_pattern(uint32_t tag, uint32_t pos, uint32_t layer, int is_v,
                 uint32_t head, uint32_t d);
/* Writes / verifies the pattern of token pos of a sequence at slot. */
void tu_write_slot(pkv_cache *c, int64_t slot, uint32_t tag, uint32_t pos);
int tu_slot_matches(pkv_cache *c, int64_t slot, uint32_t tag, uint32_t pos);

/* Runs a suite; the process exit code. */
int tu_main(Suite *suite);

/* A suite written as data, so each file ends with the list of its tests
 * rather than the calls that build it.  A test is {fn} (one run) or
 * {fn, lo, hi} (a loop test: runs for _i = lo .. hi - 1); a tcase is its
 * name, a timeout in seconds (0: TU_DEFAULT_TIMEOUT, or CK_DEFAULT_TIMEOUT
 * when that is set) and up to TU_MAX_TESTS tests; the list of tcases ends
 * with {NULL}.  Check's own default, 4 s per test, is too tight for the
 * sanitizer builds on a shared two-core machine (ASan runs of the policy
 * suite's random tests timed out at load 11); a hang is still caught. */
#define TU_DEFAULT_TIMEOUT 30
#define TU_MAX_TESTS 24
typedef struct tu_test {
  const TTest *fn;
  int lo, hi; /* hi > lo: a loop test */
} tu_test;
typedef struct tu_tcase {
  const char *name;
  double timeout;
  tu_test tests[TU_MAX_TESTS];
} tu_tcase;
Suite *tu_suite(const char *name, const tu_tcase *tcases);
/* tu_main(tu_suite(name, tcases)). */
int tu_run(const char *name, const tu_tcase *tcases);
/* Worker threads record a failure here (Check's asserts belong to the main
 * thread, which asserts on *failed afterwards): the first message is kept
 * in why[cap], later ones are dropped. */
void tu_fail_first(atomic_int *failed, pthread_mutex_t *lock, char *why, size_t cap,
                   const char *fmt, va_list ap);

/* A test file's main: TU_MAIN("name", {"tcase", timeout, {{fn}, ...}}, ...). */
#define TU_MAIN(name, ...)                                   \
  int main(void) {                                           \
    const tu_tcase tu_tcases_[] = {__VA_ARGS__, {NULL}};     \
    return tu_run((name), tu_tcases_);                       \
  }

/* A test policy's vtable from its name and hooks, in pkv_policy_ops order. */
#define TU_POLICY_OPS(nm, create_, destroy_, insert_, hit_, evictable_, pinned_, victim_, \
                      remove_)                                                         \
  {.version = PKV_POLICY_VERSION, .name = (nm), .create = (create_),                   \
   .destroy = (destroy_), .on_insert = (insert_), .on_hit = (hit_),                    \
   .on_evictable = (evictable_), .on_pinned = (pinned_), .choose_victim = (victim_),   \
   .on_remove = (remove_)}

/* A tiny test-only policy: evicts the lowest-numbered candidate. */
extern const pkv_policy_ops tu_policy_lowest;

/* Event log: records every event of a cache whose on_event is tu_event_log. */
typedef struct tu_events {
  pkv_event ev[4096];
  uint32_t n;
} tu_events;
void tu_event_log(const pkv_event *ev, void *user);

/* The repository root the tests read their data from: $PKV_SRCDIR, else the
 * working directory. */
const char *tu_srcdir(void);
/* Feeds every regular file of dir (its first 64 KiB) to run, the body a
 * libFuzzer harness drives; returns how many files ran, -1 if dir cannot be
 * opened. */
int tu_replay_dir(const char *dir, int (*run)(const uint8_t *data, size_t size));
/* tu_replay_dir of tests/fuzz/<name> under tu_srcdir() (name: "corpus_ops",
 * "regress_trace", ...). */
int tu_replay_fuzz(const char *name, int (*run)(const uint8_t *data, size_t size));

#endif
