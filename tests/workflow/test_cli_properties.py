"""Whatever a workflow file holds, ``validate`` answers 0 or 2 with a message: no traceback."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parabatch.workflow._cli import main

EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "examples" / "workflow.json").read_text()
)

_WORDS = ["llm", "shell", "http", "collect", "parallel_group", "${x}", "item", "__index__"]
_KEYS = ["id", "type", "params", "batch", "children", "nodes", "edges", "from", "to"]
_KEYS += ["action", "items", "as", "start", "max_concurrent", "retry_wait", "cmd", "url"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(_WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=5), inner, max_size=5),
    ),
    max_leaves=30,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*path, index))
    return out


PATHS = _paths(EXAMPLE)[1:]


def validate(tmp_path: Path, data: bytes) -> tuple[int, str, str]:
    path = tmp_path / "wf.json"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    code = main(["validate", str(path)], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def check(code: int, out: str, err: str) -> None:
    assert ((code, err) == (0, "") and out.startswith("ok: ")) or (
        code == 2 and out == "" and err.startswith("parabatch: invalid ")
    ), (code, out, err)


_SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_the_example_with_any_values_put_anywhere(tmp_path: Path, edits: Any) -> None:
    doc = copy.deepcopy(EXAMPLE)
    for path, value in edits:
        target = doc
        try:
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced this path's parent
    # json writes NaN and Infinity, which the loader must refuse like any other problem.
    check(*validate(tmp_path, json.dumps(doc).encode()))


@_SETTINGS
@given(data=st.binary(max_size=200) | values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_or_any_json(tmp_path: Path, data: bytes) -> None:
    check(*validate(tmp_path, data))
