"""The threading world during a check: plain primitives are controlled, however imported.

Each primitive gets a race it must expose (or a deadlock it must report) and a correct use
it must certify, so neither a false pass nor a false failure goes unseen.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import platform
import queue
import sys
import sysconfig
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from queue import Queue, SimpleQueue
from threading import Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Thread
from time import monotonic, perf_counter, sleep
from typing import Any, Callable

import pytest

from parabatch.testing import (
    DeadlockFailure,
    RefusedFailure,
    check_dfs,
    check_pct,
    check_random,
)

from .subjects import premade_lock_in_an_object

# Made at import, before any check.
MODULE_LOCK = threading.Lock()
EARLY_POOL = ThreadPoolExecutor(max_workers=2)
EARLY_QUEUE: Queue[int] = Queue()


def _both(fn: Callable[[], None]) -> None:
    threads = [Thread(target=fn) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _certified(fn: Callable[[], None], **kwargs: Any) -> None:
    result = check_dfs(fn, raise_on_failure=False, **kwargs)
    assert result.certified, str(result)
    assert check_random(fn, 100, seed=3, raise_on_failure=False).ok
    assert check_pct(fn, 100, seed=3, raise_on_failure=False).ok


def _found(fn: Callable[[], None], kind: str = "exception") -> None:
    result = check_dfs(fn, raise_on_failure=False)
    assert result.failure is not None, str(result)
    assert result.failure.kind == kind, str(result.failure)


# --- locks ---------------------------------------------------------------------------


def test_a_module_level_lock_made_before_the_check_is_controlled() -> None:
    box = {"n": 0}

    def incr() -> None:
        with MODULE_LOCK:
            box["n"] = box["n"] + 1

    def fn() -> None:
        box["n"] = 0
        _both(incr)
        assert box["n"] == 2, box

    _certified(fn)
    assert type(MODULE_LOCK) is type(threading.Lock())  # put back afterwards


def test_a_lock_in_an_object_made_before_the_check_is_controlled() -> None:
    _certified(premade_lock_in_an_object)


def test_a_lock_the_checked_function_closes_over_is_controlled() -> None:
    lock = threading.Lock()  # made before the check, reached through the closure
    box = {"n": 0}

    def fn() -> None:
        box["n"] = 0

        def incr() -> None:
            with lock:
                value = box["n"]
                box["n"] = value + 1

        _both(incr)
        assert box["n"] == 2, box

    _certified(fn)


def test_rlock_reentry_and_its_condition() -> None:
    def fn() -> None:
        lock = RLock()
        cond = Condition(lock)
        items: list[int] = []

        def consume() -> None:
            with lock, cond:  # re-entered: wait must release both levels
                while not items:
                    cond.wait()
                items.pop()

        c = Thread(target=consume)
        c.start()
        with cond:
            items.append(1)
            cond.notify()
        c.join()
        assert not items

    _certified(fn)


def test_a_try_acquire_sees_the_lock_held() -> None:
    def fn() -> None:
        lock = Lock()
        got: list[bool] = []

        def hold() -> None:
            with lock:
                sleep(0.01)

        t = Thread(target=hold)
        t.start()
        got.append(lock.acquire(blocking=False))
        if got[-1]:
            lock.release()
        t.join()
        assert got == [True], got  # fails when the holder is inside: a reachable state

    _found(fn)


@pytest.mark.skipif(
    platform.python_implementation() != "CPython",
    reason="points per instruction on CPython only; per line elsewhere",
)
def test_a_one_line_read_modify_write_is_interleaved() -> None:
    def fn() -> None:
        box = {"n": 0}

        def incr() -> None:
            box["n"] = box["n"] + 1

        _both(incr)
        assert box["n"] == 2, box

    _found(fn)


# --- semaphores, events, barriers ----------------------------------------------------


def test_a_semaphore_bounds_concurrency() -> None:
    def make(limit: int) -> Callable[[], None]:
        def fn() -> None:
            sem = BoundedSemaphore(limit)
            inside = {"now": 0, "peak": 0}
            guard = Lock()

            def work() -> None:
                with sem:
                    with guard:
                        inside["now"] += 1
                        inside["peak"] = max(inside["peak"], inside["now"])
                    with guard:
                        inside["now"] -= 1

            threads = [Thread(target=work) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert inside["peak"] <= 1, inside

        return fn

    _certified(make(1))
    _found(make(2))  # two at once is reachable with a semaphore of 2


def test_semaphore_acquire_with_a_timeout_expires_in_virtual_time() -> None:
    seen: list[tuple[bool, float]] = []

    def fn() -> None:
        sem = Semaphore(0)
        start = monotonic()
        seen.append((sem.acquire(timeout=5), monotonic() - start))

    check_random(fn, 1, seed=0)
    assert seen == [(False, 5.0)]


def test_an_event_published_before_its_data_is_found_and_the_fix_certified() -> None:
    def make(early: bool) -> Callable[[], None]:
        def fn() -> None:
            ready, data = Event(), {}

            def publish() -> None:
                if early:
                    ready.set()
                data["v"] = 1
                ready.set()

            t = Thread(target=publish)
            t.start()
            ready.wait()
            assert data.get("v") == 1, data
            t.join()

        return fn

    _found(make(True))
    _certified(make(False))


def test_a_barrier_releases_everyone_together() -> None:
    def fn() -> None:
        barrier = Barrier(3)
        arrived: list[int] = []
        passed: list[int] = []

        def party(i: int) -> None:
            arrived.append(i)
            barrier.wait()
            passed.append(len(arrived))

        threads = [Thread(target=party, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        party(2)
        for t in threads:
            t.join()
        assert passed == [3, 3, 3], passed

    _certified(fn)


# --- queues --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"])
def test_every_queue_blocks_in_the_model(kind: str) -> None:
    # Looked up when the check runs, as code does: a reference to the C SimpleQueue class
    # captured before the check would make a real queue, which blocks for real.
    def fn() -> None:
        q = getattr(queue, kind)()
        got: list[int] = []

        def consumer() -> None:
            got.append(q.get())
            got.append(q.get())

        t = Thread(target=consumer)
        t.start()
        q.put(1)
        q.put(2)
        t.join()
        assert sorted(got) == [1, 2], got

    _certified(fn)


def test_simple_queue_imported_by_name_is_controlled() -> None:
    def fn() -> None:
        q: SimpleQueue[int] = SimpleQueue()
        t = Thread(target=lambda: q.put(1))
        t.start()
        assert q.get() == 1
        t.join()

    _certified(fn)


def test_a_queue_made_before_the_check_blocks_in_the_model() -> None:
    def fn() -> None:
        got: list[int] = []
        t = Thread(target=lambda: got.append(EARLY_QUEUE.get()))
        t.start()
        EARLY_QUEUE.put(7)
        t.join()
        assert got == [7]

    _certified(fn)


def test_a_get_nobody_feeds_is_a_deadlock_not_a_hang() -> None:
    def fn() -> None:
        q: Queue[int] = Queue()
        t = Thread(target=q.get)
        t.start()
        t.join()

    result = check_random(fn, 1, seed=0, raise_on_failure=False)
    assert result.failure is not None and result.failure.kind == "deadlock"
    # A free-threaded build reports the block without naming the call (the thread "waits").
    where = "T1: waits" if sysconfig.get_config_var("Py_GIL_DISABLED") else "Queue.get"
    assert where in result.failure.details, result.failure.details


def test_a_get_with_a_timeout_raises_empty_in_virtual_time() -> None:
    seen: list[float] = []

    def fn() -> None:
        q: Queue[int] = Queue()
        start = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=2.5)
        seen.append(time.monotonic() - start)

    check_random(fn, 1, seed=0)
    assert seen == [2.5]


# --- pools and futures ---------------------------------------------------------------


def _pool_counter(pool_of: Callable[[], ThreadPoolExecutor], locked: bool) -> Callable[[], None]:
    def fn() -> None:
        box = {"n": 0}
        lock = Lock()

        def incr() -> int:
            if locked:
                with lock:
                    value = box["n"]
                    box["n"] = value + 1
            else:
                value = box["n"]
                box["n"] = value + 1
            return 1

        pool = pool_of()
        futures = [pool.submit(incr) for _ in range(2)]
        assert sum(f.result(timeout=1) for f in as_completed(futures)) == 2
        assert box["n"] == 2, box

    return fn


def test_a_pool_made_in_the_run_runs_on_managed_threads() -> None:
    def fresh() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(2)

    _found(_pool_counter(fresh, locked=False))
    _certified(_pool_counter(fresh, locked=True))


def test_a_pool_made_before_the_check_runs_on_managed_threads() -> None:
    _found(_pool_counter(lambda: EARLY_POOL, locked=False))
    _certified(_pool_counter(lambda: EARLY_POOL, locked=True))


def test_a_wait_timeout_poll_loop_costs_no_real_time_and_is_no_livelock() -> None:
    polls: list[tuple[int, float]] = []

    def fn() -> None:
        start = perf_counter()
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(sleep, 30)  # 30 virtual seconds: polled 300 times or fewer
            n = 0
            while True:
                done, _ = wait([fut], timeout=0.1, return_when=FIRST_COMPLETED)
                n += 1
                if done:
                    break
        polls.append((n, perf_counter() - start))

    result = check_dfs(fn)
    assert result.ok and result.exhausted
    # perf_counter is the check's virtual clock here, not a measurement: it moves only with
    # the sleeper the waiter waits for, so never past 30 s plus a poll, whatever the schedule.
    assert all(1 <= n <= 301 and virtual <= 30.1 + 1e-9 for n, virtual in polls), polls


def test_map_and_initializer_of_a_pool() -> None:
    def fn() -> None:
        seen: list[str] = []
        with ThreadPoolExecutor(2, initializer=lambda: seen.append("init")) as pool:
            assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
        assert 1 <= len(seen) <= 2, seen

    _certified(fn)


# --- threads -------------------------------------------------------------------------


def test_a_thread_subclass_current_thread_and_names_repeat_on_replay() -> None:
    names: list[tuple[str, str]] = []

    class Worker(Thread):
        def run(self) -> None:
            names.append((self.name, threading.current_thread().name))

    def fn() -> None:
        w = Worker()
        w.start()
        w.join()
        assert not w.is_alive()

    check_random(fn, 3, seed=0)
    assert len(set(names)) == 1 and names[0][0] == names[0][1], names


def test_daemon_threads_left_blocked_end_with_the_run() -> None:
    def fn() -> None:
        q: Queue[int] = Queue()
        Thread(target=q.get, daemon=True).start()  # never fed: abandoned at the end

    result = check_dfs(fn)
    assert result.ok and result.exhausted


def test_a_non_daemon_thread_left_blocked_is_a_deadlock() -> None:
    def fn() -> None:
        q: Queue[int] = Queue()
        Thread(target=q.get).start()  # interpreter exit would wait for it forever

    with pytest.raises(DeadlockFailure):
        check_random(fn, 1, seed=0)


def test_a_timer_fires_in_virtual_time() -> None:
    fired: list[float] = []

    def fn() -> None:
        start = monotonic()
        t = threading.Timer(10.0, lambda: fired.append(monotonic() - start))
        t.start()
        t.join()

    check_random(fn, 1, seed=0)
    assert fired == [10.0]


def test_a_sleep_poll_loop_makes_progress_under_every_strategy() -> None:
    def fn() -> None:
        flag = {"set": False}

        def setter() -> None:
            flag["set"] = True

        t = Thread(target=setter)
        t.start()
        while not flag["set"]:
            sleep(0.01)
        t.join()

    _certified(fn)


# --- refusals ------------------------------------------------------------------------


def _refused(fn: Callable[[], None], needle: str) -> None:
    result = check_random(fn, 1, seed=0, raise_on_failure=False)
    assert result.failure is not None and result.failure.kind == "refused", result.failure
    assert needle in result.failure.message
    assert "test_world.py" in result.failure.message  # names the call site


def test_multiprocessing_is_refused() -> None:
    def fn() -> None:
        multiprocessing.Process(target=print).start()

    _refused(fn, "multiprocessing")


def test_an_event_loop_is_refused() -> None:
    def fn() -> None:
        asyncio.new_event_loop()  # as asyncio.run does first

    _refused(fn, "asyncio")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_fork_is_refused() -> None:
    def fn() -> None:
        os.fork()

    _refused(fn, "os.fork()")


_ORIGINALS = {
    "threading.Lock": threading.Lock,
    "threading.RLock": threading.RLock,
    "time.sleep": time.sleep,
    "time.monotonic": time.monotonic,
    "queue.SimpleQueue": queue.SimpleQueue,
    "Thread.start": Thread.start,
    "ThreadPoolExecutor.submit": ThreadPoolExecutor.submit,
    "os.fork": getattr(os, "fork", None),
    "this module's Lock": Lock,
    "this module's sleep": sleep,
}


def test_every_patch_is_gone_after_the_check() -> None:
    def fn() -> None:
        assert threading.Lock is not _ORIGINALS["threading.Lock"]
        assert sleep is not _ORIGINALS["this module's sleep"]  # rebound for the check

    check_random(fn, 1, seed=0)
    now = {
        "threading.Lock": threading.Lock,
        "threading.RLock": threading.RLock,
        "time.sleep": time.sleep,
        "time.monotonic": time.monotonic,
        "queue.SimpleQueue": queue.SimpleQueue,
        "Thread.start": Thread.start,
        "ThreadPoolExecutor.submit": ThreadPoolExecutor.submit,
        "os.fork": getattr(os, "fork", None),
        "this module's Lock": Lock,
        "this module's sleep": sleep,
    }
    assert now == _ORIGINALS
    assert not isinstance(RefusedFailure, str)


def test_two_threads_importing_one_module_is_no_false_blocked(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module body runs under its import lock, a real lock: a point inside it would park
    # the importer holding that lock and block the other importer for real.
    (tmp_path / "lazily_imported.py").write_text(
        "REGISTRY = {}\nfor i in range(3):\n    REGISTRY[i] = i * 2\nVALUE = REGISTRY[2]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def fn() -> None:
        out: list[int] = []

        def work() -> None:
            import lazily_imported

            out.append(lazily_imported.VALUE)

        _both(work)
        sys.modules.pop("lazily_imported", None)
        assert out == [4, 4], out

    result = check_dfs(fn, raise_on_failure=False)
    assert result.ok and result.exhausted, str(result)
