"""Lost updates under free-running threads, with and without a GIL.

A standalone script (no pytest, no third-party packages; Python >= 3.9, so it also runs
on PyPy 3.9). Each *cell* is one operation in one call-log mode; each *trial* starts
``--threads`` real threads behind a ``threading.Barrier``, lets them run freely (no
scheduler, no yields, default switch interval) and then counts how many updates are
missing: ``lost = expected - observed``.

Call-log modes (the ``__llm_calls__`` list parabatch appends to):

* ``gil``  -- a plain ``list``: relies on the interpreter making ``list.append`` atomic;
* ``lock`` -- ``parabatch.CallLog``: a ``list`` subclass whose writes take a ``threading.Lock``.

Operations that do not touch a call log (counters, the locked read-modify-write and the
control) are run once per interpreter and reported with mode ``-``.

The ``control_rmw_sleep`` operation has a ``time.sleep(1e-5)`` inside its read-modify-write
window, so it loses updates on every interpreter: it shows that the counting detects a loss
(a negative control, as in jcstress' deliberately broken samples). The script exits with
status 3 if a control lost nothing.

Usage::

    python stress/gil_free.py --json reports/gil_free.json --md reports/gil_free.md
    python stress/gil_free.py --merge reports/a.json reports/b.json --md reports/gil_free.md

Seeds: each trial's seed is derived from ``--seed``, the operation, the mode and the trial
number (CRC-32, not ``hash()``), and is written to the JSON. A seed fixes the threads'
start order and a short per-thread spin after the barrier; it does not (cannot) fix the
interleaving of free-running threads, so a trial is not replayable -- only its setup is.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import sys
import threading
import time
import types
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence

SCHEMA_VERSION = 1
DEFAULT_SEED = 20261126
DEFAULT_THREADS = 4
DEFAULT_TRIALS = 10
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODES = ("gil", "lock")
# The control's window: a real sleep. ``time.sleep(0)`` is not enough: on PyPy it returns
# in ~0.3 us without letting another thread in, and the control then loses in only some
# trials.
CONTROL_SLEEP = 1e-5
NO_MODE = "-"


# --------------------------------------------------------------------------- CallLog


class _FallbackCallLog(list):  # type: ignore[type-arg]
    """The interface of ``parabatch.CallLog`` as far as this script uses it."""

    def __init__(self, iterable: Any = ()) -> None:
        super().__init__(iterable)
        self._lock = threading.Lock()

    def append(self, record: Any) -> None:
        with self._lock:
            super().append(record)


def load_calllog() -> tuple[type, str]:
    """Return ``(CallLog class, where it came from)``.

    ``parabatch.CallLog`` if the package imports. Else the core's module from
    ``src/parabatch/`` imported as part of a private stand-in package (same folder, so its
    relative imports work) without running the package ``__init__``, which needs
    pocketflow and jsonschema that a bare interpreter lacks. Else a local stand-in with
    the same locking ``append``.
    """
    try:
        from parabatch import CallLog  # type: ignore[import-not-found]

        return CallLog, "parabatch.CallLog"
    except ImportError:
        pass
    package_dir = os.path.join(REPO_ROOT, "src", "parabatch")
    if os.path.exists(os.path.join(package_dir, "_calllog.py")):
        stub_name = "_parabatch_src_for_gil_free"
        try:
            stub = sys.modules.get(stub_name)
            if stub is None:
                stub = types.ModuleType(stub_name)
                stub.__path__ = [package_dir]  # type: ignore[attr-defined]
                sys.modules[stub_name] = stub
            module = importlib.import_module(stub_name + "._calllog")
            return module.CallLog, "src/parabatch/_calllog.py (package __init__ skipped)"
        except Exception as exc:  # pragma: no cover - depends on the core's state
            print(f"gil_free: could not load {package_dir}/_calllog.py: {exc!r}", file=sys.stderr)
    return _FallbackCallLog, "fallback (parabatch.CallLog not importable)"


# --------------------------------------------------------------------------- operations


class Operation:
    """One racy (or not) update, run by every thread ``count`` times.

    ``setup(log_factory)`` makes the shared state of one trial; ``worker(state, tid,
    count)`` is what each thread runs; ``observe(state)`` counts the updates that
    landed; ``expected(threads, count)`` is how many should have.
    """

    def __init__(
        self,
        name: str,
        code: str,
        kind: str,
        uses_log: bool,
        default_count: int,
        setup: Callable[[Callable[[], Any]], Any],
        worker: Callable[[Any, int, int], None],
        observe: Callable[[Any], int],
        describe_state: Optional[Callable[[Any], str]] = None,
    ) -> None:
        self.name = name
        self.code = code
        self.kind = kind  # "subject" or "control"
        self.uses_log = uses_log
        self.default_count = default_count
        self.setup = setup
        self.worker = worker
        self.observe = observe
        self.describe_state = describe_state

    def expected(self, threads: int, count: int) -> int:
        return threads * count


class _Box:
    __slots__ = ("x",)

    def __init__(self) -> None:
        self.x = 0


_GLOBAL_COUNTER = 0


def _append_worker(state: Any, tid: int, count: int) -> None:
    append = state.append
    base = tid * count
    for i in range(base, base + count):
        append(i)


def _dict_rmw_list_worker(state: Dict[str, Any], tid: int, count: int) -> None:
    base = tid * count
    for i in range(base, base + count):
        state["calls"] = state["calls"] + [i]


def _dict_iadd_list_worker(state: Dict[str, Any], tid: int, count: int) -> None:
    base = tid * count
    for i in range(base, base + count):
        state["calls"] += [i]


def _dict_rmw_count_worker(state: Dict[str, Any], tid: int, count: int) -> None:
    for _ in range(count):
        state["n"] = state["n"] + 1


def _attr_iadd_worker(state: _Box, tid: int, count: int) -> None:
    for _ in range(count):
        state.x += 1


def _global_iadd_worker(state: Any, tid: int, count: int) -> None:
    global _GLOBAL_COUNTER
    for _ in range(count):
        _GLOBAL_COUNTER += 1


def _global_setup(_log_factory: Callable[[], Any]) -> None:
    global _GLOBAL_COUNTER
    _GLOBAL_COUNTER = 0


def _locked_rmw_worker(state: Dict[str, Any], tid: int, count: int) -> None:
    lock = state["lock"]
    for _ in range(count):
        with lock:
            state["n"] = state["n"] + 1


def _control_worker(state: Dict[str, Any], tid: int, count: int) -> None:
    sleep = time.sleep
    for _ in range(count):
        value = state["n"]
        sleep(CONTROL_SLEEP)  # a switch point in the window, as an LLM or HTTP call would be
        state["n"] = value + 1


def _calls_type(state: Dict[str, Any]) -> str:
    return type(state["calls"]).__name__


OPERATIONS: List[Operation] = [
    Operation(
        "append",
        "log.append(x)",
        "subject",
        True,
        250_000,
        lambda log_factory: log_factory(),
        _append_worker,
        len,
        lambda state: type(state).__name__,
    ),
    Operation(
        "dict_rmw_list",
        "d[k] = d[k] + [x]",
        "subject",
        True,
        1_000,  # each step copies the list: quadratic, keep it small
        lambda log_factory: {"calls": log_factory()},
        _dict_rmw_list_worker,
        lambda state: len(state["calls"]),
        _calls_type,
    ),
    Operation(
        "dict_iadd_list",
        "d[k] += [x]",
        "subject",
        True,
        25_000,
        lambda log_factory: {"calls": log_factory()},
        _dict_iadd_list_worker,
        lambda state: len(state["calls"]),
        _calls_type,
    ),
    Operation(
        "dict_rmw_count",
        "d[k] = d[k] + 1",
        "subject",
        False,
        100_000,
        lambda _f: {"n": 0},
        _dict_rmw_count_worker,
        lambda state: state["n"],
    ),
    Operation(
        "attr_iadd",
        "obj.x += 1",
        "subject",
        False,
        100_000,
        lambda _f: _Box(),
        _attr_iadd_worker,
        lambda state: state.x,
    ),
    Operation(
        "global_iadd",
        "global x; x += 1",
        "subject",
        False,
        100_000,
        _global_setup,
        _global_iadd_worker,
        lambda _state: _GLOBAL_COUNTER,
    ),
    Operation(
        "locked_rmw_count",
        "with lock: d[k] = d[k] + 1",
        "subject",
        False,
        50_000,
        lambda _f: {"n": 0, "lock": threading.Lock()},
        _locked_rmw_worker,
        lambda state: state["n"],
    ),
    Operation(
        "control_rmw_sleep",
        "v = d[k]; sleep(1e-5); d[k] = v + 1",
        "control",
        False,
        200,
        lambda _f: {"n": 0},
        _control_worker,
        lambda state: state["n"],
    ),
]

OPERATIONS_BY_NAME: Dict[str, Operation] = {op.name: op for op in OPERATIONS}


# --------------------------------------------------------------------------- running


def trial_seed(base_seed: int, op_name: str, mode: str, trial: int) -> int:
    return zlib.crc32(f"{base_seed}:{op_name}:{mode}:{trial}".encode()) & 0x7FFFFFFF


def run_trial(
    op: Operation, log_factory: Callable[[], Any], threads: int, count: int, seed: int
) -> Dict[str, Any]:
    """Run one trial; return observed/expected/lost and the state's final type."""
    rng = random.Random(seed)
    state = op.setup(log_factory)
    barrier = threading.Barrier(threads)
    spins = [rng.randrange(0, 2_000) for _ in range(threads)]
    errors: List[BaseException] = []

    def body(tid: int) -> None:
        try:
            barrier.wait()
            for _ in range(spins[tid]):  # desynchronise the threads' phases a little
                pass
            op.worker(state, tid, count)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    order = list(range(threads))
    rng.shuffle(order)
    workers = [threading.Thread(target=body, args=(tid,), daemon=True) for tid in order]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"worker failed in {op.name}: {errors[0]!r}")
    observed = op.observe(state)
    expected = op.expected(threads, count)
    return {
        "seed": seed,
        "observed": observed,
        "expected": expected,
        "lost": expected - observed,
        "final_type": op.describe_state(state) if op.describe_state else None,
    }


