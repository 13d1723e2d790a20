/*
 * bench_sim.c — `pagedkv sim` speed: one policy at one capacity over the
 * whole synthetic Mooncake trace through the real manager (the goal:
 * under 1 s), beside the simple model's replay of the same stream (the same
 * accesses without the manager) as the baseline.  Medians of 5.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bu_bench.h"

#include "../tools/cli.h"
#include "../tools/opts.h"
#include "../tools/sim.h"
#include "../tools/trace.h"

int main(void) {
  const char *dir = trace_full_dir();
  if (!dir) {
    printf("bench_sim: full traces not found (set PKV_FULL_TRACES_DIR): skipped\n");
    return 0;
  }
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/synthetic_trace.jsonl", dir);
  trace t;
  uint64_t t0 = bu_now_ns();
  if (trace_load(path, TRACE_AUTO, &t, err, sizeof err)) {
    fprintf(stderr, "bench_sim: %s\n", err);
    return 1;
  }
  sim_stream s;
  if (sim_stream_build(&t, 512, &s, err, sizeof err)) {
    fprintf(stderr, "bench_sim: %s\n", err);
    return 1;
  }
  bu_report("sim load+stream synthetic_trace", (double)(bu_now_ns() - t0) / 1e6, "ms");
  static const char *const policies[] = {"lru", "s3fifo"};
  static const uint32_t caps[] = {1000, 10000};
  enum { REPS = 5 };
  for (size_t p = 0; p < sizeof policies / sizeof policies[0]; p++) {
    const pkv_policy_ops *ops = pkv_policy_find(policies[p]);
    if (!ops) continue;
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
      double mgr[REPS], simple[REPS];
      for (int r = 0; r < REPS; r++) {
        sim_result a = {0}, b = {0};
        if (sim_run_manager(&s, ops, NULL, caps[c], 0, &a, NULL) ||
            sim_run_simple(&s, ops, NULL, caps[c], &b, NULL)) {
          fprintf(stderr, "bench_sim: %s %s\n", a.err, b.err);
          return 1;
        }
        mgr[r] = a.seconds * 1e3;
        simple[r] = b.seconds * 1e3;
      }
      char name[96];
      snprintf(name, sizeof name, "sim manager %s@%u whole trace", policies[p], caps[c]);
      bu_report_vs(name, bu_median(mgr, REPS), "ms", "simple model", bu_median(simple, REPS),
                   "manager/simple");
    }
  }
  double bel[REPS];
  for (int r = 0; r < REPS; r++) {
    sim_result b = {0};
    sim_run_belady(&s, 1000, true, 0, &b, NULL);
    bel[r] = b.seconds * 1e3;
  }
  bu_report("sim belady@1000 whole trace", bu_median(bel, REPS), "ms");
  sim_stream_free(&s);
  trace_free(&t);
  return 0;
}
