"""pytest plugin for parabatch (registered through the ``pytest11`` entry point ``parabatch``).

A top-level module on purpose, as Hypothesis keeps ``_hypothesis_pytestplugin``: pytest
loads it in every session of every project where parabatch is installed, so loading it
imports nothing but pytest (already loaded). parabatch, its scheduler and Hypothesis are
imported when the fixture is first called. Switch it off with ``-p no:parabatch``.

It gives:

- the fixture ``verify_batch_node``: a callable ``(factory, **kwargs) -> VerifyReport`` that
  runs :func:`parabatch.testing.verify_batch_node` and, when a FORBIDDEN outcome was seen,
  fails the test with the outcome table and a counterexample with the line that replays
  it. With Hypothesis installed the counterexample is first shrunk
  (:func:`parabatch.testing.shrink`: the fewest items, then the fewest context switches);
  ``shrink=False`` keeps the first one found, ``shrink=N`` gives Hypothesis N examples
  (default 1000). Without Hypothesis the failure says how to get a shrunk one. A passing
  test means no FORBIDDEN outcome in the schedules run; it does not prove the subject
  correct.
- the marker ``@pytest.mark.parabatch_verify(**kwargs)``: keyword defaults for that fixture
  (``budget``, ``strategy``, ``seed``, ``shrink`` or any other argument of
  ``verify_batch_node``). On a test, a class or a module (``pytestmark``); the closest
  marker wins, and arguments given to the call win over every marker. Registered in
  ``pytest_configure``, so ``--strict-markers`` accepts it.

Example, a test module of your project::

    import pytest

    from mypkg import MyBatchNode

    pytestmark = pytest.mark.parabatch_verify(budget=300, seed=1)

    @pytest.mark.parabatch_verify(strategy="pct")
    def test_my_batch_node_has_no_races(verify_batch_node):
        report = verify_batch_node(MyBatchNode)  # pct, budget=300, seed=1
        assert report.schedules == 300

    def test_with_its_own_budget(verify_batch_node):
        verify_batch_node(MyBatchNode, budget=50, shrink=False)  # random, budget=50, seed=1
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Union

import pytest

if TYPE_CHECKING:
    from parabatch.testing import Counterexample, VerifyReport

__all__ = ["HYPOTHESIS_EXTRA", "MARKER", "pytest_configure", "verify_batch_node"]

#: The marker's name: ``@pytest.mark.parabatch_verify(budget=..., strategy=..., seed=...)``.
MARKER = "parabatch_verify"

#: What to install for shrinking.
HYPOTHESIS_EXTRA = "pip install 'parabatch[hypothesis]'"

#: Hypothesis examples for shrinking when ``shrink=True`` (``shrink()``'s own default).
SHRINK_BUDGET = 1000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): keyword defaults (budget=, strategy=, seed=, shrink=, ...) for "
        "the verify_batch_node fixture of parabatch",
    )


def _marker_defaults(node: pytest.Item) -> dict[str, Any]:
    """The keyword arguments of every ``parabatch_verify`` marker, the closest winning."""
    defaults: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers(MARKER))):  # farthest first
        if mark.args:
            raise TypeError(
                f"@pytest.mark.{MARKER} takes keyword arguments only, got args={mark.args!r}; "
                f"write e.g. @pytest.mark.{MARKER}(budget=200)"
            )
        defaults.update(mark.kwargs)
    return defaults


def _shrink_budget(value: Union[bool, int]) -> int:
    """``shrink=`` as a number of Hypothesis examples; 0 means do not shrink."""
    if value is True:
        return SHRINK_BUDGET
    if value is False:
        return 0
    if isinstance(value, int) and value >= 1:
        return value
    raise ValueError(f"shrink={value!r}: must be True, False or a number of examples >= 1")


def _hypothesis_missing() -> bool:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        return True
    return False


def _shape(ce: Counterexample) -> str:
    return f"{len(ce.scenario.items)} items, {ce.preemptions} preemptions"


def _failure_text(
    report: VerifyReport, factory: Callable[..., Any], budget: int, kwargs: dict[str, Any]
) -> str:
    """The report with its counterexample shrunk when Hypothesis is there and ``budget``."""
    first = report.counterexamples[0] if report.counterexamples else None
    if first is None or budget == 0:
        return report.format()
    if _hypothesis_missing():
        return (
            report.format()
            + "\nnot shrunk: Hypothesis is not installed. With it "
            + f"({HYPOTHESIS_EXTRA}) this failure shows the counterexample shrunk to the "
            + "fewest items and context switches; shrink=False hides this note."
        )
    from parabatch.testing import shrink

    try:
        shrunk = shrink(
            factory, budget=budget, seed=kwargs.get("seed") or 0, trace=kwargs.get("trace", True)
        )
    except Exception as exc:  # the verdict stands on the report; shrinking only presents it
        first_line = (str(exc).splitlines() or [""])[0]
        return report.format() + f"\nnot shrunk: shrink() raised {type(exc).__name__}: {first_line}"
    # shrink() draws scenarios of up to 4 items and 3 attempts: one outside the bounds the
    # test asked for is not a counterexample of that test.
    max_items, max_retries = kwargs.get("max_items", 4), kwargs.get("max_retries", 3)
    if (
        shrunk is None
        or kwargs.get("scenarios") is not None
        or len(shrunk.scenario.items) > max_items
        or shrunk.scenario.max_retries > max_retries
    ):
        why = "found none" if shrunk is None else "found one outside the test's bounds"
        return report.format() + f"\nnot shrunk: Hypothesis ({budget} examples) {why}."
    head = dataclasses.replace(report, counterexamples=[]).format()
    return (
        f"{head}\ncounterexample, shrunk by Hypothesis from the first one found "
        f"({_shape(first)} -> {_shape(shrunk)}):\n{shrunk}"
    )


@pytest.fixture
def verify_batch_node(request: pytest.FixtureRequest) -> Callable[..., VerifyReport]:
    """``verify_batch_node(factory, **kwargs)``: verify, and fail the test on FORBIDDEN.

    Returns the :class:`parabatch.testing.VerifyReport` when ``report.ok``. Keyword
    defaults come from ``@pytest.mark.parabatch_verify(...)``; ``shrink`` is the plugin's
    own (see the module docstring), every other keyword goes to
    :func:`parabatch.testing.verify_batch_node`.
    """
    defaults = _marker_defaults(request.node)

    def verify(factory: Callable[..., Any], **kwargs: Any) -> VerifyReport:
        from parabatch.testing import verify_batch_node as verify_api

        merged = {**defaults, **kwargs}
        budget = _shrink_budget(merged.pop("shrink", True))
        report = verify_api(factory, **merged)
        if not report.ok:
            pytest.fail(_failure_text(report, factory, budget, merged), pytrace=False)
        return report

    return verify
