/*
 * check_tier.c — the stores below the pool (issue 14 items 1, 2, 5):
 *
 *   host       evicted blocks are demoted to the host tier and a match
 *              promotes them back with their K/V intact; all or nothing;
 *              the host tier's own policy and capacity; events and stats;
 *              external storage queues the copies instead.
 *   file       blocks below the host tier land in files and come back
 *              verified; a corrupt, truncated or foreign file is a miss and
 *              a counted error, never data; an unusable directory (a path
 *              under a regular file — refused as root too) and a full disk
 *              (the file size limit, which binds root too) fail clearly and
 *              leave the cache serving.
 *   quota      namespaces over their cap are evicted first; a reservation
 *              is never broken by another's demand; an allocation that would
 *              need to break one fails with PKV_ENOMEM, nothing changed.
 */
#include "tu_core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define BS 4
/* tu_config's shape: 2 layers x K,V x 2 heads x BS slots x 4 dims x f32 */
#define BLOCK_BYTES (2u * 2u * 2u * BS * 4u * 4u)
#define SLOT_BYTES (BLOCK_BYTES + BS * 4u)

static void toks(int32_t *t, uint32_t n, int32_t base) {
  for (uint32_t i = 0; i < n; i++) t[i] = base + (int32_t)i;
}

/* A sequence of n tokens from base with the K/V pattern `tag`, committed
 * and freed: its full blocks stay cached. */
static void cache_run(pkv_cache *c, const pkv_seq_opts *o, int32_t base,
                      uint32_t n, uint32_t tag) {
  int32_t t[256];
  int64_t slots[256];
  toks(t, n, base);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, o, &s), 0);
  int rc = pkv_seq_append(c, s, t, n, slots);
  ck_assert_msg(rc == 0, "append: %s", pkv_last_error());
  pkv_cache_config(c); /* owned mode only below */
  if (pkv_cache_config(c)->storage == PKV_STORAGE_OWNED)
    for (uint32_t i = 0; i < n; i++) tu_write_slot(c, slots[i], tag, i);
  ck_assert_int_eq(pkv_seq_commit(c, s, n), 0);
  ck_assert_int_eq(pkv_seq_free(c, s), 0);
}

/* Matches tokens base.. (n) in a new sequence; returns matched tokens and
 * (owned mode) checks every matched slot holds pattern `tag`. */
static uint32_t match_run(pkv_cache *c, const pkv_seq_opts *o, int32_t base,
                          uint32_t n, uint32_t tag, pkv_seq_id *out) {
  int32_t t[256];
  toks(t, n, base);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, o, &s), 0);
  uint32_t m = 99999;
  int rc = pkv_seq_match_prefix(c, s, t, n, 0, &m);
  ck_assert_msg(rc == 0, "match: %s", pkv_last_error());
  if (m && pkv_cache_config(c)->storage == PKV_STORAGE_OWNED) {
    int64_t slots[256];
    ck_assert_int_eq(pkv_slot_mapping(c, s, 0, m, slots), 0);
    for (uint32_t i = 0; i < m; i++)
      ck_assert_msg(tu_slot_matches(c, slots[i], tag, i),
                    "token %u: K/V differ after promotion", i);
  }
  TU_CHECK(c);
  if (out) *out = s;
  else ck_assert_int_eq(pkv_seq_free(c, s), 0);
  return m;
}

static pkv_tier_stats tstats(pkv_cache *c, uint32_t tier) {
  pkv_tier_stats st;
  int rc = pkv_tier_stats_get(c, tier, &st);
  ck_assert_msg(rc == 0, "tier_stats_get: %s", pkv_last_error());
  return st;
}

static uint32_t count_events(const tu_events *log, pkv_event_type type) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < log->n && i < 4096; i++) n += log->ev[i].type == type;
  return n;
}

/* An owned cache of num_blocks blocks with a host tier of host_slots
 * slots, every event into *log when log is not NULL. */
/* A cache in the given storage mode with a host tier of host_bytes (events
 * to log when given). */
static pkv_cache *tiered_cache(pkv_storage storage, uint32_t num_blocks,
                               uint64_t host_bytes, tu_events *log) {
  pkv_config cfg;
  tu_config(&cfg, storage, num_blocks, BS);
  cfg.host_tier_bytes = host_bytes;
  if (log) {
    cfg.on_event = tu_event_log;
    cfg.event_user = log;
  }
  return tu_cache(&cfg);
}

/* An owned cache whose host tier holds host_slots blocks. */
static pkv_cache *host_cache(uint32_t num_blocks, uint32_t host_slots, tu_events *log) {
  return tiered_cache(PKV_STORAGE_OWNED, num_blocks, (uint64_t)host_slots * SLOT_BYTES, log);
}

/* ------------------------------------------------------------ host */

