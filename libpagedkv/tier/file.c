/*
 * file.c — the file tier: one file per block in a directory (the block
 * record of tier.h, record.c).
 *
 * A block file is named by its chained key (32 hex digits + ".blk") and
 * holds one record (tier.h): an 80-byte header — magic, version, token count,
 * K/V size, key, parent, namespace fold, depth, XXH3-64 of tokens + K/V —
 * then the token ids and the K/V.  A read checks the size first (a short
 * file is a miss), then every header field against the block asked for,
 * the token ids, and the checksum: anything that differs is a miss and a
 * counted error, never data.  A write goes to a unique temporary name in
 * the same directory and is renamed over the final name, so a reader never
 * sees half a file; a failed write (disk full, file size limit, I/O error)
 * removes the temporary file and counts an error.
 *
 * The directory is indexed in memory (key -> file size, oldest first) from
 * a scan at open, so contains() costs no system call and max_bytes is kept
 * by deleting the oldest files.  Leftover temporary files of a killed
 * writer are removed at open.
 */
#include "tier/tier.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NONE (-1)

/* ------------------------------------------------ the tier */

typedef struct fentry {
  pkv_hash128 key;
  int32_t next;         /* bucket chain / free list */
  int32_t older, newer; /* age list */
} fentry;

typedef struct ftier {
  pkv__tier base;
  int dirfd;
  size_t kv_bytes;
  uint32_t block_size;
  size_t rec_bytes;
  uint64_t max_bytes;   /* 0 = no limit */
  uint8_t *buf;         /* one record */
  fentry *e;
  uint32_t n_e, cap_e, n_live;
  int32_t *heads;
  uint32_t mask;
  int32_t free_e, oldest, newest;
  uint64_t tmp_seq;
  pkv__tier **below;    /* where dropped blocks go (redis), or NULL */
  pkv_tier_stats st;
} ftier;

static void key_name(char *out, pkv_hash128 k) {
  snprintf(out, 40, "%016llx%016llx.blk", (unsigned long long)k.hi,
           (unsigned long long)k.lo);
}

static int32_t f_find(ftier *f, pkv_hash128 k) {
  for (int32_t i = f->heads[k.lo & f->mask]; i != NONE; i = f->e[i].next)
    if (f->e[i].key.lo == k.lo && f->e[i].key.hi == k.hi) return i;
  return NONE;
}

static int f_rehash(ftier *f, uint32_t want) {
  uint32_t n = 64;
  while (n < 2 * want) n *= 2;
  if (f->heads && n <= f->mask + 1) return 0;
  int32_t *h = pkv__malloc((size_t)n * sizeof *h);
  if (!h) return PKV_ENOMEM;
  for (uint32_t i = 0; i < n; i++) h[i] = NONE;
  pkv__free(f->heads);
  f->heads = h;
  f->mask = n - 1;
  for (int32_t i = f->oldest; i != NONE; i = f->e[i].newer) {
    uint32_t b = f->e[i].key.lo & f->mask;
    f->e[i].next = h[b];
    h[b] = i;
  }
  return 0;
}

/* Adds key as the newest entry (0, or PKV_ENOMEM). */
static int f_add(ftier *f, pkv_hash128 k) {
  if (f_rehash(f, f->n_live + 1)) return PKV_ENOMEM;
  int32_t i = f->free_e;
  if (i != NONE) {
    f->free_e = f->e[i].next;
  } else {
    if (f->n_e == f->cap_e) {
      uint32_t cap = f->cap_e ? f->cap_e * 2 : 64;
      fentry *t = pkv__realloc(f->e, (size_t)cap * sizeof *t);
      if (!t) return PKV_ENOMEM;
      f->e = t;
      f->cap_e = cap;
    }
    i = (int32_t)f->n_e++;
  }
  fentry *e = &f->e[i];
  e->key = k;
  uint32_t b = k.lo & f->mask;
  e->next = f->heads[b];
  f->heads[b] = i;
  e->older = f->newest;
  e->newer = NONE;
  if (f->newest != NONE) f->e[f->newest].newer = i;
  else f->oldest = i;
  f->newest = i;
  f->n_live++;
  return 0;
}

static void f_drop(ftier *f, int32_t i, bool unlink_file) {
  fentry *e = &f->e[i];
  int32_t *pp = &f->heads[e->key.lo & f->mask];
  while (*pp != i) pp = &f->e[*pp].next;
  *pp = e->next;
  if (e->older != NONE) f->e[e->older].newer = e->newer;
  else f->oldest = e->newer;
  if (e->newer != NONE) f->e[e->newer].older = e->older;
  else f->newest = e->older;
  if (unlink_file) {
    char name[40];
    key_name(name, e->key);
    unlinkat(f->dirfd, name, 0);
  }
  e->next = f->free_e;
  f->free_e = i;
  f->n_live--;
}

