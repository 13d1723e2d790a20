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
 *   3b. PKV_BENCH_ONLY=pattern: the decode kernel's memory walk alone (its
 *      tiles, head order and software prefetches, no arithmetic) beside
 *      the read loop and the kernel, and the kernel with its K/V in L2
 *      (its compute ceiling) — where decode's gap to the read loop is;
 *   3c. PKV_BENCH_ONLY=paged: paged / contiguous decode time in one process
 *      (1 thread, on-CPU time, the two alternated in every repetition);
 *   4. prefill, n = 2048 and 4096, causal, 8 query heads / 2 KV heads (the
 *      Llama GQA ratio 4; fewer heads than the model to keep the run short;
 *      the per-head work is identical), head_dim 128, f32 storage.
 *      FLOPs counted: 2 * n^2 * head_dim per query head — QK^T and PV each
 *      2*n^2*d over the full square, halved for causality.  Reported vs the
 *      measured peak and vs OpenBLAS (per head: cblas_sgemm Q K^T, causal
 *      mask + softmax, cblas_sgemm P V; same FLOP count, so the ratio is the
 *      time ratio), OpenBLAS's repetitions after the engine's (its workers
 *      spin after a call).
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
#include <unistd.h>

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

/* The read loops.  The reference is the best of several loops of the
 * widest ISA in use (see ref_isa): 4 or 8 independent accumulators, with or
 * without a software prefetch 2 KiB ahead — whichever reads fastest here.
 * Never SSE: on an AVX2-only machine an SSE loop reads 0.66-0.81 of the
 * AVX2 one, which would flatter the engine. */
#define READ_LOOP(NAME, TARGET, VT, ZERO, LOAD, ADD, RED, VL, NACC, PF)         \
  __attribute__((target(TARGET))) static float NAME(const float *p, size_t n) { \
    VT a[NACC];                                                               \
    for (int j = 0; j < NACC; j++) a[j] = ZERO();                             \
    for (size_t i = 0; i + VL * NACC <= n; i += VL * NACC) {                  \
      if (PF) __builtin_prefetch(p + i + 512, 0, 1);                          \
      for (int j = 0; j < NACC; j++) a[j] = ADD(a[j], LOAD(p + i + VL * j));  \
    }                                                                         \
    for (int j = 1; j < NACC; j++) a[0] = ADD(a[0], a[j]);                    \
    return RED(a[0]);                                                         \
  }
__attribute__((target("avx2"))) static float red256(__m256 v) {
  float f[8], s = 0;
  _mm256_storeu_ps(f, v);
  for (int i = 0; i < 8; i++) s += f[i];
  return s;
}
READ_LOOP(rd512_4, "avx512f", __m512, _mm512_setzero_ps, _mm512_load_ps, _mm512_add_ps, _mm512_reduce_add_ps, 16, 4, 0)
READ_LOOP(rd512_8, "avx512f", __m512, _mm512_setzero_ps, _mm512_load_ps, _mm512_add_ps, _mm512_reduce_add_ps, 16, 8, 0)
READ_LOOP(rd512_8p, "avx512f", __m512, _mm512_setzero_ps, _mm512_load_ps, _mm512_add_ps, _mm512_reduce_add_ps, 16, 8, 1)
READ_LOOP(rd256_4, "avx2", __m256, _mm256_setzero_ps, _mm256_load_ps, _mm256_add_ps, red256, 8, 4, 0)
READ_LOOP(rd256_8, "avx2", __m256, _mm256_setzero_ps, _mm256_load_ps, _mm256_add_ps, red256, 8, 8, 0)
READ_LOOP(rd256_8p, "avx2", __m256, _mm256_setzero_ps, _mm256_load_ps, _mm256_add_ps, red256, 8, 8, 1)

typedef struct read_loop {
  const char *name;
  float (*fn)(const float *, size_t);
} read_loop;
static const read_loop loops512[] = {
    {"avx512 4 acc", rd512_4}, {"avx512 8 acc", rd512_8}, {"avx512 8 acc + prefetch", rd512_8p}};
static const read_loop loops256[] = {
    {"avx2 4 acc", rd256_4}, {"avx2 8 acc", rd256_8}, {"avx2 8 acc + prefetch", rd256_8p}};

/* The ISA of the reference loops: the widest the machine has, or AVX2 when
 * the engine runs its AVX2 back end (PKV_BACKEND=avx2: what an AVX2-only
 * machine would measure).  The loop itself is chosen by ref_pick. */
static const read_loop *ref_loops = loops256;
static const read_loop *ref_loop; /* the fastest, after ref_pick */

