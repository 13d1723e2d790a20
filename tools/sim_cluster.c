/*
 * sim_cluster.c — the cluster view of `pagedkv sim --nodes N`: one trace
 * split over N servers, each a real pkv_cache of its own capacity (the
 * manager model, sim_manager.c), behind a router:
 *
 *   request q ──► router ──► node k: match_prefix, append, commit, hold
 *                  │                      │ after the local match
 *                  │                      ▼
 *                  │          shared remote tier (optional): the next
 *                  │          blocks found there are fetched, not
 *                  │          recomputed; every computed block is put there
 *   rr      node q mod N
 *   prefix  the node whose cache holds the longest prefix of the prompt
 *           (pkv_prefix_probe on every node: an exact mirror, as SGLang's
 *           cache-aware router keeps with its radix tree and Dynamo's KV
 *           router with KV events), among the nodes under the load bound:
 *           a node may take the request only if its request count stays
 *           <= ceil(load_bound * (routed + 1) / N) — consistent hashing's
 *           "bounded loads" rule, so no node ever has more than
 *           load_bound x the mean (rounded up).  Ties: fewer requests,
 *           then the lower node.  A prompt cached nowhere goes to the least
 *           loaded node.
 *
 * The remote tier is an LRU of full blocks shared by all nodes, sized in
 * blocks: what a Redis or file tier below every server would hold.  It
 * only adds hits (remote_hit); local caches replay exactly as without it.
 * Everything is deterministic: the same trace and flags give the same
 * routing and figures.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sim.h"

const char *sim_route_name(sim_route route) {
  return route == SIM_ROUTE_PREFIX ? "prefix" : "rr";
}

/* ------------------------------------------------------------ remote tier */

/* LRU over the stream's dense block ids: a doubly linked list in arrays. */
typedef struct remote_lru {
  uint32_t *prev, *next; /* [n_ids]; RL_NONE ends the list */
  uint8_t *in;           /* [n_ids]: resident */
  uint32_t head, tail;   /* head = most recent */
  uint64_t n, cap, evictions;
} remote_lru;

#define RL_NONE UINT32_MAX

static bool rl_init(remote_lru *l, uint32_t n_ids, uint64_t cap) {
  memset(l, 0, sizeof *l);
  size_t n = n_ids ? n_ids : 1;
  l->prev = malloc(n * sizeof *l->prev);
  l->next = malloc(n * sizeof *l->next);
  l->in = calloc(n, 1);
  l->head = l->tail = RL_NONE;
  l->cap = cap;
  return l->prev && l->next && l->in;
}

static void rl_free(remote_lru *l) {
  free(l->prev);
  free(l->next);
  free(l->in);
}

static void rl_unlink(remote_lru *l, uint32_t id) {
  if (l->prev[id] != RL_NONE) l->next[l->prev[id]] = l->next[id];
  else l->head = l->next[id];
  if (l->next[id] != RL_NONE) l->prev[l->next[id]] = l->prev[id];
  else l->tail = l->prev[id];
}

/* Makes id the most recent block, inserting it (and evicting the least
 * recent one when full). */
static void rl_touch(remote_lru *l, uint32_t id) {
  if (l->in[id]) {
    rl_unlink(l, id);
  } else {
    if (l->n == l->cap) {
      uint32_t victim = l->tail;
      rl_unlink(l, victim);
      l->in[victim] = 0;
      l->n--;
      l->evictions++;
    }
    l->in[id] = 1;
    l->n++;
  }
  l->prev[id] = RL_NONE;
  l->next[id] = l->head;
  if (l->head != RL_NONE) l->prev[l->head] = id;
  l->head = id;
  if (l->tail == RL_NONE) l->tail = id;
}

/* After request q ran with `matched` tokens from its node: the blocks that
 * follow, as far as the remote tier has them in a row, are remote hits;
 * then every full block of the request is put (or refreshed) there. */
static void remote_access(remote_lru *l, const sim_stream *s, size_t q, uint32_t matched,
                          sim_node_load *nl) {
  uint64_t p0 = s->req_pos[q], p1 = s->req_pos[q + 1];
  for (uint64_t p = p0 + matched / s->block_size; p < p1; p++) {
    if (s->partial[p] || !l->in[s->id[p]]) break;
    nl->remote_hit_tokens += s->block_size;
  }
  for (uint64_t p = p0; p < p1; p++)
    if (!s->partial[p]) rl_touch(l, s->id[p]);
}

/* ------------------------------------------------------------ routing */

typedef struct cluster {
  const sim_stream *s;
  const sim_cluster_cfg *cfg;
  sim_node **nodes;     /* [n_nodes] */
  sim_result *res;      /* [n_nodes]: what each node's replay counts */
  int32_t *tokens;      /* [max_input] */
  remote_lru remote;
  uint64_t routed;
} cluster;

/* The node for request q (its tokens already in c->tokens). */
static uint32_t route(cluster *c, size_t q, const sim_node_load *load) {
  uint32_t n = c->cfg->n_nodes;
  if (c->cfg->route == SIM_ROUTE_RR || n == 1) return (uint32_t)(q % n);
  uint64_t limit = (uint64_t)ceil(c->cfg->load_bound * (double)(c->routed + 1) / n - 1e-9);
  uint32_t len = c->s->t->reqs[q].input_len, best = RL_NONE, best_hit = 0;
  for (uint32_t k = 0; k < n; k++) {
    if (load[k].requests + 1 > limit) continue; /* over the bound */
    uint32_t hit = sim_node_probe(c->nodes[k], c->tokens, len);
    if (best == RL_NONE || hit > best_hit ||
        (hit == best_hit && load[k].requests < load[best].requests)) {
      best = k;
      best_hit = hit;
    }
  }
  return best; /* the least loaded node is always under a bound >= 1 */
}

