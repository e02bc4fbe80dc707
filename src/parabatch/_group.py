"""``ParallelGroupNode``: independent nodes side by side, isolated as batch items are."""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from typing import Any, Literal, Optional

from ._errors import BatchConfigError
from ._isolation import check_copyable, isolate
from ._runner import (
    Collected,
    Coordinator,
    ExecutorFactory,
    ItemOutcome,
    ProgressCallback,
)

__all__ = ["ParallelGroupNode"]

_MISSING = object()


def _child_id(child: Any, index: int) -> str:
    node_id = getattr(child, "node_id", None)
    return node_id if isinstance(node_id, str) and node_id else f"#{index}"


class ParallelGroupNode(Coordinator):
    """Run several independent nodes at once on one shared store, each on its own deep copy.

    Each child runs on a deep copy of itself, on a shallow copy of the shared store (like a
    batch item), through the same runner and isolation as :class:`PflowBatchNode`. What a
    child writes at the top level of its store (with a ``NamespacedNodeWrapper``: its
    ``shared[child_id]`` namespace) is merged back into ``shared`` after the children
    finish, in child order, so the result never depends on which child finished first.
    ``shared["__llm_calls__"]`` is one log shared by all children.

    The group writes ``shared[node_id] = {"results", "count", "success_count",
    "error_count", "errors", "group_metadata"}``: ``results[i]`` is child ``i``'s action.
    On ``fail_fast``, nothing new starts after a failure, running children finish, the
    writes of the children that succeeded are merged, and the lowest-index failure's own
    exception is raised. On ``continue``, failed children get ``None`` and an error record
    ``{"index", "child", "error", "exception"}``.

    Not guaranteed: children must not rely on seeing each other's writes (they run on
    copies), and two children writing the same top-level key resolve to the later child.

    Args:
        children: nodes (usually wrapper chains) to run side by side.
        node_id: where the group's output goes in ``shared``.
        max_concurrent: children in flight at once (1-100).
        on_error: ``"fail_fast"`` or ``"continue"``.
        executor: ``executor(max_workers)`` returning a ``concurrent.futures.Executor``.
        call_log: ``"lock"`` or ``"gil"``, as for the batch node.
        progress: ``progress(index, done, total, ok)`` after each finished child.

    Example:
        >>> from pocketflow import Node
        >>> from parabatch import NamespacedNodeWrapper
        >>> class Put(Node):
        ...     def post(self, shared, p, e): shared["v"] = self.params["v"]
        >>> def child(name, v):
        ...     node = Put(); node.params = {"v": v}
        ...     return NamespacedNodeWrapper(node, name)
        >>> shared = {}
        >>> ParallelGroupNode([child("a", 1), child("b", 2)], "g").run(shared)
        'default'
        >>> shared["a"], shared["b"], shared["g"]["results"]
        ({'v': 1}, {'v': 2}, [None, None])
    """

    kind = "group"

    def __init__(
        self,
        children: Sequence[Any],
        node_id: str,
        *,
        max_concurrent: int = 10,
        on_error: Literal["fail_fast", "continue"] = "fail_fast",
        executor: Optional[ExecutorFactory] = None,
        call_log: Literal["lock", "gil"] = "lock",
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        problems = self._argument_problems(node_id, executor, call_log, progress)
        if isinstance(children, (str, bytes)) or not isinstance(children, Sequence):
            problems.append(f"children={children!r}: must be a list of nodes")
        elif not children:
            problems.append("children=[]: must hold at least one node")
        elif not all(callable(getattr(c, "_run", None)) for c in children):
            problems.append(f"children={list(children)!r}: every child must be a node (_run)")
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or not (1 <= max_concurrent <= 100)
        ):
            problems.append(f"max_concurrent={max_concurrent!r}: must be an integer from 1 to 100")
        if on_error not in ("fail_fast", "continue"):
            problems.append(f"on_error={on_error!r}: must be 'fail_fast' or 'continue'")
        if problems:
            raise BatchConfigError(problems)
        super().__init__()
        self.children = list(children)
        self.child_ids = [_child_id(c, i) for i, c in enumerate(self.children)]
        self.max_concurrent = max_concurrent
        self.on_error = on_error
        self._setup(node_id, executor, call_log, progress)

    def prep(self, shared: MutableMapping[str, Any]) -> list[Any]:
        self._begin(shared)
        return self.children

    def _exec(self, children: list[Any]) -> dict[str, Any]:
        started, t0 = time.time(), time.perf_counter()
        for index, child in enumerate(children):
            check_copyable(child, f"children[{index}]")
        collected = self._window(
            self._exec_single,
            children,
            Collected(len(children), self.progress),
            max_concurrent=self.max_concurrent,
            stop_on_failure=self.on_error == "fail_fast",
        )
        assert self._shared is not None
        for done in collected.results:  # child order, whatever the completion order was
            if done is not None:
                for key, value in done[1].items():
                    self._shared[key] = value
        output = self._output(collected, started, time.perf_counter() - t0)
        if collected.errors and self.on_error == "fail_fast":
            self._shared[self.node_id] = output
            first = collected.errors_by_index()[0].error
            assert first is not None
            raise first
        return output

    def _exec_single(self, idx: int, child: Any) -> ItemOutcome:
        """Run one child on its own copy and store; return its action and its writes."""
        assert self._shared is not None
        base = self._shared
        child_shared = dict(base)
        child_id = self.child_ids[idx]
        namespace = base.get(child_id)
        if isinstance(namespace, dict):
            # The namespace dict itself is copied, so the child's writes stay private
            # until the merge.
            child_shared[child_id] = dict(namespace)
        try:
            action = self._copy_child(child)._run(child_shared)
        except Exception as exc:
            return ItemOutcome(idx, child_id, None, exc, 1)
        writes = {k: v for k, v in child_shared.items() if base.get(k, _MISSING) is not v}
        return ItemOutcome(idx, child_id, (action, writes), None, 1)

    def _copy_child(self, child: Any) -> Any:
        """The per-child isolation: the batch node's (a deep copy of the whole child)."""
        return isolate(child)

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared[self.node_id] = exec_res
        return "default"

    def _output(self, collected: Collected, started: float, duration: float) -> dict[str, Any]:
        errors = [
            {
                "index": o.index,
                "child": o.item,
                "error": f"{type(o.error).__name__}: {o.error}",
                "exception": o.error,
            }
            for o in collected.errors_by_index()
        ]
        return {
            "results": [None if r is None else r[0] for r in collected.results],
            "count": collected.total,
            "success_count": collected.finished - len(errors),
            "error_count": len(errors),
            "errors": errors or None,
            "group_metadata": {
                "children": list(self.child_ids),
                "max_concurrent": self.max_concurrent,
                "on_error": self.on_error,
                "aborted": bool(errors) and self.on_error == "fail_fast",
                "timing": {"started_at": started, "duration_s": duration},
            },
        }
