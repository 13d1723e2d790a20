/*
 * trace.c — strict streaming parsers for Mooncake JSONL and Azure CSV traces.
 *
 * A trace is read one line at a time (at most TRACE_MAX_LINE bytes: a longer
 * line is an error, not the end of the file), each line parsed in place by
 * a small recursive-descent scanner that knows exactly the fields the format
 * has.  Anything unexpected — a syntax error, a missing, duplicated or
 * unknown field, a negative or fractional count, any integer outside its
 * field's range (trace.h), hash_ids that do not cover
 * the prompt, a timestamp that goes backwards — stops the load with
 *
 *     FILE:LINE: field 'X': what is wrong
 *
 * and the partially built trace is thrown away, so a caller never reports a
 * result computed from half a file.  Blank lines are allowed (a trailing
 * newline is common); CRLF line ends are accepted (the Azure files use them).
 */
#include "trace.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The parse state of one line. */
typedef struct line_ctx {
  const char *path;
  size_t line_no;
  const char *p;     /* cursor */
  const char *begin; /* start of the line (for columns) */
  char *err;
  size_t err_cap;
} line_ctx;

static int line_fail(line_ctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int line_fail(line_ctx *c, const char *field, const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (field)
    snprintf(c->err, c->err_cap, "%s:%zu: field '%s': %s", c->path, c->line_no,
             field, what);
  else
    snprintf(c->err, c->err_cap, "%s:%zu: column %zu: %s", c->path, c->line_no,
             (size_t)(c->p - c->begin) + 1, what);
  return -1;
}

/* ------------------------------------------------------------ growth */

typedef struct growth {
  trace *t;
  size_t reqs_cap, hash_cap;
} growth;

/* Makes room for one more element in *arr (n used of *cap). */
static int grow(void **arr, size_t n, size_t *cap, size_t elem, size_t first) {
  if (n < *cap) return 0;
  size_t ncap = *cap ? 2 * *cap : first;
  void *p = realloc(*arr, ncap * elem);
  if (!p) return -1;
  *arr = p;
  *cap = ncap;
  return 0;
}

static int push_req(growth *g, const trace_req *r) {
  if (grow((void **)&g->t->reqs, g->t->n_reqs, &g->reqs_cap, sizeof *r, 1024)) return -1;
  g->t->reqs[g->t->n_reqs++] = *r;
  return 0;
}

static int push_hash(growth *g, uint64_t id) {
  if (grow((void **)&g->t->hash_ids, g->t->n_hash, &g->hash_cap, sizeof id, 4096)) return -1;
  g->t->hash_ids[g->t->n_hash++] = id;
  return 0;
}

/* ------------------------------------------------------------ scanning */

static void skip_ws(line_ctx *c) {
  while (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n') c->p++;
}

static bool is_blank(const char *s) {
  for (; *s; s++)
    if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return false;
  return true;
}

/* A non-negative JSON integer (no sign, no fraction, no exponent) that fits
 * max.  Returns -1 with the reason on anything else. */
static int scan_uint(line_ctx *c, const char *field, uint64_t max,
                     uint64_t *out) {
  const char *s = c->p;
  if (*s == '-') return line_fail(c, field, "negative value");
  if (*s < '0' || *s > '9') return line_fail(c, field, "expected a non-negative integer");
  uint64_t v = 0;
  while (*s >= '0' && *s <= '9') {
    unsigned d = (unsigned)(*s - '0');
    if (v > (max - d) / 10) return line_fail(c, field, "value too large (max %llu)", (unsigned long long)max);
    v = v * 10 + d;
    s++;
  }
  if (*s == '.' || *s == 'e' || *s == 'E')
    return line_fail(c, field, "expected an integer, got a fraction or exponent");
  c->p = s;
  *out = v;
  return 0;
}

/* A JSON key: a plain quoted string without escapes (the formats have none). */
static int scan_key(line_ctx *c, char *key, size_t cap) {
  if (*c->p != '"') return line_fail(c, NULL, "expected '\"' to start a field name");
  const char *s = ++c->p;
  size_t n = 0;
  while (*s && *s != '"') {
    if (*s == '\\') return line_fail(c, NULL, "escape sequences in field names are not supported");
    if (n + 1 < cap) key[n++] = *s;
    s++;
  }
  if (*s != '"') return line_fail(c, NULL, "unterminated field name");
  key[n] = '\0';
  c->p = s + 1;
  return 0;
}

/* ------------------------------------------------------------ Mooncake */

enum { F_TS = 1, F_IN = 2, F_OUT = 4, F_IDS = 8 };

/* hash_ids: an array of integers, each pushed as it is read. */
static int scan_ids(line_ctx *c, growth *g, const char *key) {
  if (*c->p != '[') return line_fail(c, key, "expected an array of integers");
  c->p++;
  skip_ws(c);
  if (*c->p != ']') {
    for (;;) {
      uint64_t id;
      skip_ws(c);
      if (scan_uint(c, key, TRACE_MAX_HASH_ID, &id)) return -1;
      if (push_hash(g, id)) return line_fail(c, key, "out of memory");
      skip_ws(c);
      if (*c->p == ',') { c->p++; continue; }
      if (*c->p == ']') break;
      return line_fail(c, key, "expected ',' or ']' in the array");
    }
  }
  c->p++;
  return 0;
}

static int mooncake_add(line_ctx *c, growth *g, unsigned seen, uint64_t ts, uint64_t in,
                        uint64_t out, size_t ids0, uint64_t *last_ts);

static int parse_mooncake_line(line_ctx *c, growth *g, uint64_t *last_ts) {
  uint64_t ts = 0, in = 0, out = 0;
  unsigned seen = 0;
  size_t ids0 = g->t->n_hash;

  skip_ws(c);
  if (*c->p != '{') return line_fail(c, NULL, "expected '{' (one JSON object per line)");
  c->p++;
  skip_ws(c);
  if (*c->p == '}') return line_fail(c, "timestamp", "missing (empty object)");
  for (;;) {
    char key[64];
    skip_ws(c);
    if (scan_key(c, key, sizeof key)) return -1;
    skip_ws(c);
    if (*c->p != ':') return line_fail(c, NULL, "expected ':' after field name '%s'", key);
    c->p++;
    skip_ws(c);
    unsigned bit;
    if (!strcmp(key, "timestamp")) bit = F_TS;
    else if (!strcmp(key, "input_length")) bit = F_IN;
    else if (!strcmp(key, "output_length")) bit = F_OUT;
    else if (!strcmp(key, "hash_ids")) bit = F_IDS;
    else return line_fail(c, key, "unknown field");
    if (seen & bit) return line_fail(c, key, "appears twice");
    seen |= bit;
    int rc = 0;
    if (bit == F_TS) rc = scan_uint(c, key, TRACE_MAX_TIMESTAMP_MS, &ts);
    else if (bit == F_IN) rc = scan_uint(c, key, TRACE_MAX_TOKENS, &in);
    else if (bit == F_OUT) rc = scan_uint(c, key, TRACE_MAX_TOKENS, &out);
    else rc = scan_ids(c, g, key);
    if (rc) return -1;
    skip_ws(c);
    if (*c->p == ',') { c->p++; continue; }
    if (*c->p == '}') { c->p++; break; }
    return line_fail(c, NULL, "expected ',' or '}' after field '%s'", key);
  }
  skip_ws(c);
  if (*c->p) return line_fail(c, NULL, "unexpected text after the object");
  return mooncake_add(c, g, seen, ts, in, out, ids0, last_ts);
}

/* The fields of one object, checked together and added as a request. */
static int mooncake_add(line_ctx *c, growth *g, unsigned seen, uint64_t ts, uint64_t in,
                        uint64_t out, size_t ids0, uint64_t *last_ts) {
  trace_req r = {.hash_off = ids0};
  static const struct { unsigned bit; const char *name; } req[] = {
      {F_TS, "timestamp"}, {F_IN, "input_length"}, {F_OUT, "output_length"},
      {F_IDS, "hash_ids"}};
  for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
    if (!(seen & req[i].bit)) return line_fail(c, req[i].name, "missing");
  if (in == 0) return line_fail(c, "input_length", "must be >= 1");
  size_t n_ids = g->t->n_hash - ids0;
  uint64_t want = (in + TRACE_MOONCAKE_BLOCK - 1) / TRACE_MOONCAKE_BLOCK;
  if (n_ids != want)
    return line_fail(c, "hash_ids", "%zu ids for input_length %llu (want ceil(%llu/%u) = %llu)",
                n_ids, (unsigned long long)in, (unsigned long long)in,
                TRACE_MOONCAKE_BLOCK, (unsigned long long)want);
  if (g->t->n_reqs && ts < *last_ts)
    return line_fail(c, "timestamp", "goes backwards (%llu after %llu)",
                (unsigned long long)ts, (unsigned long long)*last_ts);
  *last_ts = ts;
  r.arrival_ns = ts * 1000000u;
  r.input_len = (uint32_t)in;
  r.output_len = (uint32_t)out;
  r.n_hash = (uint32_t)n_ids;
  for (size_t i = ids0; i < g->t->n_hash; i++)
    if (g->t->hash_ids[i] > g->t->max_hash) g->t->max_hash = g->t->hash_ids[i];
  g->t->prompt_tokens += in;
  if (push_req(g, &r)) return line_fail(c, NULL, "out of memory");
  return 0;
}

/* ------------------------------------------------------------ Azure */

static const char azure_header[] = "TIMESTAMP,ContextTokens,GeneratedTokens";

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), so the parse does not depend on the time zone. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

/* digits exactly n wide. */
static bool digits(const char *s, int n, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  *out = v;
  return true;
}

/* "YYYY-MM-DD HH:MM:SS[.fraction]" -> ns since the epoch (UTC). */
static int parse_azure_time(line_ctx *c, uint64_t *out) {
  const char *s = c->p;
  unsigned y, mo, d, h, mi, se;
  if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
      !digits(s + 8, 2, &d) || (s[10] != ' ' && s[10] != 'T') ||
      !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) ||
      s[16] != ':' || !digits(s + 17, 2, &se))
    return line_fail(c, "TIMESTAMP", "expected 'YYYY-MM-DD HH:MM:SS[.fraction]'");
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 || y < 1970)
    return line_fail(c, "TIMESTAMP", "date or time out of range");
  s += 19;
  uint64_t frac_ns = 0;
  if (*s == '.') {
    s++;
    uint64_t scale = 100000000u;
    if (*s < '0' || *s > '9') return line_fail(c, "TIMESTAMP", "empty fraction of a second");
    while (*s >= '0' && *s <= '9') {
      frac_ns += (uint64_t)(*s - '0') * scale;
      scale /= 10;
      s++;
    }
  }
  int64_t days = days_from_civil(y, mo, d);
  *out = ((uint64_t)days * 86400u + h * 3600u + mi * 60u + se) * 1000000000u + frac_ns;
  c->p = s;
  return 0;
}

