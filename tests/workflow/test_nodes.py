"""The built-in nodes, one at a time: HTTP, shell, simulated LLM, collect."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parabatch import CallLog, TemplateError, check_copyable
from parabatch.workflow import (
    CollectNode,
    HttpNode,
    HttpStatusError,
    ProgressBar,
    ShellNode,
    SimulatedLlmNode,
    simulated_summary,
    to_jsonable,
)

from .server import EntryServer, make_entries


def run(node: Any, params: dict[str, Any]) -> dict[str, Any]:
    node.params = params
    shared: dict[str, Any] = {}
    assert node.run(shared) == "default"
    return shared


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EntryServer]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with EntryServer(make_entries(3), fail={"/entries/2": -1}) as srv:
        yield srv


@pytest.mark.parametrize("node", [HttpNode(), ShellNode(), SimulatedLlmNode(), CollectNode()])
def test_every_node_is_deep_copyable(node: Any) -> None:
    check_copyable(node)
    assert type(copy.deepcopy(node)) is type(node)


# -- HTTP -----------------------------------------------------------------------------------


def test_http_get_gives_status_body_and_json(server: EntryServer) -> None:
    out = run(HttpNode(), {"url": f"{server.url}/entries/1"})
    assert out["status"] == 200
    assert out["json"] == make_entries(3)[0]
    assert json.loads(out["body"]) == out["json"]


def test_http_error_status_raises_with_status_url_and_body(server: EntryServer) -> None:
    with pytest.raises(HttpStatusError) as info:
        run(HttpNode(), {"url": f"{server.url}/entries/2"})
    assert info.value.status == 503 and info.value.url.endswith("/entries/2")
    assert "planned failure of /entries/2" in info.value.body
    with pytest.raises(HttpStatusError, match="HTTP 404"):
        run(HttpNode(), {"url": f"{server.url}/nothing"})


def test_http_method_is_sent(server: EntryServer) -> None:
    # The test server answers GET only: a POST with a JSON body gets 501 from http.server.
    with pytest.raises(HttpStatusError) as info:
        run(HttpNode(), {"url": f"{server.url}/entries", "method": "post", "body": {"a": 1}})
    assert info.value.status == 501


def test_http_refused_connection_is_urllibs_own_error(server: EntryServer) -> None:
    with EntryServer([]) as gone:
        url = gone.url
    with pytest.raises(urllib.error.URLError):
        run(HttpNode(), {"url": f"{url}/entries", "timeout": 5})


@pytest.mark.parametrize("timeout", [0, -1, "5", True])
def test_http_timeout_must_be_positive(timeout: Any) -> None:
    with pytest.raises(ValueError, match=r"timeout=.*: must be a number > 0"):
        run(HttpNode(), {"url": "http://127.0.0.1:9/", "timeout": timeout})


# -- shell ----------------------------------------------------------------------------------


def test_shell_runs_the_command_with_stdin() -> None:
    out = run(ShellNode(), {"cmd": ["wc", "-w"], "stdin": "one two\nthree"})
    assert (int(out["stdout"]), out["returncode"], out["stderr"]) == (3, 0, "")


def test_shell_sends_non_text_stdin_as_json() -> None:
    out = run(ShellNode(), {"cmd": ["cat"], "stdin": {"a": [1, 2]}})
    assert json.loads(out["stdout"]) == {"a": [1, 2]}


def test_shell_without_stdin_reads_nothing() -> None:
    out = run(ShellNode(), {"cmd": ["wc", "-c"]})
    assert int(out["stdout"]) == 0


def test_shell_nonzero_exit_raises_unless_check_is_false() -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        run(ShellNode(), {"cmd": ["sh", "-c", "echo oops >&2; exit 3"]})
    assert info.value.returncode == 3 and info.value.stderr == "oops\n"
    out = run(ShellNode(), {"cmd": ["sh", "-c", "exit 3"], "check": False})
    assert out["returncode"] == 3


def test_shell_failure_says_why_with_the_end_of_stderr() -> None:
    """A failed command said only its exit status: its stderr went nowhere."""
    with pytest.raises(subprocess.CalledProcessError) as info:
        run(ShellNode(), {"cmd": ["sh", "-c", "echo 'cannot open x' >&2; exit 2"]})
    assert str(info.value) == (
        "Command '['sh', '-c', \"echo 'cannot open x' >&2; exit 2\"]' returned non-zero exit "
        "status 2; stderr: cannot open x"
    )
    with pytest.raises(subprocess.CalledProcessError) as info:
        run(ShellNode(), {"cmd": ["sh", "-c", "head -c 2000 /dev/zero | tr '\\0' e >&2; exit 1"]})
    assert str(info.value).endswith("; stderr: ..." + "e" * 500)
    back = pickle.loads(pickle.dumps(info.value))
    assert (type(back), str(back), back.stderr) == (type(info.value), str(info.value), "e" * 2000)


def test_shell_timeout_raises() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run(ShellNode(), {"cmd": ["sleep", "5"], "timeout": 0.2})


def test_shell_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A grandchild of the command must not outlive it (it did: only the shell was killed)."""
    pid_file = tmp_path / "pid"
    script = f"sleep 600 & echo $! > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; wait"
    for timeout in (2, 10, 40):  # longer only if a loaded machine hit the timeout first
        with pytest.raises(subprocess.TimeoutExpired):
            run(ShellNode(), {"cmd": ["sh", "-c", script], "timeout": timeout})
        if pid_file.exists():
            break
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 60  # a safety bound on the wait, not a speed check
    while not _dead(grandchild):
        if time.monotonic() > deadline:
            os.kill(grandchild, signal.SIGKILL)
            pytest.fail(f"the command's grandchild {grandchild} outlived its timeout")
        time.sleep(0.01)


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_shell_output_that_is_not_utf8_is_replaced_not_an_error() -> None:
    out = run(ShellNode(), {"cmd": ["printf", "caf\\351 ok"]})
    assert out["stdout"] == "caf\ufffd ok"


