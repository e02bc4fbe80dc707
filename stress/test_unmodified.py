"""Unmodified code: ordinary threaded Python, no markers, each race beside its fixed twin.

Every subject below is written the way a user writes threaded code — plain ``threading``,
``queue`` and ``concurrent.futures`` with ``from x import y`` imports, no ``checkpoint``,
no ``spawn``, no ``trace_modules`` — and checked with the defaults. For each race and each
strategy (random, PCT, DFS) the report gives the schedules to the first failure (median and
max over 10 seeds), and for each fixed twin the ``check_dfs`` certificate (schedules,
seconds) plus random and PCT runs that must all pass. A broken subject a strategy does not
catch within its budget is a false pass; a fixed one that fails is a false failure. Both
counts are asserted to be 0.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor, wait
from queue import Queue
from threading import Condition, Event, Lock, Thread
from time import sleep
from typing import Any, Callable, Optional

import pytest
from _report import StressReport
from conftest import progress

from parabatch.testing import CheckResult, check_dfs, check_pct, check_random

SEEDS = range(10)
BUDGET = 2_000  # schedules per seed for random and PCT before a miss counts as a false pass
DFS_BUDGET = 20_000
FIXED_RUNS = 300  # random and PCT schedules each fixed twin must pass


def _run_all(*targets: Callable[[], None]) -> None:
    threads = [Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- 1. two-line lost update ---------------------------------------------------------


def lost_update_two_lines() -> None:
    box = {"n": 0}

    def incr() -> None:
        v = box["n"]
        box["n"] = v + 1

    _run_all(incr, incr)
    assert box["n"] == 2, f"lost update: {box}"


def lost_update_two_lines_fixed() -> None:
    box = {"n": 0}
    lock = Lock()

    def incr() -> None:
        with lock:
            v = box["n"]
            box["n"] = v + 1

    _run_all(incr, incr)
    assert box["n"] == 2, f"lost update: {box}"


# --- 2. one-line lost update ---------------------------------------------------------


def lost_update_one_line() -> None:
    box = {"n": 0}

    def incr() -> None:
        box["n"] = box["n"] + 1

    _run_all(incr, incr)
    assert box["n"] == 2, f"lost update: {box}"


def lost_update_one_line_fixed() -> None:
    box = {"n": 0}
    lock = Lock()

    def incr() -> None:
        with lock:
            box["n"] = box["n"] + 1

    _run_all(incr, incr)
    assert box["n"] == 2, f"lost update: {box}"


# --- 3. x += 1 on an object ----------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.lock = Lock()

    def incr(self) -> None:
        self.value += 1

    def incr_locked(self) -> None:
        with self.lock:
            self.value += 1


def attribute_increment() -> None:
    c = Counter()
    _run_all(c.incr, c.incr)
    assert c.value == 2, f"lost increment: {c.value}"


def attribute_increment_fixed() -> None:
    c = Counter()
    _run_all(c.incr_locked, c.incr_locked)
    assert c.value == 2, f"lost increment: {c.value}"


# --- 4. check-then-act on a dict -----------------------------------------------------


def check_then_act() -> None:
    cache: dict[str, object] = {}
    made: list[object] = []

    def get() -> None:
        if "conn" not in cache:
            made.append(object())
            cache["conn"] = made[-1]

    _run_all(get, get)
    assert len(made) == 1, f"made {len(made)} connections"


def check_then_act_fixed() -> None:
    cache: dict[str, object] = {}
    made: list[object] = []
    lock = Lock()

    def get() -> None:
        with lock:
            if "conn" not in cache:
                made.append(object())
                cache["conn"] = made[-1]

    _run_all(get, get)
    assert len(made) == 1, f"made {len(made)} connections"


# --- 5. a Condition waited under `if` instead of `while` -----------------------------


def _condition_subject(loop: bool) -> None:
    items: list[int] = []
    cond = Condition()
    got: list[int] = []

    def consume() -> None:
        with cond:
            if loop:
                while not items:
                    cond.wait()
            elif not items:
                cond.wait()
            got.append(items.pop())

    def produce() -> None:
        for i in range(2):
            with cond:
                items.append(i)
                cond.notify()

    _run_all(consume, consume, produce)
    assert sorted(got) == [0, 1], got


def condition_if() -> None:
    _condition_subject(loop=False)


def condition_if_fixed() -> None:
    _condition_subject(loop=True)


# --- 6. a queue-fed worker pool counting by read-modify-write ------------------------


def _queue_pool(locked: bool) -> None:
    jobs: Queue[Optional[int]] = Queue()
    total = {"n": 0}
    lock = Lock()

    def worker() -> None:
        while True:
            item = jobs.get()
            if item is None:
                return
            if locked:
                with lock:
                    total["n"] = total["n"] + item
            else:
                total["n"] = total["n"] + item

    workers = [Thread(target=worker) for _ in range(2)]
    for w in workers:
        w.start()
    for item in (1, 2):
        jobs.put(item)
    for _ in workers:
        jobs.put(None)
    for w in workers:
        w.join()
    assert total["n"] == 3, f"lost update: {total}"


def queue_pool() -> None:
    _queue_pool(locked=False)


def queue_pool_fixed() -> None:
    _queue_pool(locked=True)


# --- 7. an Event set before the data it publishes ------------------------------------


def _publish(early: bool) -> None:
    ready = Event()
    data: dict[str, int] = {}
    seen: list[Optional[int]] = []

    def publisher() -> None:
        if early:
            ready.set()
            data["value"] = 42
        else:
            data["value"] = 42
            ready.set()

    def reader() -> None:
        ready.wait()
        seen.append(data.get("value"))

    _run_all(reader, publisher)
    assert seen == [42], seen


def event_early() -> None:
    _publish(early=True)


def event_early_fixed() -> None:
    _publish(early=False)


# --- 8. two locks taken in opposite orders (a deadlock) ------------------------------


def _two_locks(opposite: bool) -> None:
    a, b = Lock(), Lock()
    shared: list[str] = []

    def ab() -> None:
        with a, b:
            shared.append("ab")

    def ba() -> None:
        first, second = (b, a) if opposite else (a, b)
        with first, second:
            shared.append("ba")

    _run_all(ab, ba)
    assert sorted(shared) == ["ab", "ba"], shared


def lock_order() -> None:
    _two_locks(opposite=True)


def lock_order_fixed() -> None:
    _two_locks(opposite=False)


# --- 9. a pool created before the check ----------------------------------------------

POOL = ThreadPoolExecutor(max_workers=2)  # made at import, long before any check


def _premade_pool(locked: bool) -> None:
    box = {"n": 0}
    lock = Lock()

    def incr() -> None:
        if locked:
            with lock:
                box["n"] = box["n"] + 1
        else:
            box["n"] = box["n"] + 1

    futures = [POOL.submit(incr) for _ in range(2)]
    done, _ = wait(futures, timeout=0.1)  # a bounded wait: virtual time, nothing real
    while len(done) < 2:
        done, _ = wait(futures, timeout=0.1)
    assert box["n"] == 2, f"lost update: {box}"


def premade_pool() -> None:
    _premade_pool(locked=False)


def premade_pool_fixed() -> None:
    _premade_pool(locked=True)


# --- 10. a params swap around a wrapped call, with `from time import sleep` ----------


class Inner:
    """A node whose exec reads the params set on it: shared by both threads."""

    def __init__(self) -> None:
        self.params: dict[str, int] = {}

    def exec(self) -> int:
        params = self.params
        sleep(0)  # the "I/O" in the middle of exec
        return params["x"]

    def exec_with(self, params: dict[str, int]) -> int:
        sleep(0)
        return params["x"]


class Wrapper:
    """Sets the inner node's params for the call and puts the old ones back."""

    def __init__(self, inner: Inner) -> None:
        self.inner = inner

    def run(self, params: dict[str, int]) -> int:
        old = self.inner.params
        self.inner.params = params
        try:
            return self.inner.exec()
        finally:
            self.inner.params = old

    def run_fixed(self, params: dict[str, int]) -> int:
        return self.inner.exec_with(params)


