"""Tracing: scheduling points where traced code touches state other threads can see.

Which code is traced. By default, *user code*: every file that is not part of the standard
library, not an installed package (``site-packages``), not frozen, and not parabatch
itself — so the code a checked function reaches is traced without naming it, and the
library code it calls runs atomically between points. ``trace_modules=[...]`` narrows
tracing to the named modules and packages; ``trace_modules=()`` turns it off.

Where the points are. Before each bytecode instruction that reads or writes something
another thread could also reach: an attribute (``LOAD_ATTR``/``STORE_ATTR``, method lookups
included, so ``d.get(k)`` and ``lst.append(x)`` are points), a subscript, a ``in`` test, a
global or closure variable bound to a plain value (a counter). Locals are never points:
no other thread can see them. So ``box["n"] = box["n"] + 1`` has a point before the read
and one before the write, and ``self.x += 1`` likewise. The decision is made once per code
object (``dis``), so an instruction that is not a point costs the trace call alone.
"""

from __future__ import annotations

import builtins
import dis
import importlib
import os
import sys
import sysconfig
import types
from types import CodeType, FrameType
from typing import Any, Callable, ClassVar, Optional

__all__ = [
    "MONITORING",
    "is_user_file",
    "jit_pause",
    "jit_resume",
    "make_tracer",
    "monitoring_scope",
    "monitoring_start",
    "monitoring_stop",
]

# Instructions that touch an object's state: always a point.
_STATE_OPS = frozenset(
    {
        "LOAD_ATTR",
        "LOAD_METHOD",
        "STORE_ATTR",
        "DELETE_ATTR",
        "BINARY_SUBSCR",
        "STORE_SUBSCR",
        "DELETE_SUBSCR",
        "BINARY_SLICE",
        "STORE_SLICE",
        "CONTAINS_OP",
        "STORE_GLOBAL",
        "DELETE_GLOBAL",
        "STORE_DEREF",
        "DELETE_DEREF",
    }
)
# Loads of a variable other threads may rebind: a point when it holds a plain value (a
# shared counter); not when it holds a function, class, module or container (whose own
# reads and writes are points).
_VAR_LOADS = {"LOAD_GLOBAL": 1, "LOAD_DEREF": 2, "LOAD_CLASSDEREF": 2, "LOAD_NAME": 1}
_PLAIN = (int, float, complex, str, bytes, bool, tuple, frozenset, type(None))
_NOT_STATE = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.ModuleType,
    type,
    types.MethodType,
)

_OPCODES_TRACEABLE = sys.implementation.name == "cpython"

try:
    _pypyjit: Any = importlib.import_module("pypyjit")
except ImportError:
    _pypyjit = None


def jit_pause() -> None:
    """On PyPy, compile no new machine code until :func:`jit_resume` (a check begins).

    PyPy's points are its line events, and traced code the JIT has compiled reports some
    lines twice: a run after the loop became hot would see points an earlier run with
    the same schedule did not, a nondeterminism of the interpreter's, not of the checked
    code. With the JIT paused, every run of a check reports the same lines.
    """
    if _pypyjit is not None:
        _pypyjit.set_param("off")


def jit_resume() -> None:
    """Compile hot code again, with PyPy's default thresholds (a check ends)."""
    if _pypyjit is not None:
        defaults = _pypyjit.defaults
        _pypyjit.set_param(
            threshold=defaults["threshold"], function_threshold=defaults["function_threshold"]
        )


def _library_roots() -> tuple[str, ...]:
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.normcase(os.path.realpath(path)) + os.sep)
    roots.add(os.path.normcase(os.path.realpath(os.path.dirname(os.__file__))) + os.sep)
    import parabatch

    roots.add(os.path.normcase(os.path.realpath(os.path.dirname(parabatch.__file__))) + os.sep)
    return tuple(sorted(roots))


_ROOTS = _library_roots()
_file_cache: dict[str, bool] = {}


