"""The YAML walker every topology section parses with: typed reads from the composed tree,
and every failure a `TopologyError` that names the file, the line and the dotted key.

PyYAML only *composes* the document (a tree of nodes that still carry their line numbers);
the walker reads that tree, so duplicate keys, unknown keys and wrong types are errors at
their line. A section of the file (traffic, lpu, prfaas, memory, or a plug-in's own) is
parsed by a function that takes a `Walker`, the section's node and what it refers to.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from fabric.errors import TopologyError, shown

__all__ = ["INT_MAX", "NAME_RE", "NAME_RULE", "Entries", "Walker", "join_path", "line_of"]

#: the largest integer any key takes (seeds, counts, addresses): a signed 64-bit value
INT_MAX = 2**63 - 1

#: Node, topology, class names: they become namespace, interface and host names, so lower-case,
#: short (a netns name plus a suffix must fit IFNAMSIZ-ish limits) and shell-safe.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")
NAME_RULE = ("1-31 characters: lower-case letters, digits, '-' and '_', starting with a letter "
              "or digit")



_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"

Entries = dict[str, tuple[yaml.Node, yaml.Node]]


def line_of(node: yaml.Node) -> int:
    """The 1-based file line a YAML node starts on."""
    return node.start_mark.line + 1


def join_path(path: str, key: str) -> str:
    """`path.key`, or `key` at the top."""
    return f"{path}.{key}" if path else key


class Walker:
    """Typed reads from the composed YAML tree; every failure is a TopologyError at a line.

    `path` arguments are the dotted key path used in messages, e.g. `links[2].rate`.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    def error(self, node: yaml.Node | None, path: str, message: str) -> TopologyError:
        return TopologyError(message, file=self.source,
                             line=line_of(node) if node is not None else None, key=path or None)

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        if node.tag == _NULL_TAG:
            return "nothing (null)"
        if node.tag == "tag:yaml.org,2002:str":
            return shown(node.value)
        return node.value  # a number or boolean, as written

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _NULL_TAG

    # ---- containers ---------------------------------------------------------------------

    def mapping(self, node: yaml.Node, path: str, allowed: Iterable[str],
                required: Iterable[str] = (), *, what: str = "key",
                hints: dict[str, str] | None = None) -> Entries:
        """The entries of a mapping (null counts as empty), checking unknown, missing and
        duplicate keys. Keys are the raw text written (so a node named `no` stays 'no')."""
        allowed = tuple(allowed)
        if self.is_null(node):
            entries: Entries = {}
        elif isinstance(node, MappingNode):
            entries = self._entries(node, path, what)
        else:
            raise self.error(node, path, f"expected a mapping, got {self.describe(node)}")
        if what == "key":  # free-form mappings (node names) pass allowed=()
            for key, (key_node, _) in entries.items():
                if key not in allowed:
                    raise self.error(key_node, join_path(path, key),
                                     self._unknown(key, allowed, (hints or {}).get(key)))
        for key in required:
            if key not in entries:
                raise self.error(node, path, f"missing required key '{key}'")
        return entries

    def _entries(self, node: MappingNode, path: str, what: str) -> Entries:
        merged: Entries = {}
        explicit: Entries = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                # `<<: *anchor` merges another mapping in; keys written here win over it,
                # and earlier merge sources win over later ones (YAML merge-key rules).
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, MappingNode):
                        raise self.error(src, path, "'<<' can only merge a mapping")
                    for key, entry in self._entries(src, path, what).items():
                        merged.setdefault(key, entry)
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error(key_node, path, f"a {what} must be a plain name, "
                                 f"got {self.describe(key_node)}")
            key = key_node.value
            if key in explicit:
                first = line_of(explicit[key][0])
                raise self.error(key_node, join_path(path, key),
                                 f"duplicate {what} '{key}' (first at line {first})")
            explicit[key] = (key_node, value_node)
        return {**merged, **explicit} if merged else explicit

    @staticmethod
    def _unknown(key: str, allowed: tuple[str, ...], hint: str | None) -> str:
        msg = f"unknown key '{key}'"
        close = difflib.get_close_matches(key, allowed, n=1)
        if hint:
            msg += f" ({hint})"
        elif close:
            msg += f"; did you mean '{close[0]}'?"
        return f"{msg} (allowed: {', '.join(allowed)})" if allowed else msg

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        """The items of a list (null counts as empty)."""
        if self.is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.error(node, path, f"expected a list, got {self.describe(node)}")
        return list(node.value)

    # ---- scalars ------------------------------------------------------------------------

    def scalar(self, node: yaml.Node, path: str, expected: str) -> Any:
        """The Python value of a scalar (int, float, str, bool, None, ...)."""
        if not isinstance(node, ScalarNode):
            raise self.error(node, path, f"expected {expected}, got {self.describe(node)}")
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as e:
            raise self.error(node, path, f"unsupported YAML value: {e.problem}") from None
        except Exception as e:  # noqa: BLE001 - whatever a constructor raises, the value is bad
            # a tag PyYAML cannot convert (`!!int x`, `!!bool maybe`, `!!timestamp 2001-13-45`
            # or `!!timestamp x`, which fails with AttributeError inside PyYAML) or an integer
            # past Python's 4300-digit conversion limit
            what = node.tag.rpartition(":")[2] or "value"
            raise self.error(node, path, f"{shown(node.value)} is not a valid {what} "
                             f"({type(e).__name__}: {e})") from None

    def text(self, node: yaml.Node, path: str, expected: str = "a string") -> str:
        """The raw text of a scalar, whatever YAML would resolve it to (`no`, `1` stay text)."""
        if not isinstance(node, ScalarNode) or self.is_null(node):
            raise self.error(node, path, f"expected {expected}, got {self.describe(node)}")
        return node.value

    def choice(self, node: yaml.Node, path: str, options: Iterable[str], what: str) -> str:
        """A word that must be one of `options`: `unknown <what> 'x' (one of: a, b)`."""
        options = tuple(options)
        value = self.text(node, path)
        if value not in options:
            raise self.error(node, path, f"unknown {what} '{value}' (one of: "
                             f"{', '.join(options)})")
        return value

    def name(self, node: yaml.Node, path: str, what: str) -> str:
        value = self.text(node, path, f"a {what}")
        if not NAME_RE.match(value):
            raise self.error(node, path, f"bad {what} {shown(value)}: {NAME_RULE}")
        return value

    def integer(self, node: yaml.Node, path: str, lo: int, hi: int = INT_MAX,
                what: str = "an integer", label: str = "the value") -> int:
        """An integer in lo..hi (by default at most INT_MAX: what a C long and numpy take)."""
        value = self.scalar(node, path, what)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(node, path, f"expected {what}, got {self.describe(node)}")
        if hi != INT_MAX and not lo <= value <= hi:
            raise self.error(node, path, f"{label} {value} is outside {lo}..{hi}")
        if value < lo:
            raise self.error(node, path, f"{label} must be at least {lo}, got {value}")
        if value > hi:
            raise self.error(node, path, f"{label} {value} is above {hi}")
        return value

    def number(self, node: yaml.Node, path: str, lo: float, hi: float, what: str = "a number",
               label: str = "the value") -> float:
        """A finite number in lo..hi; YAML 1.1's `1e3` (a string to PyYAML) counts as one."""
        value = self.scalar(node, path, what)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(node, path, f"expected {what}, got {self.describe(node)}")
        if isinstance(value, int) and abs(value) > 10**300:  # past a float: no range takes it
            raise self.error(node, path, f"{label} {shown(node.value)} is too large")
        if not math.isfinite(value):
            raise self.error(node, path, f"expected {what}, got {shown(node.value)} (not finite)")
        if not lo <= value <= hi:
            raise self.error(node, path, f"{label} {value:g} is outside {lo:g}..{hi:g}")
        return float(value)

    def boolean(self, node: yaml.Node, path: str) -> bool:
        value = self.scalar(node, path, "true or false")
        if not isinstance(value, bool):
            raise self.error(node, path, f"expected true or false, got {self.describe(node)}")
        return value

    def unit(self, node: yaml.Node, path: str, parse: Callable[[Any], Any], what: str) -> Any:
        """Run a `fabric.units` parser on a scalar; its ValueError becomes a located error."""
        value = self.scalar(node, path, what)
        if value is None:
            raise self.error(node, path, f"missing value: expected {what}")
        try:
            return parse(value)
        except ValueError as e:
            raise self.error(node, path, str(e)) from None
