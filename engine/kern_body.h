/*
 * kern_body.h — the attention kernels, written once on the SIMD vocabulary.
 *
 * Included by kern_avx512.c, kern_avx2.c and kern_scalar.c after each has
 * chosen its PKV_SIMD_* macro; every function here is static, so each back
 * end gets its own copy compiled with its own ISA flags, exported through
 * one const pkv__kernels table (KERN_TABLE_NAME).
 *
 * Storage: one (block, kv head) of a layer is a contiguous tile of
 * block_size rows of head_dim elements (f32, f16 or bf16).  All arithmetic is
 * f32.  Scores are kept in base 2: q is pre-multiplied by scale*log2(e), so
 * softmax weights are 2^(s - M) (PKV_F32_EXP2).
 *
 * Online softmax state, per query row:
 *   M  the largest score seen so far (the running maximum)
 *   S  sum over seen keys of 2^(s - M)
 *   O  sum over seen keys of 2^(s - M) * v      (unnormalised output)
 * A new tile with maximum m' rescales (S, O) by alpha = 2^(M - max(M, m')),
 * then adds its own terms.  The final output is O / S.  Because every row
 * sees at least key 0 first, M is finite after the first tile.
 *
 * Decode (one query token, G grouped heads): per tile of up to
 * PKV__DECODE_CH tokens (spanning blocks as needed), the K rows are streamed once with
 * all G heads' dot products taken from each loaded vector, then the V rows
 * once with a register block of (<= DEC_HG heads) x (DEC_PV_NV vectors of
 * head_dim) accumulators.
 *
 * Prefill (a tile of query rows = tokens x grouped heads): Q is packed
 * transposed (Qt[d][row], pre-scaled) once per tile.  For each key tile of
 * PKV__PREFILL_BC tokens: S^T[key][row] = K · Qt by a microkernel of
 * QK_NJ keys x QK_NV row-vectors (broadcast K scalar, FMA over rows); the
 * causal mask only on tiles that cross the diagonal; the softmax update is
 * vectorised over rows; then O[row][:] = alpha O[row][:] + P · V by a
 * microkernel of PV_NR rows x PV_NV head_dim vectors (broadcast P, FMA over
 * head_dim; the rescale by alpha as it loads O).  The tail of a block loop
 * runs as one narrower block (PF_TAIL).  K/V rows are used in place when f32
 * and inside one block, else converted into a packed tile first.  n x n is
 * never materialised.  A non-causal form (n_keys, for the cascade's shared
 * part) attends keys [0, n_keys) and can leave the online-softmax state.
 */
#ifndef KERN_TABLE_NAME
#error "define KERN_TABLE_NAME before including kern_body.h"
#endif

#include "engine_internal.h"
#include "simd.h"
#include "kern_quant.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
#define MIN_U32(a, b) ((a) < (b) ? (a) : (b))
/* a > b ? a : b — the NaN behaviour of PKV_F32_MAX on every back end */
#define PKV_SCALAR_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Register blocking per back end. */
/* Decode: up to DEC_HG query heads share one pass over a tile's K and V
 * (a group of G > DEC_HG heads takes several passes); the P.V register block
 * is HG heads x DEC_PV_NV(HG) vectors, at most DEC_PV_ACC accumulators. */
#if PKV_NREG >= 32
/* 8: G = 5..8 in one pass over K and V rather than 4 + the rest (two);
 * measured +10-32 % (f32) and +14-21 % (bf16) at G = 5..8, in one process
 * from DRAM (2026-12-03 19:20, after the prefetch change; with the older
 * per-row prefetch loops it had measured no gain) */
#define DEC_HG 8
#define DEC_NV 4
#define DEC_PV_ACC 16
#define QK_NJ 6
#define QK_NV 4
#define PV_NR 6
#define PV_NV 4
#elif PKV_VL > 1
#define DEC_HG 4
#define DEC_NV 3     /* 12 accumulators: 6 passes over V per head group, not 8 (NV 2): */
#define DEC_PV_ACC 12 /* +3 % decode from DRAM, median of 9 in-process A/B rows */
#define QK_NJ 4
#define QK_NV 3
#define PV_NR 4
#define PV_NV 3
#else
#define DEC_HG 4
#define DEC_NV 4
#define DEC_PV_ACC 16
#define QK_NJ 4
#define QK_NV 4
#define PV_NR 4
#define PV_NV 4
#endif
#define DEC_PV_NV(HG) ((HG) * DEC_NV <= DEC_PV_ACC ? DEC_NV : DEC_PV_ACC / (HG))

AI pkv_vf kv_load(const void *base, size_t idx, const int dt) {
  if (dt == PKV_DTYPE_F32) return PKV_F32_LOAD((const float *)base + idx);
  if (dt == PKV_DTYPE_F16) return PKV_F16_LOAD((const uint16_t *)base + idx);
  if (dt == PKV_DTYPE_I8) return PKV_I8_LOAD((const uint8_t *)base + idx);
  if (dt == PKV_DTYPE_FP8_E4M3) return PKV_E4M3_LOAD((const uint8_t *)base + idx);
  if (dt == PKV_DTYPE_FP8_E5M2) return PKV_E5M2_LOAD((const uint8_t *)base + idx);
  return PKV_BF16_LOAD((const uint16_t *)base + idx);
}


/* ================================================================ decode */

/* Byte offsets (from the layer base) of the rows of tokens [t, t+n) of
 * head h: a tile may span several blocks. */
AI void dec_offsets(const pkv__kv_view *kv, uint32_t h, uint32_t t, uint32_t n,
                    size_t *off, const int dt) {
  const uint32_t bs = kv->block_size;
  const size_t row = pkv__row_bytes(kv->head_dim, dt), hoff = (size_t)h * kv->head_stride;
  uint32_t b = t / bs, s = t % bs;
  size_t base = (size_t)kv->blocks[b] * kv->block_stride + hoff;
  for (uint32_t j = 0; j < n; j++) {
    off[j] = base + (size_t)s * row;
    if (++s == bs) {
      s = 0;
      if (j + 1 < n) base = (size_t)kv->blocks[++b] * kv->block_stride + hoff;
    }
  }
}

