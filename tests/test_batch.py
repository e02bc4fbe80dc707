from __future__ import annotations

import json
import logging
import platform
import threading
import weakref
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, ClassVar

import pytest
from pocketflow import Flow, Node

from parabatch import (
    BatchConfigError,
    BatchItemsError,
    CallLog,
    PflowBatchNode,
    Shared,
    TemplateError,
    UncopyableNodeError,
)

from .nodes import Tracker, Work, chain

PARALLEL = [False, True]
# The keys of batch_metadata["timing"]: its shape is tested here, never its values.
TIMING_KEYS = ["duration_s", "items_per_second", "started_at"]


def batch(node: Any, config: dict[str, Any], node_id: str = "n", **kw: Any) -> PflowBatchNode:
    return PflowBatchNode(chain(node, node_id), node_id, config, **kw)


def values(shared: dict[str, Any], node_id: str = "n") -> list[Any]:
    return [None if r is None else r["out"]["value"] for r in shared[node_id]["results"]]


# -- construction --------------------------------------------------------------------------


def test_is_a_pocketflow_node_not_a_batch_node() -> None:
    from pocketflow import BatchNode

    node = batch(Work(Tracker()), {"items": [1]})
    assert isinstance(node, Node) and not isinstance(node, BatchNode)


def test_bad_config_refused_at_construction() -> None:
    with pytest.raises(BatchConfigError, match="max_concurrent=0"):
        batch(Work(Tracker()), {"items": [1], "max_concurrent": 0})


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"call_log": "atomic"}, "call_log='atomic': must be 'lock' or 'gil'"),
        ({"executor": 4}, "executor=4: must be callable"),
        ({"progress": "bar"}, "progress='bar': must be callable"),
    ],
)
def test_bad_arguments_refused(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(BatchConfigError) as info:
        batch(Work(Tracker()), {"items": [1]}, **kwargs)
    assert needle in str(info.value)


def test_empty_node_id_refused() -> None:
    with pytest.raises(BatchConfigError, match="node_id=''"):
        PflowBatchNode(Work(Tracker()), "", {"items": [1]})


# -- items ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "shared", "expected"),
    [
        ("${xs}", {"xs": [1, 2]}, [1, 2]),
        ("${data.rows[1]}", {"data": {"rows": [[0], [3, 4]]}}, [3, 4]),
        ("${data.rows.0}", {"data": {"rows": [[5]]}}, [5]),
        ("${xs}", {"xs": (7, 8)}, [7, 8]),
        ("${xs}", {"xs": "[1, 2, 3]"}, [1, 2, 3]),
        (["a", "${x}", {"k": "${x}"}], {"x": 9}, ["a", 9, {"k": 9}]),
    ],
)
def test_items_resolution(spec: Any, shared: dict[str, Any], expected: list[Any]) -> None:
    class Echo(Node):
        def prep(self, s: Any) -> Any:
            return s["item"]

        def post(self, s: Any, p: Any, e: Any) -> None:
            s["got"] = p

    node = PflowBatchNode(chain(Echo()), "n", {"items": spec})
    node.run(shared)
    assert [r["got"] for r in shared["n"]["results"]] == expected
    assert [r["item"] for r in shared["n"]["results"]] == expected


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (None, "resolved to None"),
        (42, "resolved to int 42"),
        ({"a": 1}, "resolved to dict {'a': 1}"),
        ("not json", "a string that is not a JSON list: 'not json'"),
        ('{"a": 1}', "a string that is not a JSON list"),
    ],
)
def test_items_that_are_not_a_list(value: Any, found: str) -> None:
    tracker = Tracker()
    node = batch(Work(tracker), {"items": "${xs}"})
    with pytest.raises(BatchItemsError) as info:
        node.run({"xs": value})
    assert "batch 'n': items '${xs}'" in str(info.value) and found in str(info.value)
    assert tracker.started == []


def test_items_path_that_does_not_resolve() -> None:
    with pytest.raises(TemplateError) as info:
        batch(Work(Tracker()), {"items": "${data.rows}"}).run({"data": {"cols": []}})
    assert str(info.value) == (
        "batch 'n': items ${data.rows}: key 'rows' not found in data (a dict with keys: cols)"
    )


