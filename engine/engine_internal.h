/*
 * engine/engine_internal.h — engine-internal interface (prefix pkv__).
 *
 * The kernels see a sequence only as a pkv__kv_view: the base of one layer's
 * K and V regions, the strides of pkv_kv_layout, and the sequence's block
 * list.  They never call the manager; engine.c builds the views from
 * pkv__seq_view_get, and tests/benchmarks build them over their own buffers
 * (a one-block view over a contiguous buffer is the "contiguous" layout).
 */
#ifndef PKV_ENGINE_INTERNAL_H
#define PKV_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <math.h>

#include "pagedkv/pagedkv.h"

/* Graded asserts, as in the core: level 1 checks preconditions, level 2
 * also runs the work-plan validator after every plan.  Failures go through
 * the library's pkv__assert_fail (report and abort). */
#ifndef PKV_DEBUG
#define PKV_DEBUG 0
#endif
void pkv__assert_fail(const char *expr, const char *file, int line, const char *detail);
#if PKV_DEBUG >= 1
#define PKV_ENGINE_ASSERT(e) ((e) ? (void)0 : pkv__assert_fail(#e, __FILE__, __LINE__, ""))
#else
#define PKV_ENGINE_ASSERT(e) ((void)0)
#endif
#if PKV_DEBUG >= 2
#define PKV_ENGINE_ASSERT_EXPENSIVE(e) PKV_ENGINE_ASSERT(e)
#else
#define PKV_ENGINE_ASSERT_EXPENSIVE(e) ((void)0)
#endif

/* Key tile of the prefill kernel (tokens) and token tile of decode. */
#define PKV__PREFILL_BC 64
#define PKV__DECODE_CH 64
/* Query rows (token x grouped head) one prefill work item aims for. */
#define PKV__PREFILL_ROWS 64
/* log2(e): kernels work in base 2 (scores pre-multiplied by scale*log2e). */
#define PKV__LOG2E 1.4426950408889634f
/* Softmax weights are 2^((s - max) * c - PKV__W_OFF) (docs/API-engine.md,
 * "Non-finite and extreme inputs"): at most 2^-24, so sum_j w_j v_j stays
 * below FLT_MAX / 2 for any finite V over up to 2^23 keys. */
#define PKV__W_OFF 24.0f

/* Scales one query row for the kernels: out[i] = q[i] * qscale / c with c a
 * power of two >= 1 chosen so that max |out| <= 1 / (4 n) (finite
 * elements; capped at c = 2^126): every score of finite inputs is then at
 * most FLT_MAX / 4 in magnitude.  Returns c; the kernels multiply score
 * differences by it.  For ordinary inputs the scaling is exact. */
float pkv__q_prescale(const float *q, uint32_t n, float qscale, float *out);
/* The exponent e of pkv__q_prescale for a row whose largest finite |q| is
 * amax (c = 2^e), and its multiplier *f = qscale * 2^-e: out = (float)(q *
 * *f), rounded once (the product is exact in double). */
int pkv__q_prescale_exp(double amax, uint32_t n, float qscale, double *f);

/* The scalar 2^x of PKV_F32_EXP2 (every back end uses it for its scalar
 * tails, the rescale factors and the split-K merge): x clamped to [-126,
 * 127], so never 0 (-inf gives 2^-126); NaN gives NaN. */
static inline float pkv__exp2_clamped(float x) {
  if (x != x) return x;
  return exp2f(x < -126.0f ? -126.0f : x > 127.0f ? 127.0f : x);
}

typedef struct pkv__kv_view {
  const uint8_t *k, *v;  /* base of the layer's K and V regions */
  const int32_t *blocks; /* block of token t = blocks[t / block_size] */
  size_t block_stride;   /* bytes, as pkv_kv_layout */
  size_t head_stride;
  uint32_t block_size;
  uint32_t head_dim;     /* of K, and the slot width of V rows too */
  pkv_dtype dtype;
  uint32_t v_dim;        /* V elements used per slot (<= head_dim); 0 = head_dim */
} pkv__kv_view;

/* The V head dim of a view (MLA: K 576, V 512 — V slots keep K's width). */
#define PKV__VDIM(kv) ((kv)->v_dim ? (kv)->v_dim : (kv)->head_dim)

/* One query tile of prefill: n_tok query tokens at positions pos .. pos +
 * n_tok - 1, each with G query heads (the heads sharing kv_head), attending
 * causally (token at position p sees keys [0, p]).
 * Non-causal form (the cascade's shared part, cascade.c): n_keys > 0 makes
 * every row attend keys [0, n_keys) (pos unused), and with M and S set the
 * kernel leaves each row's online-softmax state instead of the output:
 * M[r], S[r] and the unnormalised O in out's rows (r = token * G + head),
 * as the decode kernel keeps them (pkv__decode_args). */
