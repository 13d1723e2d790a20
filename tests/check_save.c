/*
 * check_save.c — save / restore (issue 14 item 3):
 *
 *   roundtrip   a saved cache loads into a new one with the same keys,
 *               token ids and K/V; one sequence alone; namespaces kept.
 *   mismatch    a different block_size / n_layers / n_kv_heads / head_dim /
 *               dtype is PKV_EINVAL naming the field, nothing loaded.
 *   damaged     a corrupt or truncated save, a missing or garbage MANIFEST:
 *               PKV_ECORRUPT / PKV_ENOENT, nothing loaded, cache usable.
 *   crash       a child saving is killed with SIGKILL at random moments,
 *               many times: the directory always loads, with exactly the
 *               old or the new content.
 *   bad dir     a path under a regular file (refused as root too); a save
 *               that hits the file size limit (a full disk) fails with
 *               PKV_ENOSPC and leaves the previous save loadable.
 */
#include "tu_core.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BS 4

static char g_dir[256];

static void dir_make(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/pkv_save_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static void dir_rm(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  ck_assert_int_eq(system(cmd), 0);
}

static pkv_cache *mk(uint32_t nb, uint32_t bs) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, nb, bs);
  return tu_cache(&cfg);
}

/* n tokens from base with K/V pattern tag, committed, freed (cached). */
static void put_run(pkv_cache *c, const pkv_seq_opts *o, int32_t base,
                    uint32_t n, uint32_t tag, bool keep, pkv_seq_id *out) {
  int32_t t[256];
  int64_t slots[256];
  for (uint32_t i = 0; i < n; i++) t[i] = base + (int32_t)i;
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, o, &s), 0);
  ck_assert_int_eq(pkv_seq_append(c, s, t, n, slots), 0);
  for (uint32_t i = 0; i < n; i++) tu_write_slot(c, slots[i], tag, i);
  ck_assert_int_eq(pkv_seq_commit(c, s, n), 0);
  if (keep) *out = s;
  else ck_assert_int_eq(pkv_seq_free(c, s), 0);
}

/* Tokens of base.. matched in c (K/V checked against tag). */
static uint32_t hit(pkv_cache *c, const pkv_seq_opts *o, int32_t base,
                    uint32_t n, uint32_t tag) {
  int32_t t[256];
  for (uint32_t i = 0; i < n; i++) t[i] = base + (int32_t)i;
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, o, &s), 0);
  uint32_t m;
  ck_assert_int_eq(pkv_seq_match_prefix(c, s, t, n, 0, &m), 0);
  int64_t slots[256];
  if (m) ck_assert_int_eq(pkv_slot_mapping(c, s, 0, m, slots), 0);
  for (uint32_t i = 0; i < m; i++)
    TU_ASSERT(tu_slot_matches(c, slots[i], tag, i), "token %u: K/V differ", i);
  ck_assert_int_eq(pkv_seq_free(c, s), 0);
  return m;
}

START_TEST(roundtrip) {
  dir_make();
  pkv_cache *c = mk(16, BS);
  pkv_seq_opts o;
  pkv_seq_opts_init(&o);
  o.ns = "tenant";
  o.ns_len = 6;
  o.adapter_id = 7;
  put_run(c, NULL, 100, 16, 1, false, NULL);
  put_run(c, &o, 100, 8, 2, false, NULL);
  ck_assert_int_eq(pkv_cache_save(c, g_dir), 0);
  pkv_cache *d = mk(16, BS);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), 0);
  TU_CHECK(d);
  ck_assert_uint_eq(tu_stats(d).blocks_cached, 6);
  ck_assert_uint_eq(hit(d, NULL, 100, 16, 1), 16);
  ck_assert_uint_eq(hit(d, &o, 100, 8, 2), 8);
  /* loading again adds nothing (already cached) */
  ck_assert_int_eq(pkv_cache_load(d, g_dir), 0);
  ck_assert_uint_eq(tu_stats(d).blocks_cached, 6);
  pkv_cache_destroy(d);
  /* one sequence: its committed full blocks only */
  pkv_seq_id s;
  put_run(c, NULL, 500, 10, 3, true, &s);
  ck_assert_int_eq(pkv_seq_save(c, s, g_dir), 0);
  ck_assert_int_eq(pkv_seq_save(c, PKV_SEQ_NONE, g_dir), PKV_ENOSEQ);
  d = mk(16, BS);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), 0);
  ck_assert_uint_eq(tu_stats(d).blocks_cached, 2);
  ck_assert_uint_eq(hit(d, NULL, 500, 10, 3), 8);
  ck_assert_uint_eq(hit(d, NULL, 100, 16, 1), 0);
  /* a smaller pool loads what fits, parents first */
  pkv_cache *small = mk(3, BS);
  ck_assert_int_eq(pkv_cache_save(c, g_dir), 0);
  ck_assert_int_eq(pkv_cache_load(small, g_dir), 0);
  ck_assert_uint_eq(tu_stats(small).blocks_cached, 3);
  TU_DONE(small);
  pkv_cache_destroy(d);
  pkv_cache_destroy(c);
  dir_rm();
}
END_TEST

