"""Scheduler speed: schedules per second, and the cost of checkpoint() with no scheduler.

Schedules per second are measured with the defaults (the user code traced at its
shared-state accesses: this module is user code) and with tracing off
(``trace_modules=()``), on the same two threads of ten points; and on plain ``threading``
code (two ``Thread``s taking a ``Lock`` around a read-modify-write), which exercises the
controlled threading world.

Run with pytest-benchmark, on its own (it disables itself under xdist)::

    PYTHONPATH=src python -m pytest benchmarks/bench_scheduler.py -p no:xdist --benchmark-only

or as a script for a one-line summary::

    PYTHONPATH=src python benchmarks/bench_scheduler.py
"""

from __future__ import annotations

import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

import pytest

from parabatch.testing import check_dfs, check_random, checkpoint, spawn

THREADS = 2
POINTS = 10
SCHEDULES = 200


def two_threads_ten_points() -> None:
    """The benchmark's checked function: 2 spawned threads x 10 scheduling points each."""

    def worker() -> None:
        for _ in range(POINTS):
            checkpoint("p")

    threads = [spawn(worker) for _ in range(THREADS)]
    for t in threads:
        t.join()


def plain_threads_locked_update() -> None:
    """Plain threading, no markers: two Threads, a Lock around a read-modify-write."""
    box = {"n": 0}
    lock = threading.Lock()

    def incr() -> None:
        with lock:
            value = box["n"]
            box["n"] = value + 1

    threads = [threading.Thread(target=incr) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _random_batch() -> int:
    return check_random(two_threads_ten_points, iterations=SCHEDULES, seed=1).schedules_explored


def _random_untraced_batch() -> int:
    r = check_random(two_threads_ten_points, iterations=SCHEDULES, seed=1, trace_modules=())
    return r.schedules_explored


def _dfs_batch() -> int:
    # Bound 2: the space (several hundred schedules) is larger than the batch.
    r = check_dfs(two_threads_ten_points, max_preemptions=2, max_schedules=SCHEDULES)
    return r.schedules_explored


def _plain_random_batch() -> int:
    r = check_random(plain_threads_locked_update, iterations=SCHEDULES, seed=1)
    return r.schedules_explored


@pytest.mark.parametrize(
    "batch",
    [_random_batch, _dfs_batch, _random_untraced_batch, _plain_random_batch],
    ids=["random", "dfs", "random_untraced", "plain_threading"],
)
def test_schedules_per_second(benchmark: Any, batch: Callable[[], int]) -> None:
    explored = benchmark.pedantic(batch, rounds=5, iterations=1)
    benchmark.extra_info["schedules_per_second"] = round(explored / benchmark.stats.stats.mean)


def test_checkpoint_cost_without_scheduler(benchmark: Any) -> None:
    benchmark(checkpoint)


def test_checkpoint_with_label_cost_without_scheduler(benchmark: Any) -> None:
    benchmark(checkpoint, "label")


def main() -> None:
    for name, batch in (
        ("check_random", _random_batch),
        ("check_random, tracing off", _random_untraced_batch),
        ("check_dfs", _dfs_batch),
        ("check_random, plain Thread + Lock", _plain_random_batch),
    ):
        explored = batch()  # warm up
        assert explored == SCHEDULES, (name, explored)
        best = min(timeit.repeat(batch, number=1, repeat=5))
        print(
            f"{name}: {SCHEDULES / best:,.0f} schedules/s "
            f"({THREADS} threads x {POINTS} points, best of 5 x {SCHEDULES})"
        )
    n = 1_000_000
    noop = min(timeit.repeat("f()", globals={"f": lambda: None}, number=n, repeat=5)) / n
    cost = min(timeit.repeat("checkpoint()", globals=globals(), number=n, repeat=5)) / n
    labelled = min(timeit.repeat("checkpoint('x')", globals=globals(), number=n, repeat=5)) / n
    print(
        f"checkpoint() with no scheduler: {cost * 1e9:.0f} ns "
        f"(with a label {labelled * 1e9:.0f} ns; an empty Python call {noop * 1e9:.0f} ns)"
    )
    t = time.perf_counter()
    r = check_random(two_threads_ten_points, iterations=1000, seed=2)
    print(f"1,000 random schedules in {time.perf_counter() - t:.2f} s; ok={r.ok}")


if __name__ == "__main__":
    main()
