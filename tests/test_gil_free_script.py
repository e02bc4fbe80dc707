"""The counting logic of stress/gil_free.py, checked with tiny counts.

The script's real measurements need many threads and many updates; here we only check
that it counts right: a deterministically lossy operation must be reported as lossy, a
lossless one as lossless, and the JSON/markdown/merge plumbing must hold together.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "stress" / "gil_free.py"


@pytest.fixture(scope="module")
def gil_free() -> Any:
    spec = importlib.util.spec_from_file_location("gil_free_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _lockstep_lost_update(gil_free: Any, threads: int) -> Any:
    """An RMW whose window is held open by barriers: every round loses threads-1 updates.

    All threads read, wait until all have read, then all write the same value + 1.
    """

    def setup(_log_factory: Any) -> dict[str, Any]:
        return {
            "n": 0,
            "read": threading.Barrier(threads),
            "wrote": threading.Barrier(threads),
        }

    def worker(state: dict[str, Any], tid: int, count: int) -> None:
        for _ in range(count):
            value = state["n"]
            state["read"].wait()
            state["n"] = value + 1
            state["wrote"].wait()

    return gil_free.Operation(
        "lockstep",
        "v = d[k]; barrier; d[k] = v + 1",
        "control",
        False,
        5,
        setup,
        worker,
        lambda state: state["n"],
    )


def test_counting_detects_a_deterministic_loss(gil_free: Any) -> None:
    threads, count, trials = 3, 7, 2
    op = _lockstep_lost_update(gil_free, threads)
    cell = gil_free.run_cell(op, "-", list, trials, threads, count, base_seed=1)
    assert cell["trials"] == trials
    assert cell["trials_with_loss"] == trials
    assert cell["lost_per_trial"] == [(threads - 1) * count] * trials
    assert cell["lost_total"] == trials * (threads - 1) * count
    assert cell["expected_total"] == trials * threads * count
    assert cell["trials_with_excess"] == 0


def test_counting_detects_a_dropping_append(gil_free: Any) -> None:
    class DroppingLog(list):  # type: ignore[type-arg]
        def append(self, item: Any) -> None:
            if item % 10:
                super().append(item)

    op = gil_free.OPERATIONS_BY_NAME["append"]
    cell = gil_free.run_cell(op, "lock", DroppingLog, 2, 4, 100, base_seed=2)
    # Items 0..399 in each trial; every tenth one is dropped.
    assert cell["lost_per_trial"] == [40, 40]
    assert cell["trials_with_loss"] == 2
    assert cell["final_types"] == ["DroppingLog"]


@pytest.mark.parametrize("mode", ["gil", "lock"])
def test_lossless_append_counts_zero(gil_free: Any, mode: str) -> None:
    log_cls, _ = gil_free.load_calllog()
    factory = list if mode == "gil" else log_cls
    op = gil_free.OPERATIONS_BY_NAME["append"]
    cell = gil_free.run_cell(op, mode, factory, 2, 4, 500, base_seed=3)
    assert cell["lost_per_trial"] == [0, 0]
    assert cell["trials_with_loss"] == 0


def test_locked_rmw_loses_nothing(gil_free: Any) -> None:
    op = gil_free.OPERATIONS_BY_NAME["locked_rmw_count"]
    cell = gil_free.run_cell(op, "-", list, 2, 4, 500, base_seed=4)
    assert cell["lost_total"] == 0


def test_calllog_is_the_core_one(gil_free: Any) -> None:
    log_cls, source = gil_free.load_calllog()
    try:
        import parabatch
    except ImportError:  # the package's dependencies are missing: the module on its own
        assert source == "src/parabatch/_calllog.py (package __init__ skipped)"
        assert log_cls.__name__ == "CallLog"
    else:
        assert log_cls is parabatch.CallLog
        assert source == "parabatch.CallLog"
    assert issubclass(log_cls, list)
    assert log_cls.append is not list.append


def test_trial_seeds_are_stable_and_distinct(gil_free: Any) -> None:
    seeds = {
        gil_free.trial_seed(7, op, mode, t)
        for op in ("append", "attr_iadd")
        for mode in ("gil", "lock")
        for t in range(5)
    }
    assert len(seeds) == 20
    assert gil_free.trial_seed(7, "append", "gil", 0) == gil_free.trial_seed(7, "append", "gil", 0)


def test_run_write_and_merge(gil_free: Any, tmp_path: Path) -> None:
    counts = {op.name: 3 for op in gil_free.OPERATIONS}
    a = gil_free.run_all(gil_free.OPERATIONS, 1, 2, 5, counts, label="interp-A")
    b = gil_free.run_all(gil_free.OPERATIONS, 1, 2, 5, counts, label="interp-B")
    uses_log = sum(1 for op in gil_free.OPERATIONS if op.uses_log)
    assert len(a["results"]) == len(gil_free.OPERATIONS) + uses_log
    paths = []
    for name, report in (("a.json", a), ("b.json", b)):
        path = tmp_path / name
        path.write_text(json.dumps(report))
        paths.append(str(path))
    md = tmp_path / "merged.md"
    merged_json = tmp_path / "merged.json"
    assert gil_free.main(["--merge", *paths, "--md", str(md), "--json", str(merged_json)]) == 0
    text = md.read_text()
    assert "| interp-A | gil | append |" in text
    assert "| interp-B | lock | append |" in text
    assert "| operation | mode | code | interp-A | interp-B |" in text
    assert len(json.loads(merged_json.read_text())["reports"]) == 2


def test_cli_single_run(gil_free: Any, tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    rc = gil_free.main(
        [
            "--json",
            str(out_json),
            "--md",
            str(out_md),
            "--trials",
            "1",
            "--threads",
            "2",
            "--scale",
            "0.001",
            "--count",
            "control_rmw_sleep=200",
            "--ops",
            "append,control_rmw_sleep",
            "--quiet",
        ]
    )
    assert rc == 0
    report = json.loads(out_json.read_text())
    assert [(r["operation"], r["mode"]) for r in report["results"]] == [
        ("append", "gil"),
        ("append", "lock"),
        ("control_rmw_sleep", "-"),
    ]
    assert report["config"]["counts"]["append"] == 250
    assert report["config"]["counts"]["control_rmw_sleep"] == 200
    assert report["results"][-1]["trials_with_loss"] == 1
    assert "control_rmw_sleep" in out_md.read_text()
