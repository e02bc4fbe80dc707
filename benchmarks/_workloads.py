"""What the benchmarks run: the wrapper chain, the implementations compared, the round loop.

Shared by the pytest-benchmark suites (``bench_*.py``) and ``report.py``. Every
implementation runs the same simulated work: ``time.sleep(latency)`` per item (nothing at
0 ms), ``N`` items, at most ``C`` at a time. Rounds run every implementation once, in an
order rotated each round, so drift on a noisy machine hits all of them equally; the report
takes medians over rounds and, for ratios, the median of the per-round ratios.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import math
import os
import statistics
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from pocketflow import AsyncParallelBatchNode, BatchNode, Node

import parabatch
from parabatch._runner import Collected, ItemOutcome, StopFlag, default_executor, run_parallel
from parabatch._work import ItemWork

#: Items per parallel run and the concurrency cap.
N = 1_000
C = 10
#: Simulated per-item latencies, in milliseconds.
LATENCIES_MS = (0.0, 0.1, 1.0, 10.0)
NODE_ID = "work"


@dataclass(frozen=True)
class Mode:
    """How long to measure: ``PARABATCH_BENCH=short`` (CI) or ``full`` (the default)."""

    name: str
    rounds_by_latency: dict[float, int]
    seq_budget_s: float  # one sequential run takes about this long (N shrinks with latency)
    memory_sizes: tuple[int, ...]
    memory_rounds: int

    def rounds(self, latency_ms: float) -> int:
        """Interleaved rounds at ``latency_ms``."""
        return self.rounds_by_latency[latency_ms]

    def seq_items(self, latency_ms: float) -> int:
        """Items per sequential run: ``N``, or fewer when ``N`` items would exceed the budget."""
        if latency_ms == 0:
            return N
        return max(20, min(N, int(self.seq_budget_s / (latency_ms / 1000))))


MODES = {
    "short": Mode("short", {0.0: 15, 0.1: 9, 1.0: 7, 10.0: 5}, 0.2, (10**3, 10**4), 1),
    "full": Mode("full", {0.0: 41, 0.1: 21, 1.0: 15, 10.0: 11}, 1.0, (10**3, 10**4, 10**5), 1),
}


def current_mode() -> Mode:
    """The mode named by ``PARABATCH_BENCH`` (``short`` or ``full``; default ``full``)."""
    name = os.environ.get("PARABATCH_BENCH", "full").strip().lower() or "full"
    if name not in MODES:
        raise SystemExit(f"PARABATCH_BENCH={name!r}: must be 'short' or 'full'")
    return MODES[name]


# -- the node chain ---------------------------------------------------------------------


class SleepNode(Node):  # type: ignore[misc]
    """The inner node: reads the item, sleeps ``latency`` seconds, writes ``out``."""

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.latency = latency

    def prep(self, shared: Any) -> Any:
        return shared["item"]

    def exec(self, item: Any) -> Any:
        if self.latency:
            time.sleep(self.latency)
        return item

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["out"] = exec_res
        return "default"


def chain_params() -> dict[str, Any]:
    """10 params, 4 of them templates: about 1 KB, like a real LLM node's configuration."""
    params: dict[str, Any] = {
        "model": "gpt-4o-mini-2024-07-18",
        "temperature": 0.2,
        "max_tokens": 512,
        "system": "You are a careful assistant. " * 8,
        "stop": ["\n\nHuman:", "\n\nAssistant:"],
        "metadata": {"team": "search-quality", "purpose": "benchmark", "version": 3},
    }
    params.update(
        {
            "prompt": "Summarise the following document in the ${style} style:\n${item}",
            "doc_id": "${__index__}",
            "style": "${style}",
            "examples": ["${examples[0]}", "${examples[1]}"],
        }
    )
    return params


