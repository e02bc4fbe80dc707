"""``python -m parabatch``: run and validate a workflow file; exit codes 0, 1 and 2."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parabatch.workflow._cli import main

from .server import EntryServer, make_entries

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflow.json"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EntryServer]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with EntryServer(make_entries(5)) as srv:
        yield srv


def cli(*args: str, stderr: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO() if stderr is None else stderr
    code = main(list(args), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(path: Path, value: Any) -> str:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def test_the_example_workflow_runs_and_prints_json(server: EntryServer, tmp_path: Path) -> None:
    shared = write(tmp_path / "shared.json", {"base_url": server.url})
    code, out, err = cli("run", str(EXAMPLE), "--shared", shared)
    assert (code, err) == (0, "")  # no progress: stderr is not a terminal
    result = json.loads(out)
    assert result["base_url"] == server.url
    assert [r["json"]["id"] for r in result["fetch"]["results"]] == [1, 2, 3, 4, 5]
    assert result["word_count"]["returncode"] == 0
    assert int(result["word_count"]["stdout"]) == len(result["collect"]["text"].split())
    assert [c["node_id"] for c in result["__llm_calls__"]] == ["summarise"] * 5 + ["overall"]


def test_output_file_and_progress_on_a_terminal(server: EntryServer, tmp_path: Path) -> None:
    shared = write(tmp_path / "shared.json", {"base_url": server.url})
    target = tmp_path / "out.json"
    code, out, err = cli(
        "run", str(EXAMPLE), "--shared", shared, "--output", str(target), stderr=Tty()
    )
    assert (code, out) == (0, "")
    assert json.loads(target.read_text())["collect"]["count"] == 5
    assert "fetch [" in err and "] 5/5\n" in err and "report [" in err and "] 2/2\n" in err


def test_progress_can_be_forced_either_way(server: EntryServer, tmp_path: Path) -> None:
    shared = write(tmp_path / "shared.json", {"base_url": server.url})
    assert "summarise [" in cli("run", str(EXAMPLE), "--shared", shared, "--progress")[2]
    quiet = cli("run", str(EXAMPLE), "--shared", shared, "--no-progress", stderr=Tty())
    assert quiet[2] == ""


def test_a_failed_workflow_exits_1_and_still_prints_what_it_got(tmp_path: Path) -> None:
    doc = {
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "${q}"},
                "batch": {"items": ["a", "b"], "as": "q", "error_handling": "continue"},
            },
            {"id": "fail", "type": "shell", "params": {"cmd": ["sh", "-c", "exit 3"]}},
        ],
        "edges": [{"from": "ask", "to": "fail"}],
    }
    code, out, err = cli("run", write(tmp_path / "wf.json", doc))
    assert code == 1
    assert err.startswith("parabatch: workflow failed: CalledProcessError: Command")
    result = json.loads(out)
    assert [r["summary"] for r in result["ask"]["results"]] == ["Summary: a", "Summary: b"]


def test_batch_errors_are_printed_without_exception_objects(tmp_path: Path) -> None:
    doc = {
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "${q.text}"},
                "batch": {"items": [{"text": "a"}, {}], "as": "q", "error_handling": "continue"},
            },
        ]
    }
    code, out, _ = cli("run", write(tmp_path / "wf.json", doc))
    assert code == 0
    errors = json.loads(out)["ask"]["errors"]
    message = "TemplateError: ${q.text}: key 'text' not found in q (a dict with no keys)"
    tracebacks = [e.pop("traceback") for e in errors]
    assert errors == [{"index": 1, "item": {}, "error": message, "attempts": 1}]
    assert tracebacks[0].startswith("Traceback") and tracebacks[0].endswith(message + "\n")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"nodes": [{"id": "a", "type": "nope"}]}, "nodes[0] ('a').type='nope': unknown node type"),
        ('{"nodes": [', "line 1 column 12: "),  # the JSON decoder's words differ on PyPy
    ],
)
def test_an_invalid_workflow_exits_2(tmp_path: Path, content: Any, needle: str) -> None:
    path = write(tmp_path / "wf.json", content)
    for command in ("run", "validate"):
        code, out, err = cli(command, path)
        assert (code, out) == (2, "")
        assert err.startswith(f"parabatch: invalid {path} (1 problem):") and needle in err


def test_validate_a_good_workflow() -> None:
    assert cli("validate", str(EXAMPLE)) == (0, "ok: 5 node(s), start list\n", "")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--shared", "missing.json"], "--shared 'missing.json': cannot read"),
        (["--shared", "@list"], "must hold a JSON object"),
        (["--shared", "@bad"], "not JSON"),
        (["--node-type", "x"], "expected NAME=MODULE:ATTR"),
        (["--node-type", "x=no_such_module_here:A"], "ModuleNotFoundError"),
        (["--node-type", "x=json:nothing"], "AttributeError"),
        (["--node-type", "x=json:__doc__"], "factory="),
    ],
)
def test_usage_problems_exit_2(tmp_path: Path, extra: list[str], needle: str) -> None:
    write(tmp_path / "list.json", "[1]")
    write(tmp_path / "bad.json", "{")
    args = [
        a.replace("@", str(tmp_path) + "/") + (".json" if a.startswith("@") else "") for a in extra
    ]
    code, _, err = cli("run", str(EXAMPLE), *args)
    assert code == 2 and needle in err


def test_a_node_type_from_a_module(tmp_path: Path) -> None:
    doc = {"nodes": [{"id": "s", "type": "shout", "params": {"text": "hi"}}]}
    path = write(tmp_path / "wf.json", doc)
    code, out, _ = cli("run", path, "--node-type", "shout=tests.workflow.test_compile:Shout")
    assert code == 0 and json.loads(out)["s"] == {"text": "HI"}
    assert cli("run", path)[0] == 2


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main([], stdout=io.StringIO(), stderr=io.StringIO())
    assert info.value.code == 2


def test_python_dash_m_parabatch(tmp_path: Path) -> None:
    path = write(
        tmp_path / "wf.json", {"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "p: q"}}]}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "parabatch", "run", path],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout)["a"]["summary"] == "Summary: q"
