"""The pytest plugin, as another project sees it: the fixture and the marker, under pytester."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

import parabatch

pytest_plugins = ["pytester"]

Runner = Callable[..., pytest.RunResult]
PLUGIN = "_parabatch_pytest"

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


def _load() -> list[str]:
    """``-p`` for a subprocess session when the entry point is not installed (source tree)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        installed = any(ep.name == "parabatch" for ep in distribution("parabatch").entry_points)
    except PackageNotFoundError:
        installed = False
    return [] if installed else ["-p", PLUGIN]


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
            verify_batch_node(NoCopy, budget=30, seed=1, shrink=False)
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
    assert "shrunk" not in out


def test_the_fixture_shrinks_the_counterexample_by_default(run: Runner) -> None:
    result = run(
        """
        from parabatch.testing.broken import KeepsSubmitting

        def test_keeps_submitting(verify_batch_node):
            verify_batch_node(KeepsSubmitting, budget=20, seed=1)
        """
    )
    result.assert_outcomes(failed=1)
    # Unshrunk, seed 1 finds it with 6 items; shrinking leaves fewer items or preemptions.
    result.stdout.fnmatch_lines(
        [
            "verify parabatch.testing.broken:KeepsSubmitting: random, seed=1, 20 schedules*",
            "FAILED: FORBIDDEN outcome first seen after * schedules",
            "counterexample, shrunk by Hypothesis from the first one found "
            "(6 items, * preemptions -> * items, * preemptions):",
            "*replay it with:",
            "*t.replay_scenario('parabatch.testing.broken:KeepsSubmitting'*",
        ]
    )
    line = next(x for x in result.outlines if "shrunk by Hypothesis" in x)
    found = re.findall(r"\((\d+) items, (\d+) preemptions -> (\d+) items, (\d+) preemptions", line)
    before_items, before_preemptions, items, preemptions = (int(n) for n in found[0])
    assert (items, preemptions) < (before_items, before_preemptions)
    assert result.stdout.str().count("replay it with:") == 1  # the shrunk one only


def test_a_shrink_that_raises_leaves_the_verdict_and_the_first_counterexample(
    run: Runner,
) -> None:
    result = run(
        """
        import parabatch.testing
        from parabatch.testing.broken import KeepsSubmitting

        def test_keeps_submitting(verify_batch_node, monkeypatch):
            def broken_shrink(*args, **kwargs):
                raise RuntimeError("shrinking went wrong\\nsecond line")

            monkeypatch.setattr(parabatch.testing, "shrink", broken_shrink)
            verify_batch_node(KeepsSubmitting, budget=20, seed=1)
        """
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "FAILED: FORBIDDEN outcome first seen after * schedules",
            "counterexample:",
            "*replay it with:",
            "*",
            "not shrunk: shrink() raised RuntimeError: shrinking went wrong",
        ]
    )
    assert "second line" not in result.stdout.str()


def test_without_hypothesis_the_failure_says_how_to_shrink(pytester: pytest.Pytester) -> None:
    # A fresh interpreter where Hypothesis cannot be imported, its own plugin switched off.
    pytester.makeconftest(
        """
        import sys

        assert "hypothesis" not in sys.modules
        sys.modules["hypothesis"] = None  # import hypothesis -> ImportError
        """
    )
    pytester.makepyfile(
        test_subject="""
        from parabatch.testing.broken import KeepsSubmitting

        def test_keeps_submitting(verify_batch_node):
            verify_batch_node(KeepsSubmitting, budget=20, seed=1)
        """
    )
    result = pytester.runpytest_subprocess(*STRICT, "-p", "no:hypothesispytest", *_load())
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["counterexample:", "*replay it with:", "*", "not shrunk: *"])
    # (fnmatch reads [...] as a character class: the advice is checked as plain text)
    assert (
        "not shrunk: Hypothesis is not installed. With it (pip install 'parabatch[hypothesis]') "
        "this failure shows the counterexample shrunk to the fewest items and context switches"
    ) in result.stdout.str()


def test_shrink_takes_a_bool_or_a_budget(run: Runner) -> None:
    result = run(
        """
        import pytest
        from parabatch import PflowBatchNode

        @pytest.mark.parametrize("value", [0, -1, "yes", 1.5])
        def test_bad_shrink(verify_batch_node, value):
            with pytest.raises(ValueError, match="shrink="):
                verify_batch_node(PflowBatchNode, budget=2, shrink=value)

        @pytest.mark.parabatch_verify(shrink=False)
        def test_shrink_from_the_marker_passes_through(verify_batch_node):
            assert verify_batch_node(PflowBatchNode, budget=2).ok
        """
    )
    result.assert_outcomes(passed=5)


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


#: Top-level packages a session must not import just because parabatch is installed.
HEAVY = {"parabatch", "pocketflow", "jsonschema", "referencing", "rpds", "attrs", "hypothesis"}


def test_a_session_that_does_not_use_the_fixture_imports_nothing_heavy(
    pytester: pytest.Pytester,
) -> None:
    """The plugin is loaded (its marker is registered) and no parabatch module is imported.

    The time this saves is a benchmark figure (benchmarks/bench_plugin.py); this is the
    untimed cause: what loading the plugin imports.
    """
    pytester.makeconftest(
        f"""
        import sys

        def pytest_collection_finish(session):
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(HEAVY)!r})
            print("plugin loaded:", session.config.pluginmanager.has_plugin("parabatch")
                  or session.config.pluginmanager.has_plugin({PLUGIN!r}))
            print("heavy modules:", heavy)
        """
    )
    pytester.makepyfile(test_one="def test_one():\n    assert 1 + 1 == 2\n")
    # Hypothesis's own plugin imports Hypothesis; it is not ours to judge.
    result = pytester.runpytest_subprocess(*STRICT, "-s", "-p", "no:hypothesispytest", *_load())
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugin loaded: True", "heavy modules: []"])


def test_the_old_plugin_path_re_exports_the_plugin() -> None:
    """``-p parabatch.testing.pytest_plugin`` registers the very same hooks and fixture."""
    import _parabatch_pytest as plugin
    from parabatch.testing import pytest_plugin as old

    assert old.__all__ == plugin.__all__
    for name in plugin.__all__:
        assert getattr(old, name) is getattr(plugin, name), name
