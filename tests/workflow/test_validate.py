"""Workflow validation: every problem at once, each naming the node and the field."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar

import jsonschema
import pytest
from pocketflow import Node

from parabatch import BATCH_CONFIG_SCHEMA, ParabatchError
from parabatch.workflow import (
    WORKFLOW_SCHEMA,
    NodeRegistry,
    NodeTypeError,
    WorkflowError,
    default_registry,
    load_workflow,
    validate_workflow,
)

KNOWN = "collect, http, llm, parallel_group, shell"


def base() -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "list", "type": "http", "params": {"url": "http://127.0.0.1:1/entries"}},
            {
                "id": "fetch",
                "type": "http",
                "params": {"url": "${base}/e/${item.id}"},
                "batch": {"items": "${list.json}", "parallel": True},
            },
            {
                "id": "report",
                "type": "parallel_group",
                "children": [
                    {"id": "count", "type": "shell", "params": {"cmd": ["wc", "-w"]}},
                    {"id": "overall", "type": "llm", "params": {"prompt": "${fetch.results}"}},
                ],
            },
        ],
        "edges": [{"from": "list", "to": "fetch"}, {"from": "fetch", "to": "report"}],
    }


def problems(change: Callable[[dict[str, Any]], Any]) -> list[str]:
    doc = base()
    change(doc)
    with pytest.raises(WorkflowError) as info:
        validate_workflow(doc)
    return info.value.problems


def test_the_base_workflow_is_valid_and_gets_its_defaults() -> None:
    doc = base()
    out = validate_workflow(doc)
    assert doc == base()  # the input is not modified
    assert out["version"] == 1 and out["start"] == "list"
    assert [e["action"] for e in out["edges"]] == ["default", "default"]
    fetch = out["nodes"][1]["batch"]
    assert (fetch["max_concurrent"], fetch["as"], fetch["error_handling"]) == (
        10,
        "item",
        "fail_fast",
    )
    group = out["nodes"][2]
    assert (group["max_concurrent"], group["on_error"]) == (10, "fail_fast")
    assert validate_workflow(out) == out  # idempotent


def test_the_schema_embeds_the_batch_schema_itself() -> None:
    assert WORKFLOW_SCHEMA["$defs"]["batch"] is BATCH_CONFIG_SCHEMA
    jsonschema.Draft202012Validator.check_schema(WORKFLOW_SCHEMA)
    jsonschema.validate(base(), WORKFLOW_SCHEMA)


def set_(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            set_(["nodes", 1, "batch", "max_concurrent"], 0),
            "nodes[1] ('fetch').batch.max_concurrent=0: must be an integer from 1 to 100",
        ),
        (
            set_(["nodes", 1, "batch", "items"], 7),
            "nodes[1] ('fetch').batch.items=7: must be a '${path}' template string or a "
            "non-empty list",
        ),
        (
            set_(["nodes", 1, "batch"], []),
            "nodes[1] ('fetch').batch=[]: must be an object (a batch config)",
        ),
        (
            set_(["nodes", 0, "type"], "htp"),
            f"nodes[0] ('list').type='htp': unknown node type (known: {KNOWN})",
        ),
        (
            set_(["nodes", 2, "children", 1, "id"], "list"),
            "nodes[2] ('report').children[1] ('list').id='list': duplicate id (first at "
            "nodes[0] ('list')); ids name namespaces in shared, so they must be unique",
        ),
        (
            set_(["nodes", 0, "id"], "__list__"),
            [
                "nodes[0] ('__list__').id='__list__': reserved (keys of the form __name__ are "
                "special keys at the root of shared)",
                "edges[0].from='list': unknown node (top-level nodes: __list__, fetch, report)",
            ],
        ),
        (
            set_(["nodes", 0, "id"], "a.b"),
            [
                "nodes[0] ('a.b').id='a.b': must be an id (letters, digits, '_' and '-'; "
                "starting with a letter or '_')",
                "edges[0].from='list': unknown node (top-level nodes: a.b, fetch, report)",
            ],
        ),
        (
            set_(["nodes", 0, "params"], {"url": "ftp://x"}),
            "nodes[0] ('list').params.url='ftp://x': must be a string matching '^https?://'",
        ),
        (
            set_(["nodes", 0, "params", "timout"], 3),
            "nodes[0] ('list').params.timout=3: unknown param (allowed: url, method, timeout, "
            "headers, body)",
        ),
        (
            set_(["nodes", 2, "children", 1, "params"], {}),
            "nodes[2] ('report').children[1] ('overall').params.prompt: missing (required)",
        ),
        (
            set_(["nodes", 2, "children", 0, "params", "cmd"], "wc -w"),
            "nodes[2] ('report').children[0] ('count').params.cmd='wc -w': must be a list",
        ),
        (
            set_(["nodes", 2, "max_concurrent"], 0),
            "nodes[2] ('report').max_concurrent=0: must be an integer from 1 to 100",
        ),
        (
            set_(["nodes", 2, "on_error"], "ignore"),
            "nodes[2] ('report').on_error='ignore': must be one of 'fail_fast', 'continue'",
        ),
        (
            set_(["nodes", 2, "children"], []),
            "nodes[2] ('report').children=[]: must be a non-empty list",
        ),
        (
            set_(["nodes", 2, "batch"], {"items": [1]}),
            "nodes[2] ('report').batch={'items': [1]}: unknown field (allowed: id, type, "
            "children, max_concurrent, on_error)",
        ),
        (
            set_(["nodes", 0, "extra"], 1),
            "nodes[0] ('list').extra=1: unknown field (allowed: id, type, params, batch)",
        ),
        (
            set_(["nodes", 1], "fetch"),
            [
                "nodes[1]='fetch': must be an object",
                "edges[0].to='fetch': unknown node (top-level nodes: list, report)",
                "edges[1].from='fetch': unknown node (top-level nodes: list, report)",
            ],
        ),
        (
            set_(["edges", 1, "to"], "reprot"),
            "edges[1].to='reprot': unknown node (top-level nodes: list, fetch, report)",
        ),
        (
            set_(["edges", 1, "to"], "count"),
            "edges[1].to='count': a child of a parallel group (nodes[2] ('report').children[0] "
            "('count')); edges join top-level nodes only",
        ),
        (
            set_(["edges", 1], {"from": "list", "to": "report"}),
            "edges[1]: a second edge from 'list' on action 'default' (first: edges[0]); one "
            "successor per action",
        ),
        (set_(["edges", 1], {"from": "fetch"}), "edges[1].to: missing (required)"),
        (
            set_(["start"], "fetch"),
            "nodes[0] ('list'): not reachable from start 'fetch' (add an edge to it, or remove it)",
        ),
        (
            set_(["start"], "nope"),
            "start='nope': unknown node (top-level nodes: list, fetch, report)",
        ),
        (set_(["version"], 2), "version=2: must be 1"),
        (
            set_(["nodes"], []),
            "nodes=[]: must be a non-empty list",
        ),
    ],
)
def test_each_problem_names_node_and_field(
    change: Callable[[dict[str, Any]], None], expected: str | list[str]
) -> None:
    assert problems(change) == ([expected] if isinstance(expected, str) else expected)


def test_template_params_are_checked_for_presence_only() -> None:
    doc = base()
    doc["nodes"][0]["params"] = {"url": "${base_url}/entries", "timeout": "${t}"}
    validate_workflow(doc)  # a template may resolve to a number at run time


def test_a_cycle_is_refused() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["edges"].append({"from": "report", "to": "fetch", "action": "again"})

    assert problems(change) == ["edges: cycle fetch -> report -> fetch; workflows must be acyclic"]


def test_every_problem_at_once_in_document_order() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["nodes"][2]["children"][0]["type"] = "sh"
        doc["nodes"][1]["batch"]["max_retries"] = 0
        doc["nodes"][0]["id"] = "fetch"
        doc["edges"].append({"from": "nowhere", "to": "list"})
        doc["colour"] = "blue"

    assert problems(change) == [
        "colour='blue': unknown field (allowed: version, description, start, nodes, edges)",
        "nodes[1] ('fetch').id='fetch': duplicate id (first at nodes[0] ('fetch')); ids name "
        "namespaces in shared, so they must be unique",
        "nodes[1] ('fetch').batch.max_retries=0: must be an integer from 1 to 10",
        f"nodes[2] ('report').children[0] ('count').type='sh': unknown node type (known: {KNOWN})",
        "edges[0].from='list': unknown node (top-level nodes: fetch, report)",
        "edges[2].from='nowhere': unknown node (top-level nodes: fetch, report)",
        "edges[2].to='list': unknown node (top-level nodes: fetch, report)",
    ]


def test_the_error_is_a_parabatch_error_and_lists_the_problems() -> None:
    with pytest.raises(ParabatchError) as info:
        validate_workflow({"nodes": [{"id": "a"}]}, source="wf.json")
    assert isinstance(info.value, WorkflowError) and isinstance(info.value, ValueError)
    assert (
        str(info.value)
        == "invalid wf.json (1 problem):\n  - nodes[0] ('a').type: missing (required)"
    )


@pytest.mark.parametrize("doc", [[], "nodes", None])
def test_a_document_that_is_not_an_object(doc: Any) -> None:
    with pytest.raises(WorkflowError, match="must be a JSON object with 'nodes'"):
        validate_workflow(doc)


def test_load_workflow_reports_json_syntax_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text('{"nodes": [\n  {"id": "a",}\n]}')
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    # the wording of the JSON message differs between Python versions; the place does not
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: line 2 column 1")
    with pytest.raises(WorkflowError, match="cannot read"):
        load_workflow(tmp_path / "missing.json")


def test_load_workflow_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"nodes": [{"id": "a", "type": "x"}]}))
    with pytest.raises(WorkflowError, match=r"^invalid .*wf\.json \(1 problem\)"):
        load_workflow(path)


# -- regressions: what a file or a hand-written document may hold --------------------------

LLM = {"id": "a", "type": "llm", "params": {"prompt": "x"}}


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(WorkflowError) as info:
        validate_workflow(doc)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "shown"),
    [("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("NaN", "NaN"), ("1e400", "Infinity")],
)
def test_non_finite_numbers_in_a_file_are_refused_where_they_are(
    tmp_path: Path, text: str, shown: str
) -> None:
    """json reads NaN and Infinity though JSON has neither; retry_wait: Infinity passed."""
    path = tmp_path / "wf.json"
    path.write_text(
        '{"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "x"}, '
        f'"batch": {{"items": [1], "max_retries": 2, "retry_wait": {text}}}}}]}}'
    )
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert info.value.problems == [
        f"nodes[0] ('a').batch.retry_wait={shown}: must be a finite number (JSON has no NaN "
        "or Infinity; a number beyond 1.8e308 reads as Infinity)"
    ]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "where",
    [("params", "latency"), ("params", "max_words"), ("batch", "retry_wait"), ("batch", "items")],
)
def test_non_finite_numbers_anywhere_are_reported_once(value: float, where: Any) -> None:
    field, key = where
    node = copy.deepcopy(LLM)
    node["batch"] = {"items": [1]}
    node[field][key] = [value] if key == "items" else value
    [problem] = problems_of({"nodes": [node]})
    assert problem.startswith(f"nodes[0] ('a').{field}.{key}")
    assert "must be a finite number" in problem


@pytest.mark.parametrize("wait", [1e300, 1e10, 3600.5])
def test_a_retry_wait_beyond_an_hour_is_refused(wait: float) -> None:
    """1e300 overflowed time.sleep outside the item's error handling; 1e9 hung the run."""
    node = {**LLM, "batch": {"items": [1], "max_retries": 2, "retry_wait": wait}}
    assert problems_of({"nodes": [node]}) == [
        f"nodes[0] ('a').batch.retry_wait={wait!r}: must be a finite number from 0 to 3600 "
        "(seconds)"
    ]
    node["batch"]["retry_wait"] = 3600
    validate_workflow({"nodes": [node]})


