"""The built-in node types: HTTP, shell, a simulated LLM, and a collector.

Every node here is stateless and deep-copyable: it keeps nothing but ``self.params``
(set per run by ``TemplateAwareNodeWrapper``), opens its connection or process inside
``exec`` and closes it before returning. So a parallel batch can run each item on its own
copy, and a retry starts from nothing.

Each node writes its output keys with ``shared[key] = value``; inside a
``NamespacedNodeWrapper`` they land in ``shared[node_id]``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar, Optional

from pocketflow import Node

from .. import ParabatchError, resolve_template
from .._remote import at_worker_stop
from ._errors import HttpStatusError

__all__ = [
    "MAX_SECONDS",
    "SHELL_COMMANDS",
    "CollectNode",
    "HttpNode",
    "ShellCommandError",
    "ShellCommands",
    "ShellNode",
    "ShellStoppedError",
    "SimulatedLlmNode",
    "kill_process_group",
    "simulated_summary",
]

#: The longest duration (seconds) a node's ``timeout`` or ``latency`` may ask for: one week.
#: Longer is almost surely a mistake, and much longer overflows ``time.sleep``.
MAX_SECONDS = 7 * 24 * 3600

_JSON = Mapping[str, Any]


class _OutputNode(Node):  # type: ignore[misc]
    """prep hands ``exec`` a copy of the params; post writes the dict ``exec`` returned."""

    #: JSON Schema of the node's params, checked when a workflow is validated. Params
    #: holding a ``${...}`` template are checked again by ``exec`` once resolved.
    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {"type": "object"}

    def prep(self, shared: MutableMapping[str, Any]) -> dict[str, Any]:
        return dict(self.params)

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: _JSON) -> str:
        for key, value in exec_res.items():
            shared[key] = value
        return "default"


def _seconds(params: Mapping[str, Any], name: str, default: float, *, zero: bool = False) -> float:
    """A duration param: a finite number > 0 (>= 0 with ``zero``), at most MAX_SECONDS.

    Checked here as well as by the schema: a ``${...}`` param is known only at run time.
    """
    value = params.get(name, default)
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and not (0 <= value <= MAX_SECONDS and (zero or value > 0) and math.isfinite(value)):
        ok = False
    if not ok:
        low = ">= 0" if zero else "> 0"
        raise ValueError(f"{name}={value!r}: must be a number {low} and <= {MAX_SECONDS}")
    return float(value)


class HttpNode(_OutputNode):
    """One HTTP request per run, on a new connection (``urllib.request``, no keep-alive).

    Params: ``url`` (required), ``method`` (default ``GET``), ``timeout`` in seconds
    (default 10), ``headers`` (a dict), ``body`` (a string, or a dict/list sent as JSON).
    Output: ``status``, ``body`` (text) and ``json`` (the parsed body, or ``None`` when the
    body is not JSON). A status of 400 or more raises :class:`HttpStatusError`; a timeout
    or refused connection raises urllib's own error. Proxies follow the usual
    ``http_proxy``/``no_proxy`` environment variables.

    Example:
        >>> node = HttpNode(); node.params = {"url": "http://127.0.0.1:9/x", "timeout": 0}
        >>> try:
        ...     node.run({})
        ... except ValueError as e:
        ...     print(e)
        timeout=0: must be a number > 0 and <= 604800
    """

    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "pattern": "^https?://"},
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": {"type": ["string", "object", "array"]},
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        url = str(params["url"])
        timeout = _seconds(params, "timeout", 10.0)
        headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
        body = params.get("body")
        data = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif body is not None:
            data = str(body).encode()
        method = str(params.get("method", "GET")).upper()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = int(response.status)
                charset = response.headers.get_content_charset() or "utf-8"
                text = response.read().decode(charset, "replace")
        except urllib.error.HTTPError as exc:
            # Read and close the error response here: an HTTPError holds the open socket.
            with contextlib.closing(exc):
                detail = exc.read().decode("utf-8", "replace")
            raise HttpStatusError(exc.code, url, detail) from None
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return {"status": status, "body": text, "json": parsed}


class ShellCommands:
    """The shell commands running now, each in its own session; :meth:`stop` ends them all.

    Each command starts in a new session (so a process group of its own, out of reach of
    the terminal's Ctrl-C) and is listed here while it runs. :meth:`stop` kills every
    listed process group, children and grandchildren alike, and refuses new commands
    until :meth:`reopen`: the CLI calls it on Ctrl-C, so no command outlives the run.
    Commands start in parallel; a stop waits for those being started (they are counted
    under the lock), so none is started unseen by it.

    Example:
        >>> commands = ShellCommands()
        >>> proc = commands.start(["sleep", "30"])
        >>> commands.stop() == [proc.pid], proc.wait() < 0
        (True, True)
        >>> commands.start(["true"])
        Traceback (most recent call last):
          ...
        parabatch.workflow._nodes.ShellStoppedError: shell commands were stopped (interrupted); not starting ['true']
        >>> commands.reopen(); commands.start(["true"]).wait()
        0
    """  # noqa: E501

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._none_starting = threading.Condition(self._lock)
        self._running: dict[int, subprocess.Popen[str]] = {}
        self._starting = 0
        self._stopped = False
        self._main_starting = False
        self._deferred = False

    def start(self, cmd: list[str], **popen: Any) -> subprocess.Popen[str]:
        """``subprocess.Popen(cmd, **popen)`` in a new session, listed until :meth:`done`."""
        main = threading.current_thread() is threading.main_thread()
        with self._lock:
            if self._stopped:
                raise ShellStoppedError(
                    f"shell commands were stopped (interrupted); not starting {cmd!r:.200}"
                )
            self._starting += 1  # stop() waits for this start to list its command
        proc: Optional[subprocess.Popen[str]] = None
        self._main_starting = main
        try:
            proc = subprocess.Popen(cmd, start_new_session=True, **popen)
        finally:
            self._main_starting = False
            with self._lock:
                self._starting -= 1
                if proc is not None:
                    self._running[proc.pid] = proc
                stopped = self._stopped
                self._none_starting.notify_all()
        if stopped:  # stop() came while this command was starting
            kill_process_group(proc)
            proc.wait()
            self.done(proc)
            raise ShellStoppedError(f"shell commands were stopped (interrupted); {cmd!r:.200}")
        if main and self._deferred:
            self._deferred = False
            raise KeyboardInterrupt  # the Ctrl-C that landed while the command was starting
        return proc

    def may_interrupt(self) -> bool:
        """For a SIGINT handler: False while the main thread is starting a command.

        A ``KeyboardInterrupt`` inside ``Popen`` (it waits for the child's ``exec``) would
        leave a started child unlisted, so nothing could stop it. The handler then returns
        without raising, and :meth:`start` raises ``KeyboardInterrupt`` once the child is
        listed.
        """
        if self._main_starting:
            self._deferred = True
            return False
        return True

    def done(self, proc: subprocess.Popen[str]) -> None:
        """Forget ``proc`` (it has ended and been waited for)."""
        with self._lock:
            self._running.pop(proc.pid, None)

    def stop(self, *, timeout: float = 5.0) -> list[int]:
        """Kill the process group of every running command; refuse new ones. Returns the pids.

        Safe to call from a signal handler: the lock, and the commands being started, are
        waited for at most ``timeout`` seconds each.
        """
        self._stopped = True
        locked = self._lock.acquire(timeout=timeout)
        try:
            if locked:  # commands being started are listed once Popen returns: wait for them
                self._none_starting.wait_for(lambda: self._starting == 0, timeout)
            running = list(self._running.values())
            for proc in running:
                kill_process_group(proc)
        finally:
            if locked:
                self._lock.release()
        for proc in running:  # reap them: a killed group's leader is gone once this returns
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        return [proc.pid for proc in running]

    def reopen(self) -> None:
        """Accept commands again after :meth:`stop`."""
        with self._lock:
            self._stopped = False


class ShellStoppedError(ParabatchError, RuntimeError):
    """Raised by a shell node asked to start a command after :meth:`ShellCommands.stop`."""


def kill_process_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group ``proc`` leads (it was started in a new session).

    Example:
        >>> proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
        >>> kill_process_group(proc); proc.wait() == -signal.SIGKILL
        True
    """
    if proc.returncode is not None:
        return  # reaped: its pid, so its group id, may already belong to someone else
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows has no process groups to kill
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


#: The shell commands of every :class:`ShellNode` in this process.
SHELL_COMMANDS = ShellCommands()
# In a process pool's worker, a stop from the coordinator (its Ctrl-C) ends them too.
at_worker_stop(SHELL_COMMANDS.stop)


class ShellNode(_OutputNode):
    """One command per run, in a process group of its own: no shell, a list of arguments.

    Params: ``cmd`` (a list of strings, required), ``stdin`` (text; any other value is
    sent as JSON; default: no input), ``timeout`` in seconds (default 30, at most
    :data:`MAX_SECONDS`), ``check`` (default true: a non-zero exit raises
    :class:`ShellCommandError`, a ``subprocess.CalledProcessError`` whose message ends
    with the command's stderr). Output: ``stdout``, ``stderr`` (UTF-8, invalid
    bytes replaced), ``returncode``.

    The command starts in a new session, listed in :data:`SHELL_COMMANDS`; on a timeout
    its whole process group is killed (grandchildren too), and so it is when the run is
    interrupted (:meth:`ShellCommands.stop`).

    Example:
        >>> node = ShellNode(); node.params = {"cmd": ["wc", "-w"], "stdin": "a b c"}
        >>> shared = {}; _ = node.run(shared); int(shared["stdout"])
        3
    """

    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "cmd": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "stdin": {},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
            "check": {"type": "boolean"},
        },
        "required": ["cmd"],
        "additionalProperties": False,
    }

    def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        cmd = params["cmd"]
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise ValueError(f"cmd={cmd!r}: must be a non-empty list of strings")
        timeout = _seconds(params, "timeout", 30.0)
        stdin = params.get("stdin")
        if stdin is not None and not isinstance(stdin, str):
            stdin = json.dumps(stdin)
        proc = SHELL_COMMANDS.start(
            cmd,
            # Without input, the child must not read (or wait on) the parent's stdin.
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
        )
        try:
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_process_group(proc)
                out, err = _drain(proc)
                raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
            except BaseException:
                kill_process_group(proc)
                _drain(proc)
                raise
        finally:
            SHELL_COMMANDS.done(proc)
        if params.get("check", True) and proc.returncode != 0:
            raise ShellCommandError(proc.returncode, cmd, out, err)
        return {"stdout": out, "stderr": err, "returncode": proc.returncode}


