/*
 * check_redis.c — the Redis tier (libpagedkv/tier/redis.c) and its hooks in
 * the cache (tier/remote.c), against real redis-server processes.
 *
 * PKV_TEST_REDIS (host:port) names the shared server: .ci/run and
 * scripts/with-redis.sh (make test) start one with no persistence.  Every
 * test uses its own key prefix.  The kill/restart test starts a private
 * server on a Unix socket, so killing it disturbs no one.  No server, no
 * pass: a missing PKV_TEST_REDIS or redis-server fails the test by name.
 */
#include "tu_core.h"

#include "tier/redis.h"
#include "tier/xsum.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

/* ------------------------------------------------ servers */

static const char *shared_addr(void) {
  const char *a = getenv("PKV_TEST_REDIS");
  if (!a || !*a)
    ck_abort_msg("PKV_TEST_REDIS is not set: run through `make test` (scripts/"
                 "with-redis.sh starts a redis-server) or export host:port");
  return a;
}

/* A raw client on the shared server, to plant bad values. */
static redisContext *raw_client(void) {
  const char *a = shared_addr();
  const char *colon = strrchr(a, ':');
  ck_assert_ptr_nonnull(colon);
  char host[256];
  snprintf(host, sizeof host, "%.*s", (int)(colon - a), a);
  redisContext *rc = redisConnect(host, atoi(colon + 1));
  ck_assert_msg(rc && !rc->err, "cannot connect to redis at %s: %s", a,
                rc ? rc->errstr : "?");
  return rc;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A private redis-server on a Unix socket in its own directory. */
typedef struct priv_server {
  char dir[64];
  char sock[96];
  pid_t pid;
} priv_server;

static bool sock_answers(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un su = {.sun_family = AF_UNIX};
  snprintf(su.sun_path, sizeof su.sun_path, "%s", path);
  bool ok = connect(fd, (struct sockaddr *)&su, sizeof su) == 0;
  close(fd);
  return ok;
}

static void priv_start(priv_server *s) {
  if (!s->dir[0]) {
    snprintf(s->dir, sizeof s->dir, "/tmp/pkv-redis-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(s->dir));
    snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
  }
  unlink(s->sock);
  pid_t p = fork();
  ck_assert_int_ge(p, 0);
  if (p == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", s->sock,
           "--save", "", "--appendonly", "no", "--dir", s->dir, (char *)NULL);
    _exit(127);
  }
  s->pid = p;
  double end = now_ms() + 5000;
  while (!sock_answers(s->sock)) {
    int st;
    if (waitpid(p, &st, WNOHANG) == p)
      ck_abort_msg("redis-server could not be started (exit %d): install it "
                   "with scripts/deps.sh build", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    ck_assert_msg(now_ms() < end, "redis-server did not open %s in 5 s", s->sock);
    usleep(5000);
  }
}

static void priv_kill(priv_server *s) {
  if (s->pid <= 0) return;
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
}

static void priv_cleanup(priv_server *s) {
  priv_kill(s);
  unlink(s->sock);
  rmdir(s->dir);
}

/* ------------------------------------------------ tier-level blocks */

typedef struct tblocks {
  pkv__tier_block *b;
  int32_t *tokens;
  uint8_t *kv;
  size_t n, ntok, kvb;
} tblocks;

/* n blocks of a chain: key i+1, parent i (salted by tag), deterministic
 * tokens and K/V. */
static void tb_make(tblocks *t, size_t n, size_t ntok, size_t kvb, uint64_t tag) {
  t->n = n;
  t->ntok = ntok;
  t->kvb = kvb;
  t->b = calloc(n, sizeof *t->b);
  t->tokens = malloc(n * ntok * sizeof(int32_t));
  t->kv = malloc(n * kvb);
  uint64_t rng = tag * 77 + 1;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < ntok; j++) t->tokens[i * ntok + j] = (int32_t)(tag * 1000 + i * ntok + j);
    for (size_t j = 0; j < kvb; j++) t->kv[i * kvb + j] = (uint8_t)tu_rand(&rng);
    t->b[i] = (pkv__tier_block){.key = {i + 1, tag}, .parent = {i, tag}, .ns_id_hash = 7,
                                .ntok = (uint32_t)ntok, .tokens = t->tokens + i * ntok,
                                .kv = t->kv + i * kvb, .kv_bytes = kvb};
  }
}
static void tb_free(tblocks *t) {
  free(t->b);
  free(t->tokens);
  free(t->kv);
}

/* Destination copies of t's blocks with kv pointing at a poisoned buffer. */
static pkv__tier_block *tb_dst(const tblocks *t, uint8_t **buf) {
  pkv__tier_block *d = malloc(t->n * sizeof *d);
  *buf = malloc(t->n * t->kvb);
  memset(*buf, 0xAB, t->n * t->kvb);
  for (size_t i = 0; i < t->n; i++) {
    d[i] = t->b[i];
    d[i].kv = *buf + i * t->kvb;
  }
  return d;
}

static pkv__tier *tier_new(const char *addr, const char *prefix, uint64_t ttl_ms) {
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  o.address = addr;
  o.key_prefix = prefix;
  o.ttl_ms = ttl_ms;
  pkv__tier *t = NULL;
  int rc = pkv__redis_tier_create(&o, &t);
  ck_assert_msg(rc == 0, "tier_create: %s", pkv_last_error());
  return t;
}

static void prefix_for(char *out, size_t cap, const char *test) {
  snprintf(out, cap, "pkvtest:%d:%ld:%s:", (int)getpid(), (long)time(NULL), test);
}

/* One tier on the shared server under its own prefix, n blocks, and their
 * poisoned destinations. */
typedef struct tfx {
  pkv__tier *t;
  tblocks tb;
  pkv__tier_block *d;
  uint8_t *buf;
} tfx;

static void fx_open(tfx *f, const char *name, uint64_t ttl_ms, size_t n, size_t ntok,
                    size_t kvb) {
  char pfx[96];
  prefix_for(pfx, sizeof pfx, name);
  f->t = tier_new(shared_addr(), pfx, ttl_ms);
  tb_make(&f->tb, n, ntok, kvb, (uint64_t)name[0] * 131 + strlen(name));
  f->d = tb_dst(&f->tb, &f->buf);
}