def _params_swap(fixed: bool) -> None:
    wrapper = Wrapper(Inner())
    results: dict[int, int] = {}

    def call(x: int) -> None:
        run = wrapper.run_fixed if fixed else wrapper.run
        results[x] = run({"x": x})

    _run_all(lambda: call(1), lambda: call(2))
    assert results == {1: 1, 2: 2}, results


def params_swap() -> None:
    _params_swap(fixed=False)


def params_swap_fixed() -> None:
    _params_swap(fixed=True)


# --- 11. a shared retry counter, as in PocketFlow's Node._exec -----------------------


class RetryingNode:
    """Retries exec up to 3 times; the attempt counter lives on the shared node."""

    def __init__(self) -> None:
        self.max_retries = 3
        self.cur_retry = 0
        self.failures: dict[int, int] = {}

    def exec(self, item: int) -> int:
        n = self.failures.get(item, 0)
        if n < 2:
            self.failures[item] = n + 1
            raise RuntimeError(f"attempt {n + 1} of {item} failed")
        return item

    def run(self, item: int) -> int:
        # As PocketFlow's Node._exec: the loop variable is an attribute of the shared node.
        for self.cur_retry in range(self.max_retries):  # noqa: B020
            try:
                return self.exec(item)
            except RuntimeError:
                if self.cur_retry == self.max_retries - 1:
                    raise
                sleep(0)
        raise AssertionError("unreachable")

    def run_fixed(self, item: int) -> int:
        for attempt in range(self.max_retries):
            try:
                return self.exec(item)
            except RuntimeError:
                if attempt == self.max_retries - 1:
                    raise
                sleep(0)
        raise AssertionError("unreachable")


def _retry(fixed: bool) -> None:
    node = RetryingNode()
    results: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            results[item] = (node.run_fixed if fixed else node.run)(item)
        except RuntimeError as exc:
            results[item] = exc

    _run_all(lambda: call(1), lambda: call(2))
    assert results == {1: 1, 2: 2}, results


