/*
 * sim.c — `pagedkv sim`: eviction policies replayed on a trace, beside
 * Belady's offline optimum.
 *
 *   trace ──► sim_stream (block ids per request, next-use indices)
 *                 │
 *     ┌───────────┼──────────────────────────┐
 *   simple      manager (sim_manager.c)    Belady
 *   policy      real pkv_cache, external   farthest next use,
 *   vtable      mode: match_prefix,        lazy max-heap,
 *   directly    append, commit, hold, free O(log n) per access
 *
 * The command runs in phases, one file each: options (sim_opts.c) ->
 * policies (sim_policy.c) -> the stream (sim_stream.c) -> a plan of jobs run
 * on threads (here; the replays in sim_replay.c and sim_manager.c) -> the
 * report (sim_report.c).
 *
 * Every (policy, capacity) pair is one job; jobs share only the read-only
 * stream and run on --jobs threads.  The simple model is exactly the one
 * ../shared/traces/README.md states (requests in order; look up every block;
 * then insert or refresh every block in request order), so its LRU and
 * Belady figures can be checked against the reference there.
 */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"

static void replay(sim_plan *pl, sim_job *j, sim_result *r, _Atomic uint64_t *progress) {
  if (pl->model == SIM_MODEL_SIMPLE)
    sim_run_simple(pl->stream, j->ops, j->args, j->run_capacity, r, progress);
  else {
    char sub[96];
    sim_tier_sub(sub, sizeof sub, j->ops->name, j->capacity);
    sim_run_manager_tiers(pl->stream, j->ops, j->args, j->run_capacity, pl->hold, pl->tiers, sub,
                          r, progress);
  }
}

/* A plug-in's replay runs in a child process, its result coming back
 * through a pipe: the probe (sim_policy.c) tries only a few calls, and a
 * plug-in that crashes under real traffic must be reported naming it, not
 * take the whole run down with it.  The children are forked by run_jobs
 * before any worker thread exists (a fork beside running threads can
 * inherit a lock one of them holds: it hung under ASan), so they run
 * alongside the worker threads; a worker collects each one's result. */
static void isolated_start(sim_plan *pl, sim_job *j) {
  sim_result *r = &j->res;
  snprintf(r->policy, sizeof r->policy, "%s", j->ops->name);
  int fds[2];
  j->pid = -1;
  if (pipe(fds) == 0 && (j->pid = fork()) < 0) {
    close(fds[0]);
    close(fds[1]);
  }
  if (j->pid < 0) {
    r->rc = PKV_ENOMEM;
    snprintf(r->err, sizeof r->err, "cannot start the plug-in's replay process: %s", strerror(errno));
    return;
  }
  if (j->pid == 0) {
    close(fds[0]);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDERR_FILENO);
    sim_result cr = *r;
    replay(pl, j, &cr, NULL);
    const char *p = (const char *)&cr;
    size_t left = sizeof cr;
    while (left) {
      ssize_t w = write(fds[1], p, left);
      if (w <= 0 && errno != EINTR) _exit(1);
      if (w > 0) p += w, left -= (size_t)w;
    }
    _exit(0);
  }
  close(fds[1]);
  j->fd = fds[0];
}

static void isolated_finish(sim_plan *pl, sim_job *j) {
  sim_result *r = &j->res;
  if (j->pid < 0) return; /* could not start: res says why */
  sim_result cr;
  size_t got = 0;
  ssize_t k;
  while (got < sizeof cr && ((k = read(j->fd, (char *)&cr + got, sizeof cr - got)) > 0 ||
                             (k < 0 && errno == EINTR)))
    if (k > 0) got += (size_t)k;
  close(j->fd);
  int wst = 0;
  while (waitpid(j->pid, &wst, 0) < 0 && errno == EINTR) {}
  atomic_fetch_add_explicit(&pl->progress, pl->stream->n_reqs, memory_order_relaxed);
  if (WIFSIGNALED(wst)) {
    r->rc = PKV_ECORRUPT;
    snprintf(r->err, sizeof r->err, "the plug-in crashed during the replay (signal %d, %s)",
             WTERMSIG(wst), strsignal(WTERMSIG(wst)));
  } else if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0 || got != sizeof cr) {
    r->rc = PKV_ECORRUPT;
    snprintf(r->err, sizeof r->err, "the plug-in's replay died (exit status %d)",
             WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
  } else {
    *r = cr;
  }
}

