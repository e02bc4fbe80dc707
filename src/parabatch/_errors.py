"""The exceptions parabatch raises: one root, one class per condition."""

from __future__ import annotations

__all__ = [
    "BatchConfigError",
    "BatchItemsError",
    "ItemReportedError",
    "ParabatchError",
    "TemplateError",
    "UncopyableNodeError",
]


class ParabatchError(Exception):
    """Root of every error parabatch raises on its own account.

    Errors raised by the user's nodes are never wrapped: a failed item re-raises the
    node's own exception object.

    Example:
        >>> from parabatch import BatchConfigError, ParabatchError
        >>> issubclass(BatchConfigError, ParabatchError)
        True
    """


class BatchConfigError(ParabatchError, ValueError):
    """Raised when a batch config breaks ``BATCH_CONFIG_SCHEMA``.

    The message lists every violation at once (field, bad value, what is allowed);
    ``.problems`` holds them as a list of strings.

    Example:
        >>> from parabatch import validate_batch_config
        >>> try:
        ...     validate_batch_config({"items": [1], "max_concurrent": 0})
        ... except BatchConfigError as e:
        ...     print(e.problems[0])
        max_concurrent=0: must be an integer from 1 to 100
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"invalid batch config ({n} problem{'s' if n != 1 else ''}):"
        super().__init__("\n  - ".join([head, *self.problems]))


class TemplateError(ParabatchError, ValueError):
    """Raised when a ``${path}`` template does not resolve.

    The message names the template and says where the lookup stopped and what was there.

    Example:
        >>> from parabatch import resolve_template
        >>> try:
        ...     resolve_template("${a.b}", {"a": {}})
        ... except TemplateError as e:
        ...     print(e)
        ${a.b}: key 'b' not found in a (a dict with no keys)
    """


class BatchItemsError(ParabatchError, ValueError, TypeError):
    """Raised when a batch's ``items`` resolve to something that is not a list.

    Also a ``TypeError``, so code that catches ``TypeError`` for "items is not a list"
    (as PocketFlow-based tools do) catches it.

    Example:
        >>> from parabatch import PflowBatchNode
        >>> from pocketflow import Node
        >>> node = PflowBatchNode(Node(), "n", {"items": "${xs}"})
        >>> try:
        ...     node.run({"xs": 42})
        ... except BatchItemsError as e:
        ...     print(e)
        batch 'n': items '${xs}' resolved to int 42; expected a list (or a JSON string holding one)
    """


class UncopyableNodeError(ParabatchError, TypeError):
    """Raised before any item runs when the node chain cannot be deep-copied.

    ``.path`` names the attribute (``inner_node.client._lock``) and ``.kind`` its type.
    Wrap an object that must be shared rather than copied in :class:`parabatch.Shared`.

    Example:
        >>> import threading
        >>> from parabatch import PflowBatchNode
        >>> from pocketflow import Node
        >>> inner = Node(); inner.lock = threading.Lock()
        >>> node = PflowBatchNode(inner, "n", {"items": [1], "parallel": True})
        >>> try:
        ...     node.run({})
        ... except UncopyableNodeError as e:
        ...     print(e.path)
        inner_node.lock
    """

    def __init__(self, message: str, *, path: str, kind: str) -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


class ItemReportedError(ParabatchError):
    """An item's failure that its node reported in its result rather than by raising.

    Raised (and retried, then recorded) for an item whose result holds a truthy value
    under the batch's ``failure_key``; ``.key`` and ``.value`` say what was there.

    Example:
        >>> str(ItemReportedError("error", "rate limited"))
        "the node reported error='rate limited'"
    """

    def __init__(self, key: str, value: object) -> None:
        super().__init__(key, value)  # both in args, so it pickles
        self.key = key
        self.value = value

    def __str__(self) -> str:
        try:
            shown = repr(self.value)
        except Exception:
            shown = f"<unprintable {type(self.value).__name__}>"
        return f"the node reported {self.key}={shown[:200]}"
