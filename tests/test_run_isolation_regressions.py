"""Regressions: the ways a batch lost data or misbehaved when a run's state lived on the node.

Each test reproduces one fault found by using the batch as a new user would (bad input,
faults, interrupts, reruns, other executors) and fails on the design that kept a run's
store and stop flag on the node instance.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable

import pytest
from pocketflow import Node

from parabatch import (
    BatchConfigError,
    BatchItemsError,
    CallLog,
    ItemReportedError,
    NamespacedNodeWrapper,
    ParallelGroupNode,
    PflowBatchNode,
    Shared,
    TemplateAwareNodeWrapper,
)

from .nodes import Tracker, Work, chain

PARALLEL = [False, True]
SAFETY_S = 10  # a bound on waits that only a broken build reaches; never a timing assertion


class Writes(Node):  # type: ignore[misc]
    """Writes ``value`` straight to ``shared[node_id]`` (no namespacing wrapper)."""

    def __init__(self, value: Any, delete: bool = False) -> None:
        super().__init__()
        self.value = value
        self.delete = delete

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        if self.delete:
            del shared["n"]
        else:
            shared["n"] = self.value


# -- 1. a non-dict result ---------------------------------------------------------------------


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("value", ["text", 42, [1, 2]])
def test_a_non_dict_result_is_wrapped_not_a_batch_failure(parallel: bool, value: Any) -> None:
    shared: dict[str, Any] = {}
    config = {"items": [0, 1], "parallel": parallel, "error_handling": "continue"}
    PflowBatchNode(Writes(value), "n", config).run(shared)
    assert shared["n"]["results"] == [{"value": value, "item": 0}, {"value": value, "item": 1}]
    assert shared["n"]["error_count"] == 0


@pytest.mark.parametrize("parallel", PARALLEL)
def test_a_deleted_namespace_is_an_empty_result(parallel: bool) -> None:
    shared: dict[str, Any] = {}
    config = {"items": ["a"], "parallel": parallel, "error_handling": "continue"}
    PflowBatchNode(Writes(None, delete=True), "n", config).run(shared)
    assert shared["n"]["results"] == [{"value": None, "item": "a"}]


# -- 2. failed items must not keep their copies alive -----------------------------------------


class Counted(Node):  # type: ignore[misc]
    """Fails every time; every instance (original and copies) is tracked weakly."""

    def __init__(self, alive: Any) -> None:
        super().__init__()
        self.alive = Shared(alive)
        alive.add(self)

    def exec(self, _: Any) -> Any:
        raise RuntimeError("always fails")

    def __deepcopy__(self, memo: dict[int, Any]) -> Counted:
        new = Counted.__new__(Counted)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "alive"})
        new.params = dict(self.params)
        new.successors = {}
        new.alive = self.alive
        self.alive.add(new)
        return new


def test_failed_parallel_items_do_not_keep_their_copies_alive() -> None:
    alive: weakref.WeakSet[Any] = weakref.WeakSet()
    shared: dict[str, Any] = {}
    config = {"items": list(range(60)), "parallel": True, "max_concurrent": 3}
    config["error_handling"] = "continue"
    node = PflowBatchNode(chain(Counted(alive)), "n", config)
    node.run(shared)
    gc.collect()
    assert shared["n"]["error_count"] == 60
    assert len(alive) == 1, f"{len(alive) - 1} copies kept alive by the error records"
    assert next(iter(alive)) is node.inner_node.inner_node.inner_node  # the original
    record = shared["n"]["errors"][0]
    assert record["exception"].__traceback__ is None
    assert "RuntimeError: always fails" in record["traceback"]


# -- 3. a rerun after an interrupt never mixes with the interrupted run ---------------------


def test_a_rerun_after_ctrl_c_does_not_receive_the_old_runs_retries() -> None:
    old_started, gate = threading.Event(), threading.Event()
    attempts: list[str] = []

    class Node3(Node):  # type: ignore[misc]
        def prep(self, shared: Any) -> Any:
            return shared["item"]

        def exec(self, item: Any) -> Any:
            attempts.append(item)
            if item == "interrupt":
                assert old_started.wait(SAFETY_S)
                raise KeyboardInterrupt
            if item == "old":
                old_started.set()
                assert gate.wait(SAFETY_S)
                if attempts.count("old") == 1:
                    raise ValueError("first attempt of the old run fails, so it would retry")
            if item == "new":
                # The interrupted run's worker is still in its first attempt: let it go on
                # while this run is in progress, and wait until it has finished.
                gate.set()
                for t in old_threads:
                    t.join(SAFETY_S)
            return item

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["llm_usage"] = {"tag": exec_res}

    node = PflowBatchNode(
        chain(Node3()),
        "n",
        {"items": "${xs}", "parallel": True, "max_concurrent": 2, "max_retries": 3},
    )
    with pytest.raises(KeyboardInterrupt):
        node.run({"xs": ["old", "interrupt"]})
    old_threads = [t for t in threading.enumerate() if t.name.startswith("parabatch")]
    second: dict[str, Any] = {"xs": ["new"]}
    node.run(second)
    assert [r["tag"] for r in second["__llm_calls__"]] == ["new"]
    assert attempts.count("old") == 1, "the interrupted run started another attempt"


# -- 4. two runs of one instance at once -----------------------------------------------------


@pytest.mark.parametrize("parallel", PARALLEL)
def test_two_threads_running_one_instance_each_get_their_own_run(parallel: bool) -> None:
    both_running = threading.Barrier(2, timeout=SAFETY_S)

    class Meet(Node):  # type: ignore[misc]
        def prep(self, shared: Any) -> Any:
            return shared["item"], shared["tag"]

        def exec(self, prep_res: Any) -> Any:
            if prep_res[0] == 0:
                both_running.wait()  # both runs are inside an item at the same moment
            return prep_res

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["seen"] = exec_res

    node = PflowBatchNode(chain(Meet()), "n", {"items": "${xs}", "parallel": parallel})
    stores = [{"xs": [0, 1, 2], "tag": tag} for tag in ("a", "b")]
    errors: list[BaseException] = []

    def run(store: dict[str, Any]) -> None:
        try:
            node.run(store)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAFETY_S)
    assert errors == []
    for store in stores:
        assert [r["seen"] for r in store["n"]["results"]] == [(i, store["tag"]) for i in range(3)]


# -- 5. an exception that cannot be printed ---------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class RaisesUnprintable(Node):  # type: ignore[misc]
    def exec(self, _: Any) -> Any:
        raise Unprintable


@pytest.mark.parametrize("parallel", PARALLEL)
def test_an_unprintable_exception_costs_only_its_item(parallel: bool) -> None:
    shared: dict[str, Any] = {}
    config = {"items": [0], "parallel": parallel, "error_handling": "continue"}
    PflowBatchNode(chain(RaisesUnprintable()), "n", config).run(shared)
    record = shared["n"]["errors"][0]
    assert record["error"] == "Unprintable: <unprintable Unprintable object>"
    assert isinstance(record["exception"], Unprintable)


# -- 6. retry_wait out of range -------------------------------------------------------------


@pytest.mark.parametrize("wait", [math.inf, 1e300, 1e9, math.nan, -math.inf])
def test_a_retry_wait_that_cannot_be_slept_is_refused(wait: float) -> None:
    with pytest.raises(BatchConfigError) as info:
        PflowBatchNode(chain(Work(Tracker())), "n", {"items": [1], "retry_wait": wait})
    assert any(p.startswith("retry_wait=") for p in info.value.problems)


# -- 7. an interrupt keeps every finished result -----------------------------------------------


@pytest.mark.parametrize("parallel", PARALLEL)
def test_ctrl_c_keeps_the_finished_results(parallel: bool) -> None:
    class StopAt3(Node):  # type: ignore[misc]
        def prep(self, shared: Any) -> Any:
            return shared["item"]

        def exec(self, item: Any) -> Any:
            if item == 3:
                raise KeyboardInterrupt
            return item

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["v"] = exec_res

    shared: dict[str, Any] = {}
    config = {"items": [0, 1, 2, 3, 4, 5], "parallel": parallel, "max_concurrent": 1}
    with pytest.raises(KeyboardInterrupt):
        PflowBatchNode(chain(StopAt3()), "n", config).run(shared)
    out = shared["n"]
    assert [r["v"] for r in out["results"][:3]] == [0, 1, 2]
    assert out["results"][3:] == [None, None, None]
    assert out["batch_metadata"]["interrupted"] is True
    assert out["batch_metadata"]["aborted"] is True


_INTERRUPT_MAIN_SCRIPT = """
import _thread, signal, threading, time
# A runner's worker may ignore SIGINT, and a child inherits that: Python then installs no
# handler and interrupt_main does nothing. Ctrl-C as a terminal user has it:
signal.signal(signal.SIGINT, signal.default_int_handler)
from pocketflow import Node
from parabatch import NamespacedNodeWrapper, PflowBatchNode

