"""The controlled threading world: what a check patches for its duration, and what it refuses.

During a check (``install`` .. ``uninstall``) the standard threading world is replaced by
one the scheduler controls, however the checked code imported it:

- **factories**, as module attributes (``threading.Lock``, ``threading.RLock``,
  ``threading._allocate_lock``, ``queue.SimpleQueue``, ``time.sleep`` and the clocks,
  ``threading.current_thread``, ``threading.local``) and as names bound in user modules
  imported before the check (``from threading import Lock``, ``from time import sleep``).
  ``Condition``, ``Semaphore``, ``BoundedSemaphore``, ``Event``, ``Barrier`` and the
  ``queue`` classes are the standard library's own: they are built on ``Lock``,
  ``RLock`` and ``_allocate_lock`` (a condition's waiter), so they block in the
  scheduler's model — including ones made before the check, whose waits allocate their
  waiter during it;
- **lock objects** made before the check and bound in a user module (a module-level
  ``_lock = threading.Lock()``, or a class attribute) are wrapped for the check: the
  wrapper shares the real lock, so code holding the original still excludes;
- **methods**: ``threading.Thread.start``/``join``/``is_alive`` (a thread started during a
  run is a managed thread, whenever its object was made), and
  ``ThreadPoolExecutor.submit``/``shutdown`` (a pool, made before the check or during it,
  runs its work on managed threads of a shadow :class:`ControlledExecutor`);
- **refused**, raising :class:`SchedulerUsageError` in the caller and failing the run
  with the call site: starting a process (``multiprocessing``, ``ProcessPoolExecutor``,
  ``os.fork``), running an ``asyncio`` event loop, starting a raw ``_thread`` thread.

Everything patched falls back to the real thing when called from a thread the scheduler
does not manage, so the test runner's own threads are unaffected.
"""

from __future__ import annotations

import _thread
import _threading_local
import concurrent.futures
import contextlib
import os
import queue
import sys
import threading
import time
import types
from typing import Any, Callable, Optional

from . import _executor, _scheduler, _sync
from ._errors import SchedulerUsageError, UncontrolledThreadError
from ._scheduler import FINISHED, ManagedThread, RunFailure, Runtime, _event, describe_caller
from ._tracing import is_user_file

__all__ = ["World", "refuse"]

_get_ident = threading.get_ident
_real_thread_start = threading.Thread.start
_real_thread_join = threading.Thread.join
_real_thread_is_alive = threading.Thread.is_alive
_real_current_thread = threading.current_thread
_real_pool_submit = concurrent.futures.ThreadPoolExecutor.submit
_real_pool_shutdown = concurrent.futures.ThreadPoolExecutor.shutdown
_real_sleep = time.sleep
_LOCK_TYPES = (type(_thread.allocate_lock()), type(threading.RLock()))
# Values whose __dict__ is not "an object made before the check holding a lock".
_NOT_OBJECTS = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
)


def _caller_thread() -> Optional[tuple[Runtime, ManagedThread]]:
    """The running controlled run and the calling managed thread, or None."""
    rt = _scheduler._current
    if isinstance(rt, Runtime):
        me = rt.me()
        if me is not None:
            return rt, me
    return None


def refuse(
    what: str, why: str, depth: int = 2, cls: type[SchedulerUsageError] = SchedulerUsageError
) -> SchedulerUsageError:
    """Fail the run (if the caller is managed) and return the error to raise in the caller."""
    where = describe_caller(sys._getframe(depth))
    msg = f"{what} at {where} is refused during a controlled check: {why}"
    err = cls(msg)
    ctx = _caller_thread()
    if ctx is not None:
        rt, me = ctx
        rt.fail(RunFailure("refused", msg, thread=me.name, exception=err))
    return err


# ----------------------------------------------------------------------------- clocks


def _clock(real: Callable[[], float], base: Callable[[], float]) -> Callable[[], float]:
    def clock() -> float:
        rt = _scheduler._current
        if isinstance(rt, Runtime):
            t = rt.current
            if t is not None and t.ident == _get_ident():
                return base() + t.vtime
        return real()

    clock.__name__ = getattr(real, "__name__", "clock")
    clock.__doc__ = "Virtual during a controlled run (time moves only by sleeps and timeouts)."
    return clock


