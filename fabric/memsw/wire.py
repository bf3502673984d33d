"""Memory transactions as UDP datagrams (port `MEM_PORT`), one or several per datagram; sans-IO.

Endpoint nodes and memory-switch nodes exchange the `fabric.memsw.ops` requests and
responses, plus three control messages (`Credit`, `Join`, `Leave`), as datagrams::

    parts = encode(Write(7, 0, 0x1000, data), src=3, credit=1)
    sock.sendmsg(parts, (switch_ip, MEM_PORT))   # the payload is passed through, not copied
    ...
    d = decode(sock.recv(65535))                  # Decoded(msg, src, credit)

Every message is a fixed 42-byte header, then the group name (only for `Contribute`,
`ReduceResult`, `Join`, `Leave`), then the payload (write data, read data, reduce vectors or an
error's reason). All integers are big-endian (network order, as RoCE's headers)::

    off size field     use
      0   2  magic     0x4D53 ("MS")
      2   1  version   1
      3   1  kind      Read 0x01, Write 0x02, AtomicAdd 0x03, Contribute 0x04,
                       ReadResp 0x11, WriteAck 0x12, Error 0x13, ReduceResult 0x14,
                       Credit 0x21, Join 0x22, Leave 0x23
      4   4  tag       the message's tag; Join/Leave: the member
      8   4  offset    the transaction's offset in its request
     12   4  length    Read: bytes to read; payload kinds: payload bytes (checked against
                       the datagram's size); others 0
     16   8  addr      Read, Write, AtomicAdd
     24   8  value     AtomicAdd's operand: int64 for integer dtypes, float64 for float dtypes
     32   4  seq       Contribute/ReduceResult: the reduce round
     36   2  src       the requester's index (see below)
     38   2  credit    request buffers the sender frees (a Credit message's n)
     40   1  dtype     AtomicAdd: 1 int32, 2 int64, 3 uint32, 4 uint64, 5 float16,
                       6 float32, 7 bfloat16; others 0
     41   1  name_len  bytes of the UTF-8 group name that follows (1..32 where a group is
                       named, else 0)
     42      name      name_len bytes
   42+n      payload   length bytes (Write, Contribute, ReadResp, Error, ReduceResult)

Fields a kind does not use are zero when encoded and ignored when decoded; `name_len` and
`length` are always checked, since they fix where the payload is and how long the datagram is.

**Why `src` is in the header.** The switch knows which neighbour sent a datagram from its IP
address, but a memory endpoint receiving a request through the switch needs to know which
requester it came from so that its response can be matched. So every datagram carries `src`,
the requester's index (u16): on a request it is the requester; on a response, the requester
it answers. A decoded request has `src_port = src` (an int). The header carries `src`, not
`msg.src_port`: pass `src=` yourself (so `decoded.msg == msg` only when `msg.src_port == src`).

**Credits.** Any datagram may return request buffers in `credit` (an endpoint hands its buffer
back with the response); a `Credit(n)` datagram returns `n` without a response and carries
`n` in that same field. So a receiver credits the sender `decoded.credit` for every datagram,
`Credit` included, and need not look at `Credit.n`.

**Group names** are str (UTF-8, 1..32 bytes) placed between the header and the payload with
their length in the header, rather than indices into a names table that both ends would
have to agree on. `Contribute.group_id` and `ReduceResult.group_id` must be str names to travel.

**No copies.** `encode` returns `[header]` or `[header, payload]` for `socket.sendmsg`, the
payload being the message's own buffer. `decode` returns the payloads of `Write`, `ReadResp`,
`Contribute` and `ReduceResult` as memoryview slices of the datagram: a receiver that decodes
from a reused `recv_into` buffer must finish with (or copy) them before reusing it.

**Limits.** An integer operand must fit int64 (a uint64 operand of 2**63 or more is refused;
add it minus 2**64, which is the same mod 2**64). A float operand travels as float64 (an int
operand of a float dtype comes back a float). The codec does not cap payloads at 256 bytes
(splitting is `ops.split`'s job), only at what one UDP datagram holds (`MAX_DATAGRAM`). An
error reason with a lone surrogate is sent with it backslash-escaped rather than refused.

**Several messages per datagram.** A datagram holds one message or several back to back, each
with its own full header (so its own `src` and `credit`): a message's length is fixed by its
header (`HEADER_SIZE + name_len + length`), so the next one starts where it ends. `decode`
takes exactly one message; `decode_all` takes every message of a datagram, in order. A
`Packer` gathers encoded messages per destination into datagrams of at most `limit` bytes
(the link's MTU less the IPv4 and UDP headers, so a datagram is never fragmented), keeping
each destination's messages in the order they were added. Batching saves a system call, an
IP/UDP header and a trip through the link layer per message, not a message header: each
transaction keeps its header, its tag and its credit, and is handled exactly as if it had
come alone.

`wire_len(msg)` is the message's size in bytes (the UDP payload), for accounting; the flits a
message occupies on an emulated link are `ops.wire_bytes(msg)`.

`WireError` is raised for a datagram that is not a valid message (what the peer did wrong) and
for a message that cannot be encoded (a field outside its header field, a non-str group).
"""

