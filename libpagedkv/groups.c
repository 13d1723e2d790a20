/*
 * groups.c — KV cache groups (include/pagedkv/groups.h): full-attention and
 * sliding-window groups of layers over one cache and one block pool.
 *
 *   request ──► ids[0..n_groups) ── one pkv__seq per group, namespace
 *                                   (request ns ‖ "\0grp" ‖ group index)
 *   full group     table = blocks [0, n)
 *   sliding group  table = blocks [n_dropped, n): the ones a query at
 *                  position >= committed length can still read
 *
 * A sliding group's sequence is an ordinary sequence over the window: its
 * position 0 is absolute position n_dropped * block_size.  Dropping the
 * front (drop_front) releases whole blocks and remembers the key of the
 * last one dropped, so the blocks committed later keep chaining their keys
 * from the true prefix (prefix.c uses pkv__seq.dropped_key / n_dropped):
 * the window's blocks stay findable by a later request with the same
 * tokens even though their predecessors are gone.
 *
 * Matching (pkv_groups_match) walks each group's key chain over the tokens
 * under one lock: a full group's hit is its longest run of cached blocks
 * from 0; a sliding group records which blocks are cached anywhere along
 * the chain.  The hit h is the largest multiple of block_size, within every
 * full group's run, such that every sliding group has all blocks covering
 * [h - W + 1, h).  Then each group attaches exactly what it needs.
 * pkv_groups_probe runs the same search (find_hit) on the namespaces alone
 * and changes nothing; pkv_groups_append_ex attaches a probed hit after
 * re-verifying each needed block, then appends known ids and lookahead
 * slots in every group with pkv__seq_grow (seq.c's general append), all
 * groups counted and reserved first so that the step is all or nothing.
 */
#include "core.h"
#include "pagedkv/groups.h"

#include <stdio.h>
#include <string.h>

struct pkv_groups {
  pkv_cache *cache;
  uint32_t n_groups;
  uint32_t max_tokens;
  pkv_group_spec spec[PKV_GROUPS_MAX];
};

int pkv_groups_create(pkv_cache *cache, const pkv_group_spec *specs,
                      uint32_t n_groups, uint32_t max_tokens,
                      pkv_groups **out) {
  pkv__err_clear();
  PKV_CHECK(out, "groups_create: out is NULL");
  *out = NULL;
  PKV_CHECK(cache && specs, "groups_create: cache or specs is NULL");
  PKV_CHECK(n_groups >= 1 && n_groups <= PKV_GROUPS_MAX, "groups_create: %u "
            "groups (1..%d)", n_groups, PKV_GROUPS_MAX);
  PKV_CHECK(max_tokens > 0, "groups_create: max_tokens is 0");
  for (uint32_t g = 0; g < n_groups; g++) {
    const pkv_group_spec *sp = &specs[g];
    PKV_CHECK(sp->kind != PKV_ATTN_FULL || sp->window == 0, "groups_create: "
            "group %u: full attention with window %u", g, sp->window);
    PKV_CHECK(sp->kind == PKV_ATTN_FULL || sp->kind == PKV_ATTN_SLIDING,
            "groups_create: group %u: unknown kind %d", g, (int)sp->kind);
    PKV_CHECK(sp->kind != PKV_ATTN_SLIDING || sp->window > 0, "groups_create: "
            "group %u: window 0", g);
    if (sp->window > max_tokens)
      return pkv__err(PKV_ERANGE, "groups_create: group %u: window %u larger "
                      "than the context (max_tokens %u)", g, sp->window,
                      max_tokens);
  }
  pkv_groups *gr = pkv__calloc(1, sizeof *gr);
  if (!gr) return pkv__err(PKV_ENOMEM, "groups_create: no memory");
  gr->cache = cache;
  gr->n_groups = n_groups;
  gr->max_tokens = max_tokens;
  memcpy(gr->spec, specs, n_groups * sizeof *specs);
  *out = gr;
  return 0;
}

