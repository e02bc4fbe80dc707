"""``python -m parabatch``: run and validate a workflow file; exit codes 0, 1 and 2."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pocketflow import Node

from parabatch import __version__
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
    assert err.startswith("parabatch: node 'fail' failed: ShellCommandError: Command")
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
        (["--shared", "@bad"], "bad.json': line 1 column 2: "),
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


# -- regressions: what a user or an adversary tried -----------------------------------------


class Touch(Node):  # type: ignore[misc]
    """Creates ``params["path"]``: shows whether the workflow ran at all."""

    def exec(self, _: Any) -> None:
        Path(self.params["path"]).write_text("ran")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words for it")


class RaiseUnprintable(Node):  # type: ignore[misc]
    def exec(self, _: Any) -> None:
        raise Unprintable


class RaiseEscapes(Node):  # type: ignore[misc]
    def exec(self, _: Any) -> None:
        raise ValueError("\x1b[2J\x1b[31mred\x07 and\ttab")


class NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class WriteNoRepr(Node):  # type: ignore[misc]
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["odd"] = NoRepr()
        shared["fine"] = 1
        return "default"


def node_type(name: str, cls: type) -> list[str]:
    return ["--node-type", f"{name}=tests.workflow.test_cli:{cls.__name__}"]


def touch_workflow(tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "ran"
    doc = {"nodes": [{"id": "t", "type": "touch", "params": {"path": str(marker)}}]}
    return write(tmp_path / "wf.json", doc), marker


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("missing/out.json", "--output '@missing/out.json': no such directory '@missing'"),
        ("", "--output '@': is a directory (give a file name)"),
        ("wf.json", "--output '@wf.json': is the workflow file itself"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_running(
    tmp_path: Path, target: str, needle: str
) -> None:
    """It was a traceback and exit 1 after the whole run, the results going nowhere."""
    path, marker = touch_workflow(tmp_path)
    output = str(tmp_path / target) if target else str(tmp_path)
    code, out, err = cli("run", path, "--output", output, *node_type("touch", Touch))
    assert (code, out) == (2, "")
    assert err == f"parabatch: {needle.replace('@', str(tmp_path) + ('/' if target else ''))}\n"
    assert not marker.exists()


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where results land when they cannot go where asked (``tempfile``'s directory)."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def saved_results(err: str) -> dict[str, Any]:
    saved = err.rstrip("\n").rpartition("; saved in ")[2]
    result: dict[str, Any] = json.loads(Path(saved).read_text())
    return result


def test_results_are_saved_elsewhere_when_the_output_goes_away_during_the_run(
    tmp_path: Path, temp_dir: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    doc = {"nodes": [{"id": "rm", "type": "shell", "params": {"cmd": ["rm", "-r", str(out_dir)]}}]}
    code, out, err = cli("run", write(tmp_path / "wf.json", doc), "--output", str(out_dir / "r"))
    assert (code, out) == (1, "")
    assert err.startswith(f"parabatch: cannot write the results to {out_dir / 'r'}: No such file")
    assert saved_results(err)["rm"]["returncode"] == 0
    assert list(temp_dir.iterdir()) != []


def test_a_failed_write_keeps_the_previous_output_whole(
    tmp_path: Path, temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = touch_workflow(tmp_path)
    target = tmp_path / "out.json"
    target.write_text('{"previous": true}')

    def full_disk(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    code, _, err = cli("run", path, "--output", str(target), *node_type("touch", Touch))
    assert code == 1 and "No space left on device; saved in " in err
    assert json.loads(target.read_text()) == {"previous": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "ran", "temp", "wf.json"]
    assert "t" in saved_results(err)


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_saves_the_results_elsewhere(tmp_path: Path, temp_dir: Path) -> None:
    path, _ = touch_workflow(tmp_path)
    err = io.StringIO()
    code = main(["run", path, *node_type("touch", Touch)], stdout=ClosedPipe(), stderr=err)
    assert code == 1
    assert err.getvalue().startswith("parabatch: cannot write the results to stdout: Broken pipe")
    assert "t" in saved_results(err.getvalue())


def test_results_are_printed_when_nowhere_else_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = touch_workflow(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    err_stream = io.StringIO()
    code = main(["run", path, *node_type("touch", Touch)], stdout=ClosedPipe(), stderr=err_stream)
    text = err_stream.getvalue()
    assert code == 1 and "stdout: Broken pipe; here they are\n" in text
    assert json.loads(text.partition("here they are\n")[2])["t"] == {}


@pytest.mark.parametrize("flag", [None, "--shared"])
def test_a_file_that_is_not_utf8_exits_2(tmp_path: Path, flag: Any) -> None:
    """It was a traceback and exit 1 (UnicodeDecodeError); the README promises 2."""
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "caf\xe9"}}]}')
    args = ["run", str(latin1)] if flag is None else ["run", str(EXAMPLE), flag, str(latin1)]
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert "latin1.json" in err and "not UTF-8 text (byte 0xe9 at offset 63)" in err


def test_a_non_finite_retry_wait_exits_2_before_running(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    marker = tmp_path / "ran"
    node = {"id": "t", "type": "touch", "params": {"path": str(marker)}}
    node["batch"] = {"items": [1], "max_retries": 2, "retry_wait": float("inf")}
    path.write_text(json.dumps({"nodes": [node]}))  # json writes inf as Infinity
    code, _, err = cli("run", str(path), *node_type("touch", Touch))
    assert code == 2 and "batch.retry_wait=Infinity: must be a finite number" in err
    assert not marker.exists()


@pytest.fixture
def refused_url() -> str:
    with EntryServer([]) as gone:
        return f"{gone.url}/x"


@pytest.mark.parametrize(
    ("shape", "named"),
    [
        ("plain", "node 'fetch'"),
        ("batch", "node 'fetch' (item 0)"),
        ("group", "node 'fetch' (in parallel group 'both')"),
    ],
)
def test_a_failure_names_the_node_that_failed(
    tmp_path: Path, refused_url: str, shape: str, named: str
) -> None:
    """It said only 'workflow failed: URLError ... Connection refused'."""
    fetch: dict[str, Any] = {"id": "fetch", "type": "http", "params": {"url": refused_url}}
    if shape == "batch":
        fetch["batch"] = {"items": [1, 2], "parallel": True}
    nodes: list[dict[str, Any]] = [{"id": "ok", "type": "llm", "params": {"prompt": "x"}}]
    if shape == "group":
        nodes.append({"id": "both", "type": "parallel_group", "children": [fetch, nodes[0]]})
        nodes.pop(0)
    else:
        nodes.append(fetch)
    doc = {"nodes": nodes, "edges": [{"from": "ok", "to": "fetch"}] if shape != "group" else []}
    code, out, err = cli("run", write(tmp_path / "wf.json", doc))
    assert code == 1 and json.loads(out)
    assert err.startswith(f"parabatch: {named} failed: URLError: <urlopen error ")


def test_the_failed_item_of_a_batch_is_named(tmp_path: Path) -> None:
    doc = {
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "${q.text}"},
                "batch": {"items": [{"text": "a"}, {}], "as": "q"},
            }
        ]
    }
    code, _, err = cli("run", write(tmp_path / "wf.json", doc))
    assert code == 1
    assert err.startswith("parabatch: node 'ask' (item 1) failed: TemplateError: ${q.text}: ")


def test_an_error_that_cannot_be_printed_is_still_reported(tmp_path: Path) -> None:
    doc = {"nodes": [{"id": "odd", "type": "odd"}]}
    code, out, err = cli(
        "run", write(tmp_path / "wf.json", doc), *node_type("odd", RaiseUnprintable)
    )
    assert code == 1 and json.loads(out)["__llm_calls__"] == []
    assert err == "parabatch: node 'odd' failed: Unprintable: <unprintable Unprintable>\n"


def test_control_characters_in_an_error_are_escaped(tmp_path: Path) -> None:
    """A message from a command or a server must not rewrite the user's terminal."""
    doc = {"nodes": [{"id": "esc", "type": "esc"}]}
    code, _, err = cli("run", write(tmp_path / "wf.json", doc), *node_type("esc", RaiseEscapes))
    assert code == 1
    assert err == "parabatch: node 'esc' failed: ValueError: \\x1b[2J\\x1b[31mred\\x07 and\\ttab\n"


