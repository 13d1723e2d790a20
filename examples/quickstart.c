/* quickstart.c — the README's usage example, kept compiling by the build. */
#include <pagedkv/pagedkv.h>
#include <stdio.h>

int main(void) {
  pkv_config cfg;
  pkv_config_init(&cfg);
  cfg.n_layers = 2; cfg.n_kv_heads = 2; cfg.head_dim = 64;
  cfg.block_size = 16; cfg.num_blocks = 64;          /* owned f32 arena, LRU */
  pkv_cache *cache;
  if (pkv_cache_create(&cfg, &cache) != 0) {
    fprintf(stderr, "create: %s\n", pkv_last_error());
    return 1;
  }
  int32_t prompt[40];
  for (int i = 0; i < 40; i++) prompt[i] = 1000 + i;
  pkv_seq_id a, b;
  int64_t slots[40];
  pkv_seq_create(cache, NULL, &a);
  pkv_seq_append(cache, a, prompt, 40, slots);   /* reserve 40 slots        */
  /* ... write K/V at slots[i] (or run pkv_prefill), then: */
  pkv_seq_commit(cache, a, 40);                   /* 2 full blocks cached   */
  pkv_seq_create(cache, NULL, &b);
  uint32_t hit;
  pkv_seq_match_prefix(cache, b, prompt, 40, 39, &hit); /* reuses 32 tokens */
  printf("b reuses %u of 40 prompt tokens\n", hit);
  pkv_seq_free(cache, a);
  pkv_seq_free(cache, b);
  pkv_cache_destroy(cache);
  return 0;
}