void pkv_groups_destroy(pkv_groups *groups) { pkv__free(groups); }

/* The namespace of group g for a request in namespace (ns, len). */
static uint8_t *group_ns(const void *ns, size_t len, uint32_t g, size_t *out_len) {
  uint8_t *b = pkv__malloc(len + 6);
  if (!b) return NULL;
  if (len) memcpy(b, ns, len);
  memcpy(b + len, "\0grp", 4);
  b[len + 4] = (uint8_t)g;
  b[len + 5] = (uint8_t)(g >> 8);
  *out_len = len + 6;
  return b;
}

int pkv_groups_seq_free(pkv_groups *groups, const pkv_seq_id *ids) {
  pkv__err_clear();
  PKV_CHECK(groups && ids, "groups_seq_free: NULL argument");
  pkv_cache *c = groups->cache;
  PKV_LOCK(c);
  int rc = 0;
  for (uint32_t g = 0; g < groups->n_groups && !rc; g++)
    if (!pkv__seq_lookup(c, ids[g])) rc = PKV_ENOSEQ;
  for (uint32_t g = 0; g < groups->n_groups && !rc; g++)
    pkv__seq_release(c, pkv__seq_lookup(c, ids[g]));
  return pkv__leave(c, rc);
}

int pkv_groups_seq_create(pkv_groups *groups, const pkv_seq_opts *opts,
                          pkv_seq_id *ids) {
  pkv__err_clear();
  PKV_CHECK(groups && ids, "groups_seq_create: NULL argument");
  pkv_seq_opts o = {0};
  if (opts) o = *opts;
  PKV_CHECK(o.ns || o.ns_len == 0, "groups_seq_create: ns is NULL with ns_len "
            "%zu", o.ns_len);
  for (uint32_t g = 0; g < groups->n_groups; g++) {
    pkv_seq_opts og = o;
    uint8_t *ns = group_ns(o.ns, o.ns_len, g, &og.ns_len);
    int rc = ns ? 0 : pkv__err(PKV_ENOMEM, "groups_seq_create: no memory");
    og.ns = ns;
    if (!rc) rc = pkv_seq_create(groups->cache, &og, &ids[g]);
    pkv__free(ns);
    if (rc) {
      char why[256];
      memcpy(why, pkv_last_error(), sizeof why);
      why[sizeof why - 1] = '\0';
      for (uint32_t k = 0; k < g; k++) (void)pkv_seq_free(groups->cache, ids[k]);
      return pkv__err(rc, "%s", why);
    }
  }
  return 0;
}

/* Looks up every group's sequence (lock held). */
static int lookup_all(pkv_groups *gr, const pkv_seq_id *ids, pkv__seq **s) {
  for (uint32_t g = 0; g < gr->n_groups; g++)
    if (!(s[g] = pkv__seq_lookup(gr->cache, ids[g]))) return PKV_ENOSEQ;
  return 0;
}

