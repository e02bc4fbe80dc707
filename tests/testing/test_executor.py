"""ControlledExecutor: the cap holds, and the futures API blocks in the scheduler's model."""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, CancelledError

import pytest

from parabatch.testing import (
    ControlledExecutor,
    DeadlockFailure,
    Lock,
    check_dfs,
    check_random,
    checkpoint,
)


class _Gauge:
    """Counts tasks running at once.

    Its counter is under a lock: ``self.running += 1`` is a read and a write, and the
    scheduler interleaves them (an unlocked gauge miscounts under some schedules).
    """

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = Lock()

    def task(self, i: int) -> int:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        checkpoint("in task")
        with self.lock:
            self.running -= 1
        return i * i


def test_max_workers_is_honoured_and_reached() -> None:
    peaks: list[int] = []
    workers: list[int] = []

    def fn() -> None:
        gauge = _Gauge()
        ex = ControlledExecutor(2)
        futs = [ex.submit(gauge.task, i) for i in range(5)]
        assert [f.result() for f in futs] == [i * i for i in range(5)]
        ex.shutdown()
        assert gauge.peak <= 2, f"{gauge.peak} tasks ran at once with max_workers=2"
        assert ex.max_running == gauge.peak
        peaks.append(gauge.peak)
        workers.append(len(ex._workers))

    result = check_random(fn, iterations=200, seed=1)
    assert result.ok
    assert max(peaks) == 2, "the cap was never reached: the test would not see it broken"
    assert max(workers) == 2


@pytest.mark.slow
def test_sliding_window_with_wait_first_completed_as_the_core_uses_it() -> None:
    def fn() -> None:
        gauge = _Gauge()
        ex = ControlledExecutor(2)
        pending: dict[concurrent.futures.Future[int], int] = {}
        results: dict[int, int] = {}
        next_idx = 0
        while pending or next_idx < 5:
            while next_idx < 5 and len(pending) < 3:
                pending[ex.submit(gauge.task, next_idx)] = next_idx
                next_idx += 1
            done, not_done = concurrent.futures.wait(pending, return_when=FIRST_COMPLETED)
            assert done and not (done & not_done)
            for fut in done:
                results[pending.pop(fut)] = fut.result()
        ex.shutdown(wait=True)
        assert results == {i: i * i for i in range(5)}

    result = check_dfs(fn, max_preemptions=1)
    assert result.ok and result.exhausted
    assert result.schedules_explored > 10


def test_wait_first_exception_and_all_completed() -> None:
    def boom() -> None:
        raise ValueError("boom")

    def fn() -> None:
        with ControlledExecutor(2) as ex:
            good, bad = ex.submit(abs, -1), ex.submit(boom)
            done, _ = concurrent.futures.wait([good, bad], return_when=FIRST_EXCEPTION)
            assert bad in done
            assert isinstance(bad.exception(), ValueError)
            done, not_done = concurrent.futures.wait([good, bad])
            assert done == {good, bad} and not not_done
            with pytest.raises(ValueError, match="boom"):
                bad.result()

    assert check_dfs(fn, max_preemptions=2).exhausted


def test_as_completed_yields_each_future_once() -> None:
    def fn() -> None:
        with ControlledExecutor(2) as ex:
            futs = [ex.submit(_Gauge().task, i) for i in range(3)]
            got = [f.result() for f in concurrent.futures.as_completed(futs)]
            assert sorted(got) == [0, 1, 4]

    assert check_dfs(fn, max_preemptions=1).exhausted


def test_map_returns_results_in_order() -> None:
    def fn() -> None:
        with ControlledExecutor(2) as ex:
            assert list(ex.map(_Gauge().task, range(4))) == [0, 1, 4, 9]

    assert check_random(fn, iterations=50, seed=2).ok


def test_cancel_wins_or_loses_depending_on_the_schedule() -> None:
    outcomes: set[bool] = set()

    def fn() -> None:
        ex = ControlledExecutor(1)
        first = ex.submit(_Gauge().task, 1)
        second = ex.submit(_Gauge().task, 2)
        if second.cancel():
            assert second.cancelled()
            with pytest.raises(CancelledError):
                second.result()
            outcomes.add(True)
        else:
            assert second.result() == 4
            outcomes.add(False)
        assert first.result() == 1
        ex.shutdown()

    assert check_dfs(fn, max_preemptions=2).exhausted
    assert outcomes == {True, False}, "both sides of the cancel race should be explored"


def test_shutdown_cancel_futures_drops_queued_work() -> None:
    def fn() -> None:
        ex = ControlledExecutor(1)
        futs = [ex.submit(_Gauge().task, i) for i in range(3)]
        ex.shutdown(wait=False, cancel_futures=True)
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(abs, 1)
        concurrent.futures.wait(futs)
        assert all(f.done() for f in futs)
        assert futs[2].cancelled() or futs[2].result() == 4

    assert check_dfs(fn, max_preemptions=2).exhausted


def test_a_task_waiting_on_a_task_queued_behind_it_is_a_deadlock() -> None:
    def fn() -> None:
        ex = ControlledExecutor(1)

        def outer() -> int:
            return int(ex.submit(abs, -1).result())  # the only worker is busy: never runs

        ex.submit(outer).result()

    with pytest.raises(DeadlockFailure) as info:
        check_random(fn, iterations=1, seed=0)
    assert "result of F" in info.value.failure.details


def test_a_timed_wait_times_out_when_nothing_else_can_run() -> None:
    def fn() -> None:
        lock = Lock()
        with ControlledExecutor(1) as ex:
            lock.acquire()

            def blocked() -> None:
                with lock:
                    pass

            fut = ex.submit(blocked)
            with pytest.raises(concurrent.futures.TimeoutError):
                fut.result(timeout=5.0)
            lock.release()
            fut.result()

    assert check_dfs(fn, max_preemptions=2).exhausted


def test_outside_a_controlled_run_it_is_a_real_pool() -> None:
    with ControlledExecutor(2) as ex:
        assert sorted(ex.map(abs, [-1, -2])) == [1, 2]
        assert ex.submit(abs, -3).result() == 3


def test_max_workers_is_validated() -> None:
    with pytest.raises(ValueError, match="max_workers=0"):
        ControlledExecutor(0)
