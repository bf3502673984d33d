"""Memory datagrams: byte-exact headers, round trips of every kind, every WireError, fuzzing."""

from __future__ import annotations

import random
import re
import socket
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    itemsize,
    split,
)
from fabric.memsw.wire import (
    DTYPE_CODES,
    HEADER_SIZE,
    KINDS,
    MAX_DATAGRAM,
    MEM_PORT,
    Create,
    Credit,
    Decoded,
    Join,
    Leave,
    Packer,
    WireError,
    datagram_limit,
    decode,
    decode_all,
    encode,
    wire_len,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def datagram(msg, **kw) -> bytes:
    return b"".join(encode(msg, **kw))


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def header(kind: int, *, tag: int = 0, offset: int = 0, length: int = 0, addr: int = 0,
           value: int = 0, seq: int = 0, src: int = 0, credit: int = 0, dtype: int = 0,
           name_len: int = 0, magic: int = 0x4D53, version: int = 1) -> bytes:
    """A header built independently of the codec, for malformed datagrams."""
    return struct.pack("!HBBIIIQqIHHBB", magic, version, kind, tag, offset, length, addr, value,
                       seq, src, credit, dtype, name_len)


# -- byte-exact layout -------------------------------------------------------------------------


def test_constants() -> None:
    assert MEM_PORT == 4793
    assert HEADER_SIZE == 42
    assert MAX_DATAGRAM == 65507
    assert DTYPE_CODES == {"int32": 1, "int64": 2, "uint32": 3, "uint64": 4, "float16": 5,
                           "float32": 6, "bfloat16": 7}


def test_read_header_byte_exact() -> None:
    op = Read(0x01020304, 5, 0x1122_3344_5566_7700, 256, offset=0x40)
    parts = encode(op, src=5, credit=2)
    assert len(parts) == 1
    assert parts[0] == h(
        "4d53 01 01"            # magic "MS", version 1, kind Read
        "01020304"              # tag
        "00000040"              # offset
        "00000100"              # length: 256 bytes to read
        "1122334455667700"      # addr
        "0000000000000000"      # value (unused)
        "00000000"              # seq (unused)
        "0005 0002"             # src 5, credit 2
        "00 00")                # dtype (unused), name_len 0
    assert wire_len(op) == HEADER_SIZE == len(parts[0])


def test_write_header_byte_exact_and_payload_passed_through() -> None:
    data = memoryview(b"\xde\xad\xbe\xef")
    op = Write(7, 3, 0x1000, data, offset=0x80)
    parts = encode(op, src=3, credit=1)
    assert parts[0] == h("4d53 01 02 00000007 00000080 00000004 0000000000001000"
                         "0000000000000000 00000000 0003 0001 00 00")
    assert parts[1] is op.data  # not copied
    assert wire_len(op) == 46


def test_contribute_name_sits_between_header_and_payload() -> None:
    op = Contribute(9, 1, "grp", b"\x00\x3c", seq=4)
    parts = encode(op, src=1)
    assert parts[0] == h("4d53 01 04 00000009 00000000 00000002 0000000000000000"
                         "0000000000000000 00000004 0001 0000 00 03") + b"grp"
    assert parts[1] == b"\x00\x3c"


def test_atomic_operand_is_int64_or_float64() -> None:
    i = datagram(AtomicAdd(1, 0, 8, -2, "uint32"))
    assert i[24:32] == h("fffffffffffffffe")
    assert i[40] == 3
    f = datagram(AtomicAdd(1, 0, 8, 1.5, "bfloat16"))
    assert f[24:32] == struct.pack("!d", 1.5)
    assert f[40] == 7


def test_credit_join_leave_layout() -> None:
    assert datagram(Credit(3), src=2) == header(0x21, src=2, credit=3)
    assert datagram(Join("hc0", 70000)) == header(0x22, tag=70000, name_len=3) + b"hc0"
    assert datagram(Leave("hc0", 1)) == header(0x23, tag=1, name_len=3) + b"hc0"


def test_error_reason_is_the_payload() -> None:
    parts = encode(Error(4, "déjà vu", offset=64))
    assert parts[0] == header(0x13, tag=4, offset=64, length=9)
    assert parts[1] == "déjà vu".encode()


def test_empty_read_resp_is_header_only() -> None:
    assert encode(ReadResp(1, b"")) == [header(0x11, tag=1)]


# -- round trips -------------------------------------------------------------------------------

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
U64 = st.integers(0, (1 << 64) - 1)


def buffers(min_size: int = 0) -> st.SearchStrategy:
    raw = st.binary(min_size=min_size, max_size=256)
    return st.one_of(raw, raw.map(memoryview),
                     raw.map(lambda b: memoryview(b"<<" + b + b">>")[2:-2]),
                     raw.map(lambda b: memoryview(bytearray(b))))


names = st.text(min_size=1, max_size=8)  # at most 32 UTF-8 bytes


@st.composite
def atomics(draw, src):
    dtype = draw(st.sampled_from(ATOMIC_DTYPES))
    size = itemsize(dtype)
    addr = draw(st.integers(0, ((1 << 64) - 1) // size)) * size
    if dtype in ("float16", "float32", "bfloat16"):
        value = draw(st.floats(allow_nan=False))
    else:
        value = draw(st.integers(-(1 << 63), (1 << 63) - 1))
    return AtomicAdd(draw(U32), src, addr, value, dtype, draw(U32))


@st.composite
def messages(draw):
    src = draw(U16)
    kind = draw(st.sampled_from(sorted(KINDS, key=KINDS.get)))
    tag, off = draw(U32), draw(U32)
    if kind is Read:
        msg = Read(tag, src, draw(U64), draw(st.integers(1, 0xFFFF_FFFF)), off)
    elif kind is Write:
        msg = Write(tag, src, draw(U64), draw(buffers(1)), off)
    elif kind is AtomicAdd:
        msg = draw(atomics(src))
    elif kind is Contribute:
        msg = Contribute(tag, src, draw(names), draw(buffers(1)), off, draw(U32))
    elif kind is ReadResp:
        msg = ReadResp(tag, draw(buffers()), off)
    elif kind is WriteAck:
        msg = WriteAck(tag, off)
    elif kind is Error:
        msg = Error(tag, draw(st.text(max_size=300)), off)
    elif kind is ReduceResult:
        msg = ReduceResult(tag, draw(names), draw(buffers()), off, draw(U32))
    elif kind is Credit:
        return Credit(draw(st.integers(1, 0xFFFF))), src, None
    elif kind is Create:
        msg = Create(draw(names), draw(U64), draw(U32))
    else:
        msg = kind(draw(names), draw(U32))
    return msg, src, draw(U16)


def check_round_trip(msg, src: int, credit: int | None) -> None:
    parts = encode(msg, src=src, credit=credit or 0)
    raw = b"".join(parts)
    assert wire_len(msg) == len(raw)
    got = decode(raw)
    want_credit = msg.n if isinstance(msg, Credit) else credit
    assert got == Decoded(msg, src, want_credit)
    assert type(got.msg) is type(msg)
    if hasattr(msg, "data") and len(msg.data):
        assert isinstance(got.msg.data, memoryview)
        assert got.msg.data.obj is raw
    assert b"".join(encode(got.msg, src=got.src, credit=got.credit)) == raw


@settings(max_examples=1500, deadline=None)
@given(messages())
def test_round_trip_every_kind(case) -> None:
    check_round_trip(*case)


@pytest.mark.parametrize("dtype", ATOMIC_DTYPES)
def test_atomic_round_trip_each_dtype_at_the_extremes(dtype: str) -> None:
    if dtype.startswith(("int", "uint")):
        values: list[int | float] = [0, 1, -1, -(1 << 63), (1 << 63) - 1]
    else:
        values = [0.0, -0.0, 1e-300, -3.5, float("inf"), float("-inf"), 1.7976931348623157e308]
    for v in values:
        check_round_trip(AtomicAdd(1, 2, 16, v, dtype), 2, 0)


def test_atomic_float_operands() -> None:
    nan = decode(datagram(AtomicAdd(1, 0, 0, float("nan"), "float32"))).msg.value
    assert nan != nan
    three = decode(datagram(AtomicAdd(1, 0, 0, 3, "float16"))).msg.value
    assert three == 3.0
    assert isinstance(three, float)


def test_group_names_up_to_32_utf8_bytes() -> None:
    for name in ("x" * 32, "é" * 16, "\U0001f600" * 8):
        check_round_trip(ReduceResult(1, name, b"ab"), 0, 0)
        check_round_trip(Join(name, 3), 0, 0)


def test_decode_takes_bytearray_and_memoryview_and_aliases_them() -> None:
    raw = bytearray(datagram(Write(1, 0, 64, b"abcd")))
    d = decode(raw)
    raw[-1] = ord("Z")  # the payload is a view of the receive buffer, so it changes too
    assert bytes(d.msg.data) == b"abcZ"
    framed = memoryview(b"??" + bytes(raw) + b"??")[2:-2]
    assert decode(framed) == d
    interleaved = bytes(b for x in raw for b in (x, 0))
    assert decode(memoryview(interleaved)[::2]) == d  # strided: copied, then decoded
    assert decode(memoryview(bytes(raw)).cast("H")) == d  # 46 bytes seen as 23 u16s


def test_split_write_pieces_round_trip() -> None:
    op = Write(11, 4, 0x1030, bytes(range(256)) * 2)
    for piece in split(op, 256):
        got = decode(datagram(piece, src=4))
        assert got.msg == piece
        assert got.msg.src_port == 4


def test_sendmsg_parts_over_a_datagram_socket() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        op = Write(5, 1, 0x40, memoryview(bytearray(b"\x11" * 256)))
        a.sendmsg(encode(op, src=1, credit=1))
        assert decode(b.recv(MAX_DATAGRAM)) == Decoded(op, 1, 1)


def test_bulk_round_trip_of_fifty_thousand_messages() -> None:
    rng = random.Random(4793)
    sent = []
    for i in range(50_000):
        src = rng.randrange(1 << 16)
        data = rng.randbytes(rng.choice((64, 128, 192, 256, rng.randrange(1, 257))))
        r = rng.randrange(6)
        if r == 0:
            msg = Read(i, src, rng.randrange(1 << 40), rng.randrange(1, 257), rng.randrange(4) * 64)
        elif r == 1:
            msg = Write(i, src, rng.randrange(1 << 40), memoryview(data), rng.randrange(4) * 64)
        elif r == 2:
            msg = ReadResp(i, data, rng.randrange(4) * 64)
        elif r == 3:
            msg = WriteAck(i, rng.randrange(4) * 64)
        elif r == 4:
            msg = Contribute(i, src, f"g{rng.randrange(8)}", data, seq=rng.randrange(1 << 32))
        else:
            msg = AtomicAdd(i, src, rng.randrange(1 << 30) * 8, rng.randrange(-1000, 1000))
        credit = rng.randrange(2)
        sent.append((b"".join(encode(msg, src=src, credit=credit)), Decoded(msg, src, credit)))
    for raw, want in sent:
        assert decode(raw) == want


@settings(max_examples=3000, deadline=None)
@given(messages(), st.data())
def test_mutated_datagrams_decode_or_raise_wire_error(case, data) -> None:
    """Whatever arrives, decode returns a message whose datagram has that size, or a WireError."""
    msg, src, credit = case
    raw = bytearray(datagram(msg, src=src, credit=credit or 0))
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(("flip", "cut", "grow")))
        if how == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        elif how == "cut":
            del raw[data.draw(st.integers(0, len(raw))):]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=8))
    try:
        got = decode(bytes(raw))
    except WireError:
        return
    assert wire_len(got.msg) == len(raw)


