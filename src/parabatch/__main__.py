"""``python -m parabatch run workflow.json``: see :func:`parabatch.workflow._cli.main`.

As a process, the command also owns Ctrl-C: the first one interrupts the run (shell
commands are stopped, what finished is written, exit code 130) and the process exits at
once, without waiting for items still running in worker threads; a second Ctrl-C while
that happens stops the shell commands and exits 130 immediately, writing nothing more.
SIGTERM and SIGHUP do the same, with exit codes 143 and 129 (128 + the signal).

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


class _Stop:
    """Handler of SIGINT, SIGTERM and SIGHUP: the first raises KeyboardInterrupt (so the
    run stops as on Ctrl-C), the next one stops the shell commands and exits now."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    @property
    def code(self) -> int:
        """The exit code: the shell's 128 + the signal's number (130 for Ctrl-C)."""
        return 128 + (signal.SIGINT if self.signum is None else self.signum)

    def __call__(self, signum: int, frame: Optional[FrameType]) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if not SHELL_COMMANDS.may_interrupt():
            return  # raised by the shell command being started, once it can be stopped
        if first:
            raise KeyboardInterrupt
        SHELL_COMMANDS.stop(timeout=1.0)
        os.write(2, b"\nparabatch: interrupted again; exiting now\n")
        os._exit(self.code)


_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def _run() -> int:
    stop = _Stop()
    for name in _SIGNALS:
        number = getattr(signal, name, None)
        if number is None:
            continue  # no SIGHUP on Windows
        current = signal.getsignal(number)
        # An ignored signal stays ignored (SIGINT in a background job, SIGHUP under nohup).
        if current is signal.default_int_handler or current == signal.SIG_DFL:
            signal.signal(number, stop)
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
        # interpreter would wait for at exit: end the process now, and any command such an
        # item started since main() stopped them with it.
        SHELL_COMMANDS.stop()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(stop.code)
    return code


if __name__ == "__main__":
    sys.exit(_run())
