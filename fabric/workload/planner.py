"""Place every turn of a workload on the fabric's nodes, in modelled time, and say which KV
blocks move where. Sans-IO: time is fabric seconds passed in, the network's part is an
estimate here and is measured on the fabric afterwards (`account`).

A **turn** (one request of a session, or one request of a trace) needs the KV of its whole
input context, cut into cache blocks (`block_tokens` tokens; the last may be partial). Where
that KV comes from is the policy:

- `pd`: every turn prefills its whole context on a prefill node (the earliest free), and all
  of its blocks move to the decode node. The decode node keeps nothing.
- `ppd/<retention>`: the decode node keeps blocks in a bounded cache (`BlockCache`). A turn
  reuses the leading blocks its decode node holds (`hit`), then the following ones a KV store
  holds (`reload`: store -> decode, real bytes), and computes the rest:
  - nothing reusable: a full prefill on a prefill node, every block moves (and is kept);
  - else an **append-prefill** of the missing tokens, locally on the decode node (`append:
    local`, nothing moves) or on a prefill node that sends only the missing blocks
    (`append: remote`, the transfer names the reused blocks, which the decode node proves).
  After the turn decodes, the decode node holds its output tokens' KV too (a session's next
  turn reuses it). Across the pause before the session's next turn, its blocks are kept
  (`pin`, until the session ends; the cache may still force them out), kept for a
  time-to-live (`ttl`, then evicted), or evicted at once (`evict`). An evicted block is
  written back to the store (a real transfer) when there is one, else dropped.

Compute is modelled: prefill seconds from a profile (`PrefillProfile`, tokens -> seconds on a
prefill node; `decode_speed` times that speed on a decode node); an append-prefill of `n`
new tokens after `c` cached ones costs `prefill(c + n) - prefill(c)`; decoding costs `tpot`
per output token and does not queue (decode batches). Prefill queues are FIFO per node.

A block the cache model lets go while a placed turn will still prove it on that node is let
go (dropped, or written back) only once that turn has started, unless it came back before:
so no plan asks a node to prove a block the plan itself dropped (`tests/test_plan_replay.py`
replays random plans against the nodes' block stores, with transfers landing late). A hybrid
model's fixed per-request state moves with each turn's KV and is dropped after the turn: a
`ppd` append is modelled without reloading it (optimistic for hybrid models under `evict`).

Turn arrivals are planned: a session's next turn arrives a pause after the previous one's
planned end (open loop against the fabric: a late transfer does not delay the next turn's
arrival, it shows in that turn's TTFT); a trace's requests arrive at the trace's times.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fabric.kv.prefill import PrefillProfile
from fabric.traffic import Transfer
from fabric.workload import STATE_KEY_BASE, session_key
from fabric.workload.cache import BlockCache
from fabric.workload.trace import blocks_of

__all__ = ["Plan", "Planner", "TurnIn", "TurnPlan", "account", "session_turns", "trace_turns"]

Estimate = Callable[[str, str, int], float]  # (src, dst, wire bytes) -> fabric seconds
# a write-back's request number: its own, apart from the turns' (records are keyed by it)
WRITEBACK_REQUEST_BASE = 1 << 40
INF = float("inf")


@dataclass(frozen=True)
class TurnIn:
    """One turn to place: its context's blocks `(key, tokens)`, and when it arrives."""

    session: int
    index: int  # turn number in its session, from 0
    blocks: tuple[tuple[int, int], ...]
    new_tokens: int
    output_tokens: int
    at_s: float | None = None  # arrival (fabric s); None: `pause_s` after the previous turn
    pause_s: float = 0.0
    request: int | None = None  # the trace request it replays
    output_blocks: tuple[tuple[int, int], ...] = ()  # context + output, after decoding

    @property
    def tokens(self) -> int:
        return sum(t for _, t in self.blocks)


