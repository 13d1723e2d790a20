/*
 * save.c — save / restore of the prefix cache, crash-consistent.
 *
 *   dir/MANIFEST            "pagedkv-save 1\ngen-<N>\n" (renamed into place)
 *   dir/gen-<N>/blocks.bin  the save
 *
 * blocks.bin:
 *   header (64 bytes)  "PKVSAVE1" u32 version u32 block_size u32 n_layers
 *                      u32 n_kv_heads u32 head_dim u32 v_head_dim u32 dtype
 *                      u32 pad u64 kv_bytes u64 n_ns u64 n_blocks
 *   n_ns namespaces    u64 len u64 adapter_id, len bytes
 *   n_blocks records   the block record of tier.h (key, parent, namespace
 *                      fold, depth, checksum, tokens, K/V); bytes 72..75 of
 *                      its header hold the namespace's index, 76 its
 *                      retention priority; parents before children
 *   trailer            u64 XXH3-64 of everything before it
 *
 * A save writes a new generation directory (file fsynced, then the
 * directory), then MANIFEST.tmp (fsynced), renames it over MANIFEST and
 * fsyncs dir; only then is the old generation removed.  A process killed at
 * any point leaves MANIFEST naming a complete generation: the old one until
 * the rename, the new one after it.  Leftovers of a killed save (a
 * generation MANIFEST does not name, MANIFEST.tmp) are removed by the next
 * save.  A load reads MANIFEST, maps the file, and checks everything before
 * it changes anything: the trailer checksum (XXH3-64 of every byte before
 * it: the records' own checksums, written for the file tier's format, are
 * not hashed a second time), the shape (a mismatch is PKV_EINVAL naming the
 * field), every record's header and its key recomputed from parent,
 * namespace and tokens.
 */
#include "tier/tier.h"
#include "tier/xsum.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SAVE_MAGIC "PKVSAVE1"
#define SAVE_VERSION 1u
#define SAVE_HEADER 64u
#define MANIFEST_HEAD "pagedkv-save 1\n"


/* ------------------------------------------------ writing */

typedef struct writer {
  int fd;
  int err;              /* first errno */
  uint8_t *buf;
  size_t len, cap;
  pkv__xsum sum;
} writer;

static void w_flush(writer *w) {
  if (!w->err && w->len) w->err = pkv__write_all(w->fd, w->buf, w->len);
  w->len = 0;
}

static void w_put(writer *w, const void *p, size_t n) {
  pkv__xsum_update(&w->sum, p, n);
  const uint8_t *s = p;
  while (n > 0) {
    size_t k = w->cap - w->len < n ? w->cap - w->len : n;
    memcpy(w->buf + w->len, s, k);
    w->len += k;
    s += k;
    n -= k;
    if (w->len == w->cap) w_flush(w);
  }
}

static int by_depth(const void *a, const void *b, void *arg) {
  const pkv_cache *c = arg;
  uint32_t da = c->blk[*(const int32_t *)a].depth;
  uint32_t db = c->blk[*(const int32_t *)b].depth;
  return da < db ? -1 : da > db;
}

