/*
 * run.c — `pagedkv run`: a serving workload on the paged KV cache and the
 * attention engine.
 *
 *   workload (synthetic | Azure CSV | Mooncake JSONL)
 *       │ prompt lengths, output lengths, prompt tokens, samples
 *       ▼
 *   sched_run (scheduler.c) ── append / match / fork / commit ──► pkv_cache
 *       │ prefill(seq, pos0, n) / decode(seqs)
 *       ▼
 *   engine back end (below): every layer, deterministic synthetic Q/K/V
 *   taken from a seeded pool of floats, pkv_prefill / pkv_decode
 *
 * --dry replaces the engine with nothing and the cache with an external-
 * storage one of the same block count, which is how the memory comparison
 * with contiguous reservation (--contiguous-baseline) runs a large model's
 * shape on a small machine: paging decisions do not depend on the K/V bytes.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "opts.h"
#include "pagedkv/engine.h"
#include "scheduler.h"
#include "sim.h"
#include "trace.h"

/* ================================================================ workload */

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

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint32_t tok_of(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t s = a * UINT64_C(0x100000001b3) ^ b * UINT64_C(0xc2b2ae3d27d4eb4f) ^ c;
  return (uint32_t)(splitmix(&s) & 0x7fffffff);
}

static void workload_prompt(const void *ctx, size_t r, int32_t *out) {
  const workload *w = ctx;
  uint32_t len = w->prompt_len[r];
  switch (w->kind) {
  case WL_SYNTHETIC: {
    uint32_t sys = w->system_len < len ? w->system_len : len;
    for (uint32_t i = 0; i < sys; i++) out[i] = (int32_t)tok_of(w->seed, 1000000u + w->group[r], i);
    for (uint32_t i = sys; i < len; i++) out[i] = (int32_t)tok_of(w->seed, r, i);
    break;
  }
  case WL_AZURE: /* lengths only: every prompt is its own */
    for (uint32_t i = 0; i < len; i++) out[i] = (int32_t)tok_of(w->seed, r, i);
    break;
  case WL_MOONCAKE:
    sim_request_tokens(&w->stream, r, out);
    break;
  }
}

static void workload_free(workload *w) {
  free(w->prompt_len);
  free(w->output_len);
  free(w->n_samples);
  free(w->group);
  if (w->have_stream) sim_stream_free(&w->stream);
  trace_free(&w->tr);
}

static uint32_t uniform(uint64_t *rng, run_range r) {
  return (uint32_t)(r.lo + splitmix(rng) % (r.hi - r.lo + 1));
}

/* ================================================================ engine */

typedef struct engine_ctx {
  pkv_engine *eng;
  uint32_t n_layers, n_q, n_kv, head_dim;
  float *pool;         /* seeded uniform floats in [-1, 1) */
  size_t pool_n;       /* floats; windows of any request size fit */
  float *out;
  size_t out_n;
} engine_ctx;

enum { POOL_SLACK = 1 << 14 };

/* Makes room for activations of n tokens. */
static int engine_reserve(engine_ctx *e, size_t n_tokens) {
  size_t need_q = n_tokens * e->n_q * e->head_dim;
  if (need_q > e->out_n) {
    float *o = realloc(e->out, need_q * sizeof *o);
    if (!o) return PKV_ENOMEM;
    e->out = o;
    e->out_n = need_q;
  }
  if (need_q + POOL_SLACK > e->pool_n) {
    size_t n = need_q + POOL_SLACK;
    float *p = realloc(e->pool, n * sizeof *p);
    if (!p) return PKV_ENOMEM;
    uint64_t rng = 42;
    for (size_t i = 0; i < n; i++)
      p[i] = (float)((double)(splitmix(&rng) >> 11) * 0x1p-52 - 1.0);
    e->pool = p;
    e->pool_n = n;
  }
  return 0;
}

/* A deterministic window of the pool for (seq, pos, layer, which). */
static const float *window(const engine_ctx *e, uint64_t seq, uint32_t pos,
                           uint32_t layer, uint32_t which) {
  return e->pool + (tok_of(seq * 4 + which, pos, layer) % (POOL_SLACK / 16)) * 16;
}

