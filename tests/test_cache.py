"""The KV block cache model (fabric.workload.cache): eviction order by policy, the prefix
touch order, pins and forced evictions, TTL expiry, and a property test against a naive
reference model written here (a list scan per eviction)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError
from fabric.workload.cache import BlockCache


def filled(policy: str, keys: list[int], size: int = 10, cap: int = 40) -> BlockCache:
    c = BlockCache(cap, policy)
    for i, k in enumerate(keys):
        assert c.insert(k, size, now=float(i)) == []
    return c


# -- eviction order --

def test_lru_evicts_the_least_recently_used() -> None:
    c = filled("lru", [1, 2, 3, 4])
    assert c.lookup([1], now=5) == 1  # 1 is now the most recent
    assert c.insert(5, 10, now=6) == [2]
    assert c.insert(6, 20, now=7) == [3, 4]
    assert sorted(c.keys()) == [1, 5, 6]
    assert c.evictions == 3
    assert c.forced == 0


def test_fifo_ignores_lookups() -> None:
    c = filled("fifo", [1, 2, 3, 4])
    assert c.lookup([1], now=5) == 1
    assert c.insert(5, 10, now=6) == [1]
    assert c.insert(3, 10, now=7) == []  # held: no room needed, its place unchanged
    assert c.insert(6, 10, now=8) == [2]
    assert c.keys() == [3, 4, 5, 6]


def test_lookup_counts_the_leading_held_blocks_and_touches_tail_first() -> None:
    c = filled("lru", [1, 2, 3, 4])
    assert c.prefix([1, 2, 9, 3]) == 2
    assert c.lookup([1, 2, 9, 3], now=5) == 2  # 3 is held but past a miss: no hit
    assert (c.hits, c.misses) == (2, 2)
    # touched 2 then 1: the head is the most recent, so the tail goes first
    assert c.keys() == [3, 4, 2, 1]
    assert c.statistics().hit_rate == 0.5


def test_insert_all_puts_the_head_last() -> None:
    c = BlockCache(30, "lru")
    assert c.insert_all([(1, 10), (2, 10), (3, 10)], now=0) == []
    assert c.keys() == [3, 2, 1]
    # a request larger than the cache keeps its head
    assert c.insert_all([(5, 10), (6, 10), (7, 10), (8, 10)], now=1) == [3, 2, 1, 8]
    assert c.keys() == [7, 6, 5]


def test_a_block_larger_than_the_cache_is_refused() -> None:
    c = filled("lru", [1])
    with pytest.raises(FabricError, match=r"block 9 of 41 bytes is larger than the whole "
                                          r"cache \(40 bytes\)"):
        c.insert(9, 41, now=1)
    assert c.keys() == [1]
    assert c.insert(9, 40, now=2) == [1]  # exactly the cache: fits, alone


@pytest.mark.parametrize(("cap", "policy"), [(0, "lru"), (-5, "lru"), (10, "mru")])
def test_bad_cache(cap: int, policy: str) -> None:
    with pytest.raises(FabricError):
        BlockCache(cap, policy)


def test_reinsert_with_another_size_resizes() -> None:
    c = filled("lru", [1, 2, 3])
    c.pin([2], until=100)
    assert c.insert(2, 20, now=5) == []  # 10 bytes more: fits
    assert c.insert(2, 30, now=6) == [1]
    assert c.held_bytes == 40
    assert c.size_of(2) == 30
    assert c.pinned(2)


def test_time_must_not_go_back() -> None:
    c = filled("lru", [1, 2])
    with pytest.raises(ValueError, match="went back"):
        c.lookup([1], now=0.5)


# -- pins --

def test_pinned_blocks_are_passed_over_until_their_pin_ends() -> None:
    c = filled("lru", [1, 2, 3, 4])
    assert c.pin([1, 2, 99], until=10) == 2  # 99 is not held
    assert c.insert(5, 10, now=5) == [3]
    assert c.insert(6, 10, now=9.999) == [4]
    assert c.insert(7, 10, now=10) == [1]  # the pins ended at 10: 1 is the oldest again
    assert c.forced == 0


def test_only_pinned_left_forces_the_least_recently_used_pinned() -> None:
    c = filled("fifo", [1, 2, 3, 4])
    c.pin([1, 2, 3, 4], until=math.inf)
    c.lookup([1, 2], now=5)  # used order: 3, 4, 2, 1 (fifo order is still 1, 2, 3, 4)
    assert c.insert(5, 20, now=6) == [3, 4]
    assert (c.evictions, c.forced) == (2, 2)
    assert not c.pinned(5)
    assert c.insert(6, 10, now=7) == [5]  # an unpinned block goes before a pinned one
    assert c.forced == 2


def test_unpin_and_remove() -> None:
    c = filled("lru", [1, 2, 3, 4])
    c.pin([1, 2], until=50)
    assert c.unpin([1, 3]) == 1
    assert c.insert(5, 10, now=5) == [1]
    assert c.remove([2, 42]) == [2]
    assert c.removed == 1
    assert c.held_bytes == 30
    assert c.insert(6, 10, now=6) == []


def test_expired_reports_each_ran_out_pin_once() -> None:
    c = filled("lru", [1, 2, 3, 4])
    c.pin([1], until=8)
    c.pin([2, 3], until=6)
    c.pin([4], until=math.inf)
    assert c.expired(5) == []
    assert c.expired(7) == [2, 3]
    assert c.expired(7) == []
    c.remove([1])
    assert c.expired(9) == []  # 1 ran out, but it is no longer held
    assert c.pinned(4)
    assert not c.pinned(2)
    c.pin([2], until=3)  # already over: not a pin, not an expiry
    assert not c.pinned(2)
    assert c.expired(20) == []


def test_repinning_replaces_the_end() -> None:
    c = filled("lru", [1, 2])
    c.pin([1], until=100)
    c.pin([1], until=5)
    assert c.expired(6) == [1]


def test_statistics_track_the_peak() -> None:
    c = filled("lru", [1, 2, 3])
    c.remove([1, 2])
    s = c.statistics()
    assert (s.held_bytes, s.held_blocks, s.peak_bytes, s.peak_blocks) == (10, 1, 30, 3)


# -- property test against a naive model --

class Naive:
    """The same cache written the slow, obvious way: a scan for every choice."""

    def __init__(self, cap: int, policy: str) -> None:
        self.cap, self.policy = cap, policy
        self.size: dict[int, int] = {}
        self.order: dict[int, int] = {}
        self.used: dict[int, int] = {}
        self.pins: dict[int, float] = {}
        self.ran_out: dict[int, float] = {}
        self.now = -math.inf
        self.seq = 0
        self.evictions = self.forced = 0

    def advance(self, now: float) -> None:
        self.now = now
        for k, until in list(self.pins.items()):
            if until <= now:
                del self.pins[k]
                self.ran_out[k] = until

    def touch(self, k: int) -> None:
        self.seq += 1
        self.used[k] = self.seq
        if self.policy == "lru":
            self.order[k] = self.seq

    def drop(self, k: int) -> None:
        for d in (self.size, self.order, self.used, self.pins, self.ran_out):
            d.pop(k, None)  # type: ignore[attr-defined]

    def lookup(self, keys: list[int], now: float) -> int:
        self.advance(now)
        n = 0
        while n < len(keys) and keys[n] in self.size:
            n += 1
        for k in reversed(keys[:n]):
            self.touch(k)
        return n

    def insert(self, k: int, nbytes: int, now: float) -> list[int]:
        self.advance(now)
        until = None
        if k in self.size:
            if self.size[k] == nbytes:
                self.touch(k)
                return []
            until = self.pins.get(k)
            self.drop(k)
        out = []
        while sum(self.size.values()) + nbytes > self.cap:
            free = [x for x in self.size if x not in self.pins]
            if free:
                v = min(free, key=self.order.__getitem__)
            else:
                v = min(self.pins, key=self.used.__getitem__)
                self.forced += 1
            self.drop(v)
            self.evictions += 1
            out.append(v)
        self.seq += 1
        self.size[k], self.order[k], self.used[k] = nbytes, self.seq, self.seq
        if until is not None:
            self.pin([k], until)
        return out

    def pin(self, keys: list[int], until: float) -> None:
        for k in keys:
            if k in self.size:
                self.ran_out.pop(k, None)
                if until <= self.now:
                    self.pins.pop(k, None)
                else:
                    self.pins[k] = until

    def expired(self, now: float) -> list[int]:
        self.advance(now)
        out = sorted((u, k) for k, u in self.ran_out.items() if k in self.size)
        self.ran_out.clear()
        return [k for _, k in out]


KEYS = st.integers(0, 11)
OPS = st.lists(st.one_of(
    st.tuples(st.just("insert"), KEYS, st.integers(1, 12)),
    st.tuples(st.just("insert"), KEYS, st.integers(1, 12),
              st.sampled_from([1.0, 5.0, math.inf])),  # and pin it
    st.tuples(st.just("lookup"), st.lists(KEYS, max_size=5)),
    st.tuples(st.just("pin"), st.lists(KEYS, max_size=4),
              st.sampled_from([0.5, 1.0, 3.0, 10.0, math.inf])),
    st.tuples(st.just("unpin"), st.lists(KEYS, max_size=4)),
    st.tuples(st.just("remove"), st.lists(KEYS, max_size=3)),
    st.tuples(st.just("expired")),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.5, 1.0, 2.0])),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(cap=st.integers(12, 40), policy=st.sampled_from(["lru", "fifo"]), ops=OPS)
def test_cache_matches_the_naive_model(cap: int, policy: str,
                                       ops: list[tuple[object, ...]]) -> None:
    c, m = BlockCache(cap, policy), Naive(cap, policy)
    now = 0.0
    for op in ops:
        name = op[0]
        if name == "wait":
            now += op[1]  # type: ignore[operator]
        elif name == "insert":
            k, n = op[1], op[2]
            assert c.insert(k, n, now) == m.insert(k, n, now)  # type: ignore[arg-type]
            if len(op) == 4:
                c.pin([k], now + op[3])  # type: ignore[list-item, operator]
                m.pin([k], now + op[3])  # type: ignore[list-item, operator]
        elif name == "lookup":
            assert c.lookup(op[1], now) == m.lookup(op[1], now)  # type: ignore[arg-type]
        elif name == "pin":
            c.pin(op[1], now + op[2])  # type: ignore[arg-type, operator]
            m.pin(op[1], now + op[2])  # type: ignore[arg-type, operator]
        elif name == "unpin":
            c.unpin(op[1])  # type: ignore[arg-type]
            for k in op[1]:  # type: ignore[attr-defined]
                m.pins.pop(k, None)
        elif name == "remove":
            c.remove(op[1])  # type: ignore[arg-type]
            for k in op[1]:  # type: ignore[attr-defined]
                m.drop(k)
        elif name == "expired":
            assert c.expired(now) == m.expired(now)
        # invariants, after every step
        assert c.held_bytes <= cap
        assert c.held_bytes == sum(m.size.values())
        assert c.peak_bytes >= c.held_bytes
        assert sorted(c.keys()) == sorted(m.size)
        assert {k for k in m.size if c.pinned(k)} == {k for k in m.pins if m.pins[k] > m.now}
        assert (c.evictions, c.forced) == (m.evictions, m.forced)
    # the eviction order agrees too
    assert c.keys() == sorted(m.size, key=m.order.__getitem__)


@settings(max_examples=200, deadline=None)
@given(cap=st.integers(10, 60), policy=st.sampled_from(["lru", "fifo"]),
       blocks=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10)), max_size=80),
       pin_every=st.integers(1, 5))
def test_pins_hold_while_room_remains(cap: int, policy: str,
                                      blocks: list[tuple[int, int]], pin_every: int) -> None:
    """A pinned block is evicted only when no unpinned block is left (then it is forced)."""
    c = BlockCache(cap, policy)
    for i, (k, n) in enumerate(blocks):
        before = set(c.keys())
        pinned = {x for x in before if c.pinned(x)}
        out = c.insert(k, n, now=float(i))
        assert c.held_bytes <= cap
        forced = [x for x in out if x in pinned]
        if forced:  # every unpinned block went first
            assert set(out) >= (before - pinned - {k})
        if i % pin_every == 0:
            c.pin([k], until=math.inf)
    assert c.forced <= c.evictions
