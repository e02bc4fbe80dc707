"""Scheduling strategies: random, PCT, bounded DFS, replay, and drawn choices.

Every strategy answers one question at each decision point: which index of ``options``
runs next. ``options`` lists runnable thread ids with the current thread first when it can
continue, then the others in cyclic id order after it, so index 0 is always "no preemption".
"""

from __future__ import annotations

import math
import random
from typing import Optional, Sequence

from ._scheduler import Runtime, _Divergence

__all__ = [
    "DFSStrategy",
    "PCTStrategy",
    "RandomStrategy",
    "ReplayStrategy",
    "Schedule",
    "format_schedule",
    "parse_schedule",
    "pct_iterations",
]


def format_schedule(decisions: Sequence[int]) -> str:
    """The compact schedule string: thread ids picked at each decision, run-length coded.

    ``"0x3.1.2x2"`` means thread 0 at three decisions, then 1, then 2 twice. Decisions
    where only one thread could run are not listed; when the string runs out, every later
    decision keeps the current thread (or, if it cannot run, the next one in id order).

    Example:
        >>> from parabatch.testing import format_schedule
        >>> format_schedule([0, 0, 0, 1, 2, 2])
        '0x3.1.2x2'
    """
    out: list[str] = []
    i, n = 0, len(decisions)
    while i < n:
        j = i
        while j < n and decisions[j] == decisions[i]:
            j += 1
        out.append(str(decisions[i]) if j - i == 1 else f"{decisions[i]}x{j - i}")
        i = j
    return ".".join(out)


def parse_schedule(text: str) -> list[int]:
    """Inverse of :func:`format_schedule`.

    Example:
        >>> from parabatch.testing import parse_schedule
        >>> parse_schedule("0x3.1.2x2")
        [0, 0, 0, 1, 2, 2]
    """
    text = text.strip()
    if not text:
        return []
    out: list[int] = []
    for token in text.split("."):
        tid, sep, count = token.partition("x")
        try:
            t, c = int(tid), int(count) if sep else 1
        except ValueError:
            raise ValueError(
                f"schedule={text!r}: bad token {token!r}; expected 'T' or 'TxN' with "
                "integers T (thread id) and N (repeat count), joined by '.'"
            ) from None
        if t < 0 or c < 1:
            raise ValueError(f"schedule={text!r}: bad token {token!r}; need T >= 0 and N >= 1")
        out.extend([t] * c)
    return out


class Schedule:
    """A schedule drawn as data (by :func:`schedules`): the list of its context switches.

    Each switch is a pair ``(gap, target)``: keep the default for ``gap`` decisions, then at
    the next decision switch to the ``target``-th other runnable thread, counting cyclically
    in id order from the current one (modulo the number of others, so any ``target >= 1``
    is valid). The default keeps the current thread running, or, when it blocked or
    finished, takes the next runnable thread in id order. After the last pair every
    decision is the default.

    So the list's length is the number of deviations from "keep running", and each
    preemption costs one pair: Hypothesis's shrinking (shorter lists first, then smaller
    numbers) shrinks towards the fewest context switches, then the earliest ones.

    Example:
        >>> from parabatch.testing import Schedule
        >>> Schedule([(3, 1)]).decisions(5)  # relative indices at the first 5 decisions
        [0, 0, 0, 1, 0]
    """

    __slots__ = ("switches",)

    def __init__(self, switches: Sequence[tuple[int, int]]) -> None:
        pairs = [(int(g), int(t)) for g, t in switches]
        for g, t in pairs:
            if g < 0 or t < 1:
                raise ValueError(
                    f"switches={pairs!r}: each pair is (gap >= 0, target >= 1), got {(g, t)!r}"
                )
        self.switches: tuple[tuple[int, int], ...] = tuple(pairs)

    def decisions(self, count: int) -> list[int]:
        """The choice code at the first ``count`` decisions: 0 = default, t = target t."""
        out = [0] * count
        pos = 0
        for gap, target in self.switches:
            pos += gap
            if pos >= count:
                break
            out[pos] = target
            pos += 1
        return out

    def __repr__(self) -> str:
        return f"Schedule({list(self.switches)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.switches == self.switches

    def __hash__(self) -> int:
        return hash(self.switches)


