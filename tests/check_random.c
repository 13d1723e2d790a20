/*
 * check_random.c — seeded random operations against a plain model.
 *
 * Each live sequence is modelled by its token ids and, per position, a tag:
 * a rolling hash of the namespace and every token up to that position — what
 * a real model's K/V at that position depends on.  When the test appends a
 * token it writes the tag's pattern into the token's slot (owned mode: the
 * K and V of every layer and head; external mode: a shadow array of tags,
 * after executing the drained copy-on-write copies on it).  After every
 * operation every live sequence must read its own tags through its page
 * table: the proof that copy-on-write, prefix sharing, dedup and eviction
 * never let one sequence see another's writes, or a different prefix's K/V.
 * pkv_check runs after every operation too.
 *
 * Operations: create (two namespaces), append (1 .. 2 blocks), fork,
 * truncate, commit, free, create+match_prefix on a prompt that shares a
 * prefix with an earlier sequence, pins (whose tails an append must copy),
 * retention ranges and prefix resets; the pool is small, so appends evict.
 * The serving calls too: create by read-only probe + verified attach
 * (sometimes with an eviction in between: a stale hit must be refused and
 * change nothing), lookahead slots (written with a placeholder tag, filled
 * by later appends or truncated), batch append and batch free, commit with
 * explicit dedup (remapped blocks released later, in arbitrary order),
 * evict(n), the common prefix of two sequences, and the pulled event queue
 * (small, so it overflows: seqnos must stay gap-free through LOST markers).
 */
#include "tu_core.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_SEQS 24
#define MAX_LEN 96
#define HIST 16

typedef struct mseq {
  bool live;
  pkv_seq_id id;
  int ns;
  uint32_t n, committed; /* n: tokens with ids (known) */
  uint32_t res;          /* reserved: n + lookahead slots */
  int32_t tok[MAX_LEN];
  uint32_t tag[MAX_LEN];
} mseq;

typedef struct world {
  pkv_cache *c;
  bool external;
  uint32_t bs, nb;
  uint32_t *shadow; /* external: tag per slot */
  bool lazy;        /* external: drain only now and then, a few at a time */
  uint32_t pending; /* lazy: copies may be queued and not yet executed */
  uint64_t lazy_checks; /* verifications of every slot (queue empty) */
  mseq s[MAX_SEQS];
  int32_t hist[HIST][MAX_LEN];
  uint32_t hist_n[HIST];
  uint64_t rng;
  uint64_t ops, enomem, matched_tokens;
  pkv_pin_id pins[4];
  int32_t deferred[64]; /* blocks a dedup remap left for pkv_blocks_release */
  uint32_t n_deferred;
  uint64_t next_seqno;  /* pulled events: the next seqno expected */
  uint64_t serving_ops, stale_hits, lookahead_fills, remaps, lost_events;
} world;

static const char *ns_names[2] = {NULL, "tenant-b"};

static uint32_t mix(uint32_t h, int32_t t) {
  uint64_t x = ((uint64_t)h << 32) ^ (uint32_t)t ^ 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 31)) * 0x7fb5d329728ea185ull;
  x ^= x >> 27;
  return (uint32_t)(x ^ (x >> 32)) | 1u;
}

static void retag(mseq *m, uint32_t from) {
  uint32_t h = m->ns ? 0xbeefu : 0xf00du;
  if (from > 0) h = m->tag[from - 1];
  for (uint32_t p = from; p < m->n; p++) h = m->tag[p] = mix(h, m->tok[p]);
}

static bool has_lookahead(const mseq *m) { return m->res > m->n; }

static void write_slot(world *w, int64_t slot, uint32_t tag, uint32_t pos) {
  if (w->external)
    w->shadow[slot] = tag;
  else
    tu_write_slot(w->c, slot, tag, pos);
}

/* Takes up to cap queued copies and executes them on the shadow, in order,
 * as a device would; returns how many remain. */
static uint32_t drain_some(world *w, uint32_t cap) {
  pkv_copy q[8];
  uint32_t n, pending;
  ck_assert_int_eq(pkv_pool_drain_copies(w->c, q, cap, &n, &pending), 0);
  for (uint32_t i = 0; i < n; i++)
    memmove(w->shadow + (size_t)q[i].dst_block * w->bs + q[i].dst_slot,
            w->shadow + (size_t)q[i].src_block * w->bs + q[i].src_slot,
            q[i].n_slots * sizeof *w->shadow);
  return pending;
}

