/*
 * bench_groups.c — memory of KV cache groups (issue 11 item 9): a model of
 * 6 layers, 5 local (sliding window W = 1024) and 1 global, one request
 * grown to a 32k context, block_size 16, one block = one layer's K/V.
 *
 * Figures: blocks in use at the end and at the peak (the largest count seen
 * right after an append, before its commit releases what left the window),
 * beside the same run with all 6 layers full attention (the baseline), and
 * as a ratio of the ideal 1/6 + 5/6 * W / 32k of the baseline.  Run twice:
 * decode-like (appends of 1 token) and chunked prefill (appends of 512).
 * Counts, not times: deterministic, no repetition needed.
 */
#include "bu_bench.h"
#include "pagedkv/groups.h"

#include <stdio.h>
#include <stdlib.h>

#define CTX 32768u
#define BS 16u
#define LAYERS 6u
#define WINDOW 1024u

static uint32_t used(pkv_cache *c) {
  pkv_stats st;
  if (pkv_stats_get(c, &st)) abort();
  return st.blocks_used;
}

/* Grows one request to CTX tokens in appends of `chunk`; *peak = the most
 * blocks in use after any append; returns the blocks in use at the end. */
static uint32_t run(uint32_t n_sliding, uint32_t chunk, uint32_t *peak) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = 1; /* per group */
  cfg.n_kv_heads = 1;
  cfg.head_dim = 8;
  cfg.block_size = BS;
  cfg.num_blocks = LAYERS * CTX / BS + 64;
  cfg.storage = PKV_STORAGE_EXTERNAL;
  pkv_cache *c;
  pkv_groups *g;
  pkv_group_spec spec[LAYERS];
  for (uint32_t i = 0; i < LAYERS; i++)
    spec[i] = i < n_sliding ? (pkv_group_spec){PKV_ATTN_SLIDING, WINDOW}
                            : (pkv_group_spec){PKV_ATTN_FULL, 0};
  if (pkv_cache_create(&cfg, &c) || pkv_groups_create(c, spec, LAYERS, CTX, &g)) {
    fprintf(stderr, "bench_groups: %s\n", pkv_last_error());
    exit(1);
  }
  pkv_seq_id ids[LAYERS];
  if (pkv_groups_seq_create(g, NULL, ids)) abort();
  static int32_t toks[CTX];
  for (uint32_t i = 0; i < CTX; i++) toks[i] = (int32_t)(i * 2654435761u >> 8);
  *peak = 0;
  for (uint32_t n = 0; n < CTX; n += chunk) {
    uint32_t k = CTX - n < chunk ? CTX - n : chunk;
    if (pkv_groups_append(g, ids, toks + n, k, NULL)) {
      fprintf(stderr, "bench_groups: append at %u: %s\n", n, pkv_last_error());
      exit(1);
    }
    uint32_t u = used(c);
    if (u > *peak) *peak = u;
    if (pkv_groups_commit(g, ids, n + k)) abort();
  }
  uint32_t end = used(c);
  char msg[256];
  if (pkv_check(c, msg, sizeof msg)) {
    fprintf(stderr, "bench_groups: %s\n", msg);
    exit(1);
  }
  pkv_groups_destroy(g);
  pkv_cache_destroy(c);
  return end;
}

int main(void) {
  const double ideal_share = 1.0 / LAYERS + (double)(LAYERS - 1) / LAYERS * WINDOW / CTX;
  const uint32_t chunks[2] = {1, 512};
  for (int i = 0; i < 2; i++) {
    uint32_t peak_full, peak;
    uint32_t full = run(0, chunks[i], &peak_full);
    uint32_t end = run(LAYERS - 1, chunks[i], &peak);
    double ideal = ideal_share * full;
    char name[128];
    snprintf(name, sizeof name, "groups 5 local W=1024 : 1 global, 32k, appends of %u: "
             "blocks at the end", chunks[i]);
    bu_report_vs(name, end, "blocks", "all full attention", full, "of all-full");
    snprintf(name, sizeof name, "groups 5:1, 32k, appends of %u: end / ideal "
             "(ideal %.0f blocks = %.4f of all-full)", chunks[i], ideal, ideal_share);
    bu_report(name, end / ideal, "x ideal");
    snprintf(name, sizeof name, "groups 5:1, 32k, appends of %u: peak / ideal "
             "(peak %u blocks, all-full peak %u)", chunks[i], peak, peak_full);
    bu_report(name, peak / ideal, "x ideal");
  }
  return 0;
}
