"""A Hypothesis strategy for schedules: drawn up front as data, shrinking to fewer switches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._strategies import Schedule

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = ["require_hypothesis", "schedules"]

HYPOTHESIS_EXTRA = "pip install 'parabatch[hypothesis]'"


def require_hypothesis(caller: str) -> None:
    """Return if Hypothesis imports; else raise naming ``caller`` and the extra to install.

    Hypothesis is an optional dependency: the error says what to install rather than only
    that a module is missing.

    Example:
        >>> require_hypothesis("schedules()")  # installed: nothing to say
    """
    try:
        import hypothesis  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{caller} needs Hypothesis: {HYPOTHESIS_EXTRA}", name="hypothesis"
        ) from exc


def schedules(
    *, max_switches: int = 8, max_gap: int = 16, max_target: int = 3
) -> SearchStrategy[Schedule]:
    """Hypothesis strategy drawing a :class:`Schedule` for :func:`replay`.

    The whole schedule is drawn before the run, on the test's own thread (as Hypothesis
    requires): at most ``max_switches`` context switches, each a pair ``(gap, target)`` —
    run ``gap`` decisions (0..``max_gap``) without switching, then switch to the
    ``target``-th other runnable thread (1..``max_target``). The run consumes the pairs
    and then keeps the current thread. So a run is deterministic given its draw, and
    Hypothesis's shrinking — shorter lists first, then smaller numbers — means fewer
    context switches first, then earlier ones. Hypothesis is imported only when this is
    called.

    Example:
        >>> from hypothesis import given, settings
        >>> from parabatch.testing import replay, schedules, spawn
        >>> def fn():
        ...     out = []
        ...     for t in [spawn(out.append, 1), spawn(out.append, 2)]:
        ...         t.join()
        ...     assert sorted(out) == [1, 2]
        >>> @settings(max_examples=20, derandomize=True, database=None)
        ... @given(schedules())
        ... def test_fn(schedule):
        ...     replay(fn, schedule)
        >>> test_fn()
    """
    require_hypothesis("schedules()")
    from hypothesis import strategies as st

    for name, value, low in (
        ("max_switches", max_switches, 0),
        ("max_gap", max_gap, 0),
        ("max_target", max_target, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    pair = st.tuples(st.integers(0, max_gap), st.integers(1, max_target))
    return st.lists(pair, max_size=max_switches).map(Schedule)
