"""_lib — loads libpagedkv with ctypes and declares every public C function.

The C structs are mirrored field for field (include/pagedkv/*.h); every
function gets argtypes/restype so a wrong Python type fails in Python, not in
C.  The rest of the package calls ``LIB.pkv_*`` through :func:`call`, which
turns a negative return code into the matching exception with
pkv_last_error()'s detail.

Where the library comes from, first match wins:
  1. ``$PAGEDKV_LIB`` (a path to libpagedkv.so); set but missing is an error;
  2. the path recorded at install time (``_install.py``, written by
     ``make install``);
  3. ``build/release/libpagedkv.so`` of the source tree this package sits in;
  4. the system loader (``libpagedkv.so.0``: ldconfig, LD_LIBRARY_PATH).
"""
import ctypes
import os

from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float,
                    c_int, c_int32, c_size_t, c_uint8, c_uint32,
                    c_uint64, c_void_p)

# ---------------------------------------------------------------- loading


def _candidates():
    env = os.environ.get("PAGEDKV_LIB")
    if env:
        return [env], True
    out = []
    try:
        from . import _install  # written by `make install`
        out.append(_install.LIBRARY)
    except ImportError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.normpath(os.path.join(here, "..", "..", "build", "release",
                                         "libpagedkv.so"))
    out.append(tree)
    out.append("libpagedkv.so.0")
    return out, False


def _load():
    paths, explicit = _candidates()
    errors = []
    for p in paths:
        if os.sep in p and not os.path.exists(p):
            errors.append("%s: no such file" % p)
            continue
        try:
            return ctypes.CDLL(p), p
        except OSError as e:
            errors.append("%s: %s" % (p, e))
    hint = ("$PAGEDKV_LIB names it" if explicit else
            "build it with `make lib`, or set PAGEDKV_LIB=/path/to/libpagedkv.so")
    raise ImportError("pagedkv: cannot load libpagedkv (%s):\n  %s"
                      % (hint, "\n  ".join(errors)))


LIB, LIB_PATH = _load()

# ---------------------------------------------------------------- structs

pkv_seq_id = c_uint64
# Structs the library fills get trailing room: a newer library may write
# fields appended after the ones mirrored here (its ABI rule), and
# pkv_config_init's defaults for those land in the room too.
_PAD = ("_room", c_uint64 * 32)
pkv_pin_id = c_uint64


class pkv_hash128(Structure):
    _fields_ = [("lo", c_uint64), ("hi", c_uint64)]


class pkv_event(Structure):
    _fields_ = [("type", c_int), ("seqno", c_uint64), ("key", pkv_hash128),
                ("parent", pkv_hash128), ("block", c_int32),
                ("n_tokens", c_uint32), ("ns", c_void_p), ("ns_len", c_size_t),
                ("adapter_id", c_uint64),
                # serving API (issue 11); an older library leaves them unread
                ("seq", c_uint64), ("index", c_uint32), ("old_block", c_int32),
                ("n_lost", c_uint64)]


EVENT_FN = ctypes.CFUNCTYPE(None, POINTER(pkv_event), c_void_p)
CLOCK_FN = ctypes.CFUNCTYPE(c_uint64, c_void_p)


class pkv_block_meta(Structure):
    _fields_ = [("now", c_uint64), ("key", pkv_hash128),
                ("parent", pkv_hash128), ("depth", c_uint32),
                ("priority", c_uint8), ("priority_until", c_uint64),
                ("parent_block", c_int32)]


POL_CREATE = ctypes.CFUNCTYPE(c_int, POINTER(c_void_p), c_uint32, c_char_p)
POL_DESTROY = ctypes.CFUNCTYPE(None, c_void_p)
POL_HOOK = ctypes.CFUNCTYPE(None, c_void_p, c_int32, POINTER(pkv_block_meta))
POL_VICTIM = ctypes.CFUNCTYPE(c_int32, c_void_p, c_uint64)
POL_REMOVE = ctypes.CFUNCTYPE(None, c_void_p, c_int32)
POL_CHECK = ctypes.CFUNCTYPE(c_int, c_void_p, ctypes.POINTER(c_uint8), c_uint32,
                             c_void_p, c_size_t)


class pkv_policy_ops(Structure):
    _fields_ = [("version", c_int), ("name", c_char_p),
                ("create", POL_CREATE), ("destroy", POL_DESTROY),
                ("on_insert", POL_HOOK), ("on_hit", POL_HOOK),
                ("on_evictable", POL_HOOK), ("on_pinned", POL_HOOK),
                ("choose_victim", POL_VICTIM), ("on_remove", POL_REMOVE),
                # version 2 (optional hooks); a version-1 library stops
                # reading before them
                ("on_dedup", POL_HOOK), ("check", POL_CHECK)]


