/*
 * fuzz_ops.c — libFuzzer harness: a byte string becomes a cache
 * configuration and a sequence of manager operations (valid and invalid),
 * each run against the library and against a plain model.
 *
 *   input = [config bytes][op][args]...[op][args]
 *
 * The model keeps, per sequence, its token ids, its committed length and its
 * namespace.  After every operation the harness checks:
 *   - the return code is the one the model predicts (ENOSEQ for a freed or
 *     stale handle, ERANGE for truncation/commit past the end, ENOMEM exactly
 *     when the blocks needed exceed free + evictable, ...);
 *   - a failed call changed nothing (sequence info and pool gauges equal);
 *   - pkv_check() finds no violated invariant, and the gauges add up;
 *   - the data: every appended token's K/V is written with a pattern that is
 *     a function of (token id, position, layer, K|V, head, element), so a
 *     shared block, a prefix hit or a dedup'd block must read back exactly
 *     the pattern of the sequence that holds it.  In external mode the
 *     harness keeps the K/V itself and executes the drained copy queue, so
 *     the queue is checked too.
 *   - a prefix match attaches at least the blocks a live sequence in the same
 *     namespace committed with the same tokens (they cannot be evicted).
 *   - the serving calls (op bytes 209, 219, ..., 249): a read-only probe
 *     changes nothing and its hit attaches (pkv_seq_append_ex) unless an
 *     eviction made it stale, which must be refused with nothing changed;
 *     lookahead slots reserved, partly filled and dropped; batch append
 *     (per-sequence results, each failure ENOMEM with nothing changed) and
 *     batch free; commit with dedup (deferred references released later);
 *     evict(n); capacity against the stats; the common prefix against the
 *     tables; and the pulled event queue (config bit c0 & 0x40), whose
 *     seqnos must stay gap-free through LOST markers.
 *   - the sequence operations (op bytes a % 8 == 7 of the serving calls):
 *     pkv_seq_remove_range (a context shift: tokens and K/V move down and
 *     keep the pattern of the position they were written at; ENOMEM exactly
 *     when the rebuilt blocks exceed free + evictable; the shifted blocks
 *     never enter the prefix index), pkv_seq_keep (every other sequence
 *     gone), and the KV cache groups of one request (pkv_groups_probe
 *     read-only and equal to pkv_groups_match; pkv_groups_append_ex with a
 *     probed hit and lookahead slots, all groups or none; commit releasing
 *     the windows' blocks; first_pos; the pool back as it was after free).
 *
 * Any mismatch aborts with a message (libFuzzer records the input).  The
 * body is also linked into the Check suite (tests/check_fuzz_replay.c) to
 * replay the seed corpus and every input that once found a bug.
 */
#include "pagedkv/pagedkv.h"
#include "pagedkv/groups.h"
#include "internal.h"
#include "fuzz_common.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FZ_MAX_SEQS 12
#define FZ_MAX_TOK 384
#define FZ_MAX_STALE 8
#define FZ_MAX_PINS 6

typedef pkv_fuzz_in fz_reader;
static uint8_t rd8(fz_reader *r) { return pkv_fuzz_byte(r); }

typedef struct fz_seq {
  pkv_seq_id id;
  bool live;
  uint8_t ns; /* index into fz_ns */
  uint32_t n, committed;
  bool shifted;        /* remove_range ran: blocks from shifted_at on are */
  uint32_t shifted_at; /* never indexed (a token count, block-aligned) */
  int32_t tok[FZ_MAX_TOK];
  uint32_t dpos[FZ_MAX_TOK]; /* the K/V of tok[i] was written at i + dpos[i] */
} fz_seq;

typedef struct fz_world {
  pkv_cache *c;
  pkv_config cfg;
  pkv_kv_layout L;
  uint32_t bs, nb;
  bool external, no_prefix;
  fz_seq s[FZ_MAX_SEQS];
  pkv_seq_id stale[FZ_MAX_STALE];
  uint32_t n_stale;
  pkv_pin_id pins[FZ_MAX_PINS];
  uint32_t n_pins;
  pkv_pin_id stale_pin;
  uint8_t *ext;      /* external mode: the caller-side K/V, 2*n_layers regions */
  size_t ext_region;
  uint64_t op_no;
  int32_t deferred[64]; /* blocks a dedup remap left for pkv_blocks_release */
  uint32_t n_deferred;
  uint64_t next_seqno;  /* pulled events: next seqno expected */
} fz_world;

static const struct {
  const char *bytes;
  size_t len;
  uint64_t adapter;
} fz_ns[4] = {{NULL, 0, 0}, {"tenant-a", 8, 0}, {"tenant-b", 8, 0},
              {"tenant-a", 8, 7}};

__attribute__((noreturn, format(printf, 2, 3))) static void
fz_fail(const fz_world *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fuzz_ops: op %llu: ", (unsigned long long)(w ? w->op_no : 0));
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " [last error: %s]\n", pkv_last_error());
  va_end(ap);
  abort();
}

#define FZ_EXPECT(w, rc, want, what)                                         \
  do {                                                                       \
    int rc_ = (rc), want_ = (want);                                          \
    if (rc_ != want_)                                                        \
      fz_fail(w, "%s: got %s, want %s", what, pkv_err_name(rc_),             \
              pkv_err_name(want_));                                          \
  } while (0)

/* ------------------------------------------------ data pattern */

static uint32_t fz_mix(uint32_t x) { /* lowbias32 */
  x = (x ^ (x >> 16)) * 0x7feb352du;
  x = (x ^ (x >> 15)) * 0x846ca68bu;
  return x ^ (x >> 16);
}

/* The 32 bits stored at element d of head h of (layer, kv) for the token id
 * tok at position pos; elements are raw bits (4 bytes: f32 storage). */
static uint32_t fz_pattern(int32_t tok, uint32_t pos, uint32_t region,
                           uint32_t h, uint32_t d) {
  return fz_mix((uint32_t)tok * 0x9e3779b1u ^ fz_mix(pos * 8191u + region) ^
                (h << 24 | d << 16));
}

static uint8_t *fz_region(fz_world *w, uint32_t region) {
  if (w->external) return w->ext + (size_t)region * w->ext_region;
  void *k, *v;
  int rc = pkv_cache_kv(w->c, region / 2, &k, &v);
  FZ_EXPECT(w, rc, 0, "cache_kv");
  return (uint8_t *)(region & 1 ? v : k);
}

static uint32_t *fz_elem(fz_world *w, uint32_t region, int64_t slot,
                         uint32_t h, uint32_t d) {
  int64_t b = slot / w->bs, s = slot % w->bs;
  return (uint32_t *)(fz_region(w, region) + (size_t)b * w->L.block_stride +
                      h * w->L.head_stride + (size_t)s * w->L.slot_stride +
                      d * w->L.elem_size);
}

/* External mode: execute the queued copies, in order, as a caller must. */
static void fz_drain(fz_world *w, uint32_t cap) {
  if (!w->external) return;
  pkv_copy q[4];
  if (cap > 4) cap = 4;
  for (;;) {
    uint32_t n = 0, pending = 0;
    FZ_EXPECT(w, pkv_pool_drain_copies(w->c, q, cap, &n, &pending), 0, "drain");
    for (uint32_t i = 0; i < n; i++) {
      if (q[i].src_block < 0 || (uint32_t)q[i].src_block >= w->nb ||
          q[i].dst_block < 0 || (uint32_t)q[i].dst_block >= w->nb ||
          q[i].n_slots == 0 || q[i].src_slot + q[i].n_slots > w->bs ||
          q[i].dst_slot + q[i].n_slots > w->bs)
        fz_fail(w, "bad copy %d:%u -> %d:%u (%u slots)", q[i].src_block,
                q[i].src_slot, q[i].dst_block, q[i].dst_slot, q[i].n_slots);
      for (uint32_t r = 0; r < 2 * w->cfg.n_layers; r++)
        for (uint32_t h = 0; h < w->cfg.n_kv_heads; h++)
          memmove(fz_elem(w, r, (int64_t)q[i].dst_block * w->bs + q[i].dst_slot, h, 0),
                  fz_elem(w, r, (int64_t)q[i].src_block * w->bs + q[i].src_slot, h, 0),
                  q[i].n_slots * w->L.slot_stride);
    }
    if (n == 0 || pending == 0) break;
    if (n > cap) fz_fail(w, "drain returned %u > cap %u", n, cap);
  }
}

