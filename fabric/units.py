"""Units the way network people write them, parsed once into integers.

`parse_rate("400Gbps")` -> bits/s, `parse_time("2us")` -> ns, `parse_loss("0.1%")` -> ppm,
`parse_size("256KiB")` -> bytes, `parse_queue("100 packets")` -> (bytes, packets). Everything
downstream works in these integers; only the kernel adapter converts to pyroute2's units.

Arithmetic goes through `Decimal` so that `0.1%` is exactly 1000 ppm and `1.5Gbps` exactly
1_500_000_000, not a float that rounds the wrong way. The parsers accept the ints and floats a
YAML file hands over (`mtu: 9000`, `loss: 0`) where a bare number is unambiguous, and reject it
where it is not (`delay: 5`: seconds? milliseconds?).

Every parser raises `ValueError` with a message that shows accepted forms; the topology loader
adds the file, line and key.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TypeGuard

from .errors import shown

__all__ = [
    "format_loss",
    "format_rate",
    "format_size",
    "format_time",
    "parse_loss",
    "parse_queue",
    "parse_rate",
    "parse_size",
    "parse_time",
]

# A number as people write it: 40, 1.5, .5, 1e3; an optional sign so that "-5ms" gets the
# message "negative" rather than "not a number".
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"

_DECIMAL_PREFIX = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BINARY_PREFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}

# rate: <number> [k|K|M|G|T] then bits (bps, bit, bit/s, b/s) or bytes (Bps, B/s), x8.
_RATE_RE = re.compile(
    rf"^\s*(?P<num>{_NUMBER})\s*(?P<prefix>[kKMGT]?)(?P<unit>bps|bit/s|bits/s|bit|b/s|Bps|B/s)\s*$"
)
_TIME_UNITS = {
    "ns": 1,
    "us": 10**3,
    "\u00b5s": 10**3,  # MICRO SIGN, what most keyboards produce
    "\u03bcs": 10**3,  # GREEK SMALL LETTER MU, what some fonts and tools produce
    "ms": 10**6,
    "s": 10**9,
}
_TIME_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>ns|us|\u00b5s|\u03bcs|ms|s)?\s*$")
_LOSS_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>%|ppm)?\s*$")
_SIZE_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<prefix>Ki|Mi|Gi|Ti|[kKMGT])?(?P<unit>B)?\s*$")
_PACKETS_RE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?:packets|packet|pkts|pkt|p)\s*$")

_RATE_FORMS = "40Mbps, 25Gbit, 25Gbit/s, 400Gbps, 100MBps (bytes)"
_TIME_FORMS = "500ns, 2us, 1.5ms, 1s, or 0"
_LOSS_FORMS = "0.1%, 5%, 10ppm, or a fraction such as 0.001"
_SIZE_FORMS = "1500, 1500B, 64KB, 256KiB, 1MiB"
_QUEUE_FORMS = f"a size ({_SIZE_FORMS}) or a packet count (100 packets, 100p, 100pkts)"


def _is_number(value: object) -> TypeGuard[int | float]:
    # bool is an int subclass: `rate: yes` must not become 1 bit/s.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _decimal(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regexes only pass valid numbers
        raise ValueError(f"bad number {shown(text)}") from None
    if not d.is_finite():  # pragma: no cover - likewise
        raise ValueError(f"bad number {shown(text)}")
    return _in_range(d, text)


def _in_range(d: Decimal, written: object) -> Decimal:
    """`d`, if its magnitude is 0 or within 1e-30..1e30: every quantity here (a rate in bit/s,
    a time in ns, a size in bytes) lies far inside, and Decimal arithmetic stays exact and
    cannot overflow (`1e999999s` in ns would)."""
    if d and d.adjusted() > _EXP_LIMIT:
        raise ValueError(f"bad number {shown(written)}: it is too large (at most 1e30)")
    if d and d.adjusted() < -_EXP_LIMIT:
        raise ValueError(f"bad number {shown(written)}: it is too small (at least 1e-30, or 0)")
    return d


def _from_number(value: int | float, what: str, forms: str) -> Decimal:
    """A YAML int/float as an exact Decimal (floats via repr, so 0.001 stays 0.001)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise ValueError(f"bad {what} {value!r}: expected {forms}")
    if isinstance(value, int) and abs(value) > 10**_EXP_LIMIT:
        raise ValueError(f"bad {what} {shown(value)}: it is too large (at most 1e30)")
    return _in_range(Decimal(repr(value)) if isinstance(value, float) else Decimal(value), value)


def _at_most(value: int, limit: int, what: str, written: object, unit: str) -> int:
    if value > limit:
        raise ValueError(f"bad {what} {shown(written)}: at most {unit}")
    return value


