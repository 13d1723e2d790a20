/*
 * host_api.h — the calls a host test makes, as a table of pointers, so the
 * same workload runs against a library linked in (HOST_API_LINKED) or one
 * found with dlopen + dlsym (host_api_load), even two copies of it at once.
 */
#ifndef HOST_API_H
#define HOST_API_H

#include <pagedkv/pagedkv.h>
#include <stdio.h>
#include <string.h>

#include "host_expect.h"

#define HOST_API_CALLS(X)                                                     \
  X(config_init) X(cache_create) X(cache_destroy) X(seq_create) X(seq_free)   \
  X(seq_append) X(seq_fork) X(seq_commit) X(seq_match_prefix)                 \
  X(seq_info_get) X(stats_get) X(check) X(last_error) X(strerror)

typedef struct host_api {
#define HOST_API_FIELD(name) __typeof__(pkv_##name) *name;
  HOST_API_CALLS(HOST_API_FIELD)
#undef HOST_API_FIELD
} host_api;

#define HOST_API_LINKED_INIT(name) .name = pkv_##name,
#define HOST_API_LINKED {HOST_API_CALLS(HOST_API_LINKED_INIT)}

/* create / append / fork / commit / match / free on a small owned cache;
 * every step checked, pkv_check clean after each phase.  want_allocator is
 * the pkv_stats.allocator the host expects (NULL: any).  Returns 0 or 1. */
static int host_workload(const host_api *a, const char *want_allocator) {
  pkv_config cfg;
  a->config_init(&cfg);
  cfg.n_layers = 2;
  cfg.n_kv_heads = 2;
  cfg.head_dim = 64;
  cfg.block_size = 16;
  cfg.num_blocks = 64;
  pkv_cache *cache = NULL;
  int rc = a->cache_create(&cfg, &cache);
  HOST_EXPECT(rc == 0, "cache_create: %s", a->last_error());
  int32_t prompt[40];
  for (int i = 0; i < 40; i++) prompt[i] = 1000 + i;
  int64_t slots[48];
  pkv_seq_id s1, s2, s3;
  char msg[256];
  HOST_EXPECT(a->seq_create(cache, NULL, &s1) == 0, "%s", a->last_error());
  HOST_EXPECT(a->seq_append(cache, s1, prompt, 40, slots) == 0, "%s", a->last_error());
  HOST_EXPECT(slots[0] != slots[39], "slots");
  HOST_EXPECT(a->seq_commit(cache, s1, 40) == 0, "%s", a->last_error());
  HOST_EXPECT(a->seq_fork(cache, s1, &s2) == 0, "%s", a->last_error());
  HOST_EXPECT(a->seq_append(cache, s2, prompt, 8, slots) == 0, "%s", a->last_error());
  pkv_seq_info info;
  HOST_EXPECT(a->seq_info_get(cache, s2, &info) == 0 && info.n_tokens == 48,
              "fork + append: %u tokens", info.n_tokens);
  HOST_EXPECT(a->check(cache, msg, sizeof msg) == 0, "check: %s", msg);
  HOST_EXPECT(a->seq_create(cache, NULL, &s3) == 0, "%s", a->last_error());
  uint32_t hit = 0;
  HOST_EXPECT(a->seq_match_prefix(cache, s3, prompt, 40, 39, &hit) == 0, "%s",
              a->last_error());
  HOST_EXPECT(hit == 32, "match reused %u tokens, want 32", hit);
  pkv_stats st;
  HOST_EXPECT(a->stats_get(cache, &st) == 0, "%s", a->last_error());
  HOST_EXPECT(st.forks == 1 && st.prefix_hit_tokens == 32 && st.n_seqs == 3,
              "stats: forks %llu hit %llu seqs %u",
              (unsigned long long)st.forks,
              (unsigned long long)st.prefix_hit_tokens, st.n_seqs);
  HOST_EXPECT(!want_allocator || strcmp(st.allocator, want_allocator) == 0,
              "allocator '%s', want '%s'", st.allocator, want_allocator);
  HOST_EXPECT(strcmp(st.allocator, "jemalloc") != 0 || st.allocator_bytes >= st.kv_bytes,
              "jemalloc arena holds %llu bytes < kv %llu",
              (unsigned long long)st.allocator_bytes, (unsigned long long)st.kv_bytes);
  /* a bad call: clear error, cache unchanged */
  HOST_EXPECT(a->seq_append(cache, s1, prompt, 0, slots) == PKV_EINVAL &&
                  a->last_error()[0] != '\0',
              "empty append not refused clearly");
  HOST_EXPECT(a->seq_free(cache, s1) == 0 && a->seq_free(cache, s2) == 0 &&
                  a->seq_free(cache, s3) == 0,
              "%s", a->last_error());
  HOST_EXPECT(a->seq_free(cache, s1) == PKV_ENOSEQ, "stale handle accepted");
  HOST_EXPECT(a->check(cache, msg, sizeof msg) == 0, "check: %s", msg);
  a->cache_destroy(cache);
  return 0;
}

/* ------------------------------------------------ who is the host's malloc */

#include <dlfcn.h>
#include <link.h>

static int host_map_has(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  const char *want = *(const char **)data;
  if (info->dlpi_name && strstr(info->dlpi_name, want)) {
    *(const char **)data = info->dlpi_name;
    return 1;
  }
  return 0;
}

/* The path of the first loaded object whose name contains part, or NULL. */
static const char *host_loaded(const char *part) {
  const char *p = part;
  return dl_iterate_phdr(host_map_has, &p) ? p : NULL;
}

/* 0 if the process's malloc (what an undecorated call binds to) is glibc's
 * and no jemalloc and no libstdc++ is loaded; prints what it found. */
static __attribute__((unused)) int host_malloc_is_glibc(const char *when) {
  void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  HOST_EXPECT(libc != NULL, "libc.so.6 not loaded?");
  void *glibc_malloc = dlsym(libc, "malloc");
  void *proc_malloc = dlsym(RTLD_DEFAULT, "malloc");
  Dl_info where;
  memset(&where, 0, sizeof where);
  (void)dladdr(proc_malloc, &where);
  printf("%s: malloc = %p in %s; glibc's malloc = %p; jemalloc loaded: %s; "
         "libstdc++ loaded: %s\n",
         when, proc_malloc, where.dli_fname ? where.dli_fname : "?",
         glibc_malloc, host_loaded("jemalloc") ? host_loaded("jemalloc") : "no",
         host_loaded("libstdc++") ? host_loaded("libstdc++") : "no");
  dlclose(libc);
  HOST_EXPECT(proc_malloc == glibc_malloc, "%s: malloc is not glibc's", when);
  HOST_EXPECT(!host_loaded("jemalloc"), "%s: jemalloc in the link map", when);
  HOST_EXPECT(!host_loaded("libstdc++"), "%s: libstdc++ in the link map", when);
  return 0;
}

#endif /* HOST_API_H */
