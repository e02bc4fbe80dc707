"""Outcome tables in the manner of jcstress: every observed outcome, counted and classified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ACCEPTABLE", "FORBIDDEN", "INTERESTING", "Outcome", "OutcomeTable"]

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


class OutcomeTable:
    """Counts of observed outcomes per property, with their jcstress classification.

    Example:
        >>> t = OutcomeTable()
        >>> t.add({"ordering": "in order"}); t.add({"ordering": "misplaced"})
        >>> t.count("ordering", "misplaced"), t.forbidden()
        (1, [('ordering', 'misplaced', 1)])
    """

    def __init__(self, properties: dict[str, list[Outcome]] | None = None) -> None:
        if properties is None:
            # Each property declares its rows beside its check; the table shows them all,
            # observed or not, as jcstress does.
            from ._properties import PROPERTIES

            properties = {name: list(p.outcomes) for name, p in PROPERTIES.items()}
        self.properties = properties
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
