"""verify_batch_node: the core passes, every negative control is caught, reports replay.

Also the pieces the reports are made of (OutcomeTable, Scenario) and the command line
``python -m parabatch.testing``. Every seed is explicit; budgets are small.
"""

from __future__ import annotations

import doctest
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

import parabatch
import parabatch.testing.__main__ as cli
from parabatch import PflowBatchNode
from parabatch.testing import (
    Counterexample,
    OutcomeTable,
    Scenario,
    ScheduleFailure,
    detection,
    replay_scenario,
    scenarios,
    verify_batch_node,
)
from parabatch.testing._outcomes import FORBIDDEN
from parabatch.testing._verify import default_dfs_scenarios, load_factory
from parabatch.testing.broken import BROKEN_SUBJECTS, NoCopy

# What a run of NoCopy breaks: the params swap (when two calls overlap) or, always, isolation
# (a later item finds an earlier one's write on the one chain they share).
NO_COPY_FORBIDDEN = re.compile(r"FORBIDDEN (params|isolation):")

# ---------------------------------------------------------------------------------------------
# The core passes


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_the_core_passes(strategy: str) -> None:
    report = verify_batch_node(PflowBatchNode, strategy=strategy, budget=60, seed=1)
    assert report.ok, report.format()
    assert report.schedules == 60
    assert report.counterexamples == [] and report.first_forbidden_at is None
    assert report.table.count("harness", "completed") == 60


def test_the_core_passes_dfs_with_tracing_under_a_cap() -> None:
    report = verify_batch_node(PflowBatchNode, strategy="dfs", budget=15, seed=1)
    assert report.ok, report.format()
    n = len(default_dfs_scenarios())
    assert report.scenarios == n and n < report.schedules <= 15 * n
    assert report.exhausted is False  # capped: traced lines make the space large


@pytest.mark.slow
def test_dfs_certifies_the_core_within_two_preemptions() -> None:
    # Without tracing the only scheduling points are the calls, submits, waits and locks:
    # every schedule of the default scenarios within two preemptions is run.
    report = verify_batch_node(
        PflowBatchNode, strategy="dfs", budget=5000, trace=False, max_preemptions=2
    )
    assert report.ok, report.format()
    assert report.exhausted is True, report.format()


# ---------------------------------------------------------------------------------------------
# Every negative control is caught


@pytest.mark.parametrize("name", sorted(BROKEN_SUBJECTS))
def test_every_broken_subject_fails_the_check_of_the_property_it_breaks(name: str) -> None:
    # Another property may flag a control first (a chain shared by every item is also
    # seen by isolation): each seed searches on until the control's own check flags it.
    cls: Any = BROKEN_SUBJECTS[name]
    found = detection(cls, seeds=range(3), budget=200, flagged_by=cls.catches)
    assert found["caught"] == 3, (
        f"{name}: flagged by {cls.catches!r} in {found['caught']} of 3 seeds within 200 "
        f"schedules (schedules to detection: {found['schedules_to_detection']}; "
        f"flagged by {found['properties']})"
    )
    assert cls.catches in found["properties"]
    assert isinstance(found["counterexample"], Counterexample)
    assert cls.catches + ":" in found["counterexample"].message


def test_stop_on_forbidden_names_a_property() -> None:
    with pytest.raises(ValueError, match="stop_on_forbidden='nope'"):
        verify_batch_node(NoCopy, budget=1, stop_on_forbidden="nope")


# ---------------------------------------------------------------------------------------------
# Counterexamples replay


@pytest.fixture(scope="module")
def no_copy_counterexample() -> Counterexample:
    report = verify_batch_node(NoCopy, budget=30, seed=1)
    assert not report.ok
    assert report.counterexamples
    return report.counterexamples[0]


