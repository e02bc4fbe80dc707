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
from parabatch._isolation import check_copyable
from parabatch._runner import Collected

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

    def _run_window(
        self, items: list[Any], *, max_concurrent: int, stop_on_failure: bool
    ) -> Collected:
        """The core's parallel path with its window or its fail_fast bent."""
        check_copyable(self.inner_node)
        return self._window(
            self._exec_single,
            items,
            self._collector(len(items)),
            max_concurrent=max_concurrent,
            stop_on_failure=stop_on_failure,
        )


class SharedRetryCounter(_Broken):
    """PocketFlow's retry loop on the shared instance: ``for self.cur_retry in range(...)``.

    The loop's iterator is local but the last-attempt check reads ``self.cur_retry``, which
    another thread may have reset: a failure is then swallowed (the loop ends and the item
    "succeeds" with ``None``) or handed to the fallback too early.
    """

    catches = "retry"

    def _exec_single(self, idx: int, item: Any) -> ItemOutcome:
        chain = self._copy_chain() if self.parallel else self.inner_node
        attempts = 0
        # The bug, verbatim from pocketflow.Node._exec: the counter lives on the instance.
        for self.cur_retry in range(self.max_retries):  # noqa: B020
            attempts += 1
            item_shared = self._item_shared(idx, item)
            try:
                chain._run(item_shared)
            except Exception as exc:
                if self.cur_retry == self.max_retries - 1:
                    try:
                        value = self.exec_fallback(item, exc)
                    except Exception as final:
                        return ItemOutcome(idx, item, None, final, attempts)
                    return ItemOutcome(idx, item, value, None, attempts)
                continue
            result = item_shared[self.node_id]
            result["item"] = item
            return ItemOutcome(
                idx, item, result, None, attempts, self._record_usage(idx, item_shared)
            )
        return ItemOutcome(idx, item, None, None, attempts)  # PocketFlow's implicit None


class NoCopy(_Broken):
    """Parallel items share one wrapper chain: the params swap leaks between items."""

    catches = "params"

    def _copy_chain(self) -> Any:
        return self.inner_node


class ShallowCopy(_Broken):
    """``copy.copy`` of the chain, as PocketFlow's ``Flow`` does: the inner nodes stay shared."""

    catches = "params"

    def _copy_chain(self) -> Any:
        return copy.copy(self.inner_node)


class _CompletionOrderCollected(Collected):
    def add(self, outcome: ItemOutcome) -> None:
        # The bug: the n-th result to finish goes to slot n, as an as_completed loop does.
        if outcome.error is None:
            outcome.result, index = outcome.result, outcome.index
            outcome.index = self.finished
            super().add(outcome)
            outcome.index = index
        else:
            super().add(outcome)


class CompletionOrder(_Broken):
    """Results gathered in completion order, as ``as_completed`` loops do."""

    catches = "ordering"

    def _collector(self, total: int) -> Collected:
        return _CompletionOrderCollected(total, self.progress)


class FirstCompletedError(_Broken):
    """fail_fast raising the first failure to complete, not the lowest-index one."""

    catches = "fail_fast"

    def _first_failure(self, collected: Collected) -> ItemOutcome:
        return collected.errors[0]  # completion order


class ReadModifyWriteCalls(_Broken):
    """Calls accumulated by read-modify-write of the shared log: concurrent records are lost."""

    catches = "calls"

    def _record_usage(self, idx: int, item_shared: dict[str, Any]) -> tuple[Any, ...]:
        usage = item_shared[self.node_id].get("llm_usage")
        if not isinstance(usage, dict):
            return ()
        record = {**usage, "node_id": self.node_id, "batch_item_index": idx}
        log = item_shared[CALLS_KEY]
        updated = [*list(log), record]  # read ...
        log[:] = updated  # ... write: whatever another thread appended in between is lost
        return (record,)


class Unbounded(_Broken):
    """A pool sized by the number of items, every item submitted at once."""

    catches = "bound"

    def _exec_parallel(self, items: list[Any]) -> Collected:
        return self._run_window(
            items,
            max_concurrent=max(len(items), 1),
            stop_on_failure=self.error_handling == "fail_fast",
        )


class KeepsSubmitting(_Broken):
    """fail_fast that records the failure but goes on submitting every item."""

    catches = "fail_fast"

    def _exec_parallel(self, items: list[Any]) -> Collected:
        return self._run_window(items, max_concurrent=self.max_concurrent, stop_on_failure=False)


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
