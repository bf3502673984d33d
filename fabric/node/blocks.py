"""A node's prefix-cache block store: real bytes held in memory, and proof of every reuse.

Sans-IO (as h11 is): fed what the plan says and what happened, with times passed in; no
sockets, no trio, no clock of its own. The node process (`fabric.node.runtime`) feeds it:

- `expect(who, t_ns, arrives=..., reuse=...)`, once per planned transfer or block operation:
  which blocks `who` (`("transfer", id)`, `("op", id)`, `("send", id)`) will bring here, and
  which it will reuse. A key some planned source still brings is *pending*; a planned reuser
  *pins* a key against a drop planned at or after the reuser's start.
- `put_part` (a verified chunk of a kept block) and `make` (an append-prefill computed on
  this node: the content generator's bytes) put blocks in; `settle(who)` says a source is
  over (what it did not bring is no longer pending).
- `prove(keys, now, who)` re-hashes every held block named against the digest the content
  generator gives that (seed, key), computed here from the block's parts
  (`kv.layout.block_chunks`, `kv.content.chunk_digest`), never from what a sender claimed:
  each key is ok, missing (not held: never got, or freed), corrupt (held, wrong bytes) or
  still pending (the caller waits and proves it again).
- `drop(keys, t_ns)` (the cache model evicts them) and `release(keys, t_ns)` (a write-back
  was acknowledged) free blocks, deferred while a reuser planned to start at or before
  `t_ns` has not proved them yet (so a drop planned after a reuse never races it);
  `bytes_of(key)` is what a sender serving `from_store` sends.

A block's bytes are the content generator's window for its key (`ChunkSpec.content`), each
part a slice of it at the part's `block_offset`, so the same block cut at another chunk size
has the same bytes; a store proves each block part by part at the chunk size it was brought
at.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..kv.content import chunk_digest, chunk_view, digest
from ..kv.layout import ChunkSpec, block_chunks

__all__ = ["BlockStats", "BlockStore", "Proof", "block_parts"]

DEFAULT_CHUNK = 1 << 20


class Proof(NamedTuple):
    """The keys a proof found held with the right bytes, not held, held wrong, still due."""

    ok: tuple[int, ...]
    missing: tuple[int, ...]
    corrupt: tuple[int, ...]
    pending: tuple[int, ...]


@dataclass(frozen=True)
class BlockStats:
    """What a store held and freed (`BlockStore.statistics`)."""

    held_bytes: int
    held_blocks: int
    held_peak_bytes: int
    held_blocks_peak: int
    received: int  # blocks that arrived whole (kept)
    made: int  # blocks materialised here (append-prefill)
    dropped: int  # blocks freed by a drop
    released: int  # blocks freed by a release (a write-back acknowledged)
    freed_late: int  # frees deferred until a planned reuser had proved the block
    freed_late_max_ns: int  # the longest such deferral past its planned time


def block_parts(key: int, nbytes: int, chunk_bytes: int) -> list[ChunkSpec]:
    """One block's parts as every block transfer cuts it; `offset` is the part's place in
    the block."""
    return block_chunks(0, ((key, nbytes),), chunk_bytes)


@dataclass
class _Block:
    data: np.ndarray
    chunk_bytes: int
    planned: int | None = None  # when the source that brought this copy was planned to start


@dataclass
class _Building:
    data: np.ndarray
    chunk_bytes: int
    parts: list[ChunkSpec]
    got: set[int] = field(default_factory=set)


@dataclass
class _Doom:
    t_ns: int  # the planned time of the drop or release
    release: bool
    # for a key not here yet: the sources (planned at or before the drop) still bringing
    # it; the drop applies to the copy one of them brings, not to a later one
    landing: frozenset[Hashable] = frozenset()


class BlockStore:
    """The blocks one node holds, with what its plan says about them (module docstring)."""

    def __init__(self, seed: int, chunk_bytes: int = DEFAULT_CHUNK) -> None:
        self.seed = seed
        self.chunk_bytes = chunk_bytes  # for `make` when not told
        self._held: dict[int, _Block] = {}
        self._building: dict[int, _Building] = {}
        self._sources: dict[Hashable, tuple[int | None, set[int]]] = {}  # who -> (t, keys)
        self._due: dict[int, set[Hashable]] = {}  # key -> sources still bringing it
        self._pins: dict[int, dict[Hashable, int | None]] = {}  # key -> {reuser: its t}
        self._planned: dict[Hashable, int | None] = {}  # who -> its planned start
        self._doomed: dict[int, _Doom] = {}
        self._digests: dict[tuple[int, int, int], list[bytes]] = {}
        self._bytes = 0
        self._peak_bytes = 0
        self._peak_blocks = 0
        self._received = self._made = self._dropped = self._released = 0
        self._late = 0
        self._late_max = 0

    # ---- the plan ------------------------------------------------------------------------

    def expect(self, who: Hashable, t_ns: int | None, *, arrives: Iterable[int] = (),
               reuse: Iterable[int] = ()) -> None:
        """`who`, planned to start at `t_ns` (host time from the run's start; None: not
        known, after another transfer), brings `arrives` here and reuses `reuse`."""
        self._planned[who] = t_ns
        keys = set(arrives)
        if keys:
            prev = self._sources.get(who, (t_ns, set()))[1]
            self._sources[who] = (t_ns, prev | keys)
            for k in keys:
                self._due.setdefault(k, set()).add(who)
        for k in reuse:
            self._pins.setdefault(k, {})[who] = t_ns

    def settle(self, who: Hashable) -> None:
        """`who` is over: what it did not bring is no longer due from it."""
        _, keys = self._sources.pop(who, (None, set()))
        for k in keys:
            self._not_due(k, who)

    def _not_due(self, key: int, who: Hashable) -> None:
        due = self._due.get(key)
        if due is not None:
            due.discard(who)
            if not due:
                del self._due[key]

    def is_pending(self, key: int, at_ns: int | None = None) -> bool:
        """`key` is not held but a source planned to start at or before `at_ns` (any
        source, when either time is unknown) will still bring it."""
        if key in self._held:
            return False
        for src in self._due.get(key, ()):
            t = self._sources[src][0]
            if at_ns is None or t is None or t <= at_ns:
                return True
        return False

    # ---- blocks in -----------------------------------------------------------------------

    def put_part(self, key: int, part: int, data: np.ndarray | memoryview, *, block_bytes: int,
                 chunk_bytes: int, source: Hashable = None, now_ns: int = 0) -> bool:
        """Copy one verified part of block `key` (`block_bytes` long, cut at `chunk_bytes`)
        in; True when this part completes the block (it is held from now on)."""
        b = self._building.get(key)
        if b is None or b.data.nbytes != block_bytes or b.chunk_bytes != chunk_bytes:
            parts = block_parts(key, block_bytes, chunk_bytes)
            b = self._building[key] = _Building(np.empty(block_bytes, dtype=np.uint8),
                                                chunk_bytes, parts)
        spec = b.parts[part]
        view = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        if view.nbytes != spec.nbytes:
            raise ValueError(f"block {key} part {part}: {view.nbytes} bytes, expected "
                             f"{spec.nbytes}")
        b.data[spec.offset: spec.offset + spec.nbytes] = view.reshape(-1).view(np.uint8)
        b.got.add(part)
        if len(b.got) < len(b.parts):
            return False
        del self._building[key]
        self._hold(key, _Block(b.data, chunk_bytes), source, now_ns)
        self._received += 1
        return True

    def make(self, key: int, nbytes: int, chunk_bytes: int | None = None, *,
             source: Hashable = None, now_ns: int = 0) -> None:
        """Materialise block `key` from the content generator: a prefill computed here."""
        cb = chunk_bytes or self.chunk_bytes
        data = np.empty(nbytes, dtype=np.uint8)
        for spec in block_parts(key, nbytes, cb):
            data[spec.offset: spec.offset + spec.nbytes] = chunk_view(spec, self.seed)
        self._hold(key, _Block(data, cb), source, now_ns)
        self._made += 1

    def _hold(self, key: int, block: _Block, source: Hashable, now_ns: int) -> None:
        block.planned = self._planned.get(source) if source is not None else None
        kept = self._held.get(key)
        if (kept is not None and kept.planned is not None and block.planned is not None
                and block.planned < kept.planned):
            # a copy planned before the one held, landing after it (a late transfer): the
            # held one is what the plan counts on from now on; this one is not kept
            self._landed(key, source)
            return
        old = self._held.pop(key, None)
        if old is not None:
            self._bytes -= old.data.nbytes
        doom = self._doomed.pop(key, None)
        if doom is not None and source in doom.landing:
            # the cache model let this copy go before it landed: it goes on landing (or
            # once its planned reusers have proved it)
            self._held[key] = block
            self._bytes += block.data.nbytes
            self._landed(key, source)
            self._doom([key], doom.t_ns, doom.release)
            return
        # else a new copy: the cache model admitted it again
        self._held[key] = block
        self._bytes += block.data.nbytes
        self._landed(key, source)

    def _landed(self, key: int, source: Hashable) -> None:
        self._peak_bytes = max(self._peak_bytes, self._bytes)
        self._peak_blocks = max(self._peak_blocks, len(self._held))
        if source is not None:
            self._not_due(key, source)
            src = self._sources.get(source)
            if src is not None:
                src[1].discard(key)

    # ---- proof ---------------------------------------------------------------------------

    def expected_digests(self, key: int, nbytes: int, chunk_bytes: int) -> list[bytes]:
        """The digest of each part of a right copy of block `key`, from the generator."""
        ck = (key, nbytes, chunk_bytes)
        found = self._digests.get(ck)
        if found is None:
            found = self._digests[ck] = [chunk_digest(s, self.seed)
                                         for s in block_parts(key, nbytes, chunk_bytes)]
        return found

    def check(self, key: int) -> bool | None:
        """Whether held block `key` hashes right (None: not held)."""
        b = self._held.get(key)
        if b is None:
            return None
        parts = block_parts(key, b.data.nbytes, b.chunk_bytes)
        want = self.expected_digests(key, b.data.nbytes, b.chunk_bytes)
        return all(digest(b.data[s.offset: s.offset + s.nbytes]) == w
                   for s, w in zip(parts, want, strict=True))

    def prove(self, keys: Iterable[int], now_ns: int, who: Hashable = None) -> Proof:
        """Which of `keys` this node holds with the right bytes (see `Proof`). Pending keys
        are those a source planned to start no later than `who` still brings: prove them
        again when it has. Every key not pending counts as proved by `who` (its pin goes)."""
        at = self._planned.get(who) if who is not None else None
        ok: list[int] = []
        missing: list[int] = []
        corrupt: list[int] = []
        pending: list[int] = []
        for k in keys:
            good = self.check(k)
            if good is None:
                if self.is_pending(k, at):
                    pending.append(k)
                    continue
                missing.append(k)
            elif good:
                ok.append(k)
            else:
                corrupt.append(k)
            if who is not None:
                self._unpin(k, who, now_ns)
        return Proof(tuple(ok), tuple(missing), tuple(corrupt), tuple(pending))

    def unpin(self, keys: Iterable[int], who: Hashable, now_ns: int) -> None:
        """`who` is done with `keys` without proving them (a sender has read them)."""
        for k in keys:
            self._unpin(k, who, now_ns)

    def _unpin(self, key: int, who: Hashable, now_ns: int) -> None:
        pins = self._pins.get(key)
        if pins is not None:
            pins.pop(who, None)
            if not pins:
                del self._pins[key]
        doom = self._doomed.get(key)
        if doom is not None and not self._pinned(key, doom.t_ns):
            del self._doomed[key]
            self._free(key, doom.release)
            self._late += 1
            self._late_max = max(self._late_max, now_ns - doom.t_ns)

    def _pinned(self, key: int, t_ns: int) -> bool:
        return any(t is None or t <= t_ns for t in self._pins.get(key, {}).values())

    # ---- blocks out ----------------------------------------------------------------------

    def bytes_of(self, key: int) -> np.ndarray | None:
        """The held bytes of block `key` (the store's own array: send it, do not keep it),
        None when it is not held."""
        b = self._held.get(key)
        return None if b is None else b.data

    def holds(self, key: int) -> bool:
        return key in self._held

    def drop(self, keys: Iterable[int], t_ns: int) -> tuple[int, int]:
        """The cache model evicts `keys` at `t_ns` (planned host time): free each held one
        now, or once every reuser planned to start at or before `t_ns` has proved it.
        Returns (freed now, deferred). A key not held is left alone."""
        return self._doom(keys, t_ns, release=False)

    def release(self, keys: Iterable[int], t_ns: int | None = None,
                copies: Mapping[int, np.ndarray] | None = None) -> tuple[int, int]:
        """A write-back of `keys` (planned to start at `t_ns`) was acknowledged: free them
        as `drop` does (at once when `t_ns` is None). With `copies` (what `bytes_of` gave
        the sender), only the copies that were sent: a block that arrived again since (a
        reload) stays."""
        keys = [k for k in keys if copies is None or (
            k in self._held and self._held[k].data is copies.get(k))]
        if t_ns is None:
            freed = 0
            for k in keys:
                if k in self._held:
                    self._doomed.pop(k, None)
                    self._free(k, release=True)
                    freed += 1
            return freed, 0
        return self._doom(keys, t_ns, release=True)

    def _doom(self, keys: Iterable[int], t_ns: int, release: bool) -> tuple[int, int]:
        now = deferred = 0
        for k in keys:
            held = self._held.get(k)
            if held is not None and held.planned is not None and held.planned > t_ns:
                continue  # a copy brought by a source planned after the drop: not its copy
            if k not in self._held:
                starts = {src: self._sources[src][0] for src in self._due.get(k, ())}
                landing = frozenset(src for src, t in starts.items() if t is None or t <= t_ns)
                if landing:  # still on its way: it goes when it lands
                    self._doomed[k] = _Doom(t_ns, release, landing)
                    deferred += 1
                continue
            if self._pinned(k, t_ns):
                self._doomed[k] = _Doom(t_ns, release)
                deferred += 1
            else:
                self._doomed.pop(k, None)
                self._free(k, release)
                now += 1
        return now, deferred

    def _free(self, key: int, release: bool) -> None:
        b = self._held.pop(key)
        self._bytes -= b.data.nbytes
        if release:
            self._released += 1
        else:
            self._dropped += 1

    def statistics(self) -> BlockStats:
        return BlockStats(
            held_bytes=self._bytes, held_blocks=len(self._held),
            held_peak_bytes=self._peak_bytes, held_blocks_peak=self._peak_blocks,
            received=self._received, made=self._made, dropped=self._dropped,
            released=self._released, freed_late=self._late, freed_late_max_ns=self._late_max)