static void fx_close(tfx *f) {
  free(f->d);
  free(f->buf);
  tb_free(&f->tb);
  f->t->ops->destroy(f->t);
}

#define ANY UINT64_MAX
static void expect_stats(pkv__tier *t, uint64_t puts, uint64_t gets, uint64_t hits,
                         uint64_t misses, uint64_t errors) {
  pkv_tier_stats st;
  t->ops->stats(t, &st);
  const uint64_t want[5] = {puts, gets, hits, misses, errors};
  const uint64_t got[5] = {st.puts, st.gets, st.hits, st.misses, st.errors};
  static const char *name[5] = {"puts", "gets", "hits", "misses", "errors"};
  for (int i = 0; i < 5; i++)
    ck_assert_msg(want[i] == ANY || want[i] == got[i], "%s = %llu, expected %llu",
                  name[i], (unsigned long long)got[i], (unsigned long long)want[i]);
}

/* The checksum's vector paths (tier/xsum.c): the AVX2 build and the
 * baseline one give libxxhash's XXH3-64 for every length and every way of
 * splitting the input into updates, so a value either writes verifies under
 * the other (a Zen 3 and a Zen 5 server share one Redis). */
START_TEST(xsum_paths) {
  size_t cap = 3 * 4096 + 333;
  uint8_t *buf = malloc(cap);
  uint64_t rng = 99;
  for (size_t i = 0; i < cap; i++) buf[i] = (uint8_t)tu_rand(&rng);
  bool avx2 = pkv__xsum_avx2();
  ck_assert_int_eq(avx2, __builtin_cpu_supports("avx2") != 0);
  static const size_t lens[] = {0, 1, 3, 16, 17, 128, 129, 240, 241, 1024, 1025,
                                4096, 8191, 3 * 4096 + 333};
  for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
    size_t n = lens[li];
    uint64_t want = XXH3_64bits(buf, n);
    for (int split = 0; split < 4; split++) {
      pkv__xsum a, b, d;
      pkv__xsum_reset(&d);
      pkv__xsum_reset_base(&b);
      if (avx2) pkv__xsum_reset_avx2(&a);
      size_t at = 0;
      while (at < n) { /* pieces of 1.., 7.., 64.., or all at once */
        size_t k = split == 0 ? n : (size_t)(tu_rand(&rng) % (split == 1 ? 8 : split == 2 ? 300 : 5000)) + 1;
        if (k > n - at) k = n - at;
        pkv__xsum_update(&d, buf + at, k);
        pkv__xsum_update_base(&b, buf + at, k);
        if (avx2) pkv__xsum_update_avx2(&a, buf + at, k);
        at += k;
      }
      ck_assert_msg(pkv__xsum_digest(&d) == want, "dispatch, %zu bytes split %d", n, split);
      ck_assert_msg(pkv__xsum_digest_base(&b) == want, "base, %zu bytes split %d", n, split);
      if (avx2)
        ck_assert_msg(pkv__xsum_digest_avx2(&a) == want, "avx2, %zu bytes split %d", n, split);
    }
  }
  free(buf);
}
END_TEST

/* ------------------------------------------------ round trips */

START_TEST(round_trip) {
  tfx f;
  fx_open(&f, "rt", 0, 2, 16, 4096);
  pkv__tier *t = f.t;
  ck_assert_int_eq(t->ops->put(t, f.tb.b, 1), 0);
  ck_assert_int_eq(t->ops->contains(t, &f.tb.b[0]), 1);
  ck_assert_int_eq(t->ops->contains(t, &f.tb.b[1]), 0);
  uint8_t found[2] = {9, 9};
  ck_assert_int_eq(t->ops->get(t, f.d, 2, found), 0);
  ck_assert_int_eq(found[0], 1);
  ck_assert_int_eq(found[1], 0); /* absent: a plain miss */
  ck_assert_int_eq(memcmp(f.buf, f.tb.kv, f.tb.kvb), 0);
  for (size_t j = 0; j < f.tb.kvb; j++) ck_assert_int_eq(f.buf[f.tb.kvb + j], 0xAB);
  expect_stats(t, 1, 2, 1, 1, 0);
  pkv_tier_stats st;
  t->ops->stats(t, &st);
  ck_assert_uint_eq(st.put_bytes, PKV__REDIS_HDR + 16 * 4 + 4096);
  fx_close(&f);
}
END_TEST

START_TEST(batch_64) {
  tfx f;
  fx_open(&f, "b64", 60000, 64, 16, 64 * 1024);
  pkv__tier *t = f.t;
  ck_assert_int_eq(t->ops->put(t, f.tb.b, 64), 0);
  uint8_t found[64];
  ck_assert_int_eq(t->ops->get(t, f.d, 64, found), 0);
  for (int i = 0; i < 64; i++) ck_assert_int_eq(found[i], 1);
  ck_assert_int_eq(memcmp(f.buf, f.tb.kv, 64 * f.tb.kvb), 0);
  pkv__redis_counters c;
  pkv__redis_counters_get(t, &c);
  ck_assert_uint_eq(c.connects, 1); /* pipelined on one connection */
  expect_stats(t, 64, 64, 64, 0, 0);
  /* TTL was set on every key */
  redisContext *rc = raw_client();
  char key[256];
  pkv__redis_key(t, &f.tb.b[63], key, sizeof key);
  redisReply *r = redisCommand(rc, "PTTL %s", key);
  ck_assert_int_eq(r->type, REDIS_REPLY_INTEGER);
  ck_assert_int_gt(r->integer, 50000);
  freeReplyObject(r);
  redisFree(rc);
  fx_close(&f);
}
END_TEST

START_TEST(ttl_expiry) {
  tfx f;
  fx_open(&f, "ttl", 150, 1, 8, 1024);
  pkv__tier *t = f.t;
  ck_assert_int_eq(t->ops->put(t, f.tb.b, 1), 0);
  uint8_t found;
  ck_assert_int_eq(t->ops->get(t, f.d, 1, &found), 0);
  ck_assert_int_eq(found, 1);
  usleep(400 * 1000);
  ck_assert_int_eq(t->ops->get(t, f.d, 1, &found), 0);
  ck_assert_int_eq(found, 0);
  ck_assert_int_eq(t->ops->contains(t, &f.tb.b[0]), 0);
  expect_stats(t, 1, 2, 1, 1, 0); /* expiry is a miss, not an error */
  fx_close(&f);
}
END_TEST

