/*
 * sim_opts.c — the flags of `pagedkv sim` (see opts.h): parsed one at a
 * time (sim_opt), then checked together (sim_opts_finish: the capacity
 * list, flags that exclude each other), apart from running anything.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "opts.h"

void sim_opts_free(sim_opts *o) {
  free(o->caps);
  free(o->nodes);
  for (size_t i = 0; i < o->n_pargs; i++) {
    free(o->pargs[i].policy);
    free(o->pargs[i].args);
  }
  memset(o, 0, sizeof *o);
}

/* --policy-args NAME:ARGS (one policy) or ARGS (the only policy run). */
static int add_policy_args(sim_opts *o, const char *s, char *err, size_t cap) {
  if (o->n_pargs == SIM_MAX_POLICY_ARGS)
    return opts_bad(err, cap, "--policy-args: at most %d of them", SIM_MAX_POLICY_ARGS);
  const char *colon = strchr(s, ':');
  const char *eq = strchr(s, '=');
  sim_policy_args *a = &o->pargs[o->n_pargs];
  /* "fwlru:cold=1" names its policy; "cold=1" (no ':' before the first '=')
   * does not. */
  if (colon && (!eq || colon < eq)) {
    if (colon == s) return opts_bad(err, cap, "--policy-args: '%s' has an empty policy name", s);
    a->policy = strndup(s, (size_t)(colon - s));
    a->args = strdup(colon + 1);
  } else {
    a->policy = NULL;
    a->args = strdup(s);
  }
  if (!a->args || (colon && (!eq || colon < eq) && !a->policy)) {
    free(a->policy);
    free(a->args);
    *a = (sim_policy_args){0};
    return opts_bad(err, cap, "out of memory");
  }
  for (size_t i = 0; i < o->n_pargs; i++) {
    const char *p = o->pargs[i].policy;
    if ((!p && !a->policy) || (p && a->policy && !strcmp(p, a->policy))) {
      int rc = opts_bad(err, cap, "--policy-args: given twice for %s", a->policy ? a->policy : "the policy");
      free(a->policy);
      free(a->args);
      *a = (sim_policy_args){0};
      return rc;
    }
  }
  o->n_pargs++;
  return 0;
}

enum {
  S_HOLD = 256, S_PARGS, S_PLIB, S_NOBEL, S_FORMAT, S_CSV, S_JSON, S_PLOT, S_NODES, S_ROUTE,
  S_BOUND, S_REMOTE, S_KVTOK, S_HOSTB, S_HOSTP, S_REDIS, S_HOSTBY, S_FDIR, S_FBYTES
};

typedef struct sim_parse {
  sim_opts *o;
  const char *cap_list;
  const char *node_list, *route_list, *cluster_flag; /* cluster_flag: one seen without --nodes */
  bool hold_given, caps_given;
} sim_parse;

/* A size in the model's bytes (suffixes K, M, G, T as cli_parse_bytes). */
static int bytes_flag(const char *flag, const char *arg, uint64_t *out, char *err, size_t cap) {
  if (!cli_parse_bytes(arg, out) || *out == 0)
    return opts_bad(err, cap, "%s: '%s' is not a size in bytes (e.g. 64G)", flag, arg);
  return 0;
}

/* A flag of the cluster view; -1 if opt is none of them. */
static int cluster_opt(sim_opts *o, sim_parse *sp, int opt, const char *arg, char *err,
                       size_t cap) {
  switch (opt) {
  case S_NODES: sp->node_list = arg; return 0;
  case S_ROUTE: sp->route_list = arg; sp->cluster_flag = "--route"; return 0;
  case S_BOUND:
    sp->cluster_flag = "--route-load-bound";
    if (!cli_parse_double(arg, &o->load_bound) || o->load_bound < 1 ||
        o->load_bound > SIM_MAX_LOAD_BOUND)
      return opts_bad(err, cap, "--route-load-bound: '%s' is not a number in 1..%g", arg,
                      SIM_MAX_LOAD_BOUND);
    return 0;
  case S_REMOTE:
    sp->cluster_flag = "--shared-remote";
    return bytes_flag("--shared-remote", arg, &o->remote_bytes, err, cap);
  case S_KVTOK:
    return opts_u64_flag("--kv-bytes-per-token", arg, 1, UINT64_C(1) << 30, &o->kv_token_bytes,
                         err, cap);
  default: return -1; /* not a flag of this table */
  }
}

