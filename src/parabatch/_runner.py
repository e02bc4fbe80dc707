"""Run one unit of work over indexed tasks, in order or through an executor, never losing one.

One loop serves the batch node and the parallel group. The unit (``work``) is the same
object for every task of a run (:class:`parabatch._work.ItemWork` or ``GroupWork``); the
runner submits ``work(index, item)``, keeps the concurrency bound whatever the executor
does, collects outcomes as they finish, stops submitting on fail_fast, and on an interrupt
cancels what has not started and returns at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import traceback
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

from pocketflow import Node

from ._errors import BatchConfigError

__all__ = [
    "Collected",
    "Coordinator",
    "ExecutorFactory",
    "ItemOutcome",
    "ProgressCallback",
    "StopFlag",
    "default_executor",
    "describe_error",
    "notify",
    "release_frames",
    "run_parallel",
    "run_sequential",
]

_log = logging.getLogger("parabatch")

# Futures kept submitted per worker when the executor is known to run at most
# max_concurrent at once. With one, a worker that finishes waits for the coordinator to
# wake and submit the next item; with two, the next item is already queued (the
# benchmark report has both). An executor not known to bound itself gets one per slot,
# so the bound holds whatever it does.
_PREFETCH = 2

# How long the coordinator blocks in wait() before looking again. An interrupt delivered
# without a real signal (``_thread.interrupt_main``) is seen only when wait() returns, so
# it must not wait for the next item to finish.
_POLL_S = 0.2

#: ``executor(max_workers)`` returns the executor a parallel run submits to.
ExecutorFactory = Callable[[int], Executor]
#: ``progress(index, done, total, ok)``, called after each finished item.
ProgressCallback = Callable[[int, int, int, bool], None]


def describe_error(error: BaseException) -> str:
    """``"Type: message"`` for any exception, even one whose ``__str__`` raises.

    Example:
        >>> class Odd(Exception):
        ...     def __str__(self): raise RuntimeError("no")
        >>> describe_error(ValueError("bad")), describe_error(Odd())
        ('ValueError: bad', 'Odd: <unprintable Odd object>')
    """
    name = type(error).__name__
    try:
        message = str(error)
    except Exception:
        message = f"<unprintable {name} object>"
    return f"{name}: {message}" if message else name


def release_frames(error: BaseException) -> str:
    """Format ``error``'s traceback, then drop the frames from it and its chain.

    A failed item's traceback holds the worker's frame, which holds that item's copy of
    the chain: keeping the exception would keep the copy alive after the item ended. The
    text is what a user needs to debug; the frames are not.

    Example:
        >>> try:
        ...     raise ValueError("boom")
        ... except ValueError as e:
        ...     error, text = e, release_frames(e)
        >>> error.__traceback__ is None, text.splitlines()[-1]
        (True, 'ValueError: boom')
    """
    try:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:
        text = describe_error(error) + "\n"
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return text


class ItemOutcome:
    """What one item (or group child) came to: its result, or the exception that ended it.

    A plain, picklable record, so an item's work can run in another process and its
    outcome be merged back by index. ``calls`` are the call records the item produced;
    ``remote`` says they were made in another process and still have to be added to the
    run's ``__llm_calls__`` (in-process they are there already). A failed outcome's
    ``error`` carries no frames; ``traceback`` keeps their text.

    Example:
        >>> o = ItemOutcome(3, "doc", {"summary": "s"}, None, attempts=2)
        >>> o.ok, o.index, o.attempts
        (True, 3, 2)
    """

    __slots__ = ("attempts", "calls", "error", "index", "item", "remote", "result", "traceback")

    def __init__(
        self,
        index: int,
        item: Any,
        result: Any,
        error: Optional[BaseException],
        attempts: int,
        calls: tuple[Any, ...] = (),
        *,
        remote: bool = False,
        traceback: str = "",
    ) -> None:
        self.index = index
        self.item = item
        self.result = result
        self.error = error
        self.attempts = attempts
        self.calls = calls
        self.remote = remote
        self.traceback = traceback

    @property
    def ok(self) -> bool:
        """True when the item produced a result (possibly from ``exec_fallback``)."""
        return self.error is None

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for slot, value in zip(self.__slots__, state):
            setattr(self, slot, value)

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"error={describe_error(self.error)!r}"  # type: ignore[arg-type]
        return f"ItemOutcome(index={self.index}, {state}, attempts={self.attempts})"


class StopFlag:
    """Set when a run is interrupted; that run's workers read it between attempts.

    One per run, never per node: a rerun after an interrupt gets a new flag, so the old
    run's leftover workers keep seeing theirs. A plain attribute, not a lock or an event:
    a stale read costs at most one attempt, and the flag travels to another process as a
    plain value.
    """

    __slots__ = ("is_set",)

    def __init__(self) -> None:
        self.is_set = False


#: ``fallback(item, error)``: a value that stands in for the failed item, or raise.
Fallback = Callable[[Any, BaseException], Any]


class Collected:
    """Outcomes gathered as they arrive: results by index, failures kept without frames.

    A success keeps only its result, in its slot, so bookkeeping does not grow with the
    number of items beyond the results. A failure first goes to ``fallback`` (the node's
    ``exec_fallback``, on the coordinating thread), whose value makes it a success.
    Records made in another process (``outcome.remote``) are added to ``call_log`` here.
    ``errors`` holds failed outcomes in collection order; :meth:`errors_by_index` sorts
    them. ``slot(outcome)`` says where a result goes (its index).
    """

    __slots__ = ("call_log", "errors", "fallback", "finished", "progress", "results", "total")

    def __init__(
        self,
        total: int,
        progress: Optional[ProgressCallback] = None,
        *,
        fallback: Optional[Fallback] = None,
        call_log: Optional[list[Any]] = None,
    ) -> None:
        self.results: list[Any] = [None] * total
        self.errors: list[ItemOutcome] = []
        self.finished = 0
        self.total = total
        self.progress = progress
        self.fallback = fallback
        self.call_log = call_log

    def slot(self, outcome: ItemOutcome) -> int:
        """Where ``outcome``'s result goes: its own index."""
        return outcome.index

    def add(self, outcome: ItemOutcome) -> None:
        self.finished += 1
        if outcome.remote and outcome.calls and self.call_log is not None:
            self.call_log.extend(outcome.calls)
        if outcome.error is not None and self.fallback is not None:
            try:
                outcome.result = self.fallback(outcome.item, outcome.error)
            except Exception as exc:
                if exc is not outcome.error:
                    outcome.traceback = release_frames(exc)
                    outcome.error = exc
                else:
                    exc.__traceback__ = None
            else:
                outcome.error = None
        if outcome.error is None:
            self.results[self.slot(outcome)] = outcome.result
        else:
            self.errors.append(outcome)
        notify(self.progress, outcome.index, self.finished, self.total, outcome.error is None)

    def errors_by_index(self) -> list[ItemOutcome]:
        return sorted(self.errors, key=lambda o: o.index)


