"""Known-broken batch nodes: negative controls that the stress suites must catch.

Each class takes :class:`parabatch.PflowBatchNode`'s constructor and breaks exactly one
thing the core gets right, the way real implementations have. A verifier that passes any of
them is not looking. :data:`BROKEN_SUBJECTS` maps a short name to the class; each class's
``catches`` names the property that must flag it.

Example:
    >>> from parabatch.testing.broken import BROKEN_SUBJECTS
    >>> sorted(BROKEN_SUBJECTS)[:3]
    ['completion_order', 'first_completed_error', 'keeps_submitting']
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from parabatch import CALLS_KEY, ItemOutcome, PflowBatchNode
from parabatch._calllog import usage_record
from parabatch._output import Run
from parabatch._runner import Collected
from parabatch._work import ItemWork, RetryCounter

from ._group_subject import CopylessGroup, GroupAsBatch

__all__ = [
    "BROKEN_GROUP_SUBJECTS",
    "BROKEN_SUBJECTS",
    "CompletionOrder",
    "CopylessGroup",
    "FirstCompletedError",
    "KeepsSubmitting",
    "NoCopy",
    "ReadModifyWriteCalls",
    "ShallowCopy",
    "SharedRetryCounter",
    "Unbounded",
]


class _Broken(PflowBatchNode):
    #: the property whose check must flag this subject
    catches: ClassVar[str] = ""


class _SharedCounterWork(ItemWork):
    def retry_counter(self) -> RetryCounter:
        # The bug, as PocketFlow's Node._exec has it: one counter for every item of the
        # run, reset when an item starts (``for self.cur_retry in range(...)``).
        shared: RetryCounter = self.__dict__.setdefault("_counter", RetryCounter())
        shared.value = 0
        return shared


class SharedRetryCounter(_Broken):
    """PocketFlow's retry counter on the shared instance (``self.cur_retry``).

    Items running at once reset and advance one counter, so an item makes more or fewer
    attempts than ``max_retries``: a failure that one more attempt would have fixed is
    reported, or a failing item retries past its budget.
    """

    catches = "retry"
    work_class = _SharedCounterWork


class _NoCopyWork(ItemWork):
    def isolate(self, chain: Any) -> Any:
        return chain  # the bug: every item runs on the one chain object


class NoCopy(_Broken):
    """Parallel items share one wrapper chain: the params swap leaks between items."""

    catches = "params"
    work_class = _NoCopyWork


class _ShallowCopyWork(ItemWork):
    def isolate(self, chain: Any) -> Any:
        return copy.copy(chain)  # the bug: the wrapped inner nodes stay shared


class ShallowCopy(_Broken):
    """``copy.copy`` of the chain, as PocketFlow's ``Flow`` does: the inner nodes stay shared."""

    catches = "params"
    work_class = _ShallowCopyWork


class _CompletionOrderCollected(Collected):
    def slot(self, outcome: ItemOutcome) -> int:
        # The bug: the n-th result to finish goes to slot n, as an as_completed loop does.
        return self.finished - 1


class CompletionOrder(_Broken):
    """Results gathered in completion order, as ``as_completed`` loops do."""

    catches = "ordering"
    collected_class = _CompletionOrderCollected


class FirstCompletedError(_Broken):
    """fail_fast raising the first failure to complete, not the lowest-index one."""

    catches = "fail_fast"

    def first_failure(self, run: Run) -> Any:
        errors = run.collected.errors
        return errors[0] if errors else None  # the bug: completion order


class _ReadModifyWriteWork(ItemWork):
    def record_usage(self, index: int, store: dict[str, Any]) -> tuple[Any, ...]:
        record = usage_record(store.get(self.node_id), self.node_id, index)
        if record is None:
            return ()
        log = store[CALLS_KEY]
        updated = [*list(log), record]  # read ...
        log[:] = updated  # ... write: whatever another thread appended in between is lost
        return (record,)


class ReadModifyWriteCalls(_Broken):
    """Calls accumulated by read-modify-write of the shared log: concurrent records are lost."""

    catches = "calls"
    work_class = _ReadModifyWriteWork


class Unbounded(_Broken):
    """A pool sized by the number of items, every item submitted at once."""

    catches = "bound"

    def concurrency_limit(self, run: Run) -> int:
        return max(len(run.tasks), 1)


class KeepsSubmitting(_Broken):
    """fail_fast that records the failure but goes on submitting every item."""

    catches = "fail_fast"

    def prep(self, shared: Any) -> Run:
        run = super().prep(shared)
        run.stop_submitting = False  # the bug: raises at the end, but never stops early
        return run


#: name -> known-broken group (verified through :class:`parabatch.testing.GroupAsBatch`,
#: with ``max_retries=1``)
BROKEN_GROUP_SUBJECTS: dict[str, type[GroupAsBatch]] = {"copyless_group": CopylessGroup}

#: name -> known-broken subject class
BROKEN_SUBJECTS: dict[str, type[PflowBatchNode]] = {
    "shared_retry_counter": SharedRetryCounter,
    "no_copy": NoCopy,
    "shallow_copy": ShallowCopy,
    "completion_order": CompletionOrder,
    "first_completed_error": FirstCompletedError,
    "rmw_calls": ReadModifyWriteCalls,
    "unbounded": Unbounded,
    "keeps_submitting": KeepsSubmitting,
}
