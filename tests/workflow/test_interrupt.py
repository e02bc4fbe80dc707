"""Ctrl-C: exit 130 at once, no traceback, no shell command left running, rerun works.

Synchronisation is by files the commands write (their pids) and by pid checks, never by
durations: every command sleeps far longer than any safety timeout here, so a process
that exits at all did not wait for its items.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from pocketflow import Node

from parabatch.workflow import run_workflow
from parabatch.workflow._cli import main
from parabatch.workflow._nodes import SHELL_COMMANDS, ShellCommands, ShellStoppedError

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists() or not hasattr(os, "killpg"),
    reason="checks processes through /proc and process groups",
)

ROOT = Path(__file__).resolve().parents[2]
SAFETY = 60.0  # seconds; a bound on waiting, never an assertion about speed
FOREVER = "600"  # seconds; far beyond SAFETY, so a command never ends on its own here

# Start ``python -m parabatch`` with SIGINT at its default, as a terminal would: a job
# started in the background of a non-interactive shell (a CI runner) inherits it ignored.
LAUNCH = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'parabatch', *sys.argv[1:]])"
)


def dead(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie has ended; only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SAFETY
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {SAFETY} s waiting for {what}")
        time.sleep(0.01)


def sleeper(pid_dir: Path, name: str) -> list[str]:
    """A command that starts a grandchild and writes ``<shell pid> <grandchild pid>``."""
    target = pid_dir / name
    return [
        "sh",
        "-c",
        f"sleep {FOREVER} & echo $$ $! > {target}.tmp && mv {target}.tmp {target}.pids; wait",
    ]


def pids_in(pid_dir: Path) -> list[int]:
    return [int(p) for f in sorted(pid_dir.glob("*.pids")) for p in f.read_text().split()]


@pytest.fixture
def pid_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for pid files; whatever is still alive at the end is killed."""
    folder = tmp_path / "pids"
    folder.mkdir()
    yield folder
    for pid in pids_in(folder):
        if not dead(pid):
            os.kill(pid, signal.SIGKILL)


class Blocker(Node):  # type: ignore[misc]
    """Writes ``params["marker"]``, then sleeps: a worker thread nothing can stop."""

    def exec(self, _: Any) -> None:
        Path(self.params["marker"]).write_text("started")
        time.sleep(float(FOREVER))


class Interrupter(Node):  # type: ignore[misc]
    """Waits until ``params["wait_for"]`` holds a pid file, then raises KeyboardInterrupt."""

    def exec(self, _: Any) -> None:
        folder = Path(self.params["wait_for"])
        wait_for(lambda: any(folder.glob("*.pids")), "the shell command's pid file")
        raise KeyboardInterrupt


def interrupted_workflow(pid_dir: Path, items: int = 3) -> dict[str, Any]:
    """A group: a parallel shell batch that never ends, beside a Python node that never ends."""
    cmd = sleeper(pid_dir, "${item}")
    return {
        "nodes": [
            {
                "id": "both",
                "type": "parallel_group",
                "children": [
                    {
                        "id": "shells",
                        "type": "shell",
                        "params": {"cmd": cmd},
                        "batch": {"items": list(range(items)), "parallel": True},
                    },
                    {"id": "python", "type": "block", "params": {"marker": str(pid_dir / "m")}},
                ],
            }
        ]
    }


BLOCK = "block=tests.workflow.test_interrupt:Blocker"


def start_cli(tmp_path: Path, doc: dict[str, Any], *extra: str) -> subprocess.Popen[str]:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(doc))
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "run", str(path), "--node-type", BLOCK, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=SAFETY)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running {SAFETY} s after Ctrl-C; stderr:\n{err}")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_exits_130_at_once_and_stops_every_shell_process_group(
    tmp_path: Path, pid_dir: Path, signum: int, code: int
) -> None:
    """It lived until in-flight items ended; SIGTERM left the shell commands running."""
    proc = start_cli(tmp_path, interrupted_workflow(pid_dir))
    wait_for(lambda: len(list(pid_dir.glob("*.pids"))) == 3, "three shell commands")
    wait_for((pid_dir / "m").exists, "the Python node to start")
    pids = pids_in(pid_dir)
    assert len(pids) == 6 and not any(dead(p) for p in pids)
    proc.send_signal(signum)
    out, err = finish(proc)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "parabatch: interrupted" in err
    assert "__llm_calls__" in json.loads(out)  # what finished is still written
    wait_for(lambda: all(dead(p) for p in pids), f"the shells and their children {pids} to end")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_stops_the_worker_processes_and_the_commands_their_items_started(
    tmp_path: Path, pid_dir: Path, signum: int, code: int
) -> None:
    """With --executor processes the workers, and their commands, outlived the CLI."""
    target = pid_dir / "${item}"
    cmd = [  # the worker's pid too: the shell's parent
        "sh",
        "-c",
        f"sleep {FOREVER} & echo $$ $! $PPID > {target}.tmp && mv {target}.tmp {target}.pids; wait",
    ]
    doc = {
        "nodes": [
            {
                "id": "shells",
                "type": "shell",
                "params": {"cmd": cmd},
                "batch": {"items": [0, 1, 2, 3], "parallel": True},
            }
        ]
    }
    proc = start_cli(tmp_path, doc, "--executor", "processes")
    wait_for(lambda: bool(list(pid_dir.glob("*.pids"))), "a shell command in a worker")
    pids = pids_in(pid_dir)
    assert not any(dead(p) for p in pids)
    proc.send_signal(signum)
    out, err = finish(proc)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "parabatch: interrupted" in err
    assert "shells" in json.loads(out)
    pids = pids_in(pid_dir)  # and any command started meanwhile
    wait_for(lambda: all(dead(p) for p in pids), f"the workers and their commands {pids} to end")


