"""vLLM's KV cache manager protocol with several KV cache groups (hybrid
models: full attention + sliding windows), pagedkv.vllm.KVCacheManager(...,
kv_cache_groups=, max_model_len=) on the library's groups API."""
import random

import pytest

from pagedkv.vllm import KVCacheManager
from pagedkv.vllm_groups import HybridKVCacheManager
from pagedkv.vllm_types import BlockStored, NoSuchRequest, StaleHit
from pagedkv.errors import InvalidArgument
from test_vllm import Req
from test_vllm_random import BS, drive

HYBRID = [("full", 0), ("sliding", 8)]


def hybrid(num_blocks=200, groups=HYBRID, **kw):
    m = KVCacheManager(num_blocks=num_blocks, block_size=BS, kv_cache_groups=groups,
                       max_model_len=256, **kw)
    assert isinstance(m, HybridKVCacheManager)
    return m


def admit(m, r, chunk=None):
    hb, hit = m.get_computed_blocks(r)
    n = r.num_tokens - hit if chunk is None else min(chunk, r.num_tokens - hit)
    new = m.allocate_slots(r, n, hit, hb)
    assert new is not None
    r.num_computed_tokens = hit + n
    return hit, hb, new


@pytest.mark.parametrize("seed", range(3))
def test_one_full_group_shows_what_the_single_group_manager_shows(seed):
    a = drive(KVCacheManager(num_blocks=4000, block_size=BS, enable_kv_cache_events=True),
              seed, 100, 25)
    m = hybrid(4000, [("full", 0)], enable_kv_cache_events=True)
    b = drive(m, seed, 100, 25)
    m.check()
    assert len(a) > 80
    assert a == b


def held(m, rids):
    """Distinct blocks the requests' tables hold, every group (one pool)."""
    return len({b for rid in rids for g in m.get_block_ids(rid) for b in g if b >= 0})


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("nb", (40, 4000))
def test_a_random_scheduler_keeps_the_hybrid_cache_consistent(seed, nb):
    """Admission with hits, chunked prefill, decode with drafts accepted or
    rejected, preemption (None), finishing; after every step the library's
    check and usage = the blocks the tables hold (every group)."""
    rng = random.Random(seed)
    m = hybrid(nb, [("full", 0), ("sliding", 8), ("sliding", 5)],
               enable_kv_cache_events=True)
    prompts = [[rng.randrange(5) for _ in range(rng.randrange(1, 40))] for _ in range(5)]
    waiting = [Req("r%d" % i, rng.choice(prompts) + [rng.randrange(50)])
               for i in range(30)]
    running, refused, copies = [], 0, 0
    for step in range(120):
        for r in list(running):
            left = r.num_tokens - r.num_computed_tokens
            drafts = 0 if left > 1 else rng.choice((0, 0, 2))
            n = min(left, rng.choice((3, 8))) if left > 1 else 1
            new = m.allocate_slots(r, n, num_lookahead_tokens=drafts)
            if new is None:                          # preempt
                refused += 1
                m.free(r)
                r.num_computed_tokens = 0
                running.remove(r)
                waiting.insert(0, r)
                continue
            assert len(new.get_block_ids()) == 3
            if left > 1:
                r.num_computed_tokens += n
                continue
            acc = rng.randrange(drafts + 1)
            r.sample(*[rng.randrange(50) for _ in range(acc + 1)])
            r.num_computed_tokens += 1 + acc
            if r.num_tokens > 70 or rng.random() < 0.04:
                m.free(r)
                running.remove(r)
        while waiting and len(running) < 4:
            r = waiting[0]
            hb, hit = m.get_computed_blocks(r)
            n = min(r.num_tokens - hit, 16)
            if m.allocate_slots(r, n, hit, hb) is None:
                refused += 1
                break
            r.num_computed_tokens = hit + n
            running.append(waiting.pop(0))
        tables = [m.get_block_ids(r.request_id) for r in running]
        for t in tables:
            assert len({len(g) for g in t}) == 1 and -1 not in t[0]
        copies += len(m.take_copies())  # the device's copy-on-write work
        assert m.usage * m.num_blocks == pytest.approx(held(m, [r.request_id for r in running]))
        m.take_events()
        if step % 10 == 0:
            m.check()
    assert (refused > 0) == (nb == 40)
    m.check()


def test_a_hit_needs_the_window_of_every_sliding_group():
    m = hybrid()
    a = Req("a", list(range(100, 140)))              # 40 tokens, 10 blocks
    admit(m, a)
    # The sliding group (W=8) kept only what a query at 40 reads.
    ids = m.get_block_ids("a")
    assert len(ids[0]) == 10 and -1 not in ids[0]
    assert ids[1][:8] == [-1] * 8 and -1 not in ids[1][8:]
    m.free(a)
    b = Req("b", list(range(100, 140)) + [7, 7])
    hit, hb, new = admit(m, b)
    assert hit == 40
    full, sliding = hb.get_block_ids()
    assert full == ids[0]
    # (40 + 1 - 8) // 4 = 8: the sliding group needs blocks 8 and 9 only.
    assert sliding[:8] == [-1] * 8 and sliding[8:] == ids[1][8:]
    assert [len(g) for g in new.get_block_ids()] == [1, 1]   # block 10
    assert m.get_block_ids("b")[0][:10] == ids[0]
    m.check()