def run_cell(
    op: Operation,
    mode: str,
    log_factory: Callable[[], Any],
    trials: int,
    threads: int,
    count: int,
    base_seed: int,
) -> Dict[str, Any]:
    """Run ``trials`` trials of one operation in one mode and summarise them."""
    started = time.perf_counter()
    outcomes = [
        run_trial(op, log_factory, threads, count, trial_seed(base_seed, op.name, mode, t))
        for t in range(trials)
    ]
    seconds = time.perf_counter() - started
    losses = [o["lost"] for o in outcomes]
    final_types = sorted({o["final_type"] for o in outcomes if o["final_type"] is not None})
    return {
        "operation": op.name,
        "code": op.code,
        "kind": op.kind,
        "mode": mode,
        "threads": threads,
        "count_per_thread": count,
        "trials": trials,
        "trials_with_loss": sum(1 for lost in losses if lost > 0),
        "trials_with_excess": sum(1 for lost in losses if lost < 0),
        "lost_total": sum(lost for lost in losses if lost > 0),
        "expected_total": sum(o["expected"] for o in outcomes),
        "max_lost": max(losses) if losses else 0,
        "final_types": final_types,
        "seeds": [o["seed"] for o in outcomes],
        "lost_per_trial": losses,
        "seconds": round(seconds, 3),
    }