@pytest.mark.parametrize("parallel", PARALLEL)
def test_empty_items(parallel: bool) -> None:
    shared: dict[str, Any] = {"xs": []}
    assert batch(Work(Tracker()), {"items": "${xs}", "parallel": parallel}).run(shared) == "default"
    out = shared["n"]
    assert out["results"] == [] and out["count"] == 0 and out["errors"] is None
    assert out["success_count"] == 0 and out["error_count"] == 0


# -- per-item context ----------------------------------------------------------------------


@pytest.mark.parametrize("parallel", PARALLEL)
def test_item_context(parallel: bool) -> None:
    seen: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    class Look(Node):
        def prep(self, s: Any) -> Any:
            with lock:
                seen.append(
                    (
                        s["doc"],
                        s["__index__"],
                        s["base"],
                        s["n"].copy() if False else dict(s.namespace),
                        sorted(k for k in s.root if k == "n"),
                    )
                )
            s["written"] = s["doc"]
            s["__root_write__"] = 1

    shared = {"docs": ["a", "b", "c"], "base": 1}
    PflowBatchNode(chain(Look()), "n", {"items": "${docs}", "as": "doc", "parallel": parallel}).run(
        shared
    )
    assert sorted(seen) == [("a", 0, 1, {}, ["n"]), ("b", 1, 1, {}, ["n"]), ("c", 2, 1, {}, ["n"])]
    assert [r for r in shared["n"]["results"]] == [
        {"written": "a", "item": "a"},
        {"written": "b", "item": "b"},
        {"written": "c", "item": "c"},
    ]
    assert "__root_write__" not in shared and "doc" not in shared and "__index__" not in shared


@pytest.mark.parametrize("parallel", PARALLEL)
def test_namespace_is_fresh_on_every_attempt(parallel: bool) -> None:
    class Leaves(Node):
        def prep(self, s: Any) -> Any:
            leftover = s.namespace.get("leftover")
            s["leftover"] = "from attempt"
            return leftover

        def exec(self, leftover: Any) -> Any:
            if not hasattr(self, "failed"):
                self.failed = True
                raise RuntimeError("first attempt fails")
            return leftover

        def post(self, s: Any, p: Any, e: Any) -> None:
            s["saw_leftover"] = e

    shared: dict[str, Any] = {}
    PflowBatchNode(
        chain(Leaves()), "n", {"items": [1], "max_retries": 2, "parallel": parallel}
    ).run(shared)
    assert shared["n"]["results"][0]["saw_leftover"] is None


# -- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize(("fails", "max_retries"), [(0, 1), (1, 2), (2, 3), (3, 3), (5, 2)])
def test_attempts_are_min_of_failures_plus_one_and_max_retries(
    parallel: bool, fails: int, max_retries: int
) -> None:
    tracker = Tracker()
    shared: dict[str, Any] = {}
    batch(
        Work(tracker, fail={"x": fails}),
        {
            "items": ["x", "y"],
            "max_retries": max_retries,
            "parallel": parallel,
            "error_handling": "continue",
        },
    ).run(shared)
    assert tracker.attempts == {"x": min(fails + 1, max_retries), "y": 1}
    failed = fails >= max_retries
    out = shared["n"]
    assert (out["results"][0] is None) == failed
    assert out["error_count"] == int(failed)
    if failed:
        error = out["errors"][0]
        assert set(error) == {"index", "item", "error", "exception", "traceback", "attempts"}
        assert error["index"] == 0 and error["item"] == "x"
        assert isinstance(error["exception"], ValueError)
        assert error["error"] == f"ValueError: planned failure of 'x', attempt {max_retries}"
    else:
        assert out["results"][0]["out"]["attempt"] == fails + 1


