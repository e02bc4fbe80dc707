"""``CallLog``: the ``__llm_calls__`` list whose appends take a lock."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, ContextManager, Optional, SupportsIndex

from ._errors import BatchItemsError

__all__ = ["CALLS_KEY", "CallLog", "ensure_call_log", "new_call_log", "usage_record"]

#: The shared-store key of the LLM call log.
CALLS_KEY = "__llm_calls__"


class CallLog(list):  # type: ignore[type-arg]
    """A list of LLM call records whose writes take a lock.

    Under CPython's GIL a plain ``list.append`` is atomic, and parabatch's ``call_log="gil"``
    mode relies on that; ``CallLog`` (mode ``"lock"``, the default) does not rely on any
    interpreter: ``append``, ``extend``, ``insert`` and ``+=`` hold ``lock`` while they
    write. Reads are plain list reads; take :meth:`snapshot` for a consistent copy while
    writers may be running.

    The lock never travels: pickling or deep-copying a ``CallLog`` gives a new log with the
    same records and a fresh lock, so a log can be sent to another process and the records
    merged back with :meth:`merge`.

    Args:
        iterable: initial records.
        lock: any context manager used as the lock (default: a new ``threading.Lock``);
            a test harness passes a scheduler-aware lock here.

    Example:
        >>> log = CallLog()
        >>> log.append({"model": "m", "tokens": 3})
        >>> log.merge([{"model": "m", "tokens": 4}])
        >>> [r["tokens"] for r in log.snapshot()]
        [3, 4]
    """

    __slots__ = ("_lock",)

    def __init__(self, iterable: Iterable[Any] = (), *, lock: Optional[ContextManager[Any]] = None):
        super().__init__(iterable)
        self._lock: ContextManager[Any] = lock if lock is not None else threading.Lock()

    def append(self, record: Any) -> None:
        with self._lock:
            super().append(record)

    def extend(self, records: Iterable[Any]) -> None:
        records = list(records)  # iterate outside the lock: the iterable may be slow
        with self._lock:
            super().extend(records)

    def insert(self, index: SupportsIndex, record: Any) -> None:
        with self._lock:
            super().insert(index, record)

    def __iadd__(self, records: Iterable[Any]) -> CallLog:  # type: ignore[misc]
        self.extend(records)
        return self

    def merge(self, records: Iterable[Any]) -> None:
        """Append records gathered elsewhere (another process, a per-item log) in one step."""
        self.extend(records)

    def snapshot(self) -> list[Any]:
        """A plain-list copy taken under the lock."""
        with self._lock:
            return list(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CallLog, (list(self),))

    def __copy__(self) -> CallLog:
        return CallLog(self.snapshot())

    def __deepcopy__(self, memo: dict[int, Any]) -> CallLog:
        return CallLog(copy.deepcopy(self.snapshot(), memo))

    def __repr__(self) -> str:
        return f"CallLog({list.__repr__(self)})"


def ensure_call_log(shared: MutableMapping[str, Any], mode: str, owner: str) -> list[Any]:
    """Make ``shared["__llm_calls__"]`` exist before any work starts, so all copies share it.

    ``mode`` ``"lock"`` creates a :class:`CallLog`, ``"gil"`` a plain list; an existing list
    or ``CallLog`` is kept as it is. ``owner`` names the node in the error for a non-list.
    """
    log = shared.get(CALLS_KEY)
    if log is None:
        log = shared[CALLS_KEY] = new_call_log(mode)
    elif not isinstance(log, list):
        raise BatchItemsError(
            f"{owner}: shared[{CALLS_KEY!r}] holds {type(log).__name__}; "
            "expected a list or a parabatch.CallLog"
        )
    return log


def new_call_log(mode: str) -> list[Any]:
    """An empty call log for ``mode``: ``"lock"`` a :class:`CallLog`, ``"gil"`` a plain list.

    Example:
        >>> type(new_call_log("lock")).__name__, type(new_call_log("gil")).__name__
        ('CallLog', 'list')
    """
    return CallLog() if mode == "lock" else []


def usage_record(
    namespace: object,
    node_id: str,
    index: Optional[int] = None,
    *,
    stale: object = None,
    root: object = None,
    root_stale: object = None,
) -> Optional[dict[str, Any]]:
    """The call record of one run of ``node_id``, or ``None`` if it reported no usage.

    The usage is ``namespace["llm_usage"]`` (a dict), else ``root`` (the store's top-level
    ``llm_usage``); a value that was there before the run (``stale``, ``root_stale``) is
    not this run's. The record is a copy tagged ``node_id`` and, in a batch,
    ``batch_item_index``. Every node kind builds its record here.

    Example:
        >>> usage_record({"llm_usage": {"model": "m", "cost": 0.5}}, "ask", 3)
        {'model': 'm', 'cost': 0.5, 'node_id': 'ask', 'batch_item_index': 3}
        >>> usage_record({}, "ask") is None
        True
    """
    usage = namespace.get("llm_usage") if isinstance(namespace, Mapping) else None
    if usage is None or usage is stale:
        usage = root if root is not root_stale else None
    if not isinstance(usage, dict) or usage is stale:
        return None
    record = dict(usage)
    record["node_id"] = node_id
    if index is not None:
        record["batch_item_index"] = index
    return record
