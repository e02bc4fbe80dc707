from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from pocketflow import Flow, Node

from parabatch import NamespacedNodeWrapper, NamespacedSharedStore, TemplateAwareNodeWrapper


class Capture(Node):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def exec(self, _: Any) -> Any:
        self.seen.append(dict(self.params))
        if self.params.get("boom"):
            raise RuntimeError("boom")
        return self.params.get("q")

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["out"] = exec_res
        return "default"


class CopiesItself(Node):
    """A node defining __deepcopy__: the case that defeated the reference copy guard."""

    def __deepcopy__(self, memo: dict[int, Any]) -> CopiesItself:
        new = CopiesItself()
        new.params = copy.deepcopy(self.params, memo)
        return new


def test_template_params_resolved_merged_and_restored() -> None:
    inner = Capture()
    inner.params = {"original": 1}
    wrapper = TemplateAwareNodeWrapper(inner, "c", {"q": "about ${topic}", "k": 7})
    shared = {"topic": "owls"}
    wrapper.run(shared)
    assert inner.seen == [{"q": "about owls", "k": 7}]
    assert shared["out"] == "about owls"
    assert inner.params == {"original": 1}


def test_params_restored_when_inner_raises() -> None:
    inner = Capture()
    inner.params = {"original": 1}
    wrapper = TemplateAwareNodeWrapper(inner, "c", {"boom": True})
    with pytest.raises(RuntimeError):
        wrapper.run({})
    assert inner.params == {"original": 1}


def test_flow_params_sit_under_node_params() -> None:
    inner = Capture()
    wrapper = TemplateAwareNodeWrapper(inner, "c", {"q": "${x}"})
    flow = Flow(start=wrapper)
    flow.set_params({"q": "flow", "extra": 1})
    flow.run({"x": "node"})
    assert inner.seen == [{"q": "node", "extra": 1}]


def test_attribute_reads_delegate_but_dunders_do_not() -> None:
    inner = Capture()
    inner.custom = "yes"  # type: ignore[attr-defined]
    wrapper = NamespacedNodeWrapper(TemplateAwareNodeWrapper(inner, "c", {}), "c")
    assert wrapper.custom == "yes"
    assert wrapper.max_retries == 1
    with pytest.raises(AttributeError):
        wrapper.__getstate_not_there__  # noqa: B018
    with pytest.raises(AttributeError):
        wrapper.missing  # noqa: B018


@pytest.mark.parametrize("inner_cls", [Capture, CopiesItself])
def test_deepcopy_keeps_the_whole_chain(inner_cls: type[Node]) -> None:
    inner = inner_cls()
    chain = NamespacedNodeWrapper(TemplateAwareNodeWrapper(inner, "c", {"q": "${x}"}), "c")
    dup = copy.deepcopy(chain)
    assert type(dup) is NamespacedNodeWrapper
    assert type(dup.inner_node) is TemplateAwareNodeWrapper
    assert type(dup.inner_node.inner_node) is inner_cls
    assert dup.inner_node.inner_node is not inner
    assert dup.inner_node.template_params == {"q": "${x}"}


def test_reference_guard_loses_wrappers_when_inner_defines_deepcopy() -> None:
    """The copy guard of the reference design, kept here as a negative control."""

    class ReferenceWrapper(TemplateAwareNodeWrapper):
        def __getattr__(self, name: str) -> Any:
            if name in ("__setstate__", "__getstate__", "__getnewargs__", "__getnewargs_ex__"):
                raise AttributeError(name)
            return getattr(self.__dict__["inner_node"], name)

    dup = copy.deepcopy(ReferenceWrapper(CopiesItself(), "c", {"q": "${x}"}))
    assert type(dup) is CopiesItself  # the wrapper silently vanished
    fixed = copy.deepcopy(TemplateAwareNodeWrapper(CopiesItself(), "c", {"q": "${x}"}))
    assert type(fixed) is TemplateAwareNodeWrapper


def test_chain_pickles() -> None:
    chain = NamespacedNodeWrapper(TemplateAwareNodeWrapper(Capture(), "c", {"q": "${x}"}), "c")
    back = pickle.loads(pickle.dumps(chain))
    shared = {"x": "v"}
    back.run(shared)
    assert shared["c"]["out"] == "v"


def test_namespaced_writes_land_in_namespace_and_specials_at_root() -> None:
    root: dict[str, Any] = {"doc": "root-doc", "c": {"old": 1}}
    view = NamespacedSharedStore(root, "c")
    view["summary"] = "s"
    view["__llm_calls__"] = ["x"]
    assert root["c"] == {"old": 1, "summary": "s"}
    assert root["__llm_calls__"] == ["x"]
    assert view["doc"] == "root-doc" and view["old"] == 1
    view["doc"] = "mine"
    assert view["doc"] == "mine" and root["doc"] == "root-doc"
    assert "summary" in view and "nothing" not in view and view.get("nothing") is None
    assert list(view) == ["old", "summary", "doc", "c", "__llm_calls__"]
    assert len(view) == 5
    del view["summary"]
    assert "summary" not in root["c"]
    with pytest.raises(KeyError):
        view["nothing"]


def test_namespace_created_or_replaced_when_not_a_dict() -> None:
    root: dict[str, Any] = {"c": "not a dict"}
    NamespacedSharedStore(root, "c")["k"] = 1
    assert root["c"] == {"k": 1}


def test_namespaced_wrapper_in_a_flow() -> None:
    shared: dict[str, Any] = {"topic": "t"}
    first = NamespacedNodeWrapper(TemplateAwareNodeWrapper(Capture(), "a", {"q": "${topic}"}), "a")
    second = NamespacedNodeWrapper(
        TemplateAwareNodeWrapper(Capture(), "b", {"q": "${a.out}!"}), "b"
    )
    first >> second
    Flow(start=first).run(shared)
    assert shared["a"] == {"out": "t"} and shared["b"] == {"out": "t!"}
