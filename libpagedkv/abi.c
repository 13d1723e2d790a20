/*
 * abi.c — the library's version, and how it reads the structs a caller fills.
 *
 * pkv_config, pkv_seq_opts and pkv_engine_config end with
 *
 *     uint32_t version;       the layout the caller was compiled with
 *     uint64_t reserved[N];   zero
 *
 * and keep their size for a whole major version: a new field takes the
 * front of `reserved` (which shrinks by as much) and the struct's version
 * goes up.  So a caller built against any header of the major version passes
 * a struct of the library's size, and the library knows from `version` which
 * fields the caller knew:
 *
 *   caller version == library's   used as is.
 *   caller version <  library's   an older caller: the fields it does not
 *                                 know (from where its version's fields end)
 *                                 get their defaults.
 *   caller version >  library's   a newer caller: accepted if the fields this
 *                                 library does not know are zero (they then
 *                                 mean "default"), else PKV_ENOTSUP.
 *
 * In every case the caller's reserved bytes must be zero (PKV_EINVAL
 * otherwise: the struct was not filled by *_init or zeroed).  Version 0 is
 * read as 1, so `= {0}` and memset keep working.
 */
#include "internal.h"

#include <string.h>

unsigned pkv_version(void) { return PKV_VERSION_HEX; }

#define PKV__STR_(x) #x
#define PKV__STR(x) PKV__STR_(x)
const char *pkv_version_string(void) {
  return PKV__STR(PKV_VERSION_MAJOR) "." PKV__STR(PKV_VERSION_MINOR) "." PKV__STR(
      PKV_VERSION_PATCH);
}

/* First nonzero byte of p[from, to), or -1. */
static long first_nonzero(const unsigned char *p, size_t from, size_t to) {
  for (size_t i = from; i < to; i++)
    if (p[i]) return (long)i;
  return -1;
}

int pkv__abi_in(const pkv__abi_struct *t, void *dst, const void *src,
                const void *defaults) {
  const unsigned char *s = src;
  uint32_t v;
  memcpy(&v, s + t->version_off, sizeof v);
  if (v == 0) v = 1;
  /* where the fields the caller knows end */
  size_t caller_end = v < t->version ? t->ends[v - 1] : t->known_end;
  if (v > t->version) {
    long at = first_nonzero(s, t->known_end, t->size);
    if (at >= 0)
      return pkv__err(PKV_ENOTSUP,
                      "%s: version %u sets a field at byte %ld that this library "
                      "(pagedkv %s, %s version %u) does not know",
                      t->name, v, at, pkv_version_string(), t->name, t->version);
  } else {
    long at = first_nonzero(s, caller_end, t->size);
    PKV_CHECK(at < 0, "%s: reserved byte %ld is not zero (fill the struct with "
            "its _init function, or zero it)", t->name, at);
  }
  memcpy(dst, src, t->size);
  if (caller_end < t->known_end)
    memcpy((unsigned char *)dst + caller_end,
           (const unsigned char *)defaults + caller_end, t->known_end - caller_end);
  memcpy((unsigned char *)dst + t->version_off, &t->version, sizeof t->version);
  return 0;
}

/* ---------------------------------------------- the manager's own structs */

/* ends[v-1] = where the fields of version v end, for every version up to
 * the current PKV_*_VERSION (append one when a version is added; the
 * current version's entry is there for the release after it). */
static const size_t config_ends[] = {PKV__V1_END(pkv_config),
                                     PKV__END_AT(pkv_config, v_head_dim),
                                     PKV__END_AT(pkv_config, host_tier_policy)};
static const size_t seq_opts_ends[] = {PKV__V1_END(pkv_seq_opts)};
static const size_t append_ends[] = {PKV__V1_END(pkv_append)};

PKV__DEFINE_ABI_IN(, config, PKV_CONFIG_VERSION)
PKV__DEFINE_ABI_IN(, seq_opts, PKV_SEQ_OPTS_VERSION)
PKV__DEFINE_ABI_IN(, append, PKV_APPEND_VERSION)

/* pkv_seq_opts and pkv_append default to all zero. */
PKV__DEFINE_ZERO_INIT(seq_opts, PKV_SEQ_OPTS_VERSION)
PKV__DEFINE_ZERO_INIT(append, PKV_APPEND_VERSION)

void pkv_config_init(pkv_config *cfg) {
  pkv__err_clear();
  if (!cfg) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->dtype = PKV_DTYPE_F32;
  cfg->storage = PKV_STORAGE_OWNED;
  cfg->policy = PKV__DEFAULT_POLICY;
  cfg->version = PKV_CONFIG_VERSION;
}
