"""The workload planner, sans-IO: which blocks move where under each policy, what the decode
nodes make and drop, and TTFT from measured readiness. No sockets, no clock."""

from __future__ import annotations

import math

import pytest

from fabric.kv.prefill import PrefillProfile
from fabric.workload import SESSION_KEY_BASE, session_key
from fabric.workload.planner import Planner, account, session_turns, summarise, trace_turns
from fabric.workload.sessions import Session, Turn
from fabric.workload.trace import TraceRequest, reusable_share

PROFILE = PrefillProfile(((1_000, 0.1), (10_000, 1.0), (100_000, 12.0)))
BPT = 1_024  # bytes per token
RATE = 1e9 / 8  # 1 Gbit/s estimate, bytes per second


def est(src: str, dst: str, nbytes: int) -> float:
    return nbytes / RATE + 1e-4


def planner(variant: str, *, store: str | None = None, cache: int = 1 << 30,
            decode: tuple[str, ...] = ("d0",), **kw: object) -> Planner:
    args: dict = dict(variant=variant, prefill=("p0", "p1"), decode=decode, store=store,
                      bytes_per_token=BPT, state_bytes=0, kv_scale=1, profile=PROFILE,
                      decode_speed=1.0, tpot_s=0.01, cache_bytes=cache, cache_policy="lru",
                      estimate=est, time_scale=1.0, cls="kv", chunk_bytes=1 << 20)
    args.update(kw)
    return Planner(**args)


def session(sid: int, first: int, appends: list[int], output: int = 100,
            pause: float = 1.0, start: float = 0.0) -> Session:
    turns = [Turn(index=0, new_tokens=first, output_tokens=output, pause_before_s=0.0)]
    turns += [Turn(index=i + 1, new_tokens=a, output_tokens=output, pause_before_s=pause)
              for i, a in enumerate(appends)]
    return Session(id=sid, start_s=start, turns=tuple(turns))


def test_session_turns_carry_the_whole_context_as_blocks() -> None:
    turns = session_turns([session(3, 1_200, [300])], block_tokens=512)
    assert [n for _, n in turns[0].blocks] == [512, 512, 176]
    # turn 2: 1,200 + 100 output + 300 new = 1,600 tokens; the partial block is another key
    assert [n for _, n in turns[1].blocks] == [512, 512, 512, 64]
    assert turns[0].blocks[:2] == turns[1].blocks[:2]
    assert turns[0].blocks[2] != turns[1].blocks[2]
    assert all(k >= SESSION_KEY_BASE for k, _ in turns[1].blocks)
    assert turns[1].blocks[0][0] == session_key(3, 0, 512)
    assert turns[0].at_s == 0.0
    assert turns[1].at_s is None
    assert turns[1].pause_s == 1.0


def test_pd_moves_every_block_of_every_turn_and_keeps_none() -> None:
    turns = session_turns([session(0, 4_096, [512, 512])], block_tokens=512)
    plan = planner("pd").run(turns)
    assert len(plan.transfers) == 3
    for t, tr in zip(turns, plan.transfers, strict=True):
        assert [k for k, _ in tr.blocks] == [k for k, _ in t.blocks]
        assert not tr.keep
        assert not tr.reuse
        assert tr.src in ("p0", "p1")
        assert tr.dst == "d0"
        assert tr.nbytes == t.tokens * BPT
    assert not plan.ops
    assert all(tp.hit == 0 and tp.how == "pd" for tp in plan.turns)


