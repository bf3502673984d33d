"""The `fabric` command's entry point: signals are handled from its first moment.

Importing the CLI (click, the kinds) takes a while; a Ctrl-C, SIGTERM or SIGHUP in that
window, before anything is built, ends the command at once with 128 + the signal's number
and no traceback. `fabric.cli.main` then installs the handlers that undo what a command built.
"""

from __future__ import annotations

import os
import signal


def _before_anything_is_built(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # an ignored SIGTERM or SIGHUP (`nohup`) stays ignored; SIGINT is always handled
        if sig == signal.SIGINT or signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _before_anything_is_built)
    from fabric.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