@pytest.mark.parametrize(
    ("node_type", "params", "field"),
    [
        ("llm", {"prompt": "x", "latency": 1e300}, "latency"),
        ("http", {"url": "http://x", "timeout": 1e300}, "timeout"),
        ("shell", {"cmd": ["true"], "timeout": 1e300}, "timeout"),
    ],
)
def test_a_node_duration_beyond_a_week_is_refused(
    node_type: str, params: dict[str, Any], field: str
) -> None:
    [problem] = problems_of({"nodes": [{"id": "a", "type": node_type, "params": params}]})
    assert problem.startswith(f"nodes[0] ('a').params.{field}=1e+300: must be a number")
    assert problem.endswith("604800")


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        (
            {"as": "a"},
            "nodes[0] ('a').batch.as='a': is its own id; inside the batch ${a} would be the "
            "item, not that node's output (pick another name)",
        ),
        (
            {"as": "b"},
            "nodes[0] ('a').batch.as='b': is the id of nodes[1] ('b'); inside the batch ${b} "
            "would be the item, not that node's output (pick another name)",
        ),
        (
            {"as": "__index__"},
            "nodes[0] ('a').batch.as='__index__': reserved (keys of the form __name__ are "
            "special keys at the root of shared)",
        ),
        (
            {"as": "__llm_calls__"},
            "nodes[0] ('a').batch.as='__llm_calls__': reserved (keys of the form __name__ are "
            "special keys at the root of shared)",
        ),
    ],
)
def test_an_item_name_that_collides_is_refused(batch: dict[str, Any], problem: str) -> None:
    """The item and every node's namespace are keys at the root of the item's store."""
    node = {**LLM, "batch": {"items": [1], **batch}}
    doc = {"nodes": [node, {**LLM, "id": "b"}], "edges": [{"from": "a", "to": "b"}]}
    assert problems_of(doc) == [problem]