/* Writes blocks[0..n) (hashed pool blocks) to fd as blocks.bin. */
static int write_blocks(pkv_cache *c, int fd, int32_t *blocks, uint32_t n) {
  qsort_r(blocks, n, sizeof *blocks, by_depth, c);
  size_t kv_bytes = pkv__tier_kv_bytes(c);
  /* namespaces used, numbered in order of first use */
  uint32_t *ns_index = pkv__malloc((size_t)c->n_ns * sizeof *ns_index);
  uint32_t *ns_list = pkv__malloc((size_t)c->n_ns * sizeof *ns_list);
  writer w = {.fd = fd, .cap = 1u << 20};
  w.buf = pkv__malloc(w.cap);
  uint8_t *kv = pkv__malloc(kv_bytes);
  int rc = 0;
  if (!ns_index || !ns_list || !w.buf || !kv) {
    rc = pkv__err(PKV_ENOMEM, "save: no memory");
    goto out;
  }
  for (uint32_t i = 0; i < c->n_ns; i++) ns_index[i] = UINT32_MAX;
  uint32_t n_ns = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id = c->blk[blocks[i]].ns_id;
    if (ns_index[id] == UINT32_MAX) {
      ns_index[id] = n_ns;
      ns_list[n_ns++] = id;
    }
  }
  pkv__xsum_reset(&w.sum);
  uint8_t h[SAVE_HEADER] = {0};
  memcpy(h, SAVE_MAGIC, 8);
  /* version and shape at 8.. 32 (shape_check reads 12..), sizes at 40.. */
  const uint32_t head32[] = {SAVE_VERSION, c->block_size, c->cfg.n_layers,
                             c->cfg.n_kv_heads, c->cfg.head_dim,
                             c->cfg.v_head_dim, (uint32_t)c->cfg.dtype};
  const uint64_t head64[] = {kv_bytes, n_ns, n};
  for (int i = 0; i < 7; i++) pkv__put32(h + 8 + 4 * i, head32[i]);
  for (int i = 0; i < 3; i++) pkv__put64(h + 40 + 8 * i, head64[i]);
  w_put(&w, h, sizeof h);
  for (uint32_t i = 0; i < n_ns; i++) {
    const pkv__ns *e = &c->ns[ns_list[i]];
    uint8_t nh[16];
    pkv__put64(nh, e->len);
    pkv__put64(nh + 8, e->adapter_id);
    w_put(&w, nh, sizeof nh);
    if (e->len) w_put(&w, e->bytes, e->len);
  }
  for (uint32_t i = 0; i < n && !w.err; i++) {
    int32_t b = blocks[i];
    const pkv__block *blk = &c->blk[b];
    const int32_t *tok = c->block_tokens + (size_t)b * c->block_size;
    pkv__tier_gather(c, b, kv);
    pkv__tier_block tb = {.key = blk->key, .parent = blk->parent,
                          .ns_id_hash = pkv__ns_fold(c->ns[blk->ns_id].digest),
                          .ntok = c->block_size, .tokens = tok, .kv = kv,
                          .kv_bytes = kv_bytes};
    uint8_t rh[PKV__REC_HEADER];
    pkv__rec_header(rh, &tb, blk->depth,
                    pkv__tier_checksum(tok, c->block_size, kv, kv_bytes));
    pkv__put32(rh + 72, ns_index[blk->ns_id]);
    pkv__put32(rh + 76, blk->priority);
    w_put(&w, rh, sizeof rh);
    w_put(&w, tok, (size_t)c->block_size * sizeof *tok);
    w_put(&w, kv, kv_bytes);
  }
  uint8_t tail[8];
  pkv__put64(tail, pkv__xsum_digest(&w.sum));
  w_put(&w, tail, sizeof tail);
  w_flush(&w);
  if (!w.err && fsync(fd) != 0) w.err = errno;
  if (w.err)
    rc = pkv__err(PKV_ENOSPC, "save: writing blocks.bin: %s", strerror(w.err));
out:
  pkv__free(ns_index);
  pkv__free(ns_list);
  pkv__free(w.buf);
  pkv__free(kv);
  return rc;
}