int pkv_groups_append(pkv_groups *groups, const pkv_seq_id *ids,
                      const int32_t *tokens, uint32_t n_tokens,
                      int64_t *slots) {
  pkv__err_clear();
  PKV_CHECK(groups && ids && tokens && n_tokens > 0, "groups_append: NULL "
            "argument or 0 tokens");
  pkv_cache *c = groups->cache;
  const uint32_t bs = c->block_size;
  PKV_LOCK(c);
  pkv__seq *s[PKV_GROUPS_MAX];
  int rc = lookup_all(groups, ids, s);
  uint64_t need = 0;
  for (uint32_t g = 0; g < groups->n_groups && !rc; g++) {
    uint64_t abs_len = (uint64_t)s[g]->n_dropped * bs + s[g]->n_tokens;
    if (abs_len + n_tokens > groups->max_tokens)
      rc = pkv__err(PKV_ERANGE, "groups_append: %llu + %u tokens exceed "
                    "max_tokens %u", (unsigned long long)abs_len, n_tokens,
                    groups->max_tokens);
    if (s[g]->n_known < s[g]->n_tokens)
      rc = pkv__err(PKV_ESTATE, "groups_append: group %u has lookahead slots", g);
    uint64_t room = (uint64_t)s[g]->n_blocks * bs - s[g]->n_tokens;
    need += (n_tokens > room ? (n_tokens - room + bs - 1) / bs : 0) + (room > 0);
  }
  if (!rc && need > pkv__blocks_available(c))
    rc = pkv__err(PKV_ENOMEM, "groups_append: %u tokens in %u groups may need "
                  "%llu blocks, %u available", n_tokens, groups->n_groups,
                  (unsigned long long)need, pkv__blocks_available(c));
  uint32_t len0[PKV_GROUPS_MAX];
  for (uint32_t g = 0; g < groups->n_groups && !rc; g++) len0[g] = s[g]->n_tokens;
  pkv__unlock(c);
  if (rc) return rc;
  /* The pool suffices for every group (counted with a copy-on-write each),
   * so these appends do not run dry; any other failure is undone. */
  for (uint32_t g = 0; g < groups->n_groups; g++) {
    rc = pkv_seq_append(c, ids[g], tokens, n_tokens,
                        slots ? slots + (size_t)g * n_tokens : NULL);
    if (rc) {
      for (uint32_t k = 0; k < g; k++) (void)pkv_seq_truncate(c, ids[k], len0[k]);
      return rc;
    }
  }
  return 0;
}

/* Releases the first k blocks of a sliding group's sequence s (lock held);
 * they are committed (see pkv_groups_commit). */
static void drop_front(pkv_cache *c, pkv__seq *s, uint32_t k) {
  const uint32_t bs = c->block_size;
  if (k <= s->n_hashed)
    s->dropped_key = c->blk[s->blocks[k - 1]].key;
  else
    s->index_limit = 0; /* keys unknown: register nothing more */
  for (uint32_t i = 0; i < k; i++) pkv__block_unref(c, s->blocks[i]);
  memmove(s->blocks, s->blocks + k, (s->n_blocks - k) * sizeof *s->blocks);
  s->n_blocks -= k;
  s->n_tokens -= k * bs;
  s->n_known -= k * bs;
  s->n_committed -= k * bs;
  s->n_hashed = s->n_hashed > k ? s->n_hashed - k : 0;
  if (s->index_limit != UINT32_MAX)
    s->index_limit = s->index_limit > k ? s->index_limit - k : 0;
  if (s->n_blocks == 0) s->tail_writable = false;
  s->n_dropped += k;
  c->sum_tokens -= (uint64_t)k * bs;
  c->sum_blocks -= k;
}

int pkv_groups_commit(pkv_groups *groups, const pkv_seq_id *ids,
                      uint32_t n_tokens) {
  pkv__err_clear();
  PKV_CHECK(groups && ids, "groups_commit: NULL argument");
  pkv_cache *c = groups->cache;
  const uint32_t bs = c->block_size;
  PKV_LOCK(c);
  pkv__seq *s[PKV_GROUPS_MAX];
  int rc = lookup_all(groups, ids, s);
  uint32_t rel[PKV_GROUPS_MAX];
  for (uint32_t g = 0; g < groups->n_groups && !rc; g++) {
    uint64_t base = (uint64_t)s[g]->n_dropped * bs;
    if (n_tokens < base + s[g]->n_committed || n_tokens > base + s[g]->n_known)
      rc = pkv__err(PKV_ERANGE, "groups_commit: %u outside [%llu, %llu] in "
                    "group %u", n_tokens,
                    (unsigned long long)(base + s[g]->n_committed),
                    (unsigned long long)(base + s[g]->n_known), g);
    else
      rel[g] = n_tokens - (uint32_t)base;
  }
  pkv__unlock(c);
  if (rc) return rc;
  for (uint32_t g = 0; g < groups->n_groups; g++)
    if ((rc = pkv_seq_commit(c, ids[g], rel[g])) != 0) return rc; /* cannot */
  PKV_LOCK(c);
  rc = lookup_all(groups, ids, s);
  for (uint32_t g = 0; g < groups->n_groups && !rc; g++) {
    uint32_t w = groups->spec[g].window;
    if (groups->spec[g].kind != PKV_ATTN_SLIDING || n_tokens + 1 <= w) continue;
    uint32_t keep_from = (n_tokens + 1 - w) / bs; /* first block a query reads */
    if (keep_from > s[g]->n_dropped) drop_front(c, s[g], keep_from - s[g]->n_dropped);
  }
  return pkv__leave(c, rc);
}

