/*
 * sim.h — the pieces of `pagedkv sim`: an access stream built from a trace,
 * the replays (simple model, the real manager, Belady's bound) and their
 * results.  Each replay is independent and thread-safe; it owns its state.
 */
#ifndef PKV_TOOLS_SIM_H
#define PKV_TOOLS_SIM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "pagedkv/policy.h"
#include "trace.h"

struct tool_tiers; /* tiers.h */

/* The trace as a stream of block lookups at one block size.
 *
 * Every request's prompt is cut into blocks of block_size tokens; position
 * p of the stream is one block of one request (requests in file order).  A
 * block's identity id[p] is dense (0 .. n_ids-1) and equal for equal token
 * content: at the trace's own block size it is the trace's hash id; at
 * another size it is the pair (512-block id holding the block's last token,
 * that token's offset), renumbered.  Requests without ids (Azure) get fresh
 * ids, so nothing is shared. */
typedef struct sim_stream {
  const trace *t;
  uint32_t block_size;
  size_t n_reqs;
  uint64_t *req_pos;   /* [n_reqs + 1]: first position of each request
                        * (in off512's allocation) */
  uint32_t *id;        /* [n_pos] */
  uint8_t *partial;    /* [n_pos]: 1 if the block is the prompt's partial tail */
  uint64_t n_pos;      /* block lookups (full and partial) */
  uint64_t n_full;     /* full-block lookups */
  uint32_t n_ids;
  /* Next position with the same id, or SIM_NEVER + p: over every position
   * (simple model) and over full blocks only (manager stream).  next_all's
   * allocation holds next_full, id and partial too. */
  uint64_t *next_all, *next_full;
  /* 512-token content ids per request, from which tokens are derived:
   * ids512[off512[r] .. off512[r+1]) (the trace's or synthesized). */
  const uint64_t *ids512;
  uint64_t *off512;
  uint64_t *own_ids512; /* synthesized ids (Azure), else NULL */
  uint32_t max_input;   /* longest prompt */
} sim_stream;

#define SIM_NEVER (UINT64_C(1) << 62)

int sim_stream_build(const trace *t, uint32_t block_size, sim_stream *s,
                     char *err, size_t err_cap);
void sim_stream_free(sim_stream *s);

/* Token ids of request r's prompt into out[0 .. input_len): token i is a
 * fixed mix of (ids512 of its 512-block, i % 512), so equal ids give equal
 * token blocks and different ids (almost surely) different ones. */
void sim_request_tokens(const sim_stream *s, size_t r, int32_t *out);

typedef enum sim_model { SIM_MODEL_MANAGER = 0, SIM_MODEL_SIMPLE = 1 } sim_model;

typedef struct sim_result {
  char policy[64];
  uint32_t capacity;
  uint64_t lookups;      /* block lookups counted (denominator) */
  uint64_t block_hits;
  uint64_t prompt_tokens;
  uint64_t hit_tokens;   /* prefix tokens reused */
  uint64_t evictions;
  uint64_t dropped;      /* requests that did not fit (held blocks) */
  uint64_t copies;       /* copy-on-write copies queued (manager model) */
  double seconds;
  uint64_t tier_hit_tokens[PKV_TIER_MAX]; /* of hit_tokens, promoted from
                                            each tier (PKV_TIER_*) */
  uint64_t tier_errors[PKV_TIER_MAX];     /* errors each tier counted */
  uint64_t tier_blocks[PKV_TIER_MAX];     /* blocks each held at the end
                                            (redis: stored, not observable) */
  int rc;                /* 0, or failed: err says why */
  char err[256];
} sim_result;

/* Replays: progress (may be NULL) is advanced by one per request. */
int sim_run_simple(const sim_stream *s, const pkv_policy_ops *ops,
                   const char *args, uint32_t capacity, sim_result *r,
                   _Atomic uint64_t *progress);
/* Belady's MIN on the stream.  full_only: the manager's stream (only full
 * blocks are cacheable; hits counted as the leading run of each request,
 * as prefix matching would); hold: blocks of the last hold requests and of
 * the current one cannot be evicted. */
int sim_run_belady(const sim_stream *s, uint32_t capacity, bool full_only,
                   uint32_t hold, sim_result *r, _Atomic uint64_t *progress);
/* One server of the manager model: a pkv_cache in external mode of
 * capacity blocks (sim_manager.c).  open: 0 or an error code with err set;
 * probe: the tokens a prefix match would reuse now (read-only); request:
 * request q (its tokens from sim_replay_tokens) matched, appended,
 * committed, held for `hold` of this node's requests, counted into *r,
 * *matched = tokens reused; close: checks the cache (r->err on a broken
 * invariant), adds its evictions to r (r may be NULL: no check), frees it. */
typedef struct sim_node sim_node;
int sim_node_open(sim_node **n, const sim_stream *s, const pkv_policy_ops *ops,
                  const char *args, uint32_t capacity, uint32_t hold, char *err, size_t err_cap);
