"""``python -m parabatch``: validate or run a workflow file, print its results as JSON."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, TextIO, cast

from .. import __version__
from ._errors import NodeTypeError, WorkflowError
from ._jsonable import to_jsonable
from ._nodes import SHELL_COMMANDS
from ._progress import ProgressBar
from ._registry import GROUP_TYPE, NodeRegistry, default_registry
from ._validate import load_workflow, read_json

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_INVALID", "EXIT_OK", "main"]

#: Exit codes: the workflow ran; a node failed (or the results could not be written where
#: asked); the workflow file or the command is invalid; Ctrl-C (the shell's 128 + SIGINT).
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

_CALLS_KEY = "__llm_calls__"

#: How deep the results are written when they are too deep to write whole (a server's
#: answer nested 900 deep): deeper values are replaced by a placeholder.
_DEEPEST = 100

#: The longest error message printed whole (a server's page, a command's whole output).
_LONGEST = 2000


class _Invalid(Exception):
    """A usage problem found after parsing (bad --shared file, bad --node-type, --output)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parabatch",
        description="Run a parabatch workflow (JSON) and print the final shared store as JSON.",
        epilog="Exit codes: 0 ok; 1 a node failed, or the results could not be written where "
        "asked (stderr says where they went); 2 invalid workflow or usage, nothing ran; 130 "
        "Ctrl-C (143 SIGTERM, 129 SIGHUP): shell commands and worker processes stopped, what "
        "finished written.",
    )
    parser.add_argument("--version", action="version", version=f"parabatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="validate and run a workflow")
    check = sub.add_parser("validate", help="validate a workflow; print its problems")
    for p in (run, check):
        p.add_argument("workflow", type=Path, help="the workflow JSON file")
        p.add_argument(
            "--node-type",
            action="append",
            default=[],
            metavar="NAME=MODULE:ATTR",
            help="register a node type (a pocketflow Node class) before validating; repeatable",
        )
    run.add_argument("--shared", type=Path, help="a JSON object: the initial shared store")
    run.add_argument(
        "--output",
        help="write the results to this file (replaced whole once the run ends) "
        "instead of stdout; its directory must exist",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: only when stderr is a terminal)",
    )
    run.add_argument(
        "--sequential",
        action="store_true",
        help="run every batch and group one item at a time (for comparison)",
    )
    run.add_argument(
        "--executor",
        default="threads",
        type=_executor_spec,
        metavar="threads|processes|dask[=ADDRESS]",
        help="where batch items and group children run: threads (default), a process pool, "
        "or a dask cluster (a local one, or the scheduler at ADDRESS, tcp://host:8786); "
        "see docs/scaleout.md",
    )
    return parser