static void run_job(sim_plan *pl, sim_job *j) {
  sim_result *r = &j->res;
  snprintf(r->policy, sizeof r->policy, "%s", j->ops ? j->ops->name : "belady");
  if (j->isolate)
    isolated_finish(pl, j);
  else if (!j->ops)
    sim_run_belady(pl->stream, j->run_capacity, pl->model == SIM_MODEL_MANAGER,
                   pl->model == SIM_MODEL_MANAGER ? pl->hold : 0, r, &pl->progress);
  else
    replay(pl, j, r, &pl->progress);
  r->capacity = j->capacity;
}

static void *worker(void *arg) {
  sim_plan *pl = arg;
  for (;;) {
    size_t i = atomic_fetch_add(&pl->next_job, 1);
    if (i >= pl->n_jobs) break;
    run_job(pl, &pl->jobs[i]);
    atomic_fetch_add(&pl->jobs_done, 1);
  }
  return NULL;
}

/* Runs every job on the worker threads with a progress bar. */
static int run_jobs(sim_plan *pl, size_t jobs, bool quiet) {
  size_t n_threads = jobs < pl->n_jobs ? jobs : pl->n_jobs;
  pthread_t *th = calloc(n_threads ? n_threads : 1, sizeof *th);
  if (!th) return cli_error("sim", "out of memory");
  cli_progress prog;
  cli_progress_init(&prog, "sim", (uint64_t)pl->n_jobs * pl->stream->n_reqs, quiet);
  uint64_t t0 = cli_now_ns();
  for (size_t i = 0; i < pl->n_jobs; i++) /* before any thread: see isolated_start */
    if (pl->jobs[i].isolate) isolated_start(pl, &pl->jobs[i]);
  size_t started = 0;
  for (; started < n_threads; started++)
    if (pthread_create(&th[started], NULL, worker, pl)) break;
  if (!started) worker(pl); /* no thread could start: run here */
  while (atomic_load(&pl->jobs_done) < pl->n_jobs) {
    char tail[96];
    double secs = (double)(cli_now_ns() - t0) / 1e9;
    snprintf(tail, sizeof tail, "replays %zu/%zu, %.1f s", atomic_load(&pl->jobs_done), pl->n_jobs, secs);
    cli_progress_update(&prog, atomic_load(&pl->progress), tail);
    nanosleep(&(struct timespec){0, 50000000}, NULL);
  }
  for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
  free(th);
  cli_progress_update(&prog, atomic_load(&pl->progress), "done");
  cli_progress_finish(&prog);
  int status = 0;
  for (size_t i = 0; i < pl->n_jobs; i++)
    if (pl->jobs[i].res.rc)
      status = cli_error("sim", "policy '%s' at capacity %u: %s", pl->jobs[i].res.policy,
                         pl->jobs[i].capacity, pl->jobs[i].res.err);
  return status; /* nothing partial is printed after a failure */
}

/* ---------------------------------------------------------------- cluster */

/* The cluster view's configurations: every --nodes count x every route. */
typedef struct cluster_job {
  sim_cluster_cfg cfg;
  uint64_t *caps; /* [nodes] */
} cluster_job;

typedef struct cluster_run {
  const sim_stream *stream;
  cluster_job *jobs;
  sim_cluster_result *res;
  size_t n;
  _Atomic size_t next, done;
  _Atomic uint64_t progress;
} cluster_run;

static void *cluster_worker(void *arg) {
  cluster_run *cr = arg;
  for (size_t i; (i = atomic_fetch_add(&cr->next, 1)) < cr->n; atomic_fetch_add(&cr->done, 1))
    sim_run_cluster(cr->stream, &cr->jobs[i].cfg, &cr->res[i], &cr->progress);
  return NULL;
}

