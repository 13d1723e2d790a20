/*
 * tier/redis.c — a tier below the block pool kept in a Redis server, so that
 * caches in several processes (or machines) share prefixes.
 *
 *   key   = prefix + ns digest (8 hex) + ":" + chained key (32 hex)
 *   value = header (64 bytes) | ntok int32 token ids | kv_bytes of K/V
 *           header: magic, format, header size, key, parent, ns digest,
 *                   ntok, kv_bytes, XXH3-64(tokens + kv)
 *
 * A fetched value is trusted only when all of that verifies against the
 * block asked for — size, magic, key, parent, namespace, the token ids
 * themselves, and the checksum — so a corrupted, truncated or foreign value
 * (another cache's block under a colliding key, another model's K/V under a
 * shared prefix) is a miss and a counted error, never K/V.
 *
 * Round trips.  put and get pipeline the n blocks (SET key value PX ttl;
 * GET key): commands are written ahead of their replies while at most
 * WINDOW_BYTES of values are in flight, so a batch of small blocks costs
 * one round trip and a batch of big ones streams without stalls.  SET values are sent straight from the
 * caller's token and K/V buffers with sendmsg(2) iovecs (no copy into an
 * output buffer), each header's checksum computed just before its command
 * goes out (and one block ahead, overlapping the server's read).  A GET
 * value is framed by take_bulk: received from the socket straight into a
 * scratch buffer, hashed a chunk at a time while the chunk is in cache,
 * and copied into the caller's block only once it verified (the block is
 * never written otherwise).  Every other reply (status, error, integer,
 * nil, anything unexpected) is parsed by hiredis's protocol reader with our
 * own reply-object functions.
 *
 * Why not hiredis's blocking redisContext: its write path (0.14) memmoves the
 * unsent rest of its output buffer after every partial write (quadratic for
 * a pipeline of 2 MiB values), reads 16 KiB per syscall, and writes with
 * write(2), which raises SIGPIPE on a dead peer — and the library must not
 * touch the host's signal state.  Here every send uses MSG_NOSIGNAL, the
 * socket is non-blocking and every wait is a poll(2) bounded by timeout_ms
 * of no progress, so a dead or hung server costs at most that.
 *
 * Failure model.  Any I/O error, timeout or protocol error closes the
 * connection (a half-read pipeline cannot be resumed), counts the blocks
 * of the call as misses and errors, and arms a backoff (20 ms doubling to
 * 1 s); calls during the backoff fail at once (counted), and the first call
 * after it reconnects.  The cache above keeps serving its own blocks.
 *
 * libhiredis is loaded with dlopen on first use, by the soname of the
 * header we were compiled against (its structs' layout is that version's),
 * so libpagedkv.so has no DT_NEEDED on it and loads where it is absent.
 * The reader allocates with hiredis's own malloc (outside the allocator
 * shim: hiredis 0.14 has no per-reader allocator, and its global one is
 * process state the library must not change).
 */
#include "tier/redis.h"

#include "internal.h"
#include "tier/xsum.h"

#include <dlfcn.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PREFIX_MAX 128
#define HOST_MAX 255
#define RBUF_BYTES (1u << 20)
#define BACKOFF_MIN_NS 20000000ull
#define BACKOFF_MAX_NS 1000000000ull
#define IOV_BATCH 1024 /* IOV_MAX on Linux */
/* Values in flight per connection: a pipeline keeps sending until this many
 * value bytes await their replies.  Small blocks still go many per round
 * trip (8 x 128 KiB); multi-megabyte SETs go one at a time, because Redis
 * serves a deep pipeline of big values slower (bench_redis: 16 x 2 MiB SET
 * pipelined ran at a tenth of the rate of one at a time in
 * redis-benchmark; our put gained 0.44 -> 0.60 GB/s going from a 4 MiB
 * window to this one, and two SETs in flight measured no better than one
 * in the 17:05 run).  GETs keep at least GET_AHEAD in flight, so the
 * server sends the next value while we verify and copy this one. */
#define WINDOW_BYTES (1u << 20)
#define GET_AHEAD 2
#define SET_AHEAD 1
/* Text of one command around its value: "*5 $3 SET $klen key $vlen" +
 * header + "\r\n $2 PX $n ttl" (key <= prefix + 41). */
#define CMD_TEXT_MAX (PREFIX_MAX + 256 + PKV__REDIS_HDR)

/* ------------------------------------------------ libhiredis, loaded once */

#define PKV__STR_(x) #x
#define PKV__STR(x) PKV__STR_(x)
static struct {
  redisReader *(*create)(redisReplyObjectFunctions *fn);
  void (*destroy)(redisReader *r);
  int (*feed)(redisReader *r, const char *buf, size_t len);
  int (*get_reply)(redisReader *r, void **reply);
  bool ok;
  char why[160];
} hi;
static pthread_once_t hi_once = PTHREAD_ONCE_INIT;

