"""Outcome tables in the manner of jcstress: every observed outcome, counted and classified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["ACCEPTABLE", "FORBIDDEN", "INTERESTING", "Outcome", "OutcomeTable", "PROPERTIES"]

ACCEPTABLE = "ACCEPTABLE"
INTERESTING = "INTERESTING"
FORBIDDEN = "FORBIDDEN"


@dataclass(frozen=True)
class Outcome:
    """One possible outcome of one property: its key, its expectation, what it means."""

    prop: str
    key: str
    expect: str
    meaning: str


def _outcomes(prop: str, rows: Iterable[tuple[str, str, str]]) -> list[Outcome]:
    return [Outcome(prop, key, expect, meaning) for key, expect, meaning in rows]


#: Every property the stress suites check, with every outcome it can report, in order.
#: A FORBIDDEN outcome that was never observed still has its row, with a count of 0, as in
#: jcstress: the table shows what was looked for, not only what was seen.
PROPERTIES: dict[str, list[Outcome]] = {
    "ordering": _outcomes(
        "ordering",
        [
            ("in order", ACCEPTABLE, "results[i] belongs to items[i]"),
            ("misplaced", FORBIDDEN, "a result sits at another item's index"),
        ],
    ),
    "params": _outcomes(
        "params",
        [
            ("own", ACCEPTABLE, "every exec saw its own item's params, before and after its call"),
            ("foreign", FORBIDDEN, "an exec saw another item's params"),
        ],
    ),
    "retry": _outcomes(
        "retry",
        [
            ("exact", ACCEPTABLE, "each item that ran had min(failures + 1, max_retries) attempts"),
            ("swallowed", FORBIDDEN, "an item failed every attempt yet counted as a success"),
            ("too few", FORBIDDEN, "an item gave up or fell back before its last attempt"),
            ("too many", FORBIDDEN, "an item was attempted more than it should be"),
        ],
    ),
    "exactly_once": _outcomes(
        "exactly_once",
        [
            ("all once", ACCEPTABLE, "every item appears once, in results or in errors"),
            (
                "aborted",
                INTERESTING,
                "fail_fast stopped: items that ran appear once, the rest never started",
            ),
            (
                "lost or duplicated",
                FORBIDDEN,
                "an item is missing, twice, or both result and error",
            ),
        ],
    ),
    "calls": _outcomes(
        "calls",
        [
            ("lock: exact", ACCEPTABLE, "CallLog: one usage and one node record per success"),
            ("gil: exact", ACCEPTABLE, "plain list: one usage and one node record per success"),
            ("lock: wrong", FORBIDDEN, "CallLog: a record lost, duplicated or mistagged"),
            ("gil: wrong", FORBIDDEN, "plain list: a record lost, duplicated or mistagged"),
        ],
    ),
    "bound": _outcomes(
        "bound",
        [
            ("below cap", ACCEPTABLE, "fewer than max_concurrent items were ever in flight"),
            ("at cap", ACCEPTABLE, "max_concurrent items were in flight at once"),
            ("over cap", FORBIDDEN, "more than max_concurrent items were in flight"),
        ],
    ),
    "fail_fast": _outcomes(
        "fail_fast",
        [
            ("not exercised", ACCEPTABLE, "continue mode, or no item failed"),
            (
                "stopped",
                ACCEPTABLE,
                "lowest-index failure raised, nothing submitted after the "
                "first failure was seen, partial output written",
            ),
            ("wrong error", FORBIDDEN, "raised another item's error than the lowest-index failure"),
            ("no error", FORBIDDEN, "an item failed but the batch raised nothing"),
            ("kept submitting", FORBIDDEN, "work was submitted after a failure was seen"),
            ("output lost", FORBIDDEN, "the partial output was not written before raising"),
        ],
    ),
    "harness": _outcomes(
        "harness",
        [
            ("completed", ACCEPTABLE, "the run finished and was classified"),
            ("unexpected exception", FORBIDDEN, "the subject raised something no item raised"),
            (
                "aborted by the scheduler",
                FORBIDDEN,
                "deadlock, blocking outside the scheduler, a "
                "thread started behind its back, livelock",
            ),
        ],
    ),
}


class OutcomeTable:
    """Counts of observed outcomes per property, with their jcstress classification.

    Example:
        >>> t = OutcomeTable()
        >>> t.add({"ordering": "in order"}); t.add({"ordering": "misplaced"})
        >>> t.count("ordering", "misplaced"), t.forbidden()
        (1, [('ordering', 'misplaced', 1)])
    """

    def __init__(self, properties: dict[str, list[Outcome]] | None = None) -> None:
        self.properties = properties if properties is not None else PROPERTIES
        self.counts: dict[tuple[str, str], int] = {
            (o.prop, o.key): 0 for rows in self.properties.values() for o in rows
        }

    def add(self, outcomes: dict[str, str], times: int = 1) -> None:
        """Count one run's outcome for each property it classified."""
        for prop, key in outcomes.items():
            if (prop, key) not in self.counts:
                raise KeyError(f"unknown outcome {prop}={key!r}")
            self.counts[prop, key] += times

    def merge(self, other: OutcomeTable) -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def count(self, prop: str, key: str) -> int:
        return self.counts.get((prop, key), 0)

    def expect(self, prop: str, key: str) -> str:
        return next(o.expect for o in self.properties[prop] if o.key == key)

    def forbidden(self) -> list[tuple[str, str, int]]:
        """The FORBIDDEN outcomes observed at least once: (property, outcome, count)."""
        return [
            (o.prop, o.key, self.counts[o.prop, o.key])
            for rows in self.properties.values()
            for o in rows
            if o.expect == FORBIDDEN and self.counts[o.prop, o.key]
        ]

    def rows(self) -> list[tuple[str, str, int, str, str]]:
        """(property, outcome, count, expectation, meaning), in the table's order."""
        return [
            (o.prop, o.key, self.counts[o.prop, o.key], o.expect, o.meaning)
            for rows in self.properties.values()
            for o in rows
        ]

    def format(self, *, markdown: bool = False) -> str:
        """The table as text (aligned columns) or as a Markdown table."""
        rows = self.rows()
        if markdown:
            lines = ["| property | outcome | count | expect | meaning |", "|---|---|---:|---|---|"]
            for prop, key, n, expect, meaning in rows:
                mark = f"**{expect}**" if expect == FORBIDDEN and n else expect
                lines.append(f"| {prop} | {key} | {n:,} | {mark} | {meaning} |")
            return "\n".join(lines)
        w_prop = max(len(r[0]) for r in rows)
        w_key = max(len(r[1]) for r in rows)
        w_n = max(len(f"{r[2]:,}") for r in rows)
        out = []
        for prop, key, n, expect, meaning in rows:
            flag = "  <-- observed" if expect == FORBIDDEN and n else ""
            out.append(
                f"  {prop:<{w_prop}}  {key:<{w_key}}  {n:>{w_n},}  {expect:<11}  {meaning}{flag}"
            )
        return "\n".join(out)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {"property": p, "outcome": k, "count": n, "expect": e, "meaning": m}
            for p, k, n, e, m in self.rows()
        ]
