/*
 * bench_tier.c — the tiers, each figure beside a same-run baseline (wall
 * clock, medians of REPS runs):
 *
 *   promote     a 4096-token prefix (block 16: 256 blocks; 4 layers, 2 KV
 *               heads, 8 query heads, head_dim 64, bf16 K/V = 8 MiB) brought
 *               back from the host tier by pkv_seq_match_prefix (verified:
 *               keys, tokens, XXH3-64 of the K/V); baseline: recomputing it
 *               with pkv_prefill on every layer (attention + K/V writes only
 *               — a real model also runs its projections and MLP, so the
 *               true recompute is slower still).  Ratio = how many times
 *               faster the promotion is (issue 14: >= 10x).
 *   demote      evicting those 256 blocks into the host tier (gather + copy
 *               + checksum), for scale.
 *   save        pkv_cache_save of SAVE_MIB of cached K/V to $PKV_BENCH_DIR
 *               (default /tmp), fsync included; baseline: dd writing the same
 *               number of bytes to the same directory with conv=fsync.
 *   load        pkv_cache_load of that save into an empty cache (every
 *               checksum and key verified); baseline: dd reading the save
 *               file.  Both read from the page cache (the file was just
 *               written): a memory-speed comparison, said so.
 */
#include "bu_bench.h"
#include "pagedkv/engine.h"
#include "pagedkv/pagedkv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define REPS 5
#define BS 16
#define NTOK 4096
#define LAYERS 4
#define KVH 2
#define QH 8
#define HD 64
#define SAVE_MIB 256

static void die(int rc, const char *what) {
  if (rc == 0) return;
  fprintf(stderr, "bench_tier: %s: %s (%s)\n", what, pkv_err_name(rc),
          pkv_last_error());
  exit(1);
}

static pkv_cache *make_cache(uint32_t num_blocks, uint64_t host_bytes) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = LAYERS;
  cfg.n_kv_heads = KVH;
  cfg.head_dim = HD;
  cfg.block_size = BS;
  cfg.dtype = PKV_DTYPE_BF16;
  cfg.num_blocks = num_blocks;
  cfg.host_tier_bytes = host_bytes;
  pkv_cache *c;
  die(pkv_cache_create(&cfg, &c), "cache_create");
  return c;
}

static double secs(uint64_t a, uint64_t b) { return (double)(b - a) / 1e9; }

/* Runs dd with these arguments (no shell); its wall time in seconds. */
static double run_dd(char *const argv[]) {
  uint64_t t0 = bu_now_ns();
  pid_t pid = fork();
  if (pid < 0) die(PKV_ENOMEM, "fork");
  if (pid == 0) {
    int fd = open("/dev/null", 1);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp("dd", argv);
    _exit(127);
  }
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "bench_tier: dd failed\n");
    exit(1);
  }
  return secs(t0, bu_now_ns());
}

