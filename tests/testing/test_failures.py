"""Every failure is reported — deadlocks, stray threads, uncontrolled blocking — never a hang."""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import platform
import random
import sys
import sysconfig
import threading
import time
from typing import Any

import pytest

from parabatch.testing import (
    BlockedFailure,
    DeadlockFailure,
    NondeterminismFailure,
    RefusedFailure,
    ScheduleFailure,
    SchedulerUsageError,
    StepLimitFailure,
    _scheduler,
    check_dfs,
    check_random,
    checkpoint,
    replay,
    spawn,
)

from .subjects import lost_update, opposite_lock_order, premade_lock_contention

_PER_INSTRUCTION = platform.python_implementation() == "CPython"


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
    # The traced read, then the checkpoint. Points are per instruction on CPython, and the
    # checkpoint's line reads nothing shared; per line on PyPy, where that line is one too.
    between = "" if _PER_INSTRUCTION else 'subjects.py:19 `checkpoint("read")` -> '
    assert f"`value = box[\"n\"]` -> {between}'read'" in text
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


def _starts_a_plain_thread() -> None:
    box = {"n": 0}

    def incr() -> None:
        value = box["n"]
        box["n"] = value + 1

    t = threading.Thread(target=incr)
    t.start()
    incr()
    t.join()
    assert box["n"] == 2, box


def _uses_its_own_pool() -> None:
    box = {"n": 0}

    def incr() -> None:
        value = box["n"]
        box["n"] = value + 1

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(2):
            pool.submit(incr)
    assert box["n"] == 2, box


@pytest.mark.parametrize("fn", [_starts_a_plain_thread, _uses_its_own_pool])
def test_plain_threads_and_pools_are_controlled_and_their_race_found(fn: Any) -> None:
    # Once refused; now a threading.Thread or a ThreadPoolExecutor made inside the run runs
    # on managed threads, and the unlocked increment is found.
    result = check_dfs(fn, raise_on_failure=False)
    assert result.failure is not None and result.failure.kind == "exception", result
    assert result.max_threads >= 2
    assert threading.Thread.start.__module__ == "threading"  # restored afterwards
    assert concurrent.futures.ThreadPoolExecutor.submit.__module__ == "concurrent.futures.thread"


def _raw_thread() -> None:
    _thread.start_new_thread(print, ("escaped",))  # RAW-LINE


def _line_of(marker: str) -> str:
    with open(__file__) as f:
        for n, line in enumerate(f, 1):
            if line.rstrip().endswith(marker):
                return f"{__file__}:{n}"
    raise AssertionError(marker)


def test_a_raw_thread_is_refused_naming_its_line() -> None:
    with pytest.raises(RefusedFailure) as info:
        check_random(_raw_thread, iterations=3, seed=0)
    assert _line_of("RAW-LINE") in info.value.failure.message


def test_a_refusal_stands_even_if_the_subject_swallows_the_error() -> None:
    def swallows() -> None:
        with contextlib.suppress(Exception):
            _thread.start_new_thread(print, ("escaped",))

    result = check_random(swallows, iterations=1, seed=0, raise_on_failure=False)
    assert result.failure is not None and result.failure.kind == "refused"


def test_a_wait_nobody_ends_on_an_event_made_before_the_check_is_a_deadlock() -> None:
    event = threading.Event()  # made before the check: its waits are controlled too

    def waits() -> None:
        t = threading.Thread(target=event.wait)
        t.start()
        t.join()

    with pytest.raises(DeadlockFailure) as info:
        check_random(waits, iterations=1, seed=0)
    # The qualified name needs 3.11's co_qualname; before it, the plain function name. A
    # free-threaded build reports the block without naming the call (the thread "waits").
    qualified = sys.version_info >= (3, 11) and not sysconfig.get_config_var("Py_GIL_DISABLED")
    where = "Event.wait" if qualified else "wait"
    assert where in info.value.failure.details, info.value.failure.details


def test_a_timed_wait_on_an_event_costs_no_real_time_and_times_out() -> None:
    event = threading.Event()
    seen: list[object] = []

    def polls() -> None:
        start = time.monotonic()
        got = event.wait(30.0)  # virtual: expires as soon as nothing else can run
        seen.append((got, time.monotonic() - start))

    check_random(polls, iterations=1, seed=0)
    assert seen == [(False, 30.0)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_lock_made_before_the_check_and_held_across_a_point_is_reported_at_once() -> None:
    # The lock sits in an object, out of the module scan's reach: a real lock. Contended
    # while its holder is parked, the next thread sleeps in the kernel; that is reported
    # well before the (raised) stall timeout.
    with pytest.raises(BlockedFailure) as info:
        check_dfs(premade_lock_contention, max_preemptions=1, stall_timeout=60)
    failure = info.value.failure
    assert "premade_lock_contention" in failure.replay
    assert "blocked in the kernel" in failure.message
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
    assert result.failure is not None and result.failure.kind == "refused"
    assert isinstance(result.failure.exception, SchedulerUsageError)
    assert "a check inside a check" in result.failure.message
    assert "test_failures.py" in result.failure.message  # the call site


def test_spawn_from_an_unmanaged_thread_is_a_usage_error() -> None:
    errors: list[BaseException] = []
    go = threading.Event()

    def foreign() -> None:
        go.wait()
        try:
            spawn(print)
        except SchedulerUsageError as exc:
            errors.append(exc)

    t = threading.Thread(target=foreign)  # started before the check: not managed
    t.start()

    def fn() -> None:
        go.set()
        while not errors:  # a real wait, outside the model: the foreign thread runs
            _scheduler._real_sleep(0.001)

    try:
        check_random(fn, iterations=1, seed=0)
    finally:
        go.set()
        t.join()
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