def make_chain(latency_s: float = 0.0) -> Any:
    """The real three-layer wrapper chain around a :class:`SleepNode`."""
    inner = parabatch.TemplateAwareNodeWrapper(SleepNode(latency_s), NODE_ID, chain_params())
    return parabatch.NamespacedNodeWrapper(inner, NODE_ID)


def make_shared(items: list[Any]) -> dict[str, Any]:
    """A shared store the chain's templates resolve against."""
    return {
        "items": items,
        "style": "bullet-point",
        "examples": ["- first point", "- second point"],
    }


def make_items(n: int) -> list[str]:
    """``n`` short distinct strings."""
    return [f"document {i}" for i in range(n)]


# -- the implementations ------------------------------------------------------------------

Impl = Callable[[list[Any]], Any]


class _DeepcopyWork(ItemWork):
    def isolate(self, chain: Any) -> Any:
        return copy.deepcopy(chain)


class DeepcopyBatchNode(parabatch.PflowBatchNode):  # type: ignore[misc]
    """The old baseline: each parallel item on ``copy.deepcopy`` of the chain."""

    work_class = _DeepcopyWork


class _NoCopyWork(ItemWork):
    def isolate(self, chain: Any) -> Any:
        return chain


class NoCopyBatchNode(parabatch.PflowBatchNode):  # type: ignore[misc]
    """No isolation at all: racy, for attributing costs only."""

    work_class = _NoCopyWork


#: ``isolation`` name -> the batch node class that applies it.
NODE_CLASSES: dict[str, type] = {
    "default": parabatch.PflowBatchNode,  # whatever the core does (clone, today)
    "deepcopy": DeepcopyBatchNode,
    "none": NoCopyBatchNode,
}


def pflow(
    latency_s: float,
    *,
    parallel: bool,
    isolation: str = "default",
) -> Impl:
    """``PflowBatchNode`` (or the subclass named by ``isolation``) over the real chain."""
    chain = make_chain(latency_s)
    config = {"items": "${items}", "parallel": parallel, "max_concurrent": C}
    cls = NODE_CLASSES[isolation]

    def run(items: list[Any]) -> Any:
        node = cls(chain, NODE_ID, config)
        shared = make_shared(items)
        node.run(shared)
        return shared[NODE_ID]["results"]

    return run


def pflow_bare(latency_s: float) -> Impl:
    """Sequential ``PflowBatchNode`` on the bare node: the batch machinery without wrappers."""
    node_ = SleepNode(latency_s)
    config = {"items": "${items}", "parallel": False}

    def run(items: list[Any]) -> Any:
        node = parabatch.PflowBatchNode(node_, NODE_ID, config)
        shared = make_shared(items)
        node.run(shared)
        return shared[NODE_ID]["results"]

    return run


def pool_map(latency_s: float) -> Impl:
    """The floor: ``ThreadPoolExecutor(C).map`` of a bare function."""

    def work(item: Any) -> Any:
        if latency_s:
            time.sleep(latency_s)
        return item

    def run(items: list[Any]) -> Any:
        with ThreadPoolExecutor(max_workers=C) as pool:
            return list(pool.map(work, items))

    return run


def runner_window(latency_s: float) -> Impl:
    """parabatch's sliding window (``run_parallel``) around a bare function: no node, no copy."""

    def work(idx: int, item: Any) -> ItemOutcome:
        if latency_s:
            time.sleep(latency_s)
        return ItemOutcome(idx, item, item, None, 1)

    def run(items: list[Any]) -> Any:
        collected = Collected(len(items))
        run_parallel(
            work,
            items,
            executor=default_executor,
            max_concurrent=C,
            stop_on_failure=False,
            stop=StopFlag(),
            collect=collected.add,
            failed=lambda: False,
        )
        return collected.results

    return run