@dataclass
class TurnPlan:
    session: int
    index: int
    request: int | None
    arrival_s: float
    decode: str
    how: str  # prefill | append-local | append-remote | pd
    prefill: str | None = None
    context_tokens: int = 0
    new_tokens: int = 0
    output_tokens: int = 0
    blocks: int = 0
    hit: int = 0  # blocks the decode node held
    reload: int = 0  # blocks the store sent
    computed: int = 0  # blocks computed this turn
    moved_bytes: int = 0  # fabric (real) bytes moved for this turn's first token
    wait: tuple[str, int] | None = None  # ("transfer" | "op", id) whose readiness gates it
    net_start_s: float = 0.0  # when that KV started to move (planned)
    after_s: float = 0.0  # modelled compute after the KV is ready (a local append)
    op_start_s: float = 0.0  # a local append's planned start (after the node's queue)
    reload_wait: tuple[str, int] | None = None  # the reload transfer it waited for, if any
    planned_first_s: float = 0.0
    planned_end_s: float = 0.0


@dataclass
class Plan:
    variant: str
    transfers: list[Transfer] = field(default_factory=list)
    ops: dict[str, list[dict]] = field(default_factory=dict)
    turns: list[TurnPlan] = field(default_factory=list)
    cut: int = 0  # turns not planned: they would arrive after the run's duration
    evictions: int = 0
    forced: int = 0
    writebacks: int = 0  # blocks written back to the store
    writeback_bytes: int = 0  # their real bytes (not in any turn's KV)
    dropped: int = 0  # blocks dropped with no store to keep them
    cache_peak: dict[str, int] = field(default_factory=dict)  # decode node -> peak bytes


