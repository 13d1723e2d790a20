"""abi_append.py SRC_DIR DST_DIR — writes DST_DIR/pagedkv/*.h: the public
headers as a later 0.x release would have them, with one field appended to
pkv_config and to pkv_seq_opts (each taking the first reserved word, the
struct's version going up by one; prints pkv_config's new version).  scripts/host-tests.sh builds the library
against these and runs a 0.1 caller (tests/host/host_abi.c) on it."""
import os
import shutil
import sys

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(dst, "pagedkv"), exist_ok=True)
for name in os.listdir(os.path.join(src, "pagedkv")):
    shutil.copy(os.path.join(src, "pagedkv", name), os.path.join(dst, "pagedkv", name))
path = os.path.join(dst, "pagedkv", "pagedkv.h")
text = open(path).read()
import re

versions = []
for struct, macro in (("pkv_config", "PKV_CONFIG_VERSION"), ("pkv_seq_opts", "PKV_SEQ_OPTS_VERSION")):
    pat = re.compile(r"  uint64_t reserved\[(\d+)\]; +/\* zero: room for new fields \*/\n\} %s;\n"
                     r"#define %s (\d+)" % (struct, macro))
    m = pat.search(text)
    if not m:
        sys.exit("abi_append: %s no longer ends %s with reserved[N] and %s" % (path, struct, macro))
    n, v = int(m.group(1)), int(m.group(2))
    versions.append(v + 1)
    text = text[:m.start()] + (
        "  uint64_t appended;     /* a field of version %d */\n"
        "  uint64_t reserved[%d];\n} %s;\n#define %s %d" % (v + 1, n - 1, struct, macro, v + 1)
    ) + text[m.end():]
print(versions[0])
open(path, "w").write(text)
