"""parabatch: run one PocketFlow node over a list of items, in parallel, without races.

Example:
    >>> from pocketflow import Node
    >>> import parabatch
    >>> class Square(Node):
    ...     def exec(self, _): return self.params["n"] ** 2
    ...     def post(self, shared, p, e): shared["square"] = e
    >>> chain = parabatch.NamespacedNodeWrapper(
    ...     parabatch.TemplateAwareNodeWrapper(Square(), "sq", {"n": "${item}"}), "sq")
    >>> shared = {"numbers": [1, 2, 3]}
    >>> node = parabatch.PflowBatchNode(chain, "sq", {"items": "${numbers}", "parallel": True})
    >>> node.run(shared)
    'default'
    >>> [r["square"] for r in shared["sq"]["results"]]
    [1, 4, 9]
"""

from __future__ import annotations

from ._batch import PflowBatchNode as PflowBatchNode
from ._calllog import CALLS_KEY as CALLS_KEY
from ._calllog import CallLog as CallLog
from ._config import BATCH_CONFIG_SCHEMA as BATCH_CONFIG_SCHEMA
from ._config import validate_batch_config as validate_batch_config
from ._errors import BatchConfigError as BatchConfigError
from ._errors import BatchItemsError as BatchItemsError
from ._errors import ItemReportedError as ItemReportedError
from ._errors import ParabatchError as ParabatchError
from ._errors import TemplateError as TemplateError
from ._errors import UncopyableNodeError as UncopyableNodeError
from ._group import ParallelGroupNode as ParallelGroupNode
from ._isolation import check_copyable as check_copyable
from ._runner import ItemOutcome as ItemOutcome
from ._shared import Shared as Shared
from ._templates import resolve_template as resolve_template
from ._wrappers import NamespacedNodeWrapper as NamespacedNodeWrapper
from ._wrappers import NamespacedSharedStore as NamespacedSharedStore
from ._wrappers import TemplateAwareNodeWrapper as TemplateAwareNodeWrapper

__version__ = "0.1.0"

__all__ = [
    "BATCH_CONFIG_SCHEMA",
    "CALLS_KEY",
    "BatchConfigError",
    "BatchItemsError",
    "CallLog",
    "ItemReportedError",
    "ItemOutcome",
    "NamespacedNodeWrapper",
    "NamespacedSharedStore",
    "ParabatchError",
    "ParallelGroupNode",
    "PflowBatchNode",
    "Shared",
    "TemplateAwareNodeWrapper",
    "TemplateError",
    "UncopyableNodeError",
    "__version__",
    "check_copyable",
    "resolve_template",
    "validate_batch_config",
]
