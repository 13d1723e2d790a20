"""The engine's prefill/decode on numpy arrays, checked against numpy
attention over the K/V the arena views show."""
import numpy as np
import pytest

import pagedkv
from conftest import toks

H_KV, H_Q, D, BS = 2, 4, 16, 4


def attend(q, k, v, causal_from=None):
    """q [n, Hq, D], k/v [T, Hkv, D]; query i sees positions
    [0, causal_from + i] (all if None)."""
    n, hq, d = q.shape
    T = k.shape[0]
    g = hq // k.shape[1]
    out = np.empty_like(q)
    for i in range(n):
        last = T if causal_from is None else causal_from + i + 1
        for h in range(hq):
            s = k[:last, h // g] @ q[i, h] / np.sqrt(d)
            p = np.exp(s - s.max())
            p /= p.sum()
            out[i, h] = p @ v[:last, h // g]
    return out


@pytest.fixture
def setup():
    with pagedkv.Cache(n_layers=2, n_kv_heads=H_KV, head_dim=D, block_size=BS,
                       num_blocks=32) as c:
        with pagedkv.Engine(c, n_q_heads=H_Q, backend="scalar") as e:
            yield c, e


def test_prefill_then_decode_matches_numpy(setup):
    c, e = setup
    rng = np.random.default_rng(1)
    n = 10
    s = c.sequence()
    s.append(toks(n))
    q = rng.standard_normal((n, H_Q, D), dtype=np.float32)
    k = rng.standard_normal((n, H_KV, D), dtype=np.float32)
    v = rng.standard_normal((n, H_KV, D), dtype=np.float32)
    out = e.prefill(s, 1, 0, q, k, v)
    assert out.shape == (n, H_Q, D)
    np.testing.assert_allclose(out, attend(q, k, v, causal_from=0), atol=1e-5)
    # the arena view shows what prefill wrote, at the slots append gave
    K, V = c.kv(1)
    slots = s.slot_mapping()
    kk = K.transpose(0, 2, 1, 3).reshape(-1, H_KV, D)[slots]
    np.testing.assert_array_equal(kk, k)
    s.commit()
    # decode one token for this and a forked sequence
    t = s.fork()
    s.append([100])
    t.append([200])
    q1 = rng.standard_normal((2, H_Q, D), dtype=np.float32)
    k1 = rng.standard_normal((2, H_KV, D), dtype=np.float32)
    v1 = rng.standard_normal((2, H_KV, D), dtype=np.float32)
    o = np.empty((2, H_Q, D), np.float32)
    r = e.decode([s, t], 1, q1, k1, v1, out=o)
    assert r is o
    for i in range(2):
        kk = np.concatenate([k, k1[i:i + 1]])
        vv = np.concatenate([v, v1[i:i + 1]])
        np.testing.assert_allclose(o[i:i + 1], attend(q1[i:i + 1], kk, vv), atol=1e-5)
    assert e.backend == "scalar" and e.uses_bf16_dot is False
    s.free()
    t.free()


def test_engine_refusals(setup):
    c, e = setup
    s = c.sequence()
    s.append(toks(4))
    q = np.zeros((4, H_Q, D), np.float32)
    kv = np.zeros((4, H_KV, D), np.float32)
    with pytest.raises(pagedkv.InvalidArgument, match="shape"):
        e.prefill(s, 0, 0, q, kv[:, :1], kv)
    with pytest.raises(pagedkv.InvalidArgument):
        e.prefill(s, 0, 0, q, kv, kv, out=np.zeros((4, H_Q, D), np.float64))
    with pytest.raises(pagedkv.OutOfRange):
        e.prefill(s, 0, 2, q, kv, kv)   # positions 2..5 are not reserved
    with pytest.raises(pagedkv.OutOfRange):
        e.prefill(s, 5, 0, q, kv, kv)   # no layer 5
    s.free()
    with pytest.raises(pagedkv.NoSuchSequence):
        e.decode([s], 0, q[:1], kv[:1], kv[:1])


def test_engine_needs_owned_storage():
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=16, block_size=4,
                       num_blocks=4, storage="external") as c:
        with pytest.raises(pagedkv.NotSupported):
            pagedkv.Engine(c)
    with pagedkv.Cache(n_layers=1, n_kv_heads=2, head_dim=16, block_size=4,
                       num_blocks=4) as c:
        with pytest.raises(pagedkv.InvalidArgument):
            pagedkv.Engine(c, n_q_heads=3)


def test_engine_keeps_cache_memory():
    c = pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=16, block_size=4, num_blocks=4)
    e = pagedkv.Engine(c)
    s = c.sequence()
    s.append([1])
    c.close()
    with pytest.raises(pagedkv.InvalidState):
        e.prefill(s, 0, 0, np.zeros((1, 1, 16), np.float32),
                  np.zeros((1, 1, 16), np.float32), np.zeros((1, 1, 16), np.float32))
    e.close()
    e.close()


def test_quantized_arena_view_and_cascade_option():
    with pagedkv.Cache(n_layers=1, n_kv_heads=H_KV, head_dim=D, block_size=BS,
                       num_blocks=8, dtype="i8") as c:
        K, V = c.kv(0)
        assert K.shape == (8, H_KV, BS) and K.dtype.names == ("codes", "scale")
        s = c.sequence()
        s.append(toks(4))
        k = np.random.default_rng(3).standard_normal((4, H_KV, D)).astype(np.float32)
        with pagedkv.Engine(c, n_q_heads=H_Q, backend="scalar", cascade=False) as e:
            e.prefill(s, 0, 0, np.zeros((4, H_Q, D), np.float32), k, k)
        slots = s.slot_mapping()
        rows = K.transpose(0, 2, 1).reshape(-1, H_KV)[slots]   # [4, H_KV] records
        back = rows["codes"].astype(np.float32) * rows["scale"][..., None]
        np.testing.assert_allclose(back, k, atol=np.abs(k).max() / 127 + 1e-6)
        s.free()
