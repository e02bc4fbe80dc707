"""The checks: one runner, several strategies (after shuttle's ``check_*`` and ``replay``)."""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import sys
import threading
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from . import _scheduler, _tracing, _world
from ._errors import (
    BlockedFailure,
    DeadlockFailure,
    NondeterminismFailure,
    RefusedFailure,
    ScheduleFailure,
    SchedulerUsageError,
    StepLimitFailure,
    UncontrolledThreadFailure,
)
from ._replay import check_line
from ._scheduler import CarrierPool, Runtime, Strategy, StressHooks
from ._strategies import (
    DFSStrategy,
    PCTStrategy,
    RandomStrategy,
    ReplayStrategy,
    Schedule,
    format_schedule,
    parse_schedule,
)
from ._trace import CheckResult, Failure, render_trace
from ._world import refuse

__all__ = ["check_dfs", "check_pct", "check_random", "check_stress", "replay"]

#: What ``trace_modules`` accepts: module objects, dotted module names, or file paths.
ModuleSpec = Union[str, ModuleType]

_FAILURE_CLASSES: dict[str, type[ScheduleFailure]] = {
    "exception": ScheduleFailure,
    "deadlock": DeadlockFailure,
    "blocked": BlockedFailure,
    "uncontrolled-thread": UncontrolledThreadFailure,
    "nondeterminism": NondeterminismFailure,
    "step-limit": StepLimitFailure,
    "refused": RefusedFailure,
}

# One controlled (or stress) check per process at a time: the patches are process-wide.
_session_lock = threading.Lock()


@contextlib.contextmanager
def _session(
    controlled: bool, fn: Optional[Callable[..., Any]] = None, traced: bool = False
) -> Iterator[None]:
    if not _session_lock.acquire(blocking=False):
        inside = isinstance(_scheduler._current, Runtime) and _scheduler._current.me() is not None
        if inside:
            raise refuse(
                "a check inside a check",
                "the checked function runs under a scheduler already; checks do not nest",
                depth=4,
            )
        raise SchedulerUsageError(
            "a parabatch.testing check is already running in this process; checks do not "
            "nest (a checked function cannot start a check) and do not run concurrently"
        )
    world = _world.World()
    monitoring = controlled and _tracing.MONITORING
    try:
        if controlled:
            # Installed for the whole check, removed even if it fails: see docs/scheduler.md.
            world.install()
            if fn is not None:
                world.adopt_reachable(fn)
        if traced:
            _tracing.jit_pause()
        if monitoring:
            _tracing.monitoring_start(_is_managed)
        yield
    finally:
        if monitoring:
            _tracing.monitoring_stop()
        if traced:
            _tracing.jit_resume()
        world.uninstall()
        _scheduler.set_current(None)
        _session_lock.release()


@dataclass(frozen=True)
class _Options:
    trace_paths: Optional[tuple[str, ...]]  # None: user code (the default)
    trace_names: Optional[tuple[str, ...]]
    stall_timeout: float
    max_steps: int
    stop_on_failure: bool
    raise_on_failure: bool


def _resolve_modules(modules: Sequence[ModuleSpec]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(modules, (str, ModuleType)):
        modules = [modules]
    paths: list[str] = []
    names: list[str] = []
    for m in modules:
        if isinstance(m, str) and (m.endswith(".py") or os.sep in m):
            paths.append(os.path.normcase(os.path.abspath(m)))
            names.append(m)
            continue
        mod = importlib.import_module(m) if isinstance(m, str) else m
        file = getattr(mod, "__file__", None)
        if not file:
            raise ValueError(f"trace_modules entry {m!r}: module has no source file to trace")
        file = os.path.normcase(os.path.abspath(file))
        if hasattr(mod, "__path__"):  # a package: every file under it
            paths.append(os.path.dirname(file) + os.sep)
        else:
            paths.append(file)
        names.append(mod.__name__)
    return tuple(paths), tuple(names)


def _options(
    trace_modules: Optional[Sequence[ModuleSpec]],
    stall_timeout: float,
    max_steps: int,
    stop_on_failure: bool,
    raise_on_failure: bool,
) -> _Options:
    if not stall_timeout > 0:
        raise ValueError(f"stall_timeout={stall_timeout!r}: must be a number of seconds > 0")
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r}: must be >= 1")
    if trace_modules is None:
        return _Options(None, None, stall_timeout, max_steps, stop_on_failure, raise_on_failure)
    paths, names = _resolve_modules(trace_modules)
    return _Options(paths, names, stall_timeout, max_steps, stop_on_failure, raise_on_failure)