/* The eager caller drains after every call that may queue a copy.  The
 * lazy one (issue 12 item 13) drains only now and then, a few copies at a
 * time, and writes the K/V of appended tokens at once, before the copies
 * queued ahead of them have run: the library must keep every queued copy's
 * source alive and unwritten, and its destination unreused, until drained. */
static void drain(world *w) {
  if (!w->external) return;
  if (!w->lazy) {
    while (drain_some(w, 8)) {
    }
    return;
  }
  w->pending = 1; /* maybe something queued: known at the next drain */
  if (tu_rand(&w->rng) % 4 == 0)
    w->pending = drain_some(w, 1 + (uint32_t)(tu_rand(&w->rng) % 8));
}

static void verify(world *w) {
  TU_CHECK(w->c);
  if (w->lazy && w->pending) return; /* K/V still on its way */
  w->lazy_checks += w->lazy;
  uint64_t total = 0;
  for (int i = 0; i < MAX_SEQS; i++) {
    mseq *m = &w->s[i];
    if (!m->live) continue;
    pkv_seq_info info;
    TU_ASSERT(pkv_seq_info_get(w->c, m->id, &info) == 0, "info");
    TU_ASSERT(info.n_tokens == m->res && info.n_known == m->n &&
                  info.n_committed == m->committed,
              "op %llu: seq %d has %u/%u/%u tokens, model %u/%u/%u",
              (unsigned long long)w->ops, i, info.n_tokens, info.n_known,
              info.n_committed, m->res, m->n, m->committed);
    total += m->res;
    if (!m->n) continue;
    int64_t slots[MAX_LEN];
    TU_ASSERT(pkv_slot_mapping(w->c, m->id, 0, m->n, slots) == 0, "mapping");
    for (uint32_t p = 0; p < m->n; p++) {
      if (w->external)
        TU_ASSERT(w->shadow[slots[p]] == m->tag[p],
                      "op %llu: seq %d pos %u reads tag %u, wrote %u",
                      (unsigned long long)w->ops, i, p, w->shadow[slots[p]],
                      m->tag[p]);
      else
        TU_ASSERT(tu_slot_matches(w->c, slots[p], m->tag[p], p),
                      "op %llu: seq %d pos %u reads another's K/V",
                      (unsigned long long)w->ops, i, p);
    }
  }
  pkv_stats st = tu_stats(w->c);
  TU_ASSERT(st.tokens == total, "stats.tokens");
  pkv_capacity k;
  TU_ASSERT(pkv_cache_capacity(w->c, &k) == 0, "capacity");
  TU_ASSERT(k.free == st.blocks_free && k.evictable == st.blocks_evictable &&
                k.in_use == st.blocks_used && k.cached == st.blocks_cached &&
                k.deferred == w->n_deferred,
            "op %llu: capacity disagrees with stats", (unsigned long long)w->ops);
}

/* Placeholder K/V of a lookahead slot: no sequence position has it. */
static uint32_t draft_tag(uint32_t pos) { return 0xd0000000u | pos; }

static int32_t rand_token(world *w) { return (int32_t)(tu_rand(&w->rng) % 5); }

/* Appends toks to m (model and cache); on ENOMEM nothing changes. */
static int do_append(world *w, mseq *m, const int32_t *toks, uint32_t n) {
  int64_t slots[MAX_LEN];
  int rc = pkv_seq_append(w->c, m->id, toks, n, slots);
  if (rc == PKV_ENOMEM) {
    w->enomem++;
    return rc;
  }
  ck_assert_msg(rc == 0, "append: %s", pkv_last_error());
  drain(w);
  uint32_t at = m->n;
  memcpy(m->tok + at, toks, n * sizeof *toks);
  m->n += n;
  if (m->res < m->n) m->res = m->n;
  else w->lookahead_fills += n;
  retag(m, at);
  for (uint32_t j = 0; j < n; j++) write_slot(w, slots[j], m->tag[at + j], at + j);
  return 0;
}

static int free_slot(world *w) {
  for (int i = 0; i < MAX_SEQS; i++)
    if (!w->s[i].live) return i;
  return -1;
}