def _round(d: Decimal) -> int:
    # a sane ceiling (1e30 of any unit) also keeps Decimal's context from overflowing
    if abs(d) > _LIMIT:
        raise ValueError(f"{d:.3g} is too large")
    return int(d.to_integral_value(rounding=ROUND_HALF_EVEN))


_LIMIT = Decimal(10) ** 30
_EXP_LIMIT = 30

#: the ranges each parser accepts (docs/topology.md, "Ranges")
RATE_MAX_BPS = 10**14  # 100 Tbit/s: four times the fastest port sold
TIME_MAX_NS = 86_400 * 10**9  # one day
SIZE_MAX_BYTES = 2**40  # 1 TiB
PACKETS_MAX = 10**9


def _text(value: object, what: str, forms: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"bad {what} {shown(value)}: expected {forms}")
    if len(value) > _TEXT_MAX:
        raise ValueError(f"bad {what} {shown(value)}: too long for {forms}")
    return value


_TEXT_MAX = 64  # the longest quantity anyone writes is ~20 characters


def parse_rate(s: str | int | float) -> int:
    """A link rate in bits per second: `400Gbps`, `25Gbit/s`, `1.5Gbps`, `100MBps` (bytes, x8).

    The unit is mandatory (a bare `40` could be bits, bytes, or megabits); the rate must be > 0.
    """
    if _is_number(s):
        raise ValueError(f"bad rate {shown(s)}: a rate needs a unit, such as {s}Mbps or {s}Gbps")
    text = _text(s, "rate", _RATE_FORMS)
    m = _RATE_RE.match(text)
    if m is None:
        raise ValueError(
            f"bad rate {shown(text)}: expected a number and a unit such as 40Mbps, 25Gbit, 400Gbps"
        )
    value = _decimal(m["num"]) * _DECIMAL_PREFIX[m["prefix"]]
    if m["unit"] in ("Bps", "B/s"):
        value *= 8
    bps = _round(value)
    if value <= 0 or bps <= 0:
        raise ValueError(f"bad rate {shown(text)}: a rate must be positive (at least 1bps)")
    return _at_most(bps, RATE_MAX_BPS, "rate", text, "100Tbps")


def parse_time(s: str | int | float) -> int:
    """A duration in nanoseconds: `500ns`, `2us`, `2µs`, `1.5ms`, `1s`, `0ms`, or a bare `0`.

    A bare number other than 0 is an error (which unit?); negative durations are errors;
    sub-nanosecond parts round to the nearest nanosecond.
    """
    if _is_number(s):
        d = _from_number(s, "time", _TIME_FORMS)
        if d == 0:
            return 0
        raise ValueError(f"bad time {shown(s)}: a time needs a unit, such as {s}ms or {s}us")
    text = _text(s, "time", _TIME_FORMS)
    m = _TIME_RE.match(text)
    if m is None:
        raise ValueError(f"bad time {shown(text)}: expected a number and a unit such as "
                         f"{_TIME_FORMS}")
    value = _decimal(m["num"])
    if m["unit"] is None:
        if value == 0:
            return 0
        raise ValueError(f"bad time {shown(text)}: a time needs a unit, such as {text.strip()}ms")
    if value < 0:
        raise ValueError(f"bad time {shown(text)}: a time cannot be negative")
    return _at_most(_round(value * _TIME_UNITS[m["unit"]]), TIME_MAX_NS, "time", text,
                    "one day (86400s)")


def parse_loss(s: str | int | float) -> int:
    """A loss probability in parts per million: `0.1%` -> 1000, `10ppm`, a fraction `0.001`.

    A bare number is a fraction in [0, 1); write `100%` for a link that drops everything (a bare
    `1` reads too much like 1%). Rounds to the nearest ppm.
    """
    if _is_number(s):
        frac = _from_number(s, "loss", _LOSS_FORMS)
        text = repr(s)
        unit = None
    else:
        text = _text(s, "loss", _LOSS_FORMS)
        m = _LOSS_RE.match(text)
        if m is None:
            raise ValueError(f"bad loss {shown(text)}: expected a percentage such as {_LOSS_FORMS}")
        frac = _decimal(m["num"])
        unit = m["unit"]
    if frac < 0:
        raise ValueError(f"bad loss {shown(s)}: loss cannot be negative")
    if unit == "%":
        ppm = frac * 10_000
    elif unit == "ppm":
        ppm = frac
    else:
        if frac >= 1:
            raise ValueError(
                f"bad loss {shown(s)}: a bare number is a fraction below 1 (0.001 = 0.1%); "
                f"write a percentage such as {text.strip()}%"
            )
        ppm = frac * 1_000_000
    if ppm > 1_000_000:
        raise ValueError(f"bad loss {shown(s)}: loss cannot exceed 100%")
    return _round(ppm)