START_TEST(host_demote_promote) {
  static tu_events log;
  memset(&log, 0, sizeof log);
  pkv_cache *c = host_cache(4, 16, &log);
  cache_run(c, NULL, 1000, 16, 1);   /* A: 4 blocks, the whole pool */
  cache_run(c, NULL, 2000, 16, 2);   /* B evicts A: demoted */
  pkv_tier_stats h = tstats(c, PKV_TIER_HOST);
  ck_assert_str_eq(h.name, "host");
  ck_assert_uint_eq(h.puts, 4);
  ck_assert_uint_eq(h.blocks, 4);
  ck_assert_uint_eq(h.bytes_used, 4 * SLOT_BYTES);
  ck_assert_uint_eq(count_events(&log, PKV_EVENT_DEMOTED), 4);
  /* A again: promoted (B demoted to make room), K/V exact */
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 16);
  h = tstats(c, PKV_TIER_HOST);
  ck_assert_uint_eq(h.promotions, 4);
  ck_assert_uint_eq(h.hits, 4);
  ck_assert_uint_eq(h.blocks, 4); /* B's now */
  ck_assert_uint_eq(count_events(&log, PKV_EVENT_PROMOTED), 4);
  ck_assert_uint_eq(count_events(&log, PKV_EVENT_DEMOTED), 8);
  for (uint32_t i = 0; i < log.n; i++)
    if (log.ev[i].type == PKV_EVENT_PROMOTED || log.ev[i].type == PKV_EVENT_DEMOTED)
      ck_assert_uint_eq(log.ev[i].index, PKV_TIER_HOST);
  /* and B back as well */
  ck_assert_uint_eq(match_run(c, NULL, 2000, 16, 2, NULL), 16);
  /* a partial hit: the first 2 blocks of A then different tokens */
  int32_t t[16];
  toks(t, 16, 1000);
  t[9] = 7;
  ck_assert_uint_eq(tu_match_new(c, t, 16, 0, NULL), 8);
  TU_DONE(c);
}
END_TEST

START_TEST(host_all_or_nothing) {
  pkv_cache *c = host_cache(4, 16, NULL);
  cache_run(c, NULL, 1000, 16, 1);
  cache_run(c, NULL, 2000, 16, 2); /* A in the host tier */
  /* two blocks held by a live sequence: only 2 of A's 4 would fit */
  int32_t t[8];
  toks(t, 8, 5000);
  pkv_seq_id hold;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &hold), 0);
  ck_assert_int_eq(pkv_seq_append(c, hold, t, 8, NULL), 0);
  pkv_stats before = tu_stats(c);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 0);
  ck_assert_uint_eq(tstats(c, PKV_TIER_HOST).promotions, 0);
  ck_assert_uint_eq(tu_stats(c).evictions, before.evictions);
  /* once the pool has room, the whole run comes back */
  ck_assert_int_eq(pkv_seq_free(c, hold), 0);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 16);
  pkv_cache_destroy(c);
}
END_TEST

/* The serving path: pkv_prefix_promote, then probe and append_ex attach. */
START_TEST(host_serving_path) {
  pkv_cache *c = host_cache(6, 16, NULL);
  cache_run(c, NULL, 1000, 16, 1);
  cache_run(c, NULL, 2000, 16, 2); /* A's first two blocks stay, two demoted */
  int32_t t[16];
  toks(t, 16, 1000);
  uint32_t hit, promoted;
  int32_t blocks[4];
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, t, 16, 0, blocks, 4, &hit), 0);
  ck_assert_uint_lt(hit, 16);
  ck_assert_int_eq(pkv_prefix_promote(c, NULL, t, 16, 0, &promoted), 0);
  ck_assert_uint_eq(hit + promoted, 16);
  ck_assert_int_eq(pkv_prefix_probe(c, NULL, t, 16, 0, blocks, 4, &hit), 0);
  ck_assert_uint_eq(hit, 16);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  pkv_append req;
  pkv_append_init(&req);
  req.tokens = t;
  req.n_tokens = 16;
  req.hit_blocks = blocks;
  req.n_hit_blocks = 4;
  ck_assert_int_eq(pkv_seq_append_ex(c, s, &req, NULL), 0);
  int64_t slots[16];
  ck_assert_int_eq(pkv_slot_mapping(c, s, 0, 16, slots), 0);
  for (uint32_t i = 0; i < 16; i++)
    ck_assert_msg(tu_slot_matches(c, slots[i], 1, i), "token %u", i);
  /* nothing more to promote; no tiers: 0; bad arguments */
  ck_assert_int_eq(pkv_prefix_promote(c, NULL, t, 16, 0, &promoted), 0);
  ck_assert_uint_eq(promoted, 0);
  ck_assert_int_eq(pkv_prefix_promote(c, NULL, NULL, 16, 0, &promoted), PKV_EINVAL);
  ck_assert_int_eq(pkv_prefix_promote(c, NULL, t, 16, 0, NULL), PKV_EINVAL);
  TU_DONE(c);
}
END_TEST

