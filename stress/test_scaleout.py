"""Scale-out under free-running processes: the batch on a process pool and on dask.

The controlled scheduler of the other suites owns the switch points of threads in this
process; it does not reach into other processes. Here the items run in real worker
processes, free-running, and the properties are checked on what comes back, for plans
drawn by Hypothesis (derandomized; a failure prints the blob that replays the plan, not
the interleaving, which no one controls here):

- ``continue``: results, errors, attempts and call records are exactly what threads give
  for the same plan, and at most ``max_concurrent`` items ran at once across the workers;
- ``fail_fast``: the raised error is the lowest-index failure recorded, every finished
  item's result is the one threads give, nothing is lost, the bound holds, and the pool
  or cluster runs the next plan;
- Ctrl-C after ``k`` finished items: nothing beyond the first window after it starts,
  and the next run works.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import progress, scaled
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from parabatch import CALLS_KEY, PflowBatchNode
from parabatch.executors import dask_executor, local_cluster, process_executor

# The test nodes live in tests/ and must be importable by name, here and in the worker
# processes (which start with this process's sys.path).
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.nodes import chain  # noqa: E402
from tests.remote_nodes import FileTracker, Step  # noqa: E402

ENGINES = ["processes", "dask"]


@dataclass(frozen=True)
class Plan:
    n: int
    fail: dict[int, int]
    latency: dict[int, float]
    max_retries: int
    max_concurrent: int
    records: int

    def node(self, tracker: FileTracker) -> Step:
        return Step(
            tracker,
            fail=self.fail,
            latency=self.latency,
            usage=True,
            records=self.records,
        )


@st.composite
def plans(draw: Any) -> Plan:
    n = draw(st.integers(1, 8))
    fail = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    latency = draw(st.lists(st.sampled_from([0.0, 0.001, 0.005]), min_size=n, max_size=n))
    return Plan(
        n=n,
        fail={i: f for i, f in enumerate(fail) if f},
        latency={i: x for i, x in enumerate(latency) if x},
        max_retries=draw(st.integers(1, 3)),
        max_concurrent=draw(st.integers(1, 3)),
        records=draw(st.integers(0, 2)),
    )


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, Any]]:
    distributed = pytest.importorskip("distributed")
    cluster = local_cluster(2, 1)
    client = distributed.Client(cluster)
    pool = process_executor(2)
    try:
        yield {"processes": pool, "dask": dask_executor(client), "threads": None}
    finally:
        pool.shutdown()
        client.close()
        cluster.close()


class Run:
    """One run of a plan on one executor, with its tracker in a fresh directory."""

    def __init__(self, plan: Plan, executor: Any, mode: str, progress_fn: Any = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="parabatch-scaleout-")
        self.tracker = FileTracker(self.directory)
        self.shared: dict[str, Any] = {}
        self.raised: Optional[BaseException] = None
        node = PflowBatchNode(
            chain(plan.node(self.tracker), "n"),
            "n",
            {
                "items": list(range(plan.n)),
                "parallel": True,
                "max_concurrent": plan.max_concurrent,
                "max_retries": plan.max_retries,
                "error_handling": mode,
            },
            executor=executor,
            progress=progress_fn,
        )
        try:
            node.run(self.shared)
        except BaseException as exc:  # KeyboardInterrupt included: it is what is checked
            self.raised = exc
        self.state = self.tracker.read()
        shutil.rmtree(self.directory, ignore_errors=True)

    def outcome(self) -> dict[str, Any]:
        """Everything that must not depend on the executor or on timing."""
        out = self.shared["n"]
        return {
            "results": [None if r is None else (r["out"], r["item"]) for r in out["results"]],
            "errors": [(e["index"], e["item"], e["error"]) for e in out["errors"] or []],
            "counts": (out["count"], out["success_count"], out["error_count"]),
            "calls": sorted(
                (sorted(c.items()) for c in self.shared[CALLS_KEY]), key=lambda c: repr(c)
            ),
            "attempts": self.state["attempts"],
        }


def _reference(plan: Plan, index: int) -> Any:
    """What item ``index`` comes to on its own (threads or not): its value and attempt."""
    fails = plan.fail.get(index, 0)
    if fails >= plan.max_retries:
        return None
    return {"value": index, "params": {}, "attempt": fails + 1}


def continue_is_what_threads_give(
    executor: Any, seen: dict[str, int], *, shrink: bool = True
) -> None:
    """The ``continue`` property, for plans drawn by Hypothesis, on ``executor``."""
    phases = list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate]

    @settings(max_examples=scaled(20, 3), phases=phases)
    @given(plan=plans())
    def check(plan: Plan) -> None:
        seen["plans"] += 1
        threads = Run(plan, None, "continue")
        remote = Run(plan, executor, "continue")
        assert threads.raised is None and remote.raised is None, remote.raised
        assert remote.outcome() == threads.outcome()
        assert remote.state["max_in_flight"] <= plan.max_concurrent
        assert [None if r is None else r[0] for r in remote.outcome()["results"]] == [
            _reference(plan, i) for i in range(plan.n)
        ]

    check()


@pytest.mark.parametrize("engine", ENGINES)
def test_continue_is_what_threads_give(engines: dict[str, Any], engine: str) -> None:
    seen = {"plans": 0}
    continue_is_what_threads_give(engines[engine], seen)
    progress(f"scale-out continue on {engine}: {seen['plans']} plans as threads give")


class DropCalls:
    """Negative control: the process executor with every outcome's call records lost."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def __call__(self, n: int) -> Any:
        executor = self.pool(n)
        submit = executor.submit

        def lossy(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            inner = submit(fn, *args, **kwargs)
            outer: Future[Any] = Future()

            def done(f: Future[Any]) -> None:
                outcome = f.result()
                outcome.calls = ()
                outer.set_result(outcome)

            inner.add_done_callback(done)
            return outer

        executor.submit = lossy
        return executor


def test_lost_call_records_are_caught(engines: dict[str, Any]) -> None:
    seen = {"plans": 0}
    with pytest.raises(AssertionError):
        continue_is_what_threads_give(DropCalls(engines["processes"]), seen, shrink=False)
    progress(f"scale-out negative control: lost call records caught after {seen['plans']} plans")


@pytest.mark.parametrize("engine", ENGINES)
def test_fail_fast_raises_lowest_index_and_loses_nothing(
    engines: dict[str, Any], engine: str
) -> None:
    seen = {"plans": 0, "raised": 0}

    @settings(max_examples=scaled(20, 3))
    @given(plan=plans())
    def check(plan: Plan) -> None:
        seen["plans"] += 1
        run = Run(plan, engines[engine], "fail_fast")
        out = run.shared["n"]
        errors = out["errors"] or []
        if run.raised is None:
            assert not errors
        else:
            seen["raised"] += 1
            assert errors, run.raised
            assert str(run.raised) == errors[0]["error"].split(": ", 1)[1]
            assert [e["index"] for e in errors] == sorted(e["index"] for e in errors)
            assert out["batch_metadata"]["aborted"] is True
        started = {int(k) for k in run.state["attempts"]}
        for index, result in enumerate(out["results"]):
            if result is not None:
                assert result["out"] == _reference(plan, index)
                assert index in started
        for error in errors:
            assert _reference(plan, error["index"]) is None
        # Every finished item is either a result or an error: nothing lost.
        finished = {i for i, r in enumerate(out["results"]) if r is not None}
        finished |= {e["index"] for e in errors}
        assert out["success_count"] + out["error_count"] == len(finished)
        assert run.state["max_in_flight"] <= plan.max_concurrent

    check()
    progress(
        f"scale-out fail_fast on {engine}: {seen['plans']} plans, {seen['raised']} raised, "
        "lowest index each time"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_leaves_the_workers_usable(engines: dict[str, Any], engine: str) -> None:
    @settings(max_examples=scaled(8, 2))
    @given(plan=plans(), after=st.integers(1, 3))
    def check(plan: Plan, after: int) -> None:
        finished = {"n": 0}

        def interrupt(index: int, done: int, total: int, ok: bool) -> None:
            finished["n"] += 1
            if finished["n"] >= after:
                raise KeyboardInterrupt

        run = Run(plan, engines[engine], "continue", interrupt)
        if min(after, plan.n) == after:
            assert isinstance(run.raised, KeyboardInterrupt)
            # Submitted before the interrupt: the items collected, plus one window.
            assert len(run.state["attempts"]) <= after + 2 * plan.max_concurrent
        again = Run(plan, engines[engine], "continue")
        assert again.raised is None
        assert [None if r is None else r["out"] for r in again.shared["n"]["results"]] == [
            _reference(plan, i) for i in range(plan.n)
        ]

    check()