static int f_read(ftier *f, pkv_hash128 key, pkv__tier_block *got);

static int f_put_one(ftier *f, const pkv__tier_block *b) {
  if (b->ntok != f->block_size || b->kv_bytes != f->kv_bytes ||
      (f->max_bytes && f->rec_bytes > f->max_bytes)) {
    f->st.skipped++;
    return 0;
  }
  if (f_find(f, b->key) != NONE) return 0; /* already kept */
  while (f->max_bytes && (uint64_t)(f->n_live + 1) * f->rec_bytes > f->max_bytes &&
         f->oldest != NONE) {
    pkv__tier *down = f->below ? *f->below : NULL;
    pkv__tier_block vb;
    if (down && f_read(f, f->e[f->oldest].key, &vb) == 1 &&
        down->ops->put(down, &vb, 1) != 0)
      pkv__err_clear(); /* passed down best effort */
    f_drop(f, f->oldest, true);
    f->st.evictions++;
  }
  uint64_t sum = pkv__tier_checksum(b->tokens, b->ntok, b->kv, b->kv_bytes);
  pkv__rec_header(f->buf, b, 0, sum);
  size_t tok = (size_t)b->ntok * sizeof(int32_t);
  memcpy(f->buf + PKV__REC_HEADER, b->tokens, tok);
  memcpy(f->buf + PKV__REC_HEADER + tok, b->kv, b->kv_bytes);
  char tmp[64], name[40];
  snprintf(tmp, sizeof tmp, ".tmp-%ld-%llu", (long)getpid(),
           (unsigned long long)++f->tmp_seq);
  key_name(name, b->key);
  int fd = openat(f->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  int err = fd < 0 ? errno : pkv__write_all(fd, f->buf, f->rec_bytes);
  if (fd >= 0 && close(fd) != 0 && !err) err = errno;
  if (!err && renameat(f->dirfd, tmp, f->dirfd, name) != 0) err = errno;
  if (err) {
    if (fd >= 0) unlinkat(f->dirfd, tmp, 0);
    f->st.errors++;
    f->st.skipped++;
    return pkv__err(PKV_ENOSPC, "file tier: writing %s: %s", name, strerror(err));
  }
  if (f_add(f, b->key)) {
    unlinkat(f->dirfd, name, 0);
    f->st.skipped++;
    return pkv__err(PKV_ENOMEM, "file tier: no memory for the index");
  }
  f->st.puts++;
  f->st.put_bytes += f->rec_bytes;
  return 0;
}

static int f_put(pkv__tier *t, const pkv__tier_block *b, size_t n) {
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    int r = f_put_one((ftier *)t, &b[i]);
    if (r && !rc) rc = r;
  }
  return rc;
}

/* Reads key's file into f->buf and checks it by itself: size, header,
 * checksum.  On success *got describes it (tokens and kv point into f->buf).
 * -1: no such file; 0: bad; 1: good. */
