/*
 * bad_policy.c — broken eviction-policy plug-ins for scripts/tool-misuse.sh
 * (`pagedkv sim --policy-lib`).  Built with one of:
 *
 *   -DBAD_CRASH    create() dereferences NULL (a plug-in that crashes in init)
 *   -DBAD_VICTIM   choose_victim() returns a block that does not exist
 *   -DBAD_LATE     choose_victim() names the last block it was told about,
 *                  which passes a first try and is wrong under real traffic
 *
 * The simulator must refuse each with a message naming the policy and exit
 * 1, and never print a table.
 */
#include "pagedkv/policy.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct bad {
  int32_t last;
} bad;

static int bad_create(void **state, uint32_t num_blocks, const char *args) {
  (void)num_blocks;
  (void)args;
#ifdef BAD_CRASH
  volatile int *p = NULL;
  *p = 1;
#endif
  bad *b = calloc(1, sizeof *b);
  if (!b) return PKV_ENOMEM;
  b->last = -1;
  *state = b;
  return 0;
}

static void bad_destroy(void *state) { free(state); }
static void bad_seen(void *state, int32_t block, const pkv_block_meta *meta) {
  (void)meta;
  ((bad *)state)->last = block;
}
static void bad_nothing(void *state, int32_t block, const pkv_block_meta *meta) {
  (void)state;
  (void)block;
  (void)meta;
}
static void bad_remove(void *state, int32_t block) {
  (void)state;
  (void)block;
}

static int32_t bad_victim(void *state, uint64_t now) {
  (void)now;
#ifdef BAD_VICTIM
  (void)state;
  return 1 << 30;
#else
  return ((bad *)state)->last;
#endif
}

PKV_API const pkv_policy_ops pkv_user_policy = {
    .version = PKV_POLICY_VERSION, .name = "badpolicy", .create = bad_create,
    .destroy = bad_destroy, .on_insert = bad_nothing, .on_hit = bad_nothing,
    .on_evictable = bad_seen, .on_pinned = bad_nothing, .choose_victim = bad_victim,
    .on_remove = bad_remove};