first_collected, caught = threading.Event(), threading.Event()
seen_in_time = []

class Interrupts(Node):
    def prep(self, shared):
        return shared["item"]

    def exec(self, item):
        if item == 1:
            assert first_collected.wait(10)
            time.sleep(0.3)  # let the coordinator settle into waiting for this item
            _thread.interrupt_main()
            # Finishes only once the coordinator has raised; a coordinator blocked in an
            # untimed wait() would see the interrupt only after this item ended.
            seen_in_time.append(caught.wait(10))

node = PflowBatchNode(
    NamespacedNodeWrapper(Interrupts(), "n"),
    "n",
    {"items": [0, 1], "parallel": True, "max_concurrent": 2},
    progress=lambda *_: first_collected.set(),
)
try:
    node.run({})
except KeyboardInterrupt:
    caught.set()
for t in threading.enumerate():
    if t.name.startswith("parabatch"):
        t.join(10)
print(seen_in_time)
"""


def test_interrupt_main_is_seen_while_an_item_is_still_running() -> None:
    # In a fresh interpreter: the interrupt goes to the main thread, which under a test
    # runner's workers may not be the one running this test, or may ignore SIGINT.
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_MAIN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True]", done.stdout + done.stderr


# -- 8. names that collide -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_id", "alias"),
    [("n", "__index__"), ("n", "n"), ("n", "__llm_calls__"), ("__llm_calls__", "item")],
)
def test_names_that_collide_are_refused(node_id: str, alias: str) -> None:
    with pytest.raises(BatchConfigError) as info:
        PflowBatchNode(Work(Tracker()), node_id, {"items": [1], "as": alias})
    assert len(info.value.problems) == 1


def test_a_group_id_that_collides_is_refused() -> None:
    with pytest.raises(BatchConfigError, match="reserved"):
        ParallelGroupNode([Work(Tracker())], "__index__")


# -- 9. every argument problem at once ---------------------------------------------------------


def test_a_non_node_and_bad_arguments_are_reported_with_the_config() -> None:
    with pytest.raises(BatchConfigError) as info:
        PflowBatchNode(
            "not a node",
            "",
            {"items": [1], "max_concurrent": 0},
            call_log="maybe",  # type: ignore[arg-type]
        )
    fields = sorted(p.split("=")[0] for p in info.value.problems)
    assert fields == ["call_log", "inner_node", "max_concurrent", "node_id"]


# -- 10. executors that misbehave ---------------------------------------------------------------


def test_an_executor_factory_returning_none_is_named() -> None:
    node = PflowBatchNode(
        chain(Work(Tracker())), "n", {"items": [1], "parallel": True}, executor=lambda n: None
    )  # type: ignore[arg-type,return-value]
    with pytest.raises(BatchConfigError, match=r"executor\(1\) returned None"):
        node.run({})


class RefusesWork(ThreadPoolExecutor):
    """Refuses every submission; its shutdown takes no ``cancel_futures``."""

    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:  # type: ignore[override]
        raise RuntimeError("the executor refuses")

    def shutdown(self, wait: bool = True) -> None:  # type: ignore[override]
        super().shutdown(wait)


def test_a_submit_error_is_raised_as_itself_and_nothing_is_lost() -> None:
    shared: dict[str, Any] = {}
    node = PflowBatchNode(
        chain(Work(Tracker())), "n", {"items": [1, 2], "parallel": True}, executor=RefusesWork
    )
    with pytest.raises(RuntimeError, match="the executor refuses") as info:
        node.run(shared)
    assert info.value.__context__ is None
    assert shared["n"]["results"] == [None, None] and shared["n"]["batch_metadata"]["aborted"]


class OldShutdown(Executor):
    """An executor whose ``shutdown`` predates ``cancel_futures``."""

    def __init__(self, n: int) -> None:
        self.pool = ThreadPoolExecutor(n)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:  # type: ignore[override]
        self.pool.shutdown(wait)


def test_ctrl_c_through_an_executor_without_cancel_futures_stays_ctrl_c() -> None:
    class Interrupt(Node):  # type: ignore[misc]
        def exec(self, _: Any) -> Any:
            raise KeyboardInterrupt

    node = PflowBatchNode(
        chain(Interrupt()), "n", {"items": [1], "parallel": True}, executor=OldShutdown
    )
    with pytest.raises(KeyboardInterrupt):
        node.run({})


class Oversized(Executor):
    """Runs up to eight tasks at once whatever it is asked for, and does not say so."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(8)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait, cancel_futures=cancel_futures)


