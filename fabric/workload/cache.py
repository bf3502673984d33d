"""A node's bounded KV block cache, as a model the planner drives: which blocks a node holds
at each moment, which a new block pushes out, and what a pin keeps.

Sans-IO: no clock, time is passed in (fabric seconds) and must not go backwards, so a pin's
end is decided once. A block is a key (an int) and a size in bytes; the cache holds at most
`capacity_bytes`. Two policies choose the victim: `lru` evicts the block used longest ago
(a lookup or an insert uses it), `fifo` the block inserted longest ago (lookups do not count).

Prefix caches want the tail of a prefix to go before its head (a head without its tail is
still a hit for the next turn, a tail without its head is none), so `lookup` touches a
prefix from its last block to its first, and `insert_all` inserts a request's blocks from
the last to the first: the head is the most recent and the last to go.

A pin (`pin(keys, until)`) keeps blocks while `now < until` (a session's KV across a tool
pause, or forever with `until=inf`). Pinned blocks are passed over by eviction; if only
pinned blocks are left and room is still needed, the least recently used pinned block goes
and counts as `forced` (the cache is smaller than what was pinned).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fabric.errors import FabricError

CACHE_POLICIES = ("lru", "fifo")


@dataclass(frozen=True)
class CacheStats:
    """A cache's counters. `evictions` counts every block pushed out for room, `forced` those
    of them that were pinned; `hits`/`misses` count blocks looked up (a request's leading
    held blocks hit, the rest miss)."""

    hits: int
    misses: int
    evictions: int
    forced: int
    removed: int  # blocks taken out by `remove` (a drop the planner chose)
    held_bytes: int
    held_blocks: int
    peak_bytes: int
    peak_blocks: int

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


class BlockCache:
    """A bounded set of KV blocks with LRU or FIFO eviction and time-limited pins."""

    def __init__(self, capacity_bytes: int, policy: str = "lru") -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) \
                or capacity_bytes < 1:
            raise FabricError(f"a block cache needs a capacity of at least 1 byte, "
                              f"got {capacity_bytes!r}")
        if policy not in CACHE_POLICIES:
            raise FabricError(f"unknown cache policy {policy!r} "
                              f"(one of {', '.join(CACHE_POLICIES)})")
        self.capacity_bytes = capacity_bytes
        self.policy = policy
        self.hits = self.misses = self.evictions = self.forced = self.removed = 0
        self.held_bytes = self.peak_bytes = self.peak_blocks = 0
        self._now = -math.inf
        self._seq = 0
        self._size: dict[int, int] = {}
        self._order: dict[int, int] = {}  # key -> its place in eviction order (policy's)
        self._used: dict[int, int] = {}  # key -> when last used (picks a forced victim)
        self._pins: dict[int, float] = {}  # key -> until, for pins not yet run out
        self._ran_out: dict[int, float] = {}  # key -> until, pins run out, for `expired`
        # heaps with lazy deletion: an entry is live while it matches the dicts above
        self._free: list[tuple[int, int]] = []  # (order, key) of unpinned blocks
        self._pinned: list[tuple[int, int]] = []  # (used, key) of pinned blocks
        self._ends: list[tuple[float, int]] = []  # (until, key) of pins

    # -- queries (no time, no change) --

    def __len__(self) -> int:
        return len(self._size)

    def __contains__(self, key: object) -> bool:
        return key in self._size

    def holds(self, key: int) -> bool:
        """Whether the block is in the cache."""
        return key in self._size

    def prefix(self, keys: Sequence[int]) -> int:
        """How many of `keys`, from the first, the cache holds (the reusable prefix)."""
        n = 0
        for k in keys:
            if k not in self._size:
                break
            n += 1
        return n

    def size_of(self, key: int) -> int:
        """The held block's bytes (KeyError if it is not held)."""
        return self._size[key]

    def pinned(self, key: int) -> bool:
        """Whether the block has a pin that has not run out (as of the latest time seen)."""
        return key in self._pins

    def keys(self) -> list[int]:
        """The held keys, in eviction order (the next victim first, pinned ones included)."""
        return sorted(self._size, key=self._order.__getitem__)

    def statistics(self) -> CacheStats:
        return CacheStats(hits=self.hits, misses=self.misses, evictions=self.evictions,
                          forced=self.forced, removed=self.removed,
                          held_bytes=self.held_bytes, held_blocks=len(self._size),
                          peak_bytes=self.peak_bytes, peak_blocks=self.peak_blocks)

    # -- operations --

    def lookup(self, keys: Sequence[int], now: float) -> int:
        """A request wants `keys` (its prefix blocks, in order) at `now`: its held leading
        blocks hit (and count as used, the first one last), the rest miss. Returns the hits."""
        self._advance(now)
        n = self.prefix(keys)
        for k in reversed(keys[:n]):
            self._touch(k)
        self.hits += n
        self.misses += len(keys) - n
        return n

    def insert(self, key: int, nbytes: int, now: float) -> list[int]:
        """Put a block in at `now`, evicting by policy until it fits; returns the evicted keys
        (in eviction order). A held key is used again (and resized if `nbytes` changed). A
        block larger than the whole cache is refused (FabricError)."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"block {key}: size must be a whole number of bytes >= 0, "
                             f"got {nbytes!r}")
        if nbytes > self.capacity_bytes:
            raise FabricError(f"block {key} of {nbytes} bytes is larger than the whole cache "
                              f"({self.capacity_bytes} bytes): make the cache larger")
        self._advance(now)
        if key in self._size:
            if self._size[key] == nbytes:
                self._touch(key)
                return []
            until = self._pins.get(key)
            self._drop(key)
            evicted = self._insert(key, nbytes)
            if until is not None and key in self._size:
                self.pin([key], until)
            return evicted
        return self._insert(key, nbytes)

    def insert_all(self, blocks: Iterable[tuple[int, int]], now: float) -> list[int]:
        """Insert a request's blocks `(key, nbytes)`, given in prefix order, from the last to
        the first, so its head is the most recent; returns every key evicted on the way (the
        request's own tail, too, when the cache cannot hold all of it)."""
        evicted: list[int] = []
        for key, nbytes in reversed(list(blocks)):
            evicted.extend(self.insert(key, nbytes, now))
        return evicted

    def pin(self, keys: Iterable[int], until: float) -> int:
        """Keep the held ones of `keys` from eviction while `now < until` (a pin already there
        is replaced: a later pin may shorten it). Returns how many were pinned."""
        if math.isnan(until):
            raise ValueError("a pin needs an end time (until), got nan")
        n = 0
        for k in keys:
            if k not in self._size:
                continue
            n += 1
            self._ran_out.pop(k, None)
            if until <= self._now:
                self._pins.pop(k, None)  # already over: the block is a free one
                self._free_push(k)
                continue
            self._pins[k] = until
            heapq.heappush(self._ends, (until, k))
            self._pinned_push(k)
        return n

    def unpin(self, keys: Iterable[int]) -> int:
        """Take the pins off `keys` (those without one are passed over); returns how many."""
        n = 0
        for k in keys:
            if self._pins.pop(k, None) is not None:
                n += 1
                self._free_push(k)
        return n

    def remove(self, keys: Iterable[int]) -> list[int]:
        """Take blocks out (a drop the planner chose, pinned or not); returns those that were
        held."""
        out = []
        for k in keys:
            if k in self._size:
                self._drop(k)
                self.removed += 1
                out.append(k)
        return out

    def expired(self, now: float) -> list[int]:
        """The held keys whose pin ran out by `now` (`until <= now`) and were not reported
        before, earliest end first: what a TTL policy lets go. They stay cached, unpinned."""
        self._advance(now)
        out = sorted((until, k) for k, until in self._ran_out.items() if k in self._size)
        self._ran_out.clear()
        return [k for _, k in out]

    # -- internals --

    def _advance(self, now: float) -> None:
        if math.isnan(now) or now < self._now:
            raise ValueError(f"block cache time went back from {self._now:g} s to {now:g} s "
                             f"(feed it events in time order)")
        self._now = now
        while self._ends and self._ends[0][0] <= now:
            until, k = heapq.heappop(self._ends)
            if self._pins.get(k) == until:
                del self._pins[k]
                self._ran_out[k] = until
                self._free_push(k)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _touch(self, key: int) -> None:
        self._used[key] = self._next_seq()
        if self.policy == "lru":
            self._order[key] = self._used[key]
        if key in self._pins:
            self._pinned_push(key)
        elif self.policy == "lru":
            self._free_push(key)  # (fifo: its place in line has not changed)

    def _free_push(self, key: int) -> None:
        heapq.heappush(self._free, (self._order[key], key))
        self._check_heaps()

    def _pinned_push(self, key: int) -> None:
        heapq.heappush(self._pinned, (self._used[key], key))
        self._check_heaps()

    def _check_heaps(self) -> None:
        if len(self._free) + len(self._pinned) + len(self._ends) > 6 * len(self._size) + 1024:
            self._compact()

    def _compact(self) -> None:
        """Rebuild the heaps from the dicts, dropping stale entries (touches leave them)."""
        self._free = [(self._order[k], k) for k in self._size if k not in self._pins]
        self._pinned = [(self._used[k], k) for k in self._pins]
        self._ends = [(until, k) for k, until in self._pins.items()]
        heapq.heapify(self._free)
        heapq.heapify(self._pinned)
        heapq.heapify(self._ends)

    def _insert(self, key: int, nbytes: int) -> list[int]:
        evicted = []
        while self.held_bytes + nbytes > self.capacity_bytes:
            evicted.append(self._evict())
        seq = self._next_seq()
        self._size[key] = nbytes
        self._order[key] = seq
        self._used[key] = seq
        self._free_push(key)
        self.held_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        self.peak_blocks = max(self.peak_blocks, len(self._size))
        return evicted

    def _evict(self) -> int:
        """Push out one block: the first unpinned one in policy order, else (only pinned ones
        left) the least recently used pinned one, counted as forced."""
        while self._free:
            order, k = heapq.heappop(self._free)
            if k in self._size and k not in self._pins and self._order[k] == order:
                self._drop(k)
                self.evictions += 1
                return k
        while self._pinned:
            used, k = heapq.heappop(self._pinned)
            if k in self._pins and self._used[k] == used:
                self._drop(k)
                self.evictions += 1
                self.forced += 1
                return k
        raise AssertionError("a block cache over capacity holds no block")  # pragma: no cover

    def _drop(self, key: int) -> None:
        self.held_bytes -= self._size.pop(key)
        del self._order[key]
        del self._used[key]
        self._pins.pop(key, None)
        self._ran_out.pop(key, None)
