/*
 * opts.h — the flags of `pagedkv run` and `pagedkv sim`, parsed into plain
 * structs with every value range-checked, apart from running anything.
 *
 * A parser fills *o and returns 0, or returns CLI_EXIT_USAGE with the reason
 * in err ("--flag: 'value' is not ...") and *o freed; it prints nothing, so
 * the option fuzzer (tests/fuzz/fuzz_cli.c) can drive it.  The checks that
 * need the library or the trace (policy names, capacities against the
 * trace) happen in the commands.
 */
#ifndef PKV_TOOLS_OPTS_H
#define PKV_TOOLS_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagedkv/pagedkv.h"
#include "tiers.h"
#include "trace.h"

/* ------------------------------------------------------------------ sim */

/* Upper bounds of the sim flags (the documented ranges). */
#define SIM_MAX_CAPACITY ((uint64_t)INT32_MAX) /* the library's num_blocks limit */
#define SIM_MAX_CAPACITIES 64
#define SIM_MAX_POLICY_ARGS 16
#define SIM_MAX_HOLD 1000000u
#define SIM_MAX_NODES 1024
#define SIM_MAX_NODE_COUNTS 16
#define SIM_MAX_LOAD_BOUND 1000.0
#define SIM_DEFAULT_KV_TOKEN_BYTES 131072u /* llama3-8b, f16: 2 x 32 x 8 x 128 x 2 */

typedef struct sim_policy_args {
  char *policy; /* NULL: the one policy run (plain --policy-args S) */
  char *args;
} sim_policy_args;

typedef struct sim_opts {
  const char *trace_path;
  const char *policy_list;  /* "all" (default), "none" or a list */
  uint64_t *caps;           /* [n_caps], each 1 .. SIM_MAX_CAPACITY */
  size_t n_caps;
  uint64_t block_size;      /* 0 = the trace's */
  uint64_t hold, jobs;
  int model;                /* sim_model */
  trace_format format;
  sim_policy_args pargs[SIM_MAX_POLICY_ARGS];
  size_t n_pargs;
  const char *policy_lib, *csv, *json, *plot; /* csv/json "-": stdout */
  bool belady, quiet, help;
  /* The cluster view (--nodes): node counts to run (each 1 ..
   * SIM_MAX_NODES, NULL = no cluster), the routes (--route), the load
   * bound (1 .. SIM_MAX_LOAD_BOUND), the shared remote tier in bytes (0 =
   * none) and the K/V bytes per token that turn it into blocks. */
  uint64_t *nodes;
  size_t n_nodes;
  bool route_rr, route_prefix;
  double load_bound;
  uint64_t remote_bytes, kv_token_bytes;
  tool_tiers tiers;         /* --host-blocks, --host-policy, --file-dir, --redis
                             * (manager model); blocks of the sizes below are
                             * set once the block size is known (sim_size_tiers) */
  uint64_t host_bytes, file_bytes; /* --host-bytes, --file-bytes: the model's bytes,
                                    * at --kv-bytes-per-token (0 = not given) */
} sim_opts;

int sim_opts_parse(int argc, char **argv, sim_opts *o, char *err, size_t err_cap);
void sim_opts_free(sim_opts *o);

/* ------------------------------------------------------------------ run */

#define RUN_MAX_REQUESTS 10000000u

typedef struct model_shape {
  const char *name;
  uint32_t n_layers, n_q_heads, n_kv_heads, head_dim;
  pkv_dtype dtype;
} model_shape;

typedef struct run_range {
  uint64_t lo, hi;
} run_range;

typedef struct run_opts {
  model_shape shape;
  uint64_t block_size, memory, blocks, threads, n_req, groups, sys_len, samples, seed;
  uint64_t max_output, max_seqs, mbt, chunk, max_len, headroom;
  run_range plen, olen;
  const char *policy, *trace_path, *json, *plot; /* json "-": stdout */
  trace_format format;
  bool dry, baseline, quiet, n_given, samples_given, max_seqs_given, help;
  tool_tiers tiers;         /* --host-bytes, --host-policy, --file-dir, --file-bytes */
} run_opts;

int run_opts_parse(int argc, char **argv, run_opts *o, char *err, size_t err_cap);

/* "f32" / "f16" / "bf16" / "i8" / "fp8_e4m3" / "fp8_e5m2". */
const char *opts_dtype_name(pkv_dtype d);

/* The --model preset of that name ("tiny", "small", "llama3-8b",
 * "llama3-70b"), NULL if none. */
const model_shape *opts_model_preset(const char *name);
/* pkv_config_init, then a cache of the model's shape (layers, KV heads,
 * head_dim, dtype) with num_blocks blocks of block_size tokens in the given
 * storage; the policy and the rest keep their defaults.  The one place the
 * tools' benchmarks and tests turn a model into a cache configuration. */
void opts_cache_config(pkv_config *cfg, const model_shape *shape, uint32_t block_size,
                       uint32_t num_blocks, pkv_storage storage);

/* Shared by the parsers (opts.c): the message into err, returning
 * CLI_EXIT_USAGE; a flag's integer value in [lo, hi], or the message
 * naming the flag and the range. */
int opts_bad(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int opts_u64_flag(const char *flag, const char *value, uint64_t lo, uint64_t hi, uint64_t *out,
                  char *err, size_t cap);

/* --format (mooncake, azure) and --plot (a printable file name), for both
 * parsers: 0 with *out set, or CLI_EXIT_USAGE with the reason. */
int opts_format_flag(const char *arg, trace_format *out, char *err, size_t cap);
int opts_plot_flag(const char *arg, const char **out, char *err, size_t cap);

/* The getopt loop both parsers run: resets getopt, calls flag(ctx, opt,
 * optarg, err, cap) for each option (it returns 0, CLI_EXIT_USAGE with the
 * reason in err, or -1 for an option it does not know), and names a
 * missing value or an unknown option itself.  Returns 0 or CLI_EXIT_USAGE. */
struct option;
typedef int (*opts_flag_fn)(void *ctx, int opt, const char *arg, char *err, size_t cap);
int opts_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
                opts_flag_fn flag, void *ctx, char *err, size_t err_cap);
/* Rows of a longopts table. */
#define OPTS_ARG(name, code) {name, required_argument, NULL, code}
#define OPTS_FLAG(name, code) {name, no_argument, NULL, code}
#define OPTS_END {NULL, 0, NULL, 0}

/* A path that will be written by gnuplot must be printable: false (with the
 * reason in err) if it holds a control character or is empty or "-". */
bool opts_plot_path_ok(const char *flag, const char *path, char *err, size_t err_cap);

#endif
