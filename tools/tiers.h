/*
 * tiers.h — the tier flags `pagedkv run` and `pagedkv sim` share
 * (--host-bytes / --host-blocks, --host-policy, --file-dir, --file-bytes):
 * what they put into a pkv_config, the file tier they attach, the tier
 * copies they drain in external storage, and hits per tier for the report.
 */
#ifndef PKV_TOOLS_TIERS_H
#define PKV_TOOLS_TIERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "pagedkv/pagedkv.h"

typedef struct tool_tiers {
  uint64_t host_bytes;     /* --host-bytes (run) */
  uint64_t host_blocks;    /* --host-blocks (sim): the host tier in blocks */
  const char *host_policy; /* --host-policy, NULL = lru */
  const char *file_dir;    /* --file-dir, NULL = none */
  uint64_t file_bytes;     /* --file-bytes (run), 0 = no limit */
  uint64_t file_blocks;    /* sim: the file tier in blocks (its --file-bytes at the
                            * model's block bytes), 0 = no limit */
  const char *redis;       /* --redis as given, NULL = none */
  char redis_addr[300];    /* its address part */
  char redis_prefix[136];  /* its key prefix ("" = the library's "pkv:") */
} tool_tiers;

static inline bool tool_tiers_any(const tool_tiers *t) {
  return t->host_bytes || t->host_blocks || t->file_dir || t->redis;
}

/* --redis HOST:PORT[/PREFIX], [V6]:PORT[/PREFIX] or unix:/PATH (no prefix):
 * splits arg into t's address and prefix.  0, or 2 (usage) with the reason in err
 * (the address itself is checked by the library when attached). */
int tool_tiers_redis_flag(const char *arg, tool_tiers *t, char *err, size_t err_cap);

/* Sets cfg's host tier (cfg's shape and block size already set). */
void tool_tiers_config(const tool_tiers *t, pkv_config *cfg);
/* Attaches the file tier to c in dir (t->file_dir, or a directory below it
 * when sub is not NULL: one per replay), then the Redis tier (t->redis;
 * with redis_sub, its keys under PREFIX + redis_sub + ":", PREFIX
 * defaulting to "pkv:sim:" there).  0, or the library's code with the message in err
 * (PKV_EINVAL from the Redis tier: a bad --redis address or a prefix too
 * long, a usage error). */
int tool_tiers_attach(const tool_tiers *t, pkv_cache *c, const char *sub,
                      const char *redis_sub, char *err, size_t err_cap);
/* External storage: empties the tier copy queue (a replay has no bytes to
 * move).  Returns the library's code. */
int tool_tiers_drain(pkv_cache *c, uint64_t *n_copies);
/* Tokens each tier served (its promotions x block_size) and, when errors
 * is not NULL, the errors it counted (corrupt, short or foreign blocks,
 * failed writes, an unreachable server); 0 where absent. */
void tool_tiers_hits(pkv_cache *c, uint64_t tokens[PKV_TIER_MAX], uint64_t errors[PKV_TIER_MAX]);
/* Bytes of one file-tier record of c's blocks (docs/MANAGER.md, "File
 * tier": the 80-byte header, the token ids, the K/V). */
uint64_t tool_tiers_file_record(pkv_cache *c);
/* One line per configured tier: name, blocks held, puts, hits, errors. */
void tool_tiers_print(FILE *f, pkv_cache *c);
/* Removes the block files of a replay's own file-tier directory and the
 * directory (nothing else in it is touched). */
void tool_tiers_cleanup(const tool_tiers *t, const char *sub);

#endif
