/*
 * run_report.c — what `pagedkv run` prints and writes: the summary table
 * (and the contiguous baseline beside it), the JSON summary with one record
 * per step, the memory/batch plot over time, and the command's help.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"
#include "run.h"

static void human_bytes(uint64_t b, char *out, size_t cap) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)b;
  int i = 0;
  while (v >= 1024 && i < 4) v /= 1024, i++;
  snprintf(out, cap, "%.*f %s", i ? 1 : 0, v, u[i]);
}

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

void run_print_summary(FILE *f, const run_report *rp, const sched_stats *st) {
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

int run_write_json(const char *path, const run_report *rp, const sched_stats *st,
                   const sched_step *steps, size_t n_steps) {
  FILE *f = report_open(path);
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
  return report_close("run", f, path);
}

/* At most PLOT_POINTS points: each stands for a bucket of consecutive steps
 * and carries the bucket's maximum of every series, so thinning never
 * hides a peak.  A dry run has no meaningful clock: plot against steps. */
enum { PLOT_POINTS = 1500 };

int run_write_plot(const char *path, const run_report *rp, const sched_step *steps,
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

void run_help(void) {
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
      "      --dtype T           K/V type: f32, f16, bf16, or quantized i8, fp8_e4m3,\n"
      "                          fp8_e5m2 (default: the preset's)\n"
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
      "      --host-bytes N      a host tier of N bytes below the pool (demote on eviction,\n"
      "                          promote on a prefix match); --host-policy P its policy\n"
      "      --file-dir DIR      a file tier in DIR below it (--file-bytes N caps it; not with\n"
      "                          --dry); the summary reports tokens promoted per tier\n"
      "      --redis HOST:PORT[/PREFIX]  a Redis tier below those (or unix:/PATH; key\n"
      "                          prefix default pkv:; not with --dry)\n"
      "      --contiguous-baseline  compare with reserving --max-len slots per sequence,\n"
      "                          at the same --max-seqs\n"
      "      --max-len N         the contiguous reservation (default 8192); requests\n"
      "                          longer than this are counted and reported\n"
      "  -q, --quiet             no progress bar\n"
      "  -h, --help              this help\n");
}
