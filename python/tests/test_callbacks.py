"""Events, Python policies, and what a raising callback leaves behind."""
import pytest

import pagedkv
from conftest import run_threads, toks


def fill(c, n_seqs, start=0, n_tokens=8):
    """n_seqs committed sequences of n_tokens each, freed (their full blocks
    stay cached and evictable)."""
    for i in range(n_seqs):
        with c.sequence() as s:
            s.append(toks(n_tokens, start + 1000 * i))
            s.commit()


# ---------------------------------------------------------------- events

def test_events_stored_removed_cleared_gap_free():
    seen = []
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=4, on_event=seen.append, events=True) as c:
        fill(c, 2)                       # 4 blocks stored
        fill(c, 1, start=50000)          # evicts 2, stores 2
        c.reset_prefix_cache()
        evs = c.take_events()
        assert evs == seen
        assert [e.seqno for e in evs] == list(range(1, len(evs) + 1))
        kinds = [e.type for e in evs]
        assert kinds[:4] == ["stored"] * 4
        assert kinds.count("removed") == 2
        assert kinds[-1] == "cleared"
        stored = {e.key for e in evs if e.type == "stored"}
        assert all(e.key in stored for e in evs if e.type == "removed")
        first = evs[0]
        assert first.parent == 0 and evs[1].parent == first.key
        assert first.n_tokens == 4 and first.block >= 0
        assert c.take_events() == []


def test_take_events_needs_queue():
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=4) as c:
        with pytest.raises(pagedkv.InvalidState):
            c.take_events()


def test_event_callback_exception_is_reported_and_harmless():
    calls = []

    def bad(ev):
        calls.append(ev)
        if len(calls) == 1:
            raise KeyError("boom")

    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=8, on_event=bad, events=True) as c:
        s = c.sequence()
        s.append(toks(8))
        with pytest.raises(pagedkv.CallbackError) as ei:
            s.commit()
        assert isinstance(ei.value.__cause__, KeyError)
        assert "event callback raised KeyError" in str(ei.value)
        assert "completed" in str(ei.value)
        assert len(calls) == 2          # the second event still reached it
        assert s.info().n_committed == 8  # the commit happened
        assert len(c.take_events()) == 2
        c.check()
        t, hit = c.match(toks(9))       # and the cache works on
        assert hit == 8
        t.free()
        s.free()


def test_event_callback_calling_back_gets_clear_error_not_deadlock():
    def reenter(ev):
        c.stats()

    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=8, on_event=reenter) as c:
        with c.sequence() as s:
            s.append(toks(4))
            with pytest.raises(pagedkv.CallbackError) as ei:
                s.commit()
            assert isinstance(ei.value.__cause__, pagedkv.InvalidState)
            assert "inside an event callback" in str(ei.value.__cause__)
            c.check()
            assert c.stats().blocks_cached == 1


# ---------------------------------------------------------------- policies

def eviction_order(policy):
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=8, policy=policy, events=True) as c:
        fill(c, 4)                     # 8 cached blocks, all evictable
        # touch sequence 1's prefix again so LRU keeps it longer
        s, hit = c.match(toks(8, 1000), max_tokens=8)
        assert hit == 8
        s.free()
        fill(c, 3, start=90000)        # needs 6 blocks: evicts 6
        c.check()
        return [e.block for e in c.take_events() if e.type == "removed"]


def test_python_lru_evicts_like_builtin_lru():
    order = eviction_order(pagedkv.LRUPolicy())
    assert len(order) == 6
    assert order == eviction_order("lru")


class Recording(pagedkv.Policy):
    name = "py-recording"

    def create(self, num_blocks, args):
        self.num_blocks, self.args = num_blocks, args
        self.log = []
        self.cand = []

    def on_insert(self, block, meta):
        self.log.append(("insert", block, meta.depth))

    def on_hit(self, block, meta):
        self.log.append(("hit", block))

    def on_evictable(self, block, meta):
        self.cand.append(block)

    def on_pinned(self, block, meta):
        self.cand.remove(block)

    def on_remove(self, block):
        if block in self.cand:
            self.cand.remove(block)
        self.log.append(("remove", block))

    def choose_victim(self, now):
        return self.cand[-1]  # most recent first (MRU)


def test_python_policy_sees_every_hook():
    pol = Recording()
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=2, policy=pol, policy_args="x=1") as c:
        assert c.policy is pol and c.policy_name == "py-recording"
        assert pol.num_blocks == 2 and pol.args == "x=1"
        fill(c, 1)
        s, hit = c.match(toks(8), max_tokens=8)
        s.free()
        fill(c, 1, start=5000)
        c.check()
    kinds = [e[0] for e in pol.log]
    assert kinds[:2] == ["insert", "insert"] and pol.log[1][2] == 1
    assert kinds.count("hit") == 2 and kinds.count("remove") == 2
    # free releases the tail first, so MRU evicts the first block first
    assert [e[1] for e in pol.log if e[0] == "remove"][0] == pol.log[0][1]
    with pytest.raises(ValueError):  # an instance serves one cache
        pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                      num_blocks=4, policy=pol)


