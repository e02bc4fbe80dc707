"""Shared set-up of the stress suites: the scale knob, the report, the Hypothesis profile."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

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
_CONFIG: Optional[pytest.Config] = None


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` schedules at scale 1, scaled by PARABATCH_STRESS_SCALE."""
    return max(minimum, int(n * SCALE))


def progress(message: str) -> None:
    """A progress line on the terminal as the suite goes, even while pytest captures output.

    Written through pytest's terminal reporter with capturing suspended for the line, as
    pytest's own live logging does. Where there is no reporter (an xdist worker), it goes
    to stderr: captured, and shown with the test's report if the test fails.
    """
    line = f"  [stress] {message}"
    manager = _CONFIG.pluginmanager if _CONFIG is not None else None
    reporter = manager.get_plugin("terminalreporter") if manager else None
    if reporter is None:
        print(line, file=sys.stderr, flush=True)
        return
    capture = manager.get_plugin("capturemanager") if manager else None
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG
    _CONFIG = config


def pytest_unconfigure(config: pytest.Config) -> None:
    global _CONFIG
    _CONFIG = None


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