/* Prefetch schedule (into L1 and L2; the hardware prefetcher cannot follow a jump
 * to another block, and with eight heads' K and V streams interleaved it
 * barely helps even within one).  Tiles are walked head by head; while
 * head h of a tile is consumed, the kernel requests
 *   f32 (HEAD_AHEAD): head h+1 of the same tile (after the last head, head
 *       0 of the next tile) — K row j from the QK loop as K row j is
 *       consumed, V row j from the PV loop likewise;
 *   2-byte types: head h of the next tile's K from the QK loop, and the
 *       current tile's V row j from the QK loop (the bf16-dot path, whose
 *       QK loop is shorter, takes V a tile ahead from the PV loop instead).
 * One tile ahead is 512 KiB of f32 K/V in flight beside the 512 KiB being
 * read — all of a 1 MiB L2 — so f32 goes one head (64 KiB) ahead; 2-byte
 * rows fit a tile ahead.  Measured in one process on on-CPU time (4k x 8
 * and 32k x 1, one thread, medians of 7): f32 head-ahead 9-14 % faster than
 * tile-ahead; bf16 head-ahead 5-9 % slower (bf16-dot 2-5 % slower; again
 * 4 % slower on both back ends after the change below, 2026-12-03 19:00).
 * Without software prefetch decode runs at about half the speed.
 *
 * How they are issued matters as much as what: one prefetch per 64-byte
 * line, spread through the loads that consume the current rows (the Q.K
 * loop prefetches the same byte offset of its target rows as it reads; each
 * P.V pass prefetches the bytes of the target's V rows that the pass itself
 * reads), never a loop of prefetches per row.  Per-row prefetch loops cost a
 * loop's overhead per line and issued a whole row's misses at once;
 * spreading them measured f32 +26-29 % (AVX-512) and +47-54 % (AVX2), f16 and
 * bf16 0-15 %, from DRAM in one process (bench_engine PKV_BENCH_ONLY=pattern,
 * docs/PERFORMANCE.md). */
#define HEAD_AHEAD(dt) ((dt) == PKV_DTYPE_F32)

/* One head's view of a tile while the kernel consumes it: where its rows
 * are, and what to prefetch meanwhile (see HEAD_AHEAD). */
typedef struct dec_tile {
  const uint8_t *kb, *vb;   /* this head's K and V bases; row j at + off[j] */
  const size_t *off;        /* the tile's row offsets */
  uint32_t n;               /* rows in the tile */
  const uint8_t *pkb, *pvb; /* prefetch target: K and V bases ... */
  const size_t *pre;        /* ... and its row offsets */
  uint32_t npre;            /* ... the first npre rows */
  uint32_t D, Dv;           /* K row and V row elements */
  int vcur;                 /* the QK loop also prefetches this tile's V */
} dec_tile;

#define DEC_LD ((size_t)PKV__DECODE_CH + PKV_VL) /* row stride of the scores */

/* The prefetches that go with consuming K rows [j, j+T): V rows [j, j+T)
 * of this tile when vcur, and rows [j, j+T) of the target's K. */
AI void dec_prefetch(const dec_tile *t, uint32_t j, const uint32_t T, size_t row_bytes) {
  for (uint32_t i = 0; i < T; i++) {
    if (t->vcur)
      for (size_t o = 0; o < row_bytes; o += 64) PKV_PREFETCH(t->vb + t->off[j + i] + o);
    if (j + i < t->npre)
      for (size_t o = 0; o < row_bytes; o += 64) PKV_PREFETCH(t->pkb + t->pre[j + i] + o);
  }
}

#if PKV_VL > 1
/* Scores of T = PKV_VL / HG tokens from j (rounded down: a[HG*T ..] are
 * zero): a[g*T + t] holds the partial sums of token j+t, head g (head-major,
 * so each head's T scores are adjacent lanes of the sums: T-float copies,
 * no scatter); sc[g][j+t] = the sum of its lanes. */
AI void dec_put_scores(const pkv_vf *a, float *sc, uint32_t j, const uint32_t HG) {
  const uint32_t T = PKV_VL / HG;
  float r[PKV_VL];
  PKV_F32_STORE(r, PKV_F32_SUM_LANES(a));
#pragma GCC unroll 8
  for (uint32_t g = 0; g < HG; g++) memcpy(sc + (size_t)g * DEC_LD + j, r + g * T, T * sizeof(float));
}
#endif

/* Prefetches of the K rows [j, j+T) consumed at byte offset bo of their
 * rows: the same offset of the target's rows (and of this tile's V when
 * vcur). */
AI void dec_prefetch_at(const dec_tile *t, uint32_t j, const uint32_t T, size_t bo) {
#pragma GCC unroll 16
  for (uint32_t i = 0; i < T; i++) {
    if (t->vcur) PKV_PREFETCH(t->vb + t->off[j + i] + bo);
    if (j + i < t->npre) PKV_PREFETCH(t->pkb + t->pre[j + i] + bo);
  }
}

/* sc[g][j] = q_g . k_j for the tile's rows, HG heads; prefetches as above
 * when prefetch, issued inside the d loop: one per 64 bytes of row consumed,
 * at the same offset of the target's rows (no loops of their own). */
AI void dec_qk(const dec_tile *tl, const float *q, float *sc, const int prefetch,
               const uint32_t HG, const int dt) {
  const uint32_t D = tl->D, n = tl->n;
  const size_t row_bytes = pkv__row_bytes(D, dt);
  uint32_t j = 0;
#if PKV_VL > 1
  /* T tokens x HG heads <= PKV_VL dot products at a time, their partial
   * vectors summed together by one transpose-and-add tree */
  const size_t esz = dt == PKV_DTYPE_F32 ? 4 : dt <= PKV_DTYPE_BF16 ? 2 : 1;
  /* d steps per 64-byte line */
  const uint32_t PS = PKV_VL * esz >= 64 ? 1 : (uint32_t)(64 / (PKV_VL * esz));
  const uint32_t T = PKV_VL / HG;
  for (; T >= 1 && j + T <= n; j += T) {
    pkv_vf a[PKV_VL];
#pragma GCC unroll 16
    for (uint32_t i = 0; i < PKV_VL; i++) a[i] = PKV_F32_ZERO();
    for (uint32_t d0 = 0; d0 < D; d0 += PS * PKV_VL) {
      if (prefetch) dec_prefetch_at(tl, j, T, d0 * esz);
#pragma GCC unroll 8
      for (uint32_t d = d0; d < d0 + PS * PKV_VL; d += PKV_VL) {
        if (PS > 1 && d >= D) break;
        pkv_vf qv[DEC_HG];
#pragma GCC unroll 8
        for (uint32_t g = 0; g < HG; g++) qv[g] = PKV_F32_LOAD(q + (size_t)g * D + d);
#pragma GCC unroll 16
        for (uint32_t t = 0; t < T; t++) {
          pkv_vf kv = kv_load(tl->kb + tl->off[j + t], d, dt);
#pragma GCC unroll 8
          for (uint32_t g = 0; g < HG; g++) a[g * T + t] = PKV_F32_FMA(kv, qv[g], a[g * T + t]);
        }
      }
    }
    if (prefetch && esz == 1) dec_prefetch_at(tl, j, T, row_bytes - 1);
    dec_put_scores(a, sc, j, HG);
  }
#endif
  for (; j < n; j++) {
    const void *row = tl->kb + tl->off[j];
    if (prefetch) dec_prefetch(tl, j, 1, row_bytes);
    pkv_vf a[DEC_HG];
#pragma GCC unroll 8
    for (uint32_t g = 0; g < HG; g++) a[g] = PKV_F32_ZERO();
    for (uint32_t d = 0; d < D; d += PKV_VL) {
      pkv_vf kv = kv_load(row, d, dt);
#pragma GCC unroll 8
      for (uint32_t g = 0; g < HG; g++)
        a[g] = PKV_F32_FMA(kv, PKV_F32_LOAD(q + (size_t)g * D + d), a[g]);
    }
#pragma GCC unroll 8
    for (uint32_t g = 0; g < HG; g++) sc[(size_t)g * DEC_LD + j] = PKV_F32_REDUCE(a[g]);
  }
}