class Raising(pagedkv.LRUPolicy):
    name = "py-raising"
    fail_in = None

    def on_evictable(self, block, meta):
        super().on_evictable(block, meta)
        if self.fail_in == "on_evictable":
            raise RuntimeError("hook failed")

    def choose_victim(self, now):
        if self.fail_in == "choose_victim":
            raise ZeroDivisionError("no victim")
        if self.fail_in == "bad_victim":
            return 10**6
        return super().choose_victim(now)


@pytest.mark.parametrize("where", ["on_evictable", "choose_victim", "bad_victim"])
def test_raising_policy_leaves_cache_usable(where):
    pol = Raising()
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=4, policy=pol) as c:
        fill(c, 2) if where != "on_evictable" else None
        pol.fail_in = where
        s = c.sequence()
        with pytest.raises(pagedkv.CallbackError) as ei:
            if where == "on_evictable":
                s.append(toks(8))
                s.commit()
                s.free()
            else:
                s.append(toks(8, 7000))  # must evict two blocks
        hook = "choose_victim" if where == "bad_victim" else where
        assert ("policy 'py-raising' %s" % hook) in str(ei.value)
        pol.fail_in = None
        c.check()
        st = c.stats()
        assert st.blocks_free + st.blocks_used + st.blocks_evictable == 4
        if where != "on_evictable":
            assert len(s) == 8 and st.evictions == 2
            assert c._adapter.fallbacks >= 1
            s.free()
        fill(c, 2, start=20000)        # keeps working
        c.check()


def test_register_policy_by_name():
    class Named(pagedkv.LRUPolicy):
        name = "py-test-registered"

    pagedkv.register_policy(Named)
    assert "py-test-registered" in pagedkv.policy_names()
    assert pagedkv.policy_exists("py-test-registered")
    with pytest.raises(pagedkv.InvalidState):
        pagedkv.register_policy(Named)
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=4, policy="py-test-registered") as c:
        assert isinstance(c.policy, Named)
        fill(c, 3)
        assert c.stats().evictions == 2
        c.check()
    with pytest.raises(TypeError):
        pagedkv.register_policy(object)


def test_raising_policy_create_refuses_cache():
    class NoCreate(pagedkv.Policy):
        name = "py-nocreate"

        def create(self, num_blocks, args):
            raise OSError("no")

    with pytest.raises(pagedkv.InvalidArgument) as ei:
        pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                      num_blocks=4, policy=NoCreate)
    assert isinstance(ei.value.__cause__, pagedkv.CallbackError)


def test_python_clock():
    t = [0]

    def clock():
        t[0] += 1000
        return t[0]

    class Now(pagedkv.LRUPolicy):
        name = "py-now"
        seen = []

        def on_insert(self, block, meta):
            self.seen.append(meta.now)

    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=4, policy=Now, clock=clock) as c:
        fill(c, 1)
        assert Now.seen and all(v % 1000 == 0 for v in Now.seen)


def test_policy_check_and_dedup_hooks():
    """Vtable v2 (when the library speaks it): pkv_check runs the Python
    policy's check(evictable) after the adapter's own comparison; a commit
    that deduplicates calls on_dedup, never on_hit."""
    from pagedkv.policy import POLICY_VERSION

    class Checked(pagedkv.LRUPolicy):
        name = "py-checked"
        broken = False
        dedups = []
        hits = []

        def on_dedup(self, block, meta):
            self.dedups.append(block)

        def on_hit(self, block, meta):
            self.hits.append(block)

        def check(self, evictable):
            super().check(evictable)
            assert evictable.dtype == bool
            if self.broken:
                raise AssertionError("lost track of block 0")

    pol = Checked()
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=8, policy=pol, commit_dedup=True) as c:
        fill(c, 1)                     # 2 cached evictable blocks
        c.check()                      # LRUPolicy.check agrees with the manager
        a = c.sequence()
        a.append(toks(8))
        a.commit()                     # duplicates of the cached blocks: dedup
        a.free()
        pol.broken = True
        if POLICY_VERSION >= 2:
            assert len(pol.dedups) == 2 and pol.hits == []
            with pytest.raises(pagedkv.Corrupt, match="policy 'py-checked' check: "
                               "AssertionError: lost track of block 0"):
                c.check()
        else:                          # a version-1 library has neither hook
            assert pol.dedups == []
            c.check()
        pol.broken = False
        c.check()


def test_two_threads_one_cache_with_python_callbacks():
    """Python event callback and policy on one cache driven from two
    threads: the library's lock and the GIL never deadlock (ctypes drops the
    GIL around each call), every event arrives once, the cache checks."""
    seen = []
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=32, on_event=seen.append,
                       policy=pagedkv.LRUPolicy()) as c:
        def work(base):
            for i in range(60):
                with c.sequence() as s:
                    s.append(toks(9, base + (i % 7) * 10))
                    s.commit()
        errors, ts = run_threads(work, [k * 100000 for k in range(2)], join_timeout=60)
        assert not errors and not any(t.is_alive() for t in ts)
        assert len(seen) == c.stats().events > 0
        assert [e.seqno for e in seen] == list(range(1, len(seen) + 1))
        c.check()
