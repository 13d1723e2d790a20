/*
 * sim_cluster_report.c — what `pagedkv sim --nodes` prints and writes: one
 * row per configuration (nodes x route) with the hit ratio overall (local
 * prefix hits, remote-tier hits) and the load imbalance, then one row per
 * node (capacity, requests, block lookups, its own hit ratio); CSV and JSON
 * with the same figures; the plot of hit ratio vs the number of nodes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "report.h"
#include "sim.h"
#include "tiers.h"

static double hit_ratio(const sim_node_load *l) {
  return sim_ratio(l->hit_tokens + l->remote_hit_tokens, l->prompt_tokens);
}

void sim_cluster_print(FILE *f, const sim_cluster_plan *cp) {
  fprintf(f, "%-6s %-7s %9s %10s %10s %9s %9s %10s %8s %8s\n", "nodes", "route", "hit_ratio",
          "prefix_hit", "remote_hit", "imbalance", "blk_imbal", "evictions", "dropped", "time_s");
  for (size_t i = 0; i < cp->n_res; i++) {
    const sim_cluster_result *r = &cp->res[i];
    fprintf(f, "%-6u %-7s %9.4f %10.4f %10.4f %9.3f %9.3f %10llu %8llu %8.3f\n", r->n_nodes,
            sim_route_name(r->route), hit_ratio(&r->all),
            sim_ratio(r->all.hit_tokens, r->all.prompt_tokens),
            sim_ratio(r->all.remote_hit_tokens, r->all.prompt_tokens), r->imbalance,
            r->block_imbalance, (unsigned long long)r->all.evictions,
            (unsigned long long)r->all.dropped, r->seconds);
  }
  fprintf(f, "\nper node:\n%-6s %-7s %4s %10s %9s %9s %9s %10s %10s %8s\n", "nodes", "route", "node",
          "capacity", "requests", "lookups", "hit_ratio", "prefix_hit", "remote_hit", "dropped");
  for (size_t i = 0; i < cp->n_res; i++) {
    const sim_cluster_result *r = &cp->res[i];
    for (uint32_t k = 0; k < r->n_nodes; k++) {
      const sim_node_load *l = &r->node[k];
      fprintf(f, "%-6u %-7s %4u %10u %9llu %9llu %9.4f %10.4f %10.4f %8llu\n", r->n_nodes,
              sim_route_name(r->route), k, l->capacity, (unsigned long long)l->requests,
              (unsigned long long)l->lookups, hit_ratio(l),
              sim_ratio(l->hit_tokens, l->prompt_tokens),
              sim_ratio(l->remote_hit_tokens, l->prompt_tokens), (unsigned long long)l->dropped);
    }
  }
  if (!cp->tiers) return;
  fputc('\n', f);
  sim_tiers_describe(f, cp->tiers, cp->stream);
  fprintf(f, "%-6s %-7s %4s", "nodes", "route", "node");
  sim_tiers_head(f);
  fputc('\n', f);
  for (size_t i = 0; i < cp->n_res; i++) {
    const sim_cluster_result *r = &cp->res[i];
    for (uint32_t k = 0; k <= r->n_nodes; k++) { /* every node, then all of them */
      const sim_node_load *l = k < r->n_nodes ? &r->node[k] : &r->all;
      char node[16] = "all";
      if (k < r->n_nodes) snprintf(node, sizeof node, "%u", k);
      fprintf(f, "%-6u %-7s %4s", r->n_nodes, sim_route_name(r->route), node);
      sim_tiers_cells(f, cp->tiers, l->hit_tokens, l->prompt_tokens, l->tier_hit_tokens,
                      l->tier_errors);
      fputc('\n', f);
    }
    char what[64];
    snprintf(what, sizeof what, "%u nodes, route %s", r->n_nodes, sim_route_name(r->route));
    sim_tiers_note(f, what, r->all.tier_errors);
  }
}

/* One CSV row: node is "all" for the configuration's sums. */
static void csv_row(FILE *f, const sim_cluster_plan *cp, const sim_cluster_result *r,
                    const char *node, const sim_node_load *l) {
  fprintf(f, "%s,%u,%s,%.4f,%s,%u,%u,%llu,%llu,%llu,%llu,%.6f,%llu,%.6f,%.6f,%llu,%llu,%.4f,%.4f,%.4f",
          cp->policy, r->n_nodes, sim_route_name(r->route), r->load_bound, node, l->capacity,
          cp->stream->block_size, (unsigned long long)l->requests, (unsigned long long)l->lookups,
          (unsigned long long)l->prompt_tokens, (unsigned long long)l->hit_tokens,
          sim_ratio(l->hit_tokens, l->prompt_tokens), (unsigned long long)l->remote_hit_tokens,
          sim_ratio(l->remote_hit_tokens, l->prompt_tokens), hit_ratio(l),
          (unsigned long long)l->evictions, (unsigned long long)l->dropped, r->imbalance,
          r->block_imbalance, r->seconds);
  if (cp->tiers) sim_tiers_csv(f, l->hit_tokens, l->tier_hit_tokens, l->tier_errors);
  fputc('\n', f);
}