# -- WireError, decoding ----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "datagram of 0 B is shorter than the 42-byte memory header"),
    (b"MS\x01", "datagram of 3 B is shorter than the 42-byte memory header"),
    (header(0x01, magic=0x1234, length=1),
     "bad magic 0x1234 (expected 0x4d53): not a memory datagram; is something else sending "
     "to UDP port 4793?"),
    (header(0x01, version=2, length=1), "datagram version 2; this codec speaks version 1"),
    (header(0x05), "unknown message kind 0x05"),
    (header(0x00), "unknown message kind 0x00"),
    (header(0x12, name_len=2) + b"hi", "WriteAck takes no group name but its header says 2 "
                                        "name bytes"),
    (header(0x02, tag=7, length=4, addr=64) + b"abc",
     "Write datagram is 45 B but its header says 46 B (42 header + 0 name + 4 payload)"),
    (header(0x12) + b"\x00",
     "WriteAck datagram is 43 B but its header says 42 B (42 header + 0 name + 0 payload)"),
    (header(0x01, length=8) + bytes(8),
     "Read datagram is 50 B but its header says 42 B (42 header + 0 name + 0 payload)"),
    (header(0x04, tag=1, length=2, name_len=1) + b"gab" + b"!",
     "Contribute datagram is 46 B but its header says 45 B (42 header + 1 name + 2 payload)"),
    (header(0x03, dtype=0), "AtomicAdd dtype code 0 is unknown; codes are 1 int32, 2 int64, "
                            "3 uint32, 4 uint64, 5 float16, 6 float32, 7 bfloat16"),
    (header(0x03, dtype=8), "AtomicAdd dtype code 8 is unknown; codes are 1 int32, 2 int64, "
                            "3 uint32, 4 uint64, 5 float16, 6 float32, 7 bfloat16"),
    (header(0x13, length=3) + b"a\xffb",
     "Error reason is not UTF-8: invalid start byte at byte 1"),
    (header(0x04, tag=1, length=2) + b"ab", "Contribute group name is 0 B; it must be 1..32"),
    (header(0x14, length=0, name_len=33) + b"x" * 33,
     "ReduceResult group name is 33 B; it must be 1..32"),
    (header(0x22, name_len=2) + b"\xc3(", "Join group name is not UTF-8: invalid continuation "
                                          "byte at byte 0"),
    (header(0x21), "Credit datagram returns 0 credits"),
    (header(0x02, tag=7, addr=0x1000),
     "Write datagram: Write tag 7 at 0x1000: data is empty"),
    (header(0x01, tag=3, addr=0x40),
     "Read datagram: Read tag 3 at 0x40: length must be a positive int, got 0"),
    (header(0x04, tag=2, name_len=1) + b"g", "Contribute datagram: Contribute tag 2: data is "
                                             "empty"),
    (header(0x03, tag=5, addr=0x44, dtype=2),
     "AtomicAdd datagram: AtomicAdd tag 5: address 0x44 is not aligned to its 8-byte int64 "
     "(use 0x40)"),
])
def test_decode_errors(raw: bytes, message: str) -> None:
    with pytest.raises(WireError, match=exactly(message)):
        decode(raw)


