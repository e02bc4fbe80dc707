"""The scheduler driving parabatch's own batch node through its ``executor`` hook."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from pocketflow import Node

from parabatch import CallLog, NamespacedNodeWrapper, PflowBatchNode
from parabatch.testing import (
    ControlledExecutor,
    Lock,
    check_dfs,
    check_random,
    simulated_call,
)
from parabatch.testing.broken import SharedRetryCounter


class AlwaysFails(Node):  # type: ignore[misc]
    """Every attempt waits on a simulated LLM call, then fails."""

    def prep(self, shared: dict[str, Any]) -> Any:
        return shared["item"]

    def exec(self, item: Any) -> Any:
        simulated_call("llm")
        raise RuntimeError(f"item {item} failed")


class Doubles(Node):  # type: ignore[misc]
    def prep(self, shared: dict[str, Any]) -> Any:
        return shared["item"]

    def exec(self, item: Any) -> Any:
        simulated_call("llm", latency=0.5)
        return item * 2

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared["double"] = exec_res
        return "default"


def _every_failure_is_reported(cls: type[PflowBatchNode]) -> Callable[[], None]:
    def fn() -> None:
        node = cls(
            NamespacedNodeWrapper(AlwaysFails(), "n"),
            "n",
            {
                "items": [1, 2],
                "parallel": True,
                "max_concurrent": 2,
                "max_retries": 2,
                "retry_wait": 0.25,
                "error_handling": "continue",
            },
            executor=ControlledExecutor,
        )
        shared: dict[str, Any] = {}
        node.run(shared)
        out = shared["n"]
        assert out["error_count"] == 2, f"a failure was swallowed: {out}"
        attempts = [e["attempts"] for e in out["errors"]]
        assert attempts == [2, 2], f"wrong number of attempts per item: {attempts}"

    return fn


@pytest.mark.slow
def test_the_core_retries_are_certified_within_two_preemptions() -> None:
    result = check_dfs(_every_failure_is_reported(PflowBatchNode), max_preemptions=2)
    assert result.ok and result.exhausted
    print(f"core retry loop certified in {result.schedules_explored} schedules")


def test_the_shared_retry_counter_is_caught() -> None:
    result = check_dfs(
        _every_failure_is_reported(SharedRetryCounter), max_preemptions=2, raise_on_failure=False
    )
    assert result.failure is not None, f"not caught in {result.schedules_explored} schedules"
    assert "wrong number of attempts" in result.failure.message
    print(f"shared retry counter caught at schedule {result.first_failure_at}")


@pytest.mark.parametrize("max_concurrent", [1, 2, 3])
def test_results_in_input_order_under_random_schedules(max_concurrent: int) -> None:
    def fn() -> None:
        shared: dict[str, Any] = {"xs": [1, 2, 3, 4], "__llm_calls__": CallLog(lock=Lock())}
        node = PflowBatchNode(
            NamespacedNodeWrapper(Doubles(), "d"),
            "d",
            {"items": "${xs}", "parallel": True, "max_concurrent": max_concurrent},
            executor=ControlledExecutor,
        )
        node.run(shared)
        assert [r["double"] for r in shared["d"]["results"]] == [2, 4, 6, 8]

    assert check_random(fn, iterations=100, seed=max_concurrent).ok