from __future__ import annotations

import numbers
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from fabric.errors import FabricError
from fabric.memsw.ops import (
    ATOMIC_DTYPES,
    AtomicAdd,
    Contribute,
    Error,
    Read,
    ReadResp,
    ReduceResult,
    Write,
    WriteAck,
)

__all__ = [
    "DTYPE_CODES",
    "HEADER_SIZE",
    "KINDS",
    "MAGIC",
    "MAX_DATAGRAM",
    "MAX_NAME",
    "MEM_PORT",
    "UDP_IP_HEADERS",
    "VERSION",
    "Create",
    "Credit",
    "Decoded",
    "Join",
    "Leave",
    "Message",
    "Packer",
    "WireError",
    "datagram_limit",
    "decode",
    "decode_all",
    "encode",
    "wire_len",
]

MEM_PORT: Final = 4793
"""UDP port memory datagrams are sent to."""

MAGIC: Final = 0x4D53  # "MS"
VERSION: Final = 1
MAX_NAME: Final = 32
"""Longest group name, in UTF-8 bytes."""
MAX_DATAGRAM: Final = 65507
"""Largest UDP payload over IPv4; a message whose datagram would be longer cannot be sent."""
UDP_IP_HEADERS: Final = 28
"""IPv4 (20) and UDP (8) header bytes around each datagram."""

_HEAD = struct.Struct("!HBBIIIQqIHHBB")  # value as int64
_HEAD_F = struct.Struct("!HBBIIIQdIHHBB")  # value as float64
_VALUE_F = struct.Struct("!d")
_VALUE_AT: Final = 24
HEADER_SIZE: Final = _HEAD.size  # 42
_MAX_PAYLOAD = MAX_DATAGRAM - HEADER_SIZE

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1


class WireError(FabricError):
    """A datagram is not a valid memory message, or a message cannot be put in one."""


@dataclass(frozen=True)
class Credit:
    """The sender's endpoint freed `n` request buffers (1..65535); no response carries them."""

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 1 <= self.n <= _U16:
            raise WireError(f"Credit n must be an int in 1..{_U16}, got {self.n!r}")


def _check_membership(msg: Join | Leave) -> None:
    name = type(msg).__name__
    if not isinstance(msg.member, int) or isinstance(msg.member, bool) or \
            not 0 <= msg.member <= _U32:
        raise WireError(f"{name} {msg.group!r}: member must be an int in 0..{_U32}, "
                        f"got {msg.member!r}")
    _name_bytes(msg.group, f"{name} member {msg.member}")


@dataclass(frozen=True)
class Join:
    """Add `member` (a port index) to Hypercast group `group` (a name of 1..32 UTF-8 bytes)."""

    group: str
    member: int

    def __post_init__(self) -> None:
        _check_membership(self)


