"""The link-property table: every Shape field belongs to one property, and the loader, the
RoCE switch's egress, `fabric check` and the backend warnings all follow the table."""

from __future__ import annotations

from dataclasses import fields

import pytest

from fabric.checks import backend_warnings
from fabric.errors import TopologyError
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
    body = "rate: 1Gbps, delay: 2ms, jitter: 1ms, loss: 1%, corrupt: 0.5%, duplicate: 2%, " \
           "reorder: 25%, queue: 10 packets, mtu: 9000, ecn: 64KiB"
    topo = parse_topology(f"name: t\nnodes: {{a: {{}}, b: {{}}}}\nlinks: [{{endpoints: [a, b], "
                          f"{body}, reverse: {{rate: 2Gbps, reorder: 0%}}}}]\n")
    fwd, rev = topo.links[0].forward, topo.links[0].reverse
    assert fwd == Shape(rate_bps=10**9, delay_ns=2_000_000, jitter_ns=1_000_000, loss_ppm=10_000,
                        corrupt_ppm=5_000, duplicate_ppm=20_000, reorder_ppm=250_000,
                        queue_packets=10, mtu=9000, ecn_bytes=64 * 1024)
    assert rev.rate_bps == 2 * 10**9
    assert (rev.corrupt_ppm, rev.duplicate_ppm, rev.reorder_ppm) == (5_000, 20_000, 0)
    assert property_keys() == ("rate", "delay", "jitter", "loss", "corrupt", "duplicate",
                               "reorder", "queue", "mtu", "ecn")
    assert "mtu" not in reverse_keys()
    assert {"corrupt", "duplicate", "reorder"} <= set(reverse_keys())


def test_a_switch_egress_keeps_what_the_link_realises() -> None:
    shape = Shape(rate_bps=10**9, delay_ns=5, jitter_ns=1, loss_ppm=7, corrupt_ppm=1,
                  duplicate_ppm=2, reorder_ppm=3, queue_bytes=100, mtu=9000, ecn_bytes=50)
    assert at_switch_egress(shape) == Shape(delay_ns=5, jitter_ns=1, loss_ppm=7, corrupt_ppm=1,
                                            duplicate_ppm=2, reorder_ppm=3, mtu=9000)


def test_a_property_a_backend_cannot_realise_is_warned_about() -> None:
    topo = parse_topology("name: t\nnodes: {a: {}, b: {}}\n"
                          "links: [{endpoints: [a, b], rate: 100Mbps, delay: 5ms, ecn: 64KiB}]\n")
    assert any(w.startswith("ecn threshold is not realised by the netem backend (needs "
                            "sch_red); use --links userspace") for w in
               backend_warnings(topo, "netem"))
    assert not any("not realised" in w for w in backend_warnings(topo, "userspace"))


# -- corrupt, duplicate, reorder -------------------------------------------------------------

FAULTS_HEAD = "name: t\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a, b]\n"


@pytest.mark.parametrize(("text", "ppm"), [
    ("0.1%", 1_000), ("5%", 50_000), ("100%", 1_000_000), ("0", 0), ("0.02", 20_000),
    ("10ppm", 10), ("0%", 0),
])
@pytest.mark.parametrize("key", ["corrupt", "duplicate", "reorder"])
def test_fault_probabilities_parse_like_loss(key: str, text: str, ppm: int) -> None:
    topo = parse_topology(FAULTS_HEAD + f"    delay: 1ms\n    {key}: {text}\n")
    fwd = topo.links[0].forward
    assert getattr(fwd, f"{key}_ppm") == ppm
    assert topo.links[0].reverse == fwd  # per direction, and the reverse inherits it


@pytest.mark.parametrize(("text", "message"), [
    ("150%", "bad {key} '150%': {key} cannot exceed 100%"),
    ("-1%", "bad {key} '-1%': {key} cannot be negative"),
    ("2", "bad {key} 2: a bare number is a fraction below 1 (0.001 = 0.1%); write a percentage "
          "such as 2%"),
    ("often", "bad {key} 'often': expected a percentage such as 0.1%, 5%, 10ppm, or a fraction "
              "such as 0.001"),
])
@pytest.mark.parametrize("key", ["corrupt", "duplicate", "reorder"])
def test_bad_fault_probabilities_name_file_line_and_key(key: str, text: str,
                                                         message: str) -> None:
    src = FAULTS_HEAD + f"    delay: 1ms\n    {key}: {text}\n"
    with pytest.raises(TopologyError) as err:
        parse_topology(src, source="t.yaml")
    assert str(err.value) == f"t.yaml:6: links[0].{key}: " + message.format(key=key)


