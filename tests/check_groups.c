/*
 * check_groups.c — KV cache groups (issue 11 item 9): a full-attention
 * group and two sliding-window groups over one pool.
 *
 *   window   commit releases exactly the blocks no future query reads; the
 *            released committed blocks stay cached (evictable);
 *   match    a hit needs every group's blocks (full: all; sliding: the
 *            window), and attaches only those; the window's blocks keep
 *            chaining their keys after the front was dropped;
 *   partial  a full group's hit that some sliding group cannot serve is cut
 *            back to what every group can serve;
 *   bad      a window larger than the context, a full group with a window,
 *            appending past max_tokens, unknown ids, a commit out of range:
 *            the code, a detail, nothing changed, pkv_check clean.
 *   probe    pkv_groups_probe finds what pkv_groups_match attaches (the
 *            window's blocks per sliding group, -1 before it) and changes
 *            nothing but the probe counter; namespaces and caps hold;
 *   append_ex  a probed hit attached with new tokens and lookahead slots in
 *            every group; deltas in absolute indexes; lookahead filled
 *            later, never committed; stale hits, a pool too small for all
 *            groups, groups at different lengths, new_cap too small: the
 *            code, nothing changed in any group.
 */
#include "tu_core.h"
#include "pagedkv/groups.h"

#include <stdlib.h>

#define BS 4
static const pkv_group_spec layout[3] = {
    {PKV_ATTN_FULL, 0}, {PKV_ATTN_SLIDING, 10}, {PKV_ATTN_SLIDING, 6}};

typedef struct gfx {
  pkv_cache *c;
  pkv_groups *g;
  int32_t t[64];
} gfx;

static void up(gfx *f, uint32_t nb) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_EXTERNAL, nb, BS);
  f->c = tu_cache(&cfg);
  ck_assert_int_eq(pkv_groups_create(f->c, layout, 3, 64, &f->g), 0);
  for (int i = 0; i < 64; i++) f->t[i] = 1000 + i;
}

static void down(gfx *f) {
  TU_CHECK(f->c);
  pkv_groups_destroy(f->g);
  pkv_cache_destroy(f->c);
}

static uint32_t first(gfx *f, const pkv_seq_id *ids, uint32_t g) {
  uint32_t p = 99;
  ck_assert_int_eq(pkv_groups_first_pos(f->g, ids, g, &p), 0);
  return p;
}

static uint32_t nblocks(gfx *f, pkv_seq_id id) {
  pkv_seq_info info;
  ck_assert_int_eq(pkv_seq_info_get(f->c, id, &info), 0);
  return info.n_blocks;
}

/* One request of 40 tokens, committed: 10 + 3 + 2 blocks kept. */
static void request40(gfx *f, pkv_seq_id *ids) {
  ck_assert_int_eq(pkv_groups_seq_create(f->g, NULL, ids), 0);
  ck_assert_int_eq(pkv_groups_append(f->g, ids, f->t, 40, NULL), 0);
  ck_assert_int_eq(pkv_groups_commit(f->g, ids, 40), 0);
}

START_TEST(window) {
  gfx f;
  up(&f, 64);
  pkv_seq_id ids[3];
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, ids), 0);
  ck_assert_int_eq(pkv_groups_append(f.g, ids, f.t, 30, NULL), 0);
  ck_assert_uint_eq(tu_stats(f.c).blocks_used, 3 * 8);
  ck_assert_int_eq(pkv_groups_commit(f.g, ids, 20), 0);
  /* Next query at 20 reads [11, 20] (W=10): block 2 on; [15, 20] (W=6):
   * block 3 on. */
  ck_assert_uint_eq(first(&f, ids, 0), 0);
  ck_assert_uint_eq(first(&f, ids, 1), 8);
  ck_assert_uint_eq(first(&f, ids, 2), 12);
  ck_assert_uint_eq(nblocks(&f, ids[1]), 6);
  ck_assert_uint_eq(nblocks(&f, ids[2]), 5);
  pkv_stats st = tu_stats(f.c);
  ck_assert_uint_eq(st.blocks_used, 8 + 6 + 5);
  ck_assert_uint_eq(st.blocks_evictable, 2 + 3); /* committed: still cached */
  ck_assert_int_eq(pkv_groups_append(f.g, ids, f.t + 30, 10, NULL), 0);
  ck_assert_int_eq(pkv_groups_commit(f.g, ids, 40), 0);
  ck_assert_uint_eq(first(&f, ids, 1), 28); /* (41 - 10) / 4 = 7 */
  ck_assert_uint_eq(first(&f, ids, 2), 32); /* (41 - 6) / 4 = 8 */
  ck_assert_uint_eq(tu_stats(f.c).blocks_used, 10 + 3 + 2);
  /* The window's slots are what the engine reads: relative to first_pos. */
  int64_t slots[12];
  ck_assert_int_eq(pkv_slot_mapping(f.c, ids[1], 0, 12, slots), 0);
  ck_assert_int_eq(pkv_slot_mapping(f.c, ids[1], 0, 13, slots), PKV_ERANGE);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, ids), 0);
  ck_assert_uint_eq(tu_stats(f.c).blocks_used, 0);
  down(&f);
}
END_TEST