static void fz_write(fz_world *w, fz_seq *s, uint32_t pos0, uint32_t n,
                     const int64_t *slots) {
  fz_drain(w, 4); /* a copy into these blocks must land before our writes */
  for (uint32_t i = 0; i < n; i++) s->dpos[pos0 + i] = 0;
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t r = 0; r < 2 * w->cfg.n_layers; r++)
      for (uint32_t h = 0; h < w->cfg.n_kv_heads; h++)
        for (uint32_t d = 0; d < w->cfg.head_dim; d++)
          *fz_elem(w, r, slots[i], h, d) =
              fz_pattern(s->tok[pos0 + i], pos0 + i, r, h, d);
}

/* Page table, info and every K/V element of s against the model. */
static void fz_verify_seq(fz_world *w, const fz_seq *s) {
  pkv_seq_info info;
  FZ_EXPECT(w, pkv_seq_info_get(w->c, s->id, &info), 0, "info");
  if (info.n_tokens != s->n || info.n_committed != s->committed ||
      info.n_blocks != (s->n + w->bs - 1) / w->bs)
    fz_fail(w, "seq %#llx: info %u/%u/%u, model %u/%u",
            (unsigned long long)s->id, info.n_tokens, info.n_committed,
            info.n_blocks, s->n, s->committed);
  int32_t blocks[FZ_MAX_TOK];
  uint32_t nbk = 0;
  FZ_EXPECT(w, pkv_seq_blocks(w->c, s->id, blocks, FZ_MAX_TOK, &nbk), 0,
            "seq_blocks");
  static int64_t slots[FZ_MAX_TOK];
  FZ_EXPECT(w, pkv_slot_mapping(w->c, s->id, 0, s->n, slots), 0,
            "slot_mapping");
  fz_drain(w, 4);
  for (uint32_t i = 0; i < s->n; i++) {
    int64_t want = (int64_t)blocks[i / w->bs] * w->bs + i % w->bs;
    if (slots[i] != want)
      fz_fail(w, "token %u: slot %lld, page table says %lld", i,
              (long long)slots[i], (long long)want);
    if (blocks[i / w->bs] < 0 || (uint32_t)blocks[i / w->bs] >= w->nb)
      fz_fail(w, "block %d out of range", blocks[i / w->bs]);
    for (uint32_t r = 0; r < 2 * w->cfg.n_layers; r++)
      for (uint32_t h = 0; h < w->cfg.n_kv_heads; h++)
        for (uint32_t d = 0; d < w->cfg.head_dim; d++) {
          uint32_t got = *fz_elem(w, r, slots[i], h, d);
          uint32_t exp = fz_pattern(s->tok[i], i + s->dpos[i], r, h, d);
          if (got != exp)
            fz_fail(w, "seq %#llx token %u (id %d) region %u head %u elem %u: "
                    "K/V %08x, want %08x (block %d)",
                    (unsigned long long)s->id, i, s->tok[i], r, h, d, got, exp,
                    blocks[i / w->bs]);
        }
  }
}

static void fz_snapshot(fz_world *w, pkv_stats *st) {
  FZ_EXPECT(w, pkv_stats_get(w->c, st), 0, "stats");
}

static void fz_same_pool(fz_world *w, const pkv_stats *a, const char *what) {
  pkv_stats b;
  fz_snapshot(w, &b);
  if (a->blocks_free != b.blocks_free || a->blocks_used != b.blocks_used ||
      a->blocks_cached != b.blocks_cached ||
      a->blocks_evictable != b.blocks_evictable || a->n_seqs != b.n_seqs ||
      a->tokens != b.tokens || a->blocks_pinned != b.blocks_pinned)
    fz_fail(w, "%s failed but changed the pool: free %u->%u used %u->%u "
            "cached %u->%u evictable %u->%u seqs %u->%u",
            what, a->blocks_free, b.blocks_free, a->blocks_used, b.blocks_used,
            a->blocks_cached, b.blocks_cached, a->blocks_evictable,
            b.blocks_evictable, a->n_seqs, b.n_seqs);
}

static void fz_check(fz_world *w) {
  char msg[256];
  if (pkv_check(w->c, msg, sizeof msg) != 0) fz_fail(w, "pkv_check: %s", msg);
  pkv_stats st;
  fz_snapshot(w, &st);
  if ((uint64_t)st.blocks_free + st.blocks_used + st.blocks_evictable !=
      st.num_blocks)
    fz_fail(w, "gauges: free %u + used %u + evictable %u != %u",
            st.blocks_free, st.blocks_used, st.blocks_evictable, st.num_blocks);
  if (st.blocks_evictable > st.blocks_cached)
    fz_fail(w, "evictable %u > cached %u", st.blocks_evictable,
            st.blocks_cached);
  uint32_t live = 0;
  uint64_t toks = 0;
  for (uint32_t i = 0; i < FZ_MAX_SEQS; i++)
    if (w->s[i].live) {
      live++;
      toks += w->s[i].n;
    }
  if (st.n_seqs != live || st.tokens != toks)
    fz_fail(w, "stats: %u seqs / %llu tokens, model %u / %llu", st.n_seqs,
            (unsigned long long)st.tokens, live, (unsigned long long)toks);
}

/* ------------------------------------------------ handles */

static fz_seq *fz_live(fz_world *w, uint8_t pick) {
  for (uint32_t k = 0; k < FZ_MAX_SEQS; k++) {
    fz_seq *s = &w->s[(pick + k) % FZ_MAX_SEQS];
    if (s->live) return s;
  }
  return NULL;
}

static fz_seq *fz_empty_slot(fz_world *w) {
  for (uint32_t k = 0; k < FZ_MAX_SEQS; k++)
    if (!w->s[k].live) return &w->s[k];
  return NULL;
}

/* A handle the library must refuse: stale (freed), never issued, or 0. */
static pkv_seq_id fz_bad_handle(fz_world *w, uint8_t pick) {
  if (w->n_stale && pick % 3 != 0) return w->stale[pick % w->n_stale];
  return pick % 2 ? PKV_SEQ_NONE : ((uint64_t)1 << 32 | 0xfffffffu);
}

static void fz_forget(fz_world *w, fz_seq *s) {
  s->live = false;
  if (w->n_stale < FZ_MAX_STALE)
    w->stale[w->n_stale++] = s->id;
  else
    w->stale[s->id % FZ_MAX_STALE] = s->id;
}

/* ------------------------------------------------ operations */

static void fz_gen_tokens(fz_world *w, fz_reader *r, int32_t *out, uint32_t n,
                          uint32_t pos0, const fz_seq *self) {
  uint8_t mode = rd8(r);
  const fz_seq *src = fz_live(w, mode >> 2);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t pos = pos0 + i;
    if ((mode & 3) == 0 && src && src != self && pos < src->n)
      out[i] = src->tok[pos]; /* follow another prompt: prefix hits */
    else if ((mode & 3) == 1)
      out[i] = (int32_t)(pos % 5); /* a shared "system prompt" */
    else
      out[i] = (int32_t)(rd8(r) & 7);
  }
}

/* Blocks an append of n tokens to s needs: new blocks plus one for a
 * copy-on-write of a shared/cached partial tail. */
static uint32_t fz_append_need(fz_world *w, const fz_seq *s, uint32_t n) {
  uint32_t room = ((s->n + w->bs - 1) / w->bs) * w->bs - s->n;
  uint32_t need = n > room ? (n - room + w->bs - 1) / w->bs : 0;
  if (room > 0) {
    int rc = pkv__seq_check_writable(w->c, s->id, s->n - 1, 1);
    if (rc != 0 && rc != PKV_ESTATE)
      fz_fail(w, "check_writable of the tail: %s", pkv_err_name(rc));
    if (rc == PKV_ESTATE) need++;
  }
  return need;
}

