"""The workflow document's JSON Schema; its batch part is ``BATCH_CONFIG_SCHEMA`` itself."""

from __future__ import annotations

from typing import Any

from .._config import BATCH_CONFIG_SCHEMA

__all__ = ["ID_PATTERN", "WORKFLOW_SCHEMA"]

#: Node ids: usable as a template path segment (``${fetch.results}``) and a shared key.
ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"

#: JSON Schema (draft 2020-12) of a workflow document. ``$defs.batch`` is
#: :data:`parabatch.BATCH_CONFIG_SCHEMA` (the same object, not a copy), so a batch config
#: in a workflow means exactly what it means to ``PflowBatchNode``. Node types and their
#: params, ids, edges and the graph are checked by :func:`validate_workflow` beyond this.
WORKFLOW_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "parabatch workflow",
    "type": "object",
    "properties": {
        "version": {"const": 1},
        "description": {"type": "string"},
        "start": {"$ref": "#/$defs/id", "description": "First node; default: nodes[0]."},
        "nodes": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
        "edges": {"type": "array", "items": {"$ref": "#/$defs/edge"}},
    },
    "required": ["nodes"],
    "additionalProperties": False,
    "$defs": {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "batch": BATCH_CONFIG_SCHEMA,
        "node": {
            "if": {"properties": {"type": {"const": "parallel_group"}}, "required": ["type"]},
            "then": {"$ref": "#/$defs/group"},
            "else": {"$ref": "#/$defs/task"},
        },
        "task": {
            "description": "One node; with `batch`, run once per item by a PflowBatchNode.",
            "type": "object",
            "properties": {
                "id": {"$ref": "#/$defs/id"},
                "type": {"type": "string"},
                "params": {"type": "object"},
                "batch": {"$ref": "#/$defs/batch"},
            },
            "required": ["id", "type"],
            "additionalProperties": False,
        },
        "group": {
            "description": "Children run side by side by a ParallelGroupNode.",
            "type": "object",
            "properties": {
                "id": {"$ref": "#/$defs/id"},
                "type": {"const": "parallel_group"},
                "children": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
                "max_concurrent": {"type": "integer", "minimum": 1, "maximum": 100},
                "on_error": {"enum": ["fail_fast", "continue"]},
            },
            "required": ["id", "type", "children"],
            "additionalProperties": False,
        },
        "edge": {
            "type": "object",
            "properties": {
                "from": {"$ref": "#/$defs/id"},
                "to": {"$ref": "#/$defs/id"},
                "action": {"type": "string", "minLength": 1},
            },
            "required": ["from", "to"],
            "additionalProperties": False,
        },
    },
}
