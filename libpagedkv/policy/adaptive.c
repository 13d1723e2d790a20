/*
 * policy/adaptive.c — frequency-weighted LRU that picks its own weights
 * online (name "adaptive"; no arguments).
 *
 * Why.  fwlru (policy_fwlru.c) ranks blocks by age divided by a weight
 * growing with use count.  With one fixed weighting it gains on some
 * traces and capacities and loses on others: strong frequency weights help
 * a trace whose reused prefixes come back late (Mooncake at 1,000 blocks),
 * and hurt one whose newest blocks are the next ones needed (a chat turn,
 * an agent step re-reading its last tool output), where plain LRU is right.
 * Which one holds depends on the trace and on the capacity, so no fixed
 * setting is safe.
 *
 * How.  The real cache is fwlru's machinery (classes by use count, use
 * counts remembered across eviction in a ghost, parents' counts lifted to
 * their children's, chains placed leaf first) with one of AD_EXPERTS weight
 * settings, LRU among them.  Beside it, each setting runs on a *shadow*:
 * a key-only simulation of the real cache under that setting, fed with
 * every access the real cache sees (an insert, a hit, a dedup) and every
 * release.  A shadow models what makes the real cache differ from a
 * textbook one: an accessed key is in use (pinned, not a candidate) until
 * the real cache releases it, a release makes it the newest of its class,
 * and the shadow holds as many keys as the real index has room for (the
 * pool less the blocks held outside the index, such as a sequence's
 * partial last block: measured at the real cache's evictions).  In the
 * LRU setting the LRU shadow then agrees with the real cache on every
 * access of a 130,000-access trace.  Each shadow thus counts the hits its
 * setting would have had on the very same stream — set dueling, or ARC's
 * ghost lists taken to whole policies.
 *
 * Deciding.  Hits and misses come in runs: a request matches or misses a
 * whole chain, so two settings that disagree do so on many blocks at once.
 * The accesses are grouped into episodes (one walk down a chain: depth
 * grows), and a setting replaces the current one, at the end of an epoch
 * (about one shadow's worth of accesses), when it wins a sign test on the
 * accesses where the two disagree whose variance is the sum of squared
 * per-episode differences (z > AD_Z; tallies decay by AD_DECAY per
 * epoch).  Switching only changes the weights: the class lists are kept.
 * Two guards keep the real cache near LRU whatever the shadows say: its
 * own hits are tested the same way against the LRU shadow's from AD_WARMUP
 * epochs after a switch (a setting that loses goes back to LRU and is
 * barred for a while, doubling at each loss), and a ledger of real hits
 * minus LRU shadow hits over the whole run sends it back to LRU at once
 * when it is more than AD_BUDGET of the accesses behind, and keeps it
 * there until the growing allowance covers the deficit.
 *
 * Large pools sample: a shadow holds at most AD_SHADOW_MAX keys, so for a
 * pool of n blocks it simulates n / 2^s blocks on the keys whose hash falls
 * in one 2^s-th of the space (miniature simulation, Waldspurger et al.,
 * FAST'17), which keeps memory and time per access bounded whatever n is.
 *
 * Costs.  Per sampled access, every shadow does one key-map probe and one
 * list move (and, when full, one eviction among 8 class heads); per sampled
 * release one probe and one move: O(AD_EXPERTS) per hook, no allocation;
 * at an episode's end O(AD_EXPERTS^2) additions.  choose_victim is fwlru's
 * (8 heads, pure).  Memory: fwlru's, plus AD_EXPERTS shadows of
 * min(n, AD_SHADOW_MAX) 32-byte records, a 4-byte free-record slot each and
 * a key map each.  docs/POLICIES.md has the measured figures.
 */
#include "policy/fw.h"

#include <math.h>
#include <string.h>

/* The settings the shadows compare, (p, cold) as in fwlru's arguments.
 * Setting 0 is plain LRU (all weights 1), the one the cache starts with. */