def _executor_spec(value: str) -> str:
    from ..executors import check_executor_spec

    try:
        check_executor_spec(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _registry(specs: Sequence[str]) -> NodeRegistry:
    registry = default_registry()
    for spec in specs:
        name, eq, target = spec.partition("=")
        module, colon, attr = target.partition(":")
        if not (eq and colon and name and module and attr):
            raise _Invalid(f"--node-type {spec!r}: expected NAME=MODULE:ATTR")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # any error importing the user's module is a usage error
            raise _Invalid(f"--node-type {spec!r}: {_describe(exc)}") from None
        try:
            registry.register(name, factory, replace=True)
        except NodeTypeError as exc:
            raise _Invalid(f"--node-type {spec!r}: {exc}") from None
    return registry


def _check_factories(workflow: dict[str, Any], registry: NodeRegistry) -> None:
    """Build each node once before anything runs: a factory that fails is a usage error."""
    checked: set[str] = set()
    for node_id, node_type in _task_types(workflow["nodes"]):
        if node_type in checked:
            continue
        checked.add(node_type)
        try:
            node = registry[node_type].factory()
        except Exception as exc:
            raise _Invalid(
                f"node type {node_type!r} (for node {node_id!r}): its factory raised "
                f"{_describe(exc)}"
            ) from None
        if not callable(getattr(node, "_run", None)):
            raise _Invalid(
                f"node type {node_type!r} (for node {node_id!r}): its factory returned "
                f"{_short_repr(node)}, not a pocketflow node"
            )


def _task_types(nodes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for node in nodes:
        if node["type"] == GROUP_TYPE:
            out.extend(_task_types(node["children"]))
        else:
            out.append((node["id"], node["type"]))
    return out


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _initial_shared(path: Optional[Path], workflow: dict[str, Any]) -> dict[str, Any]:
    if path is None:
        return {}
    where = f"--shared {str(path)!r}"
    shared = read_json(path, where, _Invalid)
    if not isinstance(shared, dict):
        raise _Invalid(f"{where}: must hold a JSON object, not {_short(shared)}")
    calls = shared.get(_CALLS_KEY, [])
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        # Every node appends its call records here; anything else fails mid-run.
        raise _Invalid(f"{where}: {_CALLS_KEY} must be a list of call records (objects)")
    for node_id in sorted(_all_ids(workflow)):
        if node_id in shared and not isinstance(shared[node_id], dict):
            raise _Invalid(
                f"{where}: key {node_id!r} is also a node id; the node's outputs go there "
                f"and would replace {_short(shared[node_id])} (rename the key)"
            )
    if _CALLS_KEY in shared:
        from .. import CallLog  # the run appends from several threads: keep the lock

        shared[_CALLS_KEY] = CallLog(calls)
    return shared


def _all_ids(workflow: dict[str, Any]) -> set[str]:
    return {n["id"] for n in workflow["nodes"]} | set(_groups(workflow))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the output -----------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(name: Optional[str], workflow_file: Path) -> Optional[Path]:
    """Refuse, before anything runs, an --output the results could not be written to."""
    if name is None:
        return None
    path = Path(name)
    where = f"--output {name!r}"
    if path.is_dir():
        raise _Invalid(f"{where}: is a directory (give a file name)")
    if name.endswith(("/", os.sep)):
        raise _Invalid(f"{where}: names a directory (give a file name)")
    if _same_file(path, workflow_file):
        raise _Invalid(f"{where}: is the workflow file itself")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        return path  # /dev/stdout, a pipe: written in place
    parent = path.resolve().parent if path.is_symlink() else path.parent
    if not parent.exists():
        raise _Invalid(f"{where}: no such directory {str(parent)!r}")
    if not parent.is_dir():
        raise _Invalid(f"{where}: {str(parent)!r} is not a directory")
    try:
        # The results are written to a file beside the target, then renamed over it.
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".parabatch-", suffix=".tmp")
    except OSError as exc:
        raise _Invalid(f"{where}: cannot write in {str(parent)!r}: {_reason(exc)}") from None
    os.close(fd)
    os.remove(probe)
    return path


def _reason(exc: OSError) -> str:
    return exc.strerror or _describe(exc)


def _json_text(results: Any, encoding: Optional[str]) -> str:
    value = _jsonable(results)
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    except RecursionError:
        # Deeper than the encoder recurses (PyPy's takes two frames a level, where the
        # conversion took one): cut deep values at _DEEPEST rather than lose every result.
        value = _safe_jsonable(results)
        text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    try:
        text.encode(encoding or "utf-8")
    except (UnicodeError, LookupError):
        # Lone surrogates, or a stream that cannot hold every character: \u escapes can.
        text = json.dumps(value, indent=2, ensure_ascii=True) + "\n"
    return text


def _jsonable(results: Any) -> Any:
    for _ in range(3):
        try:
            return to_jsonable(results)
        except RuntimeError:  # a dict changed size: an interrupted run's item still ending
            continue
        except Exception:  # a value whose str() or repr() raises: keep everything else
            break
    return _safe_jsonable(results)


def _key(key: Any) -> str:
    try:
        return str(key)
    except Exception:
        return f"<unprintable {type(key).__name__}>"


def _safe_jsonable(value: Any, depth: int = 0) -> Any:
    """``to_jsonable`` value by value: what fails becomes a placeholder, not an error."""
    if depth > _DEEPEST:
        return f"<nested more than {_DEEPEST} deep>"
    if isinstance(value, Mapping):
        return {_key(k): _safe_jsonable(v, depth + 1) for k, v in list(value.items())}
    if isinstance(value, (list, tuple)):
        return [_safe_jsonable(v, depth + 1) for v in list(value)]
    try:
        return to_jsonable(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _write_file(path: Path, text: str) -> None:
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    path = path.resolve()  # through a symlink: replace the file, not the link
    # Write beside the target and rename: a failed write never leaves half a file, nor
    # destroys the previous results. Made with mode 0o666 less the umask, as open() would
    # (mkstemp's 0o600 would hide the results from the group), or the old file's mode.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            shutil.copymode(path, temp)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def _emit(results: Any, output: Optional[Path], out: TextIO, err: TextIO) -> bool:
    """Write the results where asked; if that fails, somewhere safe, and say where."""
    text = _json_text(results, "utf-8" if output else getattr(out, "encoding", None))
    where = "stdout" if output is None else str(output)
    try:
        if output is None:
            out.write(text)
            out.flush()
        else:
            _write_file(output, text)
        return True
    except OSError as exc:
        reason = _reason(exc)
    try:
        fd, saved = tempfile.mkstemp(prefix="parabatch-results-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        err.write(f"parabatch: cannot write the results to {where}: {reason}; here they are\n")
        if output is not None:
            with contextlib.suppress(OSError):
                out.write(text)
        else:
            err.write(text)
        return False
    err.write(f"parabatch: cannot write the results to {where}: {reason}; saved in {saved}\n")
    return False


# -- the failure message --------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """``TypeName: message``, whatever the exception's ``__str__`` does; control
    characters escaped, so a message cannot rewrite the terminal."""
    try:
        text = str(exc)
    except Exception:
        text = f"<unprintable {type(exc).__name__}>"
    if len(text) > _LONGEST:
        text = f"{text[:_LONGEST]}... ({len(text) - _LONGEST} more characters)"
    text = "".join(
        c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _groups(workflow: dict[str, Any]) -> dict[str, str]:
    """Child id -> the id of the parallel group it is in."""
    parent: dict[str, str] = {}

    def walk(nodes: list[dict[str, Any]], group: Optional[str]) -> None:
        for node in nodes:
            if group is not None:
                parent[node["id"]] = group
            if node["type"] == GROUP_TYPE:
                walk(node["children"], node["id"])

    walk(workflow["nodes"], None)
    return parent


def _failed_node(exc: BaseException, workflow: dict[str, Any], shared: Any) -> Optional[str]:
    """The id of the innermost workflow node the exception went through, if any."""
    groups = _groups(workflow)
    ids = _all_ids(workflow)
    found: Optional[str] = None
    tb = exc.__traceback__
    while tb is not None:
        holder = tb.tb_frame.f_locals.get("self")
        node_id = getattr(holder, "node_id", None)
        if type(holder).__module__.startswith("parabatch.") and node_id in ids:
            found = node_id
        tb = tb.tb_next
    # A group names its failed child in its error record, holding this very exception.
    while found is not None:
        record = _error_record(shared, found, exc)
        child = record.get("child") if record else None
        if not (isinstance(child, str) and groups.get(child) == found):
            break
        found = child
    return found


def _error_record(shared: Any, node_id: str, exc: BaseException) -> Optional[dict[str, Any]]:
    space = shared.get(node_id) if isinstance(shared, Mapping) else None
    errors = space.get("errors") if isinstance(space, Mapping) else None
    for record in errors if isinstance(errors, list) else []:
        if isinstance(record, dict) and record.get("exception") is exc:
            return record
    return None


def _failure(exc: BaseException, workflow: dict[str, Any], shared: Any) -> str:
    node_id = _failed_node(exc, workflow, shared)
    if node_id is None:
        return f"workflow failed: {_describe(exc)}"
    where = f"node {node_id!r}"
    group = _groups(workflow).get(node_id)
    if group is not None:
        where += f" (in parallel group {group!r})"
    record = _error_record(shared, node_id, exc)
    if record is not None and isinstance(record.get("index"), int) and "child" not in record:
        where += f" (item {record['index']})"
    return f"{where} failed: {_describe(exc)}"


class _LineEnd:
    """The progress bars' stream: forwards writes, and can end a line a bar left open."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.open = False

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        if text:
            self.open = not text.endswith("\n")
        return written

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def end_line(self) -> None:
        """Start a new line if a bar was cut short (a failure, Ctrl-C): messages follow."""
        if self.open:
            self.stream.write("\n")
            self.open = False


# -- main -----------------------------------------------------------------------------------


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """Run the command line; return the exit code (argparse exits 2 on bad usage).

    On Ctrl-C (``KeyboardInterrupt``) every running shell command's process group is
    killed (with ``--executor processes`` the worker processes are stopped, and the
    commands their items started), what finished is written as usual, and the code is
    130; ``python -m parabatch`` then exits at once, without waiting for items still
    running.

    Example:
        >>> import io, json, tempfile, os
        >>> wf = {"nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "x: ${q}"}}]}
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        ...     json.dump(wf, f)
        >>> out, err = io.StringIO(), io.StringIO()
        >>> main(["validate", f.name], stdout=out), out.getvalue().strip()
        (0, 'ok: 1 node(s), start ask')
        >>> main(["run", f.name, "--no-progress"], stdout=out, stderr=err)
        1
        >>> print(err.getvalue()[:52])
        parabatch: node 'ask' failed: TemplateError: ${q}: k
        >>> os.remove(f.name)
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    args = _parser().parse_args(argv)
    try:
        registry = _registry(args.node_type)
        workflow = load_workflow(args.workflow, registry=registry)
        _check_factories(workflow, registry)
        if args.command == "validate":
            count = len(workflow["nodes"])
            out.write(f"ok: {count} node(s), start {workflow['start']}\n")
            return EXIT_OK
        shared = _initial_shared(args.shared, workflow)
        output = _check_output(args.output, args.workflow)
    except (WorkflowError, _Invalid) as exc:
        err.write(f"parabatch: {exc}\n")
        return EXIT_INVALID

    show = args.progress if args.progress is not None else err.isatty()
    bar_stream = _LineEnd(err)
    # Imported here: ``validate`` needs no executor, pocketflow Flow, or threads.
    from ..executors import open_executor
    from ._compile import run_workflow

    try:
        opened = open_executor(args.executor)
    except Exception as exc:  # dask not installed, a scheduler that does not answer
        err.write(f"parabatch: --executor {args.executor}: {_describe(exc)}\n")
        return EXIT_INVALID
    code = EXIT_INTERRUPTED  # until the run says otherwise
    try:
        run_workflow(
            workflow,
            shared,
            registry=registry,
            progress=ProgressBar(cast(TextIO, bar_stream)) if show else None,
            sequential=args.sequential,
            executor=opened.factory,
        )
        code = EXIT_OK
    except KeyboardInterrupt:
        SHELL_COMMANDS.stop()
        bar_stream.end_line()
        err.write("parabatch: interrupted; writing what finished\n")
        code = EXIT_INTERRUPTED
    except Exception as exc:
        # A node failed: report it, and still write what the workflow got done.
        bar_stream.end_line()
        err.write(f"parabatch: {_failure(exc, workflow, shared)}\n")
        code = EXIT_FAILED
    finally:
        # After Ctrl-C, items still running in worker processes are not waited for.
        opened.close(wait=code != EXIT_INTERRUPTED)
    written = _emit(shared, output, out, err)
    # Stopped until the results were written; the process may go on (a library caller).
    SHELL_COMMANDS.reopen()
    return EXIT_FAILED if not written and code == EXIT_OK else code