def test_trace_true_makes_the_per_item_code_points_too(
    no_copy_counterexample: Counterexample,
) -> None:
    # The core's workers run parabatch._work: its lines are in the trace and the replay.
    assert "_work.py:" in no_copy_counterexample.trace
    assert "trace=['parabatch.testing.broken', 'parabatch._work']" in no_copy_counterexample.replay


def test_a_report_prints_its_first_counterexample(no_copy_counterexample: Counterexample) -> None:
    ce = no_copy_counterexample
    report = verify_batch_node(NoCopy, budget=30, seed=1)
    text = report.format()
    assert "FAILED: FORBIDDEN outcome first seen after" in text
    assert "<-- observed" in text
    assert ce.replay in text and ce.schedule in text
    assert ce.replay.startswith("import parabatch.testing as t; t.replay_scenario(")
    assert "'parabatch.testing.broken:NoCopy'" in ce.replay
    assert report.to_dict()["counterexamples"][0]["replay"] == ce.replay
    json.dumps(report.to_dict())  # JSON-ready


def test_the_printed_replay_line_reproduces_the_failure(
    no_copy_counterexample: Counterexample,
) -> None:
    ce = no_copy_counterexample
    with pytest.raises(ScheduleFailure) as info:
        exec(ce.replay, {})
    assert NO_COPY_FORBIDDEN.search(str(info.value))
    assert ce.schedule in str(info.value)


def test_replay_scenario_gives_the_same_trace_20_times_of_20(
    no_copy_counterexample: Counterexample,
) -> None:
    ce = no_copy_counterexample
    ref = "parabatch.testing.broken:NoCopy"
    for _ in range(20):
        result = replay_scenario(ref, ce.scenario.to_json(), ce.schedule, raise_on_failure=False)
        assert result.failure is not None
        assert result.failure.trace == ce.trace
        assert result.failure.message == ce.message


def test_replay_scenario_passes_the_core_on_the_same_scenario(
    no_copy_counterexample: Counterexample,
) -> None:
    # The core under the schedule's prefix that still applies (it yields in other places).
    result = replay_scenario(PflowBatchNode, no_copy_counterexample.scenario, "")
    assert result.ok


# ---------------------------------------------------------------------------------------------
# OutcomeTable and Scenario


def test_outcome_table_counts_and_classifies() -> None:
    table = OutcomeTable()
    assert table.forbidden() == []
    table.add({"ordering": "in order", "bound": "at cap"})
    table.add({"ordering": "misplaced"}, times=3)
    assert table.count("ordering", "in order") == 1
    assert table.count("ordering", "misplaced") == 3
    assert table.count("bound", "at cap") == 1
    assert table.count("bound", "over cap") == 0
    assert table.expect("ordering", "misplaced") == FORBIDDEN
    assert table.forbidden() == [("ordering", "misplaced", 3)]
    with pytest.raises(KeyError, match="ordering='sideways'"):
        table.add({"ordering": "sideways"})

    other = OutcomeTable()
    other.add({"ordering": "misplaced", "bound": "over cap"})
    table.merge(other)
    assert table.forbidden() == [("ordering", "misplaced", 4), ("bound", "over cap", 1)]


def test_outcome_table_format_shows_every_row_and_flags_observed_forbidden() -> None:
    table = OutcomeTable()
    table.add({"ordering": "misplaced", "params": "own"})
    text = table.format()
    lines = text.splitlines()
    assert len(lines) == len(table.rows()) == len(table.to_dict())
    flagged = [line for line in lines if line.endswith("<-- observed")]
    assert len(flagged) == 1 and "misplaced" in flagged[0]
    # A FORBIDDEN outcome never seen keeps its row, with 0 and no flag.
    assert any("over cap" in line and " 0 " in line for line in lines)
    markdown = table.format(markdown=True)
    assert markdown.startswith("| property | outcome | count | expect | meaning |")
    assert "| ordering | misplaced | 1 | **FORBIDDEN** |" in markdown
    assert "| bound | over cap | 0 | FORBIDDEN |" in markdown


