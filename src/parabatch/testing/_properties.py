"""The properties a batch node must keep, each with its outcomes declared beside its check.

As jcstress puts ``@Outcome`` beside the actors, each property here is one function under
a :func:`prop` decorator that lists every outcome it can report, ACCEPTABLE, INTERESTING
or FORBIDDEN, with what each means. The function gets a :class:`View` of one run and
returns the outcome's key with a sentence saying why, when FORBIDDEN. :data:`PROPERTIES`
holds them in the order of the table; :func:`classify` applies them all to one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from parabatch import CALLS_KEY

from ._outcomes import ACCEPTABLE, FORBIDDEN, INTERESTING, Outcome
from ._probe import PlannedFailure, RunRecord
from ._scenario import NODE_ID, Scenario

__all__ = ["PROPERTIES", "Property", "View", "classify", "prop"]

#: What a check returns: the outcome's key, and why (empty unless FORBIDDEN).
Verdict = tuple[str, str]
Check = Callable[["View"], Verdict]


@dataclass(frozen=True)
class Property:
    """One property: its name, every outcome it can report, and its check."""

    name: str
    outcomes: tuple[Outcome, ...]
    check: Check

    def classify(self, view: View) -> Verdict:
        key, why = self.check(view)
        outcome = next((o for o in self.outcomes if o.key == key), None)
        if outcome is None:
            raise KeyError(f"unknown outcome {self.name}={key!r}")
        if (outcome.expect == FORBIDDEN) != bool(why):
            raise AssertionError(f"{self.name}={key!r}: FORBIDDEN outcomes, and only they, say why")
        return key, why


#: Every property, in the order of the outcome table.
PROPERTIES: dict[str, Property] = {}


def ok(key: str, meaning: str) -> tuple[str, str, str]:
    return key, ACCEPTABLE, meaning


def interesting(key: str, meaning: str) -> tuple[str, str, str]:
    return key, INTERESTING, meaning


def forbidden(key: str, meaning: str) -> tuple[str, str, str]:
    return key, FORBIDDEN, meaning


def prop(name: str, *rows: tuple[str, str, str]) -> Callable[[Check], Check]:
    """Declare a property: its outcome rows here, its check the decorated function."""

    def register(check: Check) -> Check:
        outcomes = tuple(Outcome(name, key, expect, meaning) for key, expect, meaning in rows)
        PROPERTIES[name] = Property(name, outcomes, check)
        return check

    return register


@dataclass
class View:
    """One run, with the facts several properties need worked out once."""

    run: RunRecord
    s: Scenario = field(init=False)
    output: Optional[dict[str, Any]] = field(init=False)
    results: list[Any] = field(init=False)
    errors: list[dict[str, Any]] = field(init=False)
    error_index: list[Any] = field(init=False)
    planned: dict[str, int] = field(init=False)
    fails_for_good: set[int] = field(init=False)
    ran: list[int] = field(init=False)

    def __post_init__(self) -> None:
        s = self.s = self.run.scenario
        out = self.run.shared.get(NODE_ID)
        written = isinstance(out, dict) and isinstance(out.get("results"), list)
        self.output = out if written else None
        self.results = self.output["results"] if self.output is not None else []
        self.errors = (self.output.get("errors") or []) if self.output is not None else []
        self.error_index = [e.get("index") for e in self.errors]
        self.planned = dict(zip(s.items, s.fail))
        self.fails_for_good = {
            i for i, item in enumerate(s.items) if self.planned[item] >= s.max_retries
        }
        self.ran = [i for i, item in enumerate(s.items) if self.run.journal.attempts.get(item)]

    @property
    def cap(self) -> int:
        return self.s.max_concurrent if self.s.parallel else 1


@prop(
    "ordering",
    ok("in order", "results[i] belongs to items[i]"),
    forbidden("misplaced", "a result sits at another item's index"),
)
def ordering(v: View) -> Verdict:
    items, results = v.s.items, v.results
    misplaced = [
        i
        for i, r in enumerate(results[: len(items)])
        if isinstance(r, dict) and r.get("item") != items[i]
    ]
    if len(results) == len(items) and not misplaced:
        return "in order", ""
    held = [r.get("item") if isinstance(r, dict) else r for r in results]
    return "misplaced", (
        f"results at indexes {misplaced} belong to other items (results hold {held})"
    )


@prop(
    "params",
    ok("own", "every exec saw its own item's params, before and after its call"),
    forbidden("foreign", "an exec saw another item's params"),
)
def params(v: View) -> Verdict:
    foreign = v.run.journal.foreign
    return ("foreign", "; ".join(foreign[:3])) if foreign else ("own", "")


@prop(
    "isolation",
    ok("isolated", "no attempt saw another item's writes, in its store or on its chain"),
    interesting(
        "retry saw its own attempt",
        "a retry saw its failed attempt's writes at its store's root or on its copy of the "
        "chain (one store or one copy per item)",
    ),
    interesting(
        "sequential: one chain",
        "sequential mode runs every item, in turn, on the chain itself: later items see "
        "what earlier ones wrote on it",
    ),
    forbidden("foreign store", "an item saw another item's writes in its store"),
    forbidden("foreign chain", "an item saw another item's writes on its copy of the chain"),
    forbidden("stale namespace", "an attempt began with its failed attempt's namespace"),
)
def isolation(v: View) -> Verdict:
    leaks = v.run.journal.leaks
    for kind in ("foreign store", "foreign chain", "stale namespace"):
        found = [text for k, text in leaks if k == kind]
        if found:
            return kind, "; ".join(found[:3])
    for kind in ("sequential: one chain", "retry saw its own attempt"):
        if any(k == kind for k, _ in leaks):
            return kind, ""
    return "isolated", ""


@prop(
    "retry",
    ok("exact", "each item that ran had min(failures + 1, max_retries) attempts"),
    forbidden("swallowed", "an item failed every attempt yet counted as a success"),
    forbidden("too few", "an item gave up or fell back before its last attempt"),
    forbidden("too many", "an item was attempted more than it should be"),
)
def retry(v: View) -> Verdict:
    s, attempts = v.s, v.run.journal.attempts
    for i in v.ran:
        item = s.items[i]
        expected = min(v.planned[item] + 1, s.max_retries)
        got = attempts[item]
        if i in v.fails_for_good and i < len(v.results) and i not in v.error_index:
            return "swallowed", (
                f"item {item!r} failed all {got} attempts but has no error "
                f"(result {v.results[i]!r})"
            )
        if got != expected:
            key = "too few" if got < expected else "too many"
            return key, f"item {item!r} had {got} attempts, expected {expected}"
    return "exact", ""


@prop(
    "exactly_once",
    ok("all once", "every item appears once, in results or in errors"),
    interesting("aborted", "fail_fast stopped: items that ran appear once, the rest never started"),
    forbidden("lost or duplicated", "an item is missing, twice, or both result and error"),
)
def exactly_once(v: View) -> Verdict:
    s, verdict = v.s, "all once"
    for i in range(len(s.items)):
        in_results = i < len(v.results) and v.results[i] is not None
        times = v.error_index.count(i) + int(in_results)
        should = 1 if i in v.ran else 0
        if times != should or (should == 0 and s.error_handling == "continue"):
            ran = "ran" if i in v.ran else "never ran"
            return "lost or duplicated", f"item {s.items[i]!r} appears {times} times ({ran})"
        if should == 0:
            verdict = "aborted"
    return verdict, ""


@prop(
    "calls",
    ok("lock: exact", "CallLog: one usage and one node record per success"),
    ok("gil: exact", "plain list: one usage and one node record per success"),
    forbidden("lock: wrong", "CallLog: a record lost, duplicated or mistagged"),
    forbidden("gil: wrong", "plain list: a record lost, duplicated or mistagged"),
)
def calls(v: View) -> Verdict:
    s = v.s
    log = v.run.shared.get(CALLS_KEY, [])
    succeeded = [i for i in range(len(s.items)) if i in v.ran and i not in v.fails_for_good]
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
        return f"{s.call_log}: exact", ""
    return f"{s.call_log}: wrong", (
        f"usage records {usage} and node records {own}, expected {want_usage} and {want_own}"
    )


@prop(
    "bound",
    ok("below cap", "fewer than max_concurrent items were ever in flight"),
    ok("at cap", "max_concurrent items were in flight at once"),
    forbidden("over cap", "more than max_concurrent items were in flight"),
)
def bound(v: View) -> Verdict:
    peak = v.run.journal.max_in_flight
    if peak > v.cap:
        return "over cap", f"{peak} items in flight at once, max_concurrent={v.cap}"
    return ("at cap" if peak == v.cap else "below cap"), ""


@prop(
    "copies",
    ok("within cap", "never more than max_concurrent copies of the chain alive, nor after"),
    forbidden(
        "over cap",
        "more than max_concurrent copies alive at once (one kept by a traceback counts)",
    ),
    forbidden("kept after the run", "more than max_concurrent copies alive after the run"),
)
def copies(v: View) -> Verdict:
    journal = v.run.journal
    if journal.copies_over is not None:
        return "over cap", f"{journal.copies_over}, max_concurrent={v.cap}"
    after = journal.copies_after
    if after is not None and after > v.cap:
        return "kept after the run", f"{after} copies of the chain alive, max_concurrent={v.cap}"
    return "within cap", ""


@prop(
    "fail_fast",
    ok("not exercised", "continue mode, or no item failed"),
    ok(
        "stopped",
        "lowest-index failure raised, nothing submitted after the first failure was seen, "
        "partial output written",
    ),
    forbidden("wrong error", "raised another item's error than the lowest-index failure"),
    forbidden("no error", "an item failed but the batch raised nothing"),
    forbidden("kept submitting", "work was submitted after a failure was seen"),
    forbidden("output lost", "the partial output was not written before raising"),
)
def fail_fast(v: View) -> Verdict:
    s, raised = v.s, v.run.raised
    if v.output is None:  # the harness property let this through: fail_fast raised
        return "output lost", "the batch raised without writing its partial output"
    failed_ran = [i for i in v.ran if i in v.fails_for_good]
    if s.error_handling != "fail_fast" or not failed_ran:
        return "not exercised", ""
    if raised is None:
        return "no error", f"items {failed_ran} failed but nothing was raised"
    if not v.output.get("batch_metadata", {}).get("aborted"):
        return "output lost", "the partial output is not marked aborted"
    lowest = min(failed_ran)
    raised_index = next((e.get("index") for e in v.errors if e.get("exception") is raised), None)
    if raised_index != lowest:
        return "wrong error", (
            f"raised the error of index {raised_index}, the lowest failing index that ran "
            f"is {lowest}"
        )
    seen_failure = False
    for kind, data in v.run.journal.events:
        if kind == "observed" and not data[1]:
            seen_failure = True
        elif kind == "submit" and seen_failure:
            return "kept submitting", "work was submitted after a failure had been observed"
    return "stopped", ""


@prop(
    "harness",
    ok("completed", "the run finished and was classified"),
    forbidden("unexpected exception", "the subject raised something no item raised"),
    forbidden(
        "aborted by the scheduler",
        "deadlock, blocking outside the scheduler, a thread started behind its back, livelock",
    ),
)
def harness(v: View) -> Verdict:
    raised = v.run.raised
    if raised is not None and not isinstance(raised, PlannedFailure):
        return "unexpected exception", f"the subject raised {type(raised).__name__}: {raised}"
    if v.output is None and not (raised is not None and v.s.error_handling == "fail_fast"):
        return "unexpected exception", "the subject wrote no output"
    return "completed", ""


def classify(run: RunRecord) -> tuple[dict[str, str], list[str]]:
    """Each property's outcome for one run, and a sentence for each FORBIDDEN one.

    The harness property comes first: a run it does not call completed is classified by
    it alone, and one without output (fail_fast raised before writing it) only by it and
    fail_fast.
    """
    view = View(run)
    out: dict[str, str] = {}
    why: list[str] = []

    def apply(p: Property) -> None:
        key, because = p.classify(view)
        out[p.name] = key
        if because:
            why.append(f"{p.name}: {because}")

    apply(PROPERTIES["harness"])
    if out["harness"] != "completed":
        return out, why
    for p in PROPERTIES.values():
        if p.name != "harness" and (view.output is not None or p.name == "fail_fast"):
            apply(p)
    return out, why
