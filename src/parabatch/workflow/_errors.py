"""The exceptions of the workflow layer, each under :class:`parabatch.ParabatchError`."""

from __future__ import annotations

from parabatch import ParabatchError

__all__ = ["HttpStatusError", "NodeTypeError", "WorkflowError"]


class WorkflowError(ParabatchError, ValueError):
    """Raised when a workflow document is invalid; lists every problem at once.

    Each problem names the node by position and id, then the field:
    ``nodes[2] ('fetch').batch.max_concurrent=0: must be an integer from 1 to 100``.
    ``.problems`` holds them as a list of strings, in document order.

    Example:
        >>> from parabatch.workflow import validate_workflow
        >>> try:
        ...     validate_workflow({"nodes": [{"id": "a", "type": "llm",
        ...         "params": {"prompt": "hi"}, "batch": {"items": [1], "max_concurrent": 0}}]})
        ... except WorkflowError as e:
        ...     print(e.problems[0])
        nodes[0] ('a').batch.max_concurrent=0: must be an integer from 1 to 100
    """

    def __init__(self, problems: list[str], *, source: str = "workflow") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        head = f"invalid {source} ({n} problem{'s' if n != 1 else ''}):"
        super().__init__("\n  - ".join([head, *self.problems]))


class NodeTypeError(ParabatchError, TypeError):
    """Raised when a node type is registered with a bad name, factory or params schema.

    Example:
        >>> from parabatch.workflow import NodeRegistry
        >>> try:
        ...     NodeRegistry().register("upper", 42)
        ... except NodeTypeError as e:
        ...     print(e)
        factory=42: must be callable with no arguments, returning a pocketflow node
    """


class HttpStatusError(ParabatchError):
    """Raised by :class:`parabatch.workflow.HttpNode` for a response status of 400 or more.

    ``.status``, ``.url`` and ``.body`` (the first 1,000 characters) say what came back.
    The response is read and closed before raising, so the error holds no open socket.

    Example:
        >>> e = HttpStatusError(503, "http://127.0.0.1:1/x", "busy")
        >>> print(e)
        HTTP 503 from http://127.0.0.1:1/x: busy
    """

    def __init__(self, status: int, url: str, body: str) -> None:
        self.status = status
        self.url = url
        self.body = body[:1000]
        super().__init__(f"HTTP {status} from {url}: {self.body[:200]}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.status, self.url, self.body))
