"""Results and failure reports: what ran, in which order, and the line that replays it."""

from __future__ import annotations

import linecache
import os
from dataclasses import dataclass, field
from types import CodeType
from typing import Optional

from ._scheduler import Label, Runtime

__all__ = ["CheckResult", "Failure", "render_trace"]

_MAX_SEGMENT_LABELS = 12
_MAX_SEGMENTS = 60


def _label_text(label: Label) -> str:
    if isinstance(label, str):
        return repr(label)
    a, b = label
    if a is None:
        return str(b)
    if isinstance(a, CodeType):
        src = linecache.getline(a.co_filename, b).strip()
        where = f"{os.path.basename(a.co_filename)}:{b}"
        return f"{where} `{src}`" if src else where
    return repr(label)


def render_trace(run: Runtime) -> str:
    """One line per stretch a thread ran: the points it passed, in order."""
    segments: list[tuple[int, list[str]]] = []
    for tid, label in run.events:
        if not segments or segments[-1][0] != tid:
            segments.append((tid, []))
        segments[-1][1].append(_label_text(label))
    lines = []
    for tid, labels in segments:
        if len(labels) > _MAX_SEGMENT_LABELS:
            hidden = len(labels) - _MAX_SEGMENT_LABELS + 2
            labels = [*labels[: _MAX_SEGMENT_LABELS - 3], f"... {hidden} more ...", *labels[-1:]]
        lines.append(f"    T{tid:<3} {' -> '.join(labels)}")
    if len(lines) > _MAX_SEGMENTS:
        cut = len(lines) - _MAX_SEGMENTS
        lines = [*lines[:20], f"    ... {cut} more stretches ...", *lines[-(_MAX_SEGMENTS - 20) :]]
    who = [f"    T{t.tid:<3} {t.origin}" for t in run.threads]
    return "  threads:\n" + "\n".join(who) + "\n  trace:\n" + "\n".join(lines)


@dataclass(frozen=True)
class Failure:
    """A failing schedule and everything needed to understand and replay it.

    ``str(failure)`` is the full report: strategy, seed, schedule string, the failure, a
    readable trace and the one line of Python that replays it.

    Attributes:
        kind: ``"exception"``, ``"deadlock"``, ``"blocked"``, ``"uncontrolled-thread"``,
            ``"nondeterminism"`` or ``"step-limit"``.
        message: one line saying what went wrong.
        schedule: the schedule string for :func:`replay` (see :func:`format_schedule`).
        trace: which thread ran between which scheduling points.
        replay: the line of Python that reproduces the failure.
        exception: what the failing thread raised, if anything.
        preemptions: switches away from a thread that could have continued.
        switches: all context switches in the run.
        schedule_number: the 1-based number of the failing schedule in its check.

    Example:
        >>> from parabatch.testing import replay
        >>> def fn():
        ...     raise AssertionError("bad outcome")
        >>> f = replay(fn, "", raise_on_failure=False).failure
        >>> f.kind, f.message
        ('exception', 'the checked function raised AssertionError: bad outcome')
    """

    kind: str
    message: str
    strategy: str
    seed: Optional[int]
    schedule: str
    trace: str
    replay: str
    details: str = ""
    thread: str = ""
    exception: Optional[BaseException] = field(default=None, compare=False)
    preemptions: int = 0
    switches: int = 0
    steps: int = 0
    schedule_number: int = 1

    def __str__(self) -> str:
        seed = "" if self.seed is None else f", seed={self.seed}"
        head = (
            f"{self.strategy} found a failing schedule (schedule #{self.schedule_number}{seed})\n"
            f"  failure: {self.message}\n"
            f"  schedule: {self.schedule!r} ({self.preemptions} preemptions, "
            f"{self.switches} context switches, {self.steps} steps)\n"
        )
        details = ""
        if self.details:
            details = "  " + self.details.rstrip().replace("\n", "\n  ") + "\n"
        return f"{head}{self.trace}\n{details}  replay it with:\n    {self.replay}"


