"""Scheduler-aware locks: contention becomes a scheduling decision instead of a real wait."""

from __future__ import annotations

import sys
import threading
from types import CodeType, TracebackType
from typing import Any, Optional

from . import _scheduler
from ._scheduler import ManagedThread, Runtime, _event
from ._tracing import is_user_file

__all__ = ["Lock", "RLock", "adopt"]

_real_lock = threading.Lock
_get_ident = threading.get_ident
# Frames that only forward an acquire (``with lock``, a Condition's ``with cond``).
_FORWARDERS: set[CodeType] = set()
_user_code: dict[CodeType, bool] = {}


def _called_from_user_code() -> bool:
    """Is the acquire's caller user code (a point) rather than library internals (not)?"""
    f = sys._getframe(2)
    while f is not None and f.f_code in _FORWARDERS:
        f = f.f_back  # type: ignore[assignment]
    if f is None:
        return False
    code = f.f_code
    hit = _user_code.get(code)
    if hit is None:
        hit = _user_code[code] = is_user_file(code.co_filename)
    return hit


_ENTRY_POINTS = ("Thread.run", "run", "_bootstrap", "_bootstrap_inner", "_worker")


def _blocking_site() -> str:
    """``Event.wait at test_x.py:12``: the library call a thread blocks in, and its caller."""
    f = sys._getframe(2)
    names: list[str] = []
    while f is not None:
        code = f.f_code
        if is_user_file(code.co_filename) or "parabatch" in code.co_filename:
            break
        if code not in _FORWARDERS:
            name = getattr(code, "co_qualname", None)
            if name is None:  # before 3.11: the class from `self`
                owner = f.f_locals.get("self") if code.co_varnames[:1] == ("self",) else None
                name = code.co_name if owner is None else f"{type(owner).__name__}.{code.co_name}"
            names.append(name)
        f = f.f_back  # type: ignore[assignment]
    while names and names[-1] in _ENTRY_POINTS:
        names.pop()
    where = ""
    if f is not None and is_user_file(f.f_code.co_filename):
        where = f" at {f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}"
    return f" in {names[-1]}{where}" if names else where


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
        self._real = _real_lock()
        self._sched_waiters: list[tuple[ManagedThread, int]] = []
        self.name = name

    def _label(self, rt: Runtime) -> str:
        return self.name or rt.name_of(self, "L")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock; same arguments and result as ``threading.Lock.acquire``."""
        rt = _scheduler._current
        if not isinstance(rt, Runtime) or (me := rt.me()) is None:
            return self._real.acquire(blocking, timeout)
        # A point where user code takes the lock; inside the standard library (a queue's
        # mutex, a condition's waiter) the lock only blocks, atomically with its caller.
        user = _called_from_user_code()
        if user:
            rt.point(_event(f"acquire {self._label(rt)}"))
        while not self._real.acquire(False):
            if not blocking:
                return False
            what = f"acquire {self._label(rt)} (held)" if user else "waits" + _blocking_site()
            if not rt.block(me, (self,), what, timeout):
                return False
        return True

    def _free(self) -> bool:
        """Could a thread take it now? (For waiters of a lock released behind our back.)"""
        if not self._real.acquire(False):
            return False
        self._real.release()
        return True

    def _at_fork_reinit(self) -> None:
        self._real = _real_lock()
        self._sched_waiters = []

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

    # The protocol threading.Condition uses with an RLock (wait releases every level).
    def _is_owned(self) -> bool:
        return self._owner == _get_ident()

    def _release_save(self) -> tuple[int, Optional[int]]:
        if self._owner != _get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        Lock.release(self)
        return state

    def _acquire_restore(self, state: tuple[int, Optional[int]]) -> None:
        Lock.acquire(self)
        self._count, self._owner = state

    def _recursion_count(self) -> int:
        return self._count if self._owner == _get_ident() else 0

    def _free(self) -> bool:
        return self._owner is None and super()._free()

    def locked(self) -> bool:
        """True while some thread holds the lock."""
        return not self._free()

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


def adopt(real: Any) -> Lock:
    """A controlled lock sharing ``real`` (a lock made before the check) as its state.

    Code that still holds the original excludes against the wrapper, and vice versa; a
    thread blocked on the wrapper is woken by the wrapper's release (or, if the original
    was released directly, when nothing else can run).
    """
    lock: Lock = RLock() if "RLock" in type(real).__name__ else Lock()
    lock._real = real
    return lock


_FORWARDERS.update(
    {
        Lock.__enter__.__code__,
        RLock.acquire.__code__,
        RLock._acquire_restore.__code__,
        threading.Condition.__enter__.__code__,
    }
)
