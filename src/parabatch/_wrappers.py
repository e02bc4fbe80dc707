"""The wrapper chain a batch node runs: namespacing and template params around a node."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from pocketflow import BaseNode

from ._templates import has_template, resolve_template

__all__ = ["NamespacedNodeWrapper", "NamespacedSharedStore", "TemplateAwareNodeWrapper"]


class _Wrapper(BaseNode):  # type: ignore[misc]
    """Common ground of the wrappers: an inner node, its id, and attribute delegation."""

    def __init__(self, inner_node: Any, node_id: str) -> None:
        super().__init__()
        self.inner_node = inner_node
        self.node_id = node_id

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the wrapper lacks. Dunder names are never delegated:
        # copy.deepcopy looks up __deepcopy__ on the *instance*, and delegating it would
        # hand back a copy of the bare inner node with the wrappers silently dropped; copy
        # and pickle probe __getstate__/__setstate__/__reduce_ex__ on half-built objects,
        # where delegating recurses. Normal attributes go to the inner node.
        if (name[:2] == "__" and name[-2:] == "__") or name == "inner_node":
            raise AttributeError(name)
        try:
            inner = self.__dict__["inner_node"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner_node!r}, {self.node_id!r})"


class TemplateAwareNodeWrapper(_Wrapper):
    """Resolve ``${...}`` params against the shared store at run time.

    ``params`` are the node's own params; those holding a template are resolved each run
    and the inner node sees ``{**flow_params, **static, **resolved}``. The wrapper swaps
    ``inner_node.params`` for the call and restores it afterwards. That swap is not safe
    when two threads run the same wrapper instance (one thread's exec can read the other's
    params); :class:`parabatch.PflowBatchNode` therefore runs every parallel item on its own
    deep copy of the chain.

    Example:
        >>> from pocketflow import Node
        >>> class Echo(Node):
        ...     def exec(self, _): return self.params["q"]
        ...     def post(self, shared, p, e): shared["out"] = e
        >>> w = TemplateAwareNodeWrapper(Echo(), "echo", {"q": "about ${item}"})
        >>> shared = {"item": "cats"}; _ = w.run(shared); shared["out"]
        'about cats'
    """

    def __init__(self, inner_node: Any, node_id: str, params: dict[str, Any] | None = None):
        super().__init__(inner_node, node_id)
        params = dict(params or {})
        self.static_params = {k: v for k, v in params.items() if not has_template(v)}
        self.template_params = {k: v for k, v in params.items() if has_template(v)}

    def _run(self, shared: Any) -> Any:
        resolved = {k: resolve_template(v, shared) for k, v in self.template_params.items()}
        original = self.inner_node.params
        # The race this project exists for: the write below is visible to every thread
        # that shares this wrapper's inner node until the finally restores it.
        self.inner_node.params = {**self.params, **self.static_params, **resolved}
        try:
            return self.inner_node._run(shared)
        finally:
            self.inner_node.params = original


class NamespacedSharedStore(MutableMapping):  # type: ignore[type-arg]
    """A view of the shared store in which a node's writes land in ``shared[node_id]``.

    Writes go to the node's namespace, except special keys ``__x__`` (such as
    ``__llm_calls__``), which go to the root. Reads look in the namespace first, then at
    the root.

    Example:
        >>> root = {"doc": "d"}
        >>> view = NamespacedSharedStore(root, "n")
        >>> view["summary"] = "s"; view["__llm_calls__"] = []
        >>> root["n"], view["doc"], "__llm_calls__" in root
        ({'summary': 's'}, 'd', True)
    """

    def __init__(self, root: MutableMapping[str, Any], node_id: str) -> None:
        self.root = root
        self.node_id = node_id
        namespace = root.get(node_id)
        if not isinstance(namespace, dict):
            namespace = {}
            root[node_id] = namespace
        self.namespace: dict[str, Any] = namespace

    @staticmethod
    def _is_special(key: str) -> bool:
        return isinstance(key, str) and key.startswith("__") and key.endswith("__")

    def __getitem__(self, key: str) -> Any:
        if key in self.namespace:
            return self.namespace[key]
        return self.root[key]

    def __setitem__(self, key: str, value: Any) -> None:
        (self.root if self._is_special(key) else self.namespace)[key] = value

    def __delitem__(self, key: str) -> None:
        del (self.root if self._is_special(key) else self.namespace)[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.namespace
        yield from (k for k in self.root if k not in self.namespace)

    def __len__(self) -> int:
        return len(self.namespace) + sum(1 for k in self.root if k not in self.namespace)

    def __repr__(self) -> str:
        return f"NamespacedSharedStore(node_id={self.node_id!r}, namespace={self.namespace!r})"


class NamespacedNodeWrapper(_Wrapper):
    """Run a node on a :class:`NamespacedSharedStore`, so its outputs land in ``shared[node_id]``.

    Example:
        >>> from pocketflow import Node
        >>> class Say(Node):
        ...     def post(self, shared, p, e): shared["said"] = shared["word"]
        >>> shared = {"word": "hi"}
        >>> _ = NamespacedNodeWrapper(Say(), "say").run(shared)
        >>> shared["say"]
        {'said': 'hi'}
    """

    def _run(self, shared: Any) -> Any:
        return self.inner_node._run(NamespacedSharedStore(shared, self.node_id))
