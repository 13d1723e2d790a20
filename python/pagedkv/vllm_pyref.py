"""vllm_pyref — a pure-Python KV cache manager of vLLM v1's protocol.

The baseline of bench/bench_vllm.py and the second implementation the
protocol tests run against.  It is organised the way vLLM's own manager is
(written from its documented design, not its code): block objects with a
refcount and an optional hash; a doubly linked free-block queue whose head
is the next block to hand out (evicting its hash if it was cached) and whose
tail receives freed blocks, a request's tail first; a dict from block hash
to cached blocks; per-request block lists and cached-block counts; chained
block hashes per request (parent hash, token ids, extra keys: LoRA id and,
in the first block, the cache salt), computed as blocks fill.

Same constructor and methods as pagedkv.vllm.KVCacheManager.
"""
from .vllm_types import (AllBlocksCleared, BlockRemoved,
                         BlockStored, KVCacheBlocks, NoSuchRequest,
                         PrefixCacheStats, PrefixStatsMixin, StaleHit, cache_salt, cdiv,
                         check_fits_pool, check_new_tokens, lora_id, token_ids)

NONE_HASH = hash("pagedkv-pyref-root")


class KVCacheBlock:
    __slots__ = ("block_id", "ref_cnt", "block_hash", "prev_free", "next_free")

    def __init__(self, block_id):
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash = None
        self.prev_free = None
        self.next_free = None


class FreeKVCacheBlockQueue:
    """Doubly linked list of free blocks (refcount 0, cached or not)."""

    def __init__(self, blocks):
        self.num_free_blocks = len(blocks)
        self.head = KVCacheBlock(-1)
        self.tail = KVCacheBlock(-1)
        prev = self.head
        for b in blocks:
            prev.next_free = b
            b.prev_free = prev
            prev = b
        prev.next_free = self.tail
        self.tail.prev_free = prev

    def popleft(self):
        b = self.head.next_free
        if b is self.tail:
            raise ValueError("no free block")
        self.remove(b)
        return b

    def popleft_n(self, n):
        return [self.popleft() for _ in range(n)]

    def remove(self, b):
        b.prev_free.next_free = b.next_free
        b.next_free.prev_free = b.prev_free
        b.prev_free = b.next_free = None
        self.num_free_blocks -= 1

    def append(self, b):
        last = self.tail.prev_free
        last.next_free = b
        b.prev_free = last
        b.next_free = self.tail
        self.tail.prev_free = b
        self.num_free_blocks += 1

    def append_n(self, blocks):
        for b in blocks:
            self.append(b)


