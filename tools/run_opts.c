/*
 * run_opts.c — the flags of `pagedkv run` (see opts.h).  The integer flags
 * are one table (name, range, field), so each has its documented range
 * and its error names it; the others are parsed one by one (run_opt), and
 * what needs several flags is checked at the end (run_opts_finish).
 */
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "opts.h"

static const model_shape presets[] = {
    {"tiny", 2, 4, 2, 64, PKV_DTYPE_F32},
    {"small", 8, 16, 4, 64, PKV_DTYPE_F16},
    {"llama3-8b", 32, 32, 8, 128, PKV_DTYPE_F16},
    {"llama3-70b", 80, 64, 8, 128, PKV_DTYPE_BF16},
};

/* The K/V types --dtype names (the Python package's names). */
static const struct {
  const char *name;
  pkv_dtype dtype;
} dtypes[] = {
    {"f32", PKV_DTYPE_F32},
    {"f16", PKV_DTYPE_F16},
    {"bf16", PKV_DTYPE_BF16},
    {"i8", PKV_DTYPE_I8},             /* quantized: 1-byte codes + a scale per row */
    {"fp8_e4m3", PKV_DTYPE_FP8_E4M3},
    {"fp8_e5m2", PKV_DTYPE_FP8_E5M2},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const char *opts_dtype_name(pkv_dtype d) {
  for (size_t i = 0; i < N_DTYPES; i++)
    if (dtypes[i].dtype == d) return dtypes[i].name;
  return "?";
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
  O_CHUNK, O_HEADROOM, O_JSON, O_PLOT, O_BASE, O_MAXLEN, O_HOSTB, O_HOSTP, O_FDIR, O_FBYTES, O_REDIS
};

/* The options being parsed, with the shape overrides applied at the end
 * (after --model, whatever the order). */
typedef struct run_parse {
  run_opts o;
  uint64_t layers, q_heads, kv_heads, head_dim;
  int dtype; /* -1: the preset's */
} run_parse;

/* The integer flags: getopt code, name, range, field of run_parse. */
static const struct {
  int code;
  const char *name;
  uint64_t lo, hi;
  size_t off;
} int_flags[] = {
    {O_LAYERS, "--layers", 1, 1024, offsetof(run_parse, layers)},
    {O_QH, "--q-heads", 1, 1024, offsetof(run_parse, q_heads)},
    {O_KVH, "--kv-heads", 1, 1024, offsetof(run_parse, kv_heads)},
    {O_HD, "--head-dim", 1, 4096, offsetof(run_parse, head_dim)},
    {'b', "--block-size", 1, 65536, offsetof(run_parse, o.block_size)},
    {O_BLOCKS, "--blocks", 1, INT32_MAX, offsetof(run_parse, o.blocks)},
    {'t', "--threads", 1, 1024, offsetof(run_parse, o.threads)},
    {'r', "--requests", 0, RUN_MAX_REQUESTS, offsetof(run_parse, o.n_req)},
    {O_GROUPS, "--groups", 0, 1000000, offsetof(run_parse, o.groups)},
    {O_SYSLEN, "--system-len", 0, TRACE_MAX_TOKENS, offsetof(run_parse, o.sys_len)},
    {O_SAMPLES, "--n", 1, 64, offsetof(run_parse, o.samples)},
    {O_SEED, "--seed", 0, UINT64_MAX, offsetof(run_parse, o.seed)},
    {O_MAXOUT, "--max-output", 1, TRACE_MAX_TOKENS, offsetof(run_parse, o.max_output)},
    {O_MAXSEQS, "--max-seqs", 1, 1000000, offsetof(run_parse, o.max_seqs)},
    {O_MBT, "--max-batch-tokens", 1, 1u << 24, offsetof(run_parse, o.mbt)},
    {O_CHUNK, "--chunk", 1, 1u << 24, offsetof(run_parse, o.chunk)},
    {O_HEADROOM, "--headroom", 0, 1u << 20, offsetof(run_parse, o.headroom)},
    {O_MAXLEN, "--max-len", 1, 2 * (uint64_t)TRACE_MAX_TOKENS, offsetof(run_parse, o.max_len)},
};

/* An integer flag of the table: 0, CLI_EXIT_USAGE, or -1 if opt is not one. */
static int run_int_flag(run_parse *rp, int opt, const char *arg, char *err, size_t cap) {
  for (size_t i = 0; i < sizeof int_flags / sizeof int_flags[0]; i++) {
    if (int_flags[i].code != opt) continue;
    uint64_t *field = (uint64_t *)((char *)rp + int_flags[i].off);
    int rc = opts_u64_flag(int_flags[i].name, arg, int_flags[i].lo, int_flags[i].hi, field, err, cap);
    if (opt == 'r') rp->o.n_given = true;
    if (opt == O_SAMPLES) rp->o.samples_given = true;
    if (opt == O_MAXSEQS) rp->o.max_seqs_given = true;
    return rc;
  }
  return -1;
}

const model_shape *opts_model_preset(const char *name) {
  for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
    if (!strcmp(presets[i].name, name)) return &presets[i];
  return NULL;
}

static int parse_model(run_opts *o, const char *arg, char *err, size_t cap) {
  const model_shape *preset = opts_model_preset(arg);
  if (!preset)
    return opts_bad(err, cap, "--model: unknown preset '%s' (tiny, small, llama3-8b, llama3-70b)", arg);
  o->shape = *preset;
  return 0;
}

static int parse_dtype(run_parse *rp, const char *arg, char *err, size_t cap) {
  for (size_t i = 0; i < N_DTYPES; i++)
    if (!strcmp(dtypes[i].name, arg)) {
      rp->dtype = (int)dtypes[i].dtype;
      return 0;
    }
  return opts_bad(err, cap, "--dtype: '%s' is not f32, f16, bf16, i8, fp8_e4m3 or fp8_e5m2", arg);
}

static int parse_len_range(const char *flag, const char *arg, run_range *out, char *err,
                           size_t cap) {
  if (parse_range(arg, 1, out)) return 0;
  return opts_bad(err, cap, "%s: '%s' is not N or A-B with 1 <= A <= B <= %u", flag, arg,
                  TRACE_MAX_TOKENS);
}

/* One flag that is not in the integer table. */
static int run_opt(void *ctx, int opt, const char *arg, char *err, size_t cap) {
  run_parse *rp = ctx;
  run_opts *o = &rp->o;
  switch (opt) {
  case O_MODEL: return parse_model(o, arg, err, cap);
  case O_DTYPE: return parse_dtype(rp, arg, err, cap);
  case 'M':
    if (!cli_parse_bytes(arg, &o->memory) || o->memory == 0)
      return opts_bad(err, cap, "--memory: '%s' is not a size in bytes (e.g. 512M, 4G)", arg);
    return 0;
  case 'p':
    if (!*arg) return opts_bad(err, cap, "--policy: the name is empty");
    o->policy = arg;
    return 0;
  case O_DRY: o->dry = true; return 0;
  case O_PLEN: return parse_len_range("--prompt-len", arg, &o->plen, err, cap);
  case O_OLEN: return parse_len_range("--output-len", arg, &o->olen, err, cap);
  case O_TRACE: o->trace_path = arg; return 0;
  case O_FORMAT: return opts_format_flag(arg, &o->format, err, cap);
  case O_JSON: o->json = arg; return 0;
  case O_PLOT: return opts_plot_flag(arg, &o->plot, err, cap);
  case O_HOSTB:
    return opts_u64_flag("--host-bytes", arg, 1, UINT64_C(1) << 50, &o->tiers.host_bytes, err, cap);
  case O_HOSTP: o->tiers.host_policy = arg; return 0;
  case O_FDIR:
    if (!*arg) return opts_bad(err, cap, "--file-dir: empty path");
    o->tiers.file_dir = arg;
    return 0;
  case O_FBYTES:
    return opts_u64_flag("--file-bytes", arg, 1, UINT64_C(1) << 60, &o->tiers.file_bytes, err, cap);
  case O_REDIS: return tool_tiers_redis_flag(arg, &o->tiers, err, cap);
  case O_BASE: o->baseline = true; return 0;
  case 'q': o->quiet = true; return 0;
  case 'h': o->help = true; return 0;
  default: return run_int_flag(rp, opt == 'n' ? O_SAMPLES : opt, arg, err, cap);
  }
}

static void run_opts_defaults(run_opts *o) {
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
}

/* What needs every flag: exclusive flags, the shape overrides, the heads. */
static int run_opts_finish(int argc, char **argv, run_parse *rp, char *err, size_t cap) {
  run_opts *o = &rp->o;
  if (optind < argc) return opts_bad(err, cap, "unexpected argument '%s'", argv[optind]);
  if (o->memory && o->blocks) return opts_bad(err, cap, "--memory and --blocks are exclusive");
  if (o->dry && o->tiers.redis)
    return opts_bad(err, cap, "--redis stores K/V bytes, which a --dry cache does not hold");
  if (rp->layers) o->shape.n_layers = (uint32_t)rp->layers;
  if (rp->q_heads) o->shape.n_q_heads = (uint32_t)rp->q_heads;
  if (rp->kv_heads) o->shape.n_kv_heads = (uint32_t)rp->kv_heads;
  if (rp->head_dim) o->shape.head_dim = (uint32_t)rp->head_dim;
  if (rp->dtype >= 0) o->shape.dtype = (pkv_dtype)rp->dtype;
  if (o->shape.n_q_heads % o->shape.n_kv_heads)
    return opts_bad(err, cap, "--q-heads %u is not a multiple of --kv-heads %u", o->shape.n_q_heads,
                    o->shape.n_kv_heads);
  if (!o->trace_path && o->n_req == 0)
    return opts_bad(err, cap, "--requests must be >= 1 for a synthetic workload");
  if (o->trace_path && !o->samples_given) o->samples = 1; /* a trace's requests are what they are */
  return 0;
}

int run_opts_parse(int argc, char **argv, run_opts *o, char *err, size_t err_cap) {
  static const struct option longopts[] = {
      OPTS_ARG("model", O_MODEL),
      OPTS_ARG("layers", O_LAYERS),
      OPTS_ARG("q-heads", O_QH),
      OPTS_ARG("kv-heads", O_KVH),
      OPTS_ARG("head-dim", O_HD),
      OPTS_ARG("dtype", O_DTYPE),
      OPTS_ARG("block-size", 'b'),
      OPTS_ARG("memory", 'M'),
      OPTS_ARG("blocks", O_BLOCKS),
      OPTS_ARG("policy", 'p'),
      OPTS_ARG("threads", 't'),
      OPTS_FLAG("dry", O_DRY),
      OPTS_ARG("requests", 'r'),
      OPTS_ARG("prompt-len", O_PLEN),
      OPTS_ARG("output-len", O_OLEN),
      OPTS_ARG("groups", O_GROUPS),
      OPTS_ARG("system-len", O_SYSLEN),
      OPTS_ARG("samples", O_SAMPLES),
      OPTS_ARG("n", O_SAMPLES),
      OPTS_ARG("seed", O_SEED),
      OPTS_ARG("trace", O_TRACE),
      OPTS_ARG("format", O_FORMAT),
      OPTS_ARG("max-output", O_MAXOUT),
      OPTS_ARG("max-seqs", O_MAXSEQS),
      OPTS_ARG("max-batch-tokens", O_MBT),
      OPTS_ARG("chunk", O_CHUNK),
      OPTS_ARG("headroom", O_HEADROOM),
      OPTS_ARG("json", O_JSON),
      OPTS_ARG("plot", O_PLOT),
      OPTS_ARG("host-bytes", O_HOSTB),
      OPTS_ARG("host-policy", O_HOSTP),
      OPTS_ARG("file-dir", O_FDIR),
      OPTS_ARG("redis", O_REDIS),
      OPTS_ARG("file-bytes", O_FBYTES),
      OPTS_FLAG("contiguous-baseline", O_BASE),
      OPTS_ARG("max-len", O_MAXLEN),
      OPTS_FLAG("quiet", 'q'),
      OPTS_FLAG("help", 'h'),
      OPTS_END};
  run_parse rp = {.dtype = -1};
  run_opts_defaults(&rp.o);
  int rc = opts_getopt(argc, argv, ":b:M:p:t:r:n:qh", longopts, run_opt, &rp, err, err_cap);
  if (!rc && !rp.o.help) rc = run_opts_finish(argc, argv, &rp, err, err_cap);
  *o = rp.o;
  return rc;
}

void opts_cache_config(pkv_config *cfg, const model_shape *shape, uint32_t block_size,
                       uint32_t num_blocks, pkv_storage storage) {
  pkv_config_init(cfg);
  cfg->n_layers = shape->n_layers;
  cfg->n_kv_heads = shape->n_kv_heads;
  cfg->head_dim = shape->head_dim;
  cfg->dtype = shape->dtype;
  cfg->block_size = block_size;
  cfg->num_blocks = num_blocks;
  cfg->storage = storage;
}
