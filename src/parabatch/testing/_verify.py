"""Verify any batch node: drawn scenarios, controlled schedules, an outcome table.

A *subject* is any callable with :class:`parabatch.PflowBatchNode`'s constructor
(``factory(inner_node, node_id, batch_config, *, executor=..., call_log=...)``). Each run
builds the real wrapper chain around an instrumented node (:mod:`._probe`), hands the
subject the controlled executor, runs one batch (:mod:`._scenario`) under a schedule, and
classifies what happened for every property (:mod:`._properties`). A FORBIDDEN outcome
fails the run, so the scheduler records its schedule and trace, and the report prints the
line that replays it (:mod:`._replay`). This module is the driver.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import random
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from ._check import _FAILURE_CLASSES, check_dfs, check_pct, check_random, check_stress, replay
from ._outcomes import OutcomeTable
from ._probe import Factory, PlannedFailure, Probe, RunRecord, run_scenario, young_heap
from ._properties import PROPERTIES, classify
from ._replay import importable_ref, scenario_line
from ._scenario import Scenario, default_dfs_scenarios, draw_scenario, scenarios
from ._trace import CheckResult

__all__ = [
    "PROPERTIES",
    "Counterexample",
    "PlannedFailure",
    "Probe",
    "RunRecord",
    "Scenario",
    "VerifyReport",
    "default_dfs_scenarios",
    "draw_scenario",
    "load_factory",
    "replay_scenario",
    "run_scenario",
    "scenarios",
    "shrink",
    "verify_batch_node",
]


def _checked(
    factory: Factory,
    scenario: Scenario,
    table: OutcomeTable,
    counter: list[int],
    *,
    moments: bool = True,
    fails_on: Optional[str] = None,
) -> Callable[[], None]:
    """The checked function for one scenario: run, classify, count, raise on FORBIDDEN.

    ``counter`` is [runs, FORBIDDEN runs, runs raised]. With ``fails_on``, only a run that
    property flags raises (and so stops a search, or becomes a counterexample); every
    FORBIDDEN outcome is still in the table.
    """
    flag = None if fails_on is None else fails_on + ":"

    def checked() -> None:
        run = run_scenario(factory, scenario, moments=moments)
        outcomes, why = classify(run)
        table.add(outcomes)
        counter[0] += 1
        if why:
            counter[1] += 1
            if flag is None or any(w.startswith(flag) for w in why):
                counter[2] += 1
                raise AssertionError("FORBIDDEN " + " | ".join(why))

    checked.__qualname__ = checked.__name__ = "checked_scenario"
    return checked


def load_factory(ref: str) -> Factory:
    """``"package.module:Name"`` -> the object, as the CLI and replay lines name it."""
    module, _, qualname = ref.partition(":")
    if not module or not qualname:
        raise ValueError(f"factory={ref!r}: expected 'package.module:Name'")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"factory={ref!r} is {type(obj).__name__}, not callable")
    return obj  # type: ignore[no-any-return]


# The per-item code every batch node built on the core runs on its workers: the unit that
# reads the run's store and stop flag and appends to its call log while other items do the
# same. The coordinator's bookkeeping (parabatch._runner) is not traced: it runs on the
# calling thread only, on objects no worker touches, and reaches the workers through
# submit and wait, which are scheduling points already.
_PER_ITEM_MODULES = ("parabatch._work",)


def default_traced(module: Optional[str]) -> tuple[str, ...]:
    """What ``trace=True`` traces for a factory defined in ``module``: it, and the per-item code."""
    own = (module,) if module else ()
    return own + tuple(m for m in _PER_ITEM_MODULES if m != module)


def _trace_modules(factory: Factory, trace: Union[bool, Sequence[str]]) -> tuple[str, ...]:
    if trace is True:
        return default_traced(getattr(factory, "__module__", None))
    if trace is False:
        return ()
    return tuple(trace)


@dataclass
class Counterexample:
    """A run with a FORBIDDEN outcome, and how to run it again.

    Example:
        >>> from parabatch.testing.broken import NoCopy
        >>> ce = verify_batch_node(NoCopy, budget=50, seed=0).counterexamples[0]
        >>> ce.replay.startswith("import parabatch.testing as t; t.replay_scenario(")
        True
    """

    scenario: Scenario
    schedule: str
    message: str
    trace: str
    replay: str
    preemptions: int = 0

    def __str__(self) -> str:
        return (
            f"  scenario: {self.scenario.to_json()}\n"
            f"  schedule: {self.schedule!r} ({self.preemptions} preemptions)\n"
            f"  {self.message}\n{self.trace}\n  replay it with:\n    {self.replay}"
        )


@dataclass
class VerifyReport:
    """What :func:`verify_batch_node` found: the outcome table and any counterexamples.

    ``ok`` is True when no FORBIDDEN outcome was observed. ``first_forbidden_at`` is the
    number of schedules run until the first FORBIDDEN one (None if none);
    ``forbidden_runs`` counts the runs that had one.

    Example:
        >>> from parabatch.testing.broken import Unbounded
        >>> report = verify_batch_node(Unbounded, budget=100, seed=0)
        >>> report.ok, [p for p, _, _ in report.table.forbidden()]
        (False, ['bound', 'copies'])
    """

    subject: str
    strategy: str
    seed: Optional[int]
    schedules: int = 0
    scenarios: int = 0
    table: OutcomeTable = field(default_factory=OutcomeTable)
    counterexamples: list[Counterexample] = field(default_factory=list)
    first_forbidden_at: Optional[int] = None
    exhausted: Optional[bool] = None
    harness_failures: int = 0
    forbidden_runs: int = 0

    @property
    def ok(self) -> bool:
        return not self.table.forbidden() and not self.counterexamples

    def format(self) -> str:
        head = (
            f"verify {self.subject}: {self.strategy}, seed={self.seed}, "
            f"{self.schedules:,} schedules over {self.scenarios:,} scenarios"
        )
        if self.exhausted is not None:
            head += f", space {'exhausted' if self.exhausted else 'NOT exhausted'}"
        verdict = (
            "OK: no FORBIDDEN outcome"
            if self.ok
            else (f"FAILED: FORBIDDEN outcome first seen after {self.first_forbidden_at} schedules")
        )
        parts = [head, self.table.format(), verdict]
        for ce in self.counterexamples[:1]:
            parts.append("counterexample:\n" + str(ce))
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "strategy": self.strategy,
            "seed": self.seed,
            "schedules": self.schedules,
            "scenarios": self.scenarios,
            "ok": self.ok,
            "first_forbidden_at": self.first_forbidden_at,
            "forbidden_runs": self.forbidden_runs,
            "exhausted": self.exhausted,
            "table": self.table.to_dict(),
            "counterexamples": [
                {
                    "scenario": asdict(c.scenario),
                    "schedule": c.schedule,
                    "message": c.message,
                    "preemptions": c.preemptions,
                    "replay": c.replay,
                }
                for c in self.counterexamples
            ],
        }


def _counterexample(
    result: CheckResult, scenario: Scenario, subject: Any, trace: tuple[str, ...]
) -> Optional[Counterexample]:
    f = result.failure
    if f is None:
        return None
    return Counterexample(
        scenario=scenario,
        schedule=f.schedule,
        message=f.message,
        trace=f.trace,
        replay=scenario_line(subject, scenario.to_json(), f.schedule, trace),
        preemptions=f.preemptions,
    )


def _record(
    report: VerifyReport, result: CheckResult, counter: list[int], ce: Optional[Counterexample]
) -> None:
    """Add one scenario's check to the report; ``counter`` is [runs, FORBIDDEN, raised]."""
    before = report.schedules
    report.schedules += result.schedules_explored
    report.scenarios += 1
    report.forbidden_runs += counter[1]
    harness = result.failures - counter[2]
    if harness > 0:  # failures the scheduler reported before the run could be classified
        report.harness_failures += harness
        report.table.add({"harness": "aborted by the scheduler"}, times=harness)
    if not result.ok:
        if report.first_forbidden_at is None and result.first_failure_at is not None:
            report.first_forbidden_at = before + result.first_failure_at
        if ce is not None and len(report.counterexamples) < 5:
            report.counterexamples.append(ce)


