/*
 * sim_report.c — what `pagedkv sim` prints and writes: the table (one row
 * per replay, with the share of the LRU-to-Belady gap each policy closes),
 * the notes under it that say what the figures cannot, CSV, JSON and the
 * hit-ratio-vs-capacity plot, and the command's help.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"
#include "sim.h"
#include "tiers.h"

double sim_ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0; }

double sim_headline(sim_model model, const sim_result *r) {
  return model == SIM_MODEL_MANAGER ? sim_ratio(r->hit_tokens, r->prompt_tokens)
                                    : sim_ratio(r->block_hits, r->lookups);
}

static const sim_result *find_result(const sim_plan *pl, const char *policy,
                                     uint32_t capacity) {
  for (size_t i = 0; i < pl->n_jobs; i++)
    if (pl->jobs[i].res.capacity == capacity && !strcmp(pl->jobs[i].res.policy, policy))
      return &pl->jobs[i].res;
  return NULL;
}

void sim_print_table(FILE *f, const sim_plan *pl, const uint64_t *caps, size_t n_caps) {
  bool mgr = pl->model == SIM_MODEL_MANAGER;
  fprintf(f, "%-10s %-12s %10s %10s %10s %9s %8s %8s\n", "capacity", "policy",
          mgr ? "prefix_hit" : "hit_ratio", "block_hit", "gap_closed", "evictions",
          "dropped", "time_s");
  for (size_t c = 0; c < n_caps; c++) {
    const sim_result *lru = find_result(pl, "lru", (uint32_t)caps[c]);
    const sim_result *bel = find_result(pl, "belady", (uint32_t)caps[c]);
    for (size_t i = 0; i < pl->n_jobs; i++) {
      const sim_result *r = &pl->jobs[i].res;
      if (r->capacity != caps[c]) continue;
      char gap[16] = "-";
      if (lru && bel) {
        double span = sim_headline(pl->model, bel) - sim_headline(pl->model, lru);
        if (span > 1e-9)
          snprintf(gap, sizeof gap, "%.1f%%", 100 * (sim_headline(pl->model, r) - sim_headline(pl->model, lru)) / span);
      }
      fprintf(f, "%-10u %-12s %10.4f %10.4f %10s %9llu %8llu %8.3f\n", r->capacity, r->policy,
              sim_headline(pl->model, r), sim_ratio(r->block_hits, r->lookups), gap,
              (unsigned long long)r->evictions, (unsigned long long)r->dropped, r->seconds);
    }
  }
}

void sim_note_azure(FILE *f, const trace *t) {
  if (t->format == TRACE_AZURE)
    fprintf(f, "note: an Azure trace has lengths only (no block hashes): no two requests share "
               "content, so hits cannot exist in this format and every ratio above is 0 by "
               "construction\n");
}

/* What the table cannot show: notes on stdout after it, so a figure is
 * never read without its caveat. */
void sim_print_notes(FILE *f, const sim_plan *pl, const trace *t, const uint64_t *caps,
                     size_t n_caps) {
  const sim_stream *s = pl->stream;
  sim_note_azure(f, t);
  for (size_t c = 0; c < n_caps; c++) {
    const sim_job *j = NULL;
    for (size_t i = 0; i < pl->n_jobs && !j; i++)
      if (pl->jobs[i].capacity == caps[c]) j = &pl->jobs[i];
    if (j && j->run_capacity < j->capacity)
      fprintf(f, "note: capacity %llu is more than the trace's %llu block lookups: everything "
                 "fits, so it was replayed at %u blocks (same result)\n",
              (unsigned long long)caps[c], (unsigned long long)s->n_pos, j->run_capacity);
    if (pl->model != SIM_MODEL_MANAGER) continue;
    /* Requests whose prompt alone needs more blocks than the pool. */
    size_t too_long = 0;
    uint32_t longest = 0;
    for (size_t q = 0; q < s->n_reqs; q++) {
      uint64_t nb = s->req_pos[q + 1] - s->req_pos[q];
      if (nb > caps[c]) {
        too_long++;
        if (t->reqs[q].input_len > longest) longest = t->reqs[q].input_len;
      }
    }
    if (too_long)
      fprintf(f, "note: at capacity %llu, %zu requests need more blocks than the cache has "
                 "(longest %u tokens): they cannot run and are counted in 'dropped', not as "
                 "misses of a truncated prompt\n",
              (unsigned long long)caps[c], too_long, longest);
    const sim_result *bel = find_result(pl, "belady", (uint32_t)caps[c]);
    for (size_t i = 0; bel && i < pl->n_jobs; i++) {
      const sim_result *r = &pl->jobs[i].res;
      if (r->capacity == caps[c] && r != bel && sim_headline(pl->model, r) > sim_headline(pl->model, bel) + 1e-9)
        fprintf(f, "note: at capacity %u, %s (%.4f) is above belady (%.4f): farthest-next-use "
                   "with --hold %u pinning blocks is not proven optimal, and here it is not a "
                   "bound (%llu requests dropped)\n",
                r->capacity, r->policy, sim_headline(pl->model, r), sim_headline(pl->model, bel), pl->hold,
                (unsigned long long)r->dropped);
    }
  }
}

