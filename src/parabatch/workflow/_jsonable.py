"""Turn a shared store into JSON: exceptions dropped or named, everything else kept."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .._runner import describe_error

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """A JSON-serialisable copy of ``value`` (a shared store, a batch's output).

    Exception objects are dropped where they sit beside their text (the ``"exception"`` of
    a batch's or group's error record, whose ``"error"`` already names it) and written as
    ``"TypeName: message"`` elsewhere. Lists, tuples and ``CallLog`` become lists; mapping
    keys become strings; ``bytes`` are decoded as UTF-8 (invalid bytes replaced); floats
    that JSON cannot hold (``nan``, ``inf``) become ``None``; other objects their ``repr``.

    Example:
        >>> out = {"errors": [{"index": 0, "error": "ValueError: x",
        ...                    "exception": ValueError("x")}], "n": (1, b"b")}
        >>> to_jsonable(out)
        {'errors': [{'index': 0, 'error': 'ValueError: x'}], 'n': [1, 'b']}
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, BaseException):
        return describe_error(value)
    if isinstance(value, Mapping):
        return {
            str(k): to_jsonable(v)
            for k, v in value.items()
            if not (k == "exception" and isinstance(v, BaseException) and "error" in value)
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return repr(value)