/* ------------------------------------------------ bad values */

/* Gets block 0 of tb; asserts a miss with one more error and the
 * destination untouched; returns the counters. */
static pkv__redis_counters expect_bad(pkv__tier *t, const tblocks *tb, const char *what) {
  pkv_tier_stats before, after;
  t->ops->stats(t, &before);
  uint8_t *buf, found = 9;
  pkv__tier_block *d = tb_dst(tb, &buf);
  ck_assert_int_eq(t->ops->get(t, d, 1, &found), 0);
  ck_assert_msg(found == 0, "%s: served as a hit", what);
  for (size_t j = 0; j < tb->kvb; j++)
    ck_assert_msg(buf[j] == 0xAB, "%s: K/V written at byte %zu", what, j);
  t->ops->stats(t, &after);
  ck_assert_msg(after.errors == before.errors + 1, "%s: errors %llu -> %llu", what,
                (unsigned long long)before.errors, (unsigned long long)after.errors);
  ck_assert_uint_eq(after.misses, before.misses + 1);
  free(d);
  free(buf);
  pkv__redis_counters c;
  pkv__redis_counters_get(t, &c);
  return c;
}

START_TEST(bad_values) {
  char pfx[96];
  prefix_for(pfx, sizeof pfx, "bad");
  pkv__tier *t = tier_new(shared_addr(), pfx, 60000);
  tblocks tb;
  tb_make(&tb, 2, 16, 2048, 4);
  redisContext *rc = raw_client();
  char k0[256], k1[256];
  pkv__redis_key(t, &tb.b[0], k0, sizeof k0);
  pkv__redis_key(t, &tb.b[1], k1, sizeof k1);
  size_t vlen = PKV__REDIS_HDR + 16 * 4 + 2048;
  redisReply *r;

  /* corrupt: one K/V byte flipped */
  ck_assert_int_eq(t->ops->put(t, tb.b, 2), 0);
  r = redisCommand(rc, "SETRANGE %s %d %b", k0, (int)(vlen - 100), "\x5a", (size_t)1);
  freeReplyObject(r);
  pkv__redis_counters c = expect_bad(t, &tb, "corrupt");
  ck_assert_uint_eq(c.corrupt, 1);

  /* truncated: the value less its last 10 bytes */
  ck_assert_int_eq(t->ops->put(t, tb.b, 1), 0);
  r = redisCommand(rc, "GETRANGE %s 0 %d", k0, (int)(vlen - 11));
  ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
  redisReply *w = redisCommand(rc, "SET %s %b", k0, r->str, r->len);
  freeReplyObject(w);
  freeReplyObject(r);
  c = expect_bad(t, &tb, "truncated");
  ck_assert_uint_eq(c.wrong_size, 1);

  /* another key's value: block 1's value under block 0's key */
  r = redisCommand(rc, "GET %s", k1);
  ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
  w = redisCommand(rc, "SET %s %b", k0, r->str, r->len);
  freeReplyObject(w);
  freeReplyObject(r);
  c = expect_bad(t, &tb, "foreign");
  ck_assert_uint_eq(c.foreign, 1);

  /* same key and parent, other tokens (a key collision): foreign */
  tblocks other;
  tb_make(&other, 1, 16, 2048, 4);
  other.tokens[3] ^= 1;
  ck_assert_int_eq(t->ops->put(t, other.b, 1), 0);
  c = expect_bad(t, &tb, "other tokens");
  ck_assert_uint_eq(c.foreign, 2);
  tb_free(&other);

  /* wrong size: stored by a cache with another K/V size */
  tblocks big;
  tb_make(&big, 1, 16, 4096, 4);
  ck_assert_int_eq(t->ops->put(t, big.b, 1), 0);
  c = expect_bad(t, &tb, "wrong size");
  ck_assert_uint_eq(c.wrong_size, 2);
  tb_free(&big);

  /* garbage, short and empty values */
  w = redisCommand(rc, "SET %s %s", k0, "not a block");
  freeReplyObject(w);
  c = expect_bad(t, &tb, "garbage");
  ck_assert_uint_eq(c.wrong_size, 3);
  w = redisCommand(rc, "SET %s %b", k0, "", (size_t)0);
  freeReplyObject(w);
  expect_bad(t, &tb, "empty");

  /* bad magic: a full-size value of zeros */
  char *zeros = calloc(1, vlen);
  w = redisCommand(rc, "SET %s %b", k0, zeros, vlen);
  freeReplyObject(w);
  free(zeros);
  c = expect_bad(t, &tb, "zeros");
  ck_assert_uint_eq(c.corrupt, 2);

  /* wrong type: a list under the key (the server answers an error) */
  w = redisCommand(rc, "DEL %s", k0);
  freeReplyObject(w);
  w = redisCommand(rc, "LPUSH %s x", k0);
  freeReplyObject(w);
  c = expect_bad(t, &tb, "wrong type");
  ck_assert_uint_eq(c.error_replies, 1);
  ck_assert_int_eq(t->ops->contains(t, &tb.b[0]), 0);

  /* the connection survived all of it, and good data still flows */
  w = redisCommand(rc, "DEL %s", k0);
  freeReplyObject(w);
  ck_assert_int_eq(t->ops->put(t, tb.b, 1), 0);
  uint8_t *buf, found;
  pkv__tier_block *d = tb_dst(&tb, &buf);
  ck_assert_int_eq(t->ops->get(t, d, 1, &found), 0);
  ck_assert_int_eq(found, 1);
  ck_assert_int_eq(memcmp(buf, tb.kv, tb.kvb), 0);
  pkv__redis_counters_get(t, &c);
  ck_assert_uint_eq(c.connects, 1);
  ck_assert_uint_eq(c.io_failures, 0);
  free(d);
  free(buf);
  redisFree(rc);
  tb_free(&tb);
  t->ops->destroy(t);
}
END_TEST

