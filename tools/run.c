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
#include "pagedkv/engine.h"
#include "scheduler.h"
#include "sim.h"
#include "trace.h"

/* ================================================================ presets */

typedef struct model_shape {
  const char *name;
  uint32_t n_layers, n_q_heads, n_kv_heads, head_dim;
  pkv_dtype dtype;
} model_shape;

static const model_shape presets[] = {
    {"tiny", 2, 4, 2, 64, PKV_DTYPE_F32},
    {"small", 8, 16, 4, 64, PKV_DTYPE_F16},
    {"llama3-8b", 32, 32, 8, 128, PKV_DTYPE_F16},
    {"llama3-70b", 80, 64, 8, 128, PKV_DTYPE_BF16},
};

static const char *dtype_name(pkv_dtype d) {
  return d == PKV_DTYPE_F32 ? "f32" : d == PKV_DTYPE_F16 ? "f16" : "bf16";
}

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

typedef struct range {
  uint64_t lo, hi;
} range;

static bool parse_range(const char *s, uint64_t min, range *out) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s", s);
  char *dash = strchr(buf, '-');
  if (dash) *dash = '\0';
  if (!cli_parse_u64(buf, min, UINT32_MAX / 4, &out->lo)) return false;
  if (!dash) {
    out->hi = out->lo;
    return true;
  }
  return cli_parse_u64(dash + 1, out->lo, UINT32_MAX / 4, &out->hi);
}

static uint32_t uniform(uint64_t *rng, range r) {
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
} progress_ctx;

