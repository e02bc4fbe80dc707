"""Compiling a workflow: the wrapper chain, usage records, progress, sequential mode."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import pytest
from pocketflow import Flow, Node

from parabatch import (
    NamespacedNodeWrapper,
    ParallelGroupNode,
    PflowBatchNode,
    TemplateAwareNodeWrapper,
)
from parabatch.workflow import (
    NodeTypeError,
    SimulatedLlmNode,
    UsageRecorder,
    compile_workflow,
    default_registry,
    run_workflow,
)


def llm(node_id: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "llm", "params": {"prompt": prompt}, **extra}


def test_each_node_is_the_documented_wrapper_chain() -> None:
    flow = compile_workflow(
        {
            "nodes": [
                llm("one", "x"),
                llm("many", "${item}", batch={"items": [1, 2], "max_concurrent": 2}),
                {"id": "g", "type": "parallel_group", "children": [llm("c", "y")]},
            ],
            "edges": [{"from": "one", "to": "many"}, {"from": "many", "to": "g"}],
        }
    )
    assert isinstance(flow, Flow)
    one = flow.start_node
    assert isinstance(one, UsageRecorder) and one.node_id == "one"
    chain = one.inner_node
    assert isinstance(chain, NamespacedNodeWrapper) and chain.node_id == "one"
    assert isinstance(chain.inner_node, TemplateAwareNodeWrapper)
    assert chain.inner_node.static_params == {"prompt": "x"}
    assert isinstance(chain.inner_node.inner_node, SimulatedLlmNode)
    many = one.successors["default"]
    assert isinstance(many, PflowBatchNode) and many.node_id == "many"
    assert many.max_concurrent == 2 and many.parallel is False
    assert isinstance(many.inner_node, NamespacedNodeWrapper)
    assert many.inner_node.inner_node.template_params == {"prompt": "${item}"}
    group = many.successors["default"]
    assert isinstance(group, ParallelGroupNode) and group.child_ids == ["c"]


def test_usage_outside_a_batch_is_recorded_once_per_run() -> None:
    doc = {
        "nodes": [
            llm("first", "a: one two"),
            {
                "id": "g",
                "type": "parallel_group",
                "children": [llm("left", "b: x"), llm("right", "c: y z")],
            },
        ],
        "edges": [{"from": "first", "to": "g"}],
    }
    shared = run_workflow(doc)
    calls = shared["__llm_calls__"]
    assert calls[0] == {"model": "sim-1", "input_tokens": 3, "output_tokens": 3, "node_id": "first"}
    # group children append as they finish: compare without order
    assert sorted(calls[1:], key=lambda c: c["node_id"]) == [
        {"model": "sim-1", "input_tokens": 2, "output_tokens": 2, "node_id": "left"},
        {"model": "sim-1", "input_tokens": 3, "output_tokens": 3, "node_id": "right"},
    ]
    assert len(calls) == 3


def test_usage_already_in_the_namespace_is_not_recorded_again() -> None:
    class Quiet(Node):  # type: ignore[misc]
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["ran"] = True
            return "default"

    old = {"model": "m", "input_tokens": 1, "output_tokens": 1}
    shared: dict[str, Any] = {"q": {"llm_usage": old}}
    UsageRecorder(NamespacedNodeWrapper(Quiet(), "q"), "q").run(shared)
    assert shared["q"]["ran"] is True and list(shared["__llm_calls__"]) == []


def test_progress_reports_batches_and_groups_by_node_id() -> None:
    seen: list[tuple[str, int, int, bool]] = []
    lock = threading.Lock()

    def progress(node_id: str, index: int, done: int, total: int, ok: bool) -> None:
        with lock:
            seen.append((node_id, done, total, ok))

    doc = {
        "nodes": [
            llm("each", "${item}", batch={"items": ["a", "b", "c"], "parallel": True}),
            {
                "id": "g",
                "type": "parallel_group",
                # a batch inside a group: the group deep-copies it, progress hook included
                "children": [llm("inner", "${item}", batch={"items": [1, 2], "parallel": True})],
            },
        ],
        "edges": [{"from": "each", "to": "g"}],
    }
    run_workflow(doc, progress=progress)
    assert [s for s in seen if s[0] == "each"] == [
        ("each", 1, 3, True),
        ("each", 2, 3, True),
        ("each", 3, 3, True),
    ]
    assert [s for s in seen if s[0] == "inner"] == [("inner", 1, 2, True), ("inner", 2, 2, True)]
    assert seen[-1] == ("g", 1, 1, True)


def test_sequential_runs_the_same_workflow_one_item_at_a_time() -> None:
    doc = {
        "nodes": [
            llm("each", "${item}", batch={"items": ["a", "b"], "parallel": True}),
            {"id": "g", "type": "parallel_group", "max_concurrent": 5, "children": [llm("c", "x")]},
        ],
        "edges": [{"from": "each", "to": "g"}],
    }
    flow = compile_workflow(doc, sequential=True)
    assert flow.start_node.parallel is False
    assert flow.start_node.successors["default"].max_concurrent == 1
    parallel, sequential = run_workflow(doc), run_workflow(doc, sequential=True)
    assert [r["summary"] for r in parallel["each"]["results"]] == [
        r["summary"] for r in sequential["each"]["results"]
    ]


class Shout(Node):  # type: ignore[misc]
    def exec(self, _: Any) -> Any:
        return str(self.params["text"]).upper()

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["text"] = exec_res
        return "default"


def test_a_registered_type_runs_in_a_batch() -> None:
    registry = default_registry()
    registry.register("shout", Shout)
    doc = {
        "nodes": [
            {
                "id": "s",
                "type": "shout",
                "params": {"text": "${item}!"},
                "batch": {"items": ["a", "b"], "parallel": True},
            }
        ]
    }
    shared = run_workflow(doc, registry=registry)
    assert [r["text"] for r in shared["s"]["results"]] == ["A!", "B!"]


def test_a_factory_that_returns_no_node_is_refused_at_compile_time() -> None:
    registry = default_registry()
    registry.register("broken", lambda: 42)
    with pytest.raises(NodeTypeError, match=r"'broken' \(for node 'b'\).*42, not a pocketflow"):
        compile_workflow({"nodes": [{"id": "b", "type": "broken"}]}, registry=registry)


def test_a_failing_node_raises_its_own_error() -> None:
    doc = {
        "nodes": [
            {"id": "sh", "type": "shell", "params": {"cmd": ["sh", "-c", "exit 4"]}},
            llm("after", "x"),
        ],
        "edges": [{"from": "sh", "to": "after"}],
    }
    shared: dict[str, Any] = {}
    with pytest.raises(subprocess.CalledProcessError):
        run_workflow(doc, shared)
    assert "after" not in shared
