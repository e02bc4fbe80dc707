"""One run of a batch or a group: what ``prep`` builds, and the output it writes.

The node is configuration; a :class:`Run` holds everything one run needs (the store, the
items, the stop flag, the outcomes), so two runs of one node never share state.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any, Callable, Optional, Sequence

from ._runner import (
    Collected,
    ExecutorFactory,
    ItemOutcome,
    StopFlag,
    describe_error,
    run_parallel,
    run_sequential,
)

__all__ = ["Run"]


class Run:
    """One run: the store, the tasks, the stop flag and the outcomes collected so far.

    ``execute`` runs ``work`` over the tasks (in order, or through an executor) and
    never loses a finished outcome: whatever stops it (fail_fast, an interrupt, an
    executor that breaks), :meth:`output` still describes every item that finished.

    Example:
        >>> from parabatch._runner import ItemOutcome
        >>> run = Run({}, ["a", "b"], stop_on_failure=False)
        >>> run.execute(lambda i, x: ItemOutcome(i, x, x.upper(), None, 1))
        >>> run.output("item", "batch_metadata", {})["results"]
        ['A', 'B']
    """

    def __init__(
        self,
        shared: MutableMapping[str, Any],
        tasks: Sequence[Any],
        *,
        stop_on_failure: bool,
        collected: Optional[Collected] = None,
    ) -> None:
        self.shared = shared
        self.tasks = tasks
        #: fail_fast: the lowest-index failure is raised, and the output says aborted.
        self.stop_on_failure = stop_on_failure
        #: Whether a failure stops further submissions (fail_fast's, unless a variant
        #: says otherwise).
        self.stop_submitting = stop_on_failure
        self.stop = StopFlag()
        self.collected = collected if collected is not None else Collected(len(tasks))
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.duration: Optional[float] = None
        self.interrupted = False

    def execute(
        self,
        work: Callable[[int, Any], ItemOutcome],
        *,
        executor: Optional[ExecutorFactory] = None,
        max_concurrent: int = 1,
    ) -> None:
        """Run ``work`` over the tasks; sequential when ``executor`` is ``None``."""
        failed = self.collected.errors.__len__
        try:
            if executor is None:
                run_sequential(
                    work,
                    self.tasks,
                    stop_on_failure=self.stop_submitting,
                    collect=self.collected.add,
                    failed=lambda: failed() > 0,
                )
            else:
                run_parallel(
                    work,
                    self.tasks,
                    executor=executor,
                    max_concurrent=max_concurrent,
                    stop_on_failure=self.stop_submitting,
                    stop=self.stop,
                    collect=self.collected.add,
                    failed=lambda: failed() > 0,
                )
        except BaseException:
            self.stop.is_set = True
            self.interrupted = True
            raise
        finally:
            self.duration = time.perf_counter() - self._t0

    def first_failure(self) -> Optional[ItemOutcome]:
        """The failure fail_fast raises: the lowest index, whatever finished first."""
        errors = self.collected.errors
        return min(errors, key=lambda o: o.index) if errors else None

    def output(self, label: str, metadata_key: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """The output dict: results and error records (``label`` names the task) in input
        order, counts, and ``metadata`` under ``metadata_key`` with ``aborted``,
        ``interrupted`` and ``timing`` added."""
        collected = self.collected
        errors = [
            {
                "index": o.index,
                label: o.item,
                "error": describe_error(o.error),  # type: ignore[arg-type]
                "exception": o.error,
                "traceback": o.traceback,
                "attempts": o.attempts,
            }
            for o in collected.errors_by_index()
        ]
        finished = collected.finished
        duration = self.duration if self.duration is not None else 0.0
        return {
            "results": collected.results,
            "count": len(self.tasks),
            "success_count": finished - len(errors),
            "error_count": len(errors),
            "errors": errors or None,
            metadata_key: {
                **metadata,
                "aborted": self.interrupted or (bool(errors) and self.stop_on_failure),
                "interrupted": self.interrupted,
                "timing": {
                    "started_at": self.started,
                    "duration_s": duration,
                    "items_per_second": finished / duration if duration > 0 else None,
                },
            },
        }
