"""ParallelGroupNode under the same properties, through the verify API, with its control."""

from __future__ import annotations

import time

from _report import StressReport
from conftest import progress, scaled

from parabatch.testing import GroupAsBatch, Scenario, detection, verify_batch_node
from parabatch.testing.broken import BROKEN_GROUP_SUBJECTS

# The group's own module, its per-child code and the adapter's: every line a scheduling point.
TRACE = ["parabatch._group", "parabatch._work", "parabatch.testing._group_subject"]


def test_group_under_random_schedules(stress_report: StressReport) -> None:
    t0 = time.perf_counter()
    report = verify_batch_node(
        GroupAsBatch,
        strategy="random",
        budget=scaled(2_000),
        seed=3,
        max_retries=1,
        trace=TRACE,
        name="ParallelGroupNode",
    )
    stress_report.add_core("group (random)", report, time.perf_counter() - t0)
    progress(f"group: {report.schedules:,} schedules, ok={report.ok}")
    assert report.ok, report.format()


def test_group_certified_at_two_preemptions(stress_report: StressReport) -> None:
    scenarios = [
        Scenario(items=("a", "b"), fail=(0, 0), max_concurrent=2, call_log="gil"),
        Scenario(
            items=("a", "b", "c"), fail=(1, 0, 1), max_concurrent=2, error_handling="fail_fast"
        ),
    ]
    for scenario in scenarios:
        report = verify_batch_node(
            GroupAsBatch,
            strategy="dfs",
            scenarios=[scenario],
            max_preemptions=2,
            budget=50_000,
            trace=False,
        )
        stress_report.certificates.append(
            {
                "scenario": "group " + scenario.to_json(),
                "bound": 2,
                "traced": False,
                "schedules": report.schedules,
                "exhausted": report.exhausted,
                "ok": report.ok,
            }
        )
        assert report.ok, report.format()
        assert report.exhausted


def test_group_without_copies_is_caught(stress_report: StressReport) -> None:
    for name, subject in BROKEN_GROUP_SUBJECTS.items():
        found = detection(subject, seeds=range(20), budget=200, max_retries=1, trace=TRACE)
        entry = stress_report.control(name)
        entry["catches"] = subject.catches  # type: ignore[attr-defined]
        entry["random"] = {k: v for k, v in found.items() if k != "counterexample"}
        progress(f"{name}: {found['caught']}/20, median {found['median']}")
        assert found["caught"] == 20, found
        assert subject.catches in found["properties"]  # type: ignore[attr-defined]