static void bw_task(void *c, int index, int n) {
  bw_ctx *ctx = c;
  size_t per = ctx->n / (size_t)n / 64 * 64;
  const float *p = ctx->buf + per * (size_t)index;
  double c0 = thread_cpu_s();
  ctx->sink[index] = ref_loop->fn(p, per);
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

/* Runs every loop of the reference ISA (1 thread, two rounds of reps, so a
 * load spike does not pick the loop) and keeps the fastest as ref_loop —
 * fastest on on-CPU time, which another process's use of the core does not
 * inflate. */
static void ref_pick(const float *buf, size_t n, int reps) {
  double g[3] = {0};
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 3; i++) {
      ref_loop = &ref_loops[i];
      double x;
      measure_bw_cpu(buf, n, 1, reps, &x);
      g[i] = x > g[i] ? x : g[i];
    }
  int bi = 0;
  for (int i = 0; i < 3; i++) {
    printf("bench_engine: read loop \"%s\": %.1f GB/s (1 thread, on-CPU)\n", ref_loops[i].name, g[i]);
    if (g[i] > g[bi]) bi = i;
  }
  ref_loop = &ref_loops[bi];
  printf("bench_engine: bandwidth reference = \"%s\" (the fastest %s read loop)\n",
         ref_loop->name, ref_loops == loops512 ? "AVX-512" : "AVX2");
}

/* ------------------------------------------------------------ FMA peak */

#define PEAK_ITERS 4000000L

/* 12 independent FMA chains in registers: the FLOPs it executed. */
#define FMA_LOOP(NAME, TARGET, VT, SET1, FMADD, ADD, VL)                        \
  __attribute__((target(TARGET))) static double NAME(void) {                  \
    VT a[12], b = SET1(0.999999f), c = SET1(1e-7f);                           \
    for (int i = 0; i < 12; i++) a[i] = SET1((float)i);                       \
    for (long it = 0; it < PEAK_ITERS; it++)                                  \
      _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) a[i] = FMADD(a[i], b, c); \
    VT s = a[0];                                                              \
    for (int i = 1; i < 12; i++) s = ADD(s, a[i]);                            \
    bu_sink(&s);                                                              \
    return (double)PEAK_ITERS * 12 * VL * 2;                                  \
  }
FMA_LOOP(fma_avx512, "avx512f,fma", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, 16)
FMA_LOOP(fma_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, 8)

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

static int peak_avx512 = 1; /* 0: the AVX2 back end is measured, so is its peak */