static int pick_live(world *w) {
  int cand[MAX_SEQS], k = 0;
  for (int i = 0; i < MAX_SEQS; i++)
    if (w->s[i].live) cand[k++] = i;
  return k ? cand[tu_rand(&w->rng) % (uint64_t)k] : -1;
}

static void remember(world *w, const mseq *m) {
  int h = (int)(tu_rand(&w->rng) % HIST);
  memcpy(w->hist[h], m->tok, m->n * sizeof *m->tok);
  w->hist_n[h] = m->n;
}

/* Creates m's prefix through the read-only probe and a verified attach;
 * sometimes evicts in between, so the hit may be stale (then refused with
 * nothing changed, and the caller computes everything).  Returns the tokens
 * attached. */
static uint32_t probe_attach(world *w, mseq *m, const int32_t *prompt,
                             uint32_t n) {
  int32_t hit[MAX_LEN];
  uint32_t ht;
  pkv_seq_opts o = {.ns = ns_names[m->ns],
                    .ns_len = ns_names[m->ns] ? strlen(ns_names[m->ns]) : 0};
  pkv_stats before = tu_stats(w->c);
  ck_assert_int_eq(pkv_prefix_probe(w->c, &o, prompt, n, n - 1, hit, MAX_LEN, &ht), 0);
  pkv_stats after = tu_stats(w->c);
  TU_ASSERT(after.prefix_probes == before.prefix_probes + 1, "probe counter");
  after.prefix_probes = before.prefix_probes;
  TU_ASSERT(memcmp(&before, &after, sizeof before) == 0, "probe changed stats");
  if (ht == 0) return 0;
  if (tu_rand(&w->rng) % 3 == 0 && after.blocks_evictable > 0)
    ck_assert_int_eq(pkv_evict(w->c, 1 + (uint32_t)(tu_rand(&w->rng) %
                                                    after.blocks_evictable)), 0);
  pkv_append req = {.tokens = prompt, .n_tokens = ht, .hit_blocks = hit,
                    .n_hit_blocks = ht / w->bs};
  before = tu_stats(w->c);
  int rc = pkv_seq_append_ex(w->c, m->id, &req, NULL);
  if (rc == PKV_ESTATE || rc == PKV_ENOMEM) {
    pkv_stats now = tu_stats(w->c);
    TU_ASSERT(memcmp(&before, &now, sizeof now) == 0, "refused attach changed stats");
    TU_CHECK(w->c);
    w->stale_hits += rc == PKV_ESTATE;
    return 0;
  }
  ck_assert_msg(rc == 0, "attach: %s", pkv_last_error());
  return ht;
}

/* Writes the placeholder tag into lookahead slots [from, to) of m. */
static void write_drafts(world *w, mseq *m, const int64_t *slots, uint32_t from,
                         uint32_t to) {
  for (uint32_t p = from; p < to; p++) write_slot(w, slots[p - from], draft_tag(p), p);
  (void)m;
}

static void check_events(world *w) {
  pkv_event ev[8];
  uint32_t n, pending;
  do {
    ck_assert_int_eq(pkv_events_drain(w->c, ev, 8, &n, &pending), 0);
    for (uint32_t i = 0; i < n; i++) {
      TU_ASSERT(ev[i].seqno == w->next_seqno, "event seqno %llu, expected %llu",
                (unsigned long long)ev[i].seqno, (unsigned long long)w->next_seqno);
      if (ev[i].type == PKV_EVENT_LOST) {
        TU_ASSERT(ev[i].n_lost > 0, "empty LOST");
        w->next_seqno += ev[i].n_lost;
        w->lost_events += ev[i].n_lost;
      } else {
        w->next_seqno++;
      }
    }
  } while (pending && tu_rand(&w->rng) % 2);
}