static int f_read(ftier *f, pkv_hash128 key, pkv__tier_block *got) {
  char name[40];
  key_name(name, key);
  int fd = openat(f->dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat sb;
  uint32_t depth;
  uint64_t sum;
  const char *why;
  size_t tok = (size_t)f->block_size * sizeof(int32_t);
  bool ok = fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == f->rec_bytes &&
            pkv__read_all(fd, f->buf, f->rec_bytes) == 0 &&
            pkv__rec_parse(f->buf, f->block_size, f->kv_bytes, got, &depth, &sum,
                           &why) == 0 &&
            got->key.lo == key.lo && got->key.hi == key.hi;
  close(fd);
  if (!ok) return 0;
  got->tokens = (const int32_t *)(f->buf + PKV__REC_HEADER);
  got->kv = f->buf + PKV__REC_HEADER + tok;
  got->kv_bytes = f->kv_bytes;
  return pkv__tier_checksum(got->tokens, f->block_size, got->kv, f->kv_bytes) == sum;
}

/* Reads and verifies b's file into b->kv: 1 hit, 0 miss (error counted if
 * the file was there but wrong). */
static int f_get_one(ftier *f, pkv__tier_block *b) {
  f->st.gets++;
  int32_t i = f_find(f, b->key);
  if (i == NONE || b->ntok != f->block_size || b->kv_bytes != f->kv_bytes) {
    f->st.misses++;
    return 0;
  }
  pkv__tier_block got;
  int r = f_read(f, b->key, &got);
  bool ok = r == 1 && got.parent.lo == b->parent.lo &&
            got.parent.hi == b->parent.hi && got.ns_id_hash == b->ns_id_hash &&
            memcmp(got.tokens, b->tokens, (size_t)b->ntok * sizeof(int32_t)) == 0;
  if (!ok) {
    f->st.misses++;
    f->st.errors++;
    f_drop(f, i, r >= 0); /* a bad file is removed; a vanished one forgotten */
    return 0;
  }
  memcpy(b->kv, got.kv, f->kv_bytes);
  f->st.hits++;
  return 1;
}

static int f_get(pkv__tier *t, pkv__tier_block *b, size_t n, uint8_t *found) {
  for (size_t i = 0; i < n; i++) found[i] = (uint8_t)f_get_one((ftier *)t, &b[i]);
  return 0;
}

static int f_contains(pkv__tier *t, const pkv__tier_block *b) {
  return f_find((ftier *)t, b->key) != NONE;
}

static void f_stats(pkv__tier *t, pkv_tier_stats *out) {
  ftier *f = (ftier *)t;
  *out = f->st;
  snprintf(out->name, sizeof out->name, "file");
  out->blocks = f->n_live;
  out->bytes_used = (uint64_t)f->n_live * f->rec_bytes;
  out->capacity_bytes = f->max_bytes;
}

static void f_destroy(pkv__tier *t) {
  ftier *f = (ftier *)t;
  if (!f) return;
  if (f->dirfd >= 0) close(f->dirfd);
  PKV__FREE_ALL(f->buf, f->e, f->heads, f);
}

static const pkv__tier_ops file_ops = {
    .name = "file", .put = f_put, .get = f_get, .contains = f_contains,
    .stats = f_stats, .destroy = f_destroy};

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

/* Indexes the block files already in the directory (their contents are
 * verified when read); removes leftover temporary files. */
static int f_scan(ftier *f) {
  int fd = dup(f->dirfd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0) close(fd);
    return pkv__err(PKV_ENOENT, "file tier: cannot list the directory: %s",
                    strerror(errno));
  }
  struct dirent *de;
  int rc = 0;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    const char *n = de->d_name;
    if (strncmp(n, ".tmp-", 5) == 0) {
      unlinkat(f->dirfd, n, 0);
      continue;
    }
    if (strlen(n) != 36 || strcmp(n + 32, ".blk") != 0) continue;
    uint64_t hi = 0, lo = 0;
    bool ok = true;
    for (int i = 0; i < 32 && ok; i++) {
      int v = hexval(n[i]);
      if (v < 0) ok = false;
      else if (i < 16) hi = hi << 4 | (uint64_t)v;
      else lo = lo << 4 | (uint64_t)v;
    }
    struct stat sb;
    if (!ok || fstatat(f->dirfd, n, &sb, 0) != 0 || !S_ISREG(sb.st_mode) ||
        (uint64_t)sb.st_size != f->rec_bytes)
      continue; /* another shape's or a foreign file: not ours to touch */
    if (f_find(f, (pkv_hash128){lo, hi}) == NONE && f_add(f, (pkv_hash128){lo, hi}))
      rc = pkv__err(PKV_ENOMEM, "file tier: no memory for the index");
  }
  closedir(d);
  while (rc == 0 && f->max_bytes &&
         (uint64_t)f->n_live * f->rec_bytes > f->max_bytes)
    f_drop(f, f->oldest, true);
  return rc;
}

int pkv__file_create(const char *dir, size_t kv_bytes, uint32_t block_size,
                     uint64_t max_bytes, pkv__tier **out) {
  int dfd = pkv__dir_open(dir, "file tier", true);
  if (dfd < 0) return PKV_ENOENT;
  ftier *f = pkv__calloc(1, sizeof *f);
  if (!f) {
    close(dfd);
    return pkv__err(PKV_ENOMEM, "file tier: no memory");
  }
  f->base.ops = &file_ops;
  f->dirfd = dfd;
  f->kv_bytes = kv_bytes;
  f->block_size = block_size;
  f->rec_bytes = pkv__rec_size(block_size, kv_bytes);
  f->max_bytes = max_bytes;
  f->free_e = f->oldest = f->newest = NONE;
  f->buf = pkv__malloc(f->rec_bytes);
  int rc = f->buf ? f_rehash(f, 1) : PKV_ENOMEM;
  if (rc) {
    f_destroy(&f->base);
    return pkv__err(PKV_ENOMEM, "file tier: no memory");
  }
  if ((rc = f_scan(f)) != 0) {
    f_destroy(&f->base);
    return rc;
  }
  *out = &f->base;
  return 0;
}

void pkv__file_set_below(pkv__tier *t, pkv__tier **below) {
  ((ftier *)t)->below = below;
}

void pkv__file_count_promotion(pkv__tier *t, uint64_t n) {
  ((ftier *)t)->st.promotions += n;
}
