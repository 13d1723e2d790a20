"""The serving calls of the C API (issue 11) through the Python wrappers:
probe, append_ex (hit, lookahead, delta), commit_ex (dedup, remaps,
deferred release), batch append/free, pulled events, capacity, evict,
common prefix."""
import numpy as np
import pytest

import pagedkv
from conftest import toks


def mk(**kw):
    args = dict(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4, num_blocks=16)
    args.update(kw)
    return pagedkv.Cache(**args)


def test_probe_is_read_only_and_append_ex_attaches():
    with mk(event_queue_cap=64) as c:
        with c.sequence() as a:
            a.append(toks(12))
            a.commit()
            c.drain_events()
            before = c.stats()
            hit, blocks = c.probe(toks(12))
            assert hit == 12 and list(blocks) == list(a.blocks())
            assert c.probe(toks(12), max_tokens=11)[0] == 8
            assert c.probe(toks(12), namespace="x")[0] == 0
            after = c.stats()
            assert after.prefix_probes == before.prefix_probes + 3
            assert after.blocks_used == before.blocks_used and c.drain_events() == []
            with c.sequence() as b:
                d = b.append_ex(toks(14), lookahead=3, hit_blocks=blocks[:2], slots=True)
                assert (d.n_known, d.n_tokens) == (14, 17)
                assert len(d.new_blocks) == 3 and d.cow_index == -1
                assert list(b.blocks()[:2]) == list(blocks[:2])
                assert len(d.slots) == 14 - 8 + 3
                assert b.info().n_known == 14
                d2 = b.append_ex([7, 8])          # fills two lookahead slots
                assert len(d2.new_blocks) == 0 and (d2.n_known, d2.n_tokens) == (16, 17)
                with pytest.raises(pagedkv.OutOfRange):
                    b.commit(17)                  # lookahead is never committed
                b.commit(16)


def test_stale_hit_refused():
    with mk(num_blocks=3) as c:
        with c.sequence() as a:
            a.append(toks(8))
            a.commit()
        hit, blocks = c.probe(toks(8))
        c.evict(2)
        with c.sequence() as b:
            with pytest.raises(pagedkv.InvalidState, match="stale"):
                b.append_ex(toks(8), hit_blocks=blocks)
            assert len(b) == 0
        with pytest.raises(pagedkv.OutOfRange):
            c.evict(1)


def test_commit_dedup_remaps_and_deferred_release():
    with mk() as c:
        a, b = c.sequence(), c.sequence()
        a.append(toks(8))
        b.append(toks(8))
        a.commit()
        assert b.commit_ex(8, dedup=False) == []
        assert c.stats().commit_duplicates == 2
        b2 = c.sequence()
        b2.append(toks(8))
        old = list(b2.blocks())
        remaps = b2.commit_ex(8, dedup=True)
        assert [(r.index, r.old_block) for r in remaps] == [(0, old[0]), (1, old[1])]
        assert list(b2.blocks()) == list(a.blocks())
        assert c.capacity().deferred == 2
        c.blocks_release([r.old_block for r in remaps])
        assert c.capacity().deferred == 0
        with pytest.raises(pagedkv.NoSuchObject):
            c.blocks_release([old[0]])
        for s in (a, b, b2):
            s.free()


def test_batch_append_free_capacity_common():
    with mk(num_blocks=8) as c:
        seqs = [c.sequence() for _ in range(3)]
        base = c.sequence()
        base.append(toks(8))
        forks = [base.fork() for _ in range(2)]
        slots, res = c.batch_append(seqs + forks, tokens=[1, 2, 3, 4, 5])
        assert (res["rc"] == 0).all() and (slots >= 0).all()
        assert list(res["change"]) == [1, 1, 1, 1, 1]
        assert c.common_prefix_blocks(forks) == 2
        assert c.common_prefix_blocks(forks + [base]) == 2
        cap = c.capacity()
        assert cap.in_use == 7 and cap.free == 1
        assert cap.usage == pytest.approx(7 / 8)
        # pool: 1 block left -> the second sequence needing one fails alone
        seqs2 = [c.sequence(), c.sequence()]
        slots, res = c.batch_append(seqs2, tokens=[9, 9])
        assert list(res["rc"]) == [0, -2] and slots[1] == -1
        codes = c.batch_free(seqs + forks + seqs2 + [base])
        assert (codes == 0).all()
        assert c.stats().n_seqs == 0
        assert list(c.batch_free(seqs[:1])) == [-3]


def test_pulled_events_gap_free_with_lost_marker():
    with mk(event_queue_cap=4) as c:
        with c.sequence() as a:
            a.append(toks(24))
            a.commit()                            # 6 STORED, queue holds 4
        evs = c.drain_events()
        assert [e.type for e in evs] == ["stored"] * 4 + ["lost"]
        assert evs[-1].n_lost == 2 and evs[-1].seqno == 5
        assert [e.seqno for e in evs[:4]] == [1, 2, 3, 4]
        assert evs[0].ns is None and evs[0].index == 0 and evs[3].index == 3
        with pytest.raises(pagedkv.NotSupported):
            with mk() as d:
                d.drain_events()


def test_library_refuses_reentry_with_ebusy():
    import ctypes
    from pagedkv import _lib
    seen = []

    def cb(evp, user):
        seen.append(_lib.LIB.pkv_seq_create(ctypes.c_void_p(user_ptr[0]), None,
                                            ctypes.byref(_lib.pkv_seq_id())))

    user_ptr = [0]
    with mk() as c:
        user_ptr[0] = c._ptr
        fn = _lib.EVENT_FN(cb)
        # install a raw callback through a second cache config
        cfg = pagedkv.Config(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                             num_blocks=4)._to_c()
        cfg.on_event = fn
        ptr = ctypes.c_void_p()
        assert _lib.LIB.pkv_cache_create(ctypes.byref(cfg), ctypes.byref(ptr)) == 0
        user_ptr[0] = ptr.value
        sid = _lib.pkv_seq_id()
        _lib.LIB.pkv_seq_create(ptr, None, ctypes.byref(sid))
        t = np.arange(4, dtype=np.int32)
        assert _lib.LIB.pkv_seq_append(ptr, sid, t.ctypes.data, 4, None) == 0
        assert _lib.LIB.pkv_seq_commit(ptr, sid, 4) == 0
        _lib.LIB.pkv_cache_destroy(ptr)
    assert seen == [-10]
    assert pagedkv.Busy.code == -10
