/*
 * bu_bench.h — shared benchmark helpers: a monotonic clock, medians, the
 * one output format every benchmark uses, and the manager benchmarks'
 * harness (thread CPU clock, error exit, the cache they all measure).
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

#include "pagedkv/pagedkv.h"

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

/* The manager benchmarks' harness.  CPU time of the calling thread in ns:
 * on a shared machine wall time counts other jobs' time slices, CPU time
 * does not (bench_manager.c says more). */
uint64_t bu_cpu_ns(void);
/* rc != 0: prints "PROGRAM: what: PKV_E... (last error)" and exits 1. */
void bu_check(int rc, const char *what);
/* An external-storage cache (ids only) of the llama3-8b shape (32 layers,
 * 8 KV heads x 128, f16) at block size BU_BLOCK_SIZE, num_blocks blocks;
 * policy NULL = the default, event_queue_cap 0 = none.  Exits on failure. */
enum { BU_BLOCK_SIZE = 16 };
pkv_cache *bu_cache_8b(uint32_t num_blocks, const char *policy, uint32_t event_queue_cap);
/* n new sequences in seqs, each with prompt_len tokens (zeros) appended and
 * not committed: the decode benchmarks' starting batch.  Exits on failure. */
void bu_seqs_prefilled(pkv_cache *c, pkv_seq_id *seqs, uint32_t n, uint32_t prompt_len);

#endif