REORDER_NEEDS_DELAY = ("needs a delay: a reordered packet is one sent at once while the others "
                       "wait out the delay (as in netem), so without one nothing overtakes; set "
                       "a delay such as 1ms, or remove reorder")


@pytest.mark.parametrize(("text", "line", "where"), [
    # no delay at all
    (FAULTS_HEAD + "    reorder: 25%\n", 4, "links[0]: reorder 25% on a->b"),
    # a delay one way only: the other direction has nothing to overtake
    (FAULTS_HEAD + "    reorder: 1%\n    reverse: {delay: 2ms}\n", 4,
     "links[0]: reorder 1% on a->b"),
    (FAULTS_HEAD + "    delay: 2ms\n    reorder: 1%\n    reverse: {delay: 0ms}\n", 4,
     "links[0]: reorder 1% on b->a"),
    # inherited from the defaults: the error is at the link left without a delay
    ("name: t\ndefaults: {link: {reorder: 10ppm}}\nnodes: {a: {}, b: {}, c: {}}\nlinks:\n"
     "  - endpoints: [a, b]\n    delay: 1ms\n  - endpoints: [b, c]\n", 7,
     "links[1]: reorder 0.001% on b->c"),
])
def test_reorder_without_a_delay_is_refused_at_the_link(text: str, line: int,
                                                        where: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse_topology(text, source="t.yaml")
    assert str(err.value) == f"t.yaml:{line}: {where} {REORDER_NEEDS_DELAY}"


def test_reorder_with_a_delay_both_ways_loads(tmp_path) -> None:  # noqa: ANN001
    from fabric.kinds import load

    path = tmp_path / "t.yaml"
    path.write_text(FAULTS_HEAD + "    delay: 1ms\n    reorder: 25%\n    corrupt: 1%\n"
                    "    duplicate: 1%\n")
    topo = load(path)
    assert topo.links[0].reverse.reorder_ppm == 250_000


def test_check_shows_the_fault_columns(tmp_path) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from fabric.cli import cli

    path = tmp_path / "t.yaml"
    path.write_text(FAULTS_HEAD + "    delay: 1ms\n    corrupt: 0.5%\n    duplicate: 2%\n"
                    "    reorder: 25%\n    reverse: {corrupt: 0%, reorder: 10ppm}\n")
    result = CliRunner().invoke(cli, ["check", "--links", "userspace", str(path)])
    assert result.exit_code == 0, result.output
    head, fwd, rev = result.stdout.splitlines()[1:4]
    names = head.split()
    assert names[:8] == ["link", "rate", "delay", "jitter", "loss", "corrupt", "duplicate",
                         "reorder"]
    starts = [head.index(f" {n} ") + 1 for n in names[1:-1]] + [head.index(f" {names[-1]}")]
    starts = [0, *starts, len(head) + 40]

    def cells(row: str) -> dict[str, str]:
        return {n: row[a:b].strip() for n, a, b in zip(names, starts, starts[1:], strict=False)}

    assert {k: cells(fwd)[k] for k in ("corrupt", "duplicate", "reorder")} == \
        {"corrupt": "0.5%", "duplicate": "2%", "reorder": "25%"}
    assert {k: cells(rev)[k] for k in ("corrupt", "duplicate", "reorder")} == \
        {"corrupt": "-", "duplicate": "2%", "reorder": "0.001%"}


def test_the_netem_backend_realises_the_faults_and_warns_of_none() -> None:
    topo = parse_topology(FAULTS_HEAD + "    delay: 1ms\n    corrupt: 1%\n    duplicate: 1%\n"
                          "    reorder: 1%\n")
    for backend in ("netem", "userspace"):
        assert not any("not realised" in w for w in backend_warnings(topo, backend))