def _wire(real_bytes: int, kv_scale: int) -> int:
    """Bytes on the wire for `real_bytes` of KV: 1/kv_scale of them, in whole 8 bytes."""
    wire = -(-real_bytes // kv_scale)
    return max(8, -(-wire // 8) * 8)


def _blocks(tokens: int, block_tokens: int, key: Callable[[int, int], int]
            ) -> tuple[tuple[int, int], ...]:
    n = -(-tokens // block_tokens)
    return tuple((key(i, min(block_tokens, tokens - i * block_tokens)),
                  min(block_tokens, tokens - i * block_tokens)) for i in range(n))


def session_turns(sessions: Sequence, block_tokens: int) -> list[TurnIn]:  # noqa: ANN001
    """Turns of generated sessions (`fabric.workload.sessions.Session`): each turn's context
    is every earlier turn's input and output plus its new tokens."""
    out = []
    for s in sessions:
        context = 0
        for k, t in enumerate(s.turns):
            context += t.new_tokens

            def key(i: int, n: int, sid: int = s.id) -> int:
                return session_key(sid, i, n)

            out.append(TurnIn(
                session=s.id, index=k, blocks=_blocks(context, block_tokens, key),
                new_tokens=t.new_tokens, output_tokens=t.output_tokens,
                at_s=s.start_s if k == 0 else None, pause_s=t.pause_before_s,
                request=t.request,
                output_blocks=_blocks(context + t.output_tokens, block_tokens, key)))
            context += t.output_tokens
    return out


def trace_turns(requests: Sequence, block_tokens: int,  # noqa: ANN001
                sessions: Sequence | None = None) -> list[TurnIn]:
    """One turn per trace request, at the trace's time, its blocks the trace's prefix hashes
    (a hash met again with another size is another block). With `sessions` (from
    `sessions_from_trace`), a request is its session's turn; else each is a session of one."""
    where: dict[int, tuple[int, int]] = {}
    for s in sessions or ():
        for k, t in enumerate(s.turns):
            where[t.request] = (s.id, k)
    sizes: dict[int, int] = {}
    out = []
    for r in requests:
        blocks = [(h if sizes.setdefault(h, tokens) == tokens
                   else (1 << 60) | (tokens << 44) | h, tokens)
                  for h, tokens in blocks_of(r, block_tokens)]
        session, k = where.get(r.index, (r.index, 0))
        out.append(TurnIn(session=session, index=k, blocks=tuple(blocks),
                          new_tokens=r.input_tokens, output_tokens=r.output_tokens,
                          at_s=r.t_s, request=r.index))
    return out


class Planner:
    """Plans one variant (`pd`, `ppd/pin`, `ppd/ttl`, `ppd/evict`) of a workload."""

    def __init__(self, *, variant: str, prefill: Sequence[str], decode: Sequence[str],
                 store: str | None, bytes_per_token: int, state_bytes: int, kv_scale: int,
                 profile: PrefillProfile, decode_speed: float, tpot_s: float,
                 cache_bytes: int, cache_policy: str, estimate: Estimate, time_scale: float,
                 cls: str, chunk_bytes: int, ttl_s: float | None = None,
                 ttl_factor: float = 20.0, append: str = "local",
                 duration_s: float | None = None, first_id: int = 0,
                 kv_block_tokens: int = 1) -> None:
        self.policy, _, self.retention = variant.partition("/")
        if self.policy not in ("pd", "ppd") or (self.policy == "ppd" and self.retention
                                                not in ("pin", "ttl", "evict")):
            raise ValueError(f"unknown variant {variant!r}")
        self.plan = Plan(variant=variant)
        self.prefill_nodes = list(prefill)
        self.decode_nodes = list(decode)
        self.store = store
        self.bpt = bytes_per_token
        self.kv_block = kv_block_tokens  # the model's paged block: a cache block holds whole
        # ones (a partial last block of 100 tokens takes 7 blocks of 16)
        self.state_bytes = state_bytes
        self.kv_scale = kv_scale
        self.profile = profile
        self.decode_speed = decode_speed
        self.tpot = tpot_s
        self.est = estimate
        self.ts = time_scale
        self.cls = cls
        self.chunk = chunk_bytes
        self.ttl_s = ttl_s
        self.ttl_factor = ttl_factor
        self.append = append
        self.duration = duration_s
        self.next_id = first_id
        self.next_op = 0
        self.writeback_no = 0
        self.p_free = dict.fromkeys(self.prefill_nodes, 0.0)
        self.d_free = dict.fromkeys(self.decode_nodes, 0.0)
        self.caches = {d: BlockCache(cache_bytes, cache_policy) for d in self.decode_nodes}
        self.load = dict.fromkeys(self.decode_nodes, 0)  # turns placed per decode node
        self.in_store: set[int] = set()
        self.session_node: dict[int, str] = {}
        self.session_keys: dict[int, set[int]] = {}  # what a session holds at its node
        self.generation: dict[int, int] = {}  # a session's turns so far (stale TTLs)
        self.sizes: dict[int, int] = {}  # key -> wire bytes
        # (node, key) -> the latest planned start of a turn that proves it there: the cache
        # model may let a block go earlier, but the node must keep it until then
        self.last_use: dict[tuple[str, int], float] = {}
        self.store_from: dict[int, float] = {}  # key -> when its write-back starts
        self._push: Callable[[float, str, Any], None] = lambda at, kind, what: None

    # ---- sizes and compute -------------------------------------------------------------

    def wire(self, tokens: int) -> int:
        """Wire bytes of a block of `tokens` tokens (real bytes / kv_scale, whole 8 bytes)."""
        return _wire(-(-tokens // self.kv_block) * self.kv_block * self.bpt, self.kv_scale)

    def prefill_s(self, tokens: int) -> float:
        return self.profile.seconds(tokens)

    def append_s(self, cached: int, new: int) -> float:
        return max(0.0, self.profile.seconds(cached + new) - self.profile.seconds(cached))

    def _ns(self, t_s: float) -> int:
        return round(t_s * self.ts * 1e9)

    # ---- what the plan emits ------------------------------------------------------------

    def _transfer(self, kind: str, src: str, dst: str, at_s: float, request: int,
                  blocks: Sequence[tuple[int, int]], *, reuse: Sequence[int] = (),
                  keep: bool = False, from_store: bool = False, release: bool = False) -> int:
        carried = tuple((k, self.sizes[k]) for k, _ in blocks)
        tid = self.next_id
        self.next_id += 1
        self.plan.transfers.append(Transfer(
            id=tid, flow=self.plan.variant, kind=kind, cls=self.cls, src=src, dst=dst,
            transport="tcp", request=request, model=None,
            tokens=sum(t for _, t in blocks), nbytes=sum(b for _, b in carried),
            chunk_bytes=self.chunk, start_ns=self._ns(at_s), blocks=carried,
            reuse=tuple(reuse), keep=keep, from_store=from_store, release=release))
        return tid

    def _op(self, node: str, at_s: float, op: str, **body: list) -> int:
        oid = self.next_op
        self.next_op += 1
        self.plan.ops.setdefault(node, []).append(
            {"id": oid, "t_ns": self._ns(at_s), "op": op, **body})
        return oid

    def _state(self, turn_id: int) -> list[tuple[int, int]]:
        """A hybrid model's fixed per-request state: one never-reused block per turn."""
        if not self.state_bytes:
            return []
        key = STATE_KEY_BASE + turn_id
        self.sizes[key] = _wire(self.state_bytes, self.kv_scale)
        return [(key, 0)]

    # ---- the simulation -----------------------------------------------------------------

    def run(self, turns: Sequence[TurnIn]) -> Plan:
        by_session: dict[int, list[TurnIn]] = {}
        for t in turns:
            by_session.setdefault(t.session, []).append(t)
            for k, n in (*t.blocks, *t.output_blocks):
                self.sizes.setdefault(k, self.wire(n))
        heap: list[tuple[float, int, str, Any]] = []
        seq = 0

        def push(at: float, kind: str, what: Any) -> None:  # noqa: ANN401
            nonlocal seq
            heapq.heappush(heap, (at, seq, kind, what))
            seq += 1

        self._push = push

        for s_turns in by_session.values():
            for t in s_turns:
                if t.at_s is not None:
                    push(t.at_s, "arrive", t)
        while heap:
            now, _, kind, what = heapq.heappop(heap)
            if kind == "arrive":
                assert isinstance(what, TurnIn)
                if self.duration is not None and now >= self.duration:
                    self.plan.cut += len(by_session[what.session]) - what.index
                    continue
                end = self._arrive(what, now, push)
                nxt = what.index + 1
                if nxt < len(by_session[what.session]):
                    follow = by_session[what.session][nxt]
                    if follow.at_s is None:
                        push(end + follow.pause_s, "arrive", follow)
            elif kind == "kv_in":
                node, blocks = what
                self._insert(node, blocks, now)
            elif kind == "end":
                self._end(what, now, push)
            elif kind == "evict":  # a let-go put off: unless the block came back since
                node, key = what
                if not self.caches[node].holds(key):
                    self._evicted(node, [key], now)
            elif kind == "ttl":
                session, gen = what
                if self.generation.get(session) == gen:
                    self._evict_session(session, now)
        for d, c in self.caches.items():
            self.plan.cache_peak[d] = c.peak_bytes
            self.plan.forced += c.forced
        return self.plan

    def _decode_for(self, t: TurnIn) -> str:
        if t.session in self.session_node:
            return self.session_node[t.session]
        keys = [k for k, _ in t.blocks]
        best = max(self.decode_nodes, key=lambda d: (
            0 if self.policy == "pd" else self.caches[d].prefix(keys), -self.load[d],
            -self.decode_nodes.index(d)))
        self.session_node[t.session] = best
        return best

    def _arrive(self, t: TurnIn, now: float, push: Callable) -> float:
        d = self._decode_for(t)
        self.load[d] += 1
        self.generation[t.session] = self.generation.get(t.session, 0) + 1
        turn_id = len(self.plan.turns)
        keys = [k for k, _ in t.blocks]
        tp = TurnPlan(session=t.session, index=t.index, request=t.request, arrival_s=now,
                      decode=d, how="pd", context_tokens=t.tokens, new_tokens=t.new_tokens,
                      output_tokens=t.output_tokens, blocks=len(keys))
        self.plan.turns.append(tp)
        cache = self.caches[d]
        hit = 0 if self.policy == "pd" else cache.prefix(keys)
        reload = 0
        if self.policy == "ppd" and self.store is not None:
            while hit + reload < len(keys) and keys[hit + reload] in self.in_store:
                reload += 1
        tp.hit, tp.reload, tp.computed = hit, reload, len(keys) - hit - reload
        reused = keys[:hit + reload]
        if self.policy == "ppd":
            cache.lookup(keys[:hit], now)
            cache.pin(keys[:hit], INF)  # in use by this turn
        state = self._state(turn_id)
        if self.policy == "pd" or hit + reload == 0:
            p = min(self.prefill_nodes, key=lambda n: (self.p_free[n], n))
            start = max(now, self.p_free[p])
            done = start + self.prefill_s(t.tokens)
            self.p_free[p] = done
            moving = [*t.blocks, *state]
            tid = self._transfer("kv-full" if self.policy == "pd" else "kv-prefill", p, d,
                                 done, turn_id, moving, keep=self.policy == "ppd")
            first = done + self.est(p, d, sum(self.sizes[k] for k, _ in moving))
            tp.how, tp.prefill, tp.wait, tp.net_start_s = (
                "pd" if self.policy == "pd" else "prefill", p, ("transfer", tid), done)
            tp.moved_bytes = sum(self.sizes[k] for k, _ in moving) * self.kv_scale
            if self.policy == "ppd":
                push(first, "kv_in", (d, list(t.blocks)))
        else:
            ready = now
            moved = 0
            if reload:
                assert self.store is not None
                rblocks = list(t.blocks[hit:hit + reload])
                # (a block whose write-back starts later is sent once it has: no earlier)
                at = max([now, *(self.store_from.get(k, now) for k, _ in rblocks)])
                rid = self._transfer("kv-reload", self.store, d, at, turn_id, rblocks,
                                     keep=True, from_store=True)
                tp.reload_wait = ("transfer", rid)
                rbytes = sum(self.sizes[k] for k, _ in rblocks)
                moved += rbytes
                ready = at + self.est(self.store, d, rbytes)
                push(ready, "kv_in", (d, rblocks))
            cached_tokens = sum(n for _, n in t.blocks[:hit + reload])
            new_blocks = [*t.blocks[hit + reload:], *state]
            if self.append == "local" or not new_blocks:  # (nothing to send: prove, go)
                start = max(ready, self.d_free[d])
                dur = self.append_s(cached_tokens, t.tokens - cached_tokens) / self.decode_speed
                self.d_free[d] = start + dur
                oid = self._op(d, start, "append", reuse=reused,
                               make=[[k, self.sizes[k]] for k, _ in new_blocks])
                self._used(d, reused, start)
                first = start + dur
                tp.how, tp.wait, tp.after_s = "append-local", ("op", oid), dur
                tp.op_start_s = start
                tp.net_start_s = now
                push(start, "kv_in", (d, list(t.blocks[hit + reload:])))
            else:
                p = min(self.prefill_nodes, key=lambda n: (self.p_free[n], n))
                start = max(now, self.p_free[p])
                done = start + self.append_s(cached_tokens, t.tokens - cached_tokens)
                self.p_free[p] = done
                tid = self._transfer("kv-append", p, d, done, turn_id, new_blocks,
                                     reuse=reused, keep=True)
                self._used(d, reused, done)
                nbytes = sum(self.sizes[k] for k, _ in new_blocks)
                moved += nbytes
                first = max(ready, done + self.est(p, d, nbytes))
                tp.how, tp.prefill, tp.wait = "append-remote", p, ("transfer", tid)
                tp.net_start_s = done
                push(first, "kv_in", (d, list(t.blocks[hit + reload:])))
            tp.moved_bytes = moved * self.kv_scale
        tp.planned_first_s = first
        end = first + t.output_tokens * self.tpot
        tp.planned_end_s = end
        push(end, "end", (t, d, turn_id))
        return end

    def _insert(self, node: str, blocks: Sequence[tuple[int, int]], now: float) -> None:
        cache = self.caches[node]
        # tail first, so under LRU a prefix's head is the last of it to go
        evicted = cache.insert_all([(k, self.sizes[k]) for k, _ in blocks
                                    if not cache.holds(k)], now)
        if evicted:
            self.plan.evictions += len(evicted)
            for k in evicted:
                for keys in self.session_keys.values():
                    keys.discard(k)
            self._evicted(node, evicted, now)

    def _used(self, node: str, keys: Sequence[int], at: float) -> None:
        for k in keys:
            if self.last_use.get((node, k), -INF) < at:
                self.last_use[(node, k)] = at

    def _evicted(self, node: str, keys: Sequence[int], now: float) -> None:
        """Blocks the cache model let go at `node`: to the store, or gone; not before the
        last turn planned to prove one there has started (the node keeps it that long)."""
        keys = list(keys)
        later = [k for k in keys if self.last_use.get((node, k), -INF) > now]
        if later:  # a placed turn still proves these here: let them go after it starts
            for k in later:
                self._push(self.last_use[(node, k)], "evict", (node, k))
            keys = [k for k in keys if k not in set(later)]
        if not keys:
            return
        if self.store is None:
            self._op(node, now, "drop", drop=keys)
            self.plan.dropped += len(keys)
            return
        new = [k for k in keys if k not in self.in_store]
        old = [k for k in keys if k in self.in_store]
        if new:
            self.writeback_no += 1
            self._transfer("kv-writeback", node, self.store, now,
                           WRITEBACK_REQUEST_BASE + self.writeback_no,
                           [(k, 0) for k in new], keep=True, from_store=True, release=True)
            self.in_store.update(new)
            self.store_from.update(dict.fromkeys(new, now))
            self.plan.writebacks += len(new)
            self.plan.writeback_bytes += sum(self.sizes[k] for k in new) * self.kv_scale
        if old:
            self._op(node, now, "drop", drop=old)

    def _end(self, what: tuple, now: float, push: Callable) -> None:
        """The turn has decoded: its output's KV is on the decode node too; then what the
        retention does with the session's blocks across the pause (the serving system does
        not know whether the session will come back: a last turn is treated alike)."""
        t, d, turn_id = what
        if self.policy == "pd":
            return
        if self.state_bytes:  # the request's own state: not kept past its turn (module doc)
            self._op(d, now, "drop", drop=[STATE_KEY_BASE + turn_id])
        cache = self.caches[d]
        keys = [k for k, _ in t.blocks]
        held = self.session_keys.setdefault(t.session, set())
        held.update(k for k in keys if cache.holds(k))
        # decoding made the output's KV here: the blocks past the context's last full one
        context = set(keys)
        out_new = [(k, n) for k, n in t.output_blocks if k not in context]
        if out_new:
            self._op(d, now, "append", reuse=[], make=[[k, self.sizes[k]] for k, _ in out_new])
            self._insert(d, out_new, now)
            held.update(k for k, _ in out_new if cache.holds(k))
        cache.unpin(keys)
        if self.retention == "evict":
            self._evict_session(t.session, now)
        elif self.retention == "pin":
            cache.pin(sorted(held), INF)
        else:  # ttl
            ttl = self.ttl_s if self.ttl_s is not None else self._auto_ttl(t, d)
            cache.pin(sorted(held), now + ttl)
            push(now + ttl, "ttl", (t.session, self.generation[t.session]))

    def _auto_ttl(self, t: TurnIn, d: str) -> float:
        """Continuum's rule, simplified: keep a session's KV for `ttl_factor` times what it
        would cost to get it back (a reload from the store, else recomputing it)."""
        wire = sum(self.sizes[k] for k, _ in t.output_blocks or t.blocks)
        if self.store is not None:
            back = self.est(self.store, d, wire)
        else:
            back = self.prefill_s(sum(n for _, n in t.output_blocks or t.blocks))
        return self.ttl_factor * back

    def _evict_session(self, session: int, now: float) -> None:
        held = self.session_keys.get(session, set())
        node = self.session_node[session]
        cache = self.caches[node]
        keys = sorted(k for k in held if cache.holds(k))
        cache.remove(keys)
        held.clear()
        self.plan.evictions += len(keys)
        self._evicted(node, keys, now)


def _pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def account(plan: Plan, ready_s: dict[tuple[str, int], float]) -> list[dict]:
    """Each turn's TTFT from what the fabric measured: `ready_s[("transfer"|"op", id)]` is
    when that KV was all present at the decode node (fabric seconds from the run's start).
    A turn whose KV never became ready has `ttft_s` None."""
    out = []
    for tp in plan.turns:
        row = {"session": tp.session, "turn": tp.index, "request": tp.request,
               "how": tp.how, "decode": tp.decode, "prefill": tp.prefill,
               "arrival_s": tp.arrival_s, "context_tokens": tp.context_tokens,
               "blocks": tp.blocks, "hit": tp.hit, "reload": tp.reload,
               "computed": tp.computed, "moved_bytes": tp.moved_bytes,
               "planned_ttft_s": tp.planned_first_s - tp.arrival_s}
        assert tp.wait is not None
        ready = ready_s.get(tp.wait)
        if ready is None:
            row.update(ttft_s=None, kv_wait_s=None)
        elif tp.how == "append-local":
            # the node proved the reused KV at the append's planned start (after its compute
            # queue), or later if a reload was still on its way: the reload, or that
            # lateness, is the fabric's part
            first = max(ready, tp.op_start_s) + tp.after_s
            back = ready_s.get(tp.reload_wait) if tp.reload_wait is not None else None
            wait = back - tp.arrival_s if back is not None else ready - tp.op_start_s
            row.update(ttft_s=first - tp.arrival_s, kv_wait_s=max(0.0, wait))
        else:
            first = max(ready, tp.net_start_s)
            wait = ready - tp.net_start_s
            back = ready_s.get(tp.reload_wait) if tp.reload_wait is not None else None
            if back is not None:  # a remote append that also waited for a reload
                wait = max(wait, back - tp.arrival_s)
            row.update(ttft_s=first - tp.arrival_s, kv_wait_s=max(0.0, wait))
        out.append(row)
    return out


def summarise(rows: list[dict]) -> dict:
    """TTFT percentiles for first turns and later ones, KV per turn, hit rates."""
    def ttfts(sel: list[dict]) -> list[float]:
        return [r["ttft_s"] for r in sel if r["ttft_s"] is not None]

    first = [r for r in rows if r["turn"] == 0]
    later = [r for r in rows if r["turn"] > 0]
    blocks = sum(r["blocks"] for r in rows)
    out: dict[str, float] = {"turns": len(rows), "turns_later": len(later)}
    for name, sel in (("turn1", first), ("later", later), ("all", rows)):
        xs = ttfts(sel)
        out[f"{name}_ttft_p50_s"] = _pct(xs, 50)
        out[f"{name}_ttft_p90_s"] = _pct(xs, 90)
        out[f"{name}_ttft_p99_s"] = _pct(xs, 99)
        out[f"{name}_kv_bytes_mean"] = (sum(r["moved_bytes"] for r in sel) / len(sel)
                                       if sel else 0.0)
        waits = [r["kv_wait_s"] for r in sel if r["kv_wait_s"] is not None]
        out[f"{name}_kv_wait_mean_s"] = sum(waits) / len(waits) if waits else math.nan
    out["hit_rate"] = sum(r["hit"] for r in rows) / blocks if blocks else 0.0
    out["reload_rate"] = sum(r["reload"] for r in rows) / blocks if blocks else 0.0
    out["recompute_rate"] = sum(r["computed"] for r in rows) / blocks if blocks else 0.0
    out["kv_bytes"] = sum(r["moved_bytes"] for r in rows)
    return out
