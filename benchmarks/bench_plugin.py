"""What installing parabatch adds to another project's pytest session: the plugin's load cost.

A fresh one-test project (its own rootdir, no configuration) is run with ``pytest -q``, with
and without ``-p no:parabatch``, interleaved, 12 times each after one warm-up of each; the
figure is the difference of the two medians (target: at most 25 ms, judged by
``report.py``). Every run uses this interpreter and its installed plugins, so everything
but parabatch's plugin is in both columns. What the plugin imports when loaded is tested,
untimed, in tests/testing/test_plugin.py.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUNS = 12
WITHOUT = ("-p", "no:parabatch")


def _pytest(project: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def _session(project: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    _pytest(project, *extra)
    return time.perf_counter() - t0


def _plugin_loaded(project: Path, *extra: str) -> bool:
    return "@pytest.mark.parabatch_verify" in _pytest(project, "--markers", *extra)


def measure(project: Path, runs: int = RUNS) -> dict[str, Any]:
    """Interleaved sessions with and without the plugin; times in seconds."""
    (project / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    (project / "pytest.ini").write_text("[pytest]\n")  # its own rootdir and configuration
    # Warm-up (bytecode caches), and the check that the two columns differ by the plugin.
    if not _plugin_loaded(project) or _plugin_loaded(project, *WITHOUT):
        raise RuntimeError("parabatch's pytest11 entry point is not installed: nothing to measure")
    with_plugin: list[float] = []
    without: list[float] = []
    for i in range(runs):
        # Alternate which goes first, so neither always follows the other.
        order = [(with_plugin, ()), (without, WITHOUT)]
        for times, extra in order if i % 2 == 0 else order[::-1]:
            times.append(_session(project, *extra))
    return {
        "runs": runs,
        "with_s": with_plugin,
        "without_s": without,
        "added_ms": (statistics.median(with_plugin) - statistics.median(without)) * 1000,
    }


def test_plugin_load_cost(benchmark: Any, tmp_path: Path) -> None:
    """The added session time; pytest-benchmark times the whole measurement once."""
    benchmark.group = "plugin"
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(measure(tmp_path))

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["plugin_session"] = result
    assert len(result["with_s"]) == len(result["without_s"]) == RUNS
