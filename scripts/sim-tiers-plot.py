#!/usr/bin/python3
"""sim-tiers-plot.py — prefix hit ratio vs pool capacity, with and without
the tiers below the pool, from `pagedkv sim` (manager model, LRU).

For each configuration — the pool alone, + a host tier, + host and file
tiers (and + host and Redis with --redis) — runs `pagedkv sim TRACE -p lru
--no-belady -c CAPS ... --csv -` (the file tier in a fresh temporary
directory, so every run starts cold), prints one markdown table (a row per
capacity, a column per configuration, the per-tier split of the last one)
and, with --plot, draws one line per configuration with gnuplot.

    /usr/bin/python3 scripts/sim-tiers-plot.py TRACE [--bin build/release/pagedkv]
        [--caps 250,500,...] [--host-bytes 64G] [--file-bytes 256G]
        [--redis HOST:PORT[/PREFIX]] [--plot OUT.png]

Sizes are the model's bytes at sim's --kv-bytes-per-token (default: llama3-8b
in f16, 64 MiB a 512-token block).  Arguments reach pagedkv as a list (no
shell); every string written into the gnuplot script is a single-quoted
gnuplot string with its quotes doubled, and a control character in one is
refused.  Exit status 1 if a run fails.
"""

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile


def sim(args, trace, caps, extra):
    cmd = [args.bin, "sim", trace, "-q", "-p", "lru", "--no-belady", "-c", caps,
           "--csv", "-"] + extra
    print("running:", " ".join(cmd), file=sys.stderr)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("sim-tiers-plot: %s failed (%d): %s" % (" ".join(cmd), p.returncode,
                                                          p.stderr.strip()))
    return list(csv.DictReader(io.StringIO(p.stdout)))


def gp_str(s):
    if any(ord(c) < 32 or ord(c) == 127 for c in s):
        sys.exit("sim-tiers-plot: a control character in %r" % s)
    return "'" + s.replace("'", "''") + "'"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--bin", default="build/release/pagedkv")
    ap.add_argument("--caps", default="250,500,1000,2000,4000,8000,16000")
    ap.add_argument("--host-bytes", default="64G")
    ap.add_argument("--file-bytes", default="256G")
    ap.add_argument("--redis")
    ap.add_argument("--plot")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pkv-tiers-plot.")
    try:
        hb, fb = args.host_bytes, args.file_bytes
        configs = [("pool only", []),
                   ("+ host %s" % hb, ["--host-bytes", hb]),
                   ("+ host %s + file %s" % (hb, fb),
                    ["--host-bytes", hb, "--file-dir", os.path.join(tmp, "file"),
                     "--file-bytes", fb])]
        if args.redis:
            configs.append(("+ host %s + redis (no limit)" % hb, ["--host-bytes", hb, "--redis", args.redis]))
        runs = [(name, sim(args, args.trace, args.caps, extra)) for name, extra in configs]
        caps = [int(r["capacity"]) for r in runs[0][1]]
        last_name, last = runs[-1]
        print("| pool capacity (blocks) | " + " | ".join(n for n, _ in runs) +
              " | split of the last: device / host / file / redis |")
        print("|---" * (len(runs) + 2) + "|")
        for i, cap in enumerate(caps):
            cells = ["%.4f" % float(rows[i]["prefix_hit_ratio"]) for _, rows in runs]
            r = last[i]
            pt = float(r["prompt_tokens"])
            split = " / ".join("%.4f" % (float(r[k]) / pt) for k in
                               ("device_hit_tokens", "host_hit_tokens", "file_hit_tokens",
                                "redis_hit_tokens"))
            print("| %d | %s | %s |" % (cap, " | ".join(cells), split))
        if not args.plot:
            return
        data = []
        for k, (name, rows) in enumerate(runs):
            path = os.path.join(tmp, "c%d.dat" % k)
            with open(path, "w") as f:
                for r in rows:
                    f.write("%s %s\n" % (r["capacity"], r["prefix_hit_ratio"]))
            data.append((path, name))
        title = "%s: prefix hit ratio vs pool capacity (LRU, block %s)" % (
            os.path.basename(args.trace), runs[0][1][0]["block_size"])
        plots = ", ".join("%s using 1:2 with linespoints title %s" % (gp_str(p), gp_str(n))
                          for p, n in data)
        script = ("set terminal pngcairo size 900,560\nset output %s\nset title %s noenhanced\n"
                  "set logscale x\nset xlabel 'pool capacity (blocks)'\nset ylabel 'prefix hit ratio'\n"
                  "set key right bottom noenhanced\nset grid\nplot %s\n" %
                  (gp_str(args.plot), gp_str(title), plots))
        p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit("sim-tiers-plot: gnuplot failed: %s" % p.stderr.strip())
        print("plot: %s" % args.plot, file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
