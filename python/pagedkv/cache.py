"""cache — the cache, its sequences and pins, exports, events and stats.

Ownership.  A :class:`Cache` owns its ``pkv_cache``; :meth:`Cache.close` (or
leaving its ``with`` block) frees it, live sequences and pins included, and
every later call on the cache or its sequences raises InvalidState.  Memory
that numpy views still look at (:meth:`Cache.kv`) stays mapped until the last
view is gone: the views hold the native handle, and the handle destroys the
cache when the last of its holders lets go.  A :class:`Sequence` and a
:class:`Pin` are context managers that free what they hold.

Arrays.  Token lists may be any sequence of ints or an integer numpy array.
Exports are numpy arrays the library writes straight into (pass ``out=`` to
reuse one); :meth:`Cache.kv` returns zero-copy views of the K/V arena.
"""
import collections
import ctypes
import dataclasses
from ctypes import byref, c_uint32, c_uint64, c_void_p

import numpy as np

from . import _lib
from ._callbacks import CallbackState
from ._lib import LIB
from .errors import Corrupt, InvalidArgument, InvalidState, error_for
from . import policy as _policy

DTYPES = {"f32": 0, "f16": 1, "bf16": 2, "i8": 3, "fp8_e4m3": 4, "fp8_e5m2": 5}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# numpy has no bfloat16 or fp8: those arenas are viewed as bit patterns.
# Quantized rows are head_dim 1-byte codes followed by their f32 scale.
_NP_DTYPE = {0: np.float32, 1: np.float16, 2: np.uint16, 3: np.int8,
             4: np.uint8, 5: np.uint8}
_QUANTIZED = (3, 4, 5)
STORAGES = {"owned": 0, "external": 1}
_STORAGE_NAMES = {v: k for k, v in STORAGES.items()}
EVICT_ORPHANS_FIRST = 0x1
NO_PREFIX_CACHE = 0x2
COMMIT_DEDUP = 0x4

_I32 = np.int32
_I64 = np.int64


def _ptr(a):
    return a.ctypes.data if a is not None else None


def as_tokens(tokens):
    """A C-contiguous int32 array of token ids; refuses values outside
    int32 instead of wrapping them."""
    if isinstance(tokens, np.ndarray) and tokens.dtype == _I32:
        a = tokens
    else:
        a = np.asarray(tokens)
        if a.size and a.dtype.kind not in "iu":
            raise InvalidArgument("token ids must be integers, got %s" % a.dtype)
        if a.size and (a.min() < -2**31 or a.max() >= 2**31):
            raise InvalidArgument("token id out of int32 range")
        a = a.astype(_I32, copy=False)
    if a.ndim != 1:
        raise InvalidArgument("tokens must be one-dimensional")
    return np.ascontiguousarray(a)


def _out(out, shape, dtype, what):
    if out is None:
        return np.empty(shape, dtype)
    if (not isinstance(out, np.ndarray) or out.dtype != dtype
            or out.shape != tuple(shape) or not out.flags.c_contiguous
            or not out.flags.writeable):
        raise InvalidArgument("%s: out must be a writable C-contiguous %s "
                              "array of shape %s" % (what, np.dtype(dtype),
                                                     tuple(shape)))
    return out


def _h128(h):
    return h.lo | (h.hi << 64)


def _opts(namespace, adapter_id, priority):
    """pkv_seq_opts (or None for the defaults) and the buffer it points at."""
    if not (namespace or adapter_id or priority):
        return None, None
    ns = namespace.encode() if isinstance(namespace, str) else bytes(namespace or b"")
    buf = ctypes.create_string_buffer(ns, len(ns)) if ns else None
    return _lib.pkv_seq_opts(ctypes.cast(buf, c_void_p) if buf else None,
                             len(ns), adapter_id, priority), buf


# ---------------------------------------------------------------- config