class BlockPool:
    def __init__(self, num_blocks, enable_caching, enable_kv_cache_events):
        self.num_blocks = num_blocks
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.free_block_queue = FreeKVCacheBlockQueue(self.blocks)
        self.cached_block_hash_to_block = {}  # hash -> {block_id: block}
        self.enable_caching = enable_caching
        self.enable_kv_cache_events = enable_kv_cache_events
        self.kv_event_queue = []

    def get_cached_block(self, block_hash):
        d = self.cached_block_hash_to_block.get(block_hash)
        if not d:
            return None
        return next(iter(d.values()))

    def cache_full_blocks(self, blocks, block_hashes, num_cached_blocks,
                          num_full_blocks, block_size, tokens, lora):
        if num_cached_blocks >= num_full_blocks:
            return
        new_full = blocks[num_cached_blocks:num_full_blocks]
        new_hashes = []
        for i, blk in enumerate(new_full):
            h = block_hashes[num_cached_blocks + i]
            blk.block_hash = h
            self.cached_block_hash_to_block.setdefault(h, {})[blk.block_id] = blk
            new_hashes.append(h)
        if self.enable_kv_cache_events:
            parent = (block_hashes[num_cached_blocks - 1]
                      if num_cached_blocks > 0 else None)
            self.kv_event_queue.append(BlockStored(
                block_hashes=new_hashes, parent_block_hash=parent,
                token_ids=list(tokens[num_cached_blocks * block_size:
                                      num_full_blocks * block_size]),
                block_size=block_size, lora_id=lora or None))

    def get_new_blocks(self, n):
        if n > self.free_block_queue.num_free_blocks:
            raise ValueError("cannot get %d free blocks" % n)
        ret = self.free_block_queue.popleft_n(n)
        for b in ret:
            if self.enable_caching:
                self._maybe_evict_cached_block(b)
            b.ref_cnt += 1
        return ret

    def _maybe_evict_cached_block(self, b):
        h = b.block_hash
        if h is None:
            return False
        d = self.cached_block_hash_to_block.get(h)
        if d is None or d.pop(b.block_id, None) is None:
            return False
        if not d:
            del self.cached_block_hash_to_block[h]
        b.block_hash = None
        if self.enable_kv_cache_events:
            self.kv_event_queue.append(BlockRemoved(block_hashes=[h]))
        return True

    def touch(self, blocks):
        for b in blocks:
            if b.ref_cnt == 0:
                self.free_block_queue.remove(b)
            b.ref_cnt += 1

    def free_blocks(self, ordered):
        for b in ordered:
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                self.free_block_queue.append(b)

    def reset_prefix_cache(self):
        if self.num_blocks - self.free_block_queue.num_free_blocks > 0:
            return False
        self.cached_block_hash_to_block = {}
        for b in self.blocks:
            b.block_hash = None
        if self.enable_kv_cache_events:
            self.kv_event_queue.append(AllBlocksCleared())
        return True

    def get_num_free_blocks(self):
        return self.free_block_queue.num_free_blocks

    def get_usage(self):
        return 1.0 - self.get_num_free_blocks() / self.num_blocks

    def take_events(self):
        ev, self.kv_event_queue = self.kv_event_queue, []
        return ev


