"""What every daemon the fabric starts shares (the link engine, RoCE and memory switches):
run until SIGTERM/SIGINT with a `READY <pid>` line for the starter (`lifecycle._spawn_ready`),
and write statistics files atomically so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio


async def serve_until_signal(serve: Callable[..., Awaitable[None]], *,
                             ready_line: bool = True) -> None:
    """Start `serve` (a trio task that calls `task_status.started()`), print `READY <pid>`,
    and cancel it at the first SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            if ready_line:
                sys.stdout.write(f"READY {os.getpid()}\n")
                sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def write_json_atomic(path: str, data: Any) -> None:  # noqa: ANN401 - any JSON-able value
    """Write `data` as JSON to `path` through a temporary file and a rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