#define AD_EXPERTS 6
static const struct {
  double p, cold;
} ad_experts[AD_EXPERTS] = {
    {0, 1}, {1, 1}, {2, 1}, {0, 0.1}, {1, 0.1}, {2, 0.1},
};
/* Keys per shadow, at most (sampling above). */
#define AD_SHADOW_MAX 2048u
/* An epoch is max(shadow size, this) sampled accesses. */
#define AD_EPOCH_MIN 512u
/* Tallies decay by this factor per epoch: a memory of ~1/(1-d) epochs. */
#define AD_DECAY 0.9
/* A setting replaces the current one when it leads by this many standard
 * deviations. */
#define AD_Z 2.0
/* Epochs after a switch before the real cache is judged against LRU: a
 * setting that keeps frequently used blocks longer pays at once (recent
 * blocks go sooner) and earns only when the kept blocks come back. */
#define AD_WARMUP 4
/* The real cache may fall behind the LRU shadow by at most this share of
 * the sampled accesses (plus AD_SLACK blocks, scaled by the sampling) over
 * the whole run; past that it goes back to LRU at once, and leaves it only
 * when the allowance, which grows with every access, covers the deficit
 * again.  (The target is a hit ratio within 0.002 of LRU's.) */
#define AD_BUDGET 0.001
#define AD_SLACK 32.0
/* Ghost entries per block, as fwlru's default. */
#define AD_HIST 8

/* One key of a shadow: the key's hash, its last release, its class. */
typedef struct ad_srec {
  uint64_t fp;
  uint64_t stamp;
  int32_t prev, next; /* class list links (pkv__bnodes, shift 3) */
  uint8_t cls;
  uint8_t pinned; /* accessed and not yet released: on no list */
  uint8_t pad[6];
} ad_srec;
_Static_assert(sizeof(ad_srec) == 32, "ad_srec: 32 bytes (nodes.shift = 3, "
               "pkv__fw_pick shift 2)");

typedef struct ad_shadow {
  double inv_weight[FW_CLASSES];
  uint64_t clock; /* releases so far */
  uint32_t used;  /* records taken (high-water mark) */
  uint32_t n;     /* keys held: used minus the free records */
  uint32_t n_free;
  int32_t *free_rec; /* records of evicted keys, for reuse */
  ad_srec *rec;
  pkv__bnodes nodes;
  pkv__blist q[FW_CLASSES];
  pkv__kmap map; /* {fp, 0} -> record */
} ad_shadow;

typedef struct ad_state {
  fw_state fw; /* first member: fwlru's hooks take an ad_state as is */
  uint32_t shadow_cap;   /* records per shadow (the pool, scaled) */
  /* The real cache's room for indexed blocks: the pool less the blocks it
   * holds outside the index (a sequence's partial last block, blocks being
   * computed).  Measured as the most blocks the index held when the real
   * cache had to evict, over this epoch and the last; num_blocks until the
   * first eviction.  The shadows hold that many keys (scaled). */
  uint32_t held;         /* blocks in the index now */
  uint32_t room_cur, room_last;
  uint32_t sample_shift; /* a key is sampled if 2^s divides its hash bits */
  uint32_t epoch;        /* sampled accesses per epoch */
  uint32_t in_epoch;     /* sampled accesses so far in this epoch */
  int cur;               /* setting in use */
  uint64_t switches;     /* times the setting changed */
  /* won[e][f]: accesses (decayed) that shadow e hit and shadow f missed;
   * var[e][f] = var[f][e]: the sum over episodes of the squared difference
   * of the two within the episode (the variance of won[e][f] - won[f][e]
   * when e and f are equally good). */
  double won[AD_EXPERTS][AD_EXPERTS], var[AD_EXPERTS][AD_EXPERTS];
  /* The current episode's counts, folded into won / var at its end. */
  uint32_t ep[AD_EXPERTS][AD_EXPERTS];
  uint32_t ep_real, ep_lru;
  uint32_t last_depth; /* depth of the last sampled access */
  /* The real cache against the LRU shadow, since the last switch: accesses
   * the real cache hit and the shadow missed (real_won), and the reverse. */
  double real_won, lru_won, real_var;
  /* Since the start: real cache hits minus LRU shadow hits (never decays),
   * and sampled accesses. */
  double ledger;
  uint64_t accesses;
  uint32_t since;        /* epochs since the last switch */
  /* A setting that lost to LRU in the real cache is barred for bar[e]
   * epochs; the next bar after a loss is twice as long. */
  uint32_t bar[AD_EXPERTS], next_bar[AD_EXPERTS];
  ad_shadow sh[AD_EXPERTS];
} ad_state;

