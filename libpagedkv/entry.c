/*
 * entry.c — the way into the library: what every public call of the
 * manager does before and after its own work (core.h, "entry").
 *
 *   PKV_ENTER(cache, "name")       clear the last error; a NULL cache is
 *                                  PKV_EINVAL "name: cache is NULL"
 *   PKV_CHECK(cond, fmt, args)     an argument check: PKV_EINVAL with the
 *                                  message when cond is false
 *                                  (both in internal.h)
 *   PKV_LOCK(cache)                the cache lock; PKV_EBUSY (lock not
 *                                  taken) from the cache's own event
 *                                  callback
 *   PKV_LOCK_SEQ(cache, id, s)     the lock, then the handle: s is the live
 *                                  sequence, or the call returns PKV_ENOSEQ
 *                                  (lock released, error set)
 *   return pkv__leave(cache, rc)   the full validator (PKV_DEBUG=2) after a
 *                                  mutation, unlock, rc
 *   return pkv__leave_ro(cache, rc) unlock, rc (read-only calls)
 *
 * Every check comes before the lock, so a refused call changes nothing and
 * pkv_last_error() names the first bad argument.  This file holds the
 * out-of-line pieces: the re-entry refusal, the unknown-handle refusal, the
 * default clock and the assertion report.  It is the bottom of the
 * manager's stack: it calls nothing but error.c.
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

_Thread_local const pkv_cache *pkv__tls_emitting
    __attribute__((tls_model("initial-exec")));

int pkv__lock_busy(const pkv_cache *c) {
  (void)c;
  return pkv__err(PKV_EBUSY, "call into a cache from inside its own event "
                  "callback (the cache is locked: queue the work, or pull "
                  "events with pkv_events_drain)");
}

pkv__seq *pkv__seq_lookup_fail(pkv_cache *c, pkv_seq_id id) {
  (void)c;
  pkv__err(PKV_ENOSEQ, "seq %#llx: unknown, freed or stale handle",
           (unsigned long long)id);
  return NULL;
}

uint64_t pkv__default_clock(void *user) {
  (void)user;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void pkv__assert_fail(const char *expr, const char *file, int line,
                      const char *detail) {
  fprintf(stderr, "pagedkv: assertion failed: %s (%s:%d) %s\n", expr, file,
          line, detail);
  abort();
}
