"""The races of stress/test_unmodified.py through frontrun, interleave-test and ploom.

parabatch runs the same races beside them, in the same process and interpreter.

Each subject is the test as a user writes it: a zero-argument function that starts plain
``threading`` threads (or a pool), joins them and asserts. Each tool gets it through its own
entry point, with no rewriting:

- parabatch: ``check_random`` / ``check_pct`` (10 seeds, 500 schedules each), ``check_dfs``;
- interleave-test: ``explore(model, strategy=...)`` random and PCT (10 seeds, 500 each), DFS
  at preemption bound 2 (at most 5,000 schedules);
- frontrun: ``explore(setup, workers=[model], invariant)`` — its API starts the worker
  threads itself, so a test that starts its own threads is one worker (DPOR, 2,000
  executions at most); it must be run under its ``frontrun`` launcher;
- ploom: ``ploom.check(model)``.

Cells: schedules to the first failure (median over the seeds that found it, and how many
found it), or for a fixed twin whether it passed and how many schedules it ran. A broken
subject passed is a false pass; a fixed one failed is a false failure.

These tools need Python 3.12 (interleave-test) or 3.13 (ploom); run with such an interpreter
that has them installed (not in CI: it takes minutes)::

    python -m venv /tmp/v313 --prompt tools  # with pyenv's 3.13
    /tmp/v313/bin/pip install -e '.[test]' frontrun interleave-test ploom
    /tmp/v313/bin/python benchmarks/compare_tools.py --out reports

It writes ``reports/tools.md`` and ``reports/tools.json``; each (tool, subject) runs in its
own process with a time limit, so a tool that hangs costs its limit and is reported so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEEDS = range(10)
BUDGET = 500
DFS_CAP = 5_000
LIMIT_S = 180


def _subjects() -> dict[str, tuple[Callable[[], None], Callable[[], None], str]]:
    sys.path.insert(0, str(ROOT / "stress"))
    import test_unmodified

    return test_unmodified.RACES


def _median(found: list[int]) -> Optional[float]:
    return statistics.median(found) if found else None


def _why(exc: Optional[BaseException], fallback: str) -> str:
    """What the first failure was: the subject's own assertion, or something else."""
    if exc is None:
        return fallback[:100]
    return f"{type(exc).__name__}: {exc}"[:100]


def _run_parabatch(fn: Callable[[], None], broken: bool) -> dict[str, Any]:
    from parabatch.testing import check_dfs, check_pct, check_random

    out: dict[str, Any] = {}
    for name, check in (("random", check_random), ("pct", check_pct)):
        found = []
        for seed in SEEDS:
            r = check(fn, BUDGET, seed=seed, raise_on_failure=False)  # type: ignore[operator]
            if r.first_failure_at is not None:
                found.append(r.first_failure_at)
                out.setdefault("why", _why(r.failure.exception, r.failure.message))
        out[name] = {"found": len(found), "median": _median(found)}
    r = check_dfs(fn, max_schedules=DFS_CAP, raise_on_failure=False)
    out["dfs"] = {
        "found": int(r.failure is not None),
        "first": r.first_failure_at,
        "schedules": r.schedules_explored,
        "certified": r.certified,
    }
    return out


def _run_interleave(fn: Callable[[], None], broken: bool) -> dict[str, Any]:
    import interleave_test as it

    out: dict[str, Any] = {}
    for name in ("random", "pct"):
        found = []
        for seed in SEEDS:
            r = it.explore(fn, iterations=BUDGET, seed=seed, strategy=name, raise_on_failure=False)
            if r.failure is not None:
                found.append(r.failure.iteration + 1)
                out.setdefault("why", _why(r.failure.exception, r.failure.kind))
        out[name] = {"found": len(found), "median": _median(found)}
    r = it.explore(
        fn, iterations=DFS_CAP, strategy="dfs", max_preemptions=2, raise_on_failure=False
    )
    out["dfs"] = {
        "found": int(r.failure is not None),
        "first": None if r.failure is None else r.failure.iteration + 1,
        "schedules": r.schedules_run,
        "certified": bool(r.exhausted and r.failure is None),
    }
    return out


def _run_frontrun(fn: Callable[[], None], broken: bool) -> dict[str, Any]:
    import frontrun

    def worker(state: dict[str, Any]) -> None:
        try:
            fn()
        except BaseException as exc:  # the invariant reads it
            state["error"] = exc

    r = frontrun.explore(
        setup=dict,
        workers=[worker],
        invariant=lambda s: "error" not in s,
        max_executions=2_000,
        total_timeout=LIMIT_S / 2,
        reproduce_on_failure=0,
    )
    return {
        "dpor": {
            "found": int(not r.property_holds),
            "first": r.num_explored if not r.property_holds else None,
            "schedules": r.num_explored,
            "certified": bool(r.property_holds and r.exhausted),
        }
    }


