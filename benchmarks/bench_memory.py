"""Peak traced memory of a parallel batch against the number of items (tracemalloc)."""

from __future__ import annotations

from typing import Any

from _workloads import Mode, measure_memory


def test_memory(benchmark: Any, mode: Mode) -> None:
    """Peak, results and working memory for each size; the benchmark times the largest."""
    benchmark.group = "memory"
    rows = []
    for n in mode.memory_sizes:
        rows.append(
            min(
                (measure_memory(n) for _ in range(mode.memory_rounds)),
                key=lambda r: r["working_bytes"],
            )
        )
    benchmark.extra_info["memory"] = rows
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert [r["n"] for r in rows] == list(mode.memory_sizes)
