"""abi_append.py SRC_DIR DST_DIR — writes DST_DIR/pagedkv/*.h: the public
headers as a later 0.x release would have them, with one field appended to
pkv_config and to pkv_seq_opts (each taking the first reserved word, the
struct's version going to 2).  scripts/host-tests.sh builds the library
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
edits = [
    ("  uint64_t reserved[8];  /* zero: room for new fields */\n} pkv_config;\n"
     "#define PKV_CONFIG_VERSION 1",
     "  uint64_t appended;     /* a field of version 2 */\n"
     "  uint64_t reserved[7];\n} pkv_config;\n#define PKV_CONFIG_VERSION 2"),
    ("  uint64_t reserved[4]; /* zero: room for new fields */\n} pkv_seq_opts;\n"
     "#define PKV_SEQ_OPTS_VERSION 1",
     "  uint64_t appended;    /* a field of version 2 */\n"
     "  uint64_t reserved[3];\n} pkv_seq_opts;\n#define PKV_SEQ_OPTS_VERSION 2"),
]
for old, new in edits:
    if old not in text:
        sys.exit("abi_append: %s no longer has the expected struct end:\n%s" % (path, old))
    text = text.replace(old, new)
open(path, "w").write(text)