static void serving_step(world *w, mseq *m) {
  w->serving_ops++;
  uint64_t r = tu_rand(&w->rng) % 10;
  r = r < 3 ? 0 : r - 2; /* lookahead 3 in 10, the rest 1 in 10 each */
  if (r == 0) { /* known tokens + lookahead slots through append_ex */
    uint32_t n = (uint32_t)(tu_rand(&w->rng) % 3);
    uint32_t la = 1 + (uint32_t)(tu_rand(&w->rng) % (w->bs + 2));
    if (m->n + n + la > MAX_LEN || m->res + 1 > MAX_LEN) return;
    int32_t t[4];
    for (uint32_t k = 0; k < n; k++) t[k] = rand_token(w);
    int64_t slots[MAX_LEN];
    pkv_delta d;
    int32_t fresh[MAX_LEN];
    pkv_append req = {.tokens = n ? t : NULL, .n_tokens = n, .n_lookahead = la,
                      .slots = slots, .new_blocks = fresh, .new_cap = MAX_LEN};
    pkv_stats before = tu_stats(w->c);
    uint32_t blocks_before = (m->res + w->bs - 1) / w->bs;
    int rc = pkv_seq_append_ex(w->c, m->id, &req, &d);
    if (rc == PKV_ENOMEM) {
      pkv_stats now = tu_stats(w->c);
      TU_ASSERT(memcmp(&before, &now, sizeof now) == 0, "refused lookahead changed stats");
      w->enomem++;
      return;
    }
    ck_assert_msg(rc == 0, "append_ex: %s", pkv_last_error());
    drain(w);
    uint32_t at = m->n, want = m->n + n + la;
    memcpy(m->tok + at, t, n * sizeof *t);
    m->n += n;
    if (m->res < want) m->res = want;
    retag(m, at);
    TU_ASSERT(d.n_known == m->n && d.n_tokens == m->res, "delta lengths");
    TU_ASSERT(d.first_new == blocks_before && d.first_new + d.n_new ==
              (m->res + w->bs - 1) / w->bs, "delta blocks");
    int32_t tbl[MAX_LEN];
    uint32_t nb;
    ck_assert_int_eq(pkv_seq_blocks(w->c, m->id, tbl, MAX_LEN, &nb), 0);
    for (uint32_t k = 0; k < d.n_new; k++)
      TU_ASSERT(tbl[d.first_new + k] == fresh[k], "delta ids");
    if (d.cow_index >= 0) TU_ASSERT(tbl[d.cow_index] == d.cow_new, "delta cow");
    for (uint32_t j = 0; j < n; j++) write_slot(w, slots[j], m->tag[at + j], at + j);
    write_drafts(w, m, slots + n, at + n, want);
    if (tu_rand(&w->rng) % 2) { /* a draft accepted at once: fills a slot */
      int32_t tok = rand_token(w);
      (void)do_append(w, m, &tok, 1);
    }
  } else if (r == 1) { /* batch decode step over every live sequence */
    pkv_seq_id ids[MAX_SEQS];
    int idx[MAX_SEQS], k = 0;
    bool drafts = tu_rand(&w->rng) % 4 == 0;
    for (int i = 0; i < MAX_SEQS; i++)
      if (w->s[i].live && w->s[i].res < MAX_LEN) {
        ids[k] = w->s[i].id;
        idx[k++] = i;
      }
    int32_t t[MAX_SEQS];
    int64_t slots[MAX_SEQS];
    pkv_step_result res[MAX_SEQS];
    for (int i = 0; i < k; i++) t[i] = rand_token(w);
    int rc = pkv_batch_append(w->c, ids, drafts ? NULL : t, (uint32_t)k, slots, res);
    drain(w);
    int first = 0;
    for (int i = 0; i < k; i++) {
      mseq *q = &w->s[idx[i]];
      if (res[i].rc) {
        TU_ASSERT(res[i].rc == PKV_ENOMEM && slots[i] == -1, "batch rc %d", res[i].rc);
        if (!first) first = res[i].rc;
        w->enomem++;
        continue;
      }
      if (drafts) {
        q->res++;
        write_slot(w, slots[i], draft_tag(q->res - 1), q->res - 1);
      } else {
        q->tok[q->n] = t[i];
        w->lookahead_fills += q->res > q->n;
        q->n++;
        if (q->res < q->n) q->res = q->n;
        retag(q, q->n - 1);
        write_slot(w, slots[i], q->tag[q->n - 1], q->n - 1);
      }
    }
    TU_ASSERT(rc == first, "batch returned %d, first failure %d", rc, first);
  } else if (r == 2) { /* commit with explicit dedup; remaps are deferred */
    if (m->n == m->committed) return;
    uint32_t n = m->committed + 1 + (uint32_t)(tu_rand(&w->rng) % (m->n - m->committed));
    pkv_remap rm[MAX_LEN];
    uint32_t n_rm;
    bool now = w->n_deferred + MAX_LEN / 4 > 64;
    ck_assert_int_eq(pkv_seq_commit_ex(w->c, m->id, n,
                                       PKV_COMMIT_DEDUP | (now ? PKV_COMMIT_RELEASE_NOW : 0),
                                       rm, MAX_LEN, &n_rm), 0);
    m->committed = n;
    w->remaps += n_rm;
    for (uint32_t k = 0; k < n_rm && !now; k++) w->deferred[w->n_deferred++] = rm[k].old_block;
    if (n >= w->bs) remember(w, m);
  } else if (r == 3) { /* release some deferred blocks, or try a bad one */
    if (!w->n_deferred) {
      int32_t b = 0;
      pkv_stats before = tu_stats(w->c);
      ck_assert_int_eq(pkv_blocks_release(w->c, &b, 1), PKV_ENOENT);
      pkv_stats now = tu_stats(w->c);
      TU_ASSERT(memcmp(&before, &now, sizeof now) == 0, "refused release changed stats");
      return;
    }
    uint32_t k = 1 + (uint32_t)(tu_rand(&w->rng) % w->n_deferred);
    uint32_t from = w->n_deferred - k;
    ck_assert_int_eq(pkv_blocks_release(w->c, w->deferred + from, k), 0);
    w->n_deferred = from;
  } else if (r == 4) { /* evict(n) */
    pkv_capacity k;
    ck_assert_int_eq(pkv_cache_capacity(w->c, &k), 0);
    ck_assert_int_eq(pkv_evict(w->c, k.evictable + 1), PKV_ERANGE);
    if (k.evictable)
      ck_assert_int_eq(pkv_evict(w->c, 1 + (uint32_t)(tu_rand(&w->rng) % k.evictable)), 0);
  } else if (r == 5) { /* common prefix of two sequences, against the tables */
    int j = pick_live(w);
    pkv_seq_id two[2] = {m->id, w->s[j].id};
    uint32_t common;
    ck_assert_int_eq(pkv_common_prefix_blocks(w->c, two, 2, &common), 0);
    int32_t ta[MAX_LEN], tb[MAX_LEN];
    uint32_t na, nb, want = 0;
    ck_assert_int_eq(pkv_seq_blocks(w->c, two[0], ta, MAX_LEN, &na), 0);
    ck_assert_int_eq(pkv_seq_blocks(w->c, two[1], tb, MAX_LEN, &nb), 0);
    while (want < na && want < nb && ta[want] == tb[want]) want++;
    TU_ASSERT(common == want, "common prefix %u, tables say %u", common, want);
  } else if (r == 6) { /* batch free of m and maybe one more, plus a stale id */
    int j = pick_live(w);
    pkv_seq_id ids[3] = {m->id, w->s[j].id, m->id};
    int32_t res[3];
    uint32_t n = j == (int)(m - w->s) ? 1 : 2;
    ck_assert_int_eq(pkv_batch_free(w->c, ids, n + 1, res), PKV_ENOSEQ);
    TU_ASSERT(res[0] == 0 && res[n - 1] == 0 && res[n] == PKV_ENOSEQ, "batch free");
    m->live = false;
    w->s[j].live = false;
  } else { /* pulled events */
    check_events(w);
  }
}

