"""Validate a workflow document: every problem at once, each pointing at node and field."""

from __future__ import annotations

import copy
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Union

import jsonschema

from .._config import validate_batch_config
from .._errors import BatchConfigError
from .._templates import has_template
from ._errors import WorkflowError
from ._registry import GROUP_TYPE, NodeRegistry, default_registry
from ._schema import ID_PATTERN, WORKFLOW_SCHEMA

__all__ = ["load_workflow", "non_finite", "read_json", "validate_workflow"]

_VALIDATOR = jsonschema.Draft202012Validator(WORKFLOW_SCHEMA)
_NODE_LISTS = ("nodes", "children")
_SPECIAL = re.compile(r"^__.*__$")

Path_ = tuple[Union[str, int], ...]


# -- locations ------------------------------------------------------------------------------


def _loc(path: Path_, doc: Any) -> str:
    """``nodes[2] ('fetch').batch.max_concurrent`` for ``("nodes", 2, "batch", ...)``."""
    out, node = "", doc
    for i, part in enumerate(path):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
        if isinstance(part, int):
            out += f"[{part}]"
            parent = path[i - 1] if i else None
            if parent in _NODE_LISTS and isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" ({node['id']!r})"
        else:
            out += f".{part}" if out else str(part)
    return out


def _owner(path: Path_) -> Path_:
    """The path of the innermost node (or edge) an error belongs to; ``()`` for the top."""
    owner: Path_ = ()
    for i in range(len(path) - 1):
        if path[i] in (*_NODE_LISTS, "edges") and isinstance(path[i + 1], int):
            if path[i] == "edges" and i != 0:
                continue
            owner = path[: i + 2]
    return owner


def _inside(path: Path_, field: str) -> bool:
    """Whether ``path`` goes into a node's ``batch`` or ``params`` (checked separately)."""
    return any(
        path[i] == field and isinstance(path[i - 1], int) and path[i - 2] in _NODE_LISTS
        for i in range(2, len(path))
    )


# -- schema messages ------------------------------------------------------------------------

_TYPES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _must(schema: dict[str, Any]) -> str:
    """What a schema allows, said for a person."""
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    if schema.get("pattern") == ID_PATTERN:
        return "an id (letters, digits, '_' and '-'; starting with a letter or '_')"
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    text = " or ".join(_TYPES.get(k, k) for k in kinds) or "valid"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"{text} from {low} to {high}"
    if low is not None:
        return f"{text} >= {low}"
    if schema.get("exclusiveMinimum") is not None and high is not None:
        return f"{text} > {schema['exclusiveMinimum']} and <= {high}"
    if schema.get("exclusiveMinimum") is not None:
        return f"{text} > {schema['exclusiveMinimum']}"
    if schema.get("minItems") == 1:
        return f"a non-empty {text.removeprefix('a ')}"
    if schema.get("minItems"):
        return f"{text} of at least {schema['minItems']} items"
    if schema.get("minLength"):
        return f"a non-empty {kinds[0] if kinds else 'string'}"
    if "pattern" in schema:
        return f"{text} matching {schema['pattern']!r}"
    return text


def _schema_lines(error: jsonschema.ValidationError, where: str) -> list[str]:
    """Readable lines for one schema error at location ``where``."""
    instance: Any = error.instance
    schema: Any = error.schema
    dot = f"{where}." if where else ""
    if error.validator == "required":
        required: Any = error.validator_value
        return [
            f"{dot}{name}: missing (required)"
            for name in required
            if isinstance(instance, dict) and name not in instance
        ]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = ", ".join(schema.get("properties", {}))
        extra = [k for k in instance if k not in schema.get("properties", {})]
        return [f"{dot}{k}={instance[k]!r:.60}: unknown field (allowed: {allowed})" for k in extra]
    if isinstance(schema, dict) and error.validator in (
        "type",
        "const",
        "enum",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "minItems",
        "minLength",
    ):
        if error.validator == "type":  # say the type only, not the whole schema
            schema = {"type": schema["type"]}
        return [f"{where}={instance!r:.60}: must be {_must(schema)}"]
    return [f"{where}: {error.message}"]


# -- the checks -----------------------------------------------------------------------------


class _Problems:
    """Problems filed under the node or edge they belong to, reported in document order."""

    def __init__(self) -> None:
        self.by_owner: dict[Path_, list[str]] = defaultdict(list)
        self.graph: list[str] = []

    def add(self, owner: Path_, line: str) -> None:
        self.by_owner[owner].append(line)

    def ordered(self, node_paths: list[Path_], edge_count: int) -> list[str]:
        order: list[Path_] = [(), *node_paths, *[("edges", i) for i in range(edge_count)]]
        known = set(order)
        out = [line for owner in order for line in self.by_owner.get(owner, [])]
        out += [line for o, lines in self.by_owner.items() if o not in known for line in lines]
        return out + self.graph


