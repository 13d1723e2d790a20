/*
 * report.c — result writers shared by the subcommands (see report.h): JSON
 * string escaping, output files or standard output, and gnuplot scripts.
 *
 * Every string that reaches a gnuplot script (an output path, a trace's
 * name, a policy name from a plug-in) is written by cli_buf_gnuplot_string
 * as a single-quoted string with quotes doubled; gnuplot itself is started
 * by a fixed command line, so nothing from a file or flag reaches a shell.
 */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"

FILE *report_open(const char *path) {
  return strcmp(path, "-") ? fopen(path, "w") : stdout;
}

int report_close(const char *cmd, FILE *f, const char *path) {
  bool std = f == stdout;
  if (std ? fflush(f) != 0 || ferror(f) : fclose(f) != 0)
    return cli_error(cmd, "%s: write failed: %m", std ? "standard output" : path);
  return 0;
}

bool cli_gnuplot_available(const char *cmd) {
  /* A fixed command line: nothing from the user reaches the shell. */
  if (system("command -v gnuplot >/dev/null 2>&1") == 0) return true;
  cli_error(cmd, "--plot needs gnuplot, which is not installed (scripts/deps.sh plot); "
                 "nothing was run");
  return false;
}

void cli_buf_printf(cli_buf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (k < 0) {
      b->oom = true;
      return;
    }
    if (b->s && (size_t)k < b->cap - b->len) {
      b->len += (size_t)k;
      return;
    }
    if (!cli_grow((void **)&b->s, &b->cap, b->len + (size_t)k + 1, 1, 4096)) {
      b->oom = true;
      return;
    }
  }
}

void cli_buf_gnuplot_string(cli_buf *b, const char *s) {
  cli_buf_printf(b, "'");
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\'') cli_buf_printf(b, "''");
    else if (*p < 0x20 || *p == 0x7f) cli_buf_printf(b, "?");
    else cli_buf_printf(b, "%c", *p);
  }
  cli_buf_printf(b, "'");
}

int cli_gnuplot(const char *cmd, const char *script) {
  if (!cli_gnuplot_available(cmd)) return -1;
  FILE *g = popen("gnuplot", "w");
  if (!g) {
    cli_error(cmd, "cannot start gnuplot: %s", strerror(errno));
    return -1;
  }
  fputs(script, g);
  int st = pclose(g);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    cli_error(cmd, "gnuplot failed (exit status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return -1;
  }
  return 0;
}

void cli_json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

int report_plot_lines(const char *cmd, const char *path, const char *title,
                      const char *xlabel, const char *ylabel,
                      const report_series *series, size_t n_series) {
  cli_buf b = {0};
  double lo = INFINITY, hi = -INFINITY;
  for (size_t k = 0; k < n_series; k++)
    for (size_t i = 0; i < series[k].n; i++) {
      lo = fmin(lo, series[k].x[i]);
      hi = fmax(hi, series[k].x[i]);
    }
  cli_buf_printf(&b, "set terminal pngcairo size 900,560 noenhanced\nset output ");
  cli_buf_gnuplot_string(&b, path);
  cli_buf_printf(&b, "\nset title ");
  cli_buf_gnuplot_string(&b, title);
  cli_buf_printf(&b, "\nset xlabel ");
  cli_buf_gnuplot_string(&b, xlabel);
  cli_buf_printf(&b, "\nset ylabel ");
  cli_buf_gnuplot_string(&b, ylabel);
  cli_buf_printf(&b, "\nset key left top\nset grid\nset yrange [0:*]\n");
  if (lo > 0 && hi >= 10 * lo) cli_buf_printf(&b, "set logscale x\n");
  if (hi == lo) cli_buf_printf(&b, "set xrange [%.0f:%.0f]\n", floor(lo / 2), floor(hi * 3 / 2 + 1));
  for (size_t k = 0; k < n_series; k++) {
    cli_buf_printf(&b, "$d%zu << EOD\n", k);
    for (size_t i = 0; i < series[k].n; i++)
      cli_buf_printf(&b, "%.10g %.6f\n", series[k].x[i], series[k].y[i]);
    cli_buf_printf(&b, "EOD\n");
  }
  cli_buf_printf(&b, "plot ");
  for (size_t k = 0; k < n_series; k++) {
    cli_buf_printf(&b, "%s$d%zu using 1:2 with linespoints %s title ", k ? ", " : "", k,
                   series[k].dashed ? "lw 2 dt 2 lc rgb 'black'" : "lw 2");
    cli_buf_gnuplot_string(&b, series[k].name);
  }
  cli_buf_printf(&b, "\n");
  int rc = b.oom ? cli_error(cmd, "out of memory (plot script)") : cli_gnuplot(cmd, b.s) ? 1 : 0;
  free(b.s);
  return rc;
}
