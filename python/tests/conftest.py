"""Shared fixtures.  The package is imported from the source tree next to
these tests; the library from $PAGEDKV_LIB (make test sets it) or the tree's
build.  If it cannot be loaded the import fails and every test errors: a
missing library is a failure, never a skip."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pagedkv  # noqa: E402,F401  (ImportError here fails the session)


@pytest.fixture
def cache():
    with pagedkv.Cache(n_layers=2, n_kv_heads=2, head_dim=8, block_size=4,
                       num_blocks=16, events=True) as c:
        yield c
        c.check()


def toks(n, start=0):
    return np.arange(start, start + n, dtype=np.int32)


def run_threads(work, args, join_timeout=None):
    """Runs work(arg) in a thread per arg and joins them (each for at most
    join_timeout seconds); returns the exceptions the threads raised and
    the threads (a test asserts both: no error, none still alive)."""
    import threading
    errors = []

    def guarded(arg):
        try:
            work(arg)
        except Exception as e:  # pragma: no cover — reported by the caller
            errors.append(e)
    threads = [threading.Thread(target=guarded, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    return errors, threads
