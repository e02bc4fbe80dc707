"""Verify any batch node: drawn scenarios, controlled schedules, an outcome table.

A *subject* is any callable with :class:`parabatch.PflowBatchNode`'s constructor
(``factory(inner_node, node_id, batch_config, *, executor=..., call_log=...)``). Each run
builds the real wrapper chain around an instrumented node (:class:`Probe`), hands the
subject the controlled executor, runs one batch under a schedule, and classifies what
happened for every property in :data:`PROPERTIES`. A FORBIDDEN outcome fails the run, so
the scheduler records its schedule and trace and the report can replay it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import random
import statistics
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from pocketflow import Node

from parabatch import CALLS_KEY, NamespacedNodeWrapper, Shared, TemplateAwareNodeWrapper

from ._check import _FAILURE_CLASSES, check_dfs, check_pct, check_random, check_stress, replay
from ._executor import ControlledExecutor
from ._outcomes import OutcomeTable
from ._scheduler import simulated_call
from ._trace import CheckResult

__all__ = [
    "Counterexample",
    "PlannedFailure",
    "Probe",
    "Scenario",
    "VerifyReport",
    "draw_scenario",
    "replay_scenario",
    "run_scenario",
    "scenarios",
    "shrink",
    "verify_batch_node",
]

NODE_ID = "probe"
ITEM_NAMES = "abcdefghijklmnopqrstuvwxyz"


class PlannedFailure(Exception):
    """Raised by the probe on an attempt its scenario plans to fail."""


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


class Journal:
    """What the probes and the coordinator did in one run, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held briefly, never across a scheduling point
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.foreign: list[str] = []
        self.events: list[tuple[str, Any]] = []

    def begin(self, item: str, index: int, params: dict[str, Any]) -> int:
        with self.lock:
            attempt = self.attempts.get(item, 0) + 1
            self.attempts[item] = attempt
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.events.append(("begin", item))
            self._check_params(item, index, params, "before its call")
            return attempt

    def end(self, item: str, index: int, params: dict[str, Any]) -> None:
        with self.lock:
            self.in_flight -= 1
            self._check_params(item, index, params, "after its call")

    def _check_params(self, item: str, index: int, params: dict[str, Any], when: str) -> None:
        if params.get("topic") != item or params.get("position") != index:
            self.foreign.append(f"item {item!r} (index {index}) saw {params!r} {when}")

    def submitted(self) -> None:
        with self.lock:
            self.events.append(("submit", None))

    def observed(self, index: int, done: int, total: int, ok: bool) -> None:
        with self.lock:
            self.events.append(("observed", (index, ok)))


class Probe(Node):  # type: ignore[misc]
    """The instrumented node: records params and attempts, fails on plan, reports usage.

    Its ``exec`` reads its params, makes a :func:`simulated_call` (the scheduling point
    where a real LLM call would release the GIL), reads its params again, and fails if the
    scenario plans this attempt to fail. Its ``post`` reports ``llm_usage`` and appends a
    record of its own to ``shared["__llm_calls__"]``.

    Example:
        >>> journal = Journal()
        >>> probe = Probe(journal, fail={"a": 1})
        >>> probe.params = {"topic": "a", "position": 0}
        >>> try:
        ...     probe.exec(("a", 0))
        ... except PlannedFailure as e:
        ...     print(e)
        item 'a' attempt 1 fails as planned
        >>> probe.exec(("a", 0)), journal.attempts
        ({'item': 'a', 'attempt': 2}, {'a': 2})
    """

    def __init__(self, journal: Journal, fail: dict[str, int]) -> None:
        super().__init__()
        self.journal = Shared(journal)  # one journal for every copy of the node
        self.fail = dict(fail)

    def prep(self, shared: Any) -> tuple[str, int]:
        return shared["item"], shared["__index__"]

    def exec(self, prep_res: tuple[str, int]) -> dict[str, Any]:
        item, index = prep_res
        journal: Journal = self.journal.value
        attempt = journal.begin(item, index, self.params)
        try:
            simulated_call(f"call {item}")
        finally:
            journal.end(item, index, self.params)
        if attempt <= self.fail.get(item, 0):
            raise PlannedFailure(f"item {item!r} attempt {attempt} fails as planned")
        return {"item": item, "attempt": attempt}

    def post(self, shared: Any, prep_res: Any, exec_res: dict[str, Any]) -> str:
        shared["out"] = exec_res
        shared["llm_usage"] = {"model": "probe", "item": exec_res["item"]}
        shared[CALLS_KEY].append({"source": "node", "item": exec_res["item"]})
        return "default"


