"""Run a batch's items (or a group's children) in other processes: a process pool or dask.

Both functions return a factory for the ``executor=`` argument of
:class:`parabatch.PflowBatchNode` and :class:`parabatch.ParallelGroupNode`; threads stay
the default. The run's work (the node chain, the item-facing config and the shared store
the items read) is pickled once and sent once per worker per run; per item only its index
and the item travel, and only its outcome (result, error, call records) comes back. The
results, errors, ``fail_fast`` and ``__llm_calls__`` are what threads give.

What must hold for a run to go to other processes:

- everything in the chain and the shared store pickles (a lock, an open file, a client
  with a connection pool does not): the run is refused before any item runs, with an
  :class:`parabatch.UncopyableNodeError` naming the path;
- the node classes are importable on the workers (defined in a module, not in an
  interactive session): :class:`WorkerSetupError` otherwise, also before any item runs;
- objects wrapped in :class:`parabatch.Shared` are shared by the items of one worker
  process only; each process has its own copy.

The executor factory and the progress callback stay with the coordinator: lambdas are
fine there.

Example:
    >>> from pocketflow import Node
    >>> import parabatch
    >>> from parabatch.executors import process_executor
    >>> chain = parabatch.NamespacedNodeWrapper(Node(), "n")
    >>> shared = {}
    >>> with process_executor(2) as pool:
    ...     parabatch.PflowBatchNode(chain, "n", {"items": [1, 2, 3], "parallel": True},
    ...                              executor=pool).run(shared)
    'default'
    >>> [r["item"] for r in shared["n"]["results"]]
    [1, 2, 3]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from ._remote import (
    RemoteFuture,
    RemoteItemError,
    Scattered,
    WorkerSetupError,
    pickle_work,
    probe,
    run_loaded,
    worker_init,
)

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

__all__ = [
    "EXECUTOR_CHOICES",
    "DaskItemExecutor",
    "OpenedExecutor",
    "ProcessItemExecutor",
    "ProcessPool",
    "RemoteItemError",
    "WorkerSetupError",
    "check_executor_spec",
    "dask_executor",
    "local_cluster",
    "open_executor",
    "process_executor",
]

# How the work's parts are named in a refusal: the names the user gave them.
_PART_NAMES = {
    "chain": "inner_node",
    "inner_node": "inner_node",
    "base": "shared",
    "store": "shared",
    "shared": "shared",
    "children": "children",
    "child": "child",
}


def _parts(work: Any) -> list[tuple[str, Any]]:
    """The work's attributes under the names the user knows them by."""
    try:
        attrs = list(vars(work).items())
    except TypeError:
        attrs = []
        for cls in type(work).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if isinstance(slot, str) and hasattr(work, slot):
                    attrs.append((slot, getattr(work, slot)))
    return [(_PART_NAMES.get(name, f"work.{name}"), value) for name, value in attrs]


def _setup_failed(where: str, failure: tuple[str, str, str]) -> WorkerSetupError:
    kind, message, text = failure
    return WorkerSetupError(
        f"{where} could not load the run's work: {kind}: {message}. Everything the node "
        "chain and the shared store hold must be importable there: define node classes in "
        "a module the workers can import (not in __main__ of an interactive session, not "
        f"inside a function).\nWorker traceback:\n{text}"
    )


