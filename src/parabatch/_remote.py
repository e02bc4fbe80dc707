"""What runs an item's work in another process: the travel check, the worker side, the return.

The coordinator pickles a run's work (the chain, the item-facing config, the base store)
once, refusing before any item runs if something in it cannot travel
(:func:`pickle_work`). Each worker process loads it once per run, from the scattered bytes
(dask) or a file (a process pool), and keeps it under the run's id (:func:`load`); per
item only the run id, a reference to the bytes, the index and the item travel. The
worker pickles the item's outcome itself (:func:`run_item`): an exception that cannot make
the trip, or would not unpickle on the other side, becomes a :class:`RemoteItemError`
carrying its type, message and traceback text, so one bad exception never breaks the pool.
The coordinator turns the bytes back into an outcome (:func:`unpack`) and resolves the
``concurrent.futures.Future`` the runner waits on (:class:`RemoteFuture`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Optional, Union

from ._errors import ParabatchError, UncopyableNodeError
from ._isolation import find_culprit, type_name
from ._runner import ItemOutcome

__all__ = [
    "RemoteFuture",
    "RemoteItemError",
    "Scattered",
    "WorkerSetupError",
    "at_worker_stop",
    "describe_failure",
    "load",
    "pickle_work",
    "probe",
    "run_item",
    "run_loaded",
    "unpack",
    "worker_init",
]

_PROTOCOL = pickle.HIGHEST_PROTOCOL

# Runs whose work a worker process keeps loaded. A dask worker serves many runs, and
# several runs may be under way at once; the oldest beyond this many is dropped (and
# loaded again from the worker's copy of the bytes if one of its items still arrives).
_KEEP_RUNS = 4


class RemoteItemError(ParabatchError):
    """An item's exception that could not be sent back from its worker as itself.

    Raised in the item's place (fail_fast) or kept in its error record (continue) when the
    exception would not pickle (it holds a lock, a socket...) or would not unpickle in the
    coordinator (a two-argument ``__init__``). ``remote_type`` is the original class's
    qualified name, ``remote_message`` its ``str()``, ``remote_traceback`` the traceback
    formatted in the worker, and ``reason`` why the original could not travel.

    Example:
        >>> e = RemoteItemError("app.DbError", "connection lost", "Traceback ...", "why")
        >>> str(e)
        'app.DbError: connection lost'
        >>> import pickle; pickle.loads(pickle.dumps(e)).remote_type
        'app.DbError'
    """

    def __init__(
        self, remote_type: str, remote_message: str, remote_traceback: str, reason: str
    ) -> None:
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.remote_type, self.remote_message, self.remote_traceback, self.reason),
        )


class WorkerSetupError(ParabatchError, RuntimeError):
    """Raised before any item runs when a worker cannot load the run's work.

    The work pickled in the coordinator but did not unpickle in a worker, most often
    because a class it holds is not importable there (defined in an interactive session or
    in a module the workers do not have). The message carries the worker's exception and
    traceback.

    Example:
        >>> issubclass(WorkerSetupError, ParabatchError)
        True
    """


# -- the travel check (coordinator) ---------------------------------------------------------


def _pickle_error(obj: Any) -> Optional[BaseException]:
    try:
        pickle.dumps(obj, _PROTOCOL)
    except Exception as exc:  # RecursionError included: a structure too deep cannot travel
        return exc
    return None


def find_unpicklable(obj: Any, name: str) -> tuple[str, Any, BaseException] | None:
    """The innermost (path, object, error) that makes pickling ``obj`` fail, or None."""
    return find_culprit(obj, name, _pickle_error, into_shared=True)


def pickle_work(work: Any, parts: list[tuple[str, Any]]) -> bytes:
    """Pickle a run's work once; refuse with the path of what cannot travel.

    ``parts`` name the work's pieces as the user knows them (``inner_node``,
    ``shared``...), so the path in the error is one the user can find.

    Example:
        >>> import threading
        >>> try:
        ...     pickle_work({"db": threading.Lock()}, [("shared", {"db": threading.Lock()})])
        ... except UncopyableNodeError as e:
        ...     print(e.path, e.kind)
        shared['db'] _thread.lock
    """
    try:
        return pickle.dumps(work, _PROTOCOL)
    except Exception as exc:
        first: BaseException = exc
    found = next(
        (f for f in (find_unpicklable(part, name) for name, part in parts) if f is not None),
        ("work", work, first),
    )
    path, culprit, cause = found
    kind = type_name(culprit)
    raise UncopyableNodeError(
        f"cannot send {path} ({kind}) to a worker process: {type(cause).__name__}: {cause}. "
        "A process or dask executor pickles the node chain and the shared store once per "
        "worker, so everything they hold must pickle. Create such an object inside the "
        "node where it is used (in prep or exec, once per process), keep it out of the "
        "shared store, or run this batch on threads.",
        path=path,
        kind=kind,
    ) from cause


# -- the worker side ------------------------------------------------------------------------

_lock = threading.Lock()
_loaded: OrderedDict[str, Any] = OrderedDict()


class Scattered:
    """A run's pickled work on a dask cluster, by its key: what an item's task carries.

    The probe that runs on every worker before any item has each worker load the work;
    an item's task finds it there. A worker that has not (one that joined later, or
    dropped the run from its cache) fetches the bytes once, from its own memory when the
    broadcast put them there, else through the scheduler.
    """

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (Scattered, (self.key,))

    def fetch(self) -> bytes:
        distributed: Any = importlib.import_module("distributed")
        worker = distributed.get_worker()
        data = worker.data.get(self.key) if hasattr(worker.data, "get") else None
        if not isinstance(data, bytes):
            client = distributed.get_client()
            data = client.gather(distributed.Future(self.key, client))
        assert isinstance(data, bytes)
        return data


#: Where a run's pickled work comes from in a worker: the bytes themselves, the path of a
#: file holding them (a process pool) or their key on a dask cluster.
Source = Union[bytes, str, Scattered]


def load(run_id: str, source: Source) -> Any:
    """The run's work, unpickled once per process and kept under the run's id."""
    with _lock:
        work = _loaded.get(run_id)
        if work is not None:
            _loaded.move_to_end(run_id)
            return work
    if isinstance(source, Scattered):
        source = source.fetch()
    elif isinstance(source, str):
        with open(source, "rb") as f:
            source = f.read()
    # Unpickled outside the lock: a large store must not hold up the other threads'
    # items of runs already loaded. Two threads may both load it the first time.
    work = pickle.loads(source)
    with _lock:
        work = _loaded.setdefault(run_id, work)
        while len(_loaded) > _KEEP_RUNS:
            _loaded.popitem(last=False)
    return work


# What a worker process runs when it is told to stop (SIGTERM from the coordinator): each
# ends what an item started outside the process, which the worker's death would orphan.
_stop_hooks: list[Callable[[], object]] = []


def at_worker_stop(hook: Callable[[], object]) -> None:
    """Run ``hook`` in a worker process when the coordinator stops it (once per hook).

    The shell node registers the stop of its commands here: a command runs in a session
    of its own, so it would outlive a worker that is simply killed.
    """
    if hook not in _stop_hooks:
        _stop_hooks.append(hook)


def _stop_now(code: int) -> None:
    for hook in list(_stop_hooks):
        with contextlib.suppress(Exception):
            hook()
    os._exit(code)


def _stop(signum: int, _frame: Any) -> None:
    # The hooks run on a thread of their own: the handler interrupts the main thread
    # anywhere, perhaps inside the Popen of a command not yet listed, which can only list
    # it (and so let a hook end it) once the handler has returned.
    threading.Thread(target=_stop_now, args=(128 + signum,), daemon=True).start()


def worker_init() -> None:
    """The pool's initializer: SIGTERM runs the stop hooks, then ends the worker."""
    signal.signal(signal.SIGTERM, _stop)