typedef struct pkv__prefill_tile {
  const float *q;      /* &q[token 0][first head][0] */
  float *out;          /* as q, rows of the V head dim */
  size_t row_stride;   /* floats between consecutive tokens of q */
  size_t out_stride;   /* ... of out (0: row_stride) */
  uint32_t pos;
  uint32_t n_tok;
  uint32_t G;
  uint32_t kv_head;
  float scale;
  uint32_t n_keys;     /* > 0: non-causal over keys [0, n_keys) */
  float *M, *S;        /* non-NULL (with n_keys): leave the state */
} pkv__prefill_tile;

/* One call of the decode kernel: online-softmax attention over tokens
 * [t0, t1) of the nh KV heads h0 .. h0+nh-1 of kv, each with its G query
 * heads.  q[nh][G][head_dim] as pkv__q_prescale made it (scale*log2e/qc),
 * qc[nh*G] its factors.  Updates, per query row r (nh*G rows): M[r] the
 * running maximum score (in q's scaled units; -INFINITY initially), S[r]
 * the running sum of the weights w = 2^((score - M[r]) * qc[r] -
 * PKV__W_OFF) (0 initially) and acc[r][:] (rows of the V head dim) the
 * running sum of w * v (0 initially).  scratch: at least
 * pkv__decode_scratch_floats(G) floats. */
typedef struct pkv__decode_args {
  const pkv__kv_view *kv;
  uint32_t h0, nh;       /* KV heads */
  uint32_t t0, t1;       /* tokens */
  uint32_t G;            /* query rows per KV head */
  const float *q, *qc;
  float *M, *S, *acc;    /* the online-softmax state, updated */
  float *scratch;
} pkv__decode_args;

typedef struct pkv__kernels {
  const char *name;
  /* Decode (see pkv__decode_args). */
  void (*decode)(const pkv__decode_args *args);
  /* decode with bf16 dot products (q rounded to bf16) for bf16 K/V, other
   * types as decode; NULL when the back end has no bf16 dot product. */
  void (*decode_bf16dot)(const pkv__decode_args *args);
  /* Causal attention of one query tile (see pkv__prefill_tile); writes the
   * normalised output.  tile->n_tok * tile->G <= rows_max; scratch: at least
   * pkv__prefill_scratch_floats(head_dim, rows_max) floats. */
  void (*prefill)(const pkv__kv_view *kv, const pkv__prefill_tile *tile,
                  uint32_t rows_max, float *scratch);
  /* n floats into dst as dtype, rounded to nearest even (the K/V writes);
   * bit-identical to pkv__store_row. */
  void (*store)(void *dst, const float *src, size_t n, pkv_dtype dtype);
} pkv__kernels;

extern const pkv__kernels pkv__kernels_avx512;
extern const pkv__kernels pkv__kernels_avx2;
extern const pkv__kernels pkv__kernels_scalar;

size_t pkv__decode_scratch_floats(uint32_t G);
size_t pkv__prefill_scratch_floats(uint32_t head_dim, uint32_t rows_max);

/* Chooses a back end: name ("avx512", "avx2", "scalar") or NULL for the
 * PKV_BACKEND environment variable, else the best the CPU supports.  NULL
 * (with pkv_last_error set) if the name is unknown or the CPU lacks it. */
const pkv__kernels *pkv__kernels_select(const char *name);
/* Whether name is one of the back ends (NULL: no). */
int pkv__backend_known(const char *name);
/* Whether this CPU can run the named back end. */
int pkv__backend_supported(const char *name);

/* ------------------------------------------------------------ conversion */

/* Quantized storage (quant.c; docs/ENGINE.md, "Quantized K/V"): a row of
 * head_dim 1-byte codes followed by its f32 scale. */
static inline int pkv__dtype_is_quant(int dt) { return dt >= PKV_DTYPE_I8; }
/* Bytes of one stored row (one slot of one head) of head_dim elements. */
static inline size_t pkv__row_bytes(uint32_t head_dim, int dt) {
  return dt == PKV_DTYPE_F32 ? (size_t)head_dim * 4
         : dt <= PKV_DTYPE_BF16 ? (size_t)head_dim * 2
                                : (size_t)head_dim + sizeof(float);
}
/* The factor the kernels multiply a row's scale by: their SIMD decoders read
 * an E4M3 code as 2^-8 times its value (docs/ENGINE.md), the others exactly. */
static inline float pkv__quant_unit(int dt) { return dt == PKV_DTYPE_FP8_E4M3 ? 256.0f : 1.0f; }
/* Quantizes n floats into the row at dst (n codes, then the f32 scale);
 * the same bits on every back end (plain C, used by all of them). */
