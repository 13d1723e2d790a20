/*
 * sim_policy.c — which policies `pagedkv sim` replays: the built-ins named
 * by --policy, a user policy from --policy-lib (loaded with dlopen, and
 * tried in a child process before anything runs, so a plug-in that crashes
 * or names a block that does not exist is reported by name), and the
 * --policy-args each one's create hook checks up front.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "opts.h"
#include "sim.h"

/* Adds ops once: a policy named twice runs once. */
static void policy_add(policy_set *ps, const pkv_policy_ops *ops) {
  for (size_t i = 0; i < ps->n; i++)
    if (ps->ops[i] == ops || !strcmp(ps->ops[i]->name, ops->name)) return;
  if (ps->n < SIM_MAX_POLICIES) ps->ops[ps->n++] = ops;
}

/* Loads --policy-lib and registers its policy; *user is it, or NULL with
 * the error printed. */
static int load_plugin(const char *path, const pkv_policy_ops **user) {
  *user = NULL;
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  const pkv_policy_ops *u = lib ? dlsym(lib, "pkv_user_policy") : NULL;
  if (!u)
    return cli_error("sim", "--policy-lib %s: %s", path, lib ? "no symbol 'pkv_user_policy'" : dlerror());
  int rc = pkv_policy_register(u);
  if (rc && rc != PKV_ESTATE)
    return cli_error("sim", "--policy-lib %s: %s (%s)", path, pkv_strerror(rc), pkv_last_error());
  if (rc == PKV_ESTATE && pkv_policy_find(u->name) != u)
    return cli_error("sim", "--policy-lib %s: policy name '%s' is taken by a built-in", path, u->name);
  /* The library stays loaded until exit: the registry points into it. */
  *user = u;
  return 0;
}

/* Tries a plug-in in a child process: create at 8 blocks with its args,
 * 8 blocks inserted and released, one choose_victim that must name one of
 * them, destroy.  A crash or a garbage victim is reported naming the
 * policy, and nothing is run.  The child's stderr is discarded (a
 * sanitizer's report of the plug-in's crash belongs to the child). */
static int probe_plugin(const char *path, const pkv_policy_ops *ops, const char *args) {
  int fds[2];
  if (pipe(fds)) return cli_error("sim", "pipe: %m");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return cli_error("sim", "fork: %m");
  }
  if (pid == 0) {
    close(fds[0]);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDERR_FILENO);
    char msg[256] = "";
    void *st = NULL;
    enum { N = 8 };
    int rc = ops->create(&st, N, args);
    if (rc) {
      snprintf(msg, sizeof msg, "create failed: %s (%s)", pkv_strerror(rc), pkv_last_error());
    } else {
      pkv_block_meta meta = {.priority = 35};
      for (int32_t b = 0; b < N; b++) {
        meta.now = (uint64_t)b + 1;
        meta.key = (pkv_hash128){(uint64_t)b + 1, 0};
        ops->on_insert(st, b, &meta);
        ops->on_evictable(st, b, &meta);
      }
      int32_t v = ops->choose_victim(st, N + 1);
      if (v < 0 || v >= N)
        snprintf(msg, sizeof msg, "choose_victim returned block %d with blocks 0..%d evictable",
                 (int)v, N - 1);
      ops->destroy(st);
    }
    size_t len = strlen(msg) + 1;
    ssize_t w = write(fds[1], msg, len);
    _exit(w == (ssize_t)len ? 0 : 1);
  }
  close(fds[1]);
  char msg[256];
  size_t got = 0;
  ssize_t k;
  while (got < sizeof msg && (k = read(fds[0], msg + got, sizeof msg - got)) > 0) got += (size_t)k;
  close(fds[0]);
  int wst = 0;
  while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {}
  if (WIFSIGNALED(wst))
    return cli_error("sim", "policy '%s' (--policy-lib %s) crashed when tried (signal %d, %s); "
                            "nothing was run", ops->name, path, WTERMSIG(wst), strsignal(WTERMSIG(wst)));
  if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0 || got == 0 || msg[got - 1] != '\0')
    return cli_error("sim", "policy '%s' (--policy-lib %s) died when tried (exit status %d); "
                            "nothing was run", ops->name, path, WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
  if (msg[0])
    return cli_error("sim", "policy '%s' (--policy-lib %s): %s; nothing was run", ops->name, path, msg);
  return 0;
}

/* The policies to run, from --policy, --policy-lib and --policy-args. */
int sim_resolve_policies(const sim_opts *o, policy_set *ps) {
  memset(ps, 0, sizeof *ps);
  const pkv_policy_ops *user = NULL;
  if (o->policy_lib && load_plugin(o->policy_lib, &user)) return 1;
  if (!strcmp(o->policy_list, "all")) {
    for (const char *const *n = pkv_policy_names(); *n; n++) {
      const pkv_policy_ops *p = pkv_policy_find(*n);
      if (p && p != user) policy_add(ps, p);
    }
  } else if (strcmp(o->policy_list, "none")) {
    char **want;
    size_t n_want;
    if (!cli_split_names(o->policy_list, &want, &n_want))
      return cli_usage_error("sim", "--policy: '%s' is not a comma-separated list", o->policy_list);
    for (size_t i = 0; i < n_want; i++) {
      if (!strcmp(want[i], "belady")) continue; /* always computed unless --no-belady */
      const pkv_policy_ops *p = pkv_policy_find(want[i]);
      if (!p) {
        fprintf(stderr, "pagedkv sim: --policy: unknown policy '%s' (known:", want[i]);
        for (const char *const *n = pkv_policy_names(); *n; n++) fprintf(stderr, " %s", *n);
        fprintf(stderr, ", belady)\n");
        cli_free_names(want);
        return CLI_EXIT_USAGE;
      }
      policy_add(ps, p);
    }
    cli_free_names(want);
  }
  if (user) policy_add(ps, user);
  if (ps->n == SIM_MAX_POLICIES)
    return cli_usage_error("sim", "--policy: at most %d policies", SIM_MAX_POLICIES - 1);
  /* Each --policy-args goes to exactly one policy that runs. */
  for (size_t a = 0; a < o->n_pargs; a++) {
    const char *name = o->pargs[a].policy;
    if (!name && ps->n != 1)
      return cli_usage_error("sim", "--policy-args '%s': say which policy it is for, as NAME:ARGS "
                                    "(e.g. fwlru:cold=1); %zu policies run", o->pargs[a].args, ps->n);
    size_t k = 0;
    while (k < ps->n && name && strcmp(ps->ops[k]->name, name)) k++;
    if (k == ps->n)
      return cli_usage_error("sim", "--policy-args: policy '%s' is not among those run", name);
    ps->args[k] = o->pargs[a].args;
  }
  /* Arguments are checked by the policy itself before anything runs. */
  for (size_t k = 0; k < ps->n; k++) {
    if (ps->ops[k] == user) {
      if (probe_plugin(o->policy_lib, user, ps->args[k])) return 1;
      continue;
    }
    if (!ps->args[k]) continue;
    void *st = NULL;
    int rc = ps->ops[k]->create(&st, 16, ps->args[k]);
    if (rc)
      return cli_usage_error("sim", "--policy-args %s:%s: %s", ps->ops[k]->name, ps->args[k],
                             pkv_last_error());
    ps->ops[k]->destroy(st);
  }
  return 0;
}
