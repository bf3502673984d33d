"""The project's error tree. The CLI catches `FabricError` once, prints one line, exits 1
(or the error's own `exit_code`: 3 for a failed expectation).

A message may quote what a user wrote (a name, a value), so `one_line` makes any message one
printable line of at most `MESSAGE_MAX` characters: control characters are escaped and long
runs cut, with their length said. A value quoted in an error is there to be recognised, not
copied back.
"""

from __future__ import annotations

import re

MESSAGE_MAX = 290  # with the CLI's "fabric: " in front, under 300
MESSAGE_KEEP = 270  # what a message keeps behind a long location (a path of 20+ characters)
_LONG_RUN = re.compile(r"\S{81,}")  # one unbroken run (a value) longer than 80 characters
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def shown(value: object, width: int = 40) -> str:
    """A value a user wrote, quoted as Python would, cut to `width` characters for a message
    (`'aaaa...(5000 chars)'`)."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 12]}...({len(text)} chars)"


def escaped(text: str) -> str:
    """`text` with control characters (newlines too) written as escapes."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def one_line(message: str, limit: int = MESSAGE_MAX) -> str:
    """`message` as one printable line of at most `limit` characters."""
    text = _LONG_RUN.sub(lambda m: f"{m.group()[:60]}...({len(m.group())} chars)",
                         escaped(message))
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def _located(where: str, message: str) -> str:
    """`FILE:LINE: message` in at most MESSAGE_MAX characters, the location kept whole (its
    tail, for a path over 200 characters) and the message cut to fit; a message always keeps
    at least MESSAGE_KEEP characters, so behind a very long path the line may run longer."""
    where = escaped(where)
    if len(where) > 200:
        where = "..." + where[-197:]
    return where + one_line(message, max(MESSAGE_MAX - len(where), MESSAGE_KEEP))


class FabricError(Exception):
    """Base of every error the user can cause or fix. `exit_code` is the CLI's exit status."""

    exit_code = 1


class TopologyError(FabricError):
    """A topology file is wrong. Carries the file, line and key so the message can name them."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        what = f"{key}: " if key else ""
        super().__init__(_located(where, f"{what}{message}"))


class KernelError(FabricError):
    """The kernel refused a step (permission, missing module, name clash)."""


class FabricStateError(FabricError):
    """The fabric is not in the state the command needs (not running, already running)."""


class ExpectationFailed(FabricError):
    """A run's figures broke an expectation of the file's `expect:` section (exit status 3,
    so CI can tell a design that misses its figures from a run that broke)."""

    exit_code = 3