START_TEST(host_own_policy) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 4, BS);
  cfg.host_tier_bytes = 2 * SLOT_BYTES + 7; /* two slots */
  cfg.host_tier_policy = "fifo";
  pkv_cache *c = tu_cache(&cfg);
  ck_assert_str_eq(pkv_cache_config(c)->host_tier_policy, "fifo");
  cache_run(c, NULL, 1000, 16, 1);
  cache_run(c, NULL, 2000, 16, 2);
  pkv_tier_stats h = tstats(c, PKV_TIER_HOST);
  ck_assert_uint_eq(h.puts, 4);
  ck_assert_uint_eq(h.blocks, 2);
  ck_assert_uint_eq(h.evictions, 2);
  ck_assert_uint_eq(h.capacity_bytes, 2 * SLOT_BYTES);
  /* fifo kept A's last two blocks: A's chain head is gone, no hit */
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 0);
  /* no file tier: ENOENT; bad index EINVAL */
  pkv_tier_stats st;
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_FILE, &st), PKV_ENOENT);
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_MAX, &st), PKV_EINVAL);
  ck_assert_int_eq(pkv_tier_stats_get(c, 0, NULL), PKV_EINVAL);
  pkv_cache_destroy(c);
}
END_TEST

START_TEST(host_config_errors) {
  pkv_config cfg;
  pkv_cache *c = NULL;
  tu_config(&cfg, PKV_STORAGE_OWNED, 4, BS);
  cfg.host_tier_bytes = 16 * SLOT_BYTES;
  cfg.host_tier_policy = "no-such-policy";
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), PKV_ENOENT);
  ck_assert_ptr_null(c);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "host_tier_policy"));
  cfg.host_tier_policy = NULL;
  cfg.host_tier_bytes = 100; /* below one block */
  ck_assert_int_eq(pkv_cache_create(&cfg, &c), PKV_EINVAL);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "host_tier_bytes"));
  /* a version-2 caller never set the field: no tier, accepted */
  tu_config(&cfg, PKV_STORAGE_OWNED, 4, BS);
  cfg.version = 2;
  c = tu_cache(&cfg);
  pkv_tier_stats st;
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_HOST, &st), PKV_ENOENT);
  pkv_cache_destroy(c);
}
END_TEST

START_TEST(host_external_copies) {
  pkv_cache *c = tiered_cache(PKV_STORAGE_EXTERNAL, 4, 8 * BLOCK_BYTES, NULL);
  ck_assert_uint_eq(tstats(c, PKV_TIER_HOST).capacity_bytes, 8 * BLOCK_BYTES);
  cache_run(c, NULL, 1000, 16, 1);
  /* A's blocks, in table order */
  int32_t a_blocks[4];
  {
    int32_t t[16];
    toks(t, 16, 1000);
    uint32_t hit;
    ck_assert_int_eq(pkv_prefix_probe(c, NULL, t, 16, 0, a_blocks, 4, &hit), 0);
    ck_assert_uint_eq(hit, 16);
  }
  cache_run(c, NULL, 2000, 16, 2);
  pkv_tier_copy q[16];
  uint32_t n, pending;
  ck_assert_int_eq(pkv_tier_drain_copies(c, q, 16, &n, &pending), 0);
  ck_assert_uint_eq(n, 4);
  ck_assert_uint_eq(pending, 0);
  uint32_t slot_of[4];
  for (uint32_t i = 0; i < 4; i++) {
    ck_assert_uint_eq(q[i].op, PKV_TIER_COPY_DEMOTE);
    ck_assert_uint_eq(q[i].tier, PKV_TIER_HOST);
    ck_assert_uint_lt(q[i].slot, 8);
    int found = 0;
    for (uint32_t j = 0; j < 4; j++)
      if (a_blocks[j] == q[i].block) {
        slot_of[j] = q[i].slot;
        found = 1;
      }
    ck_assert_msg(found, "demote copy of a block that was not A's");
  }
  pkv_seq_id s;
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, &s), 16);
  int32_t tbl[4];
  uint32_t nb;
  ck_assert_int_eq(pkv_seq_blocks(c, s, tbl, 4, &nb), 0);
  ck_assert_int_eq(pkv_tier_drain_copies(c, q, 16, &n, &pending), 0);
  /* 4 demotions of B (room), then 4 promotions of A into s's table */
  ck_assert_uint_eq(n, 8);
  for (uint32_t i = 0; i < 4; i++) ck_assert_uint_eq(q[i].op, PKV_TIER_COPY_DEMOTE);
  for (uint32_t i = 0; i < 4; i++) {
    ck_assert_uint_eq(q[4 + i].op, PKV_TIER_COPY_PROMOTE);
    ck_assert_int_eq(q[4 + i].block, tbl[i]);
    ck_assert_uint_eq(q[4 + i].slot, slot_of[i]);
  }
  ck_assert_int_eq(pkv_tier_drain_copies(c, NULL, 0, &n, NULL), 0);
  ck_assert_int_eq(pkv_tier_drain_copies(c, NULL, 1, &n, NULL), PKV_EINVAL);
  /* no file tier in external mode */
  ck_assert_int_eq(pkv_cache_set_file_tier(c, "/tmp", 0), PKV_ENOTSUP);
  TU_DONE(c);
}
END_TEST

