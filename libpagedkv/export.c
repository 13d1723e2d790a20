/*
 * export.c — page tables in the shapes attention kernels consume.
 *
 *   dense (vLLM):   table[i][j] = block j of seq i, -1 past its end
 *                   slot_mapping[t] = blocks[t / bs] * bs + t % bs
 *   CSR (FlashInfer): indptr[i] .. indptr[i+1] index into indices[], which
 *                   concatenates the page tables; last_page_len[i] = tokens
 *                   in seq i's last block (0 for an empty sequence)
 *
 * Each export validates every handle and every size before writing
 * anything, so a failed call leaves the caller's buffers untouched.  All
 * run under the cache lock: the result is one consistent snapshot.
 */
#include "core.h"

#include <string.h>

/* Batch exports resolve handles twice (check, then write) to avoid an
 * allocation; lookups are O(1).  The check: every handle live (else
 * PKV_ENOSEQ with the lookup's detail) and no sequence over max_blocks
 * blocks (else PKV_ENOSPC); *total = the blocks of the batch. */
static int batch_check(pkv_cache *c, const char *what, const pkv_seq_id *seqs,
                       uint32_t n_seqs, uint32_t max_blocks, uint64_t *total) {
  *total = 0;
  for (uint32_t i = 0; i < n_seqs; i++) {
    const pkv__seq *s = pkv__seq_lookup(c, seqs[i]);
    if (!s) return PKV_ENOSEQ;
    if (s->n_blocks > max_blocks)
      return pkv__err(PKV_ENOSPC, "%s: seq %u (batch row %u) has %u blocks > "
                      "max_blocks %u", what, s->index, i, s->n_blocks,
                      max_blocks);
    *total += s->n_blocks;
  }
  return 0;
}

/* The write pass: a handle batch_check found live. */
static inline const pkv__seq *batch_seq(const pkv_cache *c, pkv_seq_id id) {
  return c->seqs[(id & 0xffffffffu) - 1];
}

int pkv_block_table(pkv_cache *cache, const pkv_seq_id *seqs, uint32_t n_seqs,
                    int32_t *table, uint32_t max_blocks, int32_t *lens) {
  PKV_ENTER(cache, "block_table");
  PKV_CHECK(n_seqs == 0 || (seqs && table), "block_table: seqs or table is "
            "NULL");
  PKV_LOCK(cache);
  uint64_t total;
  int rc = batch_check(cache, "block_table", seqs, n_seqs, max_blocks, &total);
  for (uint32_t i = 0; !rc && i < n_seqs; i++) {
    const pkv__seq *s = batch_seq(cache, seqs[i]);
    int32_t *row = table + (size_t)i * max_blocks;
    if (s->n_blocks) memcpy(row, s->blocks, s->n_blocks * sizeof *row);
    for (uint32_t j = s->n_blocks; j < max_blocks; j++) row[j] = -1;
    if (lens) lens[i] = (int32_t)s->n_tokens;
  }
  return pkv__leave_ro(cache, rc);
}

int pkv_slot_mapping(pkv_cache *cache, pkv_seq_id seq, uint32_t begin,
                     uint32_t end, int64_t *out) {
  PKV_ENTER(cache, "slot_mapping");
  PKV_CHECK(out || end <= begin, "slot_mapping: out is NULL");
  PKV_LOCK_SEQ(cache, seq, s);
  int rc = 0;
  if (begin > end || end > s->n_tokens) {
    rc = pkv__err(PKV_ERANGE, "seq %u: slot range [%u, %u) not within [0, %u]",
                  s->index, begin, end, s->n_tokens);
  } else {
    uint32_t bs = cache->block_size;
    uint32_t t = begin;
    while (t < end) {
      uint32_t bi = t / bs, off = t - bi * bs;
      uint32_t chunk = bs - off;
      if (chunk > end - t) chunk = end - t;
      int64_t base = (int64_t)s->blocks[bi] * bs + off;
      for (uint32_t j = 0; j < chunk; j++) out[t - begin + j] = base + j;
      t += chunk;
    }
  }
  return pkv__leave_ro(cache, rc);
}

int pkv_kv_csr(pkv_cache *cache, const pkv_seq_id *seqs, uint32_t n_seqs,
               int32_t *indptr, int32_t *indices, uint32_t indices_cap,
               int32_t *last_page_len, uint32_t *n_indices) {
  PKV_ENTER(cache, "kv_csr");
  PKV_CHECK(indptr && n_indices && (n_seqs == 0 || (seqs && last_page_len)),
            "kv_csr: indptr, n_indices, seqs or last_page_len is NULL");
  PKV_CHECK(indices || indices_cap == 0, "kv_csr: indices is NULL with cap %u",
            indices_cap);
  PKV_LOCK(cache);
  uint64_t total;
  int rc = batch_check(cache, "kv_csr", seqs, n_seqs, UINT32_MAX, &total);
  if (rc) goto out;
  if (total > INT32_MAX) {
    rc = pkv__err(PKV_ERANGE, "kv_csr: %llu indices overflow int32",
                  (unsigned long long)total);
    goto out;
  }
  if (total > indices_cap) {
    *n_indices = (uint32_t)total;
    rc = pkv__err(PKV_ENOSPC, "kv_csr: %llu indices > indices_cap %u",
                  (unsigned long long)total, indices_cap);
    goto out;
  }
  uint32_t bs = cache->block_size;
  int32_t at = 0;
  indptr[0] = 0;
  for (uint32_t i = 0; i < n_seqs; i++) {
    const pkv__seq *s = batch_seq(cache, seqs[i]);
    if (s->n_blocks) memcpy(indices + at, s->blocks, s->n_blocks * sizeof(int32_t));
    at += (int32_t)s->n_blocks;
    indptr[i + 1] = at;
    last_page_len[i] =
        s->n_blocks ? (int32_t)(s->n_tokens - (s->n_blocks - 1) * bs) : 0;
  }
  *n_indices = (uint32_t)total;
out:
  return pkv__leave_ro(cache, rc);
}
