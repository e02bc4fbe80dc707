from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

from parabatch import CallLog


class CountingLock:
    def __init__(self) -> None:
        self.inner = threading.Lock()
        self.entered = 0

    def __enter__(self) -> None:
        self.inner.acquire()
        self.entered += 1

    def __exit__(self, *exc: Any) -> None:
        self.inner.release()


def test_every_write_takes_the_lock() -> None:
    lock = CountingLock()
    log = CallLog(lock=lock)
    log.append(1)
    log.extend([2, 3])
    log.insert(0, 0)
    log += [4]
    log.merge([5])
    assert log == [0, 1, 2, 3, 4, 5]
    assert lock.entered == 5
    assert log.snapshot() == [0, 1, 2, 3, 4, 5] and lock.entered == 6
    assert isinstance(log, CallLog)


def test_is_a_list() -> None:
    log = CallLog([{"a": 1}])
    assert isinstance(log, list) and log[0] == {"a": 1} and len(log) == 1
    assert repr(log) == "CallLog([{'a': 1}])"


def test_pickle_and_copies_carry_records_with_a_fresh_lock() -> None:
    lock = CountingLock()
    log = CallLog([{"t": 1}], lock=lock)
    for other in (pickle.loads(pickle.dumps(log)), copy.deepcopy(log), copy.copy(log)):
        assert type(other) is CallLog and other == [{"t": 1}]
        other.append({"t": 2})
        assert log == [{"t": 1}]
    assert lock.entered == 2  # the two snapshots taken by the copies, never a foreign append


def test_threads_lose_nothing() -> None:
    log = CallLog()
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(5000):
            log.append((k, i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 20000 and len(set(log)) == 20000
