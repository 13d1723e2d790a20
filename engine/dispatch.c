/*
 * dispatch.c — choosing a kernel back end at run time.
 *
 * Each back end is one const pkv__kernels table compiled from kern_body.h
 * with its own ISA flags.  Selection order: the name the caller gives, else
 * the PKV_BACKEND environment variable, else the widest back end this CPU
 * supports (cpuid through __builtin_cpu_supports).  A back end the CPU
 * cannot run is refused rather than allowed to fault with SIGILL.
 */
#include "engine_internal.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct backend_entry {
  const char *name;
  const pkv__kernels *kernels;
} backend_entry;

/* Widest first: the first supported entry is the default. */
static const backend_entry backends[] = {
    {"avx512", &pkv__kernels_avx512},
    {"avx2", &pkv__kernels_avx2},
    {"scalar", &pkv__kernels_scalar},
};
#define N_BACKENDS (sizeof backends / sizeof backends[0])

int pkv__backend_supported(const char *name) {
  __builtin_cpu_init();
  if (strcmp(name, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("fma");
  if (strcmp(name, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return strcmp(name, "scalar") == 0;
}

int pkv__backend_known(const char *name) {
  for (size_t i = 0; name && i < N_BACKENDS; i++)
    if (strcmp(name, backends[i].name) == 0) return 1;
  return 0;
}

const pkv__kernels *pkv__kernels_select(const char *name) {
  if (name == NULL || name[0] == '\0') name = getenv("PKV_BACKEND");
  if (name == NULL || name[0] == '\0') {
    for (size_t i = 0; i < N_BACKENDS; i++)
      if (pkv__backend_supported(backends[i].name)) return backends[i].kernels;
    return &pkv__kernels_scalar;
  }
  for (size_t i = 0; i < N_BACKENDS; i++) {
    if (strcmp(name, backends[i].name) != 0) continue;
    if (!pkv__backend_supported(name)) {
      pkv__err(PKV_ENOTSUP, "backend \"%s\": this CPU lacks its instructions", name);
      return NULL;
    }
    return backends[i].kernels;
  }
  pkv__err(PKV_EINVAL, "backend \"%s\": unknown (avx512, avx2 or scalar)", name);
  return NULL;
}
