"""``clone``: what ``copy.deepcopy`` returns, built faster for the objects a node chain holds.

A parallel batch copies its wrapper chain once per item. ``copy.deepcopy`` spends most of
its time on generic dispatch, not on data (benchmarks/bench_isolation.py measures both): for
every instance it probes ``__deepcopy__`` on the *instance* (on a parabatch wrapper that
goes through ``__getattr__`` and raises an ``AttributeError``), calls ``__reduce_ex__(4)``,
builds argument tuples and probes ``__setstate__`` (a second ``AttributeError``). ``clone``
takes the same decisions from the *class*, once per class, and copies plain instances,
dicts, lists and tuples directly. Everything else goes to ``copy.deepcopy`` itself, with the
same memo, so identity and sharing inside the copy are exactly deepcopy's.
"""

from __future__ import annotations

import copy
import copyreg
import types
import weakref
from typing import Any, TypeVar

from ._shared import Shared
from ._wrappers import _Wrapper

__all__ = ["clone"]

T = TypeVar("T")

# The types copy.deepcopy returns unchanged (copy._deepcopy_atomic's dispatch entries).
_ATOMIC: frozenset[type] = frozenset(
    {
        type(None),
        type(Ellipsis),
        type(NotImplemented),
        int,
        float,
        bool,
        complex,
        bytes,
        str,
        types.CodeType,
        type,
        range,
        types.BuiltinFunctionType,
        types.FunctionType,
        weakref.ref,
        property,
    }
)

# Per class: True when deepcopy of an instance is ``new = cls.__new__(cls)`` followed by
# ``new.__dict__.update(deepcopy(old.__dict__))`` and nothing else.
_plain_cache: dict[type, bool] = {}


def _is_plain(cls: type) -> bool:
    """Whether deepcopy treats instances of ``cls`` as a bare ``__dict__`` to copy.

    That holds when nothing in the class customises copying or pickling, no ``__slots__``
    hold state, and attribute lookup is the default one (or a parabatch wrapper's, whose
    ``__getattr__`` refuses every dunder name, so deepcopy's probes fail as on a plain
    object).
    """
    try:
        return _plain_cache[cls]
    except KeyError:
        pass
    getstate = getattr(object, "__getstate__", None)  # Python >= 3.11 defines it on object
    plain = (
        type(cls) is type
        and cls not in copyreg.dispatch_table
        and getattr(cls, "__deepcopy__", None) is None
        and getattr(cls, "__setstate__", None) is None
        and getattr(cls, "__getstate__", None) is getstate
        and cls.__reduce_ex__ is object.__reduce_ex__  # type: ignore[comparison-overlap]
        and cls.__reduce__ is object.__reduce__  # type: ignore[comparison-overlap]
        and cls.__new__ is object.__new__  # type: ignore[comparison-overlap]
        and cls.__getattribute__ is object.__getattribute__  # type: ignore[comparison-overlap]
        and (not hasattr(cls, "__getattr__") or issubclass(cls, _Wrapper))
        and not copyreg._slotnames(cls)  # type: ignore[attr-defined]
        and "__dict__" in dir(cls)
    )
    _plain_cache[cls] = plain
    return plain


def _clone(x: Any, memo: dict[int, Any]) -> Any:
    cls = type(x)
    if cls in _ATOMIC:
        return x
    y = memo.get(id(x), memo)
    if y is not memo:
        return y
    if cls is dict:
        d: dict[Any, Any] = {}
        memo[id(x)] = d
        # Atoms inline: most of a chain's state is strings and numbers in dicts.
        for key, value in x.items():
            if type(key) not in _ATOMIC:
                key = _clone(key, memo)
            d[key] = value if type(value) in _ATOMIC else _clone(value, memo)
        return d
    if cls is list:
        lst: list[Any] = []
        memo[id(x)] = lst
        append = lst.append
        for value in x:
            append(value if type(value) in _ATOMIC else _clone(value, memo))
        return lst
    if cls is tuple:
        items = [_clone(value, memo) for value in x]
        # A recursive tuple may have been copied while copying its own elements.
        y = memo.get(id(x), memo)
        if y is not memo:
            return y
        if all(a is b for a, b in zip(items, x)):
            return x
        y = tuple(items)
        memo[id(x)] = y
        return y
    if cls is Shared:
        return x  # Shared.__deepcopy__ returns the wrapper itself
    if _is_plain(cls) and "__deepcopy__" not in x.__dict__:
        new = object.__new__(cls)
        memo[id(x)] = new
        state = x.__dict__
        if state:
            new.__dict__.update(_clone(state, memo))
        return new
    return copy.deepcopy(x, memo)


def clone(node: T) -> T:
    """Return an object equal to ``copy.deepcopy(node)``, faster for a wrapper chain.

    Same semantics as ``copy.deepcopy``: every mutable object reachable from ``node`` is
    copied (so whatever a thread writes to the clone, at any depth, the original and other
    clones do not see), objects shared inside ``node`` stay shared inside the clone, and
    :class:`parabatch.Shared` objects stay shared with the original. Instances of plain
    classes (no ``__deepcopy__``, ``__reduce__``, ``__getstate__``/``__setstate__``,
    ``__slots__`` or ``copyreg`` entry), including the parabatch wrappers and ordinary
    ``pocketflow.Node`` subclasses, and exact ``dict``/``list``/``tuple`` are copied here;
    any other object (a ``CallLog``, a class with its own ``__deepcopy__``, a lock) is
    handed to ``copy.deepcopy`` with the same memo, and raises what deepcopy raises.

    Example:
        >>> from pocketflow import Node
        >>> n = Node(); n.params = {"k": [1]}
        >>> c = clone(n); c.params["k"].append(2); n.params, c.params
        ({'k': [1]}, {'k': [1, 2]})
    """
    memo: dict[int, Any] = {}
    # A wrapper chain nests through ``inner_node``; copied outside-in, each level would
    # recurse into the next, and a chain a few hundred wrappers deep would overflow the
    # stack. Copied inside-out, every level finds its inner node already in the memo.
    levels: list[Any] = []
    seen: set[int] = set()
    x: Any = node
    while (
        id(x) not in seen
        and _is_plain(type(x))
        and "__deepcopy__" not in x.__dict__
        and "inner_node" in x.__dict__
    ):
        seen.add(id(x))
        levels.append(x)
        x = x.__dict__["inner_node"]
    if len(levels) > 1:
        for level in [x, *reversed(levels)]:
            _clone(level, memo)
    result: T = _clone(node, memo)
    return result