/* One pipelined get of 6 big blocks (1.5 MiB values, more than the tier's
 * 1 MiB receive buffer) mixing good values with an absent key, an error
 * reply, a bigger value (read and dropped), a corrupt one: each reply is
 * framed right, the good ones hit, the bad ones leave their block alone. */
START_TEST(mixed_big_batch) {
  tfx f;
  fx_open(&f, "mixbig", 60000, 6, 16, 3u << 19);
  pkv__tier *t = f.t;
  ck_assert_int_eq(t->ops->put(t, f.tb.b, 6), 0);
  redisContext *rc = raw_client();
  char k[6][256];
  for (int i = 0; i < 6; i++) pkv__redis_key(t, &f.tb.b[i], k[i], sizeof k[i]);
  redisReply *w = redisCommand(rc, "DEL %s", k[1]); /* 1: absent */
  freeReplyObject(w);
  w = redisCommand(rc, "DEL %s", k[2]); /* 2: a list (error reply) */
  freeReplyObject(w);
  w = redisCommand(rc, "LPUSH %s x", k[2]);
  freeReplyObject(w);
  size_t vlen = PKV__REDIS_HDR + 16 * 4 + f.tb.kvb;
  w = redisCommand(rc, "SETRANGE %s %d %b", k[3], (int)(vlen + 5000), "!", (size_t)1);
  freeReplyObject(w); /* 3: longer than a block */
  w = redisCommand(rc, "SETRANGE %s %d %b", k[4], (int)(vlen - 7), "\x01", (size_t)1);
  freeReplyObject(w); /* 4: one K/V byte changed */
  redisFree(rc);
  uint8_t found[6];
  ck_assert_int_eq(t->ops->get(t, f.d, 6, found), 0);
  static const uint8_t want[6] = {1, 0, 0, 0, 0, 1};
  for (int i = 0; i < 6; i++) {
    ck_assert_msg(found[i] == want[i], "block %d: found %d", i, found[i]);
    const uint8_t *got = f.buf + (size_t)i * f.tb.kvb;
    if (want[i]) {
      ck_assert_int_eq(memcmp(got, f.tb.kv + (size_t)i * f.tb.kvb, f.tb.kvb), 0);
    } else {
      size_t j = 0;
      while (j < f.tb.kvb && got[j] == 0xAB) j++;
      ck_assert_msg(j == f.tb.kvb, "block %d: K/V written at byte %zu", i, j);
    }
  }
  pkv__redis_counters c;
  pkv__redis_counters_get(t, &c);
  ck_assert_uint_eq(c.error_replies, 1);
  ck_assert_uint_eq(c.wrong_size, 1);
  ck_assert_uint_eq(c.corrupt, 1);
  ck_assert_uint_eq(c.io_failures, 0);
  ck_assert_uint_eq(c.connects, 1);
  expect_stats(t, 6, 6, 2, 4, 3);
  fx_close(&f);
}
END_TEST

/* ------------------------------------------------ bad input */

START_TEST(bad_address) {
  static const char *bad[] = {"", "localhost", "localhost:", ":6379", "h:0", "h:65536",
                              "h:12a", "h:-1", "a b:80", "h;rm:80", "::1:80",
                              "[::1]6379", "unix:", "unix:relative/x",
                              "h:123456"};
  pkv_cache *c = tu_cache_new(PKV_STORAGE_OWNED, 8, 4);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    pkv_redis_opts o;
    pkv_redis_opts_init(&o);
    o.address = bad[i];
    ck_assert_msg(pkv_cache_set_remote_tier(c, &o) == PKV_EINVAL, "'%s' accepted", bad[i]);
    ck_assert_msg(strstr(pkv_last_error(), "address") != NULL, "'%s': %s", bad[i],
                  pkv_last_error());
    pkv_tier_stats st;
    ck_assert_int_eq(pkv_cache_remote_stats(c, &st), PKV_ENOENT); /* unchanged */
  }
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  ck_assert_int_eq(pkv_cache_set_remote_tier(c, &o), PKV_EINVAL); /* no address */
  o.address = "127.0.0.1:6379";
  char longp[200];
  memset(longp, 'p', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  o.key_prefix = longp;
  ck_assert_int_eq(pkv_cache_set_remote_tier(c, &o), PKV_EINVAL);
  o.key_prefix = NULL;
  o.reserved[2] = 1;
  ck_assert_int_eq(pkv_cache_set_remote_tier(c, &o), PKV_EINVAL);
  o.reserved[2] = 0;
  o.max_batch = 5000;
  ck_assert_int_eq(pkv_cache_set_remote_tier(c, &o), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_set_remote_tier(NULL, &o), PKV_EINVAL);
  ck_assert_int_eq(pkv_cache_remote_stats(c, NULL), PKV_EINVAL);
  /* good forms are accepted (no server needed to attach) */
  static const char *good[] = {"127.0.0.1:1", "localhost:6379", "[::1]:6379",
                               "unix:/tmp/x.sock", "/tmp/x.sock", "my-host_1.example:65535"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    pkv_redis_opts_init(&o);
    o.address = good[i];
    ck_assert_msg(pkv_cache_set_remote_tier(c, &o) == 0, "'%s': %s", good[i],
                  pkv_last_error());
  }
  ck_assert_int_eq(pkv_cache_set_remote_tier(c, NULL), 0); /* detach */
  pkv_tier_stats st;
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st), PKV_ENOENT);
  /* external storage holds no K/V */
  pkv_config ext;
  tu_config(&ext, PKV_STORAGE_EXTERNAL, 8, 4);
  pkv_cache *e = tu_cache(&ext);
  pkv_redis_opts_init(&o);
  o.address = "127.0.0.1:6379";
  ck_assert_int_eq(pkv_cache_set_remote_tier(e, &o), PKV_ENOTSUP);
  pkv_cache_destroy(e);
  pkv_cache_destroy(c);
}
END_TEST

/* ------------------------------------------------ through the cache */

#define BS 4
/* Appends tokens to a new sequence, writes their K/V pattern (tag), commits
 * and frees it: its full blocks stay cached, evictable. */
