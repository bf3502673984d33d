"""The memory-semantic switch core: address map, transactions, ordering, credits, timing,
Hypercast replication, in-network reduce against numpy and a ring all-reduce, cascading."""

from __future__ import annotations

import gc
import random
import re
import weakref
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import FabricError
from fabric.memsw import (
    TXN_SIZES,
    AccessError,
    AddressMap,
    AddressMapError,
    AtomicAdd,
    Contribute,
    Deliver,
    Error,
    Fabric,
    MemoryEndpoint,
    MemorySwitch,
    PortConfig,
    Read,
    ReadResp,
    ReduceGroup,
    ReduceResult,
    Respond,
    Window,
    Write,
    WriteAck,
    decode,
    encode,
    flits,
    reassemble,
    ring_allreduce,
    split,
)

G = 1_000_000_000
MEM = 0x1000_0000  # base of the memory behind port "mem"
MC = 0x8000_0000  # base of the Hypercast window


def cfg(rate_gbps: int = 100, latency_ns: int = 150, credits: int = 8) -> PortConfig:
    return PortConfig(rate_gbps * G, latency_ns, credits)


def make_switch(ports=("a", "b", "mem", "c", "d"), credits: int = 8, **kw) -> MemorySwitch:
    amap = AddressMap([
        Window("mem", MEM, 1 << 16, "mem"),
        Window("b", 0x2000_0000, 4096, "b"),
        Window("moe", MC, 1 << 16, "experts", multicast=True),
    ])
    return MemorySwitch(amap, {p: cfg(credits=credits) for p in ports}, **kw)


def drive(sw, endpoints, actions=(), *, credit=True):
    """Run `sw` until idle: endpoints answer each delivery at once and return its credit.

    Returns the Respond actions (to requesters) in time order and the Deliver actions."""
    responds, delivers = [], []
    todo = deque(actions)
    while True:
        while todo:
            a = todo.popleft()
            if isinstance(a, Respond):
                responds.append(a)
                continue
            delivers.append(a)
            ep = endpoints.get(a.port)
            if ep is None:
                continue
            todo.extend(sw.complete(a.port, a.op, ep.apply(a.op), a.at_ns))
            if credit:
                todo.extend(sw.on_credit(a.port, 1, a.at_ns))
        t = sw.next_deadline()
        if t is None:
            return responds, delivers
        todo.extend(sw.advance(t))


# -- address map ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"base": 0, "size": 0}, r"window 'w': size is 0"),
    ({"base": 0x1010, "size": 64}, r"base 0x1010 is not 64-byte aligned \(use 0x1000 or 0x1040\)"),
    ({"base": 0, "size": 100}, r"size 100 is not a multiple of 64 bytes \(use 64 or 128\)"),
    ({"base": -64, "size": 64}, r"base -64 is negative"),
])
def test_bad_window(kwargs, match):
    with pytest.raises(AddressMapError, match=match):
        Window("w", port=1, **kwargs)


def test_overlapping_windows_name_both():
    with pytest.raises(FabricError, match=r"window 'x' \[0x0, 0x1000\) and window 'y' "
                                          r"\[0xfc0, 0x2000\) overlap by 64 bytes at 0xfc0"):
        AddressMap([Window("y", 0xFC0, 0x2000 - 0xFC0, 2), Window("x", 0, 0x1000, 1)])
    with pytest.raises(AddressMapError, match="two windows are named 'x'"):
        AddressMap([Window("x", 0, 64, 1), Window("x", 64, 64, 2)])


def test_lookup_inside_and_every_bad_access():
    amap = make_switch().address_map
    before = (amap.windows, amap.groups)
    assert amap.lookup(MEM, 1).name == "mem"
    assert amap.lookup(MEM + (1 << 16) - 256, 256).name == "mem"
    assert amap.lookup(0x2000_0000 + 17, 100).name == "b"
    with pytest.raises(AccessError, match=r"address 0x3000 \(8 B\) is outside every window; "
                                          r"the nearest is window 'mem' \[0x10000000"):
        amap.lookup(0x3000, 8)
    with pytest.raises(AccessError, match=r"\(128 B at 0x1000ffc0\) runs 64 bytes past the end "
                                          r"of window 'mem'.*split it at 0x10010000"):
        amap.lookup(MEM + (1 << 16) - 64, 128)
    with pytest.raises(AccessError, match=r"runs 1 bytes past the end of window 'b'"):
        amap.lookup(0x2000_0000, 4097)  # larger than the whole window
    with pytest.raises(AccessError, match=r"starts 16 bytes before window 'b'.*start it at "
                                          r"0x20000000"):
        amap.lookup(0x2000_0000 - 16, 64)
    with pytest.raises(AccessError, match="length 0; it must be positive"):
        amap.lookup(MEM, 0)
    with pytest.raises(AccessError, match="is negative"):
        amap.lookup(-64, 8)
    assert (amap.windows, amap.groups) == before
    assert AddressMap([]).windows == ()
    with pytest.raises(AccessError, match="the map is empty"):
        AddressMap([]).lookup(0, 1)


