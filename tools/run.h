/*
 * run.h — the pieces of `pagedkv run`, one phase each: options (opts.h,
 * run_opts.c) -> the workload (run_work.c) -> the run: scheduler
 * (scheduler.c) with the engine as its compute (run_engine.c) -> the report
 * (run_report.c).  tools/run.c strings them together.
 */
#ifndef PKV_TOOLS_RUN_H
#define PKV_TOOLS_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "opts.h"
#include "pagedkv/engine.h"
#include "scheduler.h"
#include "sim.h"
#include "trace.h"

/* ------------------------------------------------------------- workload */

typedef enum { WL_SYNTHETIC, WL_AZURE, WL_MOONCAKE } wl_kind;

typedef struct workload {
  wl_kind kind;
  size_t n;
  uint32_t *prompt_len, *output_len, *n_samples;
  uint32_t *group;      /* synthetic: system-prompt group of each request */
  uint32_t system_len;  /* synthetic: shared system prompt length */
  uint64_t seed;
  trace tr;             /* trace workloads */
  sim_stream stream;    /* Mooncake: tokens from hash ids */
  bool have_stream;
} workload;


/* The workload's deterministic mixes (also the engine's Q/K/V windows):
 * splitmix64 steps *s; tok_of(a, b, c) is a 31-bit token of the triple. */
uint64_t run_splitmix(uint64_t *s);
uint32_t run_tok_of(uint64_t a, uint64_t b, uint64_t c);

/* Builds the workload (synthetic, or the trace's first --requests) into
 * *wl and its description; the longest prompt + output and how many exceed
 * --max-len.  Returns 0 or an exit status (message printed). */
int run_build_workload(const run_opts *o, workload *wl, char *desc, size_t desc_cap,
                       uint64_t *longest, uint64_t *too_long);
/* Request r's prompt tokens (a sched_workload's prompt hook; ctx = wl). */
void run_workload_prompt(const void *ctx, size_t r, int32_t *out);
void run_workload_free(workload *wl);

/* --------------------------------------------------------------- engine */

/* The engine as the scheduler's compute: every layer, deterministic
 * synthetic Q/K/V taken from windows of a seeded pool of floats. */
typedef struct engine_ctx {
  pkv_engine *eng;
  uint32_t n_layers, n_q, n_kv, head_dim;
  float *pool;         /* seeded uniform floats in [-1, 1) */
  size_t pool_n;       /* floats; windows of any request size fit */
  float *out;
  size_t out_n;
} engine_ctx;

int run_engine_prefill(void *user, pkv_seq_id seq, uint32_t pos0, uint32_t n);
int run_engine_decode(void *user, const pkv_seq_id *seqs, uint32_t n);
void run_engine_free(engine_ctx *e);

/* --------------------------------------------------------------- report */

typedef struct run_report {
  const model_shape *shape;
  pkv_dtype dtype;
  uint32_t block_size, num_blocks, threads;
  uint64_t block_bytes;
  const char *policy, *backend, *workload_desc;
  bool dry;
  bool baseline;
  uint32_t max_len, max_seqs;
  uint64_t contiguous_fit; /* min(slots / max_len, max_seqs) */
  uint64_t too_long;       /* requests with prompt + output > max_len */
  uint64_t longest;        /* longest prompt + output */
  size_t n_reqs;
  bool no_sharing;         /* Azure: lengths only, no prompt content */
} run_report;

void run_print_summary(FILE *f, const run_report *rp, const sched_stats *st);
int run_write_json(const char *path, const run_report *rp, const sched_stats *st,
                   const sched_step *steps, size_t n_steps);
int run_write_plot(const char *path, const run_report *rp, const sched_step *steps,
                   size_t n_steps);
void run_help(void);

#endif