def test_create_bytes_and_round_trip() -> None:
    raw = b"".join(encode(Create("dyn", 0xC000_0000, 1 << 20), src=2))
    assert raw[3] == 0x24  # kind
    assert raw[12:16] == (1 << 20).to_bytes(4, "big")  # size in the length field
    assert raw[16:24] == (0xC000_0000).to_bytes(8, "big")  # base in the addr field
    assert raw[41] == 3
    assert raw[42:] == b"dyn"
    assert decode(raw) == Decoded(Create("dyn", 0xC000_0000, 1 << 20), 2, 0)
    with pytest.raises(WireError, match=r"Create 'dyn': size must be an int in 0\.\.4294967295"):
        Create("dyn", 0, 1 << 32)


def test_wire_error_is_a_fabric_error() -> None:
    assert issubclass(WireError, FabricError)


# -- WireError, encoding ----------------------------------------------------------------------

ALL = ("Read, Write, AtomicAdd, Contribute, ReadResp, WriteAck, Error, ReduceResult, Credit, "
       "Join, Leave, Create")


@pytest.mark.parametrize(("call", "message"), [
    (lambda: encode("hello"), f"cannot encode str; send one of {ALL}"),
    (lambda: wire_len(3), f"no datagram for int; send one of {ALL}"),
    (lambda: encode(WriteAck(1), src=65536),
     "WriteAck tag 1: src 65536 does not fit the 16-bit header field (an int in 0..0xffff)"),
    (lambda: encode(WriteAck(1), credit=-1),
     "WriteAck tag 1: credit -1 does not fit the 16-bit header field (an int in 0..0xffff)"),
    (lambda: encode(Read(-1, 0, 0, 64)),
     "Read tag -1: tag -1 does not fit the 32-bit header field (an int in 0..0xffffffff)"),
    (lambda: encode(Read(1 << 32, 0, 0, 64)),
     "Read tag 4294967296: tag 4294967296 does not fit the 32-bit header field (an int in "
     "0..0xffffffff)"),
    (lambda: encode(ReadResp(1, b"x", offset=1 << 32)),
     "ReadResp tag 1: offset 4294967296 does not fit the 32-bit header field (an int in "
     "0..0xffffffff)"),
    (lambda: encode(Read(1, 0, 0, 1 << 32)),
     "Read tag 1: length 4294967296 does not fit the 32-bit header field (an int in "
     "0..0xffffffff)"),
    (lambda: encode(Write(1, 0, 1 << 64, b"x")),
     "Write tag 1: addr 18446744073709551616 does not fit the 64-bit header field (an int in "
     "0..0xffffffffffffffff)"),
    (lambda: encode(Contribute(1, 0, "g", b"x", seq=1 << 32)),
     "Contribute tag 1: seq 4294967296 does not fit the 32-bit header field (an int in "
     "0..0xffffffff)"),
    (lambda: encode(Contribute(1, 0, 7, b"x")),
     "Contribute tag 1: group 7 must be a str name of 1..32 UTF-8 bytes to travel"),
    (lambda: encode(ReduceResult(1, "é" * 17, b"x")),
     "ReduceResult tag 1: group name 'ééééééééééééééééé' is 34 UTF-8 bytes; use 1..32"),
    (lambda: encode(ReduceResult(1, "", b"x")),
     "ReduceResult tag 1: group name '' is 0 UTF-8 bytes; use 1..32"),
    (lambda: encode(Contribute(1, 0, "\ud800", b"x")),
     "Contribute tag 1: group name '\\ud800' is not valid Unicode (surrogates not allowed)"),
    (lambda: wire_len(ReduceResult(1, ("a",), b"x")),
     "ReduceResult: group ('a',) must be a str name of 1..32 UTF-8 bytes to travel"),
    (lambda: encode(AtomicAdd(1, 0, 8, 1.5, "int64")),
     "AtomicAdd tag 1: an int64 operand must be an int, got 1.5"),
    (lambda: encode(AtomicAdd(1, 0, 8, 1 << 63, "uint64")),
     "AtomicAdd tag 1: operand 9223372036854775808 does not fit the int64 value field; add "
     "-9223372036854775808 instead (the same mod 2**64)"),
    (lambda: encode(AtomicAdd(1, 0, 8, -(1 << 63) - 1, "int64")),
     "AtomicAdd tag 1: operand -9223372036854775809 does not fit the int64 value field"),
    (lambda: encode(AtomicAdd(1, 0, 8, 10**400, "float32")),
     f"AtomicAdd tag 1: float32 operand {10**400!r} is not a float64 (int too large to "
     "convert to float)"),
    (lambda: encode(Credit(3), credit=2),
     "Credit(3) is itself 3 credits and carries them in the credit field; send Credit(5) "
     "instead of passing credit=2"),
    (lambda: encode(Credit(3), src=-1),
     "Credit: src -1 does not fit the 16-bit header field (an int in 0..0xffff)"),
    (lambda: encode(Write(1, 0, 0, bytes(65466))),
     "Write tag 1: 65466 B of payload do not fit one datagram (at most 65465 B); split "
     "requests with ops.split(op, max_txn)"),
    (lambda: encode(Contribute(1, 0, "gg", bytes(65464))),
     "Contribute tag 1: 65466 B of payload do not fit one datagram (at most 65465 B); split "
     "requests with ops.split(op, max_txn)"),
    (lambda: Credit(0), "Credit n must be an int in 1..65535, got 0"),
    (lambda: Credit(1 << 16), "Credit n must be an int in 1..65535, got 65536"),
    (lambda: Join("g", -1), "Join 'g': member must be an int in 0..4294967295, got -1"),
    (lambda: Leave("x" * 33, 1),
     f"Leave member 1: group name '{'x' * 33}' is 33 UTF-8 bytes; use 1..32"),
    (lambda: Join(None, 1), "Join member 1: group None must be a str name of 1..32 UTF-8 bytes "
                            "to travel"),
])
def test_encode_errors(call, message: str) -> None:
    with pytest.raises(WireError, match=exactly(message)):
        call()