static void prefill(pkv_cache *c, const int32_t *tok, uint32_t n, uint32_t tag) {
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  int64_t *slots = malloc(n * sizeof *slots);
  ck_assert_int_eq(pkv_seq_append(c, s, tok, n, slots), 0);
  for (uint32_t i = 0; i < n; i++) tu_write_slot(c, slots[i], tag, i);
  ck_assert_int_eq(pkv_seq_commit(c, s, n), 0);
  ck_assert_int_eq(pkv_seq_free(c, s), 0);
  free(slots);
}

/* Matches tok on a new sequence; returns matched tokens and checks that
 * every matched slot holds the pattern (tag). */
static uint32_t match_check(pkv_cache *c, const int32_t *tok, uint32_t n, uint32_t tag) {
  pkv_seq_id s;
  ck_assert_int_eq(pkv_seq_create(c, NULL, &s), 0);
  uint32_t m = 0;
  ck_assert_int_eq(pkv_seq_match_prefix(c, s, tok, n, 0, &m), 0);
  if (m) {
    int64_t *slots = malloc(m * sizeof *slots);
    ck_assert_int_eq(pkv_slot_mapping(c, s, 0, m, slots), 0);
    for (uint32_t i = 0; i < m; i++)
      ck_assert_msg(tu_slot_matches(c, slots[i], tag, i), "token %u: wrong K/V", i);
    free(slots);
  }
  ck_assert_int_eq(pkv_seq_free(c, s), 0);
  TU_CHECK(c);
  return m;
}

static pkv_cache *remote_cache(uint32_t num_blocks, const char *addr, const char *pfx,
                               uint32_t timeout_ms) {
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, num_blocks, BS);
  cfg.head_dim = 64; /* 2 KiB per block */
  pkv_cache *c = tu_cache(&cfg);
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  o.address = addr;
  o.key_prefix = pfx;
  o.timeout_ms = timeout_ms;
  ck_assert_msg(pkv_cache_set_remote_tier(c, &o) == 0, "%s", pkv_last_error());
  return c;
}

/* Evicts every evictable block (each is demoted to the remote tier). */
static void evict_all(pkv_cache *c) {
  pkv_stats st;
  ck_assert_int_eq(pkv_stats_get(c, &st), 0);
  ck_assert_int_eq(pkv_evict(c, st.blocks_evictable), 0);
}

static void tokens_for(int32_t *tok, uint32_t n, int32_t base) {
  for (uint32_t i = 0; i < n; i++) tok[i] = base + (int32_t)i;
}

START_TEST(evict_then_fetch) {
  char pfx[96];
  prefix_for(pfx, sizeof pfx, "cache");
  pkv_cache *c = remote_cache(8, shared_addr(), pfx, 1000);
  int32_t a[6 * BS], b[8 * BS];
  tokens_for(a, 6 * BS, 1000);
  tokens_for(b, 8 * BS, 5000);
  prefill(c, a, 6 * BS, 11);
  ck_assert_int_eq(pkv_evict(c, 6), 0); /* all six go to redis */
  pkv_tier_stats st;
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st), 0);
  ck_assert_uint_eq(st.puts, 6);
  /* the whole prefix comes back from redis, with its K/V */
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 6 * BS);
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st), 0);
  ck_assert_uint_eq(st.hits, 6);
  /* now cached locally again: a second match needs no fetch */
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 6 * BS);
  pkv_tier_stats st2;
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st2), 0);
  ck_assert_uint_eq(st2.gets, st.gets);
  /* pressure: b's 8 blocks evict a's (demoted), then a half-local match */
  prefill(c, b, 8 * BS, 12);
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 6 * BS);
  ck_assert_uint_eq(match_check(c, b, 8 * BS, 12), 8 * BS);
  /* a prefix that diverges after 3 blocks matches 3 (the chain ends) */
  int32_t a2[6 * BS];
  memcpy(a2, a, sizeof a2);
  a2[3 * BS + 1] = -5;
  ck_assert_uint_eq(match_check(c, a2, 6 * BS, 11), 3 * BS);
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st), 0);
  ck_assert_uint_eq(st.errors, 0);
  pkv_stats ps;
  ck_assert_int_eq(pkv_stats_get(c, &ps), 0);
  ck_assert_uint_gt(ps.evictions, 6);
  pkv_cache_destroy(c);
}
END_TEST

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  socklen_t sl = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  close(fd);
  return ntohs(sa.sin_port);
}

START_TEST(unreachable) {
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port()); /* nobody listens */
  pkv_cache *c = remote_cache(8, addr, "pkv:", 200);
  int32_t a[6 * BS];
  tokens_for(a, 6 * BS, 1000);
  double t0 = now_ms();
  prefill(c, a, 6 * BS, 11);
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 6 * BS); /* local hits */
  ck_assert_int_eq(pkv_evict(c, 6), 0);
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 0);
  prefill(c, a, 6 * BS, 11);
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 6 * BS);
  double dt = now_ms() - t0;
  ck_assert_msg(dt < 500, "calls took %.0f ms against a closed port", dt);
  pkv_tier_stats st;
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st), 0);
  ck_assert_uint_eq(st.puts, 0);
  ck_assert_uint_ge(st.errors, 7); /* 6 puts + the fetch */
  ck_assert_uint_eq(st.hits, 0);
  pkv_cache_destroy(c);
}
END_TEST

/* A prefix match that waits on Redis does not hold the cache lock.  The
 * server is stopped (SIGSTOP: connections queue, nothing answers), so a
 * thread's match blocks in its STRLEN round trip for timeout_ms (3 s);
 * meanwhile this thread's calls on the same cache (create, append, commit,
 * free, stats, the Redis tier's stats) finish at once — while the match is
 * still waiting.  (Calls that store blocks in Redis would wait for the
 * connection, though not holding the cache lock: none here.) */
typedef struct hang_arg {
  pkv_cache *c;
  const int32_t *tok;
  uint32_t n, matched;
  int rc;
  atomic_int done;
} hang_arg;

static void *hang_match(void *p) {
  hang_arg *a = p;
  pkv_seq_id s;
  a->rc = pkv_seq_create(a->c, NULL, &s);
  if (a->rc == 0) a->rc = pkv_seq_match_prefix(a->c, s, a->tok, a->n, 0, &a->matched);
  if (a->rc == 0) a->rc = pkv_seq_free(a->c, s);
  atomic_store(&a->done, 1);
  return NULL;
}

