/*
 * check_policy.c — the policy registry and every built-in policy's victim
 * order against a small model of the same policy.
 *
 * Each model is written for obviousness, not speed: per-block arrays of
 * stamps and counters, and choose_victim scans all blocks linearly.  A driver
 * plays the manager's side of the hook contract (insert, hit, evictable,
 * pinned, remove; choose_victim then on_remove on the victim) on scripted
 * sequences and on seeded random ones, and after every step compares the
 * policy's victim with the model's.
 */
#include "pagedkv/policy.h"

#include <check.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the driver */

enum { ABSENT = 0, IN_USE = 1, EVICTABLE = 2 };

/* A model: the same hooks over obvious state.  victim() may not mutate. */
typedef struct model model;
struct model {
  void (*reset)(model *m, uint32_t n);
  void (*insert)(model *m, int32_t b, const pkv_block_meta *meta);
  void (*hit)(model *m, int32_t b, const pkv_block_meta *meta);
  void (*evictable)(model *m, int32_t b, const pkv_block_meta *meta);
  void (*pinned)(model *m, int32_t b, const pkv_block_meta *meta);
  int32_t (*victim)(const model *m, uint64_t now);
  void (*remove)(model *m, int32_t b);
};

#define MAXB 256

/* Both sides, plus the manager's view of each block. */
typedef struct rig {
  const pkv_policy_ops *ops;
  void *st;
  model *m;
  uint32_t n;
  int state[MAXB];
  pkv_block_meta meta[MAXB];
  uint64_t now;
  uint64_t next_key;
  int n_victims;
} rig;

static void rig_open(rig *r, const char *policy, const char *args, model *m,
                     uint32_t n) {
  memset(r, 0, sizeof *r);
  r->ops = pkv_policy_find(policy);
  ck_assert_msg(r->ops != NULL, "policy %s not found", policy);
  ck_assert_int_eq(r->ops->create(&r->st, n, args), 0);
  r->m = m;
  r->n = n;
  r->now = 1000;
  r->next_key = 1;
  m->reset(m, n);
}

static void rig_close(rig *r) { r->ops->destroy(r->st); }

static void rig_check(rig *r) {
  int32_t got = r->ops->choose_victim(r->st, r->now);
  int32_t want = r->m->victim(r->m, r->now);
  ck_assert_msg(got == want, "%s: victim %d, model says %d (after %d "
                "evictions)", r->ops->name, got, want, r->n_victims);
  /* choose_victim must not change state: asking twice gives the same. */
  ck_assert_int_eq(r->ops->choose_victim(r->st, r->now), got);
  if (got >= 0) ck_assert_int_eq(r->state[got], EVICTABLE);
}

static void tick(rig *r) { r->now += 10; }

/* key = the driver's counter, so that re-inserted content can reuse a key
 * (what ghost queues look for) when the caller passes key != 0. */
static void do_insert(rig *r, int32_t b, uint64_t key, uint32_t depth,
                      uint8_t prio, uint64_t until) {
  ck_assert_int_eq(r->state[b], ABSENT);
  tick(r);
  pkv_block_meta *mt = &r->meta[b];
  memset(mt, 0, sizeof *mt);
  mt->now = r->now;
  mt->key.lo = key ? key : r->next_key++;
  mt->key.hi = mt->key.lo * 0x9e3779b97f4a7c15ull;
  mt->depth = depth;
  mt->priority = prio;
  mt->priority_until = until;
  r->ops->on_insert(r->st, b, mt);
  r->m->insert(r->m, b, mt);
  r->state[b] = IN_USE;
}

static void do_hit(rig *r, int32_t b) {
  ck_assert_int_ne(r->state[b], ABSENT);
  tick(r);
  r->meta[b].now = r->now;
  r->ops->on_hit(r->st, b, &r->meta[b]);
  r->m->hit(r->m, b, &r->meta[b]);
  if (r->state[b] == EVICTABLE) {
    r->ops->on_pinned(r->st, b, &r->meta[b]);
    r->m->pinned(r->m, b, &r->meta[b]);
    r->state[b] = IN_USE;
  }
}