static void bench_promote(void) {
  uint32_t nb = NTOK / BS;
  uint64_t block_bytes = 2ull * LAYERS * KVH * BS * HD * 2;
  pkv_cache *c = make_cache(nb + 8, (uint64_t)(nb + 8) * (block_bytes + BS * 4));
  pkv_engine_config ec;
  pkv_engine_config_init(&ec);
  ec.n_q_heads = QH;
  pkv_engine *e;
  die(pkv_engine_create(c, &ec, &e), "engine_create");
  int32_t *tok = malloc(NTOK * sizeof *tok);
  float *q = malloc((size_t)NTOK * QH * HD * sizeof *q);
  float *k = malloc((size_t)NTOK * KVH * HD * sizeof *k);
  float *v = malloc((size_t)NTOK * KVH * HD * sizeof *v);
  float *out = malloc((size_t)NTOK * QH * HD * sizeof *out);
  if (!tok || !q || !k || !v || !out) die(PKV_ENOMEM, "malloc");
  for (uint32_t i = 0; i < NTOK; i++) tok[i] = (int32_t)(i * 7 + 3);
  for (size_t i = 0; i < (size_t)NTOK * QH * HD; i++) q[i] = (float)((i * 37) % 101) / 101.f;
  for (size_t i = 0; i < (size_t)NTOK * KVH * HD; i++) {
    k[i] = (float)((i * 13) % 97) / 97.f;
    v[i] = (float)((i * 29) % 89) / 89.f;
  }
  double t_prefill[REPS], t_promote[REPS], t_demote[REPS];
  for (int r = 0; r < REPS; r++) {
    fprintf(stderr, "bench_tier: promote rep %d/%d\r", r + 1, REPS);
    /* baseline: compute the prefix */
    pkv_seq_id s;
    die(pkv_seq_create(c, NULL, &s), "seq_create");
    uint64_t t0 = bu_now_ns();
    die(pkv_seq_append(c, s, tok, NTOK, NULL), "append");
    for (uint32_t l = 0; l < LAYERS; l++)
      die(pkv_prefill(e, s, l, 0, NTOK, q, k, v, out), "prefill");
    die(pkv_seq_commit(c, s, NTOK), "commit");
    t_prefill[r] = secs(t0, bu_now_ns());
    bu_sink(out);
    die(pkv_seq_free(c, s), "seq_free");
    /* demote all of it */
    pkv_capacity cap;
    die(pkv_cache_capacity(c, &cap), "capacity");
    t0 = bu_now_ns();
    die(pkv_evict(c, cap.evictable), "evict");
    t_demote[r] = secs(t0, bu_now_ns());
    /* promote it back */
    die(pkv_seq_create(c, NULL, &s), "seq_create");
    uint32_t m = 0;
    t0 = bu_now_ns();
    die(pkv_seq_match_prefix(c, s, tok, NTOK, 0, &m), "match");
    t_promote[r] = secs(t0, bu_now_ns());
    if (m != NTOK) {
      fprintf(stderr, "bench_tier: promoted %u of %u tokens\n", m, NTOK);
      exit(1);
    }
    die(pkv_seq_free(c, s), "seq_free");
    die(pkv_cache_capacity(c, &cap), "capacity");
    die(pkv_evict(c, cap.evictable), "evict");
    /* and drop it from the host tier too: the next prefill starts cold */
    die(pkv_prefix_reset(c), "reset");
  }
  fprintf(stderr, "\n");
  double pre = bu_median(t_prefill, REPS), pro = bu_median(t_promote, REPS);
  bu_report_vs("tier: promote 4k-token prefix from host (ms)", pro * 1e3, "ms",
               "pkv_prefill recompute", pre * 1e3, "promote speedup (x)");
  printf("  speedup %.1fx (recompute / promote)\n", pre / pro);
  double kib = (double)nb * (double)block_bytes / (1 << 30);
  bu_report("tier: promote bandwidth (GiB/s)", kib / pro, "GiB/s");
  bu_report("tier: demote 256 blocks to host (ms)", bu_median(t_demote, REPS) * 1e3, "ms");
  pkv_engine_destroy(e);
  pkv_cache_destroy(c);
  free(tok);
  free(q);
  free(k);
  free(v);
  free(out);
}

