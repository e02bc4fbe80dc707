"""Prototypes of core changes, measured here before anyone applies them to ``src/parabatch``.

None of this is in the library. Each prototype is a subclass or a drop-in function with the
same observable behaviour as the code it would replace (checked by
:func:`check_prototypes_agree`, untimed), so the benchmarks can run it side by side with the
current core and report the gain as a median of per-round ratios.

* :func:`fast_resolve` — templates compiled once per distinct string into a plan of literal
  parts and pre-split paths; lookups go straight to ``dict``/``list`` (and to the two dicts
  of a ``NamespacedSharedStore``), with the current ``resolve_template`` as the slow path
  for anything else and for every error, so messages are unchanged.
  :class:`FastTemplateWrapper` uses it.
* :func:`plan_copier` — the chain's copy planned once per batch: a tree of closures that
  copy dicts and lists with ``dict.copy``/``list.copy`` and fix up only the slots holding
  containers or instances; ``clone`` for any chain it does not cover.
* :func:`run_lanes` / :class:`LanesBatchNode` — ``max_concurrent`` lanes that each take the
  next index, instead of one future per item and a coordinator woken by
  ``wait(FIRST_COMPLETED)``.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import itertools
import threading
from typing import Any, Callable, Optional, Union

from pocketflow import Node

import parabatch
from parabatch._clone import _ATOMIC, _is_plain, clone
from parabatch._errors import TemplateError
from parabatch._isolation import check_copyable
from parabatch._runner import Collected, ExecutorFactory, ItemOutcome, StopFlag
from parabatch._templates import _TEMPLATE, _compile, _parse_path, _to_text, resolve_template
from parabatch._wrappers import NamespacedSharedStore

# -- templates compiled once ----------------------------------------------------------------

Segments = tuple[tuple[str, Optional[int]], ...]  # (key as a dict sees it, index or None)
Plan = Union[None, Segments, tuple[Union[str, Segments], ...]]


class _Slow(Exception):
    """The fast path cannot decide: hand the value to ``resolve_template``."""


def _segments(path: str, template: str) -> Segments:
    out = []
    for seg in _parse_path(path, template):
        if type(seg) is int:
            out.append((str(seg), seg))
        else:
            try:
                out.append((seg, int(seg)))
            except ValueError:
                out.append((seg, None))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _plan(value: str) -> tuple[int, Plan]:
    """(0, None): no template; (1, segments): one whole template; (2, parts): text."""
    form = _compile(value)
    if form is None:
        return 0, None
    try:
        if type(form) is str:
            return 1, _segments(form, value)
        parts: list[Union[str, Segments]] = []
        pos = 0
        for m in _TEMPLATE.finditer(value):
            parts.append(value[pos : m.start()])
            parts.append(_segments(m.group(1), m.group(0)))
            pos = m.end()
        parts.append(value[pos:])
        return 2, tuple(parts)
    except TemplateError:
        return 3, None  # malformed: always the slow path, which raises the error


def _get(segments: Segments, context: Any) -> Any:
    cur = context
    for key, index in segments:
        kind = type(cur)
        if kind is dict:
            cur = cur[key]
        elif kind is NamespacedSharedStore:
            ns = cur.namespace
            cur = ns[key] if key in ns else cur.root[key]
        elif kind is list and index is not None:
            cur = cur[index]
        else:
            raise _Slow
    return cur


def _fast(value: Any, context: Any) -> Any:
    kind = type(value)
    if kind is str:
        how, plan = _plan(value)
        if how == 0:
            return value
        if how == 1:
            return _get(plan, context)  # type: ignore[arg-type]
        if how == 3:
            raise _Slow
        return "".join(
            part if type(part) is str else _to_text(_get(part, context))  # type: ignore[arg-type]
            for part in plan  # type: ignore[union-attr]
        )
    if kind is dict:
        return {k: _fast(v, context) for k, v in value.items()}
    if kind is list:
        return [_fast(v, context) for v in value]
    if kind is tuple:
        return tuple(_fast(v, context) for v in value)
    if kind in _ATOMIC:
        return value
    raise _Slow  # other mappings and sequences: the general code


def fast_resolve(value: Any, context: Any) -> Any:
    """``resolve_template(value, context)``, same result and same errors, fewer steps."""
    try:
        return _fast(value, context)
    except (_Slow, KeyError, IndexError):
        return resolve_template(value, context)


class FastTemplateWrapper(parabatch.TemplateAwareNodeWrapper):  # type: ignore[misc]
    """``TemplateAwareNodeWrapper`` resolving with :func:`fast_resolve` (prototype)."""

    def _run(self, shared: Any) -> Any:
        resolved = {k: fast_resolve(v, shared) for k, v in self.template_params.items()}
        original = self.inner_node.params
        self.inner_node.params = {**self.params, **self.static_params, **resolved}
        try:
            return self.inner_node._run(shared)
        finally:
            self.inner_node.params = original


# -- a copier planned once per batch --------------------------------------------------------


class _NoPlan(Exception):
    """The chain holds something a plan does not cover: the batch uses ``clone``."""


Copier = Callable[[Any], Any]


def _plan_copy(x: Any, seen: set[int]) -> Optional[Copier]:
    """A function copying ``x`` as ``clone`` would, or None when ``x`` is kept as it is."""
    cls = type(x)
    if cls in _ATOMIC or cls is parabatch.Shared:
        return None
    if id(x) in seen:
        raise _NoPlan  # shared inside the chain: deepcopy's memo semantics, so clone
    seen.add(id(x))
    if cls is dict:
        if any(type(k) not in _ATOMIC for k in x):
            raise _NoPlan
        subs = tuple((k, f) for k, v in x.items() if (f := _plan_copy(v, seen)) is not None)
        if not subs:
            return dict.copy

        def copy_dict(d: dict[Any, Any]) -> dict[Any, Any]:
            new = d.copy()
            for key, f in subs:
                new[key] = f(d[key])
            return new

        return copy_dict
    if cls is list:
        idx = tuple((i, f) for i, v in enumerate(x) if (f := _plan_copy(v, seen)) is not None)
        if not idx:
            return list.copy

        def copy_list(lst: list[Any]) -> list[Any]:
            new = lst.copy()
            for i, f in idx:
                new[i] = f(lst[i])
            return new

        return copy_list
    if _is_plain(cls) and "__deepcopy__" not in x.__dict__:
        state = _plan_copy(x.__dict__, seen) or dict.copy
        make = object.__new__

        def copy_instance(obj: Any) -> Any:
            new = make(cls)
            new.__dict__ = state(obj.__dict__)
            return new

        return copy_instance
    raise _NoPlan  # tuples, CallLog, own __deepcopy__, ...: clone handles them


def plan_copier(node: Any) -> Copier:
    """A copier for ``node`` as it is now: plain instances, dicts, lists, atoms, no sharing.

    The plan records, once, which values are atoms (kept) and which are containers (copied
    by ``dict.copy``/``list.copy`` plus a fix-up of the non-atomic slots), so a copy does no
    type dispatch and no memo lookups. It is valid while ``node``'s structure does not
    change, which holds during a parallel batch: the original chain is only read. Anything
    it does not cover falls back to ``clone`` for the whole chain.
    """
    try:
        plan = _plan_copy(node, set())
    except _NoPlan:
        return clone
    return plan or (lambda n: n)


# -- lanes instead of a window of futures ----------------------------------------------------


def run_lanes(
    fn: Callable[[int, Any], ItemOutcome],
    items: list[Any],
    *,
    executor: ExecutorFactory,
    max_concurrent: int,
    stop_on_failure: bool,
    stop: StopFlag,
    collect: Callable[[ItemOutcome], None],
) -> None:
    """``max_concurrent`` lanes that each take the next index (prototype of ``run_parallel``).

    Same bound and start order as the window, but a finished item is followed by the next
    one in the same thread: no per-item future, no ``wait``, no coordinator wake-up. The
    outcome is collected under the lock that hands out indices, so ``collect`` (and the
    progress callback) runs on a worker thread, one call at a time.
    """
    total = len(items)
    if total == 0:
        return
    counter = itertools.count()
    lock = threading.Lock()

    def lane() -> None:
        outcome: Optional[ItemOutcome] = None
        while True:
            with lock:
                if outcome is not None:
                    collect(outcome)
                    if stop_on_failure and outcome.error is not None:
                        stop.is_set = True
                if stop.is_set:
                    return
                idx = next(counter)
            if idx >= total:
                return
            outcome = fn(idx, items[idx])

    lanes = min(max_concurrent, total)
    pool = executor(lanes)
    try:
        futures = [pool.submit(lane) for _ in range(lanes)]
        concurrent.futures.wait(futures)
        for fut in futures:
            fut.result()
    except BaseException:
        stop.is_set = True
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class LanesBatchNode(parabatch.PflowBatchNode):  # type: ignore[misc]
    """``PflowBatchNode`` whose parallel mode runs :func:`run_lanes` (prototype)."""

    def _exec_parallel(self, items: list[Any]) -> Collected:
        check_copyable(self.inner_node)
        collected = self._collector(len(items))
        run_lanes(
            self._exec_single,
            items,
            executor=self.executor,
            max_concurrent=self.max_concurrent,
            stop_on_failure=self.error_handling == "fail_fast",
            stop=self._stop,
            collect=collected.add,
        )
        return collected


class PlannedCopyBatchNode(parabatch.PflowBatchNode):  # type: ignore[misc]
    """``PflowBatchNode`` copying each item's chain with :func:`plan_copier` (prototype)."""

    _copier: Copier = clone

    def _exec_parallel(self, items: list[Any]) -> Collected:
        self._copier = plan_copier(self.inner_node)
        return super()._exec_parallel(items)

    def _copy_chain(self) -> Any:
        return self._copier(self.inner_node)