/* One job per (nodes, route); each node gets its --capacity. */
static int plan_cluster(const sim_opts *o, const policy_set *ps, uint64_t remote_blocks,
                        cluster_run *cr) {
  size_t n_routes = (size_t)o->route_rr + o->route_prefix;
  cr->n = o->n_nodes * n_routes;
  cr->jobs = calloc(cr->n, sizeof *cr->jobs);
  cr->res = calloc(cr->n, sizeof *cr->res);
  if (!cr->jobs || !cr->res) return cli_error("sim", "out of memory");
  size_t j = 0;
  for (size_t i = 0; i < o->n_nodes; i++)
    for (int route = SIM_ROUTE_RR; route <= SIM_ROUTE_PREFIX; route++) {
      if (route == SIM_ROUTE_RR ? !o->route_rr : !o->route_prefix) continue;
      cluster_job *cj = &cr->jobs[j++];
      uint32_t n = (uint32_t)o->nodes[i];
      if (!(cj->caps = calloc(n, sizeof *cj->caps))) return cli_error("sim", "out of memory");
      for (uint32_t k = 0; k < n; k++) cj->caps[k] = o->caps[o->n_caps == 1 ? 0 : k];
      cj->cfg = (sim_cluster_cfg){.n_nodes = n, .caps = cj->caps, .ops = ps->ops[0],
                                  .args = ps->args[0], .hold = (uint32_t)o->hold,
                                  .route = (sim_route)route, .load_bound = o->load_bound,
                                  .remote_blocks = remote_blocks,
                                  .tiers = tool_tiers_any(&o->tiers) ? &o->tiers : NULL};
    }
  return 0;
}

/* Runs the jobs on --jobs threads with a progress bar; 0 or 1. */
static int run_cluster_jobs(cluster_run *cr, size_t jobs, bool quiet) {
  size_t n_threads = jobs < cr->n ? jobs : cr->n, started = 0;
  pthread_t th[64];
  if (n_threads > 64) n_threads = 64;
  cli_progress prog;
  cli_progress_init(&prog, "sim", (uint64_t)cr->n * cr->stream->n_reqs, quiet);
  for (; started < n_threads; started++)
    if (pthread_create(&th[started], NULL, cluster_worker, cr)) break;
  if (!started) cluster_worker(cr);
  while (atomic_load(&cr->done) < cr->n) {
    cli_progress_update(&prog, atomic_load(&cr->progress), "cluster replays");
    nanosleep(&(struct timespec){0, 50000000}, NULL);
  }
  for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
  cli_progress_update(&prog, atomic_load(&cr->progress), "done");
  cli_progress_finish(&prog);
  int status = 0;
  for (size_t i = 0; i < cr->n; i++)
    if (cr->res[i].rc)
      status = cli_error("sim", "%u nodes, route %s: %s", cr->jobs[i].cfg.n_nodes,
                         sim_route_name(cr->jobs[i].cfg.route), cr->res[i].err);
  return status;
}

/* `pagedkv sim --nodes`: plan, run, report. */
static int cmd_cluster(const sim_opts *o, const policy_set *ps, const trace *t,
                       const sim_stream *stream) {
  if (ps->n != 1)
    return cli_usage_error("sim", "--nodes: one policy per cluster (%zu given)", ps->n);
  uint64_t remote_blocks = 0;
  if (o->remote_bytes) {
    uint64_t block_bytes = o->kv_token_bytes * stream->block_size;
    if (!(remote_blocks = o->remote_bytes / block_bytes))
      return cli_usage_error("sim", "--shared-remote: %llu bytes hold no block of %llu bytes "
                                    "(%u tokens x --kv-bytes-per-token %llu)",
                             (unsigned long long)o->remote_bytes, (unsigned long long)block_bytes,
                             stream->block_size, (unsigned long long)o->kv_token_bytes);
  }
  cluster_run cr = {.stream = stream};
  int status = plan_cluster(o, ps, remote_blocks, &cr);
  if (!status) status = run_cluster_jobs(&cr, o->jobs, o->quiet);
  if (!status) {
    sim_cluster_plan cp = {.stream = stream, .policy = ps->ops[0]->name, .hold = (uint32_t)o->hold,
                           .caps = o->caps, .n_caps = o->n_caps, .remote_blocks = remote_blocks,
                           .tiers = tool_tiers_any(&o->tiers) ? &o->tiers : NULL,
                           .res = cr.res, .n_res = cr.n};
    FILE *tf = (o->json && !strcmp(o->json, "-")) || (o->csv && !strcmp(o->csv, "-")) ? stderr : stdout;
    fprintf(tf, "trace %s: %zu requests, %llu prompt tokens, %llu block lookups, block size %u, "
                "manager model, policy %s, hold %llu, load bound %.2f, shared remote %llu blocks\n",
            o->trace_path, stream->n_reqs, (unsigned long long)t->prompt_tokens,
            (unsigned long long)stream->n_pos, stream->block_size, cp.policy,
            (unsigned long long)o->hold, o->load_bound, (unsigned long long)remote_blocks);
    sim_cluster_print(tf, &cp);
    sim_note_azure(tf, t);
    if (o->csv && sim_cluster_write_csv(&cp, o->csv)) status = 1;
    if (o->json && sim_cluster_write_json(&cp, o->trace_path, o->json)) status = 1;
    if (o->plot && sim_cluster_write_plot(&cp, o->trace_path, o->plot)) status = 1;
  }
  for (size_t i = 0; cr.jobs && i < cr.n; i++) {
    free(cr.jobs[i].caps);
    if (cr.res) sim_cluster_result_free(&cr.res[i]);
  }
  free(cr.jobs);
  free(cr.res);
  return status;
}

