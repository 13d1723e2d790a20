/*
 * threads.c — the engine's persistent thread pool.
 *
 * n_threads - 1 workers are started once at engine creation and sleep on a
 * condition variable between calls; the calling thread is worker 0, so a
 * one-thread engine never touches a lock.  A job is published by bumping
 * `generation` under the lock; each worker runs it once and the last one
 * to finish signals `done`.  Workers spin briefly before sleeping, since
 * decode steps arrive back to back and a futex wake costs tens of
 * microseconds.
 *
 * Invariant: between pkv__pool_run calls, pending == 0 and every worker
 * waits for generation to change.
 */
#include "engine_internal.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

struct pkv__pool {
  uint32_t n_threads;
  pthread_t *threads;
  pthread_mutex_t lock;
  pthread_cond_t start; /* generation changed */
  pthread_cond_t done;  /* pending reached 0 */
  _Atomic uint64_t generation;
  atomic_uint pending;  /* workers (excluding 0) still running the job */
  int stop;
  pkv__task_fn fn;
  void *ctx;
};

typedef struct worker_arg {
  pkv__pool *pool;
  uint32_t index;
} worker_arg;

#define SPIN_ITERS 20000

static void *worker_main(void *p) {
  worker_arg wa = *(worker_arg *)p;
  pkv__free(p);
  pkv__pool *pool = wa.pool;
  uint64_t seen = 0;
  for (;;) {
    for (int i = 0; i < SPIN_ITERS && atomic_load(&pool->generation) == seen; i++)
      __builtin_ia32_pause();
    pthread_mutex_lock(&pool->lock);
    while (atomic_load(&pool->generation) == seen && !pool->stop)
      pthread_cond_wait(&pool->start, &pool->lock);
    if (pool->stop) {
      pthread_mutex_unlock(&pool->lock);
      return NULL;
    }
    seen = atomic_load(&pool->generation);
    pkv__task_fn fn = pool->fn;
    void *ctx = pool->ctx;
    pthread_mutex_unlock(&pool->lock);
    fn(ctx, wa.index);
    if (atomic_fetch_sub(&pool->pending, 1) == 1) {
      pthread_mutex_lock(&pool->lock);
      pthread_cond_signal(&pool->done);
      pthread_mutex_unlock(&pool->lock);
    }
  }
}

int pkv__pool_create(uint32_t n_threads, pkv__pool **out) {
  *out = NULL;
  if (n_threads == 0) n_threads = 1;
  pkv__pool *pool = pkv__calloc(1, sizeof *pool);
  if (!pool) return pkv__err(PKV_ENOMEM, "engine: thread pool allocation failed");
  pool->n_threads = n_threads;
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->start, NULL);
  pthread_cond_init(&pool->done, NULL);
  if (n_threads > 1) {
    pool->threads = pkv__calloc(n_threads - 1, sizeof *pool->threads);
    if (!pool->threads) {
      pool->n_threads = 1; /* no worker to join */
      pkv__pool_destroy(pool);
      return pkv__err(PKV_ENOMEM, "engine: thread pool allocation failed");
    }
  }
  for (uint32_t i = 1; i < n_threads; i++) {
    worker_arg *wa = pkv__malloc(sizeof *wa);
    if (wa) *wa = (worker_arg){pool, i};
    if (!wa || pthread_create(&pool->threads[i - 1], NULL, worker_main, wa) != 0) {
      pkv__free(wa);
      pool->n_threads = i; /* destroy joins the i - 1 started */
      pkv__pool_destroy(pool);
      return pkv__err(PKV_ENOMEM, "engine: cannot start worker thread %u", i);
    }
  }
  *out = pool;
  return 0;
}

void pkv__pool_destroy(pkv__pool *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->lock);
  pool->stop = 1;
  pthread_cond_broadcast(&pool->start);
  pthread_mutex_unlock(&pool->lock);
  for (uint32_t i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i - 1], NULL);
  pthread_mutex_destroy(&pool->lock);
  pthread_cond_destroy(&pool->start);
  pthread_cond_destroy(&pool->done);
  pkv__free(pool->threads);
  pkv__free(pool);
}

uint32_t pkv__pool_size(const pkv__pool *pool) { return pool->n_threads; }

void pkv__pool_run(pkv__pool *pool, pkv__task_fn fn, void *ctx) {
  if (pool->n_threads == 1) {
    fn(ctx, 0);
    return;
  }
  pthread_mutex_lock(&pool->lock);
  pool->fn = fn;
  pool->ctx = ctx;
  atomic_store(&pool->pending, pool->n_threads - 1);
  atomic_fetch_add(&pool->generation, 1);
  pthread_cond_broadcast(&pool->start);
  pthread_mutex_unlock(&pool->lock);
  fn(ctx, 0);
  for (int i = 0; i < SPIN_ITERS && atomic_load(&pool->pending) != 0; i++)
    __builtin_ia32_pause();
  pthread_mutex_lock(&pool->lock);
  while (atomic_load(&pool->pending) != 0) pthread_cond_wait(&pool->done, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
}