def test_the_bound_holds_whatever_the_executor_does() -> None:
    tracker = Tracker()
    more = threading.Condition()

    class Crowds(Work):
        def exec(self, item: Any) -> Any:
            self.tracker.enter(item)
            try:
                # Each item waits (briefly) for company beyond the bound: an executor that
                # ran more than two at once would show it in max_in_flight.
                with more:
                    more.notify_all()
                    more.wait_for(lambda: tracker.in_flight > 2, timeout=0.1)
                return item
            finally:
                self.tracker.leave()

    config = {"items": list(range(12)), "parallel": True, "max_concurrent": 2}
    shared: dict[str, Any] = {}
    PflowBatchNode(chain(Crowds(tracker)), "n", config, executor=lambda n: Oversized()).run(shared)
    assert shared["n"]["success_count"] == 12
    assert tracker.max_in_flight <= 2


# -- 11. a deep wrapper chain ----------------------------------------------------------------


@pytest.mark.parametrize("parallel", PARALLEL)
def test_a_600_deep_wrapper_chain_runs_in_both_modes(parallel: bool) -> None:
    node: Any = Work(Tracker())
    for _ in range(600):
        node = TemplateAwareNodeWrapper(node, "n", {})
    shared: dict[str, Any] = {}
    config = {"items": [1, 2, 3], "parallel": parallel}
    PflowBatchNode(NamespacedNodeWrapper(node, "n"), "n", config).run(shared)
    assert [r["out"]["value"] for r in shared["n"]["results"]] == [1, 2, 3]


