/*
 * host_link.c — a C host that links libpagedkv (the .so, or the .a through
 * `pkg-config --static`; scripts/host-tests.sh builds both) keeps its own
 * malloc: glibc's, with no jemalloc and no libstdc++ in the process, and the
 * library's memory comes from the "system" backend.
 *
 * Built with -DHOST_WITH_JEMALLOC and -ljemalloc it is the other host: one
 * that chose jemalloc itself; then the library must use a private jemalloc
 * arena (pkv_stats.allocator "jemalloc", its bytes counted).
 */
#include "host_api.h"

int main(void) {
  static const host_api api = HOST_API_LINKED;
#ifdef HOST_WITH_JEMALLOC
  HOST_EXPECT(host_loaded("jemalloc") != NULL, "host built with -ljemalloc has no jemalloc");
  if (host_workload(&api, "jemalloc")) return 1;
  printf("host with jemalloc: library used its private jemalloc arena\n");
#else
  if (host_malloc_is_glibc("linked host, before any pkv_ call")) return 1;
  if (host_workload(&api, "system")) return 1;
  if (host_malloc_is_glibc("linked host, after the workload")) return 1;
#endif
  printf("host_link: ok (pagedkv %d.%d.%d)\n", PKV_VERSION_MAJOR,
         PKV_VERSION_MINOR, PKV_VERSION_PATCH);
  return 0;
}