/* External storage, many blocks per call: a promotion whose own evictions
 * queue demotion copies first must still have room for its copies (a heap
 * overflow once; ASan watches this). */
START_TEST(host_external_many) {
  pkv_cache *c = tiered_cache(PKV_STORAGE_EXTERNAL, 32, 64 * BLOCK_BYTES, NULL);
  for (int round = 0; round < 3; round++) {
    cache_run(c, NULL, 1000, 128, 1);
    cache_run(c, NULL, 5000, 128, 2);
    ck_assert_uint_eq(match_run(c, NULL, 1000, 128, 1, NULL), 128);
    pkv_tier_copy q[256];
    uint32_t n, pending;
    ck_assert_int_eq(pkv_tier_drain_copies(c, q, 256, &n, &pending), 0);
    ck_assert_uint_eq(pending, 0);
    uint32_t promotes = 0;
    for (uint32_t i = 0; i < n; i++) promotes += q[i].op == PKV_TIER_COPY_PROMOTE;
    ck_assert_uint_eq(promotes, 32);
  }
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------------------ file */

static char g_dir[256];

static void tmpdir_make(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/pkv_tier_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static void tmpdir_rm(void) {
  DIR *d = opendir(g_dir);
  if (!d) return;
  struct dirent *de;
  char p[512];
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' && (de->d_name[1] == 0 || de->d_name[1] == '.')) continue;
    snprintf(p, sizeof p, "%s/%s", g_dir, de->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(g_dir);
}

/* A 4-block cache with host_slots host slots and a file tier of max_bytes
 * in a new temporary directory. */
static pkv_cache *file_cache(uint32_t host_slots, uint64_t max_bytes,
                             tu_events *log) {
  pkv_cache *c = host_cache(4, host_slots, log);
  tmpdir_make();
  ck_assert_int_eq(pkv_cache_set_file_tier(c, g_dir, max_bytes), 0);
  return c;
}

static uint32_t count_files(void) {
  DIR *d = opendir(g_dir);
  ck_assert_ptr_nonnull(d);
  uint32_t n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) n += strstr(de->d_name, ".blk") != NULL;
  closedir(d);
  return n;
}

/* The path of the file of the block whose key is k. */
static void file_of(char *out, size_t cap, pkv_hash128 k) {
  snprintf(out, cap, "%s/%016llx%016llx.blk", g_dir, (unsigned long long)k.hi,
           (unsigned long long)k.lo);
}

/* A cache with a file tier only; A (4 blocks, keys in a_keys) demoted to
 * files by B. */
static pkv_cache *file_setup(pkv_hash128 a_keys[4], tu_events *log) {
  pkv_cache *c = file_cache(0, 0, log);
  cache_run(c, NULL, 1000, 16, 1);
  uint32_t k = 0;
  for (uint32_t i = 0; i < log->n; i++)
    if (log->ev[i].type == PKV_EVENT_STORED && k < 4) a_keys[k++] = log->ev[i].key;
  ck_assert_uint_eq(k, 4);
  cache_run(c, NULL, 2000, 16, 2);
  ck_assert_uint_eq(count_files(), 4);
  return c;
}

START_TEST(file_roundtrip) {
  static tu_events log;
  memset(&log, 0, sizeof log);
  pkv_hash128 keys[4];
  pkv_cache *c = file_setup(keys, &log);
  pkv_tier_stats f = tstats(c, PKV_TIER_FILE);
  ck_assert_str_eq(f.name, "file");
  ck_assert_uint_eq(f.puts, 4);
  ck_assert_uint_eq(f.blocks, 4);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 16);
  f = tstats(c, PKV_TIER_FILE);
  ck_assert_uint_eq(f.hits, 4);
  ck_assert_uint_eq(f.promotions, 4);
  ck_assert_uint_eq(f.errors, 0);
  /* a second cache on the same directory finds them (restart) */
  pkv_cache *c2 = tu_cache_new(PKV_STORAGE_OWNED, 8, BS);
  ck_assert_int_eq(pkv_cache_set_file_tier(c2, g_dir, 0), 0);
  ck_assert_int_eq(pkv_cache_set_file_tier(c2, g_dir, 0), PKV_ESTATE);
  ck_assert_uint_ge(tstats(c2, PKV_TIER_FILE).blocks, 4);
  ck_assert_uint_eq(match_run(c2, NULL, 2000, 16, 2, NULL), 16);
  pkv_cache_destroy(c2);
  pkv_cache_destroy(c);
  tmpdir_rm();
}
END_TEST

START_TEST(file_below_host) {
  pkv_cache *c = file_cache(2, 0, NULL);
  cache_run(c, NULL, 1000, 16, 1);
  cache_run(c, NULL, 2000, 16, 2);
  /* host keeps 2 of A's, the other 2 went to files */
  ck_assert_uint_eq(tstats(c, PKV_TIER_HOST).blocks, 2);
  ck_assert_uint_eq(tstats(c, PKV_TIER_FILE).blocks, 2);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 16);
  /* the promotion's own evictions demote B into the host tier, which
   * passes what it held down: A comes back from either tier, all of it */
  ck_assert_uint_eq(tstats(c, PKV_TIER_HOST).promotions +
                        tstats(c, PKV_TIER_FILE).promotions, 4);
  ck_assert_uint_ge(tstats(c, PKV_TIER_FILE).promotions, 2);
  pkv_cache_destroy(c);
  tmpdir_rm();
}
END_TEST