static int parse_azure_line(line_ctx *c, growth *g, uint64_t *first_ns,
                            uint64_t *last_ns) {
  trace_req r = {0};
  uint64_t ts = 0, ctx = 0, gen = 0;
  if (parse_azure_time(c, &ts)) return -1;
  if (*c->p != ',') return line_fail(c, "TIMESTAMP", "expected ',' after the timestamp");
  c->p++;
  if (scan_uint(c, "ContextTokens", TRACE_MAX_TOKENS, &ctx)) return -1;
  if (*c->p != ',') return line_fail(c, "ContextTokens", "expected ',' after the value");
  c->p++;
  if (scan_uint(c, "GeneratedTokens", TRACE_MAX_TOKENS, &gen)) return -1;
  if (*c->p == ',') return line_fail(c, "GeneratedTokens", "unexpected extra column");
  if (!is_blank(c->p)) return line_fail(c, "GeneratedTokens", "unexpected text after the value");
  if (ctx == 0) return line_fail(c, "ContextTokens", "must be >= 1");
  if (g->t->n_reqs == 0) *first_ns = ts;
  else if (ts < *last_ns) return line_fail(c, "TIMESTAMP", "goes backwards");
  *last_ns = ts;
  r.arrival_ns = ts - *first_ns;
  r.input_len = (uint32_t)ctx;
  r.output_len = (uint32_t)gen;
  g->t->prompt_tokens += ctx;
  if (push_req(g, &r)) return line_fail(c, NULL, "out of memory");
  return 0;
}

