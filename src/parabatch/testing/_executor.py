"""``ControlledExecutor``: a thread pool whose workers are managed threads.

Its futures block in the scheduler's model, and during a controlled run
``concurrent.futures.wait`` and ``concurrent.futures.as_completed`` are replaced by
versions that do the same for these futures (and defer to the originals for any other).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from concurrent.futures import Future
from concurrent.futures import _base as futures_base
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, TypeVar

from . import _scheduler
from ._errors import SchedulerUsageError
from ._scheduler import ManagedThread, Runtime, _Abort, _event

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")

__all__ = ["ControlledExecutor", "ControlledFuture", "as_completed", "wait"]

_T = TypeVar("_T")

_real_wait = concurrent.futures.wait
_real_as_completed = concurrent.futures.as_completed

# A future counts as done for wait()/as_completed() in these states, exactly as in
# concurrent.futures: a cancelled future is "done" only once a worker has dropped it.
_DONE_STATES = (futures_base.CANCELLED_AND_NOTIFIED, futures_base.FINISHED)


class ControlledFuture(Future):  # type: ignore[type-arg]
    """A ``Future`` whose blocking waits are waits in the scheduler's model.

    ``ControlledExecutor.submit`` returns these during a controlled run. ``result()`` and
    ``exception()`` on an unfinished future block the calling managed thread in the model
    (a timeout expires only when no other thread can run); completing or cancelling one
    wakes its waiters.

    Example:
        >>> from parabatch.testing import ControlledExecutor, ControlledFuture, check_random
        >>> def fn():
        ...     with ControlledExecutor(1) as ex:
        ...         fut = ex.submit(sum, [1, 2])
        ...         assert isinstance(fut, ControlledFuture) and fut.result() == 3
        >>> check_random(fn, iterations=5, seed=0).ok
        True
    """

    def __init__(self, rt: Runtime) -> None:
        super().__init__()
        self._rt = rt
        self._sched_waiters: list[tuple[ManagedThread, int]] = []
        # Named in creation order, which a replay repeats; addresses are not repeated.
        self._label = rt.name_of(self, "F")
        self._seq = int(self._label[1:])

    def _wait_done(self, timeout: Optional[float], what: str) -> None:
        rt = self._rt
        if self.done() or _scheduler._current is not rt:
            return
        me = rt.me()
        if me is None:
            return
        label = f"{what} {self._label}"
        while not self.done():
            if not rt.block(me, (self,), label, timeout):
                raise concurrent.futures.TimeoutError()

    def result(self, timeout: Optional[float] = None) -> Any:
        self._wait_done(timeout, "result of")
        return super().result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        self._wait_done(timeout, "exception of")
        return super().exception(timeout)

    def _notify(self) -> None:
        if self._sched_waiters and _scheduler._current is self._rt:
            self._rt.wake(self)

    def set_result(self, result: Any) -> None:
        super().set_result(result)
        self._notify()

    def set_exception(self, exception: Optional[BaseException]) -> None:
        super().set_exception(exception)
        self._notify()

    def cancel(self) -> bool:
        cancelled = super().cancel()
        self._notify()
        return cancelled

    def set_running_or_notify_cancel(self) -> bool:
        running = super().set_running_or_notify_cancel()
        if not running:
            self._notify()
        return running


class ControlledExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` for the batch node's ``executor`` hook.

    Pass the class itself as the factory: the core calls ``ControlledExecutor(max_workers)``.
    Inside a controlled run its workers are managed threads: at most ``max_workers`` tasks
    run at once and the rest queue, in submission order, as in ``ThreadPoolExecutor``;
    ``submit`` is a scheduling point. Outside a controlled run it is a plain
    ``ThreadPoolExecutor``, so a node configured with it still works.

    ``max_running`` records the most tasks ever running at once (for tests of the cap).

    Example:
        >>> from parabatch.testing import ControlledExecutor, check_dfs
        >>> def fn():
        ...     with ControlledExecutor(2) as ex:
        ...         futs = [ex.submit(pow, 2, i) for i in range(3)]
        ...         assert [f.result() for f in futs] == [1, 2, 4]
        ...         assert ex.max_running <= 2
        >>> check_dfs(fn, max_preemptions=1).exhausted
        True
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        thread_name_prefix: str = "",
        initializer: Optional[Callable[..., Any]] = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers={max_workers!r}: must be an integer >= 1")
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = initargs
        self.max_running = 0
        self._running = 0
        self._shutdown = False
        self._queue: collections.deque[tuple[ControlledFuture, Callable[..., Any], Any, Any]]
        self._queue = collections.deque()
        self._workers: list[ManagedThread] = []
        self._idle = 0
        self._sched_waiters: list[tuple[ManagedThread, int]] = []
        rt = _scheduler._current
        self._rt: Optional[Runtime] = rt if isinstance(rt, Runtime) else None
        self._real: Optional[concurrent.futures.ThreadPoolExecutor] = None
        if self._rt is None:
            self._real = concurrent.futures.ThreadPoolExecutor(
                max_workers, thread_name_prefix, initializer, initargs
            )
            return
        if self._rt.me() is None:
            raise SchedulerUsageError(
                "ControlledExecutor created from a thread the running scheduler does not "
                "manage; create it inside the checked function"
            )
        self._name = self._rt.name_of(self, "E")
        self._rt.executors.append(self)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue ``fn(*args, **kwargs)``; a scheduling point (a worker may start at once)."""
        if self._real is not None:
            return self._real.submit(fn, *args, **kwargs)
        rt = self._rt
        assert rt is not None
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        fut = ControlledFuture(rt)
        self._queue.append((fut, fn, args, kwargs))
        if self._idle:
            self._idle -= 1
            rt.wake(self, 1)
        elif len(self._workers) < self._max_workers:
            w = rt.new_thread(self._work, (), f"T{len(rt.threads)}")
            w.origin = f"worker {len(self._workers) + 1} of executor {self._name}"
            self._workers.append(w)
        rt.point(_event(f"submit to {self._name}"))
        return fut

    def _work(self) -> None:
        rt = self._rt
        assert rt is not None
        me = rt.current
        queue = self._queue
        if self._initializer is not None:
            self._initializer(*self._initargs)
        while True:
            if queue:
                fut, fn, args, kwargs = queue.popleft()
                if not fut.set_running_or_notify_cancel():
                    continue
                self._running += 1
                if self._running > self.max_running:
                    self.max_running = self._running
                try:
                    result = fn(*args, **kwargs)
                except _Abort:
                    raise
                except BaseException as exc:
                    self._running -= 1
                    fut.set_exception(exc)
                else:
                    self._running -= 1
                    fut.set_result(result)
            elif self._shutdown:
                return
            else:
                self._idle += 1
                rt.block(me, (self,), f"idle worker of {self._name}")

    def _implicit_shutdown(self) -> None:
        """The checked function returned: let idle workers drain the queue and stop."""
        if self._rt is not None and not self._shutdown:
            self._shutdown = True
            self._wake_idle()

    def _wake_idle(self) -> None:
        assert self._rt is not None
        self._idle = 0
        self._rt.wake(self)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``ThreadPoolExecutor.shutdown``; waiting joins the workers in the model."""
        if self._real is not None:
            self._real.shutdown(wait=wait, cancel_futures=cancel_futures)
            return
        self._shutdown = True
        if cancel_futures:
            for fut, *_ in list(self._queue):
                fut.cancel()
        self._wake_idle()
        if wait:
            for w in self._workers:
                w.join()


def _controlled_caller(fs: Iterable[Any]) -> tuple[Optional[Runtime], Optional[ManagedThread]]:
    rt = _scheduler._current
    if not isinstance(rt, Runtime):
        return None, None
    me = rt.me()
    if me is None or not any(isinstance(f, ControlledFuture) for f in fs):
        return None, None
    return rt, me


def wait(
    fs: Iterable[Future[_T]],
    timeout: Optional[float] = None,
    return_when: str = concurrent.futures.ALL_COMPLETED,
) -> concurrent.futures._base.DoneAndNotDoneFutures[_T]:
    """``concurrent.futures.wait`` that blocks in the scheduler's model for controlled futures.

    Installed as ``concurrent.futures.wait`` during a controlled run; calls from unmanaged
    threads, or with no :class:`ControlledFuture` among ``fs``, go to the original.

    Example:
        >>> import concurrent.futures
        >>> from parabatch.testing import ControlledExecutor, check_random
        >>> def fn():
        ...     ex = ControlledExecutor(2)
        ...     futs = {ex.submit(abs, -i) for i in range(3)}
        ...     done, _ = concurrent.futures.wait(futs)
        ...     assert sorted(f.result() for f in done) == [0, 1, 2]
        ...     ex.shutdown()
        >>> check_random(fn, iterations=20, seed=1).ok
        True
    """
    fs = set(fs)
    rt, me = _controlled_caller(fs)
    if rt is None or me is None:
        return _real_wait(fs, timeout, return_when)
    label = "wait " + return_when.lower().replace("_", "-")
    while True:
        done = {f for f in fs if f._state in _DONE_STATES}
        not_done = fs - done
        if (
            not not_done
            or (return_when == concurrent.futures.FIRST_COMPLETED and done)
            or (
                return_when == concurrent.futures.FIRST_EXCEPTION
                and any(not f.cancelled() and f.exception() is not None for f in done)
            )
        ):
            return futures_base.DoneAndNotDoneFutures(done, not_done)
        waitables = [f for f in not_done if isinstance(f, ControlledFuture)]
        if len(waitables) < len(not_done):
            # A real future among them: the model cannot see it complete. Poll it at
            # scheduling points rather than hang; the stall detector bounds the wait.
            rt.point(_event(label + " (polling a real future)"))
            continue
        if not rt.block(me, waitables, label, timeout):
            return futures_base.DoneAndNotDoneFutures(done, not_done)


def as_completed(fs: Iterable[Future[_T]], timeout: Optional[float] = None) -> Iterator[Future[_T]]:
    """``concurrent.futures.as_completed`` that blocks in the scheduler's model.

    Installed as ``concurrent.futures.as_completed`` during a controlled run.

    Example:
        >>> import concurrent.futures
        >>> from parabatch.testing import ControlledExecutor, check_random
        >>> def fn():
        ...     with ControlledExecutor(2) as ex:
        ...         futs = [ex.submit(abs, -i) for i in range(3)]
        ...         got = sorted(f.result() for f in concurrent.futures.as_completed(futs))
        ...         assert got == [0, 1, 2]
        >>> check_random(fn, iterations=20, seed=1).ok
        True
    """
    fs = set(fs)
    rt, me = _controlled_caller(fs)
    if rt is None or me is None:
        yield from _real_as_completed(fs, timeout)
        return
    pending = set(fs)
    while pending:
        done = [f for f in pending if f._state in _DONE_STATES]
        if done:
            # Yield in a stable order (the set's order depends on addresses): replays match.
            done.sort(key=_seq)
            for f in done:
                pending.discard(f)
                yield f
            continue
        waitables = [f for f in pending if isinstance(f, ControlledFuture)]
        if len(waitables) < len(pending):
            rt.point(_event("as_completed (polling a real future)"))
            continue
        if not rt.block(me, waitables, "as_completed", timeout):
            raise concurrent.futures.TimeoutError(
                f"{len(pending)} (of {len(fs)}) futures unfinished"
            )


def _seq(f: Future[Any]) -> int:
    return f._seq if isinstance(f, ControlledFuture) else -1