class RandomStrategy:
    """Uniformly random among the runnable threads at every decision (shuttle's random)."""

    name = "check_random"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._random = self._rng.random  # a C call: no Python frame on the hot path

    def new_execution(self) -> bool:
        return True

    def choose(self, options: Sequence[int], current: int, step: int) -> int:
        return int(self._random() * len(options))

    def end_execution(self, run: Runtime) -> None:
        pass


class PCTStrategy:
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

    Each run gives every thread a random priority (all above ``depth``) and picks
    ``depth - 1`` change points among the ``k`` steps a run takes (``k`` learnt from the
    runs so far). The highest-priority runnable thread always runs; at the ``i``-th change
    point the running thread drops to priority ``depth - i``. A bug of depth ``d`` is found
    by one run with probability at least ``1 / (n * k**(d-1))``. With several depths the
    runs take them in turn. A thread that yields (sleeps) lets the others go first.
    """

    name = "check_pct"

    def __init__(self, depths: Sequence[int], seed: int, steps_hint: int = 0) -> None:
        self.depths = tuple(depths)
        self.depth = self.depths[0]
        self.current_depth = self.depth
        self.seed = seed
        self._rng = random.Random(seed)
        self._k = steps_hint
        self._runs = 0
        self._priority: dict[int, float] = {}
        self._changes: list[int] = []
        self._next = 0

    def new_execution(self) -> bool:
        self.depth = self.current_depth = self.depths[self._runs % len(self.depths)]
        self._runs += 1
        self._priority.clear()
        k = max(self._k, 1)
        count = min(self.depth - 1, k)
        self._changes = sorted(self._rng.sample(range(1, k + 1), count))
        self._next = 0
        return True

    def _pri(self, tid: int) -> float:
        p = self._priority.get(tid)
        if p is None:
            p = self._priority[tid] = self.depth + self._rng.random()
        return p

    def choose(self, options: Sequence[int], current: int, step: int) -> int:
        changes = self._changes
        while self._next < len(changes) and step >= changes[self._next]:
            self._next += 1
            self._pri(current)
            self._priority[current] = float(self.depth - self._next)
        # A yielding thread is listed last (options[0] is another thread): skip it.
        n = len(options) - 1 if options[0] != current and options[-1] == current else len(options)
        best, best_pri = 0, -1.0
        for i in range(n):
            p = self._pri(options[i])
            if p > best_pri:
                best, best_pri = i, p
        return best

    def end_execution(self, run: Runtime) -> None:
        self._k = max(self._k, run.steps)


def pct_iterations(threads: int, steps: int, depth: int, confidence: float = 0.99) -> int:
    """Runs of :func:`check_pct` needed to find a depth-``depth`` bug with ``confidence``.

    From the PCT bound: one run finds it with probability at least
    ``p = 1 / (threads * steps**(depth - 1))``, so ``N`` runs miss it with probability at
    most ``(1 - p)**N``.

    Example:
        >>> from parabatch.testing import pct_iterations
        >>> pct_iterations(threads=4, steps=50, depth=2, confidence=0.993)
        990
    """
    if threads < 1 or steps < 1 or depth < 1:
        raise ValueError(
            f"threads={threads!r}, steps={steps!r}, depth={depth!r}: each must be >= 1"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: must be strictly between 0 and 1")
    p = 1.0 / (threads * steps ** (depth - 1))
    if p >= 1:
        return 1
    return max(1, math.ceil(math.log(1 - confidence) / math.log1p(-p)))


class _Frame:
    __slots__ = ("index", "options", "pre", "preemptive")

    def __init__(self, options: tuple[int, ...], pre: int, preemptive: bool) -> None:
        self.options = options
        self.index = 0
        self.pre = pre  # preemptions spent before this decision
        self.preemptive = preemptive  # would a non-zero index here be a preemption?


class DFSStrategy:
    """Every schedule with at most ``max_preemptions`` preemptions, depth first.

    A preemption is a switch away from a thread that could have continued; switching
    because the current thread blocked or finished is free. Stateless: each run replays the
    prefix on the stack, then extends it with index 0 (no preemption), and the next run
    advances the deepest decision that still has an allowed alternative. When the stack
    empties, the bounded space is exhausted.
    """

    name = "check_dfs"

    def __init__(self, max_preemptions: int) -> None:
        self.max_preemptions = max_preemptions
        self.exhausted = False
        self._stack: list[_Frame] = []
        self._pos = 0

    def new_execution(self) -> bool:
        self._pos = 0
        return not self.exhausted

    def choose(self, options: Sequence[int], current: int, step: int) -> int:
        i = self._pos
        self._pos += 1
        stack = self._stack
        if i < len(stack):
            f = stack[i]
            if f.options != tuple(options):
                raise _Divergence(
                    f"decision {i}: this run offers threads {list(options)} where an earlier "
                    f"run with the same schedule prefix offered {list(f.options)}; the checked "
                    "function is not deterministic given its schedule"
                )
            return f.index
        pre = 0
        if stack:
            last = stack[-1]
            pre = last.pre + (1 if last.preemptive and last.index else 0)
        # Any pick but the default is a preemption when the current thread could go on
        # (at a yield, the default is another thread and staying is the deviation).
        stack.append(_Frame(tuple(options), pre, current in options))
        return 0

    def end_execution(self, run: Runtime) -> None:
        stack = self._stack
        if run.failure is None and self._pos < len(stack):
            run.fail_divergence(
                f"this run made {self._pos} decisions where an earlier run with the same "
                f"schedule prefix made at least {len(stack)}; the checked function is not "
                "deterministic given its schedule"
            )
        del stack[self._pos :]
        while stack:
            f = stack[-1]
            if f.index + 1 < len(f.options) and (
                f.pre + (1 if f.preemptive else 0) <= self.max_preemptions
            ):
                f.index += 1
                return
            stack.pop()
        self.exhausted = True


class ReplayStrategy:
    """Follows a schedule: absolute thread ids (a string) or relative choices (``Schedule``)."""

    name = "replay"

    def __init__(self, schedule: Optional[Sequence[int]], drawn: Optional[Schedule]) -> None:
        self._ids = list(schedule) if schedule is not None else None
        self._switches = list(drawn.switches) if drawn is not None else None
        self._pos = 0
        self._next_switch = 0  # index into _switches
        self._gap = 0  # default decisions left before that switch

    def new_execution(self) -> bool:
        self._pos = 0
        self._next_switch = 0
        if self._switches:
            self._gap = self._switches[0][0]
        return True

    def choose(self, options: Sequence[int], current: int, step: int) -> int:
        i = self._pos
        self._pos += 1
        if self._switches is not None:
            if self._next_switch >= len(self._switches):
                return 0
            if self._gap:
                self._gap -= 1
                return 0
            target = self._switches[self._next_switch][1]
            self._next_switch += 1
            if self._next_switch < len(self._switches):
                self._gap = self._switches[self._next_switch][0]
            return 1 + (target - 1) % (len(options) - 1)
        assert self._ids is not None
        if i >= len(self._ids):
            return 0
        tid = self._ids[i]
        if tid not in options:
            raise _Divergence(
                f"decision {i}: the schedule picks T{tid} but the runnable threads are "
                f"{[f'T{t}' for t in options]}; the code under test changed, or it is not "
                "deterministic given its schedule"
            )
        return list(options).index(tid)

    def end_execution(self, run: Runtime) -> None:
        if self._ids is not None and run.failure is None and self._pos < len(self._ids):
            run.fail_divergence(
                f"the run ended after {self._pos} decisions but the schedule lists "
                f"{len(self._ids)}; the code under test changed, or it is not deterministic "
                "given its schedule"
            )