static void hi_load(void) {
  /* Only the soname of our header: a reader of another version has
   * another struct layout. */
  const char *so = "libhiredis.so." PKV__STR(HIREDIS_SONAME);
  void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(hi.why, sizeof hi.why, "cannot load %s (install libhiredis)", so);
    return;
  }
  *(void **)&hi.create = dlsym(h, "redisReaderCreateWithFunctions");
  *(void **)&hi.destroy = dlsym(h, "redisReaderFree");
  *(void **)&hi.feed = dlsym(h, "redisReaderFeed");
  *(void **)&hi.get_reply = dlsym(h, "redisReaderGetReply");
  if (!hi.create || !hi.destroy || !hi.feed || !hi.get_reply) {
    snprintf(hi.why, sizeof hi.why, "%s lacks the reader functions", so);
    return; /* the handle stays: unloading a library is never safe here */
  }
  hi.ok = true;
}

/* ------------------------------------------------ the tier */

typedef enum rx_mode { RX_SET, RX_GET, RX_STRLEN } rx_mode;
typedef enum verdict { V_NONE, V_OK, V_SIZE, V_FOREIGN, V_CORRUPT } verdict;

/* The reply being parsed: our reader objects all point here (one reply at
 * a time; elements of an unexpected array only mark it nested). */
typedef struct rx_obj {
  int type;            /* REDIS_REPLY_*, 0 before the reply */
  long long integer;
  verdict v;           /* GET: what the value proved */
  bool nested;
  char text[96];       /* start of a status or error reply */
} rx_obj;

typedef struct redis_tier {
  pkv__tier base;
  pthread_mutex_t mu;  /* one call at a time on the connection */
  /* configuration */
  bool unix_socket;
  char host[HOST_MAX + 1];
  char port[8];
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  char prefix[PREFIX_MAX + 1];
  size_t prefix_len;
  uint64_t ttl_ms;
  int timeout_ms;
  /* connection */
  int fd;              /* -1 = disconnected */
  uint64_t retry_at;   /* monotonic ns before which we do not reconnect */
  uint64_t backoff;    /* ns; 0 after a success */
  redisReader *reader;
  redisReplyObjectFunctions fns;
  char *rbuf;          /* RBUF_BYTES of recv buffer */
  size_t rpos, rlen;   /* rbuf[rpos..rlen): received, not yet parsed */
  uint8_t *scratch;    /* a GET value as it arrives, until it verifies */
  size_t scratch_cap;
  char *text;          /* command text */
  size_t text_cap;
  struct iovec *iov;
  size_t iov_cap;
  /* the call in progress, for the reader's callbacks */
  size_t tx_hashed;    /* put: blocks whose header is computed */
  rx_mode mode;
  pkv__tier_block *rx_blocks;
  size_t rx_i;
  rx_obj rx;
  /* counters (under mu), and the copy stats() reads (under pub_mu), taken
   * at the end of every call: reading them never waits for a round trip */
  pkv_tier_stats st;
  pkv__redis_counters c;
  pthread_mutex_t pub_mu;
  pkv_tier_stats st_pub;
  pkv__redis_counters c_pub;
} redis_tier;

