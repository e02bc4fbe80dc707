"""``${path}`` templates: resolved against a shared store, with errors that say where."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

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


@functools.lru_cache(maxsize=4096)
def _parse_path(path: str, template: str) -> tuple[Union[int, str], ...]:
    """A path's segments, parsed once per distinct path: keys (str) and indices (int)."""
    stripped = path.strip()
    segments = _SEGMENT.findall(stripped)
    if not segments or "".join(segments) != stripped.replace(".", ""):
        raise TemplateError(f"{template}: malformed path {path!r}")
    return tuple(int(s[1:-1]) if s.startswith("[") else s for s in segments)


def _lookup(path: str, context: Mapping[str, Any], template: str) -> Any:
    current: Any = context
    where = "shared"
    for index in _parse_path(path, template):
        kind = type(current)
        if kind is dict or isinstance(current, Mapping):
            key = str(index) if type(index) is int else index
            try:
                current = current[key]
            except KeyError:
                raise TemplateError(
                    f"{template}: key {key!r} not found in {where} ({_describe(current)})"
                ) from None
        elif kind is list or (
            isinstance(current, Sequence) and not isinstance(current, (str, bytes))
        ):
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
    kind = type(value)
    if kind is str:
        form = _compile(value)
        if form is None:
            return value
        if type(form) is str:
            return _lookup(form, context, value)
        return _TEMPLATE.sub(lambda m: _to_text(_lookup(m.group(1), context, m.group(0))), value)
    if kind is dict or isinstance(value, Mapping):
        return {k: resolve_template(v, context) for k, v in value.items()}
    if kind is list:
        return [resolve_template(v, context) for v in value]
    if kind is tuple:
        return tuple(resolve_template(v, context) for v in value)
    return value


@functools.lru_cache(maxsize=4096)
def _compile(value: str) -> Union[str, bool, None]:
    """None: no template; a str: the path of a string that is one whole template; True:
    templates inside a longer string."""
    whole = _TEMPLATE.fullmatch(value)
    if whole:
        return whole.group(1)
    return True if _TEMPLATE.search(value) else None
