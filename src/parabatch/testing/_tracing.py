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
import os
import sys
import sysconfig
import types
from types import CodeType, FrameType
from typing import Any, Callable, Optional

__all__ = ["is_user_file", "make_tracer"]

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
            hit = not filename.startswith("<frozen")
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
        prev: Optional[dis.Instruction] = None
        for ins in dis.get_instructions(code):
            op = ins.opname
            if op in _STATE_OPS:
                # `module.attr` (a function or class looked up in a module) is not state.
                if not (
                    op in ("LOAD_ATTR", "LOAD_METHOD")
                    and prev is not None
                    and prev.opname in ("LOAD_GLOBAL", "LOAD_NAME")
                    and isinstance(f_globals.get(str(prev.argval)), types.ModuleType)
                ):
                    points[ins.offset] = None
            elif op in _VAR_LOADS:
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
            prev = ins
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
        if paths is None:
            return is_user_file(code.co_filename)
        fn = os.path.normcase(os.path.abspath(code.co_filename))
        return fn in paths[0] or fn.startswith(paths[1])

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