int pkv_groups_first_pos(pkv_groups *groups, const pkv_seq_id *ids,
                         uint32_t group, uint32_t *first_pos) {
  pkv__err_clear();
  PKV_CHECK(groups && ids && first_pos, "groups_first_pos: NULL argument");
  if (group >= groups->n_groups)
    return pkv__err(PKV_ERANGE, "groups_first_pos: group %u of %u", group,
                    groups->n_groups);
  pkv_cache *c = groups->cache;
  PKV_LOCK(c);
  pkv__seq *s = pkv__seq_lookup(c, ids[group]);
  if (s) *first_pos = s->n_dropped * c->block_size;
  return pkv__leave_ro(c, s ? 0 : PKV_ENOSEQ);
}

/* ------------------------------------------------ matching */

/* Walks s's key chain over tokens[0 .. n_blocks * bs): found[i] = the
 * cached block verifying as block i (or -1), keys[i] its key.  A full group
 * stops at its first miss; returns the blocks walked. */
static uint32_t chain_walk(pkv_cache *c, uint32_t ns_id, const int32_t *tokens,
                           uint32_t n_blocks, bool stop_at_miss, int32_t *found,
                           pkv_hash128 *keys) {
  pkv_hash128 parent = {0, 0};
  for (uint32_t i = 0; i < n_blocks; i++) {
    const int32_t *t = tokens + (size_t)i * c->block_size;
    keys[i] = pkv__block_key(c, &parent, ns_id, t);
    found[i] = pkv__index_lookup(c, keys[i], parent, ns_id, t);
    if (found[i] < 0 && stop_at_miss) return i;
    parent = keys[i];
  }
  return n_blocks;
}

/* Points the empty sequence s at cached blocks found[from, to) (lock held;
 * table room reserved). */
static void attach(pkv_cache *c, pkv__seq *s, const int32_t *found,
                   const pkv_hash128 *keys, uint32_t from, uint32_t to) {
  const uint32_t bs = c->block_size;
  for (uint32_t i = from; i < to; i++) {
    pkv__block_ref(c, found[i]);
    pkv__prefix_hit(c, found[i]);
    s->blocks[i - from] = found[i];
  }
  s->n_dropped = from;
  if (from > 0) s->dropped_key = keys[from - 1];
  s->n_blocks = s->n_hashed = to - from;
  s->n_tokens = s->n_known = s->n_committed = (to - from) * bs;
  s->tail_writable = false;
  c->sum_tokens += (uint64_t)(to - from) * bs;
  c->sum_blocks += to - from;
}

/* The first block a sliding group g needs for a hit of hb blocks (a query
 * at position h = hb * bs reads [h - W + 1, h]); 0 for a full group. */
static uint32_t window_from(const pkv_groups *gr, uint32_t g, uint32_t hb) {
  uint32_t bs = gr->cache->block_size, w = gr->spec[g].window;
  if (gr->spec[g].kind != PKV_ATTN_SLIDING || (uint64_t)hb * bs + 1 <= w) return 0;
  return (uint32_t)(((uint64_t)hb * bs + 1 - w) / bs);
}

