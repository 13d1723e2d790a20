/*
 * trace.h — workload traces for the pagedkv tools: Mooncake JSONL and Azure
 * LLM inference CSV.
 *
 * Both parsers stream the file line by line and are strict: the first
 * malformed line stops the load with "FILE:LINE: field 'X': what is wrong"
 * in the caller's buffer, and nothing is returned (no partial trace).
 *
 *   Mooncake  {"timestamp": ms, "input_length": n, "output_length": n,
 *              "hash_ids": [id, ...]}   one id per 512-token prompt block
 *   Azure     TIMESTAMP,ContextTokens,GeneratedTokens   (header required)
 */
#ifndef PKV_TOOLS_TRACE_H
#define PKV_TOOLS_TRACE_H

#include <stddef.h>
#include <stdint.h>

/* Mooncake's hash_ids stand for 512-token blocks. */
#define TRACE_MOONCAKE_BLOCK 512u

/* Range of every integer field, in every format, checked as it is read (a
 * value outside is an error naming file, line and field):
 *   token counts (input_length, output_length, ContextTokens,
 *   GeneratedTokens)   0 .. TRACE_MAX_TOKENS (16 Mi tokens: 16x the longest
 *                      context served today; prompt + output fits uint32 and
 *                      block arithmetic cannot wrap)
 *   hash ids           0 .. TRACE_MAX_HASH_ID (2^53 - 1, the exact-integer
 *                      range of JSON readers; id * 512 + offset fits 64 bits)
 *   timestamp (ms)     0 .. TRACE_MAX_TIMESTAMP_MS (ns since start fit 64 bits)
 * A line longer than TRACE_MAX_LINE bytes is an error too, never an end. */
#define TRACE_MAX_TOKENS (UINT32_C(1) << 24)
#define TRACE_MAX_HASH_ID ((UINT64_C(1) << 53) - 1)
#define TRACE_MAX_TIMESTAMP_MS (UINT64_MAX / 1000000u)
#define TRACE_MAX_LINE ((size_t)4 << 20)

typedef enum trace_format {
  TRACE_AUTO = 0, /* by extension: .jsonl / .json -> Mooncake, .csv -> Azure */
  TRACE_MOONCAKE = 1,
  TRACE_AZURE = 2
} trace_format;

typedef struct trace_req {
  uint64_t arrival_ns;  /* since the first request of the trace */
  uint32_t input_len;   /* prompt tokens, >= 1 */
  uint32_t output_len;  /* generated tokens */
  uint32_t n_hash;      /* Mooncake: ceil(input_len / 512) ids; Azure: 0 */
  uint64_t hash_off;    /* first id of this request in trace.hash_ids */
} trace_req;

typedef struct trace {
  trace_format format;
  uint32_t block_size;  /* tokens per hash id (512), 0 without ids */
  size_t n_reqs;
  trace_req *reqs;
  size_t n_hash;        /* total ids = block lookups of the trace */
  uint64_t *hash_ids;
  uint64_t max_hash;    /* largest id (ids are dense small integers) */
  uint64_t prompt_tokens; /* sum of input_len */
} trace;

/* Loads path into *out.  On failure returns -1, *out is empty and err holds
 * the reason ("FILE:LINE: field 'X': ..." for bad content). */
int trace_load(const char *path, trace_format format, trace *out, char *err,
               size_t err_cap);
void trace_free(trace *t);
/* "mooncake" / "azure" / NULL; parses the --format flag. */
const char *trace_format_name(trace_format f);
int trace_format_parse(const char *s, trace_format *out);

/* The directory holding the repository's trace excerpts (what the tests
 * read): $PKV_TRACES_DIR, else tests/data/traces relative to the working
 * directory (the project root), else NULL. */
const char *trace_samples_dir(void);
/* The full public traces the excerpts come from, for benchmarks only
 * (tests/data/traces/README.md): $PKV_FULL_TRACES_DIR, else
 * ../shared/traces or ../../shared/traces, else NULL. */
const char *trace_full_dir(void);

#endif