static double measure_peak(int threads, int reps) {
  double top = 0;
  for (int isa = 0; isa < 2; isa++) {
    if (isa == 1 && (!peak_avx512 || !__builtin_cpu_supports("avx512f"))) continue;
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

/* The reference ISA's FMA loop on this thread, GFLOP/s of on-CPU time (the
 * roof beside an on-CPU figure of the same repetitions). */
static double fma_cpu_gflops(void) {
  double c0 = thread_cpu_s();
  double fl = peak_avx512 && __builtin_cpu_supports("avx512f") ? fma_avx512() : fma_avx2();
  return fl / (thread_cpu_s() - c0) * 1e-9;
}

/* The roofline of a figure that reads `bytes` and executes `flops`: the
 * shortest time the machine allows is max(bytes / read bandwidth, flops /
 * FMA peak), both measured in the same repetitions on the same ISA.
 * Reports value (GB/s of K/V) against the roof's GB/s and says which roof
 * binds. */
static void report_roof(const char *name, double gbps, double bytes, double flops, double bw,
                        double peak) {
  double t_bw = bytes / (bw * 1e9), t_fma = flops / (peak * 1e9);
  char label[128];
  snprintf(label, sizeof label, "of the roofline (%s binds: %.0f GFLOP/s, %.1f GB/s)",
           t_fma > t_bw ? "FMA" : "bandwidth", peak, bw);
  bu_report_vs(name, gbps, "GB/s", "roof", bytes / (t_fma > t_bw ? t_fma : t_bw) * 1e-9, label);
}

/* ------------------------------------------------------------ threads */

/* The FMA loop's 2-thread / 1-thread gain, measured at start: ~2 when the
 * second core is free, ~1 when another process holds it. */
static double fma_gain = 0;

/* Prints the 2-thread gain of a figure and, where two threads gain little
 * (< 1.3x), why: the read loop's own 2-thread gain in the same repetitions
 * (bandwidth already saturated by one thread) or the FMA loop's (the second
 * core busy). */
static void explain_threads(const char *what, double r1, double r2, double bw1, double bw2) {
  double g = r2 / r1, bwg = bw2 / bw1;
  char name[160];
  snprintf(name, sizeof name, "%s_t2_gain", what);
  bu_report_vs(name, r2, "GB/s|GFLOP/s", "t1", r1, "2-thread gain");
  if (g >= 1.3) return;
  if (fma_gain < 1.5)
    printf("  why: the second core is busy (the FMA loop gains only %.2fx on 2 threads)\n", fma_gain);
  else if (bw1 > 0 && bwg < 1.3)
    printf("  why: bandwidth is saturated (the read loop gains only %.2fx on 2 threads: "
           "%.1f -> %.1f GB/s)\n", bwg, bw1, bw2);
  else if (bw1 > 0)
    printf("  why: not bandwidth (read loop %.2fx) nor a busy core (FMA loop %.2fx): the "
           "engine's own scaling\n", bwg, fma_gain);
  else /* compute-bound rows (prefill) carry no bandwidth sample */
    printf("  why: not a busy core (FMA loop %.2fx): the engine's own scaling\n", fma_gain);
}

/* ------------------------------------------------------------ decode */

/* n random floats in [-1, 1) (seeded), malloc'd. */
static float *rand_floats(size_t n, uint64_t seed) {
  float *x = malloc(sizeof(float) * (n ? n : 1));
  if (!x) abort();
  tu_fill(x, n, 1.0f, &seed);
  return x;
}

/* Decode FLOPs per (token, KV head): G query heads x (2*D for Q.K + 2*D for
 * P.V); the softmax is not counted. */
#define DEC_FLOPS(G) (4.0 * (G) * HD)

enum { HQ = 32, HKV = 8, HD = 128, DEC_TOTAL = 32768 };

static double time_decode(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n, double *cpu) {
  double c0 = thread_cpu_s();
  uint64_t t0 = bu_now_ns();
  pkv__attn_decode(a, seqs, n);
  if (cpu) *cpu = thread_cpu_s() - c0; /* one thread: all work is on this one */
  return (double)(bu_now_ns() - t0) * 1e-9;
}

/* A decode step's sequences twice over the same K/V contents: paged (16-token
 * blocks, shuffled) and contiguous (one block per sequence), batch x ctx
 * tokens, the same queries and outputs. */
typedef struct dec_pair {
  tu_paged paged[8], contig[8];
  pkv__decode_seq sp[8], sc[8];
  float *q, *out;
  uint32_t batch;
} dec_pair;

static void dec_pair_init(dec_pair *d, pkv_dtype dt, uint32_t ctx, uint32_t batch) {
  d->batch = batch;
  d->q = rand_floats((size_t)batch * HQ * HD, 1);
  d->out = malloc(sizeof(float) * batch * HQ * HD);
  for (uint32_t b = 0; b < batch; b++) {
    float *qb = d->q + (size_t)b * HQ * HD, *ob = d->out + (size_t)b * HQ * HD;
    tu_paged_init(&d->paged[b], dt, HKV, HD, 16, ctx, b + 1);
    tu_paged_init(&d->contig[b], dt, HKV, HD, ctx, ctx, b + 1);
    d->sp[b] = (pkv__decode_seq){d->paged[b].view, ctx, qb, ob};
    d->sc[b] = (pkv__decode_seq){d->contig[b].view, ctx, qb, ob};
  }
}

static void dec_pair_fini(dec_pair *d) {
  for (uint32_t b = 0; b < d->batch; b++) {
    tu_paged_free(&d->paged[b]);
    tu_paged_free(&d->contig[b]);
  }
  free(d->q);
  free(d->out);
}

/* The machine is shared: each repetition measures the bandwidth, the paged
 * step and the contiguous step back to back, and each figure is the median
 * of its own series, so a figure and its baseline see the same load. */
static void bench_decode(const pkv__kernels *k, const float *bwbuf, size_t bwn) {
  static const uint32_t ctxs[] = {4096, 16384, 32768};
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};
  static const char *dtn[] = {"f32", "f16", "bf16"};
  const int reps = quick ? 3 : 11;
  for (int di = 0; di < 3; di++)
    for (int ci = 0; ci < 3; ci++) {
      uint32_t ctx = ctxs[ci], batch = DEC_TOTAL / ctx;
      dec_pair d;
      dec_pair_init(&d, dts[di], ctx, batch);
      const pkv__decode_seq *sp = d.sp, *sc = d.sc;
      double bytes = (double)DEC_TOTAL * HKV * HD * (dts[di] == PKV_DTYPE_F32 ? 4 : 2) * 2;
      const double flops = (double)DEC_TOTAL * HKV * DEC_FLOPS(HQ / HKV);
      double rate[3] = {0}, bwt[3] = {0};
      for (uint32_t threads = 1; threads <= 2; threads++) {
        pkv__attn a;
        if (pkv__attn_init(&a, k, threads, HQ, HKV, HD, 1.0f / sqrtf(HD))) abort();
        double vb[32], vp[32], vc[32], cb[32], cp[32], vd[32], cd[32], pc[32];
        /* bf16 also runs the bf16-dot fast path, alternating with the exact
         * one in the same repetitions */
        const int fast = dts[di] == PKV_DTYPE_BF16 && k->decode_bf16dot != NULL;
        time_decode(&a, sp, batch, NULL); /* warm-up */
        time_decode(&a, sc, batch, NULL);
        for (int r = 0; r < reps; r++) {
          vb[r] = measure_bw_cpu(bwbuf, bwn, (int)threads, 1, &cb[r]);
          if (threads == 1) pc[r] = fma_cpu_gflops();
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
        rate[threads] = bytes / tp * 1e-9;
        bwt[threads] = bw;
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
          snprintf(name, sizeof name, "decode_%s_ctx%u_batch%u_t1_cpu_roof", dtn[di], ctx, batch);
          report_roof(name, bytes / bu_median(cp, (size_t)reps) * 1e-9, bytes, flops, best(cb, reps),
                      best(pc, reps));
          if (fast) {
            snprintf(name, sizeof name, "decode_bf16dot_ctx%u_batch%u_t1_cpu_gbps", ctx, batch);
            bu_report_vs(name, bytes / bu_median(cd, (size_t)reps) * 1e-9, "GB/s", "read_bw_cpu",
                         best(cb, reps), "of bandwidth (cpu time)");
            snprintf(name, sizeof name, "decode_bf16dot_ctx%u_batch%u_t1_cpu_roof", ctx, batch);
            report_roof(name, bytes / bu_median(cd, (size_t)reps) * 1e-9, bytes, flops,
                        best(cb, reps), best(pc, reps));
            snprintf(name, sizeof name, "decode_bf16dot_ctx%u_batch%u_t1_cpu_ms", ctx, batch);
            bu_report_vs(name, bu_median(cd, (size_t)reps) * 1e3, "ms", "exact_cpu_ms",
                         bu_median(cp, (size_t)reps) * 1e3, "bf16dot/exact time");
          }
        }
        pkv__attn_fini(&a);
      }
      char what[96];
      snprintf(what, sizeof what, "decode_%s_ctx%u_batch%u", dtn[di], ctx, batch);
      explain_threads(what, rate[1], rate[2], bwt[1], bwt[2]);
      dec_pair_fini(&d);
    }
}

static double time_pattern(const pkv__decode_seq *seqs, uint32_t n, int wide, int pf);
/* ------------------------------------------------------------ paged vs contiguous */
/* Paged / contiguous decode time in one process (PKV_BENCH_ONLY=paged): 1
 * thread, the same kernel on 16-token shuffled blocks and on one block per
 * sequence, alternated in every repetition (the order flips each time so
 * neither side always follows the other), on-CPU time; the median of the
 * per-repetition ratios and of each side's times.  Beside it the same ratio
 * of the kernel's memory walk alone (the pattern walk, no arithmetic): when
 * the two agree, the layout's walk (block jumps), not the kernel's work,
 * makes the difference. */
static void bench_paged(const pkv__kernels *k, int wide) {
  static const uint32_t ctxs[] = {4096, 32768};
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};
  static const char *dtn[] = {"f32", "f16", "bf16"};
  const int reps = quick ? 3 : 9;
  for (int di = 0; di < 3; di++)
    for (int ci = 0; ci < 2; ci++) {
      uint32_t ctx = ctxs[ci], batch = DEC_TOTAL / ctx;
      dec_pair d;
      dec_pair_init(&d, dts[di], ctx, batch);
      const pkv__decode_seq *sp = d.sp, *sc = d.sc;
      pkv__attn a;
      if (pkv__attn_init(&a, k, 1, HQ, HKV, HD, 1.0f / sqrtf(HD))) abort();
      double cp[32], cc[32], rr[32], wr[32];
      time_decode(&a, sp, batch, NULL); /* warm-up */
      time_decode(&a, sc, batch, NULL);
      for (int r = 0; r < reps; r++) {
        if (r & 1) {
          time_decode(&a, sc, batch, &cc[r]);
          time_decode(&a, sp, batch, &cp[r]);
        } else {
          time_decode(&a, sp, batch, &cp[r]);
          time_decode(&a, sc, batch, &cc[r]);
        }
        rr[r] = cp[r] / cc[r];
        double wp, wc;
        if (r & 1) {
          wc = time_pattern(sc, batch, wide, 1);
          wp = time_pattern(sp, batch, wide, 1);
        } else {
          wp = time_pattern(sp, batch, wide, 1);
          wc = time_pattern(sc, batch, wide, 1);
        }
        wr[r] = wp / wc;
      }
      const double bytes = (double)DEC_TOTAL * HKV * HD * (dts[di] == PKV_DTYPE_F32 ? 4 : 2) * 2;
      const double tp = bu_median(cp, (size_t)reps), tc = bu_median(cc, (size_t)reps);
      char name[128];
      snprintf(name, sizeof name, "paged_%s_ctx%u_batch%u_cpu_ms", dtn[di], ctx, batch);
      bu_report_vs(name, tp * 1e3, "ms", "contiguous_cpu_ms", tc * 1e3, "paged/contiguous (medians)");
      double lo = rr[0];
      for (int r = 1; r < reps; r++) lo = rr[r] < lo ? rr[r] : lo;
      printf("  median of per-repetition ratios %.3f (min %.3f, max %.3f); paged %.1f GB/s, "
             "contiguous %.1f GB/s (on-CPU)\n",
             bu_median(rr, (size_t)reps), lo, best(rr, reps), bytes / tp * 1e-9, bytes / tc * 1e-9);
      printf("  the walk alone (no arithmetic), paged/contiguous: %.3f (median)\n",
             bu_median(wr, (size_t)reps));
      pkv__attn_fini(&a);
      dec_pair_fini(&d);
    }
}

