/*
 * bench_quant.c — decode over quantized K/V (int8, fp8 E4M3, fp8 E5M2)
 * beside f16 K/V, measured in the same run.
 *
 * One sequence of CTX tokens (32k; 4k with PKV_BENCH_QUICK=1), Llama-3-8B
 * attention (32 query heads, 8 KV heads, head_dim 128), block size 16, on
 * the tests' synthetic paged layer (random K/V in [-1, 1), shuffled
 * blocks).  One decode step (pkv__attn_decode: the kernels and the thread
 * split, no K/V write) is timed per layout, the layouts taken in turn,
 * REPS rounds; medians.  1 thread: on-CPU time of the calling thread (the
 * only worker), so that slices lost to the machine's other load do not
 * count; 2 threads: wall clock (split-K over the context).
 *
 * Reported per dtype: tokens/s (decode steps per second of the one
 * sequence) beside f16's, the ratio being the speed-up; and the K/V bytes
 * read per second (codes and scales), beside f16's.
 */
#include "bu_bench.h"
#include "engine_internal.h"
#include "../tests/tu_paged.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HKV 8
#define HQ 32
#define D 128
#define BS 16

static uint64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const pkv_dtype dts[] = {PKV_DTYPE_F16, PKV_DTYPE_BF16, PKV_DTYPE_I8, PKV_DTYPE_FP8_E4M3,
                                PKV_DTYPE_FP8_E5M2};
static const char *const names[] = {"f16", "bf16", "i8", "e4m3", "e5m2"};
enum { NDT = 5 };

int main(void) {
  const int quick = getenv("PKV_BENCH_QUICK") != NULL;
  const uint32_t ctx = quick ? 4096 : 32768;
  const int reps = quick ? 3 : 9;
  const pkv__kernels *k = pkv__kernels_select(NULL);
  if (!k) {
    fprintf(stderr, "bench_quant: %s\n", pkv_last_error());
    return 1;
  }
  printf("bench_quant: back end %s, context %u, GQA %u/%u, head_dim %u, %d rounds, medians\n",
         k->name, ctx, HQ, HKV, D, reps);
  static tu_paged layer[NDT];
  for (int i = 0; i < NDT; i++) {
    tu_paged_init(&layer[i], dts[i], HKV, D, BS, ctx, 7);
    free(layer[i].kc); /* the f32 copies are for tests' references */
    free(layer[i].vc);
    layer[i].kc = layer[i].vc = NULL;
  }
  float *q = malloc(sizeof(float) * HQ * D), *out = malloc(sizeof(float) * HQ * D);
  uint64_t rs = 3;
  tu_fill(q, (size_t)HQ * D, 2.0f, &rs);
  for (uint32_t threads = 1; threads <= 2; threads++) {
    pkv__attn a;
    if (pkv__attn_init(&a, k, threads, HQ, HKV, D, 1.0f / sqrtf((float)D)) != 0) {
      fprintf(stderr, "bench_quant: %s\n", pkv_last_error());
      return 1;
    }
    uint64_t (*clock_ns)(void) = threads == 1 ? cpu_ns : bu_now_ns;
    double t[NDT][64];
    for (int r = -1; r < reps; r++) /* round -1 warms up */
      for (int i = 0; i < NDT; i++) {
        pkv__decode_seq s = {.kv = layer[i].view, .n_tokens = ctx, .q = q, .out = out};
        uint64_t t0 = clock_ns();
        if (pkv__attn_decode(&a, &s, 1) != 0) return 1;
        uint64_t t1 = clock_ns();
        bu_sink(out);
        if (r >= 0) t[i][r] = (double)(t1 - t0) * 1e-9;
      }
    double med[NDT];
    for (int i = 0; i < NDT; i++) med[i] = bu_median(t[i], (size_t)reps);
    for (int i = 0; i < NDT; i++) {
      char name[64];
      snprintf(name, sizeof name, "decode_%s_ctx%u_t%u", names[i], ctx, threads);
      bu_report_vs(name, 1.0 / med[i], "tok/s", "f16", 1.0 / med[0], "x f16");
      double bytes = (double)ctx * HKV * 2 * pkv__row_bytes(D, dts[i]);
      snprintf(name, sizeof name, "  kv_read_%s_t%u", names[i], threads);
      bu_report_vs(name, bytes / med[i] * 1e-9, "GB/s", "f16",
                   (double)ctx * HKV * 2 * pkv__row_bytes(D, dts[0]) / med[0] * 1e-9, "x f16");
    }
    pkv__attn_fini(&a);
  }
  for (int i = 0; i < NDT; i++) tu_paged_free(&layer[i]);
  free(q);
  free(out);
  return 0;
}
