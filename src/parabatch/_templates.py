"""``${path}`` templates: resolved against a shared store, with errors that say where."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import TemplateError

__all__ = ["has_template", "resolve_template"]

_TEMPLATE = re.compile(r"\$\{([^{}]+)\}")
_SEGMENT = re.compile(r"[^.\[\]]+|\[\s*-?\d+\s*\]")


def has_template(value: object) -> bool:
    """Whether ``value`` (a string, or a list/dict holding strings) contains a ``${...}``.

    Example:
        >>> has_template({"q": "about ${item}"}), has_template(["plain"])
        (True, False)
    """
    if isinstance(value, str):
        return _TEMPLATE.search(value) is not None
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_template(v) for v in value)
    return False


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj.keys())[:10]]
        more = ", ..." if len(obj) > 10 else ""
        return f"a dict with keys: {', '.join(keys)}{more}" if keys else "a dict with no keys"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of length {len(obj)}"
    return f"{type(obj).__name__} {obj!r:.60}"


def _lookup(path: str, context: Mapping[str, Any], template: str) -> Any:
    segments = _SEGMENT.findall(path.strip())
    if not segments or "".join(segments) != path.strip().replace(".", ""):
        raise TemplateError(f"{template}: malformed path {path!r}")
    current: Any = context
    where = "shared"
    for seg in segments:
        if seg.startswith("["):
            index: int | str = int(seg[1:-1])
        else:
            index = seg
        if isinstance(current, Mapping):
            key = str(index) if isinstance(index, int) else index
            if key not in current:
                raise TemplateError(
                    f"{template}: key {key!r} not found in {where} ({_describe(current)})"
                )
            current = current[key]
        elif isinstance(current, Sequence) and not isinstance(current, (str, bytes)):
            try:
                current = current[int(index)]
            except (ValueError, IndexError):
                raise TemplateError(
                    f"{template}: no index {index!r} in {where} ({_describe(current)})"
                ) from None
        else:
            raise TemplateError(
                f"{template}: cannot look up {index!r} in {where} ({_describe(current)})"
            )
        where = f"{where}[{index!r}]" if where != "shared" else str(index)
    return current


def _to_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return json.dumps(value, default=str)
    return str(value)


def resolve_template(value: Any, context: Mapping[str, Any]) -> Any:
    """Resolve every ``${path}`` in ``value`` against ``context``.

    A string that is exactly one template gives the value found, with its type; templates
    inside a longer string are replaced by their text (JSON for lists, dicts, booleans and
    ``None``). Lists, tuples and dicts are resolved element by element; anything else is
    returned as it is. A path is dotted keys and list indices (``a.b.0`` or ``a.b[0]``).

    Raises:
        TemplateError: a path does not resolve; the message says where the lookup stopped.

    Example:
        >>> ctx = {"doc": {"title": "Hi", "tags": ["a", "b"]}, "n": 2}
        >>> resolve_template("${doc.tags[1]}", ctx)
        'b'
        >>> resolve_template({"q": "${doc.title} x${n}", "k": ["${n}"]}, ctx)
        {'q': 'Hi x2', 'k': [2]}
    """
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), context, value)
        if "${" not in value:
            return value
        return _TEMPLATE.sub(lambda m: _to_text(_lookup(m.group(1), context, m.group(0))), value)
    if isinstance(value, Mapping):
        return {k: resolve_template(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_template(v, context) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve_template(v, context) for v in value)
    return value
