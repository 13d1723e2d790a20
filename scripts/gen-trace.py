#!/usr/bin/python3
"""gen-trace.py — synthetic KV-cache traces in the Mooncake JSONL format.

Writes one request per line, in arrival order:

    {"timestamp": ms, "input_length": tokens, "output_length": tokens,
     "hash_ids": [one id per 512-token block of the prompt]}

Ids are chained prefix hashes, as in Mooncake's traces: a block's id stands
for the whole prompt up to and including that block, so two prompts share
exactly the ids of their common 512-token-aligned prefix.  A prompt is a
list of segments (system prompt, document, user turn, tool output, ...),
each a unique piece of content with a length in tokens; a block's id is
looked up in a trie keyed by (parent id, the segment pieces the block
covers), so equal prefixes get equal ids and anything else gets new ones.
A partial last block is its own content (its id changes when the prompt
grows past it).

Families (--family):

  chat   multi-turn chat: sessions arrive as a Poisson process, pick one of
         a few system prompts (Zipf popularity), and send 1..30 turns
         (geometric, mean 5); each turn's prompt is the whole conversation
         so far plus a new user message, and the answer joins the context
         of the next turn.  Think time between turns: exponential, mean 60 s.
  agent  agent loops: tasks pick one of a few agents (a long shared prefix:
         system prompt and tool schemas), then loop 4..40 steps, each step
         re-reading the whole context plus the last action and its tool
         output (100..6000 tokens, log-uniform); a step follows the previous
         one after 1..8 s.
  rag    retrieval-augmented QA: a system prompt (few, Zipf) followed by
         2..6 documents from a shared corpus (Zipf popularity, retrieval
         rank order) and a question; a third of the questions get one
         follow-up turn.
  scan   a chat workload with a scan burst: during the middle fifth of the
         trace a batch job sends long one-off prompts (4k..32k tokens of
         unique content, 2 per second), more blocks than the chat sends.
  mix    chat, agent and rag requests interleaved (a third of the rate each).

The output depends only on the arguments: the same (--family, --seed,
--requests) gives the same file.  Example:

    /usr/bin/python3 scripts/gen-trace.py --family chat --seed 1 \\
        --requests 4000 -o chat-1.jsonl

Then `pagedkv sim chat-1.jsonl -c 250,1k,4k,16k` replays it.
"""

import argparse
import heapq
import json
import math
import random
import sys

BLOCK = 512


class Trie:
    """Assigns chained block ids: (parent id, block content) -> id."""

    def __init__(self):
        self.ids = {}

    def block_ids(self, segs):
        """Ids of the blocks of a prompt made of segs [(uid, length), ...]."""
        out, parent = [], -1
        pieces, fill = [], 0
        for uid, length in segs:
            off = 0
            while off < length:
                take = min(length - off, BLOCK - fill)
                pieces.append((uid, off, take))
                off += take
                fill += take
                if fill == BLOCK:
                    parent = self._id(parent, pieces, out)
                    pieces, fill = [], 0
        if fill:
            self._id(parent, pieces, out)
        return out

    def _id(self, parent, pieces, out):
        key = (parent, tuple(pieces))
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.ids)
        out.append(i)
        return i


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.uid = 0

    def seg(self, length):
        """A new piece of unique content of the given length."""
        self.uid += 1
        return (self.uid, max(1, int(length)))

    def loguniform(self, lo, hi):
        return math.exp(self.rng.uniform(math.log(lo), math.log(hi)))

    def zipf_pick(self, items, s=1.0):
        w = [1.0 / (k + 1) ** s for k in range(len(items))]
        return self.rng.choices(items, weights=w)[0]


def sessions_chat(g, n_sys=6, rate=1.0):
    """Yields (start time s, [(delay s, segs, out_len), ...]) forever."""
    systems = [g.seg(g.rng.randint(400, 3000)) for _ in range(n_sys)]
    t = 0.0
    while True:
        t += g.rng.expovariate(rate)
        sysp = g.zipf_pick(systems)
        turns = min(30, 1 + int(g.rng.expovariate(1 / 4.0)))
        ctx, steps = [sysp], []
        for k in range(turns):
            user = g.seg(g.loguniform(30, 1500))
            out = g.rng.randint(50, 700)
            steps.append((0.0 if k == 0 else g.rng.expovariate(1 / 60.0), ctx + [user], out))
            ctx = ctx + [user, g.seg(out)]
        yield t, steps