/* The same with the tiers of tools/tiers.h below the pool (NULL = none).
 * A file or Redis tier needs the bytes of each block, so the node's cache
 * then owns a K/V arena of the smallest shape (1 layer, 1 head, head_dim
 * 1, f16: 4 bytes a token) instead of external storage; the tiers store
 * that as each block's payload and sizes come from tiers (in the model's
 * blocks).  sub names the node's own file directory, redis_sub its part
 * of the Redis keys (tool_tiers_attach; NULL = the directory and prefix
 * themselves). */
int sim_node_open_tiers(sim_node **n, const sim_stream *s, const pkv_policy_ops *ops,
                        const char *args, uint32_t capacity, uint32_t hold,
                        const struct tool_tiers *tiers, const char *sub,
                        const char *redis_sub, char *err, size_t err_cap);
uint32_t sim_node_probe(sim_node *n, const int32_t *tokens, uint32_t n_tokens);
int sim_node_request(sim_node *n, size_t q, const int32_t *tokens, sim_result *r,
                     uint32_t *matched);
int sim_node_close(sim_node *n, sim_result *r);
/* Request q's prompt tokens for the manager model (equal ids, equal token
 * blocks; cheaper than sim_request_tokens): out[0 .. input_len). */
void sim_replay_tokens(const sim_stream *s, size_t q, int32_t *out);

/* The real manager in external mode. */
int sim_run_manager(const sim_stream *s, const pkv_policy_ops *ops,
                    const char *args, uint32_t capacity, uint32_t hold,
                    sim_result *r, _Atomic uint64_t *progress);
/* The same with tiers below the pool (tiers may be NULL; sub names the
 * replay's file directory and Redis key part): the replay's tier hits land in
 * r->tier_hit_tokens, their errors in r->tier_errors. */
int sim_run_manager_tiers(const sim_stream *s, const pkv_policy_ops *ops,
                          const char *args, uint32_t capacity, uint32_t hold,
                          const struct tool_tiers *tiers, const char *sub, sim_result *r,
                          _Atomic uint64_t *progress);
/* Before any replay: the file directory can be created and written, the
 * Redis address parses and a server answers there (one lookup).  0, or
 * an error code with err naming the flag. */
int sim_tiers_check(const sim_stream *s, const struct tool_tiers *tiers, char *err,
                    size_t err_cap);
/* The replay's part of a tier's file directory and Redis keys:
 * "POLICY-cCAPACITY" (characters other than [A-Za-z0-9._-] as '_'). */
void sim_tier_sub(char *out, size_t cap, const char *policy, uint32_t capacity);

/* ------------------------------------------------------------ the cluster
 * `pagedkv sim --nodes N` (sim_cluster.c): the trace split over N manager
 * nodes, each its own pkv_cache, with a router in front and optionally a
 * shared remote tier every node reaches after a local miss. */

typedef enum sim_route { SIM_ROUTE_RR = 0, SIM_ROUTE_PREFIX = 1 } sim_route;

typedef struct sim_cluster_cfg {
  uint32_t n_nodes;
  const uint64_t *caps;       /* [n_nodes] blocks per node */
  const pkv_policy_ops *ops;  /* every node's policy */
  const char *args;           /* its --policy-args, or NULL */
  uint32_t hold;              /* per node: its own last `hold` requests */
  sim_route route;
  /* prefix: a node may take a request only while its request count stays
   * <= ceil(load_bound * (requests routed + 1) / n_nodes); >= 1. */
  double load_bound;
  uint64_t remote_blocks;     /* shared remote tier (LRU), 0 = none */
  /* Real tiers (tools/tiers.h, NULL = none): each node its own host and
   * file tier (directory nNODES-ROUTE-nodeK), one Redis shared by all
   * nodes (keys under nNODES-ROUTE). */
  const struct tool_tiers *tiers;
} sim_cluster_cfg;

typedef struct sim_node_load {
  uint32_t capacity;
  uint64_t requests, lookups, prompt_tokens, hit_tokens, remote_hit_tokens;
  uint64_t evictions, dropped;
  uint64_t tier_hit_tokens[PKV_TIER_MAX]; /* of hit_tokens, from each real tier */
  uint64_t tier_errors[PKV_TIER_MAX];
} sim_node_load;

typedef struct sim_cluster_result {
  uint32_t n_nodes;
  sim_route route;
  double load_bound;
  sim_node_load *node;        /* [n_nodes] (malloc'ed: sim_cluster_result_free) */
  sim_node_load all;          /* sums over the nodes */
  uint64_t remote_evictions;
  double imbalance;           /* max requests of a node / mean (1 = even) */
  double block_imbalance;     /* the same over block lookups */
  double seconds;
  int rc;
  char err[256];
} sim_cluster_result;

/* Replays the stream over the cluster; progress (may be NULL) advances by
 * one per request.  Returns 0 or an error code (r->err says why). */
int sim_run_cluster(const sim_stream *s, const sim_cluster_cfg *cfg, sim_cluster_result *r,
                    _Atomic uint64_t *progress);
void sim_cluster_result_free(sim_cluster_result *r);
const char *sim_route_name(sim_route route);