class Coordinator(Node):  # type: ignore[misc]
    """What a batch and a group share: argument checks, the executor hook, progress.

    The node is configuration only: everything a run needs lives in the objects its
    ``prep`` builds, so two runs of one instance (a rerun after an interrupt, or two
    threads at once) never see each other.
    """

    kind = "node"
    node_id: str
    call_log: str
    executor: ExecutorFactory
    max_concurrent: int
    progress: Optional[ProgressCallback]

    @staticmethod
    def _argument_problems(
        node_id: object, executor: object, call_log: object, progress: object
    ) -> list[str]:
        """What is wrong with the arguments every coordinator takes, one line each."""
        problems = []
        if not isinstance(node_id, str) or not node_id:
            problems.append(f"node_id={node_id!r}: must be a non-empty string")
        elif node_id in RESERVED_KEYS:
            problems.append(f"node_id={node_id!r}: reserved for parabatch's own use")
        if executor is not None and not callable(executor):
            problems.append(f"executor={executor!r}: must be callable as executor(max_workers)")
        if call_log not in ("lock", "gil"):
            problems.append(f"call_log={call_log!r}: must be 'lock' or 'gil'")
        if progress is not None and not callable(progress):
            problems.append(f"progress={progress!r}: must be callable")
        return problems

    def _setup(
        self,
        node_id: str,
        executor: Optional[ExecutorFactory],
        call_log: str,
        progress: Optional[ProgressCallback],
    ) -> None:
        self.node_id = node_id
        self.executor = executor or default_executor
        self.call_log = call_log
        self.progress = progress


#: Store keys a batch writes for its items: no ``node_id`` or ``as`` may take them.
RESERVED_KEYS = frozenset({"__index__", "__llm_calls__"})


