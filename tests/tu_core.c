/* tu_core.c — see tu_core.h. */
#include "tu_core.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>


void tu_config_shape(pkv_config *cfg, uint32_t n_layers, uint32_t n_kv_heads,
                     uint32_t head_dim, uint32_t block_size, uint32_t num_blocks) {
  pkv_config_init(cfg);
  cfg->n_layers = n_layers;
  cfg->n_kv_heads = n_kv_heads;
  cfg->head_dim = head_dim;
  cfg->block_size = block_size;
  cfg->num_blocks = num_blocks;
}

void tu_config(pkv_config *cfg, pkv_storage storage, uint32_t num_blocks,
               uint32_t block_size) {
  tu_config_shape(cfg, 2, 2, 4, block_size, num_blocks);
  cfg->storage = storage;
}

pkv_cache *tu_cache(const pkv_config *cfg) {
  pkv_cache *c = NULL;
  int rc = pkv_cache_create(cfg, &c);
  ck_assert_msg(rc == 0, "cache_create: %s (%s)", pkv_err_name(rc),
                pkv_last_error());
  return c;
}

pkv_cache *tu_cache_new(pkv_storage storage, uint32_t num_blocks, uint32_t block_size) {
  pkv_config cfg;
  tu_config(&cfg, storage, num_blocks, block_size);
  return tu_cache(&cfg);
}

pkv_cache *tu_cache_events(pkv_storage storage, uint32_t num_blocks, uint32_t block_size,
                           void (*on_event)(const pkv_event *ev, void *user), void *user) {
  pkv_config cfg;
  tu_config(&cfg, storage, num_blocks, block_size);
  cfg.on_event = on_event;
  cfg.event_user = user;
  return tu_cache(&cfg);
}

pkv_seq_id tu_seq_new(pkv_cache *c, const int32_t *tokens, uint32_t n) {
  pkv_seq_id s = PKV_SEQ_NONE;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  if (n > 0) ck_assert_int_eq(pkv_seq_append(c, s, tokens, n, NULL), 0);
  return s;
}

uint32_t tu_match_new(pkv_cache *c, const int32_t *tokens, uint32_t n, uint32_t max_tokens,
                      pkv_seq_id *seq) {
  pkv_seq_id s;
  uint32_t matched = 0;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  ck_assert_int_eq(pkv_seq_match_prefix(c, s, tokens, n, max_tokens, &matched), 0);
  if (seq) *seq = s;
  return matched;
}

pkv_cache *tu_fixture_cache(int32_t toks[64], pkv_seq_id *live, pkv_seq_id *freed) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 32, 4);
  cfg.head_dim = 16;
  pkv_cache *c = tu_cache(&cfg);
  for (int i = 0; i < 64; i++) toks[i] = 10 + i;
  ck_assert_int_eq(pkv_seq_create(c, NULL, live), 0);
  ck_assert_int_eq(pkv_seq_append(c, *live, toks, 10, NULL), 0);
  ck_assert_int_eq(pkv_seq_commit(c, *live, 8), 0);
  ck_assert_int_eq(pkv_seq_create(c, NULL, freed), 0);
  ck_assert_int_eq(pkv_seq_free(c, *freed), 0);
  return c;
}

pkv_engine *tu_fixture_engine(pkv_cache *c) {
  pkv_engine_config ec;
  pkv_engine_config_init(&ec);
  ec.n_q_heads = 2;
  pkv_engine *e = NULL;
  ck_assert_int_eq(pkv_engine_create(c, &ec, &e), 0);
  return e;
}

pkv_stats tu_stats(pkv_cache *cache) {
  pkv_stats st;
  memset(&st, 0, sizeof st);
  ck_assert_int_eq(pkv_stats_get(cache, &st), 0);
  return st;
}

/* ------------------------------------------------ failing allocator */

static long fail_at_n, n_attempts, n_live;

static int should_fail(void) {
  n_attempts++;
  return fail_at_n > 0 && n_attempts >= fail_at_n;
}
static void *t_malloc(size_t n) {
  if (should_fail()) return NULL;
  void *p = malloc(n);
  if (p) n_live++;
  return p;
}
static void *t_calloc(size_t n, size_t s) {
  if (should_fail()) return NULL;
  void *p = calloc(n, s);
  if (p) n_live++;
  return p;
}
static void *t_realloc(void *p, size_t n) {
  if (should_fail()) return NULL;
  void *q = realloc(p, n);
  if (q && !p) n_live++;
  return q;
}
static void t_free(void *p) {
  if (p) n_live--;
  free(p);
}

void tu_alloc_install(long fail_at) {
  fail_at_n = fail_at;
  n_attempts = 0;
  ck_assert_int_eq(pkv_replace_allocator(t_malloc, t_realloc, t_calloc, t_free), 0);
}
void tu_alloc_restore(void) {
  ck_assert_int_eq(pkv_replace_allocator(NULL, NULL, NULL, NULL), 0);
}
long tu_alloc_live(void) { return n_live; }
long tu_alloc_count(void) { return n_attempts; }

/* ------------------------------------------------ data */

float tu_pattern(uint32_t tag, uint32_t pos, uint32_t layer, int is_v,
                 uint32_t head, uint32_t d) {
  /* Exact in float: < 2^24. */
  uint32_t v = ((tag * 131u + pos) * 8u + layer * 4u + (uint32_t)is_v * 2u + head) * 4u + d;
  return (float)(v & 0xffffffu);
}

