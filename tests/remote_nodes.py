"""Test nodes that work the same in threads, worker processes and on a dask cluster.

Everything here is importable by name (``tests.remote_nodes``), so a worker process can
unpickle it. What the items do is recorded in files under one directory
(:class:`FileTracker`), shared by every process on the machine; markers
(:func:`mark`, :func:`wait_for`) order items across processes without timing.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pocketflow import Node

from parabatch import CALLS_KEY

#: How long an item waits for a marker before it gives up (a hung test fails, never hangs).
MARKER_WAIT_S = 30.0


class FileTracker:
    """Attempts, start order and items in flight, kept in a file under a lock file.

    Picklable (it is just a directory), so every copy of a node in every process writes
    to the same record.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = str(directory)
        Path(self.directory).mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        with open(os.path.join(self.directory, "lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                path = os.path.join(self.directory, "state.json")
                try:
                    with open(path) as f:
                        state = json.load(f)
                except FileNotFoundError:
                    state = {"attempts": {}, "started": [], "in_flight": 0, "max_in_flight": 0}
                yield state
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(state, f)
                os.replace(tmp, path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def enter(self, key: Any) -> int:
        with self._state() as s:
            k = json.dumps(key)
            s["attempts"][k] = s["attempts"].get(k, 0) + 1
            s["in_flight"] += 1
            s["max_in_flight"] = max(s["max_in_flight"], s["in_flight"])
            s["started"].append(key)
            return int(s["attempts"][k])

    def leave(self) -> None:
        with self._state() as s:
            s["in_flight"] -= 1

    def read(self) -> dict[str, Any]:
        with self._state() as s:
            return json.loads(json.dumps(s))

    @property
    def attempts(self) -> dict[Any, int]:
        return {json.loads(k): v for k, v in self.read()["attempts"].items()}

    @property
    def started(self) -> list[Any]:
        return list(self.read()["started"])

    @property
    def max_in_flight(self) -> int:
        return int(self.read()["max_in_flight"])


def mark(directory: str, name: str) -> None:
    """Create the marker ``name`` (seen by every process)."""
    Path(directory, f"marker-{name}").touch()


def wait_for(directory: str, name: str) -> None:
    """Wait until the marker ``name`` exists; fail loudly after ``MARKER_WAIT_S``."""
    path = Path(directory, f"marker-{name}")
    deadline = time.monotonic() + MARKER_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"marker {name!r} never appeared in {directory}")
        time.sleep(0.002)


class LockError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgError(Exception):
    """An exception that pickles but does not unpickle: ``__init__`` takes two arguments."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


class Step(Node):
    """A per-item node driven by a plan, recording what it does in a :class:`FileTracker`.

    ``fail[item]``: fail the first so many attempts (ValueError); ``raise_[item]``: raise
    ``"lock"`` (LockError) or ``"twoarg"`` (TwoArgError) on every attempt; ``latency``:
    seconds to sleep; ``wait[item]``: a marker to wait for first; ``marks[item]``: a
    marker to create after the attempt; ``usage``: report LLM usage; ``records``: append
    that many call records to ``__llm_calls__`` directly, in order.
    """

    def __init__(
        self,
        tracker: FileTracker,
        *,
        fail: dict[Any, int] | None = None,
        raise_: dict[Any, str] | None = None,
        latency: dict[Any, float] | None = None,
        wait: dict[Any, str] | None = None,
        marks: dict[Any, str] | None = None,
        usage: bool = False,
        records: int = 0,
        key: str = "item",
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.fail = dict(fail or {})
        self.raise_ = dict(raise_ or {})
        self.latency = dict(latency or {})
        self.wait = dict(wait or {})
        self.marks = dict(marks or {})
        self.usage = usage
        self.records = records
        self.key = key

    def prep(self, shared: Any) -> Any:
        return shared[self.key]

    def exec(self, item: Any) -> Any:
        if item in self.wait:
            wait_for(self.tracker.directory, self.wait[item])
        attempt = self.tracker.enter(item)
        try:
            delay = self.latency.get(item, 0.0)
            if delay:
                time.sleep(delay)
            kind = self.raise_.get(item)
            if kind == "lock":
                raise LockError(f"item {item!r} failed holding a lock")
            if kind == "twoarg":
                raise TwoArgError(f"item {item!r}", "failed")
            if attempt <= self.fail.get(item, 0):
                raise ValueError(f"planned failure of {item!r}, attempt {attempt}")
            return {"value": item, "params": dict(self.params), "attempt": attempt}
        finally:
            self.tracker.leave()
            if item in self.marks:
                mark(self.tracker.directory, self.marks[item])

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["out"] = exec_res
        for n in range(self.records):
            shared[CALLS_KEY].append({"item": prep_res, "n": n})
        if self.usage:
            shared["llm_usage"] = {"model": "sim", "tokens": len(str(prep_res))}
        return "default"


class LockResult(Node):
    """Succeeds with a result that cannot be pickled (it holds a lock)."""

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["handle"] = {"lock": threading.Lock()}
        return "default"


class Put(Node):
    """A group child: writes ``params["v"]`` at ``shared["v"]``, logs a call, may fail."""

    def prep(self, shared: Any) -> Any:
        return shared.get("seen")

    def exec(self, prep_res: Any) -> Any:
        if self.params.get("fail"):
            raise ValueError(f"child {self.params['v']!r} failed")
        delay = self.params.get("latency", 0.0)
        if delay:
            time.sleep(delay)
        return self.params["v"]

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str:
        shared["v"] = exec_res
        shared[CALLS_KEY].append({"child": exec_res, "tokens": 1})
        return str(self.params.get("action", "default"))


class Die(Node):
    """Ends its worker process on ``params["die_on"]``, as a crash or the OOM killer would."""

    def prep(self, shared: Any) -> Any:
        return shared["item"]

    def exec(self, item: Any) -> Any:
        if item == self.params.get("die_on"):
            os._exit(3)
        return item
