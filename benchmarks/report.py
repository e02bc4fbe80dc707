"""Turn a pytest-benchmark JSON into ``reports/bench.md``, ``bench.json`` and ``bench.png``.

Usage::

    PYTHONPATH=src python -m pytest -p no:xdist -p no:parabatch -p no:cacheprovider \\
        -o python_files='bench_*.py' benchmarks --benchmark-json=.tox/bench-raw.json
    python benchmarks/report.py .tox/bench-raw.json --out reports [--compare old/bench.json]

Every ratio is taken against the floor (a bare ``ThreadPoolExecutor.map``) or PocketFlow's
``BatchNode`` measured in the same run, as the median of per-round ratios; every other
figure is a median too. The judged figures are one table, :data:`FIGURES`: functions that
read the analysed results and return :func:`figure` rows (a value, its unit, a limit);
the report prints them PASS/FAIL and plots each as a share of its limit. To judge a new
benchmark, add its group to :func:`analyse` and a function to :data:`FIGURES`. Nothing here
fails the build.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Optional

C = 10
#: The unit of a ratio, the multiplication sign: "1.015" then this.
TIMES = "\u00d7"
IDEAL_UNBOUNDED = {"apbn"}  # runs every item at once: ideal wall is L, not ceil(N/C)*L
#: Fallback labels; a benchmark's own ``extra_info["descriptions"]`` wins.
LABELS = {
    "pool": "ThreadPoolExecutor.map (floor)",
    "pflow": "PflowBatchNode (core: clone isolation)",
    "pflow_deepcopy": "PflowBatchNode, copy.deepcopy isolation (old baseline)",
    "gather": "asyncio.gather + Semaphore(10)",
    "apbn": "PocketFlow AsyncParallelBatchNode (unbounded)",
    "batchnode": "PocketFlow BatchNode (sequential)",
    "batchnode_chain": "PocketFlow BatchNode running the same chain (fair peer)",
    "pflow_seq": "PflowBatchNode sequential",
    "window": "run_parallel window, bare fn",
    "pflow_noiso": "PflowBatchNode, no copy (unsafe)",
    "pflow_lanes": "PflowBatchNode with lanes (PROTOTYPE, not in the library)",
    "pflow_seq_bare": "PflowBatchNode sequential, bare node",
}
KNOWN_GROUPS = {
    "parallel",
    "sequential",
    "attribution",
    "isolation",
    "memory",
    "proposals",
    "proposals_sequential",
}
SCHEDULER_JSON = Path("reports/bench_scheduler.json")


def _median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def _ideal(name: str, n: int, latency_ms: float, parallel: bool) -> float:
    if not parallel:
        return n * latency_ms / 1000
    if name in IDEAL_UNBOUNDED:
        return latency_ms / 1000
    return math.ceil(n / C) * latency_ms / 1000


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def _rows(bench: dict[str, Any], parallel: bool, floor: str) -> dict[str, Any]:
    info = bench["extra_info"]
    n, latency = info["n_items"], info["latency_ms"]
    times: dict[str, list[float]] = info["times_s"]
    labels = {**LABELS, **info.get("descriptions", {})}
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        ideal = _ideal(name, n, latency, parallel)
        ratios = [a / b for a, b in zip(ts, times[floor])]
        out[name] = {
            "label": labels.get(name, name),
            "ratio_iqr": _quartiles(ratios),
            "per_round_spread": (max(ts) - min(ts)) / med if med else None,
            "n_items": n,
            "rounds": len(ts),
            "median_s": med,
            "per_item_us": med / n * 1e6,
            "overhead_per_item_us": (med - ideal) / n * 1e6,
            "ratio_to_floor": statistics.median(ratios),
            "efficiency": ideal / med if latency else None,
        }
    if "pflow" in times:
        for name, ts in times.items():
            out[name]["ratio_to_core"] = _median_ratio(ts, times["pflow"])
    if "pflow_seq" in times:
        for name, ts in times.items():
            out[name]["ratio_to_core"] = _median_ratio(ts, times["pflow_seq"])
    return {"latency_ms": latency, "impls": out}


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    """Everything the report states, as plain data (``bench.json``)."""
    result: dict[str, Any] = {
        "machine": raw.get("machine_info", {}).get("cpu", {}).get("brand_raw"),
        "python": raw.get("machine_info", {}).get("python_version"),
        "datetime": raw.get("datetime"),
        "parallel": [],
        "sequential": [],
        "attribution": None,
        "isolation": {},
        "memory": [],
        "scheduler": None,
        "proposals": [],
        "proposals_sequential": None,
        "plugin": None,
        "workflow": None,
        "scaleout": [],
        "other": [],
    }
    for b in raw["benchmarks"]:
        group = b.get("group")
        if group == "parallel":
            result["parallel"].append(_rows(b, True, "pool"))
        elif group == "sequential":
            result["sequential"].append(_rows(b, False, "batchnode"))
        elif group == "attribution":
            result["attribution"] = _rows(b, True, "pool")
        elif group == "isolation":
            result["isolation"][b["extra_info"]["operation"]] = {
                "min_us": b["stats"]["min"] * 1e6,
                "median_us": b["stats"]["median"] * 1e6,
                "rounds": b["stats"]["rounds"],
            }
        elif group == "memory":
            result["memory"] = b["extra_info"]["memory"]
        elif group == "proposals":
            result["proposals"].append(_rows(b, True, "pool"))
        elif group == "proposals_sequential":
            result["proposals_sequential"] = _rows(b, False, "batchnode")
        elif group == "scaleout":
            result["scaleout"].extend(b["extra_info"].get("scaleout", []))
        elif group == "plugin":
            result["plugin"] = _plugin(b["extra_info"]["plugin_session"])
        elif (group or "").startswith("workflow"):
            wf = result["workflow"] or {"group": group, "median_s": {}}
            wf["median_s"][(b.get("params") or {}).get("execution", b["name"])] = b["stats"][
                "median"
            ]
            result["workflow"] = wf
        elif "schedules_per_second" in b.get("extra_info", {}):
            sched = result["scheduler"] or []
            per_s = b["extra_info"]["schedules_per_second"]
            sched.append({"name": b["fullname"], "schedules_per_second": per_s})
            result["scheduler"] = sched
        else:
            result["other"].append(_other(b))
    result["parallel"].sort(key=lambda r: r["latency_ms"])
    result["sequential"].sort(key=lambda r: r["latency_ms"])
    if result["scheduler"] is None and SCHEDULER_JSON.exists():
        result["scheduler"] = _scheduler_from_file(SCHEDULER_JSON)
    iso = result["isolation"]
    if "deepcopy_chain" in iso:
        for row in iso.values():
            row["ratio_to_deepcopy"] = row["median_us"] / iso["deepcopy_chain"]["median_us"]
    wf = result["workflow"]
    if wf and {"sequential", "parallel"} <= set(wf["median_s"]):
        wf["speedup"] = wf["median_s"]["sequential"] / wf["median_s"]["parallel"]
    result["targets"] = _targets(result)
    return result


def _plugin(session: dict[str, Any]) -> dict[str, Any]:
    """``bench_plugin.py``'s interleaved sessions: medians, and the paired differences' IQR."""
    with_s, without_s = session["with_s"], session["without_s"]
    diffs_ms = [(a - b) * 1000 for a, b in zip(with_s, without_s)]
    return {
        "runs": session["runs"],
        "with_ms": statistics.median(with_s) * 1000,
        "without_ms": statistics.median(without_s) * 1000,
        "added_ms": (statistics.median(with_s) - statistics.median(without_s)) * 1000,
        "paired_iqr_ms": _quartiles(diffs_ms),
    }


def _other(b: dict[str, Any]) -> dict[str, Any]:
    """A benchmark this report has no section for (``bench_workflow.py``, say): its stats."""
    stats = b.get("stats") or {}
    scalars = {
        k: v
        for k, v in (b.get("extra_info") or {}).items()
        if isinstance(v, (int, float, str, bool))
    }
    return {
        "group": b.get("group") or "",
        "name": b.get("name") or b.get("fullname") or "?",
        "min_s": stats.get("min"),
        "median_s": stats.get("median"),
        "rounds": stats.get("rounds"),
        "extra_info": scalars,
    }


def _scheduler_from_file(path: Path) -> Optional[list[dict[str, Any]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    found: list[dict[str, Any]] = []

    def walk(obj: Any, where: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == "schedules_per_second" and isinstance(v, (int, float)):
                    found.append({"name": where or path.name, "schedules_per_second": v})
                else:
                    walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{where}[{i}]")

    walk(data, "")
    return found or None


def _at(rows: list[dict[str, Any]], latency: float) -> Optional[dict[str, Any]]:
    return next((r["impls"] for r in rows if r["latency_ms"] == latency), None)


#: The claims: (what, limit).
PARALLEL_TARGETS = ((10.0, 1.01), (1.0, 1.05))
FLOOR_0MS_LIMIT = 2.0
MEMORY_LIMIT = 1.5
SEQUENTIAL_LIMIT = 1.2
PLUGIN_LIMIT_MS = 25.0


def figure(
    name: str,
    value: Optional[float],
    limit: Optional[float],
    *,
    unit: str = TIMES,
    better: str = "lower",
    kind: str = "target",
    note: str = "",
    iqr: Optional[tuple[float, float]] = None,
) -> list[dict[str, Any]]:
    """One judged figure (none when ``value`` is None): PASS when on the right side of
    ``limit`` (``better="lower"``: value <= limit). ``limit=None``: shown, not judged.
    ``kind="reference"``: a baseline or a prototype, listed apart and not plotted."""
    if value is None:
        return []
    if limit is None:
        verdict = "-"
    elif better == "lower":
        verdict = "PASS" if value <= limit else "FAIL"
    else:
        verdict = "PASS" if value >= limit else "FAIL"
    return [
        {
            "target": name,
            "value": value,
            "unit": unit,
            "limit": limit,
            "better": better,
            "verdict": verdict,
            "note": note,
            "iqr": iqr,
            "kind": kind,
        }
    ]


def _at(rows: list[dict[str, Any]], latency: float) -> Optional[dict[str, Any]]:
    return next((r["impls"] for r in rows if r["latency_ms"] == latency), None)


def _parallel_figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for impl, tag, kind in (
        ("pflow", "", "target"),
        ("pflow_deepcopy", " [old baseline: deepcopy]", "reference"),
        ("pflow_lanes", " [lanes PROTOTYPE, not in the library]", "reference"),
    ):
        for lat, lim in (*PARALLEL_TARGETS, (0.0, FLOOR_0MS_LIMIT)):
            row = _at(res["parallel"], lat)
            if row and impl in row:
                v = row[impl]
                name = (
                    f"per-item overhead ÷ floor at 0 ms{tag}"
                    if lat == 0
                    else f"PflowBatchNode ÷ pool.map at {lat:g} ms{tag}"
                )
                out += figure(name, v["ratio_to_floor"], lim, iqr=v["ratio_iqr"], kind=kind)
    return out


def _memory_figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    mem = res["memory"]
    if len(mem) < 2:
        return []
    lo, hi = mem[0], mem[-1]
    note = "" if hi["n"] == 10**5 else f"short mode: n = {hi['n']:,} instead of 100,000"
    what = f"memory({hi['n']:.0e}) ÷ memory({lo['n']:.0e})"
    return figure(
        f"{what}, results excluded",
        hi["working_bytes"] / lo["working_bytes"],
        MEMORY_LIMIT,
        note=note,
    ) + figure(
        f"{what}, raw peak",
        hi["peak_bytes"] / lo["peak_bytes"],
        MEMORY_LIMIT,
        note="the results themselves grow with n, by design",
        kind="reference",
    )


def _sequential_figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in res["sequential"]:
        impls = r["impls"]
        if "pflow_seq" in impls:
            v = impls["pflow_seq"]
            out += figure(
                f"sequential ÷ BatchNode at {r['latency_ms']:g} ms",
                v["ratio_to_floor"],
                SEQUENTIAL_LIMIT,
                iqr=v["ratio_iqr"],
            )
        if r["latency_ms"] == 0 and "pflow_seq" in impls and "batchnode_chain" in impls:
            # ratio of medians of per-round ratios: both are against the same BatchNode
            out += figure(
                "sequential ÷ BatchNode running the same chain, 0 ms",
                impls["pflow_seq"]["ratio_to_floor"] / impls["batchnode_chain"]["ratio_to_floor"],
                SEQUENTIAL_LIMIT,
                note="the fair peer: same per-item work, no parabatch",
                kind="reference",
            )
    return out


def _plugin_figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    p = res.get("plugin")
    if not p:
        return []
    return figure(
        "pytest session time added by the plugin (one-test project)",
        p["added_ms"],
        PLUGIN_LIMIT_MS,
        unit="ms",
        iqr=p["paired_iqr_ms"],
        note=f"median of {p['runs']} interleaved runs each, with and without -p no:parabatch",
    )


def _workflow_figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    wf = res.get("workflow")
    if not wf or "speedup" not in wf:
        return []
    return figure(
        f"workflow, sequential ÷ parallel ({wf['group']})",
        wf["speedup"],
        None,
        better="higher",
        kind="reference",
        note="medians of the rounds",
    )


def _scaleout_figures(res: dict[str, Any]) -> list[dict[str, Any]]:
    """``bench_scaleout.py``'s rows: each states its figure, value, target and direction."""
    out: list[dict[str, Any]] = []
    for r in res.get("scaleout", []):
        judged = r["op"] in ("<=", ">=")
        value = math.nan if r["value"] is None else r["value"]  # shown as not measured
        out += figure(
            r["figure"],
            value,
            r["target"] if judged and r["value"] is not None else None,
            unit="bytes" if "bytes" in r["figure"] else TIMES,
            better="higher" if r["op"] == ">=" else "lower",
            kind="target" if judged else "reference",
            note=r.get("note", ""),
        )
    return out