def test_largest_payload_fits_and_error_reasons_never_fail_to_encode() -> None:
    big = Write(1, 0, 0, bytes(MAX_DATAGRAM - HEADER_SIZE))
    assert wire_len(big) == MAX_DATAGRAM
    assert decode(datagram(big)).msg == big
    # a lone surrogate (as from a surrogateescape'd path) is escaped rather than refused
    got = decode(datagram(Error(1, "bad \udcff path"))).msg
    assert got == Error(1, "bad \\udcff path")


# -- several messages per datagram ------------------------------------------------------------


def _mixed_messages(rng: random.Random, n: int) -> list[tuple[object, Decoded]]:
    out = []
    for i in range(n):
        src = rng.randrange(1 << 16)
        data = rng.randbytes(rng.choice((64, 256, rng.randrange(1, 257))))
        msg = rng.choice([
            Read(i, src, rng.randrange(1 << 40), 256, 0),
            Write(i, src, rng.randrange(1 << 40), memoryview(data), 64),
            ReadResp(i, data), WriteAck(i, 128), Error(i, "no window at 0x40"),
            Contribute(i, src, "tp", data, offset=256, seq=3),
            ReduceResult(i, "tp", data, offset=512, seq=4),
            AtomicAdd(i, src, 64, -3), Join("bcast", 2), Leave("bcast", 2),
            Create("g2", 0x9000_0000, 4096), Credit(2)])
        credit = 0 if isinstance(msg, Credit) else rng.randrange(3)
        msrc = 0 if isinstance(msg, (Join, Leave, Create)) else src
        out.append((msg, Decoded(msg, msrc, 2 if isinstance(msg, Credit) else credit)))
    return out


