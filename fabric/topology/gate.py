"""The input gate: every byte of a user's file passes here before anything trusts it.

A topology file (or any input file a section reads) is refused, with one line naming the file
and where possible the line, when it is:

- not a regular file (a FIFO would block forever, `/dev/zero` would read until memory runs
  out), or larger than `MAX_FILE_BYTES`;
- nested deeper than `MAX_DEPTH` (PyYAML composes recursively: 500 levels overflow Python's
  stack before any of our code runs);
- larger than `MAX_EXPANDED_NODES` once aliases and merge keys are expanded (a few hundred
  bytes of `<<: *x` over ten levels are 10^9 nodes to walk), or recursive (`a: &x {<<: *x}`).

All three checks stream the file's parse events (PyYAML's parser is a state machine, not a
recursion) before the tree is composed, so a hostile file costs one linear pass and bounded
memory. The tree is then composed as before and the walker (`walker.py`) reads it; values are
bounded where they are parsed (`fabric.units`, `Walker.integer`/`number`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from fabric.errors import TopologyError

__all__ = ["MAX_DEPTH", "MAX_EXPANDED_NODES", "MAX_FILE_BYTES", "compose", "read_input"]

#: 4 MiB: a 2,000-node explicit chain is about 150 KB; generators make big fabrics small
MAX_FILE_BYTES = 4 << 20
#: the deepest shipped file nests 6 levels; 64 leaves room for any hand-written structure
MAX_DEPTH = 64
#: YAML nodes once every alias and merge is expanded: the walker visits each at most once.
#: A 10,000-node, 20,000-link file written out in full is ~200,000; composing 250,000 takes
#: about a second and 100 MB here (generators make big fabrics from a few lines)
MAX_EXPANDED_NODES = 250_000

# the C parser is about 10x faster than PyYAML's pure-Python one, with the same events and marks
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_input(path: str | Path, what: str = "topology file",
               limit: int = MAX_FILE_BYTES) -> str:
    """The text of the regular file at `path`, at most `limit` bytes of UTF-8."""
    source = str(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise TopologyError(f"cannot read {what}: {e.strerror or e}", file=source) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise TopologyError(f"cannot read {what}: it is {kind}, not a regular file",
                            file=source)
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the stat still cannot block us
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise TopologyError(f"cannot read {what}: {e.strerror or e}", file=source) from None
    if len(data) > limit:
        raise TopologyError(f"the {what} is larger than {limit >> 20} MiB; fabric reads "
                            f"files up to that size", file=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TopologyError(f"not a UTF-8 text file ({e.reason})", file=source,
                            line=line) from None


def compose(text: str, source: str) -> yaml.Node | None:
    """The composed YAML tree of `text`, once its depth and expanded size are within bounds;
    YAML syntax errors are `TopologyError`s at their line."""
    try:
        yaml.reader.Reader(text)  # refuses control characters at once, with their position
        try:
            _check_shape(text, source)
            return yaml.compose(text, Loader=_Loader)  # type: ignore[arg-type]
        except yaml.MarkedYAMLError as e:
            _reword(text, e)
            raise
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        detail = ", ".join(part for part in (e.context, e.problem) if part) or "invalid YAML"
        raise TopologyError(f"YAML syntax error: {detail}", file=source,
                            line=mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as e:  # a control character: it has a position, not a mark
        char = f" (#x{e.character:04x})" if isinstance(e.character, int) else ""
        raise TopologyError(f"YAML syntax error: {e.reason}{char}", file=source,
                            line=text.count("\n", 0, e.position) + 1) from None
    except yaml.YAMLError as e:  # the C parser's errors may carry no mark
        raise TopologyError(f"YAML syntax error: {e}", file=source) from None


def _reword(text: str, error: yaml.MarkedYAMLError) -> None:
    """Raise the pure-Python parser's error for the lines up to `error`'s, when it finds one
    there: it says what it expected and what it found (the C parser, used for speed, says
    less). Bounded: only for a prefix the slow parser reads in well under a second."""
    mark = error.problem_mark or error.context_mark
    if mark is None:
        return
    end = -1
    for _ in range(mark.line + 2):  # through the line after the error's
        end = text.find("\n", end + 1)
        if end < 0:
            end = len(text)
            break
    if end > _REWORD_BYTES:
        return
    try:
        for _ in yaml.parse(text[:end], Loader=yaml.SafeLoader):
            pass
    except yaml.MarkedYAMLError as better:
        better_mark = better.problem_mark or better.context_mark
        if better_mark is not None and better_mark.line == mark.line:
            raise better from None


_REWORD_BYTES = 128 << 10


def _check_shape(text: str, source: str) -> None:
    """Stream the parse events once: refuse deep nesting (also through aliases: a chain of
    merges is walked as deep as it reaches), recursive aliases and a document whose expansion
    (aliases and merges counted at their full size) is too large."""
    expanded: dict[str, tuple[int, int]] = {}  # anchor -> (size, height) of its node
    stack: list[list] = []  # open collections: [size so far, height so far, anchor or None]
    open_anchors: set[str] = set()
    total = 0

    def add(size: int, height: int, event: yaml.Event) -> None:
        nonlocal total
        if len(stack) + height > MAX_DEPTH:
            raise TopologyError(f"the document nests deeper than {MAX_DEPTH} levels"
                                + (" through its aliases" if isinstance(event, yaml.AliasEvent)
                                   else ""), file=source, line=event.start_mark.line + 1)
        if stack:
            stack[-1][0] += size
            stack[-1][1] = max(stack[-1][1], height + 1)
            grown = stack[-1][0]
        else:
            total += size
            grown = total
        if grown > MAX_EXPANDED_NODES:
            raise TopologyError(
                f"the document expands to more than {MAX_EXPANDED_NODES:,} YAML nodes "
                "(aliases and merge keys counted at their full size); write a big fabric "
                "with `generate:`",
                file=source, line=event.start_mark.line + 1)

    for event in yaml.parse(text, Loader=_Loader):  # type: ignore[arg-type]
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise TopologyError(f"the document nests deeper than {MAX_DEPTH} levels",
                                    file=source, line=event.start_mark.line + 1)
            stack.append([1, 1, event.anchor])
            if event.anchor:
                open_anchors.add(event.anchor)
        elif isinstance(event, yaml.CollectionEndEvent):
            size, height, anchor = stack.pop()
            if anchor:
                expanded[anchor] = (size, height)
                open_anchors.discard(anchor)
            add(size, height, event)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                expanded[event.anchor] = (1, 0)
            add(1, 0, event)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                raise TopologyError(f"alias *{event.anchor} refers to a node that contains "
                                    "it (a recursive structure)", file=source,
                                    line=event.start_mark.line + 1)
            # an unknown anchor counts as one node: compose names the error
            add(*expanded.get(event.anchor, (1, 0)), event)