class ShellCommandError(subprocess.CalledProcessError):
    """A shell node's command exited non-zero: the message ends with its stderr's last
    500 characters, so a failure reported anywhere (the CLI, a batch's error record) says
    why, not only that it failed.

    Example:
        >>> print(ShellCommandError(2, ["ls", "nope"], "", "ls: nope: No such file\\n"))
        Command '['ls', 'nope']' returned non-zero exit status 2; stderr: ls: nope: No such file
    """

    def __str__(self) -> str:
        text = super().__str__().rstrip(".")
        tail = self.stderr.strip() if isinstance(self.stderr, str) else ""
        if len(tail) > 500:
            tail = "..." + tail[-500:]
        return f"{text}; stderr: {tail}" if tail else f"{text}."

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.returncode, self.cmd, self.output, self.stderr))


def _drain(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """What a killed command had written; bounded, since a process outside its group (one
    that made its own session) may still hold the pipes open."""
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "", ""


def simulated_summary(prompt: str, max_words: int = 12) -> str:
    """The simulated LLM's answer: a pure function of the prompt.

    The prompt's first ``max_words`` words after its first ``:`` (the whole prompt if it
    has none), prefixed with ``"Summary:"``, and ``"..."`` when words were cut.

    Example:
        >>> simulated_summary("Summarise: the quick brown fox jumps", max_words=3)
        'Summary: the quick brown ...'
    """
    _, colon, rest = prompt.partition(":")
    words = (rest if colon else prompt).split()
    cut = " ..." if len(words) > max_words else ""
    return " ".join(["Summary:", *words[:max_words]]) + cut


class SimulatedLlmNode(_OutputNode):
    """A stand-in for an LLM call: sleeps ``latency`` seconds, answers deterministically.

    Params: ``prompt`` (required), ``model`` (default ``"sim-1"``), ``latency`` in seconds
    (default 0), ``max_words`` (default 12). Output: ``summary`` (see
    :func:`simulated_summary`) and ``llm_usage = {"model", "input_tokens",
    "output_tokens"}``, where a token is a whitespace-separated word. A batch node turns
    ``llm_usage`` into an ``__llm_calls__`` record; so does a compiled workflow for a node
    outside a batch.

    Example:
        >>> node = SimulatedLlmNode(); node.params = {"prompt": "Summarise: a b c"}
        >>> shared = {}; _ = node.run(shared)
        >>> shared["summary"], shared["llm_usage"]
        ('Summary: a b c', {'model': 'sim-1', 'input_tokens': 4, 'output_tokens': 4})
    """

    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "prompt": {"type": "string"},
            "model": {"type": "string", "minLength": 1},
            "latency": {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
            "max_words": {"type": "integer", "minimum": 1},
        },
        "required": ["prompt"],
        "additionalProperties": False,
    }

    def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        prompt = params["prompt"]
        if not isinstance(prompt, str):
            prompt = json.dumps(prompt)
        latency = _seconds(params, "latency", 0, zero=True)
        if latency > 0:
            time.sleep(latency)
        summary = simulated_summary(prompt, int(params.get("max_words", 12)))
        usage = {
            "model": str(params.get("model", "sim-1")),
            "input_tokens": len(prompt.split()),
            "output_tokens": len(summary.split()),
        }
        return {"summary": summary, "llm_usage": usage}