static void bench_save(void) {
  const char *base = getenv("PKV_BENCH_DIR");
  if (!base || !*base) base = "/tmp";
  char dir[512], ddfile[600], blocks[700];
  snprintf(dir, sizeof dir, "%s/pkv_bench_tier_%ld", base, (long)getpid());
  snprintf(ddfile, sizeof ddfile, "%s.dd", dir);
  uint64_t block_bytes = 2ull * LAYERS * KVH * BS * HD * 2;
  uint32_t nb = (uint32_t)((uint64_t)SAVE_MIB * (1 << 20) / block_bytes);
  pkv_cache *c = make_cache(nb, 0);
  int32_t *tok = malloc((size_t)nb * BS * sizeof *tok);
  if (!tok) die(PKV_ENOMEM, "malloc");
  for (size_t i = 0; i < (size_t)nb * BS; i++) tok[i] = (int32_t)i;
  pkv_seq_id s;
  die(pkv_seq_create(c, NULL, &s), "seq_create");
  die(pkv_seq_append(c, s, tok, nb * BS, NULL), "append");
  die(pkv_seq_commit(c, s, nb * BS), "commit");
  die(pkv_seq_free(c, s), "seq_free");
  double t_save[REPS], t_load[REPS], t_ddw[REPS], t_ddr[REPS];
  char of[700], count[64], iff[800];
  snprintf(of, sizeof of, "of=%s", ddfile);
  snprintf(count, sizeof count, "count=%u", SAVE_MIB);
  for (int r = 0; r < REPS; r++) {
    fprintf(stderr, "bench_tier: save rep %d/%d\r", r + 1, REPS);
    uint64_t t0 = bu_now_ns();
    die(pkv_cache_save(c, dir), "save");
    t_save[r] = secs(t0, bu_now_ns());
    pkv_cache *d = make_cache(nb, 0);
    /* a serving cache's arena is resident: fault it in before timing, so
     * the figure is the load, not the kernel zeroing fresh pages */
    for (uint32_t l = 0; l < LAYERS; l++) {
      void *kp, *vp;
      die(pkv_cache_kv(d, l, &kp, &vp), "cache_kv");
      memset(kp, 0, (size_t)nb * block_bytes / (2 * LAYERS));
      memset(vp, 0, (size_t)nb * block_bytes / (2 * LAYERS));
    }
    t0 = bu_now_ns();
    die(pkv_cache_load(d, dir), "load");
    t_load[r] = secs(t0, bu_now_ns());
    pkv_stats st;
    die(pkv_stats_get(d, &st), "stats");
    if (st.blocks_cached != nb) {
      fprintf(stderr, "bench_tier: loaded %u of %u blocks\n", st.blocks_cached, nb);
      exit(1);
    }
    pkv_cache_destroy(d);
    char *w[] = {"dd", "if=/dev/zero", of, "bs=1M", count, "conv=fsync", NULL};
    t_ddw[r] = run_dd(w);
    FILE *m;
    char gen[64] = "";
    snprintf(blocks, sizeof blocks, "%s/MANIFEST", dir);
    if ((m = fopen(blocks, "r")) != NULL) {
      if (fgets(gen, sizeof gen, m) && fgets(gen, sizeof gen, m)) gen[strcspn(gen, "\n")] = 0;
      fclose(m);
    }
    snprintf(iff, sizeof iff, "if=%s/%s/blocks.bin", dir, gen);
    char *rd[] = {"dd", iff, "of=/dev/null", "bs=1M", NULL};
    t_ddr[r] = run_dd(rd);
  }
  fprintf(stderr, "\n");
  double gib = (double)nb * (double)block_bytes / (1 << 30);
  bu_report_vs("tier: save GiB/s (fsync)", gib / bu_median(t_save, REPS), "GiB/s",
               "dd conv=fsync", gib / bu_median(t_ddw, REPS), "of dd");
  bu_report_vs("tier: load GiB/s (verified, page cache)", gib / bu_median(t_load, REPS),
               "GiB/s", "dd read", gib / bu_median(t_ddr, REPS), "of dd");
  /* clean up: the save and dd's file */
  unlink(ddfile);
  char gen[64] = "";
  snprintf(blocks, sizeof blocks, "%s/MANIFEST", dir);
  FILE *m = fopen(blocks, "r");
  if (m) {
    if (fgets(gen, sizeof gen, m) && fgets(gen, sizeof gen, m)) gen[strcspn(gen, "\n")] = 0;
    fclose(m);
  }
  snprintf(blocks, sizeof blocks, "%s/%s/blocks.bin", dir, gen);
  unlink(blocks);
  snprintf(blocks, sizeof blocks, "%s/%s", dir, gen);
  rmdir(blocks);
  snprintf(blocks, sizeof blocks, "%s/MANIFEST", dir);
  unlink(blocks);
  rmdir(dir);
  pkv_cache_destroy(c);
  free(tok);
}

int main(void) {
  bench_promote();
  bench_save();
  return 0;
}
