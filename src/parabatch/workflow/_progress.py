"""A small progress bar for batches, written to a stream (stderr by default)."""

from __future__ import annotations

import sys
import threading
from typing import Optional, TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``progress(node_id, index, done, total, ok)`` drawn as one line per node.

    The line is redrawn in place (``\\r``) as items finish and ended with a newline when
    the node's last item is done; a line for another node starts on a new line. Calls
    may come from several threads at once (batches inside a parallel group): a lock keeps
    each redraw whole. Nothing here is tied to a terminal; the CLI decides whether to show
    it.

    Example:
        >>> import io
        >>> out = io.StringIO(); bar = ProgressBar(out, width=10)
        >>> for done in (1, 2):
        ...     bar("fetch", done - 1, done, 2, done == 1)
        >>> print(out.getvalue().split("\\r")[-1], end="")
        fetch [##########] 2/2 (1 failed)
    """

    def __init__(self, stream: Optional[TextIO] = None, *, width: int = 30) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self._lock = threading.Lock()
        self._failed: dict[str, int] = {}
        self._current: Optional[str] = None

    def __call__(self, node_id: str, index: int, done: int, total: int, ok: bool) -> None:
        with self._lock:
            failed = self._failed.get(node_id, 0) + (not ok)
            self._failed[node_id] = failed
            filled = self.width * done // total if total else self.width
            bar = "#" * filled + "-" * (self.width - filled)
            note = f" ({failed} failed)" if failed else ""
            start = "\n" if self._current not in (None, node_id) else ""
            self._current = node_id
            self.stream.write(f"{start}\r{node_id} [{bar}] {done}/{total}{note}")
            if done >= total:
                self.stream.write("\n")
                self._current = None
                self._failed.pop(node_id, None)
            self.stream.flush()