static void flip_byte(const char *path, long at) {
  int fd = open(path, O_RDWR);
  ck_assert_int_ge(fd, 0);
  uint8_t b;
  ck_assert_int_eq(pread(fd, &b, 1, at), 1);
  b ^= 0x5a;
  ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
  close(fd);
}

START_TEST(file_bad_files) {
  static tu_events log;
  memset(&log, 0, sizeof log);
  pkv_hash128 keys[4];
  pkv_cache *c = file_setup(keys, &log);
  char p0[512], p1[512], p2[512], p3[512];
  file_of(p0, sizeof p0, keys[0]);
  file_of(p1, sizeof p1, keys[1]);
  file_of(p2, sizeof p2, keys[2]);
  file_of(p3, sizeof p3, keys[3]);
  /* corrupt K/V of block 1 (past the 80-byte header and the tokens) */
  flip_byte(p1, 80 + BS * 4 + 17);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 4);
  pkv_tier_stats f = tstats(c, PKV_TIER_FILE);
  ck_assert_uint_eq(f.errors, 1);
  ck_assert_uint_eq(f.promotions, 1);
  ck_assert_int_ne(access(p1, F_OK), 0); /* the bad file is removed */
  pkv_cache_destroy(c);
  tmpdir_rm();

  /* truncated */
  memset(&log, 0, sizeof log);
  c = file_setup(keys, &log);
  file_of(p0, sizeof p0, keys[0]);
  ck_assert_int_eq(truncate(p0, 100), 0);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 0);
  ck_assert_uint_eq(tstats(c, PKV_TIER_FILE).errors, 1);
  pkv_cache_destroy(c);
  tmpdir_rm();

  /* foreign: another block's file under block 0's name; a token changed
   * in the file of block 2 (key and header intact) */
  memset(&log, 0, sizeof log);
  c = file_setup(keys, &log);
  file_of(p0, sizeof p0, keys[0]);
  file_of(p2, sizeof p2, keys[2]);
  file_of(p3, sizeof p3, keys[3]);
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", p3, p0);
  ck_assert_int_eq(system(cmd), 0);
  flip_byte(p2, 80);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 0);
  ck_assert_uint_eq(tstats(c, PKV_TIER_FILE).errors, 1);
  /* the cache still serves */
  cache_run(c, NULL, 3000, 8, 3);
  ck_assert_uint_eq(match_run(c, NULL, 3000, 8, 3, NULL), 8);
  pkv_cache_destroy(c);
  tmpdir_rm();
}
END_TEST

START_TEST(file_bad_dir) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 4, BS);
  tmpdir_make();
  /* a directory under a regular file: ENOTDIR, whoever we are */
  char file[512], sub[600];
  snprintf(file, sizeof file, "%s/plain", g_dir);
  FILE *fp = fopen(file, "w");
  ck_assert_ptr_nonnull(fp);
  fclose(fp);
  snprintf(sub, sizeof sub, "%s/tier", file);
  ck_assert_int_eq(pkv_cache_set_file_tier(c, sub, 0), PKV_ENOENT);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "Not a directory"));
  ck_assert_int_eq(pkv_cache_set_file_tier(c, file, 0), PKV_ENOENT);
  ck_assert_int_eq(pkv_cache_set_file_tier(c, NULL, 0), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_set_file_tier(c, "", 0), PKV_EINVAL);
  pkv_tier_stats st;
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_FILE, &st), PKV_ENOENT);
  cache_run(c, NULL, 1000, 16, 1);
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 16);
  pkv_cache_destroy(c);
  unlink(file);
  tmpdir_rm();
}
END_TEST

/* A full disk: the file size limit (RLIMIT_FSIZE binds root as well) makes
 * every block write fail part-way. */
