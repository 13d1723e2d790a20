/*
 * bench_policy.c — cost of each eviction policy's hooks under memory
 * pressure, beside a bare ring-buffer FIFO of block ids.
 *
 * The pool is full and every cached block evictable, so each new block
 * needs an eviction.  One cycle is what the manager does to serve it:
 *
 *   v = choose_victim; on_remove(v); on_insert(v, new key); on_evictable(v)
 *
 * and, every fourth cycle, a prefix hit on a random cached block
 * (on_pinned, on_hit, on_evictable), so that frequency-based policies move
 * blocks between their queues as they would in service.  New blocks form
 * chains (each one's parent is the previous one) and a fraction of the keys
 * come back, so ghosts are both missed and hit.  Reported: ns per cycle
 * (median of repetitions), beside the ring baseline driven through the same
 * vtable calls.  Target: <= 100 ns per eviction.
 *
 * Also reported: the policy's memory per block, counted through the
 * library's allocator hook (bytes live after create, divided by the pool's
 * blocks), beside LRU's.
 */
#include "bu_bench.h"
#include "pagedkv/policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CYCLES 500000u
#define REPS 5

/* ------------------------------------------------------------ baseline */

/* FIFO of ids in a ring; reuse does not reorder.  Every block is in the
 * ring exactly once between insert and remove, which is all this benchmark
 * needs of it. */
typedef struct ring {
  uint32_t cap, head, len;
  int32_t *ids;
} ring;

static int ring_create(void **out, uint32_t n, const char *args) {
  (void)args;
  ring *r = calloc(1, sizeof *r);
  if (!r) return PKV_ENOMEM;
  r->ids = malloc(sizeof(int32_t) * n);
  if (!r->ids) {
    free(r);
    return PKV_ENOMEM;
  }
  r->cap = n;
  *out = r;
  return 0;
}
static void ring_destroy(void *s) {
  ring *r = s;
  if (r) free(r->ids), free(r);
}
static void ring_insert(void *s, int32_t b, const pkv_block_meta *m) {
  (void)m;
  ring *r = s;
  r->ids[(r->head + r->len++) % r->cap] = b;
}
static void ring_noop(void *s, int32_t b, const pkv_block_meta *m) {
  (void)s, (void)b, (void)m;
}
static int32_t ring_victim(void *s, uint64_t now) {
  (void)now;
  const ring *r = s;
  return r->len ? r->ids[r->head] : -1;
}
static void ring_remove(void *s, int32_t b) {
  ring *r = s;
  if (r->len && r->ids[r->head] == b) {
    r->head = (r->head + 1) % r->cap;
    r->len--;
  }
}
static const pkv_policy_ops ring_ops = {
    .version = PKV_POLICY_VERSION, .name = "ring",
    .create = ring_create, .destroy = ring_destroy,
    .on_insert = ring_insert, .on_hit = ring_noop,
    .on_evictable = ring_noop, .on_pinned = ring_noop,
    .choose_victim = ring_victim, .on_remove = ring_remove};

/* ------------------------------------------------------------ driver */

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* parent_block: the block inserted just before, as the manager reports a
 * chain's cached parent (a hint the policy checks against the key). */
static void fill_meta(pkv_block_meta *m, uint64_t key, uint64_t parent,
                      int32_t parent_block, uint32_t depth, uint64_t now,
                      uint64_t r) {
  m->now = now;
  m->key.lo = key;
  m->key.hi = key * 0x9e3779b97f4a7c15ull;
  m->parent.lo = parent;
  m->parent.hi = parent * 0x9e3779b97f4a7c15ull;
  m->depth = depth;
  m->parent_block = parent ? parent_block : -1;
  m->priority = (uint8_t)(r % 4 == 0 ? (r >> 8) % 101 : 35);
  m->priority_until = r % 16 == 0 ? now + (r >> 16) % 100000 : 0;
}

/* ------------------------------------------------------------ memory */

/* Counting allocator: a 16-byte header keeps each block's size, so that
 * `live` is the library's bytes in use at any moment. */
static size_t live;
static void *count_malloc(size_t n) {
  size_t *p = malloc(n + 16);
  if (!p) return NULL;
  *p = n;
  live += n;
  return (char *)p + 16;
}
static void count_free(void *q) {
  if (!q) return;
  size_t *p = (size_t *)((char *)q - 16);
  live -= *p;
  free(p);
}
static void *count_calloc(size_t k, size_t n) {
  if (n && k > SIZE_MAX / n) return NULL;
  void *q = count_malloc(k * n);
  if (q) memset(q, 0, k * n);
  return q;
}
static void *count_realloc(void *q, size_t n) {
  if (!q) return count_malloc(n);
  size_t old = *(size_t *)((char *)q - 16);
  void *r = count_malloc(n);
  if (!r) return NULL;
  memcpy(r, q, old < n ? old : n);
  count_free(q);
  return r;
}

/* Bytes per block the policy holds after create (its state is sized at
 * create; no hook allocates); -1 if create failed. */
