"""pytest plugin for parabatch (registered through the ``pytest11`` entry point ``parabatch``).

It gives every pytest session where parabatch is installed:

- the fixture ``verify_batch_node``: a callable ``(factory, **kwargs) -> VerifyReport`` that
  runs :func:`parabatch.testing.verify_batch_node` and, when a FORBIDDEN outcome was seen,
  fails the test with the outcome table and the first counterexample with the line that
  replays it. A passing test means no FORBIDDEN outcome in the schedules run; it does
  not prove the subject correct.
- the marker ``@pytest.mark.parabatch_verify(**kwargs)``: keyword defaults for that fixture
  (``budget``, ``strategy``, ``seed`` or any other argument of ``verify_batch_node``).
  On a test, a class or a module (``pytestmark``); the closest marker wins, and arguments
  given to the call win over every marker. Registered in ``pytest_configure``, so
  ``--strict-markers`` accepts it.

Example, a test module of your project::

    import pytest

    from mypkg import MyBatchNode

    pytestmark = pytest.mark.parabatch_verify(budget=300, seed=1)

    @pytest.mark.parabatch_verify(strategy="pct")
    def test_my_batch_node_has_no_races(verify_batch_node):
        report = verify_batch_node(MyBatchNode)  # pct, budget=300, seed=1
        assert report.schedules == 300

    def test_with_its_own_budget(verify_batch_node):
        verify_batch_node(MyBatchNode, budget=50)  # random, budget=50, seed=1

Deliberately thin: the work is :mod:`parabatch.testing`'s, which imports no pytest. The
plugin defines no hooks beyond ``pytest_configure`` and does nothing until the fixture is
called. Loading it imports its parent packages, ``parabatch`` and ``parabatch.testing``
(not Hypothesis).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pytest

if TYPE_CHECKING:
    from parabatch.testing import VerifyReport

__all__ = ["MARKER", "pytest_configure", "verify_batch_node"]

#: The marker's name: ``@pytest.mark.parabatch_verify(budget=..., strategy=..., seed=...)``.
MARKER = "parabatch_verify"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): keyword defaults (budget=, strategy=, seed=, ...) for the "
        "verify_batch_node fixture of parabatch",
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


@pytest.fixture
def verify_batch_node(request: pytest.FixtureRequest) -> Callable[..., VerifyReport]:
    """``verify_batch_node(factory, **kwargs)``: verify, and fail the test on FORBIDDEN.

    Returns the :class:`parabatch.testing.VerifyReport` when ``report.ok``. Keyword
    defaults come from ``@pytest.mark.parabatch_verify(...)``; see the module docstring.
    """
    defaults = _marker_defaults(request.node)

    def verify(factory: Callable[..., Any], **kwargs: Any) -> VerifyReport:
        from parabatch.testing import verify_batch_node as verify_api

        report = verify_api(factory, **{**defaults, **kwargs})
        if not report.ok:
            pytest.fail(report.format(), pytrace=False)
        return report

    return verify