START_TEST(match) {
  gfx f;
  up(&f, 64);
  pkv_seq_id a[3], b[3];
  request40(&f, a);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, a), 0); /* all cached, evictable */
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, b), 0);
  uint32_t matched = 0;
  ck_assert_int_eq(pkv_groups_match(f.g, b, f.t, 48, 47, &matched), 0);
  ck_assert_uint_eq(matched, 40);
  ck_assert_uint_eq(first(&f, b, 1), 28);
  ck_assert_uint_eq(first(&f, b, 2), 32);
  ck_assert_uint_eq(nblocks(&f, b[0]), 10);
  ck_assert_uint_eq(nblocks(&f, b[1]), 3);
  ck_assert_uint_eq(nblocks(&f, b[2]), 2);
  ck_assert_uint_eq(tu_stats(f.c).blocks_used, 15);
  /* Continue: the window keeps chaining keys from the true prefix. */
  ck_assert_int_eq(pkv_groups_append(f.g, b, f.t + 40, 8, NULL), 0);
  ck_assert_int_eq(pkv_groups_commit(f.g, b, 48), 0);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, b), 0);
  pkv_seq_id c3[3];
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, c3), 0);
  ck_assert_int_eq(pkv_groups_match(f.g, c3, f.t, 52, 51, &matched), 0);
  ck_assert_uint_eq(matched, 48);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, c3), 0);
  /* A match on a non-empty request is refused, *matched untouched. */
  request40(&f, a);
  matched = 7;
  ck_assert_int_eq(pkv_groups_match(f.g, a, f.t, 40, 0, &matched), PKV_ESTATE);
  ck_assert_uint_eq(matched, 7);
  down(&f);
}
END_TEST

START_TEST(partial) {
  gfx f;
  up(&f, 64);
  pkv_seq_id a[3], b[3];
  request40(&f, a); /* still live: its full group and windows stay cached */
  uint32_t ev = tu_stats(f.c).blocks_evictable;
  ck_assert_uint_eq(ev, 7 + 8); /* what the windows dropped */
  ck_assert_int_eq(pkv_evict(f.c, ev), 0);
  /* The full group could serve 36 tokens, but a request resuming at 36
   * needs blocks 6.. (W=10) and 7.. (W=6), and block 6 of the first
   * sliding group is gone; so are the windows of every shorter hit. */
  int32_t t[44];
  memcpy(t, f.t, 36 * sizeof *t);
  for (int i = 36; i < 44; i++) t[i] = -5;
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, b), 0);
  uint32_t matched = 9;
  ck_assert_int_eq(pkv_groups_match(f.g, b, t, 44, 0, &matched), 0);
  ck_assert_uint_eq(matched, 0);
  ck_assert_uint_eq(nblocks(&f, b[0]), 0);
  /* The same 40 tokens: every group has what it needs (a holds them). */
  ck_assert_int_eq(pkv_groups_seq_free(f.g, b), 0);
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, b), 0);
  ck_assert_int_eq(pkv_groups_match(f.g, b, f.t, 41, 0, &matched), 0);
  ck_assert_uint_eq(matched, 40);
  down(&f);
}
END_TEST