# -- 12. pflow's conventions -------------------------------------------------------------------


class ReportsError(Node):  # type: ignore[misc]
    def prep(self, shared: Any) -> Any:
        return shared["item"]

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        if prep_res == "bad":
            shared["error"] = "rate limited"
        shared["v"] = prep_res


@pytest.mark.parametrize("parallel", PARALLEL)
def test_failure_key_makes_a_reported_error_a_failure(parallel: bool) -> None:
    shared: dict[str, Any] = {}
    config = {"items": ["ok", "bad"], "parallel": parallel, "error_handling": "continue"}
    config["max_retries"] = 2
    PflowBatchNode(chain(ReportsError()), "n", config, failure_key="error").run(shared)
    out = shared["n"]
    assert out["results"][0]["v"] == "ok" and out["results"][1] is None
    (record,) = out["errors"]
    assert isinstance(record["exception"], ItemReportedError) and record["attempts"] == 2
    assert record["error"] == "ItemReportedError: the node reported error='rate limited'"


def test_without_failure_key_a_reported_error_is_a_result() -> None:
    shared: dict[str, Any] = {}
    PflowBatchNode(chain(ReportsError()), "n", {"items": ["bad"]}).run(shared)
    assert shared["n"]["results"][0]["error"] == "rate limited"


