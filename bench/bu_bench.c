/* bu_bench.c — see bu_bench.h. */
#include "bu_bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tools/opts.h"

uint64_t bu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bu_median(const double *v, size_t n) {
  double tmp[4096];
  if (n == 0) return 0.0;
  if (n > 4096) n = 4096;
  memcpy(tmp, v, n * sizeof *v);
  qsort(tmp, n, sizeof *tmp, cmp_double);
  return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static void json_line(const char *name, double value, const char *unit,
                      const double *baseline, const double *ratio) {
  const char *path = getenv("BENCH_JSON");
  if (!path || !*path) return;
  FILE *f = fopen(path, "a");
  if (!f) {
    fprintf(stderr, "bench: cannot append to BENCH_JSON=%s\n", path);
    return;
  }
  fprintf(f, "{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"", name,
          value, unit);
  if (baseline) fprintf(f, ", \"baseline\": %.6g", *baseline);
  if (ratio) fprintf(f, ", \"ratio\": %.6g", *ratio);
  fprintf(f, "}\n");
  fclose(f);
}

void bu_report(const char *name, double value, const char *unit) {
  printf("%-44s %12.3f %s\n", name, value, unit);
  fflush(stdout);
  json_line(name, value, unit, NULL, NULL);
}

void bu_report_vs(const char *name, double value, const char *unit,
                  const char *baseline_name, double baseline,
                  const char *ratio_label) {
  double ratio = baseline != 0.0 ? value / baseline : 0.0;
  printf("%-44s %12.3f %-8s | %s %.3f %s | ratio %.3f %s\n", name, value, unit,
         baseline_name, baseline, unit, ratio, ratio_label);
  fflush(stdout);
  json_line(name, value, unit, &baseline, &ratio);
}

void bu_sink(const void *p) {
  __asm__ volatile("" : : "r"(p) : "memory");
}

uint64_t bu_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bu_check(int rc, const char *what) {
  if (rc == 0) return;
  fprintf(stderr, "%s: %s: %s (%s)\n", program_invocation_short_name, what, pkv_err_name(rc),
          pkv_last_error());
  exit(1);
}

pkv_cache *bu_cache_8b(uint32_t num_blocks, const char *policy, uint32_t event_queue_cap) {
  pkv_config cfg;
  opts_cache_config(&cfg, opts_model_preset("llama3-8b"), BU_BLOCK_SIZE, num_blocks,
                    PKV_STORAGE_EXTERNAL);
  if (policy) cfg.policy = policy;
  cfg.event_queue_cap = event_queue_cap;
  pkv_cache *c;
  bu_check(pkv_cache_create(&cfg, &c), "cache_create");
  return c;
}

void bu_seqs_prefilled(pkv_cache *c, pkv_seq_id *seqs, uint32_t n, uint32_t prompt_len) {
  int32_t *prompt = calloc(prompt_len ? prompt_len : 1, sizeof *prompt);
  if (!prompt) bu_check(PKV_ENOMEM, "prompt");
  for (uint32_t i = 0; i < n; i++) {
    bu_check(pkv_seq_create(c, NULL, &seqs[i]), "seq_create");
    bu_check(pkv_seq_append(c, seqs[i], prompt, prompt_len, NULL), "prefill");
  }
  free(prompt);
}
