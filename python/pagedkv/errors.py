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


# The class of each PKV_E* code, in the library's order (PKV_EINVAL = -1,
# PKV_ENOMEM = -2, ...), with the built-in it also derives from; code and
# name come from the library's own table (pkv_err_name).
_CLASSES = (
    ("InvalidArgument", ValueError), ("OutOfMemory", None), ("NoSuchSequence", LookupError),
    ("OutOfRange", IndexError), ("BufferTooSmall", ValueError), ("InvalidState", RuntimeError),
    ("NotSupported", NotImplementedError), ("Corrupt", RuntimeError),
    ("NoSuchObject", LookupError), ("Busy", RuntimeError))


def _make_class(index, cls_name, builtin):
    code = -1 - index
    name = _lib.LIB.pkv_err_name(code).decode()
    bases = (PagedKVError,) + ((builtin,) if builtin else ())
    return type(cls_name, bases, {
        "code": code, "name": name, "__module__": __name__,
        "__doc__": "%s (%d): %s." % (name, code, _lib.LIB.pkv_strerror(code).decode())})


(InvalidArgument, OutOfMemory, NoSuchSequence, OutOfRange, BufferTooSmall, InvalidState,
 NotSupported, Corrupt, NoSuchObject, Busy) = _ALL = tuple(
    _make_class(i, *row) for i, row in enumerate(_CLASSES))
_BY_CODE = {cls.code: cls for cls in _ALL}
assert [cls.__name__ for cls in _ALL] == [row[0] for row in _CLASSES]


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
