/*
 * opts.c — what the flag parsers of `pagedkv run` (run_opts.c) and
 * `pagedkv sim` (sim_opts.c) share (see opts.h): the error message, the
 * argument being parsed, a range-checked integer flag, the --plot path.
 *
 * getopt_long is reset before every parse (optind = 0: glibc's full
 * reinitialisation), so a parser can run many times in one process, as the
 * option fuzzer does.  Every numeric flag has a documented range and is
 * checked where the error can still name the flag.
 */
#include "opts.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int opts_bad(char *err, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, cap, fmt, ap);
  va_end(ap);
  return CLI_EXIT_USAGE;
}

/* The argument for messages: getopt's optind points past it. */
static const char *opts_cur_arg(int argc, char **argv) {
  int i = optind - 1;
  return i >= 0 && i < argc && argv[i] ? argv[i] : "?";
}

int opts_u64_flag(const char *flag, const char *value, uint64_t lo, uint64_t hi, uint64_t *out,
                  char *err, size_t cap) {
  if (cli_parse_u64(value, lo, hi, out)) return 0;
  return opts_bad(err, cap, "%s: '%s' is not an integer in %llu..%llu", flag, value,
                  (unsigned long long)lo, (unsigned long long)hi);
}

int opts_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
                opts_flag_fn flag, void *ctx, char *err, size_t err_cap) {
  int opt, rc = 0;
  optind = 0;
  opterr = 0;
  while (!rc && (opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    if (opt == ':') rc = opts_bad(err, err_cap, "option '%s' needs a value", opts_cur_arg(argc, argv));
    else if ((rc = flag(ctx, opt, optarg, err, err_cap)) < 0)
      rc = opts_bad(err, err_cap, "unknown option '%s'", opts_cur_arg(argc, argv));
  }
  return rc;
}

bool opts_plot_path_ok(const char *flag, const char *path, char *err, size_t err_cap) {
  if (!*path || !strcmp(path, "-")) {
    opts_bad(err, err_cap, "%s: needs a file name (an image is not written to standard output)", flag);
    return false;
  }
  for (const unsigned char *p = (const unsigned char *)path; *p; p++)
    if (*p < 0x20 || *p == 0x7f) {
      opts_bad(err, err_cap, "%s: the file name holds a control character (byte 0x%02x)", flag, *p);
      return false;
    }
  return true;
}