/* The largest hit (in blocks, <= want) valid for every group (lock held):
 * found/keys are ng x want, group-major; group g's blocks are looked up in
 * namespace ns_ids[g], or missed everywhere when has_ns[g] is false (has_ns
 * NULL: all exist).  Full groups bound the hit; sliding groups need their
 * window. */
static uint32_t find_hit(pkv_groups *groups, const uint32_t *ns_ids, const bool *has_ns,
                         const int32_t *tokens, uint32_t want, int32_t *found,
                         pkv_hash128 *keys) {
  pkv_cache *c = groups->cache;
  const uint32_t ng = groups->n_groups;
  uint32_t hb = want;
  if (want == 0) return 0; /* found/keys may be NULL then */
  for (uint32_t g = 0; g < ng; g++) {
    int32_t *f = found + (size_t)g * want;
    bool full = groups->spec[g].kind == PKV_ATTN_FULL;
    if (has_ns && !has_ns[g]) {
      for (uint32_t i = 0; i < want; i++) f[i] = -1;
      if (full) hb = 0;
      continue;
    }
    if (!full) continue;
    uint32_t run = chain_walk(c, ns_ids[g], tokens, hb, true, f, keys + (size_t)g * want);
    if (run < hb) hb = run;
  }
  for (uint32_t g = 0; g < ng; g++)
    if (groups->spec[g].kind == PKV_ATTN_SLIDING && (!has_ns || has_ns[g]))
      (void)chain_walk(c, ns_ids[g], tokens, hb, false, found + (size_t)g * want,
                       keys + (size_t)g * want);
  /* The largest hb whose window blocks are cached in every sliding group:
   * lowering hb for one group may break another's, so repeat until none
   * lowers it (hb only falls). */
  for (bool lowered = true; lowered && hb > 0;) {
    lowered = false;
    for (uint32_t g = 0; g < ng && hb > 0; g++) {
      if (groups->spec[g].kind != PKV_ATTN_SLIDING) continue;
      const int32_t *f = found + (size_t)g * want;
      for (;;) {
        uint32_t from = window_from(groups, g, hb);
        uint32_t miss = hb;
        for (uint32_t i = from; i < hb && miss == hb; i++)
          if (f[i] < 0) miss = i;
        if (miss == hb) break;
        hb = miss; /* every window ending past a missing block contains it */
        lowered = true;
      }
    }
  }
  return hb;
}

int pkv_groups_match(pkv_groups *groups, const pkv_seq_id *ids,
                     const int32_t *tokens, uint32_t n_tokens,
                     uint32_t max_tokens, uint32_t *matched) {
  pkv__err_clear();
  PKV_CHECK(groups && ids && matched && (tokens || n_tokens == 0),
            "groups_match: NULL argument");
  pkv_cache *c = groups->cache;
  const uint32_t bs = c->block_size, ng = groups->n_groups;
  uint32_t limit = n_tokens;
  if (max_tokens && max_tokens < limit) limit = max_tokens;
  uint32_t want = limit / bs;
  PKV_LOCK(c);
  pkv__seq *s[PKV_GROUPS_MAX];
  int32_t *found = NULL;
  pkv_hash128 *keys = NULL;
  int rc = lookup_all(groups, ids, s);
  for (uint32_t g = 0; g < ng && !rc; g++)
    if (s[g]->n_tokens || s[g]->n_dropped)
      rc = pkv__err(PKV_ESTATE, "groups_match: group %u's sequence is not "
                    "empty", g);
  if (rc) goto out;
  if (!(c->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE) && want > 0) {
    found = pkv__malloc((size_t)ng * want * sizeof *found);
    keys = pkv__malloc((size_t)ng * want * sizeof *keys);
    for (uint32_t g = 0; found && keys && g < ng && !rc; g++)
      rc = pkv__seq_table_reserve(s[g], want);
    if (!rc && (!found || !keys))
      rc = pkv__err(PKV_ENOMEM, "groups_match: no memory for %u blocks", want);
    if (rc) goto out;
  } else {
    want = 0;
  }
  uint32_t ns_ids[PKV_GROUPS_MAX] = {0};
  for (uint32_t g = 0; g < ng; g++) ns_ids[g] = s[g]->ns_id;
  uint32_t hb = find_hit(groups, ns_ids, NULL, tokens, want, found, keys);
  /* Every group agrees on hb: attach. */
  for (uint32_t g = 0; g < ng; g++) {
    uint32_t from = window_from(groups, g, hb);
    if (hb > 0)
      attach(c, s[g], found + (size_t)g * want, keys + (size_t)g * want, from, hb);
    c->st.prefix_queries++;
    c->st.prefix_query_tokens += n_tokens;
    c->st.prefix_hit_tokens += (uint64_t)hb * bs;
  }
  *matched = hb * bs;
out:
  pkv__free(found);
  pkv__free(keys);
  return pkv__leave(c, rc);
}

