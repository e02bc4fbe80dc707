"""Test nodes: a node that records what it saw, fails on plan, and reports LLM usage."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from pocketflow import Node

from parabatch import NamespacedNodeWrapper, Shared, TemplateAwareNodeWrapper


class Tracker:
    """Thread-safe record of attempts and concurrency, shared by every copy of a node."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: dict[Any, int] = defaultdict(int)
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen_params: list[tuple[Any, Any]] = []
        self.started: list[Any] = []

    def enter(self, key: Any) -> int:
        with self.lock:
            self.attempts[key] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.started.append(key)
            return self.attempts[key]

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class Work(Node):
    """exec: fail the first ``fail[item]`` attempts, sleep ``latency[item]``, report usage."""

    def __init__(
        self,
        tracker: Tracker,
        *,
        fail: dict[Any, int] | None = None,
        latency: dict[Any, float] | None = None,
        usage: bool = False,
        key: str = "item",
    ) -> None:
        super().__init__()
        self.tracker = Shared(tracker)
        self.fail = dict(fail or {})
        self.latency = dict(latency or {})
        self.usage = usage
        self.key = key

    def prep(self, shared: Any) -> Any:
        return shared[self.key]

    def exec(self, item: Any) -> Any:
        attempt = self.tracker.enter(item)
        try:
            delay = self.latency.get(item, 0.0)
            if delay:
                time.sleep(delay)
            if attempt <= self.fail.get(item, 0):
                raise ValueError(f"planned failure of {item!r}, attempt {attempt}")
            return {"value": item, "params": dict(self.params), "attempt": attempt}
        finally:
            self.tracker.leave()

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["out"] = exec_res
        if self.usage:
            shared["llm_usage"] = {"model": "sim", "tokens": len(str(prep_res))}
        return "default"


def chain(node: Node, node_id: str = "n", params: dict[str, Any] | None = None) -> Any:
    """The real wrapper chain: Namespaced -> TemplateAware -> node."""
    return NamespacedNodeWrapper(TemplateAwareNodeWrapper(node, node_id, params or {}), node_id)