/* The generation MANIFEST names (into name, "" if none or unreadable). */
static void manifest_read(int dfd, char *name, size_t cap) {
  name[0] = 0;
  int fd = openat(dfd, "MANIFEST", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[128] = {0};
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  size_t hl = strlen(MANIFEST_HEAD);
  if (r <= (ssize_t)hl || memcmp(buf, MANIFEST_HEAD, hl) != 0) return;
  char *g = buf + hl, *nl = strchr(g, '\n');
  if (!nl || strncmp(g, "gen-", 4) != 0 || (size_t)(nl - g) >= cap ||
      nl == g + 4)
    return;
  for (char *p = g + 4; p < nl; p++)
    if (*p < '0' || *p > '9') return;
  memcpy(name, g, (size_t)(nl - g));
  name[nl - g] = 0;
}

static void remove_gen(int dfd, const char *gen) {
  int g = openat(dfd, gen, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (g >= 0) {
    unlinkat(g, "blocks.bin", 0);
    close(g);
  }
  unlinkat(dfd, gen, AT_REMOVEDIR);
}

static int fsync_fd(int fd) { return fsync(fd) == 0 ? 0 : errno; }

/* Saves blocks[0..n) to dir as a new generation. */
static int save_blocks(pkv_cache *c, const char *dir, int32_t *blocks,
                       uint32_t n) {
  int dfd = pkv__dir_open(dir, "save", false);
  if (dfd < 0) return PKV_ENOENT;
  char cur[64];
  manifest_read(dfd, cur, sizeof cur);
  /* the next generation number; leftovers of killed saves go */
  unsigned long long next = 1;
  int lfd = dup(dfd);
  DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
  if (!d) {
    if (lfd >= 0) close(lfd);
    close(dfd);
    return pkv__err(PKV_ENOENT, "save: cannot list '%s'", dir);
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    unsigned long long g;
    char extra;
    if (sscanf(de->d_name, "gen-%llu%c", &g, &extra) == 1) {
      if (g >= next) next = g + 1;
      if (strcmp(de->d_name, cur) != 0) remove_gen(dfd, de->d_name);
    }
  }
  closedir(d);
  unlinkat(dfd, "MANIFEST.tmp", 0);
  char gen[64];
  snprintf(gen, sizeof gen, "gen-%llu", next);
  int rc = 0, err = 0;
  int gfd = -1, fd = -1;
  if (mkdirat(dfd, gen, 0755) != 0) err = errno;
  if (!err && (gfd = openat(dfd, gen, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
    err = errno;
  if (!err && (fd = openat(gfd, "blocks.bin", O_WRONLY | O_CREAT | O_EXCL |
                           O_CLOEXEC, 0644)) < 0)
    err = errno;
  if (err) {
    rc = pkv__err(err == ENOSPC || err == EDQUOT ? PKV_ENOSPC : PKV_ENOENT,
                  "save: cannot create %s/%s: %s", dir, gen, strerror(err));
    goto fail;
  }
  if ((rc = write_blocks(c, fd, blocks, n)) != 0) goto fail;
  if (close(fd) != 0) err = errno;
  fd = -1;
  if (!err) err = fsync_fd(gfd);
  if (!err) err = fsync_fd(dfd); /* the generation's entry */
  /* the manifest */
  char text[128];
  int tl = snprintf(text, sizeof text, "%s%s\n", MANIFEST_HEAD, gen);
  int mfd = -1;
  if (!err && (mfd = openat(dfd, "MANIFEST.tmp", O_WRONLY | O_CREAT | O_TRUNC |
                            O_CLOEXEC, 0644)) < 0)
    err = errno;
  if (!err) err = pkv__write_all(mfd, text, (size_t)tl);
  if (!err) err = fsync_fd(mfd);
  if (mfd >= 0 && close(mfd) != 0 && !err) err = errno;
  if (!err && renameat(dfd, "MANIFEST.tmp", dfd, "MANIFEST") != 0) err = errno;
  if (!err) err = fsync_fd(dfd);
  if (err) {
    rc = pkv__err(PKV_ENOSPC, "save: writing the manifest in '%s': %s", dir,
                  strerror(err));
    unlinkat(dfd, "MANIFEST.tmp", 0);
    goto fail;
  }
  if (cur[0]) remove_gen(dfd, cur);
  close(gfd);
  close(dfd);
  return 0;
fail:
  if (fd >= 0) close(fd);
  if (gfd >= 0) close(gfd);
  remove_gen(dfd, gen);
  close(dfd);
  return rc;
}

/* The checks after PKV_ENTER common to save and load. */
static int save_check(pkv_cache *cache, const char *dir, const char *what) {
  if (!dir || !*dir) return pkv__err(PKV_EINVAL, "%s: dir is NULL or empty", what);
  if (cache->cfg.storage != PKV_STORAGE_OWNED) /* immutable after create */
    return pkv__err(PKV_ENOTSUP, "%s: external storage (the library holds "
                    "no K/V)", what);
  return 0;
}

int pkv_cache_save(pkv_cache *cache, const char *dir) {
  PKV_ENTER(cache, "cache_save");
  int rc = save_check(cache, dir, "cache_save");
  if (rc) return rc;
  PKV_LOCK(cache);
  int32_t *blocks = pkv__malloc(((size_t)cache->n_cached + 1) * sizeof *blocks);
  if (!blocks) {
    rc = pkv__err(PKV_ENOMEM, "cache_save: no memory");
  } else {
    uint32_t n = 0;
    for (uint32_t b = 0; b < cache->num_blocks; b++)
      if (PKV_BLOCK_IS_CACHED(cache, b)) blocks[n++] = (int32_t)b;
    rc = save_blocks(cache, dir, blocks, n);
  }
  pkv__free(blocks);
  return pkv__leave_ro(cache, rc);
}

int pkv_seq_save(pkv_cache *cache, pkv_seq_id seq, const char *dir) {
  PKV_ENTER(cache, "seq_save");
  int rc = save_check(cache, dir, "seq_save");
  if (rc) return rc;
  PKV_LOCK_SEQ(cache, seq, s);
  int32_t *blocks = NULL;
  if (!(blocks = pkv__malloc(((size_t)s->n_hashed + 1) * sizeof *blocks))) {
    rc = pkv__err(PKV_ENOMEM, "seq_save: no memory");
  } else {
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_hashed; i++)
      if (cache->blk[s->blocks[i]].flags & PKV_BLK_HASHED) blocks[n++] = s->blocks[i];
    rc = save_blocks(cache, dir, blocks, n);
  }
  pkv__free(blocks);
  return pkv__leave_ro(cache, rc);
}

/* ------------------------------------------------ loading */

typedef struct parsed {
  const uint8_t *ns_at;      /* first namespace entry */
  uint64_t n_ns, n_blocks;
  const uint8_t *rec_at;     /* first record */
  size_t rec_bytes;
} parsed;

static int shape_check(const pkv_cache *c, const uint8_t *h, size_t kv_bytes) {
  static const char *const names[] = {"block_size", "n_layers", "n_kv_heads",
                                      "head_dim", "v_head_dim", "dtype"};
  uint32_t mine[6] = {c->block_size, c->cfg.n_layers, c->cfg.n_kv_heads,
                      c->cfg.head_dim, c->cfg.v_head_dim, (uint32_t)c->cfg.dtype};
  for (int i = 0; i < 6; i++)
    if (pkv__get32(h + 12 + 4 * i) != mine[i])
      return pkv__err(PKV_EINVAL, "cache_load: the save has %s %u, this cache "
                      "%u", names[i], pkv__get32(h + 12 + 4 * i), mine[i]);
  if (pkv__get64(h + 40) != kv_bytes)
    return pkv__err(PKV_EINVAL, "cache_load: block bytes differ (%llu saved, "
                    "%zu here)", (unsigned long long)pkv__get64(h + 40), kv_bytes);
  return 0;
}

/* Checks the whole file; fills *p. */
static int parse(const pkv_cache *c, const uint8_t *m, size_t size, parsed *p,
                 const char *path) {
  size_t kv_bytes = pkv__tier_kv_bytes(c);
  if (size < SAVE_HEADER + 8 || memcmp(m, SAVE_MAGIC, 8) != 0 ||
      pkv__get32(m + 8) != SAVE_VERSION)
    return pkv__err(PKV_ECORRUPT, "cache_load: %s is not a pagedkv save "
                    "(version %u)", path, SAVE_VERSION);
  if (pkv__xsum64(m, size - 8) != pkv__get64(m + size - 8))
    return pkv__err(PKV_ECORRUPT, "cache_load: %s: checksum mismatch (truncated "
                    "or damaged)", path);
  int rc = shape_check(c, m, kv_bytes);
  if (rc) return rc;
  p->n_ns = pkv__get64(m + 48);
  p->n_blocks = pkv__get64(m + 56);
  p->ns_at = m + SAVE_HEADER;
  size_t at = SAVE_HEADER, end = size - 8;
  for (uint64_t i = 0; i < p->n_ns; i++) {
    if (end - at < 16 || pkv__get64(m + at) > end - at - 16)
      return pkv__err(PKV_ECORRUPT, "cache_load: %s: namespace %llu runs past "
                      "the end", path, (unsigned long long)i);
    at += 16 + pkv__get64(m + at);
  }
  p->rec_at = m + at;
  p->rec_bytes = pkv__rec_size(c->block_size, kv_bytes);
  if (p->n_blocks > (end - at) / p->rec_bytes || (end - at) != p->n_blocks * p->rec_bytes)
    return pkv__err(PKV_ECORRUPT, "cache_load: %s: %llu blocks do not fill %zu "
                    "bytes", path, (unsigned long long)p->n_blocks, end - at);
  return 0;
}

int pkv_cache_load(pkv_cache *cache, const char *dir) {
  PKV_ENTER(cache, "cache_load");
  int rc = save_check(cache, dir, "cache_load");
  if (rc) return rc;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return pkv__err(PKV_ENOENT, "cache_load: cannot open '%s': %s", dir,
                    strerror(errno));
  char gen[64], path[96];
  manifest_read(dfd, gen, sizeof gen);
  if (!gen[0]) {
    close(dfd);
    return pkv__err(PKV_ENOENT, "cache_load: no save in '%s' (no valid "
                    "MANIFEST)", dir);
  }
  snprintf(path, sizeof path, "%s/blocks.bin", gen);
  int fd = openat(dfd, path, O_RDONLY | O_CLOEXEC);
  close(dfd);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    return pkv__err(PKV_ECORRUPT, "cache_load: MANIFEST names %s, which cannot "
                    "be read: %s", path, strerror(e));
  }
  size_t size = (size_t)sb.st_size;
  /* populated: one read-ahead pass instead of a fault per page */
  const uint8_t *m = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE,
                                 fd, 0) : NULL;
  close(fd);
  if (m == MAP_FAILED || !m)
    return pkv__err(PKV_ECORRUPT, "cache_load: %s is empty or unreadable", path);
  if (pkv__lock(cache)) {
    munmap((void *)m, size);
    return PKV_EBUSY;
  }
  parsed p = {0};
  uint32_t *ns_ids = NULL;
  uint64_t n_interned = 0;
  size_t kv_bytes = pkv__tier_kv_bytes(cache);
  size_t tok_bytes = (size_t)cache->block_size * sizeof(int32_t);
  if ((rc = parse(cache, m, size, &p, path)) != 0) goto out;
  if (p.n_ns > cache->num_blocks + 1ull ||
      !(ns_ids = pkv__malloc((size_t)(p.n_ns + 1) * sizeof *ns_ids))) {
    rc = pkv__err(p.n_ns > cache->num_blocks + 1ull ? PKV_ECORRUPT : PKV_ENOMEM,
                  "cache_load: %llu namespaces", (unsigned long long)p.n_ns);
    goto out;
  }
  /* namespaces (a reference each, dropped at the end) */
  const uint8_t *q = p.ns_at;
  for (; n_interned < p.n_ns; n_interned++) {
    uint64_t len = pkv__get64(q);
    if ((rc = pkv__ns_intern(cache, len ? q + 16 : NULL, len, pkv__get64(q + 8),
                             &ns_ids[n_interned])) != 0)
      goto out;
    q += 16 + len;
  }
  /* verify every record before loading any */
  for (uint64_t i = 0; i < p.n_blocks; i++) {
    const uint8_t *r = p.rec_at + i * p.rec_bytes;
    pkv__tier_block tb;
    uint32_t depth;
    uint64_t sum;
    const char *why;
    uint32_t nsi = pkv__get32(r + 72);
    if (pkv__rec_parse(r, cache->block_size, kv_bytes, &tb, &depth, &sum, &why))
      ;
    else if (nsi >= p.n_ns)
      why = "namespace index out of range";
    else { /* the bytes were verified by the file's checksum (parse): a
            * record's own checksum would hash them a second time */
      pkv_hash128 k = pkv__block_key(cache, &tb.parent, ns_ids[nsi],
                                     (const int32_t *)(r + PKV__REC_HEADER));
      if (k.lo != tb.key.lo || k.hi != tb.key.hi) why = "key does not match parent, namespace and tokens";
    }
    if (why) {
      rc = pkv__err(PKV_ECORRUPT, "cache_load: %s: block %llu: %s", path,
                    (unsigned long long)i, why);
      goto out;
    }
  }
  /* load into free blocks, parents first */
  for (uint64_t i = 0; i < p.n_blocks && cache->n_free > 0; i++) {
    const uint8_t *r = p.rec_at + i * p.rec_bytes;
    pkv__tier_block tb;
    uint32_t depth;
    uint64_t sum;
    const char *why;
    pkv__rec_parse(r, cache->block_size, kv_bytes, &tb, &depth, &sum, &why);
    uint32_t ns_id = ns_ids[pkv__get32(r + 72)];
    if (pkv__index_find_key(cache, tb.key, ns_id) >= 0) continue;
    int32_t b = pkv__block_take(cache);
    memcpy(cache->block_tokens + (size_t)b * cache->block_size,
           r + PKV__REC_HEADER, tok_bytes);
    pkv__tier_scatter(cache, b, r + PKV__REC_HEADER + tok_bytes);
    pkv__prefix_insert_block(cache, b, tb.parent, depth, ns_id,
                             (uint8_t)pkv__get32(r + 76));
    pkv__block_unref(cache, b);
  }
out:
  for (uint64_t i = 0; i < n_interned; i++) pkv__ns_unref(cache, ns_ids[i]);
  pkv__free(ns_ids);
  munmap((void *)m, size);
  return pkv__leave(cache, rc);
}