static void fz_append(fz_world *w, fz_seq *s, const int32_t *tokens,
                      uint32_t n) {
  pkv_stats before;
  fz_snapshot(w, &before);
  uint32_t need = fz_append_need(w, s, n);
  uint32_t avail = before.blocks_free + before.blocks_evictable;
  static int64_t slots[FZ_MAX_TOK];
  int rc = pkv_seq_append(w->c, s->id, tokens, n, slots);
  if (need > avail) {
    FZ_EXPECT(w, rc, PKV_ENOMEM, "append beyond the pool");
    fz_same_pool(w, &before, "append");
    return;
  }
  FZ_EXPECT(w, rc, 0, "append");
  /* Every block the new tokens land in must be writable by us alone. */
  FZ_EXPECT(w, pkv__seq_check_writable(w->c, s->id, s->n, n), 0,
            "new slots writable");
  uint32_t pos0 = s->n;
  memcpy(s->tok + pos0, tokens, n * sizeof *tokens);
  s->n += n;
  int64_t check[FZ_MAX_TOK];
  FZ_EXPECT(w, pkv_slot_mapping(w->c, s->id, pos0, s->n, check), 0, "slots");
  if (memcmp(check, slots, n * sizeof *slots) != 0)
    fz_fail(w, "append slots differ from slot_mapping");
  fz_write(w, s, pos0, n, slots);
}

/* Creates an empty sequence in namespace ns into model slot s. */
static pkv_seq_id fz_create_in(fz_world *w, fz_seq *s, const pkv_seq_opts *o,
                               uint8_t ns) {
  pkv_seq_id id;
  FZ_EXPECT(w, pkv_seq_create(w->c, o, &id), 0, "create");
  memset(s, 0, sizeof *s);
  s->id = id;
  s->live = true;
  s->ns = ns;
  return id;
}

static void op_create(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r);
  fz_seq *s = fz_empty_slot(w);
  pkv_seq_opts o = {0};
  uint8_t ns = a & 3;
  o.ns = fz_ns[ns].bytes;
  o.ns_len = fz_ns[ns].len;
  o.adapter_id = fz_ns[ns].adapter;
  pkv_seq_id id = 0;
  if ((a & 0x30) == 0x30) { /* invalid options */
    pkv_stats before;
    fz_snapshot(w, &before);
    pkv_seq_opts bad = o;
    if (a & 0x40) {
      bad.ns = NULL;
      bad.ns_len = 3;
    } else {
      bad.priority = 101;
    }
    FZ_EXPECT(w, pkv_seq_create(w->c, &bad, &id), PKV_EINVAL, "bad opts");
    FZ_EXPECT(w, pkv_seq_create(w->c, &o, NULL), PKV_EINVAL, "NULL out");
    fz_same_pool(w, &before, "seq_create");
    return;
  }
  if (!s) return;
  FZ_EXPECT(w, pkv_seq_create(w->c, ns ? &o : NULL, &id), 0, "create");
  if (id == PKV_SEQ_NONE) fz_fail(w, "create returned handle 0");
  for (uint32_t i = 0; i < w->n_stale; i++)
    if (w->stale[i] == id) fz_fail(w, "create reused a stale handle");
  memset(s, 0, sizeof *s);
  s->id = id;
  s->live = true;
  s->ns = ns;
}

static void op_free(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r);
  fz_seq *s = fz_live(w, a >> 1);
  if (!s || (a & 1)) {
    pkv_stats before;
    fz_snapshot(w, &before);
    FZ_EXPECT(w, pkv_seq_free(w->c, fz_bad_handle(w, a)), PKV_ENOSEQ,
              "free bad handle");
    fz_same_pool(w, &before, "free");
    return;
  }
  FZ_EXPECT(w, pkv_seq_free(w->c, s->id), 0, "free");
  fz_forget(w, s);
}

static void op_append(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), len = rd8(r);
  fz_seq *s = fz_live(w, a >> 2);
  int32_t tokens[FZ_MAX_TOK];
  if (!s || (a & 3) == 3) {
    int32_t t = 1;
    pkv_stats before;
    fz_snapshot(w, &before);
    FZ_EXPECT(w, pkv_seq_append(w->c, fz_bad_handle(w, a), &t, 1, NULL),
              PKV_ENOSEQ, "append to bad handle");
    if (s) {
      FZ_EXPECT(w, pkv_seq_append(w->c, s->id, &t, 0, NULL), PKV_EINVAL,
                "append of 0 tokens");
      FZ_EXPECT(w, pkv_seq_append(w->c, s->id, NULL, 1, NULL), PKV_EINVAL,
                "append of NULL tokens");
    }
    fz_same_pool(w, &before, "append");
    return;
  }
  uint32_t n;
  if ((a & 3) == 2) /* oversize: more than the whole pool might hold */
    n = w->nb * w->bs + 1 + (len % w->bs);
  else if ((a & 3) == 1)
    n = 1; /* decode */
  else
    n = 1 + len % (3 * w->bs);
  if (s->n + n > FZ_MAX_TOK) {
    if (n <= FZ_MAX_TOK) return; /* the model is full */
    /* Too big for the model: the library must refuse it for lack of blocks
     * (checked below) — only try when it certainly cannot fit. */
  }
  if (n > FZ_MAX_TOK) {
    static int32_t big[1 << 16];
    if (n > (1u << 16)) return;
    fz_gen_tokens(w, r, big, n, s->n, s);
    pkv_stats before;
    fz_snapshot(w, &before);
    if (fz_append_need(w, s, n) <= before.blocks_free + before.blocks_evictable)
      return;
    FZ_EXPECT(w, pkv_seq_append(w->c, s->id, big, n, NULL), PKV_ENOMEM,
              "oversize append");
    fz_same_pool(w, &before, "oversize append");
    return;
  }
  fz_gen_tokens(w, r, tokens, n, s->n, s);
  fz_append(w, s, tokens, n);
}

static void op_fork(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r);
  fz_seq *p = fz_live(w, a >> 1);
  fz_seq *c = fz_empty_slot(w);
  pkv_seq_id child = 0;
  if (!p || (a & 1)) {
    pkv_stats before;
    fz_snapshot(w, &before);
    FZ_EXPECT(w, pkv_seq_fork(w->c, fz_bad_handle(w, a), &child), PKV_ENOSEQ,
              "fork of bad handle");
    if (p)
      FZ_EXPECT(w, pkv_seq_fork(w->c, p->id, NULL), PKV_EINVAL,
                "fork NULL child");
    fz_same_pool(w, &before, "fork");
    return;
  }
  if (!c) return;
  FZ_EXPECT(w, pkv_seq_fork(w->c, p->id, &child), 0, "fork");
  *c = *p;
  c->id = child;
  fz_verify_seq(w, c);
}

static void op_truncate(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r);
  fz_seq *s = fz_live(w, a >> 2);
  pkv_stats before;
  fz_snapshot(w, &before);
  if (!s || (a & 3) == 3) {
    FZ_EXPECT(w, pkv_seq_truncate(w->c, fz_bad_handle(w, a), 0), PKV_ENOSEQ,
              "truncate bad handle");
    fz_same_pool(w, &before, "truncate");
    return;
  }
  if ((a & 3) == 2) { /* past the end */
    FZ_EXPECT(w, pkv_seq_truncate(w->c, s->id, s->n + 1 + b), PKV_ERANGE,
              "truncate past end");
    fz_same_pool(w, &before, "truncate");
    return;
  }
  uint32_t to = s->n ? b % (s->n + 1) : 0;
  if ((a & 3) == 1 && s->n) to = s->n - 1; /* speculative rollback by one */
  FZ_EXPECT(w, pkv_seq_truncate(w->c, s->id, to), 0, "truncate");
  s->n = to;
  if (s->committed > to) s->committed = to;
}

static void op_commit(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r);
  fz_seq *s = fz_live(w, a >> 2);
  pkv_stats before;
  fz_snapshot(w, &before);
  if (!s) {
    FZ_EXPECT(w, pkv_seq_commit(w->c, fz_bad_handle(w, a), 0), PKV_ENOSEQ,
              "commit bad handle");
    return;
  }
  if ((a & 3) == 3) {
    FZ_EXPECT(w, pkv_seq_commit(w->c, s->id, s->n + 1), PKV_ERANGE,
              "commit past end");
    fz_same_pool(w, &before, "commit");
    return;
  }
  if ((a & 3) == 2 && s->committed > 0) {
    FZ_EXPECT(w, pkv_seq_commit(w->c, s->id, s->committed - 1), PKV_ERANGE,
              "commit backwards");
    fz_same_pool(w, &before, "commit");
    return;
  }
  uint32_t to = (a & 3) == 0 ? s->n
                             : s->committed + b % (s->n - s->committed + 1);
  FZ_EXPECT(w, pkv_seq_commit(w->c, s->id, to), 0, "commit");
  s->committed = to;
  /* A dedup may have swapped blocks: the data must still be ours. */
  fz_verify_seq(w, s);
}