def gather_semaphore(latency_s: float) -> Impl:
    """``asyncio.gather`` over all items, ``Semaphore(C)`` as the bound."""

    async def main(items: list[Any]) -> list[Any]:
        sem = asyncio.Semaphore(C)

        async def one(item: Any) -> Any:
            async with sem:
                if latency_s:
                    await asyncio.sleep(latency_s)
                return item

        return await asyncio.gather(*(one(i) for i in items))

    def run(items: list[Any]) -> Any:
        return asyncio.run(main(items))

    return run


def async_parallel_batch_node(latency_s: float) -> Impl:
    """PocketFlow's ``AsyncParallelBatchNode``: gather with no bound (every item at once)."""

    class Work(AsyncParallelBatchNode):  # type: ignore[misc]
        async def prep_async(self, shared: Any) -> Any:
            return shared["items"]

        async def exec_async(self, item: Any) -> Any:
            if latency_s:
                await asyncio.sleep(latency_s)
            return item

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["results"] = exec_res
            return "default"

    def run(items: list[Any]) -> Any:
        shared: dict[str, Any] = {"items": items}
        asyncio.run(Work().run_async(shared))
        return shared["results"]

    return run


def pocketflow_batch_node(latency_s: float) -> Impl:
    """PocketFlow's sequential ``BatchNode``: ``exec`` per item, results as a list."""

    class Work(BatchNode):  # type: ignore[misc]
        def prep(self, shared: Any) -> Any:
            return shared["items"]

        def exec(self, item: Any) -> Any:
            if latency_s:
                time.sleep(latency_s)
            return item

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["results"] = exec_res
            return "default"

    def run(items: list[Any]) -> Any:
        shared: dict[str, Any] = {"items": items}
        Work().run(shared)
        return shared["results"]

    return run


def batch_node_chain(latency_s: float) -> Impl:
    """PocketFlow's ``BatchNode`` doing parabatch's per-item work by hand (the fair peer).

    Per item: a shallow copy of ``shared`` with the item, its index and a fresh namespace,
    the same wrapper chain run on it, the namespace kept as the result. What a PocketFlow
    user writes to get sequential parabatch's semantics without parabatch.
    """
    chain = make_chain(latency_s)

    class Work(BatchNode):  # type: ignore[misc]
        def prep(self, shared: Any) -> Any:
            self.shared = shared
            return list(enumerate(shared["items"]))

        def exec(self, pair: Any) -> Any:
            idx, item = pair
            item_shared = dict(self.shared)
            item_shared["item"] = item
            item_shared["__index__"] = idx
            item_shared[NODE_ID] = {}
            chain._run(item_shared)
            result = item_shared[NODE_ID]
            result["item"] = item
            return result

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
            shared["results"] = exec_res
            return "default"

    def run(items: list[Any]) -> Any:
        shared: dict[str, Any] = {**make_shared(items), "items": items}
        Work().run(shared)
        return shared["results"]

    return run


Registry = dict[str, tuple[Callable[[float], Impl], str]]

#: name -> (factory(latency_s) -> Impl, what it is). The floor is ``pool``.
PARALLEL_IMPLS: Registry = {
    "pool": (pool_map, "ThreadPoolExecutor(10).map, bare function (the floor)"),
    "pflow": (lambda s: pflow(s, parallel=True), "PflowBatchNode (core: clone isolation)"),
    "pflow_deepcopy": (
        lambda s: pflow(s, parallel=True, isolation="deepcopy"),
        "PflowBatchNode, copy.deepcopy isolation (old baseline)",
    ),
    "window": (runner_window, "run_parallel window, bare function"),
    "gather": (gather_semaphore, "asyncio.gather + Semaphore(10)"),
    "apbn": (async_parallel_batch_node, "PocketFlow AsyncParallelBatchNode (unbounded)"),
}
SEQUENTIAL_IMPLS: Registry = {
    "batchnode": (pocketflow_batch_node, "PocketFlow BatchNode, exec = return item"),
    "batchnode_chain": (
        batch_node_chain,
        "PocketFlow BatchNode running the same chain per item (fair peer)",
    ),
    "pflow_seq": (lambda s: pflow(s, parallel=False), "PflowBatchNode sequential, real chain"),
    "pflow_seq_bare": (pflow_bare, "PflowBatchNode sequential, bare node (no wrappers)"),
}
#: Attribution at 0 ms: each step adds one layer of parabatch's per-item work.
ATTRIBUTION_IMPLS: Registry = {
    "pool": PARALLEL_IMPLS["pool"],
    "window": PARALLEL_IMPLS["window"],
    "pflow_noiso": (
        lambda s: pflow(s, parallel=True, isolation="none"),
        "PflowBatchNode, no copy (unsafe; attribution only)",
    ),
    "pflow": PARALLEL_IMPLS["pflow"],
    "pflow_deepcopy": PARALLEL_IMPLS["pflow_deepcopy"],
}

