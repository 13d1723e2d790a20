#!/usr/bin/python3
"""policy-ceiling.py — what each signal is worth on a Mooncake-format trace.

Replays TRACE (JSONL: input_length, output_length, hash_ids per request)
through a Python model of `pagedkv sim`'s manager model and prints, per
eviction mechanism, the prefix hit ratio minus LRU's at each capacity and
the share of the LRU-to-Belady gap it closes at the --gap-at capacity.
It answers "is the information a policy would need there at all?", so
some rows are oracles (they read the future) or use a field the policy
vtable does not pass (output_length): they are bounds, not policies.

Model (the simulator's, checked against it: LRU 0.0354 / 0.0549 / 0.1585
at 250 / 1,000 / 4,000 blocks on tests/data/traces/synthetic_trace.jsonl,
equal to `pagedkv sim` to the 4th digit).  Per request, in file order: the
leading cached full 512-token blocks are matched (at most input_length - 1
tokens) and pinned; every other full block is looked up (a cached one is
pinned: dedup), else takes a free block or evicts one; a partial last block
takes one too and is freed at the end; the request's full blocks are then
released leaf first.  A request that cannot get its blocks is dropped (as
the simulator's ENOMEM).  Prefix hit ratio = matched tokens / prompt tokens.

Every mechanism is a class per block, set when the block is inserted or
used again (class 0 is evicted first), and LRU by release order within a
class; "soft" variants (W) instead age a block's release stamp by W
releases per class, as GreedyDual does, so a protected block still goes
once it is W releases older than an unprotected one.

    /usr/bin/python3 scripts/policy-ceiling.py TRACE [--caps 250,1000,4000]
        [--gap-at 1000] [--belady 0.2008]

--belady is the Belady prefix hit ratio at --gap-at (from `pagedkv sim
TRACE -c N`); without it the gap column is left out.  Exit status 1 with a
message naming the file and line on a malformed trace.
"""

import argparse
import collections
import heapq
import json
import sys

BLOCK = 512


def load(path):
    reqs = []
    try:
        f = open(path)
    except OSError as e:
        sys.exit(f"policy-ceiling: {path}: {e.strerror}")
    with f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                ids, n, out = r["hash_ids"], int(r["input_length"]), int(r["output_length"])
                if not isinstance(ids, list) or n < 0 or out < 0:
                    raise ValueError("bad field")
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"policy-ceiling: {path}:{ln}: not a Mooncake request ({e})")
            reqs.append((ids, n, out))
    if not reqs:
        sys.exit(f"policy-ceiling: {path}: no requests")
    return reqs


