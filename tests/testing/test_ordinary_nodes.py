"""verify_batch_node on batch nodes written the ordinary way (see ``ordinary_nodes.py``).

Each verifies clean at the default budget, and each is caught with one bug injected. They
use plain ``threading``, ``queue`` and ``concurrent.futures`` imported by name, so they need
the scheduler to control those as it controls its own primitives.
"""

from __future__ import annotations

from typing import Any

import pytest

from parabatch.testing import verify_batch_node

from .ordinary_nodes import PollingBatch, QueueWorkersBatch, _Batch


def _with_bug(cls: type[_Batch], bug: str) -> type[_Batch]:
    # In the nodes' own module, so that module is the one traced, as for the clean nodes.
    return type(f"{cls.__name__}_{bug}", (cls,), {"bug": bug, "__module__": cls.__module__})


@pytest.mark.slow
@pytest.mark.parametrize("cls", [PollingBatch, QueueWorkersBatch])
def test_an_ordinary_node_verifies_clean_at_the_default_budget(cls: type[_Batch]) -> None:
    report = verify_batch_node(cls, stop_on_forbidden=True)  # stops only if it fails
    assert report.ok, report.format()
    assert report.schedules == 1000
    assert report.table.count("harness", "completed") == 1000
    # The runs reached what they verify: parallel batches, retries, failures, both modes.
    for prop, outcome in [
        ("bound", "at cap"),
        ("fail_fast", "stopped"),
        ("exactly_once", "aborted"),
        ("calls", "lock: exact"),
        ("calls", "gil: exact"),
        ("isolation", "isolated"),
    ]:
        assert report.table.count(prop, outcome) > 0, (prop, outcome, report.format())


@pytest.mark.parametrize(
    ("cls", "bug", "caught_by"),
    [
        (PollingBatch, "racy_log", {"calls"}),
        (PollingBatch, "shared_chain", {"params", "isolation"}),
        (PollingBatch, "keeps_submitting", {"fail_fast"}),
        (QueueWorkersBatch, "if_not_while", {"exactly_once"}),
        (QueueWorkersBatch, "copy_per_worker", {"isolation"}),
    ],
)
def test_an_ordinary_node_with_one_bug_is_caught(
    cls: type[_Batch], bug: str, caught_by: set[str]
) -> None:
    report = verify_batch_node(_with_bug(cls, bug), stop_on_forbidden=True)
    assert not report.ok
    flagged = {prop for prop, _, _ in report.table.forbidden()}
    assert flagged & caught_by, report.format()
    assert "harness" not in flagged, report.format()
    ce: Any = report.counterexamples[0]
    compile(ce.replay, "<replay line>", "exec")
