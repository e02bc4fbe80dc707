"""pytest-benchmark configuration shared by the ``bench_*.py`` suites."""

from __future__ import annotations

from typing import Any

import pytest
from _workloads import Mode, current_mode


@pytest.fixture(scope="session")
def mode() -> Mode:
    """``PARABATCH_BENCH=short`` (CI) or ``full``."""
    return current_mode()


def pytest_benchmark_update_json(config: Any, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Drop every round's raw time from ``--benchmark-json``: the statistics stay.

    The micro-benchmarks run hundreds of thousands of rounds, which made the raw file tens
    of megabytes; ``report.py`` reads only the statistics and ``extra_info``.
    """
    for bench in output_json.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)
