/* bu_bench.c — see bu_bench.h. */
#include "bu_bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