static void do_release(rig *r, int32_t b) {
  ck_assert_int_eq(r->state[b], IN_USE);
  tick(r);
  r->meta[b].now = r->now;
  r->ops->on_evictable(r->st, b, &r->meta[b]);
  r->m->evictable(r->m, b, &r->meta[b]);
  r->state[b] = EVICTABLE;
}

/* Reference again without a prefix hit (e.g. a pin). */
static void do_pin(rig *r, int32_t b) {
  ck_assert_int_eq(r->state[b], EVICTABLE);
  tick(r);
  r->meta[b].now = r->now;
  r->ops->on_pinned(r->st, b, &r->meta[b]);
  r->m->pinned(r->m, b, &r->meta[b]);
  r->state[b] = IN_USE;
}

static void do_remove(rig *r, int32_t b) {
  ck_assert_int_ne(r->state[b], ABSENT);
  r->ops->on_remove(r->st, b);
  r->m->remove(r->m, b);
  r->state[b] = ABSENT;
}

/* choose_victim on both sides, compare, then evict it.  Returns it. */
static int32_t do_evict(rig *r) {
  tick(r);
  rig_check(r);
  int32_t v = r->ops->choose_victim(r->st, r->now);
  if (v >= 0) {
    do_remove(r, v);
    r->n_victims++;
  }
  return v;
}

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Seeded random walk over the contract.  Keys are drawn from a small space
 * so that blocks come back with a key seen before (ghost hits). */
static void random_walk(const char *policy, const char *args, model *m,
                        uint32_t n, int steps, uint64_t seed) {
  rig r;
  rig_open(&r, policy, args, m, n);
  uint64_t s = seed * 2654435761u + 1;
  for (int i = 0; i < steps; i++) {
    int32_t b = (int32_t)(rng_next(&s) % n);
    unsigned op = (unsigned)(rng_next(&s) % 100);
    if (r.state[b] == ABSENT) {
      if (op < 70) {
        uint64_t key = 1 + rng_next(&s) % (3 * n);
        uint8_t prio = (uint8_t)(rng_next(&s) % 4 == 0 ? rng_next(&s) % 101
                                                        : 35);
        uint64_t until = rng_next(&s) % 3 == 0 ? r.now + rng_next(&s) % 400
                                               : 0;
        do_insert(&r, b, key, (uint32_t)(rng_next(&s) % 8), prio, until);
      } else {
        do_evict(&r);
      }
    } else if (r.state[b] == IN_USE) {
      if (op < 60) do_release(&r, b);
      else if (op < 85) do_hit(&r, b);
      else if (op < 90) do_remove(&r, b);
      else do_evict(&r);
    } else {
      if (op < 30) do_hit(&r, b);
      else if (op < 40) do_pin(&r, b);
      else if (op < 45) do_remove(&r, b);
      else do_evict(&r);
    }
    rig_check(&r);
  }
  /* Drain: every evictable block comes out, in the model's order. */
  while (do_evict(&r) >= 0) {}
  for (uint32_t b = 0; b < n; b++) ck_assert_int_ne(r.state[b], EVICTABLE);
  rig_close(&r);
}

/* ------------------------------------------------------------ LRU model */

/* Victim = evictable block with the oldest release stamp. */
typedef struct lru_model {
  model base;
  uint32_t n;
  int state[MAXB];
  uint64_t released[MAXB];
  uint64_t clock;
} lru_model;