class pkv_config(Structure):
    _fields_ = [("n_layers", c_uint32), ("n_kv_heads", c_uint32),
                ("head_dim", c_uint32), ("block_size", c_uint32),
                ("dtype", c_int), ("num_blocks", c_uint32),
                ("memory_bytes", c_uint64), ("storage", c_int),
                ("policy", c_char_p), ("policy_ops", POINTER(pkv_policy_ops)),
                ("policy_args", c_char_p), ("on_event", EVENT_FN),
                ("event_user", c_void_p), ("clock", CLOCK_FN),
                ("clock_user", c_void_p), ("flags", c_uint32),
                # versioned ABI: pkv_config_init sets version; new fields
                # take reserved space
                ("version", c_uint32), ("event_queue_cap", c_uint32),
                ("v_head_dim", c_uint32),
                # version 3: the host tier
                ("host_tier_bytes", c_uint64), ("host_tier_policy", c_char_p),
                ("reserved", c_uint64 * 5), _PAD]


class pkv_kv_layout(Structure):
    _fields_ = [("elem_size", c_size_t), ("slot_stride", c_size_t),
                ("head_stride", c_size_t), ("block_stride", c_size_t),
                ("layer_bytes", c_size_t)]


class pkv_seq_opts(Structure):
    # The room is zero: a library whose opts end in `version` + reserved
    # reads version 0 (= 1) and zeroed reserved space.
    _fields_ = [("ns", c_void_p), ("ns_len", c_size_t),
                ("adapter_id", c_uint64), ("priority", c_uint8),
                ("version", c_uint32), ("reserved", c_uint64 * 4), _PAD]


class pkv_seq_info(Structure):
    _fields_ = [("n_tokens", c_uint32), ("n_committed", c_uint32),
                ("n_blocks", c_uint32), ("n_cached_blocks", c_uint32),
                ("n_known", c_uint32), _PAD]


class pkv_copy(Structure):
    _fields_ = [("src_block", c_int32), ("dst_block", c_int32),
                ("n_slots", c_uint32), ("src_slot", c_uint32),
                ("dst_slot", c_uint32)]


_U32 = ["num_blocks", "block_size", "blocks_free", "blocks_used",
        "blocks_cached", "blocks_evictable", "blocks_pinned", "n_seqs"]
_U64 = ["tokens", "slots_reserved", "waste_slots", "appends",
        "appended_tokens", "forks", "truncates", "commits", "cow_copies",
        "cow_copied_slots", "prefix_queries", "prefix_query_tokens",
        "prefix_hit_tokens", "prefix_collisions", "dedup_blocks", "evictions",
        "orphan_evictions", "events", "kv_bytes"]


class pkv_stats(Structure):
    _fields_ = ([(n, c_uint32) for n in _U32] + [(n, c_uint64) for n in _U64]
                + [("policy", c_char * 32), ("allocator", c_char * 16),
                   ("allocator_bytes", c_uint64), ("prefix_probes", c_uint64),
                   ("commit_duplicates", c_uint64), ("remaps", c_uint64),
                   ("blocks_deferred", c_uint32), ("events_queued", c_uint32),
                   ("events_lost", c_uint64), ("batch_calls", c_uint64),
                   # sequence operations (zero in a library without them:
                   # this was reserved space)
                   ("range_removals", c_uint64), ("shift_copied_slots", c_uint64),
                   ("reserved", c_uint64 * 6), _PAD])


STATS_FIELDS = _U32 + _U64 + [
    "allocator_bytes", "prefix_probes", "commit_duplicates", "remaps",
    "blocks_deferred", "events_queued", "events_lost", "batch_calls",
    "range_removals", "shift_copied_slots"]
STATS_TEXT = ["policy", "allocator"]


class pkv_engine_config(Structure):
    _fields_ = [("n_q_heads", c_uint32), ("n_threads", c_uint32),
                ("scale", c_float), ("backend", c_char_p),
                ("bf16_dot", c_uint32), ("version", c_uint32),
                ("cascade", c_uint32), ("reserved", c_uint64 * 7), _PAD]


P = POINTER

# Serving API (probe, append_ex, batch calls, pulled events, capacity).


class pkv_append(Structure):
    _fields_ = [("tokens", c_void_p), ("n_tokens", c_uint32),
                ("n_lookahead", c_uint32), ("hit_blocks", c_void_p),
                ("n_hit_blocks", c_uint32), ("slots", c_void_p),
                ("new_blocks", c_void_p), ("new_cap", c_uint32),
                # versioned ABI (zero = version 1); unread by a library
                # whose pkv_append ends at new_cap
                ("version", c_uint32), ("reserved", c_uint64 * 4), _PAD]