START_TEST(promotion_unlocked) {
  priv_server srv = {0};
  priv_start(&srv);
  char addr[128];
  snprintf(addr, sizeof addr, "unix:%s", srv.sock);
  pkv_cache *c = remote_cache(64, addr, "hang:", 3000); /* room: no evictions */
  int32_t a[6 * BS], b[5][4 * BS];
  tokens_for(a, 6 * BS, 1000);
  for (int i = 0; i < 5; i++) tokens_for(b[i], 4 * BS, 3000 + 100 * i);
  ck_assert_int_eq(kill(srv.pid, SIGSTOP), 0);
  hang_arg h = {.c = c, .tok = a, .n = 6 * BS};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, hang_match, &h), 0);
  usleep(200 * 1000); /* the match is in its round trip by now (or soon) */
  double t0 = now_ms();
  for (int i = 0; i < 5; i++) prefill(c, b[i], 4 * BS, 30 + i);
  pkv_stats ps;
  ck_assert_int_eq(pkv_stats_get(c, &ps), 0);
  pkv_tier_stats st;
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st), 0); /* no round trip wait */
  double dt = now_ms() - t0;
  int match_done = atomic_load(&h.done);
  kill(srv.pid, SIGCONT);
  pthread_join(th, NULL);
  ck_assert_msg(!match_done && dt < 1500, "calls took %.0f ms beside a match "
                "waiting on Redis (match %s)", dt, match_done ? "done" : "waiting");
  ck_assert_int_eq(h.rc, 0);
  ck_assert_uint_eq(h.matched, 0);
  /* SIGCONT let the server answer the match's STRLEN: a's blocks are not
   * there, so it matched nothing, in one round trip */
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st), 0);
  ck_assert_uint_eq(st.gets, 0);
  ck_assert_uint_eq(match_check(c, b[4], 4 * BS, 34), 4 * BS);
  pkv_cache_destroy(c);
  priv_cleanup(&srv);
}
END_TEST

static bool same_sigpipe(const struct sigaction *a, const struct sigaction *b) {
  return a->sa_handler == b->sa_handler && a->sa_flags == b->sa_flags;
}

START_TEST(killed_and_restarted) {
  /* The host's SIGPIPE stays at its default (which kills): a dead socket
   * must not raise it, and the library must not change it. */
  struct sigaction dfl = {.sa_handler = SIG_DFL}, before, after;
  sigaction(SIGPIPE, &dfl, NULL);
  sigaction(SIGPIPE, NULL, &before);
  sigset_t mask0, mask1;
  pthread_sigmask(SIG_SETMASK, NULL, &mask0);

  priv_server srv = {0};
  priv_start(&srv);
  char addr[128];
  snprintf(addr, sizeof addr, "unix:%s", srv.sock);
  pkv_cache *c = remote_cache(16, addr, "kill:", 300);
  int32_t a[6 * BS], b[6 * BS], d[6 * BS];
  tokens_for(a, 6 * BS, 1000);
  tokens_for(b, 6 * BS, 3000);
  tokens_for(d, 6 * BS, 7000);
  prefill(c, a, 6 * BS, 11);
  ck_assert_int_eq(pkv_evict(c, 6), 0);
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 6 * BS); /* from redis */
  prefill(c, b, 6 * BS, 12);                                 /* local */

  priv_kill(&srv);
  pkv_tier_stats st0, st1;
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st0), 0);
  double t0 = now_ms();
  /* local hits keep coming; evictions into a dead server fail fast */
  ck_assert_uint_eq(match_check(c, b, 6 * BS, 12), 6 * BS);
  evict_all(c); /* a's and b's 12 blocks */
  ck_assert_uint_eq(match_check(c, a, 6 * BS, 11), 0); /* gone with redis */
  prefill(c, d, 6 * BS, 13);
  ck_assert_uint_eq(match_check(c, d, 6 * BS, 13), 6 * BS);
  double dt = now_ms() - t0;
  ck_assert_msg(dt < 1000, "calls took %.0f ms with redis dead", dt);
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st1), 0);
  ck_assert_uint_ge(st1.errors, st0.errors + 12);

  /* restarted (empty: no persistence): reconnects and hits again */
  priv_start(&srv);
  double end = now_ms() + 5000;
  uint32_t m = 0;
  while (m == 0 && now_ms() < end) {
    prefill(c, a, 6 * BS, 11);
    evict_all(c);
    m = match_check(c, a, 6 * BS, 11);
    if (m == 0) usleep(50 * 1000);
  }
  ck_assert_uint_eq(m, 6 * BS);
  pkv_tier_stats st2;
  ck_assert_int_eq(pkv_cache_remote_stats(c, &st2), 0);
  ck_assert_uint_gt(st2.hits, st1.hits);

  sigaction(SIGPIPE, NULL, &after);
  ck_assert_msg(same_sigpipe(&before, &after), "SIGPIPE disposition changed");
  pthread_sigmask(SIG_SETMASK, NULL, &mask1);
  ck_assert_int_eq(sigismember(&mask0, SIGPIPE), sigismember(&mask1, SIGPIPE));
  pkv_cache_destroy(c);
  priv_cleanup(&srv);
}
END_TEST

START_TEST(sigpipe_on_dead_socket) {
  /* Large pipelined puts into a server killed mid-run: the writes hit a
   * reset socket; SIGPIPE at its default would kill this process. */
  signal(SIGPIPE, SIG_DFL);
  priv_server srv = {0};
  priv_start(&srv);
  char addr[128];
  snprintf(addr, sizeof addr, "unix:%s", srv.sock);
  pkv__tier *t = tier_new(addr, "pipe:", 0);
  tblocks tb;
  tb_make(&tb, 8, 16, 1 << 20, 5);
  ck_assert_int_eq(t->ops->put(t, tb.b, 8), 0); /* connected, stored */
  priv_kill(&srv);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(t->ops->put(t, tb.b, 8), 0);
    usleep(30 * 1000); /* past the backoff: the next call tries again */
  }
  pkv__redis_counters c;
  pkv__redis_counters_get(t, &c);
  ck_assert_uint_ge(c.io_failures + c.connect_failures, 1);
  pkv_tier_stats st;
  t->ops->stats(t, &st);
  ck_assert_uint_eq(st.puts, 8);
  ck_assert_uint_ge(st.errors, 8);
  struct sigaction now;
  sigaction(SIGPIPE, NULL, &now);
  ck_assert_ptr_eq((void *)now.sa_handler, (void *)SIG_DFL);
  tb_free(&tb);
  t->ops->destroy(t);
  priv_cleanup(&srv);
}
END_TEST