static void lrum_reset(model *m, uint32_t n) {
  lru_model *l = (lru_model *)m;
  memset(l->state, 0, sizeof l->state);
  l->n = n;
  l->clock = 0;
}
static void lrum_insert(model *m, int32_t b, const pkv_block_meta *mt) {
  (void)mt;
  ((lru_model *)m)->state[b] = IN_USE;
}
static void lrum_hit(model *m, int32_t b, const pkv_block_meta *mt) {
  (void)m, (void)b, (void)mt;
}
static void lrum_evictable(model *m, int32_t b, const pkv_block_meta *mt) {
  (void)mt;
  lru_model *l = (lru_model *)m;
  l->state[b] = EVICTABLE;
  l->released[b] = ++l->clock;
}
static void lrum_pinned(model *m, int32_t b, const pkv_block_meta *mt) {
  (void)mt;
  ((lru_model *)m)->state[b] = IN_USE;
}
static int32_t lrum_victim(const model *m, uint64_t now) {
  (void)now;
  const lru_model *l = (const lru_model *)m;
  int32_t best = -1;
  for (uint32_t b = 0; b < l->n; b++)
    if (l->state[b] == EVICTABLE &&
        (best < 0 || l->released[b] < l->released[best]))
      best = (int32_t)b;
  return best;
}
static void lrum_remove(model *m, int32_t b) {
  ((lru_model *)m)->state[b] = ABSENT;
}
static lru_model lru_m = {{lrum_reset, lrum_insert, lrum_hit, lrum_evictable,
                           lrum_pinned, lrum_victim, lrum_remove}};

START_TEST(lru_scripted) {
  rig r;
  rig_open(&r, "lru", NULL, &lru_m.base, 8);
  ck_assert_int_eq(do_evict(&r), -1); /* nothing evictable */
  for (int b = 0; b < 6; b++) do_insert(&r, b, 0, (uint32_t)b, 35, 0);
  ck_assert_int_eq(do_evict(&r), -1); /* all in use */
  do_release(&r, 3);
  do_release(&r, 1);
  do_release(&r, 4);
  do_hit(&r, 1); /* back in use */
  do_release(&r, 1);
  do_release(&r, 0);
  ck_assert_int_eq(do_evict(&r), 3);
  ck_assert_int_eq(do_evict(&r), 4);
  do_pin(&r, 1);
  ck_assert_int_eq(do_evict(&r), 0);
  ck_assert_int_eq(do_evict(&r), -1);
  do_remove(&r, 1); /* reset of a block in use */
  do_insert(&r, 1, 0, 0, 35, 0);
  do_release(&r, 1);
  ck_assert_int_eq(do_evict(&r), 1);
  rig_close(&r);
}
END_TEST

START_TEST(lru_random) {
  random_walk("lru", NULL, &lru_m.base, 64, 20000, (uint64_t)_i + 1);
}
END_TEST

/* ------------------------------------------------------------ registry */

static void noop_state(void *s) { (void)s; }
static int ok_create(void **s, uint32_t n, const char *a) {
  (void)n, (void)a;
  *s = NULL;
  return 0;
}
static void noop_hook(void *s, int32_t b, const pkv_block_meta *m) {
  (void)s, (void)b, (void)m;
}
static int32_t none_victim(void *s, uint64_t now) {
  (void)s, (void)now;
  return -1;
}
static void noop_remove(void *s, int32_t b) { (void)s, (void)b; }

#define USER_OPS(nm)                                                        \
  {.version = PKV_POLICY_VERSION, .name = nm, .create = ok_create,          \
   .destroy = noop_state, .on_insert = noop_hook, .on_hit = noop_hook,      \
   .on_evictable = noop_hook, .on_pinned = noop_hook,                       \
   .choose_victim = none_victim, .on_remove = noop_remove}

static bool names_have(const char *name) {
  for (const char *const *n = pkv_policy_names(); *n; n++)
    if (strcmp(*n, name) == 0) return true;
  return false;
}

START_TEST(registry_builtins) {
  const char *builtin[] = {"lru"};
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
    const pkv_policy_ops *ops = pkv_policy_find(builtin[i]);
    ck_assert_msg(ops != NULL, "%s missing", builtin[i]);
    ck_assert_str_eq(ops->name, builtin[i]);
    ck_assert_int_eq(ops->version, PKV_POLICY_VERSION);
    ck_assert(names_have(builtin[i]));
  }
  ck_assert_ptr_null(pkv_policy_find("no-such-policy"));
  ck_assert_ptr_null(pkv_policy_find(NULL));
  ck_assert_ptr_null(pkv_policy_find(""));
}
END_TEST

