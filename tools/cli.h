/*
 * cli.h — what the pagedkv subcommands share: their entry points, flag value
 * parsers with clear errors, a progress bar on stderr, and gnuplot.
 */
#ifndef PKV_TOOLS_CLI_H
#define PKV_TOOLS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Subcommands: return the process exit status (0 ok, 1 failure, 2 usage). */
int cmd_run(int argc, char **argv);
int cmd_sim(int argc, char **argv);

#define CLI_EXIT_USAGE 2

/* Prints "pagedkv CMD: message" to stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints "pagedkv CMD: message" to stderr; returns 1. */
int cli_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Unsigned integer in [min, max]; false on anything else. */
bool cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Bytes with an optional K/M/G/T suffix (powers of 1024, "KiB"/"KB" too). */
bool cli_parse_bytes(const char *s, uint64_t *out);
/* Non-negative finite double. */
bool cli_parse_double(const char *s, double *out);
/* Comma-separated list of unsigned integers (each >= min, with K/M suffix
 * meaning 1000s); *out allocated, *n items.  false on a bad item. */
bool cli_parse_u64_list(const char *s, uint64_t min, uint64_t **out, size_t *n);
/* Comma-separated names, copied; *out is a NULL-terminated array. */
bool cli_split_names(const char *s, char ***out, size_t *n);
void cli_free_names(char **names);

/* Makes *arr (elements of elem bytes, *cap of them) hold at least need,
 * doubling from first; false (array untouched) if out of memory. */
bool cli_grow(void **arr, size_t *cap, size_t need, size_t elem, size_t first);

/* Number of online CPUs (>= 1). */
unsigned cli_nproc(void);
/* Monotonic nanoseconds. */
uint64_t cli_now_ns(void);

/* One progress line on stderr, redrawn in place when stderr is a terminal
 * and printed at most every few seconds otherwise.  done/total, with a
 * free-form tail ("1234 tok/s, mem 45%"). */
typedef struct cli_progress {
  const char *label;
  uint64_t total;
  uint64_t last_ns;
  bool tty, drawn, quiet;
} cli_progress;
void cli_progress_init(cli_progress *p, const char *label, uint64_t total,
                       bool quiet);
void cli_progress_update(cli_progress *p, uint64_t done, const char *tail);
void cli_progress_finish(cli_progress *p);

#include "report.h"

#endif