def test_groups_join_leave_and_errors_change_nothing():
    amap = AddressMap([Window("moe", MC, 4096, "g", multicast=True)])
    amap.add_group("g", [1, 2])
    amap.join("g", 3)
    amap.leave("g", 1)
    assert amap.members("g") == (2, 3)
    before = amap.groups
    with pytest.raises(AddressMapError, match="group 'g' already exists"):
        amap.add_group("g")
    with pytest.raises(AddressMapError, match="port 2 is already a member of group 'g'"):
        amap.join("g", 2)
    with pytest.raises(AddressMapError, match=r"port 9 is not a member of group 'g'; members "
                                              r"are \[2, 3\]"):
        amap.leave("g", 9)
    with pytest.raises(AddressMapError, match="no multicast group 'h'; add_group"):
        amap.join("h", 1)
    with pytest.raises(AddressMapError, match="repeat a port"):
        amap.add_group("k", [1, 1])
    assert amap.groups == before


def test_switch_rejects_bad_requests_and_changes_no_counter():
    sw = make_switch()
    sw.address_map.add_group("experts", ["c"])
    mem = MemoryEndpoint(MEM, 1 << 16)
    drive(sw, {"mem": mem}, sw.submit(Write(1, "a", MEM, b"x" * 64), 0))
    before = sw.statistics()
    bad = [
        (Write(2, "a", 0x3000, b"x" * 8), r"address 0x3000 \(8 B\) is outside every window"),
        (Write(3, "a", MEM + (1 << 16) - 64, b"y" * 128), "runs 64 bytes past the end"),
        (Write(4, "a", MEM, b"z" * 512), r"touches 8 flits.*split it with fabric.memsw.split"),
        (Read(5, "a", MC, 64), "only writes can be multicast"),
        (Contribute(6, "a", "nope", b"\0" * 4), "no reduce group 'nope'"),
    ]
    t = 1000
    for op, match in bad:
        out, _ = drive(sw, {"mem": mem}, sw.submit(op, t))
        assert len(out) == 1
        assert isinstance(out[0].resp, Error)
        assert out[0].resp.tag == op.tag
        assert out[0].port == "a"
        assert re.search(match, out[0].resp.reason), out[0].resp.reason
        t += 1000
    after = sw.statistics()
    assert after.rejected == len(bad)
    for p in sw.ports:
        b, a = before.ports[p], after.ports[p]
        assert (a.bytes_in, a.bytes_out, a.ops_in, a.ops_out, a.credits, a.stalls, a.queued) == \
            (b.bytes_in, b.bytes_out, b.ops_in, b.ops_out, b.credits, b.stalls, b.queued)
    assert after.ports["a"].rejected == len(bad)
    assert bytes(mem.data[:64]) == b"x" * 64
    assert not any(mem.data[64:])
    with pytest.raises(AccessError, match=r"address 0x10000003 is not aligned to its 8-byte "
                                          r"int64 \(use 0x10000000\)"):
        AtomicAdd(7, "a", MEM + 3, 1, "int64")
    with pytest.raises(FabricError, match="src_port 'zz' is not a port of this switch"):
        sw.submit(Read(8, "zz", MEM, 8), t)
    with pytest.raises(FabricError, match="time went backwards"):
        sw.submit(Read(8, "a", MEM, 8), 0)


def test_window_to_unknown_port_is_a_config_error():
    amap = AddressMap([Window("w", 0, 64, "nowhere")])
    with pytest.raises(FabricError, match="window 'w' .* leads to port 'nowhere'"):
        MemorySwitch(amap, {"a": cfg()})


