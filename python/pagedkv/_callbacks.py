"""_callbacks — what runs when the library calls back into Python.

The library calls event callbacks and policy hooks with the cache lock held,
from inside a call that Python made.  So:

* an exception must not cross the C frame (ctypes would print it and go
  on): each trampoline catches it, records a :class:`CallbackError` on the
  cache's :class:`CallbackState`, and the wrapper that made the C call raises
  it once the call has returned (the call itself completed);
* a callback that calls back into the same cache would deadlock on the lock:
  while a callback runs, the state remembers the thread, and every wrapper
  refuses a call from that thread with InvalidState;
* a trampoline must not hold a reference to the cache object (a cycle would
  delay pkv_cache_destroy to the garbage collector), so it closes over this
  small state object only.
"""
import threading

from .errors import CallbackError, InvalidState


class CallbackState:
    __slots__ = ("pending", "thread", "queue", "on_event")

    def __init__(self):
        self.pending = []      # CallbackError, oldest first
        self.thread = None     # ident of the thread inside a callback
        self.queue = None      # collections.deque of events, or None
        self.on_event = None   # user callable, or None

    def enter(self):
        prev = self.thread
        self.thread = threading.get_ident()
        return prev

    def leave(self, prev):
        self.thread = prev

    def fail(self, where, exc):
        err = CallbackError(where, exc)
        err.__cause__ = exc
        self.pending.append(err)

    def raise_pending(self):
        """Raises the oldest recorded callback error (later ones are chained
        as its __context__ so none is lost)."""
        errs, self.pending = self.pending, []
        first = errs[0]
        ctx = None
        for e in reversed(errs[1:]):
            e.__context__ = ctx
            ctx = e
        if ctx is not None:
            first.__context__ = ctx
        raise first

    def guard(self):
        if self.thread is not None and self.thread == threading.get_ident():
            raise InvalidState("called from inside an event callback or policy "
                               "hook of the same cache (the library holds its "
                               "lock there); queue the work and do it after "
                               "the call returns")
