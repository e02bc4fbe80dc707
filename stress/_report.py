"""The stress report: what every suite measured, written as reports/stress.{md,json}."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from parabatch.testing import OutcomeTable
from parabatch.testing._outcomes import FORBIDDEN


def interpreter() -> str:
    name = platform.python_implementation()
    version = platform.python_version()
    gil = getattr(sys, "_is_gil_enabled", None)
    if gil is not None and not gil():
        version += "t (GIL off)"
    return f"{name} {version}"


@dataclass
class StressReport:
    """Everything the stress suites recorded in one session."""

    scale: float
    started: float = field(default_factory=time.time)
    core: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, OutcomeTable] = field(default_factory=dict)
    certificates: list[dict[str, Any]] = field(default_factory=list)
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unmodified: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_core(self, label: str, report: Any, seconds: float) -> None:
        self.tables[label] = report.table
        self.core[label] = {
            "strategy": report.strategy,
            "seed": report.seed,
            "schedules": report.schedules,
            "scenarios": report.scenarios,
            "ok": report.ok,
            "seconds": round(seconds, 1),
            "forbidden": report.table.forbidden(),
            "counterexample": str(report.counterexamples[0]) if report.counterexamples else None,
        }

    def control(self, name: str) -> dict[str, Any]:
        return self.controls.setdefault(name, {})

    # -- rendering ------------------------------------------------------------------------

    def core_table_md(self) -> str:
        labels = list(self.tables)
        if not labels:
            return "_no core run recorded_"
        first = self.tables[labels[0]]
        head = "| property | outcome | expect | " + " | ".join(labels) + " |"
        sep = "|---|---|---|" + "---:|" * len(labels)
        lines = [head, sep]
        for prop, key, _, expect, _ in first.rows():
            counts = [f"{self.tables[label].count(prop, key):,}" for label in labels]
            hot = expect == FORBIDDEN and any(c != "0" for c in counts)
            mark = f"**{expect}**" if hot else expect
            lines.append(f"| {prop} | {key} | {mark} | " + " | ".join(counts) + " |")
        return "\n".join(lines)

    def core_table_text(self) -> str:
        labels = list(self.tables)
        if not labels:
            return "  (no core run)"
        first = self.tables[labels[0]]
        widths = [max(len(label), 8) for label in labels]
        out = [
            "  "
            + f"{'property':<13}{'outcome':<26}{'expect':<12}"
            + "".join(f"{label:>{w + 2}}" for label, w in zip(labels, widths))
        ]
        for prop, key, _, expect, _ in first.rows():
            counts = [self.tables[label].count(prop, key) for label in labels]
            flag = "  <-- FORBIDDEN seen" if expect == FORBIDDEN and any(counts) else ""
            out.append(
                "  "
                + f"{prop:<13}{key:<26}{expect:<12}"
                + "".join(f"{c:>{w + 2},}" for c, w in zip(counts, widths))
                + flag
            )
        return "\n".join(out)

    def controls_rows(self) -> list[list[str]]:
        rows = []
        for name, c in self.controls.items():
            rnd = c.get("random") or {}
            pct = c.get("pct") or {}
            rows.append(
                [
                    name,
                    c.get("catches", ""),
                    _caught(rnd),
                    _num(rnd.get("median")),
                    _num(max(rnd.get("schedules_to_detection") or [0]) or None),
                    _caught(pct),
                    _num(pct.get("median")),
                    _num(c.get("dfs_first")),
                    _rate(c.get("stress")),
                    _rate(c.get("stress_yield")),
                    _shape(c.get("shrunk")),
                ]
            )
        return rows

    CONTROL_HEAD: ClassVar[list[str]] = [
        "subject",
        "must fail",
        "random: caught",
        "median",
        "max",
        "PCT: caught",
        "median",
        "DFS: first",
        "free threads",
        "free + sleep(0)",
        "shrunk to",
    ]

    def controls_md(self) -> str:
        lines = [
            "| " + " | ".join(self.CONTROL_HEAD) + " |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.controls_rows()]
        return "\n".join(lines)

    def controls_text(self) -> str:
        rows = [self.CONTROL_HEAD, *self.controls_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.CONTROL_HEAD))]
        return "\n".join(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows
        )

    def certificates_md(self) -> str:
        lines = [
            "| scenario | max preemptions | traced | schedules | exhausted | ok |",
            "|---|---:|---|---:|---|---|",
        ]
        for c in self.certificates:
            lines.append(
                f"| `{c['scenario']}` | {c['bound']} | {c['traced']} | {c['schedules']:,} "
                f"| {c['exhausted']} | {c['ok']} |"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        parts = [
            "# parabatch stress report",
            "",
            f"Interpreter: {interpreter()}. Scale: {self.scale} "
            f"(`PARABATCH_STRESS_SCALE`). Written {time.strftime('%Y-%m-%d %H:%M:%S')}, "
            f"{time.time() - self.started:.0f} s.",
            "",
            "## The core: outcome table",
            "",
            "Every run draws a scenario (items, failure plan, config) and a schedule, runs "
            "`PflowBatchNode` under the controlled scheduler and classifies each property's "
            "outcome. Columns are runs of different strategies.",
            "",
            self.core_table_md(),
            "",
            "| run | strategy | seed | schedules | scenarios | seconds | FORBIDDEN seen |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for label, c in self.core.items():
            parts.append(
                f"| {label} | {c['strategy']} | {c['seed']} | {c['schedules']:,} | "
                f"{c['scenarios']:,} | {c['seconds']} | {c['forbidden'] or 'none'} |"
            )
        parts += [
            "",
            "## Certificates (`check_dfs`, every schedule within the bound)",
            "",
            self.certificates_md(),
            "",
            "## Negative controls",
            "",
            "Each known-broken subject must be caught in every seed. Random and PCT: one "
            "search per seed, at most 200 schedules each; median and max schedules to the "
            "first FORBIDDEN outcome. DFS: schedules until the first FORBIDDEN outcome over "
            "the certificate scenarios. Free threads: share of runs showing a FORBIDDEN "
            "outcome with real threads and no scheduler (`check_stress`), without and with "
            "`time.sleep(0)` at the scheduling points.",
            "",
            self.controls_md(),
            "",
            "### Shrunk counterexamples",
            "",
        ]
        for name, c in self.controls.items():
            shrunk = c.get("shrunk")
            if shrunk:
                parts += [
                    f"**{name}** — {shrunk['message']}",
                    "",
                    "```text",
                    shrunk["trace"],
                    "```",
                    "",
                    f"`{shrunk['replay']}`",
                    "",
                ]
        if self.unmodified:
            parts += [unmodified_md(self.unmodified), ""]
        if self.failures:
            parts += ["## Failures", "", *[f"- {f}" for f in self.failures], ""]
        return "\n".join(parts)

    def text(self) -> str:
        return "\n".join(
            [
                f"parabatch stress report ({interpreter()}, scale {self.scale})",
                "core outcome table:",
                self.core_table_text(),
                "negative controls:",
                self.controls_text(),
                *(
                    ["unmodified code:", unmodified_text(self.unmodified)]
                    if self.unmodified
                    else []
                ),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "interpreter": interpreter(),
            "scale": self.scale,
            "core": self.core,
            "tables": {label: t.to_dict() for label, t in self.tables.items()},
            "certificates": self.certificates,
            "controls": {
                name: {k: v for k, v in c.items() if k != "counterexample"}
                for name, c in self.controls.items()
            },
            "failures": self.failures,
            "unmodified": self.unmodified,
        }

    def write(self, directory: Path, stem: str) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md = directory / f"{stem}.md"
        js = directory / f"{stem}.json"
        md.write_text(self.markdown() + "\n")
        js.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return [md, js]


def _num(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:g}"


def _caught(d: dict[str, Any]) -> str:
    return f"{d['caught']}/{d['seeds']}" if d else "—"


def _rate(d: Optional[dict[str, Any]]) -> str:
    if not d:
        return "—"
    return f"{d['forbidden']}/{d['runs']}"


def _shape(d: Optional[dict[str, Any]]) -> str:
    if not d:
        return "—"
    s = d["scenario"]
    return (
        f"{len(s['items'])} items, fail={list(s['fail'])}, cap {s['max_concurrent']}, "
        f"{s['error_handling']}; {d['preemptions']} preemption(s)"
    )


UNMODIFIED_HEAD = [
    "race",
    "random median (max)",
    "PCT median (max)",
    "DFS first",
    "fixed: certified (schedules, s)",
    "false passes",
    "false failures",
]


def unmodified_rows(rows: dict[str, dict[str, Any]]) -> list[list[str]]:
    out = []
    for name, r in rows.items():
        cert = r["certificate"]
        out.append(
            [
                name + (" (deadlock)" if r["kind"] == "deadlock" else ""),
                f"{_num(r['random']['median'])} ({_num(r['random']['max'])})",
                f"{_num(r['pct']['median'])} ({_num(r['pct']['max'])})",
                _num(r["dfs"]["first"]),
                f"{'yes' if cert['certified'] else 'NO'} "
                f"({cert['schedules']:,}, {cert['seconds']:g})",
                str(r["false_passes"]),
                str(r["false_failures"]),
            ]
        )
    return out


def unmodified_md(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "## Unmodified code",
        "",
        "Ordinary threaded Python (plain `threading`, `queue`, `concurrent.futures`, "
        "`from x import y` imports, no markers), checked with the defaults "
        "(`stress/test_unmodified.py`). Schedules to the first failure over 10 seeds "
        "(random and PCT: up to 2,000 schedules a seed); DFS: its first failing schedule; "
        "the fixed twin certified by `check_dfs` (bound 2) and passing 300 random and 300 "
        "PCT schedules. False passes and false failures must be 0.",
        "",
        "| " + " | ".join(UNMODIFIED_HEAD) + " |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in unmodified_rows(rows)]
    return "\n".join(lines)


def unmodified_text(rows: dict[str, dict[str, Any]]) -> str:
    table = [UNMODIFIED_HEAD, *unmodified_rows(rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(UNMODIFIED_HEAD))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table
    )
