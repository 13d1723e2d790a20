"""pagedkv — Python bindings of libpagedkv (paged KV-cache manager and CPU
attention engine).

    import pagedkv
    with pagedkv.Cache(n_layers=2, n_kv_heads=2, head_dim=64, block_size=16,
                       num_blocks=64, events=True) as cache:
        with cache.sequence() as a:
            slots = a.append(prompt)     # int64 slots of the reserved tokens
            a.commit()                   # full blocks enter the prefix index
            b, hit = cache.match(prompt) # b shares the cached full blocks
            ...

Modules: cache (Cache, Sequence, Pin, Config, Event, Stats), policy (Policy,
LRUPolicy, register_policy), engine (Engine), groups (Groups: full and
sliding-window KV cache groups), errors (one class per PKV_E* code), vllm (a
KVCacheManager with vLLM v1's protocol).
"""
from . import _lib
from . import _accel  # the compiled fast path, or one warning on stderr
from .errors import (PagedKVError, InvalidArgument, OutOfMemory, NoSuchSequence,
                     OutOfRange, BufferTooSmall, InvalidState, NotSupported,
                     Corrupt, NoSuchObject, Busy, CallbackError, strerror, err_name)
from .cache import (Cache, Config, Sequence, Pin, Event, Stats, SeqInfo, Layout,
                    Copy, Capacity, Delta, Remap, dtype_size)
from .policy import (Policy, LRUPolicy, BlockMeta, register_policy,
                     policy_names, policy_exists)
from .engine import Engine
from .groups import Groups, GroupRequest

LIBRARY_PATH = _lib.LIB_PATH


def version():
    """The library's version string (pkv_version() when the library has it,
    else the header macros this package was written against)."""
    if _lib.has("pkv_version_string"):
        return _lib.LIB.pkv_version_string().decode()
    return "0.1.0"


__all__ = [n for n in dir() if not n.startswith("_")]
