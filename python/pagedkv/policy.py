"""policy — eviction policies written in Python (include/pagedkv/policy.h).

Subclass :class:`Policy` and give it (or an instance) as ``Cache(policy=...)``;
or :func:`register_policy` it so that caches can name it.  The library calls
the hooks through the C vtable with the cache lock held:

    on_insert(block, meta)      block entered the prefix index (in use)
    on_hit(block, meta)         a prefix match reused block
    on_evictable(block, meta)   refcount fell to 0: a candidate now
    on_pinned(block, meta)      a candidate is referenced again
    choose_victim(now) -> int   a current candidate to evict (pure)
    on_remove(block)            block left the index (evicted or reset)
    on_dedup(block, meta)       a commit took this cached block instead of
                                its own copy (vtable v2 libraries)
    check(evictable) -> None    verify private state: evictable is a bool
                                array of the current candidates; raise to
                                report a disagreement (v2; run by
                                Cache.check())

``meta`` is a :class:`BlockMeta` (clock, 128-bit key and parent as ints,
depth in the chain, retention priority, parent block id or -1).

A hook that raises, or a choose_victim that returns a block that is not a
candidate, does not corrupt the cache: the adapter keeps its own record of
the candidates (in the order they became candidates), evicts the oldest of
them instead, and the Python call that triggered the hook raises
:class:`~pagedkv.errors.CallbackError` after the library call completed.
Hooks must not call into the cache (InvalidState: the lock is held).
"""
import ctypes
import threading
from collections import namedtuple

import numpy as np

from . import _lib
from ._lib import (LIB, POL_CHECK, POL_CREATE, POL_DESTROY, POL_HOOK,
                   POL_REMOVE, POL_VICTIM)
from .errors import check

BlockMeta = namedtuple("BlockMeta", "now key parent depth priority "
                       "priority_until parent_block")

def _library_policy_version():
    """The vtable version this library speaks (its built-in LRU's), capped
    at the 2 this module knows: version 2 adds on_dedup and check."""
    lru = LIB.pkv_policy_find(b"lru")
    return min(lru.contents.version, 2) if lru else 1


POLICY_VERSION = _library_policy_version()


def _h128(h):
    return h.lo | (h.hi << 64)


def _meta(p):
    m = p.contents
    return BlockMeta(m.now, _h128(m.key), _h128(m.parent), m.depth, m.priority,
                     m.priority_until, m.parent_block)


class Policy:
    """Base class: override the hooks (the defaults do nothing) and
    choose_victim.  ``create(num_blocks, args)`` is called once per cache
    before any hook."""
    name = "python"

    def create(self, num_blocks, args):
        pass

    def destroy(self):
        pass

    def on_insert(self, block, meta):
        pass

    def on_hit(self, block, meta):
        pass

    def on_evictable(self, block, meta):
        pass

    def on_pinned(self, block, meta):
        pass

    def choose_victim(self, now):
        raise NotImplementedError("choose_victim")

    def on_remove(self, block):
        pass

    def on_dedup(self, block, meta):
        pass

    def check(self, evictable):
        pass


class LRUPolicy(Policy):
    """Least recently made-evictable first: the example of a Python policy
    (an insertion-ordered dict is an O(1) LRU list)."""
    name = "py-lru"

    def create(self, num_blocks, args):
        self.order = {}

    def on_evictable(self, block, meta):
        self.order[block] = None

    def on_pinned(self, block, meta):
        self.order.pop(block, None)

    def on_remove(self, block):
        self.order.pop(block, None)

    def choose_victim(self, now):
        return next(iter(self.order), -1)

    def check(self, evictable):
        mine = set(self.order)
        theirs = set(np.flatnonzero(evictable).tolist())
        if mine != theirs:
            raise AssertionError("py-lru tracks %d candidates, the manager %d"
                                 % (len(mine), len(theirs)))


class _Adapter:
    """One live policy instance and the candidate record that makes a
    misbehaving policy harmless."""

    def __init__(self, policy):
        self.policy = policy
        self.cand = {}        # block -> None, oldest candidate first
        self.cbs = None       # CallbackState of the owning cache
        self.fallbacks = 0    # victims chosen by the adapter, not the policy

    def _fail(self, where, exc):
        if self.cbs is not None:
            self.cbs.fail("policy '%s' %s" % (self.policy.name, where), exc)

    def hook(self, which, block, meta):
        if which == "on_evictable":
            self.cand[block] = None
        elif which == "on_pinned":
            self.cand.pop(block, None)
        cbs = self.cbs
        prev = cbs.enter() if cbs else None
        try:
            getattr(self.policy, which)(block, _meta(meta))
        except BaseException as e:  # noqa: B036 — must not cross into C
            self._fail(which, e)
        finally:
            if cbs:
                cbs.leave(prev)

    def remove(self, block):
        self.cand.pop(block, None)
        cbs = self.cbs
        prev = cbs.enter() if cbs else None
        try:
            self.policy.on_remove(block)
        except BaseException as e:  # noqa: B036
            self._fail("on_remove", e)
        finally:
            if cbs:
                cbs.leave(prev)

    def check(self, evictable_p, num_blocks, msg, msg_cap):
        """pkv_check's policy hook: the adapter's own candidate record must
        equal the manager's, then the policy's check() runs."""
        ev = np.ctypeslib.as_array(evictable_p, (num_blocks,)).astype(bool)
        try:
            mine = set(self.cand)
            theirs = set(np.flatnonzero(ev).tolist())
            if mine != theirs:
                raise AssertionError(
                    "adapter tracks %d candidates, the manager has %d (first "
                    "difference: block %d)" % (len(mine), len(theirs),
                                               min(mine ^ theirs)))
            self.policy.check(ev)
            return 0
        except BaseException as e:  # noqa: B036
            text = ("policy '%s' check: %s: %s" % (self.policy.name,
                                                    type(e).__name__, e)).encode()
            if msg and msg_cap:
                n = min(len(text), msg_cap - 1)
                ctypes.memmove(msg, text, n)
                ctypes.memset(msg + n, 0, 1)
            return -8  # PKV_ECORRUPT

    def victim(self, now):
        cbs = self.cbs
        prev = cbs.enter() if cbs else None
        try:
            v = self.policy.choose_victim(now)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError("choose_victim returned %r, not an int" % (v,))
            if v not in self.cand:
                raise ValueError("choose_victim returned block %d, which is "
                                 "not a candidate" % v)
            return v
        except BaseException as e:  # noqa: B036
            self._fail("choose_victim", e)
        finally:
            if cbs:
                cbs.leave(prev)
        self.fallbacks += 1
        return next(iter(self.cand), -1)


