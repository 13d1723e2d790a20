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

TU_MAIN("groups",
    {"groups", 0, {{window}, {match}, {partial}, {bad_input}}})
