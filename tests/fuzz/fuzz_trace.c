/*
 * fuzz_trace.c — libFuzzer harness for the tools' trace parsers (Mooncake
 * JSONL and Azure CSV, tools/trace.c).
 *
 *   input = [selector byte][file bytes]
 *
 * The selector picks the format (Mooncake, Azure, or by name — which a
 * nameless in-memory file cannot satisfy).  The bytes go through a memfd so
 * the real trace_load() path (fopen, getline, the line parsers) runs.  A
 * parser must either reject the input with a message naming where it
 * failed and return an empty trace, or return a trace whose fields agree
 * with one another; never crash, read out of bounds, or leak (ASan/UBSan,
 * libFuzzer's leak check).
 */
#include "../../tools/trace.h" 

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

__attribute__((noreturn)) static void fail(const char *what, size_t i) {
  fprintf(stderr, "fuzz_trace: %s (request %zu)\n", what, i);
  abort();
}

static void check_trace(const trace *t, trace_format fmt) {
  if (t->n_reqs == 0 || !t->reqs) fail("accepted an empty trace", 0);
  if (t->format != fmt) fail("wrong format", 0);
  uint64_t tokens = 0;
  size_t ids = 0;
  for (size_t i = 0; i < t->n_reqs; i++) {
    const trace_req *r = &t->reqs[i];
    if (r->input_len == 0) fail("request without a prompt", i);
    tokens += r->input_len;
    if (fmt == TRACE_MOONCAKE) {
      if (r->hash_off != ids) fail("hash ids not contiguous", i);
      if (r->hash_off + r->n_hash > t->n_hash) fail("hash ids out of range", i);
      for (uint32_t k = 0; k < r->n_hash; k++)
        if (t->hash_ids[r->hash_off + k] > t->max_hash)
          fail("id above max_hash", i);
      ids += r->n_hash;
    } else if (r->n_hash != 0) {
      fail("Azure request with hash ids", i);
    }
  }
  if (tokens != t->prompt_tokens) fail("prompt_tokens is not the sum", 0);
  if (fmt == TRACE_MOONCAKE && ids != t->n_hash) fail("n_hash is not the sum", 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  static const trace_format formats[4] = {TRACE_MOONCAKE, TRACE_AZURE,
                                          TRACE_MOONCAKE, TRACE_AUTO};
  trace_format fmt = formats[data[0] & 3];
  int fd = memfd_create("trace", 0);
  if (fd < 0) abort();
  if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) abort();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  trace t;
  char err[256];
  err[0] = '\0';
  int rc = trace_load(path, fmt, &t, err, sizeof err);
  close(fd);
  if (rc == 0) {
    if (fmt == TRACE_AUTO) fail("a nameless file was given a format", 0);
    check_trace(&t, fmt);
    trace_free(&t);
  } else {
    if (rc != -1) fail("error code other than -1", 0);
    if (err[0] == '\0') fail("rejected without a message", 0);
    if (t.n_reqs || t.reqs || t.hash_ids) fail("rejected but not empty", 0);
  }
  return 0;
}