class _JournalExecutor(ControlledExecutor):
    def __init__(self, max_workers: int, journal: Journal) -> None:
        super().__init__(max_workers)
        self._journal = journal

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self._journal.submitted()
        return super().submit(fn, *args, **kwargs)


Factory = Callable[..., Any]


def _accepts_progress(factory: Factory) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "progress" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@dataclass
class RunRecord:
    """What one run of a scenario came to, before classification."""

    scenario: Scenario
    journal: Journal
    shared: dict[str, Any]
    raised: Optional[BaseException]
    progress_seen: bool


def run_scenario(factory: Factory, scenario: Scenario) -> RunRecord:
    """Build the chain, run the subject on ``scenario`` once, and return what happened.

    Runs under whatever scheduler is active (or on real threads when none is).
    """
    journal = Journal()
    fail = dict(zip(scenario.items, scenario.fail))
    node = Probe(journal, fail)
    chain = NamespacedNodeWrapper(
        TemplateAwareNodeWrapper(node, NODE_ID, {"topic": "${item}", "position": "${__index__}"}),
        NODE_ID,
    )
    kwargs: dict[str, Any] = {
        "executor": lambda n: _JournalExecutor(n, journal),
        "call_log": scenario.call_log,
    }
    progress_seen = _accepts_progress(factory)
    if progress_seen:
        kwargs["progress"] = journal.observed
    subject = factory(chain, NODE_ID, scenario.config(), **kwargs)
    shared: dict[str, Any] = {"work": list(scenario.items)}
    raised: Optional[BaseException] = None
    try:
        subject.run(shared)
    except Exception as exc:
        raised = exc
    return RunRecord(scenario, journal, shared, raised, progress_seen)