def _walk(nodes: Any, prefix: Path_) -> list[tuple[Path_, dict[str, Any]]]:
    """(path, node) for every node dict, depth first, group before its children."""
    out: list[tuple[Path_, dict[str, Any]]] = []
    if not isinstance(nodes, list):
        return out
    for i, node in enumerate(nodes):
        path = (*prefix, i)
        if isinstance(node, dict):
            out.append((path, node))
            if node.get("type") == GROUP_TYPE:
                out.extend(_walk(node.get("children"), (*path, "children")))
        else:
            out.append((path, {}))
    return out


def _check_params(
    node: dict[str, Any], path: Path_, doc: Any, registry: NodeRegistry, problems: _Problems
) -> None:
    where = _loc((*path, "params"), doc)
    params = node.get("params", {})
    if not isinstance(params, dict):
        problems.add(path, f"{where}={params!r:.60}: must be an object (the node's params)")
        return
    node_type = registry[node["type"]]
    for error in node_type.validator.iter_errors(params):
        if _is_non_finite(error.instance):
            continue  # reported once, as not finite
        field = error.absolute_path[0] if error.absolute_path else None
        if field is not None and has_template(params.get(field)):
            continue  # known at run time only; the node checks it then
        sub = ".".join(str(p) for p in error.absolute_path)
        for line in _schema_lines(error, f"{where}.{sub}" if sub else where):
            if error.validator == "additionalProperties":
                line = line.replace("unknown field", "unknown param")
            problems.add(path, line)


def _check_batch(
    node: dict[str, Any], path: Path_, doc: Any, problems: _Problems, ids: dict[str, Path_]
) -> None:
    where = _loc((*path, "batch"), doc)
    batch = node["batch"]
    if not isinstance(batch, dict):
        problems.add(path, f"{where}={batch!r:.60}: must be an object (a batch config)")
        return
    default = "" if "as" in batch else " (the default)"
    # A field that is not finite is reported already, once: leave it out of this check.
    finite = {k: v for k, v in batch.items() if not _is_non_finite(v)}
    try:
        checked = validate_batch_config(finite)
    except BatchConfigError as exc:
        for problem in exc.problems:
            for line in problem.split("\n  - "):
                problems.add(path, f"{where}.{line}")
        return
    if len(finite) < len(batch):
        return
    node["batch"] = checked
    name = node["batch"]["as"]
    if _SPECIAL.match(name):
        problems.add(
            path,
            f"{where}.as={name!r}: reserved (keys of the form __name__ are special keys at "
            "the root of shared)",
        )
    elif name in ids:
        # The item and the node namespaces are keys at the root of the item's shared store.
        whose = "its own id" if ids[name] == path else f"the id of {_loc(ids[name], doc)}"
        problems.add(
            path,
            f"{where}.as={name!r}{default}: is {whose}; inside the batch ${{{name}}} would "
            "be the item, not that node's output (pick another name)",
        )


def _check_nodes(
    doc: dict[str, Any], registry: NodeRegistry, problems: _Problems
) -> list[tuple[Path_, dict[str, Any]]]:
    walked = _walk(doc.get("nodes"), ("nodes",))
    ids: dict[str, Path_] = {}
    for path, node in walked:
        if isinstance(node.get("id"), str):
            ids.setdefault(node["id"], path)
    first_seen: dict[str, Path_] = {}
    known = ", ".join(sorted([*registry, GROUP_TYPE]))
    for path, node in walked:
        node_id = node.get("id")
        if isinstance(node_id, str):
            if node_id in first_seen:
                problems.add(
                    path,
                    f"{_loc(path, doc)}.id={node_id!r}: duplicate id "
                    f"(first at {_loc(first_seen[node_id], doc)}); ids name namespaces in "
                    "shared, so they must be unique",
                )
            else:
                first_seen[node_id] = path
            if _SPECIAL.match(node_id):
                problems.add(
                    path,
                    f"{_loc(path, doc)}.id={node_id!r}: reserved (keys of the form __name__ "
                    "are special keys at the root of shared)",
                )
        node_type = node.get("type")
        if node_type == GROUP_TYPE or not isinstance(node_type, str):
            continue
        if node_type not in registry:
            problems.add(
                path, f"{_loc(path, doc)}.type={node_type!r}: unknown node type (known: {known})"
            )
            continue
        _check_params(node, path, doc, registry, problems)
        if "batch" in node:
            _check_batch(node, path, doc, problems, ids)
    return walked