@pytest.mark.parametrize("parallel", PARALLEL)
def test_retry_wait_between_attempts_only(parallel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    batch(
        Work(Tracker(), fail={"x": 2}),
        {
            "items": ["x"],
            "max_retries": 3,
            "retry_wait": 0.25,
            "parallel": parallel,
        },
    ).run({})
    assert sleeps == [0.25, 0.25]


def test_exec_fallback_value_becomes_the_result() -> None:
    class Forgiving(PflowBatchNode):
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            return {"fallback": prep_res, "why": str(exc)}

    shared: dict[str, Any] = {}
    tracker = Tracker()
    Forgiving(chain(Work(tracker, fail={"x": 9})), "n", {"items": ["x"], "max_retries": 2}).run(
        shared
    )
    assert shared["n"]["results"] == [{"fallback": "x", "why": "planned failure of 'x', attempt 2"}]
    assert shared["n"]["errors"] is None and tracker.attempts["x"] == 2


# -- ordering, output, modes ---------------------------------------------------------------


def test_parallel_results_in_input_order_despite_completion_order() -> None:
    items = list(range(8))
    latency = {i: 0.002 * (8 - i) for i in items}  # the first item finishes last
    tracker = Tracker()
    shared: dict[str, Any] = {}
    batch(
        Work(tracker, latency=latency), {"items": items, "parallel": True, "max_concurrent": 8}
    ).run(shared)
    assert values(shared) == items


@pytest.mark.parametrize("parallel", PARALLEL)
def test_continue_gives_exactly_one_entry_per_item_errors_in_index_order(parallel: bool) -> None:
    items = list(range(10))
    fail = {i: 99 for i in (7, 2, 5)}
    latency = {7: 0.0, 2: 0.01, 5: 0.005}
    shared: dict[str, Any] = {}
    batch(
        Work(Tracker(), fail=fail, latency=latency),
        {
            "items": items,
            "parallel": parallel,
            "error_handling": "continue",
            "max_concurrent": 10,
        },
    ).run(shared)
    out = shared["n"]
    assert [e["index"] for e in out["errors"]] == [2, 5, 7]
    assert values(out and shared) == [None if i in fail else i for i in items]
    assert out["count"] == 10 and out["success_count"] == 7 and out["error_count"] == 3
    assert out["batch_metadata"]["aborted"] is False


@pytest.mark.parametrize("parallel", PARALLEL)
def test_output_shape(parallel: bool) -> None:
    shared: dict[str, Any] = {}
    action = batch(
        Work(Tracker()),
        {
            "items": [1, 2],
            "parallel": parallel,
            "max_retries": 2,
            "max_concurrent": 4,
            "retry_wait": 0,
        },
    ).run(shared)
    assert action == "default"
    out = shared["n"]
    assert set(out) == {
        "results",
        "count",
        "success_count",
        "error_count",
        "errors",
        "batch_metadata",
    }
    meta = out["batch_metadata"]
    assert {k: v for k, v in meta.items() if k != "timing"} == {
        "parallel": parallel,
        "max_concurrent": 4,
        "max_retries": 2,
        "retry_wait": 0,
        "execution_mode": "parallel" if parallel else "sequential",
        "aborted": False,
        "interrupted": False,
    }
    timing_record = meta["timing"]
    assert sorted(timing_record) == TIMING_KEYS
    assert isinstance(meta["timing"]["started_at"], float)


# -- fail_fast -----------------------------------------------------------------------------


def test_fail_fast_sequential_stops_at_first_failure_and_keeps_partial_output() -> None:
    tracker = Tracker()
    shared: dict[str, Any] = {}
    node = batch(Work(tracker, fail={2: 99}), {"items": [0, 1, 2, 3, 4]})
    with pytest.raises(ValueError, match="planned failure of 2") as info:
        node.run(shared)
    assert tracker.started == [0, 1, 2]
    out = shared["n"]
    assert values(shared) == [0, 1, None, None, None]
    assert out["errors"][0]["exception"] is info.value
    assert out["batch_metadata"]["aborted"] is True
    assert out["success_count"] == 2 and out["error_count"] == 1


def test_fail_fast_parallel_raises_lowest_index_failure_and_loses_nothing() -> None:
    # Item 1 fails at once; item 0 is still running and fails later. Item 0's error is
    # raised, item 1's is kept, and nothing is submitted after the first failure is seen:
    # items 2 and 3 were already queued (one per worker) and may start; 4 and 5 never do.
    release = threading.Event()
    tracker = Tracker()

    class Ordered(Work):
        def exec(self, item: Any) -> Any:
            if item == 0:
                assert release.wait(10)
            if item == 1:
                try:
                    raise ValueError("item 1 failed first")
                finally:
                    release.set()
            if item == 0:
                raise ValueError("item 0 failed later")
            return super().exec(item)

    shared: dict[str, Any] = {}
    node = batch(
        Ordered(tracker), {"items": [0, 1, 2, 3, 4, 5], "parallel": True, "max_concurrent": 2}
    )
    with pytest.raises(ValueError, match="item 0 failed later"):
        node.run(shared)
    out = shared["n"]
    assert [e["index"] for e in out["errors"]] == [0, 1]
    assert out["results"][:2] == [None, None] and out["results"][4:] == [None, None]
    assert set(tracker.started) <= {2, 3}  # queued before the failure; 4 and 5 never started
    assert [r["item"] for r in out["results"] if r is not None] == sorted(tracker.started)
    assert out["batch_metadata"]["aborted"] is True


def test_fail_fast_parallel_running_items_finish_and_are_kept() -> None:
    # Item 0 is still running when item 1's failure is seen; it finishes and is kept, and
    # nothing is submitted after: items 2 and 3 (queued, one per worker) may start, 4 and 5
    # never do. Item 0 waits until the coordinator has reported item 1's failure, so the
    # order does not depend on thread timing.
    failure_seen = threading.Event()
    tracker = Tracker()

    class Pair(Work):
        def exec(self, item: Any) -> Any:
            if item == 1:
                raise ValueError("item 1 failed")
            if item == 0:
                assert failure_seen.wait(10)
            return super().exec(item)

    def progress(index: int, done: int, total: int, ok: bool) -> None:
        if index == 1 and not ok:
            failure_seen.set()

    shared: dict[str, Any] = {}
    with pytest.raises(ValueError, match="item 1 failed"):
        batch(
            Pair(tracker),
            {"items": [0, 1, 2, 3, 4, 5], "parallel": True, "max_concurrent": 2},
            progress=progress,
        ).run(shared)
    got = values(shared)
    assert got[:2] == [0, None] and got[4:] == [None, None]
    assert [e["index"] for e in shared["n"]["errors"]] == [1]
    assert 0 in tracker.started
    assert set(tracker.started) <= {0, 2, 3}
    assert [v for v in got[2:4] if v is not None] == sorted(set(tracker.started) - {0})


# -- the parallel machinery ----------------------------------------------------------------


class RecordingExecutor(ThreadPoolExecutor):
    """Counts workers asked for and futures pending at once."""

    instances: ClassVar[list[RecordingExecutor]] = []

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.max_workers_asked = max_workers
        self.pending = 0
        self.max_pending = 0
        self.count_lock = threading.Lock()
        RecordingExecutor.instances.append(self)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        with self.count_lock:
            self.pending += 1
            self.max_pending = max(self.max_pending, self.pending)
        fut = super().submit(fn, *args, **kwargs)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _: Any) -> None:
        with self.count_lock:
            self.pending -= 1