/* ------------------------------------------------------------ the command
 * `pagedkv sim` in phases: options (opts.h) -> policies (sim_policy.c) ->
 * plan of jobs, run on threads (sim.c) -> report (sim_report.c). */

struct sim_opts;

enum { SIM_MAX_POLICIES = 64 };

/* The policies to run, each with its --policy-args (or NULL). */
typedef struct policy_set {
  const pkv_policy_ops *ops[SIM_MAX_POLICIES];
  const char *args[SIM_MAX_POLICIES];
  size_t n;
  const pkv_policy_ops *user; /* the --policy-lib plug-in, or NULL */
} policy_set;

/* Fills *ps from --policy, --policy-lib and --policy-args: loads and tries
 * the plug-in, checks each policy's arguments.  Returns 0 or an exit status
 * (message printed). */
int sim_resolve_policies(const struct sim_opts *o, policy_set *ps);

typedef struct sim_job {
  const pkv_policy_ops *ops; /* NULL = Belady */
  const char *args;          /* the policy's --policy-args, or NULL */
  uint32_t capacity;         /* as asked (the table's) */
  uint32_t run_capacity;     /* as replayed: at most the trace's lookups */
  bool isolate;              /* a --policy-lib plug-in: replay in a child */
  int pid;                   /* that child, once started */
  int fd;                    /* and the pipe its result comes through */
  sim_result res;
} sim_job;

typedef struct sim_plan {
  const sim_stream *stream;
  sim_model model;
  uint32_t hold;
  const struct tool_tiers *tiers; /* --host-*, --file-*, --redis (manager model), or NULL */
  sim_job *jobs;
  size_t n_jobs;
  _Atomic size_t next_job;
  _Atomic size_t jobs_done;
  _Atomic uint64_t progress;
} sim_plan;

/* Report (sim_report.c): the table, the notes under it, CSV, JSON, plot. */
/* Hits per tier of every job (--host-*, --file-dir, --redis). */
void sim_print_tiers(FILE *f, const sim_plan *pl);
/* Its pieces, shared with the cluster's report: the line naming the
 * tiers; the columns' heads and cells (prefix_hit, device, host, file,
 * redis as shares of prompt tokens, t_errors); the same as CSV columns
 * (device_hit_tokens, host_hit_tokens, file_hit_tokens, redis_hit_tokens,
 * tier_errors) and JSON keys; a note for a tier that counted errors. */
void sim_tiers_describe(FILE *f, const struct tool_tiers *t, const sim_stream *s);
void sim_tiers_head(FILE *f);
void sim_tiers_cells(FILE *f, const struct tool_tiers *t, uint64_t hit, uint64_t prompt,
                     const uint64_t tier_hit[PKV_TIER_MAX], const uint64_t tier_err[PKV_TIER_MAX]);
void sim_tiers_csv_head(FILE *f);
void sim_tiers_csv(FILE *f, uint64_t hit, const uint64_t tier_hit[PKV_TIER_MAX],
                   const uint64_t tier_err[PKV_TIER_MAX]);
void sim_tiers_json(FILE *f, uint64_t hit, const uint64_t tier_hit[PKV_TIER_MAX],
                    const uint64_t tier_err[PKV_TIER_MAX]);
void sim_tiers_note(FILE *f, const char *what, const uint64_t tier_err[PKV_TIER_MAX]);
double sim_ratio(uint64_t a, uint64_t b);
/* The figure plotted and compared: prefix hits through the manager, block
 * hits in the simple model (the reference's measure). */
double sim_headline(sim_model model, const sim_result *r);
void sim_print_table(FILE *f, const sim_plan *pl, const uint64_t *caps, size_t n_caps);
/* The note under any table of an Azure trace: no hit can exist. */
void sim_note_azure(FILE *f, const trace *t);
void sim_print_notes(FILE *f, const sim_plan *pl, const trace *t, const uint64_t *caps,
                     size_t n_caps);
int sim_write_csv(const sim_plan *pl, const char *path);
int sim_write_json(const sim_plan *pl, const char *trace_path, const char *path);
int sim_write_plot(const sim_plan *pl, const char *trace_path, const char *path,
                   const uint64_t *caps, size_t n_caps, const char *const *names,
                   size_t n_names);
void sim_help(void);

/* The cluster's report (sim_cluster_report.c): table, per-node table,
 * CSV, JSON, plot of hit ratio vs nodes. */
typedef struct sim_cluster_plan {
  const sim_stream *stream;
  const char *policy;
  uint32_t hold;
  const uint64_t *caps;       /* as given: one per node, or one for all */
  size_t n_caps;
  uint64_t remote_blocks;
  const struct tool_tiers *tiers; /* real tiers, or NULL */
  sim_cluster_result *res;    /* [n_res], nodes-major, then route */
  size_t n_res;
} sim_cluster_plan;
void sim_cluster_print(FILE *f, const sim_cluster_plan *cp);
int sim_cluster_write_csv(const sim_cluster_plan *cp, const char *path);
int sim_cluster_write_json(const sim_cluster_plan *cp, const char *trace_path, const char *path);
int sim_cluster_write_plot(const sim_cluster_plan *cp, const char *trace_path, const char *path);

#endif