/* Length of the common prefix of t's committed tokens and tok[0..n). */
static uint32_t fz_common(const fz_seq *t, const int32_t *tok, uint32_t n) {
  uint32_t k = 0;
  uint32_t lim = t->shifted && t->shifted_at < t->committed ? t->shifted_at : t->committed;
  while (k < n && k < lim && t->tok[k] == tok[k]) k++;
  return k;
}

static void op_match(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r), cap = rd8(r);
  fz_seq *src = fz_live(w, a >> 3);
  fz_seq *s = fz_empty_slot(w);
  if (!s) return;
  if ((a & 7) == 7 && src && src->n > 0) { /* match on a non-empty sequence */
    uint32_t m = 123;
    pkv_stats before;
    fz_snapshot(w, &before);
    FZ_EXPECT(w, pkv_seq_match_prefix(w->c, src->id, src->tok, src->n, 0, &m),
              PKV_ESTATE, "match on non-empty seq");
    fz_same_pool(w, &before, "match");
    return;
  }
  /* The prompt: a prefix of another sequence, maybe changed at one token,
   * then a few tokens of its own. */
  int32_t prompt[FZ_MAX_TOK];
  uint32_t n = 0;
  if (src) {
    n = src->n ? b % (src->n + 1) : 0;
    memcpy(prompt, src->tok, n * sizeof *prompt);
    if ((a & 3) == 1 && n) prompt[cap % n] ^= 1;
  }
  uint32_t extra = (a >> 3) & 7;
  if (n + extra > FZ_MAX_TOK) extra = FZ_MAX_TOK - n;
  fz_gen_tokens(w, r, prompt + n, extra, n, NULL);
  n += extra;
  uint8_t ns = (a & 4) ? (uint8_t)(cap & 3) : (src ? src->ns : 0);

  pkv_seq_opts o = {fz_ns[ns].bytes, fz_ns[ns].len, fz_ns[ns].adapter, 0};
  pkv_seq_id id = fz_create_in(w, s, &o, ns);
  uint32_t max_tokens = (cap & 0xc0) == 0x40 ? (n ? n - 1 : 0)
                        : (cap & 0xc0) == 0x80 ? cap % 64
                                               : 0;
  uint32_t limit = n;
  if (max_tokens && max_tokens < limit) limit = max_tokens;
  /* Lower bound: blocks a live sequence of the same namespace committed with
   * these tokens are cached and referenced, so they must be found. */
  uint32_t floor_tokens = 0;
  if (!w->no_prefix)
    for (uint32_t i = 0; i < FZ_MAX_SEQS; i++) {
      const fz_seq *t = &w->s[i];
      if (!t->live || t == s || t->ns != ns) continue;
      uint32_t k = fz_common(t, prompt, limit);
      k -= k % w->bs;
      if (k > floor_tokens) floor_tokens = k;
    }
  uint32_t matched = 999999;
  FZ_EXPECT(w, pkv_seq_match_prefix(w->c, id, prompt, n, max_tokens, &matched),
            0, "match");
  if (matched % w->bs || matched > limit || matched < floor_tokens ||
      (w->no_prefix && matched))
    fz_fail(w, "match: %u tokens of %u (limit %u, at least %u, bs %u)",
            matched, n, limit, floor_tokens, w->bs);
  memcpy(s->tok, prompt, matched * sizeof *prompt);
  s->n = s->committed = matched;
  fz_verify_seq(w, s); /* a hit must bring exactly the right K/V */
  if (n > matched && (a & 2)) fz_append(w, s, prompt + matched, n - matched);
}

static void op_pin(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r);
  pkv_stats before;
  fz_snapshot(w, &before);
  if ((a & 3) == 0 && w->n_pins) { /* release */
    uint32_t i = b % w->n_pins;
    FZ_EXPECT(w, pkv_pin_release(w->c, w->pins[i]), 0, "pin release");
    w->stale_pin = w->pins[i];
    w->pins[i] = w->pins[--w->n_pins];
    return;
  }
  if ((a & 3) == 1) {
    pkv_pin_id bad = w->stale_pin ? w->stale_pin : 0x12345;
    FZ_EXPECT(w, pkv_pin_release(w->c, bad), PKV_ENOENT, "release stale pin");
    fz_same_pool(w, &before, "pin release");
    return;
  }
  fz_seq *s = fz_live(w, a >> 2);
  pkv_pin_id pin;
  if (!s) {
    FZ_EXPECT(w, pkv_pin_create(w->c, fz_bad_handle(w, a), 1, &pin),
              PKV_ENOSEQ, "pin bad handle");
    fz_same_pool(w, &before, "pin");
    return;
  }
  uint32_t n = (a & 3) == 2 ? s->committed : b % (s->committed + 2);
  int want = (n > s->committed || n / w->bs == 0) ? PKV_ERANGE : 0;
  if (want == 0 && w->n_pins == FZ_MAX_PINS) return;
  FZ_EXPECT(w, pkv_pin_create(w->c, s->id, n, &pin), want, "pin create");
  if (want) {
    fz_same_pool(w, &before, "pin");
    return;
  }
  w->pins[w->n_pins++] = pin;
}

/* Tiers and quotas: a namespace cap set, changed or removed (reserve 0:
 * a reservation would refuse appends the model expects to succeed); a
 * promotion of a live sequence's tokens (the K/V it brings back is checked
 * by the next verify or match); the tier counters. */
static void op_tiers(fz_world *w, fz_reader *r, uint8_t b) {
  uint8_t c = rd8(r);
  uint8_t ns = (b >> 2) & 3;
  pkv_seq_opts o = {fz_ns[ns].bytes, fz_ns[ns].len, fz_ns[ns].adapter, 0};
  switch (b % 3) {
  case 0: {
    uint32_t cap = (c & 3) == 0 ? 0 : 1 + c % (w->nb ? w->nb : 1);
    FZ_EXPECT(w, pkv_ns_set_quota(w->c, &o, cap, 0), 0, "quota cap");
    break;
  }
  case 1: {
    const fz_seq *src = fz_live(w, c);
    if (!src) break;
    o = (pkv_seq_opts){fz_ns[src->ns].bytes, fz_ns[src->ns].len, fz_ns[src->ns].adapter, 0};
    uint32_t promoted = 999999;
    FZ_EXPECT(w, pkv_prefix_promote(w->c, &o, src->tok, src->n, 0, &promoted), 0, "promote");
    if (promoted % w->bs || promoted > src->n)
      fz_fail(w, "promoted %u tokens of %u (bs %u)", promoted, src->n, w->bs);
    break;
  }
  default:
    for (uint32_t i = 0; i < PKV_TIER_MAX; i++) {
      pkv_tier_stats st;
      int rc = pkv_tier_stats_get(w->c, i, &st);
      bool on = i == PKV_TIER_HOST && w->cfg.host_tier_bytes;
      FZ_EXPECT(w, rc, on ? 0 : PKV_ENOENT, "tier stats");
      if (on && (st.hits > st.gets || st.errors))
        fz_fail(w, "host tier: %llu hits of %llu gets, %llu errors",
                (unsigned long long)st.hits, (unsigned long long)st.gets,
                (unsigned long long)st.errors);
    }
    break;
  }
}