static void on_step(void *user, const sched_stats *st) {
  progress_ctx *p = user;
  char tail[128];
  double secs = (double)(cli_now_ns() - p->t0) / 1e9;
  snprintf(tail, sizeof tail, "%.0f tok/s, mem %.0f%%, %llu preempted",
           secs > 0 ? (double)(st->prefill_tokens + st->decode_tokens) / secs : 0.0,
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
  uint32_t max_len;
  uint64_t contiguous_fit, too_long;
} run_report;

static double per_s(uint64_t n, double s) { return s > 0 ? (double)n / s : 0; }

static void print_summary(const run_report *rp, const sched_stats *st) {
  char mem[32];
  human_bytes(rp->block_bytes * rp->num_blocks, mem, sizeof mem);
  printf("model      %s: %u layers, %u q / %u kv heads, head_dim %u, %s K/V\n", rp->shape->name,
         rp->shape->n_layers, rp->shape->n_q_heads, rp->shape->n_kv_heads, rp->shape->head_dim,
         dtype_name(rp->dtype));
  printf("cache      %u blocks x %u tokens (%s), policy %s, %s\n", rp->num_blocks, rp->block_size,
         mem, rp->policy, rp->dry ? "dry run: no engine, external storage" : "owned storage");
  if (!rp->dry) printf("engine     %s back end, %u threads\n", rp->backend, rp->threads);
  printf("workload   %s\n\n", rp->workload_desc);
  printf("%-24s %s\n", "metric", "value");
  printf("%-24s %zu done, %zu rejected, of %zu (%llu sequences)\n", "requests",
         st->requests_done, st->requests_rejected, st->requests,
         (unsigned long long)st->sequences_done);
  printf("%-24s %llu tokens, %.0f tok/s\n", "prefill", (unsigned long long)st->prefill_tokens,
         per_s(st->prefill_tokens, st->prefill_s));
  printf("%-24s %llu tokens, %.0f tok/s\n", "decode", (unsigned long long)st->decode_tokens,
         per_s(st->decode_tokens, st->decode_s));
  printf("%-24s mean %.3f ms, p99 %.3f ms (%llu steps)\n", "decode step",
         st->decode_step_mean_ms, st->decode_step_p99_ms, (unsigned long long)st->decode_steps);
  printf("%-24s peak %.1f%%, mean %.1f%% of %u blocks\n", "memory use",
         100.0 * st->peak_blocks_used / st->num_blocks, 100.0 * st->mean_blocks_used / st->num_blocks,
         st->num_blocks);
  printf("%-24s %.2f%% of reserved slots unused\n", "waste", 100 * st->waste_fraction);
  printf("%-24s %.1f%% of prompt tokens (%llu of %llu)\n", "prefix hits",
         st->prompt_tokens ? 100.0 * st->prefix_hit_tokens / st->prompt_tokens : 0.0,
         (unsigned long long)st->prefix_hit_tokens, (unsigned long long)st->prompt_tokens);
  printf("%-24s peak %u, mean %.1f while requests waited\n", "running sequences",
         st->peak_running, st->mean_running_busy);
  printf("%-24s %llu\n", "forks", (unsigned long long)st->forks);
  printf("%-24s %llu\n", "copy-on-write copies", (unsigned long long)st->cow_copies);
  printf("%-24s %llu\n", "evictions", (unsigned long long)st->evictions);
  printf("%-24s %llu\n", "preemptions", (unsigned long long)st->preemptions);
  printf("%-24s %.2f s (%llu steps)\n", "wall time", st->wall_s, (unsigned long long)st->steps);
  if (rp->baseline) {
    double paged = st->mean_running_busy;
    printf("\ncontiguous baseline (every sequence reserves --max-len %u slots):\n", rp->max_len);
    printf("%-24s %llu sequences at once (%u slots / %u)\n", "contiguous", (unsigned long long)rp->contiguous_fit,
           rp->num_blocks * rp->block_size, rp->max_len);
    printf("%-24s %.1f mean, %u peak running sequences (measured)\n", "paged", paged, st->peak_running);
    printf("%-24s %.2fx (mean), %.2fx (peak)\n", "paged / contiguous",
           rp->contiguous_fit ? paged / (double)rp->contiguous_fit : INFINITY,
           rp->contiguous_fit ? (double)st->peak_running / (double)rp->contiguous_fit : INFINITY);
    if (rp->too_long)
      printf("%-24s %llu requests are longer than --max-len (they could not run contiguously)\n",
             "note", (unsigned long long)rp->too_long);
  }
}

static int write_json(const char *path, const run_report *rp, const sched_stats *st,
                      const sched_step *steps, size_t n_steps) {
  FILE *f = fopen(path, "w");
  if (!f) return cli_error("run", "%s: cannot write: %m", path);
  fprintf(f, "{\n  \"model\": {\"name\": \"%s\", \"n_layers\": %u, \"n_q_heads\": %u, "
             "\"n_kv_heads\": %u, \"head_dim\": %u, \"dtype\": \"%s\"},\n",
          rp->shape->name, rp->shape->n_layers, rp->shape->n_q_heads, rp->shape->n_kv_heads,
          rp->shape->head_dim, dtype_name(rp->dtype));
  fprintf(f, "  \"cache\": {\"num_blocks\": %u, \"block_size\": %u, \"block_bytes\": %llu, "
             "\"policy\": ",
          rp->num_blocks, rp->block_size, (unsigned long long)rp->block_bytes);
  cli_json_string(f, rp->policy);
  fprintf(f, ", \"dry\": %s},\n  \"workload\": ", rp->dry ? "true" : "false");
  cli_json_string(f, rp->workload_desc);
  fprintf(f, ",\n  \"summary\": {\"requests\": %zu, \"requests_done\": %zu, \"requests_rejected\": %zu, "
             "\"sequences_done\": %llu, \"prefill_tokens\": %llu, \"prefill_tok_s\": %.1f, "
             "\"decode_tokens\": %llu, \"decode_tok_s\": %.1f, \"decode_step_mean_ms\": %.4f, "
             "\"decode_step_p99_ms\": %.4f, \"peak_memory_frac\": %.4f, \"mean_memory_frac\": %.4f, "
             "\"waste_frac\": %.5f, \"prefix_hit_rate\": %.5f, \"peak_running\": %u, "
             "\"mean_running_busy\": %.2f, \"forks\": %llu, \"cow_copies\": %llu, \"evictions\": %llu, "
             "\"preemptions\": %llu, \"steps\": %llu, \"wall_s\": %.3f",
          st->requests, st->requests_done, st->requests_rejected,
          (unsigned long long)st->sequences_done, (unsigned long long)st->prefill_tokens,
          per_s(st->prefill_tokens, st->prefill_s), (unsigned long long)st->decode_tokens,
          per_s(st->decode_tokens, st->decode_s), st->decode_step_mean_ms, st->decode_step_p99_ms,
          (double)st->peak_blocks_used / st->num_blocks, st->mean_blocks_used / st->num_blocks,
          st->waste_fraction,
          st->prompt_tokens ? (double)st->prefix_hit_tokens / (double)st->prompt_tokens : 0.0,
          st->peak_running, st->mean_running_busy, (unsigned long long)st->forks,
          (unsigned long long)st->cow_copies, (unsigned long long)st->evictions,
          (unsigned long long)st->preemptions, (unsigned long long)st->steps, st->wall_s);
  if (rp->baseline)
    fprintf(f, ", \"max_len\": %u, \"contiguous_fit\": %llu, \"paged_over_contiguous\": %.3f",
            rp->max_len, (unsigned long long)rp->contiguous_fit,
            rp->contiguous_fit ? st->mean_running_busy / (double)rp->contiguous_fit : 0.0);
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
  if (fclose(f)) return cli_error("run", "%s: write failed: %m", path);
  return 0;
}

static int write_plot(const char *path, const run_report *rp, const sched_step *steps,
                      size_t n_steps) {
  /* Thin the series to at most ~1500 points so the script and the image
   * stay small.  A dry run has no meaningful clock: plot against steps. */
  size_t stride = n_steps > 1500 ? n_steps / 1500 : 1;
  size_t cap = 256 + (n_steps / stride + 1) * 48;
  char *sc = malloc(cap);
  if (!sc) return cli_error("run", "out of memory");
  size_t len = (size_t)snprintf(
      sc, cap,
      "set terminal pngcairo size 900,520 noenhanced\nset output '%s'\n"
      "set title 'pagedkv run: %s, %u blocks x %u tokens, policy %s'\n"
      "set xlabel '%s'\nset ylabel 'memory use (%% of blocks)'\nset y2label 'sequences'\n"
      "set yrange [0:105]\nset y2range [0:*]\nset ytics nomirror\nset y2tics\nset grid\n"
      "set key left bottom\n$d << EOD\n",
      path, rp->shape->name, rp->num_blocks, rp->block_size, rp->policy,
      rp->dry ? "scheduler step" : "time (s)");
  for (size_t i = 0; i < n_steps && len < cap; i += stride)
    len += (size_t)snprintf(sc + len, cap - len, "%.4f %.2f %u %u\n",
                            rp->dry ? (double)i : steps[i].t_s,
                            100.0 * steps[i].blocks_used / rp->num_blocks, steps[i].running,
                            steps[i].decode_batch);
  if (len < cap)
    snprintf(sc + len, cap - len,
             "EOD\nplot $d using 1:2 with lines lw 2 title 'memory use (%%)', "
             "$d using 1:3 axes x1y2 with lines lw 1 title 'running sequences', "
             "$d using 1:4 axes x1y2 with lines lw 1 dt 3 title 'decode batch'\n");
  int rc = cli_gnuplot("run", sc);
  free(sc);
  return rc ? 1 : 0;
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
      "      --json FILE         summary and per-step time series\n"
      "      --plot FILE.png     memory use and batch size over time (gnuplot)\n"
      "      --contiguous-baseline  compare with reserving --max-len slots per sequence\n"
      "      --max-len N         the contiguous reservation (default 8192)\n"
      "  -q, --quiet             no progress bar\n"
      "  -h, --help              this help\n");
}

