"""ctypes_load.py LIB — Python (no LD_PRELOAD) loads libpagedkv with ctypes,
keeps glibc's malloc, and the library works: a cache is created from a
config filled by pkv_config_init, a bad one is refused with a clear error."""
import ctypes
import os
import sys

def addr(f):
    return ctypes.cast(f, ctypes.c_void_p).value


lib_path = sys.argv[1]
if os.environ.get("LD_PRELOAD"):
    sys.exit("ctypes_load: run me without LD_PRELOAD")
libc = ctypes.CDLL("libc.so.6")
# The process's malloc symbol (for a non-PIE interpreter: its PLT address).
before = addr(ctypes.CDLL(None).malloc)
lib = ctypes.CDLL(lib_path)
print("ctypes: loaded", lib_path)

after = addr(ctypes.CDLL(None).malloc)
if after != before:
    sys.exit("ctypes: loading changed the process's malloc")
# lib.malloc is dlsym(library handle, "malloc"): what the library and its
# dependencies bind to.  It must be glibc's, not an allocator they brought.
if addr(lib.malloc) != addr(libc.malloc):
    sys.exit("ctypes: the library's malloc is not glibc's")
maps = open("/proc/self/maps").read()
for other in ("jemalloc", "tcmalloc", "libstdc++"):
    if other in maps:
        sys.exit("ctypes: %s mapped into the process" % other)
print("ctypes: process malloc unchanged (%#x); the library binds glibc's "
      "malloc (%#x); no jemalloc, tcmalloc or libstdc++ mapped"
      % (after, addr(lib.malloc)))

lib.pkv_last_error.restype = ctypes.c_char_p
lib.pkv_strerror.restype = ctypes.c_char_p
cfg = ctypes.create_string_buffer(4096)  # larger than any pkv_config
lib.pkv_config_init(cfg)
cache = ctypes.c_void_p()
rc = lib.pkv_cache_create(cfg, ctypes.byref(cache))
err = lib.pkv_last_error().decode()
print("ctypes: create with no shape -> %d (%s: %s)" %
      (rc, lib.pkv_strerror(rc).decode(), err))
if rc != -1 or not err:
    sys.exit("ctypes: an empty config must be refused with PKV_EINVAL and a reason")
# n_layers, n_kv_heads, head_dim, block_size are the first four uint32 fields;
# num_blocks follows dtype (pkv_config in include/pagedkv/pagedkv.h).
fields = (ctypes.c_uint32 * 6).from_buffer(cfg)
fields[0], fields[1], fields[2], fields[3], fields[5] = 2, 2, 64, 16, 32
rc = lib.pkv_cache_create(cfg, ctypes.byref(cache))
if rc != 0:
    sys.exit("ctypes: create failed: %s" % lib.pkv_last_error().decode())
msg = ctypes.create_string_buffer(256)
if lib.pkv_check(cache, msg, 256) != 0:
    sys.exit("ctypes: check: " + msg.value.decode())
lib.pkv_cache_destroy(cache)
print("ctypes: cache created, checked and destroyed: ok")
