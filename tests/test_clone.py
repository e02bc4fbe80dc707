"""``clone`` isolates a wrapper chain exactly as ``copy.deepcopy`` does, and defers otherwise."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pocketflow import Node

from parabatch import CallLog, NamespacedNodeWrapper, Shared, TemplateAwareNodeWrapper
from parabatch._clone import _ATOMIC, clone

from .nodes import Tracker, Work


def _chain() -> Any:
    params = {
        "model": "m",
        "stop": ["a", "b"],
        "meta": {"tags": ["x"], "n": 1},
        "q": "about ${item}",
        "pair": ("${item}", "fixed"),
    }
    return NamespacedNodeWrapper(TemplateAwareNodeWrapper(Work(Tracker()), "n", params), "n")


def _graph(root: Any) -> list[Any]:
    """Every object reachable from ``root`` through dicts, lists, tuples and ``__dict__``s."""
    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or type(obj) in _ATOMIC or isinstance(obj, Shared):
            continue
        seen[id(obj)] = obj
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return list(seen.values())


def _shape(obj: Any, memo: dict[int, int] | None = None) -> Any:
    """A structural fingerprint: types, atoms, and where objects are shared (by first visit)."""
    memo = {} if memo is None else memo
    if type(obj) in _ATOMIC:
        return obj
    if isinstance(obj, Shared):
        return ("Shared", id(obj))
    if id(obj) in memo:
        return ("ref", memo[id(obj)])
    memo[id(obj)] = len(memo)
    if isinstance(obj, dict):
        return ("dict", [(_shape(k, memo), _shape(v, memo)) for k, v in obj.items()])
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [_shape(v, memo) for v in obj])
    if hasattr(obj, "__dict__"):
        return (type(obj).__qualname__, _shape(vars(obj), memo))
    return (type(obj).__qualname__, repr(obj))


def test_chain_clone_shares_no_mutable_object_with_the_original() -> None:
    chain = _chain()
    copied = clone(chain)
    original_ids = {id(o) for o in _graph(chain)}
    shared_mutables = [o for o in _graph(copied) if id(o) in original_ids]
    # Tuples of atoms are immutable: deepcopy returns them as they are, and so does clone.
    assert all(type(o) is tuple for o in shared_mutables), shared_mutables
    assert _shape(copied) == _shape(copy.deepcopy(chain))


def test_chain_clone_keeps_shared_objects_shared() -> None:
    chain = _chain()
    tracker = chain.inner_node.inner_node.tracker
    assert clone(chain).inner_node.inner_node.tracker is tracker


def test_writes_to_a_clone_at_any_depth_stay_in_the_clone() -> None:
    chain = _chain()
    before = _shape(chain)
    c = clone(chain)
    c.node_id = "other"
    c.inner_node.static_params["stop"].append("c")
    c.inner_node.static_params["meta"]["tags"].append("y")
    c.inner_node.inner_node.params = {"swapped": True}
    c.inner_node.inner_node.latency["k"] = 1.0
    c.inner_node.inner_node.cur_retry = 3
    assert _shape(chain) == before


def test_running_a_clone_leaves_the_original_untouched() -> None:
    chain = _chain()
    before = _shape(chain)
    c = clone(chain)
    shared = {"item": "cats", "__llm_calls__": []}
    c.run(shared)
    assert shared["n"]["out"]["params"]["q"] == "about cats"
    assert _shape(chain) == before


def test_threads_running_clones_see_only_their_own_params() -> None:
    chain = _chain()
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def one(item: str) -> None:
        shared: dict[str, Any] = {"item": item}
        clone(chain).run(shared)
        with lock:
            seen.append((item, shared["n"]["out"]["params"]["q"]))

    threads = [threading.Thread(target=one, args=(f"i{k}",)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted((f"i{k}", f"about i{k}") for k in range(20))


def test_aliasing_and_cycles_are_preserved() -> None:
    node = Node()
    common = [1, 2]
    node.a = common
    node.b = {"same": common}
    node.me = node
    node.t = (common, "x")
    c = clone(node)
    assert c.a is c.b["same"] is c.t[0]
    assert c.a is not common
    assert c.me is c


class _Custom:
    def __init__(self) -> None:
        self.calls = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> _Custom:
        new = _Custom()
        new.calls = self.calls + 1
        return new


class _Slotted:
    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = [1]


class _Reducing:
    def __init__(self, x: list[int]) -> None:
        self.x = x

    def __reduce__(self) -> Any:
        return (_Reducing, (self.x,))


def test_unknown_objects_fall_back_to_deepcopy() -> None:
    node = Node()
    node.custom = _Custom()
    node.slotted = _Slotted()
    node.reducing = _Reducing([1])
    node.log = CallLog([{"t": 1}])
    c = clone(node)
    assert c.custom.calls == 1  # its own __deepcopy__ ran
    assert c.slotted.data == [1] and c.slotted.data is not node.slotted.data
    assert c.reducing.x == [1] and c.reducing.x is not node.reducing.x
    assert isinstance(c.log, CallLog) and c.log == node.log and c.log._lock is not node.log._lock


def test_an_instance_level_deepcopy_hook_is_honoured() -> None:
    node = Node()
    node.__deepcopy__ = lambda memo: "custom"
    assert clone(node) == copy.deepcopy(node) == "custom"


def test_what_deepcopy_refuses_clone_refuses() -> None:
    node = Node()
    node.lock = threading.Lock()
    with pytest.raises(TypeError):
        copy.deepcopy(node)
    with pytest.raises(TypeError):
        clone(node)


_leaves = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.floats(allow_nan=False))


def _build(draw: Any) -> Any:
    return draw(
        st.recursive(
            _leaves,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.tuples(inner, inner),
                st.dictionaries(st.text(max_size=2), inner, max_size=3),
                st.builds(lambda d: _node_with(d), st.dictionaries(st.sampled_from("abc"), inner)),
            ),
            max_leaves=12,
        )
    )


def _node_with(attrs: dict[str, Any]) -> Node:
    n = Node()
    for k, v in attrs.items():
        setattr(n, k, v)
    return n


@given(st.composite(_build)(), st.data())
def test_clone_matches_deepcopy_on_random_structures(value: Any, data: Any) -> None:
    # Sometimes alias a part of the structure inside itself, as real chains do.
    holder = Node()
    holder.value = value
    holder.again = value if data.draw(st.booleans()) else None
    copied = clone(holder)
    assert _shape(copied) == _shape(copy.deepcopy(holder))
    original_ids = {id(o) for o in _graph(holder)}
    for obj in _graph(copied):
        if id(obj) in original_ids:
            assert type(obj) is tuple  # only immutable tuples of atoms may be shared