# -- split and reassembly ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(addr=st.integers(0, 4096), length=st.integers(1, 3000), max_txn=st.sampled_from(TXN_SIZES))
def test_split_and_reassemble_byte_exact(addr, length, max_txn):
    data = bytes((i * 7 + 3) % 251 for i in range(length))
    w = Write(9, "a", addr, data)
    pieces = split(w, max_txn)
    pos = addr
    for p in pieces:
        assert (p.addr, p.offset, p.tag) == (pos, pos - addr, 9)
        assert flits(p) * 64 <= max_txn
        assert p.addr // 64 + max_txn // 64 > (p.addr + p.length - 1) // 64
        pos += p.length
    assert pos == addr + length
    assert b"".join(bytes(p.data) for p in pieces) == data
    # the number of pieces is the minimum for this flit budget
    assert len(pieces) == -(-((addr + length - 1) // 64 - addr // 64 + 1) // (max_txn // 64))

    r = Read(9, "a", addr, length)
    rpieces = split(r, max_txn)
    assert [(p.addr, p.length, p.offset) for p in rpieces] == \
        [(p.addr, p.length, p.offset) for p in pieces]
    resps = [ReadResp(9, data[p.offset:p.offset + p.length], offset=p.offset) for p in rpieces]
    random.Random(length).shuffle(resps)
    assert reassemble(r, resps, max_txn) == ReadResp(9, data)
    assert reassemble(w, [WriteAck(9, p.offset) for p in pieces], max_txn) == WriteAck(9)


def test_reassembly_errors():
    r = Read(1, "a", 0, 512)
    parts = split(r)
    ok = [ReadResp(1, b"\0" * p.length, offset=p.offset) for p in parts]
    with pytest.raises(FabricError, match=r"still waiting for the pieces at offsets \[256\]"):
        reassemble(r, ok[:1])
    with pytest.raises(FabricError, match="two responses for offset 0"):
        reassemble(r, [*ok, ok[0]])
    with pytest.raises(FabricError, match="no piece starts at offset 7"):
        reassemble(r, [*ok, ReadResp(1, b"", offset=7)])
    failed = reassemble(r, [ok[0], Error(1, "boom", offset=256)])
    assert failed == Error(1, "piece at offset 256: boom")
    with pytest.raises(FabricError, match="max_txn is 100"):
        split(r, 100)


class _Tag(int):
    """An int subclass: not the plain int the quick check of a Write takes."""


@pytest.mark.parametrize(("fields", "data", "kept"), [
    ((1, "a", 0x40, 0), b"xy", bytes),  # the quick check's cases
    ((1, "a", 0x40, 0), memoryview(b"xy"), memoryview),
    ((-3, "a", 0, 7), b"x", bytes),  # a negative tag is an int like any other
    ((_Tag(1), "a", 0x40, 0), b"x", bytes),  # the full checks take int subclasses
    ((1, "a", 0x40, 0), bytearray(b"xy"), bytes),  # copied: a frozen op does not change
    ((1, "a", 0x40, 0), memoryview(bytes(8)).cast("I"), memoryview),  # cast to bytes
    ((1, "a", 0x40, 0), memoryview(bytes(8)).cast("B", (2, 4)), memoryview),
])
def test_write_takes_what_the_full_checks_take(fields, data, kept) -> None:
    tag, port, addr, offset = fields
    w = Write(tag, port, addr, data, offset)
    assert type(w.data) is kept
    view = memoryview(w.data)
    assert (view.format, view.ndim, bytes(view)) == ("B", 1, bytes(memoryview(data)))


@pytest.mark.parametrize(("fields", "data", "error"), [
    ((True, "a", 0x40, 0), b"x", "Write: tag must be an int, got True"),
    ((1.0, "a", 0x40, 0), b"x", "Write: tag must be an int, got 1.0"),
    ((1, "a", 0x40, -1), b"x", "Write tag 1: offset must be a non-negative int, got -1"),
    ((1, "a", -64, 0), b"x", "Write tag 1: address must be a non-negative int, got -64"),
    ((1, "a", False, 0), b"x", "Write tag 1: address must be a non-negative int, got False"),
    ((1, "a", 0x40, 0), b"", "Write tag 1 at 0x40: data is empty"),
    ((1, "a", 0x40, 0), memoryview(b""), "Write tag 1 at 0x40: data is empty"),
    ((1, "a", 0x40, 0), "xy", "Write tag 1: data must be bytes or memoryview, got str"),
])
def test_write_refuses_what_the_full_checks_refuse(fields, data, error) -> None:
    tag, port, addr, offset = fields
    with pytest.raises(AccessError, match=re.escape(error)):
        Write(tag, port, addr, data, offset)


def test_a_memory_keeps_no_request_it_applied() -> None:
    """A serving endpoint applies requests for as long as a fabric runs: holding on to each
    (and through its data, the datagram it came in) grew one by ~17 MB/s under load."""
    mem = MemoryEndpoint(MEM, 4096)
    datagram = bytearray(512)
    ops = [Write(1, "a", MEM, memoryview(datagram)[42:298]), Read(2, "a", MEM, 8),
           AtomicAdd(3, "a", MEM + 8, 1, "int64")]
    refs = [weakref.ref(op) for op in ops]
    answers = [mem.apply(op) for op in ops]
    assert [type(a) for a in answers] == [WriteAck, ReadResp, ReadResp]
    del ops
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_split_write_is_zero_copy_and_atomic_is_whole():
    buf = bytearray(range(256)) * 4
    w = Write(1, "a", 32, memoryview(buf))
    assert all(isinstance(p.data, memoryview) for p in split(w, 128))
    a = AtomicAdd(2, "a", 64, 5, "int32")
    assert split(a, 64) == [a]


@settings(max_examples=40, deadline=None)
@given(addr=st.integers(0, 2048), length=st.integers(1, 1500), max_txn=st.sampled_from(TXN_SIZES))
def test_split_write_then_read_through_the_switch(addr, length, max_txn):
    sw = make_switch(max_txn=max_txn)
    mem = MemoryEndpoint(MEM, 1 << 16)
    data = bytes((i * 13 + length) % 256 for i in range(length))
    w = Write(1, "a", MEM + addr, data)
    acts = []
    for p in split(w, max_txn):
        acts += sw.submit(p, 0)
    responds, _ = drive(sw, {"mem": mem}, acts)
    assert reassemble(w, [r.resp for r in responds], max_txn) == WriteAck(1)
    r = Read(2, "a", MEM + addr, length)
    acts = []
    for p in split(r, max_txn):
        acts += sw.submit(p, 10_000)
    responds, _ = drive(sw, {"mem": mem}, acts)
    assert reassemble(r, [x.resp for x in responds], max_txn) == ReadResp(2, data)
    assert sw.statistics().ports["a"].bytes_in == length
    assert sw.statistics().ports["a"].bytes_out == length


# -- ordering ---------------------------------------------------------------------------------


def test_same_source_same_address_is_ordered_even_if_the_endpoint_answers_out_of_order():
    sw = make_switch()
    w1 = Write(1, "a", MEM, b"1" * 64)
    w2 = Write(2, "a", MEM, b"2" * 64)
    r3 = Read(3, "a", MEM, 64)
    delivered = []
    for op in (w1, w2, r3):
        sw.submit(op, 0)
    while (t := sw.next_deadline()) is not None:
        delivered += sw.advance(t)
    assert [d.op.tag for d in delivered] == [1, 2, 3]  # delivery in issue order
    # the endpoint answers out of order: the read first, then w2, then w1
    assert sw.complete("mem", r3, ReadResp(3, b"2" * 64), 500) == []
    assert sw.complete("mem", w2, WriteAck(2), 600) == []
    acts = sw.complete("mem", w1, WriteAck(1), 700)
    while (t := sw.next_deadline()) is not None:
        acts += sw.advance(t)
    assert [a.resp.tag for a in acts] == [1, 2, 3]  # responses held back into issue order
    assert [a.at_ns for a in acts] == sorted(a.at_ns for a in acts)


def test_different_addresses_may_complete_out_of_order():
    sw = make_switch()
    w1 = Write(1, "a", MEM, b"1" * 64)
    w2 = Write(2, "a", MEM + 64, b"2" * 64)
    sw.submit(w1, 0)
    sw.submit(w2, 0)
    while sw.next_deadline() is not None:
        sw.advance(sw.next_deadline())
    acts = sw.complete("mem", w2, WriteAck(2), 400)
    acts += sw.advance(sw.next_deadline())
    assert [a.resp.tag for a in acts] == [2]  # w2 overtakes w1: disjoint ranges


def _held_back_rule(issued, answered):
    """The ordering rule, stated as a full scan: of `issued` (tag, lo, hi) in issue order, the
    answered ones that no earlier unsent overlapping request holds back go, in issue order."""
    blocked, keep, done = [], [], []
    for tag, lo, hi in issued:
        if tag in answered and not any(blo < hi and lo < bhi for blo, bhi in blocked):
            done.append(tag)
        else:
            keep.append((tag, lo, hi))
            blocked.append((lo, hi))
    return keep, done


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.sampled_from([64, 128, 256])), min_size=1,
                max_size=24),
       st.randoms(use_true_random=False))