static void ad_fini(void *state) {
  ad_state *st = state;
  for (int e = 0; e < AD_EXPERTS; e++) {
    pkv__free(st->sh[e].rec);
    pkv__free(st->sh[e].free_rec);
    pkv__kmap_free(&st->sh[e].map);
  }
  pkv__fw_fini(&st->fw);
}

static bool shadow_init(ad_shadow *sh, uint32_t cap, double p, double cold) {
  pkv__fw_weights(sh->inv_weight, p, cold);
  for (int k = 0; k < FW_CLASSES; k++) pkv__blist_init(&sh->q[k]);
  sh->rec = pkv__calloc(cap, sizeof *sh->rec);
  sh->free_rec = pkv__malloc((size_t)cap * sizeof *sh->free_rec);
  if (!sh->rec || !sh->free_rec) return false;
  for (uint32_t i = 0; i < cap; i++) sh->rec[i].prev = sh->rec[i].next = PKV__NIL;
  sh->nodes.prev = &sh->rec[0].prev;
  sh->nodes.next = &sh->rec[0].next;
  sh->nodes.shift = 3; /* 32-byte records = 8 int32_t */
  return pkv__kmap_alloc(&sh->map, cap);
}

static bool ad_setup(void *state, uint32_t num_blocks, const double *arg) {
  (void)arg;
  ad_state *st = state;
  uint32_t s = 0;
  while ((num_blocks >> s) > AD_SHADOW_MAX) s++;
  st->sample_shift = s;
  /* The share of keys sampled is 2^-s, so the shadow is the pool scaled by
   * the same factor (rounded up: at least one key). */
  st->shadow_cap = (uint32_t)(((uint64_t)num_blocks + (1u << s) - 1) >> s);
  st->epoch = st->shadow_cap > AD_EPOCH_MIN ? st->shadow_cap : AD_EPOCH_MIN;
  bool ok = pkv__fw_init(&st->fw, num_blocks, ad_experts[0].p,
                         ad_experts[0].cold, AD_HIST);
  for (int e = 0; ok && e < AD_EXPERTS; e++)
    ok = shadow_init(&st->sh[e], st->shadow_cap, ad_experts[e].p,
                     ad_experts[e].cold);
  return ok;
}

static const pkv__policy_desc ad_desc = {
    .name = "adaptive", .size = sizeof(ad_state), .setup = ad_setup,
    .fini = ad_fini,
};
PKV__POLICY_LIFECYCLE(ad, ad_desc)

/* Takes record r off its class list if it is a candidate there (not
 * pinned), and records it pinned or not. */
PKV__HOT void shadow_leave(ad_shadow *sh, int32_t r, uint8_t pinned) {
  pkv__blist_leave(&sh->q[sh->rec[r].cls], &sh->nodes, r, &sh->rec[r].pinned,
                   0, pinned);
}

/* One access of key fk in shadow sh.  As in the real cache, an accessed
 * key is in use (pinned: on no list, not a candidate) until the real
 * cache releases it (shadow_release), and a miss evicts among the released
 * keys only; if every key is pinned the key is not cached (the real cache
 * would have had to refuse the request). */