@dataclass(frozen=True)
class CheckResult:
    """What a check did: how many schedules it ran, whether it exhausted them, what failed.

    Attributes:
        ok: no failing schedule was found.
        strategy: the check that ran (``"check_dfs"``...).
        schedules_explored: runs completed.
        exhausted: (``check_dfs``) every schedule within the bound was run; with ``ok``
            this certifies the function for that bound.
        failure: the first failing schedule, or None.
        failures: failing runs (more than 1 only with ``stop_on_failure=False``).
        first_failure_at: the 1-based number of the run that first failed, or None.
        seed: the seed used (random strategies).
        max_steps: the most scheduling points one run passed (``k`` for
            :func:`pct_iterations`).
        max_threads: the most managed threads one run had (``n`` for
            :func:`pct_iterations`).
        choices: decisions, over all runs, at which more than one thread could run.
        points_per_thread: for each thread id, the most scheduling points it passed in
            one run.
        shared_accesses: traced reads and writes of shared state, over all runs.
        explicit_points: ``checkpoint``/``simulated_call`` points passed, over all runs.
        traced: what was traced (``"user code"``, module names, or ``"nothing"``).
        per_depth: (``check_pct``) depth -> (runs, failing runs).

    ``certified`` is what a passing, exhausted ``check_dfs`` means only when the runs had
    something to interleave; ``vacuous`` says why not otherwise, and ``str(result)``
    prints it.

    Example:
        >>> from parabatch.testing import check_dfs
        >>> r = check_dfs(lambda: None, max_preemptions=2)
        >>> r.ok, r.exhausted, r.schedules_explored, r.certified
        (True, True, 1, False)
        >>> r.vacuous
        'no decision had more than one runnable thread'
    """

    ok: bool
    strategy: str
    schedules_explored: int
    exhausted: bool = False
    failure: Optional[Failure] = None
    failures: int = 0
    first_failure_at: Optional[int] = None
    seed: Optional[int] = None
    max_steps: int = 0
    max_threads: int = 0
    choices: int = 0
    points_per_thread: tuple[int, ...] = ()
    shared_accesses: int = 0
    explicit_points: int = 0
    traced: str = "user code"
    per_depth: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def failure_rate(self) -> float:
        """``failures / schedules_explored`` (0.0 when nothing ran)."""
        return self.failures / self.schedules_explored if self.schedules_explored else 0.0

    @property
    def vacuous(self) -> Optional[str]:
        """Why the runs could not show a race, or None when they could."""
        if not self.schedules_explored:
            return "no schedule ran"
        if self.choices == 0:
            return "no decision had more than one runnable thread"
        if self.shared_accesses == 0 and self.explicit_points == 0:
            return (
                f"no shared state was touched between scheduling points (traced: "
                f"{self.traced}; no checkpoint or simulated_call)"
            )
        return None

    @property
    def certified(self) -> bool:
        """``check_dfs`` passed, exhausted its bound, and the runs had something to interleave."""
        return self.ok and self.exhausted and self.vacuous is None

    def coverage(self) -> str:
        """One line: threads, points per thread, decisions with a choice, accesses traced."""
        per = " ".join(f"T{i}:{n}" for i, n in enumerate(self.points_per_thread))
        return (
            f"{self.max_threads} threads; points per thread {per or '-'}; "
            f"{self.choices:,} decisions with a choice; {self.shared_accesses:,} shared "
            f"accesses traced ({self.traced}); {self.explicit_points:,} explicit points"
        )

    def __str__(self) -> str:
        if self.failure is not None:
            verdict = f"FAILED at schedule {self.first_failure_at}"
        elif self.exhausted:
            verdict = "ok, bounded space exhausted"
        else:
            verdict = "ok"
        lines = [f"{self.strategy}: {self.schedules_explored:,} schedules, {verdict}"]
        lines.append("  covered: " + self.coverage())
        for depth, (runs, failed) in self.per_depth.items():
            lines.append(f"  depth {depth}: {runs:,} runs, {failed:,} failing")
        why = self.vacuous
        if why is not None and self.failure is None:
            lines.append(f"  NOT A CERTIFICATE: {why}")
        elif self.certified:
            lines.append("  certificate: every schedule within the bound passed")
        if self.failure is not None:
            lines.append(str(self.failure))
        return "\n".join(lines)
