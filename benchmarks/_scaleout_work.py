"""The per-item work of the scale-out benchmarks, importable by worker processes.

Kept apart from ``bench_scaleout.py`` so a worker process unpickling a node or a
function imports this small module, not pytest. Also a script: run under another
interpreter (free-threaded 3.13t), it times the CPU-bound batch on threads with 1 and 2
workers and prints the times as JSON::

    PYTHONPATH=src python3.13t benchmarks/_scaleout_work.py --items 16 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import sysconfig
import time
from typing import Any

from pocketflow import Node

NODE_ID = "work"


def spin(loops: int) -> int:
    """Pure-Python CPU work: ``loops`` iterations of integer arithmetic."""
    acc = 0
    for i in range(loops):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate(target_s: float) -> int:
    """Loops of :func:`spin` that take about ``target_s`` seconds of CPU on this interpreter.

    Timed in CPU time (this thread's), so other processes on a busy machine do not shrink
    the items.
    """
    loops = 10_000
    while True:
        t0 = time.thread_time()
        spin(loops)
        took = time.thread_time() - t0
        if took > 0.02:
            return max(1, int(loops * target_s / took))
        loops *= 4


def sleep_item(latency_s: float) -> Any:
    """The bare peer's per-item work: what the node's ``exec`` does, nothing else."""
    if latency_s:
        time.sleep(latency_s)
    return None


def spin_item(loops: int) -> int:
    """The bare peer's CPU-bound per-item work."""
    return spin(loops)


class SleepItem(Node):
    """Sleeps ``params["latency"]`` seconds (nothing at 0); records the item."""

    def prep(self, shared: Any) -> Any:
        return shared["item"]

    def exec(self, item: Any) -> Any:
        latency = self.params.get("latency", 0.0)
        if latency:
            time.sleep(latency)
        return item

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["out"] = exec_res
        return "default"


class SpinItem(Node):
    """``spin(params["loops"])``: CPU-bound, holding the GIL where there is one."""

    def exec(self, _: Any) -> Any:
        return spin(self.params["loops"])

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["out"] = exec_res
        return "default"


class Ballast(SleepItem):
    """A :class:`SleepItem` carrying ``size`` bytes of its own state (a model, a table)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.ballast = b"\x01" * size


def chain(node: Node, **params: Any) -> Any:
    """``NamespacedNodeWrapper(node)`` with ``params`` set on the node."""
    from parabatch import NamespacedNodeWrapper

    node.params = dict(params)
    return NamespacedNodeWrapper(node, NODE_ID)


def batch(node: Node, items: list[Any], max_concurrent: int, executor: Any, **params: Any) -> Any:
    from parabatch import PflowBatchNode

    return PflowBatchNode(
        chain(node, **params),
        NODE_ID,
        {"items": items, "parallel": True, "max_concurrent": max_concurrent},
        executor=executor,
    )


def time_run(node: Any, shared: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    node.run(shared)
    took = time.perf_counter() - t0
    out = shared[NODE_ID]
    if out["error_count"]:
        raise RuntimeError(f"benchmark batch failed: {out['errors'][0]['error']}")
    return took


def threads_speedup(items: int, rounds: int, item_s: float = 0.05) -> dict[str, Any]:
    """The CPU-bound batch on threads, 1 then 2 workers, interleaved rounds."""
    loops = calibrate(item_s)
    ones, twos = [], []
    for _ in range(rounds):
        for cap, into in ((1, ones), (2, twos)):
            node = batch(SpinItem(), list(range(items)), cap, None, loops=loops)
            into.append(time_run(node, {}))
    ratios = [a / b for a, b in zip(ones, twos)]
    return {
        "python": sys.version.split()[0],
        "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil_enabled_now": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "items": items,
        "rounds": rounds,
        "t1_s": statistics.median(ones),
        "t2_s": statistics.median(twos),
        "speedup": statistics.median(ratios),
        "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(json.dumps(threads_speedup(args.items, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
