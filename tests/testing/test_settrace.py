"""settrace mode: code with no scheduling points of its own can be interleaved line by line."""

from __future__ import annotations

import sys

import pytest

from parabatch.testing import ScheduleFailure, check_dfs, check_random, replay

from . import untraced
from .subjects import untraced_update


def test_by_default_the_user_code_reached_is_traced_and_the_race_found() -> None:
    result = check_dfs(untraced_update, max_preemptions=2, raise_on_failure=False)
    assert result.failure is not None and "lost update" in result.failure.message


def test_with_tracing_off_a_pass_is_not_called_a_certificate() -> None:
    # No point inside increment(): nothing interleaves, and the result says so.
    result = check_dfs(untraced_update, max_preemptions=2, trace_modules=())
    assert result.ok and result.exhausted
    assert not result.certified
    assert result.vacuous is not None and "no shared state" in result.vacuous
    assert "NOT A CERTIFICATE" in str(result)


@pytest.mark.parametrize("spec", ["tests.testing.untraced", untraced, untraced.__file__])
def test_tracing_the_module_interleaves_its_read_modify_write(spec: object) -> None:
    with pytest.raises(ScheduleFailure) as info:
        check_dfs(untraced_update, max_preemptions=1, trace_modules=[spec])  # type: ignore[list-item]
    failure = info.value.failure
    assert failure.preemptions == 1
    assert 'untraced.py:10 `box["n"] = value + 1`' in failure.trace
    assert "trace_modules=" in failure.replay


def test_random_finds_it_in_trace_mode_and_the_replay_line_needs_the_modules() -> None:
    failure = check_random(
        untraced_update,
        iterations=100,
        seed=0,
        trace_modules=["tests.testing.untraced"],
        raise_on_failure=False,
    ).failure
    assert failure is not None
    traced = replay(
        untraced_update,
        failure.schedule,
        trace_modules=["tests.testing.untraced"],
        raise_on_failure=False,
    )
    assert traced.failure is not None and traced.failure.trace == failure.trace


def test_a_package_traces_every_module_under_it() -> None:
    result = check_dfs(
        untraced_update,
        max_preemptions=1,
        trace_modules=["tests.testing"],
        raise_on_failure=False,
    )
    assert result.failure is not None


def test_tracing_is_removed_after_the_run() -> None:
    check_random(
        untraced_update, iterations=2, seed=0, trace_modules=[untraced], raise_on_failure=False
    )
    assert sys.gettrace() is None or "parabatch" not in repr(sys.gettrace())


def test_a_module_without_a_file_is_refused() -> None:
    with pytest.raises(ValueError, match="no source file"):
        check_random(untraced_update, trace_modules=[sys])
