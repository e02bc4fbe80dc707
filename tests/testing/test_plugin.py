"""The pytest plugin, as another project sees it: the fixture and the marker, under pytester."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

import parabatch

pytest_plugins = ["pytester"]

Runner = Callable[..., pytest.RunResult]
PLUGIN = "parabatch.testing.pytest_plugin"

# The settings of this project, so the inner sessions are as strict as ours.
STRICT = ["--strict-markers", "-W", "error", "-p", "no:cacheprovider", "-p", "no:benchmark"]


@pytest.fixture
def run(pytester: pytest.Pytester, pytestconfig: pytest.Config) -> Runner:
    """Run a test module in a fresh pytest session that has the plugin loaded."""
    # Installed, parabatch's pytest11 entry point loads the plugin in every session (this one
    # and pytester's); from a source tree (PYTHONPATH=src) nothing does, so name it.
    load = [] if pytestconfig.pluginmanager.has_plugin("parabatch") else ["-p", PLUGIN]

    def run(source: str, *args: str) -> pytest.RunResult:
        pytester.makepyfile(test_subject=textwrap.dedent(source))
        return pytester.runpytest(*STRICT, *load, *args)

    return run


def test_the_fixture_passes_the_core(run: Runner) -> None:
    result = run(
        """
        from parabatch import PflowBatchNode

        def test_core(verify_batch_node):
            report = verify_batch_node(PflowBatchNode, budget=20, seed=1)
            assert report.ok and report.schedules == 20 and report.strategy == "random"
        """
    )
    result.assert_outcomes(passed=1)


def test_the_fixture_fails_no_copy_with_the_table_and_the_replay_line(run: Runner) -> None:
    result = run(
        """
        from parabatch.testing.broken import NoCopy

        def test_no_copy(verify_batch_node):
            verify_batch_node(NoCopy, budget=30, seed=1)
            raise AssertionError("not reached: the fixture fails the test")
        """
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "not reached" not in out
    result.stdout.fnmatch_lines(
        [
            "verify parabatch.testing.broken:NoCopy: random, seed=1, 30 schedules*",
            "*params*own*ACCEPTABLE*",
            "*params*foreign*FORBIDDEN*<-- observed",
            "FAILED: FORBIDDEN outcome first seen after * schedules",
            "counterexample:",
            "*replay it with:",
            "*import parabatch.testing as t; t.replay_scenario('parabatch.testing.broken:NoCopy'*",
        ]
    )
    assert "def verify(" not in out  # the report, not the plugin's traceback


def test_the_marker_sets_defaults_the_closest_winning(run: Runner) -> None:
    result = run(
        """
        import pytest
        from parabatch import PflowBatchNode

        pytestmark = pytest.mark.parabatch_verify(budget=12, seed=2, strategy="random")

        @pytest.mark.parabatch_verify(strategy="pct")
        def test_marked(verify_batch_node):
            report = verify_batch_node(PflowBatchNode)
            assert (report.strategy, report.schedules, report.seed) == ("pct", 12, 2)

        @pytest.mark.parabatch_verify(strategy="pct")
        def test_the_call_wins(verify_batch_node):
            report = verify_batch_node(PflowBatchNode, budget=4, strategy="stress")
            assert (report.strategy, report.schedules, report.seed) == ("stress", 4, 2)

        class TestClass:
            pytestmark = pytest.mark.parabatch_verify(budget=3)

            def test_class_marker(self, verify_batch_node):
                report = verify_batch_node(PflowBatchNode)
                assert (report.strategy, report.schedules, report.seed) == ("random", 3, 2)
        """
    )
    result.assert_outcomes(passed=3)


def test_the_marker_is_registered(run: Runner) -> None:
    result = run("", "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.parabatch_verify(**kwargs): keyword defaults*"])


def test_the_marker_takes_keywords_only(run: Runner) -> None:
    result = run(
        """
        import pytest
        from parabatch import PflowBatchNode

        @pytest.mark.parabatch_verify(200)
        def test_positional(verify_batch_node):
            verify_batch_node(PflowBatchNode)
        """
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*parabatch_verify takes keyword arguments only, got args=(200,)*"]
    )


def test_bad_arguments_reach_the_test_as_the_api_raises_them(run: Runner) -> None:
    result = run(
        """
        import pytest
        from parabatch import PflowBatchNode

        @pytest.mark.parabatch_verify(budget=0)
        def test_bad_budget(verify_batch_node):
            with pytest.raises(ValueError, match="budget=0"):
                verify_batch_node(PflowBatchNode)
        """
    )
    result.assert_outcomes(passed=1)


def test_parabatch_testing_imports_no_pytest() -> None:
    src = str(Path(parabatch.__file__).resolve().parent.parent)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import parabatch.testing, parabatch.testing.__main__, parabatch.testing.broken; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, src], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "[]"
