/*
 * check_sched.c — the continuous-batching scheduler of `pagedkv run`,
 * driven without the engine (compute callbacks that record what they are
 * asked) on a small external-storage cache: preemption of the youngest
 * sequence and its recompute, rejection of what can never fit, forked
 * samples with copy-on-write, prefix hits, and determinism.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pagedkv/policy.h"

#include "../tools/cli.h"
#include "../tools/opts.h"
#include "../tools/scheduler.h"
#include "tu_core.h"

enum { MAX_SEQ_LOG = 4096 };

/* What the callbacks saw. */
typedef struct recorder {
  pkv_cache *cache;
  uint64_t prefill_tokens, decode_tokens;
  /* Running sequences in admission order, as the events tell it. */
  pkv_seq_id run[256];
  uint32_t run_req[256];
  size_t n_run;
  uint64_t preempts, preempts_youngest, finishes, rejects, admits, forks;
  bool bad_decode; /* a decode batch with a sequence whose slot was not reserved */
} recorder;

static int rec_prefill(void *user, pkv_seq_id seq, uint32_t pos0, uint32_t n) {
  recorder *r = user;
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(r->cache, seq, &info), 0);
  /* The scheduler reserved exactly [pos0, pos0 + n) and committed pos0. */
  ck_assert_uint_eq(info.n_tokens, pos0 + n);
  ck_assert_uint_eq(info.n_committed, pos0);
  r->prefill_tokens += n;
  return 0;
}

static int rec_decode(void *user, const pkv_seq_id *seqs, uint32_t n) {
  recorder *r = user;
  for (uint32_t i = 0; i < n; i++) {
    pkv_seq_info info;
    ck_assert_int_eq(pkv_seq_info_get(r->cache, seqs[i], &info), 0);
    if (info.n_tokens != info.n_committed + 1) r->bad_decode = true;
    for (uint32_t j = 0; j < i; j++) ck_assert(seqs[j] != seqs[i]);
  }
  r->decode_tokens += n;
  return 0;
}

static void rec_remove(recorder *r, pkv_seq_id seq) {
  for (size_t i = 0; i < r->n_run; i++)
    if (r->run[i] == seq) {
      memmove(&r->run[i], &r->run[i + 1], (r->n_run - i - 1) * sizeof r->run[0]);
      memmove(&r->run_req[i], &r->run_req[i + 1], (r->n_run - i - 1) * sizeof r->run_req[0]);
      r->n_run--;
      return;
    }
  ck_abort_msg("event for a sequence that is not running");
}

static void rec_event(void *user, sched_event ev, uint32_t req, uint32_t sample, pkv_seq_id seq) {
  recorder *r = user;
  (void)sample;
  switch (ev) {
  case SCHED_ADMIT:
  case SCHED_FORK:
    ck_assert_uint_lt(r->n_run, 256);
    r->run_req[r->n_run] = req;
    r->run[r->n_run++] = seq;
    r->admits += ev == SCHED_ADMIT;
    r->forks += ev == SCHED_FORK;
    break;
  case SCHED_PREEMPT:
    r->preempts++;
    r->preempts_youngest += r->n_run && r->run[r->n_run - 1] == seq;
    rec_remove(r, seq);
    break;
  case SCHED_FINISH:
    r->finishes++;
    rec_remove(r, seq);
    break;
  case SCHED_REJECT:
    r->rejects++;
    rec_remove(r, seq);
    break;
  }
}

typedef struct wl {
  uint32_t prompt_len[16], output_len[16], n_samples[16];
  uint32_t shared;
} wl;

static void wl_prompt(const void *ctx, size_t r, int32_t *out) {
  const wl *w = ctx;
  for (uint32_t i = 0; i < w->prompt_len[r]; i++)
    out[i] = i < w->shared ? (int32_t)(1000 + i) : (int32_t)(100000 * (r + 1) + i);
}

static pkv_cache *small_cache(uint32_t block_size, uint32_t blocks) {
  pkv_config cfg;
  tu_config_shape(&cfg, 1, 1, 1, block_size, blocks);
  cfg.storage = PKV_STORAGE_EXTERNAL;
  /* By ops: a strong reference to the registry (the core binds it weakly). */
  cfg.policy_ops = pkv_policy_find("lru");
  ck_assert_ptr_nonnull(cfg.policy_ops);
  pkv_cache *c = NULL;
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), 0);
  return c;
}

