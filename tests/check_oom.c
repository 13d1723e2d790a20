/*
 * check_oom.c — out-of-memory injection (after libuv's test-loop-oom.c).
 *
 * A scripted scenario (create, append, fork, copy-on-write, commit, match,
 * pin, priority, truncate, export, free, reset, and the serving calls:
 * probe, append_ex with a hit and lookahead, dedup commit, batch append and
 * free, event drain) runs with an allocator that
 * fails the k-th allocation, for k = 1, 2, ... until the script completes.
 * The call that meets the failure must return PKV_ENOMEM, leave the stats
 * and every invariant as they were, and, once the cache is destroyed, no
 * allocation may be left alive (the allocator counts them; ASan confirms).
 */
#include "tu_core.h"

#include <stdio.h>
#include <stdlib.h>

static int32_t toks[256];

/* Runs the script with the k-th allocation failing; returns 1 if it
 * completed without meeting the failure. */
static int script(long k, pkv_storage storage) {
  for (int i = 0; i < 256; i++) toks[i] = 7 * i % 13;
  pkv_cache *c = NULL;
  int completed = 0, step = 0;
  pkv_stats before;
  tu_alloc_install(k);

#define STEP(expr)                                                           \
  do {                                                                       \
    step++;                                                                  \
    if (c) ck_assert_int_eq(pkv_stats_get(c, &before), 0);                   \
    int rc_ = (expr);                                                        \
    if (rc_ == PKV_ENOMEM) {                                                 \
      if (c) {                                                               \
        pkv_stats after_;                                                    \
        ck_assert_int_eq(pkv_stats_get(c, &after_), 0);                      \
        ck_assert_msg(memcmp(&before, &after_, sizeof before) == 0,          \
                      "k=%ld step %d (%s): stats changed", k, step, #expr);  \
        TU_CHECK(c);                                                         \
      }                                                                      \
      goto done;                                                             \
    }                                                                        \
    ck_assert_msg(rc_ == 0, "k=%ld step %d (%s): %s %s", k, step, #expr,     \
                  pkv_err_name(rc_), pkv_last_error());                      \
  } while (0)

  pkv_config cfg;
  tu_config(&cfg, storage, 256, 4); /* room for the serving steps too */
  cfg.event_queue_cap = 8;
  pkv_seq_id a, b, d, e;
  pkv_pin_id pin;
  uint32_t matched, n;
  int32_t table[3 * 32], indptr[4], indices[64], last[3];
  int64_t slots[256];
  static const char ns[] = "tenant-with-a-long-name-0123456789";
  pkv_seq_opts o = {.ns = ns, .ns_len = sizeof ns - 1, .adapter_id = 3};

  STEP(pkv_cache_create(&cfg, &c));
  STEP(pkv_seq_create(c, NULL, &a));
  STEP(pkv_seq_append(c, a, toks, 10, slots));
  STEP(pkv_seq_commit(c, a, 8));
  STEP(pkv_seq_fork(c, a, &b));
  STEP(pkv_seq_append(c, b, toks, 1, slots)); /* copy-on-write */
  STEP(pkv_seq_append(c, a, toks, 100, slots)); /* table growth */
  STEP(pkv_seq_commit(c, a, 110));
  STEP(pkv_seq_set_priority(c, a, 0, 16, 80, 0));
  STEP(pkv_seq_set_priority(c, a, 16, 32, 10, 1000));
  STEP(pkv_seq_set_priority(c, a, 32, 48, 20, 0));
  STEP(pkv_seq_set_priority(c, a, 48, 64, 30, 0));
  STEP(pkv_seq_set_priority(c, a, 64, 80, 40, 0)); /* range growth */
  STEP(pkv_seq_fork(c, a, &e));
  STEP(pkv_pin_create(c, a, 16, &pin));
  STEP(pkv_seq_create(c, &o, &d));
  STEP(pkv_seq_match_prefix(c, d, toks, 110, 109, &matched));
  STEP(pkv_seq_append(c, d, toks + matched, 110 - matched, slots));
  STEP(pkv_seq_commit(c, d, 110));
  {
    pkv_seq_id f;
    int32_t hit[32], fresh[32];
    uint32_t ht;
    pkv_remap rm[32];
    uint32_t n_rm;
    pkv_event ev[16];
    STEP(pkv_prefix_probe(c, &o, toks, 110, 109, hit, 32, &ht));
    STEP(pkv_seq_create(c, &o, &f));
    pkv_append req = {.tokens = toks, .n_tokens = 110, .n_lookahead = 40,
                      .hit_blocks = hit, .n_hit_blocks = ht / 4,
                      .slots = slots, .new_blocks = fresh, .new_cap = 32};
    STEP(pkv_seq_append_ex(c, f, &req, NULL)); /* table growth */
    STEP(pkv_seq_truncate(c, f, 110));
    STEP(pkv_seq_commit_ex(c, f, 110, PKV_COMMIT_DEDUP, rm, 32, &n_rm));
    if (n_rm) STEP(pkv_blocks_release(c, &rm[0].old_block, 1));
    pkv_seq_id step_seqs[2] = {f, 0};
    STEP(pkv_seq_create(c, NULL, &step_seqs[1]));
    int32_t one[2] = {1, 2};
    pkv_step_result res[2];
    for (int i = 0; i < 40; i++) { /* table growth inside a batch */
      step++;
      int rc = pkv_batch_append(c, step_seqs, one, 2, slots, res);
      if (rc == PKV_ENOMEM) { /* per sequence: the others went on */
        TU_CHECK(c);
        goto done;
      }
      ck_assert_msg(rc == 0, "k=%ld batch: %s", k, pkv_last_error());
    }
    STEP(pkv_events_drain(c, ev, 16, &n, NULL));
    STEP(pkv_batch_free(c, step_seqs, 2, NULL));
  }
  STEP(pkv_seq_truncate(c, a, 3));
  STEP(pkv_seq_append(c, a, toks, 20, slots));
  pkv_seq_id batch[3] = {a, b, d};
  STEP(pkv_block_table(c, batch, 3, table, 32, NULL));
  STEP(pkv_kv_csr(c, batch, 3, indptr, indices, 64, last, &n));
  STEP(pkv_seq_free(c, b));
  STEP(pkv_seq_free(c, e));
  STEP(pkv_pin_release(c, pin));
  STEP(pkv_seq_free(c, a));
  STEP(pkv_prefix_reset(c));
  {
    pkv_seq_id many[40];
    for (int i = 0; i < 40; i++) STEP(pkv_seq_create(c, NULL, &many[i]));
  }
  TU_CHECK(c);
  completed = 1;
done:
  pkv_cache_destroy(c);
  tu_alloc_restore();
  ck_assert_msg(tu_alloc_live() == 0, "k=%ld: %ld allocations leaked", k,
                tu_alloc_live());
  return completed;
#undef STEP
}

START_TEST(fail_kth_allocation) {
  pkv_storage storage = _i ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED;
  long k = 1;
  while (!script(k, storage)) {
    k++;
    ck_assert_msg(k < 10000, "script never completes");
  }
  /* Every allocation site the script reaches was failed once. */
  ck_assert_int_gt(k, 20);
}
END_TEST

TU_MAIN("oom",
    {"inject", 120, {{fail_kth_allocation, 0, 2}}})
