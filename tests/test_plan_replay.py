"""Every plan the workload planner makes, replayed against the nodes' real block stores in
planned time (with transfers landing later than planned, as a loaded fabric makes them), asks
no node to prove a block it does not hold: the plan's reuse claims are ones a node can keep.
Sans-IO: `BlockStore`s fed events in time order, no sockets."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import pytest

from fabric.kv.prefill import PrefillProfile
from fabric.node.blocks import BlockStore
from fabric.workload.planner import Plan, Planner, session_turns, trace_turns
from fabric.workload.sessions import Session, Turn
from fabric.workload.trace import TraceRequest

PROFILE = PrefillProfile(((512, 0.05), (8_192, 0.6), (65_536, 7.0)))
BPT = 2_048


def est(src: str, dst: str, nbytes: int) -> float:
    return nbytes / 50e6 + 2e-4


def replay(plan: Plan, lateness: Callable[[], float]) -> list[tuple]:
    """What went wrong: (what, node, keys) per missing or corrupt proof or send."""
    stores: dict[str, BlockStore] = {}

    def st(node: str) -> BlockStore:
        return stores.setdefault(node, BlockStore(seed=1, chunk_bytes=1 << 16))

    events: list = []
    seq = 0

    def push(t: int, *what: object) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, what))
        seq += 1

    for tr in plan.transfers:
        st(tr.dst).expect(("transfer", tr.id), tr.start_ns,
                          arrives=[k for k, _ in tr.blocks] if tr.keep else (),
                          reuse=tr.reuse)
        if tr.from_store:
            st(tr.src).expect(("send", tr.id), tr.start_ns, reuse=[k for k, _ in tr.blocks])
            push(tr.start_ns, "send", tr)
        else:
            push(tr.start_ns + round(est(tr.src, tr.dst, tr.nbytes) * 1e9 * lateness()),
                 "land", tr)
    for node, ops in plan.ops.items():
        for op in ops:
            if op["op"] == "append":
                st(node).expect(("op", op["id"]), op["t_ns"],
                                arrives=[k for k, _ in op["make"]], reuse=op["reuse"])
            push(op["t_ns"], "op", node, op)
    bad: list[tuple] = []
    waiting: list = []

    def prove(node: str, who: tuple, keys: list[int], t: int, label: str) -> list[int]:
        p = st(node).prove(keys, t, who)
        if p.missing or p.corrupt:
            bad.append((label, node, p.missing, p.corrupt))
        return list(p.pending)

    def retry(t: int) -> None:
        """Prove what waited, again, until nothing more comes in."""
        nonlocal waiting
        progress = True
        while progress and waiting:
            progress = False
            again = []
            for node, who, keys, then, label in waiting:
                left = prove(node, who, keys, t, label)
                if left:
                    again.append((node, who, left, then, label))
                else:
                    progress = True
                    if then is not None:
                        then(t)
            waiting = again

    while events:
        t, _, what = heapq.heappop(events)
        if what[0] == "send":
            tr = what[1]
            s = st(tr.src)
            if any(s.bytes_of(k) is None and s.is_pending(k, tr.start_ns) for k, _ in tr.blocks):
                push(t + 100_000, "send", tr)  # wait for the block to land here
                continue
            missing = [k for k, _ in tr.blocks if s.bytes_of(k) is None]
            if missing:
                bad.append((f"send {tr.kind}#{tr.id}", tr.src, missing, []))
            copies = {k: s.bytes_of(k) for k, _ in tr.blocks if s.bytes_of(k) is not None}
            s.unpin([k for k, _ in tr.blocks], ("send", tr.id), t)
            land = t + round(est(tr.src, tr.dst, tr.nbytes) * 1e9 * lateness())
            push(land, "land", tr)
            if tr.release:
                push(land + 1, "release", tr, copies)
        elif what[0] == "release":
            tr, copies = what[1], what[2]
            st(tr.src).release([k for k, _ in tr.blocks], tr.start_ns, copies)
            retry(t)
        elif what[0] == "land":
            tr = what[1]
            rx, who = st(tr.dst), ("transfer", tr.id)
            if tr.keep:
                for k, b in tr.blocks:
                    rx.make(k, b, source=who, now_ns=t)
                rx.settle(who)
            retry(t)
            left = prove(tr.dst, who, list(tr.reuse), t, f"{tr.kind}#{tr.id}")
            if left:
                waiting.append((tr.dst, who, left, None, f"{tr.kind}#{tr.id}"))
        else:
            node, op = what[1], what[2]
            s = st(node)
            if op["op"] == "drop":
                s.drop(op["drop"], op["t_ns"])
                continue
            who = ("op", op["id"])

            def made(t: int, s: BlockStore = s, op: dict = op, who: tuple = who) -> None:
                for k, b in op["make"]:
                    s.make(k, b, source=who, now_ns=t)
                s.settle(who)

            left = prove(node, who, list(op["reuse"]), t, f"op#{op['id']}@{node}")
            if left:
                waiting.append((node, who, left, made, f"op#{op['id']}"))
            else:
                made(t)
                retry(t)
    assert not waiting, f"proofs still waiting at the end: {waiting[:3]}"
    return bad


def planner(variant: str, rng: random.Random, **kw: object) -> Planner:
    args: dict = dict(variant=variant, prefill=("p0", "p1"), decode=("d0", "d1"),
                      store=rng.choice([None, "st"]), bytes_per_token=BPT, state_bytes=0,
                      kv_scale=1, profile=PROFILE, decode_speed=rng.choice([0.4, 1.0]),
                      tpot_s=0.005, cache_bytes=rng.choice([12, 40, 400]) * 512 * BPT,
                      cache_policy=rng.choice(["lru", "fifo"]), estimate=est,
                      time_scale=1.0, cls="kv", chunk_bytes=1 << 16,
                      ttl_s=rng.choice([None, 0.05, 0.5]), append=rng.choice(["local", "remote"]))
    args.update(kw)
    return Planner(**args)


def random_sessions(rng: random.Random) -> list[Session]:
    out = []
    for sid in range(rng.randint(2, 6)):
        turns = [Turn(index=0, new_tokens=rng.randint(300, 6_000),
                      output_tokens=rng.randint(0, 300), pause_before_s=0.0)]
        turns += [Turn(index=i, new_tokens=rng.randint(10, 3_000),
                       output_tokens=rng.randint(0, 300),
                       pause_before_s=rng.choice([0.01, 0.1, 0.3, 1.0]))
                  for i in range(1, rng.randint(1, 5))]
        out.append(Session(id=sid, start_s=rng.uniform(0, 0.5), turns=tuple(turns)))
    return out


def random_requests(rng: random.Random) -> list[TraceRequest]:
    prefixes = [tuple(rng.sample(range(1, 10_000), rng.randint(1, 6))) for _ in range(4)]
    out = []
    t = 0.0
    for i in range(rng.randint(5, 25)):
        head = rng.choice(prefixes)[: rng.randint(1, 6)]
        tail = tuple(rng.sample(range(10_000, 20_000), rng.randint(0, 8)))
        ids = (*head, *tail)
        t += rng.choice([0.0, 0.01, 0.1, 0.4])
        out.append(TraceRequest(index=i, line=i + 1, t_s=t,
                                input_tokens=(len(ids) - 1) * 512 + rng.randint(1, 512),
                                output_tokens=rng.randint(1, 100), hash_ids=ids))
    return out


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("variant", ["ppd/pin", "ppd/ttl", "ppd/evict"])
def test_no_plan_asks_a_node_for_a_block_it_cannot_hold(seed: int, variant: str) -> None:
    rng = random.Random(seed)
    if seed % 2:
        turns = session_turns(random_sessions(rng), 512)
    else:
        turns = trace_turns(random_requests(rng), 512)
    plan = planner(variant, rng).run(turns)
    slow = random.Random(seed + 1000)
    assert replay(plan, lambda: slow.uniform(1.0, 4.0)) == []


def test_a_copy_planned_earlier_that_lands_later_does_not_replace_the_later_one() -> None:
    # one prefill node: request 1's copy of block 1 lands before request 0's (which was
    # planned first, and is late), then a write-back meant for request 0's copies is acked
    reqs = [TraceRequest(index=0, line=1, t_s=0.40, input_tokens=1024, output_tokens=1,
                         hash_ids=(1, 2)),
            TraceRequest(index=1, line=2, t_s=0.41, input_tokens=512, output_tokens=50,
                         hash_ids=(1,)),
            TraceRequest(index=2, line=3, t_s=0.81, input_tokens=1024, output_tokens=1,
                         hash_ids=(1, 3)),
            TraceRequest(index=3, line=4, t_s=0.91, input_tokens=1024, output_tokens=1,
                         hash_ids=(1, 2))]
    plan = Planner(variant="ppd/ttl", prefill=("p0",), decode=("d0",), store="st",
                   bytes_per_token=BPT, state_bytes=0, kv_scale=1, profile=PROFILE,
                   decode_speed=1.0, tpot_s=0.005, cache_bytes=40 * 512 * BPT,
                   cache_policy="lru", estimate=est, time_scale=1.0, cls="kv",
                   chunk_bytes=1 << 16, ttl_s=1e-4, append="remote").run(trace_turns(reqs, 512))
    late = iter([3.53, 3.27, 2.26, 1.78, 2.53, 2.21])
    assert replay(plan, lambda: next(late)) == []


@pytest.mark.parametrize("seed", range(60, 100))
def test_one_prefill_node_and_bursts_of_shared_prefixes(seed: int) -> None:
    rng = random.Random(seed)
    turns = trace_turns(random_requests(rng), 512)
    variant = rng.choice(["ppd/pin", "ppd/ttl", "ppd/evict"])
    plan = planner(variant, rng, prefill=("p0",), decode=("d0",)).run(turns)
    slow = random.Random(seed + 1000)
    assert replay(plan, lambda: slow.uniform(1.0, 4.0)) == []