def test_a_value_that_cannot_be_printed_does_not_lose_the_results(tmp_path: Path) -> None:
    doc = {"nodes": [{"id": "w", "type": "w"}]}
    code, out, _ = cli("run", write(tmp_path / "wf.json", doc), *node_type("w", WriteNoRepr))
    assert code == 0
    assert json.loads(out)["w"] == {"odd": "<unprintable NoRepr>", "fine": 1}


def test_text_utf8_cannot_hold_is_written_as_escapes(tmp_path: Path) -> None:
    """A lone surrogate (valid in a JSON string) made writing the output fail."""
    shared = write(tmp_path / "shared.json", '{"text": "half \\ud800 a pair"}')
    doc = {"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "p: ${text}"}}]}
    target = tmp_path / "out.json"
    code, _, err = cli(
        "run", write(tmp_path / "wf.json", doc), "--shared", shared, "--output", str(target)
    )
    assert (code, err) == (0, "")
    assert "\\ud800" in target.read_text()
    assert json.loads(target.read_text())["a"]["summary"] == "Summary: half \ud800 a pair"


@pytest.mark.parametrize("calls", ['"none"', "{}", "[1, 2]"])
def test_a_shared_file_whose_call_log_is_not_a_list_of_records_exits_2(
    tmp_path: Path, calls: str
) -> None:
    shared = write(tmp_path / "shared.json", '{"__llm_calls__": ' + calls + "}")
    code, _, err = cli("run", str(EXAMPLE), "--shared", shared)
    assert code == 2 and "__llm_calls__ must be a list of call records (objects)" in err


def test_a_previous_output_fed_back_as_shared_keeps_its_call_records(tmp_path: Path) -> None:
    doc = {"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "p: ${text}"}}]}
    path = write(tmp_path / "wf.json", doc)
    first = write(tmp_path / "first.json", {"text": "one"})
    code, out, _ = cli("run", path, "--shared", first)
    second = write(tmp_path / "second.json", out)
    code, out, _ = cli("run", path, "--shared", second)
    assert code == 0
    assert [c["node_id"] for c in json.loads(out)["__llm_calls__"]] == ["a", "a"]


def test_a_node_type_module_that_fails_to_import_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_nodes.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = cli("run", str(EXAMPLE), "--node-type", "x=broken_nodes:X")
    assert code == 2
    assert err == ("parabatch: --node-type 'x=broken_nodes:X': RuntimeError: half-written module\n")


def test_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "parabatch", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"parabatch {__version__}\n", "")


@pytest.mark.parametrize("value", ['"user data"', "[1, 2]", "3"])
def test_a_shared_key_that_is_a_node_id_and_not_an_object_exits_2(
    tmp_path: Path, value: str
) -> None:
    """The node's outputs replaced the user's value without a word."""
    shared = write(tmp_path / "shared.json", '{"summarise": ' + value + "}")
    code, _, err = cli("run", str(EXAMPLE), "--shared", shared)
    assert code == 2
    assert (
        f"key 'summarise' is also a node id; the node's outputs go there and would replace {value}"
        in err
    )


def test_an_output_name_ending_in_a_slash_is_refused(tmp_path: Path) -> None:
    """``--output results/`` wrote a file called ``results``."""
    path, marker = touch_workflow(tmp_path)
    target = str(tmp_path / "results") + "/"
    code, _, err = cli("run", path, "--output", target, *node_type("touch", Touch))
    assert (
        code == 2
        and err == f"parabatch: --output {target!r}: names a directory (give a file name)\n"
    )
    assert not marker.exists() and not (tmp_path / "results").exists()


def not_a_node() -> int:
    return 42


def broken_factory() -> Node:
    raise RuntimeError("factory broke")


@pytest.mark.parametrize(
    ("factory", "needle"),
    [
        ("not_a_node", "its factory returned 42, not a pocketflow node"),
        ("broken_factory", "its factory raised RuntimeError: factory broke"),
    ],
)
def test_a_node_type_whose_factory_fails_exits_2_before_running(
    tmp_path: Path, factory: str, needle: str
) -> None:
    """It was exit 1, 'workflow failed', after printing an empty result."""
    doc = {"nodes": [{"id": "a", "type": "x"}]}
    path = write(tmp_path / "wf.json", doc)
    spec = ["--node-type", f"x=tests.workflow.test_cli:{factory}"]
    for command in ("validate", "run"):
        code, out, err = cli(command, path, *spec)
        assert (code, out) == (2, "")
        assert err == f"parabatch: node type 'x' (for node 'a'): {needle}\n"


class LongError(Node):  # type: ignore[misc]
    def exec(self, _: Any) -> None:
        raise ValueError("x" * 10_000)


def test_a_very_long_error_is_cut_saying_how_much(tmp_path: Path) -> None:
    doc = {"nodes": [{"id": "long", "type": "long"}]}
    code, _, err = cli("run", write(tmp_path / "wf.json", doc), *node_type("long", LongError))
    assert code == 1
    assert (
        err
        == f"parabatch: node 'long' failed: ValueError: {'x' * 2000}... (8000 more characters)\n"
    )


def test_a_message_after_a_bar_cut_short_starts_on_a_new_line(tmp_path: Path) -> None:
    """'ask [###---] 1/3 (1 failed)parabatch: node ...' ran on from the bar."""
    doc = {
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "${q.text}"},
                "batch": {"items": [{}, {"text": "a"}, {"text": "b"}], "as": "q"},
            }
        ]
    }
    code, _, err = cli("run", write(tmp_path / "wf.json", doc), "--progress")
    assert code == 1
    assert "\rask [" in err and "] 1/3 (1 failed)\nparabatch: node 'ask' (item 0) failed: " in err