static void run_wl(pkv_cache *cache, const wl *w, size_t n, recorder *rec, sched_stats *st,
                   uint32_t watermark) {
  memset(rec, 0, sizeof *rec);
  rec->cache = cache;
  sched_workload sw = {.n_reqs = n, .prompt_len = w->prompt_len, .output_len = w->output_len,
                       .n_samples = w->n_samples, .prompt = wl_prompt, .ctx = w};
  sched_config cfg;
  sched_config_init(&cfg);
  cfg.watermark_blocks = watermark;
  cfg.headroom_blocks = 0; /* admit into the growth room: preemptions follow */
  cfg.prefill_chunk = 6;
  cfg.max_batch_tokens = 64;
  sched_compute cc = {.prefill = rec_prefill, .decode = rec_decode, .on_event = rec_event, .user = rec};
  char err[256];
  ck_assert_msg(sched_run(cache, &sw, &cfg, &cc, st, NULL, NULL, err, sizeof err) == 0, "%s", err);
  char msg[256];
  ck_assert_msg(pkv_check(cache, msg, sizeof msg) == 0, "%s", msg);
  pkv_stats ps;
  ck_assert_int_eq(pkv_stats_get(cache, &ps), 0);
  ck_assert_uint_eq(ps.n_seqs, 0); /* everything freed */
  ck_assert_uint_eq(ps.blocks_used, 0);
  ck_assert(!rec->bad_decode);
  ck_assert_uint_eq(rec->n_run, 0);
}

/* What a run gave: the callbacks' record and the scheduler's figures. */
typedef struct outcome {
  recorder rec;
  sched_stats st;
} outcome;

/* run_wl of the first n requests of w on a fresh cache of `blocks` blocks of
 * 4 (watermark 1), destroyed after. */
static outcome run_fresh(uint32_t blocks, const wl *w, size_t n) {
  outcome o;
  pkv_cache *cache = small_cache(4, blocks);
  run_wl(cache, w, n, &o.rec, &o.st, 1);
  pkv_cache_destroy(cache);
  o.rec.cache = NULL;
  return o;
}

START_TEST(preempts_youngest_and_recomputes) {
  /* 3 requests of 8 + 12 tokens = 5 blocks of 4 each; 10 blocks: all three
   * get admitted (2 blocks each + headroom) but cannot all finish. */
  wl w = {.prompt_len = {8, 8, 8}, .output_len = {12, 12, 12}, .n_samples = {1, 1, 1}};
  const outcome o = run_fresh(10, &w, 3);
  ck_assert_uint_eq(o.st.requests_done, 3);
  ck_assert_uint_eq(o.st.requests_rejected, 0);
  ck_assert_uint_ge(o.st.preemptions, 1);
  TU_EXPECT(TU_FIG(o.rec.preempts, o.st.preemptions),
            TU_FIG(o.rec.preempts_youngest, o.rec.preempts), /* always the youngest */
            TU_FIG(o.rec.finishes, 3),
            TU_FIG(o.rec.admits, 3 + o.st.preemptions)); /* each preemption re-admits */
  /* Every output token is decoded exactly once, recompute or not. */
  ck_assert_uint_eq(o.st.decode_tokens, 36);
  ck_assert_uint_eq(o.rec.decode_tokens, 36);
  /* Prefill covers the prompts plus what the preempted had to rebuild,
   * minus the blocks the prefix cache gave back. */
  ck_assert_uint_eq(o.rec.prefill_tokens, o.st.prefill_tokens);
  ck_assert_uint_eq(o.st.prefill_tokens + o.st.prefix_hit_tokens + o.st.readmit_hit_tokens,
                    o.st.prompt_tokens + o.st.readmit_tokens);
  ck_assert_uint_eq(o.st.prompt_tokens, 24); /* first admissions: the prompts once */
  ck_assert_uint_eq(o.st.readmits, o.st.preemptions);
  ck_assert_uint_gt(o.st.readmit_tokens, 0);

  /* Deterministic: the same run gives the same figures. */
  const outcome again = run_fresh(10, &w, 3);
  ck_assert_uint_eq(again.st.preemptions, o.st.preemptions);
  ck_assert_uint_eq(again.st.prefill_tokens, o.st.prefill_tokens);
  ck_assert_uint_eq(again.st.steps, o.st.steps);
}
END_TEST

