/*
 * fuzz_cli.c — libFuzzer harness for the option parsers of `pagedkv run` and
 * `pagedkv sim` (tools/opts.c) and the value parsers under them
 * (tools/cli.c).
 *
 *   input = [selector byte][argument bytes, split at NUL and '\n']
 *
 * selector & 1 picks run or sim; the arguments become argv[1..] (at most
 * 64).  A parse either fails with exit status 2 and a message, or succeeds
 * with every value inside the range docs/CLI.md gives for its flag, and
 * --plot only with a printable file name.  The value parsers are also fed
 * each argument directly.  Never crash, read out of bounds or leak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/cli.h"
#include "../../tools/opts.h"
#include "fuzz_common.h"

__attribute__((noreturn)) static void fc_fail(const char *what, const char *detail) {
  pkv_fuzz_fail("fuzz_cli", "%s (%s)", what, detail ? detail : "");
}

static void fc_range(uint64_t v, uint64_t lo, uint64_t hi, const char *what) {
  if (v < lo || v > hi) fc_fail("value out of range", what);
}

static void fc_check_plot(const char *plot) {
  char err[256];
  if (plot && !opts_plot_path_ok("--plot", plot, err, sizeof err)) fc_fail("accepted --plot", plot);
}

static void fc_check_sim(const sim_opts *o) {
  if (!o->trace_path) fc_fail("sim without a trace", NULL);
  if (!o->policy_list || !*o->policy_list) fc_fail("empty policy list", NULL);
  if (o->n_caps < 1 || o->n_caps > SIM_MAX_CAPACITIES) fc_fail("capacity count", NULL);
  for (size_t i = 0; i < o->n_caps; i++) {
    fc_range(o->caps[i], 1, SIM_MAX_CAPACITY, "--capacity");
    for (size_t k = 0; k < i && !o->nodes; k++) /* with --nodes the list is per node */
      if (o->caps[k] == o->caps[i]) fc_fail("a capacity listed twice", NULL);
  }
  if (o->block_size) fc_range(o->block_size, 1, 65536, "--block-size");
  fc_range(o->hold, 0, SIM_MAX_HOLD, "--hold");
  if (o->hold && o->model == 1) fc_fail("--hold with the simple model", NULL);
  fc_range(o->jobs, 1, 1024, "--jobs");
  if (o->model != 0 && o->model != 1) fc_fail("model", NULL);
  if (o->n_pargs > SIM_MAX_POLICY_ARGS) fc_fail("policy args count", NULL);
  for (size_t i = 0; i < o->n_pargs; i++) {
    if (!o->pargs[i].args) fc_fail("policy args without a string", NULL);
    if (o->pargs[i].policy && !*o->pargs[i].policy) fc_fail("empty policy name", NULL);
    for (size_t k = 0; k < i; k++) {
      const char *a = o->pargs[i].policy, *b = o->pargs[k].policy;
      if ((!a && !b) || (a && b && !strcmp(a, b))) fc_fail("policy args twice for one policy", a);
    }
  }
  if (o->csv && o->json && !strcmp(o->csv, "-") && !strcmp(o->json, "-"))
    fc_fail("--csv - and --json - both on stdout", NULL);
  if (o->nodes) { /* the cluster view */
    if (o->n_nodes < 1 || o->n_nodes > SIM_MAX_NODE_COUNTS) fc_fail("node count list", NULL);
    for (size_t i = 0; i < o->n_nodes; i++) fc_range(o->nodes[i], 1, SIM_MAX_NODES, "--nodes");
    if (o->n_caps > 1 && (o->n_nodes != 1 || o->nodes[0] != o->n_caps)) fc_fail("capacity per node", NULL);
    if (!o->route_rr && !o->route_prefix) fc_fail("no route", NULL);
    if (!(o->load_bound >= 1 && o->load_bound <= SIM_MAX_LOAD_BOUND)) fc_fail("--route-load-bound", NULL);
    if (o->model != 0) fc_fail("--nodes with the simple model", NULL);
  }
  fc_check_plot(o->plot);
}