#if defined(PKV_HAS_BF16_DOT)
/* The bf16 fast path (selected by the engine's bf16_dot option): the same
 * scores as dec_qk for bf16 K, but with q rounded to bf16 (nearest even,
 * once per tile) and bf16 dot products (PKV_BH_DOT), which multiply lane
 * pairs exactly and accumulate them in f32 — on AVX-512 16 instructions per
 * token for 4 heads x 128 dims instead of 32 FMAs, and no widening of K.
 * Not exact against f32 q: see docs/ENGINE.md, "bf16 dot products". */
#define BF_DMAX 576 /* the engine's largest head_dim */
#define BH_VL (2 * PKV_VL)

/* qb[g][0 .. Dp) = bf16(q[g][0 .. D)), zero padded to Dp = D rounded up to
 * BH_VL (D is a multiple of PKV_VL). */
AI void bf_pack_q(const float *q, uint32_t D, uint32_t HG, uint16_t *qb) {
  const uint32_t Dp = (D + BH_VL - 1) / BH_VL * BH_VL;
  for (uint32_t g = 0; g < HG; g++)
    for (uint32_t d = 0; d < D; d += BH_VL)
      PKV_BH_PACK(qb + (size_t)g * Dp + d, q + (size_t)g * D + d, d + BH_VL <= D ? 2 : 1);
}

AI void dec_qk_bf16dot(const dec_tile *tl, const float *q, float *sc, const int prefetch,
                       const uint32_t HG) {
  const uint32_t D = tl->D, n = tl->n;
  const size_t row_bytes = (size_t)D * 2;
  const uint32_t Dp = (D + BH_VL - 1) / BH_VL * BH_VL, T = PKV_VL / HG; /* HG <= PKV_VL */
  uint16_t qb[DEC_HG * BF_DMAX] __attribute__((aligned(64)));
  PKV_ENGINE_ASSERT(D <= BF_DMAX);
  bf_pack_q(q, D, HG, qb);
  uint32_t j = 0;
  for (; j + T <= n; j += T) {
    if (prefetch) dec_prefetch(tl, j, T, row_bytes);
    pkv_vf a[PKV_VL];
#pragma GCC unroll 16
    for (uint32_t i = 0; i < PKV_VL; i++) a[i] = PKV_F32_ZERO();
    for (uint32_t d = 0; d < Dp; d += BH_VL) {
      pkv_vbh qv[DEC_HG];
#pragma GCC unroll 8
      for (uint32_t g = 0; g < HG; g++) qv[g] = PKV_BH_LOAD(qb + (size_t)g * Dp + d);
#pragma GCC unroll 16
      for (uint32_t t = 0; t < T; t++) {
        pkv_vbh kv = PKV_BH_ROW((const uint16_t *)(tl->kb + tl->off[j + t]), d, D);
#pragma GCC unroll 8
        for (uint32_t g = 0; g < HG; g++) a[g * T + t] = PKV_BH_DOT(a[g * T + t], kv, qv[g]);
      }
    }
    dec_put_scores(a, sc, j, HG);
  }
  for (; j < n; j++) {
    if (prefetch) dec_prefetch(tl, j, 1, row_bytes);
    pkv_vf a[DEC_HG];
#pragma GCC unroll 8
    for (uint32_t g = 0; g < HG; g++) a[g] = PKV_F32_ZERO();
    for (uint32_t d = 0; d < Dp; d += BH_VL) {
      pkv_vbh kv = PKV_BH_ROW((const uint16_t *)(tl->kb + tl->off[j]), d, D);
#pragma GCC unroll 8
      for (uint32_t g = 0; g < HG; g++)
        a[g] = PKV_BH_DOT(a[g], kv, PKV_BH_LOAD(qb + (size_t)g * Dp + d));
    }
#pragma GCC unroll 8
    for (uint32_t g = 0; g < HG; g++) sc[(size_t)g * DEC_LD + j] = PKV_F32_REDUCE(a[g]);
  }
}
#define DEC_QK_BF16DOT(tl, q, sc, pf, HG) dec_qk_bf16dot((tl), (q), (sc), (pf), (HG))
#else
#define DEC_QK_BF16DOT(tl, q, sc, pf, HG) ((void)0)
#endif

/* GROUP(HG) over the G heads in groups of DEC_HG, the rest as one group of
 * its own size (g: the group's first head; HG a constant in each call, so
 * the register blocks unroll): each K/V vector loaded feeds HG heads. */
#if DEC_HG >= 8
#define DEC_GROUP_WIDE(n, GROUP)                                              \
  case 5: GROUP(5); break;                                                    \
  case 6: GROUP(6); break;                                                    \
  case 7: GROUP(7); break;                                                    \
  case 8: GROUP(8); break;
#else
#define DEC_GROUP_WIDE(n, GROUP)
#endif
#define DEC_FOR_GROUPS(G, GROUP)                                              \
  do {                                                                        \
    uint32_t g = 0;                                                           \
    for (; g + DEC_HG <= (G); g += DEC_HG) GROUP(DEC_HG);                     \
    switch ((G) - g) {                                                        \
    case 1: GROUP(1); break;                                                  \
    case 2: GROUP(2); break;                                                  \
    case 3: GROUP(3); break;                                                  \
    case 4: GROUP(4); break;                                                  \
    DEC_GROUP_WIDE((G) - g, GROUP)                                            \
    default: break;                                                           \
    }                                                                         \
  } while (0)

/* Scores of all G heads (q[G][D]), K read once per DEC_HG heads,
 * prefetching in the first group only. */
