"""Hypothesis properties of the batch node, on real threads.

These draw items, failure plans, latencies and configs; the thread interleavings are left
to the OS here (the controlled scheduler and its stress suites own those).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parabatch import PflowBatchNode

from .nodes import Tracker, Work, chain

items_st = st.lists(st.integers(0, 10_000), unique=True, max_size=12)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    items = draw(items_st)
    fail = {i: draw(st.integers(0, 3)) for i in items}
    latency = {i: draw(st.sampled_from([0.0, 0.0, 0.0005, 0.001])) for i in items}
    return {
        "items": items,
        "fail": fail,
        "latency": latency,
        "max_concurrent": draw(st.integers(1, 5)),
        "max_retries": draw(st.integers(1, 3)),
        "call_log": draw(st.sampled_from(["lock", "gil"])),
    }


def run(
    s: dict[str, Any], *, parallel: bool, error_handling: str
) -> tuple[dict[str, Any], Tracker, Any]:
    tracker = Tracker()
    node = PflowBatchNode(
        chain(Work(tracker, fail=s["fail"], latency=s["latency"], usage=True)),
        "n",
        {
            "items": s["items"] or "${empty}",
            "parallel": parallel,
            "max_concurrent": s["max_concurrent"],
            "max_retries": s["max_retries"],
            "error_handling": error_handling,
        },
        call_log=s["call_log"],
    )
    shared: dict[str, Any] = {"empty": []}
    raised = None
    try:
        node.run(shared)
    except ValueError as exc:
        raised = exc
    return shared, tracker, raised


def summary(shared: dict[str, Any]) -> tuple[Any, ...]:
    out = shared["n"]
    return (
        [
            None if r is None else (r["item"], r["out"]["value"], r["out"]["attempt"])
            for r in out["results"]
        ],
        [(e["index"], e["item"], e["error"]) for e in (out["errors"] or [])],
        out["count"],
        out["success_count"],
        out["error_count"],
        sorted((c["batch_item_index"], c["tokens"]) for c in shared["__llm_calls__"]),
    )


@given(scenarios())
def test_continue_parallel_equals_sequential(s: dict[str, Any]) -> None:
    seq, seq_tracker, _ = run(s, parallel=False, error_handling="continue")
    par, par_tracker, _ = run(s, parallel=True, error_handling="continue")
    assert summary(par) == summary(seq)
    assert par_tracker.attempts == seq_tracker.attempts
    assert par_tracker.max_in_flight <= s["max_concurrent"]


@given(scenarios(), st.booleans())
def test_continue_exactly_one_entry_per_item_and_attempts(
    s: dict[str, Any], parallel: bool
) -> None:
    shared, tracker, raised = run(s, parallel=parallel, error_handling="continue")
    assert raised is None
    out = shared["n"]
    error_index = [e["index"] for e in out["errors"] or []]
    assert error_index == sorted(error_index)
    for i, item in enumerate(s["items"]):
        failed = s["fail"][item] >= s["max_retries"]
        assert (out["results"][i] is None) == failed == (i in error_index)
        if not failed:
            assert out["results"][i]["item"] == item  # results[i] belongs to items[i]
        assert tracker.attempts[item] == min(s["fail"][item] + 1, s["max_retries"])
    assert out["success_count"] + out["error_count"] == out["count"] == len(s["items"])
    assert sorted(c["batch_item_index"] for c in shared["__llm_calls__"]) == [
        i for i, item in enumerate(s["items"]) if s["fail"][item] < s["max_retries"]
    ]


@given(scenarios(), st.booleans())
def test_fail_fast_raises_lowest_index_failure_among_items_that_ran(
    s: dict[str, Any], parallel: bool
) -> None:
    shared, tracker, raised = run(s, parallel=parallel, error_handling="fail_fast")
    out = shared["n"]
    failing = [i for i, item in enumerate(s["items"]) if s["fail"][item] >= s["max_retries"]]
    errors = out["errors"] or []
    if not failing:
        assert raised is None and not errors
        return
    assert raised is not None and errors, "a failing item must abort the batch"
    assert errors[0]["exception"] is raised
    assert [e["index"] for e in errors] == sorted(e["index"] for e in errors)
    assert out["batch_metadata"]["aborted"] is True
    ran = {i for i, item in enumerate(s["items"]) if tracker.attempts.get(item)}
    assert errors[0]["index"] == min(i for i in failing if i in ran)
    for i in range(len(s["items"])):
        result = out["results"][i]
        in_errors = any(e["index"] == i for e in errors)
        if i not in ran:
            assert result is None and not in_errors
        else:
            assert (result is None) == in_errors
    if not parallel:
        assert ran == set(range(failing[0] + 1))


@pytest.mark.parametrize("parallel", [False, True])
def test_properties_see_a_broken_ordering(parallel: bool) -> None:
    """The summary used above does distinguish orders: reversing results changes it."""
    s = {
        "items": [1, 2],
        "fail": {1: 0, 2: 0},
        "latency": {1: 0.0, 2: 0.0},
        "max_concurrent": 2,
        "max_retries": 1,
        "call_log": "lock",
    }
    shared, _, _ = run(s, parallel=parallel, error_handling="continue")
    flipped = {
        "n": dict(shared["n"], results=shared["n"]["results"][::-1]),
        "__llm_calls__": shared["__llm_calls__"],
    }
    assert summary(flipped) != summary(shared)
