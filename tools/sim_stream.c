/*
 * sim_stream.c — the access stream of `pagedkv sim` (see sim.h): a trace cut
 * into blocks at one block size, each block given a dense identity that is
 * equal exactly for equal token content, and the next-use index of every
 * position (what Belady's bound needs), built in three passes:
 *
 *   count     prompt blocks per request (positions), 512-token id offsets
 *   identify  block key (trace id, or 512-block id + last-token offset at
 *             another size) renumbered densely through a hash map
 *   next use  one backward pass over all positions, one over full blocks
 *
 * Also the prompt tokens a request stands for (sim_request_tokens), which
 * `pagedkv run` uses to turn a Mooncake trace into real prompts.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Open-addressing map uint64 -> dense uint32 (renumbering block keys). */
typedef struct idmap {
  uint64_t *keys; /* key + 1; 0 = empty */
  uint32_t *vals;
  size_t cap, n;
} idmap;

static uint64_t mix64(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static bool idmap_init(idmap *m, size_t expect) {
  m->cap = 1024;
  while (m->cap < expect * 2) m->cap *= 2;
  m->keys = calloc(m->cap, sizeof *m->keys);
  m->vals = calloc(m->cap, sizeof *m->vals);
  m->n = 0;
  return m->keys && m->vals;
}

static uint32_t idmap_get(idmap *m, uint64_t key) {
  size_t mask = m->cap - 1, i = mix64(key) & mask;
  while (m->keys[i]) {
    if (m->keys[i] == key + 1) return m->vals[i];
    i = (i + 1) & mask;
  }
  m->keys[i] = key + 1;
  m->vals[i] = (uint32_t)m->n;
  return (uint32_t)m->n++;
}

static void idmap_free(idmap *m) {
  free(m->keys);
  free(m->vals);
}

/* Pass 1: offsets of every request's 512-token ids and of its positions;
 * the longest prompt.  Returns the number of positions. */
static uint64_t stream_count(const trace *t, sim_stream *s, uint64_t *n512_out) {
  const uint32_t B512 = TRACE_MOONCAKE_BLOCK;
  uint64_t n512 = 0, n_pos = 0;
  for (size_t r = 0; r < t->n_reqs; r++) {
    uint32_t len = t->reqs[r].input_len;
    s->off512[r] = n512;
    n512 += (len + B512 - 1) / B512;
    n_pos += (len + s->block_size - 1) / s->block_size;
    if (len > s->max_input) s->max_input = len;
  }
  s->off512[t->n_reqs] = n512;
  *n512_out = n512;
  return n_pos;
}

/* Pass 2: every position's dense id, partial flag and request offsets. */
static bool stream_identify(const trace *t, sim_stream *s) {
  const uint32_t B512 = TRACE_MOONCAKE_BLOCK, block_size = s->block_size;
  idmap map;
  if (!idmap_init(&map, s->n_pos)) {
    idmap_free(&map);
    return false;
  }
  uint64_t p = 0;
  for (size_t r = 0; r < t->n_reqs; r++) {
    uint32_t len = t->reqs[r].input_len;
    const uint64_t *ids = s->ids512 + s->off512[r];
    s->req_pos[r] = p;
    for (uint32_t begin = 0; begin < len; begin += block_size, p++) {
      uint32_t end = begin + block_size < len ? begin + block_size : len;
      uint32_t last = end - 1;
      uint64_t key;
      /* At the ids' own size a block is its id (a partial tail's id already
       * stands for its shorter content); otherwise the 512-block holding
       * the last token and that token's offset fix the content. */
      if (block_size == B512) key = ids[last / B512];
      else key = ids[last / B512] * B512 + last % B512;
      s->id[p] = idmap_get(&map, key);
      s->partial[p] = end - begin < block_size;
      s->n_full += !s->partial[p];
    }
  }
  s->req_pos[t->n_reqs] = p;
  s->n_ids = (uint32_t)map.n;
  idmap_free(&map);
  return true;
}

/* Pass 3: next-use indices, one backward pass each. */
static bool stream_next_use(sim_stream *s) {
  uint64_t *last_all = malloc((s->n_ids ? s->n_ids : 1) * sizeof *last_all);
  uint64_t *last_full = malloc((s->n_ids ? s->n_ids : 1) * sizeof *last_full);
  if (!last_all || !last_full) {
    free(last_all);
    free(last_full);
    return false;
  }
  for (uint32_t i = 0; i < s->n_ids; i++) last_all[i] = last_full[i] = UINT64_MAX;
  for (uint64_t q = s->n_pos; q-- > 0;) {
    uint32_t id = s->id[q];
    s->next_all[q] = last_all[id] == UINT64_MAX ? SIM_NEVER + q : last_all[id];
    last_all[id] = q;
    if (!s->partial[q]) {
      s->next_full[q] = last_full[id] == UINT64_MAX ? SIM_NEVER + q : last_full[id];
      last_full[id] = q;
    } else {
      s->next_full[q] = SIM_NEVER + q;
    }
  }
  free(last_all);
  free(last_full);
  return true;
}

int sim_stream_build(const trace *t, uint32_t block_size, sim_stream *s,
                     char *err, size_t err_cap) {
  memset(s, 0, sizeof *s);
  s->t = t;
  s->block_size = block_size;
  s->n_reqs = t->n_reqs;
  /* The per-request columns in one allocation: off512, then req_pos. */
  s->off512 = malloc(2 * (t->n_reqs + 1) * sizeof(uint64_t));
  if (!s->off512) goto oom;
  s->req_pos = s->off512 + t->n_reqs + 1;
  /* 512-token content ids: the trace's, or fresh ones per request block. */
  uint64_t n512 = 0, n_pos = stream_count(t, s, &n512);
  /* Block ids and positions are 32-bit in the replays' tables. */
  if (n_pos >= UINT32_MAX) {
    snprintf(err, err_cap, "%llu block lookups at block size %u: more than a replay can index "
             "(%u); use a larger --block-size or a shorter trace",
             (unsigned long long)n_pos, block_size, UINT32_MAX - 1);
    sim_stream_free(s);
    return -1;
  }
  if (t->n_hash) {
    s->ids512 = t->hash_ids;
  } else {
    s->own_ids512 = malloc((n512 ? n512 : 1) * sizeof *s->own_ids512);
    if (!s->own_ids512) goto oom;
    for (uint64_t i = 0; i < n512; i++) s->own_ids512[i] = i;
    s->ids512 = s->own_ids512;
  }
  s->n_pos = n_pos;
  /* The per-position columns in one allocation, widest first: next_all,
   * next_full, id, partial. */
  uint64_t rows = n_pos ? n_pos : 1;
  s->next_all = malloc(rows * (2 * sizeof(uint64_t) + sizeof(uint32_t) + 1));
  if (!s->next_all) goto oom;
  s->next_full = s->next_all + rows;
  s->id = (uint32_t *)(s->next_full + rows);
  s->partial = (uint8_t *)(s->id + rows);
  if (stream_identify(t, s) && stream_next_use(s)) return 0;
oom:
  snprintf(err, err_cap, "out of memory building the access stream");
  sim_stream_free(s);
  return -1;
}

void sim_stream_free(sim_stream *s) {
  free(s->off512);   /* and req_pos */
  free(s->next_all); /* and next_full, id, partial */
  free(s->own_ids512);
  memset(s, 0, sizeof *s);
}

void sim_request_tokens(const sim_stream *s, size_t r, int32_t *out) {
  const uint64_t *ids = s->ids512 + s->off512[r];
  uint32_t len = s->t->reqs[r].input_len;
  for (uint32_t i = 0; i < len; i += TRACE_MOONCAKE_BLOCK) {
    uint64_t base = mix64(ids[i / TRACE_MOONCAKE_BLOCK] ^ UINT64_C(0x5bd1e995));
    uint32_t end = i + TRACE_MOONCAKE_BLOCK < len ? i + TRACE_MOONCAKE_BLOCK : len;
    for (uint32_t j = i; j < end; j++)
      out[j] = (int32_t)(mix64(base + (j - i)) & 0x7fffffff);
  }
}
