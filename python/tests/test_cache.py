"""Cache, sequences, fork, commit, match, pins, exports, stats, errors."""
import gc

import numpy as np
import pytest

import pagedkv
from conftest import run_threads, toks


def small(**kw):
    args = dict(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4, num_blocks=8)
    args.update(kw)
    return pagedkv.Cache(**args)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("field,value,word", [
    ("n_layers", 0, "n_layers"), ("head_dim", 0, "head_dim"),
    ("block_size", 0, "block_size"), ("block_size", 70000, "block_size")])
def test_config_errors_name_the_field(field, value, word):
    with pytest.raises(pagedkv.InvalidArgument) as ei:
        small(**{field: value})
    assert word in str(ei.value)
    assert ei.value.code == -1 and ei.value.name == "PKV_EINVAL"
    assert isinstance(ei.value, ValueError)


def test_unknown_policy_is_no_such_object():
    with pytest.raises(pagedkv.NoSuchObject, match="nope"):
        small(policy="nope")


def test_python_side_refusals():
    with pytest.raises(pagedkv.InvalidArgument):
        small(dtype="f64")
    with pytest.raises(pagedkv.InvalidArgument):
        small(num_blocks=-1)
    with pytest.raises(pagedkv.InvalidArgument):
        small(policy=42)


def test_every_code_has_a_class():
    classes = {pagedkv.InvalidArgument: -1, pagedkv.OutOfMemory: -2,
               pagedkv.NoSuchSequence: -3, pagedkv.OutOfRange: -4,
               pagedkv.BufferTooSmall: -5, pagedkv.InvalidState: -6,
               pagedkv.NotSupported: -7, pagedkv.Corrupt: -8,
               pagedkv.NoSuchObject: -9}
    from pagedkv.errors import error_for
    for cls, code in classes.items():
        e = error_for(code, "detail %d" % code)
        assert type(e) is cls and e.code == code
        assert str(e) == "%s: detail %d" % (pagedkv.err_name(code), code)
        assert isinstance(e, pagedkv.PagedKVError)
    assert pagedkv.strerror(-4) == "position or length out of range"


def test_config_block_bytes():
    cfg = pagedkv.Config(n_layers=2, n_kv_heads=4, head_dim=64, block_size=16,
                         num_blocks=4, dtype="f16")
    assert cfg.block_bytes == 2 * 2 * 4 * 16 * 64 * 2
    assert pagedkv.dtype_size("bf16") == 2
    with pagedkv.Cache(cfg) as c:
        assert c.config.num_blocks == 4 and c.config.policy == "lru"
        lay = c.layout()
        assert lay.slot_stride == 64 * 2 and lay.elem_size == 2


def test_memory_bytes_derives_num_blocks():
    cfg = pagedkv.Config(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                         memory_bytes=10 * 2 * 4 * 4 * 4)
    with pagedkv.Cache(cfg) as c:
        assert c.num_blocks == 10


# ---------------------------------------------------------------- sequences