enum {
  O_MODEL = 256, O_LAYERS, O_QH, O_KVH, O_HD, O_DTYPE, O_BLOCKS, O_DRY, O_PLEN, O_OLEN,
  O_GROUPS, O_SYSLEN, O_SAMPLES, O_SEED, O_TRACE, O_FORMAT, O_MAXOUT, O_MAXSEQS, O_MBT,
  O_CHUNK, O_HEADROOM, O_JSON, O_PLOT, O_BASE, O_MAXLEN
};

int cmd_run(int argc, char **argv) {
  static const struct option longopts[] = {
      {"model", required_argument, NULL, O_MODEL},
      {"layers", required_argument, NULL, O_LAYERS},
      {"q-heads", required_argument, NULL, O_QH},
      {"kv-heads", required_argument, NULL, O_KVH},
      {"head-dim", required_argument, NULL, O_HD},
      {"dtype", required_argument, NULL, O_DTYPE},
      {"block-size", required_argument, NULL, 'b'},
      {"memory", required_argument, NULL, 'M'},
      {"blocks", required_argument, NULL, O_BLOCKS},
      {"policy", required_argument, NULL, 'p'},
      {"threads", required_argument, NULL, 't'},
      {"dry", no_argument, NULL, O_DRY},
      {"requests", required_argument, NULL, 'r'},
      {"prompt-len", required_argument, NULL, O_PLEN},
      {"output-len", required_argument, NULL, O_OLEN},
      {"groups", required_argument, NULL, O_GROUPS},
      {"system-len", required_argument, NULL, O_SYSLEN},
      {"samples", required_argument, NULL, O_SAMPLES},
      {"n", required_argument, NULL, O_SAMPLES},
      {"seed", required_argument, NULL, O_SEED},
      {"trace", required_argument, NULL, O_TRACE},
      {"format", required_argument, NULL, O_FORMAT},
      {"max-output", required_argument, NULL, O_MAXOUT},
      {"max-seqs", required_argument, NULL, O_MAXSEQS},
      {"max-batch-tokens", required_argument, NULL, O_MBT},
      {"chunk", required_argument, NULL, O_CHUNK},
      {"headroom", required_argument, NULL, O_HEADROOM},
      {"json", required_argument, NULL, O_JSON},
      {"plot", required_argument, NULL, O_PLOT},
      {"contiguous-baseline", no_argument, NULL, O_BASE},
      {"max-len", required_argument, NULL, O_MAXLEN},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  model_shape shape = presets[0];
  uint64_t layers = 0, qh = 0, kvh = 0, hd = 0, block_size = 16, memory = 0, blocks = 0;
  uint64_t threads = cli_nproc(), n_req = 64, groups = 8, sys_len = 256, samples = 2, seed = 1;
  uint64_t max_output = 0, max_seqs = 0, mbt = 2048, chunk = 512, max_len = 8192, headroom = 2;
  int dtype = -1;
  range plen = {64, 512}, olen = {16, 128};
  const char *policy = "lru", *trace_path = NULL, *json = NULL, *plot = NULL;
  trace_format fmt = TRACE_AUTO;
  bool dry = false, baseline = false, quiet = false, n_given = false, samples_given = false;
  int opt;
  optind = 1;
  opterr = 0;
#define U64(var, lo, hi, flag)                                                         \
  do {                                                                                 \
    if (!cli_parse_u64(optarg, lo, hi, &var))                                          \
      return cli_usage_error("run", "%s: '%s' is not an integer in %llu..%llu", flag,   \
                             optarg, (unsigned long long)(lo), (unsigned long long)(hi)); \
  } while (0)
  while ((opt = getopt_long(argc, argv, ":b:M:p:t:r:n:qh", longopts, NULL)) != -1) {
    switch (opt) {
    case O_MODEL: {
      size_t i = 0, np = sizeof presets / sizeof presets[0];
      while (i < np && strcmp(presets[i].name, optarg)) i++;
      if (i == np)
        return cli_usage_error("run", "--model: unknown preset '%s' (tiny, small, llama3-8b, llama3-70b)", optarg);
      shape = presets[i];
      break;
    }
    case O_LAYERS: U64(layers, 1, 1024, "--layers"); break;
    case O_QH: U64(qh, 1, 1024, "--q-heads"); break;
    case O_KVH: U64(kvh, 1, 1024, "--kv-heads"); break;
    case O_HD: U64(hd, 1, 4096, "--head-dim"); break;
    case O_DTYPE:
      if (!strcmp(optarg, "f32")) dtype = PKV_DTYPE_F32;
      else if (!strcmp(optarg, "f16")) dtype = PKV_DTYPE_F16;
      else if (!strcmp(optarg, "bf16")) dtype = PKV_DTYPE_BF16;
      else return cli_usage_error("run", "--dtype: '%s' is not f32, f16 or bf16", optarg);
      break;
    case 'b': U64(block_size, 1, 65536, "--block-size"); break;
    case 'M':
      if (!cli_parse_bytes(optarg, &memory) || memory == 0)
        return cli_usage_error("run", "--memory: '%s' is not a size in bytes (e.g. 512M, 4G)", optarg);
      break;
    case O_BLOCKS: U64(blocks, 1, INT32_MAX, "--blocks"); break;
    case 'p': policy = optarg; break;
    case 't': U64(threads, 1, 1024, "--threads"); break;
    case O_DRY: dry = true; break;
    case 'r': U64(n_req, 0, 100000000, "--requests"); n_given = true; break;
    case O_PLEN:
      if (!parse_range(optarg, 1, &plen))
        return cli_usage_error("run", "--prompt-len: '%s' is not N or A-B with 1 <= A <= B", optarg);
      break;
    case O_OLEN:
      if (!parse_range(optarg, 1, &olen))
        return cli_usage_error("run", "--output-len: '%s' is not N or A-B with 1 <= A <= B", optarg);
      break;
    case O_GROUPS: U64(groups, 0, 1000000, "--groups"); break;
    case O_SYSLEN: U64(sys_len, 0, 1000000, "--system-len"); break;
    case 'n':
    case O_SAMPLES: U64(samples, 1, 64, "--n"); samples_given = true; break;
    case O_SEED: U64(seed, 0, UINT64_MAX, "--seed"); break;
    case O_TRACE: trace_path = optarg; break;
    case O_FORMAT:
      if (trace_format_parse(optarg, &fmt))
        return cli_usage_error("run", "--format: '%s' is not 'mooncake' or 'azure'", optarg);
      break;
    case O_MAXOUT: U64(max_output, 1, UINT32_MAX, "--max-output"); break;
    case O_MAXSEQS: U64(max_seqs, 1, 1000000, "--max-seqs"); break;
    case O_MBT: U64(mbt, 1, 1u << 24, "--max-batch-tokens"); break;
    case O_CHUNK: U64(chunk, 1, 1u << 24, "--chunk"); break;
    case O_HEADROOM: U64(headroom, 0, 1u << 20, "--headroom"); break;
    case O_JSON: json = optarg; break;
    case O_PLOT: plot = optarg; break;
    case O_BASE: baseline = true; break;
    case O_MAXLEN: U64(max_len, 1, UINT32_MAX, "--max-len"); break;
    case 'q': quiet = true; break;
    case 'h': run_help(); return 0;
    case ':': return cli_usage_error("run", "option '%s' needs a value", argv[optind - 1]);
    default: return cli_usage_error("run", "unknown option '%s'", argv[optind - 1]);
    }
  }
#undef U64
  if (optind < argc) return cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
  if (memory && blocks) return cli_usage_error("run", "--memory and --blocks are exclusive");
  if (layers) shape.n_layers = (uint32_t)layers;
  if (qh) shape.n_q_heads = (uint32_t)qh;
  if (kvh) shape.n_kv_heads = (uint32_t)kvh;
  if (hd) shape.head_dim = (uint32_t)hd;
  if (dtype >= 0) shape.dtype = (pkv_dtype)dtype;
  if (shape.n_q_heads % shape.n_kv_heads)
    return cli_usage_error("run", "--q-heads %u is not a multiple of --kv-heads %u", shape.n_q_heads,
                           shape.n_kv_heads);
  if (!pkv_policy_find(policy)) return cli_usage_error("run", "--policy: unknown policy '%s'", policy);
  if (!max_seqs) max_seqs = baseline ? 100000 : 256;

  /* ---- workload */
  workload wl = {.kind = WL_SYNTHETIC, .seed = seed, .system_len = (uint32_t)sys_len};
  char desc[256];
  int status = 1;
  pkv_cache *cache = NULL;
  engine_ctx ec = {0};
  sched_step *steps = NULL;
  size_t n_steps = 0;
  if (trace_path && !samples_given) samples = 1; /* a trace's requests are what they are */
  if (trace_path) {
    char err[512];
    if (trace_load(trace_path, fmt, &wl.tr, err, sizeof err)) return cli_error("run", "%s", err);
    wl.kind = wl.tr.format == TRACE_MOONCAKE ? WL_MOONCAKE : WL_AZURE;
    wl.n = n_given && n_req && n_req < wl.tr.n_reqs ? n_req : wl.tr.n_reqs;
    wl.tr.n_reqs = wl.n; /* the first n requests */
    if (wl.kind == WL_MOONCAKE) {
      if (sim_stream_build(&wl.tr, TRACE_MOONCAKE_BLOCK, &wl.stream, err, sizeof err)) {
        workload_free(&wl);
        return cli_error("run", "%s", err);
      }
      wl.have_stream = true;
    }
  } else {
    if (!n_req) return cli_usage_error("run", "--requests must be >= 1 for a synthetic workload");
    wl.n = n_req;
  }
  wl.prompt_len = malloc(wl.n * sizeof *wl.prompt_len);
  wl.output_len = malloc(wl.n * sizeof *wl.output_len);
  wl.n_samples = malloc(wl.n * sizeof *wl.n_samples);
  wl.group = malloc(wl.n * sizeof *wl.group);
  if (!wl.prompt_len || !wl.output_len || !wl.n_samples || !wl.group) {
    cli_error("run", "out of memory");
    goto out;
  }
  uint64_t rng = seed * 7919 + 17, total_prompt = 0, total_out = 0, too_long = 0;
  for (size_t r = 0; r < wl.n; r++) {
    if (trace_path) {
      wl.prompt_len[r] = wl.tr.reqs[r].input_len;
      uint32_t o = wl.tr.reqs[r].output_len ? wl.tr.reqs[r].output_len : 1;
      wl.output_len[r] = max_output && o > max_output ? (uint32_t)max_output : o;
      wl.group[r] = 0;
    } else {
      wl.group[r] = groups ? (uint32_t)(splitmix(&rng) % groups) : 0;
      uint32_t user = uniform(&rng, plen);
      wl.prompt_len[r] = (groups ? (uint32_t)sys_len : 0) + user;
      wl.output_len[r] = uniform(&rng, olen);
    }
    wl.n_samples[r] = (uint32_t)samples;
    total_prompt += wl.prompt_len[r];
    total_out += (uint64_t)wl.output_len[r] * samples;
    too_long += (uint64_t)wl.prompt_len[r] + wl.output_len[r] > max_len;
  }
  if (!trace_path && !groups) wl.system_len = 0;
  if (trace_path)
    snprintf(desc, sizeof desc, "%s (%s), %zu requests, %llu prompt + %llu output tokens%s",
             trace_path, trace_format_name(wl.tr.format), wl.n, (unsigned long long)total_prompt,
             (unsigned long long)total_out, samples > 1 ? ", with samples" : "");
  else
    snprintf(desc, sizeof desc,
             "synthetic seed %llu: %zu requests, prompts %llu-%llu (+%llu shared by %llu groups), "
             "outputs %llu-%llu, %llu sample%s",
             (unsigned long long)seed, wl.n, (unsigned long long)plen.lo, (unsigned long long)plen.hi,
             groups ? (unsigned long long)sys_len : 0ull, (unsigned long long)groups,
             (unsigned long long)olen.lo, (unsigned long long)olen.hi, (unsigned long long)samples,
             samples > 1 ? "s" : "");

  /* ---- cache */
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = shape.n_layers;
  cfg.n_kv_heads = shape.n_kv_heads;
  cfg.head_dim = shape.head_dim;
  cfg.block_size = (uint32_t)block_size;
  cfg.dtype = shape.dtype;
  cfg.policy = policy;
  cfg.storage = dry ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED;
  uint64_t block_bytes = pkv_config_block_bytes(&cfg);
  if (!block_bytes) {
    cli_error("run", "model shape too large for one block");
    goto out;
  }
  if (memory) {
    blocks = memory / block_bytes;
    if (!blocks) {
      cli_usage_error("run", "--memory %llu bytes holds no block of %llu bytes",
                      (unsigned long long)memory, (unsigned long long)block_bytes);
      status = CLI_EXIT_USAGE;
      goto out;
    }
  }
  if (!blocks) blocks = 512;
  if (blocks > INT32_MAX) {
    cli_error("run", "%llu blocks is too many", (unsigned long long)blocks);
    goto out;
  }
  cfg.num_blocks = (uint32_t)blocks;
  int rc = pkv_cache_create(&cfg, &cache);
  if (rc) {
    cli_error("run", "cache: %s (%s)", pkv_strerror(rc), pkv_last_error());
    goto out;
  }
  const char *backend = "-";

  if (!dry) {
    pkv_engine_config ecfg;
    pkv_engine_config_init(&ecfg);
    ecfg.n_q_heads = shape.n_q_heads;
    ecfg.n_threads = (uint32_t)threads;
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
  sc.max_seqs = (uint32_t)max_seqs;
  sc.max_batch_tokens = (uint32_t)mbt;
  sc.prefill_chunk = (uint32_t)chunk;
  sc.headroom_blocks = (uint32_t)headroom;
  sc.record_steps = json || plot;
  progress_ctx pc;
  cli_progress_init(&pc.bar, "run", wl.n, quiet);
  pc.t0 = cli_now_ns();
  sc.on_step = on_step;
  sc.on_step_user = &pc;
  sched_workload sw = {.n_reqs = wl.n, .prompt_len = wl.prompt_len, .output_len = wl.output_len,
                       .n_samples = wl.n_samples, .prompt = workload_prompt, .ctx = &wl};
  sched_compute comp = {.prefill = engine_prefill, .decode = engine_decode, .user = &ec};
  sched_stats st;
  char err[512];
  rc = sched_run(cache, &sw, &sc, dry ? NULL : &comp, &st, &steps, &n_steps, err, sizeof err);
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
  run_report rp = {.shape = &shape, .dtype = shape.dtype, .block_size = (uint32_t)block_size,
                   .num_blocks = (uint32_t)blocks, .threads = (uint32_t)threads,
                   .block_bytes = block_bytes, .policy = policy, .backend = backend,
                   .workload_desc = desc, .dry = dry, .baseline = baseline,
                   .max_len = (uint32_t)max_len,
                   .contiguous_fit = blocks * block_size / max_len, .too_long = too_long};
  print_summary(&rp, &st);
  status = 0;
  if (json && write_json(json, &rp, &st, steps, n_steps)) status = 1;
  if (plot && write_plot(plot, &rp, steps, n_steps)) status = 1;
out:
  free(steps);
  if (ec.eng) pkv_engine_destroy(ec.eng);
  free(ec.pool);
  free(ec.out);
  pkv_cache_destroy(cache);
  workload_free(&wl);
  return status;
}