START_TEST(file_disk_full) {
  pkv_cache *c = file_cache(0, 0, NULL);
  struct rlimit old, lim;
  ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 100; /* a record is 80 + 16 + 512 bytes */
  void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  cache_run(c, NULL, 1000, 16, 1);
  cache_run(c, NULL, 2000, 16, 2);
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, oldsig);
  pkv_tier_stats f = tstats(c, PKV_TIER_FILE);
  ck_assert_uint_eq(f.errors, 4);
  ck_assert_uint_eq(f.skipped, 4);
  ck_assert_uint_eq(f.puts, 0);
  ck_assert_uint_eq(count_files(), 0);
  DIR *d = opendir(g_dir); /* no temporary file left either */
  struct dirent *de;
  uint32_t n = 0;
  while ((de = readdir(d)) != NULL) n += de->d_name[0] != '.' || strlen(de->d_name) > 2;
  closedir(d);
  ck_assert_uint_eq(n, 0);
  /* nothing served from the tier, the cache works, and writes resume */
  ck_assert_uint_eq(match_run(c, NULL, 1000, 16, 1, NULL), 0);
  cache_run(c, NULL, 1000, 16, 1); /* B (in the pool) demoted now */
  ck_assert_uint_eq(tstats(c, PKV_TIER_FILE).puts, 4);
  ck_assert_uint_eq(count_files(), 4);
  ck_assert_uint_eq(match_run(c, NULL, 2000, 16, 2, NULL), 16);
  pkv_cache_destroy(c);
  tmpdir_rm();
}
END_TEST

START_TEST(file_capacity) {
  uint64_t rec = 80 + BS * 4 + BLOCK_BYTES;
  pkv_cache *c = file_cache(0, 3 * rec, NULL);
  cache_run(c, NULL, 1000, 16, 1);
  cache_run(c, NULL, 2000, 16, 2);
  pkv_tier_stats f = tstats(c, PKV_TIER_FILE);
  ck_assert_uint_eq(f.blocks, 3);
  ck_assert_uint_eq(f.evictions, 1);
  ck_assert_uint_eq(count_files(), 3);
  ck_assert_uint_le(f.bytes_used, f.capacity_bytes);
  pkv_cache_destroy(c);
  tmpdir_rm();
}
END_TEST

/* ------------------------------------------------------------ quota */

static pkv_seq_opts ns_opts(const char *name) {
  pkv_seq_opts o;
  pkv_seq_opts_init(&o);
  o.ns = name;
  o.ns_len = strlen(name);
  return o;
}

static uint32_t probe(pkv_cache *c, const pkv_seq_opts *o, int32_t base,
                      uint32_t n) {
  int32_t t[256];
  toks(t, n, base);
  uint32_t hit;
  ck_assert_int_eq(pkv_prefix_probe(c, o, t, n, 0, NULL, 0, &hit), 0);
  return hit;
}

/* Namespace a (cap 2) holds 4 cached blocks, b 4 older ones: the next
 * evictions take a's down to its cap before touching b's. */
START_TEST(quota_over_cap_first) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 10, BS);
  pkv_seq_opts a = ns_opts("tenant-a"), b = ns_opts("tenant-b");
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 2, 0), 0);
  /* b's blocks as 4 one-block chains, a's too (so each eviction shows) */
  for (int i = 0; i < 4; i++) cache_run(c, &b, 100 * i, 4, 2);
  for (int i = 0; i < 4; i++) cache_run(c, &a, 100 * i, 4, 1);
  int32_t t[12];
  toks(t, 12, 9000);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, t, 12, NULL), 0); /* 2 free + 1 */
  ck_assert_int_eq(pkv_seq_append(c, s, t, 4, NULL), 0);  /* one more */
  /* two evictions: both from a (over its cap), b untouched */
  uint32_t a_left = 0, b_left = 0;
  for (int i = 0; i < 4; i++) {
    a_left += probe(c, &a, 100 * i, 4) / BS;
    b_left += probe(c, &b, 100 * i, 4) / BS;
  }
  ck_assert_uint_eq(a_left, 2);
  ck_assert_uint_eq(b_left, 4);
  /* a is at its cap now: plain LRU again, b's oldest goes */
  ck_assert_int_eq(pkv_seq_append(c, s, t, 4, NULL), 0);
  ck_assert_uint_eq(probe(c, &b, 0, 4), 0);
  ck_assert_uint_eq(probe(c, &b, 100, 4), 4);
  TU_DONE(c);
}
END_TEST

/* Usage counts the blocks a namespace's sequences hold, not only its
 * cached ones: a (cap 4) caches 2 blocks and holds 3 more in a live
 * sequence, so it is over its cap and b's demand takes a's cached block
 * first, though a's cached count (2) is under the cap and b's are older. */
static pkv_cache *owned_cache(uint32_t num_blocks) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, num_blocks, BS);
  return tu_cache(&cfg);
}