@pytest.mark.parametrize(("n", "cap"), [(3, 5), (20, 4), (50, 1)])
def test_executor_hook_bound_and_window(n: int, cap: int) -> None:
    RecordingExecutor.instances.clear()
    tracker = Tracker()
    shared: dict[str, Any] = {}
    batch(
        Work(tracker, latency={i: 0.001 for i in range(n)}),
        {
            "items": list(range(n)),
            "parallel": True,
            "max_concurrent": cap,
        },
        executor=RecordingExecutor,
    ).run(shared)
    (pool,) = RecordingExecutor.instances
    assert pool.max_workers_asked == min(n, cap)
    assert pool.max_pending <= 2 * cap  # submitted: the window keeps one queued per worker
    assert tracker.max_in_flight <= cap
    assert values(shared) == list(range(n))


def test_max_concurrent_items_do_run_at_once() -> None:
    cap = 4
    together = threading.Barrier(cap, timeout=10)  # broken unless cap items overlap

    class Meet(Work):
        def exec(self, item: Any) -> Any:
            together.wait()
            return super().exec(item)

    tracker = Tracker()
    shared: dict[str, Any] = {}
    batch(Meet(tracker), {"items": list(range(8)), "parallel": True, "max_concurrent": cap}).run(
        shared
    )
    assert values(shared) == list(range(8)) and tracker.max_in_flight <= cap