def test_the_default_item_name_collides_with_a_node_called_item() -> None:
    doc = {
        "nodes": [
            {**LLM, "id": "item"},
            {**LLM, "id": "b", "batch": {"items": [1]}},
        ],
        "edges": [{"from": "item", "to": "b"}],
    }
    assert problems_of(doc) == [
        "nodes[1] ('b').batch.as='item' (the default): is the id of nodes[0] ('item'); inside "
        "the batch ${item} would be the item, not that node's output (pick another name)"
    ]


def test_a_file_that_is_not_utf8_is_a_workflow_error(tmp_path: Path) -> None:
    """It raised UnicodeDecodeError: a traceback, where the README promises exit 2."""
    path = tmp_path / "wf.json"
    path.write_bytes(b'{"nodes": [\n{"id": "a", "type": "llm", "params": {"prompt": "caf\xe9"}}]}')
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert info.value.problems == [
        f"{path}: line 2: not UTF-8 text (byte 0xe9 at offset 64); save the file as UTF-8"
    ]


def test_a_utf8_file_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"nodes": [LLM]}).encode())
    assert load_workflow(path)["start"] == "a"


def test_json_nested_too_deeply_is_a_workflow_error(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(WorkflowError, match="nested too deeply to read"):
        load_workflow(path)
    deep: Any = {"nodes": [LLM]}
    for _ in range(5_000):
        deep = {"nodes": [{"id": "g", "type": "parallel_group", "children": deep["nodes"]}]}
    with pytest.raises(WorkflowError, match="nested too deeply to check"):
        validate_workflow(deep)


def test_an_integer_too_long_to_read_is_a_workflow_error(tmp_path: Path) -> None:
    """Python 3.11+ refuses to convert integers of more than 4,300 digits (a ValueError)."""
    path = tmp_path / "wf.json"
    path.write_text(
        '{"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "x", "max_words": 1'
        + "0" * 5_000
        + "}}]}"
    )
    if not hasattr(sys, "get_int_max_str_digits"):
        assert load_workflow(path)["nodes"][0]["params"]["max_words"] == 10**5_000
        return
    with pytest.raises(WorkflowError, match="not valid JSON: Exceeds the limit"):
        load_workflow(path)


# -- the registry ---------------------------------------------------------------------------


class Upper(Node):  # type: ignore[misc]
    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    }

    def exec(self, _: Any) -> Any:
        return self.params["text"].upper()

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["text"] = exec_res
        return "default"