def test_a_sliding_group_holds_its_window_while_decoding():
    m = hybrid(num_blocks=200, groups=[("full", 0), ("sliding", 8)])
    r = Req("r", list(range(1, 9)))
    admit(m, r)
    for step in range(60):
        r.sample(500 + step)
        assert m.allocate_slots(r, 1) is not None
        r.num_computed_tokens += 1
    full, sliding = m.get_block_ids("r")
    assert len(full) == len(sliding) == 17           # 68 tokens
    assert sum(b >= 0 for b in sliding) <= 3         # the window: W/4 + 1
    assert m.usage * m.num_blocks == pytest.approx(17 + sum(b >= 0 for b in sliding))
    m.check()


def test_speculative_lookahead_accepted_and_rejected():
    m = hybrid()
    r = Req("r", list(range(10, 22)))
    admit(m, r)
    r.sample(1)
    # one known token + 3 drafts whose ids are not known yet
    new = m.allocate_slots(r, 1, num_lookahead_tokens=3)
    assert new is not None
    r.sample(2)                   # 1 accepted + the bonus token ...
    r.num_computed_tokens += 2    # ... the other drafts rejected
    r.sample(3)
    assert m.allocate_slots(r, 1, num_lookahead_tokens=3) is not None
    r.num_computed_tokens += 1
    r.sample(4)                   # fills a slot reserved ahead
    assert m.allocate_slots(r, 1) is not None
    r.num_computed_tokens += 1
    m.cache_blocks(r, r.num_computed_tokens)
    assert r.num_computed_tokens == 16
    m.check()
    # Only verified ids were cached: a new request with the same 16 tokens
    # hits them, one with a different token at 15 hits 12.
    same = Req("s", list(r.all_token_ids[:16]) + [9])
    assert m.get_computed_blocks(same)[1] == 16
    other = Req("o", list(r.all_token_ids[:15]) + [99, 9])
    assert m.get_computed_blocks(other)[1] == 12


def test_events_carry_the_group_and_the_tokens():
    m = hybrid(enable_kv_cache_events=True)
    r = Req("r", list(range(30, 46)))                # 16 tokens
    admit(m, r)
    ev = [e for e in m.take_events() if isinstance(e, BlockStored)]
    by_group = {e.group: e for e in ev}
    assert set(by_group) == {0, 1}
    assert by_group[0].token_ids == list(range(30, 46))
    # The sliding group (W=8) stored its full blocks at the commit too.
    assert by_group[1].token_ids == list(range(30, 46))
    assert len(by_group[1].block_hashes) == 4


def test_salts_isolate_tenants():
    m = hybrid()
    admit(m, Req("a", list(range(20)), salt="t1"))
    assert m.get_computed_blocks(Req("b", list(range(20)) + [1], salt="t1"))[1] == 20
    assert m.get_computed_blocks(Req("c", list(range(20)) + [1], salt="t2"))[1] == 0


def test_bad_input_changes_nothing():
    m = hybrid(num_blocks=24)
    a = Req("a", list(range(40)))
    admit(m, a)
    m.free(a)
    b = Req("b", list(range(40)) + [1])
    hb, hit = m.get_computed_blocks(b)
    assert hit == 40
    m.cache.evict(m.cache.capacity().evictable)      # evicted after the probe
    with pytest.raises(StaleHit):
        m.allocate_slots(b, 1, hit, hb)
    assert m.usage == 0
    with pytest.raises(NoSuchRequest):
        m.get_block_ids("b")
    with pytest.raises(InvalidArgument):             # past max_model_len
        m.allocate_slots(Req("x", [1] * 300), 300)
    with pytest.raises(InvalidArgument):             # more than the pool, ever
        m.allocate_slots(Req("y", [1] * 200), 200)
    # Does not fit now: None, and nothing changed.
    big = Req("z", list(range(1000, 1060)))
    admit(m, Req("h", list(range(2000, 2040))))
    before = m.usage
    assert m.allocate_slots(big, 60) is None
    assert m.usage == before
    with pytest.raises(NoSuchRequest):
        m.get_block_ids("z")
    m.free(big)                                      # unknown: no-op
    m.check()
    with pytest.raises(InvalidArgument):
        KVCacheManager(num_blocks=8, block_size=BS, kv_cache_groups=[("full", 0)])
    with pytest.raises(InvalidArgument):
        hybrid(groups=[("local", 4)])
