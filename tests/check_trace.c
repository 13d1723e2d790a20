/*
 * check_trace.c — the trace parsers: valid Mooncake and Azure input, every
 * kind of malformed line (with the exact FILE:LINE: field report and no
 * partial result), and the request counts of the repository's trace excerpts.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tools/trace.h"
#include "tu_core.h"

static char tmp_path[64];

/* Writes text to a fresh temp file with the given extension. */
static const char *write_tmp(const char *ext, const char *text) {
  snprintf(tmp_path, sizeof tmp_path, "/tmp/pkv_trace_XXXXXX%s", ext);
  int fd = mkstemps(tmp_path, (int)strlen(ext));
  ck_assert_int_ge(fd, 0);
  size_t n = strlen(text);
  ck_assert_int_eq(write(fd, text, n), (ssize_t)n);
  close(fd);
  return tmp_path;
}

/* Writes text to a temp file and loads it into *t, which must succeed (the
 * reader's message otherwise); returns the file's path. */
static const char *load_ok(const char *ext, const char *text, trace *t) {
  const char *path = write_tmp(ext, text);
  char err[512];
  ck_assert_msg(trace_load(path, TRACE_AUTO, t, err, sizeof err) == 0, "%s", err);
  return path;
}

/* Loads text, expects failure, and checks the message ends with want after
 * "PATH:LINE: ". */
static void expect_bad(const char *ext, const char *text, int line, const char *want) {
  const char *path = write_tmp(ext, text);
  trace t;
  char err[512] = "";
  ck_assert_int_eq(trace_load(path, TRACE_AUTO, &t, err, sizeof err), -1);
  ck_assert_ptr_null(t.reqs);
  ck_assert_uint_eq(t.n_reqs, 0);
  char prefix[128];
  snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
  ck_assert_msg(!strncmp(err, prefix, strlen(prefix)), "got '%s', want prefix '%s'", err, prefix);
  ck_assert_msg(strstr(err, want) != NULL, "got '%s', want '%s'", err, want);
  unlink(path);
}

START_TEST(mooncake_valid) {
  trace t;
  const char *path = load_ok(".jsonl",
      "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 6, \"hash_ids\": [0, 1]}\n"
      "\n"
      "{\"hash_ids\":[0,2,3],\"output_length\":0,\"input_length\":1025,\"timestamp\":7}\r\n"
      "  {\"timestamp\": 7, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [9]}  \n", &t);
  ck_assert_int_eq(t.format, TRACE_MOONCAKE);
  ck_assert_uint_eq(t.block_size, 512);
  ck_assert_uint_eq(t.n_reqs, 3);
  ck_assert_uint_eq(t.n_hash, 6);
  ck_assert_uint_eq(t.reqs[1].input_len, 1025);
  ck_assert_uint_eq(t.reqs[1].output_len, 0);
  ck_assert_uint_eq(t.reqs[1].arrival_ns, 7000000u);
  ck_assert_uint_eq(t.reqs[1].n_hash, 3);
  ck_assert_uint_eq(t.hash_ids[t.reqs[1].hash_off + 2], 3);
  ck_assert_uint_eq(t.hash_ids[t.reqs[2].hash_off], 9);
  ck_assert_uint_eq(t.max_hash, 9);
  ck_assert_uint_eq(t.prompt_tokens, 1000 + 1025 + 512);
  trace_free(&t);
  unlink(path);
}
END_TEST

