"""groups — KV cache groups (include/pagedkv/groups.h): one cache, several
groups of layers, each full attention or a sliding window (Gemma 2/3,
Mistral, gpt-oss).

    with pagedkv.Groups(cache, [("sliding", 1024)] * 5 + [("full", 0)],
                        max_tokens=32768) as groups:
        with groups.request(namespace="tenant") as req:
            matched = req.match(prompt)          # valid for every group
            slots = req.append(prompt[matched:]) # [n_groups, n] slots
            req.commit()                         # sliding groups drop blocks
            req.first_pos(0)                     # where group 0's table starts

A request is one sequence per group (``req.sequences``), created, appended,
committed, matched and freed together.  The layout keeps its cache alive;
close it (or leave its ``with``) before closing the cache.
"""
from ctypes import byref, c_uint32, c_void_p

import numpy as np

from . import _lib
from .cache import Sequence, _opts, _ptr, as_tokens
from .errors import InvalidArgument, InvalidState

KINDS = {"full": 0, "sliding": 1}


class Groups:
    _ptr = None

    def __init__(self, cache, specs, max_tokens):
        """specs: [(kind, window)] with kind "full" (window 0) or "sliding"
        (window >= 1 tokens, <= max_tokens)."""
        f = _lib.serving("pkv_groups_create")
        arr = (_lib.pkv_group_spec * len(specs))()
        for i, sp in enumerate(specs):
            kind, window = sp
            if kind not in KINDS:
                raise InvalidArgument("group %d: kind %r (full, sliding)" % (i, kind))
            arr[i].kind = KINDS[kind]
            arr[i].window = window
        ptr = c_void_p()
        cache._call(f, cache._p(), arr, len(specs), max_tokens, byref(ptr))
        self._cache = cache
        self._h = cache._h
        self._ptr = ptr.value
        self.n_groups = len(specs)
        self.specs = list(specs)
        self.max_tokens = max_tokens

    def _p(self):
        if not self._ptr:
            raise InvalidState("groups layout is closed")
        self._cache._p()
        return self._ptr

    def close(self):
        if self._ptr:
            _lib.LIB.pkv_groups_destroy(self._ptr)
            self._ptr = None
            self._h = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, namespace=None, adapter_id=0, priority=0):
        """One empty sequence per group (all or nothing)."""
        p = self._p()
        opts, keep = _opts(namespace, adapter_id, priority)
        ids = np.zeros(self.n_groups, np.uint64)
        self._cache._call(_lib.LIB.pkv_groups_seq_create, p,
                          byref(opts) if opts else None, _ptr(ids))
        return GroupRequest(self, ids)


class GroupRequest:
    """A request's sequences, one per group.  ``with`` frees them."""

    def __init__(self, groups, ids):
        self._g = groups
        self.ids = ids
        self.sequences = [Sequence(groups._cache, int(i)) for i in ids]
        self._live = True

    def _call(self, name, *args):
        g = self._g
        g._cache._call(getattr(_lib.LIB, name), g._p(), _ptr(self.ids), *args)

    def append(self, tokens):
        """Appends to every group; returns the slots, [n_groups, n]."""
        t = as_tokens(tokens)
        slots = np.empty((self._g.n_groups, len(t)), np.int64)
        self._call("pkv_groups_append", _ptr(t), len(t), _ptr(slots))
        return slots

    def commit(self, n_tokens=None):
        """Commits [0, n_tokens) (default: all) in every group; sliding
        groups release the blocks that left their window."""
        if n_tokens is None:
            n_tokens = self.sequences[0].info().n_tokens
        self._call("pkv_groups_commit", n_tokens)

    def match(self, tokens, max_tokens=None):
        """The longest hit valid for every group (default cap len - 1),
        attached everywhere; returns it in tokens."""
        t = as_tokens(tokens)
        if max_tokens is None:
            max_tokens = len(t) - 1
        if max_tokens <= 0:
            return 0
        m = c_uint32()
        self._call("pkv_groups_match", _ptr(t), len(t), max_tokens, byref(m))
        return m.value

    def first_pos(self, group):
        """Absolute position of the first token group's table covers."""
        n = c_uint32()
        self._call("pkv_groups_first_pos", group, byref(n))
        return n.value

    def free(self):
        self._call("pkv_groups_seq_free")
        self._live = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._live and not self._g._cache.closed and self._g._ptr:
            self.free()


__all__ = ["Groups", "GroupRequest", "KINDS"]