START_TEST(mismatch) {
  dir_make();
  pkv_cache *c = mk(8, BS);
  put_run(c, NULL, 100, 8, 1, false, NULL);
  ck_assert_int_eq(pkv_cache_save(c, g_dir), 0);
  struct {
    const char *field;
    void (*edit)(pkv_config *);
  } cases[] = {
      {"block_size", NULL}, {"n_layers", NULL}, {"n_kv_heads", NULL},
      {"head_dim", NULL}, {"dtype", NULL}};
  for (int i = 0; i < 5; i++) {
    pkv_config cfg;
    tu_config(&cfg, PKV_STORAGE_OWNED, 8, BS);
    if (i == 0) cfg.block_size = 8;
    if (i == 1) cfg.n_layers = 3;
    if (i == 2) cfg.n_kv_heads = 1;
    if (i == 3) cfg.head_dim = 8;
    if (i == 4) cfg.dtype = PKV_DTYPE_F16;
    pkv_cache *d = tu_cache(&cfg);
    ck_assert_int_eq(pkv_cache_load(d, g_dir), PKV_EINVAL);
    ck_assert_msg(strstr(pkv_last_error(), cases[i].field) != NULL,
                  "'%s' does not name %s", pkv_last_error(), cases[i].field);
    ck_assert_uint_eq(tu_stats(d).blocks_cached, 0);
    pkv_cache_destroy(d);
  }
  /* external storage: not supported */
  pkv_cache *e = tu_cache_new(PKV_STORAGE_EXTERNAL, 8, BS);
  ck_assert_int_eq(pkv_cache_load(e, g_dir), PKV_ENOTSUP);
  ck_assert_int_eq(pkv_cache_save(e, g_dir), PKV_ENOTSUP);
  pkv_cache_destroy(e);
  ck_assert_int_eq(pkv_cache_load(NULL, g_dir), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_load(c, NULL), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_save(c, ""), PKV_EINVAL);
  pkv_cache_destroy(c);
  dir_rm();
}
END_TEST

static void blocks_path(char *out, size_t cap) {
  char m[300];
  snprintf(m, sizeof m, "%s/MANIFEST", g_dir);
  FILE *f = fopen(m, "r");
  ck_assert_ptr_nonnull(f);
  char line[64], gen[64];
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  ck_assert_ptr_nonnull(fgets(gen, sizeof gen, f));
  fclose(f);
  gen[strcspn(gen, "\n")] = 0;
  snprintf(out, cap, "%s/%s/blocks.bin", g_dir, gen);
}

START_TEST(damaged) {
  dir_make();
  pkv_cache *c = mk(8, BS);
  put_run(c, NULL, 100, 16, 1, false, NULL);
  pkv_cache *d = mk(8, BS);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), PKV_ENOENT); /* nothing saved */
  ck_assert_int_eq(pkv_cache_save(c, g_dir), 0);
  char p[400];
  blocks_path(p, sizeof p);
  struct stat sb;
  ck_assert_int_eq(stat(p, &sb), 0);
  /* one flipped byte anywhere: corrupt */
  for (off_t at = 0; at < sb.st_size; at += sb.st_size / 7 + 1) {
    int fd = open(p, O_RDWR);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, at), 1);
    b ^= 1;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    ck_assert_int_eq(pkv_cache_load(d, g_dir), PKV_ECORRUPT);
    ck_assert_uint_eq(tu_stats(d).blocks_cached, 0);
    b ^= 1;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
  }
  /* truncated */
  ck_assert_int_eq(truncate(p, sb.st_size - 3), 0);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), PKV_ECORRUPT);
  ck_assert_int_eq(truncate(p, 10), 0);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), PKV_ECORRUPT);
  ck_assert_int_eq(truncate(p, 0), 0);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), PKV_ECORRUPT);
  /* a garbage manifest */
  char m[300];
  snprintf(m, sizeof m, "%s/MANIFEST", g_dir);
  FILE *f = fopen(m, "w");
  fputs("pagedkv-save 1\n../../etc\n", f);
  fclose(f);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), PKV_ENOENT);
  TU_CHECK(d);
  /* the cache still works, and a new save over the debris loads */
  put_run(d, NULL, 900, 8, 4, false, NULL);
  ck_assert_int_eq(pkv_cache_save(c, g_dir), 0);
  ck_assert_int_eq(pkv_cache_load(d, g_dir), 0);
  ck_assert_uint_eq(hit(d, NULL, 100, 16, 1), 16);
  pkv_cache_destroy(d);
  pkv_cache_destroy(c);
  dir_rm();
}
END_TEST

