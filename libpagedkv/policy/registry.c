/*
 * policy/registry.c — the policy registry: lookup by name over the built-ins
 * and the policies registered at run time.
 *
 * Lookup by name sees two tables: the built-ins (const, compiled in) and the
 * policies users registered at run time (process-wide, at most
 * PKV__MAX_REGISTERED).  Built-in names can never be taken over, so a
 * cache created with policy "lru" always gets the library's LRU.
 *
 * Locking: one mutex guards the registered table and the name snapshots;
 * pkv_policy_names() takes no lock: it returns the newest snapshot, an
 * immutable array published with a release store.  Registered ops
 * are never removed, so a pointer returned by pkv_policy_find() stays valid
 * for the life of the process (the caller keeps the ops themselves alive —
 * typically a static const).
 */
#include "policy/util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PKV__MAX_REGISTERED 64

static const pkv_policy_ops *const builtins[] = {
    &pkv__policy_lru,    &pkv__policy_fifo,     &pkv__policy_lfu,
    &pkv__policy_s3fifo, &pkv__policy_priority, &pkv__policy_fwlru,
    &pkv__policy_adaptive,
};
#define N_BUILTINS (sizeof builtins / sizeof builtins[0])

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static const pkv_policy_ops *registered[PKV__MAX_REGISTERED];
static size_t n_registered;
/* Snapshots of the names: snapshot[k] lists the built-ins and the first k
 * registered policies, NULL-terminated.  Each row is written once, under
 * the lock, before it is published (a release store of names_pub) and never
 * changed afterwards, so a reader that acquired the pointer walks immutable
 * memory: no data race however registrations interleave, nothing freed,
 * and no allocation (the rows are static: 65 x 71 pointers). */
#define N_NAMES (N_BUILTINS + PKV__MAX_REGISTERED + 1)
static const char *snapshot[PKV__MAX_REGISTERED + 1][N_NAMES];
static const char *const *names_pub; /* the newest row; atomic */
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void names_init(void) {
  for (size_t i = 0; i < N_BUILTINS; i++) snapshot[0][i] = builtins[i]->name;
  snapshot[0][N_BUILTINS] = NULL;
  __atomic_store_n(&names_pub, (const char *const *)snapshot[0], __ATOMIC_RELEASE);
}

/* Caller holds registry_lock. */
static const pkv_policy_ops *find_locked(const char *name) {
  for (size_t i = 0; i < N_BUILTINS; i++)
    if (strcmp(builtins[i]->name, name) == 0) return builtins[i];
  for (size_t i = 0; i < n_registered; i++)
    if (strcmp(registered[i]->name, name) == 0) return registered[i];
  return NULL;
}

bool pkv__policy_is_builtin(const pkv_policy_ops *ops) {
  for (size_t i = 0; i < N_BUILTINS; i++)
    if (builtins[i] == ops) return true;
  return false;
}

const pkv_policy_ops *pkv_policy_find(const char *name) {
  pkv__err_clear();
  if (!name) return NULL;
  pthread_mutex_lock(&registry_lock);
  const pkv_policy_ops *ops = find_locked(name);
  pthread_mutex_unlock(&registry_lock);
  return ops;
}

/* Names which hook is missing, or NULL if all are there. */
static const char *missing_hook(const pkv_policy_ops *ops) {
  if (!ops->create) return "create";
  if (!ops->destroy) return "destroy";
  if (!ops->on_insert) return "on_insert";
  if (!ops->on_hit) return "on_hit";
  if (!ops->on_evictable) return "on_evictable";
  if (!ops->on_pinned) return "on_pinned";
  if (!ops->choose_victim) return "choose_victim";
  if (!ops->on_remove) return "on_remove";
  return NULL;
}

int pkv_policy_register(const pkv_policy_ops *ops) {
  pkv__err_clear();
  PKV_CHECK(ops, "policy_register: ops is NULL");
  if (ops->version < PKV_POLICY_VERSION_MIN || ops->version > PKV_POLICY_VERSION)
    return pkv__err(PKV_ENOTSUP,
                    "policy_register: version %d, this library speaks %d..%d",
                    ops->version, PKV_POLICY_VERSION_MIN, PKV_POLICY_VERSION);
  PKV_CHECK(ops->name && ops->name[0], "policy_register: ops has no name");
  const char *hook = missing_hook(ops);
  PKV_CHECK(!hook, "policy_register: '%s' has no %s hook", ops->name, hook);
  int rc = 0;
  pthread_mutex_lock(&registry_lock);
  if (find_locked(ops->name))
    rc = pkv__err(PKV_ESTATE, "policy_register: name '%s' is taken",
                  ops->name);
  else if (n_registered == PKV__MAX_REGISTERED)
    rc = pkv__err(PKV_ENOMEM, "policy_register: registry full (%d policies)",
                  PKV__MAX_REGISTERED);
  else {
    pthread_once(&names_once, names_init);
    registered[n_registered++] = ops;
    const char **row = snapshot[n_registered];
    memcpy(row, snapshot[n_registered - 1], sizeof snapshot[0]);
    row[N_BUILTINS + n_registered - 1] = ops->name;
    row[N_BUILTINS + n_registered] = NULL;
    __atomic_store_n(&names_pub, (const char *const *)row, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&registry_lock);
  return rc;
}

const char *const *pkv_policy_names(void) {
  pkv__err_clear();
  pthread_once(&names_once, names_init);
  return __atomic_load_n(&names_pub, __ATOMIC_ACQUIRE);
}
