"""abi_symbols.py LIB HEADER... — the shared library exports exactly the
functions the public headers declare with PKV_API: every exported symbol is
declared, every declared function is exported, all under the version node
PAGEDKV_<major>, and nothing else leaks (no pkv__ internals, no xxhash)."""
import re
import subprocess
import sys

lib, headers = sys.argv[1], sys.argv[2:]
declared = set()
for h in headers:
    text = open(h).read()
    # PKV_API <return type> name(   (the declaration may continue on more lines)
    for m in re.finditer(r"^\s*PKV_API\b[^;(]*?\b(pkv_\w+)\s*\(", text, re.M):
        declared.add(m.group(1))

out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                     capture_output=True, text=True).stdout
exported, nodes, unversioned = set(), set(), []
for line in out.splitlines():
    parts = line.split()
    if len(parts) != 3:
        continue
    kind, sym = parts[1], parts[2]
    if kind == "A":  # the version node itself
        nodes.add(sym)
        continue
    name, _, node = sym.partition("@@")
    if not node:
        unversioned.append(name)
    exported.add(name)

bad = False
for name in sorted(exported - declared):
    print("exported but not declared in the headers: %s" % name)
    bad = True
for name in sorted(declared - exported):
    print("declared PKV_API but not exported: %s" % name)
    bad = True
for name in unversioned:
    print("exported without a version: %s" % name)
    bad = True
if len(nodes) != 1 or not next(iter(nodes)).startswith("PAGEDKV_"):
    print("version nodes: %s (want one PAGEDKV_<major>)" % sorted(nodes))
    bad = True
if bad:
    sys.exit(1)
print("abi: %d functions declared in %d headers = %d exported by %s, all @@%s"
      % (len(declared), len(headers), len(exported), lib, next(iter(nodes))))
