"""Every failure is reported — deadlocks, stray threads, uncontrolled blocking — never a hang."""

from __future__ import annotations

import concurrent.futures
import contextlib
import random
import threading
from typing import Any

import pytest

from parabatch.testing import (
    BlockedFailure,
    DeadlockFailure,
    NondeterminismFailure,
    ScheduleFailure,
    SchedulerUsageError,
    StepLimitFailure,
    UncontrolledThreadFailure,
    check_dfs,
    check_random,
    checkpoint,
    replay,
    spawn,
)

from .subjects import lost_update, opposite_lock_order, real_lock_contention


def test_opposite_lock_order_is_reported_as_a_deadlock_with_its_schedule() -> None:
    with pytest.raises(DeadlockFailure) as info:
        check_dfs(opposite_lock_order, max_preemptions=2)
    failure = info.value.failure
    assert failure.kind == "deadlock"
    assert "acquire b (held)" in failure.details and "acquire a (held)" in failure.details
    # The schedule replays to the same deadlock.
    again = replay(opposite_lock_order, failure.schedule, raise_on_failure=False)
    assert again.failure is not None and again.failure.kind == "deadlock"
    assert again.failure.trace == failure.trace


def test_check_random_finds_the_deadlock_too() -> None:
    result = check_random(opposite_lock_order, iterations=100, seed=4, raise_on_failure=False)
    assert result.failure is not None and result.failure.kind == "deadlock", (
        f"no deadlock in {result.schedules_explored} schedules"
    )


def test_a_failure_report_has_strategy_seed_schedule_trace_and_replay_line() -> None:
    with pytest.raises(ScheduleFailure) as info:
        check_random(lost_update, iterations=100, seed=9)
    text = str(info.value)
    failure = info.value.failure
    assert "check_random" in text and "seed=9" in text
    assert repr(failure.schedule) in text
    assert "T1   start -> 'read'" in text
    assert failure.replay in text
    assert failure.replay.endswith(
        f'parabatch.testing.replay(tests.testing.subjects.lost_update, "{failure.schedule}")'
    )
    assert isinstance(info.value.__cause__, AssertionError)  # the original, chained


def test_the_printed_replay_line_reproduces_the_failure() -> None:
    failure = check_dfs(lost_update, raise_on_failure=False).failure
    assert failure is not None
    with pytest.raises(ScheduleFailure) as info:
        exec(failure.replay, {})
    assert info.value.failure.trace == failure.trace


def test_replay_gives_an_identical_trace_20_times_out_of_20() -> None:
    failure = check_random(lost_update, iterations=100, seed=5, raise_on_failure=False).failure
    assert failure is not None
    traces = {
        replay(lost_update, failure.schedule, raise_on_failure=False).failure.trace  # type: ignore[union-attr]
        for _ in range(20)
    }
    assert traces == {failure.trace}


def _starts_a_real_thread() -> None:
    t = threading.Thread(target=lambda: None)
    t.start()  # START-LINE
    t.join()


def _uses_its_own_pool() -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pool.submit(print, "escaped")  # POOL-LINE


def _line_of(marker: str) -> str:
    with open(__file__) as f:
        for n, line in enumerate(f, 1):
            if line.rstrip().endswith(marker):
                return f"{__file__}:{n}"
    raise AssertionError(marker)


@pytest.mark.parametrize(
    ("fn", "marker"), [(_starts_a_real_thread, "START-LINE"), (_uses_its_own_pool, "POOL-LINE")]
)
def test_a_thread_started_behind_the_schedulers_back_is_reported(fn: Any, marker: str) -> None:
    with pytest.raises(UncontrolledThreadFailure) as info:
        check_random(fn, iterations=3, seed=0)
    assert _line_of(marker) in info.value.failure.message
    assert threading.Thread.start.__module__ == "threading"  # restored afterwards


def test_a_stray_thread_is_reported_even_if_the_subject_swallows_the_error() -> None:
    def swallows() -> None:
        with contextlib.suppress(Exception):
            threading.Thread(target=print).start()

    result = check_random(swallows, iterations=1, seed=0, raise_on_failure=False)
    assert result.failure is not None and result.failure.kind == "uncontrolled-thread"


def test_a_thread_blocked_on_a_real_event_is_reported_not_hung() -> None:
    event = threading.Event()

    def waits_for_real() -> None:
        t = spawn(event.wait)
        t.join()

    try:
        with pytest.raises(BlockedFailure) as info:
            check_random(waits_for_real, iterations=1, seed=0, stall_timeout=0.2)
    finally:
        event.set()  # lets the abandoned thread go
    failure = info.value.failure
    assert failure.kind == "blocked" and failure.thread == "T1"
    assert "threading.py" in failure.details  # its stack shows where it waits
    assert "T1" in failure.details  # named among the threads left running


def test_a_real_lock_held_across_a_switch_point_is_reported_not_hung() -> None:
    with pytest.raises(BlockedFailure) as info:
        check_dfs(real_lock_contention, max_preemptions=1, stall_timeout=0.2)
    failure = info.value.failure
    assert "real_lock_contention" in failure.replay
    assert failure.thread in ("T1", "T2")


def test_an_exception_in_a_spawned_thread_fails_the_run() -> None:
    def worker() -> None:
        raise ValueError("in the worker")

    def fn() -> None:
        spawn(worker).join()

    result = check_random(fn, iterations=1, seed=0, raise_on_failure=False)
    assert result.failure is not None
    assert result.failure.thread == "T1"
    assert isinstance(result.failure.exception, ValueError)


def test_nondeterminism_is_reported() -> None:
    rng = random.Random(0)

    def flaky() -> None:
        threads = [spawn(checkpoint) for _ in range(rng.randint(1, 3))]
        for t in threads:
            t.join()

    with pytest.raises(NondeterminismFailure):
        check_dfs(flaky, max_preemptions=2)


def test_a_schedule_that_does_not_fit_is_reported() -> None:
    with pytest.raises(NondeterminismFailure) as info:
        replay(lost_update, "0.7")
    assert "T7" in info.value.failure.message


def test_a_livelock_hits_the_step_limit() -> None:
    def spins() -> None:
        while True:
            checkpoint("spin")

    with pytest.raises(StepLimitFailure):
        check_random(spins, iterations=1, seed=0, max_steps=500)


def test_checks_do_not_nest() -> None:
    def nested() -> None:
        check_random(lost_update, iterations=1, seed=0)

    result = check_random(nested, iterations=1, seed=0, raise_on_failure=False)
    assert result.failure is not None
    assert isinstance(result.failure.exception, SchedulerUsageError)


def test_spawn_from_an_unmanaged_thread_is_a_usage_error() -> None:
    errors: list[BaseException] = []

    def fn() -> None:
        def foreign() -> None:
            try:
                spawn(print)
            except SchedulerUsageError as exc:
                errors.append(exc)

        from parabatch.testing._scheduler import _real_start

        t = threading.Thread(target=foreign)
        _real_start(t)  # smuggled past the guard, as a pre-existing thread would be
        t.join()

    check_random(fn, iterations=1, seed=0)
    assert len(errors) == 1


def test_bad_arguments_echo_name_and_value() -> None:
    with pytest.raises(ValueError, match="iterations=0"):
        check_random(lost_update, iterations=0)
    with pytest.raises(ValueError, match="max_preemptions=-1"):
        check_dfs(lost_update, max_preemptions=-1)
    with pytest.raises(ValueError, match="stall_timeout=0"):
        check_random(lost_update, stall_timeout=0)
    with pytest.raises(TypeError, match="fn=42"):
        check_random(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad token 'x'"):
        replay(lost_update, "0.x")