def default_executor(max_workers: int) -> Executor:
    """The default ``executor`` hook: a ``ThreadPoolExecutor`` with named threads."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="parabatch")


def notify(
    progress: Optional[ProgressCallback], index: int, done: int, total: int, ok: bool
) -> None:
    """Call a progress callback; an error inside it is logged, never raised."""
    if progress is None:
        return
    try:
        progress(index, done, total, ok)
    except Exception:
        # A progress display must never cost the batch its results.
        _log.warning("progress callback failed; the batch goes on", exc_info=True)


def run_sequential(
    work: Callable[[int, Any], ItemOutcome],
    items: Sequence[Any],
    *,
    stop_on_failure: bool,
    collect: Callable[[ItemOutcome], None],
    failed: Callable[[], bool],
) -> None:
    """Run ``work(index, item)`` for each item in order; stop at a failure if asked.

    ``failed()`` says whether a failure has been collected (after any fallback).
    """
    for idx, item in enumerate(items):
        collect(work(idx, item))
        if stop_on_failure and failed():
            break


def _declared_bound(pool: object) -> Optional[int]:
    """How many tasks ``pool`` says it runs at once, if it says so as an integer."""
    for name in ("_max_workers", "max_workers"):
        value = getattr(pool, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _shutdown(pool: Executor, *, cancel: bool) -> None:
    """Shut ``pool`` down without letting its own failure hide the run's error."""
    try:
        if cancel:
            try:
                pool.shutdown(wait=False, cancel_futures=True)
            except TypeError:  # an executor from before Python 3.9's keyword
                pool.shutdown(wait=False)
        else:
            pool.shutdown(wait=True)
    except Exception:
        _log.warning("the executor failed to shut down", exc_info=True)


def run_parallel(
    work: Callable[[int, Any], ItemOutcome],
    items: Sequence[Any],
    *,
    executor: ExecutorFactory,
    max_concurrent: int,
    stop_on_failure: bool,
    stop: StopFlag,
    collect: Callable[[ItemOutcome], None],
    failed: Callable[[], bool],
) -> None:
    """Run ``work(index, item)`` through ``executor(workers)``, at most ``max_concurrent`` at once.

    ``workers = min(max_concurrent, len(items))``. An executor that declares it runs at
    most that many at once (``_max_workers`` or ``max_workers``, as the standard pools
    do) gets up to ``2 * max_concurrent`` futures, so a worker never waits for the
    coordinator to hand it the next item; any other executor gets at most
    ``max_concurrent``, so the bound holds whatever it does. If the executor has a
    ``bind(work)`` method it is called once before anything is submitted (an executor
    that ships work elsewhere sends it there once, and may refuse it).

    Each finished outcome goes to ``collect`` on the calling thread, in completion order
    (outcomes finishing together in index order). When ``failed()`` turns true with
    ``stop_on_failure``, nothing more is submitted, unstarted work is cancelled and
    running items finish. Any other exception here, or a worker's ``BaseException`` that
    is not an ``Exception`` (``KeyboardInterrupt``), sets ``stop``, cancels what has not
    started and propagates without waiting for running items.
    """
    total = len(items)
    if total == 0:
        return
    workers = min(max_concurrent, total)
    pool = executor(workers)
    if not callable(getattr(pool, "submit", None)) or not callable(getattr(pool, "shutdown", None)):
        raise BatchConfigError(
            [
                f"executor({workers}) returned {pool!r}: must return a "
                "concurrent.futures.Executor (with submit and shutdown)"
            ]
        )
    bound = _declared_bound(pool)
    window = _PREFETCH * max_concurrent if bound is not None and bound <= workers else workers
    pending: dict[Future[ItemOutcome], int] = {}
    next_idx, stopping = 0, False
    try:
        bind = getattr(pool, "bind", None)
        if callable(bind):
            bind(work)
        while pending or (next_idx < total and not stopping):
            while not stopping and next_idx < total and len(pending) < window:
                pending[pool.submit(work, next_idx, items[next_idx])] = next_idx
                next_idx += 1
            # Looked up at call time, so a controlled scheduler can stand in for it.
            done, _ = concurrent.futures.wait(
                pending, timeout=_POLL_S, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for fut in sorted(done, key=pending.__getitem__):
                del pending[fut]
                if fut.cancelled():
                    continue
                collect(fut.result())  # re-raises a worker's BaseException, by design
                if stop_on_failure and not stopping and failed():
                    stopping = True
                    # A cancelled future will never run; some executors never mark it
                    # done either, so it must not be waited for.
                    for other in [f for f in pending if f.cancel()]:
                        del pending[other]
    except BaseException:
        stop.is_set = True
        for fut in pending:
            fut.cancel()
        _shutdown(pool, cancel=True)
        raise
    _shutdown(pool, cancel=False)