START_TEST(quota_counts_in_use) {
  pkv_cache *c = owned_cache(10);
  pkv_seq_opts a = ns_opts("tenant-a"), b = ns_opts("tenant-b");
  for (int i = 0; i < 4; i++) cache_run(c, &b, 100 * i, 4, 2); /* oldest */
  for (int i = 0; i < 2; i++) cache_run(c, &a, 100 * i, 4, 1);
  int32_t t[12];
  toks(t, 12, 7000);
  pkv_seq_id sa, sb;
  ck_assert_int_eq(pkv_seq_create(c, &a, &sa), 0);
  ck_assert_int_eq(pkv_seq_append(c, sa, t, 12, NULL), 0); /* 3 held, uncommitted */
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 4, 0), 0);      /* set while held */
  TU_CHECK(c);
  toks(t, 8, 9000);
  ck_assert_int_eq(pkv_seq_create(c, &b, &sb), 0);
  ck_assert_int_eq(pkv_seq_append(c, sb, t, 8, NULL), 0); /* 1 free + 1 evicted */
  uint32_t left[2][4]; /* blocks of a's and b's one-block chains still cached */
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < 4; i++) {
      left[0][i] = i < 2 ? probe(c, &a, 100 * i, 4) / BS : 0;
      left[1][i] = probe(c, &b, 100 * i, 4) / BS;
    }
    /* pass 0: a lost one (over its cap), b none; pass 1: a at its cap
     * (1 cached + 3 held), so plain LRU took b's oldest */
    ck_assert_uint_eq(left[0][0] + left[0][1], 1);
    ck_assert_uint_eq(left[1][0] + left[1][1] + left[1][2] + left[1][3], 4 - pass);
    ck_assert_uint_eq(left[1][0], pass ? 0 : 1);
    TU_CHECK(c);
    if (pass == 0) ck_assert_int_eq(pkv_seq_append(c, sb, t, 4, NULL), 0);
  }
  /* freeing a's sequence releases its held blocks from the count */
  ck_assert_int_eq(pkv_seq_free(c, sa), 0);
  TU_CHECK(c);
  pkv_cache_destroy(c);
}
END_TEST

/* A reservation is met by held blocks too: a reserves 3 and holds 2 in a
 * live sequence plus 2 cached, so one cached block may go for another's
 * demand, the second may not. */
START_TEST(quota_reserve_counts_in_use) {
  pkv_cache *c = owned_cache(8);
  pkv_seq_opts a = ns_opts("tenant-a");
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 0, 3), 0);
  cache_run(c, &a, 0, 8, 1); /* 2 cached */
  int32_t t[8];
  toks(t, 8, 5000);
  pkv_seq_id sa;
  ck_assert_int_eq(pkv_seq_create(c, &a, &sa), 0);
  ck_assert_int_eq(pkv_seq_append(c, sa, t, 8, NULL), 0); /* 2 held */
  TU_CHECK(c);
  ck_assert_int_eq(pkv_evict(c, 2), PKV_ERANGE);
  ck_assert_int_eq(pkv_evict(c, 1), 0);
  ck_assert_int_eq(pkv_evict(c, 1), PKV_ERANGE);
  /* the sequence ends: its blocks no longer count, the last cached one is
   * protected again (usage 1 < 3) */
  ck_assert_int_eq(pkv_seq_free(c, sa), 0);
  ck_assert_int_eq(pkv_evict(c, 1), PKV_ERANGE);
  TU_CHECK(c);
  pkv_cache_destroy(c);
}
END_TEST

/* a reserves 4: another namespace's demand never evicts a below 4, and an
 * append that could only be served that way is PKV_ENOMEM, nothing changed. */
START_TEST(quota_reservation) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 8, BS);
  pkv_seq_opts a = ns_opts("tenant-a"), b = ns_opts("tenant-b");
  /* set before the namespace exists: bound when it is created */
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 0, 4), 0);
  cache_run(c, &a, 0, 16, 1);    /* a: 4 blocks, oldest */
  cache_run(c, &b, 500, 16, 2);  /* b: 4 blocks */
  pkv_capacity cap;
  ck_assert_int_eq(pkv_cache_capacity(c, &cap), 0);
  ck_assert_uint_eq(cap.evictable, 8);
  int32_t t[24];
  toks(t, 24, 9000);
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, &b, &s), 0);
  pkv_stats before = tu_stats(c);
  ck_assert_int_eq(pkv_seq_append(c, s, t, 24, NULL), PKV_ENOMEM);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "block"));
  pkv_stats after = tu_stats(c);
  TU_STATS_SAME(before, after);
  TU_CHECK(c);
  /* 4 blocks: served from b's own (and LRU would have taken a's first) */
  ck_assert_int_eq(pkv_seq_append(c, s, t, 16, NULL), 0);
  ck_assert_uint_eq(probe(c, &a, 0, 16), 16);
  ck_assert_uint_eq(probe(c, &b, 500, 16), 0);
  /* pkv_evict respects it too */
  ck_assert_int_eq(pkv_evict(c, 1), PKV_ERANGE);
  /* lowering the reservation frees them at once */
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 0, 2), 0);
  ck_assert_int_eq(pkv_evict(c, 2), 0);
  ck_assert_int_eq(pkv_evict(c, 1), PKV_ERANGE);
  TU_DONE(c);
}
END_TEST

