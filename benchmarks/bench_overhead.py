"""Per-item overhead against latency: parabatch, the bare pool (the floor) and the peers.

Each benchmark round runs every implementation once, in an order rotated every round, on
the same items; pytest-benchmark times the whole round and the per-implementation wall
times go into ``extra_info`` for ``report.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from _workloads import (
    ATTRIBUTION_IMPLS,
    LATENCIES_MS,
    PARALLEL_IMPLS,
    SEQUENTIAL_IMPLS,
    Mode,
    N,
    Rounds,
    make_items,
)


def _measure(benchmark: Any, impls: dict[str, Any], latency_ms: float, n: int, rounds: int) -> None:
    made = {name: factory(latency_ms / 1000) for name, (factory, _) in impls.items()}
    runner = Rounds(made, make_items(n))
    runner.warm_up()
    benchmark.extra_info["latency_ms"] = latency_ms
    benchmark.extra_info["descriptions"] = {name: desc for name, (_, desc) in impls.items()}
    benchmark.pedantic(runner.round, rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(runner.summary())
    for name, times in runner.times.items():
        assert len(times) == rounds, name


@pytest.mark.parametrize("latency_ms", LATENCIES_MS)
def test_parallel(benchmark: Any, mode: Mode, latency_ms: float) -> None:
    """N = 1,000 items, C = 10: parabatch against the pool, gather and PocketFlow."""
    benchmark.group = "parallel"
    _measure(benchmark, PARALLEL_IMPLS, latency_ms, N, mode.rounds(latency_ms))


@pytest.mark.parametrize("latency_ms", LATENCIES_MS)
def test_sequential(benchmark: Any, mode: Mode, latency_ms: float) -> None:
    """Sequential parabatch against PocketFlow's ``BatchNode`` (fewer items at high latency)."""
    benchmark.group = "sequential"
    n = mode.seq_items(latency_ms)
    _measure(benchmark, SEQUENTIAL_IMPLS, latency_ms, n, mode.rounds(latency_ms))


def test_attribution(benchmark: Any, mode: Mode) -> None:
    """At 0 ms, add parabatch's layers one by one: window, node path, copy."""
    benchmark.group = "attribution"
    _measure(benchmark, ATTRIBUTION_IMPLS, 0.0, N, mode.rounds(0.0))


def test_implementations_agree() -> None:
    """Every variant on the real chain, the fair peer included, returns the same results."""
    items = make_items(40)
    impls = {**PARALLEL_IMPLS, **SEQUENTIAL_IMPLS}
    outputs = {
        name: factory(0.0)(items)
        for name, (factory, _) in impls.items()
        if (name.startswith("pflow") and name != "pflow_seq_bare") or name == "batchnode_chain"
    }
    expected = outputs["pflow"]
    assert [r["item"] for r in expected] == items
    for name, out in outputs.items():
        assert out == expected, name