class WriteDeep(Node):  # type: ignore[misc]
    """Writes a list nested 100,000 deep: beyond any interpreter's recursion limit."""

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        deep: list[Any] = []
        for _ in range(100_000):
            deep = [deep]
        shared["deep"] = deep
        shared["fine"] = 1
        return "default"


def unwrap(value: Any) -> tuple[Any, int]:
    depth = 0
    while isinstance(value, list) and value:
        [value], depth = value, depth + 1
    return value, depth


def test_results_nested_too_deep_to_write_whole_are_still_written(tmp_path: Path) -> None:
    """A value nested too deep to convert (a server's answer, say) lost every result."""
    doc = {"nodes": [{"id": "w", "type": "w"}]}
    code, out, err = cli("run", write(tmp_path / "wf.json", doc), *node_type("w", WriteDeep))
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["w"]["fine"] == 1
    assert unwrap(result["w"]["deep"]) == ("<nested more than 100 deep>", 99)


def test_a_shared_file_nested_as_deep_as_json_reads_is_written_back(tmp_path: Path) -> None:
    shared = write(tmp_path / "shared.json", '{"deep": ' + "[" * 900 + "]" * 900 + "}")
    doc = {"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "p: q"}}]}
    code, out, err = cli("run", write(tmp_path / "wf.json", doc), "--shared", shared)
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["a"]["summary"] == "Summary: q"
    # Whole where the interpreter converts 900 levels, else cut at 100: never lost.
    assert unwrap(result["deep"]) in [([], 899), ("<nested more than 100 deep>", 100)]


def test_results_the_encoder_cannot_nest_deep_enough_are_cut_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read and converted whole, 900 levels overflowed PyPy's encoder and lost the results.

    PyPy's json encoder recurses twice per level where the conversion recurses once; an
    encoder that gives up at 120 levels, given 150, stands for it on every interpreter.
    """
    real_dumps = json.dumps

    def shallow_dumps(value: Any, **kwargs: Any) -> str:
        if unwrap(value.get("deep") if isinstance(value, dict) else None)[1] > 120:
            raise RecursionError("maximum recursion depth exceeded")
        return real_dumps(value, **kwargs)

    shared = write(tmp_path / "shared.json", '{"deep": ' + "[" * 150 + "]" * 150 + "}")
    nodes = [{"id": "a", "type": "llm", "params": {"prompt": "p: q"}}]
    doc = write(tmp_path / "wf.json", {"nodes": nodes})
    monkeypatch.setattr(json, "dumps", shallow_dumps)
    code, out, err = cli("run", doc, "--shared", shared)
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["a"]["summary"] == "Summary: q"
    assert unwrap(result["deep"]) == ("<nested more than 100 deep>", 100)


def test_the_output_file_gets_the_usual_mode_or_keeps_its_own(tmp_path: Path) -> None:
    """Written through mkstemp, a new output was readable by its owner only (0o600)."""
    path, _ = touch_workflow(tmp_path)
    target = tmp_path / "out.json"
    old_umask = os.umask(0o022)
    try:
        assert cli("run", path, "--output", str(target), *node_type("touch", Touch))[0] == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    target.chmod(0o640)
    assert cli("run", path, "--output", str(target), *node_type("touch", Touch))[0] == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_an_output_through_a_symlink_replaces_the_file_not_the_link(tmp_path: Path) -> None:
    path, _ = touch_workflow(tmp_path)
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "out.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert cli("run", path, "--output", str(link), *node_type("touch", Touch))[0] == 0
    assert link.is_symlink() and "t" in json.loads(real.read_text())
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["out.json"]


def test_a_dangling_output_symlink_is_refused_before_running(tmp_path: Path) -> None:
    path, marker = touch_workflow(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "gone" / "out.json")
    code, _, err = cli("run", path, "--output", str(link), *node_type("touch", Touch))
    assert code == 2 and f"no such directory '{tmp_path / 'gone'}'" in err
    assert not marker.exists()