@dataclass(frozen=True)
class Leave:
    """Remove `member` from Hypercast group `group`."""

    group: str
    member: int

    def __post_init__(self) -> None:
        _check_membership(self)


@dataclass(frozen=True)
class Create:
    """Create Hypercast group `group` at run time, owning the multicast window `[base, base +
    size)`; members then `Join` it. The switch answers a refused creation (an overlap, a bad
    alignment, a name in use) with an `Error` of tag 0 naming the reason."""

    group: str
    base: int
    size: int

    def __post_init__(self) -> None:
        _name_bytes(self.group, "Create")
        for field, limit in (("base", (1 << 64) - 1), ("size", _U32)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
                raise WireError(f"Create {self.group!r}: {field} must be an int in 0..{limit}, "
                                f"got {value!r}")


Message = (Read | Write | AtomicAdd | Contribute | ReadResp | WriteAck | Error | ReduceResult
           | Credit | Join | Leave | Create)


class Decoded(NamedTuple):
    """A decoded datagram: the message, the header's `src` and the credits it returns."""

    msg: Message
    src: int
    credit: int


KINDS: Final[dict[type, int]] = {
    Read: 0x01, Write: 0x02, AtomicAdd: 0x03, Contribute: 0x04,
    ReadResp: 0x11, WriteAck: 0x12, Error: 0x13, ReduceResult: 0x14,
    Credit: 0x21, Join: 0x22, Leave: 0x23, Create: 0x24,
}
"""Message class -> the header's kind byte."""

DTYPE_CODES: Final[dict[str, int]] = {d: i for i, d in enumerate(ATOMIC_DTYPES, 1)}
"""AtomicAdd dtype -> the header's dtype byte (1 int32 ... 7 bfloat16)."""

_DTYPES = {code: d for d, code in DTYPE_CODES.items()}
_FLOAT_DTYPES = frozenset(("float16", "float32", "bfloat16"))
_NAMED = (Contribute, ReduceResult, Join, Leave, Create)

# -- encoding ------------------------------------------------------------------------------------

Parts = list[bytes | memoryview]


def _name_bytes(group: object, what: str) -> bytes:
    if not isinstance(group, str):
        raise WireError(f"{what}: group {group!r} must be a str name of 1..{MAX_NAME} UTF-8 "
                        f"bytes to travel")
    try:
        raw = group.encode("utf-8")
    except UnicodeEncodeError as e:
        raise WireError(f"{what}: group name {group!r} is not valid Unicode ({e.reason})"
                        ) from None
    if not 1 <= len(raw) <= MAX_NAME:
        raise WireError(f"{what}: group name {group!r} is {len(raw)} UTF-8 bytes; use 1.."
                        f"{MAX_NAME}")
    return raw


def _with_payload(head: bytes, payload: bytes | memoryview) -> Parts:
    return [head, payload] if len(payload) else [head]


def _payload_len(what: str, n: int) -> int:
    if n > _MAX_PAYLOAD:
        raise WireError(f"{what}: {n} B of payload do not fit one datagram (at most "
                        f"{_MAX_PAYLOAD} B); split requests with ops.split(op, max_txn)")
    return n


def _enc_read(m: Read, src: int, credit: int) -> Parts:
    return [_HEAD.pack(MAGIC, VERSION, 0x01, m.tag, m.offset, m.length, m.addr, 0, 0, src,
                       credit, 0, 0)]


def _enc_write(m: Write, src: int, credit: int) -> Parts:
    n = len(m.data)
    if n > _MAX_PAYLOAD:
        _payload_len(f"Write tag {m.tag}", n)
    return [_HEAD.pack(MAGIC, VERSION, 0x02, m.tag, m.offset, n, m.addr, 0, 0, src, credit,
                       0, 0), m.data]


def _enc_atomic(m: AtomicAdd, src: int, credit: int) -> Parts:
    code = DTYPE_CODES[m.dtype]
    what = f"AtomicAdd tag {m.tag}"
    if m.dtype in _FLOAT_DTYPES:
        try:
            value = float(m.value)
        except (TypeError, ValueError, OverflowError) as e:
            raise WireError(f"{what}: {m.dtype} operand {m.value!r} is not a float64 ({e})"
                            ) from None
        head = _HEAD_F.pack(MAGIC, VERSION, 0x03, m.tag, m.offset, 0, m.addr, value, 0, src,
                            credit, code, 0)
        return [head]
    if not isinstance(m.value, numbers.Integral):
        raise WireError(f"{what}: an {m.dtype} operand must be an int, got {m.value!r}")
    ivalue = int(m.value)
    if not _I64_MIN <= ivalue <= _I64_MAX:
        hint = (f"; add {ivalue - (1 << 64)} instead (the same mod 2**64)"
                if _I64_MAX < ivalue < 1 << 64 else "")
        raise WireError(f"{what}: operand {ivalue} does not fit the int64 value field{hint}")
    return [_HEAD.pack(MAGIC, VERSION, 0x03, m.tag, m.offset, 0, m.addr, ivalue, 0, src,
                       credit, code, 0)]


def _enc_contribute(m: Contribute, src: int, credit: int) -> Parts:
    name = _name_bytes(m.group_id, f"Contribute tag {m.tag}")
    n = _payload_len(f"Contribute tag {m.tag}", len(m.data) + len(name))
    head = _HEAD.pack(MAGIC, VERSION, 0x04, m.tag, m.offset, n - len(name), 0, 0, m.seq, src,
                      credit, 0, len(name))
    return [head + name, m.data]


def _enc_read_resp(m: ReadResp, src: int, credit: int) -> Parts:
    n = len(m.data)
    if n > _MAX_PAYLOAD:
        _payload_len(f"ReadResp tag {m.tag}", n)
    return _with_payload(_HEAD.pack(MAGIC, VERSION, 0x11, m.tag, m.offset, n, 0, 0, 0, src,
                                    credit, 0, 0), m.data)


def _enc_write_ack(m: WriteAck, src: int, credit: int) -> Parts:
    return [_HEAD.pack(MAGIC, VERSION, 0x12, m.tag, m.offset, 0, 0, 0, 0, src, credit, 0, 0)]


def _enc_error(m: Error, src: int, credit: int) -> Parts:
    if not isinstance(m.reason, str):
        raise WireError(f"Error tag {m.tag}: reason must be a str, got {m.reason!r}")
    reason = m.reason.encode("utf-8", "backslashreplace")  # never fail to report a failure
    n = _payload_len(f"Error tag {m.tag}", len(reason))
    return _with_payload(_HEAD.pack(MAGIC, VERSION, 0x13, m.tag, m.offset, n, 0, 0, 0, src,
                                    credit, 0, 0), reason)


def _enc_reduce_result(m: ReduceResult, src: int, credit: int) -> Parts:
    name = _name_bytes(m.group_id, f"ReduceResult tag {m.tag}")
    n = _payload_len(f"ReduceResult tag {m.tag}", len(m.data) + len(name))
    head = _HEAD.pack(MAGIC, VERSION, 0x14, m.tag, m.offset, n - len(name), 0, 0, m.seq, src,
                      credit, 0, len(name))
    return _with_payload(head + name, m.data)


def _enc_credit(m: Credit, src: int, credit: int) -> Parts:
    if credit not in (0, m.n):
        raise WireError(f"Credit({m.n}) is itself {m.n} credits and carries them in the credit "
                        f"field; send Credit({m.n + credit}) instead of passing credit={credit}")
    return [_HEAD.pack(MAGIC, VERSION, 0x21, 0, 0, 0, 0, 0, 0, src, m.n, 0, 0)]


def _enc_membership(m: Join | Leave, src: int, credit: int) -> Parts:
    name = m.group.encode("utf-8")  # checked by the constructor
    return [_HEAD.pack(MAGIC, VERSION, KINDS[type(m)], m.member, 0, 0, 0, 0, 0, src, credit, 0,
                       len(name)) + name]


def _enc_create(m: Create, src: int, credit: int) -> Parts:
    name = m.group.encode("utf-8")  # checked by the constructor
    return [_HEAD.pack(MAGIC, VERSION, 0x24, 0, 0, m.size, m.base, 0, 0, src, credit, 0,
                       len(name)) + name]


_ENCODERS: dict[type, Callable[..., Parts]] = {
    Read: _enc_read, Write: _enc_write, AtomicAdd: _enc_atomic, Contribute: _enc_contribute,
    ReadResp: _enc_read_resp, WriteAck: _enc_write_ack, Error: _enc_error,
    ReduceResult: _enc_reduce_result, Credit: _enc_credit, Join: _enc_membership,
    Leave: _enc_membership, Create: _enc_create,
}


def _range_error(msg: Message, src: object, credit: object) -> WireError:
    """Which field made `struct.pack` fail, said so that the caller can fix it."""
    name = type(msg).__name__
    what = f"{name} tag {msg.tag}" if hasattr(msg, "tag") else name
    fields: list[tuple[str, object, int]] = [("src", src, _U16), ("credit", credit, _U16)]
    if hasattr(msg, "tag"):
        fields.append(("tag", msg.tag, _U32))
    for field in ("offset", "seq", "length"):
        if hasattr(msg, field):
            fields.append((field, getattr(msg, field), _U32))
    if hasattr(msg, "addr"):
        fields.append(("addr", msg.addr, (1 << 64) - 1))
    for field, value, top in fields:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            bits = top.bit_length()
            return WireError(f"{what}: {field} {value!r} does not fit the {bits}-bit header "
                             f"field (an int in 0..{top:#x})")
    return WireError(f"{what}: a field does not fit its header field")  # pragma: no cover


def encode(msg: Message, *, src: int = 0, credit: int = 0) -> Parts:
    """`msg` as the parts of one datagram: `[header]` or `[header, payload]`, for `sendmsg`.

    `src` (u16) is the requester's index: on a request, the requester (it becomes the decoded
    request's `src_port`); on a response, the requester it answers. `credit` (u16) returns that
    many request buffers to the receiver. The payload part is the message's own buffer.
    """
    enc = _ENCODERS.get(type(msg))
    if enc is None:
        raise WireError(f"cannot encode {type(msg).__name__}; send one of "
                        f"{', '.join(k.__name__ for k in _ENCODERS)}")
    try:
        return enc(msg, src, credit)
    except struct.error:
        raise _range_error(msg, src, credit) from None


def wire_len(msg: Message) -> int:
    """Bytes of `msg`'s datagram (the UDP payload): header, group name and payload."""
    if isinstance(msg, (Write, ReadResp)):
        return HEADER_SIZE + len(msg.data)
    if isinstance(msg, (Contribute, ReduceResult)):
        return HEADER_SIZE + len(_name_bytes(msg.group_id, type(msg).__name__)) + len(msg.data)
    if isinstance(msg, Error):
        return HEADER_SIZE + len(msg.reason.encode("utf-8", "backslashreplace"))
    if isinstance(msg, (Join, Leave, Create)):
        return HEADER_SIZE + len(msg.group.encode("utf-8"))
    if type(msg) in _ENCODERS:
        return HEADER_SIZE
    raise WireError(f"no datagram for {type(msg).__name__}; send one of "
                    f"{', '.join(k.__name__ for k in _ENCODERS)}")


# -- decoding ------------------------------------------------------------------------------------

_NAMES = {code: cls.__name__ for cls, code in KINDS.items()}
_WITH_NAME = frozenset(KINDS[c] for c in _NAMED)
_WITH_PAYLOAD = frozenset(KINDS[c] for c in (Write, Contribute, ReadResp, Error, ReduceResult))


def _bytes_view(datagram: bytes | bytearray | memoryview) -> memoryview:
    """`datagram` as a flat memoryview of bytes (a copy only where it is not contiguous)."""
    mv = memoryview(datagram)
    if not mv.c_contiguous:
        return memoryview(mv.tobytes())
    if mv.format != "B" or mv.ndim != 1:
        return mv.cast("B")
    return mv


def decode(datagram: bytes | bytearray | memoryview, *, src_port: object = None) -> Decoded:
    """The message in one datagram, with the header's `src` and `credit`.

    Payloads come back as memoryview slices of `datagram`, not copies. A request's
    `src_port` is the header's `src`, or `src_port` if given (the switch names the port it
    came in on, without making the request twice). Raises `WireError` for anything that is
    not exactly one valid message.
    """
    mv = _bytes_view(datagram)
    return _decode_at(mv, 0, len(mv), src_port, whole=True)[0]


def decode_all(datagram: bytes | bytearray | memoryview, *, src_port: object = None,
               ) -> list[Decoded]:
    """Every message in one datagram (one, or several back to back), in order.

    Each message is checked as `decode` checks a lone one (`src_port` as there); payloads
    are memoryview slices of `datagram`. Raises `WireError` if any message is invalid or the
    last one is cut short.
    """
    mv = _bytes_view(datagram)
    size = len(mv)
    out = []
    at = 0
    try:
        while True:
            d, at = _decode_at(mv, at, size, src_port)
            out.append(d)
            if at == size:
                return out
    except WireError as e:
        alone = not out and _claims_all(mv, size)
        raise WireError(str(e) if alone else f"message {len(out) + 1} of a datagram: {e}",
                        ) from None


def _claims_all(mv: memoryview, size: int) -> bool:
    """Does the datagram's first message, by its header, take all `size` bytes (or is there
    no whole header)? Then an error in it is the datagram's, as `decode` would say it."""
    if size < HEADER_SIZE:
        return True
    head = _HEAD.unpack_from(mv, 0)
    kind, length, name_len = head[2], head[5], head[12]
    return HEADER_SIZE + name_len + (length if kind in _WITH_PAYLOAD else 0) >= size


def _decode_at(mv: memoryview, at: int, size: int, src_port: object, *, whole: bool = False,
               ) -> tuple[Decoded, int]:
    """The message whose header starts at byte `at` of the flat view `mv` (`size` bytes), and
    where it ends. It must not run past `size`; with `whole` (a lone message) it must end
    exactly there."""
    left = size - at
    if left < HEADER_SIZE:
        if at:
            raise WireError(f"{left} B at byte {at} of a {size}-byte datagram are shorter than "
                            f"the {HEADER_SIZE}-byte memory header")
        raise WireError(f"datagram of {left} B is shorter than the {HEADER_SIZE}-byte memory "
                        f"header")
    (magic, version, kind, tag, offset, length, addr, value, seq, src, credit, dtype,
     name_len) = _HEAD.unpack_from(mv, at)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic:#06x} (expected {MAGIC:#06x}): not a memory "
                        f"datagram; is something else sending to UDP port {MEM_PORT}?")
    if version != VERSION:
        raise WireError(f"datagram version {version}; this codec speaks version {VERSION}")
    name = _NAMES.get(kind)
    if name is None:
        raise WireError(f"unknown message kind {kind:#04x}")
    if name_len and kind not in _WITH_NAME:
        raise WireError(f"{name} takes no group name but its header says {name_len} name bytes")
    plen = length if kind in _WITH_PAYLOAD else 0
    want = HEADER_SIZE + name_len + plen
    if want > left or (whole and want < left):
        raise WireError(f"{name} datagram is {left} B but its header says {want} B "
                        f"({HEADER_SIZE} header + {name_len} name + {plen} payload)")
    start = at + HEADER_SIZE + name_len
    end = at + want
    port = src if src_port is None else src_port
    try:
        if kind == 0x02:
            msg: Message = Write(tag, port, addr, mv[start:end], offset)
        elif kind == 0x12:
            msg = WriteAck(tag, offset)
        elif kind == 0x01:
            msg = Read(tag, port, addr, length, offset)
        elif kind == 0x11:
            msg = ReadResp(tag, mv[start:end], offset)
        elif kind == 0x03:
            dt = _DTYPES.get(dtype)
            if dt is None:
                raise WireError(f"AtomicAdd dtype code {dtype} is unknown; codes are "
                                + ", ".join(f"{c} {d}" for d, c in DTYPE_CODES.items()))
            if dt in _FLOAT_DTYPES:
                value = _VALUE_F.unpack_from(mv, at + _VALUE_AT)[0]
            msg = AtomicAdd(tag, port, addr, value, dt, offset)
        elif kind == 0x13:
            msg = Error(tag, _text(mv[start:end], "Error reason"), offset)
        elif kind == 0x21:
            if credit == 0:
                raise WireError("Credit datagram returns 0 credits")
            msg = Credit(credit)
        else:
            group = _group(name, kind, mv[at:end], name_len)
            if kind == 0x04:
                msg = Contribute(tag, port, group, mv[start:end], offset, seq)
            elif kind == 0x14:
                msg = ReduceResult(tag, group, mv[start:end], offset, seq)
            elif kind == 0x22:
                msg = Join(group, tag)
            elif kind == 0x24:
                msg = Create(group, addr, length)
            else:
                msg = Leave(group, tag)
    except WireError:
        raise
    except FabricError as e:  # the dataclass refused a field (empty write, zero-length read)
        raise WireError(f"{name} datagram: {e}") from None
    return Decoded(msg, src, credit), end


