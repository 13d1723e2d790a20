/*
 * policy/ghost.c — ghost queues: the keys of blocks that recently left the
 * cache, with one byte of memory each, and no data.
 *
 * Keyed by the block key (pkv_hash128), never by block id: ids are reused
 * for other content as soon as a block is evicted.  A policy asks the ghost
 * on every insert and tells it on every removal, so both must cost one
 * cache miss, not a pointer chase through a large ring: the ghost is a
 * table of 64-byte buckets of 4 slots, each slot a 64-bit fingerprint of the
 * key, the ghost clock when it was added, and the value byte.
 *
 *     bucket = pkv__key_mix(key) & mask          slot = {fp, stamp, value}
 *     live   = fp != 0 && clock - stamp < cap
 *
 * add() writes into the key's own slot if it has one, else into an empty or
 * expired slot, else over the slot of least value (the oldest of those) in
 * the bucket; take() finds and clears the key's slot.  The table has
 * >= 2 * cap slots, so a bucket rarely holds 4 live keys; when it does, a
 * key leaves early — the least valued, because a policy that keeps use
 * counts here (fwlru) loses more by forgetting a hot key than a cold one:
 * a hot prefix that comes back as "used once" is evicted again before it
 * can earn its count back.  The
 * ghost is thus "the last cap keys, nearly": an approximation that only
 * costs a policy some of its memory, never correctness (policies use it as
 * a hint).  Fingerprints are 64 bits, so a false hit needs a 64-bit
 * collision within one bucket.
 *
 * The same file holds pkv__kmap, the exact map from the keys of the blocks
 * a policy holds to their ids (a policy that links a block to its parent
 * needs it: meta carries the parent's key, not its id).
 */
#include "policy/util.h"

#include <string.h>

#define GHOST_WAYS PKV__GHOST_WAYS

static uint64_t fingerprint(uint64_t h) {
  return (h * 0x9e3779b97f4a7c15ull) | 1; /* never 0: 0 marks an empty slot */
}

uint32_t pkv__ghost_cap(double ratio, uint32_t num_blocks) {
  double cap = ratio * (double)num_blocks;
  return cap > (double)(1u << 28) ? 1u << 28 : (uint32_t)cap;
}

uint32_t pkv__ghost_bucket(const pkv__ghost *g, pkv_hash128 k) {
  return (uint32_t)pkv__key_mix(k) & g->mask;
}

bool pkv__ghost_alloc(pkv__ghost *g, uint32_t cap) {
  memset(g, 0, sizeof *g);
  g->cap = cap;
  if (!cap) return true;
  uint32_t nb = 1;
  while ((uint64_t)nb * GHOST_WAYS < 2ull * cap) nb <<= 1;
  g->mask = nb - 1;
  /* Buckets on cache-line boundaries, so that one costs one miss. */
  size_t bytes = (size_t)nb * GHOST_WAYS * sizeof(pkv__ghost_slot);
  g->raw = pkv__malloc(bytes + 63);
  if (!g->raw) return false;
  /* Written here, not calloc'd: a large calloc maps untouched zero pages,
   * and the first add into each page would then take a page fault (~1 us)
   * inside an eviction.  Faulting them all in at create keeps the eviction
   * path free of them (the ghost is only ever written by evictions). */
  memset(g->raw, 0, bytes + 63);
  g->slot = (pkv__ghost_slot *)(((uintptr_t)g->raw + 63) & ~(uintptr_t)63);
  return true;
}

void pkv__ghost_free(pkv__ghost *g) {
  pkv__free(g->raw);
  g->raw = NULL;
  g->slot = NULL;
}

static bool live(const pkv__ghost *g, const pkv__ghost_slot *s) {
  return s->fp != 0 && g->clock - s->stamp < g->cap;
}

