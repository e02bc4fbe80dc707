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
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar

from pocketflow import Node

from .. import resolve_template
from ._errors import HttpStatusError

__all__ = ["CollectNode", "HttpNode", "ShellNode", "SimulatedLlmNode", "simulated_summary"]

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


def _positive(params: Mapping[str, Any], name: str, default: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a number > 0")
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
        timeout=0: must be a number > 0
    """

    PARAMS_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "pattern": "^https?://"},
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": {"type": ["string", "object", "array"]},
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        url = str(params["url"])
        timeout = _positive(params, "timeout", 10.0)
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


class ShellNode(_OutputNode):
    """One ``subprocess.run`` per run: no shell, the command is a list of arguments.

    Params: ``cmd`` (a list of strings, required), ``stdin`` (text; any other value is
    sent as JSON; default: no input), ``timeout`` in seconds (default 30), ``check``
    (default true: a non-zero exit raises ``subprocess.CalledProcessError``).
    Output: ``stdout``, ``stderr``, ``returncode``.

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
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "check": {"type": "boolean"},
        },
        "required": ["cmd"],
        "additionalProperties": False,
    }

    def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        cmd = params["cmd"]
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise ValueError(f"cmd={cmd!r}: must be a non-empty list of strings")
        timeout = _positive(params, "timeout", 30.0)
        stdin = params.get("stdin")
        if stdin is not None and not isinstance(stdin, str):
            stdin = json.dumps(stdin)
        proc = subprocess.run(
            cmd,
            input=stdin,
            # Without input, the child must not read (or wait on) the parent's stdin.
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if params.get("check", True) and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return {"stdout": proc.stdout, "stderr": proc.stderr, "returncode": proc.returncode}


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
            "latency": {"type": "number", "minimum": 0},
            "max_words": {"type": "integer", "minimum": 1},
        },
        "required": ["prompt"],
        "additionalProperties": False,
    }

    def exec(self, params: dict[str, Any]) -> dict[str, Any]:
        prompt = params["prompt"]
        if not isinstance(prompt, str):
            prompt = json.dumps(prompt)
        latency = float(params.get("latency", 0))
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