static void op_misc(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r);
  pkv_stats before;
  fz_snapshot(w, &before);
  fz_seq *s = fz_live(w, b);
  switch (a % 6) {
  case 0:
    FZ_EXPECT(w, pkv_prefix_reset(w->c), 0, "reset");
    fz_snapshot(w, &before);
    if (before.blocks_evictable != 0)
      fz_fail(w, "reset left %u evictable blocks", before.blocks_evictable);
    break;
  case 1: /* priorities, valid and not */
    if (!s) break;
    FZ_EXPECT(w, pkv_seq_set_priority(w->c, s->id, b, b, 50, 0), PKV_ERANGE,
              "empty priority range");
    FZ_EXPECT(w, pkv_seq_set_priority(w->c, s->id, 0, 4, 101, 0), PKV_EINVAL,
              "priority > 100");
    FZ_EXPECT(w, pkv_seq_set_priority(w->c, s->id, b % 16, b % 16 + 1 + a % 32,
                                      (uint8_t)(a % 101), (uint64_t)(a & 8) * 1000),
              0, "priority");
    break;
  case 2: { /* dense table: too narrow, then right */
    pkv_seq_id ids[FZ_MAX_SEQS];
    uint32_t n_ids = 0, max_b = 0;
    for (uint32_t i = 0; i < FZ_MAX_SEQS; i++)
      if (w->s[i].live) {
        ids[n_ids++] = w->s[i].id;
        uint32_t nb = (w->s[i].n + w->bs - 1) / w->bs;
        if (nb > max_b) max_b = nb;
      }
    if (!n_ids) break;
    static int32_t table[FZ_MAX_SEQS * FZ_MAX_TOK];
    int32_t lens[FZ_MAX_SEQS];
    if (max_b)
      FZ_EXPECT(w, pkv_block_table(w->c, ids, n_ids, table, max_b - 1, lens),
                PKV_ENOSPC, "block_table too narrow");
    FZ_EXPECT(w, pkv_block_table(w->c, ids, n_ids, table, max_b + 1, lens), 0,
              "block_table");
    int32_t indptr[FZ_MAX_SEQS + 1], last[FZ_MAX_SEQS];
    static int32_t ind[FZ_MAX_SEQS * FZ_MAX_TOK];
    uint32_t n_ind = 0;
    FZ_EXPECT(w, pkv_kv_csr(w->c, ids, n_ids, indptr, ind,
                            FZ_MAX_SEQS * FZ_MAX_TOK, last, &n_ind),
              0, "kv_csr");
    for (uint32_t i = 0, k = 0; i < FZ_MAX_SEQS; i++) {
      if (!w->s[i].live) continue;
      uint32_t nb = (w->s[i].n + w->bs - 1) / w->bs;
      if (lens[k] != (int32_t)w->s[i].n ||
          indptr[k + 1] - indptr[k] != (int32_t)nb)
        fz_fail(w, "export row %u: len %d / %d blocks, model %u / %u", k,
                lens[k], indptr[k + 1] - indptr[k], w->s[i].n, nb);
      for (uint32_t j = 0; j <= max_b; j++) {
        int32_t want = j < nb ? ind[indptr[k] + j] : -1;
        if (table[k * (max_b + 1) + j] != want)
          fz_fail(w, "dense and CSR tables differ at row %u col %u", k, j);
      }
      if (nb && last[k] != (int32_t)(w->s[i].n - (nb - 1) * w->bs))
        fz_fail(w, "last_page_len %d", last[k]);
      k++;
    }
    if (n_ind > 0)
      FZ_EXPECT(w, pkv_kv_csr(w->c, ids, n_ids, indptr, ind, n_ind - 1, last,
                              &n_ind),
                PKV_ENOSPC, "kv_csr too small");
    ids[0] = fz_bad_handle(w, b);
    FZ_EXPECT(w, pkv_block_table(w->c, ids, n_ids, table, max_b + 1, lens),
              PKV_ENOSEQ, "block_table with a bad handle");
    break;
  }
  case 3:
    if (!s) break;
    {
      int64_t one;
      FZ_EXPECT(w, pkv_slot_mapping(w->c, s->id, s->n, s->n + 1, &one),
                PKV_ERANGE, "slot past end");
      FZ_EXPECT(w, pkv_slot_mapping(w->c, s->id, 1, 0, &one), PKV_ERANGE,
                "slot begin > end");
      int32_t blocks[1];
      uint32_t nbk;
      if (s->n > w->bs)
        FZ_EXPECT(w, pkv_seq_blocks(w->c, s->id, blocks, 1, &nbk), PKV_ENOSPC,
                  "seq_blocks small cap");
    }
    break;
  case 4:
    fz_drain(w, 1 + b % 4);
    break;
  default:
    if (a >= 192) { /* 197, 203, ... 251 */
      op_tiers(w, r, b);
      break;
    }
    for (uint32_t i = 0; i < FZ_MAX_SEQS; i++)
      if (w->s[i].live) fz_verify_seq(w, &w->s[i]);
    break;
  }
}

/* ------------------------------------------------ serving calls */

static void fz_same_stats(fz_world *w, const pkv_stats *a, const char *what) {
  pkv_stats b;
  fz_snapshot(w, &b);
  b.prefix_probes = a->prefix_probes; /* the one counter a probe moves */
  if (memcmp(a, &b, sizeof b) != 0) fz_fail(w, "%s changed the stats", what);
}

static void fz_events(fz_world *w) {
  if (!w->cfg.event_queue_cap) {
    pkv_event ev;
    uint32_t n;
    FZ_EXPECT(w, pkv_events_drain(w->c, &ev, 1, &n, NULL), PKV_ENOTSUP,
              "drain without a queue");
    return;
  }
  pkv_event ev[4];
  uint32_t n, pending;
  do {
    FZ_EXPECT(w, pkv_events_drain(w->c, ev, 4, &n, &pending), 0, "drain events");
    for (uint32_t i = 0; i < n; i++) {
      if (ev[i].seqno != w->next_seqno)
        fz_fail(w, "event seqno %llu, expected %llu",
                (unsigned long long)ev[i].seqno,
                (unsigned long long)w->next_seqno);
      w->next_seqno += ev[i].type == PKV_EVENT_LOST ? ev[i].n_lost : 1;
    }
  } while (pending);
  pkv_stats st;
  fz_snapshot(w, &st);
  if (w->next_seqno != st.events + 1)
    fz_fail(w, "drained up to seqno %llu, %llu events emitted",
            (unsigned long long)w->next_seqno - 1, (unsigned long long)st.events);
}

/* Probe a prompt built like an append's tokens, then attach the hit to a
 * new sequence, maybe after an eviction made it stale. */
static void op_probe_attach(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), len = rd8(r);
  fz_seq *s = fz_empty_slot(w);
  if (!s) return;
  uint32_t n = 1 + len % (4 * w->bs);
  int32_t tok[FZ_MAX_TOK];
  fz_gen_tokens(w, r, tok, n, 0, NULL);
  uint8_t ns = a & 3;
  pkv_seq_opts o = {.ns = fz_ns[ns].bytes, .ns_len = fz_ns[ns].len,
                    .adapter_id = fz_ns[ns].adapter};
  pkv_stats before;
  fz_snapshot(w, &before);
  int32_t hit[FZ_MAX_TOK];
  uint32_t ht = 77;
  FZ_EXPECT(w, pkv_prefix_probe(w->c, &o, tok, n, n - 1, hit, FZ_MAX_TOK, &ht),
            0, "probe");
  fz_same_stats(w, &before, "probe");
  /* max_tokens n - 1 keeps one token to compute; for n == 1 it is 0, which
   * means no cap */
  if (ht % w->bs || ht > n || (n > 1 && ht >= n))
    fz_fail(w, "probe hit %u of %u", ht, n);
  pkv_seq_id id = fz_create_in(w, s, &o, ns);
  if (ht == 0) return;
  if ((a & 4) && before.blocks_evictable)
    FZ_EXPECT(w, pkv_evict(w->c, 1 + a % before.blocks_evictable), 0, "evict");
  fz_snapshot(w, &before);
  pkv_append req = {.tokens = tok, .n_tokens = ht, .hit_blocks = hit,
                    .n_hit_blocks = ht / w->bs};
  int rc = pkv_seq_append_ex(w->c, id, &req, NULL);
  if (rc == PKV_ESTATE) {
    if (!(a & 4)) fz_fail(w, "hit went stale with no eviction");
    fz_same_pool(w, &before, "stale attach");
    return;
  }
  FZ_EXPECT(w, rc, 0, "attach");
  memcpy(s->tok, tok, ht * sizeof *tok);
  s->n = s->committed = ht;
  fz_verify_seq(w, s);
}