int pkv__ghost_take(pkv__ghost *g, pkv_hash128 k) {
  if (!g->cap) return -1;
  uint64_t h = pkv__key_mix(k), fp = fingerprint(h);
  pkv__ghost_slot *b = &g->slot[(size_t)(h & g->mask) * GHOST_WAYS];
  for (int i = 0; i < GHOST_WAYS; i++)
    if (b[i].fp == fp) {
      int v = live(g, &b[i]) ? b[i].value : -1;
      b[i].fp = 0;
      return v;
    }
  return -1;
}

void pkv__ghost_add(pkv__ghost *g, pkv_hash128 k, uint8_t value) {
  if (!g->cap) return;
  uint64_t h = pkv__key_mix(k), fp = fingerprint(h);
  pkv__ghost_slot *b = &g->slot[(size_t)(h & g->mask) * GHOST_WAYS];
  g->clock++;
  pkv__ghost_slot *dst = NULL;
  for (int i = 0; i < GHOST_WAYS && !dst; i++)
    if (b[i].fp == fp) dst = &b[i];
  for (int i = 0; i < GHOST_WAYS && !dst; i++)
    if (!live(g, &b[i])) dst = &b[i];
  if (!dst) { /* bucket full of live keys: the least valued leaves early */
    dst = &b[0];
    for (int i = 1; i < GHOST_WAYS; i++)
      if (b[i].value < dst->value ||
          (b[i].value == dst->value &&
           g->clock - b[i].stamp > g->clock - dst->stamp))
        dst = &b[i];
  }
  dst->fp = fp;
  dst->stamp = g->clock;
  dst->value = value;
}

/* ------------------------------------------------------------ key map */

static bool key_eq(pkv_hash128 a, pkv_hash128 b) {
  return a.lo == b.lo && a.hi == b.hi;
}

bool pkv__kmap_alloc(pkv__kmap *m, uint32_t num_blocks) {
  uint32_t n = 2;
  while (n < 2ull * num_blocks) n <<= 1;
  m->mask = n - 1;
  m->slot = pkv__malloc(sizeof(pkv__kmap_slot) * n);
  if (!m->slot) return false;
  for (uint32_t i = 0; i < n; i++) m->slot[i].block = -1;
  return true;
}

void pkv__kmap_free(pkv__kmap *m) {
  pkv__free(m->slot);
  m->slot = NULL;
}

void pkv__kmap_put(pkv__kmap *m, pkv_hash128 key, int32_t block) {
  uint32_t i = (uint32_t)pkv__key_mix(key) & m->mask;
  while (m->slot[i].block >= 0 && !key_eq(m->slot[i].key, key))
    i = (i + 1) & m->mask;
  m->slot[i].key = key;
  m->slot[i].block = block;
}

int32_t pkv__kmap_get(const pkv__kmap *m, pkv_hash128 key) {
  for (uint32_t i = (uint32_t)pkv__key_mix(key) & m->mask; m->slot[i].block >= 0;
       i = (i + 1) & m->mask)
    if (key_eq(m->slot[i].key, key)) return m->slot[i].block;
  return -1;
}

void pkv__kmap_del(pkv__kmap *m, pkv_hash128 key, int32_t block) {
  uint32_t i = (uint32_t)pkv__key_mix(key) & m->mask;
  while (m->slot[i].block >= 0 && !key_eq(m->slot[i].key, key))
    i = (i + 1) & m->mask;
  if (m->slot[i].block != block || block < 0) return;
  /* Backward shift: pull later entries of the probe run into the hole
   * unless their home slot lies cyclically after the hole. */
  uint32_t hole = i;
  for (uint32_t j = (hole + 1) & m->mask; m->slot[j].block >= 0;
       j = (j + 1) & m->mask) {
    uint32_t home = (uint32_t)pkv__key_mix(m->slot[j].key) & m->mask;
    if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
      m->slot[hole] = m->slot[j];
      hole = j;
    }
  }
  m->slot[hole].block = -1;
}
