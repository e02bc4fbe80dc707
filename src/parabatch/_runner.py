"""Run a function over indexed tasks, in order or through an executor, never losing one.

One loop serves the batch node and the parallel group: at most ``max_concurrent`` tasks
running and ``2 * max_concurrent`` submitted at a time (a sliding window, so neither
futures nor per-item copies pile up with the number of items), outcomes collected as they
finish, fail_fast that stops submitting.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import MutableMapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

from pocketflow import Node

from ._calllog import ensure_call_log
from ._errors import BatchInUseError

__all__ = [
    "Collected",
    "Coordinator",
    "ExecutorFactory",
    "ItemOutcome",
    "ProgressCallback",
    "StopFlag",
    "default_executor",
    "notify",
    "run_parallel",
    "run_sequential",
]

_log = logging.getLogger("parabatch")

# Futures kept submitted per worker. With one, a worker that finishes waits for the
# coordinator to wake from wait() and submit the next item (measured: 1.19x a bare pool at
# 1 ms per item); with two, the next item is already queued (1.01x). Items *running* stay
# bounded by the executor's max_workers; copies are made inside the worker, so at most
# max_concurrent exist at once.
_PREFETCH = 2

#: ``executor(max_workers)`` returns the executor a parallel run submits to.
ExecutorFactory = Callable[[int], Executor]
#: ``progress(index, done, total, ok)``, called after each finished item.
ProgressCallback = Callable[[int, int, int, bool], None]


class ItemOutcome:
    """What one item (or group child) came to: its result, or the exception that ended it.

    A plain, picklable record, so an item's work can run in another process and its
    outcome, including the call records it produced, be merged back by index.

    Example:
        >>> o = ItemOutcome(3, "doc", {"summary": "s"}, None, attempts=2)
        >>> o.ok, o.index, o.attempts
        (True, 3, 2)
    """

    __slots__ = ("attempts", "calls", "error", "index", "item", "result")

    def __init__(
        self,
        index: int,
        item: Any,
        result: Any,
        error: Optional[BaseException],
        attempts: int,
        calls: tuple[Any, ...] = (),
    ) -> None:
        self.index = index
        self.item = item
        self.result = result
        self.error = error
        self.attempts = attempts
        self.calls = calls

    @property
    def ok(self) -> bool:
        """True when the item produced a result (possibly from ``exec_fallback``)."""
        return self.error is None

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"error={self.error!r}"
        return f"ItemOutcome(index={self.index}, {state}, attempts={self.attempts})"


class StopFlag:
    """Set by the coordinator when a run is interrupted; workers read it between attempts.

    A plain attribute, not a lock or an event: a stale read costs at most one attempt, and
    the flag carries no live synchronisation object that could not travel to a worker.
    """

    __slots__ = ("is_set",)

    def __init__(self) -> None:
        self.is_set = False


class Coordinator(Node):  # type: ignore[misc]
    """What a batch and a group share: one run at a time, a call log, a stop flag, a window.

    The running store is kept on the instance (``self._shared``), as the seed design has
    it, so the workers' ``_exec_single`` can build their items' stores; a second run of
    the same instance while one is going is refused rather than left to race.
    """

    kind = "node"
    node_id: str
    call_log: str
    executor: ExecutorFactory
    max_concurrent: int

    @staticmethod
    def _argument_problems(
        node_id: object, executor: object, call_log: object, progress: object
    ) -> list[str]:
        """What is wrong with the arguments every coordinator takes, one line each."""
        problems = []
        if not isinstance(node_id, str) or not node_id:
            problems.append(f"node_id={node_id!r}: must be a non-empty string")
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
        self._shared: Optional[MutableMapping[str, Any]] = None
        self._stop = StopFlag()

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        if self._shared is not None:
            raise BatchInUseError(
                f"{self.kind} {self.node_id!r} is already running; run a copy of the node"
            )
        try:
            return super()._run(shared)
        finally:
            self._shared = None

    def _begin(self, shared: MutableMapping[str, Any]) -> None:
        """Start a run: keep the store, reset the stop flag, make sure the call log exists."""
        self._shared = shared
        self._stop = StopFlag()
        ensure_call_log(shared, self.call_log, f"{self.kind} {self.node_id!r}")

    def _window(
        self,
        fn: Callable[[int, Any], ItemOutcome],
        items: Sequence[Any],
        collected: Collected,
        *,
        max_concurrent: int,
        stop_on_failure: bool,
    ) -> Collected:
        """Run ``fn`` over ``items`` through the executor into ``collected``."""
        run_parallel(
            fn,
            items,
            executor=self.executor,
            max_concurrent=max_concurrent,
            stop_on_failure=stop_on_failure,
            stop=self._stop,
            collect=collected.add,
        )
        return collected


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


class Collected:
    """Outcomes gathered as they arrive: results by index, failures kept whole.

    A success keeps only its result, in its slot; the :class:`ItemOutcome` is dropped, so
    bookkeeping does not grow with the number of items beyond the results themselves.
    ``errors`` holds the failed outcomes in the order they were collected (completion
    order when parallel); :meth:`errors_by_index` sorts them.
    """

    __slots__ = ("errors", "finished", "progress", "results", "total")

    def __init__(self, total: int, progress: Optional[ProgressCallback] = None) -> None:
        self.results: list[Any] = [None] * total
        self.errors: list[ItemOutcome] = []
        self.finished = 0
        self.total = total
        self.progress = progress

    def add(self, outcome: ItemOutcome) -> None:
        self.finished += 1
        if outcome.error is None:
            self.results[outcome.index] = outcome.result
        else:
            self.errors.append(outcome)
        notify(self.progress, outcome.index, self.finished, self.total, outcome.error is None)

    def errors_by_index(self) -> list[ItemOutcome]:
        return sorted(self.errors, key=lambda o: o.index)


def run_sequential(
    fn: Callable[[int, Any], ItemOutcome],
    items: Sequence[Any],
    *,
    stop_on_failure: bool,
    collect: Callable[[ItemOutcome], None],
) -> None:
    """Run ``fn(index, item)`` for each item in order; stop at a failure if asked."""
    for idx, item in enumerate(items):
        outcome = fn(idx, item)
        collect(outcome)
        if stop_on_failure and outcome.error is not None:
            break


def run_parallel(
    fn: Callable[[int, Any], ItemOutcome],
    items: Sequence[Any],
    *,
    executor: ExecutorFactory,
    max_concurrent: int,
    stop_on_failure: bool,
    stop: StopFlag,
    collect: Callable[[ItemOutcome], None],
) -> None:
    """Run ``fn(index, item)`` through ``executor(workers)``, at most ``max_concurrent`` at once.

    ``workers = min(max_concurrent, len(items))``: the executor runs at most that many at
    once. At most ``2 * max_concurrent`` futures are submitted at any time (a sliding
    window), so futures do not pile up with the number of items, and a worker never
    waits for the coordinator to hand it the next item.

    Each finished outcome goes to ``collect`` on the calling thread, in completion order
    (outcomes finishing together in index order). On a failure with ``stop_on_failure``,
    nothing more is submitted, submitted-but-unstarted work is cancelled, and running
    items finish. A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``)
    raised here or by a worker cancels what has not started, tells running items to start
    no further attempt, and propagates without waiting for them.
    """
    total = len(items)
    if total == 0:
        return
    pool = executor(min(max_concurrent, total))
    pending: dict[Future[ItemOutcome], int] = {}
    next_idx, stopping = 0, False
    try:
        while pending or (next_idx < total and not stopping):
            while not stopping and next_idx < total and len(pending) < _PREFETCH * max_concurrent:
                pending[pool.submit(fn, next_idx, items[next_idx])] = next_idx
                next_idx += 1
            # Looked up at call time, so a controlled scheduler can stand in for it.
            done, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for fut in sorted(done, key=pending.__getitem__):
                del pending[fut]
                if fut.cancelled():
                    continue
                outcome = fut.result()  # re-raises a worker's BaseException, by design
                collect(outcome)
                if stop_on_failure and outcome.error is not None and not stopping:
                    stopping = True
                    for other in pending:
                        other.cancel()
    except BaseException:
        stop.is_set = True
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
