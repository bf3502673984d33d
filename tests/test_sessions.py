"""Agentic sessions (fabric.workload.sessions): generated from a spec under a seed, and
grouped out of a trace's shared prefixes. Pure: no clock, no sockets."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest

from fabric.topology.workload import Dist, SessionsSpec
from fabric.workload.sessions import (
    Session,
    Turn,
    draw,
    generate_sessions,
    sessions_from_trace,
)

SPEC = SessionsSpec(count=40, rate_per_s=0.5, arrival="poisson", turns_min=3, turns_max=8,
                    first=Dist(15000, 0.5, 2000, 60000), append=Dist(2000, 0.8, 100, 9000),
                    output=Dist(300, 0.5, 10, 1200), pause=Dist(5.0, 0.8, 0.5, 60.0))


def test_the_same_seed_gives_the_same_sessions():
    assert generate_sessions(SPEC, 7) == generate_sessions(SPEC, 7)
    assert generate_sessions(SPEC, 7) != generate_sessions(SPEC, 8)


def test_counts_starts_and_turn_numbers():
    sessions = generate_sessions(SPEC, 1)
    assert [s.id for s in sessions] == list(range(40))
    starts = [s.start_s for s in sessions]
    assert starts[0] == 0.0
    assert starts == sorted(starts)
    # 40 Poisson starts at 0.5/s: the last is near 78 s
    assert 40 < starts[-1] < 130
    lengths = {len(s.turns) for s in sessions}
    assert lengths <= set(range(3, 9))
    assert len(lengths) >= 4
    for s in sessions:
        assert [t.index for t in s.turns] == list(range(1, len(s.turns) + 1))
        assert s.turns[0].pause_before_s == 0.0
        assert all(t.request is None for t in s.turns)


def test_every_draw_stays_within_its_bounds():
    seen_first, seen_pause = [], []
    for seed in range(5):
        for s in generate_sessions(SPEC, seed):
            first, *later = s.turns
            assert 2000 <= first.new_tokens <= 60000
            seen_first.append(first.new_tokens)
            for t in s.turns:
                assert 10 <= t.output_tokens <= 1200
                assert isinstance(t.new_tokens, int)
                assert isinstance(t.output_tokens, int)
            for t in later:
                assert 100 <= t.new_tokens <= 9000
                assert 0.5 <= t.pause_before_s <= 60.0
                seen_pause.append(t.pause_before_s)
    # log-normal around the mean: the draws spread, and their median sits below the mean
    assert len(set(seen_first)) > 100
    assert len(set(seen_pause)) > 100
    assert 8000 < float(np.median(seen_first)) < 15000
    assert 2.5 < float(np.median(seen_pause)) < 5.0


def test_fixed_quantities_and_a_fixed_clock():
    spec = replace(SPEC, count=5, arrival="fixed", turns_min=4, turns_max=4,
                   first=Dist(1000, 0, 1000, 1000), append=Dist(200, 0, 200, 200),
                   output=Dist(50, 0, 50, 50), pause=Dist(2.5, 0, 2.5, 2.5))
    sessions = generate_sessions(spec, 3)
    assert [s.start_s for s in sessions] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert sessions[2].turns == (Turn(1, 1000, 50, 0.0), Turn(2, 200, 50, 2.5),
                                 Turn(3, 200, 50, 2.5), Turn(4, 200, 50, 2.5))


def test_context_grows_by_each_turns_input_and_output():
    for s in generate_sessions(SPEC, 2):
        assert s.context_before(1) == 0
        for k in range(2, len(s.turns) + 2):
            prev = s.turns[k - 2]
            assert s.context_before(k) == s.context_before(k - 1) + prev.new_tokens \
                + prev.output_tokens
        for k, t in enumerate(s.turns, 1):
            assert s.prompt_tokens(k) == s.context_before(k) + t.new_tokens
        assert s.context_before(len(s.turns) + 1) == sum(t.tokens for t in s.turns)
    s = Session(0, 0.0, (Turn(1, 15000, 300, 0.0), Turn(2, 2000, 300, 5.0),
                         Turn(3, 2000, 300, 5.0)))
    assert [s.context_before(k) for k in (1, 2, 3, 4)] == [0, 15300, 17600, 19900]
    assert s.prompt_tokens(3) == 19600
    with pytest.raises(ValueError, match="has turns 1..3, not 0"):
        s.context_before(0)
    with pytest.raises(ValueError, match="has turns 1..3, not 5"):
        s.context_before(5)


def test_draw_fixed_zero_and_fine_grained():
    rng = np.random.default_rng(0)
    assert draw(rng, Dist(0, 0.5, 0, 10)) == 0.0  # a zero mean has no log: fixed
    assert draw(rng, Dist(7, 0, 0, 10)) == 7.0
    xs = [draw(rng, Dist(0.002, 0.5, 0.001, 0.004), 1e6) for _ in range(200)]
    assert all(0.001 <= x <= 0.004 for x in xs)
    assert len(set(xs)) > 50  # microsecond resolution, not whole seconds
    assert math.isclose(float(np.mean(xs)), 0.002, rel_tol=0.2)


# ---- sessions from a trace --------------------------------------------------------------------

@dataclass(frozen=True)
class Req:
    index: int
    t_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]


def test_trace_requests_that_extend_an_earlier_prefix_are_its_next_turn():
    reqs = [
        Req(0, 0.0, 1024, 100, (1, 2)),
        Req(1, 1.0, 600, 10, (9, 8)),  # another session
        Req(2, 3.0, 1600, 50, (1, 2, 3, 4)),  # continues 0: 1600 - 1124 = 476 new tokens
        Req(3, 4.0, 2000, 20, (1, 2, 3, 4, 5)),  # continues 2 (the longer of 0 and 2)
        Req(4, 4.5, 500, 5, (9,)),  # a prefix of 1, not an extension: its own session
        Req(5, 6.0, 700, 7, (9, 8, 7)),  # continues 1, input below 1's context: 0 new
        Req(6, 7.0, 1700, 1, (1, 2, 3, 4, 6)),  # extends 2, which already has a next turn
    ]
    sessions = sessions_from_trace(reversed(reqs))  # order given does not matter
    assert sessions == [
        Session(0, 0.0, (Turn(1, 1024, 100, 0.0, request=0), Turn(2, 476, 50, 3.0, request=2),
                         Turn(3, 350, 20, 1.0, request=3))),
        Session(1, 1.0, (Turn(1, 600, 10, 0.0, request=1), Turn(2, 90, 7, 5.0, request=5))),
        Session(2, 4.5, (Turn(1, 500, 5, 0.0, request=4),)),
        Session(3, 7.0, (Turn(1, 1700, 1, 0.0, request=6),)),
    ]
    assert sessions[0].context_before(3) == 1024 + 100 + 476 + 50


def test_trace_identical_prompts_chain_and_new_tokens_floor_at_zero():
    reqs = [Req(0, 0.0, 1000, 10, (1, 2)), Req(1, 2.0, 1000, 10, (1, 2)),
            Req(2, 5.0, 1000, 10, (1, 2))]
    (s,) = sessions_from_trace(reqs)
    assert [(t.index, t.new_tokens, t.pause_before_s, t.request) for t in s.turns] == [
        (1, 1000, 0.0, 0), (2, 0, 2.0, 1), (3, 0, 3.0, 2)]


def test_trace_complete_blocks_and_a_shared_first_block():
    # 700 tokens hash as two 512-token blocks, the second partial: the next turn fills it
    # and hashes it anew (30), so only block_tokens= sees request 1 continue request 0
    reqs = [Req(0, 0.0, 700, 100, (0, 10)), Req(1, 1.0, 1500, 10, (0, 30, 31))]
    assert [[t.request for t in s.turns] for s in sessions_from_trace(reqs)] == [[0], [1]]
    with_blocks = sessions_from_trace(reqs, block_tokens=512)
    assert [[t.request for t in s.turns] for s in with_blocks] == [[0, 1]]
    assert with_blocks[0].turns[1].new_tokens == 1500 - 800
    # request 1 shares only block 0 (in the Mooncake trace, every prompt's system prompt)
    # with request 0, whose one complete block it is: min_blocks=2 takes that for no session
    reqs2 = [Req(0, 0.0, 600, 10, (0, 10)), Req(1, 1.0, 900, 10, (0, 20))]
    assert [[t.request for t in s.turns]
            for s in sessions_from_trace(reqs2, block_tokens=512)] == [[0, 1]]
    assert [[t.request for t in s.turns]
            for s in sessions_from_trace(reqs2, block_tokens=512, min_blocks=2)] == [[0], [1]]
    # a request shorter than a block has no complete block: nothing continues it
    reqs3 = [Req(0, 0.0, 300, 10, (0,)), Req(1, 1.0, 900, 10, (0, 20))]
    assert len(sessions_from_trace(reqs3, block_tokens=512)) == 2
    assert len(sessions_from_trace(reqs3)) == 1


def test_trace_without_hash_ids_is_one_session_a_request():
    reqs = [Req(i, float(i), 100, 1, ()) for i in range(3)]
    assert [len(s.turns) for s in sessions_from_trace(reqs)] == [1, 1, 1]
    assert sessions_from_trace([]) == []
