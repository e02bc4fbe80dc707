"""``ParallelGroupNode``: independent nodes side by side, isolated as batch items are."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any, Literal, Optional

from ._calllog import ensure_call_log
from ._errors import BatchConfigError
from ._isolation import check_copyable
from ._output import Run
from ._runner import Collected, Coordinator, ExecutorFactory, ProgressCallback
from ._work import GroupWork

__all__ = ["ParallelGroupNode"]


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
    ``{"index", "child", "error", "exception", "traceback"}``. Whatever stops a run, the
    finished children's writes are merged and the output written before it ends.

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

    #: The per-child unit class; a subclass with other hooks makes a variant group.
    work_class: type[GroupWork] = GroupWork

    def prep(self, shared: MutableMapping[str, Any]) -> Run:
        """Build this run: the call log, and every child checked to be copyable."""
        log = ensure_call_log(shared, self.call_log, f"group {self.node_id!r}")
        for index, child in enumerate(self.children):
            check_copyable(child, f"children[{index}]")
        collected = Collected(len(self.children), self.progress, call_log=log)
        stop_on_failure = self.on_error == "fail_fast"
        return Run(shared, self.child_ids, stop_on_failure=stop_on_failure, collected=collected)

    def make_work(self, run: Run) -> GroupWork:
        """The per-child unit of ``run``: the children and the store, not the node."""
        return self.work_class(self.children, run.shared, run.stop)

    def _exec(self, run: Run) -> dict[str, Any]:
        try:
            run.execute(
                self.make_work(run), executor=self.executor, max_concurrent=self.max_concurrent
            )
        except BaseException:
            self._finish(run)  # nothing lost: the finished children's writes and output
            raise
        output = self._finish(run)
        failure = run.first_failure() if run.stop_on_failure else None
        if failure is not None:
            assert failure.error is not None
            raise failure.error
        return output

    def _finish(self, run: Run) -> dict[str, Any]:
        """Merge the finished children's writes (child order) and write the output."""
        for done in run.collected.results:
            if done is not None:
                run.shared.update(done[1])
        output = run.output(
            "child",
            "group_metadata",
            {
                "children": list(self.child_ids),
                "max_concurrent": self.max_concurrent,
                "on_error": self.on_error,
            },
        )
        output["results"] = [None if r is None else r[0] for r in output["results"]]
        run.shared[self.node_id] = output
        return output

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared[self.node_id] = exec_res
        return "default"
