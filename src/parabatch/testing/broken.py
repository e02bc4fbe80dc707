"""Known-broken batch nodes: negative controls that the stress suites must catch.

Each class takes :class:`parabatch.PflowBatchNode`'s constructor and breaks exactly one
thing the core gets right, the way real implementations have. A verifier that passes any of
them is not looking. :data:`BROKEN_SUBJECTS` maps a short name to the class; each class's
``catches`` names the property that must flag it.

Example:
    >>> from parabatch.testing.broken import BROKEN_SUBJECTS
    >>> sorted(BROKEN_SUBJECTS)[:3]
    ['chain_per_worker', 'completion_order', 'first_completed_error']
"""

from __future__ import annotations

import copy
import threading
from collections.abc import MutableMapping
from typing import Any, ClassVar

from parabatch import CALLS_KEY, ItemOutcome, PflowBatchNode, Shared
from parabatch._calllog import usage_record
from parabatch._output import Run
from parabatch._runner import Collected
from parabatch._work import ItemWork, RetryCounter

from ._group_subject import CopylessGroup, GroupAsBatch

__all__ = [
    "BROKEN_GROUP_SUBJECTS",
    "BROKEN_SUBJECTS",
    "ChainPerWorker",
    "CompletionOrder",
    "CopylessGroup",
    "FirstCompletedError",
    "KeepsCopies",
    "KeepsSubmitting",
    "KeepsTracebacks",
    "NamespacePerItem",
    "NoCopy",
    "ReadModifyWriteCalls",
    "ShallowCopy",
    "SharedRetryCounter",
    "StorePerWorker",
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


# The controls of isolation and of the copies bound: the core handed a chain whose bug sits
# in the chain itself, through the public constructor and the deep-copy protocol only.


class _Chain:
    """Stands for the chain the core runs: delegates to it, copies as the bug says."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.node_id: str = chain.node_id

    def __getattr__(self, name: str) -> Any:
        # Dunder names are not delegated: copy and pickle probe them on half-built objects.
        if name.startswith("__") or name == "chain":
            raise AttributeError(name)
        return getattr(self.__dict__["chain"], name)

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        return self.chain._run(shared)


class _PerWorkerCopy(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.local = Shared(threading.local())

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # The bug: "a copy per worker" — each thread reuses the copy it made first.
        local = self.local.value
        mine = getattr(local, "chain", None)
        if mine is None:
            mine = local.chain = copy.deepcopy(self.chain, memo)
        return mine


class _PerWorkerStore(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.local = Shared(threading.local())

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        # The bug: one store per worker thread, refreshed from the item's, never replaced,
        # so whatever an earlier item wrote at its root is still there.
        local = self.local.value
        store = getattr(local, "store", None)
        if store is None:
            store = local.store = {}
        store.update(shared)
        try:
            return self.chain._run(store)
        finally:
            shared[self.node_id] = store[self.node_id]


class _NamespacePerItem(_Chain):
    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        # The bug: the item's namespace is made once, not on every attempt, so a retry
        # starts with what the failed attempt wrote.
        kept = self.__dict__.get("namespace")
        if kept is None:
            self.namespace = shared[self.node_id]
        else:
            shared[self.node_id] = kept
        return self.chain._run(shared)


class _KeepsCopies(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.made: Shared[list[Any]] = Shared([])

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # The bug: every copy is kept (a cache that is never evicted).
        mine = copy.deepcopy(self.chain, memo)
        self.made.value.append(mine)
        return mine


class _KeepsTracebacks(_Chain):
    def __init__(self, chain: Any) -> None:
        super().__init__(chain)
        self.failures: Shared[list[BaseException]] = Shared([])

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        try:
            return self.chain._run(shared)
        except Exception as exc:
            # The bug: failures kept for a report, tracebacks and all: each traceback
            # holds the frames that ran on a copy of the chain, and so the copy.
            self.failures.value.append(exc)
            raise


class _BrokenChain(_Broken):
    chain_class: ClassVar[type[_Chain]] = _Chain

    def __init__(self, inner_node: Any, node_id: str, batch_config: dict[str, Any], **kw: Any):
        super().__init__(self.chain_class(inner_node), node_id, batch_config, **kw)


class ChainPerWorker(_BrokenChain):
    """One copy of the chain per worker thread, reused by every item that thread runs."""

    catches = "isolation"
    chain_class = _PerWorkerCopy


class StorePerWorker(_BrokenChain):
    """One store per worker thread, refreshed from each item's but never replaced."""

    catches = "isolation"
    chain_class = _PerWorkerStore


class NamespacePerItem(_BrokenChain):
    """The item's namespace made once per item: a retry begins with the failed attempt's."""

    catches = "isolation"
    chain_class = _NamespacePerItem


class KeepsCopies(_BrokenChain):
    """Every copy of the chain kept for the whole run."""

    catches = "copies"
    chain_class = _KeepsCopies


class KeepsTracebacks(_BrokenChain):
    """Every failure kept with its traceback, which keeps the failed item's copy alive."""

    catches = "copies"
    chain_class = _KeepsTracebacks


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
    "chain_per_worker": ChainPerWorker,
    "store_per_worker": StorePerWorker,
    "namespace_per_item": NamespacePerItem,
    "keeps_copies": KeepsCopies,
    "keeps_tracebacks": KeepsTracebacks,
}