static float *slot_ptr(pkv_cache *c, int64_t slot, uint32_t layer, int is_v,
                       uint32_t head) {
  const pkv_config *cfg = pkv_cache_config(c);
  /* Plain checks: ck_assert costs a pipe write per call in fork mode. */
  pkv_kv_layout L;
  void *k, *v;
  if (pkv_cache_layout(c, &L) != 0 || pkv_cache_kv(c, layer, &k, &v) != 0)
    ck_abort_msg("slot_ptr: %s", pkv_last_error());
  uint8_t *base = is_v ? v : k;
  int64_t b = slot / cfg->block_size, s = slot % cfg->block_size;
  return (float *)(base + b * L.block_stride + head * L.head_stride +
                   s * L.slot_stride);
}

/* Writes (write = 1) or compares the pattern of every layer, K/V, head. */
static int slot_visit(pkv_cache *c, int64_t slot, uint32_t tag, uint32_t pos,
                      int write) {
  const pkv_config *cfg = pkv_cache_config(c);
  for (uint32_t l = 0; l < cfg->n_layers; l++)
    for (int kv = 0; kv < 2; kv++)
      for (uint32_t h = 0; h < cfg->n_kv_heads; h++) {
        float *p = slot_ptr(c, slot, l, kv, h);
        for (uint32_t d = 0; d < cfg->head_dim; d++) {
          float want = tu_pattern(tag, pos, l, kv, h, d);
          if (write)
            p[d] = want;
          else if (p[d] != want)
            return 0;
        }
      }
  return 1;
}

void tu_write_slot(pkv_cache *c, int64_t slot, uint32_t tag, uint32_t pos) {
  (void)slot_visit(c, slot, tag, pos, 1);
}

int tu_slot_matches(pkv_cache *c, int64_t slot, uint32_t tag, uint32_t pos) {
  return slot_visit(c, slot, tag, pos, 0);
}

void tu_expect_figs(const char *file, int line, const tu_fig *figs, size_t n) {
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(figs[i].got == figs[i].want, "%s:%d: %s is %llu, expected %llu", file, line,
                  figs[i].expr, (unsigned long long)figs[i].got,
                  (unsigned long long)figs[i].want);
}

int tu_main(Suite *suite) {
  SRunner *sr = srunner_create(suite);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

Suite *tu_suite(const char *name, const tu_tcase *tcases) {
  Suite *s = suite_create(name);
  for (const tu_tcase *t = tcases; t->name; t++) {
    TCase *tc = tcase_create(t->name);
    if (t->timeout > 0)
      tcase_set_timeout(tc, t->timeout);
    else if (!getenv("CK_DEFAULT_TIMEOUT"))
      tcase_set_timeout(tc, TU_DEFAULT_TIMEOUT);
    for (const tu_test *x = t->tests; x < t->tests + TU_MAX_TESTS && x->fn; x++) {
      if (x->hi > x->lo)
        tcase_add_loop_test(tc, x->fn, x->lo, x->hi);
      else
        tcase_add_test(tc, x->fn);
    }
    suite_add_tcase(s, tc);
  }
  return s;
}

int tu_run(const char *name, const tu_tcase *tcases) {
  return tu_main(tu_suite(name, tcases));
}

/* ------------------------------------------------ test policy */

typedef struct lowest_state {
  uint8_t *cand;
  uint32_t n;
} lowest_state;

static int low_create(void **state, uint32_t n, const char *args) {
  (void)args;
  lowest_state *s = calloc(1, sizeof *s);
  if (!s) return PKV_ENOMEM;
  s->cand = calloc(n, 1);
  s->n = n;
  *state = s;
  return s->cand ? 0 : PKV_ENOMEM;
}
static void low_destroy(void *state) {
  lowest_state *s = state;
  if (!s) return;
  free(s->cand);
  free(s);
}
static void low_nop(void *st, int32_t b, const pkv_block_meta *m) {
  (void)st; (void)b; (void)m;
}
static void low_evictable(void *st, int32_t b, const pkv_block_meta *m) {
  (void)m;
  ((lowest_state *)st)->cand[b] = 1;
}
static void low_pinned(void *st, int32_t b, const pkv_block_meta *m) {
  (void)m;
  ((lowest_state *)st)->cand[b] = 0;
}
static int32_t low_victim(void *st, uint64_t now) {
  (void)now;
  lowest_state *s = st;
  for (uint32_t b = 0; b < s->n; b++)
    if (s->cand[b]) return (int32_t)b;
  return -1;
}
static void low_remove(void *st, int32_t b) { ((lowest_state *)st)->cand[b] = 0; }

/* Insert and hit change nothing: only evictable/pinned/remove move a
 * block in or out of the candidates. */
const pkv_policy_ops tu_policy_lowest =
    TU_POLICY_OPS("test-lowest", low_create, low_destroy, low_nop, low_nop, low_evictable,
                  low_pinned, low_victim, low_remove);

void tu_event_log(const pkv_event *ev, void *user) {
  tu_events *log = user;
  if (log->n < sizeof log->ev / sizeof log->ev[0]) log->ev[log->n] = *ev;
  log->n++;
}

const char *tu_srcdir(void) {
  const char *s = getenv("PKV_SRCDIR");
  return s && *s ? s : ".";
}

int tu_replay_dir(const char *dir, int (*run)(const uint8_t *data, size_t size)) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  static uint8_t buf[1 << 16];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    run(buf, len);
    n++;
  }
  closedir(d);
  return n;
}

int tu_replay_fuzz(const char *name, int (*run)(const uint8_t *data, size_t size)) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/tests/fuzz/%s", tu_srcdir(), name);
  return tu_replay_dir(dir, run);
}

void tu_fail_first(atomic_int *failed, pthread_mutex_t *lock, char *why, size_t cap,
                   const char *fmt, va_list ap) {
  pthread_mutex_lock(lock);
  if (!atomic_load(failed)) {
    vsnprintf(why, cap, fmt, ap);
    atomic_store(failed, 1);
  }
  pthread_mutex_unlock(lock);
}