/* ------------------------------------------------------------ pattern */

/* The decode kernel's memory walk without its arithmetic (PKV_BENCH_ONLY=
 * pattern): the same tiles of PKV__DECODE_CH tokens, heads in the same
 * order, K rows whole, V rows in the kernel's passes of pv_w elements, and
 * the same software prefetches issued the same way (kern_body.h,
 * HEAD_AHEAD: one per 64-byte line, spread through the loads) — each loaded
 * vector only added into an integer accumulator.  Its GB/s beside the
 * linear read loop and the kernel splits the kernel's gap into "the access
 * pattern" (pattern / read loop) and "the kernel's compute" (kernel /
 * pattern).  pf = 0 drops the prefetches. */
#define PAT_WALK(NAME, TARGET, VI, ZERO, LOADI, ADDI, VB)                       \
  __attribute__((target(TARGET))) static uint64_t NAME(const pkv__kv_view *kv, uint32_t ntok, \
                                                       uint32_t pv_w, int pf) {  \
    const int dt = kv->dtype, ahead = dt == PKV_DTYPE_F32;                     \
    const size_t row = pkv__row_bytes(kv->head_dim, dt), esz = dt == PKV_DTYPE_F32 ? 4 : 2; \
    const size_t pvb = pv_w * esz, hs = kv->head_stride;                       \
    const uint32_t bs = kv->block_size, nh = kv->block_stride / hs;            \
    size_t offa[PKV__DECODE_CH], offb[PKV__DECODE_CH], *cur = offa, *nxt = offb; \
    VI a0 = ZERO(), a1 = ZERO();                                               \
    for (uint32_t j = 0; j < PKV__DECODE_CH && j < ntok; j++)                  \
      cur[j] = (size_t)kv->blocks[j / bs] * kv->block_stride + (size_t)(j % bs) * row; \
    for (uint32_t t = 0; t < ntok; t += PKV__DECODE_CH) {                      \
      uint32_t n = ntok - t < PKV__DECODE_CH ? ntok - t : PKV__DECODE_CH;      \
      uint32_t tn = t + n, nn = tn < ntok ? (ntok - tn < PKV__DECODE_CH ? ntok - tn : PKV__DECODE_CH) : 0; \
      for (uint32_t j = 0; j < nn; j++)                                        \
        nxt[j] = (size_t)kv->blocks[(tn + j) / bs] * kv->block_stride + (size_t)((tn + j) % bs) * row; \
      for (uint32_t h = 0; h < nh; h++) {                                      \
        const uint8_t *kb = kv->k + h * hs, *vb = kv->v + h * hs;              \
        const uint8_t *pk = kb, *pv = vb;                                      \
        const size_t *pre = nxt;                                               \
        uint32_t npre = nn;                                                    \
        if (ahead && h + 1 < nh) pk += hs, pv += hs, pre = cur, npre = n;      \
        else if (ahead) pk = kv->k, pv = kv->v;                                \
        for (uint32_t j = 0; j < n; j++)                                       \
          for (size_t o = 0; o < row; o += 64) {                               \
            if (pf && !ahead) __builtin_prefetch(vb + cur[j] + o, 0, 3);       \
            if (pf && j < npre) __builtin_prefetch(pk + pre[j] + o, 0, 3);     \
            a0 = ADDI(a0, LOADI(kb + cur[j] + o));                             \
            if (VB < 64) a1 = ADDI(a1, LOADI(kb + cur[j] + o + VB));           \
          }                                                                    \
        for (size_t d0 = 0; d0 < row; d0 += pvb) {                             \
          const size_t w = row - d0 < pvb ? row - d0 : pvb;                    \
          for (uint32_t j = 0; j < n; j++) {                                   \
            if (pf && ahead && j < npre)                                       \
              for (size_t o = d0; o < d0 + w; o += 64) __builtin_prefetch(pv + pre[j] + o, 0, 3); \
            for (size_t o = 0; o < w; o += VB) a0 = ADDI(a0, LOADI(vb + cur[j] + d0 + o)); \
          }                                                                    \
        }                                                                      \
      }                                                                        \
      size_t *sw = cur;                                                        \
      cur = nxt;                                                               \
      nxt = sw;                                                                \
    }                                                                          \
    uint64_t r[VB / 8];                                                        \
    memcpy(r, &a0, VB);                                                        \
    uint64_t s = r[0];                                                         \
    memcpy(r, &a1, VB);                                                        \
    return s + r[0];                                                           \
  }