def datagram_limit(mtu: int) -> int:
    """The largest datagram (UDP payload) that crosses a link of `mtu` unfragmented."""
    return max(HEADER_SIZE + 256, min(MAX_DATAGRAM, mtu - UDP_IP_HEADERS))


class Packer:
    """Encoded messages gathered into datagrams of at most `limit` bytes, per destination.

    `add(dest, parts)` queues one message (the parts `encode` returned) for `dest` and returns
    the datagrams it completed: a message that does not fit the open datagram closes it. A
    message longer than `limit` travels alone. `flush()` returns every open datagram, in the
    order their destinations first got a message, and empties the packer. Each datagram is
    `(dest, parts)`, the parts of its messages in the order they were added, for one
    `sendmsg`. Sans-IO: the caller sends.
    """

    def __init__(self, limit: int) -> None:
        if not isinstance(limit, int) or limit < HEADER_SIZE:
            raise WireError(f"a datagram limit of {limit!r} B does not hold one {HEADER_SIZE}-"
                            f"byte header; pass datagram_limit(mtu)")
        self.limit = limit
        self._open: dict[object, tuple[Parts, int]] = {}
        self.messages = 0  # messages added
        self.datagrams = 0  # datagrams returned

    def add(self, dest: object, parts: Parts) -> list[tuple[object, Parts]]:
        n = 0
        for p in parts:
            n += len(p)
        self.messages += 1
        cur = self._open.get(dest)
        if cur is None:
            self._open[dest] = (list(parts), n)
            return []
        have, size = cur
        if size + n <= self.limit:
            have.extend(parts)
            self._open[dest] = (have, size + n)
            return []
        self._open[dest] = (list(parts), n)
        self.datagrams += 1
        return [(dest, have)]

    def flush(self) -> list[tuple[object, Parts]]:
        out = [(dest, parts) for dest, (parts, _) in self._open.items()]
        self._open.clear()
        self.datagrams += len(out)
        return out

    def __len__(self) -> int:
        """Datagrams open (not yet flushed)."""
        return len(self._open)


def _text(raw: memoryview, what: str) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as e:
        raise WireError(f"{what} is not UTF-8: {e.reason} at byte {e.start}") from None


def _group(name: str, kind: int, mv: memoryview, name_len: int) -> str:
    if not 1 <= name_len <= MAX_NAME:
        raise WireError(f"{name} group name is {name_len} B; it must be 1..{MAX_NAME}")
    return _text(mv[HEADER_SIZE:HEADER_SIZE + name_len], f"{name} group name")