def test_append_commit_match_fork(cache):
    a = cache.sequence()
    slots = a.append(toks(10))
    assert slots.dtype == np.int64 and len(slots) == 10
    blocks = a.blocks()
    assert list(slots) == [blocks[i // 4] * 4 + i % 4 for i in range(10)]
    a.commit()
    assert a.info()[:4] == (10, 10, 3, 2)
    b, hit = cache.match(toks(10))
    assert hit == 8 and list(b.blocks()) == list(blocks[:2])
    c, hit_all = cache.match(toks(8), max_tokens=None)
    assert hit_all == 4  # default cap leaves one token to compute
    d = cache.sequence()
    assert d.match_prefix(toks(8)) == 8  # no cap
    child = a.fork()
    assert list(child.blocks()) == list(blocks)
    child.append([99])  # the shared tail is copied
    assert child.blocks()[2] != blocks[2] and a.blocks()[2] == blocks[2]
    assert cache.stats().cow_copies == 1
    for s in (a, b, c, d, child):
        s.free()
    st = cache.stats()
    assert st.n_seqs == 0 and st.blocks_used == 0 and st.blocks_cached == 2


def test_truncate_and_ranges(cache):
    with cache.sequence() as a:
        a.append(toks(6))
        a.truncate(2)
        assert len(a) == 2
        with pytest.raises(pagedkv.OutOfRange, match="truncate to 5 > length 2"):
            a.truncate(5)
        with pytest.raises(pagedkv.OutOfRange):
            a.commit(3)
        with pytest.raises(pagedkv.InvalidArgument):
            a.append([])
        with pytest.raises(pagedkv.InvalidArgument):
            a.append([2**40])
        assert len(a) == 2  # refused calls changed nothing


def test_match_needs_empty_sequence(cache):
    with cache.sequence() as a:
        a.append(toks(4))
        with pytest.raises(pagedkv.InvalidState):
            a.match_prefix(toks(4))


def test_context_managers_free(cache):
    with cache.sequence() as a:
        a.append(toks(5))
        with a.fork():
            assert cache.stats().n_seqs == 2
        assert cache.stats().n_seqs == 1
    assert cache.stats().n_seqs == 0
    with pytest.raises(pagedkv.NoSuchSequence):
        a.append([1])  # freed handle: refused forever
    with pytest.raises(pagedkv.NoSuchSequence):
        a.free()


def test_namespaces_isolate(cache):
    with cache.sequence(namespace="tenant-a") as a:
        a.append(toks(8))
        a.commit()
        other, hit = cache.match(toks(9), namespace=b"tenant-b")
        assert hit == 0
        same, hit = cache.match(toks(9), namespace="tenant-a")
        assert hit == 8
        lora, hit = cache.match(toks(9), namespace="tenant-a", adapter_id=7)
        assert hit == 0
        for s in (other, same, lora):
            s.free()


def test_out_of_memory_leaves_state(cache):
    with cache.sequence() as a:
        a.append(toks(60))
        before = cache.stats()
        with pytest.raises(pagedkv.OutOfMemory):
            a.append(toks(8))
        assert cache.stats() == before
        assert len(a) == 60


def test_set_priority(cache):
    with cache.sequence() as a:
        a.append(toks(8))
        a.set_priority(0, 4, 90, duration_ns=10**9)
        with pytest.raises(pagedkv.InvalidArgument):
            a.set_priority(0, 4, 101)
        with pytest.raises(pagedkv.OutOfRange):
            a.set_priority(4, 4, 50)


def test_pins_survive_free_and_pressure():
    with small(num_blocks=4, events=True) as c:
        with c.sequence() as a:
            a.append(toks(8))
            a.commit()
            pin = a.pin(4)
            with pytest.raises(pagedkv.OutOfRange):
                a.pin(9)
        assert c.stats().blocks_pinned == 1
        with c.sequence() as b:  # needs every unpinned block: evicts block 2
            b.append(toks(12, 100))
            with pytest.raises(pagedkv.OutOfMemory):
                b.append(toks(4, 200))
        s, hit = c.match(toks(5))
        assert hit == 4  # the pinned block is still there
        s.free()
        with pin:
            pass
        assert c.stats().blocks_pinned == 0
        with pytest.raises(pagedkv.NoSuchObject):
            pin.release()


def test_reset_prefix_cache(cache):
    with cache.sequence() as a:
        a.append(toks(8))
        a.commit()
    cache.take_events()
    cache.reset_prefix_cache()
    assert [e.type for e in cache.take_events()] == ["cleared"]
    assert cache.stats().blocks_cached == 0


def test_closed_cache_refuses():
    c = small()
    a = c.sequence()
    c.close()
    c.close()  # idempotent
    assert c.closed and "closed" in repr(c)
    with pytest.raises(pagedkv.InvalidState, match="closed"):
        a.append([1])
    with pytest.raises(pagedkv.InvalidState):
        c.stats()


# ---------------------------------------------------------------- exports

def test_block_table_and_csr(cache):
    a = cache.sequence()
    a.append(toks(9))
    b = cache.sequence()
    b.append(toks(3, 50))
    e = cache.sequence()
    table, lens = cache.block_table([a, b, e])
    assert table.shape == (3, 3) and table.dtype == np.int32
    assert list(table[0]) == list(a.blocks())
    assert list(table[1]) == [b.blocks()[0], -1, -1]
    assert list(table[2]) == [-1, -1, -1]
    assert list(lens) == [9, 3, 0]
    out = np.zeros((3, 5), np.int32)
    t2, _ = cache.block_table([a, b, e], max_blocks=5, out=out)
    assert t2 is out and list(out[0, :3]) == list(a.blocks())
    with pytest.raises(pagedkv.BufferTooSmall):
        cache.block_table([a], max_blocks=2)
    with pytest.raises(pagedkv.InvalidArgument):
        cache.block_table([a], max_blocks=5, out=np.zeros((1, 5), np.int64))
    indptr, indices, last = cache.kv_csr([a, b, e])
    assert list(indptr) == [0, 3, 4, 4]
    assert list(indices) == list(a.blocks()) + list(b.blocks())
    assert list(last) == [1, 3, 0]
    sm = a.slot_mapping(2, 7)
    assert list(sm) == [a.blocks()[t // 4] * 4 + t % 4 for t in range(2, 7)]
    with pytest.raises(pagedkv.OutOfRange):
        a.slot_mapping(0, 10)
    with pytest.raises(pagedkv.OutOfRange):
        a.slot_mapping(5, 3)
    a.free()
    with pytest.raises(pagedkv.NoSuchSequence):
        cache.block_table([b, a])
    b.free()
    e.free()


def test_external_storage_queues_copies():
    with small(storage="external") as c:
        a = c.sequence()
        a.append(toks(6))
        b = a.fork()
        b.append([7])
        copies = c.drain_copies()
        assert copies == [pagedkv.Copy(a.blocks()[1], b.blocks()[1], 2, 0, 0)]
        assert c.drain_copies() == []
        with pytest.raises(pagedkv.NotSupported):
            c.kv(0)


def test_stats_fields(cache):
    with cache.sequence() as a:
        a.append(toks(6))
        st = cache.stats()
        assert st.blocks_used == 2 and st.tokens == 6 and st.waste_slots == 2
        assert st.blocks_free + st.blocks_used + st.blocks_evictable == 16
        assert st.policy == "lru"


# ---------------------------------------------------------------- views

def test_kv_views_are_zero_copy():
    with small(n_layers=2, n_kv_heads=2, head_dim=4) as c:
        K, V = c.kv(1)
        assert K.shape == (8, 2, 4, 4) and K.dtype == np.float32
        K[3, 1, 2, :] = [1, 2, 3, 4]
        K2, _ = c.kv(1)
        assert list(K2[3, 1, 2]) == [1, 2, 3, 4]
        assert K.base is not None and not K.flags.owndata
        with pytest.raises(pagedkv.OutOfRange):
            c.kv(2)


def test_views_keep_memory_after_close():
    c = small(dtype="f16")
    K, V = c.kv(0)
    assert K.dtype == np.float16
    V[...] = 2.0
    c.close()
    del c
    gc.collect()
    assert float(V.sum()) == 2.0 * V.size  # still mapped
    del K, V
    gc.collect()


def test_bf16_views_are_bit_patterns():
    with small(dtype="bf16") as c:
        K, _ = c.kv(0)
        assert K.dtype == np.uint16


# ---------------------------------------------------------------- threads

def test_caches_from_two_threads():
    def work(seed):
        for i in range(20):
            with small(num_blocks=16) as c:
                with c.sequence() as s:
                    s.append(toks(17, seed))
                    s.commit()
                    with pytest.raises(pagedkv.OutOfRange):
                        s.truncate(100)
                c.check()
    errors, _ = run_threads(work, [k * 1000 for k in range(2)])
    assert not errors, errors
