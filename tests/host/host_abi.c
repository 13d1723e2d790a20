/*
 * host_abi.c — a caller built against pagedkv 0.1's structs (abi_0_1.h, not
 * the current headers) keeps working with the library it is linked with:
 *
 *   host_abi VERSION
 *
 * VERSION is the pkv_config / pkv_seq_opts version the library is expected
 * to report: 1 for today's library; 2 for the variant scripts/host-tests.sh
 * builds, whose headers append a field to each struct (taking reserved
 * space, as a later release would).  Each struct the caller passes ends at a
 * page boundary followed by an inaccessible page, so a library that read
 * past the 0.1 layout would crash the test.
 */
#include "abi_0_1.h"
#include "host_expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* size bytes that end exactly where an inaccessible page begins */
static void *before_guard(size_t size) {
  long page = sysconf(_SC_PAGESIZE);
  unsigned char *m = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED || mprotect(m + page, (size_t)page, PROT_NONE) != 0) {
    perror("host_abi: guard page");
    exit(1);
  }
  return m + page - size;
}

int main(int argc, char **argv) {
  unsigned want = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
  v01_config *cfg = before_guard(sizeof *cfg);
  pkv_config_init(cfg);
  HOST_EXPECT(cfg->version == want, "pkv_config_init wrote version %u, want %u", cfg->version, want);
  cfg->n_layers = 2;
  cfg->n_kv_heads = 2;
  cfg->head_dim = 64;
  cfg->block_size = 16;
  cfg->num_blocks = 32;
  cfg->version = 1; /* what a 0.1 caller's pkv_config_init would have set */
  pkv_cache *cache = NULL;
  HOST_EXPECT(pkv_cache_create(cfg, &cache) == 0, "%s", pkv_last_error());
  const v01_config *res = pkv_cache_config(cache);
  HOST_EXPECT(res->version == want && res->n_layers == 2 && res->num_blocks == 32 &&
             strcmp(res->policy, "lru") == 0,
         "resolved config: version %u, %u layers, %u blocks, policy %s", res->version,
         res->n_layers, res->num_blocks, res->policy);
  if (want >= 2) /* the appended field (first reserved word) got its default */
    HOST_EXPECT(res->reserved[0] == 0, "appended field %llu", (unsigned long long)res->reserved[0]);

  /* a zero-initialized 0.1 config (version 0) is still accepted */
  memset(cfg, 0, sizeof *cfg);
  cfg->n_layers = 1; cfg->n_kv_heads = 1; cfg->head_dim = 16; cfg->block_size = 8; cfg->num_blocks = 4;
  pkv_cache *c2 = NULL;
  HOST_EXPECT(pkv_cache_create(cfg, &c2) == 0, "zeroed config: %s", pkv_last_error());
  pkv_cache_destroy(c2);

  v01_seq_opts *o = before_guard(sizeof *o);
  memset(o, 0, sizeof *o);
  o->ns = "tenant";
  o->ns_len = 6;
  o->version = 1;
  int32_t toks[40];
  for (int i = 0; i < 40; i++) toks[i] = 7 * i;
  pkv_seq_id a, b;
  uint32_t hit = 0;
  HOST_EXPECT(pkv_seq_create(cache, o, &a) == 0, "%s", pkv_last_error());
  HOST_EXPECT(pkv_seq_append(cache, a, toks, 40, NULL) == 0, "%s", pkv_last_error());
  HOST_EXPECT(pkv_seq_commit(cache, a, 40) == 0, "%s", pkv_last_error());
  HOST_EXPECT(pkv_seq_create(cache, o, &b) == 0, "%s", pkv_last_error());
  HOST_EXPECT(pkv_seq_match_prefix(cache, b, toks, 40, 39, &hit) == 0 && hit == 32,
         "same namespace reuses %u tokens", hit);
  char msg[200];
  HOST_EXPECT(pkv_check(cache, msg, sizeof msg) == 0, "%s", msg);
  pkv_seq_free(cache, a);
  pkv_seq_free(cache, b);
  pkv_cache_destroy(cache);
  printf("host_abi: a 0.1 caller works with the library (0x%06x, struct version %u)\n",
         pkv_version(), want);
  return 0;
}
