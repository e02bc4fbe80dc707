"""The per-item unit of a run: what a worker needs for one item, and nothing of the node.

A batch's ``prep`` builds one :class:`ItemWork` per run; the runner calls
``work(index, item)`` for every item, on a worker thread or, through
:mod:`parabatch.executors`, in another process. It holds the chain, the settings an item
needs and the run's store, never the node itself, its executor factory or its progress
callback, so it pickles small and two runs of one node never share one.

The variations a negative control needs are explicit hooks here (:meth:`ItemWork.isolate`,
:meth:`ItemWork.retry_counter`, :meth:`ItemWork.record_usage`), not copies of the loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import MutableMapping
from typing import Any, Optional

from ._calllog import CALLS_KEY, usage_record
from ._errors import ItemReportedError
from ._isolation import isolate
from ._runner import ItemOutcome, StopFlag, release_frames

__all__ = ["GroupWork", "ItemWork", "RetryCounter", "interruptible_sleep"]

_log = logging.getLogger("parabatch")

_MISSING = object()

# The longest single sleep between attempts: a run that is stopped wakes within this.
_SLEEP_SLICE_S = 0.5


def interruptible_sleep(seconds: float, stop: StopFlag) -> None:
    """Sleep ``seconds`` (finite, >= 0) in slices, returning early once ``stop`` is set.

    The slices are counted, not timed against a clock, so a controlled scheduler that
    stands in for ``time.sleep`` sees the same sleeps on every run.
    """
    if not math.isfinite(seconds) or seconds <= 0:
        return
    left = seconds
    while left > 0 and not stop.is_set:
        step = min(left, _SLEEP_SLICE_S)
        time.sleep(step)
        left -= step


class RetryCounter:
    """The attempt counter of one item: ``value`` is the 0-based attempt being made."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _Unit:
    """What both units share: the run's store, stop flag, and the remote call capture."""

    #: Set on the copy that arrives in another process (see ``__setstate__``).
    remote = False

    def __init__(self, base: MutableMapping[str, Any], stop: StopFlag) -> None:
        self.base = base
        self.stop = stop

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # Unpickled means another process: records go back in the outcome, and every
        # attempt starts from an empty log rather than the copy of the coordinator's.
        self.remote = True

    def _store(self) -> dict[str, Any]:
        store = dict(self.base)  # shallow: in-process, __llm_calls__ stays the run's log
        if self.remote:
            store[CALLS_KEY] = []
        return store

    def _failed(
        self, index: int, item: Any, error: Exception, attempts: int, calls: list[Any]
    ) -> ItemOutcome:
        text = release_frames(error)
        return ItemOutcome(
            index, item, None, error, attempts, tuple(calls), remote=self.remote, traceback=text
        )