START_TEST(bad_input) {
  gfx f;
  up(&f, 32);
  pkv_groups *g = (pkv_groups *)1;
  pkv_group_spec big[2] = {{PKV_ATTN_FULL, 0}, {PKV_ATTN_SLIDING, 65}};
  ck_assert_int_eq(pkv_groups_create(f.c, big, 2, 64, &g), PKV_ERANGE);
  ck_assert_ptr_null(g);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "larger than the context"));
  pkv_group_spec odd[1] = {{PKV_ATTN_FULL, 8}};
  ck_assert_int_eq(pkv_groups_create(f.c, odd, 1, 64, &g), PKV_EINVAL);
  pkv_group_spec zero[1] = {{PKV_ATTN_SLIDING, 0}};
  ck_assert_int_eq(pkv_groups_create(f.c, zero, 1, 64, &g), PKV_EINVAL);
  ck_assert_int_eq(pkv_groups_create(f.c, layout, 0, 64, &g), PKV_EINVAL);
  pkv_seq_id ids[3], gone[3];
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, ids), 0);
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, gone), 0);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, gone), 0);
  ck_assert_int_eq(pkv_groups_append(f.g, ids, f.t, 20, NULL), 0);
  typedef struct row {
    int rc, want;
    const char *say;
  } row;
  row rows[6];
  pkv_stats before = tu_stats(f.c);
  int32_t many[64];
  memcpy(many, f.t, sizeof many);
  rows[0] = (row){pkv_groups_append(f.g, ids, many, 45, NULL), PKV_ERANGE,
                              "exceed max_tokens 64"};
  rows[1] = (row){pkv_groups_append(f.g, gone, f.t, 1, NULL), PKV_ENOSEQ,
                              "stale handle"};
  rows[2] = (row){pkv_groups_commit(f.g, ids, 21), PKV_ERANGE, "outside"};
  rows[3] = (row){pkv_groups_seq_free(f.g, gone), PKV_ENOSEQ, "stale"};
  rows[4] = (row){pkv_groups_append(f.g, ids, f.t, 44, NULL), PKV_ENOMEM,
                              "available"};
  uint32_t p;
  rows[5] = (row){pkv_groups_first_pos(f.g, ids, 3, &p), PKV_ERANGE,
                              "group 3 of 3"};
  for (int i = 0; i < 6; i++) ck_assert_msg(rows[i].rc == rows[i].want, "row %d: %d", i, rows[i].rc);
  pkv_stats after = tu_stats(f.c);
  TU_STATS_SAME(before, after);
  /* Messages: rerun each to read its detail. */
  ck_assert_int_eq(pkv_groups_append(f.g, ids, many, 45, NULL), PKV_ERANGE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), rows[0].say));
  ck_assert_int_eq(pkv_groups_append(f.g, ids, f.t, 44, NULL), PKV_ENOMEM);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), rows[4].say));
  ck_assert_int_eq(pkv_groups_commit(f.g, ids, 21), PKV_ERANGE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), rows[2].say));
  ck_assert_int_eq(pkv_groups_seq_free(f.g, ids), 0);
  down(&f);
}
END_TEST

/* The tables of a request's groups, flattened: tbl[g * 16 + i]. */
static void tables(gfx *f, const pkv_seq_id *ids, int32_t *tbl, uint32_t *n) {
  for (uint32_t g = 0; g < 3; g++)
    ck_assert_int_eq(pkv_seq_blocks(f->c, ids[g], tbl + g * 16, 16, &n[g]), 0);
}

