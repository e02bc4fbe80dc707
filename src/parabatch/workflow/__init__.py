"""Workflows: a JSON document of nodes, batches, parallel groups and edges, run as a Flow.

A workflow is validated against :data:`WORKFLOW_SCHEMA` (whose batch part is
:data:`parabatch.BATCH_CONFIG_SCHEMA`), with every problem reported at once, then compiled
into a ``pocketflow.Flow`` of parabatch nodes. See ``docs/workflow.md``.

Example:
    >>> from parabatch.workflow import run_workflow
    >>> shared = run_workflow({
    ...     "nodes": [
    ...         {"id": "summarise", "type": "llm", "params": {"prompt": "Doc: ${doc}"},
    ...          "batch": {"items": "${docs}", "as": "doc", "parallel": True}},
    ...         {"id": "report", "type": "parallel_group", "children": [
    ...             {"id": "all", "type": "collect",
    ...              "params": {"items": "${summarise.results}", "field": "summary"}}]}],
    ...     "edges": [{"from": "summarise", "to": "report"}]},
    ...     {"docs": ["a b", "c"]})
    >>> shared["all"]["values"]
    ['Summary: a b', 'Summary: c']
    >>> [(c["node_id"], c["batch_item_index"]) for c in sorted(
    ...     shared["__llm_calls__"], key=lambda c: c["batch_item_index"])]
    [('summarise', 0), ('summarise', 1)]
"""

from __future__ import annotations

from ._compile import UsageRecorder as UsageRecorder
from ._compile import WorkflowProgress as WorkflowProgress
from ._compile import compile_workflow as compile_workflow
from ._compile import run_workflow as run_workflow
from ._errors import HttpStatusError as HttpStatusError
from ._errors import NodeTypeError as NodeTypeError
from ._errors import WorkflowError as WorkflowError
from ._jsonable import to_jsonable as to_jsonable
from ._nodes import CollectNode as CollectNode
from ._nodes import HttpNode as HttpNode
from ._nodes import ShellNode as ShellNode
from ._nodes import SimulatedLlmNode as SimulatedLlmNode
from ._nodes import simulated_summary as simulated_summary
from ._progress import ProgressBar as ProgressBar
from ._registry import GROUP_TYPE as GROUP_TYPE
from ._registry import NodeRegistry as NodeRegistry
from ._registry import NodeType as NodeType
from ._registry import default_registry as default_registry
from ._schema import WORKFLOW_SCHEMA as WORKFLOW_SCHEMA
from ._validate import load_workflow as load_workflow
from ._validate import validate_workflow as validate_workflow

__all__ = [
    "GROUP_TYPE",
    "WORKFLOW_SCHEMA",
    "CollectNode",
    "HttpNode",
    "HttpStatusError",
    "NodeRegistry",
    "NodeType",
    "NodeTypeError",
    "ProgressBar",
    "ShellNode",
    "SimulatedLlmNode",
    "UsageRecorder",
    "WorkflowError",
    "WorkflowProgress",
    "compile_workflow",
    "default_registry",
    "load_workflow",
    "run_workflow",
    "simulated_summary",
    "to_jsonable",
    "validate_workflow",
]