class CollectNode(_OutputNode):
    """Pick one field out of each item of a list, and join the picks into text.

    Params: ``items`` (a list, usually ``"${batch_id.results}"``), ``field`` (a path into
    each item, as in a template: ``summary``, ``json.title``; default: the item itself),
    ``join`` (the separator of ``text``, default a newline). ``None`` items (the results of
    failed batch items) are skipped. Output: ``values`` (the picks), ``count`` and ``text``
    (non-string picks written as JSON).

    Example:
        >>> node = CollectNode()
        >>> node.params = {"items": [{"s": "a"}, None, {"s": "b"}], "field": "s", "join": "+"}
        >>> shared = {}; _ = node.run(shared); shared["text"], shared["count"]
        ('a+b', 2)
    """

    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "items": {"type": "array"},
            "field": {"type": "string", "minLength": 1},
            "join": {"type": "string"},
        },
        "required": ["items"],
        "additionalProperties": False,
    }

    def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        items = params["items"]
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"items={items!r:.80}: must be a list")
        field = params.get("field")
        values = [
            item if field is None else resolve_template("${" + str(field) + "}", item)
            for item in items
            if item is not None
        ]
        join = str(params.get("join", "\n"))
        text = join.join(v if isinstance(v, str) else json.dumps(v) for v in values)
        return {"values": values, "count": len(values), "text": text}
