"""The core under controlled schedules: no FORBIDDEN outcome, and exhaustive certificates."""

from __future__ import annotations

import time
from dataclasses import asdict

from _report import StressReport
from conftest import progress, scaled

from parabatch import PflowBatchNode
from parabatch.testing import Scenario, verify_batch_node
from parabatch.testing._verify import default_dfs_scenarios


def _run(report: StressReport, label: str, **kwargs: object) -> None:
    t0 = time.perf_counter()
    result = verify_batch_node(PflowBatchNode, **kwargs)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    report.add_core(label, result, seconds)
    progress(
        f"core {label}: {result.schedules:,} schedules in {seconds:.1f} s, "
        f"{'no FORBIDDEN outcome' if result.ok else 'FORBIDDEN seen'}"
    )
    assert result.ok, result.format()
    assert result.schedules == kwargs.get("budget")


def test_core_under_pct_schedules(stress_report: StressReport) -> None:
    """≥ 10,000 PCT schedules at scale 1, every line of the batch node a scheduling point."""
    _run(stress_report, "pct", strategy="pct", budget=scaled(10_000), seed=2026, depth=3)


def test_core_under_random_schedules(stress_report: StressReport) -> None:
    _run(stress_report, "random", strategy="random", budget=scaled(3_000), seed=7)


def test_core_on_free_running_threads(stress_report: StressReport) -> None:
    """Real threads, GIL released at every point: the core holds there too."""
    _run(
        stress_report,
        "free threads",
        strategy="stress",
        budget=scaled(300),
        seed=11,
        stress_yield=True,
    )


def _certify(report: StressReport, scenario: Scenario, bound: int, traced: bool) -> None:
    t0 = time.perf_counter()
    result = verify_batch_node(
        PflowBatchNode,
        strategy="dfs",
        scenarios=[scenario],
        max_preemptions=bound,
        budget=50_000,
        trace=traced,
    )
    report.certificates.append(
        {
            "scenario": scenario.to_json(),
            "bound": bound,
            "traced": traced,
            "schedules": result.schedules,
            "exhausted": result.exhausted,
            "ok": result.ok,
        }
    )
    progress(
        f"certificate bound={bound} traced={traced}: {result.schedules:,} schedules, "
        f"exhausted={result.exhausted} in {time.perf_counter() - t0:.1f} s"
    )
    assert result.ok, result.format()
    assert result.exhausted, f"space not exhausted: {asdict(scenario)}"


def test_core_certified_exhaustively_at_two_preemptions(stress_report: StressReport) -> None:
    """2 workers x 2-3 items: every schedule with <= 2 preemptions at the scheduling points."""
    for scenario in default_dfs_scenarios():
        _certify(stress_report, scenario, bound=2, traced=False)


def test_core_certified_line_by_line_at_one_preemption(stress_report: StressReport) -> None:
    """The same scenarios with every line of the batch node a point, <= 1 preemption."""
    for scenario in default_dfs_scenarios()[:3]:
        _certify(stress_report, scenario, bound=1, traced=True)