#define PAT_LD512(p) _mm512_loadu_si512((const void *)(p))
#define PAT_LD256(p) _mm256_loadu_si256((const __m256i *)(p))
PAT_WALK(pat_avx512, "avx512f", __m512i, _mm512_setzero_si512, PAT_LD512, _mm512_add_epi32, 64)
PAT_WALK(pat_avx2, "avx2", __m256i, _mm256_setzero_si256, PAT_LD256, _mm256_add_epi32, 32)

/* On-CPU seconds of the pattern walk over every sequence. */
static double time_pattern(const pkv__decode_seq *seqs, uint32_t n, int wide, int pf) {
  /* the V pass width of the decode kernel at GQA 4 (kern_body.h DEC_PV_NV) */
  const uint32_t pv_w = wide ? 4 * 16 : 3 * 8;
  uint64_t s = 0;
  double c0 = thread_cpu_s();
  for (uint32_t b = 0; b < n; b++)
    s += wide ? pat_avx512(&seqs[b].kv, seqs[b].n_tokens, pv_w, pf)
              : pat_avx2(&seqs[b].kv, seqs[b].n_tokens, pv_w, pf);
  double c = thread_cpu_s() - c0;
  bu_sink(&s);
  return c;
}

/* Read loop vs pattern walk vs decode kernel, 1 thread, on-CPU time, the
 * three alternated in every repetition (PKV_BENCH_ONLY=pattern). */
