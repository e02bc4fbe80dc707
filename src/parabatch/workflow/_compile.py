"""Compile a validated workflow into a PocketFlow ``Flow`` of parabatch nodes, and run it."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Callable, Literal, Optional

from pocketflow import Flow

from .. import (
    NamespacedNodeWrapper,
    ParallelGroupNode,
    PflowBatchNode,
    TemplateAwareNodeWrapper,
)
from .._calllog import ensure_call_log, usage_record
from .._runner import ExecutorFactory
from .._wrappers import _Wrapper
from ._errors import NodeTypeError
from ._registry import GROUP_TYPE, NodeRegistry, default_registry
from ._validate import validate_workflow

__all__ = ["UsageRecorder", "WorkflowProgress", "compile_workflow", "run_workflow"]

#: ``progress(node_id, index, done, total, ok)`` after each finished batch item or group
#: child. Called from the thread coordinating that node, possibly several at once (batches
#: inside a parallel group), so it must be thread-safe.
WorkflowProgress = Callable[[str, int, int, int, bool], None]


class UsageRecorder(_Wrapper):
    """Record the ``llm_usage`` of a node outside a batch in ``shared["__llm_calls__"]``.

    A batch node turns each item's ``llm_usage`` into a call record; a node that runs
    once (on its own, or as a parallel group's child) has no batch to do it, so the
    compiler wraps it in this. The record is the usage dict plus ``"node_id"`` (no
    ``"batch_item_index"``: there is no batch). A usage dict that was already in the
    namespace before the run is not this run's and is not recorded.

    Example:
        >>> from parabatch.workflow import SimulatedLlmNode
        >>> node = SimulatedLlmNode()
        >>> chain = NamespacedNodeWrapper(
        ...     TemplateAwareNodeWrapper(node, "ask", {"prompt": "a b"}), "ask")
        >>> shared = {}; _ = UsageRecorder(chain, "ask").run(shared)
        >>> list(shared["__llm_calls__"])
        [{'model': 'sim-1', 'input_tokens': 2, 'output_tokens': 3, 'node_id': 'ask'}]
    """

    #: The kind of log made when the store has none (``"lock"`` or ``"gil"``).
    call_log = "lock"

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        log = ensure_call_log(shared, self.call_log, f"node {self.node_id!r}")
        before = shared.get(self.node_id)
        stale = before.get("llm_usage") if isinstance(before, dict) else None
        action = self.inner_node._run(shared)
        record = usage_record(shared.get(self.node_id), self.node_id, stale=stale)
        if record is not None:
            log.append(record)
        return action


class _NodeProgress:
    """A batch's ``progress`` hook bound to its node id; shared by copies, never copied."""

    __slots__ = ("callback", "node_id")

    def __init__(self, callback: WorkflowProgress, node_id: str) -> None:
        self.callback = callback
        self.node_id = node_id

    def __call__(self, index: int, done: int, total: int, ok: bool) -> None:
        self.callback(self.node_id, index, done, total, ok)

    def __deepcopy__(self, memo: dict[int, Any]) -> _NodeProgress:
        # A group deep-copies its children, batches included; the callback (which may
        # hold a stream and a lock) must stay one object.
        return self


class _Builder:
    def __init__(
        self,
        registry: NodeRegistry,
        progress: Optional[WorkflowProgress],
        sequential: bool,
        executor: Optional[ExecutorFactory],
        call_log: Literal["lock", "gil"],
    ) -> None:
        self.registry = registry
        self.progress = progress
        self.sequential = sequential
        self.executor = executor
        self.call_log: Literal["lock", "gil"] = call_log

    def _hook(self, node_id: str) -> Optional[_NodeProgress]:
        return None if self.progress is None else _NodeProgress(self.progress, node_id)

    def node(self, spec: dict[str, Any]) -> Any:
        node_id: str = spec["id"]
        if spec["type"] == GROUP_TYPE:
            return ParallelGroupNode(
                [self.node(child) for child in spec["children"]],
                node_id,
                max_concurrent=1 if self.sequential else spec["max_concurrent"],
                on_error=spec["on_error"],
                executor=self.executor,
                call_log=self.call_log,
                progress=self._hook(node_id),
            )
        inner = self.registry[spec["type"]].factory()
        if not callable(getattr(inner, "_run", None)):
            raise NodeTypeError(
                f"node type {spec['type']!r} (for node {node_id!r}): its factory returned "
                f"{inner!r:.60}, not a pocketflow node"
            )
        chain = NamespacedNodeWrapper(
            TemplateAwareNodeWrapper(inner, node_id, spec["params"]), node_id
        )
        if "batch" not in spec:
            recorder = UsageRecorder(chain, node_id)
            recorder.call_log = self.call_log
            return recorder
        config = dict(spec["batch"])
        if self.sequential:
            config["parallel"] = False
        return PflowBatchNode(
            chain,
            node_id,
            config,
            executor=self.executor,
            call_log=self.call_log,
            progress=self._hook(node_id),
        )


def compile_workflow(
    doc: dict[str, Any],
    *,
    registry: Optional[NodeRegistry] = None,
    progress: Optional[WorkflowProgress] = None,
    sequential: bool = False,
    executor: Optional[ExecutorFactory] = None,
    call_log: Literal["lock", "gil"] = "lock",
) -> Any:
    """Validate ``doc`` and build a ``pocketflow.Flow`` from it.

    Each node becomes ``NamespacedNodeWrapper(TemplateAwareNodeWrapper(node, id, params),
    id)``; with a ``batch`` config, that chain is run by ``PflowBatchNode(chain, id,
    batch)``; without one, by :class:`UsageRecorder`. A ``parallel_group`` becomes a
    :class:`parabatch.ParallelGroupNode` of its compiled children. Edges become
    ``src.next(dst, action)``. ``sequential=True`` runs every batch with
    ``parallel: false`` and every group one child at a time: the same workflow, for
    comparison. ``executor`` and ``call_log`` go to every batch and group.

    Raises:
        WorkflowError: the document is invalid (every problem listed).

    Example:
        >>> flow = compile_workflow({"nodes": [
        ...     {"id": "ask", "type": "llm", "params": {"prompt": "Q: ${q}"},
        ...      "batch": {"items": "${qs}", "as": "q", "parallel": True}}]})
        >>> shared = {"qs": ["one", "two"]}
        >>> flow.run(shared)
        'default'
        >>> [r["summary"] for r in shared["ask"]["results"]]
        ['Summary: one', 'Summary: two']
    """
    workflow = validate_workflow(doc, registry=registry)
    build = _Builder(
        default_registry() if registry is None else registry,
        progress,
        sequential,
        executor,
        call_log,
    )
    nodes = {spec["id"]: build.node(spec) for spec in workflow["nodes"]}
    for edge in workflow["edges"]:
        nodes[edge["from"]].next(nodes[edge["to"]], edge["action"])
    return Flow(start=nodes[workflow["start"]])


def run_workflow(
    doc: dict[str, Any],
    shared: Optional[MutableMapping[str, Any]] = None,
    *,
    registry: Optional[NodeRegistry] = None,
    progress: Optional[WorkflowProgress] = None,
    sequential: bool = False,
    executor: Optional[ExecutorFactory] = None,
    call_log: Literal["lock", "gil"] = "lock",
) -> MutableMapping[str, Any]:
    """Compile ``doc``, run it on ``shared`` (default a new dict), and return ``shared``.

    ``shared["__llm_calls__"]`` exists before the first node runs. A node's exception
    (after its batch's retries) propagates unchanged; ``shared`` then holds what the
    nodes before it wrote, and a failed batch's partial output.

    Example:
        >>> shared = run_workflow({"nodes": [
        ...     {"id": "count", "type": "shell", "params": {"cmd": ["wc", "-w"],
        ...                                                 "stdin": "${text}"}}]},
        ...     {"text": "one two three"})
        >>> int(shared["count"]["stdout"]), list(shared["__llm_calls__"])
        (3, [])
    """
    flow = compile_workflow(
        doc,
        registry=registry,
        progress=progress,
        sequential=sequential,
        executor=executor,
        call_log=call_log,
    )
    shared = {} if shared is None else shared
    ensure_call_log(shared, call_log, "workflow")
    flow.run(shared)
    return shared