def test_responses_leave_by_the_held_back_rule_whatever_the_answer_order(reqs, rnd):
    """Requests from one source to overlapping and disjoint ranges, answered in any order: after
    each answer, exactly the responses the full-scan rule releases leave, in issue order (the
    switch's fast path for answers with nothing held back must agree with it)."""
    sw = make_switch(credits=64)
    ops = [Write(tag, "a", MEM + 64 * slot, bytes([tag]) * size)
           for tag, (slot, size) in enumerate(reqs)]
    for op in ops:
        sw.submit(op, 0)
    while (t := sw.next_deadline()) is not None:
        sw.advance(t)
    issued = [(op.tag, op.addr, op.addr + op.length) for op in ops]
    answered: set[int] = set()
    order = list(ops)
    rnd.shuffle(order)
    now = 1000
    for op in order:
        answered.add(op.tag)
        acts = sw.complete("mem", op, WriteAck(op.tag), now)
        while (t := sw.next_deadline()) is not None:
            acts += sw.advance(t)
        issued, want = _held_back_rule(issued, answered)
        assert [a.resp.tag for a in acts] == want
        now = max([now, *(a.at_ns for a in acts)]) + 100
    assert issued == []


def test_a_stalled_port_does_not_hold_back_another_port():
    sw = make_switch(credits=1)
    sw.submit(Write(1, "a", MEM, b"x" * 64), 0)  # takes mem's only credit
    sw.submit(Write(2, "a", MEM + 64, b"y" * 64), 0)  # waits for a credit
    sw.submit(Write(3, "a", 0x2000_0000, b"z" * 64), 0)  # to port b
    out = []
    while sw.next_deadline() is not None:
        out += sw.advance(sw.next_deadline())
    assert [(d.port, d.op.tag) for d in out] == [("mem", 1), ("b", 3)]
    out = sw.on_credit("mem", 1, 1000)
    out += sw.advance(sw.next_deadline())
    assert [(d.port, d.op.tag) for d in out] == [("mem", 2)]


# -- credits and timing -----------------------------------------------------------------------


def test_credits_stall_and_release_exactly():
    sw = make_switch(credits=2)
    for i in range(5):
        sw.submit(Write(i, "a", MEM + 64 * i, b"d" * 64), 0)
    st0 = sw.statistics().ports["mem"]
    assert (st0.credits, st0.queued, st0.stalls, st0.ops_out) == (0, 3, 3, 2)
    out = sw.on_credit("mem", 1, 1000)
    st1 = sw.statistics().ports["mem"]
    assert (st1.credits, st1.queued, st1.ops_out) == (0, 2, 3)
    out += sw.on_credit("mem", 2, 2000)
    st2 = sw.statistics().ports["mem"]
    assert (st2.credits, st2.queued, st2.ops_out, st2.stalls) == (0, 0, 5, 3)
    # each stalled write waited from ready (0 + 150 ns) to its credit
    assert st2.stall_ns == (1000 - 150) + 2 * (2000 - 150)
    out += sw.advance(10_000)
    # two delivered before any credit (150+6, then +6), one at 1000+6, two at 2000+6 and +6
    assert [d.at_ns for d in out] == [156, 162, 1006, 2006, 2012]
    with pytest.raises(FabricError, match=r"returning 3 credits would make 3, more than its 2 "
                                          r"buffers"):
        sw.on_credit("mem", 3, 10_000)
    assert sw.statistics().ports["mem"].credits == 0