AI void dec_qk_heads(const dec_tile *tl, const float *q, float *sc, uint32_t G, const int dt,
                     const int bfdot) {
  const size_t D = tl->D;
#define DEC_QK_GROUP(HG)                                                      \
  do {                                                                        \
    if (bfdot) DEC_QK_BF16DOT(tl, q + g * D, sc + g * DEC_LD, g == 0, (HG));  \
    else dec_qk(tl, q + g * D, sc + g * DEC_LD, g == 0, (HG), dt);            \
  } while (0)
  DEC_FOR_GROUPS(G, DEC_QK_GROUP);
#undef DEC_QK_GROUP
}

/* acc[g][d0 .. d0+NV*VL) = alpha[g]*acc + sum_j p[g][j] * v_j, HG heads;
 * prefetches the target's V rows [0, n_pre). */
AI void dec_pv(const dec_tile *tl, uint32_t d0, const float *p, const float *alpha, float *acc,
               uint32_t n_pre, const uint32_t HG, const uint32_t NV, const int dt) {
  const uint32_t Dv = tl->Dv;
  pkv_vf o[DEC_HG][DEC_NV]; /* HG x NV <= DEC_PV_ACC used */
#pragma GCC unroll 8
  for (uint32_t g = 0; g < HG; g++) {
    pkv_vf al = PKV_F32_BROADCAST(alpha[g]);
#pragma GCC unroll 8
    for (uint32_t v = 0; v < NV; v++)
      o[g][v] = PKV_F32_MUL(al, PKV_F32_LOAD(acc + (size_t)g * Dv + d0 + v * PKV_VL));
  }
  const size_t row_bytes = pkv__row_bytes(Dv, dt);
  const size_t esz = dt == PKV_DTYPE_F32 ? 4 : dt <= PKV_DTYPE_BF16 ? 2 : 1;
  const size_t pa = d0 * esz, pb = (d0 + NV * PKV_VL) * esz; /* this pass's bytes of a row */
  for (uint32_t j = 0; j < tl->n; j++) {
    const void *row = tl->vb + tl->off[j];
    if (j < n_pre) {
#pragma GCC unroll 8
      for (size_t b = pa; b < pb; b += 64) PKV_PREFETCH(tl->pvb + tl->pre[j] + b);
      if (esz == 1 && pb + sizeof(float) >= row_bytes) PKV_PREFETCH(tl->pvb + tl->pre[j] + row_bytes - 1);
    }
    pkv_vf vv[DEC_NV];
#pragma GCC unroll 8
    for (uint32_t v = 0; v < NV; v++) vv[v] = kv_load(row, d0 + v * PKV_VL, dt);
#pragma GCC unroll 8
    for (uint32_t g = 0; g < HG; g++) {
      pkv_vf pg = PKV_F32_BROADCAST(p[(size_t)g * DEC_LD + j]);
#pragma GCC unroll 8
      for (uint32_t v = 0; v < NV; v++) o[g][v] = PKV_F32_FMA(pg, vv[v], o[g][v]);
    }
  }
#pragma GCC unroll 8
  for (uint32_t g = 0; g < HG; g++)
#pragma GCC unroll 8
    for (uint32_t v = 0; v < NV; v++)
      PKV_F32_STORE(acc + (size_t)g * Dv + d0 + v * PKV_VL, o[g][v]);
}

/* P.V of all G heads (p[G][DEC_LD], acc[G][Dv]): V read once per DEC_HG
 * heads and DEC_NV vectors of the row; the first pass prefetches. */
AI void dec_pv_heads(const dec_tile *tl, const float *p, const float *alpha, float *acc,
                     uint32_t G, uint32_t n_pre, const int dt) {
  const uint32_t Dv = tl->Dv;
#define DEC_PV_GROUP(HG)                                                      \
  do {                                                                        \
    uint32_t d0 = 0;                                                          \
    for (; d0 + DEC_PV_NV(HG) * PKV_VL <= Dv; d0 += DEC_PV_NV(HG) * PKV_VL)     \
      dec_pv(tl, d0, p + g * DEC_LD, alpha + g, acc + (size_t)g * Dv, n_pre, (HG), DEC_PV_NV(HG), dt); \
    for (; d0 < Dv; d0 += PKV_VL)                                             \
      dec_pv(tl, d0, p + g * DEC_LD, alpha + g, acc + (size_t)g * Dv, n_pre, (HG), 1, dt); \
    n_pre = 0;                                                                \
  } while (0)
  DEC_FOR_GROUPS(G, DEC_PV_GROUP);
#undef DEC_PV_GROUP
}

/* Online-softmax update of G heads over the tile's n scores (sc[G][DEC_LD],
 * replaced by the weights): M, S per head, alpha[g] the rescale factor of
 * the head's old S and O (weights as in the essay). */
AI void dec_softmax(float *sc, uint32_t n, uint32_t G, const float *qc, float *M, float *S,
                    float *alpha) {
  for (uint32_t g = 0; g < G; g++) {
    float *s = sc + g * DEC_LD;
    const float c = qc[g];
    pkv_vf vmx = PKV_F32_BROADCAST(-INFINITY);
    uint32_t j = 0;
    for (; j + PKV_VL <= n; j += PKV_VL) vmx = PKV_F32_MAX(vmx, PKV_F32_LOAD(s + j));
    float mx = PKV_F32_REDUCE_MAX(vmx);
    for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    float m_new = M[g] > mx ? M[g] : mx;
    const float mu = PKV_SCALAR_MAX(m_new, -FLT_MAX);
    alpha[g] = pkv__exp2_clamped((M[g] - mu) * c);
    pkv_vf vm = PKV_F32_BROADCAST(mu), vc = PKV_F32_BROADCAST(c),
           voff = PKV_F32_BROADCAST(-PKV__W_OFF), vsum = PKV_F32_ZERO();
    for (j = 0; j + PKV_VL <= n; j += PKV_VL) {
      pkv_vf e = PKV_F32_EXP2(PKV_F32_FMA(PKV_F32_SUB(PKV_F32_LOAD(s + j), vm), vc, voff));
      PKV_F32_STORE(s + j, e);
      vsum = PKV_F32_ADD(vsum, e);
    }
    float sum = PKV_F32_REDUCE(vsum);
    for (; j < n; j++) {
      s[j] = pkv__exp2_clamped((s[j] - mu) * c - PKV__W_OFF);
      sum += s[j];
    }
    S[g] = S[g] * alpha[g] + sum;
    M[g] = m_new;
  }
}