/* Lookahead: reserve k slots, fill j of them, drop the rest. */
static void op_lookahead(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r);
  fz_seq *s = fz_live(w, a);
  if (!s) return;
  uint32_t k = 1 + b % (2 * w->bs), j = (b >> 4) % (k + 1);
  if (s->n + k > FZ_MAX_TOK) return;
  pkv_stats before;
  fz_snapshot(w, &before);
  static int64_t slots[FZ_MAX_TOK];
  int32_t fresh[FZ_MAX_TOK];
  pkv_delta d;
  pkv_append req = {.n_lookahead = k, .slots = slots, .new_blocks = fresh,
                    .new_cap = FZ_MAX_TOK};
  uint32_t need = fz_append_need(w, s, k);
  int rc = pkv_seq_append_ex(w->c, s->id, &req, &d);
  if (need > before.blocks_free + before.blocks_evictable) {
    FZ_EXPECT(w, rc, PKV_ENOMEM, "lookahead beyond the pool");
    fz_same_pool(w, &before, "lookahead");
    return;
  }
  FZ_EXPECT(w, rc, 0, "lookahead");
  if (d.n_known != s->n || d.n_tokens != s->n + k)
    fz_fail(w, "lookahead delta %u/%u", d.n_known, d.n_tokens);
  int32_t tbl[FZ_MAX_TOK];
  uint32_t nbk;
  FZ_EXPECT(w, pkv_seq_blocks(w->c, s->id, tbl, FZ_MAX_TOK, &nbk), 0, "blocks");
  for (uint32_t i = 0; i < d.n_new; i++)
    if (tbl[d.first_new + i] != fresh[i]) fz_fail(w, "delta block %u", i);
  if (d.first_new + d.n_new != nbk) fz_fail(w, "delta does not reach the end");
  /* ids unknown: no commit past them, no fork */
  pkv_seq_id child;
  FZ_EXPECT(w, pkv_seq_commit(w->c, s->id, s->n + 1), PKV_ERANGE,
            "commit of a lookahead slot");
  FZ_EXPECT(w, pkv_seq_fork(w->c, s->id, &child), PKV_ESTATE,
            "fork with lookahead");
  if (j) { /* accepted drafts: their ids fill the reserved slots */
    int32_t tok[FZ_MAX_TOK];
    fz_gen_tokens(w, r, tok, j, s->n, s);
    int64_t filled[FZ_MAX_TOK];
    FZ_EXPECT(w, pkv_seq_append(w->c, s->id, tok, j, filled), 0, "fill");
    if (memcmp(filled, slots, j * sizeof *slots) != 0)
      fz_fail(w, "fill used other slots than were reserved");
    memcpy(s->tok + s->n, tok, j * sizeof *tok);
    fz_write(w, s, s->n, j, filled);
    s->n += j;
  }
  FZ_EXPECT(w, pkv_seq_truncate(w->c, s->id, s->n), 0, "drop drafts");
}

static void op_batch(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r);
  pkv_seq_id ids[FZ_MAX_SEQS + 1];
  fz_seq *who[FZ_MAX_SEQS];
  int32_t tok[FZ_MAX_SEQS + 1];
  uint32_t n = 0;
  for (uint32_t i = 0; i < FZ_MAX_SEQS; i++)
    if (w->s[i].live && w->s[i].n < FZ_MAX_TOK) {
      who[n] = &w->s[i];
      ids[n] = w->s[i].id;
      tok[n] = (int32_t)((a + i) & 7);
      n++;
    }
  if (a & 1) { /* with a bad handle at the end */
    ids[n] = fz_bad_handle(w, a);
    tok[n++] = 1;
  }
  int64_t slots[FZ_MAX_SEQS + 1];
  pkv_step_result res[FZ_MAX_SEQS + 1];
  int rc = pkv_batch_append(w->c, ids, tok, n, slots, res);
  int first = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (res[i].rc) {
      if (first == 0) first = res[i].rc;
      bool bad = (a & 1) && i == n - 1;
      FZ_EXPECT(w, res[i].rc, bad ? PKV_ENOSEQ : PKV_ENOMEM, "batch result");
      if (slots[i] != -1) fz_fail(w, "failed batch entry has a slot");
      continue;
    }
    fz_seq *s = who[i];
    s->tok[s->n] = tok[i];
    int64_t want;
    FZ_EXPECT(w, pkv_slot_mapping(w->c, s->id, s->n, s->n + 1, &want), 0, "slot");
    if (want != slots[i]) fz_fail(w, "batch slot differs from slot_mapping");
    if ((int64_t)res[i].block * w->bs + s->n % w->bs != slots[i])
      fz_fail(w, "batch result block %d does not hold slot", res[i].block);
    fz_write(w, s, s->n, 1, &slots[i]);
    s->n++;
  }
  FZ_EXPECT(w, rc, first, "batch return");
  if (a & 2) { /* batch free of up to two, plus a bad handle */
    fz_seq *x = fz_live(w, a >> 2), *y = x ? fz_live(w, (uint8_t)((a >> 2) + 1 +
                                                       (x - w->s))) : NULL;
    if (!x) return;
    pkv_seq_id f[3] = {x->id, y && y != x ? y->id : fz_bad_handle(w, a), 0};
    int32_t fr[3];
    FZ_EXPECT(w, pkv_batch_free(w->c, f, 3, fr), PKV_ENOSEQ, "batch free");
    FZ_EXPECT(w, fr[0], 0, "batch free [0]");
    fz_forget(w, x);
    if (y && y != x) {
      FZ_EXPECT(w, fr[1], 0, "batch free [1]");
      fz_forget(w, y);
    }
  }
}

/* Context shift: remove [begin, end) of a live sequence. */
static void op_shift(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r), c = rd8(r);
  fz_seq *s = fz_live(w, a >> 2);
  pkv_stats before;
  fz_snapshot(w, &before);
  if (!s || (a & 3) == 3) {
    FZ_EXPECT(w, pkv_seq_remove_range(w->c, fz_bad_handle(w, a), 0, 0), PKV_ENOSEQ,
              "remove_range bad handle");
    fz_same_pool(w, &before, "remove_range");
    return;
  }
  if ((a & 3) == 2) { /* past the end, or backwards */
    uint32_t e = s->n + 1 + b % 4;
    FZ_EXPECT(w, pkv_seq_remove_range(w->c, s->id, b % (s->n + 1), e), PKV_ERANGE,
              "remove_range past the end");
    if (s->n)
      FZ_EXPECT(w, pkv_seq_remove_range(w->c, s->id, s->n, s->n - 1), PKV_ERANGE,
                "remove_range backwards");
    fz_same_pool(w, &before, "remove_range");
    return;
  }
  uint32_t begin = b % (s->n + 1);
  uint32_t end = begin + c % (s->n - begin + 1);
  if ((a & 4) && s->n) { /* block-aligned: no copy */
    begin -= begin % w->bs;
    end = begin + (end - begin) - (end - begin) % w->bs;
  }
  uint32_t len = end - begin, n2 = s->n - len;
  /* Moved and not block-aligned: the entries from begin's block on are
   * rebuilt into fresh blocks.  External storage holds every old block
   * until its copy is drained (need = the rebuilt entries); owned storage
   * copies at once and returns an old block as soon as it is read, so it
   * needs at least one and at most that many. */
  uint32_t b0 = begin - begin % w->bs, avail = before.blocks_free + before.blocks_evictable;
  bool copies = len && end < s->n && !(begin % w->bs == 0 && len % w->bs == 0);
  uint32_t most = copies ? (n2 + w->bs - 1) / w->bs - b0 / w->bs : 0;
  uint32_t least = copies ? (w->external ? most : 1) : 0;
  int rc = pkv_seq_remove_range(w->c, s->id, begin, end);
  if (rc == PKV_ENOMEM || least > avail) {
    FZ_EXPECT(w, rc, PKV_ENOMEM, "remove_range beyond the pool");
    if (most <= avail) fz_fail(w, "remove_range refused %u blocks of %u", most, avail);
    fz_same_pool(w, &before, "remove_range");
    return;
  }
  FZ_EXPECT(w, rc, 0, "remove_range");
  if (len == 0) return;
  memmove(s->tok + begin, s->tok + end, (s->n - end) * sizeof *s->tok);
  memmove(s->dpos + begin, s->dpos + end, (s->n - end) * sizeof *s->dpos);
  for (uint32_t i = begin; i < n2; i++) s->dpos[i] += len;
  s->n = n2;
  if (s->committed > begin) s->committed = begin;
  if (!s->shifted || b0 < s->shifted_at) s->shifted_at = b0;
  s->shifted = true;
  fz_verify_seq(w, s); /* moved K/V, rebuilt or slid tables */
}