static void bench_pattern(const pkv__kernels *k, const float *bwbuf, size_t bwn, int wide) {
  static const uint32_t ctxs[] = {4096, 32768};
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_F16, PKV_DTYPE_BF16};
  static const char *dtn[] = {"f32", "f16", "bf16"};
  const int reps = quick ? 3 : 7;
  for (int di = 0; di < 3; di++)
    for (int ci = 0; ci < 2; ci++) {
      uint32_t ctx = ctxs[ci], batch = DEC_TOTAL / ctx;
      tu_paged paged[8];
      pkv__decode_seq sp[8];
      float *q = rand_floats((size_t)batch * HQ * HD, 1), *out = malloc(sizeof(float) * batch * HQ * HD);
      for (uint32_t b = 0; b < batch; b++) {
        tu_paged_init(&paged[b], dts[di], HKV, HD, 16, ctx, b + 1);
        sp[b] = (pkv__decode_seq){paged[b].view, ctx, q + (size_t)b * HQ * HD, out + (size_t)b * HQ * HD};
      }
      const double bytes = (double)DEC_TOTAL * HKV * HD * (dts[di] == PKV_DTYPE_F32 ? 4 : 2) * 2;
      pkv__attn a;
      if (pkv__attn_init(&a, k, 1, HQ, HKV, HD, 1.0f / sqrtf(HD))) abort();
      double cb[32], cpat[32], cnp[32], cdec[32];
      time_decode(&a, sp, batch, NULL);
      time_pattern(sp, batch, wide, 1);
      for (int r = 0; r < reps; r++) {
        measure_bw_cpu(bwbuf, bwn, 1, 1, &cb[r]);
        cpat[r] = bytes / time_pattern(sp, batch, wide, 1) * 1e-9;
        cnp[r] = bytes / time_pattern(sp, batch, wide, 0) * 1e-9;
        double c;
        time_decode(&a, sp, batch, &c);
        cdec[r] = bytes / c * 1e-9;
      }
      const double bw = best(cb, reps), pat = bu_median(cpat, (size_t)reps),
                   np = bu_median(cnp, (size_t)reps), dec = bu_median(cdec, (size_t)reps);
      char name[128];
      snprintf(name, sizeof name, "pattern_%s_ctx%u_batch%u_gbps", dtn[di], ctx, batch);
      bu_report_vs(name, pat, "GB/s", "read_bw_cpu", bw, "of the read loop (decode's walk, no compute)");
      snprintf(name, sizeof name, "pattern_nopf_%s_ctx%u_batch%u_gbps", dtn[di], ctx, batch);
      bu_report_vs(name, np, "GB/s", "read_bw_cpu", bw, "of the read loop (the walk, no prefetch)");
      snprintf(name, sizeof name, "pattern_decode_%s_ctx%u_batch%u_gbps", dtn[di], ctx, batch);
      bu_report_vs(name, dec, "GB/s", "pattern", pat, "of the walk (the kernel's compute)");
      snprintf(name, sizeof name, "pattern_decode_%s_ctx%u_batch%u_bw", dtn[di], ctx, batch);
      bu_report_vs(name, dec, "GB/s", "read_bw_cpu", bw, "of the read loop");
      pkv__attn_fini(&a);
      for (uint32_t b = 0; b < batch; b++) tu_paged_free(&paged[b]);
      free(q);
      free(out);
    }
  /* the kernel's compute ceiling: K/V in L2 (128 tokens, 8 heads: 256-512
   * KiB), the kernel called directly (no plan, no prescale), repeated */
  for (int di = 0; di < 3; di++) {
    enum { HOT = 128, REP = 400 };
    tu_paged p;
    tu_paged_init(&p, dts[di], HKV, HD, 16, HOT, 9);
    float *q = rand_floats((size_t)HQ * HD, 1), *out = malloc(sizeof(float) * HQ * HD);
    /* the kernel alone (no plan, no prescale): args as attn.c makes them */
    const uint32_t G = HQ / HKV;
    float *scr = malloc(sizeof(float) * pkv__decode_scratch_floats(G)), *qc = malloc(sizeof(float) * HQ),
          *M = malloc(sizeof(float) * HQ), *S = malloc(sizeof(float) * HQ),
          *acc = calloc((size_t)HQ * HD, sizeof(float));
    for (int i = 0; i < HQ; i++) qc[i] = 1.0f, M[i] = -INFINITY, S[i] = 0;
    for (size_t i = 0; i < (size_t)HQ * HD; i++) q[i] *= 0.1f;
    const pkv__decode_args da = {.kv = &p.view, .h0 = 0, .nh = HKV, .t0 = 0, .t1 = HOT, .G = G,
                                 .q = q, .qc = qc, .M = M, .S = S, .acc = acc, .scratch = scr};
    double v[16], cb[16];
    for (int r = 0; r < reps; r++) {
      measure_bw_cpu(bwbuf, bwn, 1, 1, &cb[r]);
      double c0 = thread_cpu_s();
      for (int i = 0; i < REP; i++) k->decode(&da);
      v[r] = (double)HOT * HKV * HD * (dts[di] == PKV_DTYPE_F32 ? 4 : 2) * 2 * REP /
             (thread_cpu_s() - c0) * 1e-9;
    }
    bu_sink(acc);
    free(scr), free(qc), free(M), free(S), free(acc);
    char name[96];
    snprintf(name, sizeof name, "pattern_l2_decode_%s_gbps", dtn[di]);
    bu_report_vs(name, bu_median(v, (size_t)reps), "GB/s", "read_bw_cpu", best(cb, reps),
                 "x the DRAM read loop (kernel alone, K/V in L2: its compute ceiling)");
    tu_paged_free(&p);
    free(q);
    free(out);
  }
}

