"""vllm — pagedkv as vLLM v1's KV cache manager.

``KVCacheManager`` is duck-typed to vLLM v1's ``KVCacheManager`` so that its
scheduler could drive it unchanged (vLLM is not imported).  Each method maps
onto the library's serving API:

    get_computed_blocks   pkv_prefix_probe (read-only; capped so the last
                          prompt token is recomputed)
    allocate_slots        pkv_seq_append_ex: the probed hit (re-verified:
                          StaleHit if evicted since), the known token ids,
                          draft/lookahead slots without ids; then
                          pkv_seq_commit (no dedup: stable tables) of the blocks that became full
                          (verified ids only) unless delay_cache_blocks
    decode fast path      allocate_slots(req, 1) of a running request only
                          queues the token; the queue goes to the library in
                          one pkv_batch_append when anything reads state,
                          and the blocks it filled in one pkv_batch_commit
    free                  pkv_seq_free (an unknown request is a no-op)
    usage                 pkv_cache_capacity (cached-but-unused is free)
    take_events           pkv_events_drain -> BlockStored / BlockRemoved /
                          AllBlocksCleared, in order
    get_num_common_prefix_blocks   pkv_common_prefix_blocks

Block tables are stable (no commit dedup): a block id handed out for a
position stays there until the request is freed, as vLLM's device tables
assume.  Bad input raises: NoSuchRequest (a KeyError) for an unknown request
id outside free(), StaleHit (InvalidState) for a hit evicted between probe and
allocate, InvalidArgument for a request that needs more blocks than the pool
has; each leaves the manager unchanged.  allocate_slots returns None (and
changes nothing) when the blocks do not fit now.
"""
from array import array
from ctypes import byref, c_uint32, c_void_p, cast


from . import _accel, _lib
from .cache import Cache, _opts
from .errors import Corrupt, InvalidArgument, NotSupported, error_for
from .vllm_types import (EMPTY_BLOCKS, AllBlocksCleared, BlockRemoved,
                         BlockStored, EventsLost, KVCacheBlocks, NoSuchRequest,
                         PrefixCacheStats, PrefixStatsMixin, StaleHit, cache_salt, cdiv,
                         refused_append,
                         check_fits_pool, check_new_tokens, lora_id, token_ids)

__all__ = ["KVCacheManager", "KVCacheBlocks", "BlockStored", "BlockRemoved",
           "AllBlocksCleared", "EventsLost", "PrefixCacheStats",
           "NoSuchRequest", "StaleHit"]



class _PyReq:
    """What the manager mirrors of one request's sequence (the compiled
    module's ReqState has the same fields in C)."""
    __slots__ = ("seq", "known", "reserved", "n_blocks", "committed", "req",
                 "fast", "cap")

    def __init__(self, seq, req):
        self.seq = seq
        self.known = 0      # leading slots with token ids in the library
        self.reserved = 0   # slots reserved (known + lookahead)
        self.n_blocks = 0
        self.committed = 0  # tokens committed (their full blocks cached)
        self.req = req
        self.fast = 0       # known when known == reserved, else -1
        self.cap = 0        # n_blocks * block_size


class _PendingBlocks(KVCacheBlocks):
    """The new block of a queued decode step: resolved (one batch call for
    the whole queue) when the scheduler reads it."""
    __slots__ = ("_mgr", "_pos")

    def __init__(self, mgr, pos):
        self._mgr = mgr
        self._pos = pos
        self._ids = None

    @property
    def blocks(self):
        return self._resolve()

    def _resolve(self):
        if self._ids is None:
            self._mgr._flush()  # fills _ids of every queued step
        return self._ids

    def get_block_ids(self, allow_none=False):
        ids = self._ids
        if ids is None:
            ids = self._resolve()
        return ([ids[0][0]],)

    def __len__(self):
        return 1


