"""End to end: a real HTTP server, parallel batches, a shell, a simulated LLM, one workflow.

The workflow fetches the list of entries over HTTP, then fetches every entry (a parallel
batch of HTTP nodes), summarises every entry (a parallel batch of LLM nodes over the
first batch's results), collects the summaries, and ends with a parallel group of two
reports: ``wc -w`` over the summaries and an overall LLM summary.

The per-item pipeline is two batches in sequence, not one batch over a sub-flow: each
step keeps its own ``max_concurrent`` and retries (an HTTP fetch retried does not rerun a
summary, and the LLM's concurrency limit is not the server's), and the LLM batch reports
its usage through the batch node itself, one ``__llm_calls__`` record per item.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from parabatch import CallLog
from parabatch.workflow import HttpStatusError, WorkflowError, run_workflow, to_jsonable

from .server import EntryServer, make_entries

N = 7
MAX_WORDS = 6


def workflow(*, on_error: str = "fail_fast", retries: int = 2) -> dict[str, Any]:
    batch = {"parallel": True, "error_handling": on_error}
    return {
        "version": 1,
        "nodes": [
            {"id": "list", "type": "http", "params": {"url": "${base_url}/entries"}},
            {
                "id": "fetch",
                "type": "http",
                "params": {"url": "${base_url}/entries/${entry.id}", "timeout": 30},
                "batch": {
                    **batch,
                    "items": "${list.json}",
                    "as": "entry",
                    "max_concurrent": 4,
                    "max_retries": retries,
                },
            },
            {
                "id": "summarise",
                "type": "llm",
                "params": {
                    "prompt": "Summarise: ${page.json.text}",
                    "model": "sim-small",
                    "max_words": MAX_WORDS,
                    "latency": 0.005,
                },
                "batch": {**batch, "items": "${fetch.results}", "as": "page", "max_concurrent": 3},
            },
            {
                "id": "collect",
                "type": "collect",
                "params": {"items": "${summarise.results}", "field": "summary"},
            },
            {
                "id": "report",
                "type": "parallel_group",
                "max_concurrent": 2,
                "children": [
                    {
                        "id": "word_count",
                        "type": "shell",
                        "params": {"cmd": ["wc", "-w"], "stdin": "${collect.text}"},
                    },
                    {
                        "id": "overall",
                        "type": "llm",
                        "params": {"prompt": "Overall: ${collect.text}", "model": "sim-large"},
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


def expected_summary(text: str, max_words: int) -> str:
    """The simulated LLM's documented rule, written out independently of its code."""
    words = text.split()
    return "Summary: " + " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours http_proxy; a proxy set on the machine must not carry 127.0.0.1.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server(no_proxy: None) -> Iterator[EntryServer]:
    with EntryServer(make_entries(N), latency=0.01) as srv:
        yield srv


def llm_record(model: str, prompt: str, max_words: int, **tags: Any) -> dict[str, Any]:
    summary = expected_summary(prompt.partition(":")[2], max_words)
    return {
        "model": model,
        "input_tokens": len(prompt.split()),
        "output_tokens": len(summary.split()),
        **tags,
    }


