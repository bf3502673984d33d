"""Agentic sessions as data: chains of turns whose context grows, generated from the
`workload.sessions` spec or grouped out of a replayed trace's shared prefixes.

A session is a chain of turns. Turn k (numbered from 1) appends `new_tokens` of input to the
session's context, the model answers with `output_tokens`, and a tool call pauses the agent
for `pause_before_s` before turn k+1 is sent. So the prompt of turn k is
`context_before(k) + new_tokens`, where `context_before(k)` is every earlier turn's new and
output tokens: a KV cache that kept the session's earlier turns prefills only `new_tokens`.

Pure and seeded: the same spec and seed give the same sessions; no clock is read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fabric.topology.traffic import PromptDist
from fabric.traffic import arrivals, sample_prompt

if TYPE_CHECKING:
    from fabric.topology.workload import Dist, SessionsSpec

__all__ = ["Session", "TraceRequest", "Turn", "draw", "generate_sessions",
           "sessions_from_trace"]


@dataclass(frozen=True)
class Turn:
    """One turn of a session. `index` counts from 1; `pause_before_s` is the tool-call pause
    between the previous turn and this one (0 for turn 1); `request` is the trace request's
    index when the turn came from a trace (None for a generated session)."""

    index: int
    new_tokens: int
    output_tokens: int
    pause_before_s: float
    request: int | None = None

    @property
    def tokens(self) -> int:
        """Tokens this turn adds to the session's context (its new input and its output)."""
        return self.new_tokens + self.output_tokens


@dataclass(frozen=True)
class Session:
    """A chain of turns from `start_s` (seconds from the run's start for a generated session,
    the first request's trace time for a trace's)."""

    id: int
    start_s: float
    turns: tuple[Turn, ...]

    def context_before(self, k: int) -> int:
        """Tokens of context before turn `k` (1-based): every earlier turn's new input and
        output. 0 for turn 1; `context_before(len(turns) + 1)` is the whole session's."""
        if not 1 <= k <= len(self.turns) + 1:
            raise ValueError(f"session {self.id} has turns 1..{len(self.turns)}, not {k}")
        return sum(t.tokens for t in self.turns[: k - 1])

    def prompt_tokens(self, k: int) -> int:
        """The input of turn `k` (1-based): its context and its new tokens."""
        return self.context_before(k) + self.turns[k - 1].new_tokens


# ---- generated sessions ---------------------------------------------------------------------

_PAUSE_UNIT = 1e6  # pauses are drawn in microseconds (sample_prompt draws whole numbers)


def draw(rng: np.random.Generator, dist: Dist, scale: float = 1.0) -> float:
    """One draw of `dist` in its units: fixed at the mean when sigma is 0 (or the mean is
    not above 0), else `fabric.traffic.sample_prompt`'s truncated log-normal, taken in
    units of 1/`scale` (whole numbers) and brought back."""
    if dist.sigma == 0 or dist.mean <= 0:
        return float(min(max(dist.mean, dist.min), dist.max))
    lo = math.ceil(dist.min * scale)
    hi = math.floor(min(dist.max, 1e15 / scale) * scale)
    if lo > hi:  # no whole unit inside [min, max]: the bounds are as near as it gets
        return float(min(max(dist.mean, dist.min), dist.max))
    x = sample_prompt(rng, PromptDist(mean=dist.mean * scale, sigma=dist.sigma, min=lo, max=hi))
    return x / scale


def generate_sessions(spec: SessionsSpec, seed: int) -> list[Session]:
    """`spec.count` sessions, starts from `spec`'s arrival process (the first at 0), each of
    turns_min..turns_max turns with drawn tokens and pauses. Deterministic in (spec, seed)."""
    rng = np.random.default_rng(seed)
    starts = arrivals(rng, spec.count, spec.rate_per_s, spec.arrival)
    out: list[Session] = []
    for sid, start in enumerate(starts):
        n = int(rng.integers(spec.turns_min, spec.turns_max + 1))
        turns = []
        for k in range(1, n + 1):
            new = round(draw(rng, spec.first if k == 1 else spec.append))
            output = round(draw(rng, spec.output))
            pause = 0.0 if k == 1 else draw(rng, spec.pause, _PAUSE_UNIT)
            turns.append(Turn(index=k, new_tokens=new, output_tokens=output,
                              pause_before_s=pause))
        out.append(Session(id=sid, start_s=float(start), turns=tuple(turns)))
    return out