START_TEST(registry_register) {
  static const pkv_policy_ops good = USER_OPS("test-user");
  ck_assert_ptr_null(pkv_policy_find("test-user"));
  ck_assert(!names_have("test-user"));
  ck_assert_int_eq(pkv_policy_register(&good), 0);
  ck_assert_ptr_eq(pkv_policy_find("test-user"), &good);
  ck_assert(names_have("test-user"));
  ck_assert(names_have("lru"));
  /* The same name twice, or a built-in's name, is refused. */
  static const pkv_policy_ops again = USER_OPS("test-user");
  ck_assert_int_eq(pkv_policy_register(&again), PKV_ESTATE);
  ck_assert_ptr_eq(pkv_policy_find("test-user"), &good);
  static const pkv_policy_ops lru_clash = USER_OPS("lru");
  ck_assert_int_eq(pkv_policy_register(&lru_clash), PKV_ESTATE);
  ck_assert_ptr_ne(pkv_policy_find("lru"), &lru_clash);
}
END_TEST

START_TEST(registry_refuses) {
  ck_assert_int_eq(pkv_policy_register(NULL), PKV_EINVAL);
  pkv_policy_ops bad = USER_OPS("test-bad");
  bad.version = PKV_POLICY_VERSION + 1;
  ck_assert_int_eq(pkv_policy_register(&bad), PKV_ENOTSUP);
  ck_assert(strstr(pkv_last_error(), "version") != NULL);
  bad.version = 0;
  ck_assert_int_eq(pkv_policy_register(&bad), PKV_ENOTSUP);
  /* Each missing hook is named. */
  const size_t hooks[] = {
      offsetof(pkv_policy_ops, create), offsetof(pkv_policy_ops, destroy),
      offsetof(pkv_policy_ops, on_insert), offsetof(pkv_policy_ops, on_hit),
      offsetof(pkv_policy_ops, on_evictable),
      offsetof(pkv_policy_ops, on_pinned),
      offsetof(pkv_policy_ops, choose_victim),
      offsetof(pkv_policy_ops, on_remove)};
  for (size_t i = 0; i < sizeof hooks / sizeof hooks[0]; i++) {
    pkv_policy_ops h = USER_OPS("test-hookless");
    memset((char *)&h + hooks[i], 0, sizeof(void (*)(void)));
    ck_assert_int_eq(pkv_policy_register(&h), PKV_EINVAL);
    ck_assert(strstr(pkv_last_error(), "hook") != NULL);
  }
  pkv_policy_ops anon = USER_OPS(NULL);
  ck_assert_int_eq(pkv_policy_register(&anon), PKV_EINVAL);
  anon.name = "";
  ck_assert_int_eq(pkv_policy_register(&anon), PKV_EINVAL);
  ck_assert_ptr_null(pkv_policy_find("test-bad"));
  ck_assert_ptr_null(pkv_policy_find("test-hookless"));
  ck_assert(!names_have("test-bad"));
}
END_TEST

START_TEST(create_refuses) {
  const pkv_policy_ops *lru = pkv_policy_find("lru");
  void *st = (void *)1;
  ck_assert_int_eq(lru->create(&st, 0, NULL), PKV_EINVAL);
  ck_assert_int_eq(lru->create(&st, 8, "bogus=1"), PKV_EINVAL);
  ck_assert(strstr(pkv_last_error(), "bogus") != NULL);
  ck_assert_int_eq(lru->create(&st, 8, ""), 0);
  lru->destroy(st);
  lru->destroy(NULL);
}
END_TEST

Suite *policy_suite(void) {
  Suite *s = suite_create("policy");
  TCase *tc = tcase_create("registry");
  tcase_add_test(tc, registry_builtins);
  tcase_add_test(tc, registry_register);
  tcase_add_test(tc, registry_refuses);
  tcase_add_test(tc, create_refuses);
  suite_add_tcase(s, tc);
  tc = tcase_create("lru");
  tcase_add_test(tc, lru_scripted);
  tcase_add_loop_test(tc, lru_random, 0, 4);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(policy_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
