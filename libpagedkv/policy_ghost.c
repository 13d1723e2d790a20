/*
 * policy_ghost.c — ghost queues: the keys of blocks that recently left the
 * cache, with one byte of memory each, and no data.
 *
 * Keyed by the block key (pkv_hash128), never by block id: ids are reused
 * for other content as soon as a block is evicted.  Layout: a ring of `cap`
 * entries in insertion order (the oldest is overwritten), and a chained hash
 * table over the live ones so that a key is found, or taken out, in O(1)
 * expected time.  An entry taken out early stays in the ring as a dead slot
 * until the ring comes round to it.
 *
 *     ring:   [k7 v][k2 v][dead][k9 v] ...      head ─► next slot to reuse
 *     bucket[h(k)] ─► ring index ⇄ ring index ⇄ ...   (next / prev)
 */
#include "policy_util.h"

#include <string.h>

#define GHOST_DEAD (-2)

static uint32_t ghost_hash(const pkv__ghost *g, pkv_hash128 k) {
  return (uint32_t)((k.lo ^ (k.hi * 0x9e3779b97f4a7c15ull)) >> 17) & g->mask;
}

uint32_t pkv__ghost_cap(double ratio, uint32_t num_blocks) {
  double cap = ratio * (double)num_blocks;
  return cap > (double)(1u << 30) ? 1u << 30 : (uint32_t)cap;
}

bool pkv__ghost_alloc(pkv__ghost *g, uint32_t cap) {
  memset(g, 0, sizeof *g);
  g->cap = cap;
  if (!cap) return true;
  uint32_t nb = 1;
  while (nb < cap) nb <<= 1;
  g->mask = nb - 1;
  g->bucket = pkv__malloc(sizeof(int32_t) * nb);
  g->ring = pkv__malloc(sizeof(pkv__ghost_entry) * cap);
  if (!g->bucket || !g->ring) return false;
  memset(g->bucket, 0xff, sizeof(int32_t) * nb);
  for (uint32_t i = 0; i < cap; i++) g->ring[i].prev = GHOST_DEAD;
  return true;
}

void pkv__ghost_free(pkv__ghost *g) {
  pkv__free(g->bucket);
  pkv__free(g->ring);
  g->bucket = NULL;
  g->ring = NULL;
}

static void ghost_unlink(pkv__ghost *g, int32_t i) {
  pkv__ghost_entry *e = &g->ring[i];
  if (e->prev == GHOST_DEAD) return;
  if (e->prev >= 0)
    g->ring[e->prev].next = e->next;
  else
    g->bucket[ghost_hash(g, e->key)] = e->next;
  if (e->next >= 0) g->ring[e->next].prev = e->prev;
  e->prev = GHOST_DEAD;
}

int pkv__ghost_take(pkv__ghost *g, pkv_hash128 k) {
  if (!g->cap) return -1;
  for (int32_t i = g->bucket[ghost_hash(g, k)]; i >= 0; i = g->ring[i].next)
    if (g->ring[i].key.lo == k.lo && g->ring[i].key.hi == k.hi) {
      ghost_unlink(g, i);
      return g->ring[i].value;
    }
  return -1;
}

void pkv__ghost_add(pkv__ghost *g, pkv_hash128 k, uint8_t value) {
  if (!g->cap) return;
  pkv__ghost_take(g, k);
  int32_t i = (int32_t)g->head;
  g->head = g->head + 1 == g->cap ? 0 : g->head + 1;
  ghost_unlink(g, i); /* the oldest entry falls out */
  pkv__ghost_entry *e = &g->ring[i];
  uint32_t h = ghost_hash(g, k);
  e->key = k;
  e->value = value;
  e->prev = -1;
  e->next = g->bucket[h];
  if (e->next >= 0) g->ring[e->next].prev = i;
  g->bucket[h] = i;
}
