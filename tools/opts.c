/*
 * opts.c — flag parsing of `pagedkv run` and `pagedkv sim` (see opts.h).
 *
 * getopt_long is reset before every parse (optind = 0: glibc's full
 * reinitialisation), so a parser can run many times in one process, as the
 * option fuzzer does.  Every numeric flag has a documented range and is
 * checked here, where the error can still name the flag.
 */
#include "opts.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int bad(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(char *err, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, cap, fmt, ap);
  va_end(ap);
  return CLI_EXIT_USAGE;
}

/* The current argument for messages: getopt's optopt/optind point at it. */
static const char *cur_arg(int argc, char **argv) {
  int i = optind - 1;
  return i >= 0 && i < argc && argv[i] ? argv[i] : "?";
}

bool opts_plot_path_ok(const char *flag, const char *path, char *err, size_t err_cap) {
  if (!*path || !strcmp(path, "-")) {
    bad(err, err_cap, "%s: needs a file name (an image is not written to standard output)", flag);
    return false;
  }
  for (const unsigned char *p = (const unsigned char *)path; *p; p++)
    if (*p < 0x20 || *p == 0x7f) {
      bad(err, err_cap, "%s: the file name holds a control character (byte 0x%02x)", flag, *p);
      return false;
    }
  return true;
}

/* ------------------------------------------------------------------ sim */

void sim_opts_free(sim_opts *o) {
  free(o->caps);
  for (size_t i = 0; i < o->n_pargs; i++) {
    free(o->pargs[i].policy);
    free(o->pargs[i].args);
  }
  memset(o, 0, sizeof *o);
}

/* --policy-args NAME:ARGS (one policy) or ARGS (the only policy run). */
static int add_policy_args(sim_opts *o, const char *s, char *err, size_t cap) {
  if (o->n_pargs == SIM_MAX_POLICY_ARGS)
    return bad(err, cap, "--policy-args: at most %d of them", SIM_MAX_POLICY_ARGS);
  const char *colon = strchr(s, ':');
  const char *eq = strchr(s, '=');
  sim_policy_args *a = &o->pargs[o->n_pargs];
  /* "fwlru:cold=1" names its policy; "cold=1" (no ':' before the first '=')
   * does not. */
  if (colon && (!eq || colon < eq)) {
    if (colon == s) return bad(err, cap, "--policy-args: '%s' has an empty policy name", s);
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
    return bad(err, cap, "out of memory");
  }
  for (size_t i = 0; i < o->n_pargs; i++) {
    const char *p = o->pargs[i].policy;
    if ((!p && !a->policy) || (p && a->policy && !strcmp(p, a->policy))) {
      int rc = bad(err, cap, "--policy-args: given twice for %s", a->policy ? a->policy : "the policy");
      free(a->policy);
      free(a->args);
      *a = (sim_policy_args){0};
      return rc;
    }
  }
  o->n_pargs++;
  return 0;
}