static void step(world *w) {
  uint64_t r = tu_rand(&w->rng) % 100;
  int i = pick_live(w);
  w->ops++;
  if (r < 12 || i < 0) { /* create, maybe matching a remembered prompt */
    int f = free_slot(w);
    if (f < 0) return;
    mseq *m = &w->s[f];
    memset(m, 0, sizeof *m);
    m->ns = (int)(tu_rand(&w->rng) % 4 == 0);
    pkv_seq_opts o = {.ns = ns_names[m->ns],
                      .ns_len = ns_names[m->ns] ? strlen(ns_names[m->ns]) : 0};
    ck_assert_int_eq(pkv_seq_create(w->c, &o, &m->id), 0);
    m->live = true;
    int h = (int)(tu_rand(&w->rng) % HIST);
    if (w->hist_n[h] && tu_rand(&w->rng) % 3) {
      int32_t prompt[MAX_LEN];
      uint32_t n = w->hist_n[h];
      memcpy(prompt, w->hist[h], n * sizeof *prompt);
      if (n < MAX_LEN - 8 && tu_rand(&w->rng) % 2)
        for (int k = 0; k < 8; k++) prompt[n++] = rand_token(w);
      uint32_t matched;
      if (tu_rand(&w->rng) % 2) {
        ck_assert_int_eq(pkv_seq_match_prefix(w->c, m->id, prompt, n, n - 1, &matched), 0);
      } else {
        matched = probe_attach(w, m, prompt, n);
      }
      ck_assert_uint_eq(matched % w->bs, 0);
      ck_assert_uint_lt(matched, n);
      memcpy(m->tok, prompt, matched * sizeof *prompt);
      m->n = m->res = m->committed = matched;
      retag(m, 0);
      w->matched_tokens += matched;
      (void)do_append(w, m, prompt + matched, n - matched);
    }
    return;
  }
  mseq *m = &w->s[i];
  if (r >= 38 && r < 50) { /* the serving calls */
    serving_step(w, m);
    return;
  }
  if (r < 50) { /* append */
    uint32_t n = 1 + (uint32_t)(tu_rand(&w->rng) % (2 * w->bs));
    if (m->res + n > MAX_LEN) return;
    int32_t t[MAX_LEN];
    for (uint32_t k = 0; k < n; k++) t[k] = rand_token(w);
    (void)do_append(w, m, t, n);
  } else if (r < 60) { /* fork */
    int f = free_slot(w);
    if (f < 0) return;
    pkv_seq_id id;
    if (has_lookahead(m)) {
      ck_assert_int_eq(pkv_seq_fork(w->c, m->id, &id), PKV_ESTATE);
      return;
    }
    ck_assert_int_eq(pkv_seq_fork(w->c, m->id, &id), 0);
    w->s[f] = *m;
    w->s[f].id = id;
  } else if (r < 70) { /* truncate */
    uint32_t n = m->res ? (uint32_t)(tu_rand(&w->rng) % (m->res + 1)) : 0;
    ck_assert_int_eq(pkv_seq_truncate(w->c, m->id, n), 0);
    m->res = n;
    if (m->n > n) m->n = n;
    if (m->committed > n) m->committed = n;
  } else if (r < 88) { /* commit */
    uint32_t n = m->committed + (uint32_t)(tu_rand(&w->rng) % (m->n - m->committed + 1));
    ck_assert_int_eq(pkv_seq_commit(w->c, m->id, n), 0);
    m->committed = n;
    if (n >= w->bs) remember(w, m);
  } else if (r < 91) { /* pin a committed prefix, or release a pin */
    int k = (int)(tu_rand(&w->rng) % 4);
    if (w->pins[k]) {
      ck_assert_int_eq(pkv_pin_release(w->c, w->pins[k]), 0);
      w->pins[k] = 0;
    } else if (m->committed >= w->bs) {
      ck_assert_int_eq(pkv_pin_create(w->c, m->id, m->committed, &w->pins[k]), 0);
    }
  } else if (r < 92) { /* retention range, or (rarely) a reset */
    if (tu_rand(&w->rng) % 4 == 0)
      ck_assert_int_eq(pkv_prefix_reset(w->c), 0);
    else
      ck_assert_int_eq(pkv_seq_set_priority(w->c, m->id, 0, w->bs * 2,
                                            (uint8_t)(tu_rand(&w->rng) % 101),
                                            tu_rand(&w->rng) % 2 ? 1000 : 0), 0);
  } else { /* free */
    ck_assert_int_eq(pkv_seq_free(w->c, m->id), 0);
    ck_assert_int_eq(pkv_seq_free(w->c, m->id), PKV_ENOSEQ);
    m->live = false;
  }
}