/* ------------------------------------------------------------ shapes */

/* GB/s (median of reps, 1 thread, on-CPU time: another process on the
 * core does not count) of a decode step over 8 sequences of 4k tokens, 8
 * KV heads x G query heads, head_dim 128, block size bs; *bw the best
 * on-CPU read-loop bandwidth and *pk the best on-CPU FMA rate of the same
 * repetitions, *bytes and *flops the step's. */
static double shape_rate(const pkv__kernels *k, pkv_dtype dt, uint32_t G, uint32_t bs,
                         const float *bwbuf, size_t bwn, int reps, double *bw, double *pk,
                         double *bytes, double *flops) {
  enum { B = 8, CTX = 4096 };
  tu_paged p[B];
  pkv__decode_seq sq[B];
  const uint32_t hq = HKV * G;
  float *q = rand_floats((size_t)B * hq * HD, 5), *out = malloc(sizeof(float) * B * hq * HD);
  for (uint32_t b = 0; b < B; b++) {
    tu_paged_init(&p[b], dt, HKV, HD, bs, CTX, b + 1);
    sq[b] = (pkv__decode_seq){p[b].view, CTX, q + (size_t)b * hq * HD, out + (size_t)b * hq * HD};
  }
  pkv__attn a;
  if (pkv__attn_init(&a, k, 1, hq, HKV, HD, 1.0f / sqrtf(HD))) abort();
  double v[32], w[32], f[32];
  time_decode(&a, sq, B, NULL);
  for (int r = 0; r < reps; r++) {
    measure_bw_cpu(bwbuf, bwn, 1, 1, &w[r]);
    f[r] = fma_cpu_gflops();
    time_decode(&a, sq, B, &v[r]);
  }
  pkv__attn_fini(&a);
  for (uint32_t b = 0; b < B; b++) tu_paged_free(&p[b]);
  free(q);
  free(out);
  *bw = best(w, reps);
  *pk = best(f, reps);
  *bytes = (double)B * CTX * HKV * HD * (dt == PKV_DTYPE_F32 ? 4 : 2) * 2;
  *flops = (double)B * CTX * HKV * DEC_FLOPS(G);
  return *bytes / bu_median(v, (size_t)reps) * 1e-9;
}

/* Issue 13's shape targets (PKV_BENCH_ONLY=shapes): every GQA ratio 1-8 and
 * block sizes 1-256, each as GB/s of K/V and as a share of the best row. */