AI void decode_body(const pkv__decode_args *x, const int dt, const int bfdot) {
  const pkv__kv_view *kv = x->kv;
  const uint32_t D = kv->head_dim, Dv = PKV__VDIM(kv), G = x->G, t1 = x->t1;
  PKV_ENGINE_ASSERT(D % PKV_VL == 0 && Dv % PKV_VL == 0); /* whole vectors per row */
  PKV_ENGINE_ASSERT(x->t0 <= t1);
  float *sc = x->scratch;                       /* [G][DEC_LD] scores, then p */
  float *alpha = sc + ((size_t)G * DEC_LD + 15u) / 16u * 16u; /* [G] */
  size_t *off = (size_t *)(alpha + (G + 15u) / 16u * 16u); /* [2][CH] */
  size_t *cur = off, *nxt = off + PKV__DECODE_CH;
  uint32_t n = MIN_U32(t1 - x->t0, PKV__DECODE_CH);
  if (x->t0 < t1) dec_offsets(kv, x->h0, x->t0, n, cur, dt);
  for (uint32_t t = x->t0; t < t1; t += n) {
    n = MIN_U32(t1 - t, PKV__DECODE_CH);
    uint32_t tn = t + n, nn = tn < t1 ? MIN_U32(t1 - tn, PKV__DECODE_CH) : 0;
    if (nn) dec_offsets(kv, x->h0, tn, nn, nxt, dt);
    /* Head by head over the same tile: in a block the heads' tiles are
     * adjacent, so the tile's K/V is read as few long runs rather than one
     * short run per head and block. */
    for (uint32_t hh = 0; hh < x->nh; hh++) {
      const size_t hs = (size_t)hh * kv->head_stride, r0 = (size_t)hh * G;
      /* what to prefetch while this head is processed (see HEAD_AHEAD) */
      const int ahead = HEAD_AHEAD(dt);
      dec_tile tl = {.kb = kv->k + hs, .vb = kv->v + hs, .off = cur, .n = n,
                     .pkb = kv->k + hs, .pvb = kv->v + hs, .pre = nxt, .npre = nn,
                     .D = D, .Dv = Dv, .vcur = !ahead && !bfdot};
      if (ahead && hh + 1 < x->nh) {
        tl.pkb += kv->head_stride;
        tl.pvb += kv->head_stride;
        tl.pre = cur;
        tl.npre = n;
      } else if (ahead) {
        tl.pkb = kv->k;
        tl.pvb = kv->v;
      }
      dec_qk_heads(&tl, x->q + r0 * D, sc, G, dt, bfdot);
      if (pkv__dtype_is_quant(dt)) q_scale_rows(tl.kb, cur, n, D, sc, DEC_LD, G, dt); /* K scales */
      dec_softmax(sc, n, G, x->qc + r0, x->M + r0, x->S + r0, alpha);
      if (pkv__dtype_is_quant(dt)) q_scale_rows(tl.vb, cur, n, D, sc, DEC_LD, G, dt); /* V scales */
      dec_pv_heads(&tl, sc, alpha, x->acc + r0 * Dv, G, ahead || bfdot ? tl.npre : 0, dt);
    }
    size_t *sw = cur;
    cur = nxt;
    nxt = sw;
  }
}

/* The body's switch over the storage types: BODY(dt) for dt. */
#define KERN_BY_DTYPE(dt, BODY)                                               \
  switch (dt) {                                                               \
  case PKV_DTYPE_F32: BODY(PKV_DTYPE_F32); break;                             \
  case PKV_DTYPE_F16: BODY(PKV_DTYPE_F16); break;                             \
  case PKV_DTYPE_BF16: BODY(PKV_DTYPE_BF16); break;                           \
  case PKV_DTYPE_I8: BODY(PKV_DTYPE_I8); break;                               \
  case PKV_DTYPE_FP8_E4M3: BODY(PKV_DTYPE_FP8_E4M3); break;                   \
  case PKV_DTYPE_FP8_E5M2: BODY(PKV_DTYPE_FP8_E5M2); break;                   \
  }

static void kern_decode(const pkv__decode_args *x) {
#define DECODE_AS(dt) decode_body(x, dt, 0)
  KERN_BY_DTYPE(x->kv->dtype, DECODE_AS)
#undef DECODE_AS
}

#if defined(PKV_HAS_BF16_DOT)
/* The bf16-dot decode: bf16 K/V through dec_qk_bf16dot, other types as
 * kern_decode. */
static void kern_decode_bf16dot(const pkv__decode_args *x) {
  if (x->kv->dtype == PKV_DTYPE_BF16) decode_body(x, PKV_DTYPE_BF16, 1);
  else kern_decode(x);
}
#define KERN_DECODE_BF16DOT kern_decode_bf16dot
#else
#define KERN_DECODE_BF16DOT NULL
#endif

/* =============================================================== prefill */

/* The prefill microkernel, a register block of NI rows x NV vectors:
 *   C_i[v*VL ..] = (load ? cl_i * C_i : 0) + sum_{k < nk} ap[i][k * as] * B_k[v*VL ..]
 * with B_k = bt[k] + boff when bt, else bb + k * bs, C_i = c + i * cs and
 * cl_i = cscale[i] when cscale (the online softmax's rescale of O, folded
 * into the load), else 1:
 * per k, NV vectors of B_k are loaded and each row's scalar broadcast
 * into them. */
#define PF_NI 8 /* room for any register block (and tail block) up to 8 x 8: */
#define PF_NV 8 /* the unrolled loops touch only NI x NV of them */
AI void pf_mk(const float *const *ap, size_t as, const float *const *bt, size_t boff,
              const float *bb, size_t bs, uint32_t nk, float *c, size_t cs, const int load,
              const float *cscale, const uint32_t NI, const uint32_t NV) {
  pkv_vf o[PF_NI][PF_NV];
#pragma GCC unroll 8
  for (uint32_t i = 0; i < NI; i++) {
    const pkv_vf cl = PKV_F32_BROADCAST(cscale ? cscale[i] : 1.0f);
#pragma GCC unroll 8
    for (uint32_t v = 0; v < NV; v++) {
      o[i][v] = load ? PKV_F32_LOAD(c + i * cs + v * PKV_VL) : PKV_F32_ZERO();
      if (load && cscale) o[i][v] = PKV_F32_MUL(cl, o[i][v]);
    }
  }
  for (uint32_t k = 0; k < nk; k++) {
    const float *bk = bt ? bt[k] + boff : bb + k * bs;
    pkv_vf bv[PF_NV];
#pragma GCC unroll 8
    for (uint32_t v = 0; v < NV; v++) bv[v] = PKV_F32_LOAD(bk + v * PKV_VL);
#pragma GCC unroll 8
    for (uint32_t i = 0; i < NI; i++) {
      pkv_vf ab = PKV_F32_BROADCAST(ap[i][k * as]);
#pragma GCC unroll 8
      for (uint32_t v = 0; v < NV; v++) o[i][v] = PKV_F32_FMA(ab, bv[v], o[i][v]);
    }
  }
#pragma GCC unroll 8
  for (uint32_t i = 0; i < NI; i++)
#pragma GCC unroll 8
    for (uint32_t v = 0; v < NV; v++) PKV_F32_STORE(c + i * cs + v * PKV_VL, o[i][v]);
}