@pytest.mark.parametrize(
    ("node", "params"),
    [
        (ShellNode(), {"cmd": ["true"], "timeout": float("inf")}),
        (ShellNode(), {"cmd": ["true"], "timeout": float("nan")}),
        (HttpNode(), {"url": "http://127.0.0.1:9/", "timeout": 1e300}),
        (SimulatedLlmNode(), {"prompt": "x", "latency": float("inf")}),
        (SimulatedLlmNode(), {"prompt": "x", "latency": float("nan")}),
        (SimulatedLlmNode(), {"prompt": "x", "latency": 1e300}),
    ],
)
def test_durations_known_only_at_run_time_are_checked_then(node: Any, params: Any) -> None:
    """A ``${...}`` duration escapes validation: inf overflowed time.sleep, NaN waited 0."""
    with pytest.raises(ValueError, match=r"must be a number .* and <= 604800"):
        run(node, params)


@pytest.mark.parametrize("cmd", ["wc -w", [], ["wc", 1]])
def test_shell_cmd_must_be_a_list_of_strings(cmd: Any) -> None:
    with pytest.raises(ValueError, match="must be a non-empty list of strings"):
        run(ShellNode(), {"cmd": cmd})


# -- simulated LLM --------------------------------------------------------------------------


def test_llm_answers_from_the_prompt_and_reports_usage() -> None:
    prompt = "Summarise: one two three four five"
    out = run(SimulatedLlmNode(), {"prompt": prompt, "model": "m", "max_words": 3})
    assert out["summary"] == "Summary: one two three ..."
    assert out["llm_usage"] == {"model": "m", "input_tokens": 6, "output_tokens": 5}
    again = run(SimulatedLlmNode(), {"prompt": prompt, "model": "m", "max_words": 3})
    assert again == out  # deterministic


@pytest.mark.parametrize(
    ("prompt", "words", "summary"),
    [
        ("no colon here", 12, "Summary: no colon here"),
        ("a: b: c", 12, "Summary: b: c"),
        ("a:", 12, "Summary:"),
        ("x: 1 2 3", 3, "Summary: 1 2 3"),
    ],
)
def test_simulated_summary_rule(prompt: str, words: int, summary: str) -> None:
    assert simulated_summary(prompt, words) == summary


def test_llm_prompt_that_is_not_text_is_sent_as_json() -> None:
    out = run(SimulatedLlmNode(), {"prompt": ["a", "b"]})
    assert out["summary"] == 'Summary: ["a", "b"]'


# -- collect, JSON, progress ----------------------------------------------------------------


def test_collect_picks_a_path_skips_none_and_joins() -> None:
    items = [{"json": {"n": 1}}, None, {"json": {"n": [2]}}]
    out = run(CollectNode(), {"items": items, "field": "json.n", "join": ", "})
    assert out == {"values": [1, [2]], "count": 2, "text": "1, [2]"}
    with pytest.raises(TemplateError, match="key 'x' not found"):
        run(CollectNode(), {"items": items, "field": "json.x"})
    with pytest.raises(ValueError, match="must be a list"):
        run(CollectNode(), {"items": "abc"})


def test_to_jsonable_keeps_data_and_drops_exception_objects() -> None:
    value = {
        "log": CallLog([{"a": 1}]),
        "bad": [float("nan"), float("inf"), 1.5],
        "exc": KeyError("k"),
        "errors": [{"error": "E: x", "exception": ValueError("x")}],
        "lone": {"exception": ValueError("kept as text: no 'error' beside it")},
        "set": {3, 1},
        1: object,
    }
    out = to_jsonable(value)
    json.dumps(out)
    assert out["log"] == [{"a": 1}] and out["bad"] == [None, None, 1.5]
    assert out["exc"] == "KeyError: 'k'"
    assert out["errors"] == [{"error": "E: x"}]
    assert out["lone"] == {"exception": "ValueError: kept as text: no 'error' beside it"}
    assert out["set"] == [1, 3] and out["1"] == "<class 'object'>"


def test_progress_bar_draws_one_line_per_node() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=4)
    bar("a", 0, 1, 2, True)
    bar("b", 0, 1, 1, False)  # another node interrupts: a new line
    bar("a", 1, 2, 2, True)
    assert stream.getvalue() == ("\ra [##--] 1/2\n\rb [####] 1/1 (1 failed)\n\ra [####] 2/2\n")