def classify(run: RunRecord) -> tuple[dict[str, str], list[str]]:
    """Each property's outcome for one run, and a sentence for each FORBIDDEN one."""
    s, journal, shared = run.scenario, run.journal, run.shared
    out: dict[str, str] = {}
    why: list[str] = []
    n = len(s.items)
    planned = dict(zip(s.items, s.fail))
    fails_for_good = {i for i, item in enumerate(s.items) if planned[item] >= s.max_retries}
    output = shared.get(NODE_ID)
    raised = run.raised
    if raised is not None and not isinstance(raised, PlannedFailure):
        out["harness"] = "unexpected exception"
        why.append(f"harness: the subject raised {type(raised).__name__}: {raised}")
        return out, why
    if not isinstance(output, dict) or not isinstance(output.get("results"), list):
        if raised is not None and s.error_handling == "fail_fast":
            out["fail_fast"] = "output lost"
            why.append("fail_fast: the batch raised without writing its partial output")
        else:
            out["harness"] = "unexpected exception"
            why.append("harness: the subject wrote no output")
        return out, why
    out["harness"] = "completed"
    results: list[Any] = output["results"]
    errors: list[dict[str, Any]] = output.get("errors") or []
    error_index = [e.get("index") for e in errors]
    ran = [i for i, item in enumerate(s.items) if journal.attempts.get(item)]

    # ordering
    misplaced = [
        i for i, r in enumerate(results[:n]) if isinstance(r, dict) and r.get("item") != s.items[i]
    ]
    if len(results) != n or misplaced:
        out["ordering"] = "misplaced"
        why.append(
            f"ordering: results at indexes {misplaced} belong to other items "
            f"(results hold {[r.get('item') if isinstance(r, dict) else r for r in results]})"
        )
    else:
        out["ordering"] = "in order"

    # params
    if journal.foreign:
        out["params"] = "foreign"
        why.append("params: " + "; ".join(journal.foreign[:3]))
    else:
        out["params"] = "own"

    # retry accounting
    retry = "exact"
    for i in ran:
        item = s.items[i]
        expected = min(planned[item] + 1, s.max_retries)
        got = journal.attempts[item]
        succeeded_as_none = i in fails_for_good and i < len(results) and i not in error_index
        if succeeded_as_none:
            retry = "swallowed"
            why.append(
                f"retry: item {item!r} failed all {got} attempts but has no error "
                f"(result {results[i]!r})"
            )
            break
        if got < expected:
            retry = "too few"
            why.append(f"retry: item {item!r} had {got} attempts, expected {expected}")
            break
        if got > expected:
            retry = "too many"
            why.append(f"retry: item {item!r} had {got} attempts, expected {expected}")
            break
    out["retry"] = retry

    # exactly once
    once = "all once"
    for i in range(n):
        in_results = i < len(results) and results[i] is not None
        times = error_index.count(i) + int(in_results)
        should = 1 if i in ran else 0
        if times != should or (should == 0 and s.error_handling == "continue"):
            once = "lost or duplicated"
            why.append(
                f"exactly_once: item {s.items[i]!r} appears {times} times "
                f"({'ran' if i in ran else 'never ran'})"
            )
            break
        if should == 0:
            once = "aborted"
    out["exactly_once"] = once

    # call accounting
    log = shared.get(CALLS_KEY, [])
    succeeded = [i for i in range(n) if i in ran and i not in fails_for_good]
    usage = sorted(
        (
            (r.get("batch_item_index"), r.get("item"), r.get("node_id"))
            for r in log
            if isinstance(r, dict) and r.get("model") == "probe"
        ),
        key=repr,
    )
    own = sorted(
        (r.get("item") for r in log if isinstance(r, dict) and r.get("source") == "node"),
        key=repr,
    )
    want_usage = sorted(((i, s.items[i], NODE_ID) for i in succeeded), key=repr)
    want_own = sorted((s.items[i] for i in succeeded), key=repr)
    if usage == want_usage and own == want_own and len(log) == 2 * len(succeeded):
        out["calls"] = f"{s.call_log}: exact"
    else:
        out["calls"] = f"{s.call_log}: wrong"
        why.append(
            f"calls ({s.call_log}): usage records {usage} and node records {own}, "
            f"expected {want_usage} and {want_own}"
        )

    # concurrency bound
    peak = journal.max_in_flight
    cap = s.max_concurrent if s.parallel else 1
    if peak > cap:
        out["bound"] = "over cap"
        why.append(f"bound: {peak} items in flight at once, max_concurrent={cap}")
    else:
        out["bound"] = "at cap" if peak == cap else "below cap"

    # fail_fast
    failed_ran = [i for i in ran if i in fails_for_good]
    if s.error_handling != "fail_fast" or not failed_ran:
        out["fail_fast"] = "not exercised"
    elif raised is None:
        out["fail_fast"] = "no error"
        why.append(f"fail_fast: items {failed_ran} failed but nothing was raised")
    elif not output.get("batch_metadata", {}).get("aborted"):
        out["fail_fast"] = "output lost"
        why.append("fail_fast: the partial output is not marked aborted")
    else:
        lowest = min(failed_ran)
        raised_index = next((e.get("index") for e in errors if e.get("exception") is raised), None)
        seen_failure = False
        late_submit = False
        for kind, data in journal.events:
            if kind == "observed" and not data[1]:
                seen_failure = True
            elif kind == "submit" and seen_failure:
                late_submit = True
        if raised_index != lowest:
            out["fail_fast"] = "wrong error"
            why.append(
                f"fail_fast: raised the error of index {raised_index}, the lowest "
                f"failing index that ran is {lowest}"
            )
        elif late_submit:
            out["fail_fast"] = "kept submitting"
            why.append("fail_fast: work was submitted after a failure had been observed")
        else:
            out["fail_fast"] = "stopped"
    return out, why


def _checked(
    factory: Factory, scenario: Scenario, table: OutcomeTable, counter: list[int]
) -> Callable[[], None]:
    """The checked function for one scenario: run, classify, count, raise on FORBIDDEN."""

    def checked() -> None:
        run = run_scenario(factory, scenario)
        outcomes, why = classify(run)
        table.add(outcomes)
        counter[0] += 1
        if why:
            counter[1] += 1
            raise AssertionError("FORBIDDEN " + " | ".join(why))

    checked.__qualname__ = checked.__name__ = "checked_scenario"
    return checked


def _ref(factory: Factory) -> Optional[str]:
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if obj is factory else None


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


def _trace_modules(factory: Factory, trace: Union[bool, Sequence[str]]) -> tuple[str, ...]:
    if trace is True:
        module = getattr(factory, "__module__", None)
        return (module,) if module else ()
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
        (False, ['bound'])
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


def _replay_line(
    ref: Optional[str], scenario: Scenario, schedule: str, trace: tuple[str, ...]
) -> str:
    subject = ref or "<your factory>"
    traced = ", trace=False" if not trace else f", trace={list(trace)!r}"
    return (
        f"import parabatch.testing as t; t.replay_scenario({subject!r}, "
        f"{scenario.to_json()!r}, {schedule!r}{traced})"
    )


