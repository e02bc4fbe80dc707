"""Scheduler-aware locks: contention becomes a scheduling decision instead of a real wait."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Optional

from . import _scheduler
from ._scheduler import ManagedThread, Runtime, _event

__all__ = ["Lock", "RLock"]


class Lock:
    """A mutual-exclusion lock that the controlled scheduler understands.

    Inside a controlled run, ``acquire`` is a scheduling point, and a thread that finds the
    lock held blocks *in the scheduler's model*: other threads run, and if every thread ends
    up waiting the run reports a deadlock with the schedule. Outside a run it is a plain
    ``threading.Lock`` (it wraps one), so the same code runs unchanged in production, under
    ``check_stress`` and in the ``lock=`` argument of ``parabatch.CallLog``.

    ``release`` is not a scheduling point: the thread goes on to its next point, where any
    thread the release woke may be scheduled.

    Example:
        >>> from parabatch.testing import Lock
        >>> lock = Lock()
        >>> with lock:
        ...     lock.locked()
        True
        >>> lock.locked()
        False
    """

    __slots__ = ("_real", "_sched_waiters", "name")

    def __init__(self, name: Optional[str] = None) -> None:
        self._real = threading.Lock()
        self._sched_waiters: list[tuple[ManagedThread, int]] = []
        self.name = name

    def _label(self, rt: Runtime) -> str:
        return self.name or rt.name_of(self, "L")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock; same arguments and result as ``threading.Lock.acquire``."""
        rt = _scheduler._current
        if not isinstance(rt, Runtime) or (me := rt.me()) is None:
            return self._real.acquire(blocking, timeout)
        name = self._label(rt)
        rt.point(_event(f"acquire {name}"))
        while not self._real.acquire(False):
            if not blocking:
                return False
            if not rt.block(me, (self,), f"acquire {name} (held)", timeout):
                return False
        return True

    def release(self) -> None:
        """Release the lock and make the threads waiting for it runnable."""
        self._real.release()
        if self._sched_waiters:
            rt = _scheduler._current
            if isinstance(rt, Runtime):
                rt.wake(self)
            else:  # waiters left behind by an abandoned run
                self._sched_waiters = []

    def locked(self) -> bool:
        """True while some thread holds the lock."""
        return self._real.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<parabatch.testing.Lock {self.name or ''} {state}>".replace("  ", " ")


class RLock(Lock):
    """A reentrant :class:`Lock`: its owner may acquire it again; release as many times.

    Example:
        >>> from parabatch.testing import RLock
        >>> lock = RLock()
        >>> with lock, lock:
        ...     lock.locked()
        True
    """

    __slots__ = ("_count", "_owner")

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name)
        self._owner: Optional[int] = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire, or re-acquire if the calling thread already owns the lock."""
        ident = threading.get_ident()
        if self._owner == ident:
            self._count += 1
            return True
        if not super().acquire(blocking, timeout):
            return False
        self._owner = ident
        self._count = 1
        return True

    def release(self) -> None:
        """Undo one ``acquire``; the last one releases the lock."""
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            super().release()