static bool shadow_access(ad_shadow *sh, uint32_t cap, pkv_hash128 fk) {
  int32_t r = pkv__kmap_get(&sh->map, fk);
  if (r >= 0) {
    shadow_leave(sh, r, 1);
    return true;
  }
  while (sh->n >= cap) { /* cap may have shrunk: evict until there is room */
    r = pkv__fw_pick(sh->q, sh->inv_weight, sh->clock, &sh->rec[0].stamp, 2);
    if (r < 0) return false;
    pkv__blist_unlink(&sh->q[sh->rec[r].cls], &sh->nodes, r);
    pkv__kmap_del(&sh->map, (pkv_hash128){sh->rec[r].fp, 0}, r);
    sh->free_rec[sh->n_free++] = r;
    sh->n--;
  }
  /* n < cap <= the records allocated, so a record is free or never used */
  r = sh->n_free ? sh->free_rec[--sh->n_free] : (int32_t)sh->used++;
  sh->n++;
  sh->rec[r].fp = fk.lo;
  sh->rec[r].pinned = 1;
  pkv__kmap_put(&sh->map, fk, r);
  return false;
}

/* The real cache released key fk in class k: it becomes the newest
 * candidate of its class in every shadow holding it. */
static void shadow_release(ad_shadow *sh, pkv_hash128 fk, uint8_t k) {
  int32_t r = pkv__kmap_get(&sh->map, fk);
  if (r < 0) return;
  shadow_leave(sh, r, 0);
  sh->rec[r].cls = k;
  sh->rec[r].stamp = ++sh->clock;
  pkv__blist_push_tail(&sh->q[k], &sh->nodes, r);
}

static void use_setting(ad_state *st, int e) {
  st->cur = e;
  st->switches++;
  st->real_won = st->lru_won = st->real_var = 0;
  st->since = 0;
  memcpy(st->fw.inv_weight, st->sh[e].inv_weight, sizeof st->fw.inv_weight);
}

/* The current setting lost to LRU in the real cache: back to LRU, and the
 * setting is barred for a while (twice as long at each further loss). */
static void fall_back(ad_state *st) {
  int e = st->cur;
  st->bar[e] = st->next_bar[e] ? st->next_bar[e] : 8;
  st->next_bar[e] = 2 * st->bar[e];
  use_setting(st, 0);
}

/* Whether the real cache is further behind LRU than the run's allowance. */
static bool over_budget(const ad_state *st) {
  return -st->ledger > AD_BUDGET * (double)st->accesses +
                           AD_SLACK / (double)(1u << st->sample_shift);
}

/* Ages the tallies and follows a setting that beats the current one
 * significantly: a sign test on the accesses where the two disagree (one
 * hit, the other missed), its variance from the episodes (see feed).
 *
 * A shadow is a model of the real cache, not the real cache (a sampled one
 * sees a share of the keys, and the real cache's contents depend on the
 * settings it ran before), so a setting that wins in its shadow may still
 * lose in the real cache.  The real cache's own hits are therefore tested
 * the same way against the LRU shadow's, from AD_WARMUP epochs after the
 * switch on, and the ledger (over_budget) bounds the loss over the run. */
static void epoch_end(ad_state *st) {
  st->in_epoch = 0;
  st->room_last = st->room_cur;
  st->room_cur = 0;
  for (int e = 0; e < AD_EXPERTS; e++) {
    for (int f = 0; f < AD_EXPERTS; f++) {
      st->won[e][f] *= AD_DECAY;
      st->var[e][f] *= AD_DECAY;
    }
    if (st->bar[e]) st->bar[e]--;
  }
  if (++st->since == AD_WARMUP) st->real_won = st->lru_won = st->real_var = 0;
  if (st->cur != 0 && st->since > AD_WARMUP) {
    double a = st->real_won, b = st->lru_won;
    if ((b - a) / sqrt(st->real_var + 1.0) > AD_Z) {
      fall_back(st);
      return;
    }
  }
  if (over_budget(st)) return; /* stay with LRU until the deficit is covered */
  int best = st->cur;
  double best_z = 0;
  for (int e = 0; e < AD_EXPERTS; e++) {
    if (st->bar[e]) continue;
    double a = st->won[e][st->cur], b = st->won[st->cur][e];
    double z = (a - b) / sqrt(st->var[e][st->cur] + 1.0);
    if (z > best_z) {
      best = e;
      best_z = z;
    }
  }
  if (best != st->cur && best_z > AD_Z) use_setting(st, best);
}