def _counterexample(
    result: CheckResult, scenario: Scenario, ref: Optional[str], trace: tuple[str, ...]
) -> Optional[Counterexample]:
    f = result.failure
    if f is None:
        return None
    return Counterexample(
        scenario=scenario,
        schedule=f.schedule,
        message=f.message,
        trace=f.trace,
        replay=_replay_line(ref, scenario, f.schedule, trace),
        preemptions=f.preemptions,
    )


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
    stop_on_forbidden: bool = False,
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
        trace: True traces every line of the factory's own module (so a read-modify-write
            there can be interleaved); False traces nothing; or a list of module names.
        stop_on_forbidden: stop at the first FORBIDDEN run (detection measurements).
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
    ref = _ref(factory)
    traced = _trace_modules(factory, trace) if strategy != "stress" else ()
    report = VerifyReport(subject=name or ref or repr(factory), strategy=strategy, seed=seed)
    rng = random.Random(seed)
    if strategy == "dfs":
        todo = list(scenarios or default_dfs_scenarios())
        report.exhausted = True
    else:
        todo = list(scenarios) if scenarios else []
    index = 0
    while True:
        if strategy == "dfs":
            if index >= len(todo):
                break
            scenario = todo[index]
            iterations = budget
        else:
            remaining = budget - report.schedules
            if remaining <= 0:
                break
            scenario = (
                todo[index % len(todo)]
                if todo
                else draw_scenario(rng, max_items=max_items, max_retries=max_retries)
            )
            iterations = min(per_scenario, remaining)
        index += 1
        counter = [0, 0]
        fn = _checked(factory, scenario, report.table, counter)
        sub_seed = rng.randrange(2**32)
        common: dict[str, Any] = {"stop_on_failure": stop_on_forbidden, "raise_on_failure": False}
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
        before = report.schedules
        report.schedules += result.schedules_explored
        report.scenarios += 1
        report.forbidden_runs += counter[1]
        harness = result.failures - counter[1]
        if harness > 0:
            report.harness_failures += harness
            report.table.add({"harness": "aborted by the scheduler"}, times=harness)
        if not result.ok:
            if report.first_forbidden_at is None and result.first_failure_at is not None:
                report.first_forbidden_at = before + result.first_failure_at
            ce = _counterexample(result, scenario, ref, traced)
            if ce is not None and len(report.counterexamples) < 5:
                report.counterexamples.append(ce)
            if stop_on_forbidden:
                break
    return report


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
    fn = _checked(subject, scenario, table, [0, 0])
    traced = _trace_modules(subject, trace)
    result = replay(fn, schedule, trace_modules=traced, raise_on_failure=False)
    if result.failure is not None:
        # The scheduler names the inner checked function; name the line that reruns this.
        line = _replay_line(_ref(subject), scenario, schedule, traced)
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
    **kwargs: Any,
) -> dict[str, Any]:
    """How reliably ``verify_batch_node`` catches ``factory``: one search per seed.

    Returns the number of seeds that found a FORBIDDEN outcome within ``budget``
    schedules, the schedules each took, their median, and the first counterexample.

    Example:
        >>> from parabatch.testing.broken import NoCopy
        >>> found = detection(NoCopy, seeds=range(3), budget=100)
        >>> found["caught"], found["properties"]
        (3, ['params'])
    """
    found: list[int] = []
    first: Optional[Counterexample] = None
    properties: set[str] = set()
    for seed in seeds:
        report = verify_batch_node(
            factory, strategy=strategy, budget=budget, seed=seed, stop_on_forbidden=True, **kwargs
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
    try:
        from hypothesis import HealthCheck, find, settings
    except ImportError as exc:  # an optional dependency: say which extra brings it
        raise ModuleNotFoundError(
            "shrink() needs Hypothesis: pip install 'parabatch[hypothesis]'", name="hypothesis"
        ) from exc
    from hypothesis import strategies as st
    from hypothesis.errors import NoSuchExample

    from ._hypothesis import schedules

    traced = _trace_modules(factory, trace)

    def forbidden(example: tuple[Scenario, Any]) -> bool:
        scenario, schedule = example
        fn = _checked(factory, scenario, OutcomeTable(), [0, 0])
        return not replay(fn, schedule, trace_modules=traced, raise_on_failure=False).ok

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
    fn = _checked(factory, scenario, OutcomeTable(), [0, 0])
    result = replay(fn, schedule, trace_modules=traced, raise_on_failure=False)
    return _counterexample(result, scenario, _ref(factory), traced)