def retry_counter() -> None:
    _retry(fixed=False)


def retry_counter_fixed() -> None:
    _retry(fixed=True)


# --------------------------------------------------------------------- the measurement

RACES: dict[str, tuple[Callable[[], None], Callable[[], None], str]] = {
    "lost update, two lines": (lost_update_two_lines, lost_update_two_lines_fixed, "exception"),
    "lost update, one line": (lost_update_one_line, lost_update_one_line_fixed, "exception"),
    "x += 1 on an object": (attribute_increment, attribute_increment_fixed, "exception"),
    "check-then-act on a dict": (check_then_act, check_then_act_fixed, "exception"),
    "Condition under if": (condition_if, condition_if_fixed, "exception"),
    "queue-fed pool, RMW count": (queue_pool, queue_pool_fixed, "exception"),
    "Event set before its data": (event_early, event_early_fixed, "exception"),
    "two locks, opposite orders": (lock_order, lock_order_fixed, "deadlock"),
    "pool made before the check": (premade_pool, premade_pool_fixed, "exception"),
    "params swap, sleep(0)": (params_swap, params_swap_fixed, "exception"),
    "shared retry counter": (retry_counter, retry_counter_fixed, "exception"),
}


def _first_failures(
    fn: Callable[[], None], run: Callable[[Callable[[], None], int], CheckResult], kind: str
) -> tuple[list[int], list[str]]:
    """Schedules to the first failure for each seed, and what went wrong where it missed."""
    found: list[int] = []
    wrong: list[str] = []
    for seed in SEEDS:
        result = run(fn, seed)
        if result.failure is None:
            wrong.append(f"seed {seed}: no failure in {result.schedules_explored} schedules")
        elif result.failure.kind != kind:
            wrong.append(f"seed {seed}: {result.failure.kind}: {result.failure.message}")
        else:
            assert result.first_failure_at is not None
            found.append(result.first_failure_at)
    return found, wrong


def _summary(found: list[int]) -> dict[str, Any]:
    return {
        "caught": len(found),
        "seeds": len(SEEDS),
        "median": statistics.median(found) if found else None,
        "max": max(found) if found else None,
    }


@pytest.mark.parametrize("name", list(RACES))
def test_unmodified_race_and_its_fixed_twin(name: str, stress_report: StressReport) -> None:
    broken, fixed, kind = RACES[name]
    # Not scaled: a search stops at its first failure, so the budget costs time only on a
    # miss, and a smaller one would turn a slow find into a reported false pass.
    budget = BUDGET
    row: dict[str, Any] = {"kind": kind}
    problems: list[str] = []
    t0 = time.perf_counter()

    def rnd(fn: Callable[[], None], seed: int) -> CheckResult:
        return check_random(fn, iterations=budget, seed=seed, raise_on_failure=False)

    def pct(fn: Callable[[], None], seed: int) -> CheckResult:
        return check_pct(fn, iterations=budget, seed=seed, raise_on_failure=False)

    for label, run in (("random", rnd), ("pct", pct)):
        found, wrong = _first_failures(broken, run, kind)
        row[label] = _summary(found)
        problems += [f"{label} on the race: {w}" for w in wrong]

    dfs = check_dfs(broken, max_schedules=DFS_BUDGET, raise_on_failure=False)
    if dfs.failure is None or dfs.failure.kind != kind:
        problems.append(f"dfs on the race: {dfs.failure.kind if dfs.failure else 'no failure'}")
    row["dfs"] = {
        "first": dfs.first_failure_at,
        "preemptions": getattr(dfs.failure, "preemptions", None),
    }
    false_passes = len(problems)

    t1 = time.perf_counter()
    cert = check_dfs(fixed, max_schedules=DFS_BUDGET, raise_on_failure=False)
    cert_seconds = time.perf_counter() - t1
    row["certificate"] = {
        "schedules": cert.schedules_explored,
        "seconds": round(cert_seconds, 3),
        "certified": cert.certified,
        "coverage": cert.coverage(),
    }
    false_failures: list[str] = []
    if not cert.certified:
        false_failures.append(f"dfs on the fixed twin: {cert}")
    for label, result in (
        ("random", check_random(fixed, FIXED_RUNS, seed=1, raise_on_failure=False)),
        ("pct", check_pct(fixed, FIXED_RUNS, seed=1, raise_on_failure=False)),
    ):
        if not result.ok:
            false_failures.append(f"{label} on the fixed twin: {result.failure}")
    row["false_passes"] = false_passes
    row["false_failures"] = len(false_failures)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    stress_report.unmodified[name] = row
    progress(
        f"{name}: random median {row['random']['median']}, pct median {row['pct']['median']}, "
        f"dfs {row['dfs']['first']}; fixed certified in {cert.schedules_explored} schedules "
        f"({cert_seconds:.2f} s); {row['seconds']} s"
    )
    assert not problems, f"false passes on {name}:\n" + "\n".join(problems)
    assert not false_failures, f"false failures on {name}:\n" + "\n".join(false_failures)
