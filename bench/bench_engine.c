/*
 * bench_engine.c — the attention engine against this machine's limits and
 * against an OpenBLAS baseline, all measured in one process.
 *
 *   1. read bandwidth: a STREAM-style sum over a 512 MiB buffer (far beyond
 *      the caches), 1 and 2 threads;
 *   2. fp32 FMA peak: a register-only loop of independent FMAs (AVX-512 and
 *      AVX2, the faster counts), per core and 2 threads;
 *   3. decode, Llama-3-8B attention shape (32 query heads, 8 KV heads,
 *      head_dim 128), contexts 4k/16k/32k, f32 and bf16, 1 and 2 threads.
 *      A step attends a batch of 32768/ctx sequences (32k tokens in all), so
 *      each step streams 256 MiB (f32) or 128 MiB (bf16) of K/V — never
 *      cache-resident.  Reported: GB/s of K/V read vs the measured
 *      bandwidth, and paged time (16-token blocks, shuffled) / contiguous
 *      time (the same kernel on one block per sequence);
 *   4. prefill, n = 2048 and 4096, causal, 8 query heads / 2 KV heads (the
 *      Llama GQA ratio 4; fewer heads than the model to keep the run short;
 *      the per-head work is identical), head_dim 128, f32 storage.
 *      FLOPs counted: 2 * n^2 * head_dim per query head — QK^T and PV each
 *      2*n^2*d over the full square, halved for causality.  Reported vs the
 *      measured peak and vs OpenBLAS (per head: cblas_sgemm Q K^T, causal
 *      mask + softmax, cblas_sgemm P V; same FLOP count, so the ratio is the
 *      time ratio).
 *
 * Every engine figure is a median of several repetitions; the limits it is
 * compared with (bandwidth, FMA peak) are the best of theirs, as STREAM
 * reports, so ratios err on the conservative side.  The machine is shared,
 * so each repetition measures a figure and its baseline back to back (the
 * bandwidth before each decode step, the FMA peak before each prefill), and
 * the load average is printed at the start and the end.  Figures are printed
 * beside their baselines and appended to $BENCH_JSON when set.  PKV_BENCH_QUICK=1 shrinks
 * the repetitions (for smoke runs).
 */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bu_bench.h"
#include "engine_internal.h"
#include "../tests/tu_paged.h"

static int quick;

/* The best of a baseline's repetitions: a limit is what the machine can
 * reach, as STREAM reports its best time; the engine's own figures are
 * medians, so the ratios err on the conservative side. */