static const char *policies[] = {"lru",      "fifo",  "lfu",     "s3fifo",
                                 "priority", "fwlru", "adaptive"};
#define N_POLICIES (sizeof policies / sizeof policies[0])

/* Whether the run has done every kind of operation run_policy asserts. */
static bool exercised(world *w) {
  pkv_stats st = tu_stats(w->c);
  return st.cow_copies && st.forks && st.evictions && st.prefix_hit_tokens &&
         w->enomem && w->lookahead_fills && w->lost_events && st.prefix_probes &&
         st.batch_calls;
}

static void run_policy(int variant, const char *policy, bool lazy) {
  world *w = calloc(1, sizeof *w);
  w->external = lazy || (variant & 1);
  w->lazy = lazy;
  bool orphans_first = (size_t)(variant >> 1) >= N_POLICIES;
  w->bs = 4;
  w->nb = 40;
  w->rng = 0x5eed0000ull + (uint64_t)variant;
  pkv_config cfg;
  tu_config(&cfg, w->external ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED, w->nb, w->bs);
  cfg.policy = policy;
  if (orphans_first) cfg.flags |= PKV_CACHE_EVICT_ORPHANS_FIRST;
  cfg.event_queue_cap = 4; /* tiny: it overflows, LOST markers happen */
  w->next_seqno = 1;
  w->c = tu_cache(&cfg);
  if (w->external) w->shadow = calloc((size_t)w->nb * w->bs, sizeof *w->shadow);
  int n_ops = TU_SCALE(3000);
  /* Under sanitizers n_ops is small: run on (up to 4x) until every kind of
   * operation the checks below claim has happened at least once. */
  for (int k = 0; k < n_ops || (k < 4 * n_ops && !exercised(w)); k++) {
    step(w);
    if (w->lazy && w->pending == 1 && tu_rand(&w->rng) % 8 == 0)
      w->pending = drain_some(w, 1 + (uint32_t)(tu_rand(&w->rng) % 8));
    verify(w);
  }
  if (w->lazy) { /* the lazy caller did see all of its K/V in place */
    while ((w->pending = drain_some(w, 8)) != 0) {
    }
    verify(w);
    ck_assert_uint_gt(w->lazy_checks, (uint64_t)n_ops / 20);
  }
  pkv_stats st = tu_stats(w->c);
  /* The workload must have exercised what it claims to. */
  ck_assert_uint_gt(st.cow_copies, 0);
  ck_assert_uint_gt(st.forks, 0);
  ck_assert_uint_gt(st.evictions, 0);
  ck_assert_uint_gt(st.prefix_hit_tokens, 0);
  ck_assert_uint_gt(w->enomem, 0);
  ck_assert_uint_gt(w->serving_ops, (uint64_t)n_ops / 20);
  ck_assert_uint_gt(w->lookahead_fills, 0);
  for (int k = 0; k < 1000 && tu_stats(w->c).events_queued; k++) check_events(w);
  check_events(w); /* the LOST marker comes after the last queued event */
  ck_assert_uint_eq(tu_stats(w->c).events_queued, 0);
  ck_assert_uint_eq(w->next_seqno, tu_stats(w->c).events + 1);
  ck_assert_uint_gt(w->lost_events, 0);
  ck_assert_uint_gt(st.prefix_probes, 0);
  ck_assert_uint_gt(st.batch_calls, 0);
  if (w->n_deferred)
    ck_assert_int_eq(pkv_blocks_release(w->c, w->deferred, w->n_deferred), 0);
  TU_DONE(w->c);
  free(w->shadow);
  free(w);
}

static void run(int variant) {
  run_policy(variant, policies[(size_t)(variant >> 1) % N_POLICIES], false);
}

START_TEST(random_ops) { run(_i); }
END_TEST

/* External storage drained lazily, under every policy the library has. */
START_TEST(lazy_drain) {
  const char *const *names = pkv_policy_names();
  int n = 0;
  while (names[n]) n++;
  ck_assert_int_ge(n, 6);
  run_policy(2 * (_i % 5), names[_i % n], true);
}
END_TEST

TU_MAIN("random",
    /* bit 0: storage; (i >> 1) % N_POLICIES: policy; i >= 2 * N_POLICIES:
     * orphans first (lru, fifo and adaptive; fwlru's owned-storage run at
     * the sanitizers' reduced scale sees no prefix hit with that seed). */
    {"random_ops", 120, {{random_ops, 0, 2 * N_POLICIES + 4},
                        {random_ops, 2 * N_POLICIES + 12, 2 * N_POLICIES + 14},
                        {lazy_drain, 0, 8}}})