def describe_failure(exc: BaseException) -> tuple[str, str, str]:
    """(qualified type, message, formatted traceback) of an exception, all plain text."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return type_name(exc), str(exc), text


def probe(run_id: str, source: Source) -> Optional[tuple[str, str, str]]:
    """Load the run's work in this worker; None, or what went wrong as text."""
    try:
        load(run_id, source)
    except Exception as exc:
        return describe_failure(exc)
    return None


def _outcome(
    index: int, error: RemoteItemError, attempts: int, calls: tuple[Any, ...] = ()
) -> ItemOutcome:
    """A failed outcome made here, in the worker's stead (its records still count)."""
    return ItemOutcome(
        index, None, None, error, attempts, calls, remote=True, traceback=error.remote_traceback
    )


def _traceback_text(outcome: ItemOutcome) -> str:
    if outcome.traceback:
        return outcome.traceback
    assert outcome.error is not None
    return describe_failure(outcome.error)[2]


def _travelling_error(outcome: ItemOutcome) -> None:
    """Replace an error that would not survive the trip with a RemoteItemError."""
    error = outcome.error
    if error is None or isinstance(error, RemoteItemError):
        return
    try:
        pickle.loads(pickle.dumps(error, _PROTOCOL))
        return
    except Exception as exc:
        reason = f"the exception could not be sent back: {type(exc).__name__}: {exc}"
    kind, message, _ = describe_failure(error)
    remote = RemoteItemError(kind, message, _traceback_text(outcome), reason)
    outcome.error = remote
    outcome.traceback = remote.remote_traceback