@pytest.mark.parametrize("sequential", [False, True], ids=["parallel", "sequential"])
def test_workflow_over_http_shell_and_llm(server: EntryServer, sequential: bool) -> None:
    entries = make_entries(N)
    shared = run_workflow(workflow(), {"base_url": server.url}, sequential=sequential)

    # the list, then every entry exactly once, in input order whatever finished first
    assert shared["list"]["status"] == 200
    assert shared["list"]["json"] == [{"id": e["id"], "title": e["title"]} for e in entries]
    fetch = shared["fetch"]
    assert (fetch["count"], fetch["success_count"], fetch["errors"]) == (N, N, None)
    assert [r["json"] for r in fetch["results"]] == entries
    assert [r["item"]["id"] for r in fetch["results"]] == [e["id"] for e in entries]
    assert all(r["status"] == 200 for r in fetch["results"])
    assert server.requests == {"/entries": 1, **{f"/entries/{e['id']}": 1 for e in entries}}
    mode = "sequential" if sequential else "parallel"
    assert fetch["batch_metadata"]["execution_mode"] == mode

    # one summary per entry, in order, each from its own entry's text
    summaries = [expected_summary(e["text"], MAX_WORDS) for e in entries]
    results = shared["summarise"]["results"]
    assert [r["summary"] for r in results] == summaries
    assert [r["item"]["json"]["id"] for r in results] == [e["id"] for e in entries]

    # the parallel group: both reports over the collected text
    text = "\n".join(summaries)
    assert shared["collect"]["text"] == text
    assert int(shared["word_count"]["stdout"]) == len(text.split())
    assert shared["word_count"]["returncode"] == 0
    overall_prompt = f"Overall: {text}"
    assert shared["overall"]["summary"] == expected_summary(text, 12)
    assert shared["report"]["results"] == ["default", "default"]
    assert shared["report"]["group_metadata"]["children"] == ["word_count", "overall"]

    # __llm_calls__: one record per summarised entry (in completion order), then the
    # overall summary, which runs after the whole batch
    calls = shared["__llm_calls__"]
    assert isinstance(calls, CallLog)
    per_entry = [
        llm_record(
            "sim-small",
            f"Summarise: {e['text']}",
            MAX_WORDS,
            node_id="summarise",
            batch_item_index=i,
        )
        for i, e in enumerate(entries)
    ]
    assert sorted(calls[:-1], key=lambda c: c["batch_item_index"]) == per_entry
    assert calls[-1] == llm_record("sim-large", overall_prompt, 12, node_id="overall")
    assert len(calls) == N + 1

    # and the whole store is JSON once exception objects are left out
    json.dumps(to_jsonable(shared))


def test_a_failed_fetch_is_retried_and_fetched_once_more(no_proxy: None) -> None:
    with EntryServer(make_entries(N), fail={"/entries/3": 1}) as srv:
        shared = run_workflow(workflow(), {"base_url": srv.url})
    assert srv.requests["/entries/3"] == 2
    assert [r["json"]["id"] for r in shared["fetch"]["results"]] == list(range(1, N + 1))
    # retries of a fetch are not LLM calls: still one record per entry, plus the overall
    assert len(shared["__llm_calls__"]) == N + 1


def test_continue_carries_a_failed_entry_through_both_batches(no_proxy: None) -> None:
    with EntryServer(make_entries(N), fail={"/entries/3": -1}) as srv:
        shared = run_workflow(workflow(on_error="continue"), {"base_url": srv.url})
    fetch, summarise = shared["fetch"], shared["summarise"]
    assert [e["index"] for e in fetch["errors"]] == [2]
    assert isinstance(fetch["errors"][0]["exception"], HttpStatusError)
    assert fetch["errors"][0]["exception"].status == 503
    assert fetch["results"][2] is None
    # the LLM batch gets None for that item; its template fails, at the same index
    assert [e["index"] for e in summarise["errors"]] == [2]
    assert summarise["results"][2] is None
    assert shared["collect"]["count"] == N - 1  # the collector skips the failed item
    indices = sorted(c["batch_item_index"] for c in shared["__llm_calls__"][:-1])
    assert indices == [0, 1, 3, 4, 5, 6]
    out = to_jsonable(shared)
    assert "exception" not in out["fetch"]["errors"][0]
    assert out["fetch"]["errors"][0]["error"].startswith("HttpStatusError: HTTP 503 from")


def test_fail_fast_raises_the_nodes_own_error_and_keeps_the_partial_output(
    no_proxy: None,
) -> None:
    with EntryServer(make_entries(N), fail={"/entries/5": -1}) as srv:
        shared: dict[str, Any] = {"base_url": srv.url}
        with pytest.raises(HttpStatusError, match="HTTP 503") as info:
            run_workflow(workflow(retries=1), shared)
    assert info.value.url.endswith("/entries/5")
    assert shared["fetch"]["batch_metadata"]["aborted"] is True
    assert [e["index"] for e in shared["fetch"]["errors"]] == [4]
    assert "summarise" not in shared and "report" not in shared
    assert list(shared["__llm_calls__"]) == []


def test_an_invalid_workflow_never_reaches_the_server(server: EntryServer) -> None:
    doc = workflow()
    doc["nodes"][1]["batch"]["max_concurrent"] = 0
    doc["edges"].append({"from": "report", "to": "sumarise"})
    with pytest.raises(WorkflowError) as info:
        run_workflow(doc, {"base_url": server.url})
    assert info.value.problems == [
        "nodes[1] ('fetch').batch.max_concurrent=0: must be an integer from 1 to 100",
        "edges[4].to='sumarise': unknown node (top-level nodes: list, fetch, summarise, "
        "collect, report)",
    ]
    assert server.requests == {}