/* One job per (capacity, policy), Belady last at each capacity; *names
 * gets the policies' names in that order (the plot's lines). */
static int plan_jobs(sim_plan *pl, const sim_opts *o, const policy_set *ps,
                     const char ***names, size_t *n_names) {
  pl->n_jobs = o->n_caps * (ps->n + o->belady);
  pl->jobs = calloc(pl->n_jobs, sizeof *pl->jobs);
  *names = calloc(ps->n + 2, sizeof **names);
  if (!pl->jobs || !*names) return cli_error("sim", "out of memory");
  *n_names = 0;
  for (size_t k = 0; k < ps->n; k++) (*names)[(*n_names)++] = ps->ops[k]->name;
  if (o->belady) (*names)[(*n_names)++] = "belady";
  size_t j = 0;
  const sim_stream *stream = pl->stream;
  for (size_t c = 0; c < o->n_caps; c++) {
    /* Beyond the trace's block lookups everything fits: the result is the
     * same at any larger capacity, so replay at that size (no 2^31-block
     * pools for a 5k-block trace). */
    uint32_t cap = (uint32_t)o->caps[c];
    uint32_t run_cap = stream->n_pos && cap > stream->n_pos ? (uint32_t)stream->n_pos : cap;
    for (size_t k = 0; k <= ps->n; k++) {
      if (k == ps->n && !o->belady) break;
      pl->jobs[j++] = (sim_job){.ops = k < ps->n ? ps->ops[k] : NULL,
                                .args = k < ps->n ? ps->args[k] : NULL,
                                .capacity = cap, .run_capacity = run_cap,
                                .isolate = k < ps->n && ps->ops[k] == ps->user};
    }
  }
  return 0;
}

/* The table (stdout, or stderr when JSON or CSV has standard output), the
 * notes, then the files. */
static int report(const sim_opts *o, const sim_plan *pl, const trace *t,
                  const char *const *names, size_t n_names) {
  const sim_stream *stream = pl->stream;
  FILE *tf = (o->json && !strcmp(o->json, "-")) || (o->csv && !strcmp(o->csv, "-")) ? stderr : stdout;
  fprintf(tf, "trace %s: %zu requests, %llu prompt tokens, %llu block lookups (%llu full), "
              "block size %u, %s model, hold %llu\n",
          o->trace_path, stream->n_reqs, (unsigned long long)t->prompt_tokens,
          (unsigned long long)stream->n_pos, (unsigned long long)stream->n_full, stream->block_size,
          pl->model == SIM_MODEL_MANAGER ? "manager" : "simple", (unsigned long long)o->hold);
  sim_print_table(tf, pl, o->caps, o->n_caps);
  sim_print_notes(tf, pl, t, o->caps, o->n_caps);
  if (pl->tiers) sim_print_tiers(tf, pl);
  int status = 0;
  if (o->csv && sim_write_csv(pl, o->csv)) status = 1;
  if (o->json && sim_write_json(pl, o->trace_path, o->json)) status = 1;
  if (o->plot && sim_write_plot(pl, o->trace_path, o->plot, o->caps, o->n_caps, names, n_names))
    status = 1;
  return status;
}