START_TEST(admission_counts_prefill_debt) {
  /* 4 prompts of 40 tokens (10 blocks of 4) + 4 generated: 11 blocks each,
   * 24 blocks in the pool, prefilled 6 tokens per step.  Two fit.  A rule
   * that looks only at the free blocks admits a third and a fourth while
   * the first two hold a chunk or two, and then preempts in a loop; the
   * blocks still owed to prefills in progress must be counted. */
  wl w = {.prompt_len = {40, 40, 40, 40}, .output_len = {4, 4, 4, 4}, .n_samples = {1, 1, 1, 1}};
  const outcome o = run_fresh(24, &w, 4);
  TU_EXPECT(TU_FIG(o.st.requests_done, 4), TU_FIG(o.st.preemptions, 0),
            TU_FIG(o.rec.admits, 4), /* each admitted once: nothing recomputed */
            TU_FIG(o.st.readmits, 0), TU_FIG(o.st.prefill_tokens, 160));
  ck_assert_uint_le(o.st.peak_running, 2);
}
END_TEST

START_TEST(rejects_what_never_fits) {
  /* Request 1 needs 12 blocks of 4 (48 tokens) in an 8-block pool; request
   * 2 fits its prompt but grows past the pool while alone. */
  wl w = {.prompt_len = {5, 48, 20, 6}, .output_len = {3, 3, 20, 2}, .n_samples = {1, 1, 1, 1}};
  const outcome o = run_fresh(8, &w, 4);
  ck_assert_uint_eq(o.st.requests_rejected, 2);
  ck_assert_uint_eq(o.st.requests_done, 2);
  ck_assert_uint_eq(o.st.sequences_done, 2);
}
END_TEST

START_TEST(samples_fork_and_copy) {
  /* 2 requests x 3 samples; prompts of 10 tokens (a partial tail block of
   * 4-token blocks), so every sample's first token copies the shared tail. */
  wl w = {.prompt_len = {10, 10}, .output_len = {5, 5}, .n_samples = {3, 3}};
  const outcome o = run_fresh(64, &w, 2);
  TU_EXPECT(TU_FIG(o.st.requests_done, 2), TU_FIG(o.st.sequences_done, 6), TU_FIG(o.st.forks, 4),
            TU_FIG(o.rec.forks, 4), TU_FIG(o.st.decode_tokens, 30),
            TU_FIG(o.st.prefill_tokens, 20)); /* the prompt once per request */
  ck_assert_uint_ge(o.st.cow_copies, 4);
  ck_assert_uint_eq(o.st.preemptions, 0);
}
END_TEST

START_TEST(prefix_hits_between_requests) {
  /* 4 requests sharing a 16-token prefix (4 blocks of 4) + 3 own tokens;
   * max_seqs 1 runs them one by one, so requests 2..4 match the prefix. */
  pkv_cache *cache = small_cache(4, 64);
  wl w = {.prompt_len = {19, 19, 19, 19}, .output_len = {2, 2, 2, 2}, .n_samples = {1, 1, 1, 1},
          .shared = 16};
  recorder rec;
  memset(&rec, 0, sizeof rec);
  rec.cache = cache;
  sched_workload sw = {.n_reqs = 4, .prompt_len = w.prompt_len, .output_len = w.output_len,
                       .n_samples = w.n_samples, .prompt = wl_prompt, .ctx = &w};
  sched_config cfg;
  sched_config_init(&cfg);
  cfg.max_seqs = 1;
  sched_compute cc = {.prefill = rec_prefill, .decode = rec_decode, .on_event = rec_event, .user = &rec};
  sched_stats st;
  sched_step *steps = NULL;
  size_t n_steps = 0;
  cfg.record_steps = true;
  char err[256];
  ck_assert_msg(sched_run(cache, &sw, &cfg, &cc, &st, &steps, &n_steps, err, sizeof err) == 0, "%s", err);
  TU_EXPECT(TU_FIG(st.prefix_hit_tokens, 3 * 16), TU_FIG(st.prefill_tokens, 4 * 19 - 3 * 16),
            TU_FIG(n_steps, st.steps), TU_FIG(st.peak_running, 1));
  for (size_t i = 0; i < n_steps; i++) ck_assert_uint_le(steps[i].running, 1);
  free(steps);
  pkv_cache_destroy(cache);
}
END_TEST

