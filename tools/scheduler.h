/*
 * scheduler.h — the continuous-batching scheduler of `pagedkv run`.
 *
 * The scheduler drives a pkv_cache through a workload: it admits requests
 * while memory and the token budget allow, prefix-matches each prompt,
 * prefills in chunks, decodes every running sequence one token per step,
 * forks parallel samples, frees finished sequences and preempts (frees, to
 * recompute later) the youngest sequence when an append runs out of memory.
 *
 * The compute is a pair of callbacks, so the scheduler runs the same with
 * the real engine (tools/run.c), with no compute at all (--dry, external
 * storage) and under a test that checks what it was asked to compute.
 */
#ifndef PKV_TOOLS_SCHED_H
#define PKV_TOOLS_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagedkv/pagedkv.h"

/* The requests, all queued at the start in order (an offline batch). */
typedef struct sched_workload {
  size_t n_reqs;
  const uint32_t *prompt_len;  /* [n_reqs], >= 1 */
  const uint32_t *output_len;  /* [n_reqs], >= 1 generated tokens */
  const uint32_t *n_samples;   /* [n_reqs] parallel samples (fork); NULL = 1 */
  /* Writes request r's prompt tokens into out[0 .. prompt_len[r]). */
  void (*prompt)(const void *ctx, size_t r, int32_t *out);
  const void *ctx;
} sched_workload;

/* The compute back end.  Either hook may be NULL (no compute).  They are
 * called after the slots are reserved (append) and before the commit; a
 * non-zero return stops the run with that error. */
typedef enum sched_event {
  SCHED_ADMIT = 1,   /* a sequence was created for (req, sample) */
  SCHED_FORK = 2,    /* a sample was forked from sample 0 */
  SCHED_PREEMPT = 3, /* freed, to be recomputed */
  SCHED_FINISH = 4,  /* generated all its tokens and was freed */
  SCHED_REJECT = 5   /* the request can never fit: dropped */
} sched_event;

typedef struct sched_compute {
  int (*prefill)(void *user, pkv_seq_id seq, uint32_t pos0, uint32_t n);
  int (*decode)(void *user, const pkv_seq_id *seqs, uint32_t n);
  /* Optional: what happened to which sequence (for tests and traces). */
  void (*on_event)(void *user, sched_event ev, uint32_t req, uint32_t sample,
                   pkv_seq_id seq);
  void *user;
} sched_compute;

struct sched_stats;

typedef struct sched_config {
  uint32_t max_seqs;         /* running sequences at most (default 256) */
  uint32_t max_batch_tokens; /* tokens computed per step (default 2048) */
  uint32_t prefill_chunk;    /* prefill tokens per sequence per step (default 512) */
  /* Admission keeps this many blocks free beyond the prompt's (default:
   * 1% of the pool, at least 1), plus headroom_blocks per running sequence, so running
   * sequences can grow a while before anything is preempted, plus the blocks
   * running sequences still need to finish a chunked prefill. */
  uint32_t watermark_blocks;
  uint32_t headroom_blocks;  /* reserve per running sequence (default 2) */
  bool record_steps;         /* keep a per-step time series */
  bool quiet;                /* no progress bar */
  /* Called once per step (may be NULL), e.g. for a progress display. */
  void (*on_step)(void *user, const struct sched_stats *st);
  void *on_step_user;
} sched_config;

void sched_config_init(sched_config *c);

/* One scheduler step. */
typedef struct sched_step {
  double t_s;              /* end of the step since the start */
  double dt_ms;            /* its duration */
  uint32_t running;        /* sequences running after admission */
  uint32_t decode_batch;   /* sequences decoded */
  uint32_t prefill_tokens;
  uint32_t waiting;
  uint32_t blocks_used;
  uint64_t slots_reserved, waste_slots, tokens;
} sched_step;

typedef struct sched_stats {
  size_t requests, requests_done, requests_rejected;
  uint64_t sequences_done;
  uint64_t steps, decode_steps;
  uint64_t prompt_tokens;      /* prompt tokens at the first admission of each sequence */
  uint64_t prefix_hit_tokens;  /* of those, matched from the prefix cache (not computed) */
  uint64_t readmits;           /* admissions of preempted sequences */
  uint64_t readmit_tokens;     /* tokens they had to rebuild (prompt + generated) */
  uint64_t readmit_hit_tokens; /* of those, matched from the cache (the rest recomputed) */
  uint64_t prefill_tokens, decode_tokens;
  double prefill_s, decode_s, wall_s;
  double decode_step_mean_ms, decode_step_p99_ms;
  uint32_t num_blocks, block_size;
  uint32_t peak_blocks_used;
  uint32_t blocks_used_now;    /* after the last step */
  double mean_blocks_used;     /* over steps */
  double waste_fraction;       /* unused reserved slots / reserved slots, over steps */
  uint32_t peak_running;
  double mean_running_busy;    /* mean running sequences over steps with a queue */
  uint64_t preemptions, forks;
  uint64_t cow_copies, evictions;
} sched_stats;

/* Runs the workload to the end.  Returns 0, or -1 with err set (stats hold
 * what was done so far, but callers must not report them as a result).
 * *steps (if record_steps) is malloc'ed; the caller frees it. */
int sched_run(pkv_cache *cache, const sched_workload *w, const sched_config *cfg,
              const sched_compute *compute, sched_stats *st, sched_step **steps,
              size_t *n_steps, char *err, size_t err_cap);

/* The token a sequence generates at position pos: a fixed function of the
 * request, the sample and the position, so a recomputed sequence rebuilds
 * exactly the tokens it had. */
int32_t sched_gen_token(size_t req, uint32_t sample, uint32_t pos);

#endif