static void fc_check_run(const run_opts *o) {
  fc_range(o->shape.n_layers, 1, 1024, "layers");
  fc_range(o->shape.n_q_heads, 1, 1024, "q heads");
  fc_range(o->shape.n_kv_heads, 1, 1024, "kv heads");
  fc_range(o->shape.head_dim, 1, 4096, "head dim");
  if (o->shape.n_q_heads % o->shape.n_kv_heads) fc_fail("q heads not a multiple of kv heads", NULL);
  fc_range(o->block_size, 1, 65536, "--block-size");
  if (o->memory && o->blocks) fc_fail("--memory with --blocks", NULL);
  if (o->blocks) fc_range(o->blocks, 1, INT32_MAX, "--blocks");
  fc_range(o->threads, 1, 1024, "--threads");
  fc_range(o->n_req, 0, RUN_MAX_REQUESTS, "--requests");
  if (!o->trace_path && o->n_req == 0) fc_fail("synthetic workload without requests", NULL);
  fc_range(o->plen.lo, 1, o->plen.hi, "--prompt-len");
  fc_range(o->plen.hi, o->plen.lo, TRACE_MAX_TOKENS, "--prompt-len");
  fc_range(o->olen.lo, 1, o->olen.hi, "--output-len");
  fc_range(o->olen.hi, o->olen.lo, TRACE_MAX_TOKENS, "--output-len");
  fc_range(o->sys_len, 0, TRACE_MAX_TOKENS, "--system-len");
  fc_range(o->groups, 0, 1000000, "--groups");
  fc_range(o->samples, 1, 64, "--n");
  fc_range(o->max_output, 0, TRACE_MAX_TOKENS, "--max-output");
  fc_range(o->max_seqs, 1, 1000000, "--max-seqs");
  fc_range(o->mbt, 1, 1u << 24, "--max-batch-tokens");
  fc_range(o->chunk, 1, 1u << 24, "--chunk");
  fc_range(o->headroom, 0, 1u << 20, "--headroom");
  fc_range(o->max_len, 1, 2 * (uint64_t)TRACE_MAX_TOKENS, "--max-len");
  if (!o->policy || !*o->policy) fc_fail("empty policy", NULL);
  fc_check_plot(o->plot);
}

/* The value parsers on one string: accepted values respect their bounds. */
static void fc_values(const char *s) {
  uint64_t v;
  if (cli_parse_u64(s, 3, 1000, &v)) fc_range(v, 3, 1000, "cli_parse_u64");
  (void)cli_parse_bytes(s, &v);
  double d;
  if (cli_parse_double(s, &d) && !(d >= 0)) fc_fail("negative or NaN double", s);
  uint64_t *list = NULL;
  size_t n = 0;
  if (cli_parse_u64_list(s, 2, &list, &n)) {
    for (size_t i = 0; i < n; i++) fc_range(list[i], 2, UINT64_MAX, "cli_parse_u64_list");
    free(list);
  }
  char **names = NULL;
  if (cli_split_names(s, &names, &n)) {
    for (size_t i = 0; i < n; i++)
      if (!names[i] || !names[i][0] || strchr(names[i], ',')) fc_fail("bad name", s);
    if (names[n]) fc_fail("names not NULL-terminated", s);
    cli_free_names(names);
  }
}

int pkv_fuzz_cli_run(const uint8_t *data, size_t size);
int pkv_fuzz_cli_run(const uint8_t *data, size_t size) {
  if (size == 0 || size > 4096) return 0;
  char *buf = malloc(size);
  if (!buf) abort();
  memcpy(buf, data + 1, size - 1);
  buf[size - 1] = '\0';
  char *argv[66];
  int argc = 0;
  argv[argc++] = (data[0] & 1) ? "sim" : "run";
  char *p = buf, *end = buf + size - 1;
  while (p <= end && argc < 65) {
    char *q = p;
    while (q < end && *q && *q != '\n') q++;
    *q = '\0';
    argv[argc++] = p;
    p = q + 1;
  }
  argv[argc] = NULL;
  for (int i = 1; i < argc; i++) fc_values(argv[i]);
  char err[512];
  err[0] = '\0';
  int rc;
  if (data[0] & 1) {
    sim_opts o;
    rc = sim_opts_parse(argc, argv, &o, err, sizeof err);
    if (rc == 0 && !o.help) fc_check_sim(&o);
    if (rc == 0) sim_opts_free(&o);
  } else {
    run_opts o;
    rc = run_opts_parse(argc, argv, &o, err, sizeof err);
    if (rc == 0 && !o.help) fc_check_run(&o);
  }
  if (rc != 0 && rc != CLI_EXIT_USAGE) fc_fail("exit status other than 0 or 2", NULL);
  if (rc == CLI_EXIT_USAGE && !err[0]) fc_fail("refused without a message", NULL);
  free(buf);
  return 0;
}

PKV_FUZZ_ENTRY(pkv_fuzz_cli_run)