/* Loads the trace and builds its stream at the block size asked for. */
static int load_stream(const sim_opts *o, trace *t, sim_stream *stream) {
  char err[512];
  if (trace_load(o->trace_path, o->format, t, err, sizeof err)) return cli_error("sim", "%s", err);
  uint32_t block_size = o->block_size ? (uint32_t)o->block_size
                                      : t->block_size ? t->block_size : TRACE_MOONCAKE_BLOCK;
  if (sim_stream_build(t, block_size, stream, err, sizeof err)) return cli_error("sim", "%s", err);
  return 0;
}

/* --host-bytes and --file-bytes in blocks of the model (--kv-bytes-per-token
 * x block size), then the tiers tried (sim_tiers_check).  0 or an exit
 * status (message printed). */
static int size_tiers(sim_opts *o, const sim_stream *stream) {
  uint64_t block_bytes = o->kv_token_bytes * stream->block_size;
  const uint64_t *bytes[2] = {&o->host_bytes, &o->file_bytes};
  uint64_t *blocks[2] = {&o->tiers.host_blocks, &o->tiers.file_blocks};
  static const char *const flag[2] = {"--host-bytes", "--file-bytes"};
  for (int i = 0; i < 2; i++) {
    if (!*bytes[i]) continue;
    *blocks[i] = *bytes[i] / block_bytes;
    if (!*blocks[i] || *blocks[i] > SIM_MAX_CAPACITY)
      return cli_usage_error("sim", "%s: %llu bytes is %s block of %llu bytes (%u tokens x "
                             "--kv-bytes-per-token %llu)", flag[i], (unsigned long long)*bytes[i],
                             *blocks[i] ? "more than 2^31 - 1 blocks" : "less than one",
                             (unsigned long long)block_bytes, stream->block_size,
                             (unsigned long long)o->kv_token_bytes);
  }
  char err[4400];
  int rc = sim_tiers_check(stream, &o->tiers, err, sizeof err);
  return rc ? cli_usage_error("sim", "%s", err) : 0;
}

int cmd_sim(int argc, char **argv) {
  sim_opts o;
  char perr[512];
  if (sim_opts_parse(argc, argv, &o, perr, sizeof perr)) return cli_usage_error("sim", "%s", perr);
  if (o.help) {
    sim_opts_free(&o);
    sim_help();
    return 0;
  }
  int status = 0;
  trace t = {0};
  sim_stream stream = {0};
  sim_plan pl = {0};
  const char **names = NULL;
  size_t n_names = 0;
  policy_set ps;
  if ((status = sim_resolve_policies(&o, &ps))) goto out;
  if (!o.nodes && !ps.n && !o.belady) {
    status = cli_usage_error("sim", "nothing to run (no policy and --no-belady)");
    goto out;
  }
  if (o.plot && !cli_gnuplot_available("sim")) { /* before the run, not after */
    status = 1;
    goto out;
  }
  if ((status = load_stream(&o, &t, &stream)) || (status = size_tiers(&o, &stream))) goto out;
  if (o.nodes) { /* the cluster view */
    status = cmd_cluster(&o, &ps, &t, &stream);
    goto out;
  }
  pl = (sim_plan){.stream = &stream, .model = o.model ? SIM_MODEL_SIMPLE : SIM_MODEL_MANAGER,
                  .hold = (uint32_t)o.hold,
                  .tiers = tool_tiers_any(&o.tiers) ? &o.tiers : NULL};
  if ((status = plan_jobs(&pl, &o, &ps, &names, &n_names))) goto out;
  if ((status = run_jobs(&pl, o.jobs, o.quiet))) goto out;
  status = report(&o, &pl, &t, names, n_names);
out:
  free(pl.jobs);
  free(names);
  sim_stream_free(&stream);
  trace_free(&t);
  sim_opts_free(&o);
  return status;
}
