"""``python -m parabatch run workflow.json``: see :func:`parabatch.workflow._cli.main`.

As a process, the command also owns Ctrl-C: the first one interrupts the run (shell
commands are stopped, what finished is written, exit code 130) and the process exits at
once, without waiting for items still running in worker threads; a second Ctrl-C while
that happens stops the shell commands and exits 130 immediately, writing nothing more.

Example:
    >>> import io
    >>> from parabatch.workflow._cli import main
    >>> main(["validate", "no-such-file.json"], stderr=io.StringIO())
    2
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import Optional

from .workflow._cli import EXIT_INTERRUPTED, main
from .workflow._nodes import SHELL_COMMANDS


class _CtrlC:
    """SIGINT handler: the first raises KeyboardInterrupt, the next one exits now."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: Optional[FrameType]) -> None:
        first, self.seen = not self.seen, True
        if not SHELL_COMMANDS.may_interrupt():
            return  # raised by the shell command being started, once it can be stopped
        if first:
            raise KeyboardInterrupt
        SHELL_COMMANDS.stop(timeout=1.0)
        os.write(2, b"\nparabatch: interrupted again; exiting now\n")
        os._exit(EXIT_INTERRUPTED)


def _run() -> int:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _CtrlC())  # not when ignored (a background job)
    try:
        code = main()
    except KeyboardInterrupt:  # landed outside the run: while loading, or writing
        SHELL_COMMANDS.stop()
        sys.stderr.write("parabatch: interrupted\n")
        code = EXIT_INTERRUPTED
    try:
        sys.stdout.flush()
    except OSError:  # a closed pipe (``| head``): the results were saved elsewhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if code == EXIT_INTERRUPTED:
        # Items of the interrupted run may still be running in worker threads, which the
        # interpreter would wait for at exit: end the process now.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(_run())