@pytest.mark.skipif(
    platform.python_implementation() == "PyPy",
    reason="counts copies freed, which PyPy's garbage collector defers",
)
def test_copies_alive_never_exceed_max_concurrent() -> None:
    lock = threading.Lock()
    live = [0, 0, 0]  # alive now, most alive at once, made in all

    class Counted(Work):
        def __deepcopy__(self, memo: dict[int, Any]) -> Counted:
            new = Counted.__new__(Counted)
            new.__dict__.update({k: v for k, v in self.__dict__.items()})
            with lock:
                live[0] += 1
                live[1] = max(live[1], live[0])
                live[2] += 1
            weakref.finalize(new, _dec, lock, live)
            return new

    cap = 3
    batch(
        Counted(Tracker(), latency={i: 0.001 for i in range(30)}),
        {
            "items": list(range(30)),
            "parallel": True,
            "max_concurrent": cap,
        },
    ).run({})
    # one copy per item, plus the up-front check that the chain can be copied
    assert live[2] == 31
    assert 1 <= live[1] <= cap + 1


def _dec(lock: threading.Lock, live: list[int]) -> None:
    with lock:
        live[0] -= 1


def test_parallel_items_do_not_share_node_state() -> None:
    class Stateful(Node):
        def prep(self, s: Any) -> Any:
            self.mine = s["item"]  # instance state: racy on a shared node
            return s["item"]

        def exec(self, item: Any) -> Any:
            threading.Event().wait(0.001)
            return self.mine

        def post(self, s: Any, p: Any, e: Any) -> None:
            s["mine"] = e

    shared: dict[str, Any] = {}
    PflowBatchNode(chain(Stateful()), "n", {"items": list(range(20)), "parallel": True}).run(shared)
    assert [r["mine"] for r in shared["n"]["results"]] == list(range(20))


def test_no_pool_thread_outlives_the_batch() -> None:
    batch(Work(Tracker()), {"items": list(range(10)), "parallel": True}).run({})
    assert not [t for t in threading.enumerate() if t.name.startswith("parabatch")]


# -- __llm_calls__ -------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize(("mode", "kind"), [("lock", CallLog), ("gil", list)])
def test_call_log_created_before_items_run(parallel: bool, mode: str, kind: type) -> None:
    class Peek(Node):
        def prep(self, s: Any) -> Any:
            return s["__llm_calls__"]

        def post(self, s: Any, p: Any, e: Any) -> None:
            s["log_id"] = id(p)

    shared: dict[str, Any] = {}
    PflowBatchNode(chain(Peek()), "n", {"items": [1, 2], "parallel": parallel}, call_log=mode).run(
        shared
    )  # type: ignore[arg-type]
    log = shared["__llm_calls__"]
    assert type(log) is kind
    assert {r["log_id"] for r in shared["n"]["results"]} == {id(log)}


@pytest.mark.parametrize("kind", [list, CallLog])
@pytest.mark.parametrize("mode", ["lock", "gil"])
def test_existing_call_log_kept(kind: type, mode: str) -> None:
    existing = kind([{"old": 1}])
    shared: dict[str, Any] = {"__llm_calls__": existing}
    batch(Work(Tracker(), usage=True), {"items": ["ab"]}, call_log=mode).run(  # type: ignore[arg-type]
        shared
    )
    assert shared["__llm_calls__"] is existing and type(existing) is kind
    assert existing == [
        {"old": 1},
        {"model": "sim", "tokens": 2, "node_id": "n", "batch_item_index": 0},
    ]


def test_call_log_that_is_not_a_list() -> None:
    with pytest.raises(BatchItemsError, match="holds dict; expected a list"):
        batch(Work(Tracker()), {"items": [1]}).run({"__llm_calls__": {}})


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("mode", ["lock", "gil"])
def test_usage_recorded_once_per_item_tagged(parallel: bool, mode: str) -> None:
    items = [f"item-{'x' * i}" for i in range(12)]
    shared: dict[str, Any] = {}
    batch(
        Work(Tracker(), usage=True, fail={items[3]: 1}),
        {
            "items": items,
            "parallel": parallel,
            "max_retries": 2,
        },
        node_id="summ",
        call_log=mode,
    ).run(shared)  # type: ignore[arg-type]
    log = shared["__llm_calls__"]
    assert sorted(r["batch_item_index"] for r in log) == list(range(12))
    for record in log:
        assert record == {
            "model": "sim",
            "tokens": len(items[record["batch_item_index"]]),
            "node_id": "summ",
            "batch_item_index": record["batch_item_index"],
        }


