/*
 * groups.h — KV cache groups: one cache, several groups of layers, each
 * with its own attention kind (full attention, or a sliding window of W
 * tokens), as in Gemma 2/3, Mistral or gpt-oss.  See docs/API.md, "KV cache
 * groups".
 *
 * Model.  Every block of the cache holds the K/V of one group's layers
 * (configure the cache with n_layers = layers per group; all groups share
 * its one pool).  A request is one pkv_seq_id per group (ids[g]), created,
 * appended, committed, matched and freed together.  A full-attention group
 * keeps every block.  A sliding group of window W keeps only the blocks a
 * future query can read: after a commit of n tokens, the next query is at
 * position n and attends [n - W + 1, n], so every block that ends at or
 * before n - W + 1 is released (to the evictable cache if it was
 * committed, else to the free pool).  Its sequence then holds the window
 * only: table entry 0 is the block starting at pkv_groups_first_pos().
 *
 * Prefix hits: a hit of h tokens is valid only if every group has what a
 * request resuming at h needs — a full group all blocks of [0, h), a
 * sliding group the blocks covering [h - W + 1, h).  pkv_groups_match finds
 * the largest such h and attaches exactly those blocks.  Each group's
 * blocks live in their own namespace (the request's namespace and the group
 * index), so groups never share blocks.
 */
#ifndef PAGEDKV_GROUPS_H
#define PAGEDKV_GROUPS_H

#include "pagedkv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum pkv_attn_kind {
  PKV_ATTN_FULL = 0,
  PKV_ATTN_SLIDING = 1
} pkv_attn_kind;

typedef struct pkv_group_spec {
  pkv_attn_kind kind;
  uint32_t window; /* sliding: tokens (>= 1, <= max_tokens); full: 0 */
} pkv_group_spec;

typedef struct pkv_groups pkv_groups;

/* Up to this many groups per cache. */
#define PKV_GROUPS_MAX 64

/* Creates the group layout over cache (which must outlive it) for requests
 * of at most max_tokens tokens.  Returns 0; PKV_EINVAL (NULL argument,
 * n_groups 0 or > PKV_GROUPS_MAX, unknown kind, a full group with a window,
 * a sliding window of 0), PKV_ERANGE (a window larger than max_tokens),
 * PKV_ENOMEM.  On failure *out is NULL. */
PKV_API int pkv_groups_create(pkv_cache *cache, const pkv_group_spec *specs,
                              uint32_t n_groups, uint32_t max_tokens,
                              pkv_groups **out);
/* Frees the layout (not the cache or its sequences).  NULL is a no-op;
 * keeps pkv_last_error(). */
PKV_API void pkv_groups_destroy(pkv_groups *groups);

/* Creates one empty sequence per group into ids[0..n_groups) (opts as
 * pkv_seq_create; the namespace gains the group index).  All or nothing. */
PKV_API int pkv_groups_seq_create(pkv_groups *groups, const pkv_seq_opts *opts,
                                  pkv_seq_id *ids);
/* Frees every group's sequence.  PKV_ENOSEQ (nothing freed) if one is not
 * live. */
PKV_API int pkv_groups_seq_free(pkv_groups *groups, const pkv_seq_id *ids);
/* Appends tokens to every group's sequence; slots (may be NULL) receives
 * n_tokens slots per group, group-major (slots[g * n_tokens + i]).  All or
 * nothing: PKV_ENOMEM leaves every group as it was.  PKV_ERANGE past
 * max_tokens. */
PKV_API int pkv_groups_append(pkv_groups *groups, const pkv_seq_id *ids,
                              const int32_t *tokens, uint32_t n_tokens,
                              int64_t *slots);
/* Commits [0, n_tokens) in every group (absolute positions), then releases
 * the sliding groups' blocks that end at or before n_tokens - W + 1.
 * PKV_ERANGE past the length or before the committed length. */
PKV_API int pkv_groups_commit(pkv_groups *groups, const pkv_seq_id *ids,
                              uint32_t n_tokens);
/* On empty sequences: the longest hit h <= max_tokens (0 = no cap) valid
 * for every group (see above), attached in every group; *matched = h (a
 * multiple of block_size, committed).  Counts one prefix query per group.
 * PKV_ESTATE if a sequence is not empty; *matched untouched on failure. */
