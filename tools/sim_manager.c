/*
 * sim_manager.c — the manager model of `pagedkv sim`: the trace replayed
 * through a real pkv_cache in external mode (ids and metadata only, no K/V
 * bytes), so the prefix index, the eviction driver and the policy are the
 * library's own.
 *
 * Per request, in file order:
 *   seq_create -> match_prefix(prompt) -> append(rest) -> commit(all)
 *   -> kept for `hold` more requests -> seq_free
 * Prompt tokens come from the trace's hash ids (replay_tokens below), so
 * equal ids give equal token blocks and prefix matching finds exactly the
 * sharing the trace has.  The clock is logical: the request's arrival time,
 * nudged forward by 1 ns per call so it is strictly increasing.
 *
 * A replay is one sim_node; the cluster view (sim_cluster.c) drives several
 * nodes over one trace, probing each before it routes a request.
 *
 * Tiers (tools/tiers.h): a host tier alone keeps external storage (the
 * library keeps its metadata, the copies it queues are drained unread).
 * The file and Redis tiers store each block's bytes, so with either the
 * node's cache owns a K/V arena of the smallest shape (1 layer, 1 head,
 * head_dim 1, f16) whose contents (zeros, never written) are the payload the tiers
 * store and verify; their capacities come in the model's blocks, so the
 * hits per tier are a real server's.  sim_tiers_check tries them once
 * before any replay.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sim.h"
#include "tiers.h"

/* A replay's pool is large and short-lived (at 40,000 blocks it keeps
 * 80 MB of token ids, each page written once): jemalloc is asked to back
 * its large extents with transparent huge pages, which halves the CPU time
 * of a whole `sim` grid (4 KB page faults were a fifth of it).  jemalloc
 * reads this at start-up; MALLOC_CONF in the environment still overrides
 * it, and a build without jemalloc ignores it. */
__attribute__((visibility("default"))) const char *malloc_conf = "thp:always";

typedef struct logical_clock {
  uint64_t now;
} logical_clock;

static uint64_t clock_tick(void *user) {
  logical_clock *c = user;
  return ++c->now;
}

/* Request r's prompt tokens for the replay.  Like sim_request_tokens,
 * equal 512-block ids give equal token blocks and different ids different
 * ones, but the replay only needs that equality, not tokens that look
 * random: every even token holds the low 31 bits of a bijective mix of its
 * block's id (xor its offset), every odd one the next 31, so any two
 * neighbouring tokens tell 62 bits of the id apart, at any --block-size.
 * Mixing every token (sim_request_tokens) cost a third of a replay; this
 * loop vectorizes. */
void sim_replay_tokens(const sim_stream *s, size_t r, int32_t *out) {
  const uint64_t *ids = s->ids512 + s->off512[r];
  uint32_t len = s->t->reqs[r].input_len;
  for (uint32_t i = 0; i < len; i += TRACE_MOONCAKE_BLOCK) {
    uint32_t n = len - i < TRACE_MOONCAKE_BLOCK ? len - i : TRACE_MOONCAKE_BLOCK;
    uint64_t x = ids[i / TRACE_MOONCAKE_BLOCK] * UINT64_C(0x9e3779b97f4a7c15);
    x ^= x >> 29; /* odd multiply, xor-shift: both bijective */
    uint32_t lo = (uint32_t)(x & 0x7fffffff), hi = (uint32_t)(x >> 31 & 0x7fffffff);
    int32_t *o = out + i;
    for (uint32_t j = 0; j < n; j++) o[j] = (int32_t)((j & 1) ? hi : lo ^ j);
  }
}

/* One server of a replay: the cache, the ring of held sequences, the clock,
 * and how many requests it has seen (the ring's position). */
struct sim_node {
  const sim_stream *s;
  pkv_cache *cache;
  logical_clock clk;
  pkv_seq_id *held; /* [hold + 1] */
  uint32_t hold;
  uint64_t n_seen;
};

int sim_node_open(sim_node **out, const sim_stream *s, const pkv_policy_ops *ops,
                  const char *args, uint32_t capacity, uint32_t hold, char *err, size_t err_cap) {
  return sim_node_open_tiers(out, s, ops, args, capacity, hold, NULL, NULL, NULL, err, err_cap);
}

void sim_tier_sub(char *out, size_t cap, const char *policy, uint32_t capacity) {
  snprintf(out, cap, "%s-c%u", policy, capacity);
  for (char *p = out; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '.' || *p == '_' || *p == '-'))
      *p = '_';
}

