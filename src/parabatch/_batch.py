"""``PflowBatchNode``: one node over a list of items, sequential or parallel, one code path."""

from __future__ import annotations

import json
import time
from collections.abc import MutableMapping
from typing import Any, Literal, Optional

from ._calllog import CALLS_KEY
from ._config import validate_batch_config
from ._errors import BatchConfigError, BatchItemsError, TemplateError
from ._isolation import check_copyable, isolate
from ._runner import (
    Collected,
    Coordinator,
    ExecutorFactory,
    ItemOutcome,
    ProgressCallback,
    run_sequential,
)
from ._templates import resolve_template

__all__ = ["PflowBatchNode"]


class PflowBatchNode(Coordinator):
    """Run ``inner_node`` once per item, sequentially or in parallel, without races.

    The node inherits ``pocketflow.Node``, not ``BatchNode``: PocketFlow's retry loop keeps
    its counter on the instance (``self.cur_retry``), which threads sharing one node
    overwrite, so a failure can be swallowed as ``None``. Here each item retries with a
    local counter in :meth:`_exec_single`, the one code path of both modes. In parallel
    mode each item also runs on its own deep copy of the whole wrapper chain (``clone``:
    ``copy.deepcopy``'s result, built about three times faster), made
    inside the worker, because ``TemplateAwareNodeWrapper`` swaps ``inner_node.params``
    around each call.

    Each item sees ``dict(shared)`` (a shallow copy) plus ``shared[as] = item``,
    ``shared["__index__"] = index`` and a fresh ``shared[node_id] = {}`` on every attempt;
    its result is that namespace dict with ``"item"`` set. The batch writes
    ``shared[node_id] = {"results", "count", "success_count", "error_count", "errors",
    "batch_metadata"}``, results and errors in input order, and returns ``"default"``.

    Not guaranteed: objects reachable from ``shared`` are shared by all items (the copy is
    shallow), so nodes must not mutate them; objects wrapped in :class:`parabatch.Shared`
    are shared too. One instance runs one batch at a time (:class:`BatchInUseError`).

    Args:
        inner_node: the node (usually a wrapper chain) to run per item.
        node_id: where the output goes in ``shared``; also the items' namespace.
        batch_config: see :data:`parabatch.BATCH_CONFIG_SCHEMA`.
        executor: ``executor(max_workers)`` returning a ``concurrent.futures.Executor``;
            default a ``ThreadPoolExecutor``. Called once per parallel run.
        call_log: ``"lock"`` makes ``shared["__llm_calls__"]`` a :class:`CallLog`;
            ``"gil"`` a plain list (relies on ``list.append`` being atomic).
        progress: ``progress(index, done, total, ok)`` after each finished item; an error
            inside it is logged and ignored.

    Example:
        >>> from pocketflow import Node
        >>> class Upper(Node):
        ...     def prep(self, shared): return shared["word"]
        ...     def exec(self, word): return word.upper()
        ...     def post(self, shared, p, e): shared["upper"] = e
        >>> from parabatch import NamespacedNodeWrapper
        >>> batch = PflowBatchNode(NamespacedNodeWrapper(Upper(), "up"), "up",
        ...                        {"items": "${words}", "as": "word", "parallel": True})
        >>> shared = {"words": ["a", "b", "c"]}
        >>> batch.run(shared)
        'default'
        >>> [r["upper"] for r in shared["up"]["results"]]
        ['A', 'B', 'C']
    """

    kind = "batch"

    def __init__(
        self,
        inner_node: Any,
        node_id: str,
        batch_config: dict[str, Any],
        *,
        executor: Optional[ExecutorFactory] = None,
        call_log: Literal["lock", "gil"] = "lock",
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        config = validate_batch_config(batch_config)
        problems = self._argument_problems(node_id, executor, call_log, progress)
        if problems:
            raise BatchConfigError(problems)
        super().__init__(max_retries=config["max_retries"], wait=config["retry_wait"])
        self.inner_node = inner_node
        self.config = config
        self.items_spec = config["items"]
        self.item_alias: str = config["as"]
        self.error_handling: str = config["error_handling"]
        self.parallel: bool = config["parallel"]
        self.max_concurrent: int = config["max_concurrent"]
        self.retry_wait: float = config["retry_wait"]
        self._setup(node_id, executor, call_log, progress)

    # -- PocketFlow hooks ---------------------------------------------------------------

    def prep(self, shared: MutableMapping[str, Any]) -> list[Any]:
        """Resolve the items and make sure the call log exists before any item runs."""
        self._begin(shared)
        return self._resolve_items(shared)

    def _exec(self, items: list[Any]) -> dict[str, Any]:
        started, t0 = time.time(), time.perf_counter()
        if self.parallel and items:
            collected = self._exec_parallel(items)
        else:
            collected = self._exec_sequential(items)
        output = self._output(items, collected, started, time.perf_counter() - t0)
        if collected.errors and self.error_handling == "fail_fast":
            assert self._shared is not None
            # Nothing lost: every finished result and every error is written before raising.
            self._shared[self.node_id] = output
            first = self._first_failure(collected).error
            assert first is not None
            raise first
        return output

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared[self.node_id] = exec_res
        return "default"

    # -- execution ----------------------------------------------------------------------

    def _exec_sequential(self, items: list[Any]) -> Collected:
        """Run the items in order on the node itself (no copy: nothing runs beside it)."""
        collected = self._collector(len(items))
        run_sequential(
            self._exec_single,
            items,
            stop_on_failure=self.error_handling == "fail_fast",
            collect=collected.add,
        )
        return collected

    def _exec_parallel(self, items: list[Any]) -> Collected:
        """Run the items through the executor, at most ``max_concurrent`` at a time."""
        check_copyable(self.inner_node)  # refuse before any item runs, naming the culprit
        return self._window(
            self._exec_single,
            items,
            self._collector(len(items)),
            max_concurrent=self.max_concurrent,
            stop_on_failure=self.error_handling == "fail_fast",
        )

    def _collector(self, total: int) -> Collected:
        """Where outcomes go as they finish (results by index, failures kept)."""
        return Collected(total, self.progress)

    def _first_failure(self, collected: Collected) -> ItemOutcome:
        """The failure fail_fast raises: the lowest index, whatever finished first."""
        return min(collected.errors, key=lambda o: o.index)

    def _exec_single(self, idx: int, item: Any) -> ItemOutcome:
        """Run one item with a local retry counter; never raises for the item's failure.

        In parallel mode the copy of the chain is made here, inside the worker, so at most
        ``max_concurrent`` copies are alive at once.
        """
        chain = self._copy_chain() if self.parallel else self.inner_node
        error: Optional[Exception] = None
        attempt = 0
        # A local counter, not self.cur_retry: threads share this instance.
        for attempt in range(1, self.max_retries + 1):
            if attempt > 1:
                if self._stop.is_set:
                    attempt -= 1
                    break
                if self.retry_wait > 0:
                    time.sleep(self.retry_wait)
            item_shared = self._item_shared(idx, item)
            try:
                chain._run(item_shared)
            except Exception as exc:
                error = exc
                continue
            result = item_shared[self.node_id]
            result["item"] = item
            return ItemOutcome(
                idx, item, result, None, attempt, self._record_usage(idx, item_shared)
            )
        assert error is not None
        try:
            value = self.exec_fallback(item, error)
        except Exception as exc:
            return ItemOutcome(idx, item, None, exc, attempt)
        return ItemOutcome(idx, item, value, None, attempt)

    def _copy_chain(self) -> Any:
        """The per-item isolation: a deep copy of the whole wrapper chain."""
        return isolate(self.inner_node)

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        """Called once an item has failed its last attempt; re-raises, so the item fails.

        Override to return a value instead: it becomes the item's result.
        """
        raise exc

    # -- helpers ------------------------------------------------------------------------

    def _item_shared(self, idx: int, item: Any) -> dict[str, Any]:
        assert self._shared is not None
        item_shared = dict(self._shared)  # shallow: __llm_calls__ stays the shared log
        item_shared[self.item_alias] = item
        item_shared["__index__"] = idx
        item_shared[self.node_id] = {}  # fresh on every attempt: no leftovers from a failure
        return item_shared

    def _record_usage(self, idx: int, item_shared: dict[str, Any]) -> tuple[Any, ...]:
        """Append the item's ``llm_usage`` (namespace first, then root) to the call log."""
        assert self._shared is not None
        usage = item_shared[self.node_id].get("llm_usage")
        if usage is None:
            root = item_shared.get("llm_usage")
            # A root value the item inherited from shared is not this item's usage.
            if root is not None and root is not self._shared.get("llm_usage"):
                usage = root
        if not isinstance(usage, dict):
            return ()
        record = dict(usage)
        record["node_id"] = self.node_id
        record["batch_item_index"] = idx
        item_shared[CALLS_KEY].append(record)
        return (record,)

    def _resolve_items(self, shared: MutableMapping[str, Any]) -> list[Any]:
        spec = self.items_spec
        try:
            items = resolve_template(spec, shared)
        except TemplateError as exc:
            raise TemplateError(f"batch {self.node_id!r}: items {exc}") from None
        if isinstance(items, str):
            try:
                parsed = json.loads(items)
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                raise BatchItemsError(
                    f"batch {self.node_id!r}: items {spec!r} resolved to a string that is "
                    f"not a JSON list: {items!r:.80}"
                )
            items = parsed
        if isinstance(items, tuple):
            items = list(items)
        if not isinstance(items, list):
            found = "None" if items is None else f"{type(items).__name__} {items!r:.80}"
            raise BatchItemsError(
                f"batch {self.node_id!r}: items {spec!r} resolved to {found}; "
                "expected a list (or a JSON string holding one)"
            )
        return items

    def _output(
        self, items: list[Any], collected: Collected, started: float, duration: float
    ) -> dict[str, Any]:
        errors = [
            {
                "index": o.index,
                "item": o.item,
                "error": f"{type(o.error).__name__}: {o.error}",
                "exception": o.error,
            }
            for o in collected.errors_by_index()
        ]
        finished = collected.finished
        return {
            "results": collected.results,
            "count": len(items),
            "success_count": finished - len(errors),
            "error_count": len(errors),
            "errors": errors or None,
            "batch_metadata": {
                "parallel": self.parallel,
                "max_concurrent": self.max_concurrent,
                "max_retries": self.max_retries,
                "retry_wait": self.retry_wait,
                "execution_mode": "parallel" if self.parallel else "sequential",
                "aborted": bool(errors) and self.error_handling == "fail_fast",
                "timing": {
                    "started_at": started,
                    "duration_s": duration,
                    "items_per_second": finished / duration if duration > 0 else None,
                },
            },
        }
