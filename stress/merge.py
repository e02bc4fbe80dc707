"""Merge the stress reports of several interpreters into one table with an interpreter column.

    python stress/merge.py reports/stress.json reports/stress-py313t.json \
        reports/stress-pypy3.json --md reports/stress-interpreters.md

Each input is the JSON a stress run writes (``PARABATCH_STRESS_REPORT`` names it). The
table gives, per interpreter, the core's runs and FORBIDDEN outcomes for every strategy that
ran there, and each broken subject's detection on free-running threads (no scheduler).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def merge(reports: list[dict[str, Any]]) -> str:
    lines = [
        "# parabatch stress, by interpreter",
        "",
        "## The core",
        "",
        "| interpreter | run | schedules | FORBIDDEN outcomes |",
        "|---|---|---:|---|",
    ]
    for r in reports:
        for label, core in r.get("core", {}).items():
            seen = ", ".join(f"{p}={k} ({n})" for p, k, n in core.get("forbidden") or [])
            lines.append(
                f"| {r['interpreter']} | {label} | {core['schedules']:,} | {seen or 'none'} |"
            )
    subjects = sorted({name for r in reports for name in r.get("controls", {})})
    lines += [
        "",
        "## Broken subjects on free-running threads (runs with a FORBIDDEN outcome / runs)",
        "",
        "| subject | " + " | ".join(r["interpreter"] for r in reports) + " |",
        "|---|" + "---:|" * len(reports),
    ]
    for name in subjects:
        cells = []
        for r in reports:
            c = r.get("controls", {}).get(name, {})
            free, yielding = c.get("stress"), c.get("stress_yield")
            if not free:
                cells.append("—")
                continue
            cell = f"{free['forbidden']}/{free['runs']}"
            if yielding:
                cell += f" ({yielding['forbidden']}/{yielding['runs']} with sleep(0))"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--md", type=Path, help="write the table here too")
    args = parser.parse_args(argv)
    found = [p for p in args.reports if p.exists()]
    if not found:
        print("no stress report to merge", file=sys.stderr)
        return 2
    text = merge([json.loads(p.read_text()) for p in found])
    if args.md:
        args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
