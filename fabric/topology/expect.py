"""The `expect:` section of a topology file: what must hold after a run (like `netlab
validate`), parsed into data. Which figures exist and how a run's results give them is
`fabric.metrics.expect`; this module only reads the text.

```yaml
expect:
  - kv.chunk_p99 < 500us       # FIGURE OP VALUE
  - integrity == ok
  - goodput >= 1Gbps
```

VALUE is a plain number, a time (`500us`), a rate (`1Gbps`), a size (`4MiB`), a percentage
(`99.9%`) or a word (`ok`, `failed`), each parsed once by `fabric.units`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from fabric.errors import shown
from fabric.units import parse_loss, parse_rate, parse_size, parse_time

if TYPE_CHECKING:
    import yaml

    from fabric.topology.walker import Walker

__all__ = ["OPS", "VALUE_KINDS", "WORDS", "Expectation", "parse_expect", "parse_expectation",
           "parse_value"]

#: comparison operators, longest first so `<=` is not read as `<`
OPS = ("<=", ">=", "==", "!=", "<", ">")
#: the words a value may be (what `integrity` measures)
WORDS = ("ok", "failed")
#: what a value can be: its unit family
VALUE_KINDS = ("number", "time", "rate", "size", "percent", "word")
MAX_EXPECTATIONS = 1000

_FORM = "FIGURE OP VALUE, such as 'kv.chunk_p99 < 500us' (OP one of < <= > >= == !=)"
_RE = re.compile(r"^\s*(?P<figure>[A-Za-z0-9_.\-]+)\s*(?P<op>[<>=!]+)\s*"
                 r"(?P<value>[^\s<>=!].*?)\s*$")
_PLAIN = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Expectation:
    """One `FIGURE OP VALUE` line. `value` is in the project's integer units (ns, bit/s,
    bytes), a fraction for a percentage, the number itself for a plain number, or None for
    a word (then `word` holds it); `kind` says which (one of VALUE_KINDS)."""

    figure: str
    op: str
    kind: str
    value: float | None
    word: str | None
    text: str  # the entry as written (stripped)
    value_text: str  # the value as written
    line: int | None = None
    key: str = "expect"  # `expect[2]`: for messages


def parse_value(text: str) -> tuple[str, float | None, str | None]:
    """`(kind, value, word)` for a value as written; ValueError naming the accepted forms."""
    text = text.strip()
    if text in WORDS:
        return "word", None, text
    if _PLAIN.match(text):
        try:
            number = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the regex passes only numbers
            raise ValueError(f"bad number {shown(text)}") from None
        if not number.is_finite() or abs(number) > Decimal(10) ** 30:
            raise ValueError(f"bad number {shown(text)}: it is too large (at most 1e30)")
        return "number", float(number), None
    if text.endswith("%"):
        return "percent", parse_loss(text) / 1_000_000, None
    for kind, parse in (("rate", parse_rate), ("time", parse_time), ("size", parse_size)):
        try:
            return kind, float(parse(text)), None
        except ValueError:
            continue
    raise ValueError(f"bad value {shown(text)}: expected a number, a time (500us), a rate "
                     f"(1Gbps), a size (4MiB), a percentage (99.9%) or {' or '.join(WORDS)}")


def parse_expectation(text: str, line: int | None = None, key: str = "expect") -> Expectation:
    """One entry's text as an `Expectation`; ValueError saying what is wrong."""
    m = _RE.match(text)
    if m is None:
        raise ValueError(f"{shown(text)}: expected {_FORM}")
    if m["op"] == "=":
        raise ValueError(f"{shown(text)}: compare with '==', not '='")
    if m["op"] not in OPS:
        raise ValueError(f"{shown(text)}: unknown operator {m['op']!r} (one of: "
                         "< <= > >= == !=)")
    value = m["value"]
    try:
        kind, number, word = parse_value(value)
    except ValueError as e:
        raise ValueError(f"{m['figure']}: {e}") from None
    return Expectation(figure=m["figure"], op=m["op"], kind=kind, value=number, word=word,
                       text=text.strip(), value_text=value, line=line, key=key)


def parse_expect(w: Walker, node: yaml.Node) -> tuple[Expectation, ...]:
    """The `expect:` list; each error at its entry's line, keyed `expect[i]`."""
    from fabric.topology.walker import line_of

    items = w.sequence(node, "expect")
    if len(items) > MAX_EXPECTATIONS:
        raise w.error(node, "expect", f"{len(items):,} expectations: at most "
                      f"{MAX_EXPECTATIONS:,}")
    out = []
    for i, item in enumerate(items):
        path = f"expect[{i}]"
        text = w.text(item, path, f"an expectation: {_FORM}")
        try:
            out.append(parse_expectation(text, line_of(item), path))
        except ValueError as e:
            raise w.error(item, path, str(e)) from None
    return tuple(out)