@given(scenarios())
def test_scenario_json_round_trip(scenario: Scenario) -> None:
    text = scenario.to_json()
    assert Scenario.from_json(text) == scenario
    assert Scenario.from_json(json.loads(text)) == scenario


def test_scenario_rejects_items_and_failures_of_different_lengths() -> None:
    with pytest.raises(ValueError, match=r"items=\('a', 'b'\) and fail=\(0,\)"):
        Scenario(items=("a", "b"), fail=(0,))


# ---------------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"strategy": "bfs"}, ValueError, "strategy='bfs'"),
        ({"budget": 0}, ValueError, "budget=0"),
        ({"budget": -5}, ValueError, "budget=-5"),
        ({"budget": True}, ValueError, "budget=True"),
        ({"budget": 2.5}, ValueError, "budget=2.5"),
    ],
)
def test_bad_arguments_echo_name_equals_value(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        verify_batch_node(PflowBatchNode, **kwargs)


def test_a_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="factory=42"):
        verify_batch_node(42)


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("parabatch.PflowBatchNode", ValueError),
        (":PflowBatchNode", ValueError),
        ("parabatch:CALLS_KEY", TypeError),
        ("parabatch:NoSuchNode", AttributeError),
        ("no_such_module:Node", ImportError),
    ],
)
def test_load_factory_refuses_bad_refs(ref: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_factory(ref)


def test_load_factory_resolves_a_ref() -> None:
    assert load_factory("parabatch:PflowBatchNode") is PflowBatchNode
    assert load_factory("parabatch.testing.broken:NoCopy") is NoCopy


# ---------------------------------------------------------------------------------------------
# The command line, in process


def test_cli_doctests() -> None:
    # pytest's --doctest-modules skips __main__.py; run its examples here.
    result = doctest.testmod(cli, raise_on_error=False, verbose=False)
    assert result.attempted >= 4 and result.failed == 0


def _main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_writes_json_and_progress(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    code, out, err = _main(
        "verify",
        "parabatch.testing.broken:NoCopy",
        "--budget",
        "20",
        "--seed",
        "1",
        "--json",
        str(path),
        "--progress",
        "5",
    )
    assert code == cli.EXIT_FORBIDDEN
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["ok"] is False and data["schedules"] == 20
    assert data["subject"] == "parabatch.testing.broken:NoCopy"
    progress = err.splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in progress] == [
        "5/20",
        "10/20",
        "15/20",
        "20/20",
    ]
    # Counting the schedules changes neither the runs nor the replay line.
    plain = verify_batch_node(NoCopy, budget=20, seed=1)
    assert data["table"] == plain.table.to_dict()
    assert data["counterexamples"][0]["replay"] == plain.counterexamples[0].replay
    assert plain.counterexamples[0].replay in out


@pytest.mark.parametrize("trace", [[], ["--no-trace"]])
def test_cli_replay_lines_reproduce_the_failure(trace: list[str]) -> None:
    code, out, _ = _main("verify", "parabatch.testing.broken:NoCopy", "--budget", "30", *trace)
    assert code == cli.EXIT_FORBIDDEN
    lines = out.splitlines()
    python = lines[lines.index("  replay it with:") + 1].strip()
    shell = shlex.split(lines[lines.index("  or from the shell:") + 1].strip())
    assert python.endswith(", trace=False)") == bool(trace)
    assert ("--no-trace" in shell) == bool(trace)
    with pytest.raises(ScheduleFailure, match=NO_COPY_FORBIDDEN):
        exec(python, {})
    code, again, _ = _main(*shell[3:])
    assert code == cli.EXIT_FORBIDDEN and NO_COPY_FORBIDDEN.search(again)


def test_cli_replay_passes_and_fails(no_copy_counterexample: Counterexample) -> None:
    ce = no_copy_counterexample
    scenario = ce.scenario.to_json()
    code, out, _ = _main(
        "replay",
        "parabatch.testing.broken:NoCopy",
        "--scenario",
        scenario,
        "--schedule",
        ce.schedule,
    )
    assert code == cli.EXIT_FORBIDDEN
    assert ce.trace in out and NO_COPY_FORBIDDEN.search(out)
    assert "t.replay_scenario('parabatch.testing.broken:NoCopy'" in out
    code, out, _ = _main(
        "replay", "parabatch:PflowBatchNode", "--scenario", scenario, "--schedule", ""
    )
    assert code == cli.EXIT_OK
    assert "passes" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "parabatch:NoSuchNode"], "has no attribute 'NoSuchNode'"),
        (["verify", "parabatch"], "factory='parabatch': expected 'package.module:Name'"),
        (["verify", "parabatch:CALLS_KEY"], "not callable"),
        (["replay", "parabatch:PflowBatchNode", "--scenario", "{", "--schedule", ""], "--scenario"),
        (
            [
                "replay",
                "parabatch:PflowBatchNode",
                "--scenario",
                '{"items": ["a"]}',
                "--schedule",
                "",
            ],
            "KeyError",
        ),
        (
            [
                "replay",
                "parabatch:PflowBatchNode",
                "--scenario",
                '{"items":["a"],"fail":[0]}',
                "--schedule",
                "zz",
            ],
            "--schedule: schedule='zz'",
        ),
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], message: str) -> None:
    code, out, err = _main(*argv)
    assert code == cli.EXIT_USAGE
    assert out == ""
    assert err.startswith("python -m parabatch.testing: error: ") and message in err, err