/* One flag; returns 0 or CLI_EXIT_USAGE with the reason in err. */
static int sim_opt(void *ctx, int opt, const char *arg, char *err, size_t cap) {
  sim_parse *sp = ctx;
  sim_opts *o = sp->o;
  switch (opt) {
  case 'p':
    if (!arg[strspn(arg, ", ")]) return opts_bad(err, cap, "--policy: '%s' names no policy", arg);
    o->policy_list = arg;
    return 0;
  case 'c':
    sp->cap_list = arg;
    sp->caps_given = true;
    return 0;
  case 'b': return opts_u64_flag("--block-size", arg, 1, 65536, &o->block_size, err, cap);
  case S_HOLD:
    sp->hold_given = true;
    return opts_u64_flag("--hold", arg, 0, SIM_MAX_HOLD, &o->hold, err, cap);
  case 'm':
    if (!strcmp(arg, "manager")) o->model = 0;
    else if (!strcmp(arg, "simple")) o->model = 1;
    else return opts_bad(err, cap, "--model: '%s' is not 'manager' or 'simple'", arg);
    return 0;
  case S_PARGS: return add_policy_args(o, arg, err, cap);
  case S_PLIB: o->policy_lib = arg; return 0;
  case S_NOBEL: o->belady = false; return 0;
  case S_FORMAT: return opts_format_flag(arg, &o->format, err, cap);
  case S_CSV: o->csv = arg; return 0;
  case S_JSON: o->json = arg; return 0;
  case S_PLOT: return opts_plot_flag(arg, &o->plot, err, cap);
  case S_HOSTB:
    return opts_u64_flag("--host-blocks", arg, 1, SIM_MAX_CAPACITY, &o->tiers.host_blocks, err, cap);
  case S_HOSTP: o->tiers.host_policy = arg; return 0;
  case S_HOSTBY: return bytes_flag("--host-bytes", arg, &o->host_bytes, err, cap);
  case S_FDIR:
    if (!*arg) return opts_bad(err, cap, "--file-dir: empty path");
    o->tiers.file_dir = arg;
    return 0;
  case S_FBYTES: return bytes_flag("--file-bytes", arg, &o->file_bytes, err, cap);
  case S_REDIS: return tool_tiers_redis_flag(arg, &o->tiers, err, cap);
  case 'j': return opts_u64_flag("--jobs", arg, 1, 1024, &o->jobs, err, cap);
  case 'q': o->quiet = true; return 0;
  case 'h': o->help = true; return 0;
  default: return cluster_opt(o, sp, opt, arg, err, cap);
  }
}

/* Keeps the first of equal values: a value listed twice runs once. */
static size_t dedupe(uint64_t *v, size_t n_in) {
  size_t n = 0;
  for (size_t i = 0; i < n_in; i++) {
    size_t k = 0;
    while (k < n && v[k] != v[i]) k++;
    if (k == n) v[n++] = v[i];
  }
  return n;
}

/* The capacity list: each in range, at most SIM_MAX_CAPACITIES. */
static int parse_caps(sim_opts *o, const char *cap_list, char *err, size_t cap) {
  if (!cli_parse_u64_list(cap_list, 1, &o->caps, &o->n_caps))
    return opts_bad(err, cap, "--capacity: '%s' is not a list of block counts >= 1", cap_list);
  for (size_t i = 0; i < o->n_caps; i++)
    if (o->caps[i] > SIM_MAX_CAPACITY)
      return opts_bad(err, cap, "--capacity: %llu blocks is more than the %llu a cache can have",
                      (unsigned long long)o->caps[i], (unsigned long long)SIM_MAX_CAPACITY);
  if (o->n_caps > SIM_MAX_CAPACITIES)
    return opts_bad(err, cap, "--capacity: %zu capacities (at most %d)", o->n_caps, SIM_MAX_CAPACITIES);
  return 0;
}

/* --nodes and --route, checked against the other flags. */
static int parse_cluster(sim_opts *o, const sim_parse *sp, char *err, size_t cap) {
  if (!sp->node_list) {
    if (sp->cluster_flag) return opts_bad(err, cap, "%s: only with --nodes", sp->cluster_flag);
    return 0;
  }
  if (!cli_parse_u64_list(sp->node_list, 1, &o->nodes, &o->n_nodes))
    return opts_bad(err, cap, "--nodes: '%s' is not a list of node counts >= 1", sp->node_list);
  if (o->n_nodes > SIM_MAX_NODE_COUNTS)
    return opts_bad(err, cap, "--nodes: %zu counts (at most %d)", o->n_nodes, SIM_MAX_NODE_COUNTS);
  for (size_t i = 0; i < o->n_nodes; i++)
    if (o->nodes[i] > SIM_MAX_NODES)
      return opts_bad(err, cap, "--nodes: %llu is more than %d nodes", (unsigned long long)o->nodes[i],
                      SIM_MAX_NODES);
  o->n_nodes = dedupe(o->nodes, o->n_nodes);
  if (o->model == 1) return opts_bad(err, cap, "--nodes: the cluster view runs the manager model only");
  char **routes;
  size_t n_routes;
  if (!cli_split_names(sp->route_list ? sp->route_list : "rr,prefix", &routes, &n_routes))
    return opts_bad(err, cap, "--route: '%s' is not a list of rr, prefix", sp->route_list);
  int rc = 0;
  for (size_t i = 0; !rc && i < n_routes; i++) {
    if (!strcmp(routes[i], "rr")) o->route_rr = true;
    else if (!strcmp(routes[i], "prefix")) o->route_prefix = true;
    else rc = opts_bad(err, cap, "--route: '%s' is not rr or prefix", routes[i]);
  }
  cli_free_names(routes);
  if (rc) return rc;
  if (sp->caps_given && o->n_caps > 1 && (o->n_nodes != 1 || o->nodes[0] != o->n_caps))
    return opts_bad(err, cap, "--capacity: with --nodes, give one capacity for every node, or one "
                              "per node (N values with a single --nodes N)");
  if (!sp->caps_given) o->caps[0] = 1000, o->n_caps = 1; /* one default for every node */
  if (!strcmp(o->policy_list, "all")) o->policy_list = "lru"; /* one policy per cluster */
  return 0;
}

