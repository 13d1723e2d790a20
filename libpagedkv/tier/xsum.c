/*
 * tier/xsum.c — the tiers' XXH3-64: the AVX2 build (xsum_avx2.c) when the
 * CPU has AVX2, else libxxhash's own (baseline) one.  The choice is made
 * once per process (pthread_once), so a state is always used by one path.
 */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "tier/xsum.h"

#include <pthread.h>

_Static_assert(sizeof(XXH3_state_t) <= sizeof(pkv__xsum), "pkv__xsum too small");
_Static_assert(_Alignof(XXH3_state_t) <= _Alignof(pkv__xsum), "pkv__xsum misaligned");

static pthread_once_t pick_once = PTHREAD_ONCE_INIT;
static bool use_avx2;

static void pick(void) {
  __builtin_cpu_init();
  use_avx2 = __builtin_cpu_supports("avx2");
}

bool pkv__xsum_avx2(void) {
  pthread_once(&pick_once, pick);
  return use_avx2;
}

void pkv__xsum_reset_base(pkv__xsum *st) { XXH3_64bits_reset((XXH3_state_t *)st->s); }
void pkv__xsum_update_base(pkv__xsum *st, const void *p, size_t n) {
  XXH3_64bits_update((XXH3_state_t *)st->s, p, n);
}
uint64_t pkv__xsum_digest_base(const pkv__xsum *st) {
  return XXH3_64bits_digest((const XXH3_state_t *)st->s);
}

void pkv__xsum_reset(pkv__xsum *st) {
  if (pkv__xsum_avx2())
    pkv__xsum_reset_avx2(st);
  else
    pkv__xsum_reset_base(st);
}

void pkv__xsum_update(pkv__xsum *st, const void *p, size_t n) {
  if (use_avx2) /* set: a reset came first */
    pkv__xsum_update_avx2(st, p, n);
  else
    pkv__xsum_update_base(st, p, n);
}

uint64_t pkv__xsum_digest(const pkv__xsum *st) {
  return use_avx2 ? pkv__xsum_digest_avx2(st) : pkv__xsum_digest_base(st);
}

uint64_t pkv__xsum64(const void *p, size_t n) {
  pkv__xsum st;
  pkv__xsum_reset(&st);
  pkv__xsum_update(&st, p, n);
  return pkv__xsum_digest(&st);
}