static void bench_shapes(const pkv__kernels *k, const float *bwbuf, size_t bwn) {
  static const pkv_dtype dts[] = {PKV_DTYPE_F32, PKV_DTYPE_BF16};
  static const char *dtn[] = {"f32", "bf16"};
  static const uint32_t bss[] = {1, 2, 3, 4, 5, 8, 16, 32, 64, 128, 256};
  const int reps = quick ? 2 : 5;
  for (int di = 0; di < 2; di++) {
    /* rows 0-7: GQA 1-8 at block size 16; rows 8-18: block sizes at GQA 4 */
    double g[19], bw[19], pk[19], by[19], fl[19], top[2] = {0, 0};
    for (int i = 0; i < 19; i++) {
      uint32_t G = i < 8 ? (uint32_t)i + 1 : 4, bs = i < 8 ? 16 : bss[i - 8];
      fprintf(stderr, "bench_engine: shapes %s %d/19\r", dtn[di], i + 1);
      g[i] = shape_rate(k, dts[di], G, bs, bwbuf, bwn, reps, &bw[i], &pk[i], &by[i], &fl[i]);
      top[i >= 8] = g[i] > top[i >= 8] ? g[i] : top[i >= 8];
    }
    for (int i = 0; i < 19; i++) {
      char name[96];
      if (i < 8) snprintf(name, sizeof name, "shape_%s_gqa%d", dtn[di], i + 1);
      else snprintf(name, sizeof name, "shape_%s_bs%u", dtn[di], bss[i - 8]);
      size_t l = strlen(name);
      snprintf(name + l, sizeof name - l, "_gbps");
      bu_report_vs(name, g[i], "GB/s", i < 8 ? "best_gqa" : "best_block", top[i >= 8],
                   i < 8 ? "of the best ratio" : "of the best block size");
      snprintf(name + l, sizeof name - l, "_bw");
      bu_report_vs(name, g[i], "GB/s", "read_bw", bw[i], "of bandwidth");
      snprintf(name + l, sizeof name - l, "_roof");
      report_roof(name, g[i], by[i], fl[i], bw[i], pk[i]);
    }
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
    double gf[3] = {0}, pks[3] = {0};
    const uint32_t n = ns[ni];
    const int reps = quick ? 1 : (n > 2048 ? 3 : 5);
    tu_paged p;
    tu_paged_init(&p, PKV_DTYPE_F32, PF_HKV, HD, 16, n, 42);
    size_t row = (size_t)PF_HQ * HD;
    float *q = rand_floats(n * row, 2), *out = malloc(sizeof(float) * n * row),
          *ob = malloc(sizeof(float) * n * row), *S = malloc(sizeof(float) * n * n);
    float scale = 1.0f / sqrtf(HD);
    double flops = 2.0 * n * (double)n * HD * PF_HQ;
    for (int threads = 1; threads <= 2; threads++) {
      pkv__attn a;
      if (pkv__attn_init(&a, k, (uint32_t)threads, PF_HQ, PF_HKV, HD, scale)) abort();
      double v[8], w[8], pk[8], vc[8], pc[8];
      /* OpenBLAS's workers spin for a while after each call (measured here:
       * ~half a core for the first 50 ms, nothing after 350 ms), which took
       * the second core from the engine's 2-thread rows when the two were
       * timed alternately: the engine's repetitions run first, after a
       * pause, and OpenBLAS's after them. */
      usleep(400000);
      for (int r = 0; r < reps; r++) {
        pk[r] = measure_peak(threads, 1);
        if (threads == 1) pc[r] = fma_cpu_gflops(); /* on-CPU: the FMA loop on this thread */
        double c0 = thread_cpu_s();
        uint64_t t0 = bu_now_ns();
        pkv__attn_prefill(&a, &p.view, 0, n, q, out);
        v[r] = (double)(bu_now_ns() - t0) * 1e-9;
        vc[r] = thread_cpu_s() - c0; /* 1 thread: the work is all on this one */
      }
      openblas_set_num_threads(threads);
      for (int r = 0; r < reps; r++) {
        uint64_t t0 = bu_now_ns();
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
      gf[threads] = flops / te * 1e-9;
      pks[threads] = peak;
      snprintf(name, sizeof name, "prefill_n%u_t%d_gflops", n, threads);
      bu_report_vs(name, flops / te * 1e-9, "GFLOP/s", "fp32_peak", peak, "of peak");
      if (threads == 1) {
        snprintf(name, sizeof name, "prefill_n%u_t1_cpu_gflops", n);
        bu_report_vs(name, flops / bu_median(vc, (size_t)reps) * 1e-9, "GFLOP/s", "fp32_peak_cpu",
                     best(pc, reps), "of peak (cpu time)");
      }
      snprintf(name, sizeof name, "prefill_n%u_t%d_vs_openblas", n, threads);
      bu_report_vs(name, flops / te * 1e-9, "GFLOP/s", "openblas", flops / tb * 1e-9, "x OpenBLAS");
      pkv__attn_fini(&a);
    }
    char what[64];
    snprintf(what, sizeof what, "prefill_n%u", n);
    explain_threads(what, gf[1], gf[2], 0, 0);
    printf("  the FMA loop in the same repetitions: %.0f -> %.0f GFLOP/s on 1 -> 2 threads (%.2fx)\n",
           pks[1], pks[2], pks[2] / pks[1]);
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
  /* the reference ISA: the widest the CPU has, AVX2 for the AVX2 back end */
  int wide = strcmp(k->name, "avx2") != 0 && __builtin_cpu_supports("avx512f");
  ref_loops = wide ? loops512 : loops256;
  peak_avx512 = wide;
  printf("bench_engine: reference ISA %s (read loops and FMA peak)\n", wide ? "AVX-512" : "AVX2");
  size_t n = (size_t)1 << 27; /* 512 MiB of floats: 16x the L3 */
  float *buf = aligned_alloc((size_t)2 << 20, n * sizeof(float));
  (void)madvise(buf, n * sizeof(float), MADV_HUGEPAGE); /* as the KV arena */
  for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
  ref_pick(buf, n, quick ? 2 : 3);
  double pk[3] = {0};
  for (int t = 1; t <= 2; t++) {
    char name[64];
    snprintf(name, sizeof name, "read_bw_t%d", t);
    bu_report(name, measure_bw(buf, n, t, quick ? 3 : 7), "GB/s");
    printf("  (loop \"%s\")\n", ref_loop->name);
  }
  for (int t = 1; t <= 2; t++) {
    char name[64];
    snprintf(name, sizeof name, "fp32_peak_t%d", t);
    bu_report(name, pk[t] = measure_peak(t, quick ? 3 : 5), "GFLOP/s");
  }
  fma_gain = pk[2] / pk[1];
  const char *only = getenv("PKV_BENCH_ONLY");
  if (!only || strcmp(only, "decode") == 0) bench_decode(k, buf, n);
  if (only && strcmp(only, "shapes") == 0) bench_shapes(k, buf, n);
  if (only && strcmp(only, "pattern") == 0) bench_pattern(k, buf, n, wide);
  if (only && strcmp(only, "paged") == 0) bench_paged(k, wide);
  free(buf);
  if (!only || strcmp(only, "prefill") == 0) bench_prefill(k);
  if (getloadavg(load, 3) > 0) printf("bench_engine: load average %.2f at end\n", load[0]);
  return 0;
}