def test_latency_is_port_to_port_plus_serialisation():
    sw = make_switch()
    # 256 B at 100 Gbps: 2048 bits / 100 bits/ns = 20.48 -> 21 ns; port-to-port 150 ns
    sw.submit(Write(1, "a", MEM, b"w" * 256), 1000)
    sw.submit(Write(2, "a", MEM + 256, b"w" * 256), 1000)
    out = sw.advance(2000)
    assert [(d.op.tag, d.at_ns) for d in out] == [(1, 1171), (2, 1192)]  # back to back
    for d in out:  # (until the writes are answered, rule 1 would hold back the read below)
        sw.complete("mem", d.op, WriteAck(d.op.tag), 2000)
    assert [x.resp for x in sw.advance(2999)] == [WriteAck(1), WriteAck(2)]
    # a read request is one 64 B header flit: 512 bits -> 5.12 -> 6 ns
    r = Read(3, "a", MEM, 256)
    sw.submit(r, 3000)
    assert sw.next_deadline() == 3156
    (d,) = sw.advance(3156)
    assert d.at_ns == 3156
    # the 256 B response: 150 ns to port a plus 21 ns on a's link
    sw.complete("mem", r, ReadResp(3, b"r" * 256), 3156)
    (resp,) = sw.advance(5000)
    assert resp == Respond("a", ReadResp(3, b"r" * 256), 3156 + 150 + 21)


def test_faster_port_serialises_faster():
    amap = AddressMap([Window("m", 0, 4096, "m")])
    sw = MemorySwitch(amap, {"a": cfg(), "m": PortConfig(400 * G, 200, 4)})
    sw.submit(Write(1, "a", 0, b"x" * 192), 0)
    (d,) = sw.advance(1000)
    assert d.at_ns == 200 + 4  # 1536 bits / 400 bits/ns = 3.84 -> 4


def test_atomics_return_the_old_value_in_order():
    sw = make_switch()
    mem = MemoryEndpoint(MEM, 1 << 16)
    acts = []
    for i in range(4):
        acts += sw.submit(AtomicAdd(i, "a", MEM + 8, 10, "int64"), 0)
    acts += sw.submit(AtomicAdd(9, "a", MEM + 16, 1.5, "bfloat16"), 0)
    responds, _ = drive(sw, {"mem": mem}, acts)
    old = {r.resp.tag: decode(r.resp.data, "int64")[0] for r in responds if r.resp.tag < 9}
    assert old == {0: 0, 1: 10, 2: 20, 3: 30}
    assert decode(bytes(mem.data[8:16]), "int64")[0] == 40
    assert decode(bytes(mem.data[16:18]), "bfloat16")[0] == 1.5


# -- cascading --------------------------------------------------------------------------------


def test_two_tier_latency_adds_per_hop():
    win = [Window("far", MEM, 4096, "up")]
    leaf0 = MemorySwitch(AddressMap(win), {0: cfg(), "up": cfg(400, 100)})
    spine = MemorySwitch(AddressMap([Window("far", MEM, 4096, "l1")]),
                         {"l0": cfg(400, 200), "l1": cfg(400, 200)})
    leaf1 = MemorySwitch(AddressMap([Window("far", MEM, 4096, 1)]),
                         {"up": cfg(400, 100), 1: cfg(100, 150)})
    fab = Fabric({"leaf0": leaf0, "spine": spine, "leaf1": leaf1},
                 [(("leaf0", "up"), ("spine", "l0")), (("spine", "l1"), ("leaf1", "up"))])
    mem = MemoryEndpoint(MEM, 4096)
    w = Write(7, 0, MEM + 64, b"q" * 256)
    out = fab.submit("leaf0", w, 0)
    while (t := fab.next_deadline()) is not None:
        out += fab.advance(t)
    (d,) = out
    # leaf0 -> up: 100 + 6 (2048 bits at 400G = 5.12); spine -> l1: 200 + 6; leaf1 -> 1: 150 + 21
    assert d.port == ("leaf1", 1)
    assert d.at_ns == (100 + 6) + (200 + 6) + (150 + 21)
    acts = fab.complete(d.port, d.op, mem.apply(d.op), d.at_ns)
    acts += fab.on_credit(d.port, 1, d.at_ns)
    while (t := fab.next_deadline()) is not None:
        acts += fab.advance(t)
    (ack,) = acts
    # an ack is one header flit: back through leaf1 (100 + 2), spine (200 + 2), leaf0 (150 + 6)
    assert ack == Respond(("leaf0", 0), WriteAck(7), d.at_ns + 102 + 202 + 156)
    assert bytes(mem.data[64:320]) == b"q" * 256
    stats = fab.statistics()
    assert stats["spine"].ports["l1"].bytes_out == 256
    assert stats["leaf0"].ports["up"].credits == 8  # the link's credit came back


def test_fabric_rejects_bad_links():
    sw = make_switch()
    with pytest.raises(FabricError, match="switch 'x' has no port 'nope'"):
        Fabric({"x": sw}, [(("x", "a"), ("x", "nope"))])
    with pytest.raises(FabricError, match="is used by two links"):
        Fabric({"x": sw}, [(("x", "a"), ("x", "b")), (("x", "a"), ("x", "c"))])