def _parts(msg: object, d: Decoded) -> list:
    return encode(msg, src=d.src, credit=0 if isinstance(msg, Credit) else d.credit)


def test_decode_all_takes_messages_back_to_back_each_with_its_own_header() -> None:
    rng = random.Random(18)
    msgs = _mixed_messages(rng, 400)
    for k in (1, 2, 4, 7):
        for at in range(0, len(msgs), k):
            chunk = msgs[at:at + k]
            raw = b"".join(b"".join(_parts(m, d)) for m, d in chunk)
            assert decode_all(raw) == [d for _, d in chunk]
            assert decode_all(bytearray(raw)) == [d for _, d in chunk]
    # a lone message decodes the same either way
    raw = b"".join(encode(ReadResp(9, b"\x01" * 256), src=3, credit=1))
    assert decode_all(raw) == [decode(raw)]


@pytest.mark.parametrize("cut", [1, 41, 42, 43, 200])
def test_decode_all_refuses_a_message_cut_short(cut: int) -> None:
    first = b"".join(encode(WriteAck(1), src=1, credit=1))
    second = b"".join(encode(Write(2, 1, 0x40, b"\x22" * 256), src=1))
    with pytest.raises(WireError, match=r"message 2 of a datagram|shorter than the 42-byte"):
        decode_all(first + second[:cut])
    with pytest.raises(WireError, match="datagram of 0 B|shorter than"):
        decode_all(b"")