class pkv_delta(Structure):
    _fields_ = [("first_new", c_uint32), ("n_new", c_uint32),
                ("cow_index", c_int32), ("cow_old", c_int32),
                ("cow_new", c_int32), ("n_known", c_uint32),
                ("n_tokens", c_uint32), _PAD]


class pkv_remap(Structure):
    _fields_ = [("index", c_uint32), ("old_block", c_int32),
                ("new_block", c_int32)]


class pkv_step_result(Structure):
    _fields_ = [("rc", c_int32), ("change", c_uint32), ("index", c_uint32),
                ("block", c_int32), ("replaced", c_int32)]


class pkv_group_spec(Structure):
    _fields_ = [("kind", c_int), ("window", c_uint32)]


class pkv_capacity(Structure):
    _fields_ = [("num_blocks", c_uint32), ("free", c_uint32),
                ("evictable", c_uint32), ("in_use", c_uint32),
                ("cached", c_uint32), ("deferred", c_uint32),
                ("usage", c_double), _PAD]


_SERVING = {
    "pkv_prefix_probe": (c_int, [c_void_p, c_void_p, c_void_p, c_uint32,
                                 c_uint32, c_void_p, c_uint32, P(c_uint32)]),
    "pkv_seq_append_ex": (c_int, [c_void_p, pkv_seq_id, P(pkv_append),
                                  P(pkv_delta)]),
    "pkv_seq_commit_ex": (c_int, [c_void_p, pkv_seq_id, c_uint32, c_uint32,
                                  c_void_p, c_uint32, P(c_uint32)]),
    "pkv_blocks_release": (c_int, [c_void_p, c_void_p, c_uint32]),
    "pkv_batch_append": (c_int, [c_void_p, c_void_p, c_void_p, c_uint32,
                                 c_void_p, c_void_p]),
    "pkv_batch_free": (c_int, [c_void_p, c_void_p, c_uint32, c_void_p]),
    "pkv_batch_commit": (c_int, [c_void_p, c_void_p, c_void_p, c_uint32, c_void_p]),
    "pkv_events_drain": (c_int, [c_void_p, c_void_p, c_uint32, P(c_uint32),
                                 P(c_uint32)]),
    "pkv_cache_capacity": (c_int, [c_void_p, P(pkv_capacity)]),
    "pkv_evict": (c_int, [c_void_p, c_uint32]),
    "pkv_common_prefix_blocks": (c_int, [c_void_p, c_void_p, c_uint32,
                                         P(c_uint32)]),
    # llama.cpp-style sequence operations
    "pkv_seq_list": (c_int, [c_void_p, c_void_p, c_uint32, P(c_uint32)]),
    "pkv_seq_keep": (c_int, [c_void_p, pkv_seq_id]),
    "pkv_seq_remove_range": (c_int, [c_void_p, pkv_seq_id, c_uint32, c_uint32]),
    # KV cache groups (groups.h)
    "pkv_groups_create": (c_int, [c_void_p, c_void_p, c_uint32, c_uint32,
                                  P(c_void_p)]),
    "pkv_groups_destroy": (None, [c_void_p]),
    "pkv_groups_seq_create": (c_int, [c_void_p, c_void_p, c_void_p]),
    "pkv_groups_seq_free": (c_int, [c_void_p, c_void_p]),
    "pkv_groups_append": (c_int, [c_void_p, c_void_p, c_void_p, c_uint32,
                                  c_void_p]),
    "pkv_groups_commit": (c_int, [c_void_p, c_void_p, c_uint32]),
    "pkv_groups_match": (c_int, [c_void_p, c_void_p, c_void_p, c_uint32,
                                 c_uint32, P(c_uint32)]),
    "pkv_groups_first_pos": (c_int, [c_void_p, c_void_p, c_uint32,
                                     P(c_uint32)]),
    # versioned ABI
    "pkv_version": (c_uint32, []),
    "pkv_version_string": (c_char_p, []),
    "pkv_seq_opts_init": (None, [c_void_p]),
    "pkv_append_init": (None, [c_void_p]),
}

