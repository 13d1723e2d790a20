"""vLLM v1's KV cache manager protocol, driven the way its scheduler drives
it, against both implementations: pagedkv.vllm.KVCacheManager (libpagedkv)
and pagedkv.vllm_pyref.PyKVCacheManager (pure Python, vLLM's design).

The tests assert what the protocol promises, not block numbering: block ids
are compared between calls of one manager, never to constants.
"""
import pytest

import pagedkv
from pagedkv.vllm_pyref import PyKVCacheManager
from pagedkv.vllm_types import (AllBlocksCleared, BlockRemoved, BlockStored,
                                KVCacheBlocks, NoSuchRequest, StaleHit)
from pagedkv.vllm_types import Request as Req  # the other test files import it from here
from pagedkv import vllm as cvllm

BS = 4

IMPLS = {"c": cvllm.KVCacheManager, "py": PyKVCacheManager}


@pytest.fixture(params=sorted(IMPLS))
def make(request):
    made = []

    def mk(num_blocks=32, **kw):
        kw.setdefault("enable_kv_cache_events", True)
        m = IMPLS[request.param](num_blocks=num_blocks, block_size=BS, **kw)
        made.append(m)
        return m
    yield mk
    for m in made:
        if hasattr(m, "check"):
            m.check()


def admit(m, r, chunk=None):
    """The scheduler's admission of a waiting request: probe, then allocate
    the rest (or a chunk) with the hit.  Returns (new_blocks, hit_tokens)."""
    hit_blocks, hit = m.get_computed_blocks(r)
    n = r.num_tokens - hit if chunk is None else min(chunk, r.num_tokens - hit)
    new = m.allocate_slots(r, n, hit, hit_blocks)
    if new is not None:
        r.num_computed_tokens = hit + n
    return new, hit


def decode(m, r, tok):
    """One decode step: the token sampled last step gets a slot."""
    r.sample(tok)
    new = m.allocate_slots(r, 1)
    if new is not None:
        r.num_computed_tokens += 1
    return new


def stored_blocks(events):
    """[(hash, parent, tokens)] per block, from BlockStored events."""
    out = []
    for e in events:
        if isinstance(e, BlockStored):
            parent = e.parent_block_hash
            for i, h in enumerate(e.block_hashes):
                out.append((h, parent, tuple(e.token_ids[i * BS:(i + 1) * BS])))
                parent = h
    return out


def removed(events):
    return [h for e in events if isinstance(e, BlockRemoved) for h in e.block_hashes]


def state(m, rids):
    return (m.usage, [m.get_block_ids(r) for r in rids])


# ---------------------------------------------------------------- scenarios

def test_admission_with_partial_hit(make):
    m = make()
    a = Req("a", range(40))
    new, hit = admit(m, a)
    assert hit == 0 and len(new.get_block_ids()[0]) == 10
    a_blocks = m.get_block_ids("a")[0]
    assert new.get_block_ids() == (a_blocks,)
    b = Req("b", list(range(22)) + [900 + i for i in range(10)])
    usage = m.usage
    m.take_events()
    first = m.get_computed_blocks(b)
    assert m.get_computed_blocks(b)[1] == first[1] == 20   # read-only, repeatable
    assert m.usage == usage and m.take_events() == []
    assert first[0].get_block_ids() == (a_blocks[:5],)
    new, hit = admit(m, b)
    assert hit == 20 and len(new.get_block_ids()[0]) == 3   # 32 tokens - 20 hit
    assert m.get_block_ids("b")[0][:5] == a_blocks[:5]
    assert not set(new.get_block_ids()[0]) & set(a_blocks)
    # a full hit is capped so the last prompt token is recomputed
    c = Req("c", range(40))
    assert m.get_computed_blocks(c)[1] == 36


def test_chunked_prefill_caches_as_blocks_fill(make):
    m = make()
    r = Req("r", range(50))
    ids = []
    stored = []
    for chunk in (16, 16, 16, 2):
        new, hit = admit(m, r, chunk) if not ids else (m.allocate_slots(r, chunk), 0)
        if ids:
            r.num_computed_tokens += chunk
        ids += new.get_block_ids()[0]
        assert m.get_block_ids("r")[0] == ids           # append-only table
        stored.append(len(stored_blocks(m.take_events())))
    assert stored == [4, 4, 4, 0] and len(ids) == 13
    s = m.get_computed_blocks(Req("s", range(50)))
    assert s[1] == 48 and s[0].get_block_ids()[0] == ids[:12]