def _default_context() -> BaseContext:
    """``forkserver`` where it exists, else ``spawn``: never a plain ``fork``.

    Forking a process that runs threads (a dask client, a progress display, the test
    runner) can deadlock the child, and a forked child sees classes the workers of a real
    cluster would not; Python 3.14 made ``forkserver`` the default for the first reason.
    Pass ``mp_context`` to choose otherwise.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _link(outer: RemoteFuture, inner: Future[bytes]) -> None:
    if inner.cancelled():
        outer.drop()
        return
    exc = inner.exception()
    if exc is not None:
        outer.fail(exc)
    else:
        outer.settle(inner.result())


# -- processes ------------------------------------------------------------------------------


class _ProcessPoolExecutor(ProcessPoolExecutor):
    """``ProcessPoolExecutor`` with the method PyPy 7.3.10 and 7.3.11 lost.

    Their standard library renamed ``_adjust_process_count`` to
    ``_adjust_process_count_cpython`` in its definition but not in ``submit``, so every
    ``submit`` with a start method other than ``fork`` raised ``AttributeError`` (PyPy
    issue 3873). The body is CPython's own: start a process when none is idle.
    """

    if not hasattr(ProcessPoolExecutor, "_adjust_process_count"):  # pragma: no cover
        _adjust_process_count = ProcessPoolExecutor._adjust_process_count_cpython  # type: ignore[attr-defined]


class ProcessPool:
    """The ``executor=`` factory :func:`process_executor` returns: one pool, many runs.

    The process pool starts with the first run and is kept for the next ones, so a
    workflow of many batches pays for starting processes once. ``pool(n)`` gives one run
    its executor (:class:`ProcessItemExecutor`). A pool broken by a worker that died
    (killed, out of memory) is replaced at the next run. ``shutdown()`` stops the
    processes (they also stop when the program exits); the factory is a context manager.

    Example:
        >>> with process_executor(2) as pool:
        ...     pool.max_workers
        2
    """

    def __init__(self, max_workers: int, mp_context: Optional[BaseContext] = None) -> None:
        self.max_workers = max_workers
        self._context = mp_context if mp_context is not None else _default_context()
        self._lock = threading.Lock()
        self._pool: Optional[ProcessPoolExecutor] = None

    def __call__(self, requested: int) -> ProcessItemExecutor:
        return ProcessItemExecutor(self, max(1, requested))

    def executor(self) -> ProcessPoolExecutor:
        """The running pool, started (or restarted after a breakage) on demand."""
        with self._lock:
            if self._pool is None or getattr(self._pool, "_broken", False):
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = _ProcessPoolExecutor(
                    self.max_workers, mp_context=self._context, initializer=worker_init
                )
            return self._pool

    def shutdown(self, wait: bool = True) -> None:
        """Stop the processes; a later run starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    def terminate(self, timeout: float = 5.0) -> None:
        """Stop now, items running or not (after Ctrl-C): nothing started is left behind.

        Queued items are cancelled; each process gets SIGTERM, ends the shell commands its
        items started (they run in sessions of their own, so they would outlive it) and
        exits; one still alive after ``timeout`` seconds is killed. A later run starts
        new processes.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        # Taken before shutdown, which forgets them.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):  # it may have exited already
                process.terminate()
        end = time.monotonic() + timeout
        for process in processes:
            # One interrupted while the pool started it may never have started.
            with contextlib.suppress(Exception):
                process.join(max(0.0, end - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join(timeout)

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class ProcessItemExecutor(Executor):
    """One run's view of a :class:`ProcessPool`: its work sent once per process.

    ``bind(work)`` pickles the work (refusing what cannot travel) into a file that each
    process reads once for this run, and has one process load it, so a work that does not
    load fails before any item runs. ``submit(work, index, item)`` sends the run's id, the
    file's path, the index and the item; the future resolves to the item's
    :class:`parabatch.ItemOutcome`. Other callables go to the pool unchanged.
    ``shutdown`` cancels or waits for this run's items only: the pool stays up.

    When the pool has no more processes than the run's ``max_concurrent``, the executor
    declares it (``_max_workers``) and the runner keeps the next items queued; with a
    bigger pool the runner keeps at most ``max_concurrent`` items submitted.

    Example:
        >>> with process_executor(4) as pool:
        ...     (pool(8)._max_workers, hasattr(pool(2), "_max_workers"))
        (4, False)
    """

    def __init__(self, owner: ProcessPool, limit: int) -> None:
        self._owner = owner
        if owner.max_workers <= limit:
            # Read by the runner: at most this many of the run's items run at once.
            self._max_workers = owner.max_workers
        self._run_id = uuid.uuid4().hex
        self._path: Optional[str] = None
        self._work: Any = None
        self._lock = threading.Lock()
        self._inner: set[Future[bytes]] = set()
        self._closed = False

    def bind(self, work: Any) -> None:
        """Send ``work`` to the pool's processes once; refuse it if it cannot travel."""
        if self._path is not None:
            raise RuntimeError("a ProcessItemExecutor runs one run's work; make a new one")
        data = pickle_work(work, _parts(work))
        fd, self._path = tempfile.mkstemp(prefix="parabatch-run-", suffix=".pickle")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            failure = self._owner.executor().submit(probe, self._run_id, self._path).result()
        except BaseException:
            self._remove()
            raise
        if failure is not None:
            self._remove()
            raise _setup_failed("a worker process", failure)
        self._work = work

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        pool = self._owner.executor()
        if self._work is None or fn is not self._work or len(args) != 2 or kwargs:
            return pool.submit(fn, *args, **kwargs)
        index, item = args
        assert self._path is not None
        inner = pool.submit(run_loaded, self._run_id, self._path, index, item)
        with self._lock:
            self._inner.add(inner)
        outer = RemoteFuture(index, item, lambda _: inner.cancel())
        inner.add_done_callback(partial(self._finished, outer))
        return outer

    def _finished(self, outer: RemoteFuture, inner: Future[bytes]) -> None:
        with self._lock:
            self._inner.discard(inner)
            last = self._closed and not self._inner
        if last:
            self._remove()
        _link(outer, inner)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            inner = list(self._inner)
        if cancel_futures:
            for future in inner:
                future.cancel()
        if wait:
            concurrent.futures.wait(inner)
        with self._lock:
            # Items already handed to a process still read the file: the last one to
            # finish removes it.
            last = not self._inner
        if last:
            self._remove()

    def _remove(self) -> None:
        with self._lock:
            path, self._path = self._path, None
        if path is not None:
            with contextlib.suppress(OSError):
                os.remove(path)


