"""vllm_types — the objects vLLM v1's scheduler exchanges with its KV cache
manager, shared by pagedkv.vllm.KVCacheManager (on libpagedkv) and
pagedkv.vllm_pyref.PyKVCacheManager (pure Python, the benchmark's baseline).

Written from vLLM's public interface (names and meanings), not its code.
A request is any object with ``request_id``, ``all_token_ids`` (or
``prompt_token_ids`` + ``output_token_ids``), ``num_computed_tokens``,
``num_tokens``, and optionally ``cache_salt`` and ``lora_request`` (an
object with ``lora_int_id``, or an int).
"""
import dataclasses

from .errors import InvalidArgument, InvalidState, PagedKVError


class NoSuchRequest(PagedKVError, KeyError):
    """A request id the manager does not hold (outside free())."""
    code, name = -3, "unknown request"


class StaleHit(InvalidState):
    """allocate_slots got a hit from get_computed_blocks that no longer
    matches the cache (a block was evicted in between)."""


# ---------------------------------------------------------------- events

@dataclasses.dataclass
class BlockStored:
    block_hashes: list
    parent_block_hash: object  # None for a first block
    token_ids: list
    block_size: int
    lora_id: object = None
    medium: str = "GPU"
    group: object = None  # the KV cache group (hybrid managers), else None


@dataclasses.dataclass
class BlockRemoved:
    block_hashes: list
    medium: str = "GPU"


@dataclasses.dataclass
class AllBlocksCleared:
    pass


@dataclasses.dataclass
class EventsLost:
    """Not in vLLM: the library's event queue overflowed and this many
    events were dropped (size it with event_queue_cap)."""
    n_lost: int


@dataclasses.dataclass
class PrefixCacheStats:
    reset: bool = False
    requests: int = 0
    queries: int = 0
    hits: int = 0

    def record(self, num_tokens, num_hits):
        self.requests += 1
        self.queries += num_tokens
        self.hits += num_hits


class PrefixStatsMixin:
    """make_prefix_cache_stats(): the stats since the last call (then
    reset), or None without log_stats."""

    def make_prefix_cache_stats(self):
        if not self.log_stats:
            return None
        s, self.prefix_cache_stats = self.prefix_cache_stats, PrefixCacheStats()
        return s


# ---------------------------------------------------------------- blocks

class KVCacheBlocks:
    """The allocation result: ``get_block_ids()`` is a tuple with one list
    of block ids per KV cache group (one group here)."""
    __slots__ = ("_ids",)

    def __init__(self, ids):
        self._ids = ids  # tuple of lists

    @property
    def blocks(self):
        return self._ids

    def get_block_ids(self, allow_none=False):
        ids = self._ids
        if allow_none and not any(ids):
            return None
        return tuple(list(g) for g in ids)

    def __add__(self, other):
        return KVCacheBlocks(tuple(a + b for a, b in zip(self.get_block_ids(),
                                                         other.get_block_ids())))

    def __len__(self):
        return len(self._ids[0])

    def __repr__(self):
        return "KVCacheBlocks(%r)" % (self.get_block_ids(),)

    def __eq__(self, other):
        return (isinstance(other, KVCacheBlocks)
                and self.get_block_ids() == other.get_block_ids())


class _EmptyBlocks(KVCacheBlocks):
    """The shared result 'no new block' (most decode steps): immutable, and
    its get_block_ids is as cheap as it can be."""
    __slots__ = ()

    def get_block_ids(self, allow_none=False):
        return None if allow_none else ([],)

    def __len__(self):
        return 0


EMPTY_BLOCKS = _EmptyBlocks(((),))


# ---------------------------------------------------------------- requests

class Request:
    """The request fields the manager reads, for callers without vLLM's own
    Request (tests, benchmarks, a scheduler of one's own)."""

    def __init__(self, rid, prompt, salt=None, lora=None):
        self.request_id = rid
        self.prompt_token_ids = list(prompt)
        self.output_token_ids = []
        self.all_token_ids = list(prompt)
        self.num_computed_tokens = 0
        self.cache_salt = salt
        self.lora_request = lora

    @property
    def num_tokens(self):
        return len(self.all_token_ids)

    def sample(self, *toks):
        """Appends generated tokens (what the model sampled)."""
        self.output_token_ids += toks
        self.all_token_ids += toks


def token_ids(request):
    t = getattr(request, "all_token_ids", None)
    if t is None:
        t = list(request.prompt_token_ids) + list(request.output_token_ids)
    return t


def lora_id(request):
    lr = getattr(request, "lora_request", None)
    if lr is None:
        return 0
    if isinstance(lr, int):
        return lr
    return int(getattr(lr, "lora_int_id", 0) or 0)


def cache_salt(request):
    s = getattr(request, "cache_salt", None)
    if s is None:
        return b""
    return s.encode() if isinstance(s, str) else bytes(s)


def cdiv(a, b):
    return -(-a // b)


def check_new_tokens(num_new_tokens, num_lookahead_tokens):
    if num_new_tokens <= 0:
        raise InvalidArgument("allocate_slots: num_new_tokens must be > 0, "
                              "got %d" % num_new_tokens)
    if num_lookahead_tokens < 0:
        raise InvalidArgument("allocate_slots: num_lookahead_tokens < 0")


def check_fits_pool(request, need_tokens, block_size, num_blocks):
    """A request that needs more blocks than the whole pool can never be
    scheduled: that is a bad argument, not a None (which means 'later')."""
    need = cdiv(need_tokens, block_size)
    if need > num_blocks:
        raise InvalidArgument(
            "allocate_slots: request %s needs %d slots = %d blocks (lookahead "
            "included), the pool has %d" % (request.request_id, need_tokens,
                                            need, num_blocks))


def refused_append(rc, err, rid, has_hit, undo):
    """After an allocation the library refused (rc < 0, detail err): undo()
    drops what the call created; None when the blocks do not fit now
    (PKV_ENOMEM), else the exception (StaleHit for a hit evicted since the
    probe)."""
    undo()
    if rc == -2:  # PKV_ENOMEM
        return None
    if rc == -6 and has_hit:  # PKV_ESTATE
        raise StaleHit("allocate_slots: request %s: hit block no longer "
                       "cached (%s)" % (rid, err))
    from .errors import error_for
    raise error_for(rc, err)