def _check_graph(
    doc: dict[str, Any], problems: _Problems, walked: list[tuple[Path_, dict[str, Any]]]
) -> None:
    """Edges join top-level nodes; one edge per (from, action); no cycles; all reachable."""
    nodes = doc.get("nodes") if isinstance(doc.get("nodes"), list) else []
    top = [n.get("id") if isinstance(n, dict) else None for n in nodes or []]
    top_ids = [i for i in top if isinstance(i, str)]
    children = {n["id"]: p for p, n in walked if len(p) > 2 and isinstance(n.get("id"), str)}
    listing = ", ".join(dict.fromkeys(top_ids))
    if not top_ids:
        return  # no node to join: every edge would be reported, saying nothing new
    successors: dict[str, list[str]] = defaultdict(list)
    first_edge: dict[tuple[str, str], int] = {}
    edges = doc.get("edges", [])
    for i, edge in enumerate(edges if isinstance(edges, list) else []):
        if not isinstance(edge, dict):
            continue
        ok = True
        for end in ("from", "to"):
            name = edge.get(end)
            if not isinstance(name, str):
                ok = False  # the schema error is reported already
                continue
            if name in top_ids:
                continue
            ok = False
            if name in children:
                problems.add(
                    ("edges", i),
                    f"edges[{i}].{end}={name!r}: a child of a parallel group "
                    f"({_loc(children[name], doc)}); edges join top-level nodes only",
                )
            else:
                problems.add(
                    ("edges", i),
                    f"edges[{i}].{end}={name!r}: unknown node (top-level nodes: {listing})",
                )
        if not ok:
            continue
        action = edge.get("action", "default")
        key = (edge["from"], action)
        if key in first_edge:
            problems.add(
                ("edges", i),
                f"edges[{i}]: a second edge from {edge['from']!r} on action {action!r} "
                f"(first: edges[{first_edge[key]}]); one successor per action",
            )
            continue
        first_edge[key] = i
        successors[edge["from"]].append(edge["to"])

    start = doc.get("start", top_ids[0] if top_ids else None)
    if isinstance(start, str) and start not in top_ids:
        problems.add((), f"start={start!r}: unknown node (top-level nodes: {listing})")
        return
    edge_problems = any(owner[:1] == ("edges",) for owner in problems.by_owner)
    if not top_ids or edge_problems:
        return  # cycles and reachability mean little until the edges are right
    for cycle in _cycles(top_ids, successors):
        problems.graph.append(
            "edges: cycle " + " -> ".join([*cycle, cycle[0]]) + "; workflows must be acyclic"
        )
    if isinstance(start, str):
        seen, todo = {start}, [start]
        while todo:
            for nxt in successors[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        for i, node_id in enumerate(top):
            if isinstance(node_id, str) and node_id not in seen:
                problems.graph.append(
                    f"nodes[{i}] ({node_id!r}): not reachable from start {start!r} "
                    "(add an edge to it, or remove it)"
                )


def _cycles(ids: list[str], successors: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per back edge found by a depth-first search, each reported once."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    found: list[list[str]] = []
    seen_sets: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in successors.get(node, []):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :]
                if frozenset(cycle) not in seen_sets:
                    seen_sets.add(frozenset(cycle))
                    found.append(cycle)
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in ids:
        if node not in state:
            visit(node)
    return found


def _fill_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    doc.setdefault("version", 1)
    doc.setdefault("edges", [])
    doc.setdefault("start", doc["nodes"][0]["id"])
    for edge in doc["edges"]:
        edge.setdefault("action", "default")
    for _, node in _walk(doc["nodes"], ("nodes",)):
        if node["type"] == GROUP_TYPE:
            node.setdefault("max_concurrent", 10)
            node.setdefault("on_error", "fail_fast")
        else:
            node.setdefault("params", {})
    return doc


def validate_workflow(
    doc: Any, *, registry: Optional[NodeRegistry] = None, source: str = "workflow"
) -> dict[str, Any]:
    """Check a workflow document and return a copy with every default filled in.

    Checked at once, each problem naming node and field: the structure against
    :data:`WORKFLOW_SCHEMA`; ids (unique, not ``__reserved__``); node types (known to
    ``registry``, default :func:`default_registry`) and their params; batch configs
    (as :func:`parabatch.validate_batch_config` does); edges (between top-level nodes, one
    per ``(from, action)``), cycles and nodes not reachable from ``start``. ``source``
    names the document in the error's first line (a file name, say).

    Raises:
        WorkflowError: listing every problem.

    Example:
        >>> wf = validate_workflow({"nodes": [
        ...     {"id": "a", "type": "llm", "params": {"prompt": "hi"}},
        ...     {"id": "b", "type": "llm", "params": {"prompt": "${a.summary}"},
        ...      "batch": {"items": [1, 2], "max_concurrent": 0}},
        ...     {"id": "c", "type": "htttp"}],
        ...     "edges": [{"from": "a", "to": "b"}]})
        Traceback (most recent call last):
          ...
        parabatch.workflow._errors.WorkflowError: invalid workflow (3 problems):
          - nodes[1] ('b').batch.max_concurrent=0: must be an integer from 1 to 100
          - nodes[2] ('c').type='htttp': unknown node type (known: collect, http, llm, parallel_group, shell)
          - nodes[2] ('c'): not reachable from start 'a' (add an edge to it, or remove it)

    Cycles and reachability are checked only once the edges themselves are valid.
    """  # noqa: E501
    registry = default_registry() if registry is None else registry
    if not isinstance(doc, dict):
        raise WorkflowError(
            [f"{source}: must be a JSON object with 'nodes', got {type(doc).__name__}"],
            source=source,
        )
    try:
        return _validate(doc, registry, source)
    except RecursionError:
        raise WorkflowError([f"{source}: nested too deeply to check"], source=source) from None


def _validate(doc: dict[str, Any], registry: NodeRegistry, source: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    problems = _Problems()
    for bad in non_finite(doc):
        value = _json_number(_at(doc, bad))
        problems.add(
            _owner(bad),
            f"{_loc(bad, doc)}={value}: must be a finite number (JSON has no NaN or "
            "Infinity; a number beyond 1.8e308 reads as Infinity)",
        )
    for error in _VALIDATOR.iter_errors(doc):
        path: Path_ = tuple(error.absolute_path)
        if _is_non_finite(error.instance):
            continue  # reported once, as not finite
        if _inside(path, "batch") or _inside(path, "params"):
            continue  # reported by _check_batch and _check_params, in their own words
        for line in _schema_lines(error, _loc(path, doc)):
            problems.add(_owner(path), line)
    walked = _check_nodes(doc, registry, problems)
    _check_graph(doc, problems, walked)
    edges = doc.get("edges")
    lines = problems.ordered([p for p, _ in walked], len(edges) if isinstance(edges, list) else 0)
    if lines:
        raise WorkflowError(lines, source=source)
    return _fill_defaults(doc)


def read_json(path: Union[str, Path], where: str, error: Callable[[str], Exception]) -> Any:
    """Read a UTF-8 JSON file (a leading BOM allowed); any problem is ``error(message)``.

    Example:
        >>> read_json("no-such.json", "no-such.json", ValueError)
        Traceback (most recent call last):
          ...
        ValueError: no-such.json: cannot read: No such file or directory
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{where}: line {line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}); save the file as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # an integer too long to convert, say
        raise error(f"{where}: not valid JSON: {exc}") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to read") from None


def non_finite(value: Any, path: Path_ = ()) -> list[Path_]:
    """Paths to every NaN or infinite float in ``value`` (a parsed JSON document).

    ``json`` reads ``NaN``, ``Infinity`` and too-large numbers such as ``1e400`` into
    such floats, though JSON has none of them; a schema's ``minimum`` does not stop a NaN.

    Example:
        >>> non_finite({"a": [1.0, float("nan")], "b": {"c": float("-inf")}})
        [('a', 1), ('b', 'c')]
    """
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_finite(v, (*path, i))]
    return []


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _at(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _json_number(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def load_workflow(
    path: Union[str, Path], *, registry: Optional[NodeRegistry] = None
) -> dict[str, Any]:
    """Read a workflow JSON file and validate it; a file that is not UTF-8 JSON is a
    WorkflowError too.

    Example:
        >>> import json, tempfile, os
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        ...     json.dump({"nodes": [{"id": "a", "type": "llm",
        ...                           "params": {"prompt": "hi"}}]}, f)
        >>> load_workflow(f.name)["start"]
        'a'
        >>> os.remove(f.name)
    """
    name = str(path)
    doc = read_json(path, name, lambda line: WorkflowError([line], source=name))
    return validate_workflow(doc, registry=registry, source=name)
