/*
 * alloc.c — the one allocator shim.
 *
 * A library must not choose its host's malloc, and must load with dlopen
 * from any host (Python's ctypes, a plug-in loader).  So libpagedkv links no
 * allocator: linking libjemalloc would make jemalloc the process-wide
 * malloc of every program that links us, and, because jemalloc keeps its
 * thread state in initial-exec TLS, dlopen of the library fails in hosts
 * whose static TLS block is already full ("cannot allocate memory in static
 * TLS block").
 *
 * Instead the backend is chosen once, at the first allocation:
 *
 *   jemalloc   the process already has jemalloc (the host linked or preloaded
 *              it): its non-standard API (mallocx, rallocx, dallocx, mallctl)
 *              is resolved with dlsym(RTLD_DEFAULT) and confirmed by asking
 *              mallctl("version").  The library creates one private arena
 *              ("arenas.create"); metadata and KV arena both come from it,
 *              without the thread cache, so that every byte the library holds
 *              is counted in that arena's stats (pkv_stats.allocator_bytes).
 *   system     no jemalloc: metadata from the process's malloc (glibc's, or
 *              whatever allocator the host installed), the KV arena from its
 *              own anonymous mmap (zeroed by the kernel, returned to the
 *              system by munmap on destroy).
 *   libc       sanitizer builds (PKV_SANITIZE): metadata and arena from the
 *              sanitizer-intercepted malloc / aligned_alloc, so every byte is
 *              shadowed; jemalloc is never looked for.
 *
 * pkv_replace_allocator() overrides all of them (the out-of-memory tests fail
 * the k-th allocation through it).  The KV arena then comes from the user's
 * malloc too (padded for alignment), so failure injection reaches every
 * allocation site.
 *
 * Every arena block carries a header one alignment unit in front of it that
 * names the backend that made it, so it is released by the same one even if
 * the allocator was replaced in between.  Metadata has no header: the
 * contract is that pkv_replace_allocator is called while no cache exists.
 */
#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static pkv_malloc_fn user_malloc;
static pkv_realloc_fn user_realloc;
static pkv_calloc_fn user_calloc;
static pkv_free_fn user_free;

int pkv_replace_allocator(pkv_malloc_fn m, pkv_realloc_fn r, pkv_calloc_fn c,
                          pkv_free_fn f) {
  pkv__err_clear();
  int n_set = (m != NULL) + (r != NULL) + (c != NULL) + (f != NULL);
  PKV_CHECK(n_set == 0 || n_set == 4, "replace_allocator: give all four "
            "functions or none");
  user_malloc = m;
  user_realloc = r;
  user_calloc = c;
  user_free = f;
  return 0;
}

/* ------------------------------------------------------- backend choice */

/* jemalloc's public mallocx flag encoding (stable since jemalloc 4): the
 * library does not include jemalloc's header, it must build without it. */
#define JE_ZERO 0x40
#define JE_TCACHE_NONE (1 << 8)
#define JE_ARENA(a) ((int)(((unsigned)(a) + 1u) << 20))
#define JE_LG_ALIGN(lg) ((int)(lg))

typedef void *(*je_mallocx_fn)(size_t, int);
typedef void *(*je_rallocx_fn)(void *, size_t, int);
typedef void (*je_dallocx_fn)(void *, int);
typedef int (*je_mallctl_fn)(const char *, void *, size_t *, void *, size_t);

enum { BACKEND_SYSTEM = 0, BACKEND_JEMALLOC = 1, BACKEND_LIBC = 2 };

static struct {
  int backend;
  int flags; /* JE_ARENA(private arena) | JE_TCACHE_NONE */
  unsigned arena;
  je_mallocx_fn mallocx;
  je_rallocx_fn rallocx;
  je_dallocx_fn dallocx;
  je_mallctl_fn mallctl;
  char version[48];
} be;
static pthread_once_t be_once = PTHREAD_ONCE_INIT;

