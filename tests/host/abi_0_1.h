/*
 * abi_0_1.h — a frozen copy of the caller-filled structs of pagedkv 0.1
 * (include/pagedkv/pagedkv.h as released), under their own names, and the
 * few prototypes host_abi.c calls, declared with these types.  host_abi.c
 * includes this instead of the library's headers, so it is "a caller built
 * against 0.1": it must keep working with every later 0.x library.
 * Never edit the layouts here; they are the contract.
 */
#ifndef ABI_0_1_H
#define ABI_0_1_H

#include <stddef.h>
#include <stdint.h>

typedef struct v01_config {
  uint32_t n_layers, n_kv_heads, head_dim, block_size;
  int dtype; /* pkv_dtype */
  uint32_t num_blocks;
  uint64_t memory_bytes;
  int storage; /* pkv_storage */
  const char *policy;
  const void *policy_ops;
  const char *policy_args;
  void (*on_event)(const void *ev, void *user);
  void *event_user;
  uint64_t (*clock)(void *user);
  void *clock_user;
  uint32_t flags;
  uint32_t version;
  uint64_t reserved[8];
} v01_config;

typedef struct v01_seq_opts {
  const void *ns;
  size_t ns_len;
  uint64_t adapter_id;
  uint8_t priority;
  uint32_t version;
  uint64_t reserved[4];
} v01_seq_opts;

typedef struct pkv_cache pkv_cache;
typedef uint64_t pkv_seq_id;

void pkv_config_init(v01_config *cfg);
int pkv_cache_create(const v01_config *cfg, pkv_cache **out);
const v01_config *pkv_cache_config(const pkv_cache *cache);
void pkv_cache_destroy(pkv_cache *cache);
int pkv_seq_create(pkv_cache *cache, const v01_seq_opts *opts, pkv_seq_id *out);
int pkv_seq_append(pkv_cache *cache, pkv_seq_id seq, const int32_t *tokens,
                   uint32_t n_tokens, int64_t *slots);
int pkv_seq_commit(pkv_cache *cache, pkv_seq_id seq, uint32_t n_tokens);
int pkv_seq_match_prefix(pkv_cache *cache, pkv_seq_id seq, const int32_t *tokens,
                         uint32_t n_tokens, uint32_t max_tokens, uint32_t *matched);
int pkv_seq_free(pkv_cache *cache, pkv_seq_id seq);
int pkv_check(pkv_cache *cache, char *msg, size_t msg_cap);
const char *pkv_last_error(void);
unsigned pkv_version(void);

#endif /* ABI_0_1_H */