/* Folds the episode's counts into the tallies: the difference between two
 * settings within one episode is one draw, whatever its size. */
static void episode_end(ad_state *st) {
  for (int e = 0; e < AD_EXPERTS; e++)
    for (int f = e + 1; f < AD_EXPERTS; f++) {
      double d = (double)st->ep[e][f] - (double)st->ep[f][e];
      st->won[e][f] += st->ep[e][f];
      st->won[f][e] += st->ep[f][e];
      st->var[e][f] += d * d;
      st->var[f][e] = st->var[e][f];
      st->ep[e][f] = st->ep[f][e] = 0;
    }
  double d = (double)st->ep_real - (double)st->ep_lru;
  st->real_won += st->ep_real;
  st->lru_won += st->ep_lru;
  st->real_var += d * d;
  st->ep_real = st->ep_lru = 0;
}

/* The real cache saw an access of key at depth in its chain: a hit
 * (on_hit, on_dedup) or a miss (on_insert).
 *
 * Hits and misses come in runs: a request matches or misses a whole chain
 * of blocks, so two settings that disagree on a request disagree on all of
 * its blocks at once.  Counting blocks as independent draws overstates the
 * evidence by the length of those runs (and a test on a trace of few long
 * requests would follow noise).  The accesses are therefore grouped into
 * episodes — a run of accesses of growing depth, i.e. one walk down a
 * chain — and the sign test's variance is the sum of the squared
 * per-episode differences.  With episodes of one access it is the plain
 * test on counts. */
static void feed(ad_state *st, pkv_hash128 key, uint32_t depth, bool real_hit) {
  uint64_t h = pkv__key_mix(key);
  if ((h >> 40) & ((1ull << st->sample_shift) - 1)) return;
  if (depth <= st->last_depth) {
    episode_end(st);
    if (st->cur != 0 && over_budget(st)) fall_back(st);
    if (st->in_epoch >= st->epoch) epoch_end(st);
  }
  st->last_depth = depth;
  pkv_hash128 fk = {h, 0};
  uint32_t room = st->room_cur > st->room_last ? st->room_cur : st->room_last;
  if (!room) room = st->fw.num_blocks;
  uint32_t cap = (uint32_t)(((uint64_t)room + (1u << st->sample_shift) - 1) >>
                            st->sample_shift);
  if (cap > st->shadow_cap) cap = st->shadow_cap;
  unsigned hit = 0;
  for (int e = 0; e < AD_EXPERTS; e++)
    hit |= (unsigned)shadow_access(&st->sh[e], cap, fk) << e;
  if (hit && hit != (1u << AD_EXPERTS) - 1)
    for (int e = 0; e < AD_EXPERTS; e++)
      if (hit >> e & 1)
        for (int f = 0; f < AD_EXPERTS; f++)
          if (!(hit >> f & 1)) st->ep[e][f]++;
  st->ledger += (double)real_hit - (double)(hit & 1);
  st->accesses++;
  st->ep_real += real_hit && !(hit & 1);
  st->ep_lru += !real_hit && (hit & 1);
  st->in_epoch++;
}

static void ad_on_insert(void *state, int32_t block,
                         const pkv_block_meta *meta) {
  ad_state *st = state;
  pkv__fw_on_insert(&st->fw, block, meta);
  st->held++;
  feed(st, meta->key, meta->depth, false);
}

