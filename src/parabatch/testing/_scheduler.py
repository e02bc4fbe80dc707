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
finish and, if no scheduling point is passed for ``stall_timeout`` seconds, reports the
baton holder as blocked on something the scheduler does not control, with its stack.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from types import CodeType, FrameType
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from ._errors import SchedulerUsageError, UncontrolledThreadError

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
_real_start = threading.Thread.start
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

    Starting an OS thread costs 50-250 us here, more than a whole schedule of handoffs, so
    a check keeps its carriers between runs. ``baton`` is the lock the carried thread parks
    on; it is always acquired (locked) when the carrier is between jobs.
    """

    __slots__ = ("baton", "ident", "job", "pool", "thread")

    def __init__(self, pool: CarrierPool, number: int) -> None:
        self.pool = pool
        self.job: Optional[ManagedThread] = None
        self.baton = threading.Lock()
        self.baton.acquire()
        self.thread = threading.Thread(
            target=self._loop, name=f"parabatch-carrier-{number}", daemon=True
        )
        _real_start(self.thread)  # the start guard lets only this call through
        ident = self.thread.ident
        assert ident is not None
        self.ident = ident

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
        self.lock = threading.Lock()
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
        for c in idle:
            c.thread.join(1.0)


class ManagedThread:
    """One thread of a controlled run. Also the handle ``spawn`` returns."""

    __slots__ = (
        "_sched_waiters",
        "args",
        "baton",
        "blocked_label",
        "carrier",
        "deadline",
        "epoch",
        "ident",
        "name",
        "origin",
        "rt",
        "status",
        "target",
        "tid",
        "timed_out",
        "vtime",
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
            end = None if timeout is None else time.monotonic() + timeout
            while self.status != FINISHED and (end is None or time.monotonic() < end):
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
        self.unwound = threading.Event()
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
        self.done = threading.Lock()
        self.done.acquire()
        self.executors: list[Any] = []
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
        last = -1
        while not self.done.acquire(timeout=self.stall_timeout):
            if self.steps == last:
                self._stalled()
                break
            last = self.steps
        if self.aborted:
            self._unwind()

    def _stalled(self) -> None:
        stuck = self.current
        frame = sys._current_frames().get(stuck.ident)
        stack = "".join(traceback.format_stack(frame)[-8:]) if frame is not None else ""
        where = describe_caller(frame)
        self.fail(
            RunFailure(
                "blocked",
                f"{stuck.name} made no progress for {self.stall_timeout:g} s: it is blocked on "
                f"something the scheduler does not control, at {where}",
                thread=stuck.name,
                details="Its stack when the run was abandoned:\n"
                + stack
                + "Use the scheduler's primitives (parabatch.testing.Lock, spawn, "
                "ControlledExecutor, simulated_call) instead of real blocking calls, "
                "or raise stall_timeout if this thread only computes for long.",
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
            self.unwound.clear()
            # RuntimeError: it was already released (a stuck thread woke up and handed over).
            with contextlib.suppress(RuntimeError):
                t.baton.release()
            if not self.unwound.wait(self.stall_timeout) and t.status != FINISHED:
                self.leaked.append(t)
        # A stuck thread may have been freed by the unwinding (a real lock released).
        for t in list(self.leaked):
            end = time.monotonic() + self.stall_timeout
            while t.status != FINISHED and time.monotonic() < end:
                _real_sleep(0.005)
        self.leaked = [t for t in self.leaked if t.status != FINISHED]

    def new_thread(
        self, target: Callable[..., Any], args: tuple[Any, ...], name: str
    ) -> ManagedThread:
        t = ManagedThread(self, len(self.threads), target, args, name)
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

    def point(self, label: Label) -> None:
        """A scheduling point of the calling thread: the strategy picks who continues."""
        me = self.current
        if me.ident != _get_ident():
            if self.me() is None:
                self._foreign_point(label)
            return
        if self.aborted:
            raise _Abort
        self.steps += 1
        self.events.append((me.tid, label))
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
        nxt = self._decide(me, True)
        if nxt is not me and nxt is not None:
            self._switch(me, nxt)

    def io(self, label: str, latency: float) -> None:
        """A simulated call: a scheduling point that advances the thread's virtual clock."""
        me = self.me()
        if me is None:
            if latency > 0:
                _real_sleep(latency)
            return
        me.vtime += latency
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

    def _decide(self, me: ManagedThread, me_runnable: bool) -> Optional[ManagedThread]:
        """Pick the next thread among the runnable ones; None if none is runnable."""
        threads = self.threads
        opts = self._opts
        opts.clear()
        tid = me.tid
        if me_runnable:
            opts.append(tid)
        for i in range(tid + 1, len(threads)):
            if threads[i].status == RUNNABLE:
                opts.append(i)
        for i in range(tid):
            if threads[i].status == RUNNABLE:
                opts.append(i)
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
        for w in waitables:
            w._sched_waiters.append(token)
        self.events.append((me.tid, _event(f"{label} (blocks)")))
        nxt = self._decide(me, False)
        if nxt is None:
            nxt = self._expire_timeout()
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
        for t, epoch in waiters:
            if t.epoch != epoch or t.status != BLOCKED:
                continue  # stale: that wait has ended
            if 0 <= n <= woken:
                keep.append((t, epoch))
                continue
            t.status = RUNNABLE
            t.epoch += 1
            t.deadline = None
            woken += 1
        obj._sched_waiters = keep
        return woken

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
                self.unwound.set()
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
        try:
            nxt = self._decide(me, False)
        except _Abort:  # divergence, already recorded
            self.done.release()
            return
        if nxt is None:
            nxt = self._expire_timeout()
        if nxt is None:
            if any(t.status != FINISHED for t in self.threads):
                self._deadlock(me)
            self.done.release()
            return
        self.switches += 1
        self.current = nxt
        nxt.baton.release()


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