START_TEST(mooncake_malformed) {
  const char *ok = "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n";
  char buf[512];
  struct { const char *line; const char *want; } cases[] = {
      {"{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1}", "field 'hash_ids': missing"},
      {"{\"timestamp\": 1, \"input_length\": -3, \"output_length\": 1, \"hash_ids\": [1]}", "field 'input_length': negative value"},
      {"{\"timestamp\": 1, \"input_length\": 10.5, \"output_length\": 1, \"hash_ids\": [1]}", "field 'input_length': expected an integer"},
      {"{\"timestamp\": 1, \"input_length\": \"10\", \"output_length\": 1, \"hash_ids\": [1]}", "field 'input_length': expected a non-negative integer"},
      {"{\"timestamp\": 1, \"input_length\": 0, \"output_length\": 1, \"hash_ids\": []}", "field 'input_length': must be >= 1"},
      {"{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 1, \"hash_ids\": [1]}", "field 'hash_ids': 1 ids for input_length 600"},
      {"{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1,]}", "field 'hash_ids': expected a non-negative integer"},
      {"{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1}", "field 'hash_ids': expected ',' or ']'"},
      {"{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1], \"extra\": 2}", "field 'extra': unknown field"},
      {"{\"timestamp\": 1, \"timestamp\": 2, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}", "field 'timestamp': appears twice"},
      {"{\"timestamp\": 1, \"input_length\": 99999999999, \"output_length\": 1, \"hash_ids\": [1]}", "field 'input_length': value too large"},
      {"{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]} x", "unexpected text after the object"},
      {"{\"timestamp\": 1, \"input_length\": 10 \"output_length\": 1, \"hash_ids\": [1]}", "expected ',' or '}' after field 'input_length'"},
      {"[1, 2]", "expected '{'"},
      {"{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]", "expected ',' or '}'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(buf, sizeof buf, "%s%s\n%s", ok, cases[i].line, ok);
    expect_bad(".jsonl", buf, 2, cases[i].want);
  }
  /* A timestamp going backwards is reported on its own line. */
  snprintf(buf, sizeof buf, "%s%s\n",
           "{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n",
           "{\"timestamp\": 4, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}");
  expect_bad(".jsonl", buf, 2, "field 'timestamp': goes backwards");
}
END_TEST

START_TEST(azure_valid) {
  trace t;
  const char *path = load_ok(".csv",
      "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
      "2023-11-16 18:15:46.6805900,374,44\r\n"
      "2023-11-16 18:15:50.9951690,396,109\r\n"
      "2023-11-17 00:00:00,1,0\r\n", &t);
  ck_assert_int_eq(t.format, TRACE_AZURE);
  ck_assert_uint_eq(t.n_reqs, 3);
  ck_assert_uint_eq(t.n_hash, 0);
  ck_assert_uint_eq(t.reqs[0].arrival_ns, 0);
  ck_assert_uint_eq(t.reqs[1].arrival_ns, 4314579000u);
  ck_assert_uint_eq(t.reqs[2].input_len, 1);
  /* 18:15:46.68059 -> midnight = 20653.31941 s */
  ck_assert_uint_eq(t.reqs[2].arrival_ns, 20653319410000u);
  ck_assert_uint_eq(t.reqs[1].output_len, 109);
  ck_assert_uint_eq(t.prompt_tokens, 771);
  trace_free(&t);
  unlink(path);
}
END_TEST

START_TEST(azure_malformed) {
  const char *hdr = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
  const char *ok = "2023-11-16 18:15:46.6805900,374,44\n";
  char buf[512];
  struct { const char *line; const char *want; } cases[] = {
      {"2023-11-16 18:15:47,abc,3", "field 'ContextTokens': expected a non-negative integer"},
      {"2023-11-16 18:15:47,12", "field 'ContextTokens': expected ',' after the value"},
      {"2023-11-16 18:15:47,12,-4", "field 'GeneratedTokens': negative value"},
      {"2023-11-16 18:15:47,12,4,5", "field 'GeneratedTokens': unexpected extra column"},
      {"2023-11-16 18:15:47,0,4", "field 'ContextTokens': must be >= 1"},
      {"16/11/2023 18:15:47,12,4", "field 'TIMESTAMP': expected 'YYYY-MM-DD HH:MM:SS"},
      {"2023-13-16 18:15:47,12,4", "field 'TIMESTAMP': date or time out of range"},
      {"2023-11-16 18:15:40,12,4", "field 'TIMESTAMP': goes backwards"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(buf, sizeof buf, "%s%s%s\n%s", hdr, ok, cases[i].line, ok);
    expect_bad(".csv", buf, 3, cases[i].want);
  }
  expect_bad(".csv", "Time,Context,Generated\n2023-11-16 18:15:47,12,4\n", 1, "field 'header': expected");
}
END_TEST

START_TEST(load_errors) {
  trace t;
  char err[256];
  ck_assert_int_eq(trace_load("/nonexistent/x.jsonl", TRACE_AUTO, &t, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "No such file"));
  ck_assert_int_eq(trace_load("/tmp/x.txt", TRACE_AUTO, &t, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "cannot tell the format"));
  const char *path = write_tmp(".jsonl", "\n\n");
  ck_assert_int_eq(trace_load(path, TRACE_AUTO, &t, err, sizeof err), -1);
  ck_assert_ptr_nonnull(strstr(err, "no requests"));
  unlink(path);
  /* Explicit format beats the extension. */
  path = write_tmp(".txt", "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [4]}\n");
  ck_assert_int_eq(trace_load(path, TRACE_MOONCAKE, &t, err, sizeof err), 0);
  ck_assert_uint_eq(t.n_reqs, 1);
  trace_free(&t);
  unlink(path);
}
END_TEST

START_TEST(field_ranges_and_long_lines) {
  /* Every integer field of every format has its range (trace.h). */
  expect_bad(".csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,4294967295,44\n",
             2, "field 'ContextTokens': value too large (max 16777216)");
  expect_bad(".csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,16777217\n",
             2, "field 'GeneratedTokens': value too large");
  expect_bad(".jsonl", "{\"timestamp\": 0, \"input_length\": 16777217, \"output_length\": 1, \"hash_ids\": [1]}\n",
             1, "field 'input_length': value too large");
  expect_bad(".jsonl", "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 99999999, \"hash_ids\": [1]}\n",
             1, "field 'output_length': value too large");
  expect_bad(".jsonl", "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [9007199254740992]}\n",
             1, "field 'hash_ids': value too large (max 9007199254740991)");
  expect_bad(".jsonl", "{\"timestamp\": 18446744073709552, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n",
             1, "field 'timestamp': value too large");
  /* The largest values in range are accepted. */
  trace t;
  const char *path = load_ok(".csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                     "2023-11-16 18:15:46.6805900,16777216,16777216\n", &t);
  ck_assert_uint_eq(t.reqs[0].input_len, TRACE_MAX_TOKENS);
  trace_free(&t);
  unlink(path);
  /* A line longer than the reader holds is an error at its line, not the
   * end of the trace (one good line before it, one after). */
  size_t big = TRACE_MAX_LINE + 10;
  char *text = malloc(big + 256);
  ck_assert_ptr_nonnull(text);
  int n = snprintf(text, 256, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,10,4\n"
                              "2023-11-16 18:15:47.0,10,");
  memset(text + n, '7', big);
  strcpy(text + n + big, "\n2023-11-16 18:15:48.0,10,4\n");
  expect_bad(".csv", text, 3, "line longer than 4194304 bytes");
  free(text);
}
END_TEST

START_TEST(shared_samples) {
  const char *dir = trace_samples_dir();
  ck_assert_msg(dir != NULL, "test data missing: tests/data/traces (run from the project root, "
                             "or set PKV_TRACES_DIR)");
  /* Counts of the excerpts (tests/data/traces/README.md: lines and hash ids
   * counted with python's json and csv modules). */
  static const struct { const char *name; size_t n; uint64_t n_hash; } files[] = {
      {"synthetic_trace.jsonl", 500, 15197},
      {"AzureLLMInferenceTrace_conv.csv", 300, 0},
      {"AzureLLMInferenceTrace_code.csv", 300, 0},
  };
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
    trace t;
    ck_assert_msg(trace_load(path, TRACE_AUTO, &t, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(t.n_reqs, files[i].n);
    ck_assert_uint_eq(t.n_hash, files[i].n_hash);
    trace_free(&t);
  }
}
END_TEST

/* Seeded mutation fuzz: flipped, inserted and deleted bytes in valid files
 * must give either a consistent trace or a FILE:LINE report with nothing
 * returned — never a crash (this runs under ASan in `make asan`). */
static uint64_t fz_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void fuzz_one(const char *ext, const char *seed_text, uint64_t *rng) {
  char buf[1024];
  size_t n = strlen(seed_text);
  memcpy(buf, seed_text, n);
  int edits = 1 + (int)(fz_next(rng) % 4);
  for (int e = 0; e < edits && n > 2; e++) {
    size_t at = fz_next(rng) % n;
    static const char alphabet[] = "0123456789,:[]{}\"- .\n\r\t-ex";
    char ch = alphabet[fz_next(rng) % (sizeof alphabet - 1)];
    switch (fz_next(rng) % 3) {
    case 0: buf[at] = ch; break;
    case 1:
      if (n + 1 < sizeof buf) {
        memmove(buf + at + 1, buf + at, n - at);
        buf[at] = ch;
        n++;
      }
      break;
    default:
      memmove(buf + at, buf + at + 1, n - at - 1);
      n--;
      break;
    }
  }
  buf[n] = '\0';
  const char *path = write_tmp(ext, buf);
  trace t;
  char err[512] = "";
  if (trace_load(path, TRACE_AUTO, &t, err, sizeof err) == 0) {
    ck_assert_uint_ge(t.n_reqs, 1);
    uint64_t ids = 0, tokens = 0;
    for (size_t i = 0; i < t.n_reqs; i++) {
      ck_assert_uint_ge(t.reqs[i].input_len, 1);
      if (t.format == TRACE_MOONCAKE)
        ck_assert_uint_eq(t.reqs[i].n_hash, (t.reqs[i].input_len + 511) / 512);
      ck_assert_uint_eq(t.reqs[i].hash_off, ids);
      ids += t.reqs[i].n_hash;
      tokens += t.reqs[i].input_len;
      if (i) ck_assert_uint_ge(t.reqs[i].arrival_ns, t.reqs[i - 1].arrival_ns);
    }
    ck_assert_uint_eq(ids, t.n_hash);
    ck_assert_uint_eq(tokens, t.prompt_tokens);
    trace_free(&t);
  } else {
    ck_assert_ptr_null(t.reqs);
    ck_assert_msg(!strncmp(err, path, strlen(path)), "report without the file: '%s'", err);
  }
  unlink(path);
}

START_TEST(fuzz_parsers) {
#ifdef PKV_SANITIZE
  const int rounds = 300;
#else
  const int rounds = 2000;
#endif
  uint64_t rng = 0x2545f4914f6cdd1dull;
  for (int i = 0; i < rounds; i++) {
    fuzz_one(".jsonl",
             "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 6, \"hash_ids\": [0, 1]}\n"
             "{\"timestamp\": 5, \"input_length\": 513, \"output_length\": 0, \"hash_ids\": [0, 7]}\n",
             &rng);
    fuzz_one(".csv",
             "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
             "2023-11-16 18:15:46.6805900,374,44\r\n"
             "2023-11-16 18:15:50.9951690,396,109\r\n",
             &rng);
  }
}
END_TEST

TU_MAIN("trace",
    {"mooncake", 0, {{mooncake_valid}, {mooncake_malformed}}},
    {"azure", 0, {{azure_valid}, {azure_malformed}}},
    {"files", 60, {{load_errors}, {field_ranges_and_long_lines}, {shared_samples},
                   {fuzz_parsers}}})