def verify_batch_node(
    factory: Factory,
    *,
    strategy: str = "random",
    budget: int = 1000,
    seed: Optional[int] = 0,
    depth: int = 2,
    per_scenario: Optional[int] = None,
    max_items: int = 4,
    max_retries: int = 3,
    scenarios: Optional[Sequence[Scenario]] = None,
    max_preemptions: int = 2,
    trace: Union[bool, Sequence[str]] = True,
    stop_on_forbidden: Union[bool, str] = False,
    stress_yield: bool = False,
    name: Optional[str] = None,
) -> VerifyReport:
    """Verify a batch node against every property, under controlled schedules.

    Args:
        factory: called like ``PflowBatchNode(inner_node, node_id, batch_config,
            executor=..., call_log=..., progress=...)`` (``progress`` only if it accepts it;
            without it the "kept submitting" check cannot see when a failure was observed).
        strategy: ``"pct"``, ``"random"``, ``"dfs"`` (exhaustive within
            ``max_preemptions`` on each of ``scenarios``) or ``"stress"`` (free-running
            real threads, the uncontrolled baseline).
        budget: schedules to run in all (``"dfs"``: the cap per scenario).
        seed: seeds the scenario draws and the schedules; the same seed gives the same runs.
        depth: PCT depth.
        max_items, max_retries: bounds of the drawn scenarios (a subject without retries
            takes ``max_retries=1``).
        per_scenario: schedules per drawn scenario; default 1 (a new scenario for every
            schedule: measured best for random search) but 10 for PCT, whose priority
            change points are spread over the steps it learns from earlier runs.
        scenarios: run these instead of drawing (required shape for ``"dfs"``).
        trace: True traces every line of the factory's own module and of the per-item
            code the core's workers run (``parabatch._work``), so a read-modify-write there
            can be interleaved; False traces nothing; or a list of module names.
        stop_on_forbidden: stop at the first FORBIDDEN run (detection measurements); a
            property's name: at the first run *that* property flags (a negative control
            shown to fail its own check), the runs before it still counted in the table.
        stress_yield: with ``"stress"``, call ``time.sleep(0)`` at every scheduling point,
            releasing the GIL as a real call would (default: never yield).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False on any FORBIDDEN outcome.

    Example:
        >>> from parabatch import PflowBatchNode
        >>> report = verify_batch_node(PflowBatchNode, budget=40, seed=1)
        >>> report.ok, report.schedules
        (True, 40)
    """
    if strategy not in ("pct", "random", "dfs", "stress"):
        raise ValueError(f"strategy={strategy!r}: must be 'pct', 'random', 'dfs' or 'stress'")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget={budget!r}: must be an integer >= 1")
    if not callable(factory):
        raise TypeError(f"factory={factory!r}: must be callable like PflowBatchNode")
    if per_scenario is None:
        per_scenario = 10 if strategy == "pct" else 1
    ref = importable_ref(factory)
    traced = _trace_modules(factory, trace) if strategy != "stress" else ()
    report = VerifyReport(subject=name or ref or repr(factory), strategy=strategy, seed=seed)
    rng = random.Random(seed)
    if strategy == "dfs":
        todo = list(scenarios or default_dfs_scenarios())
        report.exhausted = True
    else:
        todo = list(scenarios) if scenarios else []
    if isinstance(stop_on_forbidden, str) and stop_on_forbidden not in PROPERTIES:
        raise ValueError(
            f"stop_on_forbidden={stop_on_forbidden!r}: not a property ({', '.join(PROPERTIES)})"
        )
    fails_on = stop_on_forbidden if isinstance(stop_on_forbidden, str) else None
    common: dict[str, Any] = {"stop_on_failure": bool(stop_on_forbidden), "raise_on_failure": False}

    def plan() -> Iterator[tuple[Scenario, int]]:
        """The scenarios to run, and how many schedules each gets, as the budget allows."""
        if strategy == "dfs":
            yield from ((scenario, budget) for scenario in todo)
            return
        for index in itertools.count():
            remaining = budget - report.schedules
            if remaining <= 0:
                return
            scenario = (
                todo[index % len(todo)]
                if todo
                else draw_scenario(rng, max_items=max_items, max_retries=max_retries)
            )
            yield scenario, min(per_scenario, remaining)

    with young_heap():
        for scenario, iterations in plan():
            counter = [0, 0, 0]
            fn = _checked(
                factory,
                scenario,
                report.table,
                counter,
                moments=strategy != "stress",
                fails_on=fails_on,
            )
            sub_seed = rng.randrange(2**32)
            if strategy == "pct":
                result = check_pct(fn, iterations, depth, sub_seed, trace_modules=traced, **common)
            elif strategy == "random":
                result = check_random(fn, iterations, sub_seed, trace_modules=traced, **common)
            elif strategy == "dfs":
                result = check_dfs(
                    fn, max_preemptions, max_schedules=iterations, trace_modules=traced, **common
                )
                report.exhausted = bool(report.exhausted and result.exhausted)
            else:
                result = check_stress(fn, iterations, yield_at_points=stress_yield, **common)
            _record(report, result, counter, _counterexample(result, scenario, factory, traced))
            if stop_on_forbidden and not result.ok:
                break
    return report


