from __future__ import annotations

import threading
from typing import Any

import pytest
from pocketflow import Flow, Node

from parabatch import (
    BatchConfigError,
    NamespacedNodeWrapper,
    ParallelGroupNode,
    PflowBatchNode,
    Shared,
    TemplateAwareNodeWrapper,
    UncopyableNodeError,
)

from .nodes import Tracker, Work, chain


class Put(Node):
    """Writes params to its store after waiting for its turn (to force completion order)."""

    def __init__(
        self,
        gate: threading.Event | None = None,
        then: threading.Event | None = None,
        fail: bool = False,
    ) -> None:
        super().__init__()
        # Events hold locks: share them between the copies instead of copying them.
        self.gate = None if gate is None else Shared(gate)
        self.then = None if then is None else Shared(then)
        self.fail = fail

    def exec(self, _: Any) -> Any:
        if self.gate is not None:
            assert self.gate.wait(10)
        try:
            if self.fail:
                raise ValueError(f"child {self.params['v']} failed")
            return self.params["v"]
        finally:
            if self.then is not None:
                self.then.set()

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["v"] = exec_res
        shared["__last_writer__"] = exec_res  # special key: lands at the root
        shared["__llm_calls__"].append({"child": exec_res})
        return f"done-{exec_res}"


def put(name: str, v: Any, **kw: Any) -> Any:
    return NamespacedNodeWrapper(TemplateAwareNodeWrapper(Put(**kw), name, {"v": v}), name)


def test_outputs_merge_in_child_order_whatever_finishes_first() -> None:
    second_done = threading.Event()
    # child "a" waits for child "b" to finish, so "b" completes first
    group = ParallelGroupNode([put("a", 1, gate=second_done), put("b", 2, then=second_done)], "g")
    shared: dict[str, Any] = {}
    assert group.run(shared) == "default"
    assert shared["a"] == {"v": 1} and shared["b"] == {"v": 2}
    assert shared["__last_writer__"] == 2  # the later child in child order, not completion
    assert sorted(r["child"] for r in shared["__llm_calls__"]) == [1, 2]
    out = shared["g"]
    assert out["results"] == ["done-1", "done-2"]
    assert out["count"] == 2 and out["success_count"] == 2 and out["errors"] is None
    assert out["group_metadata"]["children"] == ["a", "b"]


def test_same_child_twice_runs_on_separate_copies() -> None:
    tracker = Tracker()
    node = Work(tracker)
    child = NamespacedNodeWrapper(TemplateAwareNodeWrapper(node, "w", {"p": "${x}"}), "w")
    shared: dict[str, Any] = {"x": 1, "item": "it"}
    ParallelGroupNode([child, child], "g").run(shared)
    assert tracker.attempts == {"it": 2}
    assert node.params == {}  # the original never ran


def test_children_do_not_see_each_others_writes_until_merge() -> None:
    class Look(Node):
        def post(self, shared: Any, p: Any, e: Any) -> None:
            shared["saw_other"] = "v" in shared.get("other", {})

    shared: dict[str, Any] = {}
    ParallelGroupNode([put("other", 1), NamespacedNodeWrapper(Look(), "look")], "g").run(shared)
    assert shared["look"] == {"saw_other": False}


def test_fail_fast_raises_lowest_index_and_merges_successes() -> None:
    first_failed = threading.Event()
    children = [
        put("a", 1, gate=first_failed, fail=True),
        put("b", 2, then=first_failed, fail=True),
        put("c", 3),
        put("d", 4),
        put("e", 5),
    ]
    shared: dict[str, Any] = {}
    with pytest.raises(ValueError, match="child 1 failed"):
        ParallelGroupNode(children, "g", max_concurrent=2).run(shared)
    out = shared["g"]
    assert [e["index"] for e in out["errors"]] == [0, 1]
    assert [e["child"] for e in out["errors"]] == ["a", "b"]
    assert out["group_metadata"]["aborted"] is True
    # c and d were queued (one per worker) before the failure and may have run; e was never
    # submitted, and what ran is merged.
    assert "e" not in shared
    ran = [name for name in ("c", "d") if name in shared]
    assert [shared[name]["v"] for name in ran] == [ord(name) - ord("a") + 1 for name in ran]
    assert out["results"][:2] == [None, None] and out["results"][4] is None


