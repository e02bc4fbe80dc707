"""A module with no scheduling points: only settrace mode can interleave it."""

from __future__ import annotations

from typing import Any


def increment(box: dict[str, Any]) -> None:
    value = box["n"]
    box["n"] = value + 1