/* The real cache orders blocks by release, not by access (a block in use
 * cannot go, and a request's blocks are released leaf first when it
 * ends): a released key becomes a candidate, the newest of its class, in
 * every shadow holding it. */
static void release(ad_state *st, int32_t block) {
  uint64_t h = pkv__key_mix(st->fw.rec[block].key);
  if ((h >> 40) & ((1ull << st->sample_shift) - 1)) return;
  uint8_t k = st->fw.rec[block].uses >= FW_CLASSES
                  ? FW_CLASSES - 1
                  : (uint8_t)(st->fw.rec[block].uses - 1);
  for (int e = 0; e < AD_EXPERTS; e++)
    shadow_release(&st->sh[e], (pkv_hash128){h, 0}, k);
}

static void ad_on_evictable(void *state, int32_t block,
                            const pkv_block_meta *meta) {
  ad_state *st = state;
  pkv__fw_on_evictable(&st->fw, block, meta);
  release(st, block);
}

/* A block removed while in use (a reset) is released in the shadows, so
 * that they do not keep it pinned for ever. */
static void ad_on_remove(void *state, int32_t block) {
  ad_state *st = state;
  uint8_t where = st->fw.rec[block].where;
  if (where == FW_IN_USE) release(st, block);
  if (where == FW_EVICTABLE && st->held > st->room_cur)
    st->room_cur = st->held; /* an eviction (or a reset): the index is full */
  if (where != FW_ABSENT) st->held--;
  pkv__fw_on_remove(&st->fw, block);
}

static void ad_on_hit(void *state, int32_t block, const pkv_block_meta *meta) {
  ad_state *st = state;
  pkv__fw_on_hit(&st->fw, block, meta);
  feed(st, st->fw.rec[block].key, meta->depth, true);
}

/* A commit found the block's content cached and took it (the prefix match
 * stopped short of it).  As for the other built-ins, recomputed content is
 * not a use (the count stays); but the key was accessed and found, and the
 * shadows count presence, so they see an access that the real cache hit. */
static void ad_on_dedup(void *state, int32_t block,
                        const pkv_block_meta *meta) {
  (void)meta;
  ad_state *st = state;
  feed(st, st->fw.rec[block].key, meta->depth, true);
}

/* fwlru's check of the real cache, and each shadow's lists against its
 * own count of keys. */
static int ad_check(const void *state, const uint8_t *evictable,
                    uint32_t num_blocks, char *msg, size_t cap) {
  const ad_state *st = state;
  int rc = pkv__fw_check(&st->fw, evictable, num_blocks, msg, cap);
  if (rc) return rc;
  if (st->cur < 0 || st->cur >= AD_EXPERTS)
    return pkv__policy_check_fail(msg, cap, "adaptive: setting %d", st->cur);
  for (int e = 0; e < AD_EXPERTS; e++) {
    uint64_t n = 0;
    for (int k = 0; k < FW_CLASSES; k++) n += st->sh[e].q[k].len;
    for (uint32_t r = 0; r < st->sh[e].used; r++) n += st->sh[e].rec[r].pinned;
    if (n != st->sh[e].n || n + st->sh[e].n_free != st->sh[e].used ||
        st->sh[e].used > st->shadow_cap)
      return pkv__policy_check_fail(msg, cap, "adaptive: shadow %d lists and "
                                    "pinned keys make %llu, %u recorded (cap "
                                    "%u)", e, (unsigned long long)n,
                                    st->sh[e].n, st->shadow_cap);
  }
  return 0;
}

/* Pinning and the choice of victim concern the real cache alone: fwlru's
 * hooks, which take an ad_state as is (fw is its first member). */
#define ad_on_pinned pkv__fw_on_pinned
#define ad_choose_victim pkv__fw_choose_victim

const pkv_policy_ops pkv__policy_adaptive =
    PKV__POLICY_OPS("adaptive", ad, .on_dedup = ad_on_dedup);