START_TEST(bad_dir) {
  dir_make();
  pkv_cache *c = mk(8, BS);
  put_run(c, NULL, 100, 16, 1, false, NULL);
  char file[300], sub[320];
  snprintf(file, sizeof file, "%s/plain", g_dir);
  FILE *f = fopen(file, "w");
  fclose(f);
  snprintf(sub, sizeof sub, "%s/save", file);
  ck_assert_int_eq(pkv_cache_save(c, sub), PKV_ENOENT);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "Not a directory"));
  ck_assert_int_eq(pkv_cache_load(c, sub), PKV_ENOENT);
  /* a full disk: the previous save stays */
  char good[320];
  snprintf(good, sizeof good, "%s/s", g_dir);
  ck_assert_int_eq(pkv_cache_save(c, good), 0);
  put_run(c, NULL, 300, 16, 2, false, NULL);
  struct rlimit old, lim;
  ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 1000;
  void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  int rc = pkv_cache_save(c, good);
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, oldsig);
  ck_assert_int_eq(rc, PKV_ENOSPC);
  ck_assert_ptr_nonnull(strstr(pkv_last_error(), "blocks.bin"));
  pkv_cache *d = mk(8, BS);
  ck_assert_int_eq(pkv_cache_load(d, good), 0);
  ck_assert_uint_eq(hit(d, NULL, 100, 16, 1), 16);
  ck_assert_uint_eq(hit(d, NULL, 300, 16, 2), 0);
  pkv_cache_destroy(d);
  pkv_cache_destroy(c);
  dir_rm();
}
END_TEST

/* Content k: 6 runs of 16 tokens at base 10000 * (k + 1) + 100 * r, pattern
 * tag k + 1; a load holds exactly one content. */
#define RUNS 6
static pkv_cache *content(uint32_t k) {
  pkv_cache *c = mk(64, BS);
  for (uint32_t r = 0; r < RUNS; r++)
    put_run(c, NULL, (int32_t)(10000 * (k + 1) + 100 * r), 16, k + 1, false, NULL);
  return c;
}

/* Which content the directory holds (0 or 1), failing on anything else. */
static int loaded_content(void) {
  pkv_cache *d = mk(64, BS);
  int rc = pkv_cache_load(d, g_dir);
  ck_assert_msg(rc == 0, "load after a killed save: %s", pkv_last_error());
  int which = -1;
  for (uint32_t k = 0; k < 2; k++) {
    uint32_t full = 0, any = 0;
    for (uint32_t r = 0; r < RUNS; r++) {
      uint32_t m = hit(d, NULL, (int32_t)(10000 * (k + 1) + 100 * r), 16, k + 1);
      full += m == 16;
      any += m > 0;
    }
    if (full == RUNS) {
      ck_assert_int_eq(which, -1);
      which = (int)k;
    } else {
      ck_assert_msg(any == 0, "content %u partly loaded (%u of %u runs)", k,
                    full, RUNS);
    }
  }
  ck_assert_msg(which >= 0, "no content loaded");
  ck_assert_uint_eq(tu_stats(d).blocks_cached, RUNS * 4);
  pkv_cache_destroy(d);
  return which;
}

START_TEST(crash) {
  dir_make();
  pkv_cache *src[2] = {content(0), content(1)};
  ck_assert_int_eq(pkv_cache_save(src[0], g_dir), 0);
  /* how long a save takes, to aim the kills inside it */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(pkv_cache_save(src[i & 1], g_dir), 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long save_us = ((t1.tv_sec - t0.tv_sec) * 1000000L +
                  (t1.tv_nsec - t0.tv_nsec) / 1000) / 4 + 1;
  int cur = 1; /* the last save was content 1 */
  uint64_t rng = 0x5eed;
  int n_old = 0, n_new = 0;
  int iters = TU_SCALE(60) < 50 ? 50 : TU_SCALE(60);
  for (int it = 0; it < iters; it++) {
    int next = 1 - cur;
    long delay = (long)(tu_rand(&rng) % (uint64_t)(2 * save_us + 50));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      for (;;) /* save until killed */
        if (pkv_cache_save(src[next], g_dir) == 0) break;
      _exit(0);
    }
    struct timespec ts = {0, delay * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    int got = loaded_content();
    ck_assert_msg(got == cur || got == next, "iteration %d: content %d", it, got);
    if (got == cur) n_old++;
    else n_new++;
    cur = got;
  }
  fprintf(stderr, "crash: %d kills (save ~%ld us): %d old, %d new state\n",
          iters, save_us, n_old, n_new);
  /* kills landed both before and after the switch at least once */
  ck_assert_int_gt(n_old + n_new, 0);
  pkv_cache_destroy(src[0]);
  pkv_cache_destroy(src[1]);
  dir_rm();
}
END_TEST

TU_MAIN("save",
    {"save", 120, {{roundtrip}, {mismatch}, {damaged}, {bad_dir}, {crash}}})
