/*
 * alloc.c — the one allocator shim.
 *
 * Host metadata (page tables, index nodes, queues) goes through
 * pkv__malloc & co., which call jemalloc (or libc under sanitizers, where
 * jemalloc would fight the sanitizer's interceptors) unless the user
 * installed their own functions with pkv_replace_allocator() — which is how
 * the out-of-memory tests fail the k-th allocation.
 *
 * The KV arena is different: it is large, long-lived and 64-byte aligned, so
 * it comes from a dedicated jemalloc arena (kept apart from the process's
 * small allocations, and never shrunk by decay while the cache lives) and is
 * advised for transparent huge pages.  A replaced allocator is also asked for
 * the arena (through malloc with padding) so that failure injection reaches
 * every allocation site.
 */
#include "internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifndef PKV_NO_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

static pkv_malloc_fn user_malloc;
static pkv_realloc_fn user_realloc;
static pkv_calloc_fn user_calloc;
static pkv_free_fn user_free;

int pkv_replace_allocator(pkv_malloc_fn m, pkv_realloc_fn r, pkv_calloc_fn c,
                          pkv_free_fn f) {
  pkv__err_clear();
  int n_set = (m != NULL) + (r != NULL) + (c != NULL) + (f != NULL);
  if (n_set != 0 && n_set != 4)
    return pkv__err(PKV_EINVAL,
                    "replace_allocator: give all four functions or none");
  user_malloc = m;
  user_realloc = r;
  user_calloc = c;
  user_free = f;
  return 0;
}

void *pkv__malloc(size_t size) {
  if (user_malloc) return user_malloc(size ? size : 1);
  return malloc(size ? size : 1);
}

void *pkv__calloc(size_t n, size_t size) {
  if (user_calloc) return user_calloc(n ? n : 1, size ? size : 1);
  return calloc(n ? n : 1, size ? size : 1);
}

void *pkv__realloc(void *p, size_t size) {
  if (user_realloc) return user_realloc(p, size ? size : 1);
  return realloc(p, size ? size : 1);
}

void pkv__free(void *p) {
  if (!p) return;
  if (user_free)
    user_free(p);
  else
    free(p);
}

/* ---------------------------------------------------------------- arena */

#define PKV_ARENA_ALIGN 64

#ifndef PKV_NO_JEMALLOC
static unsigned kv_arena_index;
static int kv_arena_state; /* 0 = not tried, 1 = ready, -1 = unavailable */
static pthread_once_t kv_arena_once = PTHREAD_ONCE_INIT;

static void kv_arena_init(void) {
  unsigned idx = 0;
  size_t sz = sizeof(idx);
  if (mallctl("arenas.create", &idx, &sz, NULL, 0) == 0) {
    kv_arena_index = idx;
    kv_arena_state = 1;
  } else {
    kv_arena_state = -1;
  }
}
#endif

/* Every arena block carries a header one alignment unit in front of it,
 * naming the allocator that made it, so that it is freed by the same one even
 * if pkv_replace_allocator() was called in between. */
typedef struct arena_hdr {
  void *raw;
  int kind; /* ARENA_USER, ARENA_JEMALLOC, ARENA_LIBC */
} arena_hdr;
enum { ARENA_USER = 1, ARENA_JEMALLOC = 2, ARENA_LIBC = 3 };

static void advise_huge(void *p, size_t size) {
  /* Huge pages cut TLB misses when decode walks many blocks; advisory,
   * so a kernel without THP just ignores it. */
  if (size < (2u << 20)) return;
  uintptr_t lo = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
  uintptr_t hi = ((uintptr_t)p + size) & ~(uintptr_t)4095;
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

void *pkv__arena_alloc(size_t size) {
  if (size == 0) size = PKV_ARENA_ALIGN;
  if (size > SIZE_MAX - 2 * PKV_ARENA_ALIGN) return NULL;
  size_t total = size + PKV_ARENA_ALIGN;
  void *raw = NULL;
  uint8_t *p = NULL;
  int kind;
  if (user_malloc) {
    raw = user_malloc(total + PKV_ARENA_ALIGN);
    if (!raw) return NULL;
    p = (uint8_t *)(((uintptr_t)raw + 2 * PKV_ARENA_ALIGN - 1) &
                    ~(uintptr_t)(PKV_ARENA_ALIGN - 1));
    memset(p, 0, size);
    kind = ARENA_USER;
  } else {
#ifndef PKV_NO_JEMALLOC
    pthread_once(&kv_arena_once, kv_arena_init);
    int flags = MALLOCX_ALIGN(PKV_ARENA_ALIGN) | MALLOCX_ZERO;
    if (kv_arena_state == 1)
      flags |= MALLOCX_ARENA(kv_arena_index) | MALLOCX_TCACHE_NONE;
    raw = mallocx(total, flags);
    kind = ARENA_JEMALLOC;
#else
    raw = aligned_alloc(PKV_ARENA_ALIGN, (total + PKV_ARENA_ALIGN - 1) &
                                             ~(size_t)(PKV_ARENA_ALIGN - 1));
    if (raw) memset(raw, 0, total);
    kind = ARENA_LIBC;
#endif
    if (!raw) return NULL;
    p = (uint8_t *)raw + PKV_ARENA_ALIGN;
  }
  arena_hdr *h = (arena_hdr *)(p - sizeof(arena_hdr));
  h->raw = raw;
  h->kind = kind;
  advise_huge(p, size);
  return p;
}

void pkv__arena_free(void *p, size_t size) {
  (void)size;
  if (!p) return;
  arena_hdr *h = (arena_hdr *)((uint8_t *)p - sizeof(arena_hdr));
  switch (h->kind) {
  case ARENA_USER:
    if (user_free) user_free(h->raw); else free(h->raw);
    break;
#ifndef PKV_NO_JEMALLOC
  case ARENA_JEMALLOC:
    dallocx(h->raw, MALLOCX_TCACHE_NONE);
    break;
#endif
  default:
    free(h->raw);
    break;
  }
}
