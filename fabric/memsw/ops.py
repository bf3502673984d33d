"""Load/store requests and their responses, transaction splitting, and the ordering rules.

Requests: `Read`, `Write`, `AtomicAdd` (fetch-and-add; the response carries the old value) and
`Contribute` (one member's vector for an in-network reduce). Responses: `ReadResp`, `WriteAck`,
`Error`, `ReduceResult`. All are frozen dataclasses. `tag` is chosen by the requester and
must be unique among its outstanding requests; `offset` is the byte offset of a transaction
inside the request it was split from (0 for an unsplit request) and is echoed by the response,
so `(src_port, tag, offset)` names one transaction.

**Transactions.** The fabric carries whole 64-byte flits and a transaction carries at most
`max_txn` bytes (64, 128, 192 or 256, as UALink's request sizes). `split(op, max_txn)` cuts a
request into transactions that each touch at most `max_txn // 64` flits, cutting at flit
boundaries (an unaligned start gives a short first piece, never a piece that touches one
flit more than allowed). Write payloads are sliced as memoryviews, without copying.
`reassemble(op, responses)` puts the pieces' responses back together in address order,
whatever order they arrived in.

**Ordering rules** (enforced by `MemorySwitch`):

1. Requests from one source whose byte ranges overlap are delivered to the owner in issue
   order, so they take effect in issue order, and their responses return to the source in
   issue order (the switch holds back a response until every earlier overlapping request from
   the same source has completed).
2. Requests to non-overlapping ranges, or from different sources, have no mutual order: a
   request to a port with credits overtakes an earlier one stalled on a port without, and a
   response may overtake an earlier response to a different address.
3. A multicast (Hypercast) write reaches every member in the source's issue order, and the
   source gets one `WriteAck` after every member has acknowledged.
4. One reduce round completes when its last contribution arrives; contributions may arrive in
   any order, and the sum is taken in member order so the result does not depend on it.

Rule 1 is what load/store programs need (read-after-write to the same address); rule 2 is
what lets a fabric use all its paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fabric.errors import FabricError
from fabric.memsw.addrmap import FLIT, AccessError, Port
from fabric.topology.memory import ATOMIC_DTYPES, ELEMENT_BYTES, REDUCE_DTYPES, TXN_SIZES

__all__ = [
    "ATOMIC_DTYPES",
    "HOST_TIMEOUT_FLOOR_S",
    "REDUCE_DTYPES",
    "TXN_SIZES",
    "AtomicAdd",
    "Contribute",
    "Error",
    "MemoryEndpoint",
    "Op",
    "Read",
    "ReadResp",
    "ReduceResult",
    "Response",
    "Write",
    "WriteAck",
    "completion_timeout_s",
    "decode",
    "encode",
    "flits",
    "itemsize",
    "reassemble",
    "split",
    "wire_bytes",
]

Buffer = bytes | bytearray | memoryview


def itemsize(dtype: str) -> int:
    """Bytes per element of `dtype` (bfloat16 is 2)."""
    if dtype not in ELEMENT_BYTES:
        raise FabricError(f"unknown dtype {dtype!r}; use one of {', '.join(ATOMIC_DTYPES)}")
    return ELEMENT_BYTES[dtype]


def decode(raw: Buffer, dtype: str) -> np.ndarray:
    """Little-endian `raw` as numbers: float types widen to float32 (bf16 via its uint16 bits)."""
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    itemsize(dtype)
    arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    return arr.astype(np.int64 if arr.dtype.kind == "i" else np.uint64)


def encode(values: ArrayLike, dtype: str) -> bytes:
    """Numbers as little-endian `dtype` bytes, rounding to nearest even (bf16 as well)."""
    if dtype == "bfloat16":
        f = np.atleast_1d(np.asarray(values, dtype=np.float32))
        bits = f.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        nan = np.isnan(f)
        rounded[nan] = (bits[nan] >> 16) | 0x40  # keep a NaN a (quiet) NaN
        return rounded.astype("<u2").tobytes()
    itemsize(dtype)
    return np.atleast_1d(np.asarray(values)).astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def _as_buffer(data: Buffer, what: str) -> bytes | memoryview:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray):
        return bytes(data)  # a frozen op must not change under us
    if isinstance(data, memoryview):
        return data if data.format == "B" and data.ndim == 1 else data.cast("B")
    raise AccessError(f"{what}: data must be bytes or memoryview, got {type(data).__name__}")


def _check_common(op: object, tag: int, offset: int) -> None:
    name = type(op).__name__
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise AccessError(f"{name}: tag must be an int, got {tag!r}")
    if not isinstance(offset, int) or offset < 0:
        raise AccessError(f"{name} tag {tag}: offset must be a non-negative int, got {offset!r}")


def _check_addr(op: object, tag: int, addr: int) -> None:
    if not isinstance(addr, int) or isinstance(addr, bool) or addr < 0:
        raise AccessError(f"{type(op).__name__} tag {tag}: address must be a non-negative int, "
                          f"got {addr!r}")


@dataclass(frozen=True)
class Read:
    """Load `length` bytes at `addr`; answered by `ReadResp` (or `Error`)."""

    tag: int
    src_port: Port
    addr: int
    length: int
    offset: int = 0

    def __post_init__(self) -> None:
        _check_common(self, self.tag, self.offset)
        _check_addr(self, self.tag, self.addr)
        if not isinstance(self.length, int) or self.length <= 0:
            raise AccessError(f"Read tag {self.tag} at {self.addr:#x}: length must be a "
                              f"positive int, got {self.length!r}")

    @property
    def payload(self) -> int:
        """Data bytes this request carries (none: a read is a header)."""
        return 0


@dataclass(frozen=True)
class Write:
    """Store `data` at `addr`; answered by `WriteAck` (or `Error`)."""

    tag: int
    src_port: Port
    addr: int
    data: bytes | memoryview
    offset: int = 0

    def __post_init__(self) -> None:
        data = self.data
        # the common case checked in one go (every write crosses here, on each hop); anything
        # else takes the full checks, which accept or name what is wrong
        if (type(self.tag) is int and type(self.offset) is int and type(self.addr) is int
                and self.offset >= 0 and self.addr >= 0
                and ((type(data) is bytes and data)
                     or (type(data) is memoryview and data.ndim == 1 and data.format == "B"
                         and data))):
            return
        _check_common(self, self.tag, self.offset)
        _check_addr(self, self.tag, self.addr)
        object.__setattr__(self, "data", _as_buffer(data, f"Write tag {self.tag}"))
        if len(self.data) == 0:
            raise AccessError(f"Write tag {self.tag} at {self.addr:#x}: data is empty")

    @property
    def length(self) -> int:
        """Bytes written."""
        return len(self.data)

    @property
    def payload(self) -> int:
        """Data bytes this request carries."""
        return len(self.data)


@dataclass(frozen=True)
class AtomicAdd:
    """Fetch-and-add `value` to the `dtype` element at `addr` (naturally aligned).

    The response is a `ReadResp` holding the element's old value.
    """

    tag: int
    src_port: Port
    addr: int
    value: int | float
    dtype: str = "int64"
    offset: int = 0

    def __post_init__(self) -> None:
        _check_common(self, self.tag, self.offset)
        _check_addr(self, self.tag, self.addr)
        if self.dtype not in ATOMIC_DTYPES:
            raise AccessError(f"AtomicAdd tag {self.tag}: dtype {self.dtype!r} is not one of "
                              f"{', '.join(ATOMIC_DTYPES)}")
        size = itemsize(self.dtype)
        if self.addr % size:
            raise AccessError(
                f"AtomicAdd tag {self.tag}: address {self.addr:#x} is not aligned to its "
                f"{size}-byte {self.dtype} (use {self.addr - self.addr % size:#x})")

    @property
    def length(self) -> int:
        """Bytes the atomic touches."""
        return itemsize(self.dtype)

    @property
    def payload(self) -> int:
        """Data bytes this request carries (the operand)."""
        return itemsize(self.dtype)


@dataclass(frozen=True)
class Contribute:
    """One member's vector (raw little-endian bytes) for round `seq` of reduce group `group_id`.

    Answered by a `ReduceResult` with the sum once every member has contributed.
    """

    tag: int
    src_port: Port
    group_id: Port
    data: bytes | memoryview
    offset: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        _check_common(self, self.tag, self.offset)
        object.__setattr__(self, "data", _as_buffer(self.data, f"Contribute tag {self.tag}"))
        if len(self.data) == 0:
            raise AccessError(f"Contribute tag {self.tag}: data is empty")

    @property
    def length(self) -> int:
        """Bytes contributed."""
        return len(self.data)

    @property
    def payload(self) -> int:
        """Data bytes this request carries."""
        return len(self.data)


@dataclass(frozen=True)
class ReadResp:
    """The data of a `Read` (or the old value of an `AtomicAdd`)."""

    tag: int
    data: bytes | memoryview
    offset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _as_buffer(self.data, f"ReadResp tag {self.tag}"))

    @property
    def payload(self) -> int:
        """Data bytes this response carries."""
        return len(self.data)


@dataclass(frozen=True)
class WriteAck:
    """A `Write` has taken effect (at every member, for a multicast write)."""

    tag: int
    offset: int = 0

    @property
    def payload(self) -> int:
        """Data bytes this response carries (none)."""
        return 0


@dataclass(frozen=True)
class Error:
    """A request failed; `reason` says why and how to fix it."""

    tag: int
    reason: str
    offset: int = 0

    @property
    def payload(self) -> int:
        """Data bytes this response carries (none)."""
        return 0


@dataclass(frozen=True)
class ReduceResult:
    """The reduced vector of round `seq` of `group_id`, sent to every member."""

    tag: int
    group_id: Port
    data: bytes | memoryview
    offset: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _as_buffer(self.data, f"ReduceResult tag {self.tag}"))

    @property
    def payload(self) -> int:
        """Data bytes this response carries."""
        return len(self.data)


Op = Read | Write | AtomicAdd | Contribute
Response = ReadResp | WriteAck | Error | ReduceResult


def flits(op: Op) -> int:
    """64-byte flits the request's data range touches (a `Contribute` counts from offset 0)."""
    if isinstance(op, Contribute):
        return -(-op.length // FLIT)
    first = op.addr // FLIT
    last = (op.addr + op.length - 1) // FLIT
    return last - first + 1


def wire_bytes(msg: Op | Response) -> int:
    """Bytes a message occupies on a link: whole 64-byte flits, at least one (the header)."""
    if isinstance(msg, (Read, Write, AtomicAdd, Contribute)):
        n = flits(msg) if msg.payload else 1
    else:
        n = max(1, -(-msg.payload // FLIT))
    return n * FLIT


def _check_max_txn(max_txn: int) -> None:
    if max_txn not in TXN_SIZES:
        raise FabricError(f"max_txn is {max_txn}; a transaction carries one of "
                          f"{', '.join(map(str, TXN_SIZES))} bytes")


# The shortest completion timeout this host can keep without taking a scheduling stall for a
# lost transaction (a 2-core machine under load stalls a process for tens of milliseconds).
HOST_TIMEOUT_FLOOR_S = 0.5


def completion_timeout_s(timeout_ns: int, time_scale: float) -> float:
    """A completion timeout in fabric ns as host seconds: scaled by `time_scale`, and never
    under `HOST_TIMEOUT_FLOOR_S` (so a loss is declared late, never falsely)."""
    return max(timeout_ns * time_scale / 1e9, HOST_TIMEOUT_FLOOR_S)


def split(op: Op, max_txn: int = 256) -> list[Op]:
    """Cut `op` into transactions touching at most `max_txn // 64` flits each, in address order.

    Each piece keeps the tag and source and gets `offset` = its byte offset in `op` (plus
    `op.offset`, so splitting a piece again stays consistent). An `AtomicAdd` is indivisible
    and comes back alone; a `Contribute` is cut at multiples of `max_txn` bytes of its data.
    """
    _check_max_txn(max_txn)
    if isinstance(op, AtomicAdd):
        return [op]
    if isinstance(op, Contribute):
        if op.length <= max_txn:
            return [op]
        view = memoryview(op.data)
        return [Contribute(op.tag, op.src_port, op.group_id, view[i:i + max_txn],
                           op.offset + i, op.seq) for i in range(0, op.length, max_txn)]
    if not isinstance(op, (Read, Write)):
        raise FabricError(f"cannot split {type(op).__name__}; split requests, not responses")
    bounds = _pieces(op.addr, op.length, max_txn)
    if len(bounds) == 1:
        return [op]
    # the constructors, not dataclasses.replace: this runs once per transaction issued
    if isinstance(op, Write):
        view = memoryview(op.data)
        return [Write(op.tag, op.src_port, op.addr + lo, view[lo:hi], op.offset + lo)
                for lo, hi in bounds]
    return [Read(op.tag, op.src_port, op.addr + lo, hi - lo, op.offset + lo)
            for lo, hi in bounds]


def _pieces(addr: int, length: int, max_txn: int) -> list[tuple[int, int]]:
    """`split`'s pieces of `length` bytes at `addr`, as (start, end) relative to `addr`: each
    ends at a `max_txn` boundary counted from the flit it starts in."""
    out = []
    end = addr + length
    pos = addr
    while pos < end:
        stop = min(end, pos - pos % FLIT + max_txn)
        out.append((pos - addr, stop - addr))
        pos = stop
    return out


def _piece_spans(op: Op, max_txn: int) -> list[tuple[int, int]]:
    """(offset, length) of each piece `split(op, max_txn)` makes, without making them."""
    if isinstance(op, AtomicAdd):
        return [(op.offset, 0)]
    if isinstance(op, Contribute) and op.length > max_txn:
        return [(op.offset + i, min(max_txn, op.length - i))
                for i in range(0, op.length, max_txn)]
    if isinstance(op, Contribute):
        return [(op.offset, op.length)]
    return [(op.offset + lo, hi - lo) for lo, hi in _pieces(op.addr, op.length, max_txn)]


def reassemble(op: Op, responses: Iterable[Response], max_txn: int = 256) -> Response:
    """The response to the whole of `op` from the responses to `split(op, max_txn)`'s pieces.

    Responses may come in any order; they are matched by `offset`. A missing, duplicate or
    foreign response is a `FabricError`; if any piece failed, the result is an `Error` naming
    the first failed piece (by address).
    """
    _check_max_txn(max_txn)
    if not isinstance(op, (Read, Write, AtomicAdd, Contribute)):
        split(op, max_txn)  # refuses it, saying why
    spans = _piece_spans(op, max_txn)
    by_offset: dict[int, Response] = {}
    expected = {o for o, _ in spans}
    for r in responses:
        if r.tag != op.tag:
            raise FabricError(f"response tag {r.tag} does not belong to request tag {op.tag}")
        if r.offset not in expected:
            raise FabricError(f"tag {op.tag}: no piece starts at offset {r.offset}; pieces start "
                              f"at {sorted(expected)}")
        if r.offset in by_offset:
            raise FabricError(f"tag {op.tag}: two responses for offset {r.offset}")
        by_offset[r.offset] = r
    missing = sorted(set(expected) - set(by_offset))
    if missing:
        raise FabricError(f"tag {op.tag}: still waiting for the pieces at offsets {missing}")
    ordered = [by_offset[o] for o, _ in spans]
    for r in ordered:
        if isinstance(r, Error):
            return Error(op.tag, f"piece at offset {r.offset - op.offset}: {r.reason}",
                         offset=op.offset)
    if isinstance(op, Write):
        for r in ordered:
            if not isinstance(r, WriteAck):
                raise FabricError(f"tag {op.tag}: a write was answered by {type(r).__name__}")
        return WriteAck(op.tag, offset=op.offset)
    if isinstance(op, AtomicAdd):
        return ordered[0]
    want = ReadResp if isinstance(op, Read) else ReduceResult
    chunks = []
    for (_, length), r in zip(spans, ordered, strict=True):
        if not isinstance(r, want):
            raise FabricError(f"tag {op.tag}: expected {want.__name__}, got {type(r).__name__}")
        if len(r.data) != length:
            raise FabricError(f"tag {op.tag}: piece at offset {r.offset} carries {len(r.data)} "
                              f"bytes, expected {length}")
        chunks.append(r.data)
    data = b"".join(chunks)
    if isinstance(op, Read):
        return ReadResp(op.tag, data, offset=op.offset)
    first = ordered[0]
    assert isinstance(first, ReduceResult)
    return ReduceResult(op.tag, first.group_id, data, offset=op.offset, seq=first.seq)


class MemoryEndpoint:
    """A plain memory behind a port: applies requests to a bytearray, in the order delivered.

    The reference semantics for tests and examples: `apply(op)` returns the response the
    endpoint sends back. It owns `[base, base + size)`; anything else is an `Error`.
    """

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        self.data = bytearray(size)

    def _range(self, addr: int, length: int) -> slice:
        lo = addr - self.base
        if lo < 0 or lo + length > self.size:
            raise AccessError(f"{length} B at {addr:#x} is outside this memory "
                              f"[{self.base:#x}, {self.base + self.size:#x})")
        return slice(lo, lo + length)

    def apply(self, op: Op) -> Response:
        """Execute `op` and return its response."""
        try:
            if isinstance(op, Read):
                resp: Response = ReadResp(op.tag, bytes(self.data[self._range(op.addr,
                                                                               op.length)]),
                                          offset=op.offset)
            elif isinstance(op, Write):
                self.data[self._range(op.addr, op.length)] = op.data
                resp = WriteAck(op.tag, offset=op.offset)
            elif isinstance(op, AtomicAdd):
                where = self._range(op.addr, op.length)
                old = bytes(self.data[where])
                now = decode(old, op.dtype)
                if now.dtype.kind == "f":
                    new = encode(np.float32(now[0]) + np.float32(op.value), op.dtype)
                else:  # integers wrap, as hardware atomics do
                    bits = 8 * op.length
                    total = (int(now[0]) + int(op.value)) % (1 << bits)
                    if op.dtype.startswith("int") and total >= 1 << (bits - 1):
                        total -= 1 << bits
                    new = encode(total, op.dtype)
                self.data[where] = new
                resp = ReadResp(op.tag, old, offset=op.offset)
            else:
                raise AccessError(f"a memory cannot take {type(op).__name__}")
        except AccessError as e:
            return Error(op.tag, str(e), offset=op.offset)
        return resp
