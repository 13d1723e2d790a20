"""KV cache groups (groups.h) from Python: full + sliding-window groups over
one pool, sliding groups releasing what left their window, hits valid for
every group, bad layouts refused."""
import pytest

import pagedkv
from conftest import toks

BS = 4


def cache(**kw):
    args = dict(n_layers=1, n_kv_heads=1, head_dim=4, block_size=BS, num_blocks=64)
    args.update(kw)
    return pagedkv.Cache(**args)


def test_sliding_group_keeps_its_window():
    with cache() as c, pagedkv.Groups(c, [("sliding", 8), ("full", 0)], 256) as g:
        with g.request() as r:
            slots = r.append(toks(40))
            assert slots.shape == (2, 40)
            r.commit()
            full, slide = r.sequences[1], r.sequences[0]
            assert full.info().n_blocks == 10
            first = r.first_pos(0)
            assert first > 0 and first % BS == 0 and r.first_pos(1) == 0
            # the window's blocks stay: the next query at 40 reads [33, 40]
            assert first <= 33 and slide.info().n_blocks == -(-(40 - first) // BS)
            c.check()
        # a new request hits both groups (the sliding group needs only its
        # window, and those blocks are cached)
        with g.request() as r2:
            hit = r2.match(toks(41))
            assert hit == 40
            c.check()


def test_groups_isolate_and_refuse():
    with cache() as c:
        with pytest.raises(pagedkv.OutOfRange):
            pagedkv.Groups(c, [("sliding", 300)], 256)      # window > context
        with pytest.raises(pagedkv.InvalidArgument):
            pagedkv.Groups(c, [("full", 5)], 256)           # full with a window
        with pytest.raises(pagedkv.InvalidArgument):
            pagedkv.Groups(c, [("diagonal", 1)], 256)
        with pagedkv.Groups(c, [("full", 0), ("full", 0)], 16) as g:
            r = g.request(namespace="t")
            r.append(toks(16))
            with pytest.raises(pagedkv.OutOfRange):
                r.append(toks(1))                           # past max_tokens
            r.commit()
            # groups never share blocks with each other
            a, b = (set(s.blocks()) for s in r.sequences)
            assert not a & b
            r.free()
            with pytest.raises(pagedkv.NoSuchSequence):
                r.free()
            assert c.stats().n_seqs == 0
            c.check()