/* CALL(m) for the tail m = n (1 .. 7) of a loop stepping by a register
 * block: the tail runs as one narrower block (m a constant in each case, so
 * it unrolls), not as m blocks of one, which would leave the FMA pipes
 * waiting on a handful of dependent accumulators. */
#define PF_TAIL(n, CALL)                                                      \
  switch (n) {                                                                \
  case 1: CALL(1); break;                                                     \
  case 2: CALL(2); break;                                                     \
  case 3: CALL(3); break;                                                     \
  case 4: CALL(4); break;                                                     \
  case 5: CALL(5); break;                                                     \
  case 6: CALL(6); break;                                                     \
  case 7: CALL(7); break;                                                     \
  default: break;                                                             \
  }

/* St[j][r0 .. r0+NV*VL) = sum_d K[j][d] * Qt[d][r], for NJ keys from j0.
 * K rows: kr[j] (f32, head_dim). */
AI void pf_qk(const float *const *kr, uint32_t j0, const float *Qt, size_t ldq,
              uint32_t D, uint32_t r0, float *St, size_t lds, const uint32_t NJ,
              const uint32_t NV) {
  pf_mk(kr + j0, 1, NULL, 0, Qt + r0, ldq, D, St + (size_t)j0 * lds + r0, lds, 0, NULL, NJ, NV);
}

AI void pf_qk_rows(const float *const *kr, uint32_t j0, const float *Qt,
                   size_t ldq, uint32_t D, uint32_t rv, float *St, size_t lds,
                   const uint32_t NJ) {
  /* rv = row vectors (rows / VL, rounded up) */
  uint32_t r = 0;
  for (; r + QK_NV <= rv; r += QK_NV)
    pf_qk(kr, j0, Qt, ldq, D, r * PKV_VL, St, lds, NJ, QK_NV);
#define PF_QK_TAIL(m) pf_qk(kr, j0, Qt, ldq, D, r * PKV_VL, St, lds, NJ, (m))
  PF_TAIL(rv - r, PF_QK_TAIL);
#undef PF_QK_TAIL
}

/* O[r0+i][d0 .. d0+NV*VL) = al[r0+i] * O[r0+i][..] (al NULL: 1)
 *                           + sum_j P^T[j][r0+i] * V[j][d0 ..], NR rows. */
AI void pf_pv(const float *const *vr, uint32_t nk, const float *Pt, size_t ldp,
              uint32_t r0, uint32_t d0, float *O, uint32_t D, const float *al,
              const uint32_t NR, const uint32_t NV) {
  const float *pc[PF_NI]; /* row i's weights: column r0 + i of P^T */
#pragma GCC unroll 8
  for (uint32_t i = 0; i < NR; i++) pc[i] = Pt + r0 + i;
  pf_mk(pc, ldp, vr, d0, NULL, 0, nk, O + (size_t)r0 * D + d0, D, 1, al ? al + r0 : NULL, NR, NV);
}

AI void pf_pv_rows(const float *const *vr, uint32_t nk, const float *Pt,
                   size_t ldp, uint32_t r0, float *O, uint32_t D, const float *al,
                   const uint32_t NR) {
  uint32_t d0 = 0;
  for (; d0 + PV_NV * PKV_VL <= D; d0 += PV_NV * PKV_VL)
    pf_pv(vr, nk, Pt, ldp, r0, d0, O, D, al, NR, PV_NV);
  for (; d0 < D; d0 += PKV_VL) pf_pv(vr, nk, Pt, ldp, r0, d0, O, D, al, NR, 1);
}

/* The stored rows of tokens [c0, c0+nk) of head h (the block walked, not
 * divided per row). */
AI void pf_srcs(const pkv__kv_view *kv, const uint8_t *base, uint32_t h, uint32_t c0,
                uint32_t nk, const uint8_t **src, const int dt) {
  const uint32_t bs = kv->block_size;
  const size_t row_bytes = pkv__row_bytes(kv->head_dim, dt);
  uint32_t b = c0 / bs, s = c0 % bs;
  for (uint32_t j = 0; j < nk; j++) {
    src[j] = base + (size_t)kv->blocks[b] * kv->block_stride + (size_t)h * kv->head_stride +
             (size_t)s * row_bytes;
    if (++s == bs) s = 0, b++;
  }
}

/* Pointers to nk f32 rows of K (or V) for tokens [c0, c0+nk) of head h:
 * straight into the cache when f32, else converted into pack. */
AI void pf_rows(const pkv__kv_view *kv, const uint8_t *base, uint32_t h,
                uint32_t c0, uint32_t nk, uint32_t W, float *pack, const float **rows,
                const int dt) {
  /* W elements used of each row (head_dim for K, the V head dim for V) */
  const uint32_t D = kv->head_dim;
  const uint8_t *srcs[PKV__PREFILL_BC];
  pf_srcs(kv, base, h, c0, nk, srcs, dt);
  for (uint32_t j = 0; j < nk; j++) {
    const uint8_t *src = srcs[j];
    if (dt == PKV_DTYPE_F32) {
      rows[j] = (const float *)src;
    } else {
      float *dst = pack + (size_t)j * W;
      float qs = 1.0f; /* quantized: the row's scale, after head_dim codes (kern_quant.h) */
      if (pkv__dtype_is_quant(dt)) memcpy(&qs, src + D, sizeof qs), qs *= pkv__quant_unit(dt);
      for (uint32_t d = 0; d < W; d += PKV_VL)
        PKV_F32_STORE(dst + d, PKV_F32_MUL(PKV_F32_BROADCAST(qs), kv_load(src, d, dt)));
      rows[j] = dst;
    }
  }
}

/* pkv__q_prescale of one query row (D elements), vectorised, the same bits:
 * q * f is exact in double, so when f is a float one f32 multiply rounds it
 * as the double path does.  A row with a non-finite element (found by
 * sum(q * 0) != 0), or whose f is not a float, takes pkv__q_prescale. */