/* pkv_seq_keep: one live sequence stays, every other one is freed. */
static void op_keep(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r);
  fz_seq *s = fz_live(w, a >> 1);
  if (!s || (a & 1)) {
    pkv_stats before;
    fz_snapshot(w, &before);
    FZ_EXPECT(w, pkv_seq_keep(w->c, fz_bad_handle(w, a)), PKV_ENOSEQ, "keep bad handle");
    fz_same_pool(w, &before, "keep");
    return;
  }
  FZ_EXPECT(w, pkv_seq_keep(w->c, s->id), 0, "keep");
  for (uint32_t i = 0; i < FZ_MAX_SEQS; i++)
    if (w->s[i].live && &w->s[i] != s) fz_forget(w, &w->s[i]);
  pkv_seq_id ids[FZ_MAX_SEQS];
  uint32_t n = 0;
  FZ_EXPECT(w, pkv_seq_list(w->c, ids, FZ_MAX_SEQS, &n), 0, "list");
  if (n != 1 || ids[0] != s->id) fz_fail(w, "keep left %u sequences", n);
  fz_verify_seq(w, s);
}

/* KV cache groups over the same pool: one request (full + sliding) probed,
 * admitted with its hit and lookahead, committed, matched again, freed —
 * within this op, so the model's sequences and tokens are unchanged after. */
static void op_groups(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), len = rd8(r), c = rd8(r);
  const pkv_group_spec specs[3] = {{PKV_ATTN_FULL, 0},
                                   {PKV_ATTN_SLIDING, 1 + a % (3 * w->bs)},
                                   {PKV_ATTN_SLIDING, 1 + c % (2 * w->bs)}};
  uint32_t ng = 2 + (a >> 7), max_tokens = 64;
  pkv_groups *g;
  FZ_EXPECT(w, pkv_groups_create(w->c, specs, ng, max_tokens, &g), 0, "groups_create");
  pkv_stats before, st;
  fz_snapshot(w, &before);
  uint32_t n = 1 + len % 40;
  int32_t tok[64], hit[3 * 64], hit2[3 * 64];
  fz_gen_tokens(w, r, tok, n, 0, NULL);
  uint32_t ht = 999, ht2 = 999;
  pkv_seq_opts o = {fz_ns[a & 3].bytes, fz_ns[a & 3].len, fz_ns[a & 3].adapter, 0};
  FZ_EXPECT(w, pkv_groups_probe(g, &o, tok, n, n - 1, hit, 64, &ht), 0, "groups_probe");
  fz_snapshot(w, &st);
  if (st.prefix_probes != before.prefix_probes + 1) fz_fail(w, "groups_probe: probes");
  fz_same_stats(w, &before, "groups_probe"); /* read-only */
  if (ht % w->bs || (n > 1 && ht >= n) || (w->no_prefix && ht))
    fz_fail(w, "groups_probe hit %u of %u", ht, n);
  pkv_seq_id ids[3], ids2[3];
  FZ_EXPECT(w, pkv_groups_seq_create(g, &o, ids), 0, "groups_seq_create");
  uint32_t nh = ht / w->bs;
  int32_t packed[3 * 64];
  for (uint32_t k = 0; k < ng; k++)
    memcpy(packed + k * nh, hit + k * 64, nh * sizeof *hit);
  if ((c & 1) && nh && before.blocks_evictable)
    FZ_EXPECT(w, pkv_evict(w->c, before.blocks_evictable), 0, "evict");
  fz_snapshot(w, &before);
  uint32_t la = (c >> 1) % (2 * w->bs);
  int32_t fresh[3 * 64];
  pkv_delta d[3];
  pkv_append req = {.tokens = tok, .n_tokens = n, .n_lookahead = la,
                    .hit_blocks = nh ? packed : NULL, .n_hit_blocks = nh,
                    .new_blocks = fresh, .new_cap = 64};
  int rc = pkv_groups_append_ex(g, ids, &req, d);
  if (rc) {
    if (rc != PKV_ENOMEM && !(rc == PKV_ESTATE && (c & 1) && nh))
      fz_fail(w, "groups_append_ex: %s", pkv_err_name(rc));
    fz_same_pool(w, &before, "groups_append_ex");
  } else {
    for (uint32_t k = 0; k < ng; k++) {
      uint32_t nbk, first;
      int32_t tbl[64];
      FZ_EXPECT(w, pkv_seq_blocks(w->c, ids[k], tbl, 64, &nbk), 0, "group blocks");
      FZ_EXPECT(w, pkv_groups_first_pos(g, ids, k, &first), 0, "first_pos");
      if (d[k].n_known != n || d[k].n_tokens != n + la ||
          first / w->bs + nbk != (n + la + w->bs - 1) / w->bs ||
          d[k].first_new + d[k].n_new != first / w->bs + nbk)
        fz_fail(w, "group %u: delta %u/%u new [%u,+%u), table %u from %u", k,
                d[k].n_known, d[k].n_tokens, d[k].first_new, d[k].n_new, nbk, first);
      for (uint32_t i = 0; i < d[k].n_new; i++)
        if (fresh[k * 64 + i] != tbl[d[k].first_new - first / w->bs + i])
          fz_fail(w, "group %u: new block %u not in the table", k, i);
    }
    FZ_EXPECT(w, pkv_groups_commit(g, ids, n + 1), PKV_ERANGE, "groups commit lookahead");
    FZ_EXPECT(w, pkv_groups_commit(g, ids, n), 0, "groups_commit");
    for (uint32_t k = 1; k < ng; k++) { /* the window's first block */
      uint32_t first, wd = specs[k].window;
      uint32_t want = n + 1 > wd ? (n + 1 - wd) / w->bs * w->bs : 0;
      FZ_EXPECT(w, pkv_groups_first_pos(g, ids, k, &first), 0, "first_pos");
      if (first != want) fz_fail(w, "group %u (W=%u) starts at %u, want %u", k, wd, first, want);
    }
    /* what a probe promises, a match attaches */
    FZ_EXPECT(w, pkv_groups_probe(g, &o, tok, n, 0, hit2, 64, &ht2), 0, "probe");
    pkv_seq_id m[3];
    uint32_t mt = 0;
    FZ_EXPECT(w, pkv_groups_seq_create(g, &o, m), 0, "groups_seq_create");
    FZ_EXPECT(w, pkv_groups_match(g, m, tok, n, 0, &mt), 0, "groups_match");
    if (mt != ht2) fz_fail(w, "groups: probe %u, match %u", ht2, mt);
    if (!w->no_prefix && mt != n - n % w->bs) /* ids holds them all */
      fz_fail(w, "groups: match %u of %u held tokens", mt, n);
    FZ_EXPECT(w, pkv_groups_seq_free(g, m), 0, "groups_seq_free");
    memcpy(ids2, ids, sizeof ids2);
  }
  FZ_EXPECT(w, pkv_groups_seq_free(g, ids), 0, "groups_seq_free");
  FZ_EXPECT(w, pkv_groups_seq_free(g, ids), PKV_ENOSEQ, "groups_seq_free twice");
  pkv_groups_destroy(g);
  fz_snapshot(w, &st);
  if (st.n_seqs != before.n_seqs - ng || st.tokens != before.tokens)
    fz_fail(w, "groups left %u seqs / %llu tokens", st.n_seqs, (unsigned long long)st.tokens);
  (void)ids2;
}