static double bytes_per_block(const pkv_policy_ops *ops, uint32_t num_blocks) {
  if (pkv_replace_allocator(count_malloc, count_realloc, count_calloc,
                            count_free))
    return -1;
  size_t before = live;
  void *st;
  double bytes = -1;
  if (ops->create(&st, num_blocks, NULL) == 0) {
    bytes = (double)(live - before) / num_blocks;
    ops->destroy(st);
  }
  pkv_replace_allocator(NULL, NULL, NULL, NULL);
  return bytes;
}

/* ns per cycle; -1 if the policy failed. */
static double run(const pkv_policy_ops *ops, uint32_t num_blocks) {
  void *st;
  if (ops->create(&st, num_blocks, NULL)) return -1;
  pkv_block_meta m;
  uint64_t s = 88172645463325252ull, now = 1, key = 1;
  for (uint32_t b = 0; b < num_blocks; b++, key++) {
    fill_meta(&m, key, b % 16 ? key - 1 : 0, (int32_t)b - 1, b % 16, now++,
              rng_next(&s));
    ops->on_insert(st, (int32_t)b, &m);
    ops->on_evictable(st, (int32_t)b, &m);
  }
  /* Keys of the last evicted blocks: content that comes back. */
  enum { BACK = 1024 };
  uint64_t *key_of = malloc(sizeof(uint64_t) * num_blocks), back[BACK] = {0};
  if (!key_of) {
    ops->destroy(st);
    return -1;
  }
  for (uint32_t b = 0; b < num_blocks; b++) key_of[b] = b + 1;
  uint32_t depth = 0, n_back = 0;
  int32_t last = (int32_t)num_blocks - 1; /* block inserted last */
  uint64_t t0 = bu_now_ns();
  for (uint32_t i = 0; i < CYCLES; i++) {
    uint64_t r = rng_next(&s);
    int32_t v = ops->choose_victim(st, now);
    if (v < 0) {
      ops->destroy(st);
      return -1;
    }
    ops->on_remove(st, v);
    back[n_back++ % BACK] = key_of[v];
    /* one key in 8 is evicted content coming back (a ghost hit) */
    uint64_t k = r % 8 == 0 && n_back > BACK ? back[(r >> 3) % BACK] : ++key;
    key_of[v] = k;
    depth = r % 32 == 0 ? 0 : depth + 1;
    fill_meta(&m, k, depth ? k - 1 : 0, last, depth, now++, r);
    ops->on_insert(st, v, &m);
    last = v;
    ops->on_evictable(st, v, &m);
    if (i % 4 == 0) {
      int32_t b = (int32_t)((r >> 20) % num_blocks);
      m.now = now++;
      ops->on_pinned(st, b, &m);
      ops->on_hit(st, b, &m);
      ops->on_evictable(st, b, &m);
    }
  }
  uint64_t t1 = bu_now_ns();
  ops->destroy(st);
  free(key_of);
  return (double)(t1 - t0) / CYCLES;
}

static double median_run(const pkv_policy_ops *ops, uint32_t num_blocks) {
  double t[REPS];
  for (int i = 0; i < REPS; i++) {
    t[i] = run(ops, num_blocks);
    if (t[i] < 0) return -1;
  }
  return bu_median(t, REPS);
}

int main(void) {
  /* 4096 blocks: the policy's state stays in cache, so the figure is the
   * algorithm's cost; 65536: state of several MB, so it is mostly cache
   * misses on block metadata, as in a large server pool. */
  static const uint32_t sizes[] = {4096, 65536};
  printf("policy hooks: full pool, %u evictions per run (+1 hit per 4), "
         "median of %d\n", CYCLES, REPS);
  int failed = 0;
  const char *only = getenv("BENCH_POLICY"); /* one policy, for profiling */
  for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
    for (const char *const *n = pkv_policy_names(); *n; n++) {
      if (only && strcmp(only, *n) != 0) continue;
      const pkv_policy_ops *ops = pkv_policy_find(*n);
      /* Baseline measured beside each policy, so that drift on a shared
       * machine touches both. */
      double base = median_run(&ring_ops, sizes[z]);
      double ns = median_run(ops, sizes[z]);
      if (ns < 0 || base < 0) {
        fprintf(stderr, "bench_policy: %s failed\n", *n);
        failed = 1;
        continue;
      }
      char name[64];
      snprintf(name, sizeof name, "policy_%s_ns_per_eviction_%ublocks", *n,
               sizes[z]);
      bu_report_vs(name, ns, "ns", "ring FIFO", base, "x ring");
      double mem = bytes_per_block(ops, sizes[z]);
      double mem_lru = bytes_per_block(pkv_policy_find("lru"), sizes[z]);
      snprintf(name, sizeof name, "policy_%s_bytes_per_block_%ublocks", *n,
               sizes[z]);
      bu_report_vs(name, mem, "B", "lru", mem_lru, "x lru");
    }
  }
  return failed;
}