static int engine_prefill(void *user, pkv_seq_id seq, uint32_t pos0, uint32_t n) {
  engine_ctx *e = user;
  int rc = engine_reserve(e, n);
  if (rc) return rc;
  for (uint32_t l = 0; l < e->n_layers; l++) {
    rc = pkv_prefill(e->eng, seq, l, pos0, n, window(e, seq, pos0, l, 0),
                     window(e, seq, pos0, l, 1), window(e, seq, pos0, l, 2), e->out);
    if (rc) return rc;
  }
  return 0;
}

static int engine_decode(void *user, const pkv_seq_id *seqs, uint32_t n) {
  engine_ctx *e = user;
  int rc = engine_reserve(e, n);
  if (rc) return rc;
  for (uint32_t l = 0; l < e->n_layers; l++) {
    rc = pkv_decode(e->eng, seqs, n, l, window(e, seqs[0], n, l, 0), window(e, seqs[0], n, l, 1),
                    window(e, seqs[0], n, l, 2), e->out);
    if (rc) return rc;
  }
  return 0;
}

/* ================================================================ progress */

typedef struct progress_ctx {
  cli_progress bar;
  uint64_t t0;
  bool dry; /* no compute: no rate to show */
} progress_ctx;

static void on_step(void *user, const sched_stats *st) {
  progress_ctx *p = user;
  char tail[128], rate[48] = "";
  double secs = (double)(cli_now_ns() - p->t0) / 1e9;
  if (!p->dry)
    snprintf(rate, sizeof rate, "%.0f tok/s, ",
             secs > 0 ? (double)(st->prefill_tokens + st->decode_tokens) / secs : 0.0);
  snprintf(tail, sizeof tail, "%smem %.0f%%, %llu preempted", rate,
           st->num_blocks ? 100.0 * st->blocks_used_now / st->num_blocks : 0.0,
           (unsigned long long)st->preemptions);
  cli_progress_update(&p->bar, st->requests_done + st->requests_rejected, tail);
}

/* ================================================================ output */

static void human_bytes(uint64_t b, char *out, size_t cap) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)b;
  int i = 0;
  while (v >= 1024 && i < 4) v /= 1024, i++;
  snprintf(out, cap, "%.*f %s", i ? 1 : 0, v, u[i]);
}

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

static double per_s(uint64_t n, double s) { return s > 0 ? (double)n / s : 0; }
static double frac(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0; }

/* The paged/contiguous ratio is a like-for-like figure only if every
 * request fits --max-len and the contiguous side fits at least one. */
static bool baseline_comparable(const run_report *rp) {
  return rp->contiguous_fit > 0 && rp->too_long == 0;
}

static void print_baseline(FILE *f, const run_report *rp, const sched_stats *st) {
  uint64_t slots = (uint64_t)rp->num_blocks * rp->block_size;
  fprintf(f, "\ncontiguous baseline (every sequence reserves --max-len %u slots; both sides at most "
             "--max-seqs %u running):\n", rp->max_len, rp->max_seqs);
  fprintf(f, "%-24s %llu sequences at once (min(%llu slots / %u, %u))\n", "contiguous",
          (unsigned long long)rp->contiguous_fit, (unsigned long long)slots, rp->max_len, rp->max_seqs);
  fprintf(f, "%-24s %.1f mean, %u peak running sequences (measured)\n", "paged",
          st->mean_running_busy, st->peak_running);
  if (rp->too_long)
    fprintf(f, "%-24s n/a: %llu of %zu requests need more than --max-len %u tokens (longest %llu), "
               "so a contiguous server could not run them; use --max-len %llu to compare\n",
            "paged / contiguous", (unsigned long long)rp->too_long, rp->n_reqs, rp->max_len,
            (unsigned long long)rp->longest, (unsigned long long)rp->longest);
  else if (!rp->contiguous_fit)
    fprintf(f, "%-24s n/a: --max-len %u is more than the whole pool (%llu slots)\n",
            "paged / contiguous", rp->max_len, (unsigned long long)slots);
  else
    fprintf(f, "%-24s %.2fx (mean), %.2fx (peak)%s\n", "paged / contiguous",
            st->mean_running_busy / (double)rp->contiguous_fit,
            (double)st->peak_running / (double)rp->contiguous_fit,
            st->peak_running >= rp->max_seqs ? "  (paged hit the --max-seqs cap)" : "");
}