def test_usage_at_root_counts_unless_inherited() -> None:
    class RootUsage(Node):
        def post(self, s: Any, p: Any, e: Any) -> None:
            if s["item"] == "writes":
                s.root["llm_usage"] = {"tokens": 5}

    shared: dict[str, Any] = {"llm_usage": {"tokens": 999}}
    PflowBatchNode(chain(RootUsage()), "n", {"items": ["writes", "inherits"]}).run(shared)
    assert shared["__llm_calls__"] == [{"tokens": 5, "node_id": "n", "batch_item_index": 0}]


@pytest.mark.parametrize("mode", ["lock", "gil"])
def test_nodes_appending_themselves_lose_nothing(mode: str) -> None:
    class Appends(Node):
        def exec(self, _: Any) -> Any:
            return None

        def post(self, s: Any, p: Any, e: Any) -> None:
            for k in range(50):
                s["__llm_calls__"].append((s["item"], k))
                if k % 10 == 0:
                    threading.Event().wait(0.0001)

    shared: dict[str, Any] = {}
    PflowBatchNode(
        chain(Appends()),
        "n",
        {"items": list(range(40)), "parallel": True, "max_concurrent": 8},
        call_log=mode,
    ).run(shared)  # type: ignore[arg-type]
    assert sorted(shared["__llm_calls__"]) == [(i, k) for i in range(40) for k in range(50)]


# -- uncopyable chains ---------------------------------------------------------------------


def test_uncopyable_chain_refused_before_any_item_runs() -> None:
    tracker = Tracker()
    work = Work(tracker)
    work.client = {"pool": [threading.Lock()]}  # type: ignore[attr-defined]
    node = batch(work, {"items": [1, 2], "parallel": True})
    with pytest.raises(UncopyableNodeError) as info:
        node.run({})
    err = info.value
    assert err.path == "inner_node.inner_node.inner_node.client['pool'][0]"
    assert err.kind == "_thread.lock"
    assert "parabatch.Shared" in str(err)
    assert tracker.started == []


def test_shared_object_is_not_copied() -> None:
    tracker = Tracker()
    work = Work(tracker)
    lock = threading.Lock()
    work.client = Shared(lock)  # type: ignore[attr-defined]
    shared: dict[str, Any] = {}
    batch(work, {"items": [1, 2, 3], "parallel": True}).run(shared)
    assert values(shared) == [1, 2, 3]
    assert sum(tracker.attempts.values()) == 3


def test_sequential_mode_needs_no_copy() -> None:
    work = Work(Tracker())
    work.lock = threading.Lock()  # type: ignore[attr-defined]
    shared: dict[str, Any] = {}
    batch(work, {"items": [1, 2]}).run(shared)
    assert values(shared) == [1, 2]


# -- interruption, progress, reuse ---------------------------------------------------------


def test_keyboard_interrupt_in_an_item_cancels_the_rest() -> None:
    tracker = Tracker()

    class Interrupted(Work):
        def exec(self, item: Any) -> Any:
            if item == 1:
                raise KeyboardInterrupt
            return super().exec(item)

    # One worker, so the item queued behind the interrupted one is taken by the same
    # thread, after the interrupt has stopped the run: it must not start.
    node = batch(
        Interrupted(tracker),
        {"items": list(range(50)), "parallel": True, "max_concurrent": 1, "max_retries": 3},
    )
    with pytest.raises(KeyboardInterrupt):
        node.run({})
    for t in threading.enumerate():
        if t.name.startswith("parabatch"):
            t.join(10)
            assert not t.is_alive()
    assert tracker.started == [0]