def is_user_file(filename: str) -> bool:
    """True for code the default tracing covers: not stdlib, installed packages, or parabatch."""
    hit = _file_cache.get(filename)
    if hit is None:
        if filename.startswith("<"):
            # Frozen modules; PyPy names its own app-level modules (the import machinery's
            # ``importlib._bootstrap_external`` among them) ``<builtin>/...``.
            hit = not filename.startswith(("<frozen", "<builtin>"))
        else:
            path = os.path.normcase(os.path.realpath(filename))
            hit = not (
                path.startswith(_ROOTS)
                or f"{os.sep}site-packages{os.sep}" in path
                or f"{os.sep}dist-packages{os.sep}" in path
            )
        _file_cache[filename] = hit
    return hit


class _CodePoints:
    """The points of one code object: offset -> None (always) or (kind, name) (if plain)."""

    __slots__ = ("points",)

    def __init__(self, code: CodeType, f_globals: dict[str, Any]) -> None:
        points: dict[int, Optional[tuple[int, str]]] = {}
        # The module the previous instruction pushed, if it pushed one (`concurrent` in
        # `concurrent.futures.wait`): looking a name up in a module is not shared state.
        module: Optional[types.ModuleType] = None
        for ins in dis.get_instructions(code):
            op = ins.opname
            pushed: Optional[types.ModuleType] = None
            if op in _STATE_OPS:
                value = None
                if op in ("LOAD_ATTR", "LOAD_METHOD") and module is not None:
                    value = getattr(module, str(ins.argval), None)
                if isinstance(value, types.ModuleType):
                    pushed = value
                elif not isinstance(value, _NOT_STATE):
                    points[ins.offset] = None  # a module's function or class is not state
            elif op in ("LOAD_GLOBAL", "LOAD_NAME"):
                value = f_globals.get(str(ins.argval))
                if isinstance(value, types.ModuleType):
                    pushed = value
            if op in _VAR_LOADS:
                name = str(ins.argval)
                kind = _VAR_LOADS[op]
                if kind == 1:
                    # A global naming a function, class or module now is not a counter
                    # another thread rebinds: no point (most loads of globals are these).
                    value = f_globals.get(name, getattr(builtins, name, None))
                    if not isinstance(value, _NOT_STATE):
                        points[ins.offset] = (kind, name)
                else:
                    points[ins.offset] = (kind, name)
            if op not in ("EXTENDED_ARG", "CACHE", "NOP"):
                module = pushed
        self.points = points


# Per code object, for the life of the process: the local trace function, or None (not
# traced). Keyed by the tracing scope too (None = user code). Building a code object's
# points costs a ``dis`` pass; a run reuses every one an earlier run built.
_locals: dict[tuple[Optional[tuple[frozenset[str], tuple[str, ...]]], CodeType], Any] = {}
_points: dict[CodeType, dict[int, Optional[tuple[int, str]]]] = {}


class _Sink:
    """Where traced accesses go: the running check's point function (one at a time)."""

    point: Callable[[tuple[CodeType, int]], None] = staticmethod(lambda label: None)


def _make_local(code: CodeType, f_globals: dict[str, Any]) -> Any:
    pts = _points.get(code)
    if pts is None:
        pts = _points[code] = _CodePoints(code, f_globals).points
    if not pts and _OPCODES_TRACEABLE:
        return None  # touches nothing shared: not traced at all
    plain = _PLAIN
    sink = _Sink

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            offset = frame.f_lasti
            if offset in pts:
                spec = pts[offset]
                if spec is not None:
                    kind, name = spec
                    value = frame.f_globals.get(name) if kind == 1 else frame.f_locals.get(name)
                    if not isinstance(value, plain):
                        return local
                sink.point((frame.f_code, frame.f_lineno))
        elif event == "line":
            sink.point((frame.f_code, frame.f_lineno))
        return local

    return local


