"""The scenario model: one batch to run, and the ways scenarios are drawn.

A :class:`Scenario` is the items, how many attempts of each fail, and the batch config.
:func:`draw_scenario` draws one from five families (swarm testing), :func:`scenarios` is
the Hypothesis strategy that shrinks towards the simplest batch, and
:func:`default_dfs_scenarios` are the small batches ``check_dfs`` certifies.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from typing import Any, Union

__all__ = [
    "ITEM_NAMES",
    "NODE_ID",
    "Scenario",
    "default_dfs_scenarios",
    "draw_scenario",
    "scenarios",
]

#: The batch's node id: where its output goes, and its items' namespace.
NODE_ID = "probe"
ITEM_NAMES = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Scenario:
    """One batch to run: its items, which attempts fail, and the config.

    ``fail[i]`` is how many attempts of item ``i`` fail before one succeeds (an item with
    ``fail[i] >= max_retries`` fails for good).

    Example:
        >>> s = Scenario(items=("a", "b"), fail=(0, 1), max_retries=2)
        >>> Scenario.from_json(s.to_json()) == s, s.config()["max_retries"]
        (True, 2)
    """

    items: tuple[str, ...]
    fail: tuple[int, ...]
    parallel: bool = True
    max_concurrent: int = 2
    max_retries: int = 1
    error_handling: str = "continue"
    call_log: str = "lock"

    def __post_init__(self) -> None:
        if len(self.items) != len(self.fail):
            raise ValueError(f"items={self.items!r} and fail={self.fail!r} differ in length")

    def config(self) -> dict[str, Any]:
        return {
            "items": "${work}",
            "parallel": self.parallel,
            "max_concurrent": self.max_concurrent,
            "max_retries": self.max_retries,
            "error_handling": self.error_handling,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: Union[str, dict[str, Any]]) -> Scenario:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        data["items"] = tuple(data["items"])
        data["fail"] = tuple(data["fail"])
        return cls(**data)


def draw_scenario(rng: random.Random, *, max_items: int = 4, max_retries: int = 3) -> Scenario:
    """A random scenario from one of five families (swarm testing), ``fail_fast`` twice as
    likely as each other (its races need two failures to overlap).

    - ``mixed``: any config; about one item in three fails for good, one in six once;
    - ``retries``: transient failures only (every item succeeds within ``max_retries``);
    - ``fail_fast``: at least two items that fail for good among the first workers' items;
    - ``fail_fast_long``: more items than two per worker, one failing early;
    - ``wide``: the most items, no failures, continue mode.

    Nine in ten are parallel; workers are 2-3 (1 in the ``mixed`` family now and then);
    both call-log modes are equally likely.

    Example:
        >>> s = draw_scenario(random.Random(1))
        >>> 2 <= len(s.items) <= 6 and len(s.fail) == len(s.items)
        True
    """
    family = rng.choice(["mixed", "retries", "fail_fast", "fail_fast", "fail_fast_long", "wide"])
    n = max_items if family == "wide" else rng.randint(2, max_items)
    retries_cap = max_retries
    max_retries = min(retries_cap, rng.choice([1, 2, 2, 3]))
    cap = rng.randint(2, max(2, min(3, n)))
    handling = rng.choice(["continue", "fail_fast"])
    if family == "mixed":
        fail = [rng.choice([0, 0, 0, 0, 1, max_retries, max_retries]) for _ in range(n)]
        if rng.random() < 0.15:
            cap = 1
    elif family == "retries":
        max_retries = min(retries_cap, rng.choice([2, 3]))
        fail = [rng.randint(0, max_retries - 1) for _ in range(n)]
    elif family == "fail_fast":
        handling = "fail_fast"
        fail = [rng.choice([0, max_retries]) for _ in range(n)]
        for i in rng.sample(range(min(cap, n)), 2):
            fail[i] = max_retries
    elif family == "fail_fast_long":
        # More items than the window of submitted futures (two per worker), so that
        # work is still to be submitted when the first failure is seen.
        handling = "fail_fast"
        cap = rng.randint(1, 2)
        n = 2 * cap + rng.randint(1, 2)
        fail = [0] * n
        fail[rng.randrange(2 * cap)] = max_retries
    else:
        handling = "continue"
        fail = [0] * n
    return Scenario(
        items=tuple(ITEM_NAMES[:n]),
        fail=tuple(fail),
        parallel=rng.random() < 0.9,
        max_concurrent=cap,
        max_retries=max_retries,
        error_handling=handling,
        call_log=rng.choice(["lock", "gil"]),
    )


def default_dfs_scenarios() -> list[Scenario]:
    """The small configurations ``check_dfs`` certifies: 2 workers, 2 or 3 items.

    Between them they exercise retries, fail_fast with one failure, with two failures
    racing to be seen first, and with items left to submit after the failure (one worker,
    four items), continue with a failure, and both call-log modes.
    """
    return [
        Scenario(
            items=("a", "b"),
            fail=(1, 0),
            max_concurrent=2,
            max_retries=2,
            error_handling="continue",
            call_log="lock",
        ),
        Scenario(
            items=("a", "b"),
            fail=(2, 1),
            max_concurrent=2,
            max_retries=2,
            error_handling="fail_fast",
            call_log="gil",
        ),
        Scenario(
            items=("a", "b", "c"),
            fail=(0, 1, 0),
            max_concurrent=2,
            max_retries=2,
            error_handling="continue",
            call_log="gil",
        ),
        Scenario(
            items=("a", "b", "c"),
            fail=(0, 1, 0),
            max_concurrent=2,
            max_retries=1,
            error_handling="fail_fast",
            call_log="lock",
        ),
        Scenario(
            items=("a", "b", "c", "d"),
            fail=(1, 0, 0, 0),
            max_concurrent=1,
            max_retries=1,
            error_handling="fail_fast",
            call_log="lock",
        ),
        Scenario(
            items=("a", "b", "c"),
            fail=(1, 1, 0),
            max_concurrent=2,
            max_retries=1,
            error_handling="fail_fast",
            call_log="gil",
        ),
    ]


def scenarios(*, max_items: int = 4) -> Any:
    """Hypothesis strategy for :class:`Scenario`, shrinking towards the simplest batch.

    Shrinks towards two items, no failures, ``max_retries=1``, one worker, parallel,
    ``continue`` and the ``lock`` call log: a shrunk counterexample keeps only the
    features its failure needs. Hypothesis is imported only when this is called.

    Example:
        >>> from hypothesis import find
        >>> find(scenarios(), lambda s: True).items
        ('a', 'b')
    """
    from ._hypothesis import require_hypothesis

    require_hypothesis("scenarios()")
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> Scenario:
        n = draw(st.integers(2, max_items))
        max_retries = draw(st.integers(1, 3))
        return Scenario(
            items=tuple(ITEM_NAMES[:n]),
            fail=tuple(draw(st.integers(0, max_retries)) for _ in range(n)),
            parallel=not draw(st.booleans()),
            max_concurrent=draw(st.integers(1, 3)),
            max_retries=max_retries,
            error_handling=draw(st.sampled_from(["continue", "fail_fast"])),
            call_log=draw(st.sampled_from(["lock", "gil"])),
        )

    return build()
