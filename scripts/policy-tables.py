#!/usr/bin/python3
"""policy-tables.py — hit-ratio tables of every policy over capacities.

For each trace, runs `pagedkv sim` at 8 capacities from 250 blocks to the
trace's footprint (distinct full blocks, log-spaced), and prints one
markdown table: a row per policy, a column per capacity, Belady last.
A cell more than 0.002 below LRU's is marked with a trailing "▼"; the
"gap @1k" column is the share of the LRU-to-Belady gap closed at the
capacity nearest 1,000 blocks.

    /usr/bin/python3 scripts/policy-tables.py [--bin build/release/pagedkv]
        [--model manager|simple] [--caps 250,1000,...] [--summary] TRACE...

With --summary, prints instead one table with a row per trace and, per
policy, its hit ratio minus LRU's, min / max over the capacities, then the
worst cell of each policy over all the traces.

Exit status 1 if a run fails.  Arguments are passed to pagedkv as a list
(no shell).
"""

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile


def footprint(path):
    """Distinct full 512-token blocks of a Mooncake trace (None for CSV)."""
    if not path.endswith(".jsonl"):
        return None
    ids = set()
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            full = r["input_length"] // 512
            ids.update(r["hash_ids"][:full])
    return len(ids)


def capacities(fp):
    if not fp or fp <= 250:
        return [250, 500, 1000, 2000, 4000, 8000, 16000, 32000]
    caps = [round(250 * (fp / 250) ** (k / 7)) for k in range(8)]
    return sorted(set(caps))


def run(binary, path, caps, model):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.csv")
        cmd = [binary, "sim", path, "-q", "-m", model, "-c", ",".join(map(str, caps)),
               "--csv", out]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode:
            sys.stderr.write(p.stderr)
            raise SystemExit(1)
        with open(out) as f:
            rows = list(csv.DictReader(f))
    key = "prefix_hit_ratio" if model == "manager" else "block_hit_ratio"
    res = {}
    for r in rows:
        res[(r["policy"], int(r["capacity"]))] = float(r[key])
    return res


def table(name, res, caps):
    pols = []
    for p, _ in res:
        if p not in pols:
            pols.append(p)
    pols = [p for p in pols if p != "belady"] + (["belady"] if "belady" in pols else [])
    c1k = min(caps, key=lambda c: abs(c - 1000))
    out = io.StringIO()
    out.write(f"**{name}**\n\n| policy | " + " | ".join(f"{c:,}" for c in caps)
              + f" | gap @{c1k:,} |\n")
    out.write("|---" * (len(caps) + 2) + "|\n")
    for p in pols:
        cells = []
        for c in caps:
            v, lru = res.get((p, c)), res.get(("lru", c))
            mark = " ▼" if v is not None and lru is not None and v < lru - 0.002 else ""
            cells.append("—" if v is None else f"{v:.4f}{mark}")
        lru, bel, v = res.get(("lru", c1k)), res.get(("belady", c1k)), res.get((p, c1k))
        gap = "—"
        if p not in ("lru", "belady") and None not in (lru, bel, v) and bel - lru > 1e-9:
            gap = f"{100 * (v - lru) / (bel - lru):+.0f}%"
        out.write(f"| {p} | " + " | ".join(cells) + f" | {gap} |\n")
    return out.getvalue()


def summary(rows):
    """rows: (trace name, res, caps).  Markdown: min / max of policy - lru."""
    pols = []
    for _, res, _ in rows:
        for p, _ in res:
            if p not in pols and p not in ("lru", "belady"):
                pols.append(p)
    out = io.StringIO()
    out.write("| trace | " + " | ".join(pols) + " |\n" + "|---" * (len(pols) + 1) + "|\n")
    worst = {p: None for p in pols}
    for name, res, caps in rows:
        cells = []
        for p in pols:
            d = [(res[(p, c)] - res[("lru", c)], c) for c in caps
                 if (p, c) in res and ("lru", c) in res]
            if not d:
                cells.append("—")
                continue
            lo, hi = min(d), max(d)
            if worst[p] is None or lo[0] < worst[p][0]:
                worst[p] = (lo[0], name, lo[1])
            cells.append(f"{lo[0]:+.4f} / {hi[0]:+.4f}")
        out.write(f"| {name} | " + " | ".join(cells) + " |\n")
    out.write("\nWorst cell against LRU: " + "; ".join(
        f"{p} {w[0]:+.4f} ({w[1]} at {w[2]:,} blocks)" for p, w in worst.items() if w) + "\n")
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build/release/pagedkv")
    ap.add_argument("--model", default="manager", choices=["manager", "simple"])
    ap.add_argument("--caps", help="comma-separated capacities (default: 250 .. footprint)")
    ap.add_argument("--summary", action="store_true",
                    help="one row per trace: each policy minus LRU, min / max")
    ap.add_argument("traces", nargs="+")
    a = ap.parse_args()
    rows = []
    for k, path in enumerate(a.traces):
        fp = footprint(path)
        caps = [int(x) for x in a.caps.split(",")] if a.caps else capacities(fp)
        res = run(a.bin, path, caps, a.model)
        if a.summary:
            sys.stderr.write(f"policy-tables: {k + 1}/{len(a.traces)} {path}\n")
            rows.append((os.path.basename(path), res, caps))
            continue
        name = os.path.basename(path) + (f" (footprint {fp:,} blocks)" if fp else "")
        print(table(name, res, caps))
    if a.summary:
        print(summary(rows))


if __name__ == "__main__":
    main()
