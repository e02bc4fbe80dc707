"""benchmarks/report.py on a small pytest-benchmark JSON of every group it reads.

The numbers are made up and chosen so that each rule shows: a workflow round far off the
others (a mean would move, a median does not), a nanosecond-scale cost, a plugin cost on
either side of its limit.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPORT = Path(__file__).resolve().parent.parent / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _overhead(group: str, latency: float, times: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "group": group,
        "name": f"test_{group}[{latency}]",
        "extra_info": {"n_items": 1000, "latency_ms": latency, "times_s": times},
        "stats": {"min": 0.1, "median": 0.1, "rounds": 3},
    }


def raw(plugin_with_s: float = 0.210) -> dict[str, Any]:
    workflow = "workflow: 24 entries, 20 ms per call"
    return {
        "machine_info": {"python_version": "3.11.7", "cpu": {"brand_raw": "test cpu"}},
        "datetime": "2026-11-30T00:00:00",
        "benchmarks": [
            _overhead(
                "parallel",
                lat,
                {"pool": [1.0, 1.0, 1.0], "pflow": [1.004, 1.006, 1.2]},
            )
            for lat in (0.0, 1.0, 10.0)
        ]
        + [
            _overhead(
                "sequential",
                0.0,
                {
                    "batchnode": [1.0, 1.0, 1.0],
                    "pflow_seq": [1.1, 1.1, 1.1],
                    "batchnode_chain": [1.05, 1.05, 1.05],
                },
            ),
            {
                "group": "memory",
                "name": "test_memory",
                "extra_info": {
                    "memory": [
                        {"n": 1000, "peak_bytes": 10, "results_bytes": 5, "working_bytes": 5},
                        {"n": 10000, "peak_bytes": 60, "results_bytes": 54, "working_bytes": 6},
                    ]
                },
                "stats": {"min": 1, "median": 1, "rounds": 1},
            },
            {
                "group": "plugin",
                "name": "test_plugin_load_cost",
                "extra_info": {
                    "plugin_session": {
                        "runs": 4,
                        "with_s": [plugin_with_s, plugin_with_s + 0.002, 0.9, plugin_with_s],
                        "without_s": [0.200, 0.201, 0.199, 0.8],
                    }
                },
                "stats": {"min": 5, "median": 5, "rounds": 1},
            },
            {
                "group": workflow,
                "name": "test_workflow[sequential]",
                "params": {"execution": "sequential"},
                "extra_info": {},
                "stats": {"min": 1.0, "median": 1.1, "mean": 1.1, "rounds": 5},
            },
            {
                "group": workflow,
                "name": "test_workflow[parallel]",
                "params": {"execution": "parallel"},
                "extra_info": {},
                # one slow round: the mean (0.41) would give 2.7, the median 5.5
                "stats": {"min": 0.19, "median": 0.2, "mean": 0.41, "rounds": 5},
            },
            {
                "group": None,
                "name": "test_checkpoint_cost_without_scheduler",
                "fullname": "benchmarks/bench_scheduler.py::test_checkpoint_cost_without_scheduler",
                "extra_info": {},
                "stats": {"min": 8.5e-8, "median": 9.1e-8, "rounds": 100_000},
            },
        ],
    }


def _figure(res: dict[str, Any], start: str) -> dict[str, Any]:
    (row,) = [t for t in res["targets"] if t["target"].startswith(start)]
    return row


def test_tiny_costs_print_in_ns_not_as_zero_seconds(report: ModuleType) -> None:
    md = report.render(report.analyse(raw()))
    assert "0.0000" not in md
    assert "| test_checkpoint_cost_without_scheduler | 85.0 ns | 91.0 ns |" in md
    assert [report.duration(x) for x in (8.5e-8, 1.234e-6, 0.0456, 999.6e-6, 2.5)] == [
        "85.0 ns",
        "1.23 µs",
        "45.6 ms",
        "1.00 ms",
        "2.50 s",
    ]


def test_the_workflow_speedup_is_a_ratio_of_medians(report: ModuleType) -> None:
    res = report.analyse(raw())
    assert res["workflow"]["speedup"] == pytest.approx(1.1 / 0.2)
    row = _figure(res, "workflow, sequential ÷ parallel")
    assert row["value"] == pytest.approx(5.5) and row["kind"] == "reference"
    assert f"5.50{report.TIMES}" in report.render(res)


def test_the_plugin_cost_is_judged_against_25_ms(report: ModuleType) -> None:
    cheap = report.analyse(raw(plugin_with_s=0.210))
    row = _figure(cheap, "pytest session time added by the plugin")
    # medians: with [0.210, 0.210, 0.212, 0.9] -> 0.211; without -> 0.2005
    expected = (statistics.median([0.21, 0.212, 0.9, 0.21]) - 0.2005) * 1000
    assert row["value"] == pytest.approx(expected)
    assert (row["unit"], row["limit"], row["verdict"]) == ("ms", 25.0, "PASS")
    costly = report.analyse(raw(plugin_with_s=0.240))
    assert _figure(costly, "pytest session time")["verdict"] == "FAIL"
    md = report.render(costly)
    assert "| ≤ 25.0 ms | **FAIL** |" in md


def test_a_new_figure_is_one_function_in_the_table(
    report: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def process_pool(res: dict[str, Any]) -> list[dict[str, Any]]:
        return report.figure("process pool ÷ threads at 10 ms", 1.2, 1.1)  # type: ignore[no-any-return]

    monkeypatch.setattr(report, "FIGURES", [*report.FIGURES, process_pool])
    res = report.analyse(raw())
    assert _figure(res, "process pool")["verdict"] == "FAIL"
    x = report.TIMES
    assert f"| process pool ÷ threads at 10 ms | 1.200{x} | - | ≤ 1.100{x} | **FAIL** |" in (
        report.render(res)
    )


def test_the_plot_is_one_series_of_judged_figures_against_their_limits(
    report: ModuleType,
) -> None:
    pyplot = pytest.importorskip("matplotlib.pyplot")  # in the bench extra
    from matplotlib.collections import PathCollection

    res = report.analyse(raw(plugin_with_s=0.240))
    judged = [t for t in res["targets"] if t["kind"] == "target"]
    fig = report.judged_figure(res)
    try:
        (ax,) = fig.axes
        (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]  # one series
        assert ax.get_legend() is None
        assert ax.get_xscale() == "log"
        ticks = sorted(zip(ax.get_yticks(), ax.get_yticklabels()), key=lambda t: -t[0])
        assert [label.get_text() for _, label in ticks] == [t["target"] for t in judged]
        shares = [t["value"] / t["limit"] for t in judged]
        assert [x for x, _ in dots.get_offsets()] == pytest.approx(shares)
        low, high = ax.get_xlim()
        assert low < min(shares) and max(shares) < high  # every dot in view
    finally:
        pyplot.close(fig)


@pytest.mark.parametrize("case", ["below zero", "outside its spread"])
def test_the_plot_takes_a_figure_below_zero_or_outside_its_spread(
    report: ModuleType, case: str
) -> None:
    # A figure that is a difference of two noisy medians (the plugin's added time) can be
    # below zero, and a median of paired ratios can lie outside their spread: both must
    # still be drawn, not end the report.
    pyplot = pytest.importorskip("matplotlib.pyplot")
    res = report.analyse(raw(plugin_with_s=0.150 if case == "below zero" else 0.210))
    judged = [t for t in res["targets"] if t["kind"] == "target" and t["limit"]]
    if case == "below zero":
        assert min(t["value"] for t in judged) < 0
    else:
        for t in judged:
            t["iqr"] = (t["value"] * 1.2, t["value"] * 1.5)
    fig = report.judged_figure(res)
    pyplot.close(fig)
