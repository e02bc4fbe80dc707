"""The isolation and copies-alive properties: each flags its negative controls, and only them.

Also the declaration of the properties themselves: each lists its outcome rows beside its
check, and the outcome table is made of exactly those rows.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from parabatch import PflowBatchNode
from parabatch.testing import Scenario, replay_scenario, verify_batch_node
from parabatch.testing._outcomes import ACCEPTABLE, FORBIDDEN, OutcomeTable
from parabatch.testing._probe import run_scenario
from parabatch.testing._properties import PROPERTIES, View, classify
from parabatch.testing.broken import BROKEN_SUBJECTS, KeepsCopies, _BrokenChain, _Chain

# Batches in which no item fails: no exception, so no traceback, holds a copy of the chain.
NO_FAILURES = [
    Scenario(items=("a", "b", "c", "d"), fail=(0, 0, 0, 0), max_concurrent=2),
    Scenario(items=("a", "b", "c"), fail=(0, 0, 0), max_concurrent=1, call_log="gil"),
    Scenario(items=("a", "b", "c", "d", "e"), fail=(0,) * 5, max_concurrent=3),
    Scenario(items=("a", "b", "c"), fail=(0, 0, 0), parallel=False),
]


# ---------------------------------------------------------------------------------------------
# Declared beside their checks


def test_every_property_declares_an_acceptable_and_a_forbidden_outcome() -> None:
    for name, p in PROPERTIES.items():
        expects = {o.expect for o in p.outcomes}
        assert {ACCEPTABLE, FORBIDDEN} <= expects, name
        assert all(o.prop == name for o in p.outcomes)
        assert len({o.key for o in p.outcomes}) == len(p.outcomes), name


def test_the_outcome_table_is_made_of_the_declared_rows_in_order() -> None:
    rows = [(prop, key) for prop, key, _, _, _ in OutcomeTable().rows()]
    declared = [(p.name, o.key) for p in PROPERTIES.values() for o in p.outcomes]
    assert rows == declared
    assert [name for name in PROPERTIES][-1] == "harness"
    assert {"isolation", "copies"} <= set(PROPERTIES)


def test_a_check_that_returns_an_undeclared_outcome_is_refused() -> None:
    run = run_scenario(PflowBatchNode, Scenario(items=("a", "b"), fail=(0, 0)))
    p = PROPERTIES["ordering"]
    broken = type(p)(p.name, p.outcomes, lambda v: ("sideways", ""))
    with pytest.raises(KeyError, match="ordering='sideways'"):
        broken.classify(View(run))
    silent = type(p)(p.name, p.outcomes, lambda v: ("misplaced", ""))
    with pytest.raises(AssertionError, match="say why"):
        silent.classify(View(run))


# ---------------------------------------------------------------------------------------------
# Negative controls: each is caught, by the property it breaks


# The five controls of these two properties (broken.py's others break the rest).
CONTROLS = {
    name: cls
    for name, cls in BROKEN_SUBJECTS.items()
    if getattr(cls, "catches", "") in ("isolation", "copies")
}


def test_each_property_has_its_controls() -> None:
    assert sorted(CONTROLS) == [
        "chain_per_worker",
        "keeps_copies",
        "keeps_tracebacks",
        "namespace_per_item",
        "store_per_worker",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("chain_per_worker", "foreign chain"),
        ("store_per_worker", "foreign store"),
        ("namespace_per_item", "stale namespace"),
    ],
)
def test_each_isolation_control_gives_its_own_outcome(name: str, outcome: str) -> None:
    report = verify_batch_node(CONTROLS[name], budget=150, seed=0)
    assert report.table.count("isolation", outcome) > 0, report.table.format()


def test_chain_per_worker_leaks_to_a_later_item_on_the_same_worker() -> None:
    # One worker, two items: the second runs on the thread, and the copy, of the first.
    s = Scenario(items=("a", "b"), fail=(0, 0), max_concurrent=1)
    outcomes, why = classify(run_scenario(BROKEN_SUBJECTS["chain_per_worker"], s))
    assert outcomes["isolation"] == "foreign chain", why
    assert "item 'b' found ['a'] written on its chain" in " ".join(why)


def test_keeps_copies_is_caught_at_the_moment_copies_pass_the_cap() -> None:
    s = Scenario(items=("a", "b", "c"), fail=(0, 0, 0), max_concurrent=2)
    outcomes, why = classify(run_scenario(KeepsCopies, s))
    assert outcomes["copies"] == "over cap", why
    assert re.search(r"\d copies of the chain alive when copy \d was made", why[0]), why


# ---------------------------------------------------------------------------------------------
# No false verdict


def test_the_core_is_isolated_and_within_the_cap_when_nothing_fails() -> None:
    report = verify_batch_node(PflowBatchNode, budget=120, seed=3, scenarios=NO_FAILURES)
    assert report.ok, report.format()
    assert report.table.count("copies", "within cap") == 120
    # Sequential mode runs every item on the chain itself, by design: reported, not failed.
    assert report.table.count("isolation", "sequential: one chain") > 0
    assert report.table.count("isolation", "isolated") > 0


class _Cycles(_Chain):
    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        # Garbage, not a leak: a cycle that holds this copy, unreachable once _run returns.
        cycle: list[Any] = [self]
        cycle.append(cycle)
        return self.chain._run(shared)


class LeavesCycles(_BrokenChain):
    """Correct, but every copy ends in a reference cycle that only the collector frees."""

    chain_class = _Cycles


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.disable()  # so the cycles are still there when copies are counted
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("collector_off")
def test_copies_kept_only_by_unreachable_cycles_do_not_count() -> None:
    report = verify_batch_node(LeavesCycles, budget=60, seed=0, scenarios=NO_FAILURES)
    assert report.ok, report.format()
    assert report.table.count("copies", "within cap") == 60


@pytest.mark.usefixtures("collector_off")
def test_copies_kept_alive_count_even_with_cycles_around() -> None:
    report = verify_batch_node(KeepsCopies, budget=20, seed=0, scenarios=NO_FAILURES[:1])
    assert not report.ok
    assert report.table.count("copies", "over cap") == 20


def test_a_copies_counterexample_replays_the_same_every_time() -> None:
    # Counted by reachability (after collecting cycles), so a schedule decides the count.
    report = verify_batch_node(BROKEN_SUBJECTS["keeps_tracebacks"], budget=100, seed=0)
    assert report.counterexamples, report.format()
    ce = report.counterexamples[0]
    assert "FORBIDDEN copies" in ce.message
    ref = "parabatch.testing.broken:KeepsTracebacks"
    for _ in range(10):
        again = replay_scenario(ref, ce.scenario, ce.schedule, raise_on_failure=False)
        assert again.failure is not None
        assert (again.failure.message, again.failure.trace) == (ce.message, ce.trace)