void pkv__quant_store_row(void *dst, const float *src, uint32_t n, pkv_dtype dtype);
/* Dequantizes the row at src into n floats (code value * scale). */
void pkv__quant_load_row(float *dst, const void *src, uint32_t n, pkv_dtype dtype);
/* Value of one code (without the scale). */
float pkv__fp8_e4m3_to_f32(uint8_t code);
float pkv__fp8_e5m2_to_f32(uint8_t code);
uint8_t pkv__f32_to_fp8_e4m3(float x); /* round to nearest even, saturating at 448 */
uint8_t pkv__f32_to_fp8_e5m2(float x); /* round to nearest even, saturating at 57344 */

/* Round-to-nearest-even conversions used when K/V are written. */
uint16_t pkv__f32_to_f16(float f);
uint16_t pkv__f32_to_bf16(float f);
float pkv__f16_to_f32_scalar(uint16_t h);
float pkv__bf16_to_f32_scalar(uint16_t h);
/* Writes n floats into dst as dtype. */
void pkv__store_row(void *dst, const float *src, uint32_t n, pkv_dtype dtype);
/* Reads n values of dtype at src as floats. */
void pkv__load_row(float *dst, const void *src, uint32_t n, pkv_dtype dtype);

/* ------------------------------------------------------------ reference */

/* Plain reference, double accumulation: attention of one query q[head_dim]
 * over keys/values [0, n_keys) stored as contiguous f32 rows k[t][head_dim]
 * (row stride ld floats), softmax scale `scale`.  out[head_dim]. */
void pkv__attn_row_ref(const float *q, const float *k, const float *v,
                       size_t ld, uint32_t n_keys, uint32_t head_dim,
                       float scale, float *out);
/* The same with V rows of v_dim <= head_dim elements (at stride ld):
 * out[v_dim]. */
void pkv__attn_row_ref_dv(const float *q, const float *k, const float *v, size_t ld,
                          uint32_t n_keys, uint32_t head_dim, uint32_t v_dim, float scale,
                          float *out);
/* The same over a paged view: tokens [0, n_keys) of kv_head. */
void pkv__attn_row_paged_ref(const pkv__kv_view *kv, uint32_t kv_head,
                             const float *q, uint32_t n_keys, float scale,
                             float *out);

/* ------------------------------------------------------------ threads */

typedef struct pkv__threads pkv__threads; /* the engine's workers (threads.c) */
typedef void (*pkv__task_fn)(void *ctx, uint32_t thread);
/* n_threads >= 1; the caller's thread is worker 0, n_threads-1 are spawned. */
int pkv__threads_create(uint32_t n_threads, pkv__threads **out);
void pkv__threads_destroy(pkv__threads *threads);
uint32_t pkv__threads_size(const pkv__threads *threads);
/* Runs fn(ctx, t) on every worker t in [0, n_threads) and returns when all
 * have finished.  Work division is fn's business (typically an atomic
 * counter in ctx). */
void pkv__threads_run(pkv__threads *threads, pkv__task_fn fn, void *ctx);

/* ------------------------------------------------------------ drivers */

/* The engine's compute state, independent of the manager: kernels, threads,
 * shape, and per-thread scratch.  attn.c; engine.c wraps it. */
typedef struct pkv__cascade pkv__cascade; /* cascade.c */
/* pkv__attn.cascade_mode: shared-prefix decode when it pays (default), never,
 * or whenever two sequences share a block (tests). */
enum { PKV__CASCADE_AUTO = 0, PKV__CASCADE_OFF = 1, PKV__CASCADE_ALWAYS = 2 };

typedef struct pkv__attn {
  const pkv__kernels *kern;
  pkv__threads *threads;
  uint32_t n_q_heads, n_kv_heads, head_dim, G;
  uint32_t v_dim;         /* V head dim (<= head_dim; = head_dim after init) */
  float scale;
  uint32_t rows_max;      /* query rows of one prefill tile */
  /* decode bf16 K/V with kern->decode_bf16dot when it exists (the
   * engine's bf16_dot option); 0: the f32-compute kern->decode */
  int bf16_dot;
  size_t thread_floats;   /* per-thread scratch, cache-line multiple */
  float *scratch;         /* n_threads * thread_floats */
  size_t scratch_bytes;
  /* split-K partials and the work list grow to the largest batch seen, so
   * a steady stream of same-sized steps allocates nothing */
  void *work;
  size_t work_cap;        /* bytes */
  float *partials;
  size_t partials_cap;    /* floats */
  uint32_t n_items, n_split; /* the plan of the last pkv__attn_decode_plan */
  int cascade_mode;       /* PKV__CASCADE_* */
  pkv__cascade *cascade;  /* cascade.c's plan, NULL until a batch is planned */
} pkv__attn;

