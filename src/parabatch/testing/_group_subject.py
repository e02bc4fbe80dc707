"""``ParallelGroupNode`` under the verify API: a batch's items run as a group's children.

The verify API speaks to anything with ``PflowBatchNode``'s constructor. ``GroupAsBatch``
has that constructor and runs each item as one child of a :class:`ParallelGroupNode`: the
group's executor, bound, per-child copies, merge in child order and fail_fast are what is
exercised. Each child does only what a batch item does around the chain (sets the item,
its index and a fresh namespace, records the usage), with one attempt: groups do not retry,
so verify it with ``max_retries=1``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Optional

from pocketflow import Node

from parabatch import CALLS_KEY, ParallelGroupNode, resolve_template, validate_batch_config
from parabatch._calllog import usage_record
from parabatch._runner import ExecutorFactory, ProgressCallback
from parabatch._work import GroupWork

__all__ = ["CopylessGroup", "GroupAsBatch"]


class _ItemChild(Node):  # type: ignore[misc]
    """One item as a group child: the batch item's context around the shared chain."""

    def __init__(self, chain: Any, chain_id: str, index: int, item: Any, alias: str) -> None:
        super().__init__()
        self.chain = chain  # the same chain object for every child: the group must copy it
        self.chain_id = chain_id
        self.node_id = f"{chain_id}[{index}]"
        self.index = index
        self.item = item
        self.alias = alias

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        shared[self.alias] = self.item
        shared["__index__"] = self.index
        shared[self.chain_id] = {}
        try:
            self.chain._run(shared)
        finally:
            del shared[self.alias], shared["__index__"]
        result = shared.pop(self.chain_id)
        result["item"] = self.item
        record = usage_record(result, self.chain_id, self.index)
        if record is not None:
            shared[CALLS_KEY].append(record)
        shared[self.node_id] = result  # merged into the real store by the group
        return "default"


class GroupAsBatch:
    """A batch whose items run as the children of a :class:`ParallelGroupNode`.

    Example:
        >>> from parabatch.testing import verify_batch_node
        >>> verify_batch_node(GroupAsBatch, budget=30, seed=0, max_retries=1).ok
        True
    """

    group_class: type[ParallelGroupNode] = ParallelGroupNode

    def __init__(
        self,
        inner_node: Any,
        node_id: str,
        batch_config: dict[str, Any],
        *,
        executor: Optional[ExecutorFactory] = None,
        call_log: str = "lock",
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        self.config = validate_batch_config(batch_config)
        if self.config["max_retries"] != 1:
            raise ValueError(
                f"max_retries={self.config['max_retries']!r}: a group runs each child once"
            )
        self.inner_node = inner_node
        self.node_id = node_id
        self.executor = executor
        self.call_log = call_log
        self.progress = progress

    def run(self, shared: MutableMapping[str, Any]) -> str:
        items = list(resolve_template(self.config["items"], shared))
        cap = self.config["max_concurrent"] if self.config["parallel"] else 1
        children = [
            _ItemChild(self.inner_node, self.node_id, i, item, self.config["as"])
            for i, item in enumerate(items)
        ]
        group_id = f"{self.node_id}.group"
        group = self.group_class(
            children,
            group_id,
            max_concurrent=cap,
            on_error=self.config["error_handling"],
            executor=self.executor,
            call_log=self.call_log,  # type: ignore[arg-type]
            progress=self.progress,
        )
        raised: Optional[Exception] = None
        try:
            group.run(shared)
        except Exception as exc:
            raised = exc
        out = shared.pop(group_id)
        errors = [
            {
                "index": e["index"],
                "item": items[e["index"]],
                "error": e["error"],
                "exception": e["exception"],
            }
            for e in out["errors"] or []
        ]
        shared[self.node_id] = {
            "results": [shared.pop(f"{self.node_id}[{i}]", None) for i in range(len(items))],
            "count": len(items),
            "success_count": out["success_count"],
            "error_count": out["error_count"],
            "errors": errors or None,
            "batch_metadata": {"aborted": out["group_metadata"]["aborted"]},
        }
        if raised is not None:
            raise raised
        return "default"


class _CopylessWork(GroupWork):
    def isolate(self, child: Any) -> Any:
        return child  # the bug: every child runs on the one chain object


class _CopylessGroupNode(ParallelGroupNode):
    work_class = _CopylessWork


class CopylessGroup(GroupAsBatch):
    """Negative control: a group that runs its children without copying them.

    Every child runs on the one chain object, so one child's writes on it (and its params
    swap) reach the others; the isolation property sees the writes first.
    """

    catches = "isolation"
    group_class = _CopylessGroupNode