def test_ppd_appends_later_turns_on_the_decode_node_reusing_what_it_holds() -> None:
    turns = session_turns([session(0, 4_096, [512, 512])], block_tokens=512)
    plan = planner("ppd/pin").run(turns)
    assert len(plan.transfers) == 1  # only turn 1's full prefill moves
    first = plan.transfers[0]
    assert first.keep
    assert first.dst == "d0"
    assert len(first.blocks) == 8
    appends = [op for op in plan.ops["d0"] if op["op"] == "append" and op["reuse"]]
    assert len(appends) == 2
    # turn 2 reuses turn 1's 8 full blocks (the 100 output tokens fill a partial block,
    # which turn 2's appended tokens complete: another block, computed again)
    t2 = plan.turns[1]
    assert t2.how == "append-local"
    assert t2.hit == 8
    assert t2.computed == 2
    assert appends[0]["reuse"] == [k for k, _ in turns[1].blocks[:8]]
    made = {k for op in plan.ops["d0"] for k, _ in op["make"]}
    assert {k for k, _ in turns[1].blocks[9:]} <= made
    # append-prefill costs the profile's difference, on the decode node
    cached = sum(n for _, n in turns[1].blocks[:8])
    assert t2.after_s == pytest.approx(PROFILE.seconds(turns[1].tokens)
                                       - PROFILE.seconds(cached))
    assert 0 < t2.after_s < PROFILE.seconds(turns[1].tokens) / 4


def test_evict_with_a_store_writes_back_then_reloads_real_bytes() -> None:
    turns = session_turns([session(0, 2_048, [512])], block_tokens=512)
    plan = planner("ppd/evict", store="s0").run(turns)
    kinds = [t.kind for t in plan.transfers]
    assert kinds.count("kv-writeback") >= 1
    assert "kv-reload" in kinds
    wb = [t for t in plan.transfers if t.kind == "kv-writeback"]
    assert all(t.src == "d0" and t.dst == "s0" and t.from_store and t.release and t.keep
               for t in wb)
    reload = next(t for t in plan.transfers if t.kind == "kv-reload")
    assert reload.src == "s0"
    assert reload.dst == "d0"
    assert reload.from_store
    assert reload.keep
    assert reload.start_ns > max(t.start_ns for t in wb[:1])
    written = {k for t in wb for k, _ in t.blocks}
    assert {k for k, _ in reload.blocks} <= written
    t2 = plan.turns[1]
    assert t2.hit == 0
    assert t2.reload == len(reload.blocks)
    assert t2.how == "append-local"


def test_evict_without_a_store_drops_and_prefills_again() -> None:
    turns = session_turns([session(0, 2_048, [512])], block_tokens=512)
    plan = planner("ppd/evict").run(turns)
    drops = [op for op in plan.ops["d0"] if op["op"] == "drop"]
    assert drops
    assert plan.dropped > 0
    assert plan.turns[1].how == "prefill"
    assert plan.turns[1].hit == 0
    assert [t.kind for t in plan.transfers] == ["kv-prefill", "kv-prefill"]


@pytest.mark.parametrize(("pause", "kept"), [(0.5, True), (60.0, False)])
def test_ttl_keeps_the_kv_across_a_short_pause_only(pause: float, kept: bool) -> None:
    turns = session_turns([session(0, 2_048, [512], pause=pause)], block_tokens=512)
    plan = planner("ppd/ttl", ttl_s=5.0).run(turns)
    assert (plan.turns[1].hit > 0) is kept
    assert (plan.turns[1].how == "append-local") is kept


def test_ttl_auto_is_the_factor_times_the_reload_cost() -> None:
    turns = session_turns([session(0, 8_192, [512], pause=3.0)], block_tokens=512)
    # reload of ~8K tokens (8 MiB at 1 Gbit/s) is ~0.07 s: x20 = 1.4 s < 3 s pause: evicted
    assert planner("ppd/ttl", store="s0").run(turns).turns[1].hit == 0
    # x100 = 7 s > 3 s: kept
    assert planner("ppd/ttl", store="s0", ttl_factor=100.0).run(turns).turns[1].hit > 0