def _clock_ns(real: Callable[[], int], base: Callable[[], float]) -> Callable[[], int]:
    def clock_ns() -> int:
        rt = _scheduler._current
        if isinstance(rt, Runtime):
            t = rt.current
            if t is not None and t.ident == _get_ident():
                return int((base() + t.vtime) * 1e9)
        return real()

    clock_ns.__name__ = getattr(real, "__name__", "clock_ns")
    return clock_ns


def controlled_sleep(secs: float) -> None:
    """``time.sleep`` during a check: a yield on the virtual clock (others may go first)."""
    rt = _scheduler._current
    if isinstance(rt, Runtime):
        me = rt.me()
        if me is not None:
            if secs < 0:
                raise ValueError("sleep length must be non-negative")
            me.vtime += secs
            rt.point(_event(f"sleep({secs:g})"), yielding=True)
            return
    _real_sleep(secs)


# ----------------------------------------------------------------------------- threads


class _ThreadObject(threading.Thread):
    """What ``threading.current_thread()`` returns in a managed thread not started as one."""

    def __init__(self, managed: ManagedThread) -> None:
        super().__init__(name=managed.name, daemon=managed.daemon)
        self._ident = managed.ident
        self._parabatch_thread = managed


def current_thread() -> threading.Thread:
    """``threading.current_thread`` during a check: each managed thread has its own object."""
    rt = _scheduler._current
    if isinstance(rt, Runtime):
        t = rt.current
        if t is not None and t.ident == _get_ident():
            obj = t.thread_object
            if obj is None:
                obj = t.thread_object = _ThreadObject(t)
            return obj
    return _real_current_thread()


_real_newname = getattr(threading, "_newname", None)


def _newname(name_template: str = "Thread-%d") -> str:
    """Default thread names counted per run, so names (and traces) repeat on replay."""
    ctx = _caller_thread()
    if ctx is None or _real_newname is None:
        return _real_newname(name_template) if _real_newname is not None else "Thread"
    counters = ctx[0]._counters
    n = counters["thread-name"] = counters.get("thread-name", 0) + 1
    return name_template % n


def _run_thread_object(thread: threading.Thread) -> None:
    try:
        thread.run()
    finally:
        thread._is_stopped = True  # type: ignore[attr-defined]


def _thread_start(self: threading.Thread) -> None:
    ctx = _caller_thread()
    if ctx is None:
        _real_thread_start(self)
        return
    rt, _me = ctx
    if not getattr(self, "_initialized", True):
        raise RuntimeError("thread.__init__() not called")
    if self._started.is_set():  # type: ignore[attr-defined]
        raise RuntimeError("threads can only be started once")
    t = rt.new_thread(_run_thread_object, (self,), f"T{len(rt.threads)}")
    t.daemon = bool(self.daemon)
    t.thread_object = self
    t.origin = f"Thread {self.name!r} started at {describe_caller(sys._getframe(1))}"
    self._parabatch_thread = t  # type: ignore[attr-defined]
    self._ident = t.ident  # type: ignore[attr-defined]
    if t.carrier.native_id is not None:
        self._native_id = t.carrier.native_id  # type: ignore[attr-defined]
    self._started.set()  # type: ignore[attr-defined]
    rt.point(_event(f"start {t.name}"))


def _managed_of(thread: threading.Thread, rt: Any) -> Optional[ManagedThread]:
    t = thread.__dict__.get("_parabatch_thread")
    if isinstance(t, ManagedThread) and t.rt is rt:
        return t
    return None


def _thread_join(self: threading.Thread, timeout: Optional[float] = None) -> None:
    rt = _scheduler._current
    t = _managed_of(self, rt)
    if t is not None:
        me = rt.me() if isinstance(rt, Runtime) else None
        if me is t:
            raise RuntimeError("cannot join current thread")
        t.join(timeout)
        return
    if _caller_thread() is not None and _real_thread_is_alive(self):
        raise refuse(
            f"joining thread {self.name!r}",
            "it was started before the check, so the scheduler cannot run it or see it "
            "end; start it inside the checked function",
        )
    _real_thread_join(self, timeout)


def _thread_is_alive(self: threading.Thread) -> bool:
    t = _managed_of(self, _scheduler._current)
    if t is not None:
        return t.status != FINISHED
    return _real_thread_is_alive(self)


def _raw_thread(*args: Any, **kwargs: Any) -> Any:
    raise refuse(
        "starting a thread with the _thread module",
        "the scheduler controls threading.Thread, spawn and executors; a raw thread would "
        "run outside the schedule",
        cls=UncontrolledThreadError,
    )


