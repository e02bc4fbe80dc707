"""Two batch nodes written the ordinary way, as another project would: PocketFlow and stdlib.

Neither knows about ``parabatch``: no markers, no scheduler-aware primitives, no ``spawn``.
Each has ``PflowBatchNode``'s constructor (``inner_node, node_id, batch_config, *,
executor, call_log, progress``) so ``verify_batch_node`` can check it, and each takes a
``bug`` (a class attribute) that breaks one thing the way real code does, to show the
verdict is earned:

- :class:`PollingBatch` runs items through ``executor`` (a ``ThreadPoolExecutor`` by
  default), keeps a ``threading.Lock`` in its own call log, and polls the futures with
  ``from concurrent.futures import wait`` and ``timeout=0.1``;
- :class:`QueueWorkersBatch` starts its own ``threading.Thread`` workers that take items
  from a ``queue.Queue`` and report to the coordinator under a ``threading.Condition``.
"""

from __future__ import annotations

import copy
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, ClassVar, Optional

CALLS = "__llm_calls__"


def _config(batch_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "as": "item",
        "parallel": False,
        "max_concurrent": 10,
        "max_retries": 1,
        "error_handling": "fail_fast",
        **batch_config,
    }


def _resolve(spec: Any, shared: dict[str, Any]) -> list[Any]:
    """``"${a.b}"`` looked up in ``shared``; anything else is the items themselves."""
    if isinstance(spec, str) and spec.startswith("${") and spec.endswith("}"):
        value: Any = shared
        for key in spec[2:-1].split("."):
            value = value[key]
        spec = value
    return list(spec)


class LockedLog(list):  # type: ignore[type-arg]
    """The call log: a list whose appends hold a lock of its own."""

    def __init__(self, racy: bool = False) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.racy = racy

    def append(self, record: Any) -> None:
        if self.racy:
            # The bug: the lock is left out, and the append is a read-modify-write. On two
            # lines: PyPy's points are per line, so a one-line one is atomic there.
            before = [*self]
            self[:] = [*before, record]
            return
        with self.lock:
            super().append(record)


class _Batch:
    """What both nodes do around the concurrency: config, one item's attempts, the output."""

    #: "" for the correct node, or the name of the bug to inject
    bug: ClassVar[str] = ""

    def __init__(
        self,
        inner_node: Any,
        node_id: str,
        batch_config: dict[str, Any],
        *,
        executor: Optional[Callable[[int], Any]] = None,
        call_log: str = "lock",
        progress: Optional[Callable[[int, int, int, bool], None]] = None,
    ) -> None:
        self.inner_node = inner_node
        self.node_id = node_id
        self.config = _config(batch_config)
        self.executor = executor or ThreadPoolExecutor
        self.call_log = call_log
        self.progress = progress

    def run(self, shared: dict[str, Any]) -> str:
        items = _resolve(self.config["items"], shared)
        if CALLS not in shared:
            locked = self.call_log == "lock"
            shared[CALLS] = LockedLog(racy=self.bug == "racy_log") if locked else []
        if self.config["parallel"] and items:
            results, errors = self.run_parallel(shared, items)
        else:
            results, errors = self.run_sequential(shared, items)
        failures = [errors[i] for i in sorted(errors)]
        output = {
            "results": results,
            "count": len(items),
            "errors": [
                {"index": i, "item": items[i], "error": f"{type(e).__name__}: {e}", "exception": e}
                for i, e in sorted(errors.items())
            ]
            or None,
            "batch_metadata": {"aborted": bool(failures) and self.fail_fast},
        }
        shared[self.node_id] = output
        if failures and self.fail_fast:
            raise failures[0]
        return "default"

    @property
    def fail_fast(self) -> bool:
        return bool(self.config["error_handling"] == "fail_fast")

    def run_sequential(
        self, shared: dict[str, Any], items: list[Any]
    ) -> tuple[list[Any], dict[int, Exception]]:
        results: list[Any] = [None] * len(items)
        errors: dict[int, Exception] = {}
        for i, item in enumerate(items):
            results[i], error = self.one(shared, i, item, self.inner_node)
            if error is not None:
                errors[i] = error
                if self.fail_fast:
                    break
        return results, errors

    def run_parallel(
        self, shared: dict[str, Any], items: list[Any]
    ) -> tuple[list[Any], dict[int, Exception]]:
        raise NotImplementedError

    def one(
        self, shared: dict[str, Any], index: int, item: Any, chain: Any
    ) -> tuple[Any, Optional[Exception]]:
        """Run one item, with its retries, on ``chain``; never raises its failure."""
        error: Optional[Exception] = None
        for _ in range(self.config["max_retries"]):
            store = dict(shared)
            store[self.config["as"]] = item
            store["__index__"] = index
            store[self.node_id] = {}
            try:
                chain._run(store)
            except Exception as exc:
                error = exc
                continue
            result = store[self.node_id]
            result["item"] = item
            usage = result.get("llm_usage")
            if isinstance(usage, dict):
                store[CALLS].append({**usage, "node_id": self.node_id, "batch_item_index": index})
            return result, None
        assert error is not None
        # The error outlives the item: keep no frame alive with it, nor the copy they hold.
        return None, error.with_traceback(None)