/* ------------------------------------------------ serving: probe, append_ex */

int pkv_groups_probe(pkv_groups *groups, const pkv_seq_opts *opts,
                     const int32_t *tokens, uint32_t n_tokens,
                     uint32_t max_tokens, int32_t *blocks, uint32_t blocks_cap,
                     uint32_t *hit_tokens) {
  pkv__err_clear();
  PKV_CHECK(groups && hit_tokens && (tokens || n_tokens == 0), "groups_probe: NULL argument");
  PKV_CHECK(blocks || blocks_cap == 0, "groups_probe: blocks is NULL with cap %u", blocks_cap);
  PKV_CHECK(!opts || opts->ns_len == 0 || opts->ns,
            "groups_probe: ns is NULL with ns_len %zu", opts ? opts->ns_len : 0);
  pkv_cache *c = groups->cache;
  const uint32_t bs = c->block_size, ng = groups->n_groups;
  uint32_t limit = n_tokens;
  if (max_tokens && max_tokens < limit) limit = max_tokens;
  uint32_t want = limit / bs;
  if (blocks && want > blocks_cap) want = blocks_cap;
  if (c->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE) want = 0;
  /* The group namespaces (request namespace ‖ group index), built before
   * the lock; a namespace no sequence ever had has no blocks. */
  uint8_t *nsb[PKV_GROUPS_MAX] = {0};
  size_t nsl[PKV_GROUPS_MAX];
  int rc = 0;
  for (uint32_t g = 0; g < ng && want > 0 && !rc; g++)
    if (!(nsb[g] = group_ns(opts ? opts->ns : NULL, opts ? opts->ns_len : 0, g, &nsl[g])))
      rc = pkv__err(PKV_ENOMEM, "groups_probe: no memory");
  int32_t *found = NULL;
  pkv_hash128 *keys = NULL;
  if (!rc && want > 0) {
    found = pkv__malloc((size_t)ng * want * sizeof *found);
    keys = pkv__malloc((size_t)ng * want * sizeof *keys);
    if (!found || !keys) rc = pkv__err(PKV_ENOMEM, "groups_probe: no memory for %u blocks", want);
  }
  /* The lock by hand (not PKV_LOCK): a refusal must free the buffers. */
  if (!rc && pkv__lock(c)) rc = PKV_EBUSY;
  else if (!rc) {
    uint32_t hb = 0, ns_ids[PKV_GROUPS_MAX] = {0};
    bool has[PKV_GROUPS_MAX] = {0};
    for (uint32_t g = 0; g < ng && want > 0 && !rc; g++) {
      has[g] = pkv__ns_find(c, nsb[g], nsl[g], opts ? opts->adapter_id : 0, &ns_ids[g], &rc);
    }
    if (!rc && want > 0) hb = find_hit(groups, ns_ids, has, tokens, want, found, keys);
    if (!rc) {
      for (uint32_t g = 0; blocks && g < ng; g++) {
        uint32_t from = window_from(groups, g, hb);
        for (uint32_t i = 0; i < hb; i++)
          blocks[(size_t)g * blocks_cap + i] = i < from ? -1 : found[(size_t)g * want + i];
      }
      c->st.prefix_probes++;
      *hit_tokens = hb * bs;
    }
    rc = pkv__leave_ro(c, rc);
  }
  for (uint32_t g = 0; g < ng; g++) pkv__free(nsb[g]);
  pkv__free(found);
  pkv__free(keys);
  return rc;
}