int sim_node_open_tiers(sim_node **out, const sim_stream *s, const pkv_policy_ops *ops,
                        const char *args, uint32_t capacity, uint32_t hold,
                        const tool_tiers *tiers, const char *sub, const char *redis_sub,
                        char *err, size_t err_cap) {
  *out = NULL;
  sim_node *m = calloc(1, sizeof *m);
  if (m) m->held = calloc((size_t)hold + 1, sizeof *m->held);
  if (!m || !m->held) {
    if (m) free(m);
    snprintf(err, err_cap, "cache_create: %s (out of memory)", pkv_strerror(PKV_ENOMEM));
    return PKV_ENOMEM;
  }
  m->s = s;
  m->hold = hold;
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = 1;
  cfg.n_kv_heads = 1;
  cfg.head_dim = 1;
  cfg.block_size = s->block_size;
  cfg.num_blocks = capacity;
  cfg.dtype = PKV_DTYPE_F16;
  /* No K/V bytes (external storage), unless a file or Redis tier needs a
   * payload to store: then the smallest arena (see sim.h). */
  bool owned = tiers && (tiers->file_dir || tiers->redis);
  cfg.storage = owned ? PKV_STORAGE_OWNED : PKV_STORAGE_EXTERNAL;
  cfg.policy_ops = ops;
  cfg.policy_args = args;
  cfg.clock = clock_tick;
  cfg.clock_user = &m->clk;
  if (tiers) tool_tiers_config(tiers, &cfg); /* the host tier (in blocks) */
  int rc = pkv_cache_create(&cfg, &m->cache);
  if (rc) snprintf(err, err_cap, "cache_create: %s (%s)", pkv_strerror(rc), pkv_last_error());
  else if (owned && (rc = tool_tiers_attach(tiers, m->cache, sub, redis_sub, err, err_cap)) != 0)
    pkv_cache_destroy(m->cache);
  if (rc) {
    free(m->held);
    free(m);
    return rc;
  }
  *out = m;
  return 0;
}

uint32_t sim_node_probe(sim_node *m, const int32_t *tokens, uint32_t n_tokens) {
  uint32_t hit = 0;
  if (pkv_prefix_probe(m->cache, NULL, tokens, n_tokens, 0, NULL, 0, &hit)) return 0;
  return hit;
}

int sim_node_request(sim_node *m, size_t q, const int32_t *tokens, sim_result *r,
                     uint32_t *matched_out) {
  const sim_stream *s = m->s;
  const trace_req *tr = &s->t->reqs[q];
  uint32_t len = tr->input_len;
  if (tr->arrival_ns > m->clk.now) m->clk.now = tr->arrival_ns;
  pkv_seq_id seq;
  uint32_t matched = 0;
  int rc;
  *matched_out = 0;
  if ((rc = pkv_seq_create(m->cache, NULL, &seq))) return rc;
  if ((rc = pkv_seq_match_prefix(m->cache, seq, tokens, len, 0, &matched))) return rc;
  *matched_out = matched;
  r->hit_tokens += matched;
  r->block_hits += matched / s->block_size;
  r->prompt_tokens += len;
  r->lookups += s->req_pos[q + 1] - s->req_pos[q];
  if (matched < len) {
    rc = pkv_seq_append(m->cache, seq, tokens + matched, len - matched, NULL);
    if (rc == PKV_ENOMEM) { /* held sequences fill the pool: it cannot run */
      r->dropped++;
      pkv_seq_free(m->cache, seq);
      seq = PKV_SEQ_NONE;
    } else if (rc || (rc = pkv_seq_commit(m->cache, seq, len))) {
      return rc;
    }
  }
  /* Ring of the last hold+1 sequences: the oldest leaves now. */
  size_t slot = m->n_seen++ % ((size_t)m->hold + 1);
  if (m->held[slot] && (rc = pkv_seq_free(m->cache, m->held[slot]))) return rc;
  m->held[slot] = seq;
  if (m->hold == 0 && seq) {
    if ((rc = pkv_seq_free(m->cache, seq))) return rc;
    m->held[slot] = PKV_SEQ_NONE;
  }
  /* Nothing is ever written into a shared block here, but drain anyway so
   * a policy or core change cannot grow the queue without bound. */
  pkv_copy copies[64];
  uint32_t n_out = 0, pending = 0;
  do {
    if ((rc = pkv_pool_drain_copies(m->cache, copies, 64, &n_out, &pending))) return rc;
    r->copies += n_out;
  } while (pending);
  /* and the host tier's demote / promote copies (no bytes to move here) */
  return tool_tiers_drain(m->cache, NULL);
}

