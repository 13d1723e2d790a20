/*
 * tier/xsum_avx2.c — XXH3-64 streaming compiled with AVX2 (the Makefile
 * gives *_avx2.c files -mavx2): xxhash's header with XXH_INLINE_ALL, whose
 * functions become static here and pick the AVX2 accumulate loop.  Called
 * only through xsum.c's dispatch, on a CPU that has AVX2.
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "tier/xsum.h"

_Static_assert(sizeof(XXH3_state_t) <= sizeof(pkv__xsum), "pkv__xsum too small");
_Static_assert(_Alignof(XXH3_state_t) <= _Alignof(pkv__xsum), "pkv__xsum misaligned");

void pkv__xsum_reset_avx2(pkv__xsum *st) { XXH3_64bits_reset((XXH3_state_t *)st->s); }

void pkv__xsum_update_avx2(pkv__xsum *st, const void *p, size_t n) {
  XXH3_64bits_update((XXH3_state_t *)st->s, p, n);
}

uint64_t pkv__xsum_digest_avx2(const pkv__xsum *st) {
  return XXH3_64bits_digest((const XXH3_state_t *)st->s);
}