def test_decode_all_names_the_bad_message() -> None:
    good = b"".join(encode(WriteAck(1), src=1, credit=1))
    bad = bytearray(good)
    bad[0] = 0
    with pytest.raises(WireError, match=r"message 2 of a datagram: bad magic"):
        decode_all(good + bytes(bad) + good)
    with pytest.raises(WireError, match=r"^bad magic"):
        decode_all(bytes(bad))
    with pytest.raises(WireError, match=r"^message 1 of a datagram: bad magic"):
        decode_all(bytes(bad) + good)  # the first of two


def test_datagram_limit_keeps_datagrams_unfragmented() -> None:
    assert datagram_limit(1500) == 1472
    assert datagram_limit(9000) == 8972
    assert datagram_limit(65535) == MAX_DATAGRAM
    # never below one whole 256-byte transaction (the plan refuses such MTUs anyway)
    assert datagram_limit(200) == HEADER_SIZE + 256


def test_packer_fills_datagrams_per_destination_in_order() -> None:
    p = Packer(1472)
    out = []
    for i in range(9):
        out += p.add("a", encode(Write(i, 0, 0x40 * i, b"\x33" * 256), src=1))
        out += p.add("b", encode(WriteAck(i), src=2, credit=1))  # 42 B
    # four 298-byte writes fit 1472 B (1192), a fifth does not: two full datagrams for "a"
    assert [d for d, _ in out] == ["a", "a"]
    assert all(sum(len(x) for x in parts) == 4 * 298 for _, parts in out)
    rest = p.flush()
    assert [d for d, _ in rest] == ["a", "b"]  # in the order the destinations first came
    assert len(p) == 0
    assert p.flush() == []
    got = [m.msg.tag for _, parts in [*out, rest[0]] for m in decode_all(b"".join(parts))]
    assert got == list(range(9))
    acks = decode_all(b"".join(rest[1][1]))
    assert [(m.msg, m.src, m.credit) for m in acks] == [(WriteAck(i), 2, 1) for i in range(9)]
    assert (p.messages, p.datagrams) == (18, 4)