/* The end of a call: publish the counters, release the connection. */
static void call_end(redis_tier *t) {
  pthread_mutex_lock(&t->pub_mu);
  t->st_pub = t->st;
  t->c_pub = t->c;
  pthread_mutex_unlock(&t->pub_mu);
  pthread_mutex_unlock(&t->mu);
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------ value format */

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Header layout (offsets): 0 magic u32, 4 format u16, 6 header size u16,
 * 8 key (lo, hi), 24 parent (lo, hi), 40 ns u32, 44 ntok u32,
 * 48 kv_bytes u64, 56 checksum u64. */
void pkv__redis_header(const pkv__tier_block *b, uint8_t *h) {
  put_u32(h, PKV__REDIS_MAGIC);
  put_u16(h + 4, PKV__REDIS_FORMAT);
  put_u16(h + 6, PKV__REDIS_HDR);
  put_u64(h + 8, b->key.lo);
  put_u64(h + 16, b->key.hi);
  put_u64(h + 24, b->parent.lo);
  put_u64(h + 32, b->parent.hi);
  put_u32(h + 40, b->ns_id_hash);
  put_u32(h + 44, b->ntok);
  put_u64(h + 48, (uint64_t)b->kv_bytes);
  put_u64(h + 56, pkv__tier_checksum(b->tokens, b->ntok, b->kv, b->kv_bytes));
}

static size_t value_bytes(const pkv__tier_block *b) {
  return PKV__REDIS_HDR + (size_t)b->ntok * 4 + b->kv_bytes;
}

/* Whether value v (len bytes) is block b's, all but the checksum (whose
 * digest over v[HDR..len) the caller computes; *want gets the stored one). */
static verdict verify_head(const pkv__tier_block *b, const uint8_t *v, size_t len,
                           uint64_t *want) {
  if (len < PKV__REDIS_HDR) return V_SIZE;
  if (get_u32(v) != PKV__REDIS_MAGIC || v[4] != PKV__REDIS_FORMAT || v[5] != 0 ||
      v[6] != PKV__REDIS_HDR || v[7] != 0)
    return V_CORRUPT;
  if (get_u64(v + 8) != b->key.lo || get_u64(v + 16) != b->key.hi ||
      get_u64(v + 24) != b->parent.lo || get_u64(v + 32) != b->parent.hi ||
      get_u32(v + 40) != b->ns_id_hash)
    return V_FOREIGN;
  if (get_u32(v + 44) != b->ntok || get_u64(v + 48) != (uint64_t)b->kv_bytes ||
      len != value_bytes(b))
    return V_SIZE;
  if (memcmp(v + PKV__REDIS_HDR, b->tokens, (size_t)b->ntok * 4) != 0) return V_FOREIGN;
  *want = get_u64(v + 56);
  return V_OK;
}

/* verify_head plus the checksum (sum = XXH3 of v[HDR..len)); on V_OK the
 * K/V is copied into b->kv, or its kv_chunks pieces kv_stride apart
 * (nothing is written otherwise). */
static verdict accept_value(const pkv__tier_block *b, const uint8_t *v, size_t len,
                            uint64_t sum) {
  uint64_t want = 0;
  verdict r = verify_head(b, v, len, &want);
  if (r != V_OK) return r;
  if (sum != want) return V_CORRUPT;
  const uint8_t *kv = v + PKV__REDIS_HDR + (size_t)b->ntok * 4;
  if (b->kv_chunks > 1) { /* straight into a pool block's regions */
    size_t piece = b->kv_bytes / b->kv_chunks;
    for (uint32_t i = 0; i < b->kv_chunks; i++)
      memcpy((uint8_t *)b->kv + i * b->kv_stride, kv + i * piece, piece);
  } else {
    memcpy(b->kv, kv, b->kv_bytes);
  }
  return V_OK;
}

/* accept_value of a value whose checksum is still to be computed. */
static verdict verify_value(const pkv__tier_block *b, const uint8_t *v, size_t len) {
  if (len < PKV__REDIS_HDR) return V_SIZE;
  return accept_value(b, v, len, pkv__xsum64(v + PKV__REDIS_HDR, len - PKV__REDIS_HDR));
}

/* ------------------------------------------------ reader objects */

static void *rx_note(const redisReadTask *task, int type) {
  redis_tier *t = task->privdata;
  if (task->parent) {
    t->rx.nested = true;
  } else {
    t->rx.type = type;
  }
  return &t->rx;
}

static void *rx_string(const redisReadTask *task, char *str, size_t len) {
  redis_tier *t = task->privdata;
  if (task->parent) return rx_note(task, task->type);
  t->rx.type = task->type;
  if (task->type == REDIS_REPLY_STRING && t->mode == RX_GET)
    t->rx.v = verify_value(&t->rx_blocks[t->rx_i], (const uint8_t *)str, len);
  else if (task->type == REDIS_REPLY_STRING && t->mode == RX_STRLEN)
    t->rx.v = V_SIZE;
  else
    snprintf(t->rx.text, sizeof t->rx.text, "%.*s", (int)(len < 90 ? len : 90), str);
  return &t->rx;
}
static void *rx_array(const redisReadTask *task, int elements) {
  (void)elements;
  return rx_note(task, REDIS_REPLY_ARRAY);
}
static void *rx_integer(const redisReadTask *task, long long value) {
  redis_tier *t = task->privdata;
  if (!task->parent) t->rx.integer = value;
  return rx_note(task, REDIS_REPLY_INTEGER);
}
static void *rx_nil(const redisReadTask *task) {
  return rx_note(task, REDIS_REPLY_NIL);
}
static void rx_free(void *obj) { (void)obj; /* all point into the tier */ }

/* ------------------------------------------------ address */

/* Parses "host:port", "[v6]:port", "unix:/path" or "/path" into t. */
static int parse_address(redis_tier *t, const char *a) {
  if (!a || !*a) return pkv__err(PKV_EINVAL, "redis: address is empty");
  const char *path = strncmp(a, "unix:", 5) == 0 ? a + 5 : a[0] == '/' ? a : NULL;
  if (path) {
    if (path[0] != '/' || strlen(path) >= sizeof t->path)
      return pkv__err(PKV_EINVAL, "redis: address '%.80s': a Unix socket needs an "
                      "absolute path shorter than %zu bytes", a, sizeof t->path);
    t->unix_socket = true;
    strcpy(t->path, path);
    return 0;
  }
  const char *colon = strrchr(a, ':');
  const char *h = a, *h_end = colon;
  if (a[0] == '[') { /* [v6]:port */
    const char *close = strchr(a, ']');
    if (!close || close[1] != ':')
      return pkv__err(PKV_EINVAL, "redis: address '%.80s': expected [ipv6]:port", a);
    h = a + 1;
    h_end = close;
    colon = close + 1;
  } else if (colon && memchr(a, ':', (size_t)(colon - a))) {
    return pkv__err(PKV_EINVAL, "redis: address '%.80s': write an IPv6 address "
                    "as [addr]:port", a);
  }
  if (!colon || h_end == h)
    return pkv__err(PKV_EINVAL, "redis: address '%.80s': expected host:port, "
                    "unix:/path or /path", a);
  size_t hl = (size_t)(h_end - h);
  if (hl > HOST_MAX)
    return pkv__err(PKV_EINVAL, "redis: address: host longer than %d bytes", HOST_MAX);
  for (size_t i = 0; i < hl; i++) {
    char ch = h[i];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_' ||
              (ch == ':' && a[0] == '[');
    if (!ok)
      return pkv__err(PKV_EINVAL, "redis: address '%.80s': bad character in "
                      "host at byte %zu", a, (size_t)(h - a) + i);
  }
  const char *p = colon + 1;
  unsigned long port = 0;
  size_t pl = strlen(p);
  if (pl == 0 || pl > 5)
    return pkv__err(PKV_EINVAL, "redis: address '%.80s': port must be 1..65535", a);
  for (size_t i = 0; i < pl; i++) {
    if (p[i] < '0' || p[i] > '9')
      return pkv__err(PKV_EINVAL, "redis: address '%.80s': port must be 1..65535", a);
    port = port * 10 + (unsigned long)(p[i] - '0');
  }
  if (port == 0 || port > 65535)
    return pkv__err(PKV_EINVAL, "redis: address '%.80s': port must be 1..65535", a);
  memcpy(t->host, h, hl);
  t->host[hl] = '\0';
  snprintf(t->port, sizeof t->port, "%lu", port);
  return 0;
}

/* ------------------------------------------------ connection */

/* Waits up to timeout_ms for events on the socket; false on timeout. */
static bool wait_fd(redis_tier *t, short events) {
  struct pollfd p = {.fd = t->fd, .events = events};
  uint64_t end = mono_ns() + (uint64_t)t->timeout_ms * 1000000ull;
  for (;;) {
    uint64_t now = mono_ns();
    int ms = now >= end ? 0 : (int)((end - now + 999999) / 1000000);
    int r = poll(&p, 1, ms);
    if (r > 0) return true; /* readable, writable or an error to read */
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

static int connect_one(redis_tier *t, int family, const struct sockaddr *sa,
                       socklen_t len) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, sa, len) != 0 && errno != EINPROGRESS && errno != EAGAIN) {
    close(fd);
    return -1;
  }
  t->fd = fd;
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  if (!wait_fd(t, POLLOUT) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 ||
      soerr != 0) {
    t->fd = -1;
    close(fd);
    return -1;
  }
  t->fd = -1;
  if (family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

static int sock_connect(redis_tier *t) {
  if (t->unix_socket) {
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    strcpy(su.sun_path, t->path);
    return connect_one(t, AF_UNIX, (struct sockaddr *)&su, sizeof su);
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  if (getaddrinfo(t->host, t->port, &hints, &res) != 0) return -1;
  int fd = -1;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
    fd = connect_one(t, ai->ai_family, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(res);
  return fd;
}

static void arm_backoff(redis_tier *t) {
  t->backoff = t->backoff ? t->backoff * 2 : BACKOFF_MIN_NS;
  if (t->backoff > BACKOFF_MAX_NS) t->backoff = BACKOFF_MAX_NS;
  t->retry_at = mono_ns() + t->backoff;
}

/* Closes a connection whose pipeline can no longer be trusted. */
static void drop(redis_tier *t) {
  if (t->fd >= 0) close(t->fd);
  t->fd = -1;
  t->rpos = t->rlen = 0;
  t->c.io_failures++;
  arm_backoff(t);
}

/* Connected, or connects unless the backoff says not yet. */
static bool ready(redis_tier *t) {
  if (t->fd >= 0) return true;
  if (mono_ns() < t->retry_at) {
    t->c.skipped_calls++;
    return false;
  }
  int fd = sock_connect(t);
  if (fd < 0) {
    t->c.connect_failures++;
    arm_backoff(t);
    return false;
  }
  redisReader *r = hi.create(&t->fns);
  if (!r) {
    close(fd);
    arm_backoff(t);
    return false;
  }
  if (t->reader) hi.destroy(t->reader);
  t->reader = r;
  r->privdata = t;
  r->maxbuf = 0; /* keep the buffer: values are megabytes */
  t->fd = fd;
  t->rpos = t->rlen = 0;
  t->backoff = 0;
  t->c.connects++;
  return true;
}

/* Sends iov[0..n) completely (the array is consumed). */
static bool send_all(redis_tier *t, struct iovec *iov, size_t n) {
  while (n > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = n < IOV_BATCH ? n : IOV_BATCH};
    ssize_t w = sendmsg(t->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(t, POLLOUT)) continue;
      return false;
    }
    size_t left = (size_t)w;
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

/* Receives up to cap bytes at p (waiting for at least one); false when the
 * connection failed or closed. */
static bool recv_some(redis_tier *t, void *p, size_t cap, size_t *got) {
  for (;;) {
    ssize_t k = recv(t->fd, p, cap, MSG_DONTWAIT);
    if (k > 0) {
      t->c.bytes_read += (uint64_t)k;
      *got = (size_t)k;
      return true;
    }
    if (k == 0) return false; /* the server closed */
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(t, POLLIN)) continue;
    return false;
  }
}

/* More bytes at the end of rbuf (the unparsed rest moved to its start). */
static bool fill(redis_tier *t) {
  if (t->rpos > 0) {
    memmove(t->rbuf, t->rbuf + t->rpos, t->rlen - t->rpos);
    t->rlen -= t->rpos;
    t->rpos = 0;
  }
  size_t got;
  if (t->rlen == RBUF_BYTES || !recv_some(t, t->rbuf + t->rlen, RBUF_BYTES - t->rlen, &got))
    return false;
  t->rlen += got;
  return true;
}

/* The values of a GET are read here, not by hiredis's reader (which would
 * copy each into its growing buffer, memmove the rest of the pipeline after
 * it, and hand it to rx_string for the checksum pass and the copy out):
 * the value goes from the socket straight into t->scratch, is hashed a
 * chunk at a time while the chunk is in cache, and only a value that
 * verifies is copied into the block — one pass over the bytes besides the
 * kernel's.  A value of the wrong size is read and dropped.  The chunk
 * size keeps a chunk in L2 between recv and hash. */
#define BULK_CHUNK (256u << 10)

/* Parses a bulk reply at rbuf[rpos] ('$' there): 1 read (t->rx filled),
 * 0 its header line is not all here yet, -1 protocol or I/O failure. */
static int take_bulk(redis_tier *t) {
  const char *p = t->rbuf + t->rpos, *end = t->rbuf + t->rlen;
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  if (!nl) return end - p > 24 ? -1 : 0;
  if (nl - p == 4 && memcmp(p, "$-1\r", 4) == 0) { /* nil: absent */
    t->rpos += 5;
    t->rx.type = REDIS_REPLY_NIL;
    return 1;
  }
  size_t len = 0;
  const char *q = p + 1;
  for (; q < nl - 1 && *q >= '0' && *q <= '9' && len < (1ull << 40); q++)
    len = len * 10 + (size_t)(*q - '0');
  if (q == p + 1 || q != nl - 1 || *q != '\r') return -1;
  t->rpos += (size_t)(nl + 1 - p);
  const pkv__tier_block *b = &t->rx_blocks[t->rx_i];
  bool keep = len == value_bytes(b);
  if (keep && len > t->scratch_cap) {
    uint8_t *s = pkv__realloc(t->scratch, len);
    if (!s) return -1; /* closes the connection: counted as errors */
    t->scratch = s;
    t->scratch_cap = len;
  }
  pkv__xsum st;
  pkv__xsum_reset(&st);
  size_t got = 0; /* value bytes read */
  while (got < len) {
    size_t avail = t->rlen - t->rpos, k;
    uint8_t *at = keep ? t->scratch + got : NULL;
    if (avail > 0) { /* what came with the header */
      k = avail < len - got ? avail : len - got;
      if (keep) memcpy(at, t->rbuf + t->rpos, k);
      t->rpos += k;
    } else if (keep) {
      size_t want = len - got < BULK_CHUNK ? len - got : BULK_CHUNK;
      if (!recv_some(t, at, want, &k)) return -1;
    } else {
      t->rpos = t->rlen = 0;
      size_t want = len - got < RBUF_BYTES ? len - got : RBUF_BYTES;
      if (!recv_some(t, t->rbuf, want, &k)) return -1;
    }
    if (keep && got + k > PKV__REDIS_HDR) { /* the checksum covers v[HDR..) */
      size_t from = got > PKV__REDIS_HDR ? got : PKV__REDIS_HDR;
      pkv__xsum_update(&st, t->scratch + from, got + k - from);
    }
    got += k;
  }
  while (t->rlen - t->rpos < 2)
    if (!fill(t)) return -1;
  if (memcmp(t->rbuf + t->rpos, "\r\n", 2) != 0) return -1;
  t->rpos += 2;
  t->rx.type = REDIS_REPLY_STRING;
  t->rx.v = keep ? accept_value(b, t->scratch, len, pkv__xsum_digest(&st)) : V_SIZE;
  return 1;
}

/* Whether hiredis's reader holds part of a reply (or unparsed bytes). */
static bool reader_busy(const redis_tier *t) {
  return t->reader->ridx >= 0 || t->reader->pos < t->reader->len;
}

/* Hands rbuf[rpos..rpos+k) to hiredis's reader. */
static bool feed(redis_tier *t, size_t k) {
  bool ok = hi.feed(t->reader, t->rbuf + t->rpos, k) == REDIS_OK;
  t->rpos += k;
  return ok;
}

/* Reads the next reply into t->rx: a GET's bulk value by take_bulk, any
 * other reply by hiredis's reader (whose callbacks fill t->rx), which is
 * fed a line at a time at a reply boundary so that the values after an
 * error or nil reply still come to take_bulk. */
static bool next_reply(redis_tier *t) {
  memset(&t->rx, 0, sizeof t->rx);
  for (;;) {
    size_t pending = t->rlen - t->rpos;
    if (pending > 0 && !reader_busy(t)) { /* a reply starts at rpos */
      if (t->mode == RX_GET && t->rbuf[t->rpos] == '$') {
        int r = take_bulk(t);
        if (r != 0) return r > 0;
      } else {
        const char *nl = memchr(t->rbuf + t->rpos, '\n', pending);
        if (!feed(t, nl ? (size_t)(nl + 1 - (t->rbuf + t->rpos)) : pending)) return false;
      }
    } else if (pending > 0 && !feed(t, pending)) {
      return false;
    }
    if (reader_busy(t)) {
      void *reply = NULL;
      if (hi.get_reply(t->reader, &reply) != REDIS_OK) return false; /* protocol */
      if (reply) return !t->rx.nested;
      if (t->rpos < t->rlen) continue;
    } else if (t->rpos < t->rlen && !(t->mode == RX_GET && t->rbuf[t->rpos] == '$')) {
      continue;
    }
    if (!fill(t)) return false;
  }
}

/* ------------------------------------------------ commands */

static bool reserve(redis_tier *t, size_t n_blocks, size_t iov_per_block) {
  size_t text = n_blocks * CMD_TEXT_MAX, iov = n_blocks * iov_per_block;
  if (text > t->text_cap) {
    char *p = pkv__realloc(t->text, text);
    if (!p) return false;
    t->text = p;
    t->text_cap = text;
  }
  if (iov > t->iov_cap) {
    struct iovec *p = pkv__realloc(t->iov, iov * sizeof *p);
    if (!p) return false;
    t->iov = p;
    t->iov_cap = iov;
  }
  return true;
}

size_t pkv__redis_key(pkv__tier *tier, const pkv__tier_block *b, char *out,
                      size_t cap) {
  redis_tier *t = (redis_tier *)tier;
  int n = snprintf(out, cap, "%s%08x:%016llx%016llx", t->prefix, b->ns_id_hash,
                   (unsigned long long)b->key.hi, (unsigned long long)b->key.lo);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* "$len\r\nbytes\r\n" of a short argument, at p. */
static char *bulk(char *p, const char *s, size_t len) {
  p += sprintf(p, "$%zu\r\n", len);
  memcpy(p, s, len);
  memcpy(p + len, "\r\n", 2);
  return p + len + 2;
}

/* Writes "*2 $cmd $key" for each block (GET, STRLEN) and sends them. */
/* Writes "*2 $cmd $key" for each block (GET, STRLEN) into t->text, one
 * iovec per command in t->iov. */
static void build_key_cmds(redis_tier *t, const char *cmd, const pkv__tier_block *b,
                           size_t n) {
  char *p = t->text;
  for (size_t i = 0; i < n; i++) {
    char key[PREFIX_MAX + 48];
    size_t kl = pkv__redis_key(&t->base, &b[i], key, sizeof key);
    char *start = p;
    p += sprintf(p, "*2\r\n");
    p = bulk(p, cmd, strlen(cmd));
    p = bulk(p, key, kl);
    t->iov[i] = (struct iovec){start, (size_t)(p - start)};
  }
}

/* The put of block i's header (its checksum is a pass over its bytes): in
 * the 64 bytes that end the first iovec of its command, computed just
 * before the command is sent — and one block ahead, while the server takes
 * in the one before, so the pass overlaps the transfer. */
static void hash_upto(redis_tier *t, const pkv__tier_block *b, size_t n, size_t upto) {
  for (; t->tx_hashed < upto && t->tx_hashed < n; t->tx_hashed++) {
    const struct iovec *v = &t->iov[t->tx_hashed * 4];
    pkv__redis_header(&b[t->tx_hashed],
                      (uint8_t *)v->iov_base + v->iov_len - PKV__REDIS_HDR);
  }
}

/* Writes commands [*sent, k) for the largest k that keeps the values in
 * flight (sent, reply not yet read) within the window — at least one
 * command when none is in flight, and for GET at least two (the server
 * sends the next value while we verify and copy this one).  Each command
 * is per_block iovecs of t->iov. */
static bool pump(redis_tier *t, const pkv__tier_block *b, size_t n, size_t per_block,
                 size_t *sent, size_t done, size_t *inflight) {
  size_t k = *sent;
  size_t least = done + (t->mode == RX_GET ? GET_AHEAD : SET_AHEAD);
  while (k < n && (k < least || *inflight + value_bytes(&b[k]) <= WINDOW_BYTES))
    *inflight += value_bytes(&b[k++]);
  if (k == *sent) return true;
  if (t->mode == RX_SET) hash_upto(t, b, n, k);
  bool ok = send_all(t, t->iov + *sent * per_block, (k - *sent) * per_block);
  *sent = k;
  if (t->mode == RX_SET) hash_upto(t, b, n, k + 1);
  return ok;
}

/* The start of put and get: room for the batch's commands, a connection.
 * False (the n blocks counted as errors) when either is missing. */
static bool batch_begin(redis_tier *t, size_t n, size_t per_block, int *rc) {
  if (!reserve(t, n, per_block)) {
    *rc = pkv__err(PKV_ENOMEM, "redis: out of memory for a batch of %zu", n);
    t->st.errors += n;
    return false;
  }
  if (!ready(t)) { /* counted; the cache goes on */
    t->st.errors += n;
    return false;
  }
  return true;
}

/* Reads reply i of a batch, first sending what the window allows.  False
 * (connection dropped, blocks i.. counted as errors: their fate is unknown)
 * when the round trip fails. */
static bool batch_reply(redis_tier *t, const pkv__tier_block *b, size_t n,
                        size_t per_block, size_t i, size_t *sent, size_t *inflight) {
  t->rx_i = i;
  if (!pump(t, b, n, per_block, sent, i, inflight) || !next_reply(t)) {
    drop(t);
    t->st.errors += n - i;
    return false;
  }
  *inflight -= value_bytes(&b[i]);
  return true;
}

static int redis_put(pkv__tier *tier, const pkv__tier_block *b, size_t n) {
  redis_tier *t = (redis_tier *)tier;
  if (n == 0) return 0;
  pthread_mutex_lock(&t->mu);
  int rc = 0;
  if (!batch_begin(t, n, 4, &rc)) goto out;
  char ttl[24];
  int ttl_len = t->ttl_ms ? snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)t->ttl_ms) : 0;
  char *p = t->text;
  struct iovec *iov = t->iov;
  for (size_t i = 0; i < n; i++) {
    char key[PREFIX_MAX + 48];
    size_t kl = pkv__redis_key(tier, &b[i], key, sizeof key);
    char *head = p;
    p += sprintf(p, "*%d\r\n", ttl_len ? 5 : 3);
    p = bulk(p, "SET", 3);
    p = bulk(p, key, kl);
    p += sprintf(p, "$%zu\r\n", value_bytes(&b[i]));
    p += PKV__REDIS_HDR; /* the header: hash_upto, when it is sent */
    *iov++ = (struct iovec){head, (size_t)(p - head)};
    *iov++ = (struct iovec){(void *)b[i].tokens, (size_t)b[i].ntok * 4};
    *iov++ = (struct iovec){b[i].kv, b[i].kv_bytes};
    char *tail = p;
    memcpy(p, "\r\n", 2);
    p += 2;
    if (ttl_len) {
      p = bulk(p, "PX", 2);
      p = bulk(p, ttl, (size_t)ttl_len);
    }
    *iov++ = (struct iovec){tail, (size_t)(p - tail)};
  }
  t->mode = RX_SET;
  t->tx_hashed = 0;
  size_t sent = 0, inflight = 0;
  for (size_t i = 0; i < n; i++) {
    if (!batch_reply(t, b, n, 4, i, &sent, &inflight)) goto out;
    if (t->rx.type == REDIS_REPLY_STATUS) {
      t->st.puts++;
      t->st.put_bytes += value_bytes(&b[i]);
    } else { /* e.g. OOM under maxmemory: skipped and counted */
      t->c.error_replies++;
      t->st.errors++;
      t->st.skipped++;
    }
  }
out:
  call_end(t);
  return rc;
}

static int redis_get(pkv__tier *tier, pkv__tier_block *b, size_t n, uint8_t *found) {
  redis_tier *t = (redis_tier *)tier;
  memset(found, 0, n);
  if (n == 0) return 0;
  pthread_mutex_lock(&t->mu);
  int rc = 0;
  t->st.gets += n;
  size_t hits = 0;
  if (!batch_begin(t, n, 1, &rc)) goto out;
  t->mode = RX_GET;
  t->rx_blocks = b;
  build_key_cmds(t, "GET", b, n);
  size_t sent = 0, inflight = 0;
  for (size_t i = 0; i < n; i++) {
    if (!batch_reply(t, b, n, 1, i, &sent, &inflight)) goto out;
    switch (t->rx.type) {
    case REDIS_REPLY_NIL: break; /* absent: a plain miss */
    case REDIS_REPLY_STRING:
      switch (t->rx.v) {
      case V_OK: found[i] = 1; hits++; break;
      case V_SIZE: t->c.wrong_size++; t->st.errors++; break;
      case V_FOREIGN: t->c.foreign++; t->st.errors++; break;
      default: t->c.corrupt++; t->st.errors++; break;
      }
      break;
    default: /* an error reply (e.g. WRONGTYPE), or a type GET never returns */
      t->c.error_replies++;
      t->st.errors++;
      break;
    }
  }
out:
  t->st.hits += hits;
  t->st.misses += n - hits;
  t->rx_blocks = NULL;
  call_end(t);
  return rc;
}

static int redis_contains(pkv__tier *tier, const pkv__tier_block *b) {
  redis_tier *t = (redis_tier *)tier;
  pthread_mutex_lock(&t->mu);
  int yes = 0;
  if (!reserve(t, 1, 1) || !ready(t)) goto out;
  t->mode = RX_STRLEN;
  build_key_cmds(t, "STRLEN", b, 1);
  if (!send_all(t, t->iov, 1) || !next_reply(t)) {
    drop(t);
    goto out;
  }
  /* STRLEN is 0 for an absent key; a value of the wrong size is no block. */
  yes = t->rx.type == REDIS_REPLY_INTEGER &&
        (unsigned long long)t->rx.integer == (unsigned long long)value_bytes(b);
out:
  call_end(t);
  return yes;
}

/* contains for n blocks in one round trip: n pipelined STRLENs (replies
 * are a few bytes each, so all are written before any is read). */
static void redis_contains_n(pkv__tier *tier, const pkv__tier_block *b, size_t n,
                             uint8_t *yes) {
  redis_tier *t = (redis_tier *)tier;
  memset(yes, 0, n);
  if (n == 0) return;
  pthread_mutex_lock(&t->mu);
  if (!reserve(t, n, 1) || !ready(t)) { /* the lookup failed: counted */
    t->st.errors += n;
    goto out;
  }
  t->mode = RX_STRLEN;
  build_key_cmds(t, "STRLEN", b, n);
  bool sent = send_all(t, t->iov, n);
  for (size_t i = 0; i < n; i++) {
    if (!sent || !next_reply(t)) {
      drop(t);
      t->st.errors += n;
      memset(yes, 0, n);
      goto out;
    }
    yes[i] = t->rx.type == REDIS_REPLY_INTEGER &&
             (unsigned long long)t->rx.integer == (unsigned long long)value_bytes(&b[i]);
  }
out:
  call_end(t);
}

static void redis_stats(pkv__tier *tier, pkv_tier_stats *out) {
  redis_tier *t = (redis_tier *)tier;
  pthread_mutex_lock(&t->pub_mu);
  *out = t->st_pub;
  pthread_mutex_unlock(&t->pub_mu);
}

void pkv__redis_counters_get(pkv__tier *tier, pkv__redis_counters *out) {
  redis_tier *t = (redis_tier *)tier;
  pthread_mutex_lock(&t->pub_mu);
  *out = t->c_pub;
  pthread_mutex_unlock(&t->pub_mu);
}

static void redis_destroy(pkv__tier *tier) {
  redis_tier *t = (redis_tier *)tier;
  if (!t) return;
  if (t->fd >= 0) close(t->fd);
  if (t->reader) hi.destroy(t->reader);
  pthread_mutex_destroy(&t->mu);
  pthread_mutex_destroy(&t->pub_mu);
  PKV__FREE_ALL(t->rbuf, t->scratch, t->text, t->iov, t);
}

static const pkv__tier_ops redis_ops = {
    .name = "redis", .put = redis_put, .get = redis_get, .contains = redis_contains,
    .stats = redis_stats, .destroy = redis_destroy, .contains_n = redis_contains_n};

/* ------------------------------------------------ options, create */

static const size_t redis_opts_ends[] = {PKV__V1_END(pkv_redis_opts)};

void pkv_redis_opts_init(pkv_redis_opts *opts) {
  pkv__err_clear();
  if (!opts) return;
  memset(opts, 0, sizeof *opts);
  opts->version = PKV_REDIS_OPTS_VERSION;
}

/* The caller's opts read in this version's layout (zeros = defaults). */
static int opts_in(const pkv_redis_opts *user, pkv_redis_opts *o) {
  static const pkv__abi_struct abi = PKV__ABI_STRUCT(
      pkv_redis_opts, "redis_opts", PKV_REDIS_OPTS_VERSION, redis_opts_ends);
  pkv_redis_opts def;
  pkv_redis_opts_init(&def);
  return pkv__abi_in(&abi, o, user, &def);
}

int pkv__redis_tier_create(const pkv_redis_opts *user, pkv__tier **out) {
  pkv_redis_opts o;
  int rc = !user || !out ? pkv__err(PKV_EINVAL, "redis: opts or out is NULL")
                         : opts_in(user, &o);
  if (rc) return rc;
  const char *prefix = o.key_prefix ? o.key_prefix : "pkv:";
  if (strlen(prefix) > PREFIX_MAX)
    return pkv__err(PKV_EINVAL, "redis: key_prefix longer than %d bytes", PREFIX_MAX);
  if (o.timeout_ms > 600000)
    return pkv__err(PKV_EINVAL, "redis: timeout_ms %u is over 10 minutes", o.timeout_ms);
  redis_tier *t = pkv__calloc(1, sizeof *t);
  if (!t) return pkv__err(PKV_ENOMEM, "redis: out of memory");
  if ((rc = parse_address(t, o.address)) != 0) {
    pkv__free(t);
    return rc;
  }
  pthread_once(&hi_once, hi_load);
  if (!hi.ok) {
    pkv__free(t);
    return pkv__err(PKV_ENOTSUP, "redis: %s", hi.why);
  }
  t->rbuf = pkv__malloc(RBUF_BYTES);
  if (!t->rbuf) {
    pkv__free(t);
    return pkv__err(PKV_ENOMEM, "redis: out of memory");
  }
  t->base.ops = &redis_ops;
  pthread_mutex_init(&t->mu, NULL);
  pthread_mutex_init(&t->pub_mu, NULL);
  strcpy(t->prefix, prefix);
  t->prefix_len = strlen(prefix);
  t->ttl_ms = o.ttl_ms;
  t->timeout_ms = o.timeout_ms ? (int)o.timeout_ms : 250;
  t->fd = -1;
  snprintf(t->st.name, sizeof t->st.name, "redis");
  t->st_pub = t->st;
  t->fns = (redisReplyObjectFunctions){rx_string, rx_array, rx_integer, rx_nil, rx_free};
  *out = &t->base;
  return 0;
}
