"""fabric.units: every accepted spelling, every rejection, and the table formatters."""

from __future__ import annotations

import re

import pytest

from fabric.units import (
    format_loss,
    format_rate,
    format_size,
    format_time,
    parse_loss,
    parse_queue,
    parse_rate,
    parse_size,
    parse_time,
)


def exact(message: str) -> str:
    """A `match=` pattern for exactly this message."""
    return f"^{re.escape(message)}$"


# ---- rates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("400Gbps", 400_000_000_000),
        ("25Gbit", 25_000_000_000),
        ("25Gbit/s", 25_000_000_000),
        ("25Gb/s", 25_000_000_000),
        ("40Mbps", 40_000_000),
        ("100kbps", 100_000),
        ("100Kbps", 100_000),
        ("10Mbit", 10_000_000),
        ("1.5Gbps", 1_500_000_000),
        ("1000bps", 1000),
        ("1Tbps", 10**12),
        ("100MBps", 800_000_000),
        ("1GB/s", 8_000_000_000),
        (" 40 Mbps ", 40_000_000),
        ("0.5Mbps", 500_000),
        ("1e3Mbps", 1_000_000_000),
    ],
)
def test_parse_rate(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("40Mbs", "bad rate '40Mbs': expected a number and a unit such as 40Mbps, 25Gbit, "
                  "400Gbps"),
        ("fast", "bad rate 'fast': expected a number and a unit such as 40Mbps, 25Gbit, "
                 "400Gbps"),
        ("40", "bad rate '40': expected a number and a unit such as 40Mbps, 25Gbit, 400Gbps"),
        ("40mbps", "bad rate '40mbps': expected a number and a unit such as 40Mbps, 25Gbit, "
                   "400Gbps"),
        (40, "bad rate 40: a rate needs a unit, such as 40Mbps or 40Gbps"),
        (1.5, "bad rate 1.5: a rate needs a unit, such as 1.5Mbps or 1.5Gbps"),
        ("0Mbps", "bad rate '0Mbps': a rate must be positive (at least 1bps)"),
        ("-5Mbps", "bad rate '-5Mbps': a rate must be positive (at least 1bps)"),
        ("0.1bps", "bad rate '0.1bps': a rate must be positive (at least 1bps)"),
        (True, "bad rate True: expected 40Mbps, 25Gbit, 25Gbit/s, 400Gbps, 100MBps (bytes)"),
        (None, "bad rate None: expected 40Mbps, 25Gbit, 25Gbit/s, 400Gbps, 100MBps (bytes)"),
    ],
)
def test_parse_rate_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        parse_rate(value)  # type: ignore[arg-type]


# ---- times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("2us", 2000),
        ("2\u00b5s", 2000),  # micro sign
        ("2\u03bcs", 2000),  # Greek mu
        ("1.5ms", 1_500_000),
        ("15ms", 15_000_000),
        ("1s", 1_000_000_000),
        ("0.25s", 250_000_000),
        ("500ns", 500),
        ("0", 0),
        ("0ms", 0),
        ("0.0", 0),
        (0, 0),
        (0.0, 0),
        ("1.5ns", 2),  # rounds half to even
        ("2.5ns", 2),
        (" 5 ms", 5_000_000),
    ],
)
def test_parse_time(value: object, ns: int) -> None:
    assert parse_time(value) == ns  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "bad time '5': a time needs a unit, such as 5ms"),
        (5, "bad time 5: a time needs a unit, such as 5ms or 5us"),
        (1.5, "bad time 1.5: a time needs a unit, such as 1.5ms or 1.5us"),
        ("-1ms", "bad time '-1ms': a time cannot be negative"),
        ("5 min", "bad time '5 min': expected a number and a unit such as 500ns, 2us, 1.5ms, "
                  "1s, or 0"),
        ("5MS", "bad time '5MS': expected a number and a unit such as 500ns, 2us, 1.5ms, 1s, "
                "or 0"),
        (False, "bad time False: expected 500ns, 2us, 1.5ms, 1s, or 0"),
        (float("nan"), "bad time nan: expected 500ns, 2us, 1.5ms, 1s, or 0"),
    ],
)
def test_parse_time_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        parse_time(value)  # type: ignore[arg-type]


# ---- loss -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ppm"),
    [
        ("0.1%", 1000),
        ("0%", 0),
        ("0", 0),
        (0, 0),
        ("5%", 50_000),
        ("100%", 1_000_000),
        ("0.01%", 100),
        ("0.001", 1000),
        (0.001, 1000),
        (0.5, 500_000),
        ("10ppm", 10),
        ("0.00001%", 0),  # 0.1 ppm rounds to the nearest ppm
        ("0.00005%", 0),  # half to even
        ("0.00006%", 1),
        (" 1 % ", 10_000),
    ],
)
def test_parse_loss(value: object, ppm: int) -> None:
    assert parse_loss(value) == ppm  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("101%", "bad loss '101%': loss cannot exceed 100%"),
        ("2000000ppm", "bad loss '2000000ppm': loss cannot exceed 100%"),
        ("-1%", "bad loss '-1%': loss cannot be negative"),
        (-0.1, "bad loss -0.1: loss cannot be negative"),
        (1, "bad loss 1: a bare number is a fraction below 1 (0.001 = 0.1%); write a percentage "
            "such as 1%"),
        ("5", "bad loss '5': a bare number is a fraction below 1 (0.001 = 0.1%); write a "
              "percentage such as 5%"),
        ("lots", "bad loss 'lots': expected a percentage such as 0.1%, 5%, 10ppm, or a fraction "
                 "such as 0.001"),
        (True, "bad loss True: expected 0.1%, 5%, 10ppm, or a fraction such as 0.001"),
    ],
)
def test_parse_loss_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        parse_loss(value)  # type: ignore[arg-type]