def process_executor(
    max_workers: Optional[int] = None, *, mp_context: Optional[BaseContext] = None
) -> ProcessPool:
    """An ``executor=`` factory that runs each item in a process pool, kept across runs.

    The pool has ``max_workers`` processes (default: the number of CPUs) and starts with
    the first run; each run uses at most ``max_concurrent`` of them at once. Worth it
    for CPU-bound items of a few milliseconds or more: each item's outcome is pickled on
    its way back. Pass the same factory to every node that should share the processes.

    Args:
        max_workers: processes in the pool.
        mp_context: a ``multiprocessing`` context; default ``forkserver`` (``spawn`` where
            there is none).

    Example:
        >>> pool = process_executor(2)
        >>> pool.max_workers, pool(8)._max_workers
        (2, 2)
        >>> pool.shutdown()
    """
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise ValueError(f"max_workers={max_workers!r}: must be a positive integer or None")
    return ProcessPool(max_workers or os.cpu_count() or 1, mp_context)


def _distributed() -> Any:
    """``distributed``, imported when a dask executor is used (an optional dependency)."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise ImportError(
            "parabatch.executors.dask_executor needs dask.distributed: "
            "pip install 'parabatch[dask]'"
        ) from exc


# -- dask -----------------------------------------------------------------------------------


def local_cluster(n_workers: Optional[int] = None, threads_per_worker: Optional[int] = None) -> Any:
    """A dask ``LocalCluster`` of worker processes on this machine, reachable on loopback only.

    No dashboard, and the scheduler's other HTTP routes on a free port, so clusters started
    side by side (test workers, other runs) never compete for port 8787. ``None`` leaves
    the count to dask. Close it when done; ``--executor dask`` opens one of these.

    Example:
        >>> import distributed  # doctest: +SKIP
        >>> cluster = local_cluster(2, 1)  # doctest: +SKIP
        >>> client = distributed.Client(cluster)  # doctest: +SKIP
        >>> factory = dask_executor(client)  # doctest: +SKIP
    """
    return _distributed().LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )


class DaskItemExecutor(Executor):
    """One run's items on a dask cluster: the work scattered once, at most ``limit`` at once.

    Made by the factory :func:`dask_executor` returns. ``bind(work)`` pickles the work
    (refusing what cannot travel), scatters the bytes to every worker
    (``broadcast=True``) and has every worker load it. Each item is then a task
    submitted with ``pure=False`` whose arguments are the run's key, the index and the
    item: no dependency for the scheduler to track, the work is already loaded there.

    The cluster may have more threads than ``limit``: then at most ``limit`` tasks of the
    run are in the cluster at once, the rest wait here and are cancelled here. When it has
    no more threads than ``limit``, twice as many are sent, so a worker never waits for a
    round trip to the client between two items.

    Example:
        >>> from unittest import mock
        >>> pool = DaskItemExecutor(mock.Mock(), 4, {})
        >>> pool.max_workers
        4
    """

    def __init__(self, client: Any, limit: int, options: dict[str, Any]) -> None:
        if limit < 1:
            raise ValueError(f"limit={limit!r}: must be at least 1")
        self._client = client
        self._options = dict(options)
        # Read by the runner: at most this many of the run's items run at once.
        self.max_workers = limit
        self._window = limit
        self._work: Any = None
        self._data: Any = None  # the scattered work: a distributed.Future
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queued: deque[RemoteFuture] = deque()
        self._sent: dict[Any, RemoteFuture] = {}  # distributed.Future -> the runner's
        self._closed = False
        self._completed: Any = None
        self._pump: Optional[threading.Thread] = None
        self._broken: Optional[BaseException] = None

    def bind(self, work: Any) -> None:
        """Scatter ``work`` to every worker once; refuse it if it cannot travel or load."""
        if self._data is not None:
            raise RuntimeError("a DaskItemExecutor runs one run's work; make a new one")
        data = pickle_work(work, _parts(work))
        nthreads = self._client.nthreads()
        if 0 < sum(nthreads.values()) <= self.max_workers:
            self._window = 2 * self.max_workers
        [scattered] = self._client.scatter([data], broadcast=True, hash=False)
        self._data = scattered
        self._reference = Scattered(scattered.key)
        try:
            probes = [
                self._client.submit(
                    probe,
                    scattered.key,
                    scattered,
                    workers=[w],
                    allow_other_workers=True,
                    pure=False,
                )
                for w in nthreads
            ]
            failures = [(f, r) for f, r in zip(nthreads, self._client.gather(probes)) if r]
        except BaseException:
            self._release()
            raise
        if failures:
            self._release()
            where, failure = failures[0]
            raise _setup_failed(f"dask worker {where}", failure)
        self._completed = _distributed().as_completed(with_results=True, raise_errors=False)
        self._work = work

    def _release(self) -> None:
        if self._data is not None:
            self._data.release()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._work is None or fn is not self._work or len(args) != 2 or kwargs:
            executor = self._client.get_executor(pure=False, **self._options)
            future: Future[Any] = executor.submit(fn, *args, **kwargs)
            return future
        index, item = args
        outer = RemoteFuture(index, item, self._cancel_queued)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._broken is not None:
                outer.fail(self._broken)
                return outer
            if len(self._sent) < self._window:
                self._send(outer)
            else:
                self._queued.append(outer)
        return outer

    def _send(self, outer: RemoteFuture) -> None:
        """Hand an item to the cluster (called holding the lock)."""
        assert self._data is not None
        task = self._client.submit(
            run_loaded,
            self._data.key,
            self._reference,
            outer.index,
            outer.item,
            pure=False,
            **self._options,
        )
        self._sent[task] = outer
        self._completed.add(task)
        if self._pump is None:
            self._pump = threading.Thread(
                target=self._collect, name="parabatch-dask-collect", daemon=True
            )
            self._pump.start()
        self._wake.notify_all()

    def _cancel_queued(self, outer: RemoteFuture) -> bool:
        with self._lock:
            try:
                self._queued.remove(outer)
            except ValueError:
                return False  # in the cluster already: it may be running
            return True

    def _collect(self) -> None:
        """Resolve each item's future as its task finishes; send the next queued item."""
        try:
            self._collect_until_closed()
        except BaseException as exc:
            # The machinery broke (the client closed, the scheduler went away): every item
            # still waiting fails with it, rather than leaving the run waiting forever.
            with self._lock:
                self._broken = exc
                waiting = [*self._sent.values(), *self._queued]
                self._sent.clear()
                self._queued.clear()
            for outer in waiting:
                outer.fail(exc)

    def _collect_until_closed(self) -> None:
        while True:
            with self._lock:
                while not self._sent and not self._closed:
                    self._wake.wait()
                if not self._sent:
                    return
            try:
                task, result = next(self._completed)
            except StopIteration:
                time.sleep(0.001)  # between a task's send and its tracking: look again
                continue
            with self._lock:
                outer = self._sent.pop(task, None)
                while self._queued and len(self._sent) < self._window:
                    self._send(self._queued.popleft())
            if outer is None:
                continue  # cancelled by shutdown
            if task.status == "finished":
                outer.settle(result)
            elif task.status == "error":
                outer.fail(result[1])
            else:
                outer.drop()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            dropped: list[RemoteFuture] = []
            if cancel_futures:
                dropped.extend(self._queued)
                self._queued.clear()
                tasks = list(self._sent)
                dropped.extend(self._sent.values())
                self._sent.clear()
                if tasks:
                    # Tasks already running finish on their workers; their results are
                    # dropped. The cluster stays usable.
                    self._client.cancel(tasks)
            self._wake.notify_all()
            pump = self._pump
        for outer in dropped:
            outer.drop()
        if wait and pump is not None:
            pump.join()
        self._release()


