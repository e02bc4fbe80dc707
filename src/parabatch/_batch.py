"""``PflowBatchNode``: one node over a list of items, sequential or parallel, one code path."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any, Literal, Optional

from ._calllog import ensure_call_log
from ._config import validate_batch_config
from ._errors import BatchConfigError, BatchItemsError, TemplateError
from ._isolation import check_copyable
from ._output import Run
from ._runner import (
    RESERVED_KEYS,
    Collected,
    Coordinator,
    ExecutorFactory,
    ProgressCallback,
)
from ._templates import resolve_template
from ._work import ItemWork

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

    A namespace the node replaced with a non-dict ``x`` becomes ``{"value": x, "item":
    item}``; anything that goes wrong in an item, before or after its node ran, is that
    item's error, never the batch's. A failed item's error record keeps its exception
    without frames and the formatted ``"traceback"``, so no failed item keeps its copy of
    the chain alive. Whatever stops a run (fail_fast, Ctrl-C, a broken executor), every
    finished result is written to ``shared[node_id]`` first (``aborted``, and
    ``interrupted`` for an interrupt, in ``batch_metadata``).

    The node is configuration only: each run builds its own state, so one instance may
    run again right after an interrupt, or in two threads at once.

    Not guaranteed: objects reachable from ``shared`` are shared by all items (the copy is
    shallow), so nodes must not mutate them; objects wrapped in :class:`parabatch.Shared`
    are shared too.

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
        failure_key: opt in to the convention of nodes that report failure in their
            result instead of raising: an item whose result holds a truthy value under
            this key (usually ``"error"``) fails with :class:`parabatch.ItemReportedError`
            and is retried like a raised exception. Default ``None``: results are results.

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
    #: The per-item unit class; a subclass with other hooks makes a variant batch.
    work_class: type[ItemWork] = ItemWork

    def __init__(
        self,
        inner_node: Any,
        node_id: str,
        batch_config: dict[str, Any],
        *,
        executor: Optional[ExecutorFactory] = None,
        call_log: Literal["lock", "gil"] = "lock",
        progress: Optional[ProgressCallback] = None,
        failure_key: Optional[str] = None,
    ) -> None:
        problems = self._argument_problems(node_id, executor, call_log, progress)
        if not callable(getattr(inner_node, "_run", None)):
            problems.append(
                f"inner_node={inner_node!r:.80}: must be a pocketflow node (it has no _run)"
            )
        if failure_key is not None and (not isinstance(failure_key, str) or not failure_key):
            problems.append(f"failure_key={failure_key!r}: must be a non-empty string or None")
        try:
            config = validate_batch_config(batch_config)
        except BatchConfigError as exc:
            raise BatchConfigError([*exc.problems, *problems]) from None
        alias = config["as"]
        if alias in RESERVED_KEYS or alias == node_id:
            problems.append(
                f"as={alias!r}: collides with "
                + ("the node's own namespace" if alias == node_id else "a key the batch sets")
                + f"; each item's store holds {node_id!r}, '__index__' and '__llm_calls__'"
            )
        if problems:
            raise BatchConfigError(problems)
        super().__init__(max_retries=config["max_retries"], wait=config["retry_wait"])
        self.inner_node = inner_node
        self.config = config
        self.items_spec = config["items"]
        self.item_alias: str = alias
        self.error_handling: str = config["error_handling"]
        self.parallel: bool = config["parallel"]
        self.max_concurrent: int = config["max_concurrent"]
        self.retry_wait: float = config["retry_wait"]
        self.failure_key = failure_key
        self._setup(node_id, executor, call_log, progress)

    # -- PocketFlow hooks ---------------------------------------------------------------

    def prep(self, shared: MutableMapping[str, Any]) -> Run:
        """Build this run: resolve the items, make sure the call log exists."""
        log = ensure_call_log(shared, self.call_log, f"batch {self.node_id!r}")
        items = self._resolve_items(shared)
        if self.parallel and items:
            check_copyable(self.inner_node)  # refuse before any item runs, naming the culprit
        collected = self.collected_class(
            len(items), self.progress, fallback=self.exec_fallback, call_log=log
        )
        return Run(
            shared,
            items,
            stop_on_failure=self.error_handling == "fail_fast",
            collected=collected,
        )

    def _exec(self, run: Run) -> dict[str, Any]:
        work = self.make_work(run)
        try:
            if self.parallel and run.tasks:
                run.execute(
                    work, executor=self.executor, max_concurrent=self.concurrency_limit(run)
                )
            else:
                run.execute(work)
        except BaseException:
            # Nothing lost: every finished result is written before the interrupt goes on.
            run.shared[self.node_id] = self._output(run)
            raise
        output = self._output(run)
        failure = self.first_failure(run) if run.stop_on_failure else None
        if failure is not None:
            run.shared[self.node_id] = output  # every finished result, then the raise
            assert failure.error is not None
            raise failure.error
        return output

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared[self.node_id] = exec_res
        return "default"

    def exec_fallback(self, prep_res: Any, exc: BaseException) -> Any:
        """Called once an item has failed its last attempt; re-raises, so the item fails.

        Override to return a value instead: it becomes the item's result. It runs on the
        thread coordinating the batch, as each failed item is collected.
        """
        raise exc

    # -- hooks ----------------------------------------------------------------------------

    #: Where outcomes go as they finish (results by index, failures kept).
    collected_class: type[Collected] = Collected

    def make_work(self, run: Run) -> ItemWork:
        """The per-item unit of ``run``: the chain and what an item needs, not the node."""
        return self.work_class(
            self.inner_node,
            run.shared,
            run.stop,
            node_id=self.node_id,
            alias=self.item_alias,
            max_retries=self.max_retries,
            retry_wait=self.retry_wait,
            copy_chain=self.parallel,
            failure_key=self.failure_key,
        )

    def concurrency_limit(self, run: Run) -> int:
        """Items in flight at once in a parallel run: ``max_concurrent``."""
        return self.max_concurrent

    def first_failure(self, run: Run) -> Any:
        """The failed outcome fail_fast raises: the lowest index, whatever finished first."""
        return run.first_failure()

    # -- helpers ------------------------------------------------------------------------

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

    def _output(self, run: Run) -> dict[str, Any]:
        return run.output(
            "item",
            "batch_metadata",
            {
                "parallel": self.parallel,
                "max_concurrent": self.max_concurrent,
                "max_retries": self.max_retries,
                "retry_wait": self.retry_wait,
                "execution_mode": "parallel" if self.parallel else "sequential",
            },
        )
