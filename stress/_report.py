"""The stress report: what every suite measured, written as reports/stress.{md,json}.

The suites record into one :class:`StressReport` (``add_core``, ``control``,
``certificates``); it renders the Markdown and JSON files and the console summary. Console
tables are at most :data:`WIDTH` columns wide with no trailing spaces: a table too wide for
that continues below, its first column repeated. Scenarios get short names (``S1``, ...) in
tables and their JSON once, in a details section.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

from parabatch.testing import OutcomeTable
from parabatch.testing._outcomes import FORBIDDEN

#: The console summary's width limit.
WIDTH = 120


def text_table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    keep: int = 1,
    width: int = WIDTH,
    indent: str = "  ",
) -> str:
    """An aligned text table at most ``width`` columns wide, no trailing spaces.

    Columns ``right`` are right-aligned. When all columns do not fit, the table is cut into
    blocks of columns, each repeating the first ``keep`` (the row keys); a single cell wider
    than the line is cut with "...".

    Example:
        >>> print(text_table(["name", "n"], [["a", "1"], ["bb", "22"]], right=[1]))
          name   n
          a      1
          bb    22
    """
    grid = [list(head), *[list(r) for r in rows]]
    room = width - len(indent)
    keys = list(range(min(keep, len(head))))
    for i in keys:
        _cut(grid, i, room // 2)
    key_width = sum(max(len(r[i]) for r in grid) + 2 for i in keys)
    for i in range(len(keys), len(head)):
        _cut(grid, i, room - key_width)
    widths = [max(len(r[i]) for r in grid) for i in range(len(head))]
    blocks: list[list[int]] = []
    current = list(keys)
    for i in range(len(keys), len(head)):
        used = sum(widths[j] for j in current) + 2 * (len(current) - 1)
        if len(current) > len(keys) and used + 2 + widths[i] > room:
            blocks.append(current)
            current = [*keys, i]
        else:
            current.append(i)
    blocks.append(current)
    out: list[str] = []
    for block in blocks:
        if out:
            out.append("")
        for row in grid:
            cells = [
                row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i]) for i in block
            ]
            out.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(out)


def _cut(grid: list[list[str]], column: int, room: int) -> None:
    for row in grid:
        if len(row[column]) > room:
            row[column] = row[column][: max(room - 3, 1)] + "..."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def scenario_summary(scenario: str) -> str:
    """A certificate's scenario in a few words: its prefix, items, workers, mode, attempts.

    Example:
        >>> scenario_summary('group {"items":["a","b"],"fail":[1,0],"parallel":true,'
        ...     '"max_concurrent":2,"max_retries":2,"error_handling":"continue","call_log":"gil"}')
        'group: 2 items, 2 workers, continue, 2 attempts, fails [1,0], gil'
    """
    prefix, brace, rest = scenario.partition("{")
    try:
        s = json.loads(brace + rest)
        workers = s["max_concurrent"] if s.get("parallel", True) else 1
        summary = (
            f"{_count(len(s['items']), 'item')}, {_count(workers, 'worker')}, "
            f"{s['error_handling']}, {_count(s['max_retries'], 'attempt')}, "
            f"fails {json.dumps(s['fail'], separators=(',', ':'))}, {s['call_log']}"
        )
    except (ValueError, KeyError, TypeError):
        return scenario if len(scenario) <= 60 else scenario[:57] + "..."
    return f"{prefix.strip()}: {summary}" if prefix.strip() else summary


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
        rows = []
        for prop, key, _, expect, _ in first.rows():
            counts = [self.tables[label].count(prop, key) for label in labels]
            hot = expect == FORBIDDEN and any(counts)
            rows.append(
                [prop, key, expect + (" <-- SEEN" if hot else ""), *(f"{c:,}" for c in counts)]
            )
        right = range(3, 3 + len(labels))
        return text_table(["property", "outcome", "expect", *labels], rows, right=right, keep=3)

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

    #: The console's shorter headings for the same columns.
    CONTROL_HEAD_TEXT: ClassVar[list[str]] = [
        "subject",
        "must fail",
        "random",
        "median",
        "max",
        "PCT",
        "median",
        "DFS 1st",
        "free",
        "free+sleep0",
        "shrunk to",
    ]

    def controls_text(self) -> str:
        rows = self.controls_rows()
        for row, (_, c) in zip(rows, self.controls.items()):
            row[-1] = _shape(c.get("shrunk"), short=True)
        return text_table(self.CONTROL_HEAD_TEXT, rows, right=range(2, 10))

    def scenario_names(self) -> dict[str, str]:
        """Each distinct certificate scenario's short name, ``S1``, ``S2``, ... in order."""
        names: dict[str, str] = {}
        for c in self.certificates:
            names.setdefault(c["scenario"], f"S{len(names) + 1}")
        return names

    def certificates_text(self) -> str:
        names = self.scenario_names()
        rows = [
            [
                names[c["scenario"]],
                scenario_summary(c["scenario"]),
                str(c["bound"]),
                "lines" if c["traced"] else "points",
                f"{c['schedules']:,}",
                "yes" if c["exhausted"] else "NO",
                "ok" if c["ok"] else "FORBIDDEN",
            ]
            for c in self.certificates
        ]
        head = ["id", "scenario", "bound", "at", "schedules", "exhausted", "verdict"]
        return text_table(head, rows, right=[2, 4])

    def certificates_md(self) -> str:
        names = self.scenario_names()
        lines = [
            "| id | scenario | max preemptions | traced | schedules | exhausted | ok |",
            "|---|---|---:|---|---:|---|---|",
        ]
        for c in self.certificates:
            lines.append(
                f"| {names[c['scenario']]} | {scenario_summary(c['scenario'])} | {c['bound']} "
                f"| {c['traced']} | {c['schedules']:,} | {c['exhausted']} | {c['ok']} |"
            )
        return "\n".join(lines)

    def scenarios_md(self) -> str:
        """The details section: each short name with its scenario's JSON, to replay it."""
        lines = []
        for scenario, name in self.scenario_names().items():
            lines += [f"- **{name}**: `{scenario}`"]
        return "\n".join(lines) or "_no certificate recorded_"

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
            "### Scenarios",
            "",
            "The certificates' scenarios as `Scenario.from_json` reads them (a `group` prefix: "
            "certified on `ParallelGroupNode`).",
            "",
            self.scenarios_md(),
            "",
            "## Negative controls",
            "",
            "Each known-broken subject must be caught in every seed by the property it "
            "breaks (*must fail*). Random and PCT: one search per seed, at most 200 "
            "schedules each; median and max schedules until that property flags a run "
            "(another may flag one first). DFS: schedules until that property flags a run "
            "over the certificate scenarios. Free threads: share of runs showing a FORBIDDEN "
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
        """The console summary: at most :data:`WIDTH` columns, no trailing spaces."""
        parts = [
            f"parabatch stress report ({interpreter()}, scale {self.scale})",
            "core outcome table:",
            self.core_table_text(),
        ]
        if self.certificates:
            parts += [
                "certificates (check_dfs; scenario JSON: the report's Scenarios section):",
                self.certificates_text(),
            ]
        parts += ["negative controls:", self.controls_text()]
        if self.unmodified:
            parts += ["unmodified code:", unmodified_text(self.unmodified)]
        return "\n".join(line.rstrip() for part in parts for line in part.splitlines())

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


def _shape(d: Optional[dict[str, Any]], *, short: bool = False) -> str:
    if not d:
        return "—"
    s = d["scenario"]
    if short:
        return f"{len(s['items'])} items, {d['preemptions']} sw"
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
    return text_table(UNMODIFIED_HEAD, unmodified_rows(rows), right=[1, 2, 3, 4, 5, 6])