def dask_executor(client: Any, **options: Any) -> Callable[[int], DaskItemExecutor]:
    """An ``executor=`` factory that runs each item as a task on a dask cluster.

    ``client`` is a ``distributed.Client``, local (``Client(LocalCluster())``) or remote
    (``Client("tcp://scheduler:8786")``); the client, not the factory, owns the cluster
    and outlives the runs. At most ``max_concurrent`` items of a run run at once, however
    many threads the cluster has. Worth it for items of tens of milliseconds or more, or
    when the work must spread over several machines. Needs ``pip install parabatch[dask]``.

    Args:
        client: the dask client to submit to.
        **options: passed to every ``client.submit`` (``resources=``, ``workers=``,
            ``priority=``...). Tasks are always submitted with ``pure=False``, so
            identical items are never merged into one task; ``retries`` is refused (the
            batch's own ``max_retries`` retries items).

    Example:
        >>> from unittest import mock
        >>> factory = dask_executor(mock.Mock(), priority=1)
        >>> factory(3).max_workers
        3
    """
    for name in ("pure", "key", "retries"):
        if name in options:
            raise TypeError(
                f"dask_executor(..., {name}=...): not an option here; tasks are pure=False, "
                "keyed by dask, and retried by the batch's max_retries"
            )

    def factory(requested: int) -> DaskItemExecutor:
        return DaskItemExecutor(client, max(1, requested), options)

    return factory