def test_remote_append_moves_only_the_missing_blocks_and_names_the_reused_ones() -> None:
    turns = session_turns([session(0, 2_048, [1_024])], block_tokens=512)
    plan = planner("ppd/pin", append="remote").run(turns)
    assert len(plan.transfers) == 2
    second = plan.transfers[1]
    held = {k for k, _ in turns[0].output_blocks}
    assert set(second.reuse) <= held
    assert second.reuse
    assert not {k for k, _ in second.blocks} & set(second.reuse)
    assert second.nbytes < plan.transfers[0].nbytes
    assert plan.turns[1].how == "append-remote"


def test_a_full_cache_evicts_and_counts_it() -> None:
    sessions = [session(i, 4_096, [256], start=i * 0.01, pause=0.5) for i in range(4)]
    turns = session_turns(sessions, block_tokens=512)
    plan = planner("ppd/pin", cache=10 * 512 * BPT).run(turns)
    assert plan.evictions + plan.forced > 0
    assert plan.cache_peak["d0"] <= 10 * 512 * BPT
    # a session whose KV was forced out prefills again: no turn reuses a block not held
    for tp in plan.turns:
        assert tp.hit + tp.reload + tp.computed == tp.blocks


def test_the_duration_cuts_late_turns_and_counts_them() -> None:
    turns = session_turns([session(0, 1_024, [256, 256], pause=10.0)], block_tokens=512)
    plan = planner("pd", duration_s=5.0).run(turns)
    assert len(plan.turns) == 1
    assert plan.cut == 2


def _requests() -> list[TraceRequest]:
    ids = [(1, 2, 3), (1, 2, 4, 5), (1, 2, 3, 6), (7,), (7, 8)]
    return [TraceRequest(index=i, line=i + 1, t_s=i * 0.5, input_tokens=len(h) * 512,
                         output_tokens=10, hash_ids=h) for i, h in enumerate(ids)]


def test_trace_hits_with_a_large_cache_are_what_the_trace_implies() -> None:
    reqs = _requests()
    plan = planner("ppd/pin", append="remote", decode=("d0", "d1")).run(
        trace_turns(reqs, 512))
    hits = sum(tp.hit for tp in plan.turns)
    implied = reusable_share(reqs, 512)
    assert hits == implied["reusable_blocks"] == 2 + 3 + 1
    # blocks that moved: exactly the ones not reused
    moved = sum(len(t.blocks) for t in plan.transfers)
    assert moved == implied["blocks"] - implied["reusable_blocks"]
    # cache-aware routing kept each prefix family on one decode node
    assert len({tp.decode for tp in plan.turns[:3]}) == 1


def test_account_adds_measured_kv_readiness_to_the_modelled_compute() -> None:
    turns = session_turns([session(0, 2_048, [512])], block_tokens=512)
    plan = planner("ppd/pin").run(turns)
    t1, t2 = plan.turns
    assert t1.wait is not None
    assert t2.wait is not None
    late = 0.25  # the fabric took 0.25 s longer than planned for turn 1's KV
    ready = {t1.wait: t1.planned_first_s + late,
             t2.wait: t2.planned_first_s - t2.after_s}
    rows = account(plan, ready)
    assert rows[0]["ttft_s"] == pytest.approx(t1.planned_first_s + late - t1.arrival_s)
    assert rows[1]["ttft_s"] == pytest.approx(t2.planned_first_s - t2.arrival_s)
    s = summarise(rows)
    assert s["turn1_ttft_p50_s"] == rows[0]["ttft_s"]
    assert s["later_ttft_p50_s"] == rows[1]["ttft_s"]
    assert 0 < s["hit_rate"] < 1
    # a turn whose KV never arrived has no TTFT
    rows = account(plan, {})
    assert rows[0]["ttft_s"] is None
    assert math.isnan(summarise(rows)["turn1_ttft_p50_s"])


def test_unknown_variants_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        planner("ppd/forever")