AI float pf_prescale(const float *q, uint32_t D, float qscale, float *out) {
  const pkv_vf zero = PKV_F32_ZERO();
  pkv_vf mx = zero, nf = zero;
  for (uint32_t d = 0; d < D; d += PKV_VL) {
    pkv_vf x = PKV_F32_LOAD(q + d);
    mx = PKV_F32_MAX(mx, PKV_F32_MAX(x, PKV_F32_SUB(zero, x)));
    nf = PKV_F32_ADD(nf, PKV_F32_MUL(x, zero));
  }
  double f;
  if (PKV_F32_REDUCE(nf) != 0.0f) return pkv__q_prescale(q, D, qscale, out);
  const int e = pkv__q_prescale_exp(PKV_F32_REDUCE_MAX(mx), D, qscale, &f);
  const float ff = (float)f;
  if ((double)ff != f) return pkv__q_prescale(q, D, qscale, out);
  const pkv_vf vf = PKV_F32_BROADCAST(ff);
  for (uint32_t d = 0; d < D; d += PKV_VL) PKV_F32_STORE(out + d, PKV_F32_MUL(PKV_F32_LOAD(q + d), vf));
  return ldexpf(1.0f, e);
}

/* Scratch of the prefill kernel (floats), each piece a multiple of 16. */
#define PF_RV(rows_max) (((rows_max) + 15u) / 16u * 16u)

AI void prefill_body(const pkv__kv_view *kv, const pkv__prefill_tile *tl,
                     uint32_t rows_max, float *scratch, const int dt) {
  const uint32_t D = kv->head_dim, Dv = PKV__VDIM(kv), G = tl->G;
  const size_t ostride = tl->out_stride ? tl->out_stride : tl->row_stride;
  const uint32_t R = tl->n_tok * G;           /* query rows, token-major */
  PKV_ENGINE_ASSERT(D % PKV_VL == 0);
  PKV_ENGINE_ASSERT(R >= 1 && R <= rows_max); /* fits the scratch */
  const size_t ldq = PF_RV(rows_max);         /* row-vector stride */
  const uint32_t rv = (R + PKV_VL - 1) / PKV_VL;
  const uint32_t Rp = rv * PKV_VL;            /* rows padded to lanes */
  float *Qt = scratch;                                  /* [D][ldq] */
  float *St = Qt + (size_t)D * ldq;                     /* [BC][ldq] */
  float *O = St + (size_t)PKV__PREFILL_BC * ldq;        /* [ldq][Dv] (D reserved) */
  float *Mv = O + ldq * D;                              /* [ldq] */
  float *Sv = Mv + ldq;                                 /* [ldq] */
  float *Al = Sv + ldq;                                 /* [ldq] */
  float *Cv = Al + ldq;                                 /* [ldq] */
  float *kpack = Cv + ldq;                              /* [BC][D] */
  float *vpack = kpack + (size_t)PKV__PREFILL_BC * D;   /* [BC][D] */
  const float *krow[PKV__PREFILL_BC], *vrow[PKV__PREFILL_BC];
  const float qs = tl->scale * PKV__LOG2E;

  for (uint32_t d = 0; d < D; d++)
    for (uint32_t r = R; r < Rp; r++) Qt[(size_t)d * ldq + r] = 0.0f;
  for (uint32_t r = 0; r < R; r++) {
    const float *qr = tl->q + (size_t)(r / G) * tl->row_stride + (size_t)(r % G) * D;
    float *qp = kpack; /* free until the first key tile */
    Cv[r] = pf_prescale(qr, D, qs, qp);
    for (uint32_t d = 0; d < D; d++) Qt[(size_t)d * ldq + r] = qp[d];
  }
  for (uint32_t r = 0; r < Rp; r++) {
    Mv[r] = -INFINITY;
    Sv[r] = 0.0f;
    if (r >= R) Cv[r] = 1.0f;
  }
  for (size_t i = 0; i < (size_t)Rp * Dv; i++) O[i] = 0.0f;

  const int causal = tl->n_keys == 0;
  const uint32_t last = causal ? tl->pos + tl->n_tok : tl->n_keys; /* keys [0, last) */
  for (uint32_t c0 = 0; c0 < last; c0 += PKV__PREFILL_BC) {
    const uint32_t nk = MIN_U32(PKV__PREFILL_BC, last - c0);
    pf_rows(kv, kv->k, tl->kv_head, c0, nk, D, kpack, krow, dt);
    pf_rows(kv, kv->v, tl->kv_head, c0, nk, Dv, vpack, vrow, dt);

    /* Non-causal tiles (the cascade's shared part) stream K/V that no
     * other item has brought into cache lately: the next key tile's rows are
     * requested, a block of keys at a time, while this one's scores are
     * computed. */
    const uint32_t nn = !causal && c0 + nk < last ? MIN_U32(PKV__PREFILL_BC, last - c0 - nk) : 0;
    const uint8_t *pk[PKV__PREFILL_BC], *pv[PKV__PREFILL_BC];
    const size_t krb = pkv__row_bytes(D, dt), vrb = pkv__row_bytes(Dv, dt);
    if (nn) {
      pf_srcs(kv, kv->k, tl->kv_head, c0 + nk, nn, pk, dt);
      pf_srcs(kv, kv->v, tl->kv_head, c0 + nk, nn, pv, dt);
    }
#define PF_AHEAD(j0, m)                                                       \
    for (uint32_t jp = (j0); jp < (j0) + (m) && jp < nn; jp++) {              \
      for (size_t o = 0; o < krb; o += 64) PKV_PREFETCH(pk[jp] + o);          \
      for (size_t o = 0; o < vrb; o += 64) PKV_PREFETCH(pv[jp] + o);          \
    }

    /* S^T = K Qt */
    uint32_t j = 0;
    for (; j + QK_NJ <= nk; j += QK_NJ) {
      PF_AHEAD(j, QK_NJ);
      pf_qk_rows(krow, j, Qt, ldq, D, rv, St, ldq, QK_NJ);
    }
    PF_AHEAD(j, PKV__PREFILL_BC);
#undef PF_AHEAD
#define PF_QK_KEYS(m) pf_qk_rows(krow, j, Qt, ldq, D, rv, St, ldq, (m))
    PF_TAIL(nk - j, PF_QK_KEYS);
#undef PF_QK_KEYS

    /* causal mask, only where the tile crosses the diagonal: row r (token
     * position pos + r/G) sees keys <= its position.  Masked scores are
     * set to -inf (out of the maximum) and, after the exponential, their
     * weights to 0: a masked key never adds to S or O. */
    const int diag = causal && c0 + nk - 1 > tl->pos;
#define PF_MASK(value)                                                        \
  for (uint32_t r = 0; r < Rp; r++) {                                        \
    uint32_t p = tl->pos + (r < R ? r : R - 1) / G;                           \
    for (uint32_t jj = (p + 1 > c0 ? p + 1 - c0 : 0); jj < nk; jj++)          \
      St[(size_t)jj * ldq + r] = (value);                                     \
  }
    if (diag) PF_MASK(-INFINITY);

    /* online softmax, vectorised over rows (weights as in the essay;
     * masked keys are -inf, so weight 0) */
    const pkv_vf vfloor = PKV_F32_BROADCAST(-FLT_MAX), voff = PKV_F32_BROADCAST(-PKV__W_OFF);
    for (uint32_t r = 0; r < Rp; r += PKV_VL) {
      pkv_vf mx = PKV_F32_LOAD(St + r);
      for (uint32_t jj = 1; jj < nk; jj++) mx = PKV_F32_MAX(mx, PKV_F32_LOAD(St + (size_t)jj * ldq + r));
      pkv_vf m_old = PKV_F32_LOAD(Mv + r);
      pkv_vf m_new = PKV_F32_MAX(m_old, mx);
      pkv_vf mu = PKV_F32_MAX(m_new, vfloor), vc = PKV_F32_LOAD(Cv + r);
      pkv_vf sum = PKV_F32_ZERO();
      for (uint32_t jj = 0; jj < nk; jj++) {
        float *sp = St + (size_t)jj * ldq + r;
        pkv_vf e = PKV_F32_EXP2(PKV_F32_FMA(PKV_F32_SUB(PKV_F32_LOAD(sp), mu), vc, voff));
        PKV_F32_STORE(sp, e);
        sum = PKV_F32_ADD(sum, e);
      }
      pkv_vf al = PKV_F32_EXP2(PKV_F32_MUL(PKV_F32_SUB(m_old, mu), vc));
      PKV_F32_STORE(Mv + r, m_new);
      PKV_F32_STORE(Al + r, al);
      if (!diag) PKV_F32_STORE(Sv + r, PKV_F32_FMA(PKV_F32_LOAD(Sv + r), al, sum));
    }
    if (diag) { /* zero the masked weights, then add the rows' sums */
      PF_MASK(0.0f);
      for (uint32_t r = 0; r < Rp; r += PKV_VL) {
        pkv_vf sum = PKV_F32_ZERO();
        for (uint32_t jj = 0; jj < nk; jj++) sum = PKV_F32_ADD(sum, PKV_F32_LOAD(St + (size_t)jj * ldq + r));
        PKV_F32_STORE(Sv + r, PKV_F32_FMA(PKV_F32_LOAD(Sv + r), PKV_F32_LOAD(Al + r), sum));
      }
    }
#undef PF_MASK
    /* O = alpha O + P V, the rescale by alpha done as the microkernel loads
     * O (not on the first tile, where O is 0).  On a tile that crosses the
     * diagonal, row r sees only keys [0, vis(r)): a block of rows takes the
     * keys all of them see together (and rescales), then each row its own
     * remaining keys, so a masked key's V is never read (a 0 weight times
     * an infinite V would be NaN). */
    const float *al = c0 > 0 ? Al : NULL;
    uint32_t r = 0;
    if (diag) {
#define PF_VIS(row) (tl->pos + (row) / G + 1 > c0 ? MIN_U32(tl->pos + (row) / G + 1 - c0, nk) : 0u)
      for (; r < R; r += PV_NR) {
        const uint32_t nr = MIN_U32(PV_NR, R - r), v0 = PF_VIS(r);
        if (nr == PV_NR) pf_pv_rows(vrow, v0, St, ldq, r, O, Dv, al, PV_NR);
        else for (uint32_t i = 0; i < nr; i++) pf_pv_rows(vrow, v0, St, ldq, r + i, O, Dv, al, 1);
        for (uint32_t i = 0; i < nr; i++) {
          const uint32_t vi = PF_VIS(r + i);
          if (vi > v0)
            pf_pv_rows(vrow + v0, vi - v0, St + (size_t)v0 * ldq, ldq, r + i, O, Dv, NULL, 1);
        }
      }
#undef PF_VIS
    }
    for (; r + PV_NR <= R; r += PV_NR) pf_pv_rows(vrow, nk, St, ldq, r, O, Dv, al, PV_NR);
#define PF_PV_ROWS(m) pf_pv_rows(vrow, nk, St, ldq, r, O, Dv, al, (m))
    PF_TAIL(R - r, PF_PV_ROWS);
#undef PF_PV_ROWS
  }

  if (!causal && tl->M) { /* the state, for the caller to continue */
    memcpy(tl->M, Mv, R * sizeof *Mv);
    memcpy(tl->S, Sv, R * sizeof *Sv);
  }
  for (uint32_t r = 0; r < R; r++) {
    float *dst = tl->out + (size_t)(r / G) * ostride + (size_t)(r % G) * Dv;
    pkv_vf inv = PKV_F32_BROADCAST(!causal && tl->M ? 1.0f : 1.0f / Sv[r]);
    for (uint32_t d = 0; d < Dv; d += PKV_VL)
      PKV_F32_STORE(dst + d, PKV_F32_MUL(inv, PKV_F32_LOAD(O + (size_t)r * Dv + d)));
  }
}