/* One sequence of a decode batch: its view, tokens to attend [0, n_tokens),
 * and its query rows [n_q_heads][head_dim] and output rows
 * [n_q_heads][v_dim]. */
typedef struct pkv__decode_seq {
  pkv__kv_view kv;
  uint32_t n_tokens;
  const float *q;
  float *out;
} pkv__decode_seq;


int pkv__attn_init(pkv__attn *a, const pkv__kernels *kern, uint32_t n_threads,
                   uint32_t n_q_heads, uint32_t n_kv_heads, uint32_t head_dim,
                   float scale);
void pkv__attn_fini(pkv__attn *a);
/* Sets the V head dim (<= head_dim, the views' v_dim); outputs then have
 * rows of v_dim floats. */
void pkv__attn_set_v_dim(pkv__attn *a, uint32_t v_dim);
/* Attention only (K/V already in place) = plan + run.  PKV_ENOMEM if
 * growing the work list fails (nothing computed). */
int pkv__attn_decode(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n_seqs);
/* The two halves, so that the engine can fail before writing K/V: plan
 * divides the work (may allocate: the only step that can fail), run
 * computes the planned batch (seqs as given to plan) and cannot fail. */
int pkv__attn_decode_plan(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n_seqs);
void pkv__attn_decode_run(pkv__attn *a, const pkv__decode_seq *seqs);
/* Validator of the last plan: every sequence's [0, n_tokens) covered once,
 * in order, split parts numbered consecutively.  Always compiled; asserted
 * after each plan at PKV_DEBUG >= 2. */
bool pkv__attn_plan_is_valid(const pkv__attn *a, const pkv__decode_seq *seqs,
                             uint32_t n_seqs);
/* Causal attention of n query tokens at positions [pos0, pos0+n):
 * q, out [n][n_q_heads][head_dim]. */
int pkv__attn_prefill(pkv__attn *a, const pkv__kv_view *kv, uint32_t pos0,
                      uint32_t n, const float *q, float *out);

/* ------------------------------------------------------------ work.c */

/* Grows *p (capacity *cap bytes) to hold need bytes, doubling from 4 KiB;
 * PKV_ENOMEM leaves *p and *cap as they were. */
int pkv__engine_grow(void **p, size_t *cap, size_t need);
/* Floats of one thread's decode scratch (kernel scratch + the rows below). */
size_t pkv__decode_thread_floats(uint32_t G, uint32_t n_q_heads, uint32_t head_dim);
/* A decode thread's scratch, carved (work.c's essay): the kernel's scratch,
 * the prescaled queries, and the online-softmax state of n_q_heads rows. */
typedef struct pkv__decode_rows {
  float *kscratch, *qs, *acc, *M, *S, *C;
} pkv__decode_rows;
pkv__decode_rows pkv__decode_rows_of(const pkv__attn *a, uint32_t thread);
/* M = -inf, S = 0, acc = 0 for n_rows rows (acc rows of v_dim floats). */
void pkv__decode_rows_reset(float *M, float *S, float *acc, size_t n_rows, uint32_t v_dim);
/* qs[r], C[r] = pkv__q_prescale of query row r (head_dim floats at q). */
void pkv__decode_rows_prescale(const pkv__attn *a, const float *q, size_t n_rows, float *qs,
                               float *C);
/* out[r] = acc[r] / S[r] (rows of v_dim floats). */
void pkv__decode_rows_finish(const float *S, const float *acc, size_t n_rows, uint32_t v_dim,
                             float *out);
/* The engine's decode kernel on args: the bf16-dot one when a->bf16_dot
 * and the back end has it. */
void pkv__decode_call(const pkv__attn *a, const pkv__decode_args *args);

/* ------------------------------------------------------------ cascade */

/* Shared-prefix decode (cascade.c).  plan: 1 if the batch shares enough
 * leading blocks and the cascade plan was made, 0 if plain decode should
 * run, PKV_ENOMEM (nothing planned).  run: computes the planned batch. */
int pkv__cascade_plan(pkv__attn *a, const pkv__decode_seq *seqs, uint32_t n_seqs);
void pkv__cascade_run(pkv__attn *a, const pkv__decode_seq *seqs);
int pkv__cascade_active(const pkv__attn *a);
/* Groups of the last plan (0 when plain) and sum over groups of shared
 * tokens x members (the token reads saved + the group's one read). */
uint32_t pkv__cascade_groups(const pkv__attn *a, uint32_t *shared_tokens);
void pkv__cascade_free(pkv__attn *a);

#endif /* PKV_ENGINE_INTERNAL_H */