def test_preemption_and_resumption(make):
    m = make(num_blocks=8)
    r1, r2 = Req("r1", range(100, 112)), Req("r2", range(200, 212))
    admit(m, r1)
    admit(m, r2)                                         # 3 + 3 blocks
    for t in range(4):
        assert decode(m, r1, 1000 + t) is not None       # r1 -> 4 blocks
    assert m.usage == pytest.approx(7 / 8)
    for t in range(4):
        assert decode(m, r2, 2000 + t) is not None       # r2 -> 4 blocks
    assert m.usage == 1.0
    r2.sample(2004)
    before = state(m, ["r1", "r2"])
    m.take_events()
    assert m.allocate_slots(r2, 1) is None               # no room: nothing changes
    assert state(m, ["r1", "r2"]) == before and m.take_events() == []
    # preempt r1 (the scheduler frees it and resets its progress)
    m.free(r1)
    r1.num_computed_tokens = 0
    assert m.allocate_slots(r2, 1) is not None           # evicts r1's deepest block
    r2.num_computed_tokens += 1
    ev = m.take_events()
    assert len(removed(ev)) == 1
    # r1 cannot come back while r2 holds 5 blocks (its 3 cached ones + 1 new
    # would need 4 of the 3 evictable): allocate_slots says None
    hb, hit = m.get_computed_blocks(r1)
    assert hit == 12 and m.allocate_slots(r1, 4, hit, hb) is None
    m.free(r2)                                           # r2 finishes
    # resume r1: its surviving cached prefix is a hit
    new, hit = admit(m, r1)
    assert hit == 12 and m.get_block_ids("r1")[0][:3] == before[1][0][0][:3]


def test_parallel_sampling_shares_the_prompt(make):
    m = make()
    reqs = [Req("p%d" % i, range(20)) for i in range(3)]
    hits = [admit(m, r)[1] for r in reqs]
    assert hits == [0, 16, 16]
    tables = [m.get_block_ids(r.request_id)[0] for r in reqs]
    assert tables[0][:4] == tables[1][:4] == tables[2][:4]
    assert len({t[4] for t in tables}) == 3              # own last block each
    assert m.get_num_common_prefix_blocks("p0", 3) == [4]
    for i, r in enumerate(reqs):
        decode(m, r, 500 + i)
    tails = [m.get_block_ids(r.request_id)[0][4] for r in reqs]
    assert len(set(tails)) == 3
    assert m.get_num_common_prefix_blocks("p1", 3) == [4]
    m.free(reqs[0])
    assert m.get_num_common_prefix_blocks("p1", 2) == [4]