# -- Hypercast --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("n", [64, 256, 1000])
def test_hypercast_sender_link_carries_the_data_once(k, n):
    ports = ["src", *[f"m{i}" for i in range(k)]]
    sw = make_switch(ports=(*ports, "mem", "b"))
    sw.address_map.add_group("experts", ports[1:])
    eps = {p: MemoryEndpoint(MC, 1 << 16) for p in ports[1:]}
    data = bytes(range(256)) * 4
    w = Write(1, "src", MC + 64, data[:n])
    acts = []
    for p in split(w):
        acts += sw.submit(p, 0)
    responds, delivers = drive(sw, eps, acts)
    st_ = sw.statistics()
    assert st_.ports["src"].bytes_in == n  # once on the sender's link
    assert st_.ports["src"].bytes_out == 0  # acks carry no payload
    for m in ports[1:]:
        assert st_.ports[m].bytes_out == n
        assert bytes(eps[m].data[64:64 + n]) == data[:n]
    assert sum(st_.ports[m].bytes_out for m in ports[1:]) == k * n
    assert st_.replicated == (k - 1) * len(split(w))
    # one ack per transaction to the source, after every member acknowledged
    assert reassemble(w, [r.resp for r in responds]) == WriteAck(1)
    assert len(responds) == len(split(w))
    for r in responds:  # each ack leaves after the last member answered (at its delivery)
        copies = [d.at_ns for d in delivers if d.op.offset == r.resp.offset]
        assert len(copies) == k
        assert r.at_ns > max(copies)


def test_hypercast_groups_are_dynamic():
    sw = make_switch()
    sw.address_map.add_group("experts", ["b", "c"])
    eps = {p: MemoryEndpoint(MC, 1 << 16) for p in ("b", "c", "d")}
    drive(sw, eps, sw.submit(Write(1, "a", MC, b"1" * 64), 0))
    sw.leave("experts", "b")
    sw.join("experts", "d")
    drive(sw, eps, sw.submit(Write(2, "a", MC, b"2" * 64), 1000))
    assert bytes(eps["b"].data[:64]) == b"1" * 64
    assert bytes(eps["c"].data[:64]) == b"2" * 64
    assert bytes(eps["d"].data[:64]) == b"2" * 64
    with pytest.raises(FabricError, match="'zz' is not a port of this switch"):
        sw.join("experts", "zz")
    sw.leave("experts", "c")
    sw.leave("experts", "d")
    (r,), _ = drive(sw, eps, sw.submit(Write(3, "a", MC, b"3" * 64), 2000))
    assert isinstance(r.resp, Error)
    assert "has no members besides the sender; join() ports first" in r.resp.reason


def test_hypercast_member_error_is_reported_once():
    sw = make_switch()
    sw.address_map.add_group("experts", ["b", "c"])
    w = Write(1, "a", MC, b"x" * 64)
    sw.submit(w, 0)
    sw.advance(1000)
    assert sw.complete("b", w, WriteAck(1), 1000) == []
    sw.complete("c", w, Error(1, "ECC"), 1000)
    (r,) = sw.advance(5000)
    assert r.resp == Error(1, "member port 'c': ECC")
    with pytest.raises(FabricError, match="no such request is waiting"):
        sw.complete("c", w, WriteAck(1), 5000)


# -- in-network reduce ------------------------------------------------------------------------

UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24}