class FullAttentionManager:
    """Per-request block lists of one KV cache group."""

    def __init__(self, block_pool, block_size):
        self.block_pool = block_pool
        self.block_size = block_size
        self.req_to_blocks = {}
        self.num_cached_block = {}

    def find_longest_cache_hit(self, block_hashes, max_length):
        hit = []
        for h in block_hashes[:max_length // self.block_size]:
            b = self.block_pool.get_cached_block(h)
            if b is None:
                break
            hit.append(b)
        return hit

    def get_num_blocks_to_allocate(self, request_id, num_tokens, new_computed):
        have = len(self.req_to_blocks.get(request_id, ()))
        num_new = cdiv(num_tokens, self.block_size) - len(new_computed) - have
        num_evictable = sum(1 for b in new_computed if b.ref_cnt == 0)
        return max(num_new, 0) + num_evictable

    def save_new_computed_blocks(self, request_id, new_computed):
        if request_id not in self.num_cached_block:
            self.block_pool.touch(new_computed)
            self.req_to_blocks.setdefault(request_id, []).extend(new_computed)
            self.num_cached_block[request_id] = len(new_computed)

    def allocate_new_blocks(self, request_id, num_tokens):
        req_blocks = self.req_to_blocks.setdefault(request_id, [])
        self.num_cached_block.setdefault(request_id, 0)
        n = cdiv(num_tokens, self.block_size) - len(req_blocks)
        if n <= 0:
            return []
        new = self.block_pool.get_new_blocks(n)
        req_blocks.extend(new)
        return new

    def cache_blocks(self, request, block_hashes, num_tokens, tokens, lora):
        rid = request.request_id
        num_cached = self.num_cached_block.get(rid, 0)
        num_full = num_tokens // self.block_size
        if num_full <= num_cached:
            return
        self.block_pool.cache_full_blocks(
            self.req_to_blocks[rid], block_hashes, num_cached, num_full,
            self.block_size, tokens, lora)
        self.num_cached_block[rid] = num_full

    def free(self, request_id):
        blocks = self.req_to_blocks.pop(request_id, [])
        self.block_pool.free_blocks(reversed(blocks))
        self.num_cached_block.pop(request_id, None)

    def get_num_common_prefix_blocks(self, request_id, num_running):
        n = 0
        for b in self.req_to_blocks.get(request_id, ()):
            if b.ref_cnt != num_running:
                break
            n += 1
        return n

    def remove_skipped_blocks(self, request_id, num_computed_tokens):
        """Full attention skips no token (a sliding-window group would free
        the blocks that left its window here)."""
        return


class KVCacheCoordinator:
    """Fans each operation out to the per-group managers (one group here),
    as vLLM's coordinator does for hybrid models."""

    def __init__(self, block_pool, block_size):
        self.block_pool = block_pool
        self.managers = (FullAttentionManager(block_pool, block_size),)

    def find_longest_cache_hit(self, block_hashes, max_length):
        return tuple(m.find_longest_cache_hit(block_hashes, max_length)
                     for m in self.managers)

    def remove_skipped_blocks(self, request_id, num_computed_tokens):
        for m in self.managers:
            m.remove_skipped_blocks(request_id, num_computed_tokens)

    def get_num_blocks_to_allocate(self, request_id, num_tokens, new_computed):
        return sum(m.get_num_blocks_to_allocate(request_id, num_tokens, new_computed[i])
                   for i, m in enumerate(self.managers))

    def save_new_computed_blocks(self, request_id, new_computed):
        for i, m in enumerate(self.managers):
            m.save_new_computed_blocks(request_id, new_computed[i])

    def allocate_new_blocks(self, request_id, num_tokens):
        return tuple(m.allocate_new_blocks(request_id, num_tokens)
                     for m in self.managers)

    def cache_blocks(self, request, num_tokens, hashes_fn):
        for m in self.managers:
            if num_tokens // m.block_size > m.num_cached_block.get(request.request_id, 0):
                tokens = token_ids(request)
                m.cache_blocks(request, hashes_fn(request, tokens), num_tokens,
                               tokens, lora_id(request))

    def free(self, request_id):
        for m in self.managers:
            m.free(request_id)

    def get_blocks(self, request_id):
        return tuple(m.req_to_blocks.get(request_id) for m in self.managers)


class PyKVCacheBlocks(KVCacheBlocks):
    """vLLM's allocation result: block objects per group."""
    __slots__ = ()

    def get_block_ids(self, allow_none=False):
        if allow_none and all(len(g) == 0 for g in self._ids):
            return None
        return tuple([b.block_id for b in g] for g in self._ids)


class PyKVCacheManager(PrefixStatsMixin):
    def __init__(self, num_blocks, block_size, enable_caching=True,
                 enable_kv_cache_events=False, log_stats=False,
                 max_model_len=1 << 30, **options):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_model_len = max_model_len
        self.enable_caching = enable_caching
        self.log_stats = log_stats
        self.block_pool = BlockPool(num_blocks, enable_caching,
                                    enable_kv_cache_events)
        self.coordinator = KVCacheCoordinator(self.block_pool, block_size)
        self.manager = self.coordinator.managers[0]
        self.prefix_cache_stats = PrefixCacheStats() if log_stats else None
        self.empty_kv_cache_blocks = PyKVCacheBlocks(((),))
        self._hashes = {}  # request_id -> chained block hashes so far

    def create_kv_cache_blocks(self, blocks):
        return PyKVCacheBlocks(blocks) if any(blocks) else self.empty_kv_cache_blocks

    # ---------------------------------------------------------- hashing

    def _block_hashes(self, request, tokens=None):
        rid = request.request_id
        hs = self._hashes.get(rid)
        if hs is None:
            hs = self._hashes[rid] = []
        if tokens is None:
            tokens = token_ids(request)
        bs = self.block_size
        n_full = len(tokens) // bs
        if len(hs) < n_full:
            lora = lora_id(request)
            salt = cache_salt(request)
            parent = hs[-1] if hs else NONE_HASH
            for i in range(len(hs), n_full):
                extra = (lora, salt) if i == 0 else (lora,)
                parent = hash((parent, tuple(tokens[i * bs:(i + 1) * bs]), extra))
                hs.append(parent)
        return hs

    # ---------------------------------------------------------- protocol

    @property
    def usage(self):
        return self.block_pool.get_usage()

    def get_computed_blocks(self, request):
        if not self.enable_caching:
            return self.empty_kv_cache_blocks, 0
        hashes = self._block_hashes(request)
        hit = self.coordinator.find_longest_cache_hit(hashes, request.num_tokens - 1)
        n = len(hit[0]) * self.block_size
        if self.log_stats:
            self.prefix_cache_stats.record(request.num_tokens, n)
        return self.create_kv_cache_blocks(hit), n

    def allocate_slots(self, request, num_new_tokens, num_new_computed_tokens=0,
                       new_computed_blocks=None, num_lookahead_tokens=0,
                       delay_cache_blocks=False):
        check_new_tokens(num_new_tokens, num_lookahead_tokens)
        rid = request.request_id
        pool = self.block_pool
        if new_computed_blocks is None:
            hit = self.empty_kv_cache_blocks.blocks
        elif isinstance(new_computed_blocks, PyKVCacheBlocks):
            hit = new_computed_blocks.blocks
        else:
            hit = tuple([pool.blocks[i] for i in g]
                        for g in new_computed_blocks.get_block_ids())
        if hit[0]:
            hashes = self._block_hashes(request)
            for i, b in enumerate(hit[0]):
                if b.block_hash is None or b.block_hash != hashes[i]:
                    raise StaleHit("allocate_slots: request %s: hit block %d "
                                   "(position %d) is no longer cached"
                                   % (rid, b.block_id, i))
        num_computed = request.num_computed_tokens + num_new_computed_tokens
        need = min(num_computed + num_new_tokens + num_lookahead_tokens,
                   self.max_model_len)
        check_fits_pool(request, need, self.block_size, self.num_blocks)
        self.coordinator.remove_skipped_blocks(rid, num_computed)
        n_alloc = self.coordinator.get_num_blocks_to_allocate(rid, need, hit)
        if n_alloc > pool.get_num_free_blocks():
            return None
        if hit[0]:
            self.coordinator.save_new_computed_blocks(rid, hit)
        new = self.coordinator.allocate_new_blocks(rid, need)
        if self.enable_caching and not delay_cache_blocks:
            self.coordinator.cache_blocks(
                request, min(num_computed + num_new_tokens, request.num_tokens),
                self._block_hashes)
        return self.create_kv_cache_blocks(new)

    def cache_blocks(self, request, num_computed_tokens):
        if request.request_id not in self.manager.req_to_blocks:
            raise NoSuchRequest("cache_blocks: unknown request %r" % (request.request_id,))
        self.coordinator.cache_blocks(request, min(num_computed_tokens, request.num_tokens),
                                      self._block_hashes)

    def free(self, request):
        self.manager.free(request.request_id)
        self._hashes.pop(request.request_id, None)

    def reset_prefix_cache(self):
        ok = self.block_pool.reset_prefix_cache()
        if ok and self.log_stats:
            self.prefix_cache_stats.reset = True
        return ok

    def get_num_common_prefix_blocks(self, running_request_id, num_running_requests):
        if running_request_id not in self.manager.req_to_blocks:
            raise NoSuchRequest("get_num_common_prefix_blocks: unknown request %r"
                                % (running_request_id,))
        return [self.manager.get_num_common_prefix_blocks(running_request_id,
                                                          num_running_requests)]

    def get_block_ids(self, request_id):
        blocks = self.coordinator.get_blocks(request_id)
        if blocks[0] is None:
            raise NoSuchRequest("get_block_ids: unknown request %r" % (request_id,))
        return PyKVCacheBlocks(blocks).get_block_ids()

    def take_events(self):
        return self.block_pool.take_events()
