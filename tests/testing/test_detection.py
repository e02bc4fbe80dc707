"""Quality tests: each strategy *finds* the lost update, and the scheduler beats free threads.

In the style of Hypothesis's tests/quality: assert that a bug is found, and say the
measured rate when it is not. Every seed is explicit; Hypothesis runs derandomized.
"""

from __future__ import annotations

import platform
import random

import pytest
from hypothesis import find, given, settings

from parabatch.testing import (
    CheckResult,
    Schedule,
    ScheduleFailure,
    check_dfs,
    check_pct,
    check_random,
    check_stress,
    pct_iterations,
    replay,
    schedules,
)

from .subjects import locked_update, lost_update


def _found(result: CheckResult, what: str) -> None:
    assert not result.ok, (
        f"{result.strategy} did not find {what} in {result.schedules_explored} schedules "
        f"(measured failure rate {result.failure_rate:.3f})"
    )
    assert result.failure is not None
    assert result.failure.kind == "exception"
    assert "lost update" in result.failure.message


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_check_random_finds_the_lost_update(seed: int) -> None:
    result = check_random(lost_update, iterations=50, seed=seed, raise_on_failure=False)
    _found(result, "the lost update")
    assert result.first_failure_at == result.schedules_explored  # stopped at the first


def test_check_random_detection_rate() -> None:
    result = check_random(
        lost_update, iterations=200, seed=11, stop_on_failure=False, raise_on_failure=False
    )
    assert result.schedules_explored == 200
    assert result.failure_rate >= 0.2, f"measured rate {result.failure_rate:.3f}"


# The PCT bound in terms of explicit points only (trace_modules=()): k is the number of
# checkpoints and spawns, so the bound is checked against a known k.
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_check_pct_finds_the_lost_update(seed: int) -> None:
    # Depth 2: one ordering constraint beyond each thread's own order. n and k come from a
    # passing run; the PCT bound sizes the budget for 99.9% confidence.
    probe = replay(lost_update, "0", raise_on_failure=False, trace_modules=())
    n, k = probe.max_threads, probe.max_steps
    assert (n, k) == (3, 4)
    budget = pct_iterations(threads=n, steps=k, depth=2, confidence=0.999)
    result = check_pct(
        lost_update, iterations=budget, depth=2, seed=seed, raise_on_failure=False, trace_modules=()
    )
    _found(result, "the lost update")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_check_pct_finds_the_lost_update_with_its_defaults(seed: int) -> None:
    result = check_pct(lost_update, iterations=100, seed=seed, raise_on_failure=False)
    _found(result, "the lost update")
    assert set(result.per_depth) <= {1, 2, 3}


def test_check_pct_detection_rate_meets_its_bound() -> None:
    result = check_pct(
        lost_update,
        iterations=300,
        depth=2,
        seed=5,
        stop_on_failure=False,
        raise_on_failure=False,
        trace_modules=(),
    )
    bound = 1 / (3 * 4)  # 1 / (n * k**(d-1)), n and k as measured above
    assert result.failure_rate >= bound, (
        f"measured rate {result.failure_rate:.3f} below the PCT bound {bound:.3f}"
    )


def test_check_dfs_finds_the_lost_update_with_one_preemption() -> None:
    result = check_dfs(lost_update, max_preemptions=2, raise_on_failure=False)
    _found(result, "the lost update")
    assert result.failure is not None
    assert result.failure.preemptions == 1


def test_one_preemption_is_the_minimum() -> None:
    # With no preemption at all every thread runs its read-modify-write alone: certified.
    result = check_dfs(lost_update, max_preemptions=0)
    assert result.ok and result.exhausted


def test_check_dfs_certifies_the_locked_version() -> None:
    result = check_dfs(locked_update, max_preemptions=2)
    assert result.ok
    assert result.exhausted, f"not exhausted after {result.schedules_explored} schedules"
    assert result.schedules_explored > 1
    print(f"locked_update certified at 2 preemptions in {result.schedules_explored} schedules")


