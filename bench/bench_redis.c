/*
 * bench_redis.c — the Redis tier's pipelined batch put/get on loopback,
 * beside redis-benchmark (redis-tools) doing SET/GET of the same value size
 * at the same pipeline depth on one connection, measured in the same run
 * against the same server (PKV_TEST_REDIS, which `make bench` starts through
 * scripts/with-redis.sh).
 *
 *   block sizes  2 MiB: 32 layers x 8 KV heads x 128 dims x (K,V) x 16 slots
 *                x 2 bytes (a Llama-3-8B-shaped block in bf16); 128 KiB: the
 *                same with 2 layers.
 *   ours         tier put of `depth` blocks (SET key value PX, one round
 *                trip) and tier get of them (GET, verify, copy into the
 *                block), `rounds` times; GB/s of value bytes.
 *   baseline     redis-benchmark -c 1 -P depth -d <value bytes> -n
 *                rounds*depth -t set,get --csv, and the same with -P 1 (for
 *                multi-megabyte values redis-benchmark is several times
 *                faster unpipelined); the better of the two, per run.
 *                GB/s = requests/s x value bytes.  Printed beside it, not
 *                the target: -P 1 -r depth (random keys among as many as
 *                the tier writes; redis-benchmark's default is one key).
 *
 * Keys are reused round after round, so the server holds at most depth
 * values; one untimed put + get precedes the timed runs.  Median of REPS
 * alternating runs; target ratio >= 0.8.
 */
#include "bu_bench.h"
#include "tier/redis.h"

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define REPS 5
#define MAX_BLOCKS 64

static const char *server(char *host, size_t cap, char *port, size_t pcap) {
  const char *a = getenv("PKV_TEST_REDIS");
  const char *colon = a ? strrchr(a, ':') : NULL;
  if (!colon) {
    fprintf(stderr, "bench_redis: PKV_TEST_REDIS=host:port is not set (run it "
            "through scripts/with-redis.sh, as `make bench` does)\n");
    exit(1);
  }
  snprintf(host, cap, "%.*s", (int)(colon - a), a);
  snprintf(port, pcap, "%s", colon + 1);
  return a;
}

/* Runs redis-benchmark (no shell) and returns the requests/s of test
 * ("SET" or "GET") from its CSV, or exits with what went wrong. */
