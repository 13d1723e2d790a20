#!/usr/bin/python3
"""reference.py TRACE.jsonl [CAPACITY...] — hit ratios of the simple cache
model of the trace README, computed here independently of the C simulator
(tools/sim.c), so that the figures tests/check_sim.c asserts are not the
tool's own output pasted back.

Model: requests in file order; each request looks up its hash_ids in order;
a lookup hits if the block is resident at that moment; after the lookups
every block of the request is inserted or refreshed, in request order;
capacity in blocks.  LRU evicts the least recently inserted/refreshed block;
Belady evicts the resident block whose next lookup is farthest away (never =
farthest), the incoming block included (it is then not inserted).

Prints one line per capacity: capacity, lookups, LRU hits, Belady hits and
the two ratios; then the manager model with room for every block (prefix
matching of full 512-token blocks only: a request reuses its leading ids
that earlier requests stored as full blocks, up to the first miss; its own
full blocks are stored after it): prompt tokens and hit tokens."""
import collections
import heapq
import json
import sys


BLOCK = 512


def load(path):
    reqs, lens = [], []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                reqs.append(r["hash_ids"])
                lens.append(r["input_length"])
    return reqs, lens


def manager_unbounded(reqs, lens):
    stored = set()
    hit_tokens = 0
    for ids, n in zip(reqs, lens):
        full = [i for k, i in enumerate(ids) if (k + 1) * BLOCK <= n]
        for i in full:
            if i not in stored:
                break
            hit_tokens += BLOCK
        stored.update(full)
    return sum(lens), hit_tokens


def lru(reqs, cap):
    res = collections.OrderedDict()
    hits = 0
    for ids in reqs:
        hits += sum(1 for i in ids if i in res)
        for i in ids:
            if i in res:
                res.move_to_end(i)
            else:
                if len(res) >= cap:
                    res.popitem(last=False)
                res[i] = True
    return hits


def belady(reqs, cap):
    # next_use[p] for every lookup position p: the next position of the same id.
    flat = [i for ids in reqs for i in ids]
    never = len(flat) + 1
    next_use = [never] * len(flat)
    last = {}
    for p in range(len(flat) - 1, -1, -1):
        next_use[p] = last.get(flat[p], never)
        last[flat[p]] = p
    resident = {}  # id -> its next use
    heap = []      # (-next use, id), lazily invalidated
    hits = 0
    p = 0
    for ids in reqs:
        hits += sum(1 for i in ids if i in resident)
        for i in ids:
            nu = next_use[p]
            p += 1
            if i not in resident and len(resident) >= cap:
                while True:  # the resident block used farthest away
                    far, victim = heap[0]
                    if resident.get(victim) == -far:
                        break
                    heapq.heappop(heap)
                if -far <= nu:
                    continue  # the incoming block is the farthest: bypass
                heapq.heappop(heap)
                del resident[victim]
            resident[i] = nu
            heapq.heappush(heap, (-nu, i))
    return hits


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reqs, lens = load(sys.argv[1])
    caps = [int(c) for c in sys.argv[2:]] or [100, 1000, 10000]
    n = sum(len(ids) for ids in reqs)
    print("requests %d, lookups %d" % (len(reqs), n))
    for cap in caps:
        a, b = lru(reqs, cap), belady(reqs, cap)
        print("cap %6d: LRU %6d hits %.4f   Belady %6d hits %.4f"
              % (cap, a, a / n, b, b / n))
    prompt, hit = manager_unbounded(reqs, lens)
    print("manager model, unbounded: prompt tokens %d, hit tokens %d (%.4f)"
          % (prompt, hit, hit / prompt))


if __name__ == "__main__":
    main()