def make_tracer(
    point: Callable[[tuple[CodeType, int]], None],
    paths: Optional[tuple[frozenset[str], tuple[str, ...]]],
) -> Callable[..., Any]:
    """A ``sys.settrace`` function making every shared-state access in traced code a point.

    ``paths`` is None for the default (user code), else (files, package directories).
    ``point`` is called with ``(code, line)`` before each access. One tracer is active
    per process at a time (checks do not run concurrently): making one redirects all.
    """
    _Sink.point = staticmethod(point)
    cache = _locals
    opcodes = _OPCODES_TRACEABLE

    def wanted(code: CodeType) -> bool:
        return _wanted(code, paths)

    def global_(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        key = (paths, code)
        local = cache.get(key, False)
        if local is False:
            local = cache[key] = _make_local(code, frame.f_globals) if wanted(code) else None
        if local is None:
            return None
        if opcodes:
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        return local

    return global_


# ------------------------------------------------------------- sys.monitoring (3.12+)
#
# On CPython 3.12+ the same points come from sys.monitoring, which is far cheaper: an
# event is switched off, per code location, the first time it fires where it is not
# wanted (library code's PY_START, an instruction that is not a point), so after warm-up
# only the points themselves call back, and code in managed threads runs at full speed.

_monitoring: Any = getattr(sys, "monitoring", None) if _OPCODES_TRACEABLE else None
MONITORING = _monitoring is not None


class _Monitor:
    tool: Optional[int] = None
    paths: Optional[tuple[frozenset[str], tuple[str, ...]]] = None
    is_managed: Callable[[], bool] = staticmethod(lambda: False)
    enabled: ClassVar[set[CodeType]] = set()


def _wanted(code: CodeType, paths: Optional[tuple[frozenset[str], tuple[str, ...]]]) -> bool:
    if code.co_name == "<module>":
        return False  # a module body runs under its import lock, a real lock: no points
    if paths is None:
        return is_user_file(code.co_filename)
    fn = os.path.normcase(os.path.abspath(code.co_filename))
    return fn in paths[0] or fn.startswith(paths[1])


def _on_start(code: CodeType, offset: int) -> Any:
    mon = _monitoring
    if not _wanted(code, _Monitor.paths):
        return mon.DISABLE
    pts = _points.get(code)
    if pts is None:
        pts = _points[code] = _CodePoints(code, sys._getframe(1).f_globals).points
    if pts and code not in _Monitor.enabled:
        mon.set_local_events(_Monitor.tool, code, mon.events.INSTRUCTION)
        _Monitor.enabled.add(code)
    return mon.DISABLE


def _on_instruction(code: CodeType, offset: int) -> Any:
    pts = _points.get(code)
    if pts is None or offset not in pts:
        return _monitoring.DISABLE
    if not _Monitor.is_managed():
        return None
    frame = sys._getframe(1)
    spec = pts[offset]
    if spec is not None:
        kind, name = spec
        value = frame.f_globals.get(name) if kind == 1 else frame.f_locals.get(name)
        if not isinstance(value, _PLAIN):
            return None
    _Sink.point((code, frame.f_lineno))
    return None


def monitoring_start(is_managed: Callable[[], bool]) -> None:
    """Claim a sys.monitoring tool id and watch code starts (a check session begins)."""
    mon = _monitoring
    if _Monitor.tool is None:
        for tool in (4, 3, 2, 1, 0, 5):
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, "parabatch.testing")
                _Monitor.tool = tool
                break
        else:
            raise RuntimeError("sys.monitoring: no free tool id for parabatch.testing")
        mon.register_callback(tool, mon.events.PY_START, _on_start)
        mon.register_callback(tool, mon.events.PY_RESUME, _on_start)
        mon.register_callback(tool, mon.events.INSTRUCTION, _on_instruction)
    _Monitor.is_managed = staticmethod(is_managed)
    mon.restart_events()  # what an earlier check switched off may be wanted now
    mon.set_events(_Monitor.tool, mon.events.PY_START | mon.events.PY_RESUME)


def monitoring_scope(
    point: Callable[[tuple[CodeType, int]], None],
    paths: Optional[tuple[frozenset[str], tuple[str, ...]]],
) -> None:
    """Route the points of the next run to ``point``, tracing ``paths`` (None: user code)."""
    _Sink.point = staticmethod(point)
    if paths != _Monitor.paths:
        _Monitor.paths = paths
        _monitoring_clear()
        _monitoring.restart_events()


def _monitoring_clear() -> None:
    for code in _Monitor.enabled:
        _monitoring.set_local_events(_Monitor.tool, code, 0)
    _Monitor.enabled = set()


def monitoring_stop() -> None:
    """Switch every event off again (the check session ends): no cost outside checks."""
    if _Monitor.tool is None:
        return
    _monitoring.set_events(_Monitor.tool, 0)
    _monitoring_clear()
    _Monitor.is_managed = staticmethod(lambda: False)