static void op_serving(fz_world *w, fz_reader *r) {
  uint8_t a = rd8(r), b = rd8(r);
  fz_seq *s = fz_live(w, b);
  switch (a % 8) {
  case 0: op_probe_attach(w, r); break;
  case 1: op_lookahead(w, r); break;
  case 2: op_batch(w, r); break;
  case 3: /* commit with dedup; remapped blocks deferred */
    if (!s || s->committed == s->n) break;
    {
      pkv_remap rm[FZ_MAX_TOK];
      uint32_t n_rm;
      bool now = w->n_deferred + (s->n - s->committed) / w->bs + 1 > 64;
      uint32_t to = s->committed + 1 + b % (s->n - s->committed);
      FZ_EXPECT(w, pkv_seq_commit_ex(w->c, s->id, to,
                                     PKV_COMMIT_DEDUP |
                                         (now ? PKV_COMMIT_RELEASE_NOW : 0),
                                     rm, FZ_MAX_TOK, &n_rm),
                0, "commit dedup");
      s->committed = to;
      int32_t tbl[FZ_MAX_TOK];
      uint32_t nbk;
      FZ_EXPECT(w, pkv_seq_blocks(w->c, s->id, tbl, FZ_MAX_TOK, &nbk), 0, "blocks");
      for (uint32_t i = 0; i < n_rm; i++) {
        if (tbl[rm[i].index] != rm[i].new_block || rm[i].old_block == rm[i].new_block)
          fz_fail(w, "remap %u does not match the table", i);
        if (!now) w->deferred[w->n_deferred++] = rm[i].old_block;
      }
      fz_verify_seq(w, s);
    }
    break;
  case 4: { /* release deferred blocks (and a refused extra one) */
    pkv_stats before;
    fz_snapshot(w, &before);
    int32_t bad = (int32_t)w->nb;
    FZ_EXPECT(w, pkv_blocks_release(w->c, &bad, 1), PKV_ENOENT, "release bad");
    fz_same_stats(w, &before, "refused release");
    if (!w->n_deferred) break;
    uint32_t k = 1 + b % w->n_deferred;
    FZ_EXPECT(w, pkv_blocks_release(w->c, w->deferred + w->n_deferred - k, k), 0,
              "release");
    w->n_deferred -= k;
    break;
  }
  case 5: { /* evict(n), capacity */
    pkv_stats st;
    fz_snapshot(w, &st);
    pkv_capacity k;
    FZ_EXPECT(w, pkv_cache_capacity(w->c, &k), 0, "capacity");
    if (k.free != st.blocks_free || k.evictable != st.blocks_evictable ||
        k.in_use != st.blocks_used || k.cached != st.blocks_cached ||
        k.deferred != w->n_deferred)
      fz_fail(w, "capacity disagrees with stats");
    FZ_EXPECT(w, pkv_evict(w->c, k.evictable + 1), PKV_ERANGE, "evict too many");
    fz_same_stats(w, &st, "refused evict");
    uint32_t n = k.evictable ? b % (k.evictable + 1) : 0;
    FZ_EXPECT(w, pkv_evict(w->c, n), 0, "evict");
    FZ_EXPECT(w, pkv_cache_capacity(w->c, &k), 0, "capacity");
    if (k.evictable != st.blocks_evictable - n || k.free != st.blocks_free + n)
      fz_fail(w, "evict(%u) left %u evictable / %u free", n, k.evictable, k.free);
    break;
  }
  case 6: { /* common prefix of every live sequence, against the tables */
    pkv_seq_id ids[FZ_MAX_SEQS];
    uint32_t n = 0, common = 0, want = UINT32_MAX;
    static int32_t first[FZ_MAX_TOK], tbl[FZ_MAX_TOK];
    for (uint32_t i = 0; i < FZ_MAX_SEQS; i++) {
      if (!w->s[i].live || (b >> (i % 8) & 1)) continue;
      ids[n++] = w->s[i].id;
      uint32_t nbk;
      FZ_EXPECT(w, pkv_seq_blocks(w->c, w->s[i].id, n == 1 ? first : tbl,
                                  FZ_MAX_TOK, &nbk), 0, "blocks");
      if (n == 1) {
        want = nbk;
        continue;
      }
      uint32_t k = 0;
      while (k < want && k < nbk && tbl[k] == first[k]) k++;
      want = k;
    }
    FZ_EXPECT(w, pkv_common_prefix_blocks(w->c, ids, n, &common), 0, "common");
    if (common != (n ? want : 0))
      fz_fail(w, "common prefix %u, tables say %u", common, want);
    break;
  }
  default: /* a % 8 == 7: events, or a sequence operation */
    switch ((a >> 3) % 4) {
    case 0: fz_events(w); break;
    case 1: op_shift(w, r); break;
    case 2: op_keep(w, r); break;
    default: op_groups(w, r); break;
    }
    break;
  }
}

/* ------------------------------------------------ driver */

static const char *const fz_policies[8] = {"lru", "fifo", "lfu", "s3fifo",
                                           "priority", "lru", "nope", NULL};

/* Runs one input.  Returns 0 (libFuzzer convention); aborts on a finding. */
int pkv_fuzz_ops_run(const uint8_t *data, size_t size) {
  fz_reader r = {data, size};
  static fz_world world;
  fz_world *w = &world;
  memset(w, 0, sizeof *w);
  uint8_t c0 = rd8(&r), c1 = rd8(&r), c2 = rd8(&r);
  pkv_config_init(&w->cfg);
  static const uint32_t block_sizes[8] = {1, 2, 3, 4, 8, 16, 5, 0};
  w->cfg.block_size = block_sizes[c0 & 7];
  w->cfg.n_layers = 1 + ((c0 >> 3) & 1);
  w->cfg.n_kv_heads = 1 + ((c0 >> 4) & 1);
  w->cfg.head_dim = 1 + ((c0 >> 5) & 1);
  w->cfg.num_blocks = c1 % 48;
  w->cfg.storage = (c2 & 1) ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED;
  w->cfg.policy = fz_policies[(c2 >> 1) & 7];
  w->cfg.flags = (c2 >> 4) & 3;
  if (c0 & 0x40) w->cfg.event_queue_cap = 8;
  if ((c0 & 0x80) && w->cfg.storage == PKV_STORAGE_OWNED && w->cfg.block_size)
    w->cfg.host_tier_bytes = (1 + c1 % 8) * (pkv_config_block_bytes(&w->cfg) +
                                             w->cfg.block_size * sizeof(int32_t));
  w->next_seqno = 1;
  if (c2 & 0x40) { /* size the pool by bytes instead */
    w->cfg.memory_bytes = (uint64_t)w->cfg.num_blocks *
                          pkv_config_block_bytes(&w->cfg) + (c1 & 3);
    w->cfg.num_blocks = 0;
  }
  bool bad_cfg = w->cfg.block_size == 0 || c1 % 48 == 0 ||
                 (w->cfg.policy && strcmp(w->cfg.policy, "nope") == 0);
  if (c2 & 0x80) { /* an unknown flag or storage mode */
    if (c1 & 1) w->cfg.flags |= 0x80;
    else w->cfg.storage = (pkv_storage)7;
    bad_cfg = true;
  }
  int rc = pkv_cache_create(&w->cfg, &w->c);
  if (bad_cfg) {
    if (rc == 0) fz_fail(w, "bad config accepted");
    if (w->c) fz_fail(w, "failed create left *out set");
    if (pkv_last_error()[0] == '\0') fz_fail(w, "no error detail");
    return 0;
  }
  FZ_EXPECT(w, rc, 0, "cache_create");
  w->cfg = *pkv_cache_config(w->c);
  w->bs = w->cfg.block_size;
  w->nb = w->cfg.num_blocks;
  w->external = w->cfg.storage == PKV_STORAGE_EXTERNAL;
  w->no_prefix = (w->cfg.flags & PKV_CACHE_NO_PREFIX_CACHE) != 0;
  FZ_EXPECT(w, pkv_cache_layout(w->c, &w->L), 0, "layout");
  if (w->L.elem_size != 4) fz_fail(w, "f32 element size %zu", w->L.elem_size);
  if (w->external) {
    void *k, *v;
    FZ_EXPECT(w, pkv_cache_kv(w->c, 0, &k, &v), PKV_ENOTSUP, "kv external");
    w->ext_region = w->L.layer_bytes;
    w->ext = calloc(2 * w->cfg.n_layers, w->ext_region ? w->ext_region : 1);
    if (!w->ext) abort();
  } else {
    void *k, *v;
    FZ_EXPECT(w, pkv_cache_kv(w->c, w->cfg.n_layers, &k, &v), PKV_ERANGE,
              "kv layer out of range");
  }
  while (r.n > 0) {
    w->op_no++;
    uint8_t op = rd8(&r);
    switch (op % 10) {
    case 0: op_create(w, &r); break;
    case 1: op_free(w, &r); break;
    case 2:
    case 3: op_append(w, &r); break;
    case 4: op_fork(w, &r); break;
    case 5: op_truncate(w, &r); break;
    case 6: op_commit(w, &r); break;
    case 7: op_match(w, &r); break;
    case 8: op_pin(w, &r); break;
    default:
      if (op >= 200) op_serving(w, &r); /* 209 .. 249 */
      else op_misc(w, &r);
      break;
    }
    fz_check(w);
  }
  for (uint32_t i = 0; i < FZ_MAX_SEQS; i++)
    if (w->s[i].live) fz_verify_seq(w, &w->s[i]);
  if (w->n_deferred)
    FZ_EXPECT(w, pkv_blocks_release(w->c, w->deferred, w->n_deferred), 0,
              "final release");
  fz_events(w);
  fz_check(w);
  pkv_cache_destroy(w->c);
  free(w->ext);
  w->c = NULL;
  w->ext = NULL;
  return 0;
}

PKV_FUZZ_ENTRY(pkv_fuzz_ops_run)