class LanesPlannedCopyBatchNode(LanesBatchNode):  # type: ignore[misc]
    """Lanes and the planned copy together (prototype)."""

    _copier: Copier = clone

    def _exec_parallel(self, items: list[Any]) -> Collected:
        self._copier = plan_copier(self.inner_node)
        return super()._exec_parallel(items)

    def _copy_chain(self) -> Any:
        return self._copier(self.inner_node)


# -- agreement with the core (untimed) -------------------------------------------------------


def check_prototypes_agree() -> None:
    """The prototypes give what the core gives: same resolved values, errors, copies."""
    ctx = {
        "a": {"b": [10, {"c": "x"}]},
        "s": "t",
        "l": ["p", "q"],
        "n": None,
        "d": {"0": "zero"},
    }
    ns = NamespacedSharedStore(dict(ctx), "ns")
    ns["s"] = "namespaced"
    values = [
        "plain",
        "${a.b[1].c}",
        "${a.b.0}",
        "x ${s} ${l} ${n} y",
        "${d.0}",
        "${d[0]}",
        ["${l[-1]}", ("${s}", 3)],
        {"k": "${a}"},
    ]
    for context in (ctx, ns):
        for v in values:
            assert fast_resolve(v, context) == resolve_template(v, context), v
    for bad in ("${missing}", "${a.b[7]}", "${s.x}", "${a[x}", "${l.z}", "x ${a.q} y"):
        assert _error(resolve_template, bad, ctx) == _error(fast_resolve, bad, ctx), bad
    shared_list = [1, [2]]
    node = parabatch.NamespacedNodeWrapper(
        parabatch.TemplateAwareNodeWrapper(
            _Holder({"x": shared_list, "y": shared_list, ("t", 1): 2}), "n", {"q": "${s}"}
        ),
        "n",
    )
    assert plan_copier(node) is clone  # shared inside the chain: no plan
    chain = parabatch.NamespacedNodeWrapper(
        parabatch.TemplateAwareNodeWrapper(
            _Holder({"x": [1, [2]], "m": {"k": "v"}, "s": parabatch.Shared([])}),
            "n",
            {"q": "${s}", "stop": ["a"]},
        ),
        "n",
    )
    copier = plan_copier(chain)
    assert copier is not clone
    a, b = copier(chain), copy.deepcopy(chain)
    assert type(a) is type(b) and vars(a).keys() == vars(b).keys()
    ia, ib, orig = a.inner_node.inner_node, b.inner_node.inner_node, chain.inner_node.inner_node
    assert ia.state == ib.state and ia.state["s"] is orig.state["s"]
    assert ia.state["x"][1] is not orig.state["x"][1] and ia.params is not orig.params
    assert a.inner_node.static_params == chain.inner_node.static_params
    assert a.inner_node.static_params["stop"] is not chain.inner_node.static_params["stop"]


def _error(fn: Callable[[Any, Any], Any], value: Any, context: Any) -> str:
    try:
        fn(value, context)
    except TemplateError as exc:
        return str(exc)
    raise AssertionError(f"{value!r}: no TemplateError")


class _Holder(Node):  # type: ignore[misc]
    """A pocketflow ``Node`` holding state, for the agreement check."""

    def __init__(self, state: Any) -> None:
        super().__init__()
        self.state = state
