/*
 * fuzz_trace.c — libFuzzer harness for every trace reader of the tools
 * (tools/trace.c) and what is built on a trace (tools/sim.c).
 *
 *   input = [selector byte][file bytes]
 *
 * selector & 7 picks the reader: the Azure CSV reader, the Mooncake reader
 * by format (JSONL), and by file name (.jsonl, .json, .csv, and a name that
 * says nothing, which must be refused).  The bytes go to a real file, so
 * the whole trace_load() path runs (open, bounded line reads, the line
 * parsers).  A reader must either refuse the input with "FILE:LINE: ..."
 * (or "FILE: ...") and return an empty trace, or return a trace whose fields
 * agree with one another and stay inside the ranges trace.h promises.
 *
 * An accepted trace then goes through sim_stream_build at three block sizes
 * (where a 2^32-1 token count once overflowed a heap buffer) with the
 * stream's invariants checked, and, when it is small, through the simple
 * and the manager replays (LRU and Belady) with their counts checked.
 * selector >> 3 picks the block sizes and the capacity.  Never crash, read
 * out of bounds or leak (ASan/UBSan, libFuzzer's leak check).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../tools/sim.h"
#include "../../tools/trace.h"
#include "fuzz_common.h"

__attribute__((noreturn)) static void fz_fail(const char *what, size_t i) {
  pkv_fuzz_fail("fuzz_trace", "%s (request %zu)", what, i);
}

static void fz_check_trace(const trace *t, trace_format fmt) {
  if (t->n_reqs == 0 || !t->reqs) fz_fail("accepted an empty trace", 0);
  if (t->format != fmt) fz_fail("wrong format", 0);
  uint64_t tokens = 0;
  size_t ids = 0;
  for (size_t i = 0; i < t->n_reqs; i++) {
    const trace_req *r = &t->reqs[i];
    if (r->input_len == 0 || r->input_len > TRACE_MAX_TOKENS) fz_fail("input_len out of range", i);
    if (r->output_len > TRACE_MAX_TOKENS) fz_fail("output_len out of range", i);
    if (i && r->arrival_ns < t->reqs[i - 1].arrival_ns) fz_fail("arrivals go backwards", i);
    tokens += r->input_len;
    if (fmt == TRACE_MOONCAKE) {
      if (r->hash_off != ids) fz_fail("hash ids not contiguous", i);
      if (r->n_hash != (r->input_len + TRACE_MOONCAKE_BLOCK - 1) / TRACE_MOONCAKE_BLOCK)
        fz_fail("hash ids do not cover the prompt", i);
      for (uint32_t k = 0; k < r->n_hash; k++) {
        uint64_t id = t->hash_ids[r->hash_off + k];
        if (id > t->max_hash || id > TRACE_MAX_HASH_ID) fz_fail("hash id out of range", i);
      }
      ids += r->n_hash;
    } else if (r->n_hash != 0) {
      fz_fail("Azure request with hash ids", i);
    }
  }
  if (tokens != t->prompt_tokens) fz_fail("prompt_tokens is not the sum", 0);
  if (fmt == TRACE_MOONCAKE && ids != t->n_hash) fz_fail("n_hash is not the sum", 0);
}

static void fz_check_stream(const trace *t, const sim_stream *s) {
  uint64_t want = 0;
  for (size_t q = 0; q < t->n_reqs; q++) {
    if (s->req_pos[q] != want) fz_fail("req_pos is not the running sum", q);
    want += (t->reqs[q].input_len + s->block_size - 1) / s->block_size;
  }
  if (s->req_pos[t->n_reqs] != want || s->n_pos != want) fz_fail("n_pos is not the sum", 0);
  uint64_t full = 0;
  for (uint64_t p = 0; p < s->n_pos; p++) {
    if (s->id[p] >= s->n_ids) fz_fail("block id beyond n_ids", 0);
    full += !s->partial[p];
    uint64_t n = s->next_all[p];
    if (n < SIM_NEVER && (n <= p || n >= s->n_pos || s->id[n] != s->id[p]))
      fz_fail("next_all does not point at the next use", 0);
  }
  if (full != s->n_full) fz_fail("n_full is not the count", 0);
}

static void fz_check_result(const sim_stream *s, const sim_result *r, int rc) {
  if (rc) {
    fprintf(stderr, "fuzz_trace: replay %s failed: %s\n", r->policy, r->err);
    abort();
  }
  if (r->lookups != s->n_pos || r->block_hits > r->lookups) fz_fail("hit counts", 0);
  if (r->hit_tokens > r->prompt_tokens || r->prompt_tokens != s->t->prompt_tokens)
    fz_fail("hit tokens", 0);
}

static void fz_replays(const sim_stream *s, uint32_t capacity) {
  if (s->n_pos > 4096 || s->max_input > 65536) return; /* keep an exec fast */
  const pkv_policy_ops *lru = pkv_policy_find("lru");
  if (!lru) abort();
  sim_result r;
  memset(&r, 0, sizeof r);
  fz_check_result(s, &r, sim_run_simple(s, lru, NULL, capacity, &r, NULL));
  sim_result b;
  memset(&b, 0, sizeof b);
  fz_check_result(s, &b, sim_run_belady(s, capacity, false, 0, &b, NULL));
  memset(&r, 0, sizeof r);
  int rc = sim_run_manager(s, lru, NULL, capacity, capacity & 3, &r, NULL);
  fz_check_result(s, &r, rc);
  memset(&b, 0, sizeof b);
  fz_check_result(s, &b, sim_run_belady(s, capacity, true, capacity & 3, &b, NULL));
  /* The cluster view: every request lands on exactly one node, node sums
   * agree, the load bound holds, one node is the plain replay. */
  uint64_t caps[3] = {capacity, capacity, capacity};
  for (uint32_t nodes = 1; nodes <= 3; nodes += 2) {
    sim_cluster_cfg cfg = {.n_nodes = nodes, .caps = caps, .ops = lru, .hold = capacity & 3,
                           .route = (sim_route)(capacity & 1), .load_bound = 1.25,
                           .remote_blocks = capacity & 4 ? capacity : 0};
    sim_cluster_result c;
    if (sim_run_cluster(s, &cfg, &c, NULL)) fz_fail("cluster replay failed", 0);
    uint64_t reqs = 0, limit = (uint64_t)(1.25 * (double)s->n_reqs / nodes) + 1;
    for (uint32_t k = 0; k < nodes; k++) {
      reqs += c.node[k].requests;
      if (cfg.route == SIM_ROUTE_PREFIX && c.node[k].requests > limit) fz_fail("load bound broken", k);
      if (c.node[k].hit_tokens + c.node[k].remote_hit_tokens > c.node[k].prompt_tokens)
        fz_fail("node hits more than its prompts", k);
    }
    if (reqs != s->n_reqs || c.all.prompt_tokens != s->t->prompt_tokens) fz_fail("cluster lost requests", 0);
    if (nodes == 1 && (c.all.hit_tokens != r.hit_tokens || c.all.evictions != r.evictions))
      fz_fail("one node differs from the manager replay", 0);
    sim_cluster_result_free(&c);
  }
}

