#!/usr/bin/python3
"""bench_vllm.py — one scheduler decode step for 256 running requests.

Three ways, interleaved step by step in one process (same machine state):
  pyref   pagedkv.vllm_pyref.PyKVCacheManager: the pure-Python manager
          written the way vLLM's is (the baseline);
  vllm    pagedkv.vllm.KVCacheManager: the same protocol on libpagedkv,
          its decode step in the compiled module pagedkv._fastpath;
  vllm-py the same manager with fastpath=False (its decode step in Python),
          timed in a second phase after the others (interleaving a fifth
          manager's memory would slow the other four through the caches);
  batch   the library's pkv_batch_append for the 256 sequences, one ctypes
          call (what the protocol's queued decode steps become).
A step is what vLLM's scheduler asks of its manager for each running request
in a decode step: allocate_slots(request, 1), then the ids of the new blocks
(get_block_ids()) where there are any; the vllm step ends by sending its
queue to the library (flush), so nothing is left for later.  The requests'
own bookkeeping (appending the sampled token, num_computed_tokens) is done
outside the timed region, identically for both managers.

Each figure is the median over the steps (and p90 in the text); output lines
and BENCH_JSON lines as the C benchmarks (bench/bu_bench.c).

Usage: bench/bench_vllm.py [--requests 256] [--steps 400] [--block-size 16]
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import numpy as np  # noqa: E402

import pagedkv  # noqa: E402
from pagedkv import _lib  # noqa: E402
from pagedkv.vllm import KVCacheManager  # noqa: E402
from pagedkv.vllm_pyref import PyKVCacheManager  # noqa: E402
from pagedkv.vllm_types import EMPTY_BLOCKS  # noqa: E402
from pagedkv.vllm_types import Request as Req  # noqa: E402


def report(name, value, unit, baseline=None, base_name=None, ratio_label=None):
    if baseline is None:
        print("%-44s %12.3f %s" % (name, value, unit))
    else:
        print("%-44s %12.3f %-8s | %s %.3f %s | ratio %.3f %s" % (
            name, value, unit, base_name, baseline, unit, value / baseline,
            ratio_label))
    path = os.environ.get("BENCH_JSON")
    if path:
        rec = {"name": name, "value": round(value, 6), "unit": unit}
        if baseline is not None:
            rec["baseline"] = round(baseline, 6)
            rec["ratio"] = round(value / baseline, 6)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def admit_all(mgr, reqs):
    for r in reqs:
        hit_blocks, hit = mgr.get_computed_blocks(r)
        new = mgr.allocate_slots(r, r.num_tokens - hit, hit, hit_blocks)
        assert new is not None, "pool too small for the benchmark"
        r.num_computed_tokens = r.num_tokens


def step(mgr, reqs):
    """The manager's part of one decode step, as vLLM's scheduler does it:
    allocate_slots for every running request, then each result's block ids
    (None when it got no new block) for the step's output."""
    alloc = mgr.allocate_slots
    new = [alloc(r, 1) for r in reqs]
    if any(b is None for b in new):
        raise RuntimeError("out of blocks")
    return [b.get_block_ids(allow_none=True) for b in new]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=200)
    a = ap.parse_args()
    n, bs = a.requests, a.block_size
    blocks_each = -(-(a.prompt + a.steps + 1) // bs) + 1
    num_blocks = n * blocks_each + 64
    rng = random.Random(7)
    shared = [rng.randrange(32000) for _ in range(3 * bs)]  # a system prompt
    prompts = [shared + [rng.randrange(32000) for _ in range(a.prompt - len(shared)
                                                              + rng.randrange(bs))]
               for _ in range(n)]

    py = PyKVCacheManager(num_blocks=num_blocks, block_size=bs)
    cm = KVCacheManager(num_blocks=num_blocks, block_size=bs)
    if not cm.fastpath:
        sys.exit("bench_vllm: the compiled fast path is missing (`make pyext`)")
    cp = KVCacheManager(num_blocks=num_blocks, block_size=bs, fastpath=False)
    py_reqs = [Req("r%d" % i, p) for i, p in enumerate(prompts)]
    c_reqs = [Req("r%d" % i, p) for i, p in enumerate(prompts)]
    cp_reqs = [Req("r%d" % i, p) for i, p in enumerate(prompts)]
    admit_all(py, py_reqs)
    admit_all(cm, c_reqs)
    admit_all(cp, cp_reqs)

    # The raw batch call on its own cache, sequences shaped the same.
    raw = pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=1, block_size=bs,
                        num_blocks=num_blocks, storage="external")
    seqs = [raw.sequence() for _ in range(n)]
    for s, p in zip(seqs, prompts):
        s.append(p)
        s.commit()
    ids = np.array([s.id for s in seqs], np.uint64)
    toks = np.zeros(n, np.int32)
    slots = np.empty(n, np.int64)
    res = np.zeros(n, pagedkv.cache.STEP_RESULT)
    batch = _lib.LIB.pkv_batch_append
    rawp = raw._ptr
    ids_p, toks_p, slots_p, res_p = (ids.ctypes.data, toks.ctypes.data,
                                     slots.ctypes.data, res.ctypes.data)

    class NoOp:
        """The scheduler's own loop with a manager that does nothing: the
        floor under any per-request Python protocol."""
        def allocate_slots(self, request, num_new_tokens, *rest, **kw):
            return EMPTY_BLOCKS
    noop = NoOp()

    t_py, t_c, t_raw, t_noop, t_cp = [], [], [], [], []
    clock = time.perf_counter_ns
    for k in range(a.steps):
        tok = rng.randrange(32000)
        for r in py_reqs:
            r.all_token_ids.append(tok)
        for r in c_reqs:
            r.all_token_ids.append(tok)
        toks[:] = tok
        order = (0, 1, 2, 3) if k % 2 == 0 else (3, 2, 1, 0)
        for which in order:
            if which == 0:
                t0 = clock()
                step(py, py_reqs)
                t_py.append(clock() - t0)
            elif which == 1:
                t0 = clock()
                step(cm, c_reqs)
                cm.flush()
                t_c.append(clock() - t0)
            elif which == 2:
                t0 = clock()
                rc = batch(rawp, ids_p, toks_p, n, slots_p, res_p)
                t_raw.append(clock() - t0)
                assert rc == 0
            else:
                t0 = clock()
                step(noop, py_reqs)
                t_noop.append(clock() - t0)
        for r in py_reqs:
            r.num_computed_tokens += 1
        for r in c_reqs:
            r.num_computed_tokens += 1
    for k in range(a.steps):  # the second phase: the Python decode path
        tok = rng.randrange(32000)
        for r in cp_reqs:
            r.all_token_ids.append(tok)
        t0 = clock()
        step(cp, cp_reqs)
        cp.flush()
        t_cp.append(clock() - t0)
        for r in cp_reqs:
            r.num_computed_tokens += 1

    # Both managers hold the same tables, block for block in count.
    for rp, rc_ in zip(py_reqs[:8], c_reqs[:8]):
        assert len(py.get_block_ids(rp.request_id)[0]) == len(cm.get_block_ids(rc_.request_id)[0])
    cm.check()
    cp.check()

    def med(v):
        return statistics.median(v) / 1000.0

    def p90(v):
        return sorted(v)[int(0.9 * len(v))] / 1000.0

    print("# %d requests, block_size %d, %d steps (medians; p90 pyref %.1f, "
          "vllm %.1f, batch %.2f us)" % (n, bs, a.steps, p90(t_py), p90(t_c),
                                         p90(t_raw)))
    report("vllm protocol step, %d decodes (python)" % n, med(t_c), "us",
           med(t_py), "pure-python manager", "of baseline time")
    report("vllm protocol speed-up over pure-python", med(t_py) / med(t_c), "x")
    report("vllm protocol step, decode path in Python (phase 2)", med(t_cp), "us",
           med(t_py), "pure-python manager", "of baseline time")
    report("no-op manager step (the loop's floor)", med(t_noop), "us",
           med(t_c), "python protocol step", "of protocol time")
    report("C batch step, %d decodes (one ctypes call)" % n, med(t_raw), "us",
           med(t_c), "python protocol step", "of protocol time")
    raw.close()


if __name__ == "__main__":
    main()
