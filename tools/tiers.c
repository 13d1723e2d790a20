/*
 * tiers.c — the tier flags of run and sim (tiers.h).
 */
#include "tiers.h"

#include "cli.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void tool_tiers_config(const tool_tiers *t, pkv_config *cfg) {
  uint64_t bytes = t->host_bytes;
  /* A host slot holds the K/V and, in owned mode, the token ids; in
   * external mode the K/V only (docs/MANAGER.md, "Host tier"). */
  if (t->host_blocks)
    bytes = t->host_blocks *
            (pkv_config_block_bytes(cfg) +
             (cfg->storage == PKV_STORAGE_OWNED ? (uint64_t)cfg->block_size * sizeof(int32_t) : 0));
  cfg->host_tier_bytes = bytes;
  cfg->host_tier_policy = bytes ? t->host_policy : NULL;
}

static void dir_of(const tool_tiers *t, const char *sub, char *out, size_t cap) {
  if (sub) snprintf(out, cap, "%s/%s", t->file_dir, sub);
  else snprintf(out, cap, "%s", t->file_dir);
}

int tool_tiers_redis_flag(const char *arg, tool_tiers *t, char *err, size_t err_cap) {
  const char *slash = NULL;
  bool unix_path = !strncmp(arg, "unix:", 5) || arg[0] == '/';
  if (!unix_path) slash = strchr(arg, '/');
  size_t alen = slash ? (size_t)(slash - arg) : strlen(arg);
  if (alen == 0) {
    snprintf(err, err_cap, "--redis '%.80s': no address (HOST:PORT[/PREFIX] or unix:/PATH)", arg);
    return CLI_EXIT_USAGE;
  }
  if (alen >= sizeof t->redis_addr) {
    snprintf(err, err_cap, "--redis: address longer than %zu bytes", sizeof t->redis_addr - 1);
    return CLI_EXIT_USAGE;
  }
  const char *pfx = slash ? slash + 1 : "";
  if (slash && !*pfx) {
    snprintf(err, err_cap, "--redis '%.80s': empty key prefix after '/'", arg);
    return CLI_EXIT_USAGE;
  }
  if (strlen(pfx) > 128) {
    snprintf(err, err_cap, "--redis: key prefix longer than 128 bytes");
    return CLI_EXIT_USAGE;
  }
  for (const char *p = pfx; *p; p++)
    if (*p <= ' ' || *p == 0x7f) {
      snprintf(err, err_cap, "--redis '%.80s': the key prefix has a space or control "
               "character at byte %zu", arg, (size_t)(p - pfx));
      return CLI_EXIT_USAGE;
    }
  memcpy(t->redis_addr, arg, alen);
  t->redis_addr[alen] = '\0';
  snprintf(t->redis_prefix, sizeof t->redis_prefix, "%s", pfx);
  t->redis = arg;
  return 0;
}

/* The file tier's record header (docs/MANAGER.md, "File tier"); a test
 * (check_sim, sim_file_tier_capacity) fills a tier sized with it. */
#define FILE_RECORD_HEADER 80u

uint64_t tool_tiers_file_record(pkv_cache *c) {
  const pkv_config *cfg = pkv_cache_config(c);
  return FILE_RECORD_HEADER + (uint64_t)cfg->block_size * sizeof(int32_t) +
         pkv_config_block_bytes(cfg);
}

static int attach_redis(const tool_tiers *t, pkv_cache *c, const char *sub, char *err,
                        size_t err_cap) {
  char prefix[300];
  const char *base = t->redis_prefix[0] ? t->redis_prefix : sub ? "pkv:sim:" : NULL;
  if (sub) snprintf(prefix, sizeof prefix, "%s%s:", base, sub);
  if (sub && strlen(prefix) > 128) {
    snprintf(err, err_cap, "--redis %s: key prefix '%s' (with the replay's part) is longer "
             "than 128 bytes", t->redis, prefix);
    return PKV_EINVAL;
  }
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  o.address = t->redis_addr;
  o.key_prefix = sub ? prefix : base;
  int rc = pkv_cache_set_remote_tier(c, &o);
  if (rc) snprintf(err, err_cap, "--redis %s: %s", t->redis, pkv_last_error());
  return rc;
}

int tool_tiers_attach(const tool_tiers *t, pkv_cache *c, const char *sub,
                      const char *redis_sub, char *err, size_t err_cap) {
  int rc = 0;
  if (t->file_dir) {
    char dir[4096];
    dir_of(t, sub, dir, sizeof dir);
    uint64_t max = t->file_blocks ? t->file_blocks * tool_tiers_file_record(c) : t->file_bytes;
    if ((rc = pkv_cache_set_file_tier(c, dir, max)) != 0) {
      snprintf(err, err_cap, "--file-dir %s: %s", dir, pkv_last_error());
      return rc;
    }
  }
  if (t->redis) rc = attach_redis(t, c, redis_sub, err, err_cap);
  return rc;
}

int tool_tiers_drain(pkv_cache *c, uint64_t *n_copies) {
  pkv_tier_copy q[64];
  uint32_t n = 0, pending = 0;
  do {
    int rc = pkv_tier_drain_copies(c, q, 64, &n, &pending);
    if (rc) return rc;
    if (n_copies) *n_copies += n;
  } while (pending);
  return 0;
}

void tool_tiers_hits(pkv_cache *c, uint64_t tokens[PKV_TIER_MAX], uint64_t errors[PKV_TIER_MAX]) {
  uint32_t bs = pkv_cache_config(c)->block_size;
  for (uint32_t i = 0; i < PKV_TIER_MAX; i++) {
    pkv_tier_stats st;
    bool on = pkv_tier_stats_get(c, i, &st) == 0;
    tokens[i] = on ? st.promotions * bs : 0;
    if (errors) errors[i] = on ? st.errors : 0;
  }
}

void tool_tiers_print(FILE *f, pkv_cache *c) {
  for (uint32_t i = 0; i < PKV_TIER_MAX; i++) {
    pkv_tier_stats st;
    if (pkv_tier_stats_get(c, i, &st) != 0) continue;
    if (i == PKV_TIER_REDIS) { /* a shared server: what it holds is not ours to count */
      fprintf(f, "  tier %-5s  %llu stored, %llu promoted, %llu errors (blocks held: not "
              "observable)\n", st.name, (unsigned long long)st.puts,
              (unsigned long long)st.promotions, (unsigned long long)st.errors);
      continue;
    }
    char capacity[32] = "no limit";
    if (st.capacity_bytes)
      snprintf(capacity, sizeof capacity, "%.1f MiB", (double)st.capacity_bytes / 1048576.0);
    fprintf(f, "  tier %-5s  %llu blocks held (%.1f MiB of %s), %llu stored, "
            "%llu promoted, %llu evicted, %llu errors\n", st.name,
            (unsigned long long)st.blocks, (double)st.bytes_used / 1048576.0,
            capacity, (unsigned long long)st.puts,
            (unsigned long long)st.promotions, (unsigned long long)st.evictions,
            (unsigned long long)st.errors);
  }
}

void tool_tiers_cleanup(const tool_tiers *t, const char *sub) {
  if (!t->file_dir || !sub) return;
  char dir[4096], path[4400];
  dir_of(t, sub, dir, sizeof dir);
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t n = strlen(de->d_name);
    if (n == 36 && strcmp(de->d_name + 32, ".blk") == 0) {
      snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
      unlink(path);
    }
  }
  closedir(d);
  rmdir(dir);
}
