"""The stress job's report and progress lines (stress/_report.py, stress/conftest.py).

The report is filled with realistic data — real outcome tables, the real certificate
scenarios, every broken subject with large counts and more run labels than the suites use —
and its console summary must stay within 120 columns with no trailing spaces, its tables
free of scenario JSON.
"""

from __future__ import annotations

import doctest
import importlib.util
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from parabatch import PflowBatchNode
from parabatch.testing import verify_batch_node
from parabatch.testing._verify import default_dfs_scenarios
from parabatch.testing.broken import BROKEN_GROUP_SUBJECTS, BROKEN_SUBJECTS, NoCopy

STRESS = Path(__file__).resolve().parent.parent / "stress"

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def report_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stress_report", STRESS / "_report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def full_report(report_module: ModuleType) -> Any:
    report = report_module.StressReport(scale=1.0)
    labels = [
        "pct",
        "random",
        "free threads",
        "group (random)",
        "unmodified BatchNode (random)",
        "unmodified AsyncParallelBatchNode (pct)",
    ]
    for i, label in enumerate(labels):
        result = verify_batch_node(PflowBatchNode, budget=3, seed=i)
        report.add_core(label, result, 1234.5)
    broken = verify_batch_node(NoCopy, budget=30, seed=1)  # a FORBIDDEN count to flag
    assert not broken.ok
    report.add_core("no copy (a control in the core table)", broken, 1.0)
    for scenario in default_dfs_scenarios():
        for bound, traced in ((2, False), (1, True)):
            report.certificates.append(
                {
                    "scenario": scenario.to_json(),
                    "bound": bound,
                    "traced": traced,
                    "schedules": 123_456,
                    "exhausted": bound == 2,
                    "ok": True,
                }
            )
    report.certificates.append(
        {
            "scenario": "group " + default_dfs_scenarios()[0].to_json(),
            "bound": 2,
            "traced": False,
            "schedules": 99,
            "exhausted": True,
            "ok": True,
        }
    )
    ce = broken.counterexamples[0]
    for name, subject in {**BROKEN_SUBJECTS, **BROKEN_GROUP_SUBJECTS}.items():
        entry = report.control(name)
        entry["catches"] = subject.catches
        found = {"seeds": 20, "caught": 20, "median": 123.5, "schedules_to_detection": [200]}
        entry["random"] = found
        entry["pct"] = found
        entry["dfs_first"] = 20_000
        entry["stress"] = {"forbidden": 10_000, "runs": 10_000}
        entry["stress_yield"] = {"forbidden": 9_999, "runs": 10_000}
        entry["shrunk"] = {
            "scenario": asdict(ce.scenario),
            "schedule": ce.schedule,
            "preemptions": ce.preemptions,
            "message": ce.message,
            "trace": ce.trace,
            "replay": ce.replay,
        }
    return report


def test_the_console_summary_fits_120_columns_without_trailing_spaces(full_report: Any) -> None:
    text = full_report.text()
    too_wide = [line for line in text.splitlines() if len(line) > 120]
    assert not too_wide, f"{len(too_wide)} lines over 120 columns, e.g. {too_wide[0]!r}"
    trailing = [line for line in text.splitlines() if line != line.rstrip()]
    assert not trailing, f"trailing spaces: {trailing[:3]}"
    # Nothing dropped to make it fit: every run, subject and certificate is there.
    for label in full_report.tables:
        assert label in text, label
    for name in full_report.controls:
        assert name in text, name
    # The certificates fit in one block: no column pushed below the others.
    certificates = text.split("certificates (")[1].split("negative controls:")[0]
    assert "\n\n" not in certificates.strip()
    assert "<-- SEEN" in text  # the FORBIDDEN count is flagged
    assert "{" not in text, "scenario JSON belongs in the Markdown details, not the console"


def test_the_markdown_names_scenarios_and_keeps_their_json_in_one_place(full_report: Any) -> None:
    md = full_report.markdown()
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert rows
    assert not [r for r in rows if "{" in r], "scenario JSON in a table cell"
    assert max(len(r) for r in rows) <= 200
    scenarios = {c["scenario"] for c in full_report.certificates}
    certificates = md.split("## Negative controls")[0]  # replay lines repeat their JSON
    for scenario in scenarios:
        assert certificates.count(f"`{scenario}`") == 1, scenario
    names = full_report.scenario_names()
    assert sorted(names.values(), key=lambda n: int(n[1:])) == [
        f"S{i}" for i in range(1, len(scenarios) + 1)
    ]
    assert "| S1 | 2 items, 2 workers, continue, 2 attempts, fails [1,0], lock | 2 |" in md


def test_text_table_wraps_wide_tables_keeping_the_key_column(report_module: ModuleType) -> None:
    head = ["key", *(f"column {i}" for i in range(30))]
    rows = [["row a", *(f"{i:,}" for i in range(30))], ["row b", *("x" * 5 for _ in range(30))]]
    text = report_module.text_table(head, rows, right=range(1, 31))
    lines = text.splitlines()
    assert all(len(line) <= 120 and line == line.rstrip() for line in lines)
    blocks = text.split("\n\n")
    assert len(blocks) > 1
    assert all(block.splitlines()[1].strip().startswith("row a") for block in blocks)
    assert sum(block.splitlines()[0].count("column") for block in blocks) == 30
    huge = report_module.text_table(["k", "v"], [["a", "y" * 500]])
    assert max(len(line) for line in huge.splitlines()) <= 120


def test_the_report_module_examples_hold(report_module: ModuleType) -> None:
    result = doctest.testmod(report_module)
    assert result.attempted >= 2 and result.failed == 0


def test_progress_lines_reach_the_terminal_while_output_is_captured(
    pytester: pytest.Pytester,
) -> None:
    for name in ("conftest.py", "_report.py"):
        shutil.copy(STRESS / name, pytester.path / name)
    pytester.makepyfile(
        test_progress="""
        from conftest import progress

        def test_progress():
            print("captured print")
            progress("halfway there")
            progress("done")
        """
    )
    # Default capturing (fd): the progress lines must still show, the plain print must not.
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*[[]stress[]] halfway there", "*[[]stress[]] done"])
    assert "captured print" not in result.stdout.str() + result.stderr.str()