/* The tier flags together: one host size, --file-bytes with its
 * directory, the manager model. */
static int check_tiers(const sim_opts *o, char *err, size_t cap) {
  if (o->host_bytes && o->tiers.host_blocks)
    return opts_bad(err, cap, "--host-bytes and --host-blocks are exclusive (one host tier size)");
  if (o->remote_bytes && o->tiers.redis)
    return opts_bad(err, cap, "--shared-remote and --redis are exclusive (a model of the shared "
                              "tier and the real one)");
  if (o->file_bytes && !o->tiers.file_dir)
    return opts_bad(err, cap, "--file-bytes: only with --file-dir");
  if (o->tiers.host_policy && !o->host_bytes && !o->tiers.host_blocks)
    return opts_bad(err, cap, "--host-policy: only with --host-blocks or --host-bytes");
  const char *tier = o->tiers.redis ? "--redis" : o->tiers.file_dir ? "--file-dir"
                   : o->host_bytes ? "--host-bytes" : o->tiers.host_blocks ? "--host-blocks" : NULL;
  if (tier && o->model == 1)
    return opts_bad(err, cap, "%s: tiers need the manager model (not --model simple)", tier);
  return 0;
}

/* What needs every flag: the trace argument, exclusive outputs, the list. */
static int sim_opts_finish(int argc, char **argv, sim_opts *o, const sim_parse *sp, char *err,
                           size_t cap) {
  if (optind >= argc) return opts_bad(err, cap, "missing TRACE (a .jsonl or .csv file)");
  if (optind + 1 < argc) return opts_bad(err, cap, "unexpected argument '%s'", argv[optind + 1]);
  o->trace_path = argv[optind];
  if (o->csv && o->json && !strcmp(o->csv, "-") && !strcmp(o->json, "-"))
    return opts_bad(err, cap, "--csv - and --json -: only one of them can have standard output");
  if (sp->hold_given && o->hold && o->model == 1)
    return opts_bad(err, cap, "--hold: the simple model has no sequences to hold (use --model manager)");
  int rc = check_tiers(o, err, cap);
  if (rc) return rc;
  if ((rc = parse_caps(o, sp->cap_list, err, cap))) return rc;
  /* A capacity listed twice runs once; with --nodes the list is per node. */
  if (!sp->node_list) o->n_caps = dedupe(o->caps, o->n_caps);
  return parse_cluster(o, sp, err, cap);
}

int sim_opts_parse(int argc, char **argv, sim_opts *o, char *err, size_t err_cap) {
  static const struct option longopts[] = {
      OPTS_ARG("policy", 'p'),
      OPTS_ARG("capacity", 'c'),
      OPTS_ARG("block-size", 'b'),
      OPTS_ARG("hold", S_HOLD),
      OPTS_ARG("model", 'm'),
      OPTS_ARG("policy-args", S_PARGS),
      OPTS_ARG("policy-lib", S_PLIB),
      OPTS_FLAG("no-belady", S_NOBEL),
      OPTS_ARG("format", S_FORMAT),
      OPTS_ARG("csv", S_CSV),
      OPTS_ARG("json", S_JSON),
      OPTS_ARG("plot", S_PLOT),
      OPTS_ARG("jobs", 'j'),
      OPTS_ARG("nodes", S_NODES),
      OPTS_ARG("route", S_ROUTE),
      OPTS_ARG("route-load-bound", S_BOUND),
      OPTS_ARG("shared-remote", S_REMOTE),
      OPTS_ARG("kv-bytes-per-token", S_KVTOK),
      OPTS_ARG("host-blocks", S_HOSTB),
      OPTS_ARG("host-policy", S_HOSTP),
      OPTS_ARG("host-bytes", S_HOSTBY),
      OPTS_ARG("file-dir", S_FDIR),
      OPTS_ARG("file-bytes", S_FBYTES),
      OPTS_ARG("redis", S_REDIS),
      OPTS_FLAG("quiet", 'q'),
      OPTS_FLAG("help", 'h'),
      OPTS_END};
  memset(o, 0, sizeof *o);
  o->policy_list = "all";
  o->jobs = cli_nproc();
  o->belady = true;
  o->format = TRACE_AUTO;
  o->load_bound = 1.25;
  o->kv_token_bytes = SIM_DEFAULT_KV_TOKEN_BYTES;
  sim_parse sp = {.cap_list = "1000,10000"};
  sp.o = o;
  int rc = opts_getopt(argc, argv, ":p:c:b:m:j:qh", longopts, sim_opt, &sp, err, err_cap);
  if (!rc && o->help) return 0;
  if (!rc) rc = sim_opts_finish(argc, argv, o, &sp, err, err_cap);
  if (rc) sim_opts_free(o);
  return rc;
}