/* Two "servers" in two processes share a prefix through one redis. */
START_TEST(two_processes) {
  char pfx[96];
  prefix_for(pfx, sizeof pfx, "2p");
  int32_t a[10 * BS];
  tokens_for(a, 10 * BS, 42000);
  pid_t pa = fork();
  ck_assert_int_ge(pa, 0);
  if (pa == 0) { /* A: prefill, commit, evict into redis */
    pkv_cache *c = remote_cache(16, shared_addr(), pfx, 1000);
    prefill(c, a, 10 * BS, 77);
    if (pkv_evict(c, 10) != 0) _exit(2);
    pkv_tier_stats st;
    if (pkv_cache_remote_stats(c, &st) != 0 || st.puts != 10) _exit(3);
    pkv_cache_destroy(c);
    _exit(0);
  }
  int status;
  ck_assert_int_eq(waitpid(pa, &status, 0), pa);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "process A: %d", status);
  pid_t pb = fork();
  ck_assert_int_ge(pb, 0);
  if (pb == 0) { /* B: a fresh cache matches A's prefix with A's K/V */
    pkv_cache *c = remote_cache(16, shared_addr(), pfx, 1000);
    pkv_seq_id s;
    uint32_t m = 0;
    if (pkv_seq_create(c, NULL, &s) || pkv_seq_match_prefix(c, s, a, 10 * BS, 0, &m))
      _exit(2);
    if (m != 10 * BS) _exit(3);
    int64_t slots[10 * BS];
    if (pkv_slot_mapping(c, s, 0, m, slots)) _exit(4);
    for (uint32_t i = 0; i < m; i++)
      if (!tu_slot_matches(c, slots[i], 77, i)) _exit(5); /* byte-identical */
    pkv_tier_stats st;
    if (pkv_cache_remote_stats(c, &st) || st.hits != 10 || st.errors) _exit(6);
    pkv_cache_destroy(c);
    _exit(0);
  }
  ck_assert_int_eq(waitpid(pb, &status, 0), pb);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "process B failed at step %d", WEXITSTATUS(status));
}
END_TEST


static void chain_stats(pkv_cache *c, pkv_tier_stats *h, pkv_tier_stats *f,
                        pkv_tier_stats *r) {
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_HOST, h), 0);
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_FILE, f), 0);
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_REDIS, r), 0);
}

/* The chain: pool -> host (2 blocks) -> file (2 blocks) -> redis.  Evicting
 * 8 blocks fills host and file in turn, the rest reaches redis; a match
 * promotes the whole prefix back through the chain, byte-identical; with
 * redis killed, the local tiers keep serving and the losses are counted. */
START_TEST(chain_order) {
  priv_server srv = {0};
  priv_start(&srv);
  char addr[128], dir[] = "/tmp/pkv-chain-XXXXXX";
  snprintf(addr, sizeof addr, "unix:%s", srv.sock);
  ck_assert_ptr_nonnull(mkdtemp(dir));
  pkv_config cfg;
  tu_config(&cfg, PKV_STORAGE_OWNED, 8, BS);
  cfg.head_dim = 64;
  uint64_t kvb = pkv_config_block_bytes(&cfg);
  cfg.host_tier_bytes = 2 * (kvb + BS * 4);
  pkv_cache *c = tu_cache(&cfg);
  ck_assert_int_eq(pkv_cache_set_file_tier(c, dir, 2 * (80 + BS * 4 + kvb)), 0);
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  o.address = addr;
  o.key_prefix = "chain:";
  o.timeout_ms = 300;
  ck_assert_int_eq(pkv_cache_set_remote_tier(c, &o), 0);
  int32_t a[8 * BS], d[4 * BS];
  tokens_for(a, 8 * BS, 1000);
  tokens_for(d, 4 * BS, 9000);
  prefill(c, a, 8 * BS, 21);
  ck_assert_int_eq(pkv_evict(c, 8), 0);
  pkv_tier_stats h, f, r;
  chain_stats(c, &h, &f, &r);
  ck_assert_str_eq(r.name, "redis");
  /* host took all 8 and passed 6 down; file took 6 and passed 4 down;
   * redis got 4, sent in one batch when pkv_evict returned */
  uint64_t want[] = {8, 6, 2, 6, 4, 2, 4, 0};
  uint64_t have[] = {h.puts, h.evictions, h.blocks, f.puts, f.evictions,
                     f.blocks, r.puts, r.errors};
  ck_assert_mem_eq(have, want, sizeof want);
  /* the whole prefix comes back up, from all three tiers */
  ck_assert_uint_eq(match_check(c, a, 8 * BS, 21), 8 * BS);
  chain_stats(c, &h, &f, &r);
  ck_assert_uint_eq(h.promotions, 2);
  ck_assert_uint_eq(f.promotions, 2);
  ck_assert_uint_eq(r.promotions, 4);
  ck_assert_uint_eq(r.hits, 4);
  ck_assert_uint_le(r.gets, 4); /* one batch: only the run redis holds */
  /* redis down mid-run: local tiers serve, losses counted, calls fast */
  priv_kill(&srv);
  double t0 = now_ms();
  evict_all(c);             /* a's 8 blocks: 4 of them toward a dead redis */
  prefill(c, d, 4 * BS, 22);
  ck_assert_int_eq(pkv_evict(c, 4), 0); /* d: host 2, file 2 */
  ck_assert_uint_eq(match_check(c, d, 4 * BS, 22), 4 * BS);
  ck_assert_uint_eq(match_check(c, a, 8 * BS, 21), 0); /* its head was in redis */
  double dt = now_ms() - t0;
  ck_assert_msg(dt < 1500, "calls took %.0f ms with redis dead", dt);
  pkv_tier_stats r2;
  ck_assert_int_eq(pkv_tier_stats_get(c, PKV_TIER_REDIS, &r2), 0);
  ck_assert_uint_gt(r2.errors, r.errors);
  ck_assert_uint_eq(r2.puts, r.puts);
  pkv_cache_destroy(c);
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
  priv_cleanup(&srv);
}
END_TEST

