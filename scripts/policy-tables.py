#!/usr/bin/python3
"""policy-tables.py — hit-ratio tables of every policy over capacities.

For each trace, runs `pagedkv sim` at 8 capacities from 250 blocks to the
trace's footprint (distinct full blocks, log-spaced), and prints one
markdown table: a row per policy, a column per capacity, Belady last.
A cell more than 0.002 below LRU's is marked with a trailing "▼"; the
"gap @1k" column is the share of the LRU-to-Belady gap closed at the
capacity nearest 1,000 blocks.

    /usr/bin/python3 scripts/policy-tables.py [--bin build/release/pagedkv]
        [--model manager|simple] [--caps 250,1000,...] TRACE...

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build/release/pagedkv")
    ap.add_argument("--model", default="manager", choices=["manager", "simple"])
    ap.add_argument("--caps", help="comma-separated capacities (default: 250 .. footprint)")
    ap.add_argument("traces", nargs="+")
    a = ap.parse_args()
    for path in a.traces:
        fp = footprint(path)
        caps = [int(x) for x in a.caps.split(",")] if a.caps else capacities(fp)
        res = run(a.bin, path, caps, a.model)
        name = os.path.basename(path) + (f" (footprint {fp:,} blocks)" if fp else "")
        print(table(name, res, caps))


if __name__ == "__main__":
    main()