/* ------------------------------------------------------------ load */

/* Reads one line (with its '\n', if any) into *buf, NUL-terminated, at most
 * TRACE_MAX_LINE bytes.  Returns the length, 0 at the end of the file, -1 on
 * a read error or no memory (errno set), -2 for a longer line.  *nul is set
 * if the line holds a NUL byte.  getline() would grow without bound and
 * report running out of memory as the end of the file. */
static ssize_t read_line(FILE *f, char **buf, size_t *cap, bool *nul) {
  size_t n = 0;
  *nul = false;
  for (;;) {
    int ch = getc_unlocked(f);
    if (ch == EOF) {
      if (ferror(f)) return -1;
      break;
    }
    if (n + 2 > *cap) {
      if (n + 1 > TRACE_MAX_LINE) return -2;
      size_t ncap = *cap ? 2 * *cap : 4096;
      char *p = realloc(*buf, ncap);
      if (!p) return -1;
      *buf = p;
      *cap = ncap;
    }
    if (ch == 0) *nul = true;
    (*buf)[n++] = (char)ch;
    if (ch == '\n') break;
  }
  if (n > TRACE_MAX_LINE) return -2;
  if (*cap) (*buf)[n] = '\0';
  return (ssize_t)n;
}

static trace_format guess_format(const char *path) {
  const char *dot = strrchr(path, '.');
  if (dot && (!strcmp(dot, ".jsonl") || !strcmp(dot, ".json"))) return TRACE_MOONCAKE;
  if (dot && !strcmp(dot, ".csv")) return TRACE_AZURE;
  return TRACE_AUTO;
}