/* Opens every node; 0 or an error code (r->err set). */
static int cluster_open(cluster *c, sim_cluster_result *r) {
  const sim_cluster_cfg *cfg = c->cfg;
  c->nodes = calloc(cfg->n_nodes, sizeof *c->nodes);
  c->res = calloc(cfg->n_nodes, sizeof *c->res);
  r->node = calloc(cfg->n_nodes, sizeof *r->node);
  c->tokens = malloc((c->s->max_input ? c->s->max_input : 1) * sizeof *c->tokens);
  bool ok = c->nodes && c->res && r->node && c->tokens &&
            rl_init(&c->remote, c->s->n_ids, cfg->remote_blocks);
  if (!ok) {
    snprintf(r->err, sizeof r->err, "out of memory");
    return PKV_ENOMEM;
  }
  for (uint32_t k = 0; k < cfg->n_nodes; k++) {
    r->node[k].capacity = (uint32_t)cfg->caps[k];
    char rsub[64], sub[96];
    snprintf(rsub, sizeof rsub, "n%u-%s", cfg->n_nodes, sim_route_name(cfg->route));
    snprintf(sub, sizeof sub, "%s-node%u", rsub, k);
    int rc = sim_node_open_tiers(&c->nodes[k], c->s, cfg->ops, cfg->args, (uint32_t)cfg->caps[k],
                                 cfg->hold, cfg->tiers, sub, rsub, r->err, sizeof r->err);
    if (rc) return rc;
  }
  return 0;
}

/* Request q: route, run on the node, then the remote tier. */
static int cluster_request(cluster *c, size_t q, sim_cluster_result *r) {
  const sim_stream *s = c->s;
  sim_replay_tokens(s, q, c->tokens);
  uint32_t k = route(c, q, r->node), matched = 0;
  sim_result *nr = &c->res[k];
  uint64_t dropped = nr->dropped;
  int rc = sim_node_request(c->nodes[k], q, c->tokens, nr, &matched);
  if (rc) {
    snprintf(r->err, sizeof r->err, "node %u: replay: %s (%s)", k, pkv_strerror(rc), pkv_last_error());
    return rc;
  }
  c->routed++;
  sim_node_load *nl = &r->node[k];
  nl->requests++;
  nl->lookups += s->req_pos[q + 1] - s->req_pos[q];
  if (c->cfg->remote_blocks && nr->dropped == dropped) remote_access(&c->remote, s, q, matched, nl);
  return 0;
}

/* Closes every node (checking its cache) and sums the loads. */
static int cluster_close(cluster *c, sim_cluster_result *r, int rc) {
  uint64_t max_req = 0, max_blk = 0;
  for (uint32_t k = 0; k < c->cfg->n_nodes && c->nodes; k++) {
    int crc = sim_node_close(c->nodes[k], rc ? NULL : &c->res[k]);
    if (!rc && crc) {
      snprintf(r->err, sizeof r->err, "node %u: %.200s", k, c->res[k].err);
      rc = crc;
    }
    if (rc) continue;
    sim_node_load *nl = &r->node[k];
    nl->prompt_tokens = c->res[k].prompt_tokens;
    nl->hit_tokens = c->res[k].hit_tokens;
    nl->evictions = c->res[k].evictions;
    nl->dropped = c->res[k].dropped;
    for (int i = 0; i < PKV_TIER_MAX; i++) {
      nl->tier_hit_tokens[i] = c->res[k].tier_hit_tokens[i];
      nl->tier_errors[i] = c->res[k].tier_errors[i];
      r->all.tier_hit_tokens[i] += nl->tier_hit_tokens[i];
      r->all.tier_errors[i] += nl->tier_errors[i];
    }
    r->all.requests += nl->requests;
    r->all.lookups += nl->lookups;
    r->all.prompt_tokens += nl->prompt_tokens;
    r->all.hit_tokens += nl->hit_tokens;
    r->all.remote_hit_tokens += nl->remote_hit_tokens;
    r->all.evictions += nl->evictions;
    r->all.dropped += nl->dropped;
    r->all.capacity += nl->capacity;
    if (nl->requests > max_req) max_req = nl->requests;
    if (nl->lookups > max_blk) max_blk = nl->lookups;
  }
  double n = c->cfg->n_nodes;
  r->imbalance = r->all.requests ? (double)max_req * n / (double)r->all.requests : 0;
  r->block_imbalance = r->all.lookups ? (double)max_blk * n / (double)r->all.lookups : 0;
  r->remote_evictions = c->remote.evictions;
  free(c->nodes);
  free(c->res);
  free(c->tokens);
  rl_free(&c->remote);
  return rc;
}

int sim_run_cluster(const sim_stream *s, const sim_cluster_cfg *cfg, sim_cluster_result *r,
                    _Atomic uint64_t *progress) {
  uint64_t t0 = cli_now_ns();
  *r = (sim_cluster_result){.n_nodes = cfg->n_nodes, .route = cfg->route,
                            .load_bound = cfg->load_bound};
  cluster c = {.s = s, .cfg = cfg};
  int rc = cluster_open(&c, r);
  for (size_t q = 0; !rc && q < s->n_reqs; q++) {
    rc = cluster_request(&c, q, r);
    if (progress) atomic_fetch_add_explicit(progress, 1, memory_order_relaxed);
  }
  rc = cluster_close(&c, r, rc);
  r->seconds = (double)(cli_now_ns() - t0) / 1e9;
  return r->rc = rc;
}

void sim_cluster_result_free(sim_cluster_result *r) {
  free(r->node);
  r->node = NULL;
}
