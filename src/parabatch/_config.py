"""The batch config: its JSON Schema and the validator that fills in defaults."""

from __future__ import annotations

import copy
import math
from typing import Any

import jsonschema

from ._errors import BatchConfigError

__all__ = ["BATCH_CONFIG_SCHEMA", "validate_batch_config"]

#: JSON Schema (draft 2020-12) of a batch config. ``default`` values are filled in by
#: :func:`validate_batch_config`.
BATCH_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "parabatch batch config",
    "type": "object",
    "properties": {
        "items": {
            "description": "A ${path} template into shared, or an inline non-empty list.",
            "oneOf": [
                {"type": "string", "pattern": r"^\$\{[^{}]+\}$"},
                {"type": "array", "minItems": 1},
            ],
        },
        "as": {
            "description": "Name under which each item is visible to the inner node.",
            "type": "string",
            "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
            "default": "item",
        },
        "error_handling": {
            "description": "fail_fast: stop at the first failure; continue: run every item.",
            "enum": ["fail_fast", "continue"],
            "default": "fail_fast",
        },
        "parallel": {"type": "boolean", "default": False},
        "max_concurrent": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
        "max_retries": {
            "description": "Total attempts per item (1 = no retry).",
            "type": "integer",
            "minimum": 1,
            "maximum": 10,
            "default": 1,
        },
        "retry_wait": {
            "description": "Seconds to wait between attempts (at most an hour).",
            "type": "number",
            "minimum": 0,
            "maximum": 3600,
            "default": 0,
        },
    },
    "required": ["items"],
    "additionalProperties": False,
}

_VALIDATOR = jsonschema.Draft202012Validator(BATCH_CONFIG_SCHEMA)

# What each field allows, said the way a user reads it (the schema says it to machines).
_ALLOWED = {
    "items": "a '${path}' template string or a non-empty list",
    "as": "an identifier (letters, digits, underscore; not starting with a digit)",
    "error_handling": "'fail_fast' or 'continue'",
    "parallel": "true or false",
    "max_concurrent": "an integer from 1 to 100",
    "max_retries": "an integer from 1 to 10",
    "retry_wait": "a finite number from 0 to 3600 (seconds)",
}


def _problem(error: jsonschema.ValidationError) -> tuple[str, str]:
    """One readable line for one schema violation, with a sort key."""
    path = list(error.absolute_path)
    instance: Any = error.instance
    if error.validator == "additionalProperties":
        extra = sorted(set(instance) - set(BATCH_CONFIG_SCHEMA["properties"]))
        allowed = ", ".join(BATCH_CONFIG_SCHEMA["properties"])
        lines = [f"{k}={instance[k]!r}: unknown field (allowed: {allowed})" for k in extra]
        return (extra[0] if extra else "", "\n  - ".join(lines))
    if error.validator == "required":
        return ("items", "items: missing (required: " + _ALLOWED["items"] + ")")
    field = str(path[0]) if path else ""
    allowed = _ALLOWED.get(field, error.message)
    return (field, f"{field}={instance!r}: must be {allowed}")


def validate_batch_config(config: object) -> dict[str, Any]:
    """Check ``config`` against :data:`BATCH_CONFIG_SCHEMA` and return it with defaults.

    Every violation is reported at once in one :class:`BatchConfigError`; nothing is
    coerced silently except a whole float such as ``3.0`` for an integer field. The input
    is not modified.

    Example:
        >>> cfg = validate_batch_config({"items": "${docs}", "parallel": True})
        >>> cfg["max_concurrent"], cfg["as"], cfg["error_handling"]
        (10, 'item', 'fail_fast')
    """
    if not isinstance(config, dict):
        raise BatchConfigError(
            [f"config={config!r}: must be a dict (a JSON object), got {type(config).__name__}"]
        )
    found = [_problem(e) for e in _VALIDATOR.iter_errors(config)]
    # JSON has no NaN, but a Python dict can: NaN passes every bound a schema can state.
    for key, value in config.items():
        if isinstance(value, float) and math.isnan(value) and key in _ALLOWED:
            found.append((key, f"{key}={value!r}: must be {_ALLOWED[key]}"))
    errors = sorted(found, key=lambda p: p[0])
    if errors:
        raise BatchConfigError([line for _, line in errors])
    out: dict[str, Any] = {}
    for key, spec in BATCH_CONFIG_SCHEMA["properties"].items():
        if key in config:
            value = config[key]
            out[key] = int(value) if spec.get("type") == "integer" else value
        elif "default" in spec:
            out[key] = copy.deepcopy(spec["default"])
    return out