def interpreter_info(label: Optional[str] = None) -> Dict[str, Any]:
    impl = sys.implementation.name
    version = platform.python_version()
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    gil = bool(is_gil_enabled()) if is_gil_enabled is not None else True
    if impl == "pypy":
        pypy = ".".join(str(p) for p in sys.pypy_version_info[:3])  # type: ignore[attr-defined]
        name = f"PyPy {pypy} (Python {version})"
    elif impl == "cpython":
        name = f"CPython {version}{'' if gil else 't (GIL off)'}"
    else:  # pragma: no cover
        name = f"{impl} {version}"
    return {
        "label": label or name,
        "implementation": impl,
        "version": version,
        "gil_enabled": gil,
        "free_threaded_build": bool(getattr(sys, "_is_gil_enabled", None)) and not gil,
        "executable": sys.executable,
        "switch_interval": sys.getswitchinterval(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def run_all(
    operations: Sequence[Operation],
    trials: int,
    threads: int,
    base_seed: int,
    counts: Optional[Dict[str, int]] = None,
    label: Optional[str] = None,
    calllog: Optional[tuple[type, str]] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    log_cls, log_source = calllog if calllog is not None else load_calllog()
    factories: Dict[str, Callable[[], Any]] = {"gil": list, "lock": log_cls, NO_MODE: list}
    results = []
    started = time.perf_counter()
    for op in operations:
        count = (counts or {}).get(op.name, op.default_count)
        for mode in MODES if op.uses_log else (NO_MODE,):
            cell = run_cell(op, mode, factories[mode], trials, threads, count, base_seed)
            results.append(cell)
            if progress:
                print(
                    f"gil_free: {op.name:<20} {mode:<4} {cell['trials_with_loss']}/{trials} "
                    f"trials lost, {cell['lost_total']} items lost, {cell['seconds']:.2f}s",
                    file=sys.stderr,
                )
    return {
        "schema": SCHEMA_VERSION,
        "interpreter": interpreter_info(label),
        "calllog": log_source,
        "config": {
            "trials": trials,
            "threads": threads,
            "seed": base_seed,
            "counts": {op.name: (counts or {}).get(op.name, op.default_count) for op in operations},
        },
        "results": results,
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------- reporting


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _cell_text(r: Dict[str, Any]) -> str:
    text = f"{r['trials_with_loss']}/{r['trials']}"
    if r["lost_total"]:
        text += f" ({_fmt_int(r['lost_total'])} of {_fmt_int(r['expected_total'])} lost)"
    return text


def render_markdown(reports: Sequence[Dict[str, Any]]) -> str:
    lines = [
        "# Lost updates under free-running threads",
        "",
        "Each trial starts the threads behind a `threading.Barrier` and lets them run with no",
        "scheduler and no yields. *trials with loss* = trials in which at least one update was",
        "lost; *lost* = updates missing over all trials (`expected - observed`). Mode `gil` = the",
        "call log is a plain `list`; `lock` = `parabatch.CallLog` (appends under a",
        "`threading.Lock`); `-` = the operation does not touch a call log. `control` rows have a",
        "`time.sleep(1e-5)` inside the window and must show losses everywhere: they prove the",
        "counting detects a loss.",
        "",
        "## Interpreters",
        "",
        "| interpreter | GIL | threads | trials | switch interval | CallLog | cpus | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rep in reports:
        info = rep["interpreter"]
        lines.append(
            _row(
                info["label"],
                "on" if info["gil_enabled"] else "**off**",
                rep["config"]["threads"],
                rep["config"]["trials"],
                f"{info['switch_interval']:g} s",
                rep["calllog"],
                info["cpu_count"],
                f"{rep['seconds']:.1f}",
            )
        )
    lines += [
        "",
        "## Results",
        "",
        "| interpreter | mode | operation | code | kind | updates per trial | trials with loss "
        "| lost (total / expected) | max lost in a trial | final type |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rep in reports:
        label = rep["interpreter"]["label"]
        for r in rep["results"]:
            lines.append(
                _row(
                    label,
                    r["mode"],
                    r["operation"],
                    f"`{r['code']}`",
                    r["kind"],
                    _fmt_int(r["count_per_thread"] * r["threads"]),
                    f"{r['trials_with_loss']}/{r['trials']}",
                    f"{_fmt_int(r['lost_total'])} / {_fmt_int(r['expected_total'])}",
                    _fmt_int(max(r["max_lost"], 0)),
                    ", ".join(r["final_types"]),
                )
            )
    # Side by side: one column per interpreter.
    labels = [rep["interpreter"]["label"] for rep in reports]
    rows: Dict[tuple, Dict[str, str]] = {}
    for rep in reports:
        for r in rep["results"]:
            key = (r["operation"], r["mode"], r["code"])
            rows.setdefault(key, {})[rep["interpreter"]["label"]] = _cell_text(r)
    lines += [
        "",
        "## Side by side (trials with loss / trials, and lost updates)",
        "",
        "| operation | mode | code | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    for (name, mode, code), cells in rows.items():
        lines.append(_row(name, mode, f"`{code}`", *(cells.get(label, "n/a") for label in labels)))
    excess = [
        (rep["interpreter"]["label"], r["operation"], r["mode"])
        for rep in reports
        for r in rep["results"]
        if r.get("trials_with_excess")
    ]
    if excess:
        lines += ["", "Trials that observed *more* updates than expected (a counting bug):"]
        lines += [f"- {label}: {name} ({mode})" for label, name, mode in excess]
    return "\n".join(lines) + "\n"


def _write(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Count lost updates of shared-state operations under free-running threads."
    )
    parser.add_argument("--json", help="write this interpreter's results (or the merge) as JSON")
    parser.add_argument("--md", help="write a markdown table")
    parser.add_argument(
        "--trials", type=int, default=DEFAULT_TRIALS, help="trials per cell (default %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="threads per trial (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="base seed (default %(default)s)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every operation's count per thread (default 1)",
    )
    parser.add_argument(
        "--count",
        action="append",
        default=[],
        metavar="OP=N",
        help="count per thread for one operation (repeatable)",
    )
    parser.add_argument(
        "--ops", help="comma-separated operations (default: all): " + ", ".join(OPERATIONS_BY_NAME)
    )
    parser.add_argument("--label", help="interpreter label in the tables")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="merge these JSON results into one table instead of running",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    if args.merge:
        reports = []
        for path in args.merge:
            with open(path, encoding="utf-8") as fh:
                reports.append(json.load(fh))
        if args.json:
            _write(
                args.json,
                json.dumps({"schema": SCHEMA_VERSION, "reports": reports}, indent=2) + "\n",
            )
        markdown = render_markdown(reports)
        if args.md:
            _write(args.md, markdown)
        else:
            sys.stdout.write(markdown)
        return 0

    if args.trials < 1 or args.threads < 2:
        parser.error("--trials must be >= 1 and --threads >= 2")
    operations = OPERATIONS
    if args.ops:
        unknown = [n for n in args.ops.split(",") if n not in OPERATIONS_BY_NAME]
        if unknown:
            parser.error(f"unknown operation(s): {', '.join(unknown)}")
        operations = [OPERATIONS_BY_NAME[n] for n in args.ops.split(",")]
    counts = {op.name: max(1, int(op.default_count * args.scale)) for op in OPERATIONS}
    for spec in args.count:
        name, _, value = spec.partition("=")
        if name not in OPERATIONS_BY_NAME or not value.isdigit():
            parser.error(f"--count expects OP=N with a known operation, got {spec!r}")
        counts[name] = int(value)

    report = run_all(
        operations,
        args.trials,
        args.threads,
        args.seed,
        counts,
        label=args.label,
        progress=not args.quiet,
    )
    if args.json:
        _write(args.json, json.dumps(report, indent=2) + "\n")
    markdown = render_markdown([report])
    if args.md:
        _write(args.md, markdown)
    if not args.json and not args.md:
        sys.stdout.write(markdown)
    controls = [r for r in report["results"] if r["kind"] == "control"]
    if controls and not any(r["trials_with_loss"] for r in controls):
        print(
            "gil_free: ERROR: the control lost nothing: the counting may be broken", file=sys.stderr
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