# ---------------------------------------------------------------- functions
_PROTOS = {
    # errors
    "pkv_strerror": (c_char_p, [c_int]),
    "pkv_err_name": (c_char_p, [c_int]),
    "pkv_last_error": (c_char_p, []),
    # config
    "pkv_config_init": (None, [P(pkv_config)]),
    "pkv_dtype_size": (c_size_t, [c_int]),
    "pkv_config_block_bytes": (c_uint64, [P(pkv_config)]),
    # cache
    "pkv_cache_create": (c_int, [P(pkv_config), P(c_void_p)]),
    "pkv_cache_destroy": (None, [c_void_p]),
    "pkv_cache_config": (P(pkv_config), [c_void_p]),
    "pkv_cache_layout": (c_int, [c_void_p, P(pkv_kv_layout)]),
    "pkv_cache_kv": (c_int, [c_void_p, c_uint32, P(c_void_p), P(c_void_p)]),
    # sequences
    "pkv_seq_create": (c_int, [c_void_p, P(pkv_seq_opts), P(pkv_seq_id)]),
    "pkv_seq_free": (c_int, [c_void_p, pkv_seq_id]),
    "pkv_seq_append": (c_int, [c_void_p, pkv_seq_id, c_void_p, c_uint32,
                               c_void_p]),
    "pkv_seq_fork": (c_int, [c_void_p, pkv_seq_id, P(pkv_seq_id)]),
    "pkv_seq_truncate": (c_int, [c_void_p, pkv_seq_id, c_uint32]),
    "pkv_seq_commit": (c_int, [c_void_p, pkv_seq_id, c_uint32]),
    "pkv_seq_match_prefix": (c_int, [c_void_p, pkv_seq_id, c_void_p, c_uint32,
                                     c_uint32, P(c_uint32)]),
    "pkv_seq_info_get": (c_int, [c_void_p, pkv_seq_id, P(pkv_seq_info)]),
    "pkv_seq_blocks": (c_int, [c_void_p, pkv_seq_id, c_void_p, c_uint32,
                               P(c_uint32)]),
    "pkv_seq_set_priority": (c_int, [c_void_p, pkv_seq_id, c_uint32, c_uint32,
                                     c_uint8, c_uint64]),
    # pins
    "pkv_pin_create": (c_int, [c_void_p, pkv_seq_id, c_uint32, P(pkv_pin_id)]),
    "pkv_pin_release": (c_int, [c_void_p, pkv_pin_id]),
    # prefix
    "pkv_prefix_reset": (c_int, [c_void_p]),
    # exports
    "pkv_block_table": (c_int, [c_void_p, c_void_p, c_uint32, c_void_p,
                                c_uint32, c_void_p]),
    "pkv_slot_mapping": (c_int, [c_void_p, pkv_seq_id, c_uint32, c_uint32,
                                 c_void_p]),
    "pkv_kv_csr": (c_int, [c_void_p, c_void_p, c_uint32, c_void_p, c_void_p,
                           c_uint32, c_void_p, P(c_uint32)]),
    # copies
    "pkv_pool_drain_copies": (c_int, [c_void_p, P(pkv_copy), c_uint32,
                                      P(c_uint32), P(c_uint32)]),
    # stats / check
    "pkv_stats_get": (c_int, [c_void_p, P(pkv_stats)]),
    "pkv_check": (c_int, [c_void_p, c_char_p, c_size_t]),
    # allocator (declared for completeness; see README: not wrapped)
    "pkv_replace_allocator": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p]),
    # policies
    "pkv_policy_find": (P(pkv_policy_ops), [c_char_p]),
    "pkv_policy_register": (c_int, [P(pkv_policy_ops)]),
    "pkv_policy_names": (P(c_char_p), []),
    # engine
    "pkv_engine_config_init": (None, [P(pkv_engine_config)]),
    "pkv_engine_create": (c_int, [c_void_p, P(pkv_engine_config),
                                  P(c_void_p)]),
    "pkv_engine_destroy": (None, [c_void_p]),
    "pkv_engine_backend": (c_char_p, [c_void_p]),
    "pkv_engine_uses_bf16_dot": (c_int, [c_void_p]),
    "pkv_prefill": (c_int, [c_void_p, pkv_seq_id, c_uint32, c_uint32, c_uint32,
                            c_void_p, c_void_p, c_void_p, c_void_p]),
    "pkv_decode": (c_int, [c_void_p, c_void_p, c_uint32, c_uint32, c_void_p,
                           c_void_p, c_void_p, c_void_p]),
}

for _name, (_res, _args) in _PROTOS.items():
    _f = getattr(LIB, _name)
    _f.restype = _res
    _f.argtypes = _args

# Functions a newer library may add; looked up lazily so this package keeps
# loading an older build (has() says whether one is there).


def has(name):
    return hasattr(LIB, name)


def declare(name, restype, argtypes):
    """Declares an optional function; returns it or None if the library
    lacks it."""
    if not has(name):
        return None
    f = getattr(LIB, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


for _name, (_res, _args) in _SERVING.items():
    declare(_name, _res, _args)


def serving(name):
    """A serving-API function, or NotSupported if this library predates it."""
    f = getattr(LIB, name, None) if has(name) else None
    if f is None:
        from .errors import NotSupported
        raise NotSupported("this libpagedkv (%s) has no %s" % (LIB_PATH, name))
    return f


def last_error():
    return LIB.pkv_last_error().decode("utf-8", "replace")


__all__ = ["LIB", "LIB_PATH", "has", "declare", "last_error", "c_double"]