int trace_load(const char *path, trace_format format, trace *out, char *err,
               size_t err_cap) {
  memset(out, 0, sizeof *out);
  if (format == TRACE_AUTO) format = guess_format(path);
  if (format == TRACE_AUTO) {
    snprintf(err, err_cap, "%s: cannot tell the format from the name (use .jsonl or .csv, or --format)", path);
    return -1;
  }
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, err_cap, "%s: %s", path, strerror(errno));
    return -1;
  }
  trace t = {.format = format,
             .block_size = format == TRACE_MOONCAKE ? TRACE_MOONCAKE_BLOCK : 0};
  growth g = {.t = &t};
  line_ctx c = {.path = path, .err = err, .err_cap = err_cap};
  char *buf = NULL;
  size_t cap = 0;
  ssize_t len;
  uint64_t first_ns = 0, last = 0;
  bool header = false;
  int rc = 0;
  bool nul;
  while ((len = read_line(f, &buf, &cap, &nul)) != 0) {
    c.line_no++;
    if (len == -2) {
      snprintf(err, err_cap, "%s:%zu: line longer than %zu bytes (not a trace line)", path,
               c.line_no, TRACE_MAX_LINE);
      rc = -1;
      break;
    }
    if (len < 0) {
      snprintf(err, err_cap, "%s:%zu: read error: %s", path, c.line_no, strerror(errno));
      rc = -1;
      break;
    }
    c.begin = c.p = buf;
    if (nul) {
      rc = line_fail(&c, NULL, "NUL byte in the line");
      break;
    }
    if (is_blank(buf)) continue;
    if (format == TRACE_AZURE && !header) {
      size_t n = strlen(azure_header);
      if (strncmp(buf, azure_header, n) || !is_blank(buf + n)) {
        rc = line_fail(&c, "header", "expected '%s'", azure_header);
        break;
      }
      header = true;
      continue;
    }
    rc = format == TRACE_MOONCAKE ? parse_mooncake_line(&c, &g, &last)
                                  : parse_azure_line(&c, &g, &first_ns, &last);
    if (rc) break;
  }
  if (!rc && ferror(f)) {
    snprintf(err, err_cap, "%s: read error: %s", path, strerror(errno));
    rc = -1;
  }
  free(buf);
  fclose(f);
  if (!rc && t.n_reqs == 0) {
    snprintf(err, err_cap, "%s: no requests in the trace", path);
    rc = -1;
  }
  if (rc) {
    trace_free(&t);
    return -1;
  }
  *out = t;
  return 0;
}

void trace_free(trace *t) {
  if (!t) return;
  free(t->reqs);
  free(t->hash_ids);
  memset(t, 0, sizeof *t);
}

const char *trace_format_name(trace_format f) {
  return f == TRACE_MOONCAKE ? "mooncake" : f == TRACE_AZURE ? "azure" : NULL;
}

int trace_format_parse(const char *s, trace_format *out) {
  if (!strcmp(s, "mooncake") || !strcmp(s, "jsonl")) *out = TRACE_MOONCAKE;
  else if (!strcmp(s, "azure") || !strcmp(s, "csv")) *out = TRACE_AZURE;
  else if (!strcmp(s, "auto")) *out = TRACE_AUTO;
  else return -1;
  return 0;
}

static const char *first_dir(const char *env_name, const char *const *candidates, size_t n) {
  struct stat st;
  const char *env = getenv(env_name);
  if (env && *env) return stat(env, &st) == 0 && S_ISDIR(st.st_mode) ? env : NULL;
  for (size_t i = 0; i < n; i++)
    if (stat(candidates[i], &st) == 0 && S_ISDIR(st.st_mode)) return candidates[i];
  return NULL;
}

const char *trace_samples_dir(void) {
  static const char *const candidates[] = {"tests/data/traces"};
  return first_dir("PKV_TRACES_DIR", candidates, 1);
}

const char *trace_full_dir(void) {
  static const char *const candidates[] = {"../shared/traces", "../../shared/traces"};
  return first_dir("PKV_FULL_TRACES_DIR", candidates, 2);
}
