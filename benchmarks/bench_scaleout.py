"""Scale-out: the batch on a process pool and on a dask cluster, against their bare peers.

Every figure is a ratio measured in this one run, side by side, in interleaved rounds
(the order alternates each round; the figure is the median of the per-round ratios):

- the process-pool batch ÷ a bare ``ProcessPoolExecutor.map`` of the same per-item work
  (both start their pool inside the timing, with the same start method), and the dask
  batch ÷ ``client.map(..., pure=False)`` + ``gather``, at 1 ms and at 0 ms per item;
- the CPU-bound batch (about 50 ms of pure-Python work per item) with 2 workers against
  1: processes, dask, threads on this interpreter (with a GIL: about 1, the reason to
  scale out) and threads on free-threaded CPython 3.13t, when ``PARABATCH_PY313T`` names
  one (``scripts/install-python313t.sh``; it needs ``pocketflow`` and ``jsonschema``);
- the bytes pickled per submission with a 4 MB store and a 1 MB chain.

Each benchmark stores its figures as ``extra_info["scaleout"]`` rows (figure, value,
target, op) for ``report.py``. The dask cluster is a ``LocalCluster`` of 2 worker
processes with 1 thread each, started once for the module.
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
from _scaleout_work import (
    Ballast,
    SleepItem,
    SpinItem,
    batch,
    calibrate,
    sleep_item,
    spin_item,
    time_run,
)
from _workloads import Mode

from parabatch.executors import _default_context, dask_executor, local_cluster, process_executor

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
#: max_concurrent of the overhead runs: above the worker count, as a user would set it.
C = 10
#: Items per overhead run and rounds, by mode; CPU-bound items per run and rounds.
SIZES = {"short": (300, 3, 8, 2), "full": (1_000, 5, 20, 3)}


def _sizes(mode: Mode) -> tuple[int, int, int, int]:
    return SIZES[mode.name]


def row(figure: str, value: float | None, target: float, op: str, note: str = "") -> dict[str, Any]:
    """One judged figure: ``value op target`` (op ``<=`` or ``>=``), None if not measured."""
    return {"figure": figure, "value": value, "target": target, "op": op, "note": note}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    cluster = local_cluster(WORKERS, 1)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def interleaved(rounds: int, a: Callable[[], float], b: Callable[[], float]) -> dict[str, Any]:
    """Run ``a`` and ``b`` once per round, alternating which goes first; per-round ratios."""
    ta, tb = [], []
    for r in range(rounds):
        for fn, into in ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta)):
            into.append(fn())
    ratios = [x / y for x, y in zip(ta, tb)]
    return {
        "a_s": statistics.median(ta),
        "b_s": statistics.median(tb),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


# -- overhead against the bare engine ------------------------------------------------------


@pytest.fixture(scope="module")
def pools() -> Iterator[tuple[Any, ProcessPoolExecutor]]:
    """Our process pool and a bare one, both started once and kept warm across rounds."""
    context = _default_context()
    ours = process_executor(WORKERS, mp_context=context)
    with ours, ProcessPoolExecutor(WORKERS, mp_context=context) as bare:
        yield ours, bare


pytestmark = pytest.mark.benchmark(group="scaleout")


@pytest.mark.parametrize("latency_ms", [1.0, 0.0])
def test_process_pool_overhead(
    benchmark: Any, mode: Mode, pools: tuple[Any, ProcessPoolExecutor], latency_ms: float
) -> None:
    n, rounds, _, _ = _sizes(mode)
    latency = latency_ms / 1000
    pool, bare_pool = pools

    def ours() -> float:
        node = batch(SleepItem(), list(range(n)), C, pool, latency=latency)
        return time_run(node, {})

    def bare() -> float:
        t0 = time.perf_counter()
        list(bare_pool.map(sleep_item, [latency] * n))
        return time.perf_counter() - t0

    ours()  # both pools started, their processes warm
    bare()
    res: dict[str, Any] = {}
    benchmark.pedantic(lambda: res.update(interleaved(rounds, ours, bare)), rounds=1, iterations=1)
    target = 1.5 if latency_ms else 3.0
    method = _default_context().get_start_method()
    benchmark.extra_info.update(n=n, latency_ms=latency_ms, start_method=method, **res)
    benchmark.extra_info["scaleout"] = [
        row(
            f"process batch ÷ bare ProcessPoolExecutor.map, {n:,} items at {latency_ms:g} ms",
            res["ratio"],
            target,
            "<=",
            f"{WORKERS} processes ({method}), both pools warm, {_load()}",
        )
    ]


@pytest.mark.parametrize("latency_ms", [1.0, 0.0])
def test_dask_overhead(benchmark: Any, mode: Mode, client: Any, latency_ms: float) -> None:
    n, rounds, _, _ = _sizes(mode)
    latency = latency_ms / 1000

    def ours() -> float:
        node = batch(SleepItem(), list(range(n)), C, dask_executor(client), latency=latency)
        return time_run(node, {})

    def bare() -> float:
        t0 = time.perf_counter()
        futures = client.map(sleep_item, [latency] * n, pure=False)
        client.gather(futures)
        took = time.perf_counter() - t0
        del futures
        return took

    res: dict[str, Any] = {}
    benchmark.pedantic(lambda: res.update(interleaved(rounds, ours, bare)), rounds=1, iterations=1)
    target = 1.5 if latency_ms else 3.0
    benchmark.extra_info.update(n=n, latency_ms=latency_ms, **res)
    benchmark.extra_info["scaleout"] = [
        row(
            f"dask batch ÷ client.map(pure=False) + gather, {n:,} items at {latency_ms:g} ms",
            res["ratio"],
            target,
            "<=",
            f"LocalCluster, {WORKERS} worker processes x 1 thread, {_load()}",
        )
    ]


# -- CPU-bound speedup, 1 -> 2 workers -----------------------------------------------------


def _speedup(rounds: int, run: Callable[[int], float]) -> dict[str, Any]:
    res = interleaved(rounds, lambda: run(1), lambda: run(2))
    return {"t1_s": res["a_s"], "t2_s": res["b_s"], "speedup": res["ratio"]}


def test_cpu_bound_speedup(
    benchmark: Any, mode: Mode, client: Any, pools: tuple[Any, ProcessPoolExecutor]
) -> None:
    _, _, items, rounds = _sizes(mode)
    loops = calibrate(0.05)
    per_item_s = _time_one(loops)

    def run_on(executor: Callable[[int], Any] | None) -> Callable[[int], float]:
        def run(cap: int) -> float:
            node = batch(SpinItem(), list(range(items)), cap, executor, loops=loops)
            return time_run(node, {})

        return run

    found: dict[str, dict[str, Any]] = {}

    def measure() -> None:
        found["processes"] = _speedup(rounds, run_on(pools[0]))
        found["dask"] = _speedup(rounds, run_on(dask_executor(client)))
        found["threads"] = _speedup(rounds, run_on(None))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    free = _free_threaded(items, rounds)
    gil = "GIL" if getattr(sys, "_is_gil_enabled", lambda: True)() else "no GIL"
    benchmark.extra_info.update(
        items=items, loops=loops, item_s=per_item_s, free_threaded=free, **found
    )
    note = f"{items} items of ~{per_item_s * 1000:.0f} ms of pure Python, {_load()}"
    rows = [
        row(f"CPU-bound speedup 1→2 workers, {name}", found[name]["speedup"], 1.8, ">=", note)
        for name in ("processes", "dask")
    ]
    rows.append(
        row(
            f"CPU-bound speedup 1→2 workers, threads, CPython {sys.version.split()[0]} ({gil})",
            found["threads"]["speedup"],
            1.0,
            "reported",
            "expected about 1 with a GIL: the reason to scale out",
        )
    )
    rows.append(
        row(
            "CPU-bound speedup 1→2 workers, threads, free-threaded 3.13t",
            free.get("speedup"),
            1.8,
            ">=",
            free.get("note", note),
        )
    )
    benchmark.extra_info["scaleout"] = rows


def _time_one(loops: int) -> float:
    """CPU seconds of one item's work."""
    t0 = time.thread_time()
    spin_item(loops)
    return time.thread_time() - t0