def test_items_that_are_not_a_list_are_also_a_type_error() -> None:
    node = PflowBatchNode(chain(Work(Tracker())), "n", {"items": "${xs}"})
    with pytest.raises(TypeError):
        node.run({"xs": 42})
    assert issubclass(BatchItemsError, TypeError)


def test_overwriting_the_nodes_own_item_key_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class SetsItem(Node):  # type: ignore[misc]
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["item"] = "mine"

    shared: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING, logger="parabatch"):
        PflowBatchNode(NamespacedNodeWrapper(SetsItem(), "n"), "n", {"items": [7]}).run(shared)
    assert shared["n"]["results"][0]["item"] == 7
    assert "wrote its own 'item' key" in caplog.text


# -- pflow cases the suite lacked -------------------------------------------------------------


class Echo(Node):  # type: ignore[misc]
    def prep(self, shared: Any) -> Any:
        return shared["item"]

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        shared["seen"] = prep_res


@pytest.mark.parametrize("parallel", PARALLEL)
def test_falsy_and_mixed_items_reach_their_results(parallel: bool) -> None:
    items = [None, False, 0, "", [], {}, [1, [2]], {"k": None}]
    shared: dict[str, Any] = {"xs": items}
    PflowBatchNode(chain(Echo()), "n", {"items": "${xs}", "parallel": parallel}).run(shared)
    assert [r["item"] for r in shared["n"]["results"]] == items
    assert [r["seen"] for r in shared["n"]["results"]] == items


@pytest.mark.parametrize(
    ("text", "expected"),
    [("  [1, 2]\n", [1, 2]), ("[]", []), ("[[1, 2], [3]]", [[1, 2], [3]])],
)
def test_json_string_items(text: str, expected: list[Any]) -> None:
    shared: dict[str, Any] = {"xs": text}
    PflowBatchNode(chain(Echo()), "n", {"items": "${xs}"}).run(shared)
    assert [r["item"] for r in shared["n"]["results"]] == expected
    assert shared["n"]["count"] == len(expected)


def test_two_batches_append_in_order_with_every_usage_field() -> None:
    usage = {
        "model": "m",
        "input_tokens": 3,
        "output_tokens": 4,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 2,
        "total_cost_usd": 0.25,
    }

    class Uses(Node):  # type: ignore[misc]
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["llm_usage"] = dict(usage)

    shared: dict[str, Any] = {"__llm_calls__": CallLog()}
    for node_id in ("first", "second"):
        PflowBatchNode(chain(Uses(), node_id), node_id, {"items": [0, 1]}).run(shared)
    assert [(r["node_id"], r["batch_item_index"]) for r in shared["__llm_calls__"]] == [
        ("first", 0),
        ("first", 1),
        ("second", 0),
        ("second", 1),
    ]
    for record in shared["__llm_calls__"]:
        assert {k: record[k] for k in usage} == usage


def test_a_per_instance_run_override_is_used_on_the_copies() -> None:
    inner = Echo()
    original_run = inner._run

    def traced_run(shared: Any) -> Any:
        shared["traced"] = True
        return original_run(shared)

    inner._run = traced_run
    shared: dict[str, Any] = {}
    PflowBatchNode(NamespacedNodeWrapper(inner, "n"), "n", {"items": [1, 2], "parallel": True}).run(
        shared
    )
    assert [r.get("traced") for r in shared["n"]["results"]] == [True, True]