# ---- sizes and queues -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        ("256KiB", 262_144),
        ("1MiB", 1_048_576),
        ("1GiB", 2**30),
        ("64KB", 64_000),
        ("64kB", 64_000),
        ("2MB", 2_000_000),
        ("1500", 1500),
        ("1500B", 1500),
        ("9000", 9000),
        (9000, 9000),
        (1500.0, 1500),
        ("1.5KiB", 1536),
        ("0", 0),
        (" 64 KiB ", 65_536),
    ],
)
def test_parse_size(value: object, nbytes: int) -> None:
    assert parse_size(value) == nbytes  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("64K", "bad size '64K': say 64KB or 64KiB"),
        ("64Kb", "bad size '64Kb': expected bytes such as 1500, 1500B, 64KB, 256KiB, 1MiB"),
        ("big", "bad size 'big': expected bytes such as 1500, 1500B, 64KB, 256KiB, 1MiB"),
        ("-1KiB", "bad size '-1KiB': a size cannot be negative"),
        (-5, "bad size -5: a size cannot be negative"),
        (True, "bad size True: expected 1500, 1500B, 64KB, 256KiB, 1MiB"),
    ],
)
def test_parse_size_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "queue"),
    [
        ("256KiB", (262_144, None)),
        ("1500", (1500, None)),
        (9000, (9000, None)),
        ("100 packets", (None, 100)),
        ("1 packet", (None, 1)),
        ("100p", (None, 100)),
        ("100pkts", (None, 100)),
        ("100 pkt", (None, 100)),
    ],
)
def test_parse_queue(value: object, queue: tuple[int | None, int | None]) -> None:
    assert parse_queue(value) == queue  # type: ignore[arg-type]


_QUEUE_FORMS = ("a size (1500, 1500B, 64KB, 256KiB, 1MiB) or a packet count (100 packets, 100p, "
                "100pkts)")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("256KiB, 100 packets", "bad queue '256KiB, 100 packets': a queue is limited in bytes or "
                                "in packets, not both; pick one"),
        ("100p / 64KB", "bad queue '100p / 64KB': a queue is limited in bytes or in packets, not "
                        "both; pick one"),
        ("256KiB 100 packets", "bad queue '256KiB 100 packets': a queue is limited in bytes or in "
                               "packets, not both; pick one"),
        ("0 packets", "bad queue '0 packets': a packet count is a whole number >= 1"),
        ("1.5 packets", "bad queue '1.5 packets': a packet count is a whole number >= 1"),
        ("0", "bad queue '0': a queue limit must be at least 1 byte"),
        ("lots", f"bad queue 'lots': expected {_QUEUE_FORMS}"),
        ("100 frames", f"bad queue '100 frames': expected {_QUEUE_FORMS}"),
    ],
)
def test_parse_queue_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        parse_queue(value)  # type: ignore[arg-type]


# ---- formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bps", "text"),
    [
        (40_000_000, "40 Mbit/s"),
        (1_500_000_000, "1.5 Gbit/s"),
        (400_000_000_000, "400 Gbit/s"),
        (100_000, "100 kbit/s"),
        (999, "999 bit/s"),
        (10**12, "1 Tbit/s"),
        (1_234_567, "1.235 Mbit/s"),
        (None, "unshaped"),
    ],
)
def test_format_rate(bps: int | None, text: str) -> None:
    assert format_rate(bps) == text


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (15_000_000, "15 ms"),
        (2000, "2 us"),
        (1_500_000, "1.5 ms"),
        (500, "500 ns"),
        (1_000_000_000, "1 s"),
        (0, "0"),
    ],
)
def test_format_time(ns: int, text: str) -> None:
    assert format_time(ns) == text


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (262_144, "256 KiB"),
        (1500, "1.465 KiB"),
        (1000, "1000 B"),
        (1_048_576, "1 MiB"),
        (0, "0 B"),
        (None, "-"),
    ],
)
def test_format_size(nbytes: int | None, text: str) -> None:
    assert format_size(nbytes) == text


@pytest.mark.parametrize(
    ("ppm", "text"),
    [(1000, "0.1%"), (0, "0%"), (10, "0.001%"), (1, "0.0001%"), (1_000_000, "100%"),
     (50_000, "5%")],
)
def test_format_loss(ppm: int, text: str) -> None:
    assert format_loss(ppm) == text


@pytest.mark.parametrize("text", ["40Mbps", "1.5Gbps", "400Gbps", "100kbps"])
def test_rate_round_trip(text: str) -> None:
    bps = parse_rate(text)
    assert parse_rate(format_rate(bps).replace(" ", "").replace("bit/s", "bps")) == bps


@pytest.mark.parametrize("text", ["15ms", "2us", "1.5ms", "500ns", "1s"])
def test_time_round_trip(text: str) -> None:
    ns = parse_time(text)
    assert parse_time(format_time(ns).replace(" ", "")) == ns


@pytest.mark.parametrize("text", ["0.1%", "5%", "0.01%", "100%"])
def test_loss_round_trip(text: str) -> None:
    ppm = parse_loss(text)
    assert parse_loss(format_loss(ppm)) == ppm


@pytest.mark.parametrize(("parse", "text"), [(parse_rate, "1e400Gbps"), (parse_time, "1e400ms")])
def test_absurd_exponents_are_value_errors(parse, text):
    with pytest.raises(ValueError, match="is too large"):
        parse(text)
