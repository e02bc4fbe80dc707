"""The probe: an instrumented node in the real wrapper chain, and the journal it keeps.

One run of a scenario builds ``NamespacedNodeWrapper(TemplateAwareNodeWrapper(Probe))``,
hands the subject the controlled executor, and runs one batch. The probe records into a
:class:`Journal` (shared by every copy of the chain) what each attempt saw and did: its
params, its attempt number, how many execs were in flight, what other items had written
where it looks (its store, its namespace, its copy of the chain) and every copy of the
chain made. The properties (:mod:`._properties`) classify the journal afterwards.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import inspect
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from pocketflow import Node

from parabatch import CALLS_KEY, NamespacedNodeWrapper, Shared, TemplateAwareNodeWrapper

from ._executor import ControlledExecutor
from ._scenario import NODE_ID, Scenario
from ._scheduler import simulated_call

__all__ = ["Journal", "PlannedFailure", "Probe", "RunRecord", "run_scenario", "young_heap"]

# Bound at import, before any check patches ``threading``: the journal's bookkeeping is
# the harness's own and must never become a scheduling point of the run it observes.
_allocate_lock = _thread.allocate_lock

#: The keys the probe marks its store with: one in its namespace, one at the store's root.
NAMESPACE_MARK = "mark"
ROOT_MARK = "__mark__"


class PlannedFailure(Exception):
    """Raised by the probe on an attempt its scenario plans to fail."""


class _CopyTag:
    """Held by the probe: every deep copy of the chain copies it, and so is counted.

    ``copy.deepcopy`` (and ``parabatch``'s ``clone``, which defers to it for objects with
    a ``__deepcopy__``) calls this once per copy of the chain; the journal keeps only a
    weak reference, so a copy counts exactly as long as something keeps it alive.
    """

    __slots__ = ("__weakref__", "journal")

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def __deepcopy__(self, memo: dict[int, Any]) -> _CopyTag:
        tag = _CopyTag(self.journal)
        self.journal.copied(tag)
        return tag


class Journal:
    """What the probes and the coordinator did in one run, in order."""

    def __init__(self, parallel: bool = True, copy_cap: int = 1, moments: bool = True) -> None:
        self.lock = _allocate_lock()  # held briefly, never across a scheduling point
        self.parallel = parallel
        #: count copies as each is made (exact only when one thread runs at a time)
        self.moments = moments
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.foreign: list[str] = []
        self.events: list[tuple[str, Any]] = []
        #: (kind, sentence) for each write of another item (or attempt) an attempt saw
        self.leaks: list[tuple[str, str]] = []
        self.copy_cap = copy_cap
        self.copies: list[weakref.ref[_CopyTag]] = []
        self.copies_peak = 0
        self.copies_over: Optional[str] = None
        self.copies_after: Optional[int] = None

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

    def saw(self, item: str, namespace: Any, root: Any, chain: list[str]) -> None:
        """What one attempt found, as it began, where only its own item may have written.

        ``namespace`` and ``root`` are the marks in its store (None if none), ``chain``
        the marks on its copy of the chain.
        """
        with self.lock:
            if namespace is not None and namespace != item:
                self.leaks.append(
                    ("foreign store", f"item {item!r} found item {namespace!r}'s namespace")
                )
            if root is not None and root != item:
                self.leaks.append(
                    ("foreign store", f"item {item!r} found item {root!r}'s write at its root")
                )
            if namespace == item:
                self.leaks.append(
                    ("stale namespace", f"a retry of item {item!r} began with a used namespace")
                )
            others = sorted({m for m in chain if m != item})
            if others:
                kind = "foreign chain" if self.parallel else "sequential: one chain"
                self.leaks.append((kind, f"item {item!r} found {others} written on its chain"))
            if root == item or item in chain:
                self.leaks.append(("retry saw its own attempt", item))

    def copied(self, tag: _CopyTag) -> None:
        """A copy of the chain was made: count the copies alive at this moment."""
        with self.lock:
            self.copies.append(weakref.ref(tag))
            if self.copies_over is not None or not self.moments:
                return  # already over (one finding per run), or not counted as made
            alive = self._alive()
        self.copies_peak = max(self.copies_peak, alive)
        if alive > self.copy_cap:
            alive = self._alive_after_collect()
            if alive > self.copy_cap:
                self.copies_over = (
                    f"{alive} copies of the chain alive when copy {len(self.copies)} was made"
                )

    def finished(self) -> None:
        """The run is over: count the copies still alive."""
        if self.copies_over is not None:
            return
        alive = self._alive()
        if alive > self.copy_cap:
            alive = self._alive_after_collect()
        self.copies_after = alive

    def _alive(self) -> int:
        return sum(1 for ref in self.copies if ref() is not None)

    def _alive_after_collect(self) -> int:
        # Only unreachable cycles (a frame and the exception it caught) keep a weak
        # reference alive past its last strong one: collect them before counting again, so
        # what counts is what is reachable. The young generations first (the cycles are
        # recent; that costs microseconds), the whole heap (milliseconds) only if copies
        # are still over the cap.
        _collect_young()
        with self.lock:
            alive = self._alive()
        if alive > self.copy_cap:
            gc.collect()
            with self.lock:
                alive = self._alive()
        self.copies_peak = max(self.copies_peak, alive)
        return alive

    def submitted(self) -> None:
        with self.lock:
            self.events.append(("submit", None))

    def observed(self, index: int, done: int, total: int, ok: bool) -> None:
        with self.lock:
            self.events.append(("observed", (index, ok)))


def _collect_young() -> None:
    """Free what died young: CPython's young generations, PyPy's nursery.

    PyPy frees nothing at its last reference (no reference counts), so copies dead since
    the run's last minor collection count as alive until one. Its ``gc.collect`` is always
    a full collection (tenths of a second on a test runner's heap, once per run); one step
    of an incremental collection begins with a minor one and costs microseconds.
    """
    step = getattr(gc, "collect_step", None)
    if step is not None:
        step()
    else:
        gc.collect(1)


@contextlib.contextmanager
def young_heap() -> Iterator[None]:
    """Within: a full collection scans only the objects made since it began.

    Copies are counted after a collection (see :meth:`Journal.copied`); with the heap that
    existed before the search frozen, that costs what the search itself allocated, not what
    the whole process holds. Frozen objects count as reachable, as an older generation
    does for a young collection, so nothing made within is freed that is still reachable.
    """
    freeze = getattr(gc, "freeze", None)  # CPython >= 3.7; not every interpreter has it
    if freeze is None:
        yield
        return
    freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class Probe(Node):  # type: ignore[misc]
    """The instrumented node: records params and attempts, fails on plan, reports usage.

    Its ``prep`` looks for what other items (or earlier attempts) wrote in its store and
    on its copy of the chain, then marks both with its own item. Its ``exec`` reads its
    params, makes a :func:`simulated_call` (the scheduling point where a real LLM call
    would release the GIL), reads its params again, and fails if the scenario plans this
    attempt to fail. Its ``post`` reports ``llm_usage`` and appends a record of its own to
    ``shared["__llm_calls__"]``. Every deep copy of it is counted by the journal.

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
        self.written: list[str] = []  # the items whose attempts ran on this object
        self.tag = _CopyTag(journal)

    def prep(self, shared: Any) -> tuple[str, int]:
        item: str = shared["item"]
        journal: Journal = self.journal.value
        journal.saw(item, shared.get(NAMESPACE_MARK), shared.get(ROOT_MARK), self.written)
        shared[NAMESPACE_MARK] = item
        shared[ROOT_MARK] = item
        self.written.append(item)
        return item, shared["__index__"]

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


def run_scenario(factory: Factory, scenario: Scenario, *, moments: bool = True) -> RunRecord:
    """Build the chain, run the subject on ``scenario`` once, and return what happened.

    Runs under whatever scheduler is active (or on real threads when none is). ``moments``
    counts the copies of the chain alive each time one is made; that count is exact only
    under the controlled scheduler, where no other thread runs between the collection and
    the count. On free-running threads (``moments=False``) copies are counted after the
    run only.
    """
    cap = scenario.max_concurrent if scenario.parallel else 1
    journal = Journal(parallel=scenario.parallel, copy_cap=cap, moments=moments)
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
    del node, chain  # the original chain is not a copy; the subject may keep it
    journal.finished()
    return RunRecord(scenario, journal, shared, raised, progress_seen)
