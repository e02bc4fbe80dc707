"""The one replay formatter: the line of Python, or the command, that reruns a failure.

Every failure the harness reports ends with a line that reruns it: the checks
(:func:`parabatch.testing.replay` of the checked function), the verify API and its command
line (:func:`parabatch.testing.replay_scenario` of the factory). Each line is valid Python
whatever was checked. An object importable as ``module:qualname`` is named by its import;
any other (a lambda, a function defined inside another, a ``functools.partial``, a bound
method) is named by a placeholder identifier, and a trailing comment says what to bind to
it and where that object was defined.
"""

from __future__ import annotations

import importlib
import json
import keyword
import shlex
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Optional, Sequence

__all__ = ["PROG", "Named", "check_line", "importable_ref", "name", "scenario_line", "shell_line"]

#: How the command line is invoked.
PROG = "python -m parabatch.testing"


def _dotted(text: str) -> bool:
    """Whether ``text`` is a dotted name that Python source spells as it is.

    Identifiers in source are NFKC-normalised, so a name that normalisation changes would
    name another object in the printed line.
    """
    return all(
        p.isidentifier() and not keyword.iskeyword(p) and unicodedata.normalize("NFKC", p) == p
        for p in text.split(".")
    )


def importable_ref(obj: Any) -> Optional[str]:
    """``"module:qualname"`` when importing that gives back ``obj`` itself, else None.

    Example:
        >>> from parabatch import PflowBatchNode
        >>> importable_ref(PflowBatchNode), importable_ref(lambda: None)
        ('parabatch._batch:PflowBatchNode', None)
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module == "__main__" or not _dotted(module) or not _dotted(qualname):
        return None
    try:
        found: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:  # an import that fails, for any reason, is "not importable"
        return None
    return f"{module}:{qualname}" if found is obj else None


# Names the replay lines themselves bind: a placeholder spelled so would be rebound.
_TAKEN = frozenset({"parabatch", "t"})


@dataclass(frozen=True)
class Named:
    """How a replay line names an object.

    ``expr`` is a Python expression for it (a dotted name after ``imports``, or a
    placeholder identifier); ``comment`` is empty, or says what to bind to the placeholder.
    ``ref`` is ``"module:qualname"`` when the object is importable.
    """

    expr: str
    imports: str = ""
    comment: str = ""
    ref: Optional[str] = None


def _where(obj: Any) -> str:
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str):
        what = qualname
        code = getattr(obj, "__code__", None)
        if code is not None:
            what += f" at {code.co_filename}:{code.co_firstlineno}"
    else:
        cls = type(obj)
        what = f"{cls.__module__}.{cls.__qualname__} object {obj!r:.80}"
    # One line of printable text: a comment must not end early nor hold a NUL.
    return " ".join("".join(c if c.isprintable() else " " for c in what).split())


def name(obj: Any, role: str, placeholder: str) -> Named:
    """Name ``obj`` in a replay line; ``role`` says what it is, for the comment.

    Example:
        >>> name(name, "function", "fn").expr
        'parabatch.testing._replay.name'
        >>> n = name(lambda: None, "checked function", "fn")
        >>> n.expr, n.comment.startswith("  # fn: bind the checked function <lambda> at ")
        ('fn', True)
    """
    ref = importable_ref(obj)
    if ref is not None:
        module, _, qualname = ref.partition(":")
        return Named(f"{module}.{qualname}", f"import {module}; ", ref=ref)
    qual = getattr(obj, "__qualname__", None)
    main = getattr(obj, "__module__", None) == "__main__"
    if main and isinstance(qual, str) and _dotted(qual) and qual.split(".")[0] not in _TAKEN:
        return Named(qual, comment=f"  # run in the script that defines {qual}")
    short = getattr(obj, "__name__", None)
    if isinstance(short, str) and "." not in short and _dotted(short) and short not in _TAKEN:
        placeholder = short
    return Named(
        placeholder,
        comment=(
            f"  # {placeholder}: bind the {role} {_where(obj)} (not importable by "
            "module:qualname) to this name"
        ),
    )


def check_line(fn: Any, schedule: str, trace_names: Optional[Sequence[str]] = None) -> str:
    """The line that reruns one schedule of a check: ``parabatch.testing.replay(fn, ...)``.

    ``trace_names`` are the modules the check traced, as given (None: the default, user
    code, which the replay's default traces too; empty: nothing).

    Example:
        >>> from parabatch.testing._replay import check_line
        >>> check_line(check_line, "0.1", [])  # doctest: +NORMALIZE_WHITESPACE
        'import parabatch.testing._replay; import parabatch.testing;
         parabatch.testing.replay(parabatch.testing._replay.check_line, "0.1",
         trace_modules=[])'
    """
    n = name(fn, "checked function", "fn")
    extra = "" if trace_names is None else f", trace_modules={list(trace_names)!r}"
    return (
        f"{n.imports}import parabatch.testing; "
        f"parabatch.testing.replay({n.expr}, {json.dumps(schedule)}{extra}){n.comment}"
    )


def scenario_line(
    factory: Any, scenario_json: str, schedule: str, traced: Sequence[str] = ()
) -> str:
    """The line that reruns one scenario under one schedule: ``replay_scenario(...)``.

    ``factory`` is the ``"module:Name"`` reference the user gave, or the factory itself.
    ``traced`` are the module names traced when the failure was found (none:
    ``trace=False``, so the replay traces what the search did).

    Example:
        >>> print(scenario_line("pkg:Node", '{"items":["a"]}', "0.1", ["pkg"])[31:])
        t.replay_scenario('pkg:Node', '{"items":["a"]}', '0.1', trace=['pkg'])
    """
    if isinstance(factory, str):
        subject = repr(factory)
        comment = ""
    else:
        n = name(factory, "batch node factory", "factory")
        subject = repr(n.ref) if n.ref is not None else n.expr
        comment = "" if n.ref is not None else n.comment
    trace = f"trace={list(traced)!r}" if traced else "trace=False"
    return (
        f"import parabatch.testing as t; t.replay_scenario({subject}, {scenario_json!r}, "
        f"{schedule!r}, {trace}){comment}"
    )


def shell_line(ref: str, scenario_json: str, schedule: str, traced: bool) -> str:
    """The shell command that reruns one scenario: ``python -m parabatch.testing replay``.

    Example:
        >>> for part in shell_line("pkg:Node", '{"x":1}', "0.1", traced=False).split(" --"):
        ...     print(part)
        python -m parabatch.testing replay pkg:Node
        scenario '{"x":1}'
        schedule 0.1
        no-trace
    """
    words = [ref, "--scenario", scenario_json, "--schedule", schedule]
    flags = "" if traced else " --no-trace"
    return f"{PROG} replay {' '.join(shlex.quote(w) for w in words)}{flags}"
