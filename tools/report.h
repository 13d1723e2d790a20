/*
 * report.h — how the pagedkv subcommands write their results: a file or
 * standard output for JSON and CSV, JSON string literals, and gnuplot
 * scripts whose every string is quoted so nothing from a file or a flag can
 * run as a command.
 *
 * Shared by `run` and `sim` (tools/run_report.c, tools/sim_report.c); the
 * escaping rules live here once.
 */
#ifndef PKV_TOOLS_REPORT_H
#define PKV_TOOLS_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Opens path for writing, or standard output for "-"; NULL (errno set) if
 * it cannot be opened.  report_close flushes/closes it and returns 0, or
 * prints "pagedkv CMD: PATH: write failed: ..." and returns 1. */
FILE *report_open(const char *path);
int report_close(const char *cmd, FILE *f, const char *path);

/* Runs gnuplot on script (a complete script; it sets its own output).
 * Returns 0, or prints why not (gnuplot missing: scripts/deps.sh plot) and
 * returns -1. */
int cli_gnuplot(const char *cmd, const char *script);
/* true if gnuplot can be run; else prints how to install it (commands check
 * this before a run, so a missing gnuplot is not found after it). */
bool cli_gnuplot_available(const char *cmd);

/* A growing text buffer (gnuplot scripts).  A failed append sets oom and
 * keeps what was there; the caller checks oom once at the end. */
typedef struct cli_buf {
  char *s;
  size_t len, cap;
  bool oom;
} cli_buf;
void cli_buf_printf(cli_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a gnuplot single-quoted string: quotes doubled (the only
 * escape inside '...'; backslashes are literal), control characters shown
 * as '?', so no text from a file or flag can end the string or the line. */
void cli_buf_gnuplot_string(cli_buf *b, const char *s);

/* Writes s to f as a JSON string literal (quotes and escapes). */
void cli_json_string(FILE *f, const char *s);

/* One curve of a line plot: n points (x[i], y[i]). */
typedef struct report_series {
  const char *name;  /* the key's title (quoted like every string) */
  const double *x, *y;
  size_t n;
  bool dashed;       /* a bound or a baseline: dashed black */
} report_series;

/* Writes a PNG line plot to path with gnuplot: the header (terminal, output,
 * title, axis labels), the y axis from 0, a logarithmic x axis when the x
 * values span 10x or more, and one line with points per series.  Returns 0
 * or 1 (message printed). */
int report_plot_lines(const char *cmd, const char *path, const char *title,
                      const char *xlabel, const char *ylabel,
                      const report_series *series, size_t n_series);

#endif