int pkv_fuzz_trace_run(const uint8_t *data, size_t size);
int pkv_fuzz_trace_run(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  static const struct {
    trace_format fmt, want;
    const char *ext;
  } readers[8] = {
      {TRACE_AZURE, TRACE_AZURE, ".txt"},       {TRACE_MOONCAKE, TRACE_MOONCAKE, ".txt"},
      {TRACE_AUTO, TRACE_MOONCAKE, ".jsonl"},   {TRACE_AUTO, TRACE_AZURE, ".csv"},
      {TRACE_AUTO, TRACE_MOONCAKE, ".json"},    {TRACE_AUTO, TRACE_AUTO, ".trace"},
      {TRACE_AZURE, TRACE_AZURE, ".jsonl"},     {TRACE_MOONCAKE, TRACE_MOONCAKE, ".csv"},
  };
  unsigned sel = data[0];
  char path[128];
  snprintf(path, sizeof path, "/tmp/pkv_fuzz_trace_%d%s", (int)getpid(), readers[sel & 7].ext);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) abort();
  if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) abort();
  close(fd);
  trace t;
  char err[512];
  err[0] = '\0';
  int rc = trace_load(path, readers[sel & 7].fmt, &t, err, sizeof err);
  unlink(path);
  if (rc != 0) {
    if (rc != -1) fz_fail("error code other than -1", 0);
    if (strncmp(err, path, strlen(path)) != 0) fz_fail("refused without naming the file", 0);
    if (t.n_reqs || t.reqs || t.hash_ids) fz_fail("refused but not empty", 0);
    return 0;
  }
  if (readers[sel & 7].want == TRACE_AUTO) fz_fail("a name without a format was given one", 0);
  fz_check_trace(&t, readers[sel & 7].want);
  static const uint32_t sizes[8] = {1, 3, 16, 64, 100, 512, 1000, 65536};
  for (unsigned k = 0; k < 3; k++) {
    uint32_t bs = sizes[((sel >> 3) + k * 3) & 7];
    /* Keep an exec fast: a 10M-token Azure row cut into 1-token blocks
     * takes seconds to stream (a timeout on a loaded machine, not a bug);
     * the reader above has already seen it. */
    if (t.prompt_tokens / bs > (UINT64_C(1) << 20)) continue;
    sim_stream s;
    char serr[256];
    if (sim_stream_build(&t, bs, &s, serr, sizeof serr)) {
      if (!serr[0]) fz_fail("stream refused without a message", 0);
      continue;
    }
    fz_check_stream(&t, &s);
    fz_replays(&s, 1 + (sel >> 3) * 3);
    sim_stream_free(&s);
  }
  trace_free(&t);
  return 0;
}

PKV_FUZZ_ENTRY(pkv_fuzz_trace_run)