# ---- sessions out of a trace ----------------------------------------------------------------

class TraceRequest(Protocol):
    """What `sessions_from_trace` reads of a trace request (fabric.workload.trace's)."""

    @property
    def t_s(self) -> float: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def hash_ids(self) -> Sequence[int]: ...
    @property
    def index(self) -> int: ...


class _Trie:
    """Prefix tree of hash ids; a node lists the requests whose (matched) ids end there."""

    __slots__ = ("ends", "kids")

    def __init__(self) -> None:
        self.kids: dict[int, _Trie] = {}
        self.ends: list[int] = []


def sessions_from_trace(requests: Iterable[TraceRequest], *, block_tokens: int | None = None,
                        min_blocks: int = 1) -> list[Session]:
    """Group trace requests into sessions by their shared prefixes.

    Requests are taken in arrival order (`t_s`, then `index`). A request whose hash_ids
    start with all of an earlier request's hash_ids continues that request's session as its
    next turn; when several earlier requests qualify, the one with the most hash_ids (and of
    those, the latest that has no next turn yet) is the one continued. Its turn's
    `new_tokens` are its input less the earlier request's input and output (at least 0),
    and its pause is the time between the two arrivals. Every other request starts a
    session. A session is a chain: when every request it could continue already has a next
    turn (the trace branches there), the request starts a session of its own instead.

    `block_tokens`: match on the earlier request's *complete* blocks only. A trace hashes a
    prompt's partial last block too, and a next turn that fills it hashes it anew, so in the
    Mooncake conversation trace a later turn almost never repeats all of an earlier turn's
    ids (130 of its 12,031 requests do, 118 of them an identical prompt); with
    `block_tokens=512` its later turns are found. `min_blocks`: a match must cover at least
    this many blocks (that trace's every prompt starts with one shared block, a system
    prompt, which alone says nothing about a session: use 2 there).
    """
    reqs = sorted(requests, key=lambda r: (r.t_s, r.index))
    root = _Trie()
    sessions: list[list[tuple[TraceRequest, Turn]]] = []
    session_of: dict[int, int] = {}  # position in reqs -> its session
    continued: set[int] = set()
    for pos, r in enumerate(reqs):
        ids = list(r.hash_ids)
        deepest: list[int] = []
        node = root
        for depth, h in enumerate(ids, 1):
            nxt = node.kids.get(h)
            if nxt is None:
                break
            node = nxt
            if node.ends and depth >= min_blocks:
                deepest = node.ends
        best = next((p for p in reversed(deepest) if p not in continued), None)
        if best is not None:
            e = reqs[best]
            continued.add(best)
            sid = session_of[best]
            turn = Turn(index=len(sessions[sid]) + 1,
                        new_tokens=max(0, r.input_tokens - e.input_tokens - e.output_tokens),
                        output_tokens=r.output_tokens, pause_before_s=r.t_s - e.t_s,
                        request=r.index)
        else:
            sid = len(sessions)
            sessions.append([])
            turn = Turn(index=1, new_tokens=r.input_tokens, output_tokens=r.output_tokens,
                        pause_before_s=0.0, request=r.index)
        sessions[sid].append((r, turn))
        session_of[pos] = sid
        keep = len(ids)
        if block_tokens is not None:
            keep = min(keep, r.input_tokens // block_tokens)
        if keep:
            node = root
            for h in ids[:keep]:
                node = node.kids.setdefault(h, _Trie())
            node.ends.append(pos)
    return [Session(id=sid, start_s=float(turns[0][0].t_s), turns=tuple(t for _, t in turns))
            for sid, turns in enumerate(sessions)]