/* The columns whose meaning depends on the model are named by it:
 * manager: prefix_hit_tokens (matched by prefix matching, a leading run);
 * simple: block_hit_tokens (tokens of hit blocks, anywhere in the prompt). */
static const char *hit_tokens_name(const sim_plan *pl) {
  return pl->model == SIM_MODEL_MANAGER ? "prefix_hit_tokens" : "block_hit_tokens";
}

static const char *hit_ratio_name(const sim_plan *pl) {
  return pl->model == SIM_MODEL_MANAGER ? "prefix_hit_ratio" : "block_hit_token_ratio";
}

int sim_write_csv(const sim_plan *pl, const char *path) {
  FILE *f = report_open(path);
  if (!f) return cli_error("sim", "%s: cannot write: %m", path);
  fprintf(f, "model,policy,capacity,block_size,hold,requests,lookups,block_hits,block_hit_ratio,"
             "prompt_tokens,%s,%s,evictions,dropped,seconds",
          hit_tokens_name(pl), hit_ratio_name(pl));
  if (pl->tiers) sim_tiers_csv_head(f);
  fputc('\n', f);
  for (size_t i = 0; i < pl->n_jobs; i++) {
    const sim_result *r = &pl->jobs[i].res;
    fprintf(f, "%s,%s,%u,%u,%u,%zu,%llu,%llu,%.6f,%llu,%llu,%.6f,%llu,%llu,%.4f",
            pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", r->policy, r->capacity,
            pl->stream->block_size, pl->hold, pl->stream->n_reqs,
            (unsigned long long)r->lookups, (unsigned long long)r->block_hits,
            sim_ratio(r->block_hits, r->lookups), (unsigned long long)r->prompt_tokens,
            (unsigned long long)r->hit_tokens, sim_ratio(r->hit_tokens, r->prompt_tokens),
            (unsigned long long)r->evictions, (unsigned long long)r->dropped, r->seconds);
    if (pl->tiers) sim_tiers_csv(f, r->hit_tokens, r->tier_hit_tokens, r->tier_errors);
    fputc('\n', f);
  }
  return report_close("sim", f, path);
}

