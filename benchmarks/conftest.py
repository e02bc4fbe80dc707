"""pytest-benchmark configuration shared by the ``bench_*.py`` suites."""

from __future__ import annotations

import pytest
from _workloads import Mode, current_mode


@pytest.fixture(scope="session")
def mode() -> Mode:
    """``PARABATCH_BENCH=short`` (CI) or ``full``."""
    return current_mode()
