"""The link properties, as one table: the loader, `fabric check`'s link table, the RoCE
switch's egress and the backend warnings all read it, so a new property is one row here plus
its field in `model.Shape` and its realisation in each link backend (`plan.py` for the
kernel's qdiscs, `linkmodel.py` for the userspace engine).

Each row: the key a file writes (under a link, `defaults.link`, `generate:` and `reverse:`),
the `Shape` fields it sets, how its text parses (`fabric.units`), what a bad value is told to
look like, whether it may differ per direction, whether the link still realises it when a
RoCE switch's egress port serialises (else the switch does: rate, queue, ECN), which link
backends cannot realise it and why, and its cell in `fabric check`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

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

from .model import Shape

__all__ = ["LINK_PROPERTIES", "MTU_MAX", "MTU_MIN", "LinkProperty", "at_switch_egress",
           "property_keys", "reverse_keys", "shape_conflict"]

MTU_MIN, MTU_MAX = 576, 65535  # 576: the smallest datagram every IPv4 host must accept


@dataclass(frozen=True)
class LinkProperty:
    key: str
    fields: tuple[str, ...]  # the Shape fields it sets (parse returns a tuple when several)
    parse: Callable[[Any], Any]
    expects: str  # "a rate such as 40Mbps"
    cell: Callable[[Shape, int], str]  # its `fabric check` cell, given the resolved queue bytes
    per_direction: bool = True  # may differ under `reverse:`
    nullable: bool = False  # null or false turns it off (overriding a default)
    bounds: tuple[int, int] | None = None  # allowed values, inclusive
    switch_realises: bool = False  # at a RoCE switch's egress the switch does it, not the link
    not_realised_by: Mapping[str, str] = field(default_factory=dict)  # backend -> what it lacks
    what: str = ""  # how messages name it (default: its key)

    @property
    def label(self) -> str:
        return self.what or self.key

    def values(self, parsed: Any) -> dict[str, Any]:  # noqa: ANN401 - the parser's value
        """The Shape fields a parsed value sets."""
        if len(self.fields) == 1:
            return {self.fields[0]: parsed}
        return dict(zip(self.fields, parsed, strict=True))

    def is_set(self, shape: Shape) -> bool:
        """Whether `shape` sets this property (differs from an unshaped link)."""
        blank = Shape()
        return any(getattr(shape, f) != getattr(blank, f) for f in self.fields)


def _queue_cell(shape: Shape, queue: int) -> str:
    return format_size(queue) if shape.rate_bps else "-"  # no rate: nothing ever queues


def _chance(key: str) -> Callable[[Any], int]:
    """`parse_loss` for another probability (a percentage -> ppm), its errors naming `key`."""

    def parse(value: Any) -> int:  # noqa: ANN401 - a YAML scalar
        try:
            return parse_loss(value)
        except ValueError as e:
            msg = str(e).replace("bad loss ", f"bad {key} ", 1)
            raise ValueError(msg.replace(": loss cannot", f": {key} cannot", 1)) from None

    parse.__name__ = f"parse_{key}"
    return parse


def _ppm_cell(field_name: str) -> Callable[[Shape, int], str]:
    return lambda s, q: format_loss(v) if (v := getattr(s, field_name)) else "-"


LINK_PROPERTIES: tuple[LinkProperty, ...] = (
    LinkProperty("rate", ("rate_bps",), parse_rate, "a rate such as 40Mbps",
                 lambda s, q: format_rate(s.rate_bps) if s.rate_bps else "unshaped",
                 switch_realises=True),
    LinkProperty("delay", ("delay_ns",), parse_time, "a time such as 15ms",
                 lambda s, q: format_time(s.delay_ns)),
    LinkProperty("jitter", ("jitter_ns",), parse_time, "a time such as 1ms",
                 lambda s, q: format_time(s.jitter_ns) if s.jitter_ns else "-"),
    LinkProperty("loss", ("loss_ppm",), parse_loss, "a loss such as 0.1%",
                 _ppm_cell("loss_ppm")),
    # netem's corrupt, duplicate and reorder (`man tc-netem`); the userspace engine does the
    # same in `linkmodel.py`. Each direction draws its own, like loss.
    LinkProperty("corrupt", ("corrupt_ppm",), _chance("corrupt"), "a percentage such as 0.1%",
                 _ppm_cell("corrupt_ppm")),
    LinkProperty("duplicate", ("duplicate_ppm",), _chance("duplicate"),
                 "a percentage such as 0.1%", _ppm_cell("duplicate_ppm")),
    LinkProperty("reorder", ("reorder_ppm",), _chance("reorder"), "a percentage such as 25%",
                 _ppm_cell("reorder_ppm")),
    # setting either form replaces both, so a link can override a default byte limit with a
    # packet limit
    LinkProperty("queue", ("queue_bytes", "queue_packets"), parse_queue,
                 "a queue such as 256KiB or 100 packets", _queue_cell, switch_realises=True),
    LinkProperty("mtu", ("mtu",), parse_size, "an MTU in bytes such as 1500",
                 lambda s, q: str(s.mtu), per_direction=False, bounds=(MTU_MIN, MTU_MAX)),
    LinkProperty("ecn", ("ecn_bytes",), parse_size, "a size such as 64KiB",
                 lambda s, q: format_size(s.ecn_bytes) if s.ecn_bytes else "-",
                 nullable=True, switch_realises=True,
                 not_realised_by={"netem": "needs sch_red"}, what="ecn threshold"),
)


def shape_conflict(shape: Shape, direction: str) -> str | None:
    """What makes one resolved link direction (`direction` like "a->b") unrealisable as a
    whole: properties each valid alone that do not go together. None when there is none; the
    caller raises it at the link's line."""
    if shape.reorder_ppm and not shape.delay_ns:
        return (f"reorder {format_loss(shape.reorder_ppm)} on {direction} needs a delay: a "
                "reordered packet is one sent at once while the others wait out the delay (as "
                "in netem), so without one nothing overtakes; set a delay such as 1ms, or "
                "remove reorder")
    return None


def property_keys() -> tuple[str, ...]:
    return tuple(p.key for p in LINK_PROPERTIES)


def reverse_keys() -> tuple[str, ...]:
    """The keys a `reverse:` block may set."""
    return tuple(p.key for p in LINK_PROPERTIES if p.per_direction)


def at_switch_egress(shape: Shape) -> Shape:
    """What the link realises for a direction a RoCE switch's egress port sends into: the
    switch serialises, queues and marks itself, so those properties go back to unset."""
    blank = Shape()
    return replace(shape, **{f: getattr(blank, f) for p in LINK_PROPERTIES
                             if p.switch_realises for f in p.fields})