# ----------------------------------------------------------------------------- pools


def _shadow(rt: Runtime, pool: concurrent.futures.ThreadPoolExecutor) -> Any:
    entry = rt.shadow_pools.get(id(pool))
    if entry is None:
        if getattr(pool, "_shutdown", False):
            raise RuntimeError("cannot schedule new futures after shutdown")
        shadow = _executor.ControlledExecutor(
            getattr(pool, "_max_workers", None),
            getattr(pool, "_thread_name_prefix", "") or "",
            initializer=getattr(pool, "_initializer", None),
            initargs=getattr(pool, "_initargs", ()),
        )
        entry = rt.shadow_pools[id(pool)] = (pool, shadow)
    return entry[1]


def _pool_submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    ctx = _caller_thread()
    if ctx is None:
        return _real_pool_submit(self, fn, *args, **kwargs)
    return _shadow(ctx[0], self).submit(fn, *args, **kwargs)


def _pool_shutdown(self: Any, wait: bool = True, *, cancel_futures: bool = False) -> None:
    ctx = _caller_thread()
    if ctx is not None:
        entry = ctx[0].shadow_pools.get(id(self))
        if entry is not None:
            entry[1].shutdown(wait, cancel_futures=cancel_futures)
    _real_pool_shutdown(self, wait=wait, cancel_futures=cancel_futures)


# ----------------------------------------------------------------------------- refusals


