/*
 * threads.c — the engine's persistent worker threads (pkv__threads_*).
 *
 * n_threads - 1 workers are started once at engine creation and sleep on a
 * condition variable between calls; the calling thread is worker 0, so a
 * one-thread engine never touches a lock.  A job is published by bumping
 * `generation` under the lock; each worker runs it once and the last one
 * to finish signals `done`.  Workers spin briefly before sleeping, since
 * decode steps arrive back to back and a futex wake costs tens of
 * microseconds.
 *
 * Invariant: between pkv__threads_run calls, pending == 0 and every worker
 * waits for generation to change.
 */
#include "engine_internal.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

struct pkv__threads {
  uint32_t n_threads;
  pthread_t *tid;
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
  pkv__threads *tp;
  uint32_t index;
} worker_arg;

#define SPIN_ITERS 20000

static void *worker_main(void *p) {
  worker_arg wa = *(worker_arg *)p;
  pkv__free(p);
  pkv__threads *tp = wa.tp;
  uint64_t seen = 0;
  for (;;) {
    for (int i = 0; i < SPIN_ITERS && atomic_load(&tp->generation) == seen; i++)
      __builtin_ia32_pause();
    pthread_mutex_lock(&tp->lock);
    while (atomic_load(&tp->generation) == seen && !tp->stop)
      pthread_cond_wait(&tp->start, &tp->lock);
    if (tp->stop) {
      pthread_mutex_unlock(&tp->lock);
      return NULL;
    }
    seen = atomic_load(&tp->generation);
    pkv__task_fn fn = tp->fn;
    void *ctx = tp->ctx;
    pthread_mutex_unlock(&tp->lock);
    fn(ctx, wa.index);
    if (atomic_fetch_sub(&tp->pending, 1) == 1) {
      pthread_mutex_lock(&tp->lock);
      pthread_cond_signal(&tp->done);
      pthread_mutex_unlock(&tp->lock);
    }
  }
}

int pkv__threads_create(uint32_t n_threads, pkv__threads **out) {
  *out = NULL;
  if (n_threads == 0) n_threads = 1;
  pkv__threads *tp = pkv__calloc(1, sizeof *tp);
  if (!tp) return pkv__err(PKV_ENOMEM, "engine: worker allocation failed");
  tp->n_threads = n_threads;
  pthread_mutex_init(&tp->lock, NULL);
  pthread_cond_init(&tp->start, NULL);
  pthread_cond_init(&tp->done, NULL);
  if (n_threads > 1) {
    tp->tid = pkv__calloc(n_threads - 1, sizeof *tp->tid);
    if (!tp->tid) {
      tp->n_threads = 1; /* no worker to join */
      pkv__threads_destroy(tp);
      return pkv__err(PKV_ENOMEM, "engine: worker allocation failed");
    }
  }
  for (uint32_t i = 1; i < n_threads; i++) {
    worker_arg *wa = pkv__malloc(sizeof *wa);
    if (wa) *wa = (worker_arg){tp, i};
    if (!wa || pthread_create(&tp->tid[i - 1], NULL, worker_main, wa) != 0) {
      pkv__free(wa);
      tp->n_threads = i; /* destroy joins the i - 1 started */
      pkv__threads_destroy(tp);
      return pkv__err(PKV_ENOMEM, "engine: cannot start worker thread %u", i);
    }
  }
  *out = tp;
  return 0;
}

void pkv__threads_destroy(pkv__threads *tp) {
  if (!tp) return;
  pthread_mutex_lock(&tp->lock);
  tp->stop = 1;
  pthread_cond_broadcast(&tp->start);
  pthread_mutex_unlock(&tp->lock);
  for (uint32_t i = 1; i < tp->n_threads; i++) pthread_join(tp->tid[i - 1], NULL);
  pthread_mutex_destroy(&tp->lock);
  pthread_cond_destroy(&tp->start);
  pthread_cond_destroy(&tp->done);
  pkv__free(tp->tid);
  pkv__free(tp);
}

uint32_t pkv__threads_size(const pkv__threads *tp) { return tp->n_threads; }

void pkv__threads_run(pkv__threads *tp, pkv__task_fn fn, void *ctx) {
  if (tp->n_threads == 1) {
    fn(ctx, 0);
    return;
  }
  pthread_mutex_lock(&tp->lock);
  tp->fn = fn;
  tp->ctx = ctx;
  atomic_store(&tp->pending, tp->n_threads - 1);
  atomic_fetch_add(&tp->generation, 1);
  pthread_cond_broadcast(&tp->start);
  pthread_mutex_unlock(&tp->lock);
  fn(ctx, 0);
  for (int i = 0; i < SPIN_ITERS && atomic_load(&tp->pending) != 0; i++)
    __builtin_ia32_pause();
  pthread_mutex_lock(&tp->lock);
  while (atomic_load(&tp->pending) != 0) pthread_cond_wait(&tp->done, &tp->lock);
  pthread_mutex_unlock(&tp->lock);
}
