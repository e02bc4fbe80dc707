"""``python -m parabatch.testing``: verify a batch node, or replay one of its counterexamples.

Usage::

    python -m parabatch.testing --version
    python -m parabatch.testing verify package.module:Factory [--strategy random|pct|dfs|stress]
        [--budget N] [--seed S] [--json out.json] [--no-trace] [--progress N]
    python -m parabatch.testing replay package.module:Factory --scenario JSON --schedule STR

``verify`` prints the outcome table, the verdict and the first counterexample with two lines
that replay it (Python, and this command line). ``replay`` runs one scenario under one
schedule again and prints the failure with its trace. A thin layer over
:func:`parabatch.testing.verify_batch_node` and :func:`parabatch.testing.replay_scenario`;
like them it is not sound: a pass says no FORBIDDEN outcome was seen in the schedules run.

Exit status: 0 no FORBIDDEN outcome (``replay``: the run passes); 1 a FORBIDDEN outcome
(``replay``: it still fails); 2 a usage error (bad arguments, a factory that does not import).

Example (pytest skips ``__main__.py`` when collecting doctests, so
``tests/testing/test_verify.py`` runs these):
    >>> import io
    >>> out = io.StringIO()
    >>> main(["verify", "parabatch:PflowBatchNode", "--budget", "5", "--seed", "1"], stdout=out)
    0
    >>> out.getvalue().splitlines()[0]
    'verify parabatch:PflowBatchNode: random, seed=1, 5 schedules over 5 scenarios'
    >>> err = io.StringIO()
    >>> main(["verify", "no_such_module:Node"], stderr=err)
    2
    >>> err.getvalue().startswith("python -m parabatch.testing: error: factory='no_such_module:")
    True
    >>> "cannot import module 'no_such_module'" in err.getvalue()
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional, TextIO, Union

import parabatch

from ._replay import PROG, scenario_line, shell_line
from ._strategies import parse_schedule
from ._verify import (
    Scenario,
    VerifyReport,
    default_traced,
    load_factory,
    replay_scenario,
    verify_batch_node,
)

__all__ = ["EXIT_FORBIDDEN", "EXIT_OK", "EXIT_USAGE", "main"]

#: Exit codes: nothing FORBIDDEN; a FORBIDDEN outcome (or a replay that still fails); usage.
EXIT_OK, EXIT_FORBIDDEN, EXIT_USAGE = 0, 1, 2


class _Usage(Exception):
    """A usage problem found after parsing: a factory that does not load, a bad scenario."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Verify a batch node under controlled schedules, or replay a counterexample.",
        epilog="Exit codes: 0 no FORBIDDEN outcome, 1 a FORBIDDEN outcome, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"parabatch {parabatch.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser(
        "verify", help="run drawn scenarios under controlled schedules; print the outcome table"
    )
    replay = sub.add_parser("replay", help="replay one counterexample; print its trace")
    for p in (verify, replay):
        p.add_argument(
            "factory",
            metavar="package.module:Factory",
            help="a callable with PflowBatchNode's constructor, e.g. parabatch:PflowBatchNode",
        )
        p.add_argument(
            "--no-trace",
            action="store_true",
            help="do not make every line of the factory's module and of the per-item code "
            "a scheduling point",
        )
    verify.add_argument("--strategy", choices=["random", "pct", "dfs", "stress"], default="random")
    verify.add_argument(
        "--budget",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="schedules in all (dfs: the cap per scenario); default 1000",
    )
    verify.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seeds scenarios and schedules"
    )
    verify.add_argument(
        "--json", metavar="PATH", help="also write the report as JSON (VerifyReport.to_dict)"
    )
    verify.add_argument(
        "--progress",
        type=_positive_int,
        metavar="N",
        help="print a progress line to stderr every N schedules",
    )
    replay.add_argument("--scenario", required=True, metavar="JSON", help="Scenario.to_json()")
    replay.add_argument(
        "--schedule", required=True, metavar="STR", help="the counterexample's schedule string"
    )
    return parser


def _load(ref: str) -> Callable[..., Any]:
    """The factory ``ref`` names, or a :class:`_Usage` that says which part failed."""
    module = ref.partition(":")[0]
    try:
        return load_factory(ref)
    except (ValueError, TypeError) as exc:  # load_factory's own messages name factory=...
        raise _Usage(str(exc)) from None
    except ImportError as exc:
        raise _Usage(f"factory={ref!r}: cannot import module {module!r}: {exc}") from None
    except AttributeError as exc:
        raise _Usage(f"factory={ref!r}: {exc}") from None
    except Exception as exc:  # the module itself failed while importing
        raise _Usage(
            f"factory={ref!r}: importing {module!r} raised {type(exc).__name__}: {exc}"
        ) from None


