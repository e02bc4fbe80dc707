"""``Shared``: an object every per-item copy of a node reaches, instead of a copy of it."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["Shared"]

T = TypeVar("T")


class Shared(Generic[T]):
    """Hold an object that every per-item copy of a node must share, not copy.

    Each parallel item runs on ``copy.deepcopy`` of the node chain, so nothing one item
    writes to its node can be seen by another. Some objects must not be copied: an LLM or
    HTTP client holding a lock or a connection pool, a rate limiter, a cache. Wrap such an
    object in ``Shared``: deep and shallow copies of the wrapper return the wrapper itself,
    so all copies reach the same object. Attribute reads go through to the object;
    ``.value`` gives the object itself. The shared object must be thread-safe: parabatch
    no longer isolates it.

    Example:
        >>> import copy, threading
        >>> class Client:
        ...     def __init__(self): self.lock = threading.Lock(); self.calls = 0
        >>> shared = Shared(Client())
        >>> copy.deepcopy(shared) is shared, shared.calls
        (True, 0)
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(self.value, name)

    def __copy__(self) -> Shared[T]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared[T]:
        return self

    def __repr__(self) -> str:
        return f"Shared({self.value!r})"