START_TEST(quota_args) {
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 8, BS);
  pkv_seq_opts a = ns_opts("a"), b = ns_opts("b");
  ck_assert_int_eq(pkv_ns_set_quota(NULL, &a, 2, 1), PKV_EINVAL);
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 2, 3), PKV_EINVAL);
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 0, 9), PKV_EINVAL);
  pkv_seq_opts bad = a;
  bad.ns = NULL;
  ck_assert_int_eq(pkv_ns_set_quota(c, &bad, 2, 1), PKV_EINVAL);
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 0, 5), 0);
  ck_assert_int_eq(pkv_ns_set_quota(c, &b, 0, 4), PKV_ERANGE);
  ck_assert_int_eq(pkv_ns_set_quota(c, &a, 0, 4), 0); /* replaces a's */
  ck_assert_int_eq(pkv_ns_set_quota(c, &b, 0, 4), 0);
  ck_assert_int_eq(pkv_ns_set_quota(c, NULL, 3, 0), 0); /* default ns */
  TU_DONE(c);
}
END_TEST

/* ------------------------------------------------------------ oom */

/* Fails allocation k = 1, 2, ... of op until it succeeds: each failure is
 * PKV_ENOMEM with a detail, pkv_check passes and the stats are unchanged. */
typedef int (*oom_op)(pkv_cache *c);
static void oom_sweep(pkv_cache *c, const char *what, oom_op op) {
  for (long k = 1; k < 10000; k++) {
    pkv_stats before = tu_stats(c);
    tu_alloc_install(k);
    int rc = op(c);
    char detail[256];
    snprintf(detail, sizeof detail, "%s", pkv_last_error());
    tu_alloc_install(0);
    if (rc == 0) return;
    ck_assert_msg(rc == PKV_ENOMEM, "%s: failing allocation %ld gave %s (%s)",
                  what, k, pkv_err_name(rc), detail);
    ck_assert_msg(detail[0], "%s: ENOMEM without detail", what);
    pkv_stats after = tu_stats(c);
    ck_assert_msg(memcmp(&before, &after, sizeof before) == 0,
                  "%s: failing allocation %ld changed the stats", what, k);
    TU_CHECK(c);
  }
  ck_abort_msg("%s: never succeeded", what);
}

static int op_quota(pkv_cache *c) {
  pkv_seq_opts a = ns_opts("tenant-a");
  return pkv_ns_set_quota(c, &a, 4, 2);
}
static int op_file_tier(pkv_cache *c) {
  return pkv_cache_set_file_tier(c, g_dir, 0);
}
static int op_save(pkv_cache *c) { return pkv_cache_save(c, g_dir); }
static int op_load(pkv_cache *c) { return pkv_cache_load(c, g_dir); }

START_TEST(oom_sites) {
  tu_alloc_install(0);
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, BS);
  cfg.host_tier_bytes = 4 * SLOT_BYTES;
  /* create with a host tier: every site fails cleanly, nothing leaks */
  for (long k = 1; k < 1000; k++) {
    long live0 = tu_alloc_live();
    tu_alloc_install(k);
    pkv_cache *c = NULL;
    int rc = pkv_cache_create(&cfg, &c);
    tu_alloc_install(0);
    if (rc == 0) {
      pkv_cache_destroy(c);
      ck_assert_int_eq(tu_alloc_live(), live0);
      break;
    }
    ck_assert_int_eq(rc, PKV_ENOMEM);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(tu_alloc_live(), live0);
  }
  pkv_cache *c = tu_cache(&cfg);
  pkv_seq_opts a = ns_opts("tenant-a");
  cache_run(c, &a, 100, 16, 1);
  oom_sweep(c, "ns_set_quota", op_quota);
  tmpdir_make();
  oom_sweep(c, "cache_save", op_save);
  pkv_cache *d = tu_cache(&cfg);
  oom_sweep(d, "cache_load", op_load);
  ck_assert_uint_eq(match_run(d, &a, 100, 16, 1, NULL), 16);
  pkv_cache_destroy(d);
  char sub[200];
  memcpy(sub, g_dir, sizeof sub - 1); /* "/tmp/pkv_tier_XXXXXX" */
  sub[sizeof sub - 1] = 0;
  snprintf(g_dir, sizeof g_dir, "%.200s/tier", sub);
  oom_sweep(c, "set_file_tier", op_file_tier);
  pkv_cache_destroy(c);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", sub);
  ck_assert_int_eq(system(cmd), 0);
  tu_alloc_restore();
}
END_TEST

TU_MAIN("tier",
    {"host", 0, {{host_demote_promote}, {host_all_or_nothing}, {host_serving_path},
                 {host_own_policy}, {host_config_errors}, {host_external_copies},
                 {host_external_many}}},
    {"file", 0, {{file_roundtrip}, {file_below_host}, {file_bad_files}, {file_bad_dir},
                 {file_disk_full}, {file_capacity}}},
    {"quota", 0, {{quota_over_cap_first}, {quota_reservation}, {quota_counts_in_use},
                  {quota_reserve_counts_in_use}, {quota_args}}},
    {"oom", 0, {{oom_sites}}})
