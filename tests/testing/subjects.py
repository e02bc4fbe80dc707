"""Checked functions the harness tests run: module-level, so failure reports can name them."""

from __future__ import annotations

import threading
import types

from parabatch.testing import Lock, checkpoint, spawn

from . import untraced


def lost_update() -> None:
    """Two threads read-modify-write one value with a scheduling point in between."""
    box = {"n": 0}

    def incr() -> None:
        value = box["n"]
        checkpoint("read")
        box["n"] = value + 1

    threads = [spawn(incr), spawn(incr)]
    for t in threads:
        t.join()
    assert box["n"] == 2, f"lost update: n={box['n']}"


def locked_update() -> None:
    """``lost_update`` with the read-modify-write under a scheduler-aware lock."""
    box = {"n": 0}
    lock = Lock()

    def incr() -> None:
        with lock:
            value = box["n"]
            checkpoint("read")
            box["n"] = value + 1

    threads = [spawn(incr), spawn(incr)]
    for t in threads:
        t.join()
    assert box["n"] == 2, f"lost update: n={box['n']}"


def opposite_lock_order() -> None:
    """Two threads take two locks in opposite orders: a deadlock under some schedule."""
    a, b = Lock("a"), Lock("b")

    def ab() -> None:
        with a, b:
            checkpoint("ab holds both")

    def ba() -> None:
        with b, a:
            checkpoint("ba holds both")

    threads = [spawn(ab), spawn(ba)]
    for t in threads:
        t.join()


def untraced_update() -> None:
    """Two threads run ``untraced.increment``, which has no scheduling point of its own."""
    box = {"n": 0}
    threads = [spawn(untraced.increment, box), spawn(untraced.increment, box)]
    for t in threads:
        t.join()
    assert box["n"] == 2, f"lost update: n={box['n']}"


# Made at import, before any check. One level into a module's object the check wraps the
# lock; two levels down it cannot reach it.
_HOLDER = types.SimpleNamespace(lock=threading.Lock())
_DEEP = types.SimpleNamespace(inner=types.SimpleNamespace(lock=threading.Lock()))


def premade_lock_in_an_object() -> None:
    """A real lock made before the check, in a module's object, held across a point."""
    lock = _HOLDER.lock

    def work() -> None:
        with lock:
            checkpoint("holding the lock")

    threads = [spawn(work), spawn(work)]
    for t in threads:
        t.join()


def premade_lock_contention() -> None:
    """A real lock made before the check, out of reach, held across a scheduling point."""
    lock = _DEEP.inner.lock

    def work() -> None:
        with lock:
            checkpoint("holding a real lock")

    threads = [spawn(work), spawn(work)]
    for t in threads:
        t.join()