int sim_cluster_write_csv(const sim_cluster_plan *cp, const char *path) {
  FILE *f = report_open(path);
  if (!f) return cli_error("sim", "%s: cannot write: %m", path);
  fprintf(f, "policy,nodes,route,load_bound,node,capacity,block_size,requests,lookups,"
             "prompt_tokens,prefix_hit_tokens,prefix_hit_ratio,remote_hit_tokens,"
             "remote_hit_ratio,hit_ratio,evictions,dropped,imbalance,block_imbalance,seconds");
  if (cp->tiers) sim_tiers_csv_head(f);
  fputc('\n', f);
  for (size_t i = 0; i < cp->n_res; i++) {
    const sim_cluster_result *r = &cp->res[i];
    csv_row(f, cp, r, "all", &r->all);
    for (uint32_t k = 0; k < r->n_nodes; k++) {
      char node[16];
      snprintf(node, sizeof node, "%u", k);
      csv_row(f, cp, r, node, &r->node[k]);
    }
  }
  return report_close("sim", f, path);
}

static void json_load(FILE *f, const sim_cluster_plan *cp, const sim_node_load *l) {
  fprintf(f, "\"capacity\": %u, \"requests\": %llu, \"lookups\": %llu, \"prompt_tokens\": %llu, "
             "\"prefix_hit_tokens\": %llu, \"remote_hit_tokens\": %llu, \"hit_ratio\": %.6f, "
             "\"evictions\": %llu, \"dropped\": %llu",
          l->capacity, (unsigned long long)l->requests, (unsigned long long)l->lookups,
          (unsigned long long)l->prompt_tokens, (unsigned long long)l->hit_tokens,
          (unsigned long long)l->remote_hit_tokens, hit_ratio(l), (unsigned long long)l->evictions,
          (unsigned long long)l->dropped);
  if (cp->tiers) sim_tiers_json(f, l->hit_tokens, l->tier_hit_tokens, l->tier_errors);
}

int sim_cluster_write_json(const sim_cluster_plan *cp, const char *trace_path, const char *path) {
  FILE *f = report_open(path);
  if (!f) return cli_error("sim", "%s: cannot write: %m", path);
  fprintf(f, "{\n  \"trace\": ");
  cli_json_string(f, trace_path);
  fprintf(f, ",\n  \"model\": \"manager\",\n  \"policy\": ");
  cli_json_string(f, cp->policy);
  fprintf(f, ",\n  \"block_size\": %u,\n  \"hold\": %u,\n  \"requests\": %zu,\n"
             "  \"remote_blocks\": %llu,\n  \"results\": [\n",
          cp->stream->block_size, cp->hold, cp->stream->n_reqs,
          (unsigned long long)cp->remote_blocks);
  for (size_t i = 0; i < cp->n_res; i++) {
    const sim_cluster_result *r = &cp->res[i];
    fprintf(f, "    {\"nodes\": %u, \"route\": \"%s\", \"load_bound\": %.4f, \"imbalance\": %.4f, "
               "\"block_imbalance\": %.4f, \"remote_evictions\": %llu, \"seconds\": %.4f, ",
            r->n_nodes, sim_route_name(r->route), r->load_bound, r->imbalance, r->block_imbalance,
            (unsigned long long)r->remote_evictions, r->seconds);
    json_load(f, cp, &r->all);
    fprintf(f, ",\n     \"per_node\": [");
    for (uint32_t k = 0; k < r->n_nodes; k++) {
      fprintf(f, "%s{", k ? ", " : "");
      json_load(f, cp, &r->node[k]);
      fprintf(f, "}");
    }
    fprintf(f, "]}%s\n", i + 1 < cp->n_res ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  return report_close("sim", f, path);
}

/* Hit ratio (local + remote) vs nodes, one line per route. */
int sim_cluster_write_plot(const sim_cluster_plan *cp, const char *trace_path, const char *path) {
  const char *base = strrchr(trace_path, '/');
  base = base ? base + 1 : trace_path;
  char title[512], cap[64];
  if (cp->n_caps == 1) snprintf(cap, sizeof cap, "%llu blocks per node", (unsigned long long)cp->caps[0]);
  else snprintf(cap, sizeof cap, "capacity per node as listed");
  snprintf(title, sizeof title, "%s: hit ratio vs nodes (%s, policy %s, block %u%s)", base, cap,
           cp->policy, cp->stream->block_size, cp->remote_blocks ? ", shared remote tier" : "");
  double *xy = calloc(4 * cp->n_res + 1, sizeof *xy); /* x and y of two routes */
  if (!xy) return cli_error("sim", "out of memory (plot)");
  report_series series[2];
  size_t n_series = 0;
  for (int route = SIM_ROUTE_RR; route <= SIM_ROUTE_PREFIX; route++) {
    double *x = xy + 2 * n_series * cp->n_res, *y = x + cp->n_res;
    size_t n = 0;
    for (size_t i = 0; i < cp->n_res; i++) {
      if (cp->res[i].route != (sim_route)route) continue;
      x[n] = cp->res[i].n_nodes;
      y[n++] = hit_ratio(&cp->res[i].all);
    }
    if (n) series[n_series++] = (report_series){.name = sim_route_name((sim_route)route),
                                                .x = x, .y = y, .n = n};
  }
  int rc = report_plot_lines("sim", path, title, "nodes", "hit ratio", series, n_series);
  free(xy);
  return rc;
}
