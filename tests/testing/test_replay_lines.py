"""Replay lines are valid Python for any checked function, and rerun the failure they print.

An importable function is named by its import and the line runs as printed. Anything else
(a lambda, a closure, a ``functools.partial``, a bound method, a callable object, a
function of a script) is named by a placeholder, and the line's comment says what to bind
to it: bound so, the line reruns the same failure, trace and all.
"""

from __future__ import annotations

import functools
import types
from collections.abc import MutableMapping
from typing import Any, Callable, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parabatch import PflowBatchNode
from parabatch.testing import ScheduleFailure, check_dfs, checkpoint, spawn, verify_batch_node
from parabatch.testing._replay import check_line, name, scenario_line

from .subjects import lost_update


def _failing_line(fn: Callable[[], Any]) -> tuple[str, str]:
    failure = check_dfs(fn, max_preemptions=1, raise_on_failure=False).failure
    assert failure is not None
    compile(failure.replay, "<replay line>", "exec")
    assert "\n" not in failure.replay
    return failure.replay, failure.trace


def _rerun(line: str, bindings: dict[str, Any]) -> str:
    with pytest.raises(ScheduleFailure) as info:
        exec(line, dict(bindings))
    return info.value.failure.trace


def _adder(box: dict[str, int], n: int) -> None:
    value = box["n"]
    checkpoint("read")
    box["n"] = value + n


def _lost_update_of(n: int) -> None:
    box = {"n": 0}
    threads = [spawn(_adder, box, n), spawn(_adder, box, n)]
    for t in threads:
        t.join()
    assert box["n"] == 2 * n, box


def _closure() -> Callable[[], None]:
    def racing_pair() -> None:
        _lost_update_of(1)

    return racing_pair


class _Subject:
    def check(self) -> None:
        _lost_update_of(2)

    def __call__(self) -> None:
        _lost_update_of(3)


def test_an_importable_function_is_named_by_its_import_and_runs_as_printed() -> None:
    line, trace = _failing_line(lost_update)
    assert line.startswith("import tests.testing.subjects; import parabatch.testing; ")
    assert "#" not in line
    assert _rerun(line, {}) == trace


@pytest.mark.parametrize(
    ("fn", "placeholder", "described"),
    [
        (lambda: _lost_update_of(1), "fn", "<lambda> at "),
        (_closure(), "racing_pair", "_closure.<locals>.racing_pair at "),
        (functools.partial(_lost_update_of, 5), "fn", "functools.partial object functools."),
        (_Subject().check, "check", "_Subject.check at "),
        (_Subject(), "fn", "test_replay_lines._Subject object <tests."),
    ],
    ids=["lambda", "closure", "partial", "bound-method", "callable-object"],
)
def test_anything_else_gets_a_placeholder_and_says_what_to_bind(
    fn: Callable[[], None], placeholder: str, described: str
) -> None:
    line, trace = _failing_line(fn)
    assert f"parabatch.testing.replay({placeholder}, " in line
    comment = line.partition("  # ")[2]
    assert comment.startswith(f"{placeholder}: bind the checked function ")
    assert described in comment
    with pytest.raises(NameError, match=f"'{placeholder}'"):
        exec(line, {})  # as printed, it names what is missing
    assert _rerun(line, {placeholder: fn}) == trace


def test_a_function_of_a_script_is_named_as_the_script_names_it() -> None:
    script = types.ModuleType("__main__")
    exec("def racy():\n    check()\n", script.__dict__)
    script.check = lambda: _lost_update_of(1)  # type: ignore[attr-defined]
    racy = script.racy  # type: ignore[attr-defined]
    line, trace = _failing_line(racy)
    assert "parabatch.testing.replay(racy, " in line
    assert line.endswith("  # run in the script that defines racy")
    assert _rerun(line, dict(script.__dict__)) == trace


def test_a_name_the_line_itself_binds_is_not_used_as_a_placeholder() -> None:
    def t() -> None:
        raise AssertionError

    assert name(t, "checked function", "fn").expr == "fn"


def test_the_verify_line_names_a_factory_it_cannot_import() -> None:
    class NoCopyHere(PflowBatchNode):
        def __init__(self, inner: Any, node_id: str, config: dict[str, Any], **kw: Any):
            super().__init__(_Shared(inner), node_id, config, **kw)

    report = verify_batch_node(NoCopyHere, budget=30, seed=1)
    assert report.counterexamples, report.format()
    ce = report.counterexamples[0]
    compile(ce.replay, "<replay line>", "exec")
    assert "t.replay_scenario(NoCopyHere, " in ce.replay
    assert "# NoCopyHere: bind the batch node factory " in ce.replay
    with pytest.raises(ScheduleFailure) as info:
        exec(ce.replay, {"NoCopyHere": NoCopyHere})
    assert info.value.failure.trace == ce.trace


class _Shared:
    """A chain whose deep copy is itself: every item runs on the one chain."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self

    def _run(self, shared: MutableMapping[str, Any]) -> Any:
        return self.chain._run(shared)


# ---------------------------------------------------------------------------------------------
# Whatever the names: one line of valid Python

_text = st.text(st.characters(codec="utf-8"), max_size=30)


def _odd_function(module: Optional[str], qualname: str, short: str) -> Callable[[], None]:
    def fn() -> None:
        return None

    fn.__module__ = module  # type: ignore[assignment]
    fn.__qualname__ = qualname
    fn.__name__ = short
    return fn


@given(
    module=st.one_of(st.none(), _text, st.sampled_from(["__main__", "os", "parabatch"])),
    qualname=st.one_of(_text, st.sampled_from(["path", "t", "parabatch", "a.b", "if"])),
    short=st.one_of(_text, st.sampled_from(["<lambda>", "t", "ok", "class"])),
    schedule=_text,
    traced=st.one_of(st.none(), st.lists(_text, max_size=2)),
)
def test_every_line_is_one_line_of_valid_python(
    module: Optional[str], qualname: str, short: str, schedule: str, traced: Optional[list[str]]
) -> None:
    fn = _odd_function(module, qualname, short)
    for line in (
        check_line(fn, schedule, traced),
        scenario_line(fn, '{"items": []}', schedule, traced or ()),
        scenario_line(qualname, schedule, schedule, traced or ()),
    ):
        assert "\n" not in line and "\r" not in line
        compile(line, "<replay line>", "exec")
