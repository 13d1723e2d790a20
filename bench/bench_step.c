/*
 * bench_step.c — one scheduler decode step for 256 sequences, through the
 * batch call and, in the same run, through 256 single calls (medians of
 * REPS repetitions of DECODE_STEPS steps each):
 *
 *   batch step    pkv_batch_append(256 sequences): one lock, one slot each,
 *                 the slot mapping and the per-sequence delta (block
 *                 appended or copied) filled; target <= 10 us
 *   single calls  256 x pkv_seq_append(1 token, slot) — the baseline
 *   + capacity    the batch step followed by pkv_cache_capacity and a
 *                 pkv_events_drain (what a scheduler also asks each step)
 *   probe         pkv_prefix_probe of a 2k-token prompt whose 128 blocks are
 *                 all cached (read-only); baseline: pkv_seq_match_prefix of
 *                 the same prompt (which attaches: each match is undone
 *                 by pkv_seq_truncate(0) outside the timed region)
 *
 * Sequences start at 100 tokens with block size 16, so every step about one
 * sequence in 16 crosses into a new block: the step includes allocation,
 * not only the in-block fast path.  External storage (ids only).  Timing
 * uses the thread's CPU clock (see bench_manager.c for why).
 */
#include "bu_bench.h"
#include "pagedkv/pagedkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPS 9
#define BS BU_BLOCK_SIZE
#define N_SEQS 256
#define DECODE_PROMPT 100
#define DECODE_STEPS 512

static pkv_cache *decode_batch(pkv_seq_id *s) {
  pkv_cache *c = bu_cache_8b(N_SEQS * ((DECODE_PROMPT + DECODE_STEPS) / BS + 2), NULL, 1024);
  bu_seqs_prefilled(c, s, N_SEQS, DECODE_PROMPT);
  return c;
}

enum mode { MODE_BATCH, MODE_SINGLE, MODE_BATCH_CAPACITY };

/* ns per step of DECODE_STEPS steps over 256 sequences. */
static double step_ns(enum mode mode) {
  pkv_seq_id s[N_SEQS];
  pkv_cache *c = decode_batch(s);
  static int32_t tok[N_SEQS];
  static int64_t slots[N_SEQS];
  static pkv_step_result res[N_SEQS];
  pkv_capacity cap;
  pkv_event ev[64];
  uint32_t n_ev;
  uint64_t t0 = bu_cpu_ns();
  for (int step = 0; step < DECODE_STEPS; step++) {
    for (int i = 0; i < N_SEQS; i++) tok[i] = step;
    switch (mode) {
    case MODE_SINGLE:
      for (int i = 0; i < N_SEQS; i++)
        bu_check(pkv_seq_append(c, s[i], &tok[i], 1, &slots[i]), "append");
      break;
    case MODE_BATCH_CAPACITY:
      bu_check(pkv_cache_capacity(c, &cap), "capacity");
      bu_check(pkv_events_drain(c, ev, 64, &n_ev, NULL), "drain");
      /* fall through */
    case MODE_BATCH:
      bu_check(pkv_batch_append(c, s, tok, N_SEQS, slots, res), "batch_append");
      break;
    }
    bu_sink(slots);
  }
  uint64_t t1 = bu_cpu_ns();
  pkv_cache_destroy(c);
  return (double)(t1 - t0) / DECODE_STEPS;
}

/* ------------------------------------------------ probe */

#define PROBE_TOKENS 2048
#define PROBE_ITERS 2000

static void probe_ns(double *probe, double *match) {
  pkv_cache *c = bu_cache_8b(1024, NULL, 0);
  static int32_t prompt[PROBE_TOKENS + 1];
  for (int i = 0; i <= PROBE_TOKENS; i++) prompt[i] = i * 7 + 1;
  pkv_seq_id s;
  bu_check(pkv_seq_create(c, NULL, &s), "seq_create");
  bu_check(pkv_seq_append(c, s, prompt, PROBE_TOKENS + 1, NULL), "prefill");
  bu_check(pkv_seq_commit(c, s, PROBE_TOKENS + 1), "commit");
  static int32_t hit[PROBE_TOKENS / BS];
  uint32_t ht = 0;
  uint64_t t0 = bu_cpu_ns();
  for (int i = 0; i < PROBE_ITERS; i++)
    bu_check(pkv_prefix_probe(c, NULL, prompt, PROBE_TOKENS + 1, PROBE_TOKENS, hit,
                         PROBE_TOKENS / BS, &ht), "probe");
  uint64_t t1 = bu_cpu_ns();
  if (ht != PROBE_TOKENS) bu_check(PKV_ECORRUPT, "probe missed");
  pkv_seq_id m;
  bu_check(pkv_seq_create(c, NULL, &m), "seq_create");
  uint64_t in_match = 0;
  for (int i = 0; i < PROBE_ITERS; i++) {
    uint64_t a = bu_cpu_ns();
    bu_check(pkv_seq_match_prefix(c, m, prompt, PROBE_TOKENS + 1, PROBE_TOKENS, &ht),
        "match");
    in_match += bu_cpu_ns() - a;
    bu_check(pkv_seq_truncate(c, m, 0), "truncate");
  }
  *probe = (double)(t1 - t0) / PROBE_ITERS;
  *match = (double)in_match / PROBE_ITERS;
  pkv_cache_destroy(c);
}

int main(void) {
  double batch[REPS], single[REPS], withcap[REPS], pr[REPS], ma[REPS];
  /* Interleave the modes so drift in machine load hits all of them. */
  for (int r = 0; r < REPS; r++) {
    batch[r] = step_ns(MODE_BATCH);
    single[r] = step_ns(MODE_SINGLE);
    withcap[r] = step_ns(MODE_BATCH_CAPACITY);
    probe_ns(&pr[r], &ma[r]);
  }
  double b = bu_median(batch, REPS), s = bu_median(single, REPS);
  double w = bu_median(withcap, REPS);
  bu_report_vs("step: batch append, 256 seqs (us/step)", b / 1e3, "us",
               "256 x pkv_seq_append", s / 1e3, "batch/single");
  bu_report_vs("step: batch + capacity + events drain (us/step)", w / 1e3, "us",
               "256 x pkv_seq_append", s / 1e3, "step/single");
  bu_report_vs("probe: 2k-token prompt, 128 blocks hit (us)",
               bu_median(pr, REPS) / 1e3, "us", "pkv_seq_match_prefix",
               bu_median(ma, REPS) / 1e3, "probe/match");
  return 0;
}
