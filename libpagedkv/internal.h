/*
 * internal.h — library-internal interface of libpagedkv (prefix pkv__).
 *
 * Not installed.  The engine (engine/) reads page tables only through the
 * functions in the "engine-facing" section below.
 */
#ifndef PKV_INTERNAL_H
#define PKV_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagedkv/pagedkv.h"
#include "pagedkv/policy.h"

/* ------------------------------------------------ engine-facing contract */

/* A snapshot of one sequence's page table.  blocks stays valid, and the
 * table unchanged, until the sequence is next mutated (append, fork,
 * truncate, commit, match, free) — which the caller of the engine promises
 * not to do while an engine call runs on it.  Blocks in use are never
 * evicted or reused, so their K/V may be read without the cache lock. */
typedef struct pkv__seq_view {
  const int32_t *blocks;
  uint32_t n_blocks;
  uint32_t n_tokens;    /* reserved */
  uint32_t n_committed;
} pkv__seq_view;

/* Takes the cache lock briefly.  PKV_ENOSEQ for a bad handle. */
int pkv__seq_view_get(pkv_cache *cache, pkv_seq_id seq, pkv__seq_view *out);

/* 0 if every block covering positions [pos0, pos0+n) of seq is reserved
 * (pos0+n <= length) and writable (refcount 1, not cached, not pinned);
 * PKV_ERANGE / PKV_ESTATE with pkv_last_error() set otherwise. */
int pkv__seq_check_writable(pkv_cache *cache, pkv_seq_id seq, uint32_t pos0,
                            uint32_t n);

/* Sets the thread-local detail string and returns err (for `return
 * pkv__err(PKV_EINVAL, "seq %u: ...", ...)`). */
