"""Where a ``PflowBatchNode`` item's CPU goes at 0 ms latency: cProfile, µs per item.

Parallel mode profiles every thread: the coordinator with one profiler, each worker with
its own, enabled by the executor's thread initializer (parabatch's ``executor`` hook), all
merged. The profilers' clock is each thread's CPU time (``time.thread_time``), not wall
time: a thread waiting for the GIL, or descheduled by other load on the machine, is not
charged to the function it happens to be in. The times are inflated by the profiler's own
per-call cost (the script prints profiled and unprofiled CPU per item); read them as
shares, and the ``bench_overhead`` attribution rows as the unprofiled truth.

    PYTHONPATH=src python benchmarks/profile_item.py [--items 2000] [--top 15] [--json out]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _workloads import NODE_ID, C, make_chain, make_items, make_shared

import parabatch
import parabatch._clone
import parabatch._templates
from parabatch._output import Run
from parabatch._runner import Collected
from parabatch._work import ItemWork

IDLE = ("acquire' of '_thread.lock", "get' of '_queue.SimpleQueue", "{built-in method time.sleep}")


def _node(parallel: bool, profilers: Optional[list[cProfile.Profile]]) -> Any:
    def executor(workers: int) -> Executor:
        def start() -> None:
            assert profilers is not None
            prof = cProfile.Profile(time.thread_time)
            profilers.append(prof)
            prof.enable()

        return ThreadPoolExecutor(workers, initializer=start if profilers is not None else None)

    config = {"items": "${items}", "parallel": parallel, "max_concurrent": C}
    return parabatch.PflowBatchNode(make_chain(0.0), NODE_ID, config, executor=executor)


def _unprofiled(parallel: bool, items: list[Any], repeats: int = 7) -> tuple[float, float]:
    """Median wall and median process CPU time (all threads) of a run, unprofiled."""
    node = _node(parallel, None)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        node.run(make_shared(items))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def profile(parallel: bool, n: int) -> tuple[pstats.Stats, float, float, float]:
    """Merged stats over ``n`` items; profiled CPU, unprofiled wall, unprofiled CPU."""
    items = make_items(n)
    _node(parallel, None).run(make_shared(items[:50]))  # warm caches
    wall, cpu = _unprofiled(parallel, items)
    workers: list[cProfile.Profile] = []
    node = _node(parallel, workers)
    main = cProfile.Profile(time.thread_time)
    c0 = time.process_time()
    main.enable()
    node.run(make_shared(items))
    main.disable()
    profiled = time.process_time() - c0
    stats = pstats.Stats(main)
    for prof in workers:  # their threads have exited; create_stats flushes what they saw
        prof.create_stats()
        stats.add(prof)
    return stats, profiled, wall, cpu


def _name(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if "parabatch" in parts else parts[-1]
    return f"{short}:{line}({name})"


def top(stats: pstats.Stats, n_items: int, k: int) -> list[dict[str, Any]]:
    """The ``k`` costliest functions by own time, idle waits left out, µs per item."""
    rows = []
    for func, (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = _name(func)
        if any(idle in name for idle in IDLE):
            continue
        rows.append(
            {
                "function": name,
                "calls_per_item": ncalls / n_items,
                "own_us_per_item": tottime / n_items * 1e6,
                "cum_us_per_item": cumtime / n_items * 1e6,
            }
        )
    rows.sort(key=lambda r: -r["own_us_per_item"])
    return rows[:k]


def _code_of(func: Any) -> Any:
    return getattr(func, "__func__", func).__code__


def _dictcomp_in(func: Any) -> Optional[Any]:
    """The code of the dict comprehension inside ``func`` (none where it is inlined, 3.12+)."""
    return next(
        (c for c in _code_of(func).co_consts if getattr(c, "co_name", "") == "<dictcomp>"), None
    )


def _parts() -> dict[str, Any]:
    """Label -> the code object whose inclusive time the row reports.

    Named by the objects themselves, so a renamed or removed function fails here at once
    instead of its row silently disappearing from the table.
    """
    wanted: dict[str, Any] = {
        "isolation: _clone.clone": _code_of(parabatch._clone.clone),
        "templates: TemplateAwareNodeWrapper._run dictcomp": _dictcomp_in(
            parabatch.TemplateAwareNodeWrapper._run
        ),
        "templates: resolve_template": _code_of(parabatch._templates.resolve_template),
        "NamespacedSharedStore.__init__": _code_of(parabatch.NamespacedSharedStore.__init__),
        "item store: ItemWork._item_store": _code_of(ItemWork._item_store),
        "usage: ItemWork.record_usage": _code_of(ItemWork.record_usage),
        "the item: ItemWork._run_item": _code_of(ItemWork._run_item),
        "the item + interrupt guard: ItemWork.__call__": _code_of(ItemWork.__call__),
        "executor: ThreadPoolExecutor.submit": _code_of(ThreadPoolExecutor.submit),
        "executor: Future.set_result": _code_of(Future.set_result),
        "window: concurrent.futures.wait": _code_of(concurrent.futures.wait),
        "collect: Collected.add": _code_of(Collected.add),
        "the run: Run.execute": _code_of(Run.execute),
    }
    return {label: code for label, code in wanted.items() if code is not None}


def groups(stats: pstats.Stats, n_items: int) -> dict[str, float]:
    """Inclusive µs per item of the parts that matter (cumulative times, so they nest).

    A part the run never called (``submit`` in a sequential run) is left out.
    """
    by_key = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for label, code in _parts().items():
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        if key in by_key:
            out[label] = by_key[key][3] / n_items * 1e6
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path, help="write the tables here as JSON")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {}
    for parallel in (False, True):
        mode = "parallel" if parallel else "sequential"
        stats, profiled, wall, cpu = profile(parallel, args.items)
        result[mode] = {
            "items": args.items,
            "wall_us_per_item": wall / args.items * 1e6,
            "cpu_us_per_item": cpu / args.items * 1e6,
            "profiled_cpu_us_per_item": profiled / args.items * 1e6,
            "top": top(stats, args.items, args.top),
            "parts": groups(stats, args.items),
        }
        r = result[mode]
        print(
            f"\n## {mode}, 0 ms, {args.items} items: unprofiled {r['wall_us_per_item']:.1f} µs "
            f"wall, {r['cpu_us_per_item']:.1f} µs CPU per item; profiled "
            f"{r['profiled_cpu_us_per_item']:.1f} µs CPU per item\n"
        )
        # Profiled µs scaled to the unprofiled CPU: a share of the real cost, not a timing.
        scale = r["cpu_us_per_item"] / r["profiled_cpu_us_per_item"]
        r["scale"] = scale
        print(
            "| function (own time) | calls/item | own µs/item (profiled) | cum µs/item "
            "(profiled) | own share | ≈ unprofiled µs/item |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for row in r["top"]:
            print(
                f"| {row['function']} | {row['calls_per_item']:.1f} | "
                f"{row['own_us_per_item']:.1f} | {row['cum_us_per_item']:.1f} | "
                f"{row['own_us_per_item'] / r['profiled_cpu_us_per_item']:.0%} | "
                f"{row['own_us_per_item'] * scale:.1f} |"
            )
        print("\n| part (inclusive) | µs/item (profiled) | share | ≈ unprofiled µs/item |")
        print("|---|---:|---:|---:|")
        for label, us in r["parts"].items():
            print(
                f"| {label} | {us:.1f} | {us / r['profiled_cpu_us_per_item']:.0%} | "
                f"{us * scale:.1f} |"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