class ItemWork(_Unit):
    """One batch run's per-item unit: ``work(index, item) -> ItemOutcome``, never raising
    for the item's own failure.

    Each attempt runs the chain (its own copy when ``copy_chain``) on ``dict(base)`` plus
    ``[alias] = item``, ``["__index__"] = index`` and a fresh ``[node_id] = {}``. The
    item's result is that namespace dict with ``"item"`` set; a namespace the node
    replaced with something else becomes ``{"value": x, "item": item}``. With
    ``failure_key``, a result holding a truthy value there counts as the item's failure
    (:class:`parabatch.ItemReportedError`). Anything going wrong after the chain ran is
    the item's failure too, never the batch's.

    Example:
        >>> from pocketflow import Node
        >>> from parabatch import NamespacedNodeWrapper
        >>> class Echo(Node):
        ...     def prep(self, shared): return shared["x"]
        ...     def post(self, shared, p, e): shared["echo"] = p
        >>> work = ItemWork(NamespacedNodeWrapper(Echo(), "e"), {}, StopFlag(),
        ...                 node_id="e", alias="x")
        >>> work(0, "hi").result
        {'echo': 'hi', 'item': 'hi'}
    """

    def __init__(
        self,
        chain: Any,
        base: MutableMapping[str, Any],
        stop: StopFlag,
        *,
        node_id: str,
        alias: str = "item",
        max_retries: int = 1,
        retry_wait: float = 0.0,
        copy_chain: bool = False,
        failure_key: Optional[str] = None,
    ) -> None:
        super().__init__(base, stop)
        self.chain = chain
        self.node_id = node_id
        self.alias = alias
        self.max_retries = max_retries
        self.retry_wait = retry_wait
        self.copy_chain = copy_chain
        self.failure_key = failure_key

    # -- hooks ----------------------------------------------------------------------------

    def isolate(self, chain: Any) -> Any:
        """The chain one parallel item runs on: a deep copy of the whole chain."""
        return isolate(chain)

    def retry_counter(self) -> RetryCounter:
        """The counter one item's retry loop runs on: a new one per item.

        Failed attempts so far; the item stops retrying when it reaches ``max_retries``.
        PocketFlow keeps this counter on the node (``self.cur_retry``), which threads
        sharing the node overwrite; here it is local to the item.
        """
        return RetryCounter()

    def record_usage(self, index: int, store: dict[str, Any]) -> tuple[Any, ...]:
        """Add the item's ``llm_usage`` record to the store's call log; return what was added."""
        namespace = store.get(self.node_id)
        root = store.get("llm_usage")
        if root is None and type(namespace) is dict and namespace.get("llm_usage") is None:
            return ()  # the common case of no usage, without the general lookup
        record = usage_record(
            namespace, self.node_id, index, root=root, root_stale=self.base.get("llm_usage")
        )
        if record is None:
            return ()
        store[CALLS_KEY].append(record)
        return (record,)

    # -- the item ---------------------------------------------------------------------------

    def __call__(self, index: int, item: Any) -> ItemOutcome:
        try:
            return self._run_item(index, item)
        except BaseException:
            # KeyboardInterrupt and the like: no other item of this run starts an attempt.
            self.stop.is_set = True
            raise

    def _run_item(self, index: int, item: Any) -> ItemOutcome:
        if self.stop.is_set:
            return self._failed(index, item, _not_started(), 0, [])
        chain = self.isolate(self.chain) if self.copy_chain else self.chain
        counter = self.retry_counter()
        remote_calls: list[Any] = []
        attempts = 0
        while True:
            attempts += 1
            store = self._item_store(index, item)
            try:
                chain._run(store)
                result = self._result(store, item)
                calls = self.record_usage(index, store)
            except Exception as exc:
                error = exc
                if self.remote:
                    remote_calls.extend(store[CALLS_KEY])
            else:
                if self.remote:
                    remote_calls.extend(store[CALLS_KEY])
                    return ItemOutcome(
                        index, item, result, None, attempts, tuple(remote_calls), remote=True
                    )
                return ItemOutcome(index, item, result, None, attempts, calls)
            # The counter decides when to stop; it is the item's own (see retry_counter).
            counter.value += 1
            if counter.value >= self.max_retries or self.stop.is_set:
                return self._failed(index, item, error, attempts, remote_calls)
            interruptible_sleep(self.retry_wait, self.stop)

    def _item_store(self, index: int, item: Any) -> dict[str, Any]:
        store = self._store()
        store[self.alias] = item
        store["__index__"] = index
        store[self.node_id] = {}  # fresh on every attempt: no leftovers from a failure
        return store

    def _result(self, store: dict[str, Any], item: Any) -> Any:
        result = store.get(self.node_id, _MISSING)
        if not isinstance(result, dict):
            return {"value": None if result is _MISSING else result, "item": item}
        if self.failure_key is not None and result.get(self.failure_key):
            raise ItemReportedError(self.failure_key, result[self.failure_key])
        if "item" in result and result["item"] is not item:
            _log.warning(
                "batch %r: the node wrote its own 'item' key; the batch's item replaces it",
                self.node_id,
            )
        result["item"] = item
        return result


def _not_started() -> Exception:
    return RuntimeError("not started: the run was interrupted")


class GroupWork(_Unit):
    """One group run's per-child unit: ``work(index, child_id)`` runs child ``index``.

    The child runs on its own deep copy and on ``dict(base)`` (its namespace dict copied
    too, so its writes stay private); the result is ``(action, writes)``, where
    ``writes`` are the top-level keys whose value changed, for the coordinator to merge.
    """

    def __init__(self, children: list[Any], base: MutableMapping[str, Any], stop: StopFlag) -> None:
        super().__init__(base, stop)
        self.children = children

    def isolate(self, child: Any) -> Any:
        """The copy one child runs on: a deep copy, as a batch item's chain."""
        return isolate(child)

    def __call__(self, index: int, child_id: str) -> ItemOutcome:
        try:
            return self._run_child(index, child_id)
        except BaseException:
            self.stop.is_set = True
            raise

    def _run_child(self, index: int, child_id: str) -> ItemOutcome:
        if self.stop.is_set:
            return self._failed(index, child_id, _not_started(), 0, [])
        store = self._store()
        namespace = store.get(child_id)
        if isinstance(namespace, dict):
            store[child_id] = dict(namespace)
        try:
            action = self.isolate(self.children[index])._run(store)
            writes = {
                k: v
                for k, v in store.items()
                if k != CALLS_KEY and self.base.get(k, _MISSING) is not v
            }
        except Exception as exc:
            made = list(store[CALLS_KEY]) if self.remote else []
            return self._failed(index, child_id, exc, 1, made)
        calls = tuple(store[CALLS_KEY]) if self.remote else ()
        return ItemOutcome(index, child_id, (action, writes), None, 1, calls, remote=self.remote)
