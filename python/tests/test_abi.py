"""The ctypes mirrors match the C headers: a small C program prints
sizeof/offsetof of every mirrored struct field, compiled against the tree's
include/, and each must equal the ctypes layout (the trailing room the
package adds to structs the library fills is the only extra)."""
import ctypes
import os
import subprocess

from pagedkv import _lib

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "..", ".."))
STRUCTS = ["pkv_hash128", "pkv_event", "pkv_block_meta", "pkv_policy_ops",
           "pkv_config", "pkv_kv_layout", "pkv_seq_opts", "pkv_seq_info",
           "pkv_copy", "pkv_stats", "pkv_engine_config", "pkv_append",
           "pkv_delta", "pkv_remap", "pkv_step_result", "pkv_capacity"]


# Fields mirrored ahead of a library that may not have them yet: checked
# where the header declares them (a version-1 vtable, an unversioned config
# simply end before them).
NEWER = {"pkv_policy_ops": ["on_dedup", "check"],
         "pkv_config": ["version", "reserved"],
         "pkv_seq_opts": ["version", "reserved"],
         "pkv_engine_config": ["version", "reserved"]}


def declared(struct, field, text):
    import re
    m = re.search(r"typedef struct %s \{(.*?)\} %s;" % (struct, struct), text, re.S)
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    return re.search(r"\b%s\b" % field, body) is not None


def header_text():
    d = os.path.join(ROOT, "include", "pagedkv")
    return "".join(open(os.path.join(d, f)).read() for f in os.listdir(d))


def fields(name, text=None):
    out = [f[0] for f in getattr(_lib, name)._fields_ if f[0] != "_room"]
    if text is not None:
        out = [f for f in out if f not in NEWER.get(name, ())
               or declared(name, f, text)]
    return out


def test_struct_layouts_match_the_headers(tmp_path):
    src = ["#include <stddef.h>", "#include <stdio.h>",
           "#include <pagedkv/pagedkv.h>", "#include <pagedkv/policy.h>",
           "#include <pagedkv/engine.h>", "int main(void) {"]
    text = header_text()
    for s in STRUCTS:
        for f in fields(s, text):
            src.append('printf("%s.%s %%zu\\n", offsetof(%s, %s));' % (s, f, s, f))
        src.append('printf("%s sizeof %%zu\\n", sizeof(%s));' % (s, s))
    src.append("return 0; }")
    c = tmp_path / "layout.c"
    c.write_text("\n".join(src))
    exe = tmp_path / "layout"
    r = subprocess.run(["cc", "-std=c11", "-I", os.path.join(ROOT, "include"),
                        "-o", str(exe), str(c)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # a field the header no longer has
    out = dict(line.rsplit(" ", 1) for line in
               subprocess.run([str(exe)], capture_output=True, text=True,
                              check=True).stdout.splitlines())
    for s in STRUCTS:
        cls = getattr(_lib, s)
        have = fields(s, text)
        for f in have:
            assert int(out["%s.%s" % (s, f)]) == getattr(cls, f).offset, (s, f)
        room = getattr(cls, "_room", None)
        size = room.offset if room is not None else ctypes.sizeof(cls)
        missing = [f for f in fields(s) if f not in have]
        if missing:  # the C struct ends where the newer fields would start
            size = getattr(cls, missing[0]).offset
        # the C struct may end in padding after the last mirrored field
        assert int(out["%s sizeof" % s]) == size or (
            room is not None and int(out["%s sizeof" % s]) <= size + 8), s