def _counting(
    factory: Callable[..., Any], every: int, total: Optional[int], err: TextIO
) -> Callable[..., Any]:
    """``factory``, printing a line to ``err`` every ``every`` calls (one call per schedule).

    Counting calls of the factory needs no hook in ``verify_batch_node``. ``__wrapped__``
    keeps ``inspect.signature`` (whether the subject accepts ``progress=``) the factory's own.
    """
    count = 0
    start = time.perf_counter()
    of = f"/{total:,}" if total is not None else ""

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count % every == 0:
            elapsed = time.perf_counter() - start
            err.write(f"{PROG}: {count:,}{of} schedules, {elapsed:.1f} s\n")
            err.flush()
        return factory(*args, **kwargs)

    counted.__wrapped__ = factory  # type: ignore[attr-defined]
    return counted


def _verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    factory = _load(args.factory)
    sink = None
    if args.json:
        try:  # opened before the run, so a bad path fails at once, not after it
            sink = open(args.json, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise _Usage(f"--json {args.json!r}: {exc.strerror or exc}") from None
    try:
        # Named explicitly, so the subject's name and traced module stay the factory's own
        # when --progress hands verify_batch_node a counting wrapper instead.
        module = getattr(factory, "__module__", None)
        trace: Union[bool, list[str]] = False if args.no_trace else list(default_traced(module))
        subject = factory
        if args.progress:
            total = None if args.strategy == "dfs" else args.budget
            subject = _counting(factory, args.progress, total, err)
        report: VerifyReport = verify_batch_node(
            subject,
            strategy=args.strategy,
            budget=args.budget,
            seed=args.seed,
            trace=trace,
            name=args.factory,
        )
        # As verify_batch_node does: stress runs free threads, traced by nobody.
        traced = tuple(trace) if isinstance(trace, list) and args.strategy != "stress" else ()
        report.counterexamples = [
            dataclasses.replace(
                ce, replay=scenario_line(args.factory, ce.scenario.to_json(), ce.schedule, traced)
            )
            for ce in report.counterexamples
        ]
        out.write(report.format() + "\n")
        if report.counterexamples:
            ce = report.counterexamples[0]
            shell = shell_line(args.factory, ce.scenario.to_json(), ce.schedule, bool(traced))
            out.write(f"  or from the shell:\n    {shell}\n")
        if sink is not None:
            json.dump(report.to_dict(), sink, indent=2)
            sink.write("\n")
    finally:
        if sink is not None:
            sink.close()
    return EXIT_OK if report.ok else EXIT_FORBIDDEN


def _replay(args: argparse.Namespace, out: TextIO) -> int:
    factory = _load(args.factory)
    try:
        scenario = Scenario.from_json(args.scenario)
    except (ValueError, TypeError, KeyError) as exc:
        raise _Usage(f"--scenario {args.scenario!r}: {type(exc).__name__}: {exc}") from None
    try:
        parse_schedule(args.schedule)
    except ValueError as exc:
        raise _Usage(f"--schedule: {exc}") from None
    result = replay_scenario(
        factory, scenario, args.schedule, trace=not args.no_trace, raise_on_failure=False
    )
    if result.failure is None:
        out.write(
            f"replay {args.factory}: schedule {args.schedule!r} passes: no FORBIDDEN outcome\n"
        )
        return EXIT_OK
    # The scheduler's own replay line names the internal checked function; name the
    # factory and scenario instead, as verify does.
    module = getattr(factory, "__module__", None)
    traced = () if args.no_trace else default_traced(module)
    line = scenario_line(args.factory, scenario.to_json(), args.schedule, traced)
    out.write(str(dataclasses.replace(result.failure, replay=line)) + "\n")
    if result.failure.kind == "nondeterminism":
        out.write(
            "  the schedule no longer fits this code (it changed since the counterexample "
            "was found): run verify again\n"
        )
    return EXIT_FORBIDDEN


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """Run the command line; return the exit code (argparse itself exits 2 on bad options)."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "verify":
            return _verify(args, out, err)
        return _replay(args, out)
    except _Usage as exc:
        err.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