class PollingBatch(_Batch):
    """Items through an executor, at most ``max_concurrent`` submitted, polled every 0.1 s.

    Bugs: ``"racy_log"`` (the call log's lock left out), ``"shared_chain"`` (no copy of
    the chain per item), ``"keeps_submitting"`` (fail_fast goes on submitting).
    """

    def run_parallel(
        self, shared: dict[str, Any], items: list[Any]
    ) -> tuple[list[Any], dict[int, Exception]]:
        cap = self.config["max_concurrent"]
        results: list[Any] = [None] * len(items)
        errors: dict[int, Exception] = {}
        pending: dict[Future[Any], int] = {}
        next_index, finished, stopped = 0, 0, False
        pool = self.executor(cap)
        try:
            while pending or (next_index < len(items) and not stopped):
                while next_index < len(items) and not stopped and len(pending) < cap:
                    item = items[next_index]
                    pending[pool.submit(self.copy_and_run, shared, next_index, item)] = next_index
                    next_index += 1
                done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    i = pending.pop(future)
                    results[i], error = future.result()
                    finished += 1
                    if error is not None:
                        errors[i] = error
                        stopped = self.fail_fast and self.bug != "keeps_submitting"
                    if self.progress is not None:
                        self.progress(i, finished, len(items), error is None)
        finally:
            pool.shutdown(wait=True)
        return results, errors

    def copy_and_run(
        self, shared: dict[str, Any], index: int, item: Any
    ) -> tuple[Any, Optional[Exception]]:
        chain = self.inner_node if self.bug == "shared_chain" else copy.deepcopy(self.inner_node)
        return self.one(shared, index, item, chain)


class QueueWorkersBatch(_Batch):
    """``max_concurrent`` worker threads of its own, fed by a queue, joined at the end.

    Bugs: ``"if_not_while"`` (the coordinator waits on its condition under ``if``, not
    ``while``), ``"copy_per_worker"`` (each worker copies the chain once and reuses it).
    """

    def run_parallel(
        self, shared: dict[str, Any], items: list[Any]
    ) -> tuple[list[Any], dict[int, Exception]]:
        tasks: queue.Queue[Optional[tuple[int, Any]]] = queue.Queue()
        cond = threading.Condition()
        finished: list[tuple[int, Any, Optional[Exception]]] = []
        state = {"skipped": 0, "stopped": False}
        workers = [
            threading.Thread(
                target=self.work, args=(shared, tasks, cond, finished, state), daemon=True
            )
            for _ in range(min(self.config["max_concurrent"], len(items)))
        ]
        for w in workers:
            w.start()
        for task in enumerate(items):
            tasks.put(task)
        for _ in workers:
            tasks.put(None)

        def all_reported() -> bool:
            return len(finished) + state["skipped"] == len(items)

        with cond:
            if self.bug == "if_not_while":
                if not all_reported():
                    cond.wait()  # the bug: woken once, it takes every item as reported
            else:
                while not all_reported():
                    cond.wait()
            reported = list(finished)
        for w in workers:
            w.join()
        results: list[Any] = [None] * len(items)
        errors: dict[int, Exception] = {}
        for n, (i, result, error) in enumerate(reported, 1):
            results[i] = result
            if error is not None:
                errors[i] = error
            if self.progress is not None:
                self.progress(i, n, len(items), error is None)
        return results, errors

    def work(
        self,
        shared: dict[str, Any],
        tasks: queue.Queue[Optional[tuple[int, Any]]],
        cond: threading.Condition,
        finished: list[tuple[int, Any, Optional[Exception]]],
        state: dict[str, Any],
    ) -> None:
        mine = None
        while True:
            task = tasks.get()
            if task is None:
                return
            index, item = task
            with cond:
                if state["stopped"]:  # fail_fast: a failure was seen, start nothing new
                    state["skipped"] += 1
                    cond.notify_all()
                    continue
            if self.bug != "copy_per_worker":
                chain = copy.deepcopy(self.inner_node)
            else:
                if mine is None:
                    mine = copy.deepcopy(self.inner_node)
                chain = mine
            result, error = self.one(shared, index, item, chain)
            del chain  # this item's copy dies here, before the worker waits for the next
            with cond:
                finished.append((index, result, error))
                if error is not None and self.fail_fast:
                    state["stopped"] = True
                cond.notify_all()