def test_a_registered_type_is_validated_with_its_own_params_schema() -> None:
    registry = default_registry()
    registry.register("upper", Upper)
    doc = {"nodes": [{"id": "u", "type": "upper", "params": {"txt": "a"}}]}
    with pytest.raises(WorkflowError) as info:
        validate_workflow(doc, registry=registry)
    assert info.value.problems == [
        "nodes[0] ('u').params.text: missing (required)",
        "nodes[0] ('u').params.txt='a': unknown param (allowed: text)",
    ]
    with pytest.raises(WorkflowError, match="unknown node type"):
        validate_workflow(doc)  # the default registry never saw it


def test_registries_are_independent() -> None:
    one = default_registry()
    two = one.copy()
    two.register("upper", Upper)
    assert "upper" in two and "upper" not in one and "upper" not in default_registry()
    assert len(two) == len(one) + 1


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (("parallel_group", Upper), {}, "name='parallel_group'"),
        (("1x", Upper), {}, "name='1x'"),
        (("upper", 42), {}, "factory=42: must be callable"),
        (("http", Upper), {}, "name='http': already registered; pass replace=True"),
        (("upper", Upper), {"params_schema": {"type": "nonsense"}}, "params_schema for 'upper'"),
        (("upper", Upper), {"params_schema": "x"}, "params_schema='x'"),
    ],
)
def test_bad_registrations_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], needle: str
) -> None:
    registry = default_registry()
    with pytest.raises(NodeTypeError, match=re.escape(needle)):
        registry.register(*args, **kwargs)


def test_replace_redefines_a_type() -> None:
    registry = NodeRegistry()
    registry.register("http", Upper)
    registry.register("http", Upper, params_schema={"type": "object"}, replace=True)
    assert registry["http"].params_schema == {"type": "object"}
    assert copy.copy(list(registry)) == ["http"]