def test_the_output_is_json_serialisable_apart_from_the_exception() -> None:
    shared: dict[str, Any] = {}
    config = {"items": [0, 1], "parallel": True, "error_handling": "continue"}
    PflowBatchNode(chain(Work(Tracker(), fail={1: 5})), "n", config).run(shared)
    out = dict(shared["n"])
    for record in out["errors"]:
        record.pop("exception")
    json.dumps(out)


# -- the group, the same way --------------------------------------------------------------------


class Put(Node):  # type: ignore[misc]
    def __init__(self, key: str, fail: bool = False, interrupt: bool = False) -> None:
        super().__init__()
        self.key, self.fail, self.interrupt = key, fail, interrupt

    def exec(self, _: Any) -> Any:
        if self.interrupt:
            raise KeyboardInterrupt
        if self.fail:
            raise Unprintable
        return self.key

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
        shared[self.key] = exec_res


def test_a_group_interrupted_keeps_the_finished_childrens_writes() -> None:
    shared: dict[str, Any] = {}
    children = [Put("a"), Put("b"), Put("c", interrupt=True), Put("d")]
    with pytest.raises(KeyboardInterrupt):
        ParallelGroupNode(children, "g", max_concurrent=1).run(shared)
    assert (shared["a"], shared["b"]) == ("a", "b") and "d" not in shared
    assert shared["g"]["group_metadata"]["interrupted"] is True


def test_a_group_child_failure_keeps_no_frames_and_prints() -> None:
    shared: dict[str, Any] = {}
    group = ParallelGroupNode([Put("a"), Put("b", fail=True)], "g", on_error="continue")
    group.run(shared)
    (record,) = shared["g"]["errors"]
    assert record["error"] == "Unprintable: <unprintable Unprintable object>"
    assert record["exception"].__traceback__ is None and record["traceback"]


def test_one_group_in_two_threads_at_once() -> None:
    meet = threading.Barrier(2, timeout=SAFETY_S)

    class Meets(Node):  # type: ignore[misc]
        def prep(self, shared: Any) -> Any:
            return shared["tag"]

        def exec(self, tag: Any) -> Any:
            meet.wait()
            return tag

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            shared["seen"] = exec_res

    group = ParallelGroupNode([Meets()], "g")
    stores: list[dict[str, Any]] = [{"tag": "a"}, {"tag": "b"}]
    threads = [threading.Thread(target=group.run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAFETY_S)
    assert [s.get("seen") for s in stores] == ["a", "b"]


class NeverNotifies(Executor):
    """One worker thread; a cancelled future is skipped without being marked done."""

    _max_workers = 1

    def __init__(self, n: int) -> None:
        self.queue: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self.cond:
            self.queue.append((future, fn, args))
            self.cond.notify()
        return future

    def _work(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.queue or self.closed)
                if not self.queue:
                    return
                future, fn, args = self.queue.pop(0)
            if future.cancelled():
                continue  # never set_running_or_notify_cancel: stays CANCELLED, not done
            future.set_running_or_notify_cancel()
            future.set_result(fn(*args))
            time.sleep(0.2)  # a slow worker: what is queued behind a failure gets cancelled

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


def test_fail_fast_does_not_wait_for_a_cancelled_future_the_executor_never_marks_done() -> None:
    shared: dict[str, Any] = {}
    node = PflowBatchNode(
        chain(Work(Tracker(), fail={0: 9})),
        "n",
        {"items": [0, 1, 2, 3], "parallel": True, "max_concurrent": 1},
        executor=NeverNotifies,
    )
    raised: list[BaseException] = []

    def run() -> None:
        try:
            node.run(shared)
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(SAFETY_S)
    assert not runner.is_alive(), "the batch waits for a future that will never be done"
    assert isinstance(raised[0], ValueError) and shared["n"]["batch_metadata"]["aborted"]