def test_check_dfs_reports_when_the_cap_stops_it_before_exhaustion() -> None:
    result = check_dfs(locked_update, max_preemptions=2, max_schedules=5)
    assert result.ok
    assert not result.exhausted
    assert result.schedules_explored == 5


def test_given_schedules_finds_and_shrinks_the_lost_update() -> None:
    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    @given(schedules())
    def run(schedule: Schedule) -> None:
        replay(lost_update, schedule)

    with pytest.raises(ScheduleFailure) as info:
        run()
    failure = info.value.failure
    # Hypothesis reports the shrunk example: one preemption is the minimum (R1 R2 W2 W1).
    assert failure.preemptions == 1, failure
    assert failure.strategy == "replay"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_schedules_shrinks_to_a_single_switch(seed: int) -> None:
    # Explicit points only, so the single switch has one shape to compare with.
    minimal = find(
        schedules(),
        lambda s: not replay(lost_update, s, raise_on_failure=False, trace_modules=()).ok,
        settings=settings(max_examples=300, database=None, deadline=None),
        random=random.Random(seed),
    )
    assert len(minimal.switches) == 1, minimal
    failure = replay(lost_update, minimal, raise_on_failure=False, trace_modules=()).failure
    assert failure is not None
    assert failure.preemptions == 1
    # The shape: T1 reads and is preempted, T2 reads and writes, T1 writes.
    body = failure.trace.split("trace:")[1]
    assert body.index("T1   start -> 'read'") < body.index("T2   start -> 'read' -> end")


@pytest.mark.slow
def test_schedules_shrinks_to_the_minimum_from_most_seeds() -> None:
    """Shrinking is local: measure how often it reaches the single switch."""
    minimal_count = 0
    seeds = range(10, 22)
    for seed in seeds:
        found = find(
            schedules(),
            lambda s: not replay(lost_update, s, raise_on_failure=False, trace_modules=()).ok,
            settings=settings(max_examples=300, database=None, deadline=None),
            random=random.Random(seed),
        )
        minimal_count += len(found.switches) == 1
    rate = minimal_count / len(seeds)
    # Measured over 60 seeds: 88% (Hypothesis 6.155) and 95% (6.141); the rest stop at two.
    assert rate >= 0.6, f"shrank to one switch from {minimal_count} of {len(seeds)} seeds"


def test_free_running_threads_rarely_show_it_the_scheduler_always_does() -> None:
    """Why the scheduler exists: without a real switch in the window, threads hide the race."""
    stress = check_stress(lost_update, iterations=300, raise_on_failure=False)
    controlled = check_random(
        lost_update, iterations=300, seed=3, stop_on_failure=False, raise_on_failure=False
    )
    print(
        f"lost update: free-running {stress.failures}/300, "
        f"controlled random {controlled.failures}/300"
    )
    # Measured: 0 in 2,000 free-running iterations on CPython 3.9, 3.11 and 3.13 (the
    # threads start together at a gate; a switch could only land in the window at the
    # checkpoint() call); about half of the controlled schedules fail.
    if platform.python_implementation() == "CPython":
        assert stress.failure_rate < 0.05, f"free-running rate {stress.failure_rate:.3f}"
        assert controlled.failure_rate > 10 * max(stress.failure_rate, 0.01)
    else:
        # PyPy's GIL switches inside the window now and then (measured 9% here, and in
        # stress/gil_free.py); the controlled schedules still find it far more often.
        assert controlled.failure_rate > 2 * stress.failure_rate


def test_free_running_threads_show_it_when_the_window_yields() -> None:
    """The positive control of the stress baseline: a real yield in the window exposes it."""
    stress = check_stress(
        lost_update,
        iterations=3000,
        yield_at_points=True,
        stop_on_failure=True,
        raise_on_failure=False,
    )
    # Measured first detection: iteration 1-2 on CPython 3.11-3.13 (98% of iterations);
    # on 3.9 and 3.10 sleep(0) rarely hands the GIL over (0.7-1.5% of iterations).
    print(f"lost update with sleep(0) at the checkpoint: first seen at {stress.first_failure_at}")
    assert stress.failures == 1, "3,000 iterations with sleep(0) in the window never showed it"
