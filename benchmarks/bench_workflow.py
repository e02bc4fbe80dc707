"""Parallel against sequential: one workflow, one process, one server, two modes.

The workflow is the end-to-end one (tests/workflow/test_e2e.py): list entries over HTTP,
fetch each (a batch), summarise each with the simulated LLM (a batch), collect, then a
parallel group of ``wc -w`` and an overall summary. Every HTTP request waits
``LATENCY`` seconds on the server and every LLM call ``LATENCY`` seconds, so the run is
I/O-bound, as real fetches and LLM calls are. ``sequential=True`` compiles the very same
document with every batch ``parallel: false`` and every group one child at a time.

Run (pytest-benchmark prints both rows in one group; the parenthesised ratios are the
comparison, and ``extra_info["speedup"]`` holds median(sequential) / median(parallel), as
``report.py`` computes it)::

    PYTHONPATH=src python -m pytest benchmarks/bench_workflow.py -p no:xdist -q \\
        --benchmark-columns=min,mean,max,rounds
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.workflow.server import EntryServer, make_entries

from parabatch.workflow import run_workflow

N = 24
LATENCY = 0.02
CONCURRENCY = 8
MEDIANS: dict[str, float] = {}


def workflow() -> dict[str, Any]:
    batch = {"parallel": True, "max_concurrent": CONCURRENCY}
    return {
        "nodes": [
            {"id": "list", "type": "http", "params": {"url": "${base_url}/entries"}},
            {
                "id": "fetch",
                "type": "http",
                "params": {"url": "${base_url}/entries/${entry.id}"},
                "batch": {**batch, "items": "${list.json}", "as": "entry"},
            },
            {
                "id": "summarise",
                "type": "llm",
                "params": {"prompt": "Summarise: ${page.json.text}", "latency": LATENCY},
                "batch": {**batch, "items": "${fetch.results}", "as": "page"},
            },
            {
                "id": "collect",
                "type": "collect",
                "params": {"items": "${summarise.results}", "field": "summary"},
            },
            {
                "id": "report",
                "type": "parallel_group",
                "children": [
                    {
                        "id": "word_count",
                        "type": "shell",
                        "params": {"cmd": ["wc", "-w"], "stdin": "${collect.text}"},
                    },
                    {
                        "id": "overall",
                        "type": "llm",
                        "params": {"prompt": "Overall: ${collect.text}", "latency": LATENCY},
                    },
                ],
            },
        ],
        "edges": [
            {"from": "list", "to": "fetch"},
            {"from": "fetch", "to": "summarise"},
            {"from": "summarise", "to": "collect"},
            {"from": "collect", "to": "report"},
        ],
    }


@pytest.fixture(scope="module")
def server() -> Iterator[EntryServer]:
    with EntryServer(make_entries(N), latency=LATENCY) as srv:
        yield srv


@pytest.mark.parametrize("execution", ["sequential", "parallel"])
def test_workflow(benchmark: Any, server: EntryServer, execution: str) -> None:
    benchmark.group = f"workflow: {N} entries, {LATENCY * 1000:.0f} ms per call"
    doc = workflow()

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (doc, {"base_url": server.url}), {"sequential": execution == "sequential"}

    shared = benchmark.pedantic(run_workflow, setup=setup, rounds=5, warmup_rounds=1)
    # the same answer either way; only the time differs
    assert [r["json"]["id"] for r in shared["fetch"]["results"]] == list(range(1, N + 1))
    assert len(shared["__llm_calls__"]) == N + 1
    MEDIANS[execution] = benchmark.stats.stats.median
    if execution == "parallel" and "sequential" in MEDIANS:
        benchmark.extra_info["speedup"] = round(MEDIANS["sequential"] / MEDIANS[execution], 2)