int sim_write_json(const sim_plan *pl, const char *trace_path, const char *path) {
  FILE *f = report_open(path);
  if (!f) return cli_error("sim", "%s: cannot write: %m", path);
  fprintf(f, "{\n  \"trace\": ");
  cli_json_string(f, trace_path);
  fprintf(f, ",\n  \"model\": \"%s\",\n  \"block_size\": %u,\n  \"hold\": %u,\n"
             "  \"requests\": %zu,\n  \"results\": [\n",
          pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", pl->stream->block_size,
          pl->hold, pl->stream->n_reqs);
  for (size_t i = 0; i < pl->n_jobs; i++) {
    const sim_result *r = &pl->jobs[i].res;
    fprintf(f, "    {\"policy\": ");
    cli_json_string(f, r->policy);
    fprintf(f, ", \"capacity\": %u, \"lookups\": %llu, \"block_hits\": %llu, "
               "\"block_hit_ratio\": %.6f, \"prompt_tokens\": %llu, \"%s\": %llu, "
               "\"%s\": %.6f, \"evictions\": %llu, \"dropped\": %llu, "
               "\"seconds\": %.4f",
            r->capacity, (unsigned long long)r->lookups, (unsigned long long)r->block_hits,
            sim_ratio(r->block_hits, r->lookups), (unsigned long long)r->prompt_tokens,
            hit_tokens_name(pl), (unsigned long long)r->hit_tokens, hit_ratio_name(pl),
            sim_ratio(r->hit_tokens, r->prompt_tokens), (unsigned long long)r->evictions,
            (unsigned long long)r->dropped, r->seconds);
    if (pl->tiers) sim_tiers_json(f, r->hit_tokens, r->tier_hit_tokens, r->tier_errors);
    fprintf(f, "}%s\n", i + 1 < pl->n_jobs ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  return report_close("sim", f, path);
}

/* Hit ratio vs capacity, one line per policy (Belady dashed). */
int sim_write_plot(const sim_plan *pl, const char *trace_path, const char *path,
                   const uint64_t *caps, size_t n_caps, const char *const *names,
                   size_t n_names) {
  const char *base = strrchr(trace_path, '/');
  base = base ? base + 1 : trace_path;
  char title[512];
  snprintf(title, sizeof title, "%s: %s hit ratio vs capacity (%s model, block %u, hold %u)", base,
           pl->model == SIM_MODEL_MANAGER ? "prefix" : "block",
           pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", pl->stream->block_size, pl->hold);
  report_series *series = calloc(n_names ? n_names : 1, sizeof *series);
  double *xy = calloc(2 * n_names * n_caps + 1, sizeof *xy);
  if (!series || !xy) {
    free(series);
    free(xy);
    return cli_error("sim", "out of memory (plot)");
  }
  for (size_t k = 0; k < n_names; k++) {
    double *x = xy + 2 * k * n_caps, *y = x + n_caps;
    series[k] = (report_series){.name = names[k], .x = x, .y = y,
                                .dashed = !strcmp(names[k], "belady")};
    for (size_t c = 0; c < n_caps; c++) {
      const sim_result *r = find_result(pl, names[k], (uint32_t)caps[c]);
      if (!r) continue;
      x[series[k].n] = r->capacity;
      y[series[k].n++] = sim_headline(pl->model, r);
    }
  }
  int rc = report_plot_lines("sim", path, title, "capacity (blocks)", "hit ratio", series, n_names);
  free(series);
  free(xy);
  return rc;
}

void sim_help(void) {
  printf(
      "Usage: pagedkv sim TRACE [OPTIONS]\n"
      "\n"
      "Replays a trace (Mooncake JSONL with hash_ids, or Azure CSV) and reports the\n"
      "hit ratios of eviction policies at each capacity, beside Belady's offline\n"
      "optimum on the same access stream.\n"
      "\n"
      "Options:\n"
      "  -p, --policy LIST      policies, comma-separated, or 'all' (default: all built-ins);\n"
      "                         a name given twice runs once\n"
      "  -c, --capacity LIST    capacities in blocks, e.g. 1000,10000 or 1k,10k (default 1000,10000;\n"
      "                         1 .. 2147483647)\n"
      "  -b, --block-size N     tokens per block (default: the trace's, 512 for Mooncake)\n"
      "      --hold N           a request keeps its blocks for N following requests (default 0;\n"
      "                         manager model only)\n"
      "  -m, --model M          manager: the real cache manager, external mode (default);\n"
      "                         simple: the model of ../shared/traces/README.md\n"
      "      --policy-args P:S  argument string S for policy P's create hook, e.g.\n"
      "                         fwlru:cold=1 (repeatable; plain S if one policy runs)\n"
      "      --policy-lib F.so  also run the policy a shared object exports as\n"
      "                         'const pkv_policy_ops pkv_user_policy' (tried in a child\n"
      "                         process first; its replays run in child processes)\n"
      "      --no-belady        skip Belady's bound\n"
      "      --format F         mooncake or azure (default: from the file name)\n"
      "      --csv FILE         results as CSV ('-': standard output)\n"
      "      --json FILE        results as JSON ('-': standard output; the table then goes\n"
      "                         to stderr)\n"
      "      --plot FILE.png    hit ratio vs capacity, one line per policy (gnuplot,\n"
      "                         checked before the run)\n"
      "      --host-blocks N    a host tier of N blocks below the pool (manager model):\n"
      "                         evicted blocks are demoted there and promoted back on a\n"
      "                         match; the report splits prefix hits by tier\n"
      "      --host-bytes N     the same sized in the model's bytes (--kv-bytes-per-token)\n"
      "      --host-policy P    the host tier's eviction policy (default lru)\n"
      "      --file-dir DIR     the library's file tier below it, a directory per replay\n"
      "                         in DIR (kept: a second run over DIR starts warm)\n"
      "      --file-bytes N     its size in the model's bytes (default: no limit)\n"
      "      --redis HOST:PORT[/PREFIX]  a Redis tier below those (or unix:/PATH), keys\n"
      "                         under PREFIX (default pkv:sim:) + the replay's name; every\n"
      "                         --nodes node reaches the one server\n"
      "      --nodes LIST       the cluster view: the trace split over N servers, each with\n"
      "                         the --capacity (one for all, or one per node), e.g. 1,2,4,8\n"
      "      --route LIST       rr (round-robin) and/or prefix (the node holding the longest\n"
      "                         cached prefix, under the load bound); default rr,prefix\n"
      "      --route-load-bound X  no node takes more than X times the mean request count\n"
      "                         (1 .. 1000, default 1.25)\n"
      "      --shared-remote BYTES  a remote tier every node reads after a local miss\n"
      "                         (LRU of blocks; e.g. 64G)\n"
      "      --kv-bytes-per-token N  K/V bytes of one token of the model, to size the\n"
      "                         tiers in blocks\n"
      "                         (default 131072: llama3-8b, f16)\n"
      "  -j, --jobs N           parallel replays (default: number of CPUs)\n"
      "  -q, --quiet            no progress bar\n"
      "  -h, --help             this help\n"
      "\n"
      "Manager model: each request creates a sequence, matches its prompt's\n"
      "prefix (prefix_hit = matched tokens / prompt tokens), appends and commits\n"
      "the rest, holds it for --hold requests, then frees it.  block_hit = hit\n"
      "blocks / block lookups.  gap_closed = share of the LRU-to-Belady gap.\n");
}

/* ------------------------------------------------------------ tiers
 * Prefix hits split by where they came from, named as `run` names the
 * tiers: device (the pool itself), host, file, redis. */

static const char *const tier_col[PKV_TIER_MAX] = {"host", "file", "redis"};

static bool tier_on(const tool_tiers *t, int i) {
  return i == PKV_TIER_HOST ? t->host_blocks != 0 : i == PKV_TIER_FILE ? t->file_dir != NULL
                                                                       : t->redis != NULL;
}

void sim_tiers_describe(FILE *f, const tool_tiers *t, const sim_stream *s) {
  fprintf(f, "tiers below the pool:");
  if (t->host_blocks)
    fprintf(f, " host %llu blocks (policy %s);", (unsigned long long)t->host_blocks,
            t->host_policy ? t->host_policy : "lru");
  if (t->file_dir) {
    fprintf(f, " file in %s/, ", t->file_dir);
    if (t->file_blocks) fprintf(f, "%llu blocks;", (unsigned long long)t->file_blocks);
    else fprintf(f, "no limit;");
  }
  if (t->redis) fprintf(f, " redis %s;", t->redis);
  fprintf(f, " prefix hits by where they came from (share of prompt tokens, block size %u):\n",
          s->block_size);
}

void sim_tiers_head(FILE *f) {
  fprintf(f, " %10s %10s %10s %10s %10s %8s", "prefix_hit", "device", "host", "file", "redis",
          "t_errors");
}

void sim_tiers_cells(FILE *f, const tool_tiers *t, uint64_t hit, uint64_t prompt,
                     const uint64_t tier_hit[PKV_TIER_MAX], const uint64_t tier_err[PKV_TIER_MAX]) {
  uint64_t below = 0, errors = 0;
  for (int i = 0; i < PKV_TIER_MAX; i++) below += tier_hit[i], errors += tier_err[i];
  fprintf(f, " %10.4f %10.4f", sim_ratio(hit, prompt), sim_ratio(hit - below, prompt));
  for (int i = 0; i < PKV_TIER_MAX; i++) {
    if (tier_on(t, i)) fprintf(f, " %10.4f", sim_ratio(tier_hit[i], prompt));
    else fprintf(f, " %10s", "-");
  }
  fprintf(f, " %8llu", (unsigned long long)errors);
}

void sim_tiers_csv_head(FILE *f) {
  fprintf(f, ",device_hit_tokens,host_hit_tokens,file_hit_tokens,redis_hit_tokens,tier_errors");
}

void sim_tiers_csv(FILE *f, uint64_t hit, const uint64_t tier_hit[PKV_TIER_MAX],
                   const uint64_t tier_err[PKV_TIER_MAX]) {
  uint64_t below = tier_hit[0] + tier_hit[1] + tier_hit[2];
  fprintf(f, ",%llu,%llu,%llu,%llu,%llu", (unsigned long long)(hit - below),
          (unsigned long long)tier_hit[0], (unsigned long long)tier_hit[1],
          (unsigned long long)tier_hit[2],
          (unsigned long long)(tier_err[0] + tier_err[1] + tier_err[2]));
}

void sim_tiers_json(FILE *f, uint64_t hit, const uint64_t tier_hit[PKV_TIER_MAX],
                    const uint64_t tier_err[PKV_TIER_MAX]) {
  uint64_t below = tier_hit[0] + tier_hit[1] + tier_hit[2];
  fprintf(f, ", \"device_hit_tokens\": %llu", (unsigned long long)(hit - below));
  for (int i = 0; i < PKV_TIER_MAX; i++)
    fprintf(f, ", \"%s_hit_tokens\": %llu", tier_col[i], (unsigned long long)tier_hit[i]);
  fprintf(f, ", \"tier_errors\": %llu",
          (unsigned long long)(tier_err[0] + tier_err[1] + tier_err[2]));
}

/* A tier that counted errors (a server that went away, a corrupt or
 * foreign block) served fewer hits than it could have: said under the
 * table. */
void sim_tiers_note(FILE *f, const char *what, const uint64_t tier_err[PKV_TIER_MAX]) {
  for (int i = 0; i < PKV_TIER_MAX; i++)
    if (tier_err[i])
      fprintf(f, "note: %s: the %s tier counted %llu errors (unreachable server, corrupt, short "
                 "or foreign blocks, failed writes): its hits are a lower bound\n",
              what, tier_col[i], (unsigned long long)tier_err[i]);
}

void sim_print_tiers(FILE *f, const sim_plan *pl) {
  sim_tiers_describe(f, pl->tiers, pl->stream);
  fprintf(f, "%-10s %-12s", "capacity", "policy");
  sim_tiers_head(f);
  fputc('\n', f);
  for (size_t i = 0; i < pl->n_jobs; i++) {
    const sim_result *r = &pl->jobs[i].res;
    if (!pl->jobs[i].ops) continue; /* Belady has no tiers */
    fprintf(f, "%-10u %-12s", r->capacity, r->policy);
    sim_tiers_cells(f, pl->tiers, r->hit_tokens, r->prompt_tokens, r->tier_hit_tokens,
                    r->tier_errors);
    fputc('\n', f);
  }
  for (size_t i = 0; i < pl->n_jobs; i++) {
    char what[128];
    snprintf(what, sizeof what, "%s at capacity %u", pl->jobs[i].res.policy, pl->jobs[i].capacity);
    sim_tiers_note(f, what, pl->jobs[i].res.tier_errors);
  }
}