def _pack(outcome: ItemOutcome) -> bytes:
    """Pickle an outcome for the trip back; what cannot travel becomes an error record."""
    outcome.item = None  # the coordinator has the item; it does not travel back
    _travelling_error(outcome)
    try:
        return pickle.dumps(outcome, _PROTOCOL)
    except Exception:
        pass
    for name in ("result", "calls"):
        found = find_unpicklable(getattr(outcome, name), name)
        if found is None:
            continue
        path, culprit, exc = found
        calls = outcome.calls if name == "result" and _pickle_error(outcome.calls) is None else ()
        error = RemoteItemError(
            "parabatch.UntravelableResult",
            f"item {outcome.index}: {path} ({type_name(culprit)}) cannot be sent back from the "
            f"worker: {type(exc).__name__}: {exc}",
            "",
            "an item's result and call records must pickle to come back from a worker",
        )
        return pickle.dumps(_outcome(outcome.index, error, outcome.attempts, calls), _PROTOCOL)
    raise AssertionError("an outcome that does not pickle has a part that does not")


def run_item(work: Any, index: int, item: Any) -> bytes:
    """Run one item of ``work`` and return its outcome pickled for the trip back."""
    return _pack(work(index, item))


def run_loaded(run_id: str, source: Source, index: int, item: Any) -> bytes:
    """A worker's task: load the run's work (once per process), run one item, pack it."""
    try:
        work = load(run_id, source)
    except Exception as exc:
        kind, message, text = describe_failure(exc)
        error = RemoteItemError(
            kind, message, text, "the run's work could not be loaded on this worker"
        )
        return pickle.dumps(_outcome(index, error, 0), _PROTOCOL)
    return run_item(work, index, item)


# -- the coordinator side -------------------------------------------------------------------


def unpack(data: bytes, index: int, item: Any) -> ItemOutcome:
    """The outcome a worker sent back, its item restored; an unpicklable one as an error."""
    try:
        outcome: ItemOutcome = pickle.loads(data)
    except Exception as exc:
        kind, message, text = describe_failure(exc)
        outcome = _outcome(
            index,
            RemoteItemError(
                kind,
                message,
                text,
                "the item's outcome could not be unpickled in the coordinator",
            ),
            0,
        )
    outcome.item = item
    return outcome


class RemoteFuture(Future[ItemOutcome]):
    """The runner's future for an item running elsewhere.

    ``cancel`` asks ``canceller`` first: it succeeds only for an item that has not been
    handed to a worker yet, as a thread pool's ``cancel`` succeeds only for an item not
    started.
    """

    def __init__(self, index: int, item: Any, canceller: Callable[[RemoteFuture], bool]):
        super().__init__()
        self.index = index
        self.item = item
        self._canceller = canceller
        self._dropped = False

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        if not self._canceller(self):
            return False
        self.drop()
        return True

    def settle(self, data: bytes) -> None:
        """Resolve with the outcome in ``data`` (unless cancelled meanwhile)."""
        outcome = unpack(data, self.index, self.item)
        with contextlib.suppress(InvalidStateError):
            self.set_result(outcome)

    def fail(self, exc: BaseException) -> None:
        """Resolve with an error of the machinery itself (a worker died, the pool broke)."""
        with contextlib.suppress(InvalidStateError):
            self.set_exception(exc)

    def drop(self) -> None:
        """Mark cancelled, whatever the canceller says (the run is being abandoned)."""
        with self._condition:
            if self._dropped or not Future.cancel(self):
                return
            self._dropped = True
            # What an executor does when it reaches a cancelled future: without it,
            # concurrent.futures.wait() never counts the future as done.
            self.set_running_or_notify_cancel()