@pytest.mark.parametrize("accepted", [2, 0, 3])
def test_speculative_lookahead(make, accepted):
    m = make()
    r = Req("r", range(6))
    admit(m, r)                                          # 2 blocks, block 0 cached
    r.sample(60)                                         # 7 tokens known
    m.take_events()
    drafts = [70, 71, 72]
    new = m.allocate_slots(r, 1 + len(drafts), num_lookahead_tokens=0)
    assert len(new.get_block_ids()[0]) == 1              # 10 slots -> 3 blocks
    assert stored_blocks(m.take_events()) == []          # drafts are never cached
    # verification: `accepted` drafts kept, plus the bonus token
    r.sample(*drafts[:accepted], 99)
    r.num_computed_tokens += 1 + accepted
    new = m.allocate_slots(r, 1 + 2, num_lookahead_tokens=1)
    need = r.num_computed_tokens + 3 + 1
    assert len(m.get_block_ids("r")[0]) == -(-need // BS)
    blocks = stored_blocks(m.take_events())
    assert blocks and blocks[0][2] == tuple(r.all_token_ids[4:8])   # verified ids only
    # what was cached is exactly the known tokens' full blocks
    probe = Req("q", list(r.all_token_ids) + [1])
    assert m.get_computed_blocks(probe)[1] == (r.num_tokens // BS) * BS


def test_eagle_lookahead_slots_are_reserved(make):
    m = make()
    r = Req("r", range(8))
    new = m.allocate_slots(r, 8, num_lookahead_tokens=5)  # 13 slots
    assert len(new.get_block_ids()[0]) == 4
    r.num_computed_tokens = 8
    assert len(stored_blocks(m.take_events())) == 2


def test_salts_and_lora_isolate_tenants(make):
    m = make()
    admit(m, Req("a", range(16), salt="tenant-a"))
    assert m.get_computed_blocks(Req("b", range(16), salt="tenant-b"))[1] == 0
    assert m.get_computed_blocks(Req("n", range(16)))[1] == 0
    assert m.get_computed_blocks(Req("a2", range(16), salt="tenant-a"))[1] == 12
    admit(m, Req("l", range(16), lora=3))
    assert m.get_computed_blocks(Req("l2", range(16), lora=4))[1] == 0
    assert m.get_computed_blocks(Req("l3", range(16), lora=3))[1] == 12


def test_eviction_order_under_pressure(make):
    m = make(num_blocks=8)
    r1, r2 = Req("r1", range(16)), Req("r2", range(100, 116))
    admit(m, r1)
    admit(m, r2)
    ev = m.take_events()
    hashes = {r: [h for h, _, t in stored_blocks(ev) if t[0] in r] for r in
              (range(16), range(100, 116))}
    m.free(r1)                                           # freed tail first ...
    m.free(r2)                                           # ... then r2's
    assert m.usage == 0.0                                # cached but unused = free
    admit(m, Req("r3", range(500, 508)))                 # needs 2 blocks: evicts
    assert removed(m.take_events()) == hashes[range(16)][::-1][:2]
    assert m.get_computed_blocks(Req("x", range(16)))[1] == 8
    assert m.get_computed_blocks(Req("y", range(100, 116)))[1] == 12


def test_events_match_what_was_cached_and_evicted(make):
    m = make(num_blocks=6)
    a = Req("a", range(12))
    admit(m, a)
    ev = m.take_events()
    blocks = stored_blocks(ev)
    assert [t for _, _, t in blocks] == [tuple(range(i, i + 4)) for i in (0, 4, 8)]
    assert blocks[0][1] is None and blocks[1][1] == blocks[0][0]
    assert blocks[2][1] == blocks[1][0]
    assert all(isinstance(e, BlockStored) and e.block_size == BS for e in ev)
    assert not m.reset_prefix_cache()                    # blocks in use
    m.free(a)
    b = Req("b", range(50, 70))                          # 5 blocks: evicts 2
    admit(m, b)
    ev = m.take_events()
    gone = removed(ev)
    assert len(gone) == 2 and set(gone) <= {h for h, _, _ in blocks}
    assert [t for _, _, t in stored_blocks(ev)] == [tuple(range(50 + i, 54 + i))
                                                    for i in range(0, 20, 4)]
    m.free(b)
    assert m.reset_prefix_cache()
    ev = m.take_events()
    assert ev and isinstance(ev[-1], AllBlocksCleared)
    assert m.get_computed_blocks(Req("c", range(12)))[1] == 0


def test_usage_stats_and_common_prefix(make):
    m = make(num_blocks=10, log_stats=True)
    assert m.make_prefix_cache_stats().requests == 0
    admit(m, Req("a", range(9)))
    admit(m, Req("b", range(9)))
    st = m.make_prefix_cache_stats()
    assert (st.requests, st.queries, st.hits) == (2, 18, 8)
    assert m.make_prefix_cache_stats().requests == 0     # reset by the call
    assert m.usage == pytest.approx(4 / 10)
    assert m.get_num_common_prefix_blocks("a", 2) == [2]
    nolog = make(num_blocks=4)
    assert nolog.make_prefix_cache_stats() is None


def test_caching_off_and_delayed(make):
    m = make(enable_caching=False)
    admit(m, Req("a", range(8)))
    assert m.take_events() == []
    assert m.get_computed_blocks(Req("b", range(9)))[1] == 0
    m = make()
    r = Req("d", range(8))
    m.allocate_slots(r, 8, delay_cache_blocks=True)
    assert m.take_events() == []
    r.num_computed_tokens = 8
    m.cache_blocks(r, 8)
    assert len(stored_blocks(m.take_events())) == 2


# ---------------------------------------------------------------- bad input

def test_unknown_request_ids(make):
    m = make()
    admit(m, Req("a", range(8)))
    before = state(m, ["a"])
    for call in (lambda: m.get_block_ids("nope"),
                 lambda: m.cache_blocks(Req("nope", range(4)), 4),
                 lambda: m.get_num_common_prefix_blocks("nope", 1)):
        with pytest.raises(NoSuchRequest, match="nope"):
            call()
        with pytest.raises(KeyError):
            call()
    m.free(Req("nope", range(3)))                        # free: a no-op
    m.free(Req("waiting", []))
    assert state(m, ["a"]) == before


def test_stale_hit_is_refused_and_changes_nothing(make):
    m = make(num_blocks=4)
    a = Req("a", range(12))
    admit(m, a)
    m.free(a)
    b = Req("b", range(12))
    hit_blocks, hit = m.get_computed_blocks(b)
    assert hit == 8
    admit(m, Req("c", range(300, 316)))                  # evicts a's blocks
    before = state(m, ["c"])
    m.take_events()
    with pytest.raises(StaleHit, match="no longer cached"):
        m.allocate_slots(b, b.num_tokens - hit, hit, hit_blocks)
    with pytest.raises(pagedkv.InvalidState):
        m.allocate_slots(b, b.num_tokens - hit, hit, hit_blocks)
    assert state(m, ["c"]) == before and m.take_events() == []
    with pytest.raises(NoSuchRequest):
        m.get_block_ids("b")


def test_lookahead_beyond_pool_is_an_error(make):
    m = make(num_blocks=8)
    r = Req("r", range(8))
    admit(m, r)
    r.sample(1)
    before = state(m, ["r"])
    with pytest.raises(pagedkv.InvalidArgument, match="the pool has 8"):
        m.allocate_slots(r, 1, num_lookahead_tokens=100)
    with pytest.raises(ValueError):
        m.allocate_slots(r, 0)
    assert state(m, ["r"]) == before


def test_blocks_object():
    b = KVCacheBlocks(([1, 2],))
    assert b.get_block_ids() == ([1, 2],)
    assert (b + KVCacheBlocks(([3],))).get_block_ids() == ([1, 2, 3],)
    assert KVCacheBlocks(([],)).get_block_ids(allow_none=True) is None


def test_stored_event_tokens_survive_the_request(make):
    m = make()
    r = Req("a", range(9))
    admit(m, r)
    for t in (100, 101, 102):                            # decode fills block 2
        decode(m, r, t)
    m.free(r)                                            # gone before take_events
    blocks = stored_blocks(m.take_events())
    assert [t for _, _, t in blocks] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 100, 101, 102)]