static void print_summary(FILE *f, const run_report *rp, const sched_stats *st) {
  char mem[32];
  human_bytes(rp->block_bytes * rp->num_blocks, mem, sizeof mem);
  fprintf(f, "model      %s: %u layers, %u q / %u kv heads, head_dim %u, %s K/V\n", rp->shape->name,
          rp->shape->n_layers, rp->shape->n_q_heads, rp->shape->n_kv_heads, rp->shape->head_dim,
          opts_dtype_name(rp->dtype));
  fprintf(f, "cache      %u blocks x %u tokens (%s), policy %s, %s\n", rp->num_blocks, rp->block_size,
          mem, rp->policy, rp->dry ? "dry run: no engine, external storage" : "owned storage");
  if (!rp->dry) fprintf(f, "engine     %s back end, %u threads\n", rp->backend, rp->threads);
  fprintf(f, "workload   %s\n\n", rp->workload_desc);
  fprintf(f, "%-24s %s\n", "metric", "value");
  fprintf(f, "%-24s %zu done, %zu rejected, of %zu (%llu sequences)\n", "requests",
          st->requests_done, st->requests_rejected, st->requests,
          (unsigned long long)st->sequences_done);
  /* A dry run computes nothing: token counts, no rates or step times. */
  if (rp->dry) {
    fprintf(f, "%-24s %llu tokens scheduled (dry run: no compute, no rate)\n", "prefill",
            (unsigned long long)st->prefill_tokens);
    fprintf(f, "%-24s %llu tokens scheduled (dry run: no compute, no rate)\n", "decode",
            (unsigned long long)st->decode_tokens);
  } else {
    fprintf(f, "%-24s %llu tokens, %.0f tok/s\n", "prefill", (unsigned long long)st->prefill_tokens,
            per_s(st->prefill_tokens, st->prefill_s));
    fprintf(f, "%-24s %llu tokens, %.0f tok/s\n", "decode", (unsigned long long)st->decode_tokens,
            per_s(st->decode_tokens, st->decode_s));
    fprintf(f, "%-24s mean %.3f ms, p99 %.3f ms (%llu steps)\n", "decode step",
            st->decode_step_mean_ms, st->decode_step_p99_ms, (unsigned long long)st->decode_steps);
  }
  fprintf(f, "%-24s peak %.1f%%, mean %.1f%% of %u blocks\n", "memory use",
          100 * frac(st->peak_blocks_used, st->num_blocks), 100.0 * st->mean_blocks_used / st->num_blocks,
          st->num_blocks);
  fprintf(f, "%-24s %.2f%% of reserved slots unused\n", "waste", 100 * st->waste_fraction);
  if (rp->no_sharing)
    fprintf(f, "%-24s none possible: the trace has lengths only (Azure), every prompt is its own\n",
            "prefix hits");
  else
    fprintf(f, "%-24s %.1f%% of prompt tokens reused from the cache, not computed (%llu of %llu)\n",
            "prefix hits", 100 * frac(st->prefix_hit_tokens, st->prompt_tokens),
            (unsigned long long)st->prefix_hit_tokens, (unsigned long long)st->prompt_tokens);
  if (st->readmits)
    fprintf(f, "%-24s %llu readmissions rebuilt %llu tokens: %llu from the cache, %llu recomputed\n",
            "after preemption", (unsigned long long)st->readmits,
            (unsigned long long)st->readmit_tokens, (unsigned long long)st->readmit_hit_tokens,
            (unsigned long long)(st->readmit_tokens - st->readmit_hit_tokens));
  fprintf(f, "%-24s peak %u, mean %.1f while requests waited\n", "running sequences",
          st->peak_running, st->mean_running_busy);
  fprintf(f, "%-24s %llu\n", "forks", (unsigned long long)st->forks);
  fprintf(f, "%-24s %llu\n", "copy-on-write copies", (unsigned long long)st->cow_copies);
  fprintf(f, "%-24s %llu\n", "evictions", (unsigned long long)st->evictions);
  fprintf(f, "%-24s %llu\n", "preemptions", (unsigned long long)st->preemptions);
  fprintf(f, "%-24s %.2f s (%llu steps)\n", "wall time", st->wall_s, (unsigned long long)st->steps);
  if (rp->too_long && !rp->baseline)
    fprintf(f, "%-24s %llu of %zu requests need more than --max-len %u tokens (longest %llu)\n",
            "note", (unsigned long long)rp->too_long, rp->n_reqs, rp->max_len,
            (unsigned long long)rp->longest);
  if (rp->baseline) print_baseline(f, rp, st);
}