def _refusing(what: str, why: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def guard(*args: Any, **kwargs: Any) -> Any:
        if _caller_thread() is not None:
            raise refuse(what, why)
        return real(*args, **kwargs)

    guard.__name__ = getattr(real, "__name__", "guard")
    guard.__wrapped__ = real  # type: ignore[attr-defined]
    return guard


_PROCESS_WHY = (
    "the scheduler controls the threads of this process only; another process runs outside "
    "the schedule and its effects cannot be replayed. Check the per-process code directly, "
    "with threads"
)
_LOOP_WHY = (
    "an event loop schedules its tasks itself, outside the controlled schedule; test the "
    "threaded code, or run the coroutines' synchronous parts under the check"
)


# ----------------------------------------------------------------------------- the world


class World:
    """The patches of one check session: ``install`` them, then ``uninstall`` them."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []
        self._saved_items: list[tuple[Any, str, Any]] = []
        self._saved_cells: list[tuple[Any, Any]] = []
        self._wall_base = time.time()

    def _set(self, owner: Any, name: str, value: Any) -> None:
        if name in vars(owner):
            self._saved.append((owner, name, vars(owner)[name]))
        else:
            self._saved.append((owner, name, _MISSING))
        setattr(owner, name, value)

    def install(self) -> None:
        # Imported here, not at import time: parabatch.testing stays quick to import.
        import asyncio.base_events
        import asyncio.events
        import concurrent.futures.process
        import multiprocessing.process

        wall = self._wall_base
        replacements: dict[int, tuple[Any, Any]] = {}

        def replace(owner: Any, name: str, new: Any) -> None:
            old = getattr(owner, name, _MISSING)
            if old is _MISSING:
                return
            replacements[id(old)] = (old, new)
            self._set(owner, name, new)

        replace(threading, "Lock", _sync.Lock)
        replace(threading, "_allocate_lock", _sync.Lock)
        replace(threading, "RLock", _sync.RLock)
        replacements[id(_thread.allocate_lock)] = (_thread.allocate_lock, _sync.Lock)
        if _real_newname is not None:
            self._set(threading, "_newname", _newname)
        replace(threading, "current_thread", current_thread)
        replace(threading, "currentThread", current_thread)
        replace(threading, "local", _threading_local.local)
        replace(_threading_local, "current_thread", current_thread)
        py_simple = getattr(queue, "_PySimpleQueue", None)
        if py_simple is not None:
            replace(queue, "SimpleQueue", py_simple)
        replace(time, "sleep", controlled_sleep)
        for name in ("monotonic", "perf_counter"):
            replace(time, name, _clock(getattr(time, name), lambda: 1000.0))
            replace(time, name + "_ns", _clock_ns(getattr(time, name + "_ns"), lambda: 1000.0))
        replace(time, "time", _clock(time.time, lambda: wall))
        replace(time, "time_ns", _clock_ns(time.time_ns, lambda: wall))
        # Bound at import by the standard library: the timeouts of waits and queues.
        self._set(threading, "_time", time.monotonic)
        self._set(queue, "time", time.monotonic)
        replace(concurrent.futures, "wait", _executor.wait)
        replace(concurrent.futures, "as_completed", _executor.as_completed)

        thread_cls = threading.Thread
        self._set(thread_cls, "start", _thread_start)
        self._set(thread_cls, "join", _thread_join)
        self._set(thread_cls, "is_alive", _thread_is_alive)
        pool_cls = concurrent.futures.ThreadPoolExecutor
        self._set(pool_cls, "submit", _pool_submit)
        self._set(pool_cls, "shutdown", _pool_shutdown)

        for name in ("start_new_thread", "start_new", "start_joinable_thread"):
            real = getattr(_thread, name, None)
            if real is not None:
                replace(_thread, name, _raw_thread)
        self._set(
            multiprocessing.process.BaseProcess,
            "start",
            _refusing(
                "multiprocessing: starting a process",
                _PROCESS_WHY,
                multiprocessing.process.BaseProcess.start,
            ),
        )
        self._set(
            concurrent.futures.ProcessPoolExecutor,
            "submit",
            _refusing(
                "ProcessPoolExecutor.submit",
                _PROCESS_WHY,
                concurrent.futures.ProcessPoolExecutor.submit,
            ),
        )
        for name in ("fork", "forkpty"):
            real = getattr(os, name, None)
            if real is not None:
                replace(os, name, _refusing(f"os.{name}()", _PROCESS_WHY, real))
        make_loop = asyncio.events.new_event_loop
        refuse_loop = _refusing("asyncio: making an event loop", _LOOP_WHY, make_loop)
        replace(asyncio.events, "new_event_loop", refuse_loop)
        replace(asyncio, "new_event_loop", refuse_loop)
        loop_cls: Any = asyncio.base_events.BaseEventLoop
        for name in ("run_forever", "run_until_complete"):
            self._set(
                loop_cls,
                name,
                _refusing(
                    f"asyncio: running an event loop ({name})", _LOOP_WHY, getattr(loop_cls, name)
                ),
            )

        self._rebind_user_modules(replacements)

    def _rebind_user_modules(self, replacements: dict[int, tuple[Any, Any]]) -> None:
        for mod in list(sys.modules.values()):
            file = getattr(mod, "__file__", None)
            if not isinstance(mod, types.ModuleType) or not file or not is_user_file(file):
                continue
            namespace = vars(mod)
            for name, value in list(namespace.items()):
                hit = replacements.get(id(value))
                if hit is not None and hit[0] is value:
                    self._set(mod, name, hit[1])
                elif type(value) in _LOCK_TYPES:
                    self._set(mod, name, _sync.adopt(value))
                elif isinstance(value, type):
                    if value.__module__ == mod.__name__:
                        self._adopt_in(vars(value), value)
                elif not isinstance(value, _NOT_OBJECTS):
                    # One level into an object made before the check (`holder.lock`).
                    held = getattr(value, "__dict__", None)
                    if isinstance(held, dict):
                        self._adopt_in(held, None)

    def adopt_reachable(self, fn: Callable[..., Any]) -> None:
        """Wrap real locks the checked function reaches through its closure, one level deep."""
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if type(value) in _LOCK_TYPES:
                self._saved_cells.append((cell, value))
                cell.cell_contents = _sync.adopt(value)
            elif not isinstance(value, _NOT_OBJECTS):
                held = getattr(value, "__dict__", None)
                if isinstance(held, dict):
                    self._adopt_in(held, None)

    def _adopt_in(self, namespace: Any, cls: Optional[type]) -> None:
        for attr, held in list(namespace.items()):
            if type(held) in _LOCK_TYPES:
                if cls is not None:
                    self._set(cls, attr, _sync.adopt(held))
                else:
                    self._saved_items.append((namespace, attr, held))
                    namespace[attr] = _sync.adopt(held)

    def uninstall(self) -> None:
        while self._saved_items:
            namespace, key, old = self._saved_items.pop()
            namespace[key] = old
        while self._saved_cells:
            cell, old = self._saved_cells.pop()
            cell.cell_contents = old
        while self._saved:
            owner, name, old = self._saved.pop()
            if old is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(owner, name)
            else:
                setattr(owner, name, old)


_MISSING: Any = object()