int pkv__err(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pkv__err_clear(void);

/* The first steps of every public call (core.h, "entry", shows a whole
 * call): PKV_ENTER clears the last error and refuses a NULL handle with
 * PKV_EINVAL "name: cache is NULL"; PKV_CHECK(cond, fmt, ...) refuses the
 * call with PKV_EINVAL and the message unless cond holds.  Both return from
 * the calling function, before anything is locked or changed. */
#define PKV_ENTER(cache, name)                                        \
  do {                                                                \
    pkv__err_clear();                                                 \
    if (!(cache)) return pkv__err(PKV_EINVAL, name ": cache is NULL"); \
  } while (0)
#define PKV_CHECK(cond, ...) \
  do {                                                          \
    if (!(cond)) return pkv__err(PKV_EINVAL, __VA_ARGS__);      \
  } while (0)
/* An output array and its capacity: ptr may be NULL only when cap is 0
 * ("<call>: <ptr> is NULL with <cap> N"). */
#define PKV_CHECK_OUT(ptr, cap, call)                                    \
  PKV_CHECK((ptr) || (cap) == 0,                                        \
            call ": " #ptr " is NULL with " #cap " %u", (unsigned)(cap))

/* Allocator shim: everything in the library allocates through these. */
void *pkv__malloc(size_t size);
void *pkv__calloc(size_t n, size_t size);
void *pkv__realloc(void *p, size_t size);
void pkv__free(void *p);
/* Frees each of n pointers (NULL ones skipped); PKV__FREE_ALL(a, b, ...)
 * is the spelling for a fixed list, as in every destroy path. */
void pkv__free_n(void *const *p, size_t n);
#define PKV__FREE_ALL(...)                                               \
  pkv__free_n((void *const[]){__VA_ARGS__},                             \
              sizeof((void *const[]){__VA_ARGS__}) / sizeof(void *))
/* The one growable-array helper: makes *arr (*cap elements of elem bytes)
 * hold at least need elements, doubling from `first` (or from *cap).
 * false, with *arr and *cap unchanged, when the size overflows or memory is
 * short (the caller names what failed).  pkv__grow_u32 is the same for the
 * manager's uint32_t capacities (false above UINT32_MAX elements). */
bool pkv__grow(void **arr, size_t *cap, size_t need, size_t elem,
               size_t first);
static inline bool pkv__grow_u32(void **arr, uint32_t *cap, uint64_t need,
                                 size_t elem, uint32_t first) {
  size_t c = *cap;
  if (need > UINT32_MAX || !pkv__grow(arr, &c, (size_t)need, elem, first))
    return false;
  *cap = c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
  return true;
}
/* Large 64-byte-aligned arena allocation (KV storage; engine scratch),
 * zeroed, huge-page advised; from the private jemalloc arena when the
 * process has jemalloc, else from mmap (alloc.c says which, when). */
void *pkv__arena_alloc(size_t size);
void pkv__arena_free(void *p, size_t size);
/* The backend's name ("jemalloc", "system", "libc", "user") and the bytes
 * live in the library's private jemalloc arena (0 for the others). */
void pkv__alloc_stats(char *name, size_t name_cap, uint64_t *bytes);

/* ------------------------------------------------ caller-filled structs */

/* The policy of a config that names none (pkv_config_init, cache.c). */
#define PKV__DEFAULT_POLICY "lru"

/* How a versioned struct with `uint32_t version; uint64_t reserved[]` is read
 * (abi.c has the rules). */
typedef struct pkv__abi_struct {
  const char *name;    /* "config", for messages */
  size_t size;         /* sizeof, the same in every version */
  size_t version_off;  /* offsetof(T, version) */
  size_t known_end;    /* offsetof(T, reserved): end of this library's fields */
  uint32_t version;    /* this library's PKV_*_VERSION */
  const size_t *ends;  /* ends[v-1]: end of version v's fields, v < version */
} pkv__abi_struct;
#define PKV__V1_END(T) (offsetof(T, version) + sizeof(uint32_t))
/* where a later version's fields end: just past its last field F */
#define PKV__END_AT(T, F) (offsetof(T, F) + sizeof(((T *)0)->F))
#define PKV__ABI_STRUCT(T, name, ver, ends)                                    \
  {name, sizeof(T), offsetof(T, version), offsetof(T, reserved), ver, ends}
/* Copies the caller's struct src into dst (the library's layout), with
 * defaults for the fields an older caller lacks and dst's version set to the
 * library's.  PKV_EINVAL (reserved bytes set) or PKV_ENOTSUP (a newer
 * caller's field this library does not know is set), dst untouched. */
int pkv__abi_in(const pkv__abi_struct *t, void *dst, const void *src,
                const void *defaults);
/* Defines `linkage int pkv__<name>_in(pkv_<name> *dst, const pkv_<name>
 * *src)`: pkv__abi_in for the struct pkv_<name> of version ver, whose older
 * versions end at <name>_ends[] (in scope), with the defaults of
 * pkv_<name>_init.  linkage: static, or empty for a library-wide one. */
#define PKV__DEFINE_ABI_IN(linkage, name, ver)                                 \
  linkage int pkv__##name##_in(pkv_##name *dst, const pkv_##name *src) {      \
    _Static_assert(sizeof name##_ends / sizeof name##_ends[0] >= (ver) - 1,   \
                   #name "_ends: one entry per older version");               \
    static const pkv__abi_struct t =                                          \
        PKV__ABI_STRUCT(pkv_##name, #name, ver, name##_ends);                 \
    pkv_##name def;                                                           \
    pkv_##name##_init(&def);                                                  \
    return pkv__abi_in(&t, dst, src, &def);                                   \
  }
/* Defines the public `void pkv_<name>_init(pkv_<name> *p)` of a struct whose
 * defaults are all zero: clears the last error, zeroes *p, sets its version
 * to ver; NULL is a no-op. */
#define PKV__DEFINE_ZERO_INIT(name, ver)                                       \
  void pkv_##name##_init(pkv_##name *p) {                                     \
    pkv__err_clear();                                                         \
    if (!p) return;                                                           \
    memset(p, 0, sizeof *p);                                                  \
    p->version = ver;                                                         \
  }
int pkv__config_in(pkv_config *dst, const pkv_config *src);
int pkv__seq_opts_in(pkv_seq_opts *dst, const pkv_seq_opts *src);
int pkv__append_in(pkv_append *dst, const pkv_append *src);

#endif /* PKV_INTERNAL_H */