/* ------------------------------------------------ threads */

/* Several threads on two caches that share one Redis key prefix, at the
 * same time: each matches one of a few prompts (promoting what Redis
 * holds), checks every matched slot's K/V, appends and writes the rest,
 * commits, frees, and now and then evicts (demoting to Redis).  K/V is a
 * function of (prompt, position), so a block promoted from the other
 * cache's puts is checked as strictly as a local one.  Workers record the
 * first failure (Check's asserts are not for other threads); the main
 * thread asserts.  `make tsan` runs this case under ThreadSanitizer. */
#define MT_THREADS 4
#define MT_PROMPTS 3
#define MT_BLOCKS 6
#define MT_ITERS 40

typedef struct mt_world {
  pkv_cache *c[2];
  int32_t tok[MT_PROMPTS][MT_BLOCKS * BS];
  atomic_int failed;
  pthread_mutex_t why_lock;
  char why[256];
} mt_world;

typedef struct mt_arg {
  mt_world *w;
  unsigned index;
  uint64_t matched;
} mt_arg;

__attribute__((format(printf, 2, 3))) static void mt_fail(mt_world *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  tu_fail_first(&w->failed, &w->why_lock, w->why, sizeof w->why, fmt, ap);
  va_end(ap);
}

/* One request: match, check, fill the rest, commit, free.  False on a
 * failure (recorded). */
static bool mt_request(mt_world *w, pkv_cache *c, unsigned p, uint64_t *matched) {
  const uint32_t n = MT_BLOCKS * BS;
  int64_t slots[MT_BLOCKS * BS];
  pkv_seq_id s;
  uint32_t m = 0;
  int rc = pkv_seq_create(c, NULL, &s);
  if (rc == 0) rc = pkv_seq_match_prefix(c, s, w->tok[p], n, 0, &m);
  if (rc == 0 && m > 0) rc = pkv_slot_mapping(c, s, 0, m, slots);
  if (rc != 0) {
    mt_fail(w, "match: %s", pkv_last_error());
    return false;
  }
  for (uint32_t i = 0; i < m; i++)
    if (!tu_slot_matches(c, slots[i], 100 + p, i)) {
      mt_fail(w, "prompt %u token %u: wrong K/V after a match of %u", p, i, m);
      return false;
    }
  *matched += m;
  if (m < n) {
    rc = pkv_seq_append(c, s, w->tok[p] + m, n - m, slots);
    if (rc != 0) {
      mt_fail(w, "append: %s", pkv_last_error());
      return false;
    }
    for (uint32_t i = 0; i < n - m; i++) tu_write_slot(c, slots[i], 100 + p, m + i);
  }
  if ((rc = pkv_seq_commit(c, s, n)) != 0 || (rc = pkv_seq_free(c, s)) != 0) {
    mt_fail(w, "commit/free: %s", pkv_last_error());
    return false;
  }
  return true;
}

static void *mt_worker(void *arg) {
  mt_arg *a = arg;
  mt_world *w = a->w;
  pkv_cache *c = w->c[a->index % 2];
  for (unsigned it = 0; it < MT_ITERS && !atomic_load(&w->failed); it++) {
    if (!mt_request(w, c, (a->index + it) % MT_PROMPTS, &a->matched)) break;
    if (it % 3 == a->index % 3 && pkv_evict(c, 4) != 0) { /* demote to redis */
      mt_fail(w, "evict: %s", pkv_last_error());
      break;
    }
  }
  return NULL;
}

START_TEST(threads_share_redis) {
  char pfx[96];
  prefix_for(pfx, sizeof pfx, "mt");
  mt_world w = {.why_lock = PTHREAD_MUTEX_INITIALIZER};
  /* 16 blocks a cache: two requests of 6-7 blocks fit, the rest evicts */
  for (int i = 0; i < 2; i++) w.c[i] = remote_cache(16, shared_addr(), pfx, 2000);
  for (unsigned p = 0; p < MT_PROMPTS; p++) tokens_for(w.tok[p], MT_BLOCKS * BS, 20000 + 1000 * (int32_t)p);
  pthread_t th[MT_THREADS];
  mt_arg args[MT_THREADS];
  for (unsigned i = 0; i < MT_THREADS; i++) {
    args[i] = (mt_arg){.w = &w, .index = i};
    ck_assert_int_eq(pthread_create(&th[i], NULL, mt_worker, &args[i]), 0);
  }
  for (unsigned i = 0; i < MT_THREADS; i++) pthread_join(th[i], NULL);
  ck_assert_msg(!atomic_load(&w.failed), "%s", w.why);
  /* Every prompt was committed whole on both caches: with all of it
   * evicted to Redis, each cache fetches every prompt back in full. */
  for (int i = 0; i < 2; i++) {
    TU_CHECK(w.c[i]);
    evict_all(w.c[i]);
  }
  for (int i = 0; i < 2; i++)
    for (unsigned p = 0; p < MT_PROMPTS; p++)
      ck_assert_uint_eq(match_check(w.c[i], w.tok[p], MT_BLOCKS * BS, 100 + p), MT_BLOCKS * BS);
  for (int i = 0; i < 2; i++) {
    pkv_tier_stats st;
    ck_assert_int_eq(pkv_cache_remote_stats(w.c[i], &st), 0);
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_uint_ge(st.hits, MT_PROMPTS * MT_BLOCKS);
    ck_assert_uint_ge(st.promotions, MT_PROMPTS * MT_BLOCKS);
    pkv_cache_destroy(w.c[i]);
  }
}
END_TEST

TU_MAIN("redis",
    {"tier", 0, {{xsum_paths}, {round_trip}, {batch_64}, {ttl_expiry}, {bad_values}, {mixed_big_batch}}},
    {"bad input", 0, {{bad_address}, {unreachable}}},
    {"cache", 0, {{evict_then_fetch}, {two_processes}}},
    {"threads", 60, {{threads_share_redis}}},
    {"failures", 30, {{killed_and_restarted}, {sigpipe_on_dead_socket}, {chain_order},
                      {promotion_unlocked}}})