def reduce_on_switch(vectors, dtype, max_txn=256, seed=0):
    k = len(vectors)
    ports = [f"g{i}" for i in range(k)]
    amap = AddressMap([Window("m", 0, 64, ports[0])])
    sw = MemorySwitch(amap, {p: cfg() for p in ports},
                      [ReduceGroup("ar", ports, dtype)], max_txn=max_txn)
    ops = [Contribute(100 + i, p, "ar", v) for i, (p, v) in enumerate(zip(ports, vectors,
                                                                           strict=True))]
    pieces = [x for op in ops for x in split(op, max_txn)]
    random.Random(seed).shuffle(pieces)  # contributions arrive in any order
    acts = []
    for t, x in enumerate(pieces):
        acts += sw.submit(x, t)
    responds, _ = drive(sw, {}, acts)
    results = []
    for op, p in zip(ops, ports, strict=True):
        mine = [r.resp for r in responds if r.port == p]
        results.append(reassemble(op, mine, max_txn))
    assert all(isinstance(r, ReduceResult) for r in results)
    return [r.data for r in results], sw.statistics()


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
@pytest.mark.parametrize("k", [2, 3, 4, 8])
@pytest.mark.parametrize("elements", [1, 7, 64, 300])
def test_reduce_equals_numpy_and_ring(dtype, k, elements):
    rng = np.random.default_rng(k * 1000 + elements)
    xs = [encode(rng.standard_normal(elements), dtype) for _ in range(k)]
    out, _ = reduce_on_switch(xs, dtype, seed=elements)
    vals = np.stack([decode(x, dtype).astype(np.float64) for x in xs])
    exact = vals.sum(axis=0)
    mag = np.abs(vals).sum(axis=0)
    u = UNIT_ROUNDOFF[dtype]
    # Switch: float32 accumulation ((k-1) * 2^-24 * sum|x|) and one rounding to the dtype
    # (u * |sum|); the tiny floor covers float16 subnormals.
    tol_switch = (k * 2.0 ** -24 + u) * mag + 2.0 ** -24
    # Ring: every reduce-scatter hop rounds the partial to the dtype: (k-1) roundings.
    tol_ring = ((k - 1) * u + k * 2.0 ** -24) * mag + 2.0 ** -24
    ring = ring_allreduce(xs, dtype)
    for member in range(k):
        got = decode(out[member], dtype).astype(np.float64)
        assert out[member] == out[0]  # every member gets the same bytes
        assert np.all(np.abs(got - exact) <= tol_switch)
        ring_got = decode(ring.outputs[member], dtype).astype(np.float64)
        assert ring.outputs[member] == ring.outputs[0]
        assert np.all(np.abs(ring_got - exact) <= tol_ring)
        assert np.all(np.abs(got - ring_got) <= tol_switch + tol_ring)
    # numpy's own float32 sum in member order, rounded once, is bit-identical to the switch
    ref = np.zeros(elements, np.float32)
    for x in xs:
        ref += decode(x, dtype)
    assert out[0] == encode(ref, dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
@pytest.mark.parametrize("k", [2, 5, 8])
def test_reduce_of_small_integers_is_exact_everywhere(dtype, k):
    rng = np.random.default_rng(k)
    ints = rng.integers(-8, 9, size=(k, 130))
    xs = [encode(row.astype(np.float32), dtype) for row in ints]
    out, _ = reduce_on_switch(xs, dtype)
    want = encode(ints.sum(axis=0).astype(np.float32), dtype)
    assert all(o == want for o in out)
    assert all(o == want for o in ring_allreduce(xs, dtype).outputs)


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_switch_reduce_moves_fewer_bytes_per_member_than_the_ring(k):
    n = 4096 * k // 2  # bytes per vector, divisible by k float32 elements
    xs = [encode(np.full(n // 4, float(i)), "float32") for i in range(k)]
    _, stats = reduce_on_switch(xs, "float32")
    ring = ring_allreduce(xs, "float32")
    ring_per_member = 2 * (k - 1) * n // k
    for i in range(k):
        p = stats.ports[f"g{i}"]
        assert (p.bytes_in, p.bytes_out) == (n, n)  # N up, N down
        assert ring.bytes_sent[i] == ring.bytes_received[i] == ring_per_member
        if k == 2:
            assert ring.bytes_sent[i] == p.bytes_in  # 2(k-1)/k = 1: a tie
        else:
            assert ring.bytes_sent[i] > p.bytes_in
    assert ring.messages == 2 * (k - 1) * k
    assert stats.reductions == -(-n // 256)


def test_reduce_rejects_bad_contributions():
    ports = ["g0", "g1", "x"]
    sw = MemorySwitch(AddressMap([]), {p: cfg() for p in ports},
                      [ReduceGroup("ar", ["g0", "g1"], "float16")])
    cases = [
        (Contribute(1, "x", "ar", b"\0\0"), "port 'x' is not a member of reduce group 'ar'"),
        (Contribute(2, "g0", "ar", b"\0\0\0"), "not whole float16 elements"),
        (Contribute(3, "g0", "ar", b"\0" * 512), "split it with fabric.memsw.split"),
    ]
    for t, (op, match) in enumerate(cases):
        sw.submit(op, 1000 * t)
        (r,) = sw.advance(1000 * t + 999)
        assert match in r.resp.reason
    sw.submit(Contribute(4, "g0", "ar", b"\0" * 4), 5000)
    sw.submit(Contribute(5, "g0", "ar", b"\0" * 4), 5000)
    sw.submit(Contribute(6, "g1", "ar", b"\0" * 8), 5000)
    rs = sw.advance(6000)
    assert ["already contributed" in r.resp.reason for r in rs] == [True, False]
    assert "the others sent 4 B" in rs[1].resp.reason
    assert sw.statistics().rejected == 5
    with pytest.raises(FabricError, match="dtype 'int8' is not one of"):
        ReduceGroup("z", ["g0"], "int8")


def test_bfloat16_rounds_to_nearest_even():
    one = 1.0
    assert decode(encode([one + 2.0 ** -8], "bfloat16"), "bfloat16")[0] == one  # tie -> even
    assert decode(encode([one + 3 * 2.0 ** -8], "bfloat16"), "bfloat16")[0] == one + 2.0 ** -6
    assert decode(encode([one + 2.0 ** -8 + 2.0 ** -12], "bfloat16"),
                  "bfloat16")[0] == one + 2.0 ** -7
    assert np.isnan(decode(encode([np.nan], "bfloat16"), "bfloat16")[0])
    assert decode(encode([np.inf], "bfloat16"), "bfloat16")[0] == np.inf


def test_deliver_and_respond_are_frozen():
    d = Deliver("p", Read(1, "a", 0, 8), 5)
    with pytest.raises(AttributeError):
        d.at_ns = 6  # type: ignore[misc]


# -- frames: back-to-back messages on a port leave together ------------------------------------


def test_frames_release_back_to_back_messages_with_the_first_due():
    sw = make_switch(credits=8, frame_bytes=1472)
    for t in range(7):  # 256 B at 100 Gbps: 21 ns each, back to back after 150 ns
        sw.submit(Write(t, "a", MEM + 256 * t, b"w" * 256), 1000)
    assert sw.next_deadline() == 1171
    assert sw.advance(1170) == []  # nothing before the first is due
    first = sw.advance(1171)
    # 1472 B of flits holds five 256-byte writes: they leave as one frame, each with its own
    # modelled time (the last is 4 x 21 ns = 84 ns after the first)
    assert [(d.op.tag, d.at_ns) for d in first] == [(t, 1171 + 21 * t) for t in range(5)]
    assert sw.next_deadline() == 1171 + 21 * 5  # the frame's messages are not due again
    rest = sw.advance(10_000)
    assert [(d.op.tag, d.at_ns) for d in rest] == [(5, 1276), (6, 1297)]


def test_frames_never_take_a_message_that_is_not_back_to_back():
    sw = make_switch(frame_bytes=1472)
    sw.submit(Write(1, "a", MEM, b"w" * 256), 1000)
    sw.submit(Read(3, "a", 0x2000_0000, 64), 1000)  # another port: its own line
    sw.submit(Write(2, "a", MEM + 256, b"w" * 256), 1030)  # ready at 1180: the port is idle
    first = sw.advance(1171)
    assert [(type(a.op).__name__, a.op.tag) for a in first] == [("Read", 3), ("Write", 1)]
    assert sw.advance(1200) == []  # write 2 starts at 1180, after write 1 ended (1171)
    assert [(a.op.tag, a.at_ns) for a in sw.advance(1201)] == [(2, 1201)]


def _deliveries(frame_bytes: int, seed: int) -> list[tuple[int, Deliver]]:
    """A random stream of requests from three sources to two ports, driven in time order
    (no answers: 64 credits hold them all); (when each left, the Deliver) in release order."""
    rng = random.Random(seed)
    sw = make_switch(credits=400, frame_bytes=frame_bytes)
    out: list[tuple[int, Deliver]] = []
    now = 0
    for i in range(300):
        now += rng.choice((0, 0, 1, 5, 30))
        while (t := sw.next_deadline()) is not None and t <= now:
            out += [(t, a) for a in sw.advance(t)]
        base, span = rng.choice(((MEM, 1 << 16), (0x2000_0000, 4096)))
        size = rng.choice((64, 128, 256))
        addr = base + rng.randrange(0, span - 256, 64)
        src = rng.choice("acd")
        op = Write(i, src, addr, b"x" * size) if rng.random() < 0.5 else Read(i, src, addr, size)
        out += [(now, a) for a in sw.submit(op, now)]
    while (t := sw.next_deadline()) is not None:
        out += [(t, a) for a in sw.advance(t)]
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_frames_change_no_modelled_time_and_no_order_only_when_messages_leave(seed):
    """The same workload with and without frames: the same deliveries with the same
    modelled times, in the same order per port; with frames each leaves no later than its
    time, and no earlier than one frame's serialisation before it."""
    alone = _deliveries(0, seed)
    framed = _deliveries(1472, seed)
    assert all(left == a.at_ns for left, a in alone)  # without frames: each at its own time
    assert all(left <= a.at_ns for left, a in framed)
    assert sum(left < a.at_ns for left, a in framed) > 20  # many did leave with a frame
    frame_ns = -(-1472 * 8 // 100) + 1472 // 64  # 1472 B at 100 Gbit/s, 1 ns rounding a flit
    assert all(a.at_ns - left <= frame_ns for left, a in framed)

    def per_port(rel: list[tuple[int, Deliver]]) -> dict:
        out: dict = {}
        for _, a in rel:
            out.setdefault(a.port, []).append(a)
        return out

    assert per_port(framed) == per_port(alone)


def test_frame_bytes_must_be_a_non_negative_int():
    with pytest.raises(FabricError, match=r"frame_bytes must be an int >= 0 \(0: no frames\)"):
        make_switch(frame_bytes=-1)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 20).map(lambda a: a * 64 + 0x1000), st.integers(1, 2000),
       st.sampled_from(TXN_SIZES), st.sampled_from(["read", "write", "contribute"]))
def test_reassemble_expects_exactly_the_pieces_split_makes(addr, length, max_txn, kind):
    """reassemble works out the pieces' offsets and lengths without making them: they are
    split's, and answering split's pieces reassembles the whole."""
    from fabric.memsw.ops import _piece_spans

    if kind == "read":
        op = Read(9, "a", addr, length, 128)
    elif kind == "write":
        op = Write(9, "a", addr, bytes(length), 128)
    else:
        op = Contribute(9, "a", "g", bytes(length - length % 4 or 4), 128, 3)
    parts = split(op, max_txn)
    assert _piece_spans(op, max_txn) == [(p.offset, p.length) for p in parts]
    if kind == "read":
        answers = [ReadResp(9, b"r" * p.length, p.offset) for p in parts]
        assert reassemble(op, answers[::-1], max_txn) == ReadResp(9, b"r" * length, 128)
    elif kind == "write":
        assert reassemble(op, [WriteAck(9, p.offset) for p in parts], max_txn) == \
            WriteAck(9, 128)
    else:
        answers = [ReduceResult(9, "g", b"s" * p.length, p.offset, 3) for p in parts]
        assert reassemble(op, answers, max_txn) == ReduceResult(9, "g", b"s" * op.length, 128, 3)