def test_blocks_filled_in_one_step_are_cached_together(make):
    """A decode step where several requests fill their tail block at once
    (the library commits them in one batch call): each block is cached and
    reported with the tokens decoded into it, and a later request hits it."""
    m = make(num_blocks=16)
    reqs = [Req("r%d" % i, range(10 * i, 10 * i + (6 if i < 3 else 5)))
            for i in range(4)]
    for r in reqs:
        admit(m, r)
    m.take_events()
    for step in range(2):
        for r in reqs:
            r.sample(90 + step)
        assert all(m.allocate_slots(r, 1) is not None for r in reqs)
        for r in reqs:
            r.num_computed_tokens += 1
    # r0..r2 filled block 1 in the second step; r3 (5 + 2 tokens) did not.
    blocks = stored_blocks(m.take_events())
    assert sorted(t for _, _, t in blocks) == sorted(
        (10 * i + 4, 10 * i + 5, 90, 91) for i in range(3))
    for i in range(3):
        probe = Req("p%d" % i, list(range(10 * i, 10 * i + 6)) + [90, 91, 7])
        assert m.get_computed_blocks(probe)[1] == 8
    probe = Req("p3", list(range(30, 35)) + [90, 91, 7, 8])
    assert m.get_computed_blocks(probe)[1] == 4
    assert [len(m.get_block_ids(r.request_id)[0]) for r in reqs] == [2, 2, 2, 2]