def sessions_agent(g, n_agents=4, rate=0.08):
    agents = [[g.seg(g.rng.randint(1500, 4000)), g.seg(g.rng.randint(1000, 5000))]
              for _ in range(n_agents)]
    t = 0.0
    while True:
        t += g.rng.expovariate(rate)
        ctx = list(g.zipf_pick(agents)) + [g.seg(g.loguniform(50, 800))]
        steps = []
        for k in range(g.rng.randint(4, 40)):
            out = g.rng.randint(20, 300)
            steps.append((0.0 if k == 0 else g.rng.uniform(1, 8), list(ctx), out))
            ctx += [g.seg(out), g.seg(g.loguniform(100, 6000))]  # action, tool output
        yield t, steps


def sessions_rag(g, n_sys=3, n_docs=3000, rate=0.5):
    systems = [g.seg(g.rng.randint(200, 1200)) for _ in range(n_sys)]
    docs = [g.seg(g.rng.randint(300, 2000)) for _ in range(n_docs)]
    weights = [1.0 / (k + 1) ** 0.9 for k in range(n_docs)]
    t = 0.0
    while True:
        t += g.rng.expovariate(rate)
        k = g.rng.randint(2, 6)
        picked = []
        while len(picked) < k:
            d = g.rng.choices(range(n_docs), weights=weights)[0]
            if d not in picked:
                picked.append(d)
        picked.sort()  # retrieval rank: the more popular document first
        ctx = [g.zipf_pick(systems)] + [docs[d] for d in picked]
        q = g.seg(g.loguniform(20, 300))
        out = g.rng.randint(50, 500)
        steps = [(0.0, ctx + [q], out)]
        if g.rng.random() < 1 / 3:
            steps.append((g.rng.expovariate(1 / 30.0), ctx + [q, g.seg(out), g.seg(g.loguniform(20, 200))],
                          g.rng.randint(50, 500)))
        yield t, steps


def sessions_scan(g, t0, t1, rate=1.0):
    t = t0
    while True:
        t += g.rng.expovariate(rate)
        if t >= t1:
            return
        yield t, [(0.0, [g.seg(g.loguniform(4096, 32768))], g.rng.randint(10, 200))]


def merge(g, sources, n_requests):
    """Requests of all session sources, in arrival order, first n_requests."""
    heap, seq = [], 0  # (time, seq, source, session steps, step index)

    def next_session(i):
        try:
            start, steps = next(sources[i])
        except StopIteration:
            return
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (start + steps[0][0], seq, i, steps, 0))

    for i in range(len(sources)):
        next_session(i)
    out = []
    while heap and len(out) < n_requests:
        t, _, i, steps, k = heapq.heappop(heap)
        _, segs, out_len = steps[k]
        out.append((t, segs, out_len))
        if k == 0:
            next_session(i)  # the next session of this source arrives later
        if k + 1 < len(steps):
            seq += 1
            heapq.heappush(heap, (t + steps[k + 1][0], seq, i, steps, k + 1))
    out.sort(key=lambda r: r[0])
    return out


def build(family, seed, n_requests):
    g = Gen(seed)
    if family == "chat":
        sources = [sessions_chat(g)]
    elif family == "agent":
        sources = [sessions_agent(g)]
    elif family == "rag":
        sources = [sessions_rag(g)]
    elif family == "scan":
        # chat at 1 session/s gives ~5 requests/s; the trace lasts about
        # n_requests / 5 s; the burst covers its middle fifth.
        span = n_requests / 5.0
        sources = [sessions_chat(g), sessions_scan(g, 0.4 * span, 0.6 * span, rate=2.0)]
    elif family == "mix":
        sources = [sessions_chat(g, rate=0.08), sessions_agent(g, rate=0.03),
                   sessions_rag(g, rate=0.17)]
    else:
        raise ValueError(family)
    return merge(g, sources, n_requests)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--family", required=True, choices=["chat", "agent", "rag", "scan", "mix"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--max-tokens", type=int, default=131072,
                    help="truncate prompts to this many tokens (default 131072)")
    ap.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    a = ap.parse_args()
    if a.requests < 1 or a.requests > 10_000_000:
        ap.error("--requests must be in 1..10000000")
    if a.max_tokens < 1:
        ap.error("--max-tokens must be >= 1")
    trie = Trie()
    f = sys.stdout if a.output == "-" else open(a.output, "w")
    with f:
        for t, segs, out_len in build(a.family, a.seed, a.requests):
            cut, total = [], 0
            for uid, length in segs:
                take = min(length, a.max_tokens - total)
                if take <= 0:
                    break
                cut.append((uid, take))
                total += take
            f.write(json.dumps({"timestamp": int(t * 1000), "input_length": total,
                                "output_length": out_len,
                                "hash_ids": trie.block_ids(cut)}) + "\n")


if __name__ == "__main__":
    main()