START_TEST(probe) {
  gfx f;
  up(&f, 64);
  pkv_seq_id a[3], b[3];
  request40(&f, a);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, a), 0); /* all cached */
  int32_t blk[3 * 12];
  uint32_t hit = 1;
  pkv_stats before = tu_stats(f.c);
  ck_assert_int_eq(pkv_groups_probe(f.g, NULL, f.t, 48, 47, blk, 12, &hit), 0);
  pkv_stats after = tu_stats(f.c);
  ck_assert_uint_eq(after.prefix_probes, before.prefix_probes + 1);
  after.prefix_probes = before.prefix_probes;
  TU_STATS_SAME(before, after);
  ck_assert_uint_eq(hit, 40);
  /* Group 1 (W=10) needs blocks 7..9, group 2 (W=6) blocks 8..9. */
  for (uint32_t i = 0; i < 10; i++) {
    ck_assert_int_ge(blk[i], 0);
    ck_assert_int_eq(blk[12 + i] >= 0, i >= 7);
    ck_assert_int_eq(blk[24 + i] >= 0, i >= 8);
  }
  /* Exactly what a match attaches. */
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, b), 0);
  uint32_t m;
  ck_assert_int_eq(pkv_groups_match(f.g, b, f.t, 48, 47, &m), 0);
  ck_assert_uint_eq(m, hit);
  int32_t tbl[3 * 16];
  uint32_t n[3];
  tables(&f, b, tbl, n);
  ck_assert_uint_eq(n[0], 10);
  ck_assert_uint_eq(n[1], 3);
  ck_assert_uint_eq(n[2], 2);
  for (uint32_t i = 0; i < 10; i++) ck_assert_int_eq(tbl[i], blk[i]);
  for (uint32_t i = 0; i < 3; i++) ck_assert_int_eq(tbl[16 + i], blk[12 + 7 + i]);
  for (uint32_t i = 0; i < 2; i++) ck_assert_int_eq(tbl[32 + i], blk[24 + 8 + i]);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, b), 0);
  /* Caps: blocks_cap and max_tokens; another namespace has nothing; no
   * blocks buffer. */
  ck_assert_int_eq(pkv_groups_probe(f.g, NULL, f.t, 48, 47, blk, 9, &hit), 0);
  ck_assert_uint_eq(hit, 36);
  ck_assert_int_eq(pkv_groups_probe(f.g, NULL, f.t, 48, 30, NULL, 0, &hit), 0);
  ck_assert_uint_eq(hit, 28);
  pkv_seq_opts o;
  pkv_seq_opts_init(&o);
  o.ns = "tenant";
  o.ns_len = 6;
  ck_assert_int_eq(pkv_groups_probe(f.g, &o, f.t, 48, 47, blk, 12, &hit), 0);
  ck_assert_uint_eq(hit, 0);
  /* Evict the blocks group 2's window needs: no hit at 40 any more. */
  ck_assert_int_eq(pkv_evict(f.c, tu_stats(f.c).blocks_evictable), 0);
  ck_assert_int_eq(pkv_groups_probe(f.g, NULL, f.t, 48, 47, blk, 12, &hit), 0);
  ck_assert_uint_eq(hit, 0);
  /* Bad input: the code, *hit_tokens untouched. */
  hit = 77;
  ck_assert_int_eq(pkv_groups_probe(NULL, NULL, f.t, 48, 47, blk, 12, &hit), PKV_EINVAL);
  ck_assert_int_eq(pkv_groups_probe(f.g, NULL, NULL, 48, 47, blk, 12, &hit), PKV_EINVAL);
  ck_assert_int_eq(pkv_groups_probe(f.g, NULL, f.t, 48, 47, NULL, 12, &hit), PKV_EINVAL);
  o.ns = NULL;
  ck_assert_int_eq(pkv_groups_probe(f.g, &o, f.t, 48, 47, blk, 12, &hit), PKV_EINVAL);
  ck_assert_uint_eq(hit, 77);
  ck_assert_int_eq(pkv_groups_probe(f.g, NULL, f.t, 48, 47, blk, 12, NULL), PKV_EINVAL);
  down(&f);
}
END_TEST

/* A request that attaches the probed hit of f->t[0..40) and appends
 * tokens [40, 44) plus 3 lookahead slots. */
static int admit_ex(gfx *f, pkv_seq_id *ids, const int32_t *hit_blocks, uint32_t nh,
                    int64_t *slots, int32_t *newb, uint32_t new_cap, pkv_delta *d) {
  pkv_append r;
  pkv_append_init(&r);
  r.tokens = f->t;
  r.n_tokens = 44;
  r.n_lookahead = 3;
  r.hit_blocks = hit_blocks;
  r.n_hit_blocks = nh;
  r.slots = slots;
  r.new_blocks = newb;
  r.new_cap = new_cap;
  return pkv_groups_append_ex(f->g, ids, &r, d);
}