#: Every judged figure comes from one of these; add a function here to judge a new one.
FIGURES: list[Callable[[dict[str, Any]], list[dict[str, Any]]]] = [
    _parallel_figures,
    _memory_figures,
    _sequential_figures,
    _plugin_figures,
    _workflow_figures,
    _scaleout_figures,
]


def _targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for source in FIGURES for row in source(res)]


# -- rendering ----------------------------------------------------------------------------


def _fmt(x: Optional[float], spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _iqr(t: Optional[tuple[float, float]], unit: str = TIMES) -> str:
    if not t:
        return "-"
    return f"{_value(t[0], unit)} to {_value(t[1], unit)}"


def _value(x: Optional[float], unit: str) -> str:
    """A figure in its unit: ratios to 3 decimals (1.015 and the times sign), ms to 1."""
    if x is None:
        return "-"
    return f"{x:.3f}{TIMES}" if unit == TIMES else f"{x:.1f} {unit}"


def duration(seconds: Optional[float]) -> str:
    """A time in the unit that keeps 3 significant digits: ns, µs, ms or s.

    Example:
        >>> [duration(x) for x in (8.5e-8, 1.234e-6, 0.0456, 2.5)]
        ['85.0 ns', '1.23 µs', '45.6 ms', '2.50 s']
    """
    if seconds is None:
        return "-"
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        if abs(seconds * scale) < 999.5:
            return f"{seconds * scale:#.3g}".rstrip(".") + f" {unit}"
    return f"{seconds:.2f} s"


def _same_target(name: str) -> str:
    """A target's name as this version of the report spells it (older runs used "/")."""
    return (
        name.replace(" / ", " ÷ ")
        .replace("÷ pool at", "÷ pool.map at")
        .replace("[lanes + clone prototype]", "[lanes PROTOTYPE, not in the library]")
    )


def _targets_table(res: dict[str, Any], old: Optional[dict[str, Any]], kind: str) -> list[str]:
    head = "| figure | measured | IQR | limit | verdict |"
    lines = [head + (" previous |" if old else ""), "|---|---:|---|---:|---|"]
    lines[-1] += "---:|" if old else ""
    old_t = {_same_target(t["target"]): t for t in (old or {}).get("targets", [])}
    for t in res["targets"]:
        if t.get("kind", "target") != kind:
            continue
        unit = t.get("unit", TIMES)
        note = f" ({t['note']})" if t["note"] else ""
        limit = "-" if t["limit"] is None else ("≥ " if t["better"] == "higher" else "≤ ")
        limit += "" if t["limit"] is None else _value(t["limit"], unit).replace(".000", "")
        prev = ""
        if old:
            o = old_t.get(t["target"])
            prev = f" {_value(o.get('value', o.get('ratio')), unit)} |" if o else " - |"
        lines.append(
            f"| {t['target']}{note} | {_value(t['value'], unit)} | {_iqr(t.get('iqr'), unit)} | "
            f"{limit} | **{t['verdict']}** |" + prev
        )
    return lines


def render(res: dict[str, Any], old: Optional[dict[str, Any]] = None) -> str:
    """The Markdown report."""
    lines = [
        "# parabatch benchmarks",
        "",
        f"{res['python'] or ''} · {res['machine'] or ''} · {res['datetime'] or ''} · "
        f"mode `{res.get('mode', '?')}`. Ratios are medians of per-round ratios against the "
        "floor measured in the same rounds; implementations are interleaved across rounds "
        "(order rotated every round). Every figure is a median; the IQR column is the spread "
        "of the per-round ratios (of the paired runs for times): how noisy the machine was.",
        "",
        "## Judged figures (the library as it is)",
        "",
    ]
    lines += _targets_table(res, old, "target")
    lines += ["", "References (not targets: baselines, prototypes, other views)", ""]
    lines += _targets_table(res, old, "reference")
    lines += ["", "## Parallel: N = 1,000, C = 10", ""]
    lines += [
        "| latency | implementation | median wall (s) | overhead/item (µs) | ÷ floor | "
        "per-round IQR | efficiency |",
        "|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in res["parallel"]:
        for v in r["impls"].values():
            lines.append(
                f"| {r['latency_ms']:g} ms | {v['label']} | {v['median_s']:.4f} | "
                f"{v['overhead_per_item_us']:.1f} | {v['ratio_to_floor']:.3f} | "
                f"{_iqr(v['ratio_iqr'])} | {_fmt(v['efficiency'])} |"
            )
    lines += [
        "",
        "Efficiency = ideal ÷ measured, ideal = ceil(N/C)·L. `AsyncParallelBatchNode` has no "
        "bound: it runs all 1,000 items at once (ideal L), which is why it is fast and why it "
        "is not a fair peer — it is the rate-limit hazard.",
        "",
        "## Sequential: PflowBatchNode against PocketFlow's BatchNode",
        "",
        "| latency | items | implementation | median wall (s) | per item (µs) | ÷ BatchNode |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in res["sequential"]:
        for v in r["impls"].values():
            lines.append(
                f"| {r['latency_ms']:g} ms | {v['n_items']} | {v['label']} | "
                f"{v['median_s']:.4f} | {v['per_item_us']:.1f} | {v['ratio_to_floor']:.3f} |"
            )
    if res["attribution"]:
        lines += [
            "",
            "## Where the 0 ms overhead goes (each row adds one layer)",
            "",
            "| step | per item (µs) | added (µs) | ÷ floor |",
            "|---|---:|---:|---:|",
        ]
        prev = None
        for v in res["attribution"]["impls"].values():
            added = "" if prev is None else f"{v['per_item_us'] - prev:+.1f}"
            lines.append(
                f"| {v['label']} | {v['per_item_us']:.1f} | {added} | {v['ratio_to_floor']:.2f} |"
            )
            prev = v["per_item_us"]
    if res["proposals"] or res["proposals_sequential"]:
        lines += [
            "",
            "## Proposed core changes, prototyped in `benchmarks/_prototypes.py`",
            "",
            'Same rounds, same interleaving; "÷ core" is the median per-round ratio to '
            "the current `PflowBatchNode` (below 1 = faster).",
            "",
            "| latency | implementation | per item (µs) | ÷ floor | per-round IQR | ÷ core |",
            "|---:|---|---:|---:|---|---:|",
        ]
        rows = list(res["proposals"])
        if res["proposals_sequential"]:
            rows.append({**res["proposals_sequential"], "seq": True})
        for r in rows:
            tag = " (sequential, ÷ BatchNode)" if r.get("seq") else ""
            for v in r["impls"].values():
                lines.append(
                    f"| {r['latency_ms']:g} ms{tag} | {v['label']} | {v['per_item_us']:.1f} | "
                    f"{v['ratio_to_floor']:.3f} | {_iqr(v['ratio_iqr'])} | "
                    f"{_fmt(v.get('ratio_to_core'))} |"
                )
    if res["isolation"]:
        lines += [
            "",
            "## Isolation and per-item operations (single thread)",
            "",
            "| operation | min | median | median ÷ deepcopy of chain |",
            "|---|---:|---:|---:|",
        ]
        for name, v in res["isolation"].items():
            lines.append(
                f"| {name} | {duration(v['min_us'] / 1e6)} | {duration(v['median_us'] / 1e6)} | "
                f"{_fmt(v.get('ratio_to_deepcopy'), '.2f')} |"
            )
    if res["memory"]:
        lines += [
            "",
            "## Memory (tracemalloc, parallel PflowBatchNode, trivial items)",
            "",
            "Relative to just before the run. Results = what `shared[node_id]` holds, measured "
            "by deleting it after the run (gc'd); peak - results = the machinery at its peak.",
            "",
            "| items | raw peak (KiB) | results held (KiB) | peak - results (KiB) | "
            "left after results freed (KiB) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for m in res["memory"]:
            lines.append(
                f"| {m['n']:,} | {m['peak_bytes'] / 1024:,.0f} | "
                f"{m['results_bytes'] / 1024:,.0f} | {m['working_bytes'] / 1024:,.0f} | "
                f"{m.get('residual_bytes', 0) / 1024:,.1f} |"
            )
    if res["other"]:
        lines += [
            "",
            "## Other benchmarks in the run (no targets here)",
            "",
            "| group | benchmark | min | median | rounds | extra |",
            "|---|---|---:|---:|---:|---|",
        ]
        for o in res["other"]:
            extra = ", ".join(f"{k}={v}" for k, v in o["extra_info"].items())
            lines.append(
                f"| {o['group']} | {o['name']} | {duration(o['min_s'])} | "
                f"{duration(o['median_s'])} | {o['rounds'] or '-'} | {extra} |"
            )
    prof = res.get("profile")
    if prof:
        lines += [
            "",
            "## Per-item CPU profile at 0 ms (`benchmarks/profile_item.py`)",
            "",
            "cProfile on every thread with a per-thread CPU clock; profiled times are "
            "inflated by the profiler, so each row also gives its share scaled to the "
            "unprofiled CPU per item.",
        ]
        for mode, r in prof.items():
            scale = r["cpu_us_per_item"] / r["profiled_cpu_us_per_item"]
            lines += [
                "",
                f"**{mode}**, {r['items']:,} items: unprofiled {r['wall_us_per_item']:.1f} µs "
                f"wall and {r['cpu_us_per_item']:.1f} µs CPU per item.",
                "",
                "| part (inclusive) | share of CPU | ≈ µs/item |",
                "|---|---:|---:|",
            ]
            for label, us in r["parts"].items():
                lines.append(
                    f"| {label} | {us / r['profiled_cpu_us_per_item']:.0%} | {us * scale:.1f} |"
                )
            lines += ["", "| function (own time) | calls/item | share | ≈ µs/item |"]
            lines.append("|---|---:|---:|---:|")
            for row in r["top"]:
                lines.append(
                    f"| `{row['function']}` | {row['calls_per_item']:.1f} | "
                    f"{row['own_us_per_item'] / r['profiled_cpu_us_per_item']:.0%} | "
                    f"{row['own_us_per_item'] * scale:.1f} |"
                )
    wf = res.get("workflow")
    if wf:
        lines += [
            "",
            f"## Workflow end to end ({wf['group']})",
            "",
            "| execution | median wall |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {duration(v)} |" for k, v in wf["median_s"].items()]
        if "speedup" in wf:
            lines += ["", f"Sequential ÷ parallel, medians: {wf['speedup']:.2f}{TIMES}."]
    plugin = res.get("plugin")
    if plugin:
        lines += [
            "",
            "## pytest plugin: what installing parabatch adds to another project's session",
            "",
            f"`pytest -q` on a one-test project, {plugin['runs']} interleaved runs each: median "
            f"{plugin['with_ms']:.0f} ms with the plugin, {plugin['without_ms']:.0f} ms with "
            f"`-p no:parabatch`; added {plugin['added_ms']:.1f} ms (paired differences' IQR "
            f"{_iqr(plugin['paired_iqr_ms'], 'ms')}).",
        ]
    lines += ["", "## Harness: controlled scheduler", ""]
    if res["scheduler"]:
        lines += ["| benchmark | schedules per second |", "|---|---:|"]
        lines += [f"| {s['name']} | {s['schedules_per_second']:,.0f} |" for s in res["scheduler"]]
    else:
        lines.append(
            "No result: `benchmarks/bench_scheduler.py` did not run in this session and "
            f"`{SCHEDULER_JSON}` is absent (row left out)."
        )
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    """Write :func:`judged_figure` to ``path``."""
    import matplotlib.pyplot as plt

    fig = judged_figure(res)
    fig.savefig(path)
    plt.close(fig)


def judged_figure(res: dict[str, Any]) -> Any:
    """The judged figures as shares of their limits, on a log axis with the limit at 1.

    One series: a dot per target (green PASS, red FAIL) at measured ÷ limit (limit ÷
    measured where higher is better), its IQR as a whisker; the measured value and the
    limit are written in a column on the right. References are not plotted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judged = [t for t in res["targets"] if t["kind"] == "target" and t["limit"]]
    shares, spans, colours = [], [], []
    for t in judged:
        inverse = t["better"] == "higher"
        share = t["limit"] / t["value"] if inverse else t["value"] / t["limit"]
        lo, hi = t.get("iqr") or (t["value"], t["value"])
        lo, hi = (
            (t["limit"] / hi, t["limit"] / lo) if inverse else (lo / t["limit"], hi / t["limit"])
        )
        shares.append(share)
        spans.append((lo, hi))
        colours.append("#2e7d32" if t["verdict"] == "PASS" else "#c62828")
    positive = [x for x in [*shares, *(v for span in spans for v in span)] if x > 0]
    left = min([0.5, *positive]) / 1.5
    right = max([2.0, *positive]) * 1.5
    fig, ax = plt.subplots(figsize=(10, 1.3 + 0.42 * max(len(judged), 1)), dpi=110)
    ys = list(range(len(judged)))[::-1]
    # On a log axis a share at or below zero (a difference of noisy medians) sits at the
    # left edge; a median outside its own spread gets no bar on that side.
    shown = [max(share, left) for share in shares]
    lows = [max(0.0, x - max(lo, left)) for x, (lo, _) in zip(shown, spans)]
    highs = [max(0.0, hi - x) for x, (_, hi) in zip(shown, spans)]
    if judged:
        ax.errorbar(shown, ys, xerr=[lows, highs], fmt="none", ecolor="0.45", capsize=3)
        ax.scatter(shown, ys, c=colours, s=55, zorder=3)
    ax.axvline(1.0, color="black", linewidth=1)
    for y, t in zip(ys, judged):
        ax.annotate(
            f"{_value(t['value'], t['unit'])}, limit {_value(t['limit'], t['unit'])}",
            xy=(1.02, y),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_ylim(-0.7, len(judged) - 0.3)
    ax.set_yticks(ys)
    ax.set_yticklabels([t["target"] for t in judged], fontsize=8)
    ax.set_xlabel("measured ÷ limit, log scale (left of 1 meets the target; whiskers: IQR)")
    ax.set_title("Judged figures against their targets (green PASS, red FAIL)", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv: Optional[list[str]] = None) -> int:
    """Write the report; print the Markdown to stdout."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    ap.add_argument("--compare", type=Path, help="an earlier bench.json: adds a column")
    ap.add_argument("--mode", default=None, help="label for the mode (default: from env)")
    ap.add_argument(
        "--profile",
        type=Path,
        default=Path("reports/profile.json"),
        help="profile_item.py --json output to include, if it exists",
    )
    args = ap.parse_args(argv)
    raw = json.loads(args.raw.read_text())
    res = analyse(raw)
    res["mode"] = args.mode or os.environ.get("PARABATCH_BENCH", "full")
    if args.profile and args.profile.exists():
        res["profile"] = json.loads(args.profile.read_text())
    old = json.loads(args.compare.read_text()) if args.compare else None
    args.out.mkdir(parents=True, exist_ok=True)
    md = render(res, old)
    (args.out / "bench.md").write_text(md)
    (args.out / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, args.out / "bench.png")
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
