"""Known-broken subjects: each must be caught, or the suites are not looking.

As qcheck-lin's negative tests: a control that passes fails the run. Each is searched with
20 seeds and at most 200 schedules per seed; the report gives the detection rate, the
schedules to detection, the shrunk counterexample and its replay line.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import pytest
from _report import StressReport
from conftest import progress, scaled

from parabatch.testing import detection, shrink, verify_batch_node
from parabatch.testing.broken import BROKEN_SUBJECTS

SEEDS = range(max(5, scaled(20)))  # 20 at scale 1, the target; CI's short run uses fewer
BUDGET = 200


@pytest.mark.parametrize("name", sorted(BROKEN_SUBJECTS))
def test_broken_subject_is_caught(name: str, stress_report: StressReport) -> None:
    subject = BROKEN_SUBJECTS[name]
    catches = subject.catches  # type: ignore[attr-defined]
    entry = stress_report.control(name)
    entry["catches"] = catches
    t0 = time.perf_counter()

    # Each seed searches until the check of the property the control breaks flags it,
    # whichever other property flags it first.
    found = detection(subject, seeds=SEEDS, budget=BUDGET, strategy="random", flagged_by=catches)
    entry["random"] = {k: v for k, v in found.items() if k != "counterexample"}
    pct = detection(
        subject, seeds=SEEDS, budget=BUDGET, strategy="pct", depth=3, flagged_by=catches
    )
    entry["pct"] = {k: v for k, v in pct.items() if k != "counterexample"}
    # Every line a scheduling point only where the bug is a read-modify-write between lines.
    dfs = verify_batch_node(
        subject,
        strategy="dfs",
        max_preemptions=2,
        budget=20_000,
        stop_on_forbidden=catches,
        trace=catches == "calls",
    )
    entry["dfs_first"] = dfs.first_forbidden_at

    shrunk = shrink(subject, budget=2000, seed=0)  # not scaled: a counterexample is required
    if shrunk is not None:
        entry["shrunk"] = {
            "scenario": asdict(shrunk.scenario),
            "schedule": shrunk.schedule,
            "preemptions": shrunk.preemptions,
            "message": shrunk.message,
            "trace": shrunk.trace,
            "replay": shrunk.replay,
        }
    progress(
        f"{name}: random {found['caught']}/{found['seeds']} (median {found['median']}), "
        f"pct {pct['caught']}/{pct['seeds']}, dfs first {dfs.first_forbidden_at} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    assert found["caught"] == len(SEEDS), (
        f"{name} escaped: caught in {found['caught']} of {len(SEEDS)} seeds "
        f"within {BUDGET} schedules each; detections at {found['schedules_to_detection']}"
    )
    assert catches in found["properties"], (
        f"{name} was caught by {found['properties']}, not by the property it breaks ({catches})"
    )
    assert max(found["schedules_to_detection"]) <= BUDGET
    assert shrunk is not None, f"Hypothesis found no counterexample for {name}"


@pytest.mark.parametrize("name", sorted(BROKEN_SUBJECTS))
def test_broken_subject_on_free_threads(name: str, stress_report: StressReport) -> None:
    """The baseline the scheduler is compared with: real threads, no control, no replay.

    Measured, not asserted: how often free-running threads show the bug, without and with
    a ``time.sleep(0)`` at each scheduling point. What is asserted is that the measurement
    is sound: every run completed and was classified.
    """
    subject = BROKEN_SUBJECTS[name]
    entry = stress_report.control(name)
    entry.setdefault("catches", subject.catches)  # type: ignore[attr-defined]
    runs = scaled(100, 20)
    for key, yielding in (("stress", False), ("stress_yield", True)):
        free = verify_batch_node(
            subject, strategy="stress", budget=runs, seed=5, stress_yield=yielding
        )
        entry[key] = {"forbidden": free.forbidden_runs, "runs": free.schedules}
        assert free.schedules == runs
        assert free.harness_failures == 0, free.format()
    progress(
        f"{name} on free threads: {entry['stress']['forbidden']}/{runs} runs, "
        f"with sleep(0) {entry['stress_yield']['forbidden']}/{runs}"
    )
