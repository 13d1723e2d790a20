"""The compiled decode fast path (pagedkv._fastpath, python/pagedkv/_fastpath.c)
of pagedkv.vllm.KVCacheManager: it is built and used by default, and it
shows exactly what the Python decode path shows — same scenarios, same
library, so the same block ids, events and tables.  Without the module the
package warns once at import (checked in a subprocess) and these tests fail:
the fast path is never lost silently."""
import os
import subprocess
import sys
import textwrap

import pytest

import pagedkv
from pagedkv import _accel
from pagedkv.vllm import KVCacheManager
from pagedkv.errors import NotSupported
from test_vllm import Req
from test_vllm_random import BS, drive

PKG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_the_compiled_module_is_built_and_used_by_default():
    assert _accel.FAST is not None, (
        "pagedkv._fastpath is missing (%s): `make` builds it" % _accel.REASON)
    m = KVCacheManager(num_blocks=16, block_size=BS)
    assert m.fastpath
    assert type(m.allocate_slots).__name__ == "Allocator"
    assert not KVCacheManager(num_blocks=16, block_size=BS, fastpath=False).fastpath


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_blocks", (4000, 24))
def test_fast_and_python_paths_show_the_same(seed, num_blocks):
    traces = []
    for fast in (True, False):
        m = KVCacheManager(num_blocks=num_blocks, block_size=BS,
                           enable_kv_cache_events=True, fastpath=fast)
        traces.append(drive(m, seed, 120, 30))
        m.check()
        traces[-1].append(("events", m.take_events()))
    assert len(traces[0]) > 100
    assert traces[0] == traces[1]


def decode_trace(fast, delay=False, kw=False):
    """Decodes three requests past several block boundaries; the new block
    ids, the tables and the cached events, step by step."""
    m = KVCacheManager(num_blocks=40, block_size=BS, enable_kv_cache_events=True,
                       fastpath=fast)
    reqs = [Req("r%d" % i, [1, 2, 3, 4, 5, i]) for i in range(3)]
    out = []
    for r in reqs:
        hb, hit = m.get_computed_blocks(r)
        m.allocate_slots(r, r.num_tokens - hit, hit, hb)
        r.num_computed_tokens = r.num_tokens
    for step in range(11):
        res = []
        for r in reqs:
            r.sample(100 + step)
            if kw:
                b = m.allocate_slots(request=r, num_new_tokens=1, num_lookahead_tokens=0,
                                     delay_cache_blocks=delay)
            else:
                b = m.allocate_slots(r, 1, 0, None, 0, delay)
            res.append(b)
        out.append([b.get_block_ids() for b in res])  # reading resolves the queue
        for r in reqs:
            r.num_computed_tokens += 1
        if delay and step % 4 == 3:
            for r in reqs:
                m.cache_blocks(r, r.num_computed_tokens)
        out.append([m.get_block_ids(r.request_id) for r in reqs])
        out.append(m.take_events())
        out.append(m.usage)
    m.check()
    return out


@pytest.mark.parametrize("delay", (False, True))
@pytest.mark.parametrize("kw", (False, True))
def test_decode_steps_match_block_for_block(delay, kw):
    assert decode_trace(True, delay, kw) == decode_trace(False, delay, kw)


def test_a_full_pool_answers_none_and_changes_nothing():
    m = KVCacheManager(num_blocks=4, block_size=BS)
    assert m.fastpath
    a, b = Req("a", [1, 2, 3, 4]), Req("b", [5, 6, 7, 8])
    for r in (a, b):
        m.allocate_slots(r, 4)
        r.num_computed_tokens = 4
    for r in (a, b):  # each decodes into a second block: the pool is full
        r.sample(9)
        assert len(m.allocate_slots(r, 1).get_block_ids()[0]) == 1
        r.num_computed_tokens += 1
    c = Req("c", [1, 1, 1, 1, 1])
    assert m.allocate_slots(c, 5) is None
    tables = [m.get_block_ids("a"), m.get_block_ids("b")]
    for _ in range(3):
        a.sample(1)
        assert m.allocate_slots(a, 1).get_block_ids() == ([],)
        a.num_computed_tokens += 1
    a.sample(1)
    assert m.allocate_slots(a, 1) is None  # the 5th slot needs a 3rd block
    assert m.get_block_ids("b") == tables[1]
    m.check()


def test_bad_calls_raise_as_a_python_function_would():
    m = KVCacheManager(num_blocks=8, block_size=BS)
    r = Req("a", [1, 2, 3])
    with pytest.raises(TypeError):
        m.allocate_slots(r, 1, bogus=1)
    with pytest.raises(TypeError):
        m.allocate_slots(r)
    with pytest.raises(TypeError):
        m.allocate_slots(r, 1, num_new_tokens=1)
    with pytest.raises(pagedkv.InvalidArgument):
        m.allocate_slots(r, 0)
    with pytest.raises(AttributeError):
        m.allocate_slots(object(), 1)
    assert m.usage == 0
    m.check()


def test_fastpath_true_without_the_module_is_refused(monkeypatch):
    monkeypatch.setattr(_accel, "FAST", None)
    monkeypatch.setattr(_accel, "REASON", "test")
    with pytest.raises(NotSupported):
        KVCacheManager(num_blocks=8, block_size=BS, fastpath=True)
    assert not KVCacheManager(num_blocks=8, block_size=BS).fastpath


def run_import(code, env_extra=None):
    env = dict(os.environ, PYTHONPATH=PKG, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_missing_module_warns_once_at_import():
    p = run_import("""
        import sys
        class Block:  # the compiled module cannot be found
            def find_spec(self, name, path=None, target=None):
                if name == "pagedkv._fastpath":
                    raise ImportError("hidden by the test")
        sys.meta_path.insert(0, Block())
        import pagedkv, pagedkv.vllm, importlib
        importlib.import_module("pagedkv.vllm")
        m = pagedkv.vllm.KVCacheManager(num_blocks=4, block_size=4)
        assert not m.fastpath
        print("ok")
    """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"
    assert p.stderr.count("pagedkv: warning:") == 1, p.stderr
    assert "_fastpath" in p.stderr and "make" in p.stderr


def test_disabling_on_purpose_is_silent():
    p = run_import("""
        import pagedkv.vllm
        assert not pagedkv.vllm.KVCacheManager(num_blocks=4, block_size=4).fastpath
    """, {"PAGEDKV_FASTPATH": "0"})
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