/* 40 tokens cached by a request gone since; hb = the probe of the next
 * request (44 tokens), b its empty sequences. */
static void cached_hit(gfx *f, pkv_seq_id *b, int32_t *hb) {
  pkv_seq_id a[3];
  uint32_t hit;
  request40(f, a);
  ck_assert_int_eq(pkv_groups_seq_free(f->g, a), 0);
  ck_assert_int_eq(pkv_groups_probe(f->g, NULL, f->t, 44, 43, hb, 10, &hit), 0);
  ck_assert_uint_eq(hit, 40);
  ck_assert_int_eq(pkv_groups_seq_create(f->g, NULL, b), 0);
}

START_TEST(append_ex) {
  gfx f;
  up(&f, 64);
  pkv_seq_id b[3];
  int32_t hb[3 * 10];
  cached_hit(&f, b, hb);
  int64_t slots[3 * 7];
  int32_t newb[3 * 4];
  pkv_delta d[3];
  ck_assert_int_eq(admit_ex(&f, b, hb, 10, slots, newb, 4, d), 0);
  ck_assert_uint_eq(first(&f, b, 1), 28);
  ck_assert_uint_eq(first(&f, b, 2), 32);
  int32_t tbl[3 * 16];
  uint32_t n[3];
  tables(&f, b, tbl, n);
  ck_assert_uint_eq(n[0], 12);
  ck_assert_uint_eq(n[1], 5);
  ck_assert_uint_eq(n[2], 4);
  for (uint32_t g = 0; g < 3; g++) {
    uint32_t base = g == 0 ? 0 : g == 1 ? 7 : 8; /* the table's first block */
    /* Deltas in absolute indexes: blocks 10 and 11 are new everywhere. */
    ck_assert_uint_eq(d[g].first_new, 10);
    ck_assert_uint_eq(d[g].n_new, 2);
    ck_assert_int_eq(d[g].cow_index, -1);
    ck_assert_uint_eq(d[g].n_known, 44);
    ck_assert_uint_eq(d[g].n_tokens, 47);
    for (uint32_t i = 0; i < 2; i++) ck_assert_int_eq(newb[g * 4 + i], tbl[g * 16 + 10 - base + i]);
    for (uint32_t i = base; i < 10; i++) ck_assert_int_eq(tbl[g * 16 + i - base], hb[g * 10 + i]);
    /* Slots of positions 40..46: blocks 10 and 11. */
    for (uint32_t p = 40; p < 47; p++)
      ck_assert_int_eq(slots[g * 7 + p - 40], (int64_t)tbl[g * 16 + p / BS - base] * BS + p % BS);
  }
  /* Lookahead slots are never committed; ids fill them later. */
  ck_assert_int_eq(pkv_groups_commit(f.g, b, 45), PKV_ERANGE);
  ck_assert_int_eq(pkv_groups_commit(f.g, b, 44), 0);
  pkv_append r;
  pkv_append_init(&r);
  r.tokens = f.t + 44;
  r.n_tokens = 3;
  ck_assert_int_eq(pkv_groups_append_ex(f.g, b, &r, d), 0);
  for (uint32_t g = 0; g < 3; g++) {
    ck_assert_uint_eq(d[g].n_new, 0);
    ck_assert_uint_eq(d[g].n_known, 47);
    ck_assert_uint_eq(d[g].n_tokens, 47);
  }
  ck_assert_int_eq(pkv_groups_commit(f.g, b, 47), 0);
  TU_CHECK(f.c);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, b), 0);
  down(&f);
}
END_TEST