def _load() -> str:
    """The machine's 1-minute load average, for the notes: 2 cores are shared."""
    return f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""


def _free_threaded(items: int, rounds: int) -> dict[str, Any]:
    """The threads figure on free-threaded 3.13t, or why it was not measured.

    The interpreter of ``tox -e py313t``'s environment if it exists (it has parabatch's
    dependencies), else ``$PARABATCH_PY313T``.
    """
    tox_env = ROOT / ".tox" / "py313t" / "bin" / "python"
    python = str(tox_env) if tox_env.exists() else os.environ.get("PARABATCH_PY313T", "")
    if not python:
        return {"note": "not measured: PARABATCH_PY313T is not set, no .tox/py313t"}
    if not os.access(python, os.X_OK):
        return {"note": f"not measured: PARABATCH_PY313T={python} is not an executable"}
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])
    )
    env["PYTHON_GIL"] = "0"
    script = ROOT / "benchmarks" / "_scaleout_work.py"
    cmd = [python, str(script), "--items", str(items), "--rounds", str(rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"note": f"not measured: {python} failed: {last}"}
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if found.get("gil_enabled_now", True):
        found["note"] = f"{python} ran with the GIL enabled: not a free-threaded figure"
        found.pop("speedup", None)
    else:
        found["note"] = (
            f"{items} items, Python {found['python']} free-threaded, load {found['loadavg']:.1f}"
        )
    return found


# -- bytes per submission ------------------------------------------------------------------

STORE_BYTES = 4 * 2**20
CHAIN_BYTES = 2**20


def _spy_process(pool: Any, sizes: list[int], once: list[int]) -> Callable[[int], Any]:
    def make(n: int) -> Any:
        executor = pool(n)
        bind = executor.bind

        def spying_bind(work: Any) -> None:
            once.append(len(pickle.dumps(work, pickle.HIGHEST_PROTOCOL)))
            bind(work)
            inner = pool.executor()
            submit = inner.submit

            def spying_submit(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                # What the pool pickles into its call queue for this item.
                sizes.append(len(pickle.dumps((fn, args, kwargs), pickle.HIGHEST_PROTOCOL)))
                return submit(fn, *args, **kwargs)

            inner.submit = spying_submit

        executor.bind = spying_bind  # type: ignore[method-assign]
        return executor

    return make


class _SpyClient:
    """A client whose ``submit`` records the pickled size of a task's function and args.

    A future among the args travels as its key (dask sends a reference, not the data).
    """

    def __init__(self, client: Any, sizes: list[int]) -> None:
        self._client = client
        self._sizes = sizes
        self.recording = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.recording:
            plain = [a.key if hasattr(a, "key") and hasattr(a, "release") else a for a in args]
            sizes = pickle.dumps((fn, plain, kwargs), pickle.HIGHEST_PROTOCOL)
            self._sizes.append(len(sizes))
        return self._client.submit(fn, *args, **kwargs)


def _spy_dask(client: Any, sizes: list[int]) -> Callable[[int], Any]:
    spy = _SpyClient(client, sizes)
    factory = dask_executor(spy)

    def make(n: int) -> Any:
        executor = factory(n)
        bind = executor.bind

        def spying_bind(work: Any) -> None:
            bind(work)
            spy.recording = True  # the probes during bind are not per-item submissions

        executor.bind = spying_bind  # type: ignore[method-assign]
        return executor

    return make


def test_bytes_per_submission(benchmark: Any, client: Any) -> None:
    pool = process_executor(WORKERS)
    items = [f"document {i}" for i in range(20)]
    shared = {"corpus": b"\x02" * STORE_BYTES}
    found: dict[str, Any] = {}

    def measure() -> None:
        for name in ("processes", "dask"):
            sizes: list[int] = []
            once: list[int] = []
            if name == "processes":
                factory = _spy_process(pool, sizes, once)
            else:
                factory = _spy_dask(client, sizes)
            node = batch(Ballast(CHAIN_BYTES), items, 2, factory)
            out = dict(shared)
            time_run(node, out)
            assert len(sizes) == len(items), (name, len(sizes))
            found[name] = {"max_bytes": max(sizes), "work_bytes": once[0] if once else None}

    with pool:
        benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(found)
    work = found["processes"]["work_bytes"]
    benchmark.extra_info["scaleout"] = [
        row(
            f"pickled bytes per submission, {name}, 4 MB store + 1 MB chain",
            float(found[name]["max_bytes"]),
            10_240,
            "<=",
            f"the work ({work / 2**20:.1f} MB pickled) goes once per worker per run",
        )
        for name in ("processes", "dask")
    ]
