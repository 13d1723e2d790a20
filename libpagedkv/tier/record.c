/*
 * record.c — the bottom of tier/: the checksum every tier stores, the block
 * record (tier.h) the file tier and save files write, and whole-buffer
 * reads and writes.  Calls nothing else in tier/ but the checksum's
 * vector paths (xsum.c).
 */
#include "tier/tier.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>
#include "tier/xsum.h"

#define REC_MAGIC 0x42564b50u /* "PKVB" little-endian */
#define REC_VERSION 1u

uint64_t pkv__tier_checksum(const int32_t *tokens, uint32_t ntok,
                            const void *kv, size_t kv_bytes) {
  pkv__xsum st;
  pkv__xsum_reset(&st);
  pkv__xsum_update(&st, tokens, (size_t)ntok * sizeof *tokens);
  if (kv && kv_bytes) pkv__xsum_update(&st, kv, kv_bytes);
  return pkv__xsum_digest(&st);
}

/* ------------------------------------------------ records */

size_t pkv__rec_size(uint32_t ntok, size_t kv_bytes) {
  return PKV__REC_HEADER + (size_t)ntok * sizeof(int32_t) + kv_bytes;
}

void pkv__rec_header(uint8_t *h, const pkv__tier_block *b, uint32_t depth,
                     uint64_t checksum) {
  memset(h, 0, PKV__REC_HEADER);
  pkv__put32(h, REC_MAGIC);
  pkv__put32(h + 4, REC_VERSION);
  pkv__put32(h + 8, b->ntok);
  pkv__put32(h + 12, depth);
  pkv__put64(h + 16, b->kv_bytes);
  pkv__put64(h + 24, b->key.lo);
  pkv__put64(h + 32, b->key.hi);
  pkv__put64(h + 40, b->parent.lo);
  pkv__put64(h + 48, b->parent.hi);
  pkv__put32(h + 56, b->ns_id_hash);
  pkv__put64(h + 64, checksum);
}

int pkv__rec_parse(const uint8_t *h, uint32_t ntok, size_t kv_bytes,
                   pkv__tier_block *b, uint32_t *depth, uint64_t *checksum,
                   const char **why) {
  *why = NULL;
  if (pkv__get32(h) != REC_MAGIC) *why = "not a pagedkv block record (bad magic)";
  else if (pkv__get32(h + 4) != REC_VERSION) *why = "unknown record version";
  else if (pkv__get32(h + 8) != ntok) *why = "token count differs (another block_size)";
  else if (pkv__get64(h + 16) != kv_bytes) *why = "K/V size differs (another shape)";
  if (*why) return -1;
  *depth = pkv__get32(h + 12);
  b->ntok = ntok;
  b->kv_bytes = kv_bytes;
  b->key = (pkv_hash128){pkv__get64(h + 24), pkv__get64(h + 32)};
  b->parent = (pkv_hash128){pkv__get64(h + 40), pkv__get64(h + 48)};
  b->ns_id_hash = pkv__get32(h + 56);
  *checksum = pkv__get64(h + 64);
  return 0;
}

int pkv__dir_open(const char *dir, const char *who, bool writable) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    pkv__err(PKV_ENOENT, "%s: cannot create '%s': %s", who, dir, strerror(errno));
    return -1;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    pkv__err(PKV_ENOENT, "%s: cannot open '%s': %s", who, dir, strerror(errno));
    return -1;
  }
  /* writable?  (root passes permission bits; a read-only mount does not) */
  if (writable && faccessat(dfd, ".", W_OK, AT_EACCESS) != 0) {
    int e = errno;
    close(dfd);
    pkv__err(PKV_ENOENT, "%s: '%s' is not writable: %s", who, dir, strerror(e));
    return -1;
  }
  return dfd;
}

int pkv__write_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return ENOSPC;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int pkv__read_all(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

