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
 */
#include "core.h"
#include "pagedkv/groups.h"

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
static uint32_t chain_walk(pkv_cache *c, const pkv__seq *s, const int32_t *tokens,
                           uint32_t n_blocks, bool stop_at_miss, int32_t *found,
                           pkv_hash128 *keys) {
  pkv_hash128 parent = {0, 0};
  for (uint32_t i = 0; i < n_blocks; i++) {
    const int32_t *t = tokens + (size_t)i * c->block_size;
    keys[i] = pkv__block_key(c, &parent, s->ns_id, t);
    found[i] = pkv__index_lookup(c, keys[i], parent, s->ns_id, t);
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
  /* Full groups bound the hit; sliding groups need their window. */
  uint32_t hb = want;
  for (uint32_t g = 0; g < ng; g++) {
    if (groups->spec[g].kind != PKV_ATTN_FULL) continue;
    uint32_t run = chain_walk(c, s[g], tokens, hb, true, found + (size_t)g * want,
                              keys + (size_t)g * want);
    if (run < hb) hb = run;
  }
  for (uint32_t g = 0; g < ng; g++)
    if (groups->spec[g].kind == PKV_ATTN_SLIDING)
      (void)chain_walk(c, s[g], tokens, hb, false, found + (size_t)g * want,
                       keys + (size_t)g * want);
  /* The largest hb whose window blocks are cached in every sliding group:
   * lowering hb for one group may break another's, so repeat until none
   * lowers it (hb only falls). */
  for (bool lowered = true; lowered && hb > 0;) {
    lowered = false;
    for (uint32_t g = 0; g < ng && hb > 0; g++) {
      if (groups->spec[g].kind != PKV_ATTN_SLIDING) continue;
      const int32_t *f = found + (size_t)g * want;
      uint32_t w = groups->spec[g].window;
      for (;;) {
        uint32_t h = hb * bs;
        uint32_t from = h + 1 > w ? (h + 1 - w) / bs : 0;
        uint32_t miss = hb;
        for (uint32_t i = from; i < hb && miss == hb; i++)
          if (f[i] < 0) miss = i;
        if (miss == hb) break;
        hb = miss; /* every window ending past a missing block contains it */
        lowered = true;
      }
    }
  }
  /* Every group agrees on hb: attach. */
  for (uint32_t g = 0; g < ng; g++) {
    uint32_t from = 0, w = groups->spec[g].window;
    if (groups->spec[g].kind == PKV_ATTN_SLIDING && hb * bs + 1 > w)
      from = (hb * bs + 1 - w) / bs;
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