# -- measuring ---------------------------------------------------------------------------


class Rounds:
    """Run several implementations once each per round, rotating the order every round."""

    def __init__(self, impls: dict[str, Impl], items: list[Any]) -> None:
        self.impls = impls
        self.items = items
        self.names = list(impls)
        self.times: dict[str, list[float]] = {name: [] for name in self.names}
        self._round = 0

    def warm_up(self, n: int = 50) -> None:
        """One untimed run of each on a few items (threads, imports, caches)."""
        for impl in self.impls.values():
            impl(self.items[:n])

    def round(self) -> None:
        """One timed run of every implementation."""
        k = self._round % len(self.names)
        order = self.names[k:] + self.names[:k]
        self._round += 1
        for name in order:
            impl = self.impls[name]
            gc.collect()
            t0 = time.perf_counter()
            impl(self.items)
            self.times[name].append(time.perf_counter() - t0)

    def summary(self) -> dict[str, Any]:
        """Raw times per implementation (seconds, in round order)."""
        return {"n_items": len(self.items), "times_s": self.times}


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of the paired ratio ``num[r] / den[r]`` (drift cancels per round)."""
    return statistics.median(a / b for a, b in zip(num, den))


def ideal_parallel_s(n: int, latency_ms: float) -> float:
    """``ceil(N/C) * L``: the wall time of a perfect bounded pool."""
    return math.ceil(n / C) * latency_ms / 1000


# -- memory -------------------------------------------------------------------------------


def measure_memory(n: int) -> dict[str, float]:
    """Peak traced memory of a parallel ``PflowBatchNode`` over ``n`` trivial items.

    All numbers are bytes traced by ``tracemalloc`` relative to just before the run (the
    items and the node exist by then):

    * ``peak_bytes`` (raw): the highest traced memory during the run.
    * ``results_bytes``: what the returned output holds, measured by removing it: traced
      memory after the run minus traced memory once ``shared[node_id]`` (results list,
      result dicts, errors, metadata) is deleted, garbage collected both times.
    * ``working_bytes`` = ``peak_bytes - results_bytes``: the machinery's own memory at its
      peak (copies in flight, futures, item dicts), the part that should not grow with
      ``n``.
    * ``residual_bytes``: what is still traced after the output is gone (caches, leaks).
    """
    items = make_items(n)
    chain = make_chain(0.0)
    config = {"items": "${items}", "parallel": True, "max_concurrent": C}
    node = parabatch.PflowBatchNode(chain, NODE_ID, config)
    shared = make_shared(items)
    node.run(make_shared(items[:50]))  # warm: threads, caches
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        node.run(shared)
        peak = tracemalloc.get_traced_memory()[1]
        ok = shared[NODE_ID]["success_count"] == n
        gc.collect()
        with_output = tracemalloc.get_traced_memory()[0]
        del shared[NODE_ID]
        gc.collect()
        without_output = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert ok, "every item succeeds"
    results = with_output - without_output
    return {
        "n": n,
        "peak_bytes": peak - before,
        "results_bytes": results,
        "working_bytes": peak - before - results,
        "residual_bytes": without_output - before,
    }
