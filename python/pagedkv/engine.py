"""engine — the CPU attention engine (include/pagedkv/engine.h) on numpy.

Activations are float32, C-contiguous:
    q, out : [n_tokens][n_q_heads][head_dim]
    k, v   : [n_tokens][n_kv_heads][head_dim]
Shapes are checked here against the cache before the library is called; the
library checks the positions.  An :class:`Engine` keeps its cache alive and
is a context manager that destroys the engine (before the cache, as the C
contract asks).
"""
import ctypes
from ctypes import byref, c_void_p

import numpy as np

from . import _lib
from ._lib import LIB
from .errors import InvalidArgument, InvalidState

_F32 = np.float32


class Engine:
    _ptr = None

    def __init__(self, cache, n_q_heads=None, n_threads=1, scale=0.0,
                 backend=None, bf16_dot=False, cascade=True):
        cfg = _lib.pkv_engine_config()
        LIB.pkv_engine_config_init(byref(cfg))
        cfg.n_q_heads = cache.n_kv_heads if n_q_heads is None else n_q_heads
        cfg.n_threads = n_threads
        cfg.scale = scale
        self._backend_name = backend.encode() if backend else None
        cfg.backend = self._backend_name
        cfg.bf16_dot = 1 if bf16_dot else 0
        cfg.cascade = 0 if cascade else 1  # 0 = automatic shared-prefix decode
        ptr = c_void_p()
        cache._call(LIB.pkv_engine_create, cache._p(), byref(cfg), byref(ptr))
        self._cache = cache
        self._h = cache._h  # the cache's memory outlives this engine
        self._ptr = ptr.value
        self.n_q_heads = cfg.n_q_heads

    def close(self):
        if self._ptr:
            LIB.pkv_engine_destroy(self._ptr)
            self._ptr = None
            self._h = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _p(self):
        if not self._ptr:
            raise InvalidState("engine is closed")
        self._cache._p()
        return self._ptr

    @property
    def backend(self):
        return LIB.pkv_engine_backend(self._p()).decode()

    @property
    def uses_bf16_dot(self):
        return bool(LIB.pkv_engine_uses_bf16_dot(self._p()))

    def _arr(self, a, n, heads, what):
        c = self._cache
        if (not isinstance(a, np.ndarray) or a.dtype != _F32
                or not a.flags.c_contiguous):
            a = np.ascontiguousarray(a, dtype=_F32)
        want = (n, heads, c.head_dim)
        if a.shape != want:
            raise InvalidArgument("%s: shape %s, expected %s" % (what, a.shape, want))
        return a

    def _outarr(self, out, n):
        want = (n, self.n_q_heads, self._cache.head_dim)
        if out is None:
            return np.empty(want, _F32)
        if (not isinstance(out, np.ndarray) or out.dtype != _F32
                or out.shape != want or not out.flags.c_contiguous
                or not out.flags.writeable):
            raise InvalidArgument("out: a writable C-contiguous float32 array "
                                  "of shape %s" % (want,))
        return out

    def prefill(self, seq, layer, pos0, q, k, v, out=None):
        """Writes K/V of positions [pos0, pos0+n) (reserved by append) and
        returns causal attention of the n queries: [n, n_q_heads, head_dim]."""
        p = self._p()
        n = len(q)
        kvh = self._cache.n_kv_heads
        q = self._arr(q, n, self.n_q_heads, "q")
        k = self._arr(k, n, kvh, "k")
        v = self._arr(v, n, kvh, "v")
        out = self._outarr(out, n)
        self._cache._call(LIB.pkv_prefill, p, int(seq), layer, pos0, n,
                          q.ctypes.data, k.ctypes.data, v.ctypes.data,
                          out.ctypes.data)
        return out

    def decode(self, seqs, layer, q, k, v, out=None):
        """For each sequence: writes k[i], v[i] into its last reserved slot
        and attends q[i] over all its positions.  Returns [n, n_q_heads,
        head_dim]."""
        p = self._p()
        n = len(seqs)
        ids = (ctypes.c_uint64 * n)(*[int(s) for s in seqs])
        kvh = self._cache.n_kv_heads
        q = self._arr(q, n, self.n_q_heads, "q")
        k = self._arr(k, n, kvh, "k")
        v = self._arr(v, n, kvh, "v")
        out = self._outarr(out, n)
        self._cache._call(LIB.pkv_decode, p, ids, n, layer, q.ctypes.data,
                          k.ctypes.data, v.ctypes.data, out.ctypes.data)
        return out