# -- by name (the workflow CLI's --executor) ------------------------------------------------

#: The forms ``--executor`` takes.
EXECUTOR_CHOICES = "threads, processes, dask or dask=ADDRESS"


def check_executor_spec(spec: str) -> None:
    """Raise ``ValueError`` unless ``spec`` names an executor :func:`open_executor` knows.

    Example:
        >>> check_executor_spec("dask=tcp://scheduler:8786")
        >>> check_executor_spec("gpu")
        Traceback (most recent call last):
        ...
        ValueError: --executor 'gpu': expected threads, processes, dask or dask=ADDRESS
    """
    name, eq, address = spec.partition("=")
    if name in ("threads", "processes") and not eq:
        return
    if name == "dask" and (not eq or address):
        return
    raise ValueError(f"--executor {spec!r}: expected {EXECUTOR_CHOICES}")


class OpenedExecutor:
    """An executor named by ``--executor``, with what it opened: a pool, a client, a cluster.

    ``factory`` is the ``executor=`` argument (None for threads). ``close(wait=True)``
    stops what was opened; ``close(wait=False)`` does not wait for items still running
    (after Ctrl-C). As a context manager it closes on exit, waiting unless the block
    raised.

    Example:
        >>> with open_executor("threads") as opened:
        ...     print(opened.factory)
        None
    """

    def __init__(self, spec: str) -> None:
        check_executor_spec(spec)
        self.spec = spec
        self.factory: Optional[Callable[[int], Executor]] = None
        self._pool: Optional[ProcessPool] = None
        self._client: Any = None
        self._cluster: Any = None
        name, _, address = spec.partition("=")
        if name == "processes":
            self._pool = process_executor()
            self.factory = self._pool
        elif name == "dask":
            distributed = _distributed()
            if not address:
                self._cluster = local_cluster()
            try:
                self._client = distributed.Client(self._cluster or address)
            except BaseException:
                self.close(wait=False)
                raise
            self.factory = dask_executor(self._client)

    def close(self, wait: bool = True) -> None:
        """Stop the pool, or close the client and the local cluster.

        ``wait=False`` (after Ctrl-C) stops a pool's processes at once: their running
        items, and the shell commands those started, end with them.
        """
        if self._pool is not None:
            if wait:
                self._pool.shutdown()
            else:
                self._pool.terminate()
        timeout = None if wait else 2
        if self._client is not None:
            self._client.close(timeout=timeout)
        if self._cluster is not None:
            self._cluster.close(timeout=timeout)

    def __enter__(self) -> OpenedExecutor:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.close(wait=kind is None)


def open_executor(spec: str) -> OpenedExecutor:
    """Open the executor ``spec`` names: ``threads``, ``processes``, ``dask[=ADDRESS]``.

    ``threads`` opens nothing (the default executor); ``processes`` a
    :func:`process_executor` pool; ``dask`` a ``LocalCluster`` of worker processes on this
    machine and a client of it; ``dask=ADDRESS`` a client of the scheduler at ``ADDRESS``
    (``tcp://scheduler:8786``). Close it (or use it as a context manager) when done.

    Example:
        >>> with open_executor("processes") as opened:
        ...     opened.factory.max_workers >= 1
        True
    """
    return OpenedExecutor(spec)
