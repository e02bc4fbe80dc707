"""The controlled scheduler: managed threads that run one at a time, handing over a baton.

Model. Every thread of a controlled run is a *managed thread*: a real OS thread that runs
only while it holds its baton (a ``threading.Lock`` per thread, acquired = "not your turn").
The checked function itself is managed thread 0. A thread gives the baton away only at a
*scheduling point* (``checkpoint``, ``simulated_call``, ``time.sleep``, ``spawn``,
``ControlledExecutor.submit``, acquiring a scheduler ``Lock``, a traced line) or when it
blocks on a scheduler primitive or finishes. At each point with more than one runnable
thread the strategy picks which one continues; the pick is recorded, so the run can be
replayed from the list of picks alone.

Handing over costs one ``release`` of the next thread's baton and one ``acquire`` of our
own: two OS operations, no allocation. Continuing the current thread costs nothing but the
strategy's choice.

The caller of a check does not run managed code: it supervises. It waits for the run to
finish and, if the baton holder stops passing scheduling points, reports it as blocked on
something the scheduler does not control, with its stack; the verdict is judged on the
holder's own behaviour, not on wall time (``_StallJudge``).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any, Callable, NamedTuple, Optional, Protocol, Sequence, Union

from ._errors import SchedulerUsageError

__all__ = [
    "ManagedThread",
    "Runtime",
    "Strategy",
    "ThreadHandle",
    "checkpoint",
    "simulated_call",
    "spawn",
]

# The active controlled run, or the hooks of a stress run, or None. Read first by every
# scheduling point, so that ``checkpoint()`` costs one global read when nothing runs.
_current: Optional[Union[Runtime, StressHooks]] = None

# Originals, captured at import: the scheduler patches these during a controlled run.
_real_sleep = time.sleep
_real_monotonic = time.monotonic
_real_lock = threading.Lock
_real_start_new_thread = _thread.start_new_thread
_get_ident = threading.get_ident

RUNNABLE = 0
BLOCKED = 1
FINISHED = 2

# Per OS thread: the ManagedThread it carries (lets a thread left over from an abandoned
# run recognise itself and unwind).
_tls = threading.local()

Label = Any  # str (user label) | tuple[None, str] (event) | tuple[CodeType, int] (location)


class _Abort(BaseException):
    """Unwinds a managed thread whose run has been abandoned (failure found elsewhere)."""


class _Divergence(Exception):
    """A strategy cannot follow its schedule: the run took another path."""


class Strategy(Protocol):
    """What decides, at each scheduling point, which runnable thread continues.

    ``options`` lists thread ids in preference order: the current thread first when it can
    continue, then the others in cyclic id order after it. ``choose`` returns an index into
    ``options``; 0 therefore always means "no preemption".
    """

    name: str

    def new_execution(self) -> bool: ...

    def choose(self, options: Sequence[int], current: int, step: int) -> int: ...

    def end_execution(self, run: Runtime) -> None: ...


class ThreadHandle(Protocol):
    """What :func:`spawn` returns: ``join`` it like a ``threading.Thread``.

    Example:
        >>> from parabatch.testing import spawn
        >>> seen = []
        >>> handle = spawn(seen.append, "hello from a thread")
        >>> handle.join()
        >>> handle.is_alive(), seen
        (False, ['hello from a thread'])
    """

    @property
    def name(self) -> str: ...

    def join(self, timeout: Optional[float] = None) -> None: ...

    def is_alive(self) -> bool: ...


class _Waitable(Protocol):
    """An object managed threads can block on (a lock, a future, a thread...)."""

    _sched_waiters: list[tuple[ManagedThread, int]]


class Carrier:
    """A reusable OS thread that carries one managed thread after another.

    Starting an OS thread costs more than a whole schedule of handoffs, so a check keeps
    its carriers between runs. ``baton`` is the lock the carried thread parks
    on; it is always acquired (locked) when the carrier is between jobs.
    """

    __slots__ = ("baton", "ident", "job", "native_id", "pool")

    def __init__(self, pool: CarrierPool, number: int) -> None:
        self.pool = pool
        self.job: Optional[ManagedThread] = None
        self.native_id: Optional[int] = None
        self.ident = 0
        self.baton = _real_lock()
        self.baton.acquire()
        # A raw thread, not a threading.Thread: during a check threading's own primitives
        # are the controlled ones, and a carrier must not depend on them.
        ready = _real_lock()
        ready.acquire()
        _real_start_new_thread(self._boot, (ready,))
        ready.acquire()

    def _boot(self, ready: Any) -> None:
        self.ident = _get_ident()
        get_native_id = getattr(threading, "get_native_id", None)
        if get_native_id is not None:
            self.native_id = get_native_id()
        ready.release()
        self._loop()

    def _loop(self) -> None:
        pool = self.pool
        while True:
            self.baton.acquire()  # the first turn of the next job, or the pool closing
            job = self.job
            if job is None:
                return
            job.body()
            self.job = None
            with pool.lock:
                if pool.closed:
                    return
                pool.free.append(self)


class CarrierPool:
    """The carriers of one check; ``close`` stops the idle ones (busy ones stop after)."""

    __slots__ = ("closed", "count", "free", "lock")

    def __init__(self) -> None:
        self.free: list[Carrier] = []
        self.lock = _real_lock()
        self.closed = False
        self.count = 0

    def get(self, job: ManagedThread) -> Carrier:
        with self.lock:
            carrier = self.free.pop() if self.free else None
        if carrier is None:
            self.count += 1
            carrier = Carrier(self, self.count)
        carrier.job = job
        return carrier

    def close(self) -> None:
        with self.lock:
            self.closed = True
            idle, self.free = self.free, []
        for c in idle:
            c.baton.release()  # job is None: the loop returns


class ManagedThread:
    """One thread of a controlled run. Also the handle ``spawn`` returns."""

    __slots__ = (
        "_sched_waiters",
        "args",
        "baton",
        "blocked_label",
        "carrier",
        "daemon",
        "deadline",
        "epoch",
        "ident",
        "name",
        "origin",
        "points",
        "rt",
        "status",
        "target",
        "thread_object",
        "tid",
        "timed_out",
        "vtime",
        "waiting_on",
    )

    def __init__(
        self, rt: Runtime, tid: int, target: Callable[..., Any], args: tuple[Any, ...], name: str
    ) -> None:
        self.rt = rt
        self.tid = tid
        self.name = name
        self.target = target
        self.args = args
        self.status = RUNNABLE
        self._sched_waiters: list[tuple[ManagedThread, int]] = []
        self.epoch = 0
        self.deadline: Optional[float] = None
        self.timed_out = False
        self.vtime = 0.0
        self.blocked_label = ""
        self.origin = ""
        self.daemon = False
        self.points = 0
        self.waiting_on: Sequence[Any] = ()
        # The threading.Thread this thread runs for (Thread.start), or one made on demand
        # for threading.current_thread(); None until needed.
        self.thread_object: Optional[threading.Thread] = None
        self.carrier = rt.pool.get(self)
        self.baton = self.carrier.baton
        self.ident = self.carrier.ident

    def __repr__(self) -> str:
        return f"<ManagedThread {self.name}>"

    def body(self) -> None:
        """Run by the carrier once this thread's first turn has come."""
        rt = self.rt
        _tls.thread = self
        try:
            if rt.aborted:
                return
            rt.events.append((self.tid, _START))
            if rt.tracer is not None:
                sys.settrace(rt.tracer)
            self.target(*self.args)
        except _Abort:
            pass
        except BaseException as exc:
            # While a run is abandoned, unwinding code (a finally re-taking a lock) may
            # raise in turn: an artefact of the unwinding, not an outcome of the run.
            if not rt.aborted:
                rt.thread_raised(self, exc)
        finally:
            if rt.tracer is not None:
                sys.settrace(None)
            _tls.thread = None
            rt.finish(self)

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait until this thread finishes (a blocking wait in the scheduler's model)."""
        rt = self.rt
        if self.status == FINISHED:
            return
        me = rt.me()
        if me is None:  # not a managed thread: poll, on the real clock
            end = None if timeout is None else _real_monotonic() + timeout
            while self.status != FINISHED and (end is None or _real_monotonic() < end):
                _real_sleep(0.001)
            return
        while self.status != FINISHED:
            if not rt.block(me, (self,), f"join {self.name}", timeout):
                return

    def is_alive(self) -> bool:
        """True until the thread's target has returned."""
        return self.status != FINISHED


class _RealThreadHandle:
    """``spawn`` outside a controlled run: a plain daemon thread; its exception is kept."""

    __slots__ = ("_hooks", "_thread", "exception")

    def __init__(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        name: str,
        hooks: Optional[StressHooks],
    ) -> None:
        self.exception: Optional[BaseException] = None
        self._hooks = hooks
        self._thread = threading.Thread(target=self._run, args=(target, args), name=name)
        self._thread.daemon = True
        self._thread.start()

    def _run(self, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if self._hooks is not None:
            self._hooks.gate.wait()
        try:
            target(*args)
        except BaseException as exc:
            self.exception = exc
            if self._hooks is None:
                raise
            self._hooks.errors.append(exc)

    @property
    def name(self) -> str:
        return self._thread.name

    def join(self, timeout: Optional[float] = None) -> None:
        if self._hooks is not None:
            self._hooks.gate.set()
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()


class StressHooks:
    """Installed during ``check_stress``: scheduling points may yield the GIL for real.

    Spawned threads wait at a start gate that opens at the first ``join`` (or when the
    checked function returns), so threads spawned one after another start together, as
    behind a barrier, and their race windows overlap as much as free threads allow.
    """

    controlled = False

    def __init__(self, yield_at_points: bool) -> None:
        self.gate = threading.Event()
        self.yield_at_points = yield_at_points
        self.errors: list[BaseException] = []
        self.handles: list[_RealThreadHandle] = []

    def point(self, label: Label) -> None:
        if self.yield_at_points:
            _real_sleep(0)

    def io(self, label: str, latency: float) -> None:
        _real_sleep(latency if latency > 0 else 0)


def _event(text: str) -> tuple[None, str]:
    return (None, text)


_START = _event("start")


_STDLIB_DIR = os.path.dirname(threading.__file__)
_THIS_DIR = os.path.dirname(__file__)


def _is_library_file(filename: str) -> bool:
    return (
        filename.startswith(_STDLIB_DIR) and "site-packages" not in filename
    ) or filename.startswith(_THIS_DIR)


def describe_caller(frame: Optional[FrameType]) -> str:
    """``file:line in func`` of the first frame outside the stdlib and this package."""
    first = frame
    while frame is not None and _is_library_file(frame.f_code.co_filename):
        frame = frame.f_back
    chosen = frame if frame is not None else first
    if chosen is None:
        return "<unknown>"
    where = f"{chosen.f_code.co_filename}:{chosen.f_lineno} in {chosen.f_code.co_name}"
    if first is not None and first is not chosen:
        where += f" (via {os.path.basename(first.f_code.co_filename)}:{first.f_lineno})"
    return where


class RunFailure:
    """What went wrong in one run, before it is dressed up as a public ``Failure``."""

    __slots__ = ("details", "exception", "kind", "message", "thread")

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        thread: str = "",
        exception: Optional[BaseException] = None,
        details: str = "",
    ) -> None:
        self.kind = kind
        self.message = message
        self.thread = thread
        self.exception = exception
        self.details = details


class Runtime:
    """One controlled execution of the checked function under one strategy."""

    controlled = True

    def __init__(
        self,
        strategy: Strategy,
        *,
        tracer: Optional[Callable[..., Any]] = None,
        pool: CarrierPool,
        stall_timeout: float = 2.0,
        max_steps: int = 100_000,
    ) -> None:
        self.strategy = strategy
        self.pool = pool
        self.unwound = _real_lock()  # released when an unwound thread has finished
        self.unwound.acquire()
        self.tracer = tracer
        self.stall_timeout = stall_timeout
        self.max_steps = max_steps
        self.threads: list[ManagedThread] = []
        self.by_ident: dict[int, ManagedThread] = {}
        self.current: ManagedThread = None  # type: ignore[assignment]  # set by run()
        self.steps = 0
        self.decisions: list[int] = []
        self.last_nondefault = 0  # len(decisions) up to the last non-default pick
        self.preemptions = 0
        self.switches = 0
        self.events: list[tuple[int, Label]] = []
        self.failure: Optional[RunFailure] = None
        self.aborted = False
        self.unwinding = False
        self.leaked: list[ManagedThread] = []
        self.done = _real_lock()
        self.done.acquire()
        self.executors: list[Any] = []
        # Coverage: shared-state accesses traced, explicit points (checkpoint,
        # simulated_call) passed, and decisions that had a choice (len(decisions)).
        self.accesses = 0
        self.explicit = 0
        # Pools of the threading world made or reached in this run: id(pool) -> shadow.
        self.shadow_pools: dict[int, tuple[Any, Any]] = {}
        self.ended = False  # the checked function and every non-daemon thread finished
        self._names: dict[int, tuple[object, str]] = {}
        self._counters: dict[str, int] = {}
        self._opts: list[int] = []

    # ----------------------------------------------------------------- supervisor side

    def run(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` as managed thread 0 and supervise until every managed thread is done."""
        t0 = self.new_thread(fn, (), "T0")
        t0.origin = "the checked function"
        self.current = t0
        t0.baton.release()
        self._supervise()
        if self.aborted:
            self._unwind()

    def _progress(self) -> tuple[int, int, int]:
        return (self.steps, self.switches, len(self.events))

    def _supervise(self) -> None:
        """Wait for the run to end; report the baton holder if it blocks outside the model.

        The verdict rests on what the holder itself does, read from ``/proc`` (Linux), never
        on how long the machine took: see :class:`_StallJudge`. Where ``/proc`` does not
        show the holder, ``stall_timeout`` of wall time without progress is the limit.
        """
        poll = min(0.05, self.stall_timeout)
        last = self._progress()
        judge = _StallJudge(self.stall_timeout)
        quiet = 0
        while not self.done.acquire(timeout=poll):
            now = self._progress()
            if now != last:
                last, quiet = now, 0
                judge.reset()
                continue
            quiet += 1
            if quiet < 2:
                continue  # most pauses end within a poll: sample only those that last
            holder = self.current
            how = judge.observe(_supervisor_clock(), holder.carrier.native_id)
            if how is None:
                continue
            if self._in_harness(holder):
                judge.reset()  # the harness's own short real waits (a handoff under way)
                continue
            self._stalled(how)
            return

    @staticmethod
    def _in_harness(t: ManagedThread) -> bool:
        frame = sys._current_frames().get(t.ident)
        return frame is None or frame.f_code.co_filename.startswith(_THIS_DIR)

    def _stalled(self, how: str) -> None:
        stuck = self.current
        frame = sys._current_frames().get(stuck.ident)
        stack = "".join(traceback.format_stack(frame)[-8:]) if frame is not None else ""
        where = describe_caller(frame)
        self.fail(
            RunFailure(
                "blocked",
                f"{stuck.name} {how}: it is blocked on "
                f"something the scheduler does not control, at {where}",
                thread=stuck.name,
                details="Its stack when the run was abandoned:\n"
                + stack
                + "The threading world (threads, locks, conditions, events, queues, pools, "
                "sleep) is controlled when made or reached during the check; a lock or "
                "thread made before it and held across a scheduling point, a socket or a "
                "subprocess is not. Make such objects inside the checked function, or "
                "raise stall_timeout if this thread only computes for long.",
            )
        )
        self.leaked.append(stuck)

    def _unwind(self) -> None:
        """Let each parked thread raise ``_Abort`` and finish, one at a time."""
        self.unwinding = True
        for t in self.threads:
            if t.status == FINISHED or t in self.leaked:
                continue
            self.current = t
            self.unwound.acquire(False)
            # RuntimeError: it was already released (a stuck thread woke up and handed over).
            with contextlib.suppress(RuntimeError):
                t.baton.release()
            if not self.unwound.acquire(timeout=self.stall_timeout) and t.status != FINISHED:
                self.leaked.append(t)
        # A stuck thread may have been freed by the unwinding (a real lock released).
        for t in list(self.leaked):
            end = _real_monotonic() + self.stall_timeout
            while t.status != FINISHED and _real_monotonic() < end:
                _real_sleep(0.005)
        self.leaked = [t for t in self.leaked if t.status != FINISHED]

    def new_thread(
        self, target: Callable[..., Any], args: tuple[Any, ...], name: str
    ) -> ManagedThread:
        t = ManagedThread(self, len(self.threads), target, args, name)
        if self.threads:
            t.vtime = self.current.vtime  # a thread starts at its starter's time
        self.threads.append(t)
        self.by_ident[t.ident] = t
        return t

    def me(self) -> Optional[ManagedThread]:
        """The calling managed thread (the baton holder), or None for a foreign thread."""
        t = self.current
        ident = _get_ident()
        if t.ident == ident:
            if self.aborted:
                raise _Abort
            return t
        owner: Optional[ManagedThread] = getattr(_tls, "thread", None)
        if owner is not None and (owner.rt is not self or self.aborted):
            raise _Abort  # a thread of an abandoned run
        return None

    def fail(self, failure: RunFailure) -> None:
        """Record the run's first failure and abandon the run."""
        if self.failure is None:
            self.failure = failure
        self.aborted = True

    def fail_divergence(self, message: str) -> None:
        self.fail(RunFailure("nondeterminism", message))

    def thread_raised(self, t: ManagedThread, exc: BaseException) -> None:
        if t.tid == 0:
            msg = f"the checked function raised {type(exc).__name__}: {exc}"
        else:
            msg = f"{t.name} ({t.origin}) raised {type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.events.append((t.tid, _event(f"raises {type(exc).__name__}")))
        self.fail(RunFailure("exception", msg, thread=t.name, exception=exc, details=tb))

    def name_of(self, obj: object, prefix: str) -> str:
        """A name for ``obj`` stable across replays: its kind and order of first use."""
        entry = self._names.get(id(obj))
        if entry is None:
            n = self._counters.get(prefix, 0) + 1
            self._counters[prefix] = n
            entry = self._names[id(obj)] = (obj, f"{prefix}{n}")
        return entry[1]

    def point(self, label: Label, yielding: bool = False) -> None:
        """A scheduling point of the calling thread: the strategy picks who continues.

        ``yielding`` (a sleep): the default is to let another runnable thread go first, so
        a loop that polls with ``sleep`` makes progress under every strategy's default.
        """
        me = self.current
        if me.ident != _get_ident():
            if self.me() is None:
                self._foreign_point(label)
            return
        if self.aborted:
            raise _Abort
        self.steps += 1
        me.points += 1
        events = self.events
        events.append((me.tid, label))
        if len(events) > _EVENTS_KEPT:
            _trim(events)
        if self.steps > self.max_steps:
            self.fail(
                RunFailure(
                    "step-limit",
                    f"the run passed more than max_steps={self.max_steps} scheduling points "
                    "(a livelock, or a loop that polls without blocking?)",
                    thread=me.name,
                )
            )
            raise _Abort
        if len(self.threads) == 1:
            return  # the checked function alone: nothing to decide
        nxt = self._decide(me, True, yielding)
        if nxt is not me and nxt is not None:
            # _switch, inlined: this is the hot path of every run.
            self.switches += 1
            self.current = nxt
            nxt.baton.release()
            me.baton.acquire()
            if self.aborted:
                raise _Abort

    def io(self, label: str, latency: float) -> None:
        """A simulated call: a scheduling point that advances the thread's virtual clock."""
        me = self.me()
        if me is None:
            if latency > 0:
                _real_sleep(latency)
            return
        me.vtime += latency
        self.explicit += 1
        self.point(label)

    def _foreign_point(self, label: Label) -> None:
        where = describe_caller(sys._getframe(2))
        self.fail(
            RunFailure(
                "uncontrolled-thread",
                f"thread {threading.current_thread().name!r}, which the scheduler does not "
                f"manage, reached a scheduling point at {where}",
                thread=threading.current_thread().name,
                details="It was started before the controlled run, or outside spawn() and "
                "ControlledExecutor; its steps are not under the schedule.",
            )
        )

    def _decide(
        self, me: ManagedThread, me_runnable: bool, yielding: bool = False
    ) -> Optional[ManagedThread]:
        """Pick the next thread among the runnable ones; None if none is runnable."""
        threads = self.threads
        opts = self._opts
        opts.clear()
        tid = me.tid
        if me_runnable and not yielding:
            opts.append(tid)
        for i in range(tid + 1, len(threads)):
            if threads[i].status == RUNNABLE:
                opts.append(i)
        for i in range(tid):
            if threads[i].status == RUNNABLE:
                opts.append(i)
        if me_runnable and yielding:
            opts.append(tid)  # picking the yielding thread again is the deviation
        n = len(opts)
        if n == 0:
            return None
        if n == 1:
            return threads[opts[0]]
        try:
            k = self.strategy.choose(opts, tid, self.steps)
        except _Divergence as exc:
            self.fail(RunFailure("nondeterminism", str(exc), thread=me.name))
            raise _Abort from None
        chosen = opts[k]
        self.decisions.append(chosen)
        if k:
            self.last_nondefault = len(self.decisions)
            if me_runnable:
                self.preemptions += 1
        return threads[chosen]

    def _switch(self, me: ManagedThread, nxt: ManagedThread) -> None:
        self.switches += 1
        self.current = nxt
        nxt.baton.release()
        me.baton.acquire()
        if self.aborted:
            raise _Abort

    def block(
        self,
        me: ManagedThread,
        waitables: Sequence[_Waitable],
        label: str,
        timeout: Optional[float] = None,
    ) -> bool:
        """Block ``me`` until one of ``waitables`` wakes it; False if ``timeout`` expired.

        A timeout expires only when no managed thread can run (time advances only when
        everyone waits), so a timed wait never races the work it waits for.
        """
        if self.aborted:
            raise _Abort
        me.status = BLOCKED
        me.epoch += 1
        me.timed_out = False
        me.blocked_label = label
        me.deadline = None if timeout is None or timeout < 0 else me.vtime + timeout
        token = (me, me.epoch)
        me.waiting_on = waitables
        for w in waitables:
            w._sched_waiters.append(token)
        self.events.append((me.tid, _event(f"{label} (blocks)")))
        nxt = self._decide(me, False)
        if nxt is None:
            nxt = self._recheck(me) or self._expire_timeout()
        if nxt is None:
            self._deadlock(me)
            raise _Abort
        if nxt is not me:
            self._switch(me, nxt)
        return not me.timed_out

    def wake(self, obj: _Waitable, n: int = -1) -> int:
        """Make up to ``n`` (all if -1) threads blocked on ``obj`` runnable; returns how many."""
        waiters = obj._sched_waiters
        if not waiters:
            return 0
        keep: list[tuple[ManagedThread, int]] = []
        woken = 0
        now = self.current.vtime
        for t, epoch in waiters:
            if t.epoch != epoch or t.status != BLOCKED:
                continue  # stale: that wait has ended
            if 0 <= n <= woken:
                keep.append((t, epoch))
                continue
            t.status = RUNNABLE
            t.epoch += 1
            t.deadline = None
            if t.vtime < now:
                t.vtime = now  # woken by an event: not before it happened
            woken += 1
        obj._sched_waiters = keep
        return woken

    def _recheck(self, me: ManagedThread) -> Optional[ManagedThread]:
        """Nothing can run: wake a thread whose lock was released behind the model's back.

        (A lock made before the check and shared with code that holds the original.)
        """
        for t in self.threads:
            if t.status != BLOCKED:
                continue
            for w in t.waiting_on:
                free = getattr(w, "_free", None)
                if free is not None and free():
                    self.wake(w)
                    if t.status == RUNNABLE:
                        return self._decide(me, False)
        return None

    def _expire_timeout(self) -> Optional[ManagedThread]:
        best: Optional[ManagedThread] = None
        for t in self.threads:
            if t.status != BLOCKED or t.deadline is None:
                continue
            if best is None or t.deadline < best.deadline:  # type: ignore[operator]
                best = t
        if best is None:
            return None
        best.status = RUNNABLE
        best.epoch += 1
        best.timed_out = True
        best.vtime = best.deadline  # type: ignore[assignment]
        best.deadline = None
        self.events.append((best.tid, _event("timeout expires")))
        return best

    def _deadlock(self, me: ManagedThread) -> None:
        lines = [f"  {t.name}: {t.blocked_label}" for t in self.threads if t.status == BLOCKED]
        self.fail(
            RunFailure(
                "deadlock",
                f"deadlock: every live thread is blocked ({me.name} was the last to block)",
                thread=me.name,
                details="Blocked threads:\n" + "\n".join(lines),
            )
        )

    def finish(self, me: ManagedThread) -> None:
        """Called by a managed thread as it ends: wake joiners, hand the baton on."""
        me.status = FINISHED
        if self.unwinding:
            if me is self.current:
                with contextlib.suppress(RuntimeError):
                    self.unwound.release()
            return
        self.events.append((me.tid, _event("end")))
        self.wake(me)
        if self.aborted:
            self.done.release()
            return
        if me.tid == 0:
            # Like interpreter exit for ThreadPoolExecutor: idle workers drain and stop.
            for ex in self.executors:
                ex._implicit_shutdown()
        if self.threads[0].status == FINISHED and all(
            t.status == FINISHED or t.daemon for t in self.threads
        ):
            # Only daemon threads are left: as at interpreter exit, they are abandoned.
            if any(t.status != FINISHED for t in self.threads):
                self.ended = True
                self.aborted = True
            self.done.release()
            return
        try:
            nxt = self._decide(me, False)
        except _Abort:  # divergence, already recorded
            self.done.release()
            return
        if nxt is None:
            nxt = self._recheck(me) or self._expire_timeout()
        if nxt is None:
            if any(t.status != FINISHED for t in self.threads):
                self._deadlock(me)
            self.done.release()
            return
        self.switches += 1
        self.current = nxt
        nxt.baton.release()


_EVENTS_KEPT = 40_000


def _trim(events: list[tuple[int, Label]]) -> None:
    """Keep a long run's trace bounded: its first and last events, and a count between."""
    cut = events[10_000:30_000]
    del events[10_000:30_000]
    events.insert(10_000, (-1, _event(f"... {len(cut):,} scheduling points not kept ...")))


class TaskSample(NamedTuple):
    """What the kernel shows of one OS thread of this process."""

    state: str  # R: running or runnable (waiting for a CPU); S, D: asleep
    cpu: float  # seconds spent on a CPU
    wait: float  # seconds spent runnable, waiting for a CPU
    runs: int  # times it was put on a CPU: unchanged means never woken


# The supervisor's clock and its view of the kernel, module-level so that tests can stand in
# for a loaded machine without loading it.
_supervisor_clock = time.monotonic


def _read_task(native_id: Optional[int]) -> Optional[TaskSample]:
    """The thread's state and scheduler accounting from ``/proc``; None where not shown."""
    if native_id is None:
        return None
    base = f"/proc/self/task/{native_id}/"
    try:
        with open(base + "stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
        with open(base + "schedstat", "rb") as f:
            cpu_ns, wait_ns, runs = (int(x) for x in f.read().split()[:3])
    except (OSError, ValueError):
        return None  # no /proc (not Linux), or a kernel without scheduler statistics
    fields = raw[raw.rfind(")") + 2 :].split()
    if not fields or runs == 0:
        return None  # a thread that ran was put on a CPU: zeros mean no accounting shown
    return TaskSample(fields[0], cpu_ns / 1e9, wait_ns / 1e9, runs)


def _busy_others(native_id: int) -> float:
    """Seconds the process's other threads have spent on a CPU or waiting for one."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for name in tasks:
        if name == str(native_id):
            continue
        try:
            with open(f"/proc/self/task/{name}/schedstat", "rb") as f:
                cpu_ns, wait_ns = f.read().split()[:2]
            total += int(cpu_ns) + int(wait_ns)
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9


#: A holder asleep while other threads keep busy is blocked after this many stall_timeouts.
BACKSTOP_FACTOR = 30


class _StallJudge:
    """Decides, from the baton holder's own behaviour, when it is blocked outside the model.

    Fed one sample per supervisor poll while no scheduling point is passed; the verdict
    never depends on how loaded the machine is:

    - **Computing.** The holder's *CPU time* without a scheduling point reaches
      ``limit``. A thread waiting for a CPU or for the GIL accrues none, and a runnable
      holder (state R) is never judged on anything else.
    - **Asleep and never woken.** The holder is asleep in the kernel (S or D) and has not
      been put on a CPU once for ``window`` seconds while the rest of the process was
      mostly idle: it waits on a lock, a socket, a sleep the scheduler does not control.
      A thread waiting for the GIL cannot look like this: the interpreter's GIL wait is
      timed (``sys.getswitchinterval()``, 5 ms), so such a thread wakes many times per
      window, and the window is kept well above that interval. A thread woken but starved
      of CPU shows R, or counts a run once it got one. If another thread of the process
      was busy for half the span or more (it may hold what the holder waits for), the
      holder must stay unwoken for ``limit`` seconds instead.
    - **Its own time.** Anything else (a loop polling with short real sleeps): the wall
      time between samples at which the holder is asleep, less the time it waited for a
      CPU and less the time every other thread of the process ran or waited for a CPU
      (whoever held the GIL meanwhile is among them), adds up to ``limit``.

    Last, so that nothing stalls: a holder asleep, pause after pause, while other threads
    of the process keep busy (each of its sleeps excused as a possible wait for them) is
    reported after ``BACKSTOP_FACTOR * limit`` of wall time.

    Where ``/proc`` does not show the holder (not Linux), ``limit`` of wall time without
    progress is the limit: a loaded machine can then stretch a short computation past it.
    """

    __slots__ = ("asleep", "backstop", "base", "blame", "last", "limit", "start", "window")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.window = max(0.5, 20 * sys.getswitchinterval())
        self.backstop = BACKSTOP_FACTOR * limit
        self.reset()

    def reset(self) -> None:
        self.start: Optional[float] = None
        self.base: Optional[TaskSample] = None  # the holder when the pause was first seen
        # Since when the holder is asleep and unchanged, and the others' busy time then.
        self.asleep: Optional[tuple[float, TaskSample, float]] = None
        self.last: Optional[tuple[float, TaskSample, Optional[float]]] = None
        self.blame = 0.0

    def observe(self, now: float, native_id: Optional[int]) -> Optional[str]:
        """Take one sample at ``now``; a description of the block once there is one."""
        if self.start is None:
            self.start = now
        task = _read_task(native_id)
        if task is None or native_id is None:
            if now - self.start >= self.limit:
                return f"made no progress for {self.limit:g} s of wall time"
            return None
        if self.base is None:
            self.base = task
        if task.cpu - self.base.cpu >= self.limit:
            return f"computed for {self.limit:g} s of CPU time without reaching a scheduling point"
        if task.state not in ("S", "D"):
            self.asleep = None
            self.last = (now, task, None)
            return None  # running, or runnable and waiting for a CPU
        others = _busy_others(native_id)
        asleep = self.asleep
        if asleep is None or asleep[1][1:] != task[1:]:
            self.asleep = (now, task, others)
        else:
            span = now - asleep[0]
            # Another thread busy meanwhile may be what it waits for (a GIL whose waits are
            # not timed, a stop-the-world pause): then never woken for the full limit.
            quiet = others - asleep[2] < span / 2
            if span >= (self.window if quiet else max(self.window, self.limit)):
                return f"is blocked in the kernel (asleep, not woken once in {span:.1f} s)"
        last = self.last
        self.last = (now, task, others)
        if last is not None and last[2] is not None:
            elapsed = now - last[0]
            excused = (task.wait - last[1].wait) + (others - last[2])
            self.blame += max(0.0, elapsed - excused)
            if self.blame >= self.limit:
                return (
                    f"made no progress for {self.limit:g} s of its own time (asleep or "
                    "computing, not waiting for a CPU or for another thread)"
                )
        if now - self.start >= self.backstop:
            return (
                f"made no progress for {now - self.start:.0f} s of wall time, asleep while "
                "other threads of the process were busy"
            )
        return None


# --------------------------------------------------------------------- public entry points


def checkpoint(label: Optional[str] = None) -> None:
    """A scheduling point: under a controlled run the schedule may switch threads here.

    Place it where a real program could be interrupted and the interleaving matters, e.g.
    between a read and the write that depends on it. With no controlled run active it does
    nothing and costs one global read (well under a microsecond). The label (default: the
    caller's ``file:line``) names the point in failure traces.

    Example:
        >>> from parabatch.testing import checkpoint
        >>> checkpoint("between read and write")  # no scheduler running: a no-op
    """
    rt = _current
    if rt is None:
        return
    if rt.controlled:
        rt.explicit += 1  # type: ignore[union-attr]
    if label is None:
        f = sys._getframe(1)
        rt.point((f.f_code, f.f_lineno))
    else:
        rt.point(label)


def simulated_call(label: str, latency: float = 0.0) -> None:
    """Stand-in for a call that releases the GIL (an LLM request, an HTTP call).

    Under a controlled run: a scheduling point; ``latency`` advances the thread's virtual
    clock but never orders threads (real latencies jitter, so every order stays possible).
    Outside one: ``time.sleep(latency)`` when ``latency > 0``.

    Example:
        >>> from parabatch.testing import simulated_call
        >>> simulated_call("llm", latency=0.0)  # outside a run: returns at once
    """
    rt = _current
    if rt is None:
        if latency > 0:
            _real_sleep(latency)
        return
    rt.io(label, latency)


def spawn(target: Callable[..., Any], *args: Any, name: Optional[str] = None) -> ThreadHandle:
    """Start ``target(*args)`` in a new managed thread; returns a handle to ``join``.

    Inside a controlled run the thread runs only when the schedule picks it, and spawning
    is a scheduling point (the new thread may run first). An exception escaping ``target``
    fails the run. Outside a run it starts a plain daemon ``threading.Thread``.

    Example:
        >>> from parabatch.testing import spawn
        >>> out = []
        >>> t = spawn(out.append, 1)
        >>> t.join(); out
        [1]
    """
    rt = _current
    if not isinstance(rt, Runtime):
        hooks = rt if isinstance(rt, StressHooks) else None
        label = name or str(getattr(target, "__name__", "thread"))
        handle = _RealThreadHandle(target, args, label, hooks)
        if hooks is not None:
            hooks.handles.append(handle)
        return handle
    me = rt.me()
    if me is None:
        raise SchedulerUsageError(
            f"spawn({target!r}) called from thread {threading.current_thread().name!r}, which "
            "the running scheduler does not manage; spawn from the checked function or a "
            "thread it spawned"
        )
    t = rt.new_thread(target, args, f"T{len(rt.threads)}")
    fname = getattr(target, "__qualname__", None) or repr(target)
    t.origin = f"spawn({fname}) at {describe_caller(sys._getframe(1))}"
    if name:
        t.origin = f"{name!r}, " + t.origin
    rt.point(_event(f"spawn {t.name}"))
    return t


def set_current(rt: Optional[Union[Runtime, StressHooks]]) -> None:
    global _current
    _current = rt


def get_current() -> Optional[Union[Runtime, StressHooks]]:
    return _current
