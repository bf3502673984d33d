"""The project's error tree. The CLI catches `FabricError` once, prints one line, exits 1."""

from __future__ import annotations


class FabricError(Exception):
    """Base of every error the user can cause or fix."""


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
        super().__init__(f"{where}{what}{message}")


class KernelError(FabricError):
    """The kernel refused a step (permission, missing module, name clash)."""


class FabricStateError(FabricError):
    """The fabric is not in the state the command needs (not running, already running)."""
