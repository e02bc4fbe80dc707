"""Shared set-up of the stress suites: the scale knob, the report, the Hypothesis profile."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from _report import StressReport
from hypothesis import HealthCheck, settings

#: One knob for longer runs: PARABATCH_STRESS_SCALE=5 runs five times the schedules.
SCALE = float(os.environ.get("PARABATCH_STRESS_SCALE", "1"))
REPORT_DIR = Path(os.environ.get("PARABATCH_REPORT_DIR", Path(__file__).parent.parent / "reports"))
REPORT_STEM = os.environ.get("PARABATCH_STRESS_REPORT", "stress")

settings.register_profile(
    "stress",
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile("stress")

_REPORT = StressReport(scale=SCALE)


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` schedules at scale 1, scaled by PARABATCH_STRESS_SCALE."""
    return max(minimum, int(n * SCALE))


def progress(message: str) -> None:
    """A progress line on the real terminal, even while pytest captures output."""
    print(f"  [stress] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def stress_report() -> StressReport:
    return _REPORT


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _REPORT.core or _REPORT.controls or _REPORT.unmodified:
        for path in _REPORT.write(REPORT_DIR, REPORT_STEM):
            progress(f"wrote {path}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT.core or _REPORT.controls or _REPORT.unmodified:
        terminalreporter.section("parabatch stress report")
        terminalreporter.write_line(_REPORT.text())
        terminalreporter.write_line(f"full report: {REPORT_DIR / (REPORT_STEM + '.md')}")