def replay_scenario(
    factory: Union[str, Factory],
    scenario: Union[str, Scenario],
    schedule: str,
    *,
    trace: Union[bool, Sequence[str]] = True,
    raise_on_failure: bool = True,
) -> CheckResult:
    """Run one scenario under one schedule again: the line every counterexample prints.

    Example:
        >>> s = Scenario(items=("a", "b"), fail=(0, 0))
        >>> replay_scenario("parabatch:PflowBatchNode", s.to_json(), "").ok
        True
    """
    subject = load_factory(factory) if isinstance(factory, str) else factory
    if isinstance(scenario, str):
        scenario = Scenario.from_json(scenario)
    table = OutcomeTable()
    fn = _checked(subject, scenario, table, [0, 0, 0])
    traced = _trace_modules(subject, trace)
    with young_heap():
        result = replay(fn, schedule, trace_modules=traced, raise_on_failure=False)
    if result.failure is not None:
        # The scheduler names the inner checked function; name the line that reruns this.
        line = scenario_line(subject, scenario.to_json(), schedule, traced)
        failure = dataclasses.replace(result.failure, replay=line)
        result = dataclasses.replace(result, failure=failure)
        if raise_on_failure:
            raise _FAILURE_CLASSES[failure.kind](failure, result) from failure.exception
    return result


