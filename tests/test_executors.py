"""The batch and the group on every executor: threads, a process pool, a dask cluster.

Each test runs on all three (the ``executor`` fixture) and states what threads give, so
the other two are held to the same results, errors, fail_fast and call records. The nodes
come from ``tests.remote_nodes``: they record what they do in files, so a node in a
worker process reports to the test as one in a thread does, and markers order items
across processes without timing. The process pool (two processes) and the dask cluster (a
``LocalCluster`` of two worker processes) start once for this module and serve every
run, so a run that failed or was interrupted is followed by others on the same workers.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import sys
import threading
import types
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from pocketflow import Node

from parabatch import (
    CALLS_KEY,
    NamespacedNodeWrapper,
    ParallelGroupNode,
    PflowBatchNode,
    Shared,
    UncopyableNodeError,
)
from parabatch._remote import RemoteFuture
from parabatch.executors import (
    ProcessPool,
    RemoteItemError,
    WorkerSetupError,
    dask_executor,
    local_cluster,
    process_executor,
)
from parabatch.workflow._cli import main as cli_main

from .nodes import chain
from .remote_nodes import Die, FileTracker, LockError, LockResult, Put, Step, TwoArgError

Factory = Optional[Callable[[int], Any]]

EXECUTORS = ["threads", "processes", "dask"]
REMOTE = ["processes", "dask"]


# Module scope: the cluster's and the pool's threads must not outlive these tests, since
# parabatch.testing's checks control the threading primitives of the whole process.
@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    cluster = local_cluster(2, 1)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPool]:
    with process_executor(2) as pool:
        yield pool


def _factory(name: str, request: pytest.FixtureRequest) -> Factory:
    if name == "threads":
        return None
    if name == "processes":
        pool: ProcessPool = request.getfixturevalue("process_pool")
        return pool
    return dask_executor(request.getfixturevalue("dask_client"))


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Factory:
    return _factory(request.param, request)


@pytest.fixture(params=REMOTE)
def remote(request: pytest.FixtureRequest) -> Factory:
    return _factory(request.param, request)


@pytest.fixture
def tracker(tmp_path: Path) -> FileTracker:
    return FileTracker(tmp_path / "tracker")


def batch(node: Any, config: dict[str, Any], executor: Factory, **kw: Any) -> PflowBatchNode:
    return PflowBatchNode(
        chain(node, "n"), "n", {"parallel": True, **config}, executor=executor, **kw
    )


def values(shared: dict[str, Any]) -> list[Any]:
    return [None if r is None else r["out"]["value"] for r in shared["n"]["results"]]


def run_clean(executor: Factory, tracker: FileTracker) -> None:
    """A run after a failed or interrupted one: the pool or cluster is still usable."""
    shared: dict[str, Any] = {}
    batch(Step(tracker), {"items": ["again-0", "again-1", "again-2"]}, executor).run(shared)
    assert values(shared) == ["again-0", "again-1", "again-2"]


# -- results, errors, call records ---------------------------------------------------------


def test_results_errors_and_call_records_are_what_threads_give(
    executor: Factory, tracker: FileTracker
) -> None:
    items = list(range(10))
    node = Step(
        tracker,
        fail={2: 99, 5: 1},  # 2 fails both attempts; 5 succeeds on its second
        latency={0: 0.02, 3: 0.01},  # completion order differs from input order
        usage=True,
        records=2,
    )
    shared: dict[str, Any] = {"base": "visible"}
    node.params = {}
    batch(
        node,
        {"items": items, "max_concurrent": 3, "max_retries": 2, "error_handling": "continue"},
        executor,
    ).run(shared)
    out = shared["n"]
    assert values(shared) == [None if i == 2 else i for i in items]
    assert [r["out"]["attempt"] for r in out["results"] if r is not None] == [
        2 if i == 5 else 1 for i in items if i != 2
    ]
    assert [e["index"] for e in out["errors"]] == [2]
    assert out["errors"][0]["error"] == "ValueError: planned failure of 2, attempt 2"
    assert isinstance(out["errors"][0]["exception"], ValueError)
    # The traceback text is the worker's, wherever the item ran.
    assert 'raise ValueError(f"planned failure' in out["errors"][0]["traceback"]
    assert (out["success_count"], out["error_count"], out["count"]) == (9, 1, 10)
    assert tracker.attempts == {i: 2 if i in (2, 5) else 1 for i in items}
    # Every record exactly once; one item's records in the order the item made them.
    calls = list(shared[CALLS_KEY])
    direct = [c for c in calls if "n" in c]
    usage = [c for c in calls if "batch_item_index" in c]
    assert len(calls) == len(direct) + len(usage)
    ok = [i for i in items if i != 2]
    by_item: dict[Any, list[int]] = {}
    for c in direct:
        by_item.setdefault(c["item"], []).append(c["n"])
    # The failed attempt of item 5 wrote nothing that survives: its store was dropped.
    assert by_item == {i: [0, 1] for i in ok}
    assert sorted(c["batch_item_index"] for c in usage) == ok
    assert all(
        c
        == {
            "model": "sim",
            "tokens": len(str(c["batch_item_index"])),
            "node_id": "n",
            "batch_item_index": c["batch_item_index"],
        }
        for c in usage
    )


def test_identical_items_all_run(executor: Factory, tracker: FileTracker) -> None:
    # dask deduplicates identical pure calls; items must never be merged.
    shared: dict[str, Any] = {}
    batch(Step(tracker), {"items": [7, 7, 7], "max_concurrent": 2}, executor).run(shared)
    assert values(shared) == [7, 7, 7] and tracker.attempts == {7: 3}


@pytest.mark.parametrize("cap", [1, 2])
def test_at_most_max_concurrent_items_run_at_once(
    executor: Factory, tracker: FileTracker, cap: int
) -> None:
    items = list(range(8))
    shared: dict[str, Any] = {}
    node = Step(tracker, latency={i: 0.01 for i in items})
    batch(node, {"items": items, "max_concurrent": cap}, executor).run(shared)
    assert values(shared) == items
    assert 1 <= tracker.max_in_flight <= cap


# -- fail_fast and Ctrl-C ------------------------------------------------------------------


def test_fail_fast_raises_lowest_index_keeps_output_and_leaves_the_pool_usable(
    executor: Factory, tracker: FileTracker
) -> None:
    # Item 1 fails at once and leaves a marker; item 0 waits for it, then fails too. Item
    # 0's error is raised (lowest index), item 1's kept; nothing is submitted once the
    # failure is seen, so only the first window (2 x max_concurrent) can ever start.
    node = Step(tracker, fail={0: 99, 1: 99}, wait={0: "one"}, marks={1: "one"})
    shared: dict[str, Any] = {}
    with pytest.raises(ValueError, match="planned failure of 0, attempt 1"):
        batch(node, {"items": list(range(8)), "max_concurrent": 2}, executor).run(shared)
    out = shared["n"]
    assert [e["index"] for e in out["errors"]] == [0, 1]
    assert out["batch_metadata"]["aborted"] is True
    started = set(tracker.started)
    assert {0, 1} <= started <= {0, 1, 2, 3}
    assert [v for v in values(shared) if v is not None] == sorted(started - {0, 1})
    run_clean(executor, tracker)


def test_ctrl_c_cancels_what_has_not_started_and_leaves_the_pool_usable(
    executor: Factory, tracker: FileTracker
) -> None:
    def progress(index: int, done: int, total: int, ok: bool) -> None:
        raise KeyboardInterrupt

    node = Step(tracker, latency={i: 0.01 for i in range(20)})
    with pytest.raises(KeyboardInterrupt):
        batch(
            node, {"items": list(range(20)), "max_concurrent": 2}, executor, progress=progress
        ).run({})
    # Only the first window was ever submitted; the rest never starts.
    assert set(tracker.started) <= {0, 1, 2, 3}
    run_clean(executor, tracker)


# -- what cannot travel --------------------------------------------------------------------


class Holder:
    """Picklable unless it holds something that is not."""

    def __init__(self, thing: Any) -> None:
        self.thing = thing


def test_store_that_cannot_travel_is_refused_before_any_item_runs(
    remote: Factory, tracker: FileTracker
) -> None:
    shared: dict[str, Any] = {"items": [1, 2], "db": {"conn": Holder(threading.Lock())}}
    with pytest.raises(UncopyableNodeError) as info:
        batch(Step(tracker), {"items": "${items}"}, remote).run(shared)
    assert info.value.path == "shared['db']['conn'].thing"
    assert info.value.kind == "_thread.lock"
    assert "shared['db']['conn'].thing" in str(info.value)
    assert tracker.started == []


def test_shared_object_that_cannot_travel_is_refused_naming_it(
    remote: Factory, tracker: FileTracker
) -> None:
    node = Step(tracker)
    node.client = Shared(Holder(threading.Lock()))  # fine on threads: shared, not copied
    with pytest.raises(UncopyableNodeError) as info:
        batch(node, {"items": [1]}, remote).run({})
    assert info.value.path.endswith(".client.value.thing")
    assert info.value.path.startswith("inner_node")
    assert tracker.started == []


def test_class_not_importable_on_workers_is_refused_before_any_item_runs(
    remote: Factory, tracker: FileTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    ghost = types.ModuleType("parabatch_ghost_module")

    class Ghost(Node):
        pass

    Ghost.__module__ = ghost.__name__
    Ghost.__qualname__ = "Ghost"
    ghost.Ghost = Ghost  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    node = Step(tracker)
    node.helper = Ghost()
    with pytest.raises(WorkerSetupError, match="parabatch_ghost_module"):
        batch(node, {"items": [1, 2]}, remote).run({})
    assert tracker.started == []


def test_item_exception_that_cannot_travel_comes_back_as_a_record(
    executor: Factory, tracker: FileTracker
) -> None:
    node = Step(tracker, raise_={1: "lock", 2: "twoarg"})
    shared: dict[str, Any] = {}
    batch(node, {"items": [0, 1, 2, 3], "error_handling": "continue"}, executor).run(shared)
    out = shared["n"]
    assert values(shared) == [0, None, None, 3]
    lock_error, two_arg = out["errors"]
    assert lock_error["index"] == 1 and two_arg["index"] == 2
    exc = lock_error["exception"]
    if executor is None:
        assert isinstance(exc, LockError)
    else:
        assert isinstance(exc, RemoteItemError)
        assert exc.remote_type == "tests.remote_nodes.LockError"
        assert exc.remote_message == "item 1 failed holding a lock"
        assert 'raise LockError(f"item {item!r} failed holding a lock")' in exc.remote_traceback
        assert "could not be sent back" in exc.reason
    assert lock_error["error"].endswith("item 1 failed holding a lock")
    assert 'raise LockError(f"item {item!r} failed holding a lock")' in lock_error["traceback"]
    exc = two_arg["exception"]
    # Unpicklable on the way back, unless the worker's pickling rebuilds it without
    # __init__ (dask installs tblib's exception pickling): either way, clear and whole.
    if isinstance(exc, RemoteItemError):
        assert exc.remote_type == "tests.remote_nodes.TwoArgError"
        assert "raise TwoArgError(" in exc.remote_traceback
    else:
        assert isinstance(exc, TwoArgError)
    assert two_arg["error"].endswith("item 2: failed")


def test_fail_fast_with_an_exception_that_cannot_travel(
    remote: Factory, tracker: FileTracker
) -> None:
    node = Step(tracker, raise_={0: "lock"})
    with pytest.raises(RemoteItemError, match="LockError: item 0 failed holding a lock"):
        batch(node, {"items": [0]}, remote).run({})
    run_clean(remote, tracker)


def test_result_that_cannot_travel_back_is_an_error_record(remote: Factory) -> None:
    shared: dict[str, Any] = {}
    batch(LockResult(), {"items": [1, 2], "error_handling": "continue"}, remote).run(shared)
    out = shared["n"]
    assert out["results"] == [None, None] and out["error_count"] == 2
    for index, record in enumerate(out["errors"]):
        assert record["index"] == index and record["item"] == index + 1
        assert isinstance(record["exception"], RemoteItemError)
        assert "['handle']['lock'] (_thread.lock) cannot be sent back" in record["error"]


def test_lambda_factory_and_progress_stay_with_the_coordinator(
    remote: Factory, tracker: FileTracker
) -> None:
    assert remote is not None
    seen: list[tuple[int, bool]] = []
    shared: dict[str, Any] = {}
    batch(
        Step(tracker),
        {"items": [1, 2, 3]},
        lambda n: remote(n),
        progress=lambda index, done, total, ok: seen.append((index, ok)),
    ).run(shared)
    assert values(shared) == [1, 2, 3]
    assert sorted(seen) == [(0, True), (1, True), (2, True)]


# -- the group -----------------------------------------------------------------------------


def child(name: str, **params: Any) -> Any:
    node = Put()
    node.params = params
    return NamespacedNodeWrapper(node, name)


def test_group_merges_in_child_order_with_call_records(executor: Factory) -> None:
    children = [child("a", v=1, latency=0.02), child("b", v=2, action="next"), child("c", v=3)]
    shared: dict[str, Any] = {}
    ParallelGroupNode(children, "g", max_concurrent=3, executor=executor).run(shared)
    assert (shared["a"], shared["b"], shared["c"]) == ({"v": 1}, {"v": 2}, {"v": 3})
    assert shared["g"]["results"] == ["default", "next", "default"]
    assert sorted(c["child"] for c in shared[CALLS_KEY]) == [1, 2, 3]


def test_group_fail_fast_lowest_index_and_successes_merged(executor: Factory) -> None:
    children = [child("a", v=1), child("b", v=2, fail=True), child("c", v=3, fail=True)]
    shared: dict[str, Any] = {}
    with pytest.raises(ValueError) as raised:
        ParallelGroupNode(children, "g", max_concurrent=3, executor=executor).run(shared)
    # Which children start before the first failure is seen depends on the schedule: one
    # still queued then is cancelled and leaves no record. Of those that failed, the
    # lowest index is raised; one that succeeded is merged.
    failed = [e["index"] for e in shared["g"]["errors"]]
    assert failed in ([1], [2], [1, 2]), failed
    assert str(raised.value) == f"child {failed[0] + 1} failed"
    assert "b" not in shared and "c" not in shared
    a_ran = shared["g"]["results"][0] == "default"
    assert shared.get("a") == ({"v": 1} if a_ran else None)
    assert [c["child"] for c in shared[CALLS_KEY]] == ([1] if a_ran else [])


def test_group_continue_runs_every_child(executor: Factory) -> None:
    children = [child("a", v=1, fail=True), child("b", v=2)]
    shared: dict[str, Any] = {}
    ParallelGroupNode(children, "g", on_error="continue", executor=executor).run(shared)
    assert shared["b"] == {"v": 2} and shared["g"]["results"] == [None, "default"]
    assert shared["g"]["errors"][0]["error"] == "ValueError: child 1 failed"


# -- the machinery -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["cancel", "drop"])
def test_a_cancelled_remote_future_counts_as_done_for_wait(how: str) -> None:
    # The runner cancels what has not started, then waits on everything it submitted; a
    # future cancelled without being marked "notified" would never count as done there.
    future = RemoteFuture(0, "item", lambda _: True)
    assert future.cancel() if how == "cancel" else (future.drop() is None)
    done, not_done = concurrent.futures.wait([future], timeout=0)
    assert done == {future} and not not_done and future.cancelled()


def test_a_remote_future_handed_to_a_worker_is_not_cancelled() -> None:
    future = RemoteFuture(0, "item", lambda _: False)
    assert not future.cancel() and not future.cancelled() and not future.done()


def test_dropping_twice_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    future = RemoteFuture(0, "item", lambda _: True)
    future.drop()
    future.drop()
    assert future.cancel() and future.cancelled()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- the workflow CLI ----------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    workflow = {
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "summarise ${doc}"},
                "batch": {"items": ["a", "b", "c", "d"], "as": "doc", "parallel": True},
            }
        ]
    }
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow))
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["run", str(path), "--no-progress", *args], stdout=out, stderr=err)
    return code, json.loads(out.getvalue() or "{}"), err.getvalue()


@pytest.mark.parametrize("spec", ["processes", "dask"])
def test_cli_executor_gives_what_threads_give(tmp_path: Path, spec: str) -> None:
    if spec == "dask":
        pytest.importorskip("distributed")
    code, threads, _ = _cli(tmp_path, "--executor", "threads")
    assert code == 0
    code, other, err = _cli(tmp_path, "--executor", spec)
    assert code == 0, err
    assert other["ask"]["results"] == threads["ask"]["results"]
    key = lambda c: c["batch_item_index"]  # noqa: E731
    assert sorted(other[CALLS_KEY], key=key) == sorted(threads[CALLS_KEY], key=key)
    assert len(other[CALLS_KEY]) == 4


@pytest.mark.parametrize("spec", ["gpu", "dask=", "processes=4", "threads=x"])
def test_cli_unknown_executor_is_a_usage_error(
    tmp_path: Path, spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli(tmp_path, "--executor", spec)
    assert info.value.code == 2
    assert f"--executor {spec!r}: expected threads, processes, dask" in capsys.readouterr().err


def test_cli_unreachable_scheduler_exits_2(tmp_path: Path) -> None:
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        code, _, err = _cli(tmp_path, "--executor", "dask=tcp://127.0.0.1:9")
    assert code == 2
    assert err.startswith("parabatch: --executor dask=tcp://127.0.0.1:9: ")


def test_a_worker_that_dies_fails_the_run_and_the_pool_recovers(tracker: FileTracker) -> None:
    with process_executor(2) as pool:
        node = Die()
        node.params = {"die_on": 1}
        with pytest.raises(BrokenProcessPool):
            PflowBatchNode(node, "n", {"items": [0, 1, 2], "parallel": True}, executor=pool).run({})
        run_clean(pool, tracker)


def test_dask_collector_failure_fails_the_run_instead_of_hanging(
    dask_client: Any, tracker: FileTracker
) -> None:
    factory = dask_executor(dask_client)

    class Broken:
        def add(self, task: Any) -> None:
            pass

        def __next__(self) -> Any:
            raise RuntimeError("the scheduler went away")

    def make(n: int) -> Any:
        executor = factory(n)
        bind = executor.bind

        def broken_bind(work: Any) -> None:
            bind(work)
            executor._completed = Broken()

        executor.bind = broken_bind  # type: ignore[method-assign]
        return executor

    with pytest.raises(RuntimeError, match="the scheduler went away"):
        batch(Step(tracker), {"items": [1, 2, 3]}, make).run({})