def _guarded_start(self: threading.Thread) -> None:
    """``threading.Thread.start`` during a controlled run: managed threads may not use it."""
    rt = _current
    if isinstance(rt, Runtime) and not rt.aborted and _get_ident() in rt.by_ident:
        where = describe_caller(sys._getframe(1))
        err = UncontrolledThreadError(
            f"thread {self.name!r} was started outside the scheduler at {where}; during a "
            "controlled run start threads with parabatch.testing.spawn or pass "
            "parabatch.testing.ControlledExecutor as the executor"
        )
        rt.fail(RunFailure("uncontrolled-thread", str(err), thread=rt.current.name))
        raise err
    _real_start(self)


def _controlled_sleep(secs: float) -> None:
    """``time.sleep`` during a controlled run: a scheduling point on the virtual clock."""
    rt = _current
    if isinstance(rt, Runtime):
        if secs < 0:
            raise ValueError("sleep length must be non-negative")
        if rt.me() is not None:
            rt.io(f"sleep({secs:g})", secs)
            return
    _real_sleep(secs)


def set_current(rt: Optional[Union[Runtime, StressHooks]]) -> None:
    global _current
    _current = rt


def get_current() -> Optional[Union[Runtime, StressHooks]]:
    return _current


def make_tracer(rt: Runtime, paths: Sequence[str]) -> Callable[..., Any]:
    """A ``sys.settrace`` function making every line in ``paths`` a scheduling point.

    ``paths`` holds files and package directories (ending in ``os.sep``). The decision is
    cached per code object, so untraced code pays one dict lookup per call.
    """
    files = frozenset(p for p in paths if not p.endswith(os.sep))
    dirs = tuple(p for p in paths if p.endswith(os.sep))
    cache: dict[CodeType, bool] = {}

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            rt.point((frame.f_code, frame.f_lineno))
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        hit = cache.get(code)
        if hit is None:
            fn = os.path.normcase(os.path.abspath(code.co_filename))
            hit = cache[code] = fn in files or fn.startswith(dirs)
        return local if hit else None

    return global_