/* A rate, or null when there is none (dry run). */
static void json_rate(FILE *f, const char *key, bool have, double v) {
  if (have) fprintf(f, ", \"%s\": %.1f", key, v);
  else fprintf(f, ", \"%s\": null", key);
}

static int write_json(const char *path, const run_report *rp, const sched_stats *st,
                      const sched_step *steps, size_t n_steps) {
  bool to_stdout = !strcmp(path, "-");
  FILE *f = to_stdout ? stdout : fopen(path, "w");
  if (!f) return cli_error("run", "%s: cannot write: %m", path);
  fprintf(f, "{\n  \"model\": {\"name\": \"%s\", \"n_layers\": %u, \"n_q_heads\": %u, "
             "\"n_kv_heads\": %u, \"head_dim\": %u, \"dtype\": \"%s\"},\n",
          rp->shape->name, rp->shape->n_layers, rp->shape->n_q_heads, rp->shape->n_kv_heads,
          rp->shape->head_dim, opts_dtype_name(rp->dtype));
  fprintf(f, "  \"cache\": {\"num_blocks\": %u, \"block_size\": %u, \"block_bytes\": %llu, "
             "\"policy\": ",
          rp->num_blocks, rp->block_size, (unsigned long long)rp->block_bytes);
  cli_json_string(f, rp->policy);
  fprintf(f, ", \"dry\": %s},\n  \"workload\": ", rp->dry ? "true" : "false");
  cli_json_string(f, rp->workload_desc);
  fprintf(f, ",\n  \"summary\": {\"requests\": %zu, \"requests_done\": %zu, \"requests_rejected\": %zu, "
             "\"sequences_done\": %llu, \"prefill_tokens\": %llu, \"decode_tokens\": %llu",
          st->requests, st->requests_done, st->requests_rejected,
          (unsigned long long)st->sequences_done, (unsigned long long)st->prefill_tokens,
          (unsigned long long)st->decode_tokens);
  json_rate(f, "prefill_tok_s", !rp->dry, per_s(st->prefill_tokens, st->prefill_s));
  json_rate(f, "decode_tok_s", !rp->dry, per_s(st->decode_tokens, st->decode_s));
  json_rate(f, "decode_step_mean_ms", !rp->dry, st->decode_step_mean_ms);
  json_rate(f, "decode_step_p99_ms", !rp->dry, st->decode_step_p99_ms);
  fprintf(f, ", \"peak_memory_frac\": %.4f, \"mean_memory_frac\": %.4f, "
             "\"waste_frac\": %.5f, \"prompt_tokens\": %llu, \"prefix_hit_tokens\": %llu, "
             "\"prefix_hit_rate\": %.5f, \"readmits\": %llu, \"readmit_tokens\": %llu, "
             "\"readmit_hit_tokens\": %llu, \"peak_running\": %u, "
             "\"mean_running_busy\": %.2f, \"forks\": %llu, \"cow_copies\": %llu, \"evictions\": %llu, "
             "\"preemptions\": %llu, \"steps\": %llu, \"wall_s\": %.3f, \"max_len\": %u, "
             "\"requests_over_max_len\": %llu",
          frac(st->peak_blocks_used, st->num_blocks), st->mean_blocks_used / st->num_blocks,
          st->waste_fraction, (unsigned long long)st->prompt_tokens,
          (unsigned long long)st->prefix_hit_tokens, frac(st->prefix_hit_tokens, st->prompt_tokens),
          (unsigned long long)st->readmits, (unsigned long long)st->readmit_tokens,
          (unsigned long long)st->readmit_hit_tokens, st->peak_running, st->mean_running_busy,
          (unsigned long long)st->forks, (unsigned long long)st->cow_copies,
          (unsigned long long)st->evictions, (unsigned long long)st->preemptions,
          (unsigned long long)st->steps, st->wall_s, rp->max_len, (unsigned long long)rp->too_long);
  if (rp->baseline) {
    fprintf(f, ", \"max_seqs\": %u, \"contiguous_fit\": %llu", rp->max_seqs,
            (unsigned long long)rp->contiguous_fit);
    json_rate(f, "paged_over_contiguous", baseline_comparable(rp),
              baseline_comparable(rp) ? st->mean_running_busy / (double)rp->contiguous_fit : 0);
  }
  fprintf(f, "},\n  \"steps\": [\n");
  for (size_t i = 0; i < n_steps; i++) {
    const sched_step *s = &steps[i];
    fprintf(f, "    {\"t_s\": %.6f, \"dt_ms\": %.4f, \"running\": %u, \"decode_batch\": %u, "
               "\"prefill_tokens\": %u, \"waiting\": %u, \"blocks_used\": %u, \"tokens\": %llu, "
               "\"waste_slots\": %llu}%s\n",
            s->t_s, s->dt_ms, s->running, s->decode_batch, s->prefill_tokens, s->waiting,
            s->blocks_used, (unsigned long long)s->tokens, (unsigned long long)s->waste_slots,
            i + 1 < n_steps ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  if (to_stdout ? fflush(f) != 0 || ferror(f) : fclose(f) != 0)
    return cli_error("run", "%s: write failed: %m", to_stdout ? "standard output" : path);
  return 0;
}

/* At most PLOT_POINTS points: each stands for a bucket of consecutive steps
 * and carries the bucket's maximum of every series, so thinning never
 * hides a peak.  A dry run has no meaningful clock: plot against steps. */
enum { PLOT_POINTS = 1500 };

static int write_plot(const char *path, const run_report *rp, const sched_step *steps,
                      size_t n_steps) {
  cli_buf b = {0};
  size_t per = n_steps > PLOT_POINTS ? (n_steps + PLOT_POINTS - 1) / PLOT_POINTS : 1;
  cli_buf_printf(&b, "set terminal pngcairo size 900,520 noenhanced\nset output ");
  cli_buf_gnuplot_string(&b, path);
  char title[256];
  snprintf(title, sizeof title, "pagedkv run: %s, %u blocks x %u tokens, policy %s%s",
           rp->shape->name, rp->num_blocks, rp->block_size, rp->policy,
           per > 1 ? " (each point: max of its steps)" : "");
  cli_buf_printf(&b, "\nset title ");
  cli_buf_gnuplot_string(&b, title);
  cli_buf_printf(&b, "\nset xlabel '%s'\nset ylabel 'memory use (%% of blocks)'\n"
                     "set y2label 'sequences'\nset yrange [0:105]\nset y2range [0:*]\n"
                     "set ytics nomirror\nset y2tics\nset grid\nset key left bottom\n$d << EOD\n",
                 rp->dry ? "scheduler step" : "time (s)");
  for (size_t i = 0; i < n_steps; i += per) {
    uint32_t used = 0, running = 0, batch = 0;
    size_t end = i + per < n_steps ? i + per : n_steps;
    for (size_t k = i; k < end; k++) {
      if (steps[k].blocks_used > used) used = steps[k].blocks_used;
      if (steps[k].running > running) running = steps[k].running;
      if (steps[k].decode_batch > batch) batch = steps[k].decode_batch;
    }
    cli_buf_printf(&b, "%.4f %.2f %u %u\n", rp->dry ? (double)i : steps[i].t_s,
                   100.0 * used / rp->num_blocks, running, batch);
  }
  cli_buf_printf(&b, "EOD\nplot $d using 1:2 with lines lw 2 title 'memory use (%%)', "
                     "$d using 1:3 axes x1y2 with lines lw 1 title 'running sequences', "
                     "$d using 1:4 axes x1y2 with lines lw 1 dt 3 title 'decode batch'\n");
  int rc = b.oom ? cli_error("run", "out of memory (plot script)") : cli_gnuplot("run", b.s) ? 1 : 0;
  free(b.s);
  return rc;
}

/* ================================================================ command */

static void run_help(void) {
  printf(
      "Usage: pagedkv run [OPTIONS]\n"
      "\n"
      "Runs a continuous-batching serving workload on the paged KV cache and the\n"
      "attention engine (every layer, deterministic synthetic Q/K/V) and prints a\n"
      "summary.  With no options: the tiny model on a seeded synthetic workload.\n"
      "\n"
      "Model:\n"
      "      --model NAME        tiny (default), small, llama3-8b, llama3-70b\n"
      "      --layers N, --q-heads N, --kv-heads N, --head-dim N   override the preset\n"
      "      --dtype T           K/V type: f32, f16, bf16 (default: the preset's)\n"
      "Cache:\n"
      "  -b, --block-size N      tokens per block (default 16)\n"
      "  -M, --memory BYTES      KV budget, with K/M/G suffix (e.g. 4G)\n"
      "      --blocks N          or the number of blocks (default 512)\n"
      "  -p, --policy NAME       eviction policy (default lru)\n"
      "  -t, --threads N         engine threads (default: number of CPUs)\n"
      "      --dry               no engine: external storage, scheduling and memory only\n"
      "Workload (synthetic unless --trace):\n"
      "  -r, --requests N        requests (default 64; with --trace: the first N, 0 = all)\n"
      "      --prompt-len A[-B]  prompt length range (default 64-512)\n"
      "      --output-len A[-B]  generated tokens range (default 16-128)\n"
      "      --groups G          requests share G system prompts (default 8; 0 = none)\n"
      "      --system-len N      shared system prompt length (default 256)\n"
      "  -n, --n N               parallel samples per request, by fork (default 2, 1 with --trace)\n"
      "      --seed S            workload seed (default 1)\n"
      "      --trace FILE        Azure CSV (lengths) or Mooncake JSONL (prompts from hash_ids)\n"
      "      --format F          mooncake or azure (default: from the file name)\n"
      "      --max-output N      cap generated tokens per request (trace workloads)\n"
      "Scheduler:\n"
      "      --max-seqs N        running sequences at most (default 256)\n"
      "      --max-batch-tokens N  tokens per step (default 2048)\n"
      "      --chunk N           prefill chunk per sequence per step (default 512)\n"
      "      --headroom N        admission keeps N free blocks per running sequence (default 2)\n"
      "Output:\n"
      "      --json FILE         summary and per-step time series ('-': standard output,\n"
      "                          the summary then goes to stderr)\n"
      "      --plot FILE.png     memory use and batch size over time (gnuplot, checked first)\n"
      "      --contiguous-baseline  compare with reserving --max-len slots per sequence,\n"
      "                          at the same --max-seqs\n"
      "      --max-len N         the contiguous reservation (default 8192); requests\n"
      "                          longer than this are counted and reported\n"
      "  -q, --quiet             no progress bar\n"
      "  -h, --help              this help\n");
}

/* Builds the workload (synthetic, or the trace's first --requests) into
 * *wl and its description; returns 0 or an exit status (message printed). */
static int build_workload(const run_opts *o, workload *wl, char *desc, size_t desc_cap,
                          uint64_t *longest, uint64_t *too_long) {
  *wl = (workload){.kind = WL_SYNTHETIC, .seed = o->seed, .system_len = (uint32_t)o->sys_len};
  if (o->trace_path) {
    char err[512];
    if (trace_load(o->trace_path, o->format, &wl->tr, err, sizeof err)) return cli_error("run", "%s", err);
    wl->kind = wl->tr.format == TRACE_MOONCAKE ? WL_MOONCAKE : WL_AZURE;
    wl->n = o->n_given && o->n_req && o->n_req < wl->tr.n_reqs ? o->n_req : wl->tr.n_reqs;
    wl->tr.n_reqs = wl->n; /* the first n requests */
    if (wl->kind == WL_MOONCAKE) {
      if (sim_stream_build(&wl->tr, TRACE_MOONCAKE_BLOCK, &wl->stream, err, sizeof err))
        return cli_error("run", "%s", err);
      wl->have_stream = true;
    }
  } else {
    wl->n = o->n_req;
  }
  wl->prompt_len = malloc(wl->n * sizeof *wl->prompt_len);
  wl->output_len = malloc(wl->n * sizeof *wl->output_len);
  wl->n_samples = malloc(wl->n * sizeof *wl->n_samples);
  wl->group = malloc(wl->n * sizeof *wl->group);
  if (!wl->prompt_len || !wl->output_len || !wl->n_samples || !wl->group)
    return cli_error("run", "out of memory");
  uint64_t rng = o->seed * 7919 + 17, total_prompt = 0, total_out = 0;
  *longest = *too_long = 0;
  for (size_t r = 0; r < wl->n; r++) {
    if (o->trace_path) {
      wl->prompt_len[r] = wl->tr.reqs[r].input_len;
      uint32_t out = wl->tr.reqs[r].output_len ? wl->tr.reqs[r].output_len : 1;
      wl->output_len[r] = o->max_output && out > o->max_output ? (uint32_t)o->max_output : out;
      wl->group[r] = 0;
    } else {
      wl->group[r] = o->groups ? (uint32_t)(splitmix(&rng) % o->groups) : 0;
      uint32_t user = uniform(&rng, o->plen);
      wl->prompt_len[r] = (o->groups ? (uint32_t)o->sys_len : 0) + user;
      wl->output_len[r] = uniform(&rng, o->olen);
    }
    wl->n_samples[r] = (uint32_t)o->samples;
    total_prompt += wl->prompt_len[r];
    total_out += (uint64_t)wl->output_len[r] * o->samples;
    uint64_t len = (uint64_t)wl->prompt_len[r] + wl->output_len[r];
    if (len > *longest) *longest = len;
    *too_long += len > o->max_len;
  }
  if (!o->trace_path && !o->groups) wl->system_len = 0;
  if (o->trace_path)
    snprintf(desc, desc_cap, "%s (%s), %zu requests, %llu prompt + %llu output tokens%s",
             o->trace_path, trace_format_name(wl->tr.format), wl->n,
             (unsigned long long)total_prompt, (unsigned long long)total_out,
             o->samples > 1 ? ", with samples" : "");
  else
    snprintf(desc, desc_cap,
             "synthetic seed %llu: %zu requests, prompts %llu-%llu (+%llu shared by %llu groups), "
             "outputs %llu-%llu, %llu sample%s",
             (unsigned long long)o->seed, wl->n, (unsigned long long)o->plen.lo,
             (unsigned long long)o->plen.hi, o->groups ? (unsigned long long)o->sys_len : 0ull,
             (unsigned long long)o->groups, (unsigned long long)o->olen.lo,
             (unsigned long long)o->olen.hi, (unsigned long long)o->samples,
             o->samples > 1 ? "s" : "");
  return 0;
}

int cmd_run(int argc, char **argv) {
  run_opts o;
  char perr[512];
  int prc = run_opts_parse(argc, argv, &o, perr, sizeof perr);
  if (prc) return cli_usage_error("run", "%s", perr);
  if (o.help) {
    run_help();
    return 0;
  }
  if (!pkv_policy_find(o.policy)) return cli_usage_error("run", "--policy: unknown policy '%s'", o.policy);
  if (o.plot && !cli_gnuplot_available("run")) return 1; /* before the run, not after */
  const model_shape shape = o.shape;

  /* ---- workload */
  workload wl;
  char desc[512];
  int status = 1;
  pkv_cache *cache = NULL;
  engine_ctx ec = {0};
  sched_step *steps = NULL;
  size_t n_steps = 0;
  uint64_t longest = 0, too_long = 0;
  if ((status = build_workload(&o, &wl, desc, sizeof desc, &longest, &too_long))) goto out;
  status = 1;

  /* ---- cache */
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = shape.n_layers;
  cfg.n_kv_heads = shape.n_kv_heads;
  cfg.head_dim = shape.head_dim;
  cfg.block_size = (uint32_t)o.block_size;
  cfg.dtype = shape.dtype;
  cfg.policy = o.policy;
  cfg.storage = o.dry ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED;
  uint64_t block_bytes = pkv_config_block_bytes(&cfg);
  if (!block_bytes) {
    status = cli_usage_error("run", "model shape too large for one block");
    goto out;
  }
  uint64_t blocks = o.blocks;
  if (o.memory) {
    blocks = o.memory / block_bytes;
    if (!blocks) {
      status = cli_usage_error("run", "--memory %llu bytes holds no block of %llu bytes",
                               (unsigned long long)o.memory, (unsigned long long)block_bytes);
      goto out;
    }
  }
  if (!blocks) blocks = 512;
  if (blocks > INT32_MAX) {
    status = cli_usage_error("run", "--memory: %llu blocks of %llu bytes is more than a cache can have (%d)",
                             (unsigned long long)blocks, (unsigned long long)block_bytes, INT32_MAX);
    goto out;
  }
  cfg.num_blocks = (uint32_t)blocks;
  int rc = pkv_cache_create(&cfg, &cache);
  if (rc) {
    cli_error("run", "cache: %s (%s)", pkv_strerror(rc), pkv_last_error());
    goto out;
  }
  const char *backend = "-";

  if (!o.dry) {
    pkv_engine_config ecfg;
    pkv_engine_config_init(&ecfg);
    ecfg.n_q_heads = shape.n_q_heads;
    ecfg.n_threads = (uint32_t)o.threads;
    if ((rc = pkv_engine_create(cache, &ecfg, &ec.eng))) {
      cli_error("run", "engine: %s (%s)", pkv_strerror(rc), pkv_last_error());
      goto out;
    }
    backend = pkv_engine_backend(ec.eng);
    ec.n_layers = shape.n_layers;
    ec.n_q = shape.n_q_heads;
    ec.n_kv = shape.n_kv_heads;
    ec.head_dim = shape.head_dim;
  }

  /* ---- run */
  sched_config sc;
  sched_config_init(&sc);
  sc.max_seqs = (uint32_t)o.max_seqs;
  sc.max_batch_tokens = (uint32_t)o.mbt;
  sc.prefill_chunk = (uint32_t)o.chunk;
  sc.headroom_blocks = (uint32_t)o.headroom;
  sc.record_steps = o.json || o.plot;
  progress_ctx pc;
  cli_progress_init(&pc.bar, "run", wl.n, o.quiet);
  pc.t0 = cli_now_ns();
  pc.dry = o.dry;
  sc.on_step = on_step;
  sc.on_step_user = &pc;
  sched_workload sw = {.n_reqs = wl.n, .prompt_len = wl.prompt_len, .output_len = wl.output_len,
                       .n_samples = wl.n_samples, .prompt = workload_prompt, .ctx = &wl};
  sched_compute comp = {.prefill = engine_prefill, .decode = engine_decode, .user = &ec};
  sched_stats st;
  char err[512];
  rc = sched_run(cache, &sw, &sc, o.dry ? NULL : &comp, &st, &steps, &n_steps, err, sizeof err);
  cli_progress_finish(&pc.bar);
  if (rc) {
    cli_error("run", "%s", err);
    goto out;
  }
  char check[256];
  if ((rc = pkv_check(cache, check, sizeof check))) {
    cli_error("run", "cache invariant violated after the run: %s", check);
    goto out;
  }
  /* Contiguous reservation of --max-len slots per sequence, under the same
   * --max-seqs limit as the paged run (like with like). */
  uint64_t fit = blocks * o.block_size / o.max_len;
  run_report rp = {.shape = &shape, .dtype = shape.dtype, .block_size = (uint32_t)o.block_size,
                   .num_blocks = (uint32_t)blocks, .threads = (uint32_t)o.threads,
                   .block_bytes = block_bytes, .policy = o.policy, .backend = backend,
                   .workload_desc = desc, .dry = o.dry, .baseline = o.baseline,
                   .max_len = (uint32_t)o.max_len, .max_seqs = (uint32_t)o.max_seqs,
                   .contiguous_fit = fit < o.max_seqs ? fit : o.max_seqs,
                   .too_long = too_long, .longest = longest, .n_reqs = wl.n,
                   .no_sharing = wl.kind == WL_AZURE};
  /* JSON on standard output: the summary goes to stderr so stdout parses. */
  bool json_stdout = o.json && !strcmp(o.json, "-");
  print_summary(json_stdout ? stderr : stdout, &rp, &st);
  status = 0;
  if (o.json && write_json(o.json, &rp, &st, steps, n_steps)) status = 1;
  if (o.plot && write_plot(o.plot, &rp, steps, n_steps)) status = 1;
out:
  free(steps);
  if (ec.eng) pkv_engine_destroy(ec.eng);
  free(ec.pool);
  free(ec.out);
  pkv_cache_destroy(cache);
  workload_free(&wl);
  return status;
}