def _check_fn(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn={fn!r}: expected a zero-argument callable (the checked function)")


def _fresh_seed(seed: Optional[int]) -> int:
    if seed is None:
        return random.SystemRandom().randrange(2**32)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed={seed!r}: expected an int or None")
    return seed


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be an integer >= 1")


def _is_managed() -> bool:
    rt = _scheduler._current
    return isinstance(rt, Runtime) and rt.current.ident == threading.get_ident()


def _execute(
    fn: Callable[[], Any], strategy: Strategy, opts: _Options, pool: CarrierPool
) -> Runtime:
    rt = Runtime(strategy, pool=pool, stall_timeout=opts.stall_timeout, max_steps=opts.max_steps)
    point = rt.point

    def traced_point(label: Any) -> None:
        rt.accesses += 1
        point(label)

    paths: Optional[tuple[frozenset[str], tuple[str, ...]]] = None
    if opts.trace_paths is not None:
        paths = (
            frozenset(p for p in opts.trace_paths if not p.endswith(os.sep)),
            tuple(p for p in opts.trace_paths if p.endswith(os.sep)),
        )
    if _tracing.MONITORING:
        _tracing.monitoring_scope(traced_point, paths)
    elif opts.trace_paths is None or opts.trace_paths:
        rt.tracer = _tracing.make_tracer(traced_point, paths)
    _scheduler.set_current(rt)
    try:
        rt.run(fn)
    finally:
        _scheduler.set_current(None)
    strategy.end_execution(rt)
    return rt


def _failure(
    rt: Runtime,
    fn: Callable[..., Any],
    strategy: Strategy,
    seed: Optional[int],
    number: int,
    opts: _Options,
) -> Failure:
    f = rt.failure
    assert f is not None
    schedule = format_schedule(rt.decisions[: rt.last_nondefault])
    details = f.details
    if rt.leaked:
        names = ", ".join(t.name for t in rt.leaked)
        details += (
            f"\nThreads left running (blocked outside the scheduler's control): {names}. "
            "They are daemon threads; they stop at their next scheduling point."
        )
    return Failure(
        kind=f.kind,
        message=f.message,
        strategy=strategy.name,
        seed=seed,
        schedule=schedule,
        trace=render_trace(rt),
        replay=check_line(fn, schedule, opts.trace_names),
        details=details,
        thread=f.thread,
        exception=f.exception,
        preemptions=rt.preemptions,
        switches=rt.switches,
        steps=rt.steps,
        schedule_number=number,
    )


def _run_check(
    fn: Callable[[], Any],
    strategy: Strategy,
    iterations: int,
    opts: _Options,
    seed: Optional[int],
) -> CheckResult:
    _check_fn(fn)
    explored = failures = max_steps = max_threads = 0
    choices = accesses = explicit = 0
    points: list[int] = []
    first: Optional[Failure] = None
    first_at: Optional[int] = None
    per_depth: dict[int, list[int]] = {}
    pool = CarrierPool()
    traced = opts.trace_paths is None or bool(opts.trace_paths)
    with _session(controlled=True, fn=fn, traced=traced), contextlib.closing(pool):
        for _ in range(iterations):
            if not strategy.new_execution():
                break
            depth = getattr(strategy, "current_depth", None)
            rt = _execute(fn, strategy, opts, pool)
            explored += 1
            max_steps = max(max_steps, rt.steps)
            max_threads = max(max_threads, len(rt.threads))
            choices += len(rt.decisions)
            accesses += rt.accesses
            explicit += rt.explicit
            for t in rt.threads:
                if t.tid >= len(points):
                    points.append(0)
                points[t.tid] = max(points[t.tid], t.points)
            if depth is not None:
                runs = per_depth.setdefault(depth, [0, 0])
                runs[0] += 1
                runs[1] += rt.failure is not None
            if rt.failure is not None:
                failures += 1
                if first is None:
                    first = _failure(rt, fn, strategy, seed, explored, opts)
                    first_at = explored
                if opts.stop_on_failure:
                    break
    result = CheckResult(
        ok=failures == 0,
        strategy=strategy.name,
        schedules_explored=explored,
        exhausted=bool(getattr(strategy, "exhausted", False)),
        failure=first,
        failures=failures,
        first_failure_at=first_at,
        seed=seed,
        max_steps=max_steps,
        max_threads=max_threads,
        choices=choices,
        points_per_thread=tuple(points),
        shared_accesses=accesses,
        explicit_points=explicit,
        traced=_traced_text(opts),
        per_depth={d: (r[0], r[1]) for d, r in sorted(per_depth.items())},
    )
    if first is not None and opts.raise_on_failure:
        raise _FAILURE_CLASSES[first.kind](first, result) from first.exception
    return result


def _traced_text(opts: _Options) -> str:
    if opts.trace_names is None:
        return "user code"
    if not opts.trace_names:
        return "nothing"
    return ", ".join(opts.trace_names)


def check_random(
    fn: Callable[[], Any],
    iterations: int = 100,
    seed: Optional[int] = None,
    *,
    trace_modules: Optional[Sequence[ModuleSpec]] = None,
    stall_timeout: float = 2.0,
    max_steps: int = 100_000,
    stop_on_failure: bool = True,
    raise_on_failure: bool = True,
) -> CheckResult:
    """Run ``fn`` under ``iterations`` uniformly random schedules.

    At every decision each runnable thread is equally likely to run next. ``fn`` is the
    checked function: it takes no arguments, starts its threads with :func:`spawn` or
    :class:`ControlledExecutor`, and raises (an ``AssertionError``, say) on a bad outcome.

    Args:
        fn: the checked function.
        iterations: how many schedules to run.
        seed: seeds the schedule choices; None draws one (reported on failure).
        trace_modules: where shared-state accesses become scheduling points (via
            ``sys.settrace``): None (default) traces the user code the function reaches
            (not the standard library, installed packages or parabatch); a list of modules
            (objects, dotted names, or file paths) traces those only; ``()`` traces nothing.
        stall_timeout: seconds of the running thread's own time (its CPU time, or time
            asleep not waiting for a CPU or another thread) without reaching a scheduling
            point, after which it is reported as blocked outside the scheduler's control.
            A thread asleep in the kernel and never woken is reported sooner; where
            ``/proc`` is missing (not Linux) the limit is in wall time.
        max_steps: scheduling points one run may pass before it is reported as a livelock.
        stop_on_failure: stop at the first failing schedule (default); False runs them all
            and counts the failures (for detection-rate measurements).
        raise_on_failure: raise a :class:`ScheduleFailure` on failure (default); False only
            returns the :class:`CheckResult` (for "must be caught" tests).

    Example:
        >>> from parabatch.testing import check_random, checkpoint, spawn
        >>> def lost_update():
        ...     box = {"n": 0}
        ...     def incr():
        ...         v = box["n"]
        ...         checkpoint("read")
        ...         box["n"] = v + 1
        ...     threads = [spawn(incr), spawn(incr)]
        ...     for t in threads:
        ...         t.join()
        ...     assert box["n"] == 2, box
        >>> r = check_random(lost_update, iterations=100, seed=7, raise_on_failure=False)
        >>> r.ok, r.failure.kind
        (False, 'exception')
    """
    _positive("iterations", iterations)
    opts = _options(trace_modules, stall_timeout, max_steps, stop_on_failure, raise_on_failure)
    seed = _fresh_seed(seed)
    return _run_check(fn, RandomStrategy(seed), iterations, opts, seed)


def check_pct(
    fn: Callable[[], Any],
    iterations: int = 100,
    depth: Optional[int] = None,
    seed: Optional[int] = None,
    *,
    trace_modules: Optional[Sequence[ModuleSpec]] = None,
    stall_timeout: float = 2.0,
    max_steps: int = 100_000,
    stop_on_failure: bool = True,
    raise_on_failure: bool = True,
) -> CheckResult:
    """Run ``fn`` under ``iterations`` PCT schedules for bugs of ``depth`` ordering constraints.

    Probabilistic concurrency testing (Burckhardt et al., 2010): random thread priorities
    plus ``depth - 1`` priority-change points. One run finds a depth-``d`` bug with
    probability at least ``1 / (n * k**(d-1))`` for ``n`` threads and ``k`` steps; size
    ``iterations`` with :func:`pct_iterations`. With ``depth=None`` (the default) the runs
    take depths 1, 2 and 3 in turn, so bugs needing up to three ordering constraints are
    found without knowing their depth; ``result.per_depth`` gives runs and failures per
    depth. Other arguments as :func:`check_random`.

    Example:
        >>> from parabatch.testing import check_pct, checkpoint, spawn
        >>> def lost_update():
        ...     box = {"n": 0}
        ...     def incr():
        ...         v = box["n"]
        ...         checkpoint("read")
        ...         box["n"] = v + 1
        ...     for t in [spawn(incr), spawn(incr)]:
        ...         t.join()
        ...     assert box["n"] == 2, box
        >>> check_pct(lost_update, iterations=200, depth=2, seed=3, raise_on_failure=False).ok
        False
    """
    _positive("iterations", iterations)
    if depth is not None:
        _positive("depth", depth)
    opts = _options(trace_modules, stall_timeout, max_steps, stop_on_failure, raise_on_failure)
    seed = _fresh_seed(seed)
    depths = (1, 2, 3) if depth is None else (depth,)
    return _run_check(fn, PCTStrategy(depths, seed), iterations, opts, seed)


def check_dfs(
    fn: Callable[[], Any],
    max_preemptions: int = 2,
    *,
    max_schedules: int = 100_000,
    trace_modules: Optional[Sequence[ModuleSpec]] = None,
    stall_timeout: float = 2.0,
    max_steps: int = 100_000,
    stop_on_failure: bool = True,
    raise_on_failure: bool = True,
) -> CheckResult:
    """Run ``fn`` under every schedule with at most ``max_preemptions`` preemptions.

    A preemption is switching away from a thread that could have continued; switches
    because a thread blocked or finished are free. "2 or 3 catches most bugs" (loom).
    ``result.exhausted`` says whether the whole bounded space was run (at most
    ``max_schedules``); ``result.certified`` says whether that is a certificate: passed,
    exhausted, and the runs had something to interleave (a decision with a choice, and
    shared state touched between points) — for the scheduling points it has, see
    docs/scheduler.md for what that does not cover. ``fn`` must be deterministic given its
    schedule. Other arguments as :func:`check_random`.

    Example:
        >>> import threading
        >>> from parabatch.testing import check_dfs
        >>> def locked_update():
        ...     box, lock = {"n": 0}, threading.Lock()
        ...     def incr():
        ...         with lock:
        ...             v = box["n"]
        ...             box["n"] = v + 1
        ...     threads = [threading.Thread(target=incr) for _ in range(2)]
        ...     for t in threads:
        ...         t.start()
        ...     for t in threads:
        ...         t.join()
        ...     assert box["n"] == 2, box
        >>> r = check_dfs(locked_update, max_preemptions=2)
        >>> r.ok, r.exhausted, r.certified
        (True, True, True)
        >>> check_dfs(locked_update, trace_modules=()).certified  # nothing interleaved
        False
    """
    if isinstance(max_preemptions, bool) or not isinstance(max_preemptions, int):
        raise TypeError(f"max_preemptions={max_preemptions!r}: expected an int >= 0")
    if max_preemptions < 0:
        raise ValueError(f"max_preemptions={max_preemptions!r}: must be >= 0")
    _positive("max_schedules", max_schedules)
    opts = _options(trace_modules, stall_timeout, max_steps, stop_on_failure, raise_on_failure)
    return _run_check(fn, DFSStrategy(max_preemptions), max_schedules, opts, None)


def replay(
    fn: Callable[[], Any],
    schedule: Union[str, Schedule],
    *,
    trace_modules: Optional[Sequence[ModuleSpec]] = None,
    stall_timeout: float = 2.0,
    max_steps: int = 100_000,
    raise_on_failure: bool = True,
) -> CheckResult:
    """Run ``fn`` once under ``schedule``: a string from a failure report, or a :class:`Schedule`.

    The same function and schedule give the same trace every time. Use it with the line a
    failure prints, or with :func:`schedules` under Hypothesis's ``@given``.

    Example:
        >>> from parabatch.testing import replay, spawn
        >>> def fn():
        ...     out = []
        ...     for t in [spawn(out.append, 1), spawn(out.append, 2)]:
        ...         t.join()
        ...     assert out == [1, 2], out
        >>> replay(fn, "").ok
        True
        >>> print(replay(fn, "0x3.2", raise_on_failure=False).failure.message)
        the checked function raised AssertionError: [2, 1]
    """
    opts = _options(trace_modules, stall_timeout, max_steps, True, raise_on_failure)
    if isinstance(schedule, Schedule):
        strategy = ReplayStrategy(None, schedule)
    elif isinstance(schedule, str):
        strategy = ReplayStrategy(parse_schedule(schedule), None)
    else:
        raise TypeError(
            f"schedule={schedule!r}: expected a schedule string (as a failure prints it) "
            "or a parabatch.testing.Schedule"
        )
    return _run_check(fn, strategy, 1, opts, None)


def check_stress(
    fn: Callable[[], Any],
    iterations: int = 1000,
    *,
    switch_interval: float = 1e-6,
    yield_at_points: bool = False,
    join_timeout: float = 10.0,
    stop_on_failure: bool = False,
    raise_on_failure: bool = True,
) -> CheckResult:
    """Run ``fn`` ``iterations`` times on free-running real threads: the baseline.

    No schedule is controlled: :func:`spawn` starts real threads, :class:`Lock` and
    :class:`ControlledExecutor` are their real counterparts, and the interpreter switches
    threads every ``switch_interval`` seconds (``sys.setswitchinterval``, restored after).
    With ``yield_at_points`` each scheduling point calls ``time.sleep(0)``, releasing the
    GIL as a real I/O call would. ``result.failures`` counts failing iterations. Failures
    cannot be replayed: no schedule was recorded.

    Example:
        >>> from parabatch.testing import check_stress, spawn
        >>> def fn():
        ...     out = []
        ...     for t in [spawn(out.append, 1), spawn(out.append, 2)]:
        ...         t.join()
        ...     assert sorted(out) == [1, 2]
        >>> check_stress(fn, iterations=20).failures
        0
    """
    _check_fn(fn)
    _positive("iterations", iterations)
    if not switch_interval > 0:
        raise ValueError(f"switch_interval={switch_interval!r}: must be > 0 seconds")
    failures = 0
    explored = 0
    first: Optional[Failure] = None
    first_at: Optional[int] = None
    old_interval = sys.getswitchinterval()
    with _session(controlled=False):
        sys.setswitchinterval(switch_interval)
        try:
            for _ in range(iterations):
                hooks = StressHooks(yield_at_points)
                _scheduler.set_current(hooks)
                try:
                    fn()
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        raise
                    hooks.errors.insert(0, exc)
                finally:
                    _scheduler.set_current(None)
                    hooks.gate.set()
                    for h in hooks.handles:
                        h.join(join_timeout)
                explored += 1
                if hooks.errors:
                    failures += 1
                    if first is None:
                        first = _stress_failure(hooks.errors[0], explored, yield_at_points)
                        first_at = explored
                    if stop_on_failure:
                        break
        finally:
            sys.setswitchinterval(old_interval)
    result = CheckResult(
        ok=failures == 0,
        strategy="check_stress",
        schedules_explored=explored,
        failure=first,
        failures=failures,
        first_failure_at=first_at,
    )
    if first is not None and raise_on_failure:
        raise ScheduleFailure(first, result) from first.exception
    return result


def _stress_failure(exc: BaseException, number: int, yielded: bool) -> Failure:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Failure(
        kind="exception",
        message=f"{type(exc).__name__}: {exc}",
        strategy="check_stress",
        seed=None,
        schedule="",
        trace=f"  trace: none (free-running threads, yield_at_points={yielded})",
        replay="not replayable: free-running threads record no schedule; find a replayable "
        "one with parabatch.testing.check_random(fn, ...) or check_dfs(fn)",
        details=tb,
        exception=exc,
        schedule_number=number,
    )
