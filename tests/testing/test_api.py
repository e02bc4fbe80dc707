"""The public surface: re-exports only, no pytest import, fallbacks outside a run, codecs."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import parabatch
import parabatch.testing as pt
from parabatch import CallLog
from parabatch.testing import (
    Lock,
    RLock,
    Schedule,
    check_dfs,
    check_random,
    checkpoint,
    format_schedule,
    parse_schedule,
    pct_iterations,
    replay,
    simulated_call,
    spawn,
)

from .subjects import lost_update


def test_init_only_re_exports_with_an_explicit_all() -> None:
    tree = ast.parse(Path(pt.__file__).read_text(encoding="utf-8"))
    imported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            assert node.level == 1 and (node.module or "").startswith("_"), ast.dump(node)
            for alias in node.names:
                assert alias.asname == alias.name  # "X as X": an explicit re-export
                imported.append(alias.name)
            continue
        assert isinstance(node, ast.Assign) and node.targets[0].id == "__all__"  # type: ignore[attr-defined]
    assert sorted(imported) == sorted(pt.__all__)


@pytest.mark.parametrize("name", pt.__all__)
def test_every_public_object_has_a_docstring_with_an_example(name: str) -> None:
    doc = inspect.getdoc(getattr(pt, name)) or ""
    assert "Example" in doc or ">>>" in doc, f"{name} has no example"


def test_importing_it_imports_neither_pytest_nor_hypothesis() -> None:
    code = (
        "import sys, parabatch.testing; "
        "bad = {'pytest', 'hypothesis'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_failures_derive_from_the_root_error() -> None:
    assert issubclass(pt.ScheduleFailure, parabatch.ParabatchError)
    assert issubclass(pt.SchedulerUsageError, parabatch.ParabatchError)
    for cls in (pt.DeadlockFailure, pt.BlockedFailure, pt.UncontrolledThreadFailure):
        assert issubclass(cls, pt.ScheduleFailure)


def test_outside_a_run_the_primitives_are_the_real_ones() -> None:
    checkpoint()
    checkpoint("label")
    simulated_call("llm")
    out: list[int] = []
    t = spawn(out.append, 1)
    t.join()
    assert out == [1] and not t.is_alive()
    lock = Lock()
    assert lock.acquire()
    assert not lock.acquire(blocking=False)
    lock.release()
    rlock = RLock()
    with rlock, rlock:
        assert rlock.locked()
    assert not rlock.locked()
    with pytest.raises(RuntimeError):
        rlock.release()


def test_patches_are_removed_after_a_check() -> None:
    import concurrent.futures

    before = (time.sleep, threading.Thread.start, concurrent.futures.wait)
    check_random(lost_update, iterations=3, seed=0, raise_on_failure=False)
    assert (time.sleep, threading.Thread.start, concurrent.futures.wait) == before


def test_sleep_in_a_managed_thread_is_a_scheduling_point_not_a_wait() -> None:
    def fn() -> None:
        spawn(time.sleep, 3600).join()  # a real hour-long sleep would stall the run

    result = check_random(fn, iterations=5, seed=0, stall_timeout=1.0)
    assert result.ok


def test_calllog_with_a_scheduler_lock_is_certified() -> None:
    def fn() -> None:
        log = CallLog(lock=Lock())
        threads = [spawn(log.append, i) for i in range(2)]
        for t in threads:
            t.join()
        assert sorted(log) == [0, 1]

    result = check_dfs(fn, max_preemptions=2)
    assert result.ok and result.exhausted


def test_rlock_under_the_scheduler() -> None:
    def fn() -> None:
        lock, box = RLock(), {"n": 0}

        def incr() -> None:
            with lock, lock:
                v = box["n"]
                checkpoint()
                box["n"] = v + 1

        threads = [spawn(incr), spawn(incr)]
        for t in threads:
            t.join()
        assert box["n"] == 2

    assert check_dfs(fn, max_preemptions=2).exhausted


def test_same_seed_same_schedules_other_seed_other_schedules() -> None:
    def first_failure(seed: int) -> str:
        f = check_random(lost_update, iterations=50, seed=seed, raise_on_failure=False).failure
        assert f is not None
        return f.trace

    assert first_failure(3) == first_failure(3)
    assert len({first_failure(s) for s in range(6)}) > 1


@given(st.lists(st.integers(0, 5), max_size=40))
def test_schedule_strings_round_trip(decisions: list[int]) -> None:
    text = format_schedule(decisions)
    assert parse_schedule(text) == decisions
    assert len(text) <= max(1, 4 * len(decisions))


def test_schedule_string_examples() -> None:
    assert format_schedule([]) == "" and parse_schedule(" ") == []
    assert format_schedule([1, 1, 0]) == "1x2.0"
    with pytest.raises(ValueError, match="bad token"):
        parse_schedule("1x0")


def test_drawn_schedules_are_validated_and_decode_in_order() -> None:
    assert Schedule([(0, 2), (1, 1)]).decisions(5) == [2, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="gap >= 0, target >= 1"):
        Schedule([(0, 0)])
    with pytest.raises(TypeError, match="schedule="):
        replay(lost_update, [0, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_switches=-1"):
        pt.schedules(max_switches=-1)


def test_pct_iterations_matches_the_reference_example() -> None:
    # n=4, k=50, d=2: >= 1/200 per run, so 1,000 runs find it with >= 99.3% probability.
    assert pct_iterations(4, 50, 2, confidence=0.993) <= 1000
    assert pct_iterations(4, 50, 2, confidence=0.999) > pct_iterations(4, 50, 2, 0.99)
    assert pct_iterations(1, 1, 1) == 1
    with pytest.raises(ValueError, match="confidence=1"):
        pct_iterations(2, 2, 2, confidence=1)
    with pytest.raises(ValueError, match="depth=0"):
        pct_iterations(2, 2, 0)
