/*
 * check_export.c — kernel exports: dense block table, slot mapping, CSR.
 */
#include "tu_core.h"

#include <stdlib.h>

static int32_t toks[64];

typedef struct batch {
  pkv_cache *c;
  pkv_seq_id s[4];
  uint32_t len[4];
} batch;

/* Four sequences: 9 tokens, empty, 4 tokens (exactly one block), and a fork
 * of the first grown to 13. */
static void batch_open(batch *b, pkv_storage storage) {
  for (int i = 0; i < 64; i++) toks[i] = 100 + i;
  pkv_config cfg;
  tu_config(&cfg, storage, 32, 4);
  b->c = tu_cache(&cfg);
  ck_assert_int_eq(pkv_seq_create(b->c, NULL, &b->s[0]), 0);
  ck_assert_int_eq(pkv_seq_append(b->c, b->s[0], toks, 9, NULL), 0);
  ck_assert_int_eq(pkv_seq_create(b->c, NULL, &b->s[1]), 0);
  ck_assert_int_eq(pkv_seq_create(b->c, NULL, &b->s[2]), 0);
  ck_assert_int_eq(pkv_seq_append(b->c, b->s[2], toks, 4, NULL), 0);
  ck_assert_int_eq(pkv_seq_fork(b->c, b->s[0], &b->s[3]), 0);
  ck_assert_int_eq(pkv_seq_append(b->c, b->s[3], toks, 4, NULL), 0);
  uint32_t lens[4] = {9, 0, 4, 13};
  memcpy(b->len, lens, sizeof lens);
}

START_TEST(dense_table) {
  batch b;
  batch_open(&b, _i ? PKV_STORAGE_EXTERNAL : PKV_STORAGE_OWNED);
  int32_t table[4 * 5], lens[4];
  ck_assert_int_eq(pkv_block_table(b.c, b.s, 4, table, 5, lens), 0);
  for (int i = 0; i < 4; i++) {
    int32_t blocks[8];
    uint32_t n;
    ck_assert_int_eq(pkv_seq_blocks(b.c, b.s[i], blocks, 8, &n), 0);
    ck_assert_int_eq(lens[i], (int32_t)b.len[i]);
    ck_assert_uint_eq(n, (b.len[i] + 3) / 4);
    for (uint32_t j = 0; j < 5; j++)
      ck_assert_int_eq(table[i * 5 + j], j < n ? blocks[j] : -1);
  }
  /* The fork shares the first two blocks, not the copied tail. */
  ck_assert_int_eq(table[15], table[0]);
  ck_assert_int_eq(table[16], table[1]);
  ck_assert_int_ne(table[17], table[2]);
  /* Exactly the widest table fits; lens may be NULL. */
  ck_assert_int_eq(pkv_block_table(b.c, b.s, 4, table, 4, NULL), 0);
  ck_assert_int_eq(pkv_block_table(b.c, b.s, 4, table, 3, NULL), PKV_ENOSPC);
  ck_assert_int_eq(pkv_block_table(b.c, NULL, 0, NULL, 0, NULL), 0);
  TU_DONE(b.c);
}
END_TEST

START_TEST(slot_mapping_ranges) {
  batch b;
  batch_open(&b, PKV_STORAGE_OWNED);
  int32_t blocks[8];
  uint32_t n;
  ck_assert_int_eq(pkv_seq_blocks(b.c, b.s[3], blocks, 8, &n), 0);
  int64_t all[13], part[13];
  ck_assert_int_eq(pkv_slot_mapping(b.c, b.s[3], 0, 13, all), 0);
  for (int t = 0; t < 13; t++) ck_assert_int_eq(all[t], (int64_t)blocks[t / 4] * 4 + t % 4);
  ck_assert_int_eq(pkv_slot_mapping(b.c, b.s[3], 3, 10, part), 0);
  ck_assert_mem_eq(part, all + 3, 7 * sizeof *part);
  ck_assert_int_eq(pkv_slot_mapping(b.c, b.s[3], 13, 13, NULL), 0);
  ck_assert_int_eq(pkv_slot_mapping(b.c, b.s[1], 0, 0, part), 0);
  ck_assert_int_eq(pkv_slot_mapping(b.c, b.s[1], 0, 1, part), PKV_ERANGE);
  pkv_cache_destroy(b.c);
}
END_TEST

START_TEST(csr) {
  batch b;
  batch_open(&b, PKV_STORAGE_EXTERNAL);
  int32_t indptr[5], indices[16], last[4];
  uint32_t n;
  ck_assert_int_eq(pkv_kv_csr(b.c, b.s, 4, indptr, indices, 16, last, &n), 0);
  ck_assert_uint_eq(n, 3 + 0 + 1 + 4);
  int32_t want_ptr[5] = {0, 3, 3, 4, 8};
  ck_assert_mem_eq(indptr, want_ptr, sizeof want_ptr);
  int32_t want_last[4] = {1, 0, 4, 1};
  ck_assert_mem_eq(last, want_last, sizeof want_last);
  for (int i = 0; i < 4; i++) {
    int32_t blocks[8];
    uint32_t nb;
    ck_assert_int_eq(pkv_seq_blocks(b.c, b.s[i], blocks, 8, &nb), 0);
    ck_assert_uint_eq(nb, (uint32_t)(indptr[i + 1] - indptr[i]));
    ck_assert_mem_eq(indices + indptr[i], blocks, nb * sizeof *blocks);
  }
  /* Exact capacity works; one less reports the total and writes nothing. */
  ck_assert_int_eq(pkv_kv_csr(b.c, b.s, 4, indptr, indices, 8, last, &n), 0);
  memset(indptr, 0x77, sizeof indptr);
  memset(indices, 0x77, sizeof indices);
  n = 0;
  ck_assert_int_eq(pkv_kv_csr(b.c, b.s, 4, indptr, indices, 7, last, &n), PKV_ENOSPC);
  ck_assert_uint_eq(n, 8);
  for (int i = 0; i < 5; i++) ck_assert_int_eq(indptr[i], 0x77777777);
  for (int i = 0; i < 16; i++) ck_assert_int_eq(indices[i], 0x77777777);
  /* Empty batch. */
  ck_assert_int_eq(pkv_kv_csr(b.c, NULL, 0, indptr, NULL, 0, NULL, &n), 0);
  ck_assert_int_eq(indptr[0], 0);
  ck_assert_uint_eq(n, 0);
  pkv_cache_destroy(b.c);
}
END_TEST

TU_MAIN("export",
    {"dense", 0, {{dense_table, 0, 2}, {slot_mapping_ranges}}},
    {"csr", 0, {{csr}}})