def test_packer_sends_an_oversized_message_alone() -> None:
    p = Packer(HEADER_SIZE + 256)
    big = encode(Write(1, 0, 0x40, b"\x44" * 1024), src=1)
    assert p.add("a", encode(WriteAck(1))) == []
    assert [d for d, _ in p.add("a", big)] == ["a"]  # closes the ack's datagram
    assert [d for d, _ in p.add("a", encode(WriteAck(2)))] == ["a"]  # closes the big one
    assert [len(decode_all(b"".join(parts))) for _, parts in p.flush()] == [1]
    with pytest.raises(WireError, match="does not hold one 42-byte header"):
        Packer(10)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 11)), max_size=60),
       st.integers(HEADER_SIZE + 256, 4000))
def test_packer_never_reorders_drops_or_oversizes(adds: list, limit: int) -> None:
    rng = random.Random(limit)
    msgs = _mixed_messages(rng, 12)
    p = Packer(limit)
    sent: dict[str, list[Decoded]] = {}
    datagrams = []
    for dest, i in adds:
        m, d = msgs[i]
        sent.setdefault(dest, []).append(d)
        datagrams += p.add(dest, _parts(m, d))
    datagrams += p.flush()
    got: dict[str, list[Decoded]] = {}
    for dest, parts in datagrams:
        raw = b"".join(parts)
        ds = decode_all(raw)
        assert len(raw) <= limit or len(ds) == 1
        got.setdefault(dest, []).extend(ds)
    assert got == sent


def test_decode_can_name_the_port_a_request_came_in_on() -> None:
    """The switch passes the port's name: requests come out with it as `src_port` (the
    header's `src` stays in `Decoded.src`); responses have no `src_port` and are unchanged."""
    reqs = [Read(1, 7, 0x40, 64), Write(2, 7, 0x80, b"\x01" * 64), AtomicAdd(3, 7, 0xC0, 5),
            Contribute(4, 7, "tp", b"\x02" * 64, seq=9)]
    raw = b"".join(p for r in reqs for p in encode(r, src=7, credit=1))
    got = decode_all(raw, src_port="gpu-0")
    assert [d.msg for d in got] == [replace(r, src_port="gpu-0") for r in reqs]
    assert {(d.src, d.credit) for d in got} == {(7, 1)}
    ack = datagram(WriteAck(5), src=7)
    assert decode(ack, src_port="gpu-0") == decode(ack) == Decoded(WriteAck(5), 7, 0)