def manager_setup(mgr, num_blocks, block_size, enable_caching,
                  enable_kv_cache_events, log_stats, options):
    """What KVCacheManager and vllm_groups.HybridKVCacheManager set up
    alike: the protocol's attributes and the cache (external storage: the
    manager hands out block ids), from the options ``event_queue_cap`` and
    ``policy``; any option left over is refused (InvalidArgument)."""
    qcap = options.pop("event_queue_cap", 4 * num_blocks + 1024)
    policy = options.pop("policy", "lru")
    if options:
        raise InvalidArgument("KVCacheManager: unknown options %s" % sorted(options))
    mgr.block_size = block_size
    mgr.num_blocks = num_blocks
    mgr.enable_caching = enable_caching
    mgr.enable_kv_cache_events = enable_kv_cache_events
    mgr.log_stats = log_stats
    mgr.prefix_cache_stats = PrefixCacheStats() if log_stats else None
    mgr.cache = Cache(n_layers=1, n_kv_heads=1, head_dim=1,
                      block_size=block_size, num_blocks=num_blocks,
                      storage="external", prefix_cache=enable_caching,
                      policy=policy,
                      event_queue_cap=qcap if enable_kv_cache_events else 0)
    mgr._p = mgr.cache._ptr


class KVCacheManager(PrefixStatsMixin):
    """vLLM v1's KV cache manager protocol on libpagedkv (one KV cache
    group).  ``num_blocks`` allocatable blocks of ``block_size`` tokens;
    options: ``policy`` (eviction policy name or pagedkv.Policy),
    ``event_queue_cap`` (default 4 * num_blocks + 1024), ``fastpath``
    (default: True when the compiled module pagedkv._fastpath is built;
    True without it raises NotSupported; False runs the Python decode path).
    """

    def __new__(cls, *args, **options):
        if options.get("kv_cache_groups") is not None and cls is KVCacheManager:
            from .vllm_groups import HybridKVCacheManager
            return HybridKVCacheManager(*args, **options)
        return super().__new__(cls)

    def __init__(self, num_blocks, block_size, enable_caching=True,
                 enable_kv_cache_events=False, log_stats=False, **options):
        options.pop("kv_cache_groups", None)  # None: one group
        for name in ("pkv_prefix_probe", "pkv_seq_append_ex", "pkv_batch_append",
                     "pkv_batch_commit"):
            _lib.serving(name)  # NotSupported from an older library
        fast = options.pop("fastpath", _accel.FAST is not None)
        if fast and _accel.FAST is None:
            raise NotSupported("KVCacheManager(fastpath=True): %s" % _accel.REASON)
        manager_setup(self, num_blocks, block_size, enable_caching,
                      enable_kv_cache_events, log_stats, options)
        self._reqs = {}        # request_id -> _Req
        self._by_seq = {}      # seq id -> _Req
        self._stored = {}      # (seq, index) -> token ids, until take_events
        # The decode queue (see allocate_slots' fast path).
        # Lists (list.append is about half the cost of array.append, and
        # this runs per request per step); arrays are made at the flush.
        self._pend_seq = []
        self._pend_tok = []
        self._last_seqs = []       # the last flushed _pend_seq, and as an array
        self._last_seq_arr = array("Q")
        self._pend_commit = []     # _Req whose tail block became full
        self._pend_blocks = []     # _PendingBlocks handed out for the queue
        self._avail_py = None      # free + evictable, net of the queue
        self._slots = array("q")   # pkv_batch_append's slot per queued step
        self._evbuf = (_lib.pkv_event * 256)()
        L = _lib.LIB
        self._f_probe = L.pkv_prefix_probe
        self._f_append = L.pkv_seq_append_ex
        self._f_commit = L.pkv_seq_commit
        self._f_bcommit = L.pkv_batch_commit
        self._f_batch = L.pkv_batch_append
        self._f_cap = L.pkv_cache_capacity
        self._f_drain = L.pkv_events_drain
        self._f_common = L.pkv_common_prefix_blocks
        self._u32 = c_uint32()
        if fast:
            # The decode fast path and its queue in C (_fastpath.c); the
            # same mirror, the same slow path.
            self._Req = _accel.FAST.ReqState
            self._fast = _accel.FAST.Allocator(
                mgr=self, reqs=self._reqs, slow=self._allocate, empty=EMPTY_BLOCKS,
                pending=_PendingBlocks, refresh=self._refresh_avail,
                block_size=block_size, caching=enable_caching,
                batch_append=cast(self._f_batch, c_void_p).value,
                batch_commit=cast(self._f_bcommit, c_void_p).value)
            self.allocate_slots = self._fast
        else:
            self._Req = _PyReq
            self._fast = None
            self.allocate_slots = self._make_allocate_slots()

    @property
    def _avail(self):
        """Free + evictable blocks net of the decode queue (None: unknown,
        ask the library when it matters)."""
        f = self._fast
        return self._avail_py if f is None else f.avail

    @_avail.setter
    def _avail(self, v):
        f = self._fast
        if f is None:
            self._avail_py = v
        else:
            f.avail = v

    def _refresh_avail(self):
        c = self._capacity()
        return c.free + c.evictable

    @property
    def fastpath(self):
        """True when allocate_slots' decode path runs in the compiled module."""
        return self._fast is not None

    # ---------------------------------------------------------- plumbing

    def _err(self, rc):
        return error_for(rc)

    def _capacity(self):
        c = _lib.pkv_capacity()
        rc = self._f_cap(self._p, byref(c))
        if rc < 0:
            raise self._err(rc)
        return c

    def _flush(self):
        """Sends the queued decode steps in one batch call, then commits the
        blocks they filled."""
        f = self._fast
        if f is not None:
            if f.n_pending or f.commits:
                if self.enable_kv_cache_events:
                    for r in f.commits:
                        self._remember_stored(r, r.known)
                rc = f.flush(self._p)  # one C call: batch append + commit
                if rc < 0:  # the budget said they fit: the mirror is wrong
                    self._avail = None
                    raise Corrupt("queued decode steps failed in the library: %s"
                                  % _lib.last_error())
            return
        n = len(self._pend_seq)
        if n:
            slots = self._slots
            if len(slots) < n:
                slots.extend([0] * (2 * n - len(slots)))
            pend = self._pend_seq
            if pend != self._last_seqs:  # a decode step usually repeats the last
                self._last_seqs = list(pend)
                self._last_seq_arr = array("Q", pend)
            seqs = self._last_seq_arr
            toks = array("i", self._pend_tok)
            # The slots say the blocks: slot = block * block_size + offset.
            rc = self._f_batch(self._p, seqs.buffer_info()[0], toks.buffer_info()[0],
                               n, slots.buffer_info()[0], None)
            del self._pend_seq[:]
            del self._pend_tok[:]
            if rc < 0:  # the budget said they fit: the mirror is wrong
                self._avail = None
                raise Corrupt("batch append of queued decode steps failed: %s"
                              % _lib.last_error())
            bs = self.block_size
            for pb in self._pend_blocks:
                pb._ids = ([slots[pb._pos] // bs],)
            self._pend_blocks.clear()
        if self._pend_commit:
            todo = list(self._pend_commit)
            self._pend_commit.clear()
            if len(todo) == 1:
                self._commit(todo[0], todo[0].known)
                return
            if self.enable_kv_cache_events:
                for r in todo:
                    self._remember_stored(r, r.known)
            seqs = array("Q", [r.seq for r in todo])
            ns = array("I", [r.known for r in todo])
            rc = self._f_bcommit(self._p, seqs.buffer_info()[0],
                                 ns.buffer_info()[0], len(todo), None)
            if rc < 0:  # each was checked against the mirror
                raise Corrupt("batch commit of filled blocks failed: %s"
                              % _lib.last_error())
            for r in todo:
                r.committed = r.known

    def _commit(self, r, n_tokens):
        if n_tokens <= r.committed:
            return
        if self.enable_kv_cache_events:
            self._remember_stored(r, n_tokens)
        # pkv_seq_commit = commit_ex without dedup on this cache (no
        # PKV_CACHE_COMMIT_DEDUP): stable tables, and half the ctypes cost.
        rc = self._f_commit(self._p, r.seq, n_tokens)
        if rc < 0:
            raise self._err(rc)
        r.committed = n_tokens

    def _remember_stored(self, r, n_tokens):
        """The token ids of the blocks a commit to n_tokens makes full, for
        the BlockStored events of take_events."""
        bs = self.block_size
        t = token_ids(r.req)
        for i in range(r.committed // bs, n_tokens // bs):
            self._stored[(r.seq, i)] = t[i * bs:(i + 1) * bs]

    def _get(self, request_id, what):
        r = self._reqs.get(request_id)
        if r is None:
            raise NoSuchRequest("%s: unknown request %r" % (what, request_id))
        return r

    def flush(self):
        """Sends queued decode steps to the library now (every method that
        reads state does it first; a server may call it at the end of its
        scheduling pass)."""
        self._flush()

    def check(self):
        """The library's full invariant check (Corrupt on a violation)."""
        self._flush()
        self.cache.check()

    # ---------------------------------------------------------- protocol

    @property
    def usage(self):
        self._flush()
        return self._capacity().usage

    def get_computed_blocks(self, request):
        """(blocks, num_computed_tokens): the longest cached prefix in full
        blocks, leaving at least the last token to compute.  Read-only."""
        self._flush()
        if not self.enable_caching:
            return EMPTY_BLOCKS, 0
        n = request.num_tokens
        hit = 0
        ids = []
        if n > 1:
            t = array("i", token_ids(request))
            salt, lora = cache_salt(request), lora_id(request)
            opts, keep = _opts(salt, lora, 0)
            cap = (n - 1) // self.block_size
            out = array("i", bytes(4 * cap))
            rc = self._f_probe(self._p, byref(opts) if opts else None,
                               t.buffer_info()[0], n, n - 1,
                               out.buffer_info()[0], cap, byref(self._u32))
            if rc < 0:
                raise self._err(rc)
            hit = self._u32.value
            ids = out[:hit // self.block_size].tolist()
        if self.log_stats:
            self.prefix_cache_stats.record(n, hit)
        return KVCacheBlocks((ids,)), hit

    def allocate_slots(self, request, num_new_tokens, num_new_computed_tokens=0,
                       new_computed_blocks=None, num_lookahead_tokens=0,
                       delay_cache_blocks=False):
        """Slots for num_new_tokens (+ lookahead) past the computed ones.
        Returns only the new blocks, or None (nothing changed) if they do
        not fit now.  (Each instance replaces this with the closure built
        by _make_allocate_slots, the same call with its decode fast path.)"""
        return self.__dict__["allocate_slots"](
            request, num_new_tokens, num_new_computed_tokens, new_computed_blocks,
            num_lookahead_tokens, delay_cache_blocks)

    def _make_allocate_slots(self):
        """allocate_slots as a closure over the manager's state (locals are
        cheaper than attribute look-ups; this runs once per request per step).

        Fast path: a running request decodes the one token it sampled (its id
        is known, nothing is reserved ahead).  It is queued and answered from
        the mirror; the queue goes to the library in one pkv_batch_append
        when anything reads state (_flush).  Whether it fits is exact: _avail
        counts free + evictable blocks net of the queue, and only this
        manager changes the pool."""
        reqs_get = self._reqs.get
        seq_append = self._pend_seq.append
        tok_append = self._pend_tok.append
        commit_append = self._pend_commit.append
        blocks_append = self._pend_blocks.append
        pend_seq = self._pend_seq
        bs = self.block_size
        caching = self.enable_caching
        slow = self._allocate
        empty = EMPTY_BLOCKS
        mgr = self

        def allocate_slots(request, num_new_tokens, num_new_computed_tokens=0,
                           new_computed_blocks=None, num_lookahead_tokens=0,
                           delay_cache_blocks=False):
            r = reqs_get(request.request_id)
            if (num_new_tokens == 1 and r is not None and new_computed_blocks is None
                    and not num_lookahead_tokens and not num_new_computed_tokens):
                known = r.fast  # r.known, or -1 while slots are reserved ahead
                if known == request.num_computed_tokens:
                    try:
                        tokens = request.all_token_ids
                    except AttributeError:
                        tokens = ()
                    if len(tokens) == known + 1:
                        if known < r.cap:  # the slot is in the tail block
                            seq_append(r.seq)
                            tok_append(tokens[known])
                            known += 1
                            r.known = r.reserved = r.fast = known
                            if known == r.cap and caching and not delay_cache_blocks:
                                commit_append(r)
                            return empty
                        if mgr._avail is None:
                            c = mgr._capacity()
                            mgr._avail = c.free + c.evictable
                        if mgr._avail <= 0:
                            return None
                        mgr._avail -= 1
                        seq_append(r.seq)
                        tok_append(tokens[known])
                        known += 1
                        r.known = r.reserved = r.fast = known
                        r.n_blocks += 1
                        r.cap += bs
                        if bs == 1 and caching and not delay_cache_blocks:
                            commit_append(r)
                        pb = _PendingBlocks(mgr, len(pend_seq) - 1)
                        blocks_append(pb)
                        return pb
            return slow(request, r, num_new_tokens, num_new_computed_tokens,
                        new_computed_blocks, num_lookahead_tokens,
                        delay_cache_blocks)
        return allocate_slots

    def _allocate(self, request, r, num_new_tokens, num_new_computed_tokens,
                  new_computed_blocks, num_lookahead_tokens, delay_cache_blocks):
        check_new_tokens(num_new_tokens, num_lookahead_tokens)
        self._flush()
        self._avail = None
        bs = self.block_size
        rid = request.request_id
        hit_ids = new_computed_blocks.get_block_ids()[0] if new_computed_blocks else []
        if len(hit_ids) * bs != num_new_computed_tokens:
            raise InvalidArgument(
                "allocate_slots: request %s: num_new_computed_tokens %d is not "
                "the %d hit blocks x %d" % (rid, num_new_computed_tokens,
                                            len(hit_ids), bs))
        if hit_ids and r is not None and r.reserved:
            raise InvalidArgument("allocate_slots: request %s already holds "
                                  "blocks; a prefix hit is for admission" % rid)
        computed = request.num_computed_tokens + num_new_computed_tokens
        need = computed + num_new_tokens + num_lookahead_tokens
        check_fits_pool(request, need, bs, self.num_blocks)
        tokens = token_ids(request)
        known0 = r.known if r is not None else 0
        new_known = max(known0, min(need, len(tokens)))
        reserved0 = r.reserved if r is not None else 0
        lookahead = need - new_known if need > new_known else 0
        new_ids = []
        if new_known > known0 or new_known + lookahead > reserved0:
            created = r is None
            if created:
                opts, keep = _opts(cache_salt(request), lora_id(request), 0)
                sid = _lib.pkv_seq_id()
                rc = _lib.LIB.pkv_seq_create(self._p, byref(opts) if opts else None,
                                             byref(sid))
                if rc < 0:
                    raise self._err(rc)
                r = self._Req(sid.value, request)
            t = array("i", tokens[known0:new_known])
            hb = array("i", hit_ids)
            cap = cdiv(need, bs) - r.n_blocks + 2
            out = array("i", bytes(4 * cap))
            req = _lib.pkv_append(
                tokens=t.buffer_info()[0] if len(t) else None, n_tokens=len(t),
                n_lookahead=lookahead,
                hit_blocks=hb.buffer_info()[0] if hit_ids else None,
                n_hit_blocks=len(hit_ids), new_blocks=out.buffer_info()[0],
                new_cap=cap)
            d = _lib.pkv_delta()
            rc = self._f_append(self._p, r.seq, byref(req), byref(d))
            if rc < 0:
                return refused_append(rc, _lib.last_error(), rid, hit_ids, lambda: created
                                      and _lib.LIB.pkv_seq_free(self._p, r.seq))
            if created:
                self._reqs[rid] = r
                self._by_seq[r.seq] = r
                if hit_ids:
                    r.committed = len(hit_ids) * bs
            r.req = request
            r.known, r.reserved = d.n_known, d.n_tokens
            r.fast = d.n_known if d.n_known == d.n_tokens else -1
            r.n_blocks = cdiv(d.n_tokens, bs)
            r.cap = r.n_blocks * bs
            new_ids = out[:d.n_new].tolist()
            if d.cow_index >= 0:  # not in vLLM's flow (tails are private)
                new_ids.append(d.cow_new)
        elif r is None:
            return EMPTY_BLOCKS
        if self.enable_caching and not delay_cache_blocks:
            self._commit(r, min(computed + num_new_tokens, request.num_tokens, r.known))
        return KVCacheBlocks((new_ids,)) if new_ids else EMPTY_BLOCKS

    def cache_blocks(self, request, num_computed_tokens):
        self._flush()
        r = self._get(request.request_id, "cache_blocks")
        r.req = request
        if self.enable_caching:
            self._commit(r, min(num_computed_tokens, r.known))

    def free(self, request):
        """Releases the request's blocks (tail first); unknown: no-op."""
        self._flush()
        r = self._reqs.pop(request.request_id, None)
        if r is None:
            return
        del self._by_seq[r.seq]
        self._avail = None
        rc = _lib.LIB.pkv_seq_free(self._p, r.seq)
        if rc < 0:
            raise self._err(rc)

    def reset_prefix_cache(self):
        """Drops the cached blocks; False (nothing done) while any block is
        in use."""
        self._flush()
        if self._capacity().in_use:
            return False
        self.cache.reset_prefix_cache()
        self._avail = None
        if self.log_stats:
            self.prefix_cache_stats.reset = True
        return True

    def get_num_common_prefix_blocks(self, running_request_id, num_running_requests):
        """[leading blocks shared by every request holding blocks] — 0 when
        num_running_requests is not that number (as vLLM, which cannot tell
        then)."""
        self._flush()
        self._get(running_request_id, "get_num_common_prefix_blocks")
        if num_running_requests != len(self._reqs):
            return [0]
        seqs = array("Q", self._by_seq.keys())
        rc = self._f_common(self._p, seqs.buffer_info()[0], len(seqs), byref(self._u32))
        if rc < 0:
            raise self._err(rc)
        return [self._u32.value]

    def get_block_ids(self, request_id):
        self._flush()
        r = self._get(request_id, "get_block_ids")
        out = array("i", bytes(4 * r.n_blocks))
        rc = _lib.LIB.pkv_seq_blocks(self._p, r.seq, out.buffer_info()[0],
                                     r.n_blocks, byref(self._u32))
        if rc < 0:
            raise self._err(rc)
        return (out.tolist(),)

    def take_events(self):
        """BlockStored / BlockRemoved / AllBlocksCleared since the last call,
        in order (consecutive blocks stored by one request are one
        BlockStored, as vLLM reports them)."""
        self._flush()
        return events_from_queue(self, lambda seq, index: (
            self._stored.get((seq, index), ()), None))


def events_from_queue(mgr, stored):
    """Drains mgr's library event queue into vLLM's event objects, in order;
    stored(seq, index) -> (token ids, group) of a block a commit stored
    (remembered at the commit).  Clears mgr._stored."""
    if not mgr.enable_kv_cache_events:
        return []
    out = []
    buf = mgr._evbuf
    n = mgr._u32
    pending = c_uint32()
    bs = mgr.block_size
    drain = _lib.LIB.pkv_events_drain
    last = None  # (seq, index) of the last stored block in out[-1]
    while True:
        rc = drain(mgr._p, buf, len(buf), byref(n), byref(pending))
        if rc < 0:
            raise error_for(rc, _lib.last_error())
        for i in range(n.value):
            e = buf[i]
            if e.type == 1:
                key = e.key.lo | (e.key.hi << 64)
                toks, group = stored(e.seq, e.index)
                if last == (e.seq, e.index - 1):
                    ev = out[-1]
                    ev.block_hashes.append(key)
                    ev.token_ids += list(toks)
                else:
                    par = e.parent.lo | (e.parent.hi << 64)
                    out.append(BlockStored(
                        block_hashes=[key],
                        parent_block_hash=par or None,  # 0: a chain's first
                        token_ids=list(toks), block_size=bs,
                        lora_id=e.adapter_id or None, group=group))
                last = (e.seq, e.index)
                continue
            last = None
            if e.type == 2:
                out.append(BlockRemoved(block_hashes=[e.key.lo | (e.key.hi << 64)]))
            elif e.type == 3:
                out.append(AllBlocksCleared())
            elif e.type == 5:
                out.append(EventsLost(e.n_lost))
        if pending.value == 0 or n.value == 0:
            break
    mgr._stored.clear()
    return out
