#!/usr/bin/env python3
"""bench-engine-table.py FILE.jsonl — the tables of docs/PERFORMANCE.md (Attention engine)
from the JSON lines `BENCH_JSON=FILE make bench-engine` appends."""
import json
import sys

rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["name"]] = r  # the last run wins

print("| figure | value |\n|---|---|")
for name in ("read_bw_t1", "read_bw_t2", "fp32_peak_t1", "fp32_peak_t2"):
    r = rows[name]
    print(f"| {name} | {r['value']:.1f} {r['unit']} |")
print()
print("| dtype | context × batch | threads | K/V read GB/s | read bw GB/s (same reps) | of bandwidth | paged ms | contiguous ms | paged/contiguous |")
print("|---|---|---|---|---|---|---|---|---|")
DTS = [dt for dt in ("f32", "f16", "bf16") if f"decode_{dt}_ctx4096_batch8_t1_gbps" in rows]
for dt in DTS:
    for ctx, b in ((4096, 8), (16384, 2), (32768, 1)):
        for t in (1, 2):
            g = rows[f"decode_{dt}_ctx{ctx}_batch{b}_t{t}_gbps"]
            p = rows[f"decode_{dt}_ctx{ctx}_batch{b}_t{t}_paged_ms"]
            print(f"| {dt} | {ctx // 1024}k × {b} | {t} | {g['value']:.2f} | {g['baseline']:.2f} "
                  f"| {g['ratio']:.2f} | {p['value']:.1f} | {p['baseline']:.1f} | {p['ratio']:.3f} |")
print()
print("On-CPU time (1 thread; descheduling excluded):\n")
print("| dtype | context × batch | K/V read GB/s | read bw GB/s | of bandwidth |")
print("|---|---|---|---|---|")
for dt in DTS:
    for ctx, b in ((4096, 8), (16384, 2), (32768, 1)):
        c = rows.get(f"decode_{dt}_ctx{ctx}_batch{b}_t1_cpu_gbps")
        if c:
            print(f"| {dt} | {ctx // 1024}k × {b} | {c['value']:.2f} | {c['baseline']:.2f} | {c['ratio']:.2f} |")
dot = [(ctx, b) for ctx, b in ((4096, 8), (16384, 2), (32768, 1))
       if f"decode_bf16dot_ctx{ctx}_batch{b}_t1_cpu_gbps" in rows]
if dot:
    print()
    print("bf16 K/V, bf16-dot decode (q rounded to bf16) beside the exact path, same repetitions:\n")
    print("| context × batch | threads | K/V read GB/s | of bandwidth | on-CPU GB/s | of bandwidth (cpu) | bf16-dot / exact on-CPU time |")
    print("|---|---|---|---|---|---|---|")
    for ctx, b in dot:
        for t in (1, 2):
            g = rows[f"decode_bf16dot_ctx{ctx}_batch{b}_t{t}_gbps"]
            c = rows.get(f"decode_bf16dot_ctx{ctx}_batch{b}_t{t}_cpu_gbps")
            m = rows.get(f"decode_bf16dot_ctx{ctx}_batch{b}_t{t}_cpu_ms")
            cpu = f"{c['value']:.2f} | {c['ratio']:.2f} | {m['ratio']:.3f}" if c else "— | — | —"
            print(f"| {ctx // 1024}k × {b} | {t} | {g['value']:.2f} | {g['ratio']:.2f} | {cpu} |")
print()
print("| n | threads | GFLOP/s | fp32 peak (same reps) | of peak | OpenBLAS GFLOP/s | × OpenBLAS |")
print("|---|---|---|---|---|---|---|")
for n in (2048, 4096):
    for t in (1, 2):
        g = rows[f"prefill_n{n}_t{t}_gflops"]
        o = rows[f"prefill_n{n}_t{t}_vs_openblas"]
        print(f"| {n} | {t} | {g['value']:.1f} | {g['baseline']:.1f} | {g['ratio']:.2f} "
              f"| {o['baseline']:.1f} | {o['ratio']:.2f} |")

gains = sorted(k for k in rows if k.endswith("_t2_gain"))
if gains:
    print()
    print("Two threads beside one (wall time, same run; the reason when the gain is below 1.3× is printed by the bench):\n")
    print("| figure | 1 thread | 2 threads | gain |")
    print("|---|---|---|---|")
    for k in gains:
        r = rows[k]
        print(f"| {k[:-len('_t2_gain')]} | {r['baseline']:.2f} | {r['value']:.2f} | {r['ratio']:.2f} |")
for dt in ("f32", "bf16"):
    if f"shape_{dt}_gqa1_gbps" not in rows:
        continue
    print()
    print(f"{dt}, 8 KV heads × G query heads, head_dim 128, 8 × 4k tokens, 1 thread:\n")
    print("| G | K/V GB/s | of the best G | of bandwidth |")
    print("|---|---|---|---|")
    for g in range(1, 9):
        r, b = rows[f"shape_{dt}_gqa{g}_gbps"], rows[f"shape_{dt}_gqa{g}_bw"]
        print(f"| {g} | {r['value']:.2f} | {r['ratio']:.2f} | {b['ratio']:.2f} |")
    print()
    print("| block size | K/V GB/s | of the best block size |")
    print("|---|---|---|")
    for bs in (1, 2, 3, 4, 5, 8, 16, 32, 64, 128, 256):
        r = rows.get(f"shape_{dt}_bs{bs}_gbps")
        if r:
            print(f"| {bs} | {r['value']:.2f} | {r['ratio']:.2f} |")
