#!/usr/bin/python3
"""layer-check: the file-level dependency graph of the release objects, and
its cycles.

For every object file under BUILD/{libpagedkv,engine,tools} (default
build/release) `nm` lists the symbols it defines and the ones it uses; an
edge a -> b means a.c uses a symbol b.c defines.  Prints the graph (one
line per file), then every cycle (strongly connected component of more
than one file).  Exit 1 when a cycle is found that the allow-list does not
name; a stale allow-list entry (a cycle that no longer exists) is reported
so it can be removed.

  scripts/layer-check.py [--build DIR] [--allow FILE] [--quiet]

Allow-list: one cycle a line, its files separated by spaces in any order
(e.g. `engine/attn.c engine/engine.c`); `#` starts a comment.  Only cycles
inside engine/ or tools/ may be listed: libpagedkv/ has none.
"""
import argparse
import os
import subprocess
import sys

ROOMS = ("libpagedkv", "engine", "tools")


def objects(build):
    for room in ROOMS:
        top = os.path.join(build, room)
        for d, _, files in os.walk(top):
            for f in sorted(files):
                if f.endswith(".o"):
                    yield os.path.join(d, f)


def source_of(build, obj):
    return os.path.relpath(obj, build)[:-2] + ".c"


def symbols(obj):
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True,
                         text=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            used.add(name)
        elif kind in "TDBRVWCG" or kind in "tdbrvwg":
            if kind.isupper() or kind in "vw":
                defined.add(name)
    return defined, used


def graph(build):
    defs, uses = {}, {}
    for obj in objects(build):
        src = source_of(build, obj)
        if not os.path.exists(src):
            continue  # an object left over from a removed or moved source
        d, u = symbols(obj)
        uses[src] = u
        for name in d:
            defs.setdefault(name, src)
    edges = {src: set() for src in uses}
    for src, u in uses.items():
        for name in u:
            to = defs.get(name)
            if to and to != src:
                edges[src].add(to)
    return edges


def cycles(edges):
    """Tarjan's strongly connected components of more than one node."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def read_allow(path):
    allow = []
    if not path:
        return allow
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            if any(p.startswith("libpagedkv/") for p in line):
                sys.exit(f"{path}:{n}: libpagedkv/ cycles may not be "
                         "allowed")
            allow.append(sorted(line))
    return allow


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--allow", default=None)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    edges = graph(a.build)
    if not edges:
        sys.exit(f"layer-check: no object files under {a.build}/"
                 f"{{{','.join(ROOMS)}}} (build first)")
    if not a.quiet:
        for src in sorted(edges):
            print(f"{src} -> {' '.join(sorted(edges[src])) or '(nothing)'}")
    found = cycles(edges)
    allow = read_allow(a.allow)
    bad = [c for c in found if c not in allow]
    for c in found:
        tag = "allowed" if c in allow else "CYCLE"
        print(f"layer-check: {tag}: {' <-> '.join(c)}")
    for c in allow:
        if c not in found:
            print(f"layer-check: stale allow-list entry (no such cycle now): "
                  f"{' '.join(c)}")
    print(f"layer-check: {len(edges)} files, "
          f"{sum(len(v) for v in edges.values())} edges, {len(found)} "
          f"cycles ({len(bad)} not allowed)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