int pkv_groups_append_ex(pkv_groups *groups, const pkv_seq_id *ids,
                         const pkv_append *req_in, pkv_delta *deltas) {
  pkv__err_clear();
  PKV_CHECK(groups && ids && req_in, "groups_append_ex: NULL argument");
  pkv_append req;
  int rc = pkv__append_in(&req, req_in);
  if (rc) return rc;
  PKV_CHECK(req.tokens || req.n_tokens == 0,
            "groups_append_ex: tokens is NULL with n_tokens %u", req.n_tokens);
  PKV_CHECK(req.hit_blocks || req.n_hit_blocks == 0,
            "groups_append_ex: hit_blocks is NULL with n_hit_blocks %u", req.n_hit_blocks);
  PKV_CHECK(req.new_blocks || req.new_cap == 0,
            "groups_append_ex: new_blocks is NULL with new_cap %u", req.new_cap);
  pkv_cache *c = groups->cache;
  const uint32_t bs = c->block_size, ng = groups->n_groups, nh = req.n_hit_blocks;
  uint64_t hit_tokens = (uint64_t)nh * bs;
  PKV_CHECK(hit_tokens <= req.n_tokens, "groups_append_ex: %u hit blocks cover %llu "
            "tokens, n_tokens is %u", nh, (unsigned long long)hit_tokens, req.n_tokens);
  const uint32_t n_new = req.n_tokens - (uint32_t)hit_tokens;
  const uint64_t per_group_slots = (uint64_t)n_new + req.n_lookahead;
  PKV_LOCK(c);
  pkv__seq *s[PKV_GROUPS_MAX];
  uint32_t from[PKV_GROUPS_MAX];
  uint64_t need = 0, cows = 0;
  rc = lookup_all(groups, ids, s);
  /* Every group at the same absolute lengths (they move together). */
  uint64_t known_abs = 0, len_abs = 0;
  for (uint32_t g = 0; g < ng && !rc; g++) {
    uint64_t base = (uint64_t)s[g]->n_dropped * bs;
    if (g == 0) {
      known_abs = base + s[g]->n_known;
      len_abs = base + s[g]->n_tokens;
    } else if (base + s[g]->n_known != known_abs || base + s[g]->n_tokens != len_abs) {
      rc = pkv__err(PKV_ESTATE, "groups_append_ex: group %u is at %llu/%llu tokens, "
                    "group 0 at %llu/%llu", g, (unsigned long long)(base + s[g]->n_known),
                    (unsigned long long)(base + s[g]->n_tokens),
                    (unsigned long long)known_abs, (unsigned long long)len_abs);
    }
  }
  if (!rc && nh && len_abs)
    rc = pkv__err(PKV_ESTATE, "groups_append_ex: a hit attaches only to empty "
                  "sequences (these hold %llu tokens)", (unsigned long long)len_abs);
  uint64_t new_known = known_abs + hit_tokens + n_new;
  uint64_t new_len = new_known + req.n_lookahead > len_abs ? new_known + req.n_lookahead : len_abs;
  if (!rc && new_len > groups->max_tokens)
    rc = pkv__err(PKV_ERANGE, "groups_append_ex: %llu tokens (lookahead included) "
                  "exceed max_tokens %u", (unsigned long long)new_len, groups->max_tokens);
  /* Verify each group's hit and count what every group takes, as
   * pkv__seq_grow will: fresh blocks, a copy of a shared tail, and hit
   * blocks nobody holds (they stop being evictable). */
  for (uint32_t g = 0; g < ng && !rc; g++) {
    const int32_t *gh = req.hit_blocks ? req.hit_blocks + (size_t)g * nh : NULL;
    from[g] = window_from(groups, g, nh);
    uint32_t n_hits = nh - from[g];
    if (nh && !pkv__prefix_verify(c, s[g]->ns_id, req.tokens, gh, from[g], nh)) {
      char why[200];
      snprintf(why, sizeof why, "%s", pkv_last_error());
      rc = pkv__err(PKV_ESTATE, "groups_append_ex: group %u: %s", g, why);
      break;
    }
    uint64_t len0 = s[g]->n_tokens + (uint64_t)n_hits * bs;
    uint64_t nblk0 = s[g]->n_blocks + (uint64_t)n_hits;
    uint64_t room = nblk0 * bs - len0;
    uint64_t ext = new_len - (uint64_t)s[g]->n_dropped * bs - (nh ? (uint64_t)from[g] * bs : 0) - len0;
    int32_t tail = n_hits ? gh[nh - 1] : nblk0 ? s[g]->blocks[nblk0 - 1] : -1;
    bool cow = ext > 0 && room > 0 && !pkv__block_writable_at(c, tail, bs - (uint32_t)room);
    uint64_t fresh = ext > room ? (ext - room + bs - 1) / bs : 0;
    if (req.new_blocks && fresh > req.new_cap) {
      rc = pkv__err(PKV_ENOSPC, "groups_append_ex: group %u needs %llu new blocks, "
                    "new_cap is %u", g, (unsigned long long)fresh, req.new_cap);
      break;
    }
    for (uint32_t i = from[g]; i < nh; i++) need += c->refcount[gh[i]] == 0;
    need += fresh + cow;
    cows += cow;
    if (!rc) rc = pkv__seq_table_reserve(s[g], nblk0 + fresh);
  }
  if (!rc && need > pkv__blocks_available(c))
    rc = pkv__err(PKV_ENOMEM, "groups_append_ex: %u groups need %llu blocks, %u "
                  "available", ng, (unsigned long long)need, pkv__blocks_available(c));
  if (!rc && cows) rc = pkv__copies_reserve(c, (uint32_t)cows);
  /* Counted and reserved: each group's grow succeeds. */
  for (uint32_t g = 0; g < ng && !rc; g++) {
    pkv__seq *sg = s[g];
    const int32_t *gh = req.hit_blocks ? req.hit_blocks + (size_t)g * nh : NULL;
    if (nh && from[g]) {
      /* A sliding group resumes at the window: the chain key of the block
       * before it, as a commit's drop would have left it. */
      pkv_hash128 parent = {0, 0};
      for (uint32_t i = 0; i < from[g]; i++)
        parent = pkv__block_key(c, &parent, sg->ns_id, req.tokens + (size_t)i * bs);
      sg->n_dropped = from[g];
      sg->dropped_key = parent;
    }
    pkv_delta d;
    rc = pkv__seq_grow(c, sg, gh ? gh + from[g] : NULL, nh - from[g],
                       req.tokens ? req.tokens + hit_tokens : NULL, n_new, req.n_lookahead,
                       req.slots ? req.slots + (size_t)g * per_group_slots : NULL,
                       req.new_blocks ? req.new_blocks + (size_t)g * req.new_cap : NULL,
                       req.new_cap, &d);
    if (rc) { /* counted above: cannot happen */
      rc = pkv__err(PKV_ECORRUPT, "groups_append_ex: group %u failed after the "
                    "count (%s)", g, pkv_last_error());
      break;
    }
    if (deltas) {
      uint32_t first = sg->n_dropped;
      deltas[g] = d;
      deltas[g].first_new += first;
      if (d.cow_index >= 0) deltas[g].cow_index += (int32_t)first;
      deltas[g].n_known += first * bs;
      deltas[g].n_tokens += first * bs;
    }
    if (n_new) {
      c->st.appends++;
      c->st.appended_tokens += n_new;
    }
  }
  return pkv__leave(c, rc);
}