static void backend_init(void) {
#if PKV_SANITIZE
  be.backend = BACKEND_LIBC;
#else
  be.backend = BACKEND_SYSTEM;
  je_mallctl_fn ctl = (je_mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
  je_mallocx_fn mx = (je_mallocx_fn)dlsym(RTLD_DEFAULT, "mallocx");
  je_rallocx_fn rx = (je_rallocx_fn)dlsym(RTLD_DEFAULT, "rallocx");
  je_dallocx_fn dx = (je_dallocx_fn)dlsym(RTLD_DEFAULT, "dallocx");
  if (!ctl || !mx || !rx || !dx) return;
  /* Another allocator could export a mallctl of its own: only jemalloc
   * answers "version" and "arenas.create". */
  const char *ver = NULL;
  size_t sz = sizeof ver;
  if (ctl("version", &ver, &sz, NULL, 0) != 0 || !ver) return;
  unsigned idx = 0;
  sz = sizeof idx;
  if (ctl("arenas.create", &idx, &sz, NULL, 0) != 0) return;
  be.mallctl = ctl;
  be.mallocx = mx;
  be.rallocx = rx;
  be.dallocx = dx;
  be.arena = idx;
  be.flags = JE_ARENA(idx) | JE_TCACHE_NONE;
  snprintf(be.version, sizeof be.version, "%s", ver);
  be.backend = BACKEND_JEMALLOC;
#endif
}

static inline int backend(void) {
  pthread_once(&be_once, backend_init);
  return be.backend;
}

/* ------------------------------------------------------------- metadata */

void *pkv__malloc(size_t size) {
  if (size == 0) size = 1;
  if (user_malloc) return user_malloc(size);
  if (backend() == BACKEND_JEMALLOC) return be.mallocx(size, be.flags);
  return malloc(size);
}

void *pkv__calloc(size_t n, size_t size) {
  if (n == 0) n = 1;
  if (size == 0) size = 1;
  if (user_calloc) return user_calloc(n, size);
  if (backend() == BACKEND_JEMALLOC) {
    if (size > SIZE_MAX / n) return NULL;
    return be.mallocx(n * size, be.flags | JE_ZERO);
  }
  return calloc(n, size);
}

void *pkv__realloc(void *p, size_t size) {
  if (size == 0) size = 1;
  if (user_realloc) return user_realloc(p, size);
  if (backend() == BACKEND_JEMALLOC)
    return p ? be.rallocx(p, size, be.flags) : be.mallocx(size, be.flags);
  return realloc(p, size);
}

void pkv__free(void *p) {
  if (!p) return;
  if (user_free)
    user_free(p);
  else if (backend() == BACKEND_JEMALLOC)
    be.dallocx(p, be.flags);
  else
    free(p);
}

void pkv__free_n(void *const *p, size_t n) {
  for (size_t i = 0; i < n; i++) pkv__free(p[i]);
}

/* ---------------------------------------------------------------- arena */

#define PKV_ARENA_ALIGN 64

typedef struct arena_hdr {
  void *raw;
  size_t map_bytes; /* ARENA_MMAP: length to munmap */
  int kind;
} arena_hdr;
enum { ARENA_USER = 1, ARENA_JEMALLOC = 2, ARENA_LIBC = 3, ARENA_MMAP = 4 };

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
  if (size > SIZE_MAX - 2 * PKV_ARENA_ALIGN - 4096) return NULL;
  size_t total = size + PKV_ARENA_ALIGN; /* header room in front */
  void *raw = NULL;
  uint8_t *p = NULL;
  size_t map_bytes = 0;
  int kind;
  if (user_malloc) {
    raw = user_malloc(total + PKV_ARENA_ALIGN);
    if (!raw) return NULL;
    p = (uint8_t *)(((uintptr_t)raw + 2 * PKV_ARENA_ALIGN - 1) &
                    ~(uintptr_t)(PKV_ARENA_ALIGN - 1));
    memset(p, 0, size);
    kind = ARENA_USER;
  } else {
    switch (backend()) {
    case BACKEND_JEMALLOC:
      raw = be.mallocx(total, be.flags | JE_ZERO | JE_LG_ALIGN(6));
      kind = ARENA_JEMALLOC;
      break;
    case BACKEND_LIBC:
      raw = aligned_alloc(PKV_ARENA_ALIGN, (total + PKV_ARENA_ALIGN - 1) &
                                               ~(size_t)(PKV_ARENA_ALIGN - 1));
      if (raw) memset(raw, 0, total);
      kind = ARENA_LIBC;
      break;
    default:
      map_bytes = (total + 4095) & ~(size_t)4095;
      raw = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (raw == MAP_FAILED) raw = NULL;
      kind = ARENA_MMAP;
      break;
    }
    if (!raw) return NULL;
    p = (uint8_t *)raw + PKV_ARENA_ALIGN;
  }
  arena_hdr *h = (arena_hdr *)(p - sizeof(arena_hdr));
  h->raw = raw;
  h->map_bytes = map_bytes;
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
  case ARENA_JEMALLOC:
    be.dallocx(h->raw, be.flags);
    break;
  case ARENA_MMAP:
    (void)munmap(h->raw, h->map_bytes);
    break;
  default:
    free(h->raw);
    break;
  }
}

/* ---------------------------------------------------------------- stats */

void pkv__alloc_stats(char *name, size_t name_cap, uint64_t *bytes) {
  *bytes = 0;
  const char *n;
  if (user_malloc) {
    n = "user";
  } else {
    switch (backend()) {
    case BACKEND_JEMALLOC: n = "jemalloc"; break;
    case BACKEND_LIBC: n = "libc"; break;
    default: n = "system"; break;
    }
  }
  snprintf(name, name_cap, "%s", n);
  if (user_malloc || be.backend != BACKEND_JEMALLOC) return;
  /* Refresh jemalloc's stats snapshot, then read the private arena's
   * small + large bytes (absent when jemalloc was built without stats). */
  uint64_t epoch = 1;
  size_t sz = sizeof epoch;
  (void)be.mallctl("epoch", &epoch, &sz, &epoch, sz);
  const char *const kinds[] = {"small", "large"};
  for (int i = 0; i < 2; i++) {
    char key[64];
    snprintf(key, sizeof key, "stats.arenas.%u.%s.allocated", be.arena,
             kinds[i]);
    size_t v = 0;
    sz = sizeof v;
    if (be.mallctl(key, &v, &sz, NULL, 0) == 0) *bytes += v;
  }
}

bool pkv__grow(void **arr, size_t *cap, size_t need, size_t elem,
               size_t first) {
  if (need <= *cap) return true;
  size_t n = *cap ? *cap : first;
  while (n < need) {
    if (n > SIZE_MAX / 2) return false;
    n *= 2;
  }
  if (elem && n > SIZE_MAX / elem) return false;
  void *p = pkv__realloc(*arr, n * elem);
  if (!p) return false;
  *arr = p;
  *cap = n;
  return true;
}
