"""The link-property table: every Shape field belongs to one property, and the loader, the
RoCE switch's egress, `fabric check` and the backend warnings all follow the table."""

from __future__ import annotations

from dataclasses import fields

from fabric.checks import backend_warnings
from fabric.topology import parse_topology
from fabric.topology.linkprops import (
    LINK_PROPERTIES,
    at_switch_egress,
    property_keys,
    reverse_keys,
)
from fabric.topology.model import Shape


def test_every_shape_field_is_one_property() -> None:
    """A new Shape field without its row here fails: it would be parsed by nothing and
    dropped or kept at a switch's egress by accident."""
    owned = [f for p in LINK_PROPERTIES for f in p.fields]
    assert sorted(owned) == sorted(f.name for f in fields(Shape))
    assert len(owned) == len(set(owned))


def test_the_loader_reads_every_property_from_the_table() -> None:
    body = "rate: 1Gbps, delay: 2ms, jitter: 1ms, loss: 1%, queue: 10 packets, mtu: 9000, " \
           "ecn: 64KiB"
    topo = parse_topology(f"name: t\nnodes: {{a: {{}}, b: {{}}}}\nlinks: [{{endpoints: [a, b], "
                          f"{body}, reverse: {{rate: 2Gbps}}}}]\n")
    fwd, rev = topo.links[0].forward, topo.links[0].reverse
    assert fwd == Shape(rate_bps=10**9, delay_ns=2_000_000, jitter_ns=1_000_000, loss_ppm=10_000,
                        queue_packets=10, mtu=9000, ecn_bytes=64 * 1024)
    assert rev.rate_bps == 2 * 10**9
    assert property_keys() == ("rate", "delay", "jitter", "loss", "queue", "mtu", "ecn")
    assert "mtu" not in reverse_keys()


def test_a_switch_egress_keeps_what_the_link_realises() -> None:
    shape = Shape(rate_bps=10**9, delay_ns=5, jitter_ns=1, loss_ppm=7, queue_bytes=100,
                  mtu=9000, ecn_bytes=50)
    assert at_switch_egress(shape) == Shape(delay_ns=5, jitter_ns=1, loss_ppm=7, mtu=9000)


def test_a_property_a_backend_cannot_realise_is_warned_about() -> None:
    topo = parse_topology("name: t\nnodes: {a: {}, b: {}}\n"
                          "links: [{endpoints: [a, b], rate: 100Mbps, delay: 5ms, ecn: 64KiB}]\n")
    assert any(w.startswith("ecn threshold is not realised by the netem backend (needs "
                            "sch_red); use --links userspace") for w in
               backend_warnings(topo, "netem"))
    assert not any("not realised" in w for w in backend_warnings(topo, "userspace"))