def test_keyboard_interrupt_in_the_coordinator_stops_retries() -> None:
    tracker = Tracker()
    gate = threading.Event()

    class Slow(Work):
        def exec(self, item: Any) -> Any:
            if item == 1:
                assert gate.wait(10)
                raise ValueError("retry me")
            return super().exec(item)

    def progress(index: int, done: int, total: int, ok: bool) -> None:
        if index == 0:
            gate.set()
            raise KeyboardInterrupt

    node = batch(
        Slow(tracker),
        {"items": [0, 1, 2, 3], "parallel": True, "max_concurrent": 2, "max_retries": 10},
        progress=progress,
    )
    with pytest.raises(KeyboardInterrupt):
        node.run({})
    for t in threading.enumerate():
        if t.name.startswith("parabatch"):
            t.join(10)
    # Item 1 is stopped between attempts; items 2 and 3 may have started (one queued
    # future per worker is kept), but nothing retries to the end.
    assert 1 not in tracker.attempts or tracker.attempts[1] < 10


@pytest.mark.parametrize("parallel", PARALLEL)
def test_progress_after_each_item(parallel: bool) -> None:
    events: list[tuple[int, int, int, bool]] = []
    batch(
        Work(Tracker(), fail={2: 9}),
        {"items": [0, 1, 2, 3], "parallel": parallel, "error_handling": "continue"},
        progress=lambda *e: events.append(e),
    ).run({})
    assert sorted(e[0] for e in events) == [0, 1, 2, 3]
    assert [e[1] for e in events] == [1, 2, 3, 4]
    assert {e[2] for e in events} == {4}
    assert {(e[0], e[3]) for e in events} == {(0, True), (1, True), (2, False), (3, True)}


@pytest.mark.parametrize("parallel", PARALLEL)
def test_failing_progress_callback_never_breaks_the_batch(
    parallel: bool, caplog: pytest.LogCaptureFixture
) -> None:
    def progress(*_: Any) -> None:
        raise RuntimeError("display broke")

    shared: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING, logger="parabatch"):
        batch(Work(Tracker()), {"items": [0, 1, 2], "parallel": parallel}, progress=progress).run(
            shared
        )
    assert values(shared) == [0, 1, 2]
    assert "progress callback failed" in caplog.text


def test_a_run_inside_a_run_of_the_same_instance_is_its_own_run() -> None:
    holder: list[PflowBatchNode] = []
    inner_shared: dict[str, Any] = {"xs": ["inner"]}

    class Reenter(Node):
        def prep(self, shared: Any) -> Any:
            return shared["x"]

        def exec(self, x: Any) -> Any:
            if x == "outer":
                holder[0].run(inner_shared)
            return x

        def post(self, shared: Any, p: Any, e: Any) -> None:
            shared["v"] = e

    node = PflowBatchNode(chain(Reenter()), "n", {"items": "${xs}", "as": "x"})
    holder.append(node)
    shared: dict[str, Any] = {"xs": ["outer"]}
    node.run(shared)
    assert [r["v"] for r in shared["n"]["results"]] == ["outer"]
    assert [r["v"] for r in inner_shared["n"]["results"]] == ["inner"]


def test_in_a_flow_with_successor() -> None:
    class Count(Node):
        def prep(self, s: Any) -> Any:
            return s["n"]["count"]

        def post(self, s: Any, p: Any, e: Any) -> None:
            s["counted"] = p

    first = batch(Work(Tracker()), {"items": "${xs}", "parallel": True})
    first >> Count()
    shared: dict[str, Any] = {"xs": [1, 2, 3]}
    Flow(start=first).run(shared)
    assert shared["counted"] == 3 and values(shared) == [1, 2, 3]


def test_custom_executor_factory_is_used() -> None:
    made: list[int] = []

    def factory(n: int) -> Executor:
        made.append(n)
        return ThreadPoolExecutor(n)

    shared: dict[str, Any] = {}
    batch(
        Work(Tracker()),
        {"items": [1, 2, 3], "parallel": True, "max_concurrent": 2},
        executor=factory,
    ).run(shared)
    assert made == [2] and values(shared) == [1, 2, 3]


def test_json_items_round_trip_in_output() -> None:
    shared: dict[str, Any] = {"xs": json.dumps(["a", 1, None])}
    batch(Work(Tracker()), {"items": "${xs}"}).run(shared)
    assert [r["item"] for r in shared["n"]["results"]] == ["a", 1, None]
