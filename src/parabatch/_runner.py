"""Run a function over indexed tasks, in order or through an executor, never losing one.

One loop serves the batch node and the parallel group: at most ``max_concurrent`` tasks
submitted at a time (a sliding window, so neither futures nor per-item copies pile up
with the number of items), outcomes stored by index, fail_fast that stops submitting.
"""

from __future__ import annotations

import concurrent.futures
import logging
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

__all__ = [
    "ExecutorFactory",
    "ItemOutcome",
    "ProgressCallback",
    "StopFlag",
    "default_executor",
    "run_parallel",
    "run_sequential",
]

_log = logging.getLogger("parabatch")

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


def default_executor(max_workers: int) -> Executor:
    """The default ``executor`` hook: a ``ThreadPoolExecutor`` with named threads."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="parabatch")


def _notify(
    progress: Optional[ProgressCallback], outcome: ItemOutcome, done: int, total: int
) -> None:
    if progress is None:
        return
    try:
        progress(outcome.index, done, total, outcome.ok)
    except Exception:
        # A progress display must never cost the batch its results.
        _log.warning("progress callback failed; the batch goes on", exc_info=True)


def run_sequential(
    fn: Callable[[int, Any], ItemOutcome],
    items: Sequence[Any],
    *,
    stop_on_failure: bool,
    progress: Optional[ProgressCallback] = None,
) -> list[Optional[ItemOutcome]]:
    """Run ``fn(index, item)`` for each item in order; stop at a failure if asked."""
    outcomes: list[Optional[ItemOutcome]] = [None] * len(items)
    for idx, item in enumerate(items):
        outcome = fn(idx, item)
        outcomes[idx] = outcome
        _notify(progress, outcome, idx + 1, len(items))
        if stop_on_failure and not outcome.ok:
            break
    return outcomes


def run_parallel(
    fn: Callable[[int, Any], ItemOutcome],
    items: Sequence[Any],
    *,
    executor: ExecutorFactory,
    max_concurrent: int,
    stop_on_failure: bool,
    stop: StopFlag,
    progress: Optional[ProgressCallback] = None,
) -> list[Optional[ItemOutcome]]:
    """Run ``fn(index, item)`` through ``executor(workers)``, at most ``max_concurrent`` at once.

    Returns one slot per item, in input order: its outcome, or ``None`` for an item never
    started because a failure stopped the run. On a failure with ``stop_on_failure``,
    nothing more is submitted, submitted-but-unstarted work is cancelled, and running items
    finish. A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``) raised
    here or by a worker cancels what has not started, tells running items to start no
    further attempt, and propagates without waiting for them.
    """
    total = len(items)
    outcomes: list[Optional[ItemOutcome]] = [None] * total
    if total == 0:
        return outcomes
    pool = executor(min(max_concurrent, total))
    pending: dict[Future[ItemOutcome], int] = {}
    next_idx, done_count, stopping = 0, 0, False
    try:
        while pending or (next_idx < total and not stopping):
            while not stopping and next_idx < total and len(pending) < max_concurrent:
                pending[pool.submit(fn, next_idx, items[next_idx])] = next_idx
                next_idx += 1
            # Looked up at call time, so a controlled scheduler can stand in for it.
            done, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for fut in sorted(done, key=pending.__getitem__):
                idx = pending.pop(fut)
                if fut.cancelled():
                    continue
                outcome = fut.result()  # re-raises a worker's BaseException, by design
                outcomes[idx] = outcome
                done_count += 1
                _notify(progress, outcome, done_count, total)
                if stop_on_failure and not outcome.ok and not stopping:
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
    return outcomes