def replay(reqs, cap, cls=None, soft=None):
    """Prefix hit ratio at cap blocks; cls(ri, k) is the class of the k-th
    full block of request ri when the request inserts or uses it."""
    cached = {}                 # id -> class
    ref = collections.Counter()
    ver = {}                    # id -> version of its live heap entry
    heap = []                   # (score, release stamp, id, version)
    free, clock, hit, tot = cap, 0, 0, 0

    def take():
        nonlocal free
        if free:
            free -= 1
            return True
        while heap:
            _, _, h, v = heapq.heappop(heap)
            if ver.get(h) == v and ref[h] == 0 and h in cached:
                del cached[h]
                return True
        return False

    for ri, (ids, n, _) in enumerate(reqs):
        tot += n
        full = ids[:n // BLOCK]
        m = 0
        while m < len(full) and full[m] in cached and (m + 1) * BLOCK <= n - 1:
            m += 1
        hit += m * BLOCK
        held, new, drop = [], [], False
        for k, h in enumerate(full):
            if h not in cached:
                if not take():
                    drop = True
                    break
                new.append(h)
            cached[h] = cls(ri, k) if cls else 0
            ref[h] += 1
            ver[h] = ver.get(h, 0) + 1
            held.append(h)
        part = n % BLOCK != 0
        if part and not drop and not take():
            drop = True
        if drop:  # the simulator's ENOMEM: nothing of it is committed
            for h in new:
                del cached[h]
                ref[h] -= 1
                free += 1
            gone = set(new)
            held = [h for h in held if h not in gone]
            part = False
        for h in reversed(held):  # leaf first
            ref[h] -= 1
            if ref[h] == 0:
                clock += 1
                ver[h] += 1
                c = cached[h]
                score = (c, clock) if soft is None else (clock + soft * c, clock)
                heapq.heappush(heap, (score, clock, h, ver[h]))
        if part:
            free += 1
    return hit / tot


def mechanisms(reqs):
    """(name, cls, soft) rows: online signals, a hint the vtable lacks, oracles."""
    nfull = [n // BLOCK for _, n, _ in reqs]
    later = collections.defaultdict(list)  # id -> requests using it
    for ri, (ids, n, _) in enumerate(reqs):
        for h in ids[:n // BLOCK]:
            later[h].append(ri)
    seen_root = collections.Counter()
    root_uses = []  # requests so far (this one included) with this chain root
    for ids, n, _ in reqs:
        r = ids[0] if ids else None
        seen_root[r] += 1
        root_uses.append(seen_root[r])

    def reused_within(w):
        def f(ri, k):
            h = reqs[ri][0][k]
            return int(any(ri < x <= ri + w for x in later[h]))
        return f

    def root(ri, k):
        return min(root_uses[ri], 4)

    def short_out(ri, k):
        return int(reqs[ri][2] < 150)

    def out_bin(o):
        return sum(o >= t for t in (10, 50, 150, 300))

    def len_bin(n):
        return sum(n >= t for t in (4, 8, 16, 32, 48, 64))

    # P(a block is used again | output class, length class), counted on the
    # trace itself: the best any rule on these two fields can know.
    cnt, again = collections.Counter(), collections.Counter()
    for ri, (ids, n, out) in enumerate(reqs):
        key = (out_bin(out), len_bin(nfull[ri]))
        for h in ids[:nfull[ri]]:
            cnt[key] += 1
            again[key] += any(x > ri for x in later[h])

    def fitted(ri, k):
        key = (out_bin(reqs[ri][2]), len_bin(nfull[ri]))
        return again[key] / cnt[key]

    rows = [
        ("depth: chain head (first 16 blocks) kept, deeper first", lambda ri, k: int(k < 16), None),
        ("depth: same, soft (W = 1,000)", lambda ri, k: int(k < 16), 1000),
        ("position: a chain's last block first", lambda ri, k: int(k < nfull[ri] - 1), None),
        ("position: last 2 blocks first, soft (W = 1,000)", lambda ri, k: int(k < nfull[ri] - 2), 1000),
        ("per-root frequency (requests seen with the chain's root, 1..4+)", root, None),
        ("per-root frequency, soft (W = 1,000)", root, 1000),
        ("hint: output_length < 150 kept (not in the vtable)", short_out, None),
        ("hint + per-root frequency", lambda ri, k: 4 * short_out(ri, k) + root(ri, k), None),
        ("offline fit on the trace itself: P(reused given output and length class)", fitted, None),
        ("oracle: reused within the next 100 requests", reused_within(100), None),
        ("oracle: ever reused again", reused_within(len(reqs)), None),
    ]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--caps", default="250,1000,4000")
    ap.add_argument("--gap-at", type=int, default=1000)
    ap.add_argument("--belady", type=float)
    a = ap.parse_args()
    try:
        caps = [int(c) for c in a.caps.split(",")]
        if any(c < 1 for c in caps):
            raise ValueError
    except ValueError:
        sys.exit(f"policy-ceiling: --caps {a.caps!r}: want positive integers, comma-separated")
    if a.gap_at not in caps:
        caps.append(a.gap_at)
        caps.sort()
    reqs = load(a.trace)
    base = {}
    for c in caps:
        base[c] = replay(reqs, c)
        print(f"lru @{c}: {base[c]:.4f}", file=sys.stderr)
    head = "| mechanism | " + " | ".join(f"{c:,}" for c in caps)
    head += f" | gap @{a.gap_at:,} |" if a.belady is not None else " |"
    print(head)
    print("|---" * (len(caps) + 1 + (a.belady is not None)) + "|")
    print("| lru (hit ratio) | " + " | ".join(f"{base[c]:.4f}" for c in caps)
          + (" | — |" if a.belady is not None else " |"))
    for name, cls, soft in mechanisms(reqs):
        print(f"{name}...", file=sys.stderr)
        d = {c: replay(reqs, c, cls, soft) - base[c] for c in caps}
        row = f"| {name} | " + " | ".join(f"{d[c]:+.4f}" for c in caps)
        if a.belady is not None:
            g = a.belady - base[a.gap_at]
            row += f" | {100 * d[a.gap_at] / g:.1f}% |" if g > 0 else " | — |"
        else:
            row += " |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
