"""The blocked verdict rests on the holder's own behaviour, never on how loaded the machine is.

The supervisor reads the holder from ``/proc`` and its own clock; here both are stood in for
(``_read_task``, ``_busy_others``, ``_supervisor_clock``), so a starved CPU, a GIL held
elsewhere or a polling loop are simulated exactly, without loading anything or timing.
The holder itself waits on a real lock that the simulated kernel opens after a fixed
number of samples: the run then ends, and whether a verdict came first is the result.
"""

from __future__ import annotations

import io
import socket
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, Optional

import pytest

from parabatch.testing import BlockedFailure, _scheduler, check_random
from parabatch.testing._scheduler import Runtime, TaskSample

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Made before any check and reached through an object: the run cannot control it.
_OUTSIDE = SimpleNamespace(pause=time.sleep)


class FakeKernel:
    """Per sample: advance the clock by ``tick`` s and the holder's counters as told."""

    def __init__(
        self,
        state: str,
        *,
        cpu: float = 0.0,
        wait: float = 0.0,
        runs: int = 0,
        others: float = 0.0,
        open_after: int = 12,
        tick: float = 1.0,
        shown: bool = True,
    ) -> None:
        self.state, self.cpu, self.wait, self.runs = state, cpu, wait, runs
        self.others = others
        self.open_after, self.tick, self.shown = open_after, tick, shown
        self.samples = 0
        self.now = 0.0
        self.total = [0.0, 0.0, 1, 0.0]  # cpu, wait, runs (it ran once, to start), others
        self.gate = _scheduler._real_lock()
        self.gate.acquire()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_scheduler, "_supervisor_clock", self.clock)
        monkeypatch.setattr(_scheduler, "_read_task", self.read_task)
        monkeypatch.setattr(_scheduler, "_busy_others", lambda native_id: self.total[3])
        stalled = Runtime._stalled

        def stalled_then_open(rt: Runtime, how: str) -> None:
            stalled(rt, how)
            self.open()  # the verdict is in: let the holder go, so the run unwinds

        monkeypatch.setattr(Runtime, "_stalled", stalled_then_open)

    def clock(self) -> float:
        self.now += self.tick
        return self.now

    def read_task(self, native_id: Optional[int]) -> Optional[TaskSample]:
        self.samples += 1
        if self.samples >= self.open_after:
            self.open()
        t = self.total
        t[0] += self.cpu
        t[1] += self.wait
        t[2] += self.runs
        t[3] += self.others
        if not self.shown:
            return None
        return TaskSample(self.state, t[0], t[1], int(t[2]))

    def open(self) -> None:
        if self.gate.locked():
            self.gate.release()

    def holder(self) -> None:
        self.gate.acquire()  # a real wait: the simulated kernel says what it looks like
        self.gate.release()


