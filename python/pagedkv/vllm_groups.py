"""vllm_groups — vLLM's KV cache manager protocol for hybrid models: several
KV cache groups (full attention and sliding windows, as Gemma 2/3, Mistral
or gpt-oss mix them) over one block pool, on the library's groups API
(include/pagedkv/groups.h).

    KVCacheManager(num_blocks=, block_size=, kv_cache_groups=[("full", 0),
                   ("sliding", 1024)], max_model_len=32768, ...)

returns a HybridKVCacheManager (pagedkv.vllm.KVCacheManager dispatches on
``kv_cache_groups``).  Every method keeps the single-group meaning, per
group:

    get_computed_blocks   pkv_groups_probe: the longest hit every group can
                          serve (full: all blocks; sliding window W: the
                          blocks of the last W tokens), read-only; the
                          blocks, one list per group, -1 where a sliding
                          group needs none (vLLM's null block)
    allocate_slots        pkv_groups_append_ex: the hit (re-verified), known
                          ids, lookahead slots, in every group or none; the
                          new blocks per group; then pkv_groups_commit of
                          the verified tokens unless delay_cache_blocks (a
                          sliding group releases the blocks that left its
                          window: cached, evictable)
    free                  pkv_groups_seq_free (unknown: no-op)
    get_block_ids         per group, in absolute positions: -1 for the
                          blocks a sliding group released
    get_num_common_prefix_blocks   per group: full groups as the library's
                          pkv_common_prefix_blocks, sliding groups 0

usage, take_events (BlockStored carry the group), reset_prefix_cache,
make_prefix_cache_stats as the single-group manager; take_copies() hands
out the copy-on-write copies the device must make (a queued copy holds its
blocks until taken).  No decode fast path:
every call is one library call (the compiled fast path is single-group).
"""
from array import array
from ctypes import Structure, byref, c_uint32

from . import _lib
from .cache import _opts
from .errors import InvalidArgument, error_for
from .vllm import manager_setup
from .vllm_types import (EMPTY_BLOCKS, KVCacheBlocks, NoSuchRequest, PrefixStatsMixin,
                         cache_salt, cdiv, check_new_tokens, refused_append,
                         lora_id, token_ids)

KINDS = {"full": 0, "sliding": 1}


class _Delta(Structure):
    """pkv_delta as an array element (the library writes n_groups of them
    back to back: no trailing room, unlike _lib.pkv_delta)."""
    _fields_ = [f for f in _lib.pkv_delta._fields_ if f[0] != "_room"]


class _GReq:
    """The mirror of one request: its sequence per group (absolute lengths,
    equal in every group)."""
    __slots__ = ("ids", "known", "reserved", "committed", "req")

    def __init__(self, ids, req):
        self.ids = ids
        self.known = self.reserved = self.committed = 0
        self.req = req