@dataclasses.dataclass
class Config:
    """pkv_config.  Give ``num_blocks`` or ``memory_bytes``."""
    n_layers: int
    n_kv_heads: int
    head_dim: int
    block_size: int
    num_blocks: int = 0
    memory_bytes: int = 0
    dtype: str = "f32"              # "f32", "f16", "bf16"
    storage: str = "owned"          # "owned", "external"
    policy: object = "lru"          # name, Policy subclass or instance
    policy_args: str = None
    evict_orphans_first: bool = False
    prefix_cache: bool = True
    commit_dedup: bool = False      # stable tables unless asked (issue 11)
    event_queue_cap: int = 0        # events kept for drain_events(); 0 = none
    v_head_dim: int = 0             # V's head dim if not head_dim (MLA)

    def _to_c(self):
        c = _lib.pkv_config()
        LIB.pkv_config_init(byref(c))
        for f in ("n_layers", "n_kv_heads", "head_dim", "block_size",
                  "num_blocks", "memory_bytes"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 0 or v >= (2**64 if f == "memory_bytes" else 2**32):
                raise InvalidArgument("config: %s = %r is not a valid count" % (f, v))
            setattr(c, f, v)
        if self.dtype not in DTYPES:
            raise InvalidArgument("config: dtype %r (f32, f16, bf16)" % (self.dtype,))
        if self.storage not in STORAGES:
            raise InvalidArgument("config: storage %r (owned, external)" % (self.storage,))
        c.dtype = DTYPES[self.dtype]
        c.storage = STORAGES[self.storage]
        c.flags = ((EVICT_ORPHANS_FIRST if self.evict_orphans_first else 0)
                   | (0 if self.prefix_cache else NO_PREFIX_CACHE)
                   | (COMMIT_DEDUP if self.commit_dedup else 0))
        c.event_queue_cap = self.event_queue_cap
        c.v_head_dim = self.v_head_dim
        if self.policy_args is not None:
            c.policy_args = self.policy_args.encode()
        return c

    @property
    def block_bytes(self):
        """Bytes one block takes over all layers, K and V (0 if invalid)."""
        return LIB.pkv_config_block_bytes(byref(self._to_c()))


def dtype_size(dtype):
    return LIB.pkv_dtype_size(DTYPES[dtype])


# ---------------------------------------------------------------- small types

Event = collections.namedtuple(
    "Event", "type seqno key parent block n_tokens ns adapter_id seq index "
    "old_block n_lost")
Event.__doc__ = ("A prefix-index event: type is 'stored', 'removed', "
                 "'cleared', 'remapped' or 'lost'; key/parent are the 128-bit "
                 "keys as ints; ns is None in pulled events.")
_EV_TYPES = {1: "stored", 2: "removed", 3: "cleared", 4: "remapped", 5: "lost"}


def _event_from_c(e, pulled=False):
    ns = None if pulled else (ctypes.string_at(e.ns, e.ns_len) if e.ns_len else b"")
    return Event(_EV_TYPES.get(e.type, e.type), e.seqno, _h128(e.key),
                 _h128(e.parent), e.block, e.n_tokens, ns, e.adapter_id,
                 e.seq, e.index, e.old_block, e.n_lost)


Stats = dataclasses.make_dataclass(
    "Stats", [(n, int) for n in _lib.STATS_FIELDS] + [(n, str) for n in _lib.STATS_TEXT],
    frozen=True)
Stats.__doc__ = "pkv_stats: pool gauges and counters (see docs/API.md)."

SeqInfo = collections.namedtuple("SeqInfo", "n_tokens n_committed n_blocks n_cached_blocks n_known")
Capacity = collections.namedtuple("Capacity", "num_blocks free evictable in_use cached deferred usage")
Delta = collections.namedtuple("Delta", "new_blocks first_new cow_index cow_old cow_new n_known n_tokens slots")
Delta.__doc__ = "What Sequence.append_ex changed: ship new_blocks (and a copy-on-write replacement), not the table."
Remap = collections.namedtuple("Remap", "index old_block new_block")
STEP_RESULT = np.dtype([("rc", np.int32), ("change", np.uint32), ("index", np.uint32),
                        ("block", np.int32), ("replaced", np.int32)])
Layout = collections.namedtuple("Layout", "elem_size slot_stride head_stride block_stride layer_bytes")
Copy = collections.namedtuple("Copy", "src_block dst_block n_slots src_slot dst_slot")


# ---------------------------------------------------------------- handle

class _Handle:
    """Owns the native cache pointer; destroys it when the last holder (the
    Cache until close(), an engine, an arena view) drops it."""

    def __init__(self, ptr, keep):
        self.ptr = ptr
        self.keep = keep  # ctypes callbacks and ops the library points at

    def __del__(self):
        if self.ptr:
            LIB.pkv_cache_destroy(self.ptr)
            self.ptr = None


class Cache:
    """A paged KV cache (pkv_cache).

    ``Cache(config)`` or ``Cache(n_layers=, n_kv_heads=, head_dim=,
    block_size=, num_blocks=, ...)`` with the fields of :class:`Config`, and:

    on_event: callable(Event) run for every event, with the cache lock held
        (it must not call the cache: InvalidState);
    events: True to queue every event for :meth:`take_events`;
    clock: callable() -> int nanoseconds (a logical clock for simulation).
    """

    def __init__(self, config=None, *, on_event=None, events=False, clock=None,
                 **fields):
        if config is None:
            config = Config(**fields)
        elif fields:
            config = dataclasses.replace(config, **fields)
        c = config._to_c()
        cbs = CallbackState()
        keep = []
        pol = config.policy
        if isinstance(pol, str):
            c.policy = pol.encode()
        elif isinstance(pol, _policy.Policy):
            ops, k = _policy.ops_for_instance(pol)
            keep += [ops, k]
            c.policy_ops = ctypes.pointer(ops)
        elif isinstance(pol, type) and issubclass(pol, _policy.Policy):
            ops, k = _policy.ops_for_class(pol)
            keep += [ops, k]
            c.policy_ops = ctypes.pointer(ops)
        else:
            raise InvalidArgument("config: policy must be a name or a Policy, "
                                  "got %r" % (pol,))
        if on_event is not None or events:
            cbs.on_event = on_event
            cbs.queue = collections.deque() if events else None
            fn = _lib.EVENT_FN(self._event_trampoline(cbs))
            keep.append(fn)
            c.on_event = fn
        if clock is not None:
            def clk(user, clock=clock, cbs=cbs):
                try:
                    return int(clock())
                except BaseException as e:  # noqa: B036
                    cbs.fail("clock", e)
                    return 0
            cfn = _lib.CLOCK_FN(clk)
            keep.append(cfn)
            c.clock = cfn
        ptr = c_void_p()
        _policy._CREATING.cbs = cbs
        try:
            rc = LIB.pkv_cache_create(byref(c), byref(ptr))
        finally:
            _policy._CREATING.cbs = None
        if rc < 0:
            err = _lib.last_error()
            if cbs.pending:
                cause, cbs.pending = cbs.pending[0], []
                raise error_for(rc, err) from cause
            raise error_for(rc, err)
        self._h = _Handle(ptr.value, keep)
        self._cbs = cbs
        self._ptr = ptr.value
        cc = LIB.pkv_cache_config(ptr).contents
        self.block_size = cc.block_size
        self.num_blocks = cc.num_blocks
        self.n_layers = cc.n_layers
        self.n_kv_heads = cc.n_kv_heads
        self.head_dim = cc.head_dim
        self.v_head_dim = cc.v_head_dim or cc.head_dim
        self.dtype = _DTYPE_NAMES[cc.dtype]
        self.storage = _STORAGE_NAMES[cc.storage]
        self.policy_name = cc.policy.decode() if cc.policy else ""
        self.policy = None  # the instance, for a Python policy
        self._adapter = None
        for ad in list(_policy._ADAPTERS.values()):
            if ad.cbs is cbs:
                self.policy = ad.policy
                self._adapter = ad
        self._config = dataclasses.replace(
            config, num_blocks=cc.num_blocks, policy=self.policy_name)

    @staticmethod
    def _event_trampoline(cbs):
        def on_event(evp, user):
            try:
                ev = _event_from_c(evp.contents)
                if cbs.queue is not None:
                    cbs.queue.append(ev)
                if cbs.on_event is not None:
                    prev = cbs.enter()
                    try:
                        cbs.on_event(ev)
                    finally:
                        cbs.leave(prev)
            except BaseException as e:  # noqa: B036 — must not cross into C
                cbs.fail("event callback", e)
        return on_event

    # -------------------------------------------------------------- plumbing

    def _p(self):
        """The live native pointer; refuses a closed cache and re-entry
        from a callback."""
        if self._ptr is None:
            raise InvalidState("cache is closed")
        if self._cbs.thread is not None:
            self._cbs.guard()
        return self._ptr

    def _call(self, fn, *args):
        rc = fn(*args)
        if rc < 0:
            err = error_for(rc)
            cbs = self._cbs
            if cbs.pending:
                cause, cbs.pending = cbs.pending[0], []
                raise err from cause
            raise err
        if self._cbs.pending:
            self._cbs.raise_pending()
        return rc

    def close(self):
        """Frees the cache, its sequences and pins.  Idempotent.  Arena views
        keep the memory mapped until they are gone."""
        if self._ptr is None:
            return
        self._cbs.guard()
        self._ptr = None
        self._h = None  # the handle destroys the cache with its last holder

    @property
    def closed(self):
        return self._ptr is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self._ptr is None:
            return "<pagedkv.Cache closed>"
        return ("<pagedkv.Cache %d blocks x %d tokens, %d layers, %d kv heads x "
                "%d, %s, %s, policy %s>" % (
                    self.num_blocks, self.block_size, self.n_layers,
                    self.n_kv_heads, self.head_dim, self.dtype, self.storage,
                    self.policy_name))

    # -------------------------------------------------------------- config

    @property
    def config(self):
        """The validated Config (num_blocks resolved, policy by name)."""
        return self._config

    def layout(self):
        lay = _lib.pkv_kv_layout()
        self._call(LIB.pkv_cache_layout, self._p(), byref(lay))
        return Layout(lay.elem_size, lay.slot_stride, lay.head_stride,
                      lay.block_stride, lay.layer_bytes)

    def kv(self, layer):
        """Zero-copy numpy views (K, V) of layer's arena, each of shape
        [num_blocks, n_kv_heads, block_size, head_dim] (f32, f16, or uint16
        bit patterns for bf16); for the quantized dtypes (i8, fp8_e4m3,
        fp8_e5m2) [num_blocks, n_kv_heads, block_size] records with fields
        "codes" (head_dim int8 / uint8 bit patterns) and "scale" (f32).
        Owned storage only.  The views keep the memory alive after close()."""
        k = c_void_p()
        v = c_void_p()
        self._call(LIB.pkv_cache_kv, self._p(), layer, byref(k), byref(v))
        lay = self.layout()
        code = DTYPES[self.dtype]
        dt = np.dtype(_NP_DTYPE[code])
        shape = (self.num_blocks, self.n_kv_heads, self.block_size, self.head_dim)
        strides = (lay.block_stride, lay.head_stride, lay.slot_stride,
                   lay.elem_size)
        if code in _QUANTIZED:  # one record per slot: codes + scale
            dt = np.dtype([("codes", dt, (self.head_dim,)), ("scale", "<f4")])
            assert dt.itemsize == lay.slot_stride
            shape, strides = shape[:3], strides[:3]
        out = []
        for base in (k.value, v.value):
            buf = (ctypes.c_char * lay.layer_bytes).from_address(base)
            buf._pkv_handle = self._h  # the view keeps the cache alive
            out.append(np.ndarray(shape, dt, buffer=buf, strides=strides))
        return tuple(out)

    # -------------------------------------------------------------- sequences

    def sequence(self, namespace=None, adapter_id=0, priority=0):
        """A new empty Sequence (pkv_seq_create).  namespace (bytes or str,
        the cache salt) and adapter_id isolate its blocks."""
        p = self._p()
        opts, keep = _opts(namespace, adapter_id, priority)
        sid = _lib.pkv_seq_id()
        self._call(LIB.pkv_seq_create, p, byref(opts) if opts else None, byref(sid))
        return Sequence(self, sid.value)

    def match(self, tokens, max_tokens=None, namespace=None, adapter_id=0):
        """A new sequence holding the longest cached prefix of tokens (full
        blocks; at most max_tokens, default len(tokens) - 1 so that one token
        is left to compute).  Returns (sequence, matched_tokens)."""
        t = as_tokens(tokens)
        if max_tokens is None:
            max_tokens = max(len(t) - 1, 0)
        seq = self.sequence(namespace, adapter_id)
        try:
            n = seq.match_prefix(t, max_tokens)
        except BaseException:
            seq.free()
            raise
        return seq, n

    def sequences(self):
        """The live sequences, in slot order (pkv_seq_list)."""
        f = _lib.serving("pkv_seq_list")
        p = self._p()
        n = c_uint32()
        while True:
            out = np.empty(max(n.value, 16), np.uint64)
            rc = f(p, _ptr(out), len(out), byref(n))
            if rc == -5 and n.value > len(out):  # ENOSPC: grown meanwhile
                continue
            if rc < 0:
                self._call(lambda: rc)
            return [Sequence(self, int(i)) for i in out[:n.value]]

    def keep(self, seq):
        """Frees every live sequence except seq (llama.cpp's seq_keep)."""
        self._call(_lib.serving("pkv_seq_keep"), self._p(), int(seq))

    # -------------------------------------------------------------- prefix

    def reset_prefix_cache(self):
        """Drops every cached block no sequence or pin uses."""
        self._call(LIB.pkv_prefix_reset, self._p())

    # -------------------------------------------------------------- exports

    def _seq_array(self, seqs):
        ids = np.empty(len(seqs), np.uint64)
        for i, s in enumerate(seqs):
            if isinstance(s, Sequence):
                if s._cache is not self:
                    raise InvalidArgument("sequence %d belongs to another cache" % i)
                ids[i] = s.id
            else:
                ids[i] = int(s)
        return ids

    def block_table(self, seqs, max_blocks=None, out=None, lens=None):
        """Dense table [len(seqs), max_blocks] int32, -1 past each end, and
        the lengths [len(seqs)] int32.  max_blocks defaults to the longest
        table.  Returns (table, lens)."""
        p = self._p()
        ids = self._seq_array(seqs)
        if max_blocks is None:
            max_blocks = max((Sequence(self, int(i)).info().n_blocks for i in ids),
                             default=0)
        table = _out(out, (len(ids), max_blocks), _I32, "block_table")
        ln = _out(lens, (len(ids),), _I32, "block_table lens")
        self._call(LIB.pkv_block_table, p, _ptr(ids), len(ids), _ptr(table),
                   max_blocks, _ptr(ln))
        return table, ln

    def kv_csr(self, seqs):
        """FlashInfer CSR: (indptr[n+1], indices[nnz], last_page_len[n])."""
        p = self._p()
        ids = self._seq_array(seqs)
        n = len(ids)
        indptr = np.empty(n + 1, _I32)
        last = np.empty(n, _I32)
        need = c_uint32()
        cap = 64
        while True:
            indices = np.empty(cap, _I32)
            rc = LIB.pkv_kv_csr(p, _ptr(ids), n, _ptr(indptr), _ptr(indices),
                                cap, _ptr(last), byref(need))
            if rc == -5 and need.value > cap:  # ENOSPC: size it and retry
                cap = need.value
                continue
            if rc < 0:
                self._call(lambda: rc)
            return indptr, indices[:need.value], last

    def drain_copies(self, cap=1024):
        """External storage: the queued copy-on-write copies, oldest first,
        as a list of Copy(src_block, dst_block, n_slots)."""
        p = self._p()
        out = []
        buf = (_lib.pkv_copy * cap)()
        n = c_uint32()
        pending = c_uint32()
        while True:
            self._call(LIB.pkv_pool_drain_copies, p, buf, cap, byref(n), byref(pending))
            out += [Copy(buf[i].src_block, buf[i].dst_block, buf[i].n_slots,
                         buf[i].src_slot, buf[i].dst_slot) for i in range(n.value)]
            if pending.value == 0:
                return out

    # -------------------------------------------------------------- events

    def take_events(self):
        """Events queued since the last call (Cache(events=True)), oldest
        first."""
        if self._cbs.queue is None:
            raise InvalidState("events are not queued: create the cache with "
                               "events=True")
        q = self._cbs.queue
        out = list(q)
        q.clear()
        return out

    # -------------------------------------------------------------- serving

    def probe(self, tokens, max_tokens=None, namespace=None, adapter_id=0):
        """Read-only prefix probe: (hit_tokens, block ids int32 array).
        max_tokens None = no cap, 0 = nothing.  Changes nothing."""
        f = _lib.serving("pkv_prefix_probe")
        p = self._p()
        t = as_tokens(tokens)
        if max_tokens == 0:
            return 0, np.empty(0, _I32)
        opts, keep = _opts(namespace, adapter_id, 0)
        blocks = np.empty(len(t) // self.block_size, _I32)
        hit = c_uint32()
        self._call(f, p, byref(opts) if opts else None, _ptr(t), len(t),
                   max_tokens or 0, _ptr(blocks), len(blocks), byref(hit))
        return hit.value, blocks[:hit.value // self.block_size]

    def batch_append(self, seqs, tokens=None, slots=True):
        """One decode slot for each sequence (with tokens[i], or a lookahead
        slot if tokens is None), in one call.  Returns (slots int64 array or
        None, results structured array: rc, change, index, block, replaced).
        Raises the first failure's error only if every sequence failed; a
        partial failure is in results (the others did change)."""
        f = _lib.serving("pkv_batch_append")
        p = self._p()
        ids = self._seq_array(seqs)
        n = len(ids)
        t = None if tokens is None else as_tokens(tokens)
        if t is not None and len(t) != n:
            raise InvalidArgument("batch_append: %d tokens for %d sequences" % (len(t), n))
        out = np.empty(n, _I64) if slots else None
        res = np.zeros(n, STEP_RESULT)
        rc = f(p, _ptr(ids), _ptr(t), n, _ptr(out), _ptr(res))
        if rc < 0 and (n == 0 or rc == -1 or not (res["rc"] == 0).any()):
            self._call(lambda: rc)
        if self._cbs.pending:
            self._cbs.raise_pending()
        return out, res

    def batch_free(self, seqs):
        """Frees every sequence in one call; returns the per-sequence codes
        (0 or PKV_ENOSEQ) as an int32 array."""
        f = _lib.serving("pkv_batch_free")
        p = self._p()
        ids = self._seq_array(seqs)
        res = np.zeros(len(ids), np.int32)
        rc = f(p, _ptr(ids), len(ids), _ptr(res))
        if rc == -1:
            self._call(lambda: rc)
        for s, r in zip(seqs, res):
            if isinstance(s, Sequence) and r == 0:
                s._live = False
        return res

    def drain_events(self, cap=256):
        """Pulls every queued event (Config.event_queue_cap), oldest first;
        a 'lost' event reports an overflow."""
        f = _lib.serving("pkv_events_drain")
        p = self._p()
        buf = (_lib.pkv_event * cap)()
        n = c_uint32()
        pending = c_uint32()
        out = []
        while True:
            self._call(f, p, buf, cap, byref(n), byref(pending))
            out += [_event_from_c(buf[i], pulled=True) for i in range(n.value)]
            if pending.value == 0 or n.value == 0:
                return out

    def capacity(self):
        """Pool occupancy in O(1)."""
        f = _lib.serving("pkv_cache_capacity")
        c = _lib.pkv_capacity()
        self._call(f, self._p(), byref(c))
        return Capacity(c.num_blocks, c.free, c.evictable, c.in_use, c.cached,
                        c.deferred, c.usage)

    def evict(self, n_blocks):
        """Evicts n evictable blocks now (OutOfRange if fewer are)."""
        self._call(_lib.serving("pkv_evict"), self._p(), n_blocks)

    def common_prefix_blocks(self, seqs):
        """Leading table entries equal in every one of seqs."""
        f = _lib.serving("pkv_common_prefix_blocks")
        p = self._p()
        ids = self._seq_array(seqs)
        n = c_uint32()
        self._call(f, p, _ptr(ids), len(ids), byref(n))
        return n.value

    def blocks_release(self, blocks):
        """Drops the deferred references commit dedup left on blocks."""
        f = _lib.serving("pkv_blocks_release")
        b = np.ascontiguousarray(blocks, dtype=_I32)
        self._call(f, self._p(), _ptr(b), len(b))

    # -------------------------------------------------------------- stats

    def stats(self):
        s = _lib.pkv_stats()
        self._call(LIB.pkv_stats_get, self._p(), byref(s))
        vals = {n: getattr(s, n) for n in _lib.STATS_FIELDS}
        vals.update((n, getattr(s, n).decode()) for n in _lib.STATS_TEXT)
        return Stats(**vals)

    def check(self):
        """Runs every invariant check; raises Corrupt with the first
        violation."""
        msg = ctypes.create_string_buffer(512)
        rc = LIB.pkv_check(self._p(), msg, len(msg))
        err = Corrupt(msg.value.decode("utf-8", "replace")) if rc < 0 else None
        if self._cbs.pending:  # a policy hook the check ran raised
            if err is None:
                self._cbs.raise_pending()
            cause, self._cbs.pending = self._cbs.pending[0], []
            raise err from cause
        if err is not None:
            raise err


class _CacheHandle:
    """A handle of a cache (a sequence, a pin): ``with`` ends it (_end),
    unless it was ended already or the cache is closed."""
    __slots__ = ("_cache", "id", "_live")

    def __init__(self, cache, hid):
        self._cache = cache
        self.id = hid
        self._live = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._live and not self._cache.closed:
            self._end()


class Sequence(_CacheHandle):
    """A sequence handle (pkv_seq_id) of a cache.  ``with`` frees it."""
    __slots__ = ()

    def __repr__(self):
        return "<pagedkv.Sequence %#x%s>" % (self.id, "" if self._live else " freed")

    def _end(self):
        self.free()

    def __int__(self):
        return self.id

    def free(self):
        """Releases the blocks (committed full ones stay cached)."""
        c = self._cache
        c._call(LIB.pkv_seq_free, c._p(), self.id)
        self._live = False

    def append(self, tokens, slots=True):
        """Reserves a slot per token; returns their slots (int64 array) or
        None with slots=False."""
        c = self._cache
        p = c._p()
        t = as_tokens(tokens)
        out = np.empty(len(t), _I64) if slots else None
        c._call(LIB.pkv_seq_append, p, self.id, _ptr(t), len(t), _ptr(out))
        return out

    def fork(self):
        """A child sharing every block (copy-on-write)."""
        c = self._cache
        child = _lib.pkv_seq_id()
        c._call(LIB.pkv_seq_fork, c._p(), self.id, byref(child))
        return Sequence(c, child.value)

    def truncate(self, n_tokens):
        c = self._cache
        c._call(LIB.pkv_seq_truncate, c._p(), self.id, n_tokens)

    def commit(self, n_tokens=None):
        """Marks tokens [0, n_tokens) computed (default: all reserved)."""
        c = self._cache
        p = c._p()
        if n_tokens is None:
            n_tokens = self.info().n_tokens
        c._call(LIB.pkv_seq_commit, p, self.id, n_tokens)

    def match_prefix(self, tokens, max_tokens=None):
        """On an empty sequence: attaches the longest cached prefix (full
        blocks, at most max_tokens; None = no cap, 0 = attach nothing) and
        returns how many tokens it attached (they are committed)."""
        c = self._cache
        p = c._p()
        t = as_tokens(tokens)
        if max_tokens == 0:
            return 0
        m = c_uint32()
        c._call(LIB.pkv_seq_match_prefix, p, self.id, _ptr(t), len(t),
                max_tokens or 0, byref(m))
        return m.value

    def append_ex(self, tokens=(), lookahead=0, hit_blocks=None, slots=False):
        """The general append (serving API): attaches a probed hit (empty
        sequence; hit_blocks from Cache.probe, tokens from position 0),
        writes the known tokens (filling earlier lookahead slots first), and
        reserves lookahead slots without ids.  Returns a Delta."""
        f = _lib.serving("pkv_seq_append_ex")
        c = self._cache
        p = c._p()
        t = as_tokens(tokens)
        hb = None if hit_blocks is None else np.ascontiguousarray(hit_blocks, dtype=_I32)
        n_hit = 0 if hb is None else len(hb)
        bs = c.block_size
        cap = (len(t) + lookahead) // bs + 2
        new = np.empty(cap, _I32)
        n_slots = len(t) - n_hit * bs + lookahead
        sl = np.empty(max(n_slots, 0), _I64) if slots else None
        req = _lib.pkv_append(tokens=_ptr(t) if len(t) else None, n_tokens=len(t),
                              n_lookahead=lookahead, hit_blocks=_ptr(hb),
                              n_hit_blocks=n_hit, slots=_ptr(sl),
                              new_blocks=_ptr(new), new_cap=cap)
        d = _lib.pkv_delta()
        c._call(f, p, self.id, byref(req), byref(d))
        return Delta(new[:d.n_new], d.first_new, d.cow_index, d.cow_old,
                     d.cow_new, d.n_known, d.n_tokens, sl)

    def commit_ex(self, n_tokens, dedup=None, release_now=False):
        """Commit with an explicit dedup choice (None = the cache's
        default).  Returns the remaps (dedup only) as a list of Remap."""
        f = _lib.serving("pkv_seq_commit_ex")
        c = self._cache
        p = c._p()
        flags = ((0 if dedup is None else (0x1 if dedup else 0x2))
                 | (0x4 if release_now else 0))
        cap = self.info().n_blocks + 1
        buf = (_lib.pkv_remap * cap)()
        n = c_uint32()
        c._call(f, p, self.id, n_tokens, flags, buf, cap, byref(n))
        return [Remap(buf[i].index, buf[i].old_block, buf[i].new_block)
                for i in range(n.value)]

    def info(self):
        c = self._cache
        i = _lib.pkv_seq_info()
        c._call(LIB.pkv_seq_info_get, c._p(), self.id, byref(i))
        return SeqInfo(i.n_tokens, i.n_committed, i.n_blocks, i.n_cached_blocks,
                       i.n_known if _lib.has("pkv_seq_append_ex") else i.n_tokens)

    def __len__(self):
        return self.info().n_tokens

    def blocks(self):
        """The page table (int32 array of block ids)."""
        c = self._cache
        p = c._p()
        n = c_uint32()
        out = np.empty(self.info().n_blocks, _I32)
        c._call(LIB.pkv_seq_blocks, p, self.id, _ptr(out), len(out), byref(n))
        return out[:n.value]

    def slot_mapping(self, begin=0, end=None, out=None):
        c = self._cache
        p = c._p()
        if end is None:
            end = self.info().n_tokens
        if begin > end:
            # Let the library name the error (ERANGE) with nothing written.
            c._call(LIB.pkv_slot_mapping, p, self.id, begin, end, None)
        o = _out(out, (end - begin,), _I64, "slot_mapping")
        c._call(LIB.pkv_slot_mapping, p, self.id, begin, end, _ptr(o))
        return o

    def remove_range(self, begin, end):
        """Context shift: drops positions [begin, end); later positions move
        down by end - begin with their K/V (K keeps the rotation of its old
        position: re-rotate it by -(end - begin)).  Blocks from begin's on
        never enter the prefix index afterwards."""
        c = self._cache
        c._call(_lib.serving("pkv_seq_remove_range"), c._p(), self.id, begin, end)

    def __eq__(self, other):
        return isinstance(other, Sequence) and other.id == self.id and other._cache is self._cache

    def __hash__(self):
        return hash(self.id)

    def set_priority(self, begin, end, priority, duration_ns=0):
        c = self._cache
        c._call(LIB.pkv_seq_set_priority, c._p(), self.id, begin, end,
                priority, duration_ns)

    def pin(self, n_tokens):
        """Pins the committed full blocks of tokens [0, n_tokens)."""
        c = self._cache
        pid = c_uint64()
        c._call(LIB.pkv_pin_create, c._p(), self.id, n_tokens, byref(pid))
        return Pin(c, pid.value)


class Pin(_CacheHandle):
    """A pin (pkv_pin_id).  ``with`` releases it."""
    __slots__ = ()

    def release(self):
        c = self._cache
        c._call(LIB.pkv_pin_release, c._p(), self.id)
        self._live = False

    def _end(self):
        self.release()
