"""``python -m parabatch``: validate or run a workflow file, print its results as JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, TextIO

from ._errors import NodeTypeError, WorkflowError
from ._jsonable import to_jsonable
from ._progress import ProgressBar
from ._registry import NodeRegistry, default_registry
from ._validate import load_workflow

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_INVALID", "EXIT_OK", "main"]

#: Exit codes: the workflow ran; a node failed; the workflow file or the command is invalid;
#: Ctrl-C (the shell's convention, 128 + SIGINT).
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Invalid(Exception):
    """A usage problem found after parsing (bad --shared file, bad --node-type)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parabatch",
        description="Run a parabatch workflow (JSON) and print the final shared store as JSON.",
        epilog="Exit codes: 0 ok, 1 the workflow failed, 2 invalid workflow or usage, 130 Ctrl-C.",
    )
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
    run.add_argument("--output", type=Path, help="write the results here instead of stdout")
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
    return parser


def _registry(specs: Sequence[str]) -> NodeRegistry:
    registry = default_registry()
    for spec in specs:
        name, eq, target = spec.partition("=")
        module, colon, attr = target.partition(":")
        if not (eq and colon and name and module and attr):
            raise _Invalid(f"--node-type {spec!r}: expected NAME=MODULE:ATTR")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise _Invalid(f"--node-type {spec!r}: {type(exc).__name__}: {exc}") from None
        try:
            registry.register(name, factory, replace=True)
        except NodeTypeError as exc:
            raise _Invalid(f"--node-type {spec!r}: {exc}") from None
    return registry


def _initial_shared(path: Optional[Path]) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        shared = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _Invalid(f"--shared {str(path)!r}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _Invalid(f"--shared {str(path)!r}: not JSON: {exc}") from None
    if not isinstance(shared, dict):
        raise _Invalid(f"--shared {str(path)!r}: must hold a JSON object, not {shared!r:.40}")
    return shared


def _write(results: Any, output: Optional[Path], stdout: TextIO) -> None:
    text = json.dumps(to_jsonable(results), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """Run the command line; return the exit code (argparse exits 2 on bad usage).

    Example:
        >>> import io, json, tempfile, os
        >>> wf = {"nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "x: ${q}"}}]}
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        ...     json.dump(wf, f)
        >>> out = io.StringIO()
        >>> main(["validate", f.name], stdout=out), out.getvalue().strip()
        (0, 'ok: 1 node(s), start ask')
        >>> main(["run", f.name, "--no-progress"], stdout=out, stderr=io.StringIO())
        1
        >>> os.remove(f.name)
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    args = _parser().parse_args(argv)
    try:
        registry = _registry(args.node_type)
        workflow = load_workflow(args.workflow, registry=registry)
        if args.command == "validate":
            count = len(workflow["nodes"])
            out.write(f"ok: {count} node(s), start {workflow['start']}\n")
            return EXIT_OK
        shared = _initial_shared(args.shared)
    except (WorkflowError, _Invalid) as exc:
        err.write(f"parabatch: {exc}\n")
        return EXIT_INVALID

    show = args.progress if args.progress is not None else err.isatty()
    # Imported here: ``validate`` needs no executor, pocketflow Flow, or threads.
    from ._compile import run_workflow

    try:
        run_workflow(
            workflow,
            shared,
            registry=registry,
            progress=ProgressBar(err) if show else None,
            sequential=args.sequential,
        )
    except KeyboardInterrupt:
        err.write("parabatch: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        # A node failed: report it, and still write what the workflow got done.
        err.write(f"parabatch: workflow failed: {type(exc).__name__}: {exc}\n")
        _write(shared, args.output, out)
        return EXIT_FAILED
    _write(shared, args.output, out)
    return EXIT_OK
