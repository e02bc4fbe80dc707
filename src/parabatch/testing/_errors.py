"""The exceptions the controlled scheduler raises: one class per condition."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .._errors import ParabatchError

if TYPE_CHECKING:
    from ._trace import CheckResult, Failure

__all__ = [
    "BlockedFailure",
    "DeadlockFailure",
    "NondeterminismFailure",
    "RefusedFailure",
    "ScheduleFailure",
    "SchedulerUsageError",
    "StepLimitFailure",
    "UncontrolledThreadError",
    "UncontrolledThreadFailure",
]


class SchedulerUsageError(ParabatchError, RuntimeError):
    """Raised when the scheduler is used in a way it cannot honour.

    For example: a second controlled run started while one is active in this process, or
    ``spawn`` called from a thread the running scheduler does not manage.

    Example:
        >>> from parabatch.testing import SchedulerUsageError, check_random
        >>> def nested():
        ...     check_random(lambda: None, iterations=1, seed=0)
        >>> r = check_random(nested, iterations=1, seed=0, raise_on_failure=False)
        >>> type(r.failure.exception).__name__
        'SchedulerUsageError'
    """


class UncontrolledThreadError(SchedulerUsageError):
    """Raised inside the checked code when it starts a thread the scheduler cannot control.

    ``threading.Thread``, ``ThreadPoolExecutor`` and :func:`spawn` threads are managed
    during a check; a raw ``_thread.start_new_thread`` would run outside the schedule, so
    it is refused and the run fails with :class:`RefusedFailure`, naming the file and
    line of the call.

    Example:
        >>> import _thread
        >>> from parabatch.testing import check_random
        >>> def sneaky():
        ...     _thread.start_new_thread(print, ("escaped",))
        >>> r = check_random(sneaky, iterations=1, seed=0, raise_on_failure=False)
        >>> r.failure.kind, type(r.failure.exception).__name__
        ('refused', 'UncontrolledThreadError')
    """


class ScheduleFailure(ParabatchError, AssertionError):
    """Raised when a check finds a schedule under which the checked function fails.

    ``.failure`` holds the :class:`Failure` (strategy, seed, schedule string, trace and the
    one line that replays it); ``.result`` the whole :class:`CheckResult`. The message is
    ``str(failure)``. Subclasses name the kind of failure; a plain ``ScheduleFailure``
    means the checked function (or a thread it spawned) raised.

    Example:
        >>> from parabatch.testing import ScheduleFailure, replay
        >>> def always_fails():
        ...     assert False, "boom"
        >>> try:
        ...     replay(always_fails, "")
        ... except ScheduleFailure as e:
        ...     print(e.failure.kind, e.failure.schedule == "")
        exception True
    """

    def __init__(self, failure: Failure, result: Optional[CheckResult] = None) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.result = result


class DeadlockFailure(ScheduleFailure):
    """Raised when every live managed thread is blocked on a scheduler primitive.

    Example:
        >>> from parabatch.testing import DeadlockFailure
        >>> issubclass(DeadlockFailure, ScheduleFailure)
        True
    """


class BlockedFailure(ScheduleFailure):
    """Raised when a managed thread stops making progress outside the scheduler's control.

    The thread holding the baton neither reached a scheduling point nor finished: it sleeps
    in the kernel without being woken (a real lock, a socket, ``time.sleep`` reached before
    the run), or spent ``stall_timeout`` seconds of its own time (CPU, or polling) without a
    point. Time spent waiting for a CPU or for the GIL never counts. The report shows where
    it was blocked.

    Example:
        >>> from parabatch.testing import BlockedFailure
        >>> issubclass(BlockedFailure, ScheduleFailure)
        True
    """


class UncontrolledThreadFailure(ScheduleFailure):
    """Raised when the checked code started, or ran on, a thread the scheduler does not manage.

    Example:
        >>> from parabatch.testing import UncontrolledThreadFailure
        >>> issubclass(UncontrolledThreadFailure, ScheduleFailure)
        True
    """


class NondeterminismFailure(ScheduleFailure):
    """Raised when a run does not follow the schedule it is replaying.

    The checked function must be deterministic given the schedule: the same scheduling
    points, in the same order, with the same threads runnable. Randomness, wall-clock time
    or state left over from an earlier run break that.

    Example:
        >>> from parabatch.testing import NondeterminismFailure
        >>> issubclass(NondeterminismFailure, ScheduleFailure)
        True
    """


class StepLimitFailure(ScheduleFailure):
    """Raised when one run passes more than ``max_steps`` scheduling points (a livelock?).

    Example:
        >>> from parabatch.testing import StepLimitFailure
        >>> issubclass(StepLimitFailure, ScheduleFailure)
        True
    """


class RefusedFailure(ScheduleFailure):
    """Raised when the checked code did something the scheduler refuses to run under a check.

    Starting a process (``multiprocessing``, ``ProcessPoolExecutor``, ``os.fork``),
    running an ``asyncio`` event loop, starting a check inside a check, joining a thread
    started before the check: each raises :class:`SchedulerUsageError` at the call, and
    the run fails with this, naming the file and line, even if the code swallows the error.

    Example:
        >>> import os
        >>> from parabatch.testing import check_random
        >>> def forks():
        ...     try:
        ...         os.fork()
        ...     except RuntimeError:
        ...         pass  # swallowed: the run still fails
        >>> r = check_random(forks, iterations=1, seed=0, raise_on_failure=False)
        >>> r.failure.kind, "os.fork()" in r.failure.message
        ('refused', True)
    """