START_TEST(bad_workload) {
  pkv_cache *cache = small_cache(4, 8);
  wl w = {.prompt_len = {5, 0}, .output_len = {3, 3}};
  sched_workload sw = {.n_reqs = 2, .prompt_len = w.prompt_len, .output_len = w.output_len,
                       .prompt = wl_prompt, .ctx = &w};
  sched_config cfg;
  sched_config_init(&cfg);
  sched_stats st;
  char err[256] = "";
  ck_assert_int_eq(sched_run(cache, &sw, &cfg, NULL, &st, NULL, NULL, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "request 1"));
  pkv_cache_destroy(cache);
}
END_TEST

/* `pagedkv run --dtype`: every K/V type the engine supports, the quantized
 * ones included, is accepted by name and runs the engine end to end (the
 * JSON says the dtype and the block size it gives); an unknown one is a
 * usage error naming the flag. */
START_TEST(run_dtypes) {
  static const struct { const char *name; pkv_dtype dtype; } want[] = {
      {"f32", PKV_DTYPE_F32}, {"f16", PKV_DTYPE_F16}, {"bf16", PKV_DTYPE_BF16},
      {"i8", PKV_DTYPE_I8}, {"fp8_e4m3", PKV_DTYPE_FP8_E4M3}, {"fp8_e5m2", PKV_DTYPE_FP8_E5M2}};
  char err[256], json[64], expect[96];
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    run_opts o;
    char *argv[] = {"run", "--dtype", (char *)want[i].name, NULL};
    ck_assert_int_eq(run_opts_parse(3, argv, &o, err, sizeof err), 0);
    ck_assert_int_eq(o.shape.dtype, want[i].dtype);
    ck_assert_str_eq(opts_dtype_name(want[i].dtype), want[i].name);
    if (want[i].dtype < PKV_DTYPE_I8) continue;
    /* The quantized ones through the engine: 4 requests on the tiny model. */
    snprintf(json, sizeof json, "/tmp/pkv_run_dtype_%d.json", (int)getpid());
    char *run[] = {"run", "-q", "--dtype", (char *)want[i].name, "--requests", "4", "--blocks", "64",
                   "-t", "1", "--prompt-len", "32-64", "--system-len", "32", "--output-len", "4",
                   "--json", json, NULL};
    ck_assert_int_eq(cmd_run(18, run), 0);
    FILE *f = fopen(json, "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(json);
    snprintf(expect, sizeof expect, "\"dtype\": \"%s\"", want[i].name);
    ck_assert_msg(strstr(text, expect), "%s: no %s in the JSON", want[i].name, expect);
    pkv_config cfg;
    pkv_config_init(&cfg);
    cfg.n_layers = 2, cfg.n_kv_heads = 2, cfg.head_dim = 64, cfg.block_size = 16;
    cfg.dtype = want[i].dtype;
    snprintf(expect, sizeof expect, "\"block_bytes\": %llu",
             (unsigned long long)pkv_config_block_bytes(&cfg));
    ck_assert_msg(strstr(text, expect), "%s: no %s in the JSON", want[i].name, expect);
    ck_assert_msg(strstr(text, "\"requests_done\": 4"), "%s: not every request done", want[i].name);
  }
  run_opts o;
  char *bad[] = {"run", "--dtype", "fp8", NULL};
  ck_assert_int_eq(run_opts_parse(3, bad, &o, err, sizeof err), 2);
  ck_assert_msg(strstr(err, "--dtype: 'fp8' is not"), "%s", err);
}
END_TEST

TU_MAIN("sched",
    {"preemption", 0, {{preempts_youngest_and_recomputes}, {rejects_what_never_fits},
                       {admission_counts_prefill_debt}}},
    {"sharing", 0, {{samples_fork_and_copy}, {prefix_hits_between_requests}, {bad_workload}}},
    {"run", 60, {{run_dtypes}}})