def test_a_second_ctrl_c_exits_130_without_a_traceback_or_orphans(
    tmp_path: Path, pid_dir: Path
) -> None:
    proc = start_cli(tmp_path, interrupted_workflow(pid_dir))
    wait_for(lambda: len(list(pid_dir.glob("*.pids"))) == 3, "three shell commands")
    pids = pids_in(pid_dir)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err
    wait_for(lambda: all(dead(p) for p in pids), f"the shells and their children {pids} to end")


def test_the_second_ctrl_c_handler_stops_the_shells_and_exits_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from parabatch.__main__ import _Stop

    calls: list[str] = []

    class Exited(BaseException):
        pass

    def fake_exit(code: int) -> None:
        calls.append(f"exit {code}")
        raise Exited

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(SHELL_COMMANDS, "stop", lambda timeout: calls.append("stop") or [])
    handler = _Stop()
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGINT, None)
    assert calls == []
    with pytest.raises(Exited):
        handler(signal.SIGINT, None)
    assert calls == ["stop", "exit 130"]


def test_a_ctrl_c_while_a_command_starts_is_raised_once_it_can_be_stopped(
    monkeypatch: pytest.MonkeyPatch, pid_dir: Path
) -> None:
    """A KeyboardInterrupt inside Popen would leave a started child that nothing lists."""
    from parabatch.__main__ import _Stop

    commands = SHELL_COMMANDS  # the one the handler asks
    handler = _Stop()
    real_popen = subprocess.Popen

    def popen_hit_by_ctrl_c(*args: Any, **kwargs: Any) -> Any:
        child = real_popen(*args, **kwargs)
        handler(signal.SIGINT, None)  # the signal lands while Popen is still running
        return child

    monkeypatch.setattr(subprocess, "Popen", popen_hit_by_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        commands.start(sleeper(pid_dir, "a"), stdout=subprocess.DEVNULL)
    wait_for(lambda: bool(pids_in(pid_dir)), "the command's pid file")
    pids = pids_in(pid_dir)
    try:
        assert len(commands.stop()) == 1  # listed, so stopped
    finally:
        commands.reopen()
    wait_for(lambda: all(dead(p) for p in pids), f"{pids} to end")


def test_ctrl_c_in_process_stops_the_shells_and_a_rerun_right_after_works(
    tmp_path: Path, pid_dir: Path
) -> None:
    doc = interrupted_workflow(pid_dir, items=1)
    doc["nodes"][0]["children"][1] = {
        "id": "ctrl_c",
        "type": "interrupt",
        "params": {"wait_for": str(pid_dir)},
    }
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(doc))
    node_type = ["--node-type", "interrupt=tests.workflow.test_interrupt:Interrupter"]
    err = io.StringIO()
    assert main(["run", str(path), *node_type], stdout=io.StringIO(), stderr=err) == 130
    pids = pids_in(pid_dir)
    assert len(pids) == 2
    wait_for(lambda: all(dead(p) for p in pids), f"the shell and its child {pids} to end")

    again = tmp_path / "again.json"
    again.write_text(
        json.dumps({"nodes": [{"id": "s", "type": "shell", "params": {"cmd": ["echo", "hi"]}}]})
    )
    # Straight from the library, as a notebook would after the CLI's main() was interrupted.
    assert run_workflow(json.loads(again.read_text()))["s"]["stdout"] == "hi\n"
    out = io.StringIO()
    assert main(["run", str(again)], stdout=out, stderr=err) == 0, err.getvalue()
    assert json.loads(out.getvalue())["s"]["stdout"] == "hi\n"


def test_stopped_commands_refuse_to_start_until_reopened(pid_dir: Path) -> None:
    commands = ShellCommands()
    proc = commands.start(sleeper(pid_dir, "a"), stdout=subprocess.DEVNULL)
    wait_for(lambda: bool(pids_in(pid_dir)), "the command's pid file")
    pids = pids_in(pid_dir)
    assert commands.stop() == [proc.pid]
    wait_for(lambda: all(dead(p) for p in pids), f"{pids} to end")
    with pytest.raises(ShellStoppedError, match="not starting"):
        commands.start(["true"])
    commands.reopen()
    assert commands.start(["true"]).wait() == 0


def test_stop_waits_for_commands_being_started_so_none_starts_unseen() -> None:
    commands = ShellCommands()
    started, release = threading.Event(), threading.Event()
    real_popen = subprocess.Popen
    children: list[Any] = []

    def slow_popen(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(SAFETY)
        children.append(real_popen(*args, **kwargs))
        return children[-1]

    refused: list[BaseException] = []
    seen_when_stopped: list[list[Any]] = []

    def starter() -> None:
        try:
            commands.start(["sleep", FOREVER])
        except ShellStoppedError as exc:
            refused.append(exc)

    def stopper() -> None:
        commands.stop(timeout=SAFETY)
        seen_when_stopped.append([child.poll() for child in children])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess, "Popen", slow_popen)
        threads = [threading.Thread(target=starter), threading.Thread(target=stopper)]
        threads[0].start()
        assert started.wait(SAFETY)
        threads[1].start()
        # stop() marks the commands stopped before it looks at them: from here on it must
        # wait for the command being started, not return blind to it (the fault guarded).
        wait_for(lambda: commands._stopped, "stop() to begin")
        release.set()
        for thread in threads:
            thread.join(SAFETY)
    assert len(refused) == 1
    assert seen_when_stopped == [[-signal.SIGKILL]]  # started, and killed, before stop returned
