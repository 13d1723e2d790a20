/*
 * cli.c — the helpers every pagedkv subcommand uses: strict flag value
 * parsing, error printing and the stderr progress bar (results are written
 * by report.c).
 *
 * Flag values are parsed strictly (no trailing junk, no silent wrap) so a
 * typo fails with the flag's name instead of running the wrong experiment.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void vreport(const char *cmd, const char *fmt, va_list ap) {
  fprintf(stderr, "pagedkv%s%s: ", cmd ? " " : "", cmd ? cmd : "");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cmd, fmt, ap);
  va_end(ap);
  fprintf(stderr, "Try 'pagedkv %s --help'.\n", cmd ? cmd : "");
  return CLI_EXIT_USAGE;
}

int cli_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cmd, fmt, ap);
  va_end(ap);
  return 1;
}

bool cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) {
  if (!s || !isdigit((unsigned char)*s)) return false;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

/* Value with a suffix scaled by unit (1000 or 1024). */
static bool parse_scaled(const char *s, uint64_t unit, bool allow_bytes_suffix,
                         uint64_t *out) {
  if (!s || !isdigit((unsigned char)*s)) return false;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (errno || end == s || !isfinite(v) || v < 0) return false;
  uint64_t mul = 1;
  switch (toupper((unsigned char)*end)) {
  case 'K': mul = unit; end++; break;
  case 'M': mul = unit * unit; end++; break;
  case 'G': mul = unit * unit * unit; end++; break;
  case 'T': mul = unit * unit * unit * unit; end++; break;
  default: break;
  }
  if (allow_bytes_suffix) {
    if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
    if (*end == 'B' || *end == 'b') end++;
  }
  if (*end) return false;
  double r = v * (double)mul;
  if (r > 1.8e19 || r != floor(r)) return false;
  *out = (uint64_t)r;
  return true;
}

bool cli_parse_bytes(const char *s, uint64_t *out) {
  return parse_scaled(s, 1024, true, out);
}

bool cli_parse_double(const char *s, double *out) {
  if (!s || !*s) return false;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || v < 0) return false;
  *out = v;
  return true;
}

bool cli_parse_u64_list(const char *s, uint64_t min, uint64_t **out, size_t *n) {
  char **names;
  size_t k;
  if (!cli_split_names(s, &names, &k)) return false;
  uint64_t *v = calloc(k ? k : 1, sizeof *v);
  bool ok = v != NULL;
  for (size_t i = 0; ok && i < k; i++)
    ok = parse_scaled(names[i], 1000, false, &v[i]) && v[i] >= min;
  cli_free_names(names);
  if (!ok) {
    free(v);
    return false;
  }
  *out = v;
  *n = k;
  return true;
}

bool cli_split_names(const char *s, char ***out, size_t *n) {
  size_t k = 1;
  for (const char *p = s; *p; p++) k += *p == ',';
  char **v = calloc(k + 1, sizeof *v);
  if (!v) return false;
  size_t i = 0;
  const char *p = s;
  for (;;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 0) { /* empty item: "a,,b" or trailing comma */
      cli_free_names(v);
      return false;
    }
    v[i] = strndup(p, len);
    if (!v[i]) {
      cli_free_names(v);
      return false;
    }
    i++;
    if (!e) break;
    p = e + 1;
  }
  *out = v;
  *n = i;
  return true;
}

void cli_free_names(char **names) {
  if (!names) return;
  for (char **p = names; *p; p++) free(*p);
  free(names);
}

bool cli_grow(void **arr, size_t *cap, size_t need, size_t elem, size_t first) {
  if (need <= *cap) return true;
  size_t n = *cap ? *cap : first;
  while (n < need) n *= 2;
  void *p = realloc(*arr, n * elem);
  if (!p) return false;
  *arr = p;
  *cap = n;
  return true;
}

unsigned cli_nproc(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (unsigned)n : 1;
}

uint64_t cli_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void cli_progress_init(cli_progress *p, const char *label, uint64_t total,
                       bool quiet) {
  memset(p, 0, sizeof *p);
  p->label = label;
  p->total = total ? total : 1;
  p->tty = isatty(STDERR_FILENO);
  p->quiet = quiet;
}

void cli_progress_update(cli_progress *p, uint64_t done, const char *tail) {
  if (p->quiet) return;
  uint64_t now = cli_now_ns();
  /* A terminal gets ~10 redraws a second; a log gets a line every 5 s. */
  uint64_t every = p->tty ? 100000000u : 5000000000u;
  if (p->drawn && now - p->last_ns < every && done < p->total) return;
  p->last_ns = now;
  p->drawn = true;
  double frac = (double)done / (double)p->total;
  if (frac > 1) frac = 1;
  enum { WIDTH = 28 };
  char bar[WIDTH + 1];
  int fill = (int)(frac * WIDTH);
  for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
  bar[WIDTH] = '\0';
  fprintf(stderr, "%s%s [%s] %3.0f%% %llu/%llu%s%s%s", p->tty ? "\r" : "",
          p->label, bar, frac * 100, (unsigned long long)done,
          (unsigned long long)p->total, tail && *tail ? "  " : "",
          tail ? tail : "", p->tty ? "\033[K" : "\n");
  fflush(stderr);
}

void cli_progress_finish(cli_progress *p) {
  if (!p->quiet && p->tty && p->drawn) fputc('\n', stderr);
}
