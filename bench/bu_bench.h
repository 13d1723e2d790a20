/*
 * bu_bench.h — shared benchmark helpers: a monotonic clock, medians, and the
 * one output format every benchmark uses.
 *
 * Each figure is printed as one line on stdout and, when the environment has
 * BENCH_JSON=FILE, appended to FILE as one JSON object per line:
 *   {"name": "...", "value": V, "unit": "...", "baseline": B, "ratio": R}
 * (baseline and ratio only where the figure has a baseline).
 */
#ifndef BU_BENCH_H
#define BU_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Nanoseconds from CLOCK_MONOTONIC. */
uint64_t bu_now_ns(void);
/* Median of n doubles (sorts a copy; n <= 4096). */
double bu_median(const double *v, size_t n);
/* A figure without a baseline. */
void bu_report(const char *name, double value, const char *unit);
/* A figure beside its baseline: ratio = value / baseline, printed with
 * the name of what ratio means (e.g. "of bandwidth", "paged/contiguous"). */
void bu_report_vs(const char *name, double value, const char *unit,
                  const char *baseline_name, double baseline,
                  const char *ratio_label);
/* Keeps the compiler from dropping a computed value. */
void bu_sink(const void *p);

#endif
