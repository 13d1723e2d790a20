/*
 * run_work.c — the workload of `pagedkv run`: synthetic (seeded lengths;
 * --groups system prompts shared by the requests of a group, so prefix
 * matching has something to find), an Azure CSV (lengths only: every prompt
 * its own tokens) or a Mooncake JSONL (prompts built from hash_ids, so equal
 * ids give real prefix hits).
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "run.h"

uint64_t run_splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

uint32_t run_tok_of(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t s = a * UINT64_C(0x100000001b3) ^ b * UINT64_C(0xc2b2ae3d27d4eb4f) ^ c;
  return (uint32_t)(run_splitmix(&s) & 0x7fffffff);
}

void run_workload_prompt(const void *ctx, size_t r, int32_t *out) {
  const workload *w = ctx;
  uint32_t len = w->prompt_len[r];
  switch (w->kind) {
  case WL_SYNTHETIC: {
    uint32_t sys = w->system_len < len ? w->system_len : len;
    for (uint32_t i = 0; i < sys; i++) out[i] = (int32_t)run_tok_of(w->seed, 1000000u + w->group[r], i);
    for (uint32_t i = sys; i < len; i++) out[i] = (int32_t)run_tok_of(w->seed, r, i);
    break;
  }
  case WL_AZURE: /* lengths only: every prompt is its own */
    for (uint32_t i = 0; i < len; i++) out[i] = (int32_t)run_tok_of(w->seed, r, i);
    break;
  case WL_MOONCAKE:
    sim_request_tokens(&w->stream, r, out);
    break;
  }
}

void run_workload_free(workload *w) {
  free(w->prompt_len);
  free(w->output_len);
  free(w->n_samples);
  free(w->group);
  if (w->have_stream) sim_stream_free(&w->stream);
  trace_free(&w->tr);
}

static uint32_t uniform(uint64_t *rng, run_range r) {
  return (uint32_t)(r.lo + run_splitmix(rng) % (r.hi - r.lo + 1));
}

int run_build_workload(const run_opts *o, workload *wl, char *desc, size_t desc_cap,
                       uint64_t *longest, uint64_t *too_long) {
  *wl = (workload){.kind = WL_SYNTHETIC, .seed = o->seed, .system_len = (uint32_t)o->sys_len};
  if (o->trace_path) {
    char err[512];
    if (trace_load(o->trace_path, o->format, &wl->tr, err, sizeof err)) return cli_error("run", "%s", err);
    wl->kind = wl->tr.format == TRACE_MOONCAKE ? WL_MOONCAKE : WL_AZURE;
    wl->n = o->n_given && o->n_req && o->n_req < wl->tr.n_reqs ? o->n_req : wl->tr.n_reqs;
    wl->tr.n_reqs = wl->n; /* the first n requests */
    if (wl->kind == WL_MOONCAKE) {
      if (sim_stream_build(&wl->tr, TRACE_MOONCAKE_BLOCK, &wl->stream, err, sizeof err))
        return cli_error("run", "%s", err);
      wl->have_stream = true;
    }
  } else {
    wl->n = o->n_req;
  }
  wl->prompt_len = malloc(wl->n * sizeof *wl->prompt_len);
  wl->output_len = malloc(wl->n * sizeof *wl->output_len);
  wl->n_samples = malloc(wl->n * sizeof *wl->n_samples);
  wl->group = malloc(wl->n * sizeof *wl->group);
  if (!wl->prompt_len || !wl->output_len || !wl->n_samples || !wl->group)
    return cli_error("run", "out of memory");
  uint64_t rng = o->seed * 7919 + 17, total_prompt = 0, total_out = 0;
  *longest = *too_long = 0;
  for (size_t r = 0; r < wl->n; r++) {
    if (o->trace_path) {
      wl->prompt_len[r] = wl->tr.reqs[r].input_len;
      uint32_t out = wl->tr.reqs[r].output_len ? wl->tr.reqs[r].output_len : 1;
      wl->output_len[r] = o->max_output && out > o->max_output ? (uint32_t)o->max_output : out;
      wl->group[r] = 0;
    } else {
      wl->group[r] = o->groups ? (uint32_t)(run_splitmix(&rng) % o->groups) : 0;
      uint32_t user = uniform(&rng, o->plen);
      wl->prompt_len[r] = (o->groups ? (uint32_t)o->sys_len : 0) + user;
      wl->output_len[r] = uniform(&rng, o->olen);
    }
    wl->n_samples[r] = (uint32_t)o->samples;
    total_prompt += wl->prompt_len[r];
    total_out += (uint64_t)wl->output_len[r] * o->samples;
    uint64_t len = (uint64_t)wl->prompt_len[r] + wl->output_len[r];
    if (len > *longest) *longest = len;
    *too_long += len > o->max_len;
  }
  if (!o->trace_path && !o->groups) wl->system_len = 0;
  if (o->trace_path)
    snprintf(desc, desc_cap, "%s (%s), %zu requests, %llu prompt + %llu output tokens%s",
             o->trace_path, trace_format_name(wl->tr.format), wl->n,
             (unsigned long long)total_prompt, (unsigned long long)total_out,
             o->samples > 1 ? ", with samples" : "");
  else
    snprintf(desc, desc_cap,
             "synthetic seed %llu: %zu requests, prompts %llu-%llu (+%llu shared by %llu groups), "
             "outputs %llu-%llu, %llu sample%s",
             (unsigned long long)o->seed, wl->n, (unsigned long long)o->plen.lo,
             (unsigned long long)o->plen.hi, o->groups ? (unsigned long long)o->sys_len : 0ull,
             (unsigned long long)o->groups, (unsigned long long)o->olen.lo,
             (unsigned long long)o->olen.hi, (unsigned long long)o->samples,
             o->samples > 1 ? "s" : "");
  return 0;
}
