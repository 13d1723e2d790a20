/*
 * host_dlopen.c — a C host linked with neither pagedkv nor jemalloc loads
 * libpagedkv.so with dlopen, as a Python server or a plug-in loader does.
 *
 *   host_dlopen LIB [COPY]
 *
 * LIB is the library, COPY a byte copy of it under another name (so the
 * loader maps a second, independent instance).  Checked: the load leaves the
 * host's malloc alone; the workload runs; dlopen of the same file twice gives
 * one instance that survives one dlclose; two instances run side by side;
 * two host threads create and use caches concurrently on each instance, all
 * pkv_check clean; unload and reload works.
 */
#include "host_api.h"

#include <pthread.h>

static int api_load(void *h, host_api *a) {
#define HOST_API_SYM(name)                                                    \
  *(void **)&a->name = dlsym(h, "pkv_" #name);                                \
  HOST_EXPECT(a->name != NULL, "dlsym pkv_%s: %s", #name, dlerror());
  HOST_API_CALLS(HOST_API_SYM)
#undef HOST_API_SYM
  return 0;
}

enum { THREAD_ROUNDS = 40 };

typedef struct worker {
  const host_api *api;
  int failed;
} worker;

static void *worker_run(void *arg) {
  worker *w = arg;
  for (int i = 0; i < THREAD_ROUNDS && !w->failed; i++)
    w->failed = host_workload(w->api, "system");
  return NULL;
}

/* Two threads per api, all at once. */
static int run_threads(const host_api *apis, int n_apis) {
  pthread_t th[4];
  worker w[4];
  int n = 0;
  for (int i = 0; i < n_apis; i++)
    for (int k = 0; k < 2; k++, n++) {
      w[n] = (worker){.api = &apis[i]};
      HOST_EXPECT(pthread_create(&th[n], NULL, worker_run, &w[n]) == 0, "pthread_create");
    }
  int failed = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    failed |= w[i].failed;
  }
  HOST_EXPECT(!failed, "a thread's workload failed (see above)");
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: host_dlopen LIB [COPY]\n");
    return 2;
  }
  if (host_malloc_is_glibc("dlopen host, before loading")) return 1;
  void *h1 = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  HOST_EXPECT(h1 != NULL, "dlopen %s: %s", argv[1], dlerror());
  if (host_malloc_is_glibc("dlopen host, after loading")) return 1;
  /* what the library and its dependencies bind malloc to */
  void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  HOST_EXPECT(dlsym(h1, "malloc") == dlsym(libc, "malloc"),
              "the library's scope resolves malloc elsewhere than glibc");
  dlclose(libc);
  host_api a1;
  if (api_load(h1, &a1) || host_workload(&a1, "system")) return 1;
  printf("dlopen host: workload ok\n");

  /* the same file twice: one instance, reference counted */
  void *h1b = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  HOST_EXPECT(h1b == h1, "second dlopen of one file gave another handle");
  HOST_EXPECT(dlclose(h1b) == 0, "dlclose: %s", dlerror());
  if (host_workload(&a1, "system")) return 1;
  if (run_threads(&a1, 1)) return 1;
  printf("dlopen host: loaded twice (one instance), 2 threads x %d caches: ok\n",
         THREAD_ROUNDS);

  if (argc > 2) { /* a second instance of the library beside the first */
    void *h2 = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    HOST_EXPECT(h2 != NULL && h2 != h1, "dlopen copy %s: %s", argv[2], dlerror());
    host_api both[2] = {a1};
    if (api_load(h2, &both[1])) return 1;
    HOST_EXPECT(both[1].cache_create != a1.cache_create, "copy is not a second instance");
    if (run_threads(both, 2)) return 1;
    HOST_EXPECT(dlclose(h2) == 0, "dlclose copy: %s", dlerror());
    printf("dlopen host: two instances, 2 threads each: ok\n");
  }

  HOST_EXPECT(dlclose(h1) == 0, "dlclose: %s", dlerror());
  h1 = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  HOST_EXPECT(h1 != NULL, "reload %s: %s", argv[1], dlerror());
  if (api_load(h1, &a1) || host_workload(&a1, "system")) return 1;
  if (host_malloc_is_glibc("dlopen host, at the end")) return 1;
  dlclose(h1);
  printf("host_dlopen: ok\n");
  return 0;
}