START_TEST(append_ex_bad) {
  gfx f;
  up(&f, 40);
  pkv_seq_id b[3], c3[3];
  int32_t hb[3 * 10];
  cached_hit(&f, b, hb);
  int32_t newb[3 * 4];
  pkv_delta d[3] = {{0}};
  pkv_stats before = tu_stats(f.c);
  /* new_cap below the 2 new blocks */
  ck_assert_int_eq(admit_ex(&f, b, hb, 10, NULL, newb, 1, d), PKV_ENOSPC);
  /* a hit block that is not the cached one (group 1's block 8) */
  int32_t bad[3 * 10];
  memcpy(bad, hb, sizeof bad);
  bad[10 + 8] = bad[0];
  ck_assert_int_eq(admit_ex(&f, b, bad, 10, NULL, NULL, 0, NULL), PKV_ESTATE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "group 1: stale hit: entry 8"));
  /* group 0's blocks, but fewer hit tokens than the hit covers */
  pkv_append r;
  pkv_append_init(&r);
  r.tokens = f.t;
  r.n_tokens = 8;
  r.hit_blocks = hb;
  r.n_hit_blocks = 3;
  ck_assert_int_eq(pkv_groups_append_ex(f.g, b, &r, NULL), PKV_EINVAL);
  pkv_stats now = tu_stats(f.c);
  TU_STATS_SAME(before, now);
  ck_assert_uint_eq(d[0].n_tokens, 0); /* outputs untouched */
  /* A pool that holds one group's new blocks but not all three:
   * 40 blocks - 15 cached-and-needed... fill the pool first. */
  ck_assert_int_eq(pkv_groups_seq_create(f.g, NULL, c3), 0);
  pkv_append_init(&r);
  r.tokens = f.t + 20; /* other tokens: fresh blocks */
  r.n_tokens = 4;
  r.n_lookahead = 4 * 6 - 4; /* 6 blocks per group: 18 */
  ck_assert_int_eq(pkv_groups_append_ex(f.g, c3, &r, NULL), 0);
  /* 40 - 18 = 22 left: 15 cached blocks of the hit + 7 free; the admit
   * needs the 15 plus 2 new per group = 21 — fits; one more lookahead
   * block per group (3) does not. */
  r.tokens = f.t;
  r.n_tokens = 44;
  r.n_lookahead = 3 + BS;
  r.hit_blocks = hb;
  r.n_hit_blocks = 10;
  before = tu_stats(f.c);
  ck_assert_int_eq(pkv_groups_append_ex(f.g, b, &r, NULL), PKV_ENOMEM);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "available"));
  now = tu_stats(f.c);
  TU_STATS_SAME(before, now);
  for (uint32_t g = 0; g < 3; g++) ck_assert_uint_eq(nblocks(&f, b[g]), 0);
  ck_assert_uint_eq(first(&f, b, 1), 0);
  ck_assert_int_eq(admit_ex(&f, b, hb, 10, NULL, NULL, 0, d), 0);
  /* Groups at different lengths are refused. */
  ck_assert_int_eq(pkv_seq_append(f.c, c3[1], f.t, 1, NULL), 0);
  pkv_append_init(&r);
  r.tokens = f.t;
  r.n_tokens = 1;
  ck_assert_int_eq(pkv_groups_append_ex(f.g, c3, &r, NULL), PKV_ESTATE);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "group 1 is at"));
  /* Past max_tokens (lookahead included); unknown ids; NULL arguments. */
  pkv_append_init(&r);
  r.n_lookahead = 64 - 44 + 1; /* from the known length */
  ck_assert_int_eq(pkv_groups_append_ex(f.g, b, &r, NULL), PKV_ERANGE);
  ck_assert_int_eq(pkv_groups_seq_free(f.g, c3), 0);
  r.n_lookahead = 1;
  ck_assert_int_eq(pkv_groups_append_ex(f.g, c3, &r, NULL), PKV_ENOSEQ);
  ck_assert_int_eq(pkv_groups_append_ex(f.g, b, NULL, NULL), PKV_EINVAL);
  ck_assert_int_eq(pkv_groups_append_ex(NULL, b, &r, NULL), PKV_EINVAL);
  r.n_tokens = 2;
  ck_assert_int_eq(pkv_groups_append_ex(f.g, b, &r, NULL), PKV_EINVAL);
  down(&f);
}
END_TEST

TU_MAIN("groups",
    {"groups", 0, {{window}, {match}, {partial}, {bad_input}, {probe}, {append_ex},
                   {append_ex_bad}}})