PKV_API int pkv_groups_match(pkv_groups *groups, const pkv_seq_id *ids,
                             const int32_t *tokens, uint32_t n_tokens,
                             uint32_t max_tokens, uint32_t *matched);
/* Absolute position of the first token group `group`'s table covers (0 for
 * a full group; for a sliding group the start of its oldest kept block). */
PKV_API int pkv_groups_first_pos(pkv_groups *groups, const pkv_seq_id *ids,
                                 uint32_t group, uint32_t *first_pos);

/* ---------------------------------------------------------------- serving
 * The group forms of the serving calls (pkv_prefix_probe,
 * pkv_seq_append_ex with lookahead and deltas): what a scheduler driving a
 * hybrid model (vLLM's KV cache groups) calls every step.  Positions and
 * table indexes here are absolute: entry i of a group is block i of the
 * token stream, also in a sliding group whose table starts later. */

/* Read-only: the longest hit h <= max_tokens (0 = no cap; n_tokens - 1
 * keeps one token to compute) valid for every group, as pkv_groups_match
 * would find it for a request in the namespace/adapter of opts (NULL =
 * default), capped at blocks_cap blocks when blocks is not NULL.
 * *hit_tokens = h (a multiple of block_size); blocks (may be NULL with
 * blocks_cap 0) receives, group-major, blocks[g * blocks_cap + i] for
 * i < h / block_size: the cached block group g needs at entry i, or -1
 * where a sliding group needs none (before its window).  Changes nothing:
 * no refcount, no policy hook, no statistic but stats.prefix_probes (+1).
 * A hint: blocks may be evicted before pkv_groups_append_ex attaches them
 * (then PKV_ESTATE).  O(n_groups x hit blocks).  Returns 0 (also for a
 * miss); PKV_EINVAL (NULL groups/hit_tokens, tokens NULL with n_tokens > 0,
 * blocks NULL with a cap, ns NULL with ns_len), PKV_ENOMEM. */
PKV_API int pkv_groups_probe(pkv_groups *groups, const pkv_seq_opts *opts,
                             const int32_t *tokens, uint32_t n_tokens,
                             uint32_t max_tokens, int32_t *blocks,
                             uint32_t blocks_cap, uint32_t *hit_tokens);

/* pkv_seq_append_ex for every group of a request in one all-or-nothing
 * step.  req is read as for pkv_seq_append_ex, per group:
 *   tokens, n_tokens   from the groups' common known length (absolute);
 *   n_lookahead        slots reserved past the known tokens without ids;
 *   hit_blocks         empty sequences only: n_groups x n_hit_blocks,
 *                      group-major, as pkv_groups_probe returned them with
 *                      blocks_cap = n_hit_blocks (entries before a sliding
 *                      group's window are ignored); every needed block is
 *                      re-verified, a sliding group attaches its window
 *                      only (pkv_groups_first_pos then says where);
 *   slots              NULL, or n_groups x (n_tokens - hit tokens +
 *                      n_lookahead), group-major;
 *   new_blocks         NULL, or n_groups x new_cap, group-major: the
 *                      blocks each group appended.
 * deltas (may be NULL) receives n_groups pkv_delta, group-major, with
 * absolute table indexes (first_new, cow_index) and lengths (n_known,
 * n_tokens).  Lookahead slots are never committed or cached (commit stops
 * at the known length); a later call fills them in order.
 * Returns 0; PKV_EINVAL (NULL groups/ids/req, a NULL buffer with a count,
 * n_tokens below the hit), PKV_ENOSEQ, PKV_ESTATE (groups at different
 * lengths, a hit on non-empty sequences, a stale hit), PKV_ERANGE (past
 * max_tokens, lookahead included), PKV_ENOSPC (new_cap below a group's new
 * blocks), PKV_ENOMEM (the pool cannot hold every group's blocks, or
 * memory).  On failure no group changed (outputs untouched).  Refcounts as
 * pkv_seq_append_ex, in each group. */
PKV_API int pkv_groups_append_ex(pkv_groups *groups, const pkv_seq_id *ids,
                                 const pkv_append *req, pkv_delta *deltas);

#ifdef __cplusplus
}
#endif
#endif /* PAGEDKV_GROUPS_H */