def detection(
    factory: Factory,
    *,
    seeds: Sequence[int] = tuple(range(20)),
    budget: int = 200,
    strategy: str = "random",
    flagged_by: Optional[str] = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """How reliably ``verify_batch_node`` catches ``factory``: one search per seed.

    Returns the number of seeds that found a FORBIDDEN outcome within ``budget``
    schedules, the schedules each took, their median, the properties that flagged the
    runs, and the first counterexample. With ``flagged_by``, a seed counts only once that
    property flags a run: a negative control shown to fail the check of the property it
    breaks, whichever other property flags it first.

    Example:
        >>> from parabatch.testing.broken import NoCopy
        >>> found = detection(NoCopy, seeds=range(3), budget=100, flagged_by="params")
        >>> found["caught"], found["properties"]
        (3, ['isolation', 'params'])
    """
    found: list[int] = []
    first: Optional[Counterexample] = None
    properties: set[str] = set()
    for seed in seeds:
        report = verify_batch_node(
            factory,
            strategy=strategy,
            budget=budget,
            seed=seed,
            stop_on_forbidden=flagged_by or True,
            **kwargs,
        )
        if report.first_forbidden_at is not None:
            found.append(report.first_forbidden_at)
            properties.update(p for p, _, _ in report.table.forbidden())
            if first is None and report.counterexamples:
                first = report.counterexamples[0]
    return {
        "seeds": len(seeds),
        "caught": len(found),
        "schedules_to_detection": found,
        "median": statistics.median(found) if found else None,
        "properties": sorted(properties),
        "counterexample": first,
    }


def shrink(
    factory: Factory,
    *,
    budget: int = 1000,
    seed: int = 0,
    trace: Union[bool, Sequence[str]] = True,
) -> Optional[Counterexample]:
    """The smallest FORBIDDEN run Hypothesis can find: simplest scenario, fewest switches.

    Hypothesis draws a scenario and a schedule together (:func:`scenarios` and
    :func:`parabatch.testing.schedules`), runs it with :func:`replay`, and once a run is
    FORBIDDEN shrinks both. Returns None when ``budget`` examples find nothing.

    Example:
        >>> from parabatch.testing.broken import CompletionOrder
        >>> ce = shrink(CompletionOrder, budget=300)
        >>> "FORBIDDEN ordering" in ce.message, ce.preemptions <= 2
        (True, True)
    """
    from ._hypothesis import require_hypothesis, schedules

    require_hypothesis("shrink()")
    from hypothesis import HealthCheck, find, settings
    from hypothesis import strategies as st
    from hypothesis.errors import NoSuchExample

    traced = _trace_modules(factory, trace)

    def forbidden(example: tuple[Scenario, Any]) -> bool:
        scenario, schedule = example
        fn = _checked(factory, scenario, OutcomeTable(), [0, 0, 0])
        return not replay(fn, schedule, trace_modules=traced, raise_on_failure=False).ok

    with young_heap():
        try:
            scenario, schedule = find(
                st.tuples(scenarios(), schedules()),
                forbidden,
                settings=settings(
                    max_examples=budget,
                    database=None,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                ),
                random=random.Random(seed),
            )
        except NoSuchExample:
            return None
        fn = _checked(factory, scenario, OutcomeTable(), [0, 0, 0])
        result = replay(fn, schedule, trace_modules=traced, raise_on_failure=False)
    return _counterexample(result, scenario, factory, traced)