def parse_size(s: str | int | float) -> int:
    """A size in bytes: `1500`, `1500B`, `64KB`/`64kB` (x1000), `256KiB`, `1MiB` (x1024).

    A bare number is bytes. Lower-case `b` (bits) is rejected; fractions round to a whole byte.
    """
    if _is_number(s):
        d = _from_number(s, "size", _SIZE_FORMS)
        text = repr(s)
        prefix = None
    else:
        text = _text(s, "size", _SIZE_FORMS)
        m = _SIZE_RE.match(text)
        if m is None:
            raise ValueError(f"bad size {shown(text)}: expected bytes such as {_SIZE_FORMS}")
        if m["prefix"] and not m["unit"]:
            # "64K" could be KB or KiB; refuse to guess.
            raise ValueError(f"bad size {shown(text)}: say {text.strip()}B or {text.strip()}iB")
        d = _decimal(m["num"])
        prefix = m["prefix"]
    if d < 0:
        raise ValueError(f"bad size {shown(s)}: a size cannot be negative")
    if prefix:
        d *= _BINARY_PREFIX.get(prefix) or _DECIMAL_PREFIX[prefix]
    return _at_most(_round(d), SIZE_MAX_BYTES, "size", s, "1TiB")


def parse_queue(s: str | int | float) -> tuple[int | None, int | None]:
    """A queue limit as `(bytes, None)` or `(None, packets)`: `256KiB`, `100 packets`, `100p`.

    A queue is limited one way only; a value naming both (`256KiB, 100 packets`) is an error.
    A limit must be at least 1.
    """
    if isinstance(s, str):
        _text(s, "queue", _QUEUE_FORMS)  # bounded first: the both-limits regex below backtracks
        m = _PACKETS_RE.match(s)
        if m is not None:
            n = _decimal(m["num"])
            if n != n.to_integral_value() or n < 1:
                raise ValueError(f"bad queue {shown(s)}: a packet count is a whole number >= 1")
            return None, _at_most(int(n), PACKETS_MAX, "queue", s, "1e9 packets")
        both = re.match(r"^(.+?)\s*(?:,|/|\band\b|\s)\s*(.+)$", s.strip())
        if both is not None and (
            (_is_size(both[1]) and _PACKETS_RE.match(both[2]))
            or (_PACKETS_RE.match(both[1]) and _is_size(both[2]))
        ):
            raise ValueError(
                f"bad queue {shown(s)}: a queue is limited in bytes or in packets, not both; "
                "pick one"
            )
    try:
        size = parse_size(s)
    except ValueError:
        raise ValueError(f"bad queue {shown(s)}: expected {_QUEUE_FORMS}") from None
    if size < 1:
        raise ValueError(f"bad queue {shown(s)}: a queue limit must be at least 1 byte")
    return size, None


def _is_size(text: str) -> bool:
    try:
        parse_size(text)
    except ValueError:
        return False
    return True


# ---- formatting for tables -------------------------------------------------------------


def _num(d: Decimal, places: int = 3) -> str:
    """`d` with at most `places` decimals and no trailing zeros: 1.500 -> '1.5', 40.0 -> '40'."""
    q = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    text = format(q, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _scaled(value: int, units: list[tuple[int, str]]) -> str:
    """Pick the largest unit that keeps the figure >= 1."""
    for factor, name in units:
        if abs(value) >= factor:
            return f"{_num(Decimal(value) / factor)} {name}"
    factor, name = units[-1]
    return f"{_num(Decimal(value) / factor)} {name}"


def format_rate(bps: int | None) -> str:
    """`40_000_000` -> '40 Mbit/s', `1_500_000_000` -> '1.5 Gbit/s'; None -> 'unshaped'."""
    if bps is None:
        return "unshaped"
    return _scaled(
        bps, [(10**12, "Tbit/s"), (10**9, "Gbit/s"), (10**6, "Mbit/s"), (10**3, "kbit/s"),
              (1, "bit/s")]
    )


def format_time(ns: int) -> str:
    """`15_000_000` -> '15 ms', `2000` -> '2 us', `1_500_000` -> '1.5 ms', `0` -> '0'."""
    if ns == 0:
        return "0"
    return _scaled(ns, [(10**9, "s"), (10**6, "ms"), (10**3, "us"), (1, "ns")])


def format_size(nbytes: int | None) -> str:
    """`262144` -> '256 KiB', `1500` -> '1500 B' (binary units, as queues are sized)."""
    if nbytes is None:
        return "-"
    return _scaled(nbytes, [(2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"),
                            (1, "B")])


def format_loss(ppm: int) -> str:
    """`1000` -> '0.1%', `0` -> '0%', `10` -> '0.001%'."""
    return f"{_num(Decimal(ppm).scaleb(-4), 4)}%"
