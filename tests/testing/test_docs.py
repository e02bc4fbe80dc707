"""docs/scheduler.md: its worked example runs, and its claims hold."""

from __future__ import annotations

import re
import types
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "scheduler.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_worked_example_runs() -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 5
    module = types.ModuleType("scheduler_doc_example")
    for i, block in enumerate(blocks, 1):
        exec(compile(block, f"<scheduler.md block {i}>", "exec"), module.__dict__)
    # The pieces the text promises.
    assert len(module.minimal.switches) == 1
    assert module.shrunk.preemptions == 1
    assert module.certificate.certified
    assert module.blind.vacuous is not None
    # The test function shown in the doc fails, as a test of broken code must.
    try:
        module.test_lost_update()
    except AssertionError as exc:
        assert "lost update" in str(exc)
    else:
        raise AssertionError("the doc's @given test passed on the broken code")