static void redis_benchmark(const char *host, const char *port, size_t value_bytes,
                            unsigned depth, unsigned n, unsigned keys, double *set_rps,
                            double *get_rps) {
  char d[32], p[16], nn[16], r[16];
  snprintf(d, sizeof d, "%zu", value_bytes);
  snprintf(p, sizeof p, "%u", depth);
  snprintf(nn, sizeof nn, "%u", n);
  snprintf(r, sizeof r, "%u", keys);
  int fds[2];
  if (pipe(fds) != 0) exit(1);
  /* posix_spawn, not fork: a fork write-protects every page of this process
   * (copy-on-write), so the next get would take a fault per 4 KiB of its
   * destination blocks and time the faults, not the tier. */
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  /* keys > 0: -r keys (random keys among that many, like the tier's
   * distinct blocks); 0: redis-benchmark's one key */
  char *argv[] = {"redis-benchmark", "-h", (char *)host, "-p", (char *)port, "-c", "1",
                  "-P", p, "-d", d, "-n", nn, "-t", "set,get", "--csv",
                  keys ? "-r" : NULL, r, NULL};
  pid_t pid;
  int err = posix_spawnp(&pid, "redis-benchmark", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) {
    fprintf(stderr, "bench_redis: cannot run redis-benchmark (install redis-tools): %s\n",
            strerror(err));
    exit(1);
  }
  close(fds[1]);
  char out[4096];
  size_t len = 0;
  ssize_t k;
  while (len + 1 < sizeof out && (k = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
    len += (size_t)k;
  out[len] = '\0';
  close(fds[0]);
  int st;
  waitpid(pid, &st, 0);
  *set_rps = *get_rps = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    double rps;
    if (sscanf(line, "\"SET\",\"%lf\"", &rps) == 1) *set_rps = rps;
    if (sscanf(line, "\"GET\",\"%lf\"", &rps) == 1) *get_rps = rps;
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || *set_rps <= 0 || *get_rps <= 0) {
    fprintf(stderr, "bench_redis: redis-benchmark failed (status %d): %s\n", st, out);
    exit(1);
  }
}

static void run_size(pkv__tier *t, const char *host, const char *port, const char *label,
                     uint32_t n_layers, unsigned depth, unsigned rounds) {
  const uint32_t ntok = 16;
  const size_t kv_bytes = (size_t)n_layers * 8 * 128 * 2 * ntok * 2;
  pkv__tier_block b[MAX_BLOCKS], dst[MAX_BLOCKS];
  uint8_t found[MAX_BLOCKS];
  int32_t *tokens = malloc((size_t)depth * ntok * sizeof *tokens);
  uint8_t *kv = malloc((size_t)depth * kv_bytes), *out = malloc((size_t)depth * kv_bytes);
  uint64_t rng = 12345;
  for (size_t i = 0; i < (size_t)depth * kv_bytes; i++) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    kv[i] = (uint8_t)(rng >> 56);
  }
  for (unsigned i = 0; i < depth; i++) {
    for (uint32_t j = 0; j < ntok; j++) tokens[i * ntok + j] = (int32_t)(i * ntok + j);
    b[i] = (pkv__tier_block){.key = {i + 1, n_layers}, .parent = {i, n_layers},
                             .ns_id_hash = 1, .ntok = ntok, .tokens = tokens + i * ntok,
                             .kv = kv + (size_t)i * kv_bytes, .kv_bytes = kv_bytes};
    dst[i] = b[i];
    dst[i].kv = out + (size_t)i * kv_bytes;
  }
  const size_t value = PKV__REDIS_HDR + ntok * 4 + kv_bytes;
  const double batch_bytes = (double)value * depth * rounds;
  double ours_set[REPS], ours_get[REPS], base_set[REPS], base_get[REPS];
  double keys_set[REPS], keys_get[REPS]; /* -P 1 -r depth: insight only */
  /* one untimed round first: the server's memory for these keys and our
   * destination pages are then in place in every timed run (redis-benchmark
   * -P 1 reuses one key, whose memory is warm after its first request) */
  t->ops->put(t, b, depth);
  t->ops->get(t, dst, depth, found);
  for (int r = 0; r < REPS; r++) {
    fprintf(stderr, "bench_redis: %s blocks, run %d/%d\n", label, r + 1, REPS);
    uint64_t t0 = bu_now_ns();
    for (unsigned k = 0; k < rounds; k++) t->ops->put(t, b, depth);
    uint64_t t1 = bu_now_ns();
    for (unsigned k = 0; k < rounds; k++) {
      t->ops->get(t, dst, depth, found);
      for (unsigned i = 0; i < depth; i++)
        if (!found[i]) {
          fprintf(stderr, "bench_redis: block %u not found\n", i);
          exit(1);
        }
    }
    uint64_t t2 = bu_now_ns();
    ours_set[r] = batch_bytes / (double)(t1 - t0);
    ours_get[r] = batch_bytes / (double)(t2 - t1);
    /* the baseline at our depth, and at -P 1 (its best for big values):
     * the better of the two */
    double srps, grps, srps1, grps1, srpsk, grpsk;
    redis_benchmark(host, port, value, depth, depth * rounds, 0, &srps, &grps);
    redis_benchmark(host, port, value, 1, depth * rounds, 0, &srps1, &grps1);
    redis_benchmark(host, port, value, 1, depth * rounds, depth, &srpsk, &grpsk);
    base_set[r] = (srps > srps1 ? srps : srps1) * (double)value / 1e9;
    base_get[r] = (grps > grps1 ? grps : grps1) * (double)value / 1e9;
    keys_set[r] = srpsk * (double)value / 1e9;
    keys_get[r] = grpsk * (double)value / 1e9;
    fprintf(stderr, "  ours set %.3f get %.3f GB/s; redis-benchmark -P %u set %.3f get "
            "%.3f, -P 1 set %.3f get %.3f, -P 1 -r %u set %.3f get %.3f GB/s\n",
            ours_set[r], ours_get[r], depth, srps * (double)value / 1e9,
            grps * (double)value / 1e9, srps1 * (double)value / 1e9,
            grps1 * (double)value / 1e9, depth, keys_set[r], keys_get[r]);
  }
  if (memcmp(kv, out, (size_t)depth * kv_bytes) != 0) {
    fprintf(stderr, "bench_redis: fetched K/V differs\n");
    exit(1);
  }
  char name[96];
  snprintf(name, sizeof name, "redis tier put, %s blocks x%u pipelined", label, depth);
  bu_report_vs(name, bu_median(ours_set, REPS), "GB/s", "redis-benchmark SET (best -P)",
               bu_median(base_set, REPS), "of redis-benchmark");
  snprintf(name, sizeof name, "redis tier get, %s blocks x%u pipelined", label, depth);
  bu_report_vs(name, bu_median(ours_get, REPS), "GB/s", "redis-benchmark GET (best -P)",
               bu_median(base_get, REPS), "of redis-benchmark");
  /* Not the target's baseline (that is the best -P above): redis-benchmark
   * over as many keys as the tier uses, for insight. */
  printf("  (redis-benchmark -P 1 -r %u, %u keys like the tier: SET %.3f GB/s, ours "
         "%.2f of it; GET %.3f GB/s, ours %.2f of it)\n", depth, depth,
         bu_median(keys_set, REPS), bu_median(ours_set, REPS) / bu_median(keys_set, REPS),
         bu_median(keys_get, REPS), bu_median(ours_get, REPS) / bu_median(keys_get, REPS));
  free(tokens);
  free(kv);
  free(out);
}

int main(void) {
  char host[256], port[16];
  const char *addr = server(host, sizeof host, port, sizeof port);
  pkv_redis_opts o;
  pkv_redis_opts_init(&o);
  o.address = addr;
  o.key_prefix = "pkvbench:";
  o.timeout_ms = 5000;
  pkv__tier *t;
  if (pkv__redis_tier_create(&o, &t) != 0) {
    fprintf(stderr, "bench_redis: %s\n", pkv_last_error());
    return 1;
  }
  printf("redis server %s; one connection each; median of %d runs\n", addr, REPS);
  run_size(t, host, port, "2 MiB", 32, 16, 12);
  run_size(t, host, port, "128 KiB", 2, 64, 16);
  pkv_tier_stats st;
  t->ops->stats(t, &st);
  t->ops->destroy(t);
  if (st.errors) {
    fprintf(stderr, "bench_redis: %llu tier errors\n", (unsigned long long)st.errors);
    return 1;
  }
  return 0;
}