def test_cli_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"parabatch {parabatch.__version__}\n"


def test_cli_bad_json_path_fails_before_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir.json"
    code, out, err = _main("verify", "parabatch:PflowBatchNode", "--json", str(missing))
    assert code == cli.EXIT_USAGE and out == "" and "--json" in err


def test_cli_option_errors_are_argparse_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["verify", "parabatch:PflowBatchNode", "--budget", "0"], ["verify"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == cli.EXIT_USAGE
    assert "--budget: 0 is not >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The command line, end to end


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(parabatch.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in [src, os.environ.get("PYTHONPATH", "")] if p)
    return subprocess.run(
        [sys.executable, "-m", "parabatch.testing", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=120,
        check=False,
    )


def test_cli_verify_passes_the_core() -> None:
    proc = _run("verify", "parabatch:PflowBatchNode", "--budget", "30", "--seed", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("verify parabatch:PflowBatchNode: random, seed=1, 30 schedules")
    assert "harness       completed" in proc.stdout
    assert "OK: no FORBIDDEN outcome" in proc.stdout


def test_cli_verify_catches_no_copy_and_its_replay_lines_reproduce() -> None:
    proc = _run("verify", "parabatch.testing.broken:NoCopy", "--budget", "30", "--seed", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "foreign" in proc.stdout and "<-- observed" in proc.stdout
    lines = proc.stdout.splitlines()
    python = lines[lines.index("  replay it with:") + 1].strip()
    shell = lines[lines.index("  or from the shell:") + 1].strip()
    assert python.startswith("import parabatch.testing as t; t.replay_scenario(")
    with pytest.raises(ScheduleFailure, match=NO_COPY_FORBIDDEN):
        exec(python, {})
    argv = shlex.split(shell)
    assert argv[:4] == ["python", "-m", "parabatch.testing", "replay"]
    again = _run(*argv[3:])
    assert again.returncode == 1, again.stdout + again.stderr
    assert NO_COPY_FORBIDDEN.search(again.stdout)


def test_cli_bad_factory_exits_2_naming_the_module() -> None:
    proc = _run("verify", "no_such_package.nodes:Node")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "factory='no_such_package.nodes:Node'" in proc.stderr
    assert "cannot import module 'no_such_package.nodes'" in proc.stderr
    assert "No module named 'no_such_package'" in proc.stderr