def test_a_turn_whose_whole_prompt_is_held_moves_nothing_even_with_remote_append() -> None:
    ids = [(1, 2), (1, 2)]
    reqs = [TraceRequest(index=i, line=i + 1, t_s=i * 1.0, input_tokens=1_024,
                         output_tokens=10, hash_ids=h) for i, h in enumerate(ids)]
    plan = planner("ppd/pin", append="remote").run(trace_turns(reqs, 512))
    assert len(plan.transfers) == 1
    second = plan.turns[1]
    assert second.hit == 2
    assert second.how == "append-local"
    assert second.after_s == 0.0
    assert plan.ops["d0"][-1]["reuse"] == [1, 2]


def test_a_local_append_counts_its_reload_as_the_fabrics_part_and_not_its_queue() -> None:
    turns = session_turns([session(0, 2_048, [512])], block_tokens=512)
    plan = planner("ppd/evict", store="s0").run(turns)
    t2 = plan.turns[1]
    assert t2.reload_wait is not None
    assert t2.wait is not None
    back = t2.arrival_s + 0.5  # the reload took 0.5 s on the fabric
    rows = account(plan, {plan.turns[0].wait: plan.turns[0].planned_first_s,
                          t2.reload_wait: back, t2.wait: back})
    assert rows[1]["kv_wait_s"] == pytest.approx(0.5)
    assert rows[1]["ttft_s"] == pytest.approx(max(back, t2.op_start_s) + t2.after_s
                                              - t2.arrival_s)
    # without a reload, a local append waits for the fabric only if its proof came late
    pin = planner("ppd/pin").run(turns)
    p2 = pin.turns[1]
    rows = account(pin, {pin.turns[0].wait: pin.turns[0].planned_first_s,
                         p2.wait: p2.op_start_s})
    assert rows[1]["kv_wait_s"] == 0.0


def test_session_keys_name_every_block_of_long_contexts_and_refuse_past_their_range() -> None:
    assert session_key(65_535, (1 << 20) - 1, 512) < 1 << 62
    assert len({session_key(s, b, t) for s in (0, 1) for b in (0, 1) for t in (1, 512)}) == 8
    with pytest.raises(ValueError, match="out of range"):
        session_key(0, 1 << 20, 16)
    with pytest.raises(ValueError, match="out of range"):
        session_key(1 << 16, 0, 16)


def test_a_partial_block_moves_in_whole_kv_blocks_of_the_model() -> None:
    reqs = [TraceRequest(index=0, line=1, t_s=0.0, input_tokens=612, output_tokens=1,
                         hash_ids=(1, 2))]
    plan = planner("pd", kv_block_tokens=16).run(trace_turns(reqs, 512))
    assert dict(plan.transfers[0].blocks) == {1: 512 * BPT, 2: 112 * BPT}  # 100 -> 7 x 16


def test_trace_sessions_keep_a_conversation_on_its_decode_node() -> None:
    from fabric.workload.sessions import sessions_from_trace

    ids = [(1, 2, 3), (9, 8), (1, 2, 3, 4, 5), (9, 8, 7), (1, 2, 3, 4, 5, 6)]
    reqs = [TraceRequest(index=i, line=i + 1, t_s=i * 0.5, input_tokens=len(h) * 512,
                         output_tokens=10, hash_ids=h) for i, h in enumerate(ids)]
    groups = sessions_from_trace(reqs, block_tokens=512, min_blocks=2)
    turns = trace_turns(reqs, 512, groups)
    assert [(t.session, t.index) for t in turns] == [(turns[0].session, 0),
                                                    (turns[1].session, 0),
                                                    (turns[0].session, 1),
                                                    (turns[1].session, 1),
                                                    (turns[0].session, 2)]
    assert [t.at_s for t in turns] == [0.0, 0.5, 1.0, 1.5, 2.0]
    plan = planner("ppd/pin", append="remote", decode=("d0", "d1")).run(turns)
    node = {tp.session: tp.decode for tp in plan.turns if tp.index == 0}
    assert all(tp.decode == node[tp.session] for tp in plan.turns)
    assert [tp.hit for tp in plan.turns] == [0, 0, 3, 2, 5]
