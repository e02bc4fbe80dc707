from __future__ import annotations

import jsonschema
import pytest

from parabatch import BATCH_CONFIG_SCHEMA, BatchConfigError, ParabatchError, validate_batch_config


def test_schema_is_a_valid_json_schema_with_seven_fields() -> None:
    jsonschema.Draft202012Validator.check_schema(BATCH_CONFIG_SCHEMA)
    assert set(BATCH_CONFIG_SCHEMA["properties"]) == {
        "items",
        "as",
        "error_handling",
        "parallel",
        "max_concurrent",
        "max_retries",
        "retry_wait",
    }
    assert BATCH_CONFIG_SCHEMA["additionalProperties"] is False
    assert BATCH_CONFIG_SCHEMA["required"] == ["items"]


def test_defaults_are_filled_in_and_input_untouched() -> None:
    config = {"items": "${docs}"}
    out = validate_batch_config(config)
    assert out == {
        "items": "${docs}",
        "as": "item",
        "error_handling": "fail_fast",
        "parallel": False,
        "max_concurrent": 10,
        "max_retries": 1,
        "retry_wait": 0,
    }
    assert config == {"items": "${docs}"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent", 1),
        ("max_concurrent", 100),
        ("max_retries", 1),
        ("max_retries", 10),
        ("retry_wait", 0),
        ("retry_wait", 2.5),
        ("as", "_doc2"),
        ("error_handling", "continue"),
        ("parallel", True),
        ("items", [None]),
        ("items", "${a.b[0]}"),
    ],
)
def test_boundary_values_accepted(field: str, value: object) -> None:
    config = {"items": [1], field: value}
    assert validate_batch_config(config)[field] == value


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("max_concurrent", 0, "an integer from 1 to 100"),
        ("max_concurrent", 101, "an integer from 1 to 100"),
        ("max_concurrent", True, "an integer from 1 to 100"),
        ("max_concurrent", 2.5, "an integer from 1 to 100"),
        ("max_retries", 0, "an integer from 1 to 10"),
        ("max_retries", 11, "an integer from 1 to 10"),
        ("retry_wait", -0.1, "a finite number from 0 to 3600"),
        ("retry_wait", "1", "a finite number from 0 to 3600"),
        ("parallel", "yes", "true or false"),
        ("error_handling", "ignore", "'fail_fast' or 'continue'"),
        ("as", "2x", "an identifier"),
        ("as", "a-b", "an identifier"),
        ("items", [], "a non-empty list"),
        ("items", "docs", "a '${path}' template string"),
        ("items", 5, "a '${path}' template string"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(
    field: str, value: object, allowed: str
) -> None:
    with pytest.raises(BatchConfigError) as info:
        validate_batch_config(
            {"items": [1], field: value} if field != "items" else {"items": value}
        )
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith(f"{field}={value!r}:")
    assert allowed in problem


def test_every_violation_is_reported_at_once() -> None:
    with pytest.raises(BatchConfigError) as info:
        validate_batch_config(
            {"as": "1", "max_concurrent": 0, "max_retries": 99, "parralel": True, "retry_wait": -1}
        )
    problems = info.value.problems
    assert len(problems) == 6
    text = str(info.value)
    for needle in (
        "items: missing",
        "as='1'",
        "max_concurrent=0",
        "max_retries=99",
        "parralel=True: unknown field",
        "retry_wait=-1",
        "6 problems",
    ):
        assert needle in text


def test_integer_valued_float_becomes_int() -> None:
    out = validate_batch_config({"items": [1], "max_concurrent": 3.0})
    assert out["max_concurrent"] == 3 and type(out["max_concurrent"]) is int


@pytest.mark.parametrize("config", [None, [], "items", 3, ("items",)])
def test_config_that_is_not_a_dict(config: object) -> None:
    with pytest.raises(BatchConfigError, match="must be a dict"):
        validate_batch_config(config)


def test_error_classes() -> None:
    assert issubclass(BatchConfigError, ParabatchError)
    assert issubclass(BatchConfigError, ValueError)