static double best(const double *v, int n) {
  double m = v[0];
  for (int i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
  return m;
}

/* ------------------------------------------------------------ threads */

typedef struct thr_arg {
  void (*fn)(void *ctx, int index, int n);
  void *ctx;
  int index, n;
  pthread_barrier_t *bar;
  uint64_t t_start, t_end; /* this worker's run, stamped by itself */
} thr_arg;

static void *thr_main(void *p) {
  thr_arg *a = p;
  pthread_barrier_wait(a->bar);
  a->t_start = bu_now_ns();
  a->fn(a->ctx, a->index, a->n);
  a->t_end = bu_now_ns();
  return NULL;
}

/* Wall time in seconds of fn run on n threads started together: from the
 * first worker's start to the last one's end, as the workers stamp them.
 * (Timing from the caller's thread overstated 2-thread rates on 2 CPUs: the
 * caller, a third thread, could be scheduled only after a worker had run.) */
static double run_threads(int n, void (*fn)(void *, int, int), void *ctx) {
  pthread_t th[8];
  thr_arg args[8];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
  for (int i = 0; i < n; i++) {
    args[i] = (thr_arg){fn, ctx, i, n, &bar, 0, 0};
    pthread_create(&th[i], NULL, thr_main, &args[i]);
  }
  pthread_barrier_wait(&bar);
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  uint64_t t0 = args[0].t_start, t1 = args[0].t_end;
  for (int i = 1; i < n; i++) {
    t0 = args[i].t_start < t0 ? args[i].t_start : t0;
    t1 = args[i].t_end > t1 ? args[i].t_end : t1;
  }
  pthread_barrier_destroy(&bar);
  return (double)(t1 - t0) * 1e-9;
}

/* ------------------------------------------------------------ bandwidth */

typedef struct bw_ctx {
  const float *buf;
  size_t n;
  float sink[8];
  double cpu_s[8]; /* on-CPU seconds of each thread's sweep */
} bw_ctx;

/* Seconds this thread has run on a CPU: unlike wall time, it does not count
 * the time a loaded machine keeps the thread descheduled. */
static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

static float sum_plain(const float *p, size_t n) {
  float a[16] = {0};
  for (size_t i = 0; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) a[j] += p[i + j];
  float s = 0;
  for (int j = 0; j < 16; j++) s += a[j];
  return s;
}

static void bw_task(void *c, int index, int n) {
  bw_ctx *ctx = c;
  size_t per = ctx->n / (size_t)n / 64 * 64;
  const float *p = ctx->buf + per * (size_t)index;
  double c0 = thread_cpu_s();
  ctx->sink[index] = __builtin_cpu_supports("avx512f") ? sum_avx512(p, per) : sum_plain(p, per);
  ctx->cpu_s[index] = thread_cpu_s() - c0;
}

/* GB/s of wall time; *cpu_gbps (may be NULL) the same per on-CPU time of
 * one thread (meaningful for threads == 1). */
static double measure_bw_cpu(const float *buf, size_t n, int threads, int reps, double *cpu_gbps) {
  bw_ctx ctx = {buf, n, {0}, {0}};
  double v[16], c[16];
  if (reps > 1) run_threads(threads, bw_task, &ctx); /* warm-up: page-in, frequency */
  for (int r = 0; r < reps; r++) {
    v[r] = (double)n * 4 / run_threads(threads, bw_task, &ctx) * 1e-9;
    c[r] = (double)n * 4 / threads / ctx.cpu_s[0] * 1e-9;
  }
  bu_sink(ctx.sink);
  if (cpu_gbps) *cpu_gbps = best(c, reps);
  return best(v, reps);
}

static double measure_bw(const float *buf, size_t n, int threads, int reps) {
  return measure_bw_cpu(buf, n, threads, reps, NULL);
}

/* ------------------------------------------------------------ FMA peak */

#define PEAK_ITERS 4000000L

__attribute__((target("avx512f,fma"))) static double fma_avx512(void) {
  __m512 a[12], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
  for (long it = 0; it < PEAK_ITERS; it++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  bu_sink(&s);
  return (double)PEAK_ITERS * 12 * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(void) {
  __m256 a[12], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  for (long it = 0; it < PEAK_ITERS; it++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
  __m256 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
  bu_sink(&s);
  return (double)PEAK_ITERS * 12 * 8 * 2;
}

typedef struct peak_ctx {
  int avx512;
} peak_ctx;

static void peak_task(void *c, int index, int n) {
  peak_ctx *ctx = c;
  (void)index;
  (void)n;
  if (ctx->avx512) fma_avx512();
  else fma_avx2();
}

static double measure_peak(int threads, int reps) {
  double top = 0;
  for (int isa = 0; isa < 2; isa++) {
    if (isa == 1 && !__builtin_cpu_supports("avx512f")) continue;
    if (isa == 0 && !__builtin_cpu_supports("avx2")) continue;
    peak_ctx ctx = {isa == 1};
    double per = (isa == 1 ? 16.0 : 8.0) * 12 * 2 * PEAK_ITERS * threads;
    double v[16];
    for (int r = 0; r < reps; r++) v[r] = per / run_threads(threads, peak_task, &ctx) * 1e-9;
    double m = best(v, reps);
    if (m > top) top = m;
  }
  return top;
}

/* ------------------------------------------------------------ decode */

enum { HQ = 32, HKV = 8, HD = 128, DEC_TOTAL = 32768 };

static double time_decode(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n, double *cpu) {
  double c0 = thread_cpu_s();
  uint64_t t0 = bu_now_ns();
  pkv__attn_decode(a, seqs, n);
  if (cpu) *cpu = thread_cpu_s() - c0; /* one thread: all work is on this one */
  return (double)(bu_now_ns() - t0) * 1e-9;
}

/* The machine is shared: each repetition measures the bandwidth, the paged
 * step and the contiguous step back to back, and each figure is the median
 * of its own series, so a figure and its baseline see the same load. */
static void bench_decode(const pkv__kernels *k, const float *bwbuf, size_t bwn) {
  static const uint32_t ctxs[] = {4096, 16384, 32768};
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_BF16};
  static const char *dtn[] = {"f32", "bf16"};
  const int reps = quick ? 3 : 11;
  for (int di = 0; di < 2; di++)
    for (int ci = 0; ci < 3; ci++) {
      uint32_t ctx = ctxs[ci], batch = DEC_TOTAL / ctx;
      tu_paged paged[8], contig[8];
      pkv__decode_seq sp[8], sc[8];
      float *q = malloc(sizeof(float) * batch * HQ * HD), *out = malloc(sizeof(float) * batch * HQ * HD);
      uint64_t rs = 1;
      tu_fill(q, (size_t)batch * HQ * HD, 1.0f, &rs);
      for (uint32_t b = 0; b < batch; b++) {
        tu_paged_init(&paged[b], dts[di], HKV, HD, 16, ctx, b + 1);
        tu_paged_init(&contig[b], dts[di], HKV, HD, ctx, ctx, b + 1);
        sp[b] = (pkv__decode_seq){paged[b].view, ctx, q + (size_t)b * HQ * HD, out + (size_t)b * HQ * HD};
        sc[b] = (pkv__decode_seq){contig[b].view, ctx, q + (size_t)b * HQ * HD, out + (size_t)b * HQ * HD};
      }
      double bytes = (double)DEC_TOTAL * HKV * HD * (dts[di] == PKV_DTYPE_F32 ? 4 : 2) * 2;
      for (uint32_t threads = 1; threads <= 2; threads++) {
        pkv__attn a;
        if (pkv__attn_init(&a, k, threads, HQ, HKV, HD, 1.0f / sqrtf(HD))) abort();
        double vb[32], vp[32], vc[32], cb[32], cp[32], vd[32], cd[32];
        /* bf16 also runs the bf16-dot fast path, alternating with the exact
         * one in the same repetitions */
        const int fast = dts[di] == PKV_DTYPE_BF16 && k->decode_bf16dot != NULL;
        time_decode(&a, sp, batch, NULL); /* warm-up */
        time_decode(&a, sc, batch, NULL);
        for (int r = 0; r < reps; r++) {
          vb[r] = measure_bw_cpu(bwbuf, bwn, (int)threads, 1, &cb[r]);
          vp[r] = time_decode(&a, sp, batch, &cp[r]);
          vc[r] = time_decode(&a, sc, batch, NULL);
          if (fast) {
            a.bf16_dot = 1;
            vd[r] = time_decode(&a, sp, batch, &cd[r]);
            a.bf16_dot = 0;
          }
        }
        double bw = best(vb, reps), tp = bu_median(vp, (size_t)reps),
               tc = bu_median(vc, (size_t)reps);
        char name[128];
        snprintf(name, sizeof name, "decode_%s_ctx%u_batch%u_t%u_gbps", dtn[di], ctx, batch, threads);
        bu_report_vs(name, bytes / tp * 1e-9, "GB/s", "read_bw", bw, "of bandwidth");
        snprintf(name, sizeof name, "decode_%s_ctx%u_batch%u_t%u_paged_ms", dtn[di], ctx, batch, threads);
        bu_report_vs(name, tp * 1e3, "ms", "contiguous_ms", tc * 1e3, "paged/contiguous");
        if (fast) {
          snprintf(name, sizeof name, "decode_bf16dot_ctx%u_batch%u_t%u_gbps", ctx, batch, threads);
          bu_report_vs(name, bytes / bu_median(vd, (size_t)reps) * 1e-9, "GB/s", "read_bw", bw,
                       "of bandwidth");
        }
        if (threads == 1) {
          /* the same ratio on on-CPU time, which a loaded machine's
           * descheduling does not inflate */
          snprintf(name, sizeof name, "decode_%s_ctx%u_batch%u_t1_cpu_gbps", dtn[di], ctx, batch);
          bu_report_vs(name, bytes / bu_median(cp, (size_t)reps) * 1e-9, "GB/s", "read_bw_cpu",
                       best(cb, reps), "of bandwidth (cpu time)");
          if (fast) {
            snprintf(name, sizeof name, "decode_bf16dot_ctx%u_batch%u_t1_cpu_gbps", ctx, batch);
            bu_report_vs(name, bytes / bu_median(cd, (size_t)reps) * 1e-9, "GB/s", "read_bw_cpu",
                         best(cb, reps), "of bandwidth (cpu time)");
            snprintf(name, sizeof name, "decode_bf16dot_ctx%u_batch%u_t1_cpu_ms", ctx, batch);
            bu_report_vs(name, bu_median(cd, (size_t)reps) * 1e3, "ms", "exact_cpu_ms",
                         bu_median(cp, (size_t)reps) * 1e3, "bf16dot/exact time");
          }
        }
        pkv__attn_fini(&a);
      }
      for (uint32_t b = 0; b < batch; b++) {
        tu_paged_free(&paged[b]);
        tu_paged_free(&contig[b]);
      }
      free(q);
      free(out);
    }
}

/* ------------------------------------------------------------ prefill */

enum { PF_HQ = 8, PF_HKV = 2 };

/* OpenBLAS baseline: per query head, S = Q K^T (full n x n), causal mask and
 * softmax row by row, O = P V. */
static void blas_attention(const float *q, const float *kc, const float *vc, uint32_t n,
                           float scale, float *S, float *out) {
  const uint32_t G = PF_HQ / PF_HKV;
  for (uint32_t h = 0; h < PF_HQ; h++) {
    const float *K = kc + (size_t)(h / G) * n * HD, *V = vc + (size_t)(h / G) * n * HD;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, HD, scale,
                q + (size_t)h * HD, PF_HQ * HD, K, HD, 0.0f, S, (int)n);
    for (uint32_t i = 0; i < n; i++) {
      float *row = S + (size_t)i * n, m = -INFINITY, s = 0;
      for (uint32_t j = 0; j <= i; j++) m = row[j] > m ? row[j] : m;
      for (uint32_t j = 0; j <= i; j++) s += row[j] = expf(row[j] - m);
      float inv = 1.0f / s;
      for (uint32_t j = 0; j <= i; j++) row[j] *= inv;
      for (uint32_t j = i + 1; j < n; j++) row[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, HD, (int)n, 1.0f, S, (int)n,
                V, HD, 0.0f, out + (size_t)h * HD, PF_HQ * HD);
  }
}

static void bench_prefill(const pkv__kernels *k) {
  static const uint32_t ns[] = {2048, 4096};
  for (int ni = 0; ni < 2; ni++) {
    const uint32_t n = ns[ni];
    const int reps = quick ? 1 : (n > 2048 ? 3 : 5);
    tu_paged p;
    tu_paged_init(&p, PKV_DTYPE_F32, PF_HKV, HD, 16, n, 42);
    size_t row = (size_t)PF_HQ * HD;
    float *q = malloc(sizeof(float) * n * row), *out = malloc(sizeof(float) * n * row),
          *ob = malloc(sizeof(float) * n * row), *S = malloc(sizeof(float) * n * n);
    uint64_t rs = 2;
    tu_fill(q, n * row, 1.0f, &rs);
    float scale = 1.0f / sqrtf(HD);
    double flops = 2.0 * n * (double)n * HD * PF_HQ;
    for (int threads = 1; threads <= 2; threads++) {
      pkv__attn a;
      if (pkv__attn_init(&a, k, (uint32_t)threads, PF_HQ, PF_HKV, HD, scale)) abort();
      double v[8], w[8], pk[8];
      openblas_set_num_threads(threads);
      for (int r = 0; r < reps; r++) {
        pk[r] = measure_peak(threads, 1);
        uint64_t t0 = bu_now_ns();
        pkv__attn_prefill(&a, &p.view, 0, n, q, out);
        v[r] = (double)(bu_now_ns() - t0) * 1e-9;
        t0 = bu_now_ns();
        blas_attention(q, p.kc, p.vc, n, scale, S, ob);
        w[r] = (double)(bu_now_ns() - t0) * 1e-9;
      }
      double te = bu_median(v, (size_t)reps), tb = bu_median(w, (size_t)reps),
             peak = best(pk, reps);
      /* the two must agree, or the comparison means nothing */
      double diff = 0;
      for (size_t i = 0; i < n * row; i++) diff = fmax(diff, fabs((double)out[i] - ob[i]));
      if (diff > 1e-4) fprintf(stderr, "bench_engine: prefill and OpenBLAS differ by %g\n", diff);
      char name[128];
      snprintf(name, sizeof name, "prefill_n%u_t%d_gflops", n, threads);
      bu_report_vs(name, flops / te * 1e-9, "GFLOP/s", "fp32_peak", peak, "of peak");
      snprintf(name, sizeof name, "prefill_n%u_t%d_vs_openblas", n, threads);
      bu_report_vs(name, flops / te * 1e-9, "GFLOP/s", "openblas", flops / tb * 1e-9, "x OpenBLAS");
      pkv__attn_fini(&a);
    }
    free(q);
    free(out);
    free(ob);
    free(S);
    tu_paged_free(&p);
  }
}

int main(void) {
  quick = getenv("PKV_BENCH_QUICK") != NULL;
  const pkv__kernels *k = pkv__kernels_select(NULL);
  if (!k) {
    fprintf(stderr, "bench_engine: %s\n", pkv_last_error());
    return 1;
  }
  double load[3] = {0};
  if (getloadavg(load, 3) > 0) /* the machine is shared: say how busy it was */
    printf("bench_engine: back end %s, load average %.2f at start\n", k->name, load[0]);
  else
    printf("bench_engine: back end %s\n", k->name);
  size_t n = (size_t)1 << 27; /* 512 MiB of floats: 16x the L3 */
  float *buf = aligned_alloc((size_t)2 << 20, n * sizeof(float));
  (void)madvise(buf, n * sizeof(float), MADV_HUGEPAGE); /* as the KV arena */
  for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
  for (int t = 1; t <= 2; t++) {
    char name[64];
    snprintf(name, sizeof name, "read_bw_t%d", t);
    bu_report(name, measure_bw(buf, n, t, quick ? 3 : 7), "GB/s");
  }
  for (int t = 1; t <= 2; t++) {
    char name[64];
    snprintf(name, sizeof name, "fp32_peak_t%d", t);
    bu_report(name, measure_peak(t, quick ? 3 : 5), "GFLOP/s");
  }
  const char *only = getenv("PKV_BENCH_ONLY");
  if (!only || strcmp(only, "prefill") != 0) bench_decode(k, buf, n);
  free(buf);
  if (!only || strcmp(only, "decode") != 0) bench_prefill(k);
  if (getloadavg(load, 3) > 0) printf("bench_engine: load average %.2f at end\n", load[0]);
  return 0;
}
