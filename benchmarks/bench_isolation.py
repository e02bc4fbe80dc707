"""Isolation cost and the per-item parts of parabatch's path, one operation at a time.

Each benchmark is one small operation, so pytest-benchmark calibrates and repeats it; the
report divides by ``deepcopy`` of the chain measured in the same run.
"""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable

import pytest
from _workloads import NODE_ID, SleepNode, chain_params, make_chain, make_items, make_shared

import parabatch
from parabatch._clone import clone
from parabatch._runner import ItemOutcome, StopFlag
from parabatch._templates import resolve_template
from parabatch._work import ItemWork

CHAIN = make_chain(0.0)
INNER = CHAIN.inner_node.inner_node


def _fresh_chain() -> Any:
    return make_chain(0.0)


_BASE = make_shared(make_items(10))
_BASE[parabatch.CALLS_KEY] = parabatch.CallLog()
#: The core's per-item unit as a parallel run builds it (each item on its own copy).
WORK = ItemWork(CHAIN, _BASE, StopFlag(), node_id=NODE_ID, copy_chain=True)


def _item_store() -> dict[str, Any]:
    return WORK._item_store(1, "document 1")


_copy_for_run = copy.deepcopy(CHAIN)


def _run_chain() -> Any:
    return _copy_for_run._run(_item_store())


def _one_item() -> ItemOutcome:
    """One whole item on the core's path: copy, store, chain, result, outcome."""
    return WORK(1, "document 1")


_TEMPLATES = CHAIN.inner_node.template_params
_NS_SHARED = parabatch.NamespacedSharedStore(_item_store(), NODE_ID)


def _resolve_all() -> Any:
    return {k: resolve_template(v, _NS_SHARED) for k, v in _TEMPLATES.items()}


def _outcome() -> ItemOutcome:
    return ItemOutcome(1, "document 1", {"out": 1}, None, 1)


_done: list[Future[int]] = []
for _i in range(10):
    _f: Future[int] = Future()
    _f.set_result(_i)
    _done.append(_f)


def _wait_first() -> Any:
    return wait(_done, return_when=FIRST_COMPLETED)


OPERATIONS: dict[str, Callable[[], Any]] = {
    "deepcopy_chain": lambda: copy.deepcopy(CHAIN),
    "clone_chain": lambda: clone(CHAIN),
    "copy_chain": lambda: copy.copy(CHAIN),
    "fresh_chain": _fresh_chain,
    "pickle_roundtrip_chain": lambda: pickle.loads(pickle.dumps(CHAIN)),
    "deepcopy_inner_node": lambda: copy.deepcopy(INNER),
    "clone_inner_node": lambda: clone(INNER),
    "item_store": _item_store,
    "chain_run": _run_chain,
    "item_work_call": _one_item,
    "resolve_4_templates": _resolve_all,
    "item_outcome": _outcome,
    "wait_first_completed_10": _wait_first,
}


def test_chain_is_realistic() -> None:
    """The chain measured has three layers, 10 params with 4 templates, about 1 KB pickled."""
    assert isinstance(INNER, SleepNode)
    assert len(chain_params()) == 10
    assert len(CHAIN.inner_node.template_params) == 4
    assert 600 <= len(pickle.dumps(CHAIN)) <= 2000
    assert _resolve_all()["doc_id"] == 1  # a whole-string template keeps the value's type
    outcome = _one_item()
    assert outcome.ok and outcome.result == {"out": "document 1", "item": "document 1"}
    assert not _BASE[parabatch.CALLS_KEY], "no usage recorded: the log does not grow per call"


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_isolation(benchmark: Any, operation: str) -> None:
    """One operation of the per-item path; pytest-benchmark picks the iterations."""
    benchmark.group = "isolation"
    benchmark.extra_info["operation"] = operation
    benchmark.extra_info["chain_pickled_bytes"] = len(pickle.dumps(CHAIN))
    benchmark(OPERATIONS[operation])
