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
 *
 * This file strings the phases together (options -> workload -> cache and
 * engine -> scheduler -> report); each phase has its own file (run.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "run.h"

/* The progress bar: done requests, tokens per second, memory. */
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

/* The cache: the model's shape, --memory or --blocks of it.  Returns 0 or
 * an exit status (message printed). */
static int make_cache(const run_opts *o, pkv_cache **cache, uint64_t *blocks_out,
                      uint64_t *block_bytes_out) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = o->shape.n_layers;
  cfg.n_kv_heads = o->shape.n_kv_heads;
  cfg.head_dim = o->shape.head_dim;
  cfg.block_size = (uint32_t)o->block_size;
  cfg.dtype = o->shape.dtype;
  cfg.policy = o->policy;
  cfg.storage = o->dry ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED;
  uint64_t block_bytes = pkv_config_block_bytes(&cfg);
  if (!block_bytes) return cli_usage_error("run", "model shape too large for one block");
  uint64_t blocks = o->blocks;
  if (o->memory) {
    blocks = o->memory / block_bytes;
    if (!blocks)
      return cli_usage_error("run", "--memory %llu bytes holds no block of %llu bytes",
                             (unsigned long long)o->memory, (unsigned long long)block_bytes);
  }
  if (!blocks) blocks = 512;
  if (blocks > INT32_MAX)
    return cli_usage_error("run", "--memory: %llu blocks of %llu bytes is more than a cache can have (%d)",
                           (unsigned long long)blocks, (unsigned long long)block_bytes, INT32_MAX);
  cfg.num_blocks = (uint32_t)blocks;
  tool_tiers_config(&o->tiers, &cfg);
  int rc = pkv_cache_create(&cfg, cache);
  if (rc) return cli_error("run", "cache: %s (%s)", pkv_strerror(rc), pkv_last_error());
  char err[4200];
  if ((rc = tool_tiers_attach(&o->tiers, *cache, NULL, NULL, err, sizeof err)) != 0) {
    pkv_cache_destroy(*cache);
    *cache = NULL;
    if (rc == PKV_EINVAL && o->tiers.redis) return cli_usage_error("run", "%s", err);
    return cli_error("run", "%s", err);
  }
  *blocks_out = blocks;
  *block_bytes_out = block_bytes;
  return 0;
}

/* The engine on the cache (not for --dry). */
static int make_engine(const run_opts *o, pkv_cache *cache, engine_ctx *ec, const char **backend) {
  pkv_engine_config ecfg;
  pkv_engine_config_init(&ecfg);
  ecfg.n_q_heads = o->shape.n_q_heads;
  ecfg.n_threads = (uint32_t)o->threads;
  int rc = pkv_engine_create(cache, &ecfg, &ec->eng);
  if (rc) return cli_error("run", "engine: %s (%s)", pkv_strerror(rc), pkv_last_error());
  *backend = pkv_engine_backend(ec->eng);
  ec->n_layers = o->shape.n_layers;
  ec->n_q = o->shape.n_q_heads;
  ec->n_kv = o->shape.n_kv_heads;
  ec->head_dim = o->shape.head_dim;
  return 0;
}

/* The scheduler over the workload, with a progress bar; the cache must be
 * sound afterwards.  Returns 0 or 1 (message printed). */
static int schedule(const run_opts *o, pkv_cache *cache, workload *wl, engine_ctx *ec,
                    sched_stats *st, sched_step **steps, size_t *n_steps) {
  sched_config sc;
  sched_config_init(&sc);
  sc.max_seqs = (uint32_t)o->max_seqs;
  sc.max_batch_tokens = (uint32_t)o->mbt;
  sc.prefill_chunk = (uint32_t)o->chunk;
  sc.headroom_blocks = (uint32_t)o->headroom;
  sc.record_steps = o->json || o->plot;
  progress_ctx pc;
  cli_progress_init(&pc.bar, "run", wl->n, o->quiet);
  pc.t0 = cli_now_ns();
  pc.dry = o->dry;
  sc.on_step = on_step;
  sc.on_step_user = &pc;
  sched_workload sw = {.n_reqs = wl->n, .prompt_len = wl->prompt_len, .output_len = wl->output_len,
                       .n_samples = wl->n_samples, .prompt = run_workload_prompt, .ctx = wl};
  sched_compute comp = {.prefill = run_engine_prefill, .decode = run_engine_decode, .user = ec};
  char err[512];
  int rc = sched_run(cache, &sw, &sc, o->dry ? NULL : &comp, st, steps, n_steps, err, sizeof err);
  cli_progress_finish(&pc.bar);
  if (rc) return cli_error("run", "%s", err);
  char check[256];
  if (pkv_check(cache, check, sizeof check))
    return cli_error("run", "cache invariant violated after the run: %s", check);
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
  workload wl;
  char desc[512];
  pkv_cache *cache = NULL;
  engine_ctx ec = {0};
  sched_step *steps = NULL;
  size_t n_steps = 0;
  uint64_t longest = 0, too_long = 0, blocks = 0, block_bytes = 0;
  const char *backend = "-";
  sched_stats st;
  int status = run_build_workload(&o, &wl, desc, sizeof desc, &longest, &too_long);
  if (!status) status = make_cache(&o, &cache, &blocks, &block_bytes);
  if (!status && !o.dry) status = make_engine(&o, cache, &ec, &backend);
  if (!status) status = schedule(&o, cache, &wl, &ec, &st, &steps, &n_steps);
  if (status) goto out;
  /* Contiguous reservation of --max-len slots per sequence, under the same
   * --max-seqs limit as the paged run (like with like). */
  uint64_t fit = blocks * o.block_size / o.max_len;
  run_report rp = {.shape = &o.shape, .dtype = o.shape.dtype, .block_size = (uint32_t)o.block_size,
                   .num_blocks = (uint32_t)blocks, .threads = (uint32_t)o.threads,
                   .block_bytes = block_bytes, .policy = o.policy, .backend = backend,
                   .workload_desc = desc, .dry = o.dry, .baseline = o.baseline,
                   .max_len = (uint32_t)o.max_len, .max_seqs = (uint32_t)o.max_seqs,
                   .contiguous_fit = fit < o.max_seqs ? fit : o.max_seqs,
                   .too_long = too_long, .longest = longest, .n_reqs = wl.n,
                   .no_sharing = wl.kind == WL_AZURE};
  /* JSON on standard output: the summary goes to stderr so stdout parses. */
  bool json_stdout = o.json && !strcmp(o.json, "-");
  run_print_summary(json_stdout ? stderr : stdout, &rp, &st);
  if (tool_tiers_any(&o.tiers)) { /* hits per tier */
    uint64_t tier_tok[PKV_TIER_MAX];
    tool_tiers_hits(cache, tier_tok, NULL);
    FILE *tf = json_stdout ? stderr : stdout;
    fprintf(tf, "tiers: prompt tokens promoted from host %llu, from file %llu, from redis %llu\n",
            (unsigned long long)tier_tok[PKV_TIER_HOST], (unsigned long long)tier_tok[PKV_TIER_FILE],
            (unsigned long long)tier_tok[PKV_TIER_REDIS]);
    tool_tiers_print(tf, cache);
  }
  if (o.json && run_write_json(o.json, &rp, &st, steps, n_steps)) status = 1;
  if (o.plot && run_write_plot(o.plot, &rp, steps, n_steps)) status = 1;
out:
  free(steps);
  run_engine_free(&ec);
  pkv_cache_destroy(cache);
  run_workload_free(&wl);
  return status;
}
