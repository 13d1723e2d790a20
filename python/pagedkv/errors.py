"""errors — one exception class per PKV_E* code.

Every failed C call raises the class of its code; the message is
pkv_last_error()'s detail ("seq 3: truncate to 7 > length 6") and the
attributes ``code`` (negative int), ``name`` ("PKV_ERANGE") and ``detail``
carry the parts.  The classes also derive from the nearest built-in so that
``except ValueError`` and ``except KeyError`` work as a Python user expects.
"""
from . import _lib


class PagedKVError(Exception):
    """Base of every error this package raises."""
    code = 0
    name = "PKV_E?"

    def __init__(self, detail="", code=None):
        if code is not None:
            self.code = code
        self.detail = detail
        text = detail or _lib.LIB.pkv_strerror(self.code).decode()
        super().__init__("%s: %s" % (self.name, text))

    def __str__(self):
        return self.args[0]


class InvalidArgument(PagedKVError, ValueError):
    code, name = -1, "PKV_EINVAL"


class OutOfMemory(PagedKVError):
    code, name = -2, "PKV_ENOMEM"


class NoSuchSequence(PagedKVError, LookupError):
    code, name = -3, "PKV_ENOSEQ"


class OutOfRange(PagedKVError, IndexError):
    code, name = -4, "PKV_ERANGE"


class BufferTooSmall(PagedKVError, ValueError):
    code, name = -5, "PKV_ENOSPC"


class InvalidState(PagedKVError, RuntimeError):
    code, name = -6, "PKV_ESTATE"


class NotSupported(PagedKVError, NotImplementedError):
    code, name = -7, "PKV_ENOTSUP"


class Corrupt(PagedKVError, RuntimeError):
    code, name = -8, "PKV_ECORRUPT"


class NoSuchObject(PagedKVError, LookupError):
    code, name = -9, "PKV_ENOENT"


class Busy(PagedKVError, RuntimeError):
    code, name = -10, "PKV_EBUSY"


class CallbackError(PagedKVError, RuntimeError):
    """A Python policy hook or event callback raised while the library ran
    a call.  The call itself completed (the cache is consistent: the policy
    adapter fell back to a valid victim, the event was dropped for that
    callback only); ``__cause__`` is the original exception and ``where``
    names the hook."""
    code, name = -6, "callback"

    def __init__(self, where, exc):
        self.where = where
        PagedKVError.__init__(
            self, "%s raised %s: %s (the library call completed; the cache is "
            "consistent)" % (where, type(exc).__name__, exc))


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgument, OutOfMemory, NoSuchSequence, OutOfRange, BufferTooSmall,
    InvalidState, NotSupported, Corrupt, NoSuchObject, Busy)}


def error_for(code, detail=None):
    """The exception for a negative code, with the thread's last error as
    detail unless one is given."""
    if detail is None:
        detail = _lib.last_error()
    cls = _BY_CODE.get(code)
    if cls is None:
        e = PagedKVError(detail, code)
        e.name = _lib.LIB.pkv_err_name(code).decode()
        return e
    return cls(detail)


def check(rc):
    """Raises for a negative return code; returns rc otherwise."""
    if rc < 0:
        raise error_for(rc)
    return rc


def strerror(code):
    return _lib.LIB.pkv_strerror(code).decode()


def err_name(code):
    return _lib.LIB.pkv_err_name(code).decode()