/* ================================================================ store */

/* n floats to dtype, round to nearest even: the K/V writes of prefill and
 * decode.  Equal to pkv__store_row element for element. */
static void kern_store(void *dst, const float *src, size_t n, pkv_dtype dt) {
  if (dt == PKV_DTYPE_F32) {
    memcpy(dst, src, n * sizeof(float));
    return;
  }
  if (pkv__dtype_is_quant(dt)) { /* plain C, the same bits on every back end */
    pkv__quant_store_row(dst, src, (uint32_t)n, dt);
    return;
  }
  uint16_t *d = dst;
  size_t i = 0;
  if (dt == PKV_DTYPE_F16) {
    for (; i + PKV_VL <= n; i += PKV_VL) PKV_F16_STORE(d + i, PKV_F32_LOAD(src + i));
    for (; i < n; i++) d[i] = pkv__f32_to_f16(src[i]);
  } else {
    for (; i + PKV_VL <= n; i += PKV_VL) PKV_BF16_STORE(d + i, PKV_F32_LOAD(src + i));
    for (; i < n; i++) d[i] = pkv__f32_to_bf16(src[i]);
  }
}

static void kern_prefill(const pkv__kv_view *kv, const pkv__prefill_tile *tl,
                         uint32_t rows_max, float *scratch) {
#define PREFILL_AS(dt) prefill_body(kv, tl, rows_max, scratch, dt)
  KERN_BY_DTYPE(kv->dtype, PREFILL_AS)
#undef PREFILL_AS
}

const pkv__kernels KERN_TABLE_NAME = {
    .name = PKV_BACKEND_NAME,
    .decode = kern_decode,
    .decode_bf16dot = KERN_DECODE_BF16DOT,
    .prefill = kern_prefill,
    .store = kern_store,
};