# Live adapters by the integer the C side keeps as the policy state.
_ADAPTERS = {}
_NEXT = [1]
_LOCK = threading.Lock()
# The CallbackState of the cache being created on this thread, so that an
# adapter made by a registered policy's create hook reports to that cache.
_CREATING = threading.local()


def _make_ops(name, factory):
    """A pkv_policy_ops whose create hook calls factory(num_blocks, args)
    for a Policy instance.  Returns (ops, keepalive)."""

    def create(state_pp, num_blocks, args):
        try:
            pol = factory(num_blocks, args.decode() if args else None)
            ad = _Adapter(pol)
            ad.cbs = getattr(_CREATING, "cbs", None)
            pol.create(num_blocks, args.decode() if args else None)
        except BaseException as e:  # noqa: B036
            cbs = getattr(_CREATING, "cbs", None)
            if cbs is not None:
                cbs.fail("policy '%s' create" % name, e)
            return -1  # PKV_EINVAL: the cache is not created
        with _LOCK:
            key = _NEXT[0]
            _NEXT[0] += 1
            _ADAPTERS[key] = ad
        state_pp[0] = key
        return 0

    def destroy(state):
        ad = _ADAPTERS.pop(state, None)
        if ad is not None:
            try:
                ad.policy.destroy()
            except BaseException:  # noqa: B036 — destroy cannot report
                pass

    def mk(which):
        def f(state, block, meta):
            _ADAPTERS[state].hook(which, block, meta)
        return POL_HOOK(f)

    def victim(state, now):
        return _ADAPTERS[state].victim(now)

    def check(state, evictable, num_blocks, msg, msg_cap):
        return _ADAPTERS[state].check(evictable, num_blocks, msg, msg_cap)

    def remove(state, block):
        _ADAPTERS[state].remove(block)

    cfuncs = dict(create=POL_CREATE(create), destroy=POL_DESTROY(destroy),
                  on_insert=mk("on_insert"), on_hit=mk("on_hit"),
                  on_evictable=mk("on_evictable"), on_pinned=mk("on_pinned"),
                  choose_victim=POL_VICTIM(victim),
                  on_remove=POL_REMOVE(remove))
    if POLICY_VERSION >= 2:
        cfuncs.update(on_dedup=mk("on_dedup"), check=POL_CHECK(check))
    cname = name.encode()
    ops = _lib.pkv_policy_ops(version=POLICY_VERSION, name=cname, **cfuncs)
    return ops, (cname, cfuncs)


def ops_for_instance(policy):
    """Per-cache ops that bind one Policy instance (it may serve one cache
    at a time)."""
    if getattr(policy, "_pkv_bound", False):
        raise ValueError("policy instance %r already serves a cache" % policy)

    def factory(num_blocks, args):
        policy._pkv_bound = True
        return policy
    return _make_ops(policy.name, factory)


def ops_for_class(cls):
    return _make_ops(cls.name, lambda num_blocks, args: cls())


def adapter_of(state_key):
    return _ADAPTERS.get(state_key)


_REGISTERED = []  # ops given to pkv_policy_register live for the process


def register_policy(cls):
    """Registers a Policy subclass under ``cls.name`` for every cache of the
    process (``Cache(policy=cls.name)``).  Each cache gets its own instance.
    Raises InvalidState if the name is taken.  Process-wide and permanent,
    as in C."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError("register_policy takes a Policy subclass")
    ops, keep = ops_for_class(cls)
    check(LIB.pkv_policy_register(ctypes.byref(ops)))
    _REGISTERED.append((ops, keep))
    return cls


def policy_names():
    """Names of the built-in and registered policies."""
    arr = LIB.pkv_policy_names()
    out = []
    i = 0
    while arr[i]:
        out.append(arr[i].decode())
        i += 1
    return out


def policy_exists(name):
    return bool(LIB.pkv_policy_find(name.encode()))