def run(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> Any:
    kernel.install(monkeypatch)
    return check_random(kernel.holder, iterations=1, seed=0, raise_on_failure=False)


def blocked(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch, *said: str) -> None:
    """The run is reported blocked, saying each of ``said``, before the holder is let go."""
    result = run(kernel, monkeypatch)
    failure = result.failure
    assert failure is not None and failure.kind == "blocked", str(result)
    for text in said:
        assert text in failure.message
    assert kernel.samples < kernel.open_after


def test_a_holder_starved_of_cpu_is_not_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    # 12 s of wall time, 0.6 s of it on a CPU: the rest waiting for one.
    kernel = FakeKernel("R", cpu=0.05, wait=0.95)
    result = run(kernel, monkeypatch)
    assert result.ok, str(result)
    assert kernel.samples >= kernel.open_after  # the pause was watched throughout


def test_a_holder_waiting_for_the_gil_held_by_a_computing_thread_is_not_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Asleep at every sample, woken by the GIL's timed wait, while another thread of the
    # process computes all the time (a C call that keeps the GIL).
    kernel = FakeKernel("S", cpu=0.0001, runs=200, others=1.0)
    result = run(kernel, monkeypatch)
    assert result.ok, str(result)
    assert kernel.samples >= kernel.open_after


def test_a_holder_asleep_while_others_keep_busy_is_reported_at_the_backstop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every sleep excused as a possible wait for the busy threads, for ever: no stall.
    kernel = FakeKernel("S", cpu=0.0001, runs=200, others=5.0, tick=5.0, open_after=20)
    blocked(
        kernel, monkeypatch, "made no progress for 60 s of wall time, asleep while other threads"
    )


def test_a_holder_that_computes_is_reported_after_stall_timeout_of_cpu_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = FakeKernel("R", cpu=1.0)
    blocked(kernel, monkeypatch, "computed for 2 s of CPU time", "in holder")


def test_a_holder_asleep_and_never_woken_is_reported_within_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = FakeKernel("S", tick=0.1)  # 0.1 s per sample, no run, no CPU
    blocked(kernel, monkeypatch, "blocked in the kernel", "in holder")


def test_a_holder_never_woken_while_another_thread_computes_waits_the_full_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Asleep and never woken, but another thread of the process ran all the while: it may
    # hold what the holder waits for, so the half-second window does not apply.
    kernel = FakeKernel("S", tick=0.1, others=0.1)
    result = run(kernel, monkeypatch)
    assert result.ok, str(result)
    assert kernel.samples >= kernel.open_after


def test_a_holder_never_woken_for_the_full_limit_is_blocked_whoever_computes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = FakeKernel("S", tick=0.1, others=0.1, open_after=40)
    blocked(kernel, monkeypatch, "blocked in the kernel (asleep, not woken once in 2.0 s)")


def test_a_holder_that_polls_with_real_sleeps_is_reported_on_its_own_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Woken often (never "asleep for good"), little CPU, nobody else busy: its own time.
    kernel = FakeKernel("S", cpu=0.001, runs=100)
    blocked(kernel, monkeypatch, "of its own time")


def test_without_proc_wall_time_is_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel("R", shown=False)
    blocked(kernel, monkeypatch, "of wall time")


# ------------------------------------------------------------------- the real kernel


@linux_only
def test_the_kernel_shows_the_calling_thread_running_with_its_accounting() -> None:
    sample = _scheduler._read_task(threading.get_native_id())
    assert sample is not None
    assert sample.state == "R" and sample.runs >= 1 and sample.cpu > 0


def test_a_kernel_that_shows_no_accounting_leaves_the_wall_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Some sandboxes show the files with zeros: nothing there can be judged on.
    files = {"stat": b"7 (python) S 1 7 7 0 -1 0", "schedstat": b"0 0 0\n"}

    def fake_open(path: str, mode: str = "r") -> io.BytesIO:
        return io.BytesIO(files[path.rsplit("/", 1)[1]])

    monkeypatch.setattr(_scheduler, "open", fake_open, raising=False)
    assert _scheduler._read_task(7) is None
    files["schedstat"] = b"2000000000 500000000 42\n"
    assert _scheduler._read_task(7) == TaskSample("S", 2.0, 0.5, 42)


@linux_only
def test_a_socket_read_is_reported_at_once_with_its_call_site(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = socket.socketpair()
    stalled = Runtime._stalled

    def stalled_then_send(rt: Runtime, how: str) -> None:
        stalled(rt, how)
        theirs.send(b"x")  # the verdict is in: let the reader go

    monkeypatch.setattr(Runtime, "_stalled", stalled_then_send)

    def reads_a_socket() -> None:
        ours.recv(1)

    try:
        with pytest.raises(BlockedFailure) as info:
            check_random(reads_a_socket, iterations=1, seed=0, stall_timeout=60)
    finally:
        ours.close()
        theirs.close()
    assert "blocked in the kernel" in info.value.failure.message
    assert "in reads_a_socket" in info.value.failure.message


@linux_only
def test_time_sleep_through_an_uncontrolled_alias_is_reported_with_its_call_site() -> None:
    def sleeps_for_real() -> None:
        _OUTSIDE.pause(3.0)  # long enough for a loaded supervisor to sample it twice

    with pytest.raises(BlockedFailure) as info:
        check_random(sleeps_for_real, iterations=1, seed=0, stall_timeout=60)
    assert "blocked in the kernel" in info.value.failure.message
    assert "in sleeps_for_real" in info.value.failure.message