def test_continue_runs_every_child() -> None:
    shared: dict[str, Any] = {}
    ParallelGroupNode([put("a", 1, fail=True), put("b", 2)], "g", on_error="continue").run(shared)
    out = shared["g"]
    assert (
        out["results"] == [None, "done-2"]
        and shared["b"] == {"v": 2}
        and "v" not in shared.get("a", {})
    )
    assert out["errors"][0]["error"] == "ValueError: child 1 failed"


def test_bound_holds() -> None:
    tracker = Tracker()
    children = [chain(Work(tracker, latency={"it": 0.002}), f"c{i}") for i in range(8)]
    ParallelGroupNode(children, "g", max_concurrent=3).run({"item": "it"})
    assert tracker.attempts == {"it": 8} and 1 <= tracker.max_in_flight <= 3


def test_batch_inside_group() -> None:
    batch = PflowBatchNode(
        chain(Work(Tracker(), usage=True), "b"), "b", {"items": "${xs}", "parallel": True}
    )
    shared: dict[str, Any] = {"xs": [1, 22, 333]}
    ParallelGroupNode([batch, put("p", 9)], "g").run(shared)
    assert [r["out"]["value"] for r in shared["b"]["results"]] == [1, 22, 333]
    assert sorted(r.get("batch_item_index", -1) for r in shared["__llm_calls__"]) == [-1, 0, 1, 2]
    assert shared["p"] == {"v": 9}


def test_group_inside_batch() -> None:
    class Double(Node):
        def prep(self, shared: Any) -> Any:
            return shared["item"]

        def post(self, shared: Any, p: Any, e: Any) -> None:
            shared["double"] = p * 2

    class Square(Double):
        def post(self, shared: Any, p: Any, e: Any) -> None:
            shared["square"] = p * p

    group = ParallelGroupNode(
        [NamespacedNodeWrapper(Double(), "d"), NamespacedNodeWrapper(Square(), "s")], "grp"
    )

    class Collect(Node):
        def post(self, shared: Any, p: Any, e: Any) -> None:
            shared["n"]["pair"] = (shared["d"]["double"], shared["s"]["square"])

    flow_inner = Flow(start=group)
    group >> Collect()
    batch = PflowBatchNode(flow_inner, "n", {"items": [1, 2, 3, 4], "parallel": True})
    shared: dict[str, Any] = {}
    batch.run(shared)
    assert [r["pair"] for r in shared["n"]["results"]] == [(2, 1), (4, 4), (6, 9), (8, 16)]


def test_uncopyable_child_refused_naming_it() -> None:
    node = Put()
    node.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(UncopyableNodeError) as info:
        ParallelGroupNode([put("a", 1), node], "g").run({})
    assert info.value.path == "children[1].lock"


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (([], "g"), {}, "children=[]: must hold at least one node"),
        (("ab", "g"), {}, "must be a list of nodes"),
        (([1], "g"), {}, "every child must be a node"),
        (([Put()], ""), {}, "node_id=''"),
        (([Put()], "g"), {"max_concurrent": 0}, "max_concurrent=0"),
        (([Put()], "g"), {"max_concurrent": True}, "max_concurrent=True"),
        (([Put()], "g"), {"on_error": "skip"}, "on_error='skip'"),
        (([Put()], "g"), {"executor": 3}, "executor=3"),
        (([Put()], "g"), {"call_log": "x"}, "call_log='x'"),
        (([Put()], "g"), {"progress": "bar"}, "progress='bar': must be callable"),
    ],
)
def test_bad_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(BatchConfigError) as info:
        ParallelGroupNode(*args, **kwargs)
    assert needle in str(info.value)