int sim_node_close(sim_node *m, sim_result *r) {
  if (!m) return 0;
  char why[160];
  pkv_stats st;
  int rc = 0;
  if (r) {
    if ((rc = pkv_check(m->cache, why, sizeof why)))
      snprintf(r->err, sizeof r->err, "cache invariant violated after the replay: %s", why);
    else if ((rc = pkv_stats_get(m->cache, &st)) == 0) {
      r->evictions = st.evictions;
      tool_tiers_hits(m->cache, r->tier_hit_tokens, r->tier_errors);
      for (uint32_t i = 0; i < PKV_TIER_MAX; i++) {
        pkv_tier_stats ts;
        r->tier_blocks[i] = pkv_tier_stats_get(m->cache, i, &ts) == 0 ? ts.blocks : 0;
      }
    }
    else
      snprintf(r->err, sizeof r->err, "stats: %s", pkv_strerror(rc));
  }
  pkv_cache_destroy(m->cache);
  free(m->held);
  free(m);
  return rc;
}

int sim_run_manager(const sim_stream *s, const pkv_policy_ops *ops,
                    const char *args, uint32_t capacity, uint32_t hold,
                    sim_result *r, _Atomic uint64_t *progress) {
  return sim_run_manager_tiers(s, ops, args, capacity, hold, NULL, NULL, r, progress);
}

int sim_run_manager_tiers(const sim_stream *s, const pkv_policy_ops *ops,
                          const char *args, uint32_t capacity, uint32_t hold,
                          const tool_tiers *tiers, const char *sub, sim_result *r,
                          _Atomic uint64_t *progress) {
  uint64_t t0 = cli_now_ns();
  sim_node *m = NULL;
  int32_t *tokens = malloc((s->max_input ? s->max_input : 1) * sizeof *tokens);
  int rc = tokens ? sim_node_open_tiers(&m, s, ops, args, capacity, hold, tiers, sub, sub, r->err,
                                       sizeof r->err)
                  : PKV_ENOMEM;
  if (!tokens)
    snprintf(r->err, sizeof r->err, "cache_create: %s (out of memory)", pkv_strerror(rc));
  for (size_t q = 0; !rc && q < s->n_reqs; q++) {
    uint32_t matched;
    sim_replay_tokens(s, q, tokens);
    rc = sim_node_request(m, q, tokens, r, &matched);
    if (!rc && progress && (q & 63) == 63) atomic_fetch_add_explicit(progress, 64, memory_order_relaxed);
  }
  if (progress) atomic_fetch_add_explicit(progress, s->n_reqs & 63, memory_order_relaxed);
  if (rc && m) {
    snprintf(r->err, sizeof r->err, "replay: %s (%s)", pkv_strerror(rc), pkv_last_error());
    sim_node_close(m, NULL);
  } else if (m) {
    rc = sim_node_close(m, r);
  }
  free(tokens);
  r->seconds = (double)(cli_now_ns() - t0) / 1e9;
  return r->rc = rc;
}

int sim_tiers_check(const sim_stream *s, const tool_tiers *tiers, char *err, size_t err_cap) {
  if (!tiers->file_dir && !tiers->redis) return 0;
  sim_node *m = NULL;
  int rc = sim_node_open_tiers(&m, s, pkv_policy_find("lru"), NULL, 2, 0, tiers, NULL, NULL,
                               err, err_cap);
  if (rc) return rc;
  if (tiers->redis) { /* one lookup: a server that does not answer counts an error */
    int32_t *tok = calloc(s->block_size, sizeof *tok);
    uint32_t got = 0;
    pkv_tier_stats st = {0};
    if (!tok) {
      snprintf(err, err_cap, "out of memory");
      rc = PKV_ENOMEM;
    } else if ((rc = pkv_prefix_promote(m->cache, NULL, tok, s->block_size, 0, &got)) == 0 &&
        (rc = pkv_tier_stats_get(m->cache, PKV_TIER_REDIS, &st)) == 0 && st.errors) {
      snprintf(err, err_cap, "--redis %s: no Redis server answers there (%s)", tiers->redis,
               pkv_last_error()[0] ? pkv_last_error() : "connection failed");
      rc = PKV_ENOENT;
    } else if (rc) {
      snprintf(err, err_cap, "--redis %s: %s", tiers->redis, pkv_last_error());
    }
    free(tok);
  }
  sim_node_close(m, NULL);
  return rc;
}