int sim_opts_parse(int argc, char **argv, sim_opts *o, char *err, size_t err_cap) {
  static const struct option longopts[] = {
      {"policy", required_argument, NULL, 'p'},
      {"capacity", required_argument, NULL, 'c'},
      {"block-size", required_argument, NULL, 'b'},
      {"hold", required_argument, NULL, 'H'},
      {"model", required_argument, NULL, 'm'},
      {"policy-args", required_argument, NULL, 'A'},
      {"policy-lib", required_argument, NULL, 'L'},
      {"no-belady", no_argument, NULL, 'N'},
      {"format", required_argument, NULL, 'F'},
      {"csv", required_argument, NULL, 'C'},
      {"json", required_argument, NULL, 'J'},
      {"plot", required_argument, NULL, 'P'},
      {"jobs", required_argument, NULL, 'j'},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  memset(o, 0, sizeof *o);
  o->policy_list = "all";
  o->jobs = cli_nproc();
  o->belady = true;
  o->format = TRACE_AUTO;
  const char *cap_list = "1000,10000";
  bool hold_given = false;
  int opt, rc = 0;
  optind = 0;
  opterr = 0;
  while (!rc && (opt = getopt_long(argc, argv, ":p:c:b:m:j:qh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'p':
      if (!optarg[strspn(optarg, ", ")])
        rc = bad(err, err_cap, "--policy: '%s' names no policy", optarg);
      else
        o->policy_list = optarg;
      break;
    case 'c': cap_list = optarg; break;
    case 'b':
      if (!cli_parse_u64(optarg, 1, 65536, &o->block_size))
        rc = bad(err, err_cap, "--block-size: '%s' is not an integer in 1..65536", optarg);
      break;
    case 'H':
      if (!cli_parse_u64(optarg, 0, SIM_MAX_HOLD, &o->hold))
        rc = bad(err, err_cap, "--hold: '%s' is not an integer in 0..%u", optarg, SIM_MAX_HOLD);
      hold_given = true;
      break;
    case 'm':
      if (!strcmp(optarg, "manager")) o->model = 0;
      else if (!strcmp(optarg, "simple")) o->model = 1;
      else rc = bad(err, err_cap, "--model: '%s' is not 'manager' or 'simple'", optarg);
      break;
    case 'A': rc = add_policy_args(o, optarg, err, err_cap); break;
    case 'L': o->policy_lib = optarg; break;
    case 'N': o->belady = false; break;
    case 'F':
      if (trace_format_parse(optarg, &o->format))
        rc = bad(err, err_cap, "--format: '%s' is not 'mooncake' or 'azure'", optarg);
      break;
    case 'C': o->csv = optarg; break;
    case 'J': o->json = optarg; break;
    case 'P':
      o->plot = optarg;
      if (!opts_plot_path_ok("--plot", optarg, err, err_cap)) rc = CLI_EXIT_USAGE;
      break;
    case 'j':
      if (!cli_parse_u64(optarg, 1, 1024, &o->jobs))
        rc = bad(err, err_cap, "--jobs: '%s' is not an integer in 1..1024", optarg);
      break;
    case 'q': o->quiet = true; break;
    case 'h': o->help = true; break;
    case ':': rc = bad(err, err_cap, "option '%s' needs a value", cur_arg(argc, argv)); break;
    default: rc = bad(err, err_cap, "unknown option '%s'", cur_arg(argc, argv)); break;
    }
  }
  if (!rc && o->help) return 0;
  if (!rc && optind >= argc) rc = bad(err, err_cap, "missing TRACE (a .jsonl or .csv file)");
  if (!rc && optind + 1 < argc) rc = bad(err, err_cap, "unexpected argument '%s'", argv[optind + 1]);
  if (!rc) o->trace_path = argv[optind];
  if (!rc && o->csv && o->json && !strcmp(o->csv, "-") && !strcmp(o->json, "-"))
    rc = bad(err, err_cap, "--csv - and --json -: only one of them can have standard output");
  if (!rc && hold_given && o->hold && o->model == 1)
    rc = bad(err, err_cap, "--hold: the simple model has no sequences to hold (use --model manager)");
  if (!rc && !cli_parse_u64_list(cap_list, 1, &o->caps, &o->n_caps))
    rc = bad(err, err_cap, "--capacity: '%s' is not a list of block counts >= 1", cap_list);
  for (size_t i = 0; !rc && i < o->n_caps; i++)
    if (o->caps[i] > SIM_MAX_CAPACITY)
      rc = bad(err, err_cap, "--capacity: %llu blocks is more than the %llu a cache can have",
               (unsigned long long)o->caps[i], (unsigned long long)SIM_MAX_CAPACITY);
  if (!rc && o->n_caps > SIM_MAX_CAPACITIES)
    rc = bad(err, err_cap, "--capacity: %zu capacities (at most %d)", o->n_caps, SIM_MAX_CAPACITIES);
  if (!rc) { /* a capacity listed twice runs once */
    size_t n = 0;
    for (size_t i = 0; i < o->n_caps; i++) {
      size_t k = 0;
      while (k < n && o->caps[k] != o->caps[i]) k++;
      if (k == n) o->caps[n++] = o->caps[i];
    }
    o->n_caps = n;
  }
  if (rc) sim_opts_free(o);
  return rc;
}

/* ------------------------------------------------------------------ run */

static const model_shape presets[] = {
    {"tiny", 2, 4, 2, 64, PKV_DTYPE_F32},
    {"small", 8, 16, 4, 64, PKV_DTYPE_F16},
    {"llama3-8b", 32, 32, 8, 128, PKV_DTYPE_F16},
    {"llama3-70b", 80, 64, 8, 128, PKV_DTYPE_BF16},
};

const char *opts_dtype_name(pkv_dtype d) {
  return d == PKV_DTYPE_F32 ? "f32" : d == PKV_DTYPE_F16 ? "f16" : "bf16";
}

/* "N" or "A-B" with min <= A <= B <= TRACE_MAX_TOKENS. */
static bool parse_range(const char *s, uint64_t min, run_range *out) {
  char buf[64];
  if (strlen(s) >= sizeof buf) return false;
  snprintf(buf, sizeof buf, "%s", s);
  char *dash = strchr(buf, '-');
  if (dash) *dash = '\0';
  if (!cli_parse_u64(buf, min, TRACE_MAX_TOKENS, &out->lo)) return false;
  if (!dash) {
    out->hi = out->lo;
    return true;
  }
  return cli_parse_u64(dash + 1, out->lo, TRACE_MAX_TOKENS, &out->hi);
}

enum {
  O_MODEL = 256, O_LAYERS, O_QH, O_KVH, O_HD, O_DTYPE, O_BLOCKS, O_DRY, O_PLEN, O_OLEN,
  O_GROUPS, O_SYSLEN, O_SAMPLES, O_SEED, O_TRACE, O_FORMAT, O_MAXOUT, O_MAXSEQS, O_MBT,
  O_CHUNK, O_HEADROOM, O_JSON, O_PLOT, O_BASE, O_MAXLEN
};

/* One numeric flag: value in [lo, hi] or the error naming the flag. */
static int u64_flag(const char *flag, uint64_t lo, uint64_t hi, uint64_t *out, char *err,
                    size_t cap) {
  if (cli_parse_u64(optarg, lo, hi, out)) return 0;
  return bad(err, cap, "%s: '%s' is not an integer in %llu..%llu", flag, optarg,
             (unsigned long long)lo, (unsigned long long)hi);
}

int run_opts_parse(int argc, char **argv, run_opts *o, char *err, size_t err_cap) {
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
  memset(o, 0, sizeof *o);
  o->shape = presets[0];
  o->block_size = 16;
  o->threads = cli_nproc();
  o->n_req = 64;
  o->groups = 8;
  o->sys_len = 256;
  o->samples = 2;
  o->seed = 1;
  o->max_seqs = 256;
  o->mbt = 2048;
  o->chunk = 512;
  o->max_len = 8192;
  o->headroom = 2;
  o->plen = (run_range){64, 512};
  o->olen = (run_range){16, 128};
  o->policy = "lru";
  o->format = TRACE_AUTO;
  uint64_t layers = 0, qh = 0, kvh = 0, hd = 0;
  int dtype = -1, opt, rc = 0;
  optind = 0;
  opterr = 0;
  while (!rc && (opt = getopt_long(argc, argv, ":b:M:p:t:r:n:qh", longopts, NULL)) != -1) {
    switch (opt) {
    case O_MODEL: {
      size_t i = 0, np = sizeof presets / sizeof presets[0];
      while (i < np && strcmp(presets[i].name, optarg)) i++;
      if (i == np)
        rc = bad(err, err_cap, "--model: unknown preset '%s' (tiny, small, llama3-8b, llama3-70b)", optarg);
      else
        o->shape = presets[i];
      break;
    }
    case O_LAYERS: rc = u64_flag("--layers", 1, 1024, &layers, err, err_cap); break;
    case O_QH: rc = u64_flag("--q-heads", 1, 1024, &qh, err, err_cap); break;
    case O_KVH: rc = u64_flag("--kv-heads", 1, 1024, &kvh, err, err_cap); break;
    case O_HD: rc = u64_flag("--head-dim", 1, 4096, &hd, err, err_cap); break;
    case O_DTYPE:
      if (!strcmp(optarg, "f32")) dtype = PKV_DTYPE_F32;
      else if (!strcmp(optarg, "f16")) dtype = PKV_DTYPE_F16;
      else if (!strcmp(optarg, "bf16")) dtype = PKV_DTYPE_BF16;
      else rc = bad(err, err_cap, "--dtype: '%s' is not f32, f16 or bf16", optarg);
      break;
    case 'b': rc = u64_flag("--block-size", 1, 65536, &o->block_size, err, err_cap); break;
    case 'M':
      if (!cli_parse_bytes(optarg, &o->memory) || o->memory == 0)
        rc = bad(err, err_cap, "--memory: '%s' is not a size in bytes (e.g. 512M, 4G)", optarg);
      break;
    case O_BLOCKS: rc = u64_flag("--blocks", 1, INT32_MAX, &o->blocks, err, err_cap); break;
    case 'p':
      if (!*optarg)
        rc = bad(err, err_cap, "--policy: the name is empty");
      else
        o->policy = optarg;
      break;
    case 't': rc = u64_flag("--threads", 1, 1024, &o->threads, err, err_cap); break;
    case O_DRY: o->dry = true; break;
    case 'r':
      rc = u64_flag("--requests", 0, RUN_MAX_REQUESTS, &o->n_req, err, err_cap);
      o->n_given = true;
      break;
    case O_PLEN:
      if (!parse_range(optarg, 1, &o->plen))
        rc = bad(err, err_cap, "--prompt-len: '%s' is not N or A-B with 1 <= A <= B <= %u", optarg,
                 TRACE_MAX_TOKENS);
      break;
    case O_OLEN:
      if (!parse_range(optarg, 1, &o->olen))
        rc = bad(err, err_cap, "--output-len: '%s' is not N or A-B with 1 <= A <= B <= %u", optarg,
                 TRACE_MAX_TOKENS);
      break;
    case O_GROUPS: rc = u64_flag("--groups", 0, 1000000, &o->groups, err, err_cap); break;
    case O_SYSLEN: rc = u64_flag("--system-len", 0, TRACE_MAX_TOKENS, &o->sys_len, err, err_cap); break;
    case 'n':
    case O_SAMPLES:
      rc = u64_flag("--n", 1, 64, &o->samples, err, err_cap);
      o->samples_given = true;
      break;
    case O_SEED: rc = u64_flag("--seed", 0, UINT64_MAX, &o->seed, err, err_cap); break;
    case O_TRACE: o->trace_path = optarg; break;
    case O_FORMAT:
      if (trace_format_parse(optarg, &o->format))
        rc = bad(err, err_cap, "--format: '%s' is not 'mooncake' or 'azure'", optarg);
      break;
    case O_MAXOUT: rc = u64_flag("--max-output", 1, TRACE_MAX_TOKENS, &o->max_output, err, err_cap); break;
    case O_MAXSEQS:
      rc = u64_flag("--max-seqs", 1, 1000000, &o->max_seqs, err, err_cap);
      o->max_seqs_given = true;
      break;
    case O_MBT: rc = u64_flag("--max-batch-tokens", 1, 1u << 24, &o->mbt, err, err_cap); break;
    case O_CHUNK: rc = u64_flag("--chunk", 1, 1u << 24, &o->chunk, err, err_cap); break;
    case O_HEADROOM: rc = u64_flag("--headroom", 0, 1u << 20, &o->headroom, err, err_cap); break;
    case O_JSON: o->json = optarg; break;
    case O_PLOT:
      o->plot = optarg;
      if (!opts_plot_path_ok("--plot", optarg, err, err_cap)) rc = CLI_EXIT_USAGE;
      break;
    case O_BASE: o->baseline = true; break;
    case O_MAXLEN: rc = u64_flag("--max-len", 1, 2 * (uint64_t)TRACE_MAX_TOKENS, &o->max_len, err, err_cap); break;
    case 'q': o->quiet = true; break;
    case 'h': o->help = true; break;
    case ':': rc = bad(err, err_cap, "option '%s' needs a value", cur_arg(argc, argv)); break;
    default: rc = bad(err, err_cap, "unknown option '%s'", cur_arg(argc, argv)); break;
    }
  }
  if (rc || o->help) return rc;
  if (optind < argc) return bad(err, err_cap, "unexpected argument '%s'", argv[optind]);
  if (o->memory && o->blocks) return bad(err, err_cap, "--memory and --blocks are exclusive");
  if (layers) o->shape.n_layers = (uint32_t)layers;
  if (qh) o->shape.n_q_heads = (uint32_t)qh;
  if (kvh) o->shape.n_kv_heads = (uint32_t)kvh;
  if (hd) o->shape.head_dim = (uint32_t)hd;
  if (dtype >= 0) o->shape.dtype = (pkv_dtype)dtype;
  if (o->shape.n_q_heads % o->shape.n_kv_heads)
    return bad(err, err_cap, "--q-heads %u is not a multiple of --kv-heads %u", o->shape.n_q_heads,
               o->shape.n_kv_heads);
  if (!o->trace_path && o->n_req == 0)
    return bad(err, err_cap, "--requests must be >= 1 for a synthetic workload");
  if (o->trace_path && !o->samples_given) o->samples = 1; /* a trace's requests are what they are */
  return 0;
}