class HybridKVCacheManager(PrefixStatsMixin):
    """vLLM v1's KV cache manager protocol with several KV cache groups
    (see the module text).  ``kv_cache_groups``: [(kind, window)] with kind
    "full" (window 0) or "sliding" (window W >= 1 tokens);
    ``max_model_len``: the longest request (tokens)."""

    def __init__(self, num_blocks, block_size, enable_caching=True,
                 enable_kv_cache_events=False, log_stats=False, **options):
        specs = options.pop("kv_cache_groups")
        max_len = options.pop("max_model_len", None)
        if not specs:
            raise InvalidArgument("kv_cache_groups: at least one group")
        if max_len is None:
            raise InvalidArgument("kv_cache_groups needs max_model_len")
        options.pop("fastpath", None)  # single-group only; nothing to choose
        manager_setup(self, num_blocks, block_size, enable_caching,
                      enable_kv_cache_events, log_stats, options)
        self.max_model_len = max_len
        self.specs = [(k, int(w)) for k, w in specs]
        self.n_groups = ng = len(self.specs)
        arr = (_lib.pkv_group_spec * ng)()
        for i, (kind, w) in enumerate(self.specs):
            if kind not in KINDS:
                raise InvalidArgument("kv_cache_groups[%d]: kind %r (full, sliding)"
                                      % (i, kind))
            arr[i].kind, arr[i].window = KINDS[kind], w
        from ctypes import c_void_p
        g = c_void_p()
        rc = _lib.serving("pkv_groups_create")(self._p, arr, ng, max_len, byref(g))
        if rc < 0:
            raise error_for(rc, _lib.last_error())
        self._g = g.value
        self._reqs = {}
        self._by_seq = {}   # seq id -> (_GReq, group)
        self._stored = {}   # (seq, table index) -> token ids, until take_events
        self._u32 = c_uint32()
        self._evbuf = (_lib.pkv_event * 256)()
        self._L = _lib.LIB

    def __del__(self):
        g, self._g = getattr(self, "_g", None), None
        if g:
            _lib.LIB.pkv_groups_destroy(g)

    # ------------------------------------------------------------ plumbing

    def _get(self, request_id, what):
        r = self._reqs.get(request_id)
        if r is None:
            raise NoSuchRequest("%s: unknown request %r" % (what, request_id))
        return r

    def _first_block(self, r, g):
        n = self._u32
        rc = self._L.pkv_groups_first_pos(self._g, r.ids, g, byref(n))
        if rc < 0:
            raise error_for(rc, _lib.last_error())
        return n.value // self.block_size

    def _commit(self, r, n_tokens):
        if n_tokens <= r.committed:
            return
        if self.enable_kv_cache_events:
            bs = self.block_size
            t = token_ids(r.req)
            for g in range(self.n_groups):  # table index at commit time
                base = self._first_block(r, g)
                for i in range(max(r.committed // bs, base), n_tokens // bs):
                    self._stored[(r.ids[g], i - base)] = (t[i * bs:(i + 1) * bs], g)
        rc = self._L.pkv_groups_commit(self._g, r.ids, n_tokens)
        if rc < 0:
            raise error_for(rc, _lib.last_error())
        r.committed = n_tokens

    def check(self):
        self.cache.check()

    def flush(self):
        """Nothing is queued here (every call reaches the library)."""

    # ------------------------------------------------------------ protocol

    @property
    def usage(self):
        c = _lib.pkv_capacity()
        rc = self._L.pkv_cache_capacity(self._p, byref(c))
        if rc < 0:
            raise error_for(rc, _lib.last_error())
        return c.usage

    def get_computed_blocks(self, request):
        ng = self.n_groups
        if not self.enable_caching:
            return KVCacheBlocks(tuple([] for _ in range(ng))), 0
        n = request.num_tokens
        hit, ids = 0, [[] for _ in range(ng)]
        if n > 1:
            t = array("i", token_ids(request))
            opts, keep = _opts(cache_salt(request), lora_id(request), 0)
            cap = (n - 1) // self.block_size
            out = array("i", bytes(4 * cap * ng))
            rc = self._L.pkv_groups_probe(self._g, byref(opts) if opts else None,
                                          t.buffer_info()[0], n, n - 1,
                                          out.buffer_info()[0] if cap else None, cap,
                                          byref(self._u32))
            if rc < 0:
                raise error_for(rc, _lib.last_error())
            hit = self._u32.value
            hb = hit // self.block_size
            ids = [out[g * cap:g * cap + hb].tolist() for g in range(ng)]
        if self.log_stats:
            self.prefix_cache_stats.record(n, hit)
        return KVCacheBlocks(tuple(ids)), hit

    def allocate_slots(self, request, num_new_tokens, num_new_computed_tokens=0,
                       new_computed_blocks=None, num_lookahead_tokens=0,
                       delay_cache_blocks=False):
        check_new_tokens(num_new_tokens, num_lookahead_tokens)
        bs, ng = self.block_size, self.n_groups
        rid = request.request_id
        r = self._reqs.get(rid)
        hit = new_computed_blocks.get_block_ids() if new_computed_blocks else None
        nh = len(hit[0]) if hit else 0
        if hit and (len(hit) != ng or any(len(h) != nh for h in hit)):
            raise InvalidArgument("allocate_slots: request %s: the hit has %d groups "
                                  "of unequal lengths, %d expected" % (rid, len(hit), ng))
        if nh * bs != num_new_computed_tokens:
            raise InvalidArgument(
                "allocate_slots: request %s: num_new_computed_tokens %d is not "
                "the %d hit blocks x %d" % (rid, num_new_computed_tokens, nh, bs))
        if nh and r is not None and r.reserved:
            raise InvalidArgument("allocate_slots: request %s already holds "
                                  "blocks; a prefix hit is for admission" % rid)
        computed = request.num_computed_tokens + num_new_computed_tokens
        need = computed + num_new_tokens + num_lookahead_tokens
        if need > self.max_model_len:
            raise InvalidArgument("allocate_slots: request %s needs %d slots, "
                                  "max_model_len is %d" % (rid, need, self.max_model_len))
        n_full = sum(k == "full" for k, _ in self.specs)
        if n_full * cdiv(need, bs) > self.num_blocks:  # can never fit
            raise InvalidArgument(
                "allocate_slots: request %s needs %d slots = %d blocks in each of "
                "%d full groups, the pool has %d" % (rid, need, cdiv(need, bs), n_full,
                                                     self.num_blocks))
        tokens = token_ids(request)
        known0 = r.known if r is not None else 0
        new_known = max(known0, min(need, len(tokens)))
        reserved0 = r.reserved if r is not None else 0
        lookahead = need - new_known if need > new_known else 0
        if not (new_known > known0 or new_known + lookahead > reserved0):
            if r is None:
                return EMPTY_BLOCKS
            new = None
        else:
            created = r is None
            if created:
                opts, keep = _opts(cache_salt(request), lora_id(request), 0)
                ids = (_lib.pkv_seq_id * ng)()
                rc = self._L.pkv_groups_seq_create(self._g, byref(opts) if opts else None, ids)
                if rc < 0:
                    raise error_for(rc, _lib.last_error())
                r = _GReq(ids, request)
            t = array("i", tokens[known0:new_known])
            hb = array("i", [b for h in hit for b in h]) if nh else None
            cap = cdiv(need, bs) + 2
            out = array("i", bytes(4 * cap * ng))
            deltas = (_Delta * ng)()
            req = _lib.pkv_append(
                tokens=t.buffer_info()[0] if len(t) else None, n_tokens=len(t),
                n_lookahead=lookahead, hit_blocks=hb.buffer_info()[0] if nh else None,
                n_hit_blocks=nh, new_blocks=out.buffer_info()[0], new_cap=cap)
            rc = self._L.pkv_groups_append_ex(self._g, r.ids, byref(req), deltas)
            if rc < 0:
                return refused_append(rc, _lib.last_error(), rid, nh, lambda: created
                                      and self._L.pkv_groups_seq_free(self._g, r.ids))
            if created:
                self._reqs[rid] = r
                for g in range(ng):
                    self._by_seq[r.ids[g]] = (r, g)
                if nh:
                    r.committed = nh * bs
            r.req = request
            r.known, r.reserved = deltas[0].n_known, deltas[0].n_tokens
            new = []
            for g in range(ng):
                ids_g = out[g * cap:g * cap + deltas[g].n_new].tolist()
                if deltas[g].cow_index >= 0:
                    ids_g.append(deltas[g].cow_new)
                new.append(ids_g)
        if self.enable_caching and not delay_cache_blocks:
            self._commit(r, min(computed + num_new_tokens, request.num_tokens, r.known))
        if new is None or not any(new):
            return EMPTY_BLOCKS if ng == 1 else KVCacheBlocks(tuple([] for _ in range(ng)))
        return KVCacheBlocks(tuple(new))

    def cache_blocks(self, request, num_computed_tokens):
        r = self._get(request.request_id, "cache_blocks")
        r.req = request
        if self.enable_caching:
            self._commit(r, min(num_computed_tokens, r.known))

    def free(self, request):
        r = self._reqs.pop(request.request_id, None)
        if r is None:
            return
        for g in range(self.n_groups):
            del self._by_seq[r.ids[g]]
        rc = self._L.pkv_groups_seq_free(self._g, r.ids)
        if rc < 0:
            raise error_for(rc, _lib.last_error())

    def get_block_ids(self, request_id):
        r = self._get(request_id, "get_block_ids")
        out = []
        for g in range(self.n_groups):
            base = self._first_block(r, g)
            n = cdiv(r.reserved, self.block_size) - base
            buf = array("i", bytes(4 * max(n, 0)))
            rc = self._L.pkv_seq_blocks(self._p, r.ids[g], buf.buffer_info()[0] if n else None,
                                        max(n, 0), byref(self._u32))
            if rc < 0:
                raise error_for(rc, _lib.last_error())
            out.append([-1] * base + buf[:self._u32.value].tolist())
        return tuple(out)

    def get_num_common_prefix_blocks(self, running_request_id, num_running_requests):
        self._get(running_request_id, "get_num_common_prefix_blocks")
        if num_running_requests != len(self._reqs):
            return [0] * self.n_groups
        out = []
        for g, (kind, _) in enumerate(self.specs):
            if kind != "full":
                out.append(0)
                continue
            seqs = array("Q", [r.ids[g] for r in self._reqs.values()])
            rc = self._L.pkv_common_prefix_blocks(self._p, seqs.buffer_info()[0],
                                                  len(seqs), byref(self._u32))
            if rc < 0:
                raise error_for(rc, _lib.last_error())
            out.append(self._u32.value)
        return out

    def reset_prefix_cache(self):
        c = _lib.pkv_capacity()
        self._L.pkv_cache_capacity(self._p, byref(c))
        if c.in_use:
            return False
        self.cache.reset_prefix_cache()
        if self.log_stats:
            self.prefix_cache_stats.reset = True
        return True

    def take_copies(self):
        """The block copies the device must make before its next kernel
        (copy-on-write of a shared partial tail, which a group's append can
        meet): Copy(src_block, dst_block, n_slots, src_slot, dst_slot),
        oldest first.  Until taken, a queued copy holds both blocks (they
        count as in use)."""
        return self.cache.drain_copies()

    def take_events(self):
        from .vllm import events_from_queue
        return events_from_queue(self, lambda seq, index: self._stored.get((seq, index),
                                                                          ((), None)))


__all__ = ["HybridKVCacheManager", "KINDS"]
