"""The node types a workflow's ``"type"`` can name, and the registry users extend."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Callable, Optional

import jsonschema

from ._errors import NodeTypeError
from ._nodes import CollectNode, HttpNode, ShellNode, SimulatedLlmNode

__all__ = ["GROUP_TYPE", "NodeRegistry", "NodeType", "default_registry"]

#: The ``type`` of a parallel group; reserved, so no node type may take it.
GROUP_TYPE = "parallel_group"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class NodeType:
    """One registered node type: its name, a factory, and the JSON Schema of its params.

    Example:
        >>> t = default_registry()["llm"]
        >>> t.name, t.factory.__name__, t.params_schema["required"]
        ('llm', 'SimulatedLlmNode', ['prompt'])
    """

    __slots__ = ("factory", "name", "params_schema", "validator")

    def __init__(
        self, name: str, factory: Callable[[], Any], params_schema: dict[str, Any]
    ) -> None:
        self.name = name
        self.factory = factory
        self.params_schema = params_schema
        self.validator = jsonschema.Draft202012Validator(params_schema)

    def __repr__(self) -> str:
        return f"NodeType({self.name!r}, {getattr(self.factory, '__name__', self.factory)!r})"


class NodeRegistry:
    """Maps a workflow's ``"type"`` names to node factories; extend a copy with your own.

    A factory is called with no arguments for each workflow node and must return a
    PocketFlow node that keeps its inputs in ``self.params`` (a ``Node`` subclass is a
    factory). The node must be deep-copyable: a parallel batch runs each item on a copy.
    ``params_schema`` (default: the factory's ``PARAMS_SCHEMA`` attribute, else any object)
    checks the node's params when a workflow is validated; params holding a ``${...}``
    template are checked only for presence, since their value is known at run time.

    Example:
        >>> from pocketflow import Node
        >>> class Upper(Node):
        ...     def exec(self, _): return self.params["text"].upper()
        ...     def post(self, shared, p, e): shared["text"] = e
        >>> registry = default_registry()
        >>> registry.register("upper", Upper, params_schema={
        ...     "type": "object", "properties": {"text": {"type": "string"}},
        ...     "required": ["text"]})
        >>> sorted(registry)
        ['collect', 'http', 'llm', 'shell', 'upper']
    """

    def __init__(self) -> None:
        self._types: dict[str, NodeType] = {}

    def register(
        self,
        name: str,
        factory: Callable[[], Any],
        *,
        params_schema: Optional[dict[str, Any]] = None,
        replace: bool = False,
    ) -> None:
        """Add a node type; ``replace=True`` to redefine an existing name."""
        if not isinstance(name, str) or not _NAME.match(name) or name == GROUP_TYPE:
            raise NodeTypeError(
                f"name={name!r}: must be a string of letters, digits, '_', '.', '-' "
                f"starting with a letter or '_', and not {GROUP_TYPE!r}"
            )
        if not callable(factory):
            raise NodeTypeError(
                f"factory={factory!r}: must be callable with no arguments, "
                "returning a pocketflow node"
            )
        if name in self._types and not replace:
            raise NodeTypeError(f"name={name!r}: already registered; pass replace=True")
        schema = params_schema
        if schema is None:
            schema = getattr(factory, "PARAMS_SCHEMA", None) or {"type": "object"}
        if not isinstance(schema, dict):
            raise NodeTypeError(f"params_schema={schema!r}: must be a JSON Schema dict")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise NodeTypeError(f"params_schema for {name!r}: {exc.message}") from None
        self._types[name] = NodeType(name, factory, schema)

    def __getitem__(self, name: str) -> NodeType:
        return self._types[name]

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._types))

    def __len__(self) -> int:
        return len(self._types)

    def copy(self) -> NodeRegistry:
        """A new registry with the same types; registering in it leaves this one as it is."""
        other = NodeRegistry()
        other._types = dict(self._types)
        return other

    def __repr__(self) -> str:
        return f"NodeRegistry({sorted(self._types)!r})"


def default_registry() -> NodeRegistry:
    """A new registry holding the built-in types: ``http``, ``shell``, ``llm``, ``collect``.

    Each call returns a fresh registry, so registering a type never leaks into another
    caller's workflows.

    Example:
        >>> list(default_registry())
        ['collect', 'http', 'llm', 'shell']
    """
    registry = NodeRegistry()
    registry.register("http", HttpNode)
    registry.register("shell", ShellNode)
    registry.register("llm", SimulatedLlmNode)
    registry.register("collect", CollectNode)
    return registry