def _run_ploom(fn: Callable[[], None], broken: bool) -> dict[str, Any]:
    import ploom

    try:
        stats = ploom.check(fn)
    except Exception as exc:  # ploom raises its ModelCheckError on a failure
        return {"check": {"found": 1, "first": None, "error": type(exc).__name__}}
    return {
        "check": {
            "found": 0,
            "schedules": getattr(stats, "executions", None),
            "certified": True,
        }
    }


RUNNERS = {
    "parabatch": _run_parabatch,
    "interleave-test": _run_interleave,
    "frontrun": _run_frontrun,
    "ploom": _run_ploom,
}


def _one(tool: str, subject: str, variant: str) -> None:
    broken, fixed, _ = _subjects()[subject]
    fn = broken if variant == "broken" else fixed
    t0 = time.perf_counter()
    result = RUNNERS[tool](fn, variant == "broken")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    print("RESULT " + json.dumps(result, default=str))


def _spawn(tool: str, subject: str, variant: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", tool, subject, variant]
    if tool == "frontrun":
        launcher = shutil.which("frontrun") or str(Path(sys.executable).parent / "frontrun")
        cmd = [launcher, *cmd]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=LIMIT_S, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no verdict within {LIMIT_S} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": tail[0][:160]}


def _verdict(cell: dict[str, Any], broken: bool) -> tuple[str, int, int]:
    """(text, false pass, false failure) for one tool's result on one subject.

    A false pass: no strategy of the tool found the broken subject. A false failure: a
    strategy failed the fixed twin. (A random or PCT seed that misses within its budget is
    shown as ``found/seeds``, not counted.)
    """
    if "error" in cell:
        return f"error: {cell['error']}", 0, 0
    parts, found_any, failed_any = [], False, False
    for name, r in cell.items():
        if name in ("seconds", "why"):
            continue
        found_any |= bool(r["found"])
        if broken:
            if "median" in r:
                seeds = len(SEEDS)
                text = f"{name} {_num(r['median'])} ({r['found']}/{seeds})"
            else:
                text = f"{name} {r.get('first') or 'found'}" if r["found"] else f"{name} passed"
        elif r["found"]:
            text = f"{name} FAILED"
            failed_any = True
        elif "median" in r:
            text = f"{name} ok"
        else:
            cert = "exhausted" if r.get("certified") else "not exhausted"
            text = f"{name} ok, {r.get('schedules')} ({cert})"
        parts.append(text)
    parts.append(f"{cell.get('seconds', 0):g} s")
    if "why" in cell:
        parts.append(f"first failure: `{cell['why']}`")
    return "; ".join(parts), int(broken and not found_any), int(failed_any)


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("TOOL", "SUBJECT", "VARIANT"))
    parser.add_argument("--out", default=str(ROOT / "reports"))
    parser.add_argument("--tools", default=",".join(RUNNERS))
    parser.add_argument("--render", metavar="JSON", help="only rewrite tools.md from a run")
    args = parser.parse_args()
    if args.one:
        _one(*args.one)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        _render(results, list(next(iter(results.values()))), out)
        return
    subjects = _subjects()
    tools = [t for t in args.tools.split(",") if t]
    results = {}
    for subject in subjects:
        for variant in ("broken", "fixed"):
            for tool in tools:
                cell = _spawn(tool, subject, variant)
                results.setdefault(f"{subject} [{variant}]", {})[tool] = cell
                print(f"{subject} [{variant}] {tool}: {cell}", file=sys.stderr, flush=True)
    (out / "tools.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    _render(results, tools, out)


def _render(results: dict[str, dict[str, dict[str, Any]]], tools: list[str], out: Path) -> None:
    totals = {t: [0, 0] for t in tools}
    lines = [
        "# Unmodified code through other tools",
        "",
        f"Python {platform.python_version()}; written by `benchmarks/compare_tools.py` "
        f"({time.strftime('%Y-%m-%d %H:%M')}). Broken subjects: schedules to the first "
        f"failure (median, seeds that found it of {len(SEEDS)}, {BUDGET} schedules a seed) "
        f"for random and PCT, first failing schedule for DFS/DPOR; fixed twins: whether they "
        f"passed, and for exhaustive strategies the schedules run and whether the space "
        f"was exhausted (DFS capped at {DFS_CAP:,}).",
        "",
        "| subject | " + " | ".join(tools) + " |",
        "|---|" + "---|" * len(tools),
    ]
    for key, cells in results.items():
        broken = key.endswith("[broken]")
        row = []
        for tool in tools:
            text, fp, ff = _verdict(cells[tool], broken)
            totals[tool][0] += fp
            totals[tool][1] += ff
            row.append(text)
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    lines += [
        "",
        "| tool | false passes (no strategy found the race) "
        "| false failures (a fixed twin failed) |",
        "|---|---:|---:|",
        *[f"| {t} | {fp} | {ff} |" for t, (fp, ff) in totals.items()],
        "",
    ]
    (out / "tools.md").write_text("\n".join(lines))
    print(f"wrote {out / 'tools.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
