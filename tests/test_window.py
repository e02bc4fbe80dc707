"""How many futures a parallel run keeps submitted, by what the executor declares.

The runner fills its window before every ``concurrent.futures.wait``, so the number of
futures handed to ``wait`` is the window itself, whatever the threads' timing: an executor
that declares it runs at most ``max_concurrent`` at once gets two per slot (a worker that
finishes finds its next item queued), any other gets one per slot (the bound holds
whatever it does).
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

import pytest

from parabatch import PflowBatchNode

from .nodes import Tracker, Work, chain

CAP = 4
N_ITEMS = 40


class Undeclared(Executor):
    """A thread pool that does not say how many tasks it runs at once."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class PublicBound(Undeclared):
    """Declares its bound as a public ``max_workers``."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.max_workers = workers


def _largest_wait(monkeypatch: pytest.MonkeyPatch, executor: Optional[Any]) -> int:
    """Run a batch; the most futures the coordinator waited on at once."""
    sizes: list[int] = []
    real_wait = concurrent.futures.wait

    def recording_wait(fs: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(fs))
        return real_wait(fs, *args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "wait", recording_wait)
    shared: dict[str, Any] = {}
    config = {"items": list(range(N_ITEMS)), "parallel": True, "max_concurrent": CAP}
    kw = {} if executor is None else {"executor": executor}
    PflowBatchNode(chain(Work(Tracker()), "n"), "n", config, **kw).run(shared)
    monkeypatch.undo()
    assert shared["n"]["success_count"] == N_ITEMS
    assert sizes, "the parallel run waited on its futures"
    return max(sizes)


@pytest.mark.parametrize(
    ("executor", "window"),
    [
        pytest.param(None, 2 * CAP, id="default-thread-pool"),
        pytest.param(ThreadPoolExecutor, 2 * CAP, id="thread-pool-factory"),
        pytest.param(PublicBound, 2 * CAP, id="public-max_workers"),
        pytest.param(Undeclared, CAP, id="undeclared"),
        pytest.param(lambda w: ThreadPoolExecutor(w + 3), CAP, id="declares-more-than-cap"),
    ],
)
def test_window_follows_the_declared_bound(
    monkeypatch: pytest.MonkeyPatch, executor: Optional[Any], window: int
) -> None:
    assert _largest_wait(monkeypatch, executor) == window
