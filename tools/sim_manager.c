/*
 * sim_manager.c — the manager model of `pagedkv sim` (waiting for the core
 * manager on branch core).
 */
#include <stdio.h>

#include "sim.h"

int sim_run_manager(const sim_stream *s, const pkv_policy_ops *ops,
                    const char *args, uint32_t capacity, uint32_t hold,
                    sim_result *r, _Atomic uint64_t *progress) {
  (void)s, (void)ops, (void)args, (void)capacity, (void)hold, (void)progress;
  snprintf(r->err, sizeof r->err, "the manager model needs the core manager (not merged yet); use --model simple");
  return r->rc = PKV_ENOTSUP;
}
