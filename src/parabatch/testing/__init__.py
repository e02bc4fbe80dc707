"""parabatch.testing: a controlled scheduler that runs threads one at a time, by schedule.

A checked function (no arguments; raises on a bad outcome) starts threads with
:func:`spawn` or :class:`ControlledExecutor`; they run one at a time and switch only at
scheduling points (:func:`checkpoint`, :func:`simulated_call`, ``time.sleep``, lock
acquisition, optionally every line of chosen modules). Strategies pick the switches:
:func:`check_random`, :func:`check_pct`, :func:`check_dfs` (exhaustive within a preemption
bound), :func:`replay`, and :func:`schedules` for Hypothesis. Every failure prints its
schedule and the line that replays it. See docs/scheduler.md. Imports no pytest.

On top of it, :func:`verify_batch_node` checks any batch node with
``PflowBatchNode``'s constructor against every property (ordering, params isolation, retry
accounting, exactly-once, call accounting, the concurrency bound, fail_fast) and returns a
jcstress-style :class:`OutcomeTable`; :mod:`parabatch.testing.broken` holds the
known-broken subjects it must catch. See docs/stress.md.

Example:
    >>> from parabatch.testing import check_dfs, checkpoint, spawn
    >>> def lost_update():
    ...     box = {"n": 0}
    ...     def incr():
    ...         v = box["n"]
    ...         checkpoint("read")
    ...         box["n"] = v + 1
    ...     for t in [spawn(incr), spawn(incr)]:
    ...         t.join()
    ...     assert box["n"] == 2, box
    >>> result = check_dfs(lost_update, max_preemptions=2, raise_on_failure=False)
    >>> result.failure.kind, result.failure.preemptions
    ('exception', 1)
"""

from __future__ import annotations

from ._check import check_dfs as check_dfs
from ._check import check_pct as check_pct
from ._check import check_random as check_random
from ._check import check_stress as check_stress
from ._check import replay as replay
from ._errors import BlockedFailure as BlockedFailure
from ._errors import DeadlockFailure as DeadlockFailure
from ._errors import NondeterminismFailure as NondeterminismFailure
from ._errors import RefusedFailure as RefusedFailure
from ._errors import ScheduleFailure as ScheduleFailure
from ._errors import SchedulerUsageError as SchedulerUsageError
from ._errors import StepLimitFailure as StepLimitFailure
from ._errors import UncontrolledThreadError as UncontrolledThreadError
from ._errors import UncontrolledThreadFailure as UncontrolledThreadFailure
from ._executor import ControlledExecutor as ControlledExecutor
from ._executor import ControlledFuture as ControlledFuture
from ._group_subject import GroupAsBatch as GroupAsBatch
from ._hypothesis import schedules as schedules
from ._outcomes import OutcomeTable as OutcomeTable
from ._scheduler import ThreadHandle as ThreadHandle
from ._scheduler import checkpoint as checkpoint
from ._scheduler import simulated_call as simulated_call
from ._scheduler import spawn as spawn
from ._strategies import Schedule as Schedule
from ._strategies import format_schedule as format_schedule
from ._strategies import parse_schedule as parse_schedule
from ._strategies import pct_iterations as pct_iterations
from ._sync import Lock as Lock
from ._sync import RLock as RLock
from ._trace import CheckResult as CheckResult
from ._trace import Failure as Failure
from ._verify import Counterexample as Counterexample
from ._verify import Probe as Probe
from ._verify import Scenario as Scenario
from ._verify import VerifyReport as VerifyReport
from ._verify import detection as detection
from ._verify import replay_scenario as replay_scenario
from ._verify import scenarios as scenarios
from ._verify import shrink as shrink
from ._verify import verify_batch_node as verify_batch_node

__all__ = [
    "BlockedFailure",
    "CheckResult",
    "ControlledExecutor",
    "ControlledFuture",
    "Counterexample",
    "DeadlockFailure",
    "Failure",
    "GroupAsBatch",
    "Lock",
    "NondeterminismFailure",
    "OutcomeTable",
    "Probe",
    "RLock",
    "RefusedFailure",
    "Scenario",
    "Schedule",
    "ScheduleFailure",
    "SchedulerUsageError",
    "StepLimitFailure",
    "ThreadHandle",
    "UncontrolledThreadError",
    "UncontrolledThreadFailure",
    "VerifyReport",
    "check_dfs",
    "check_pct",
    "check_random",
    "check_stress",
    "checkpoint",
    "detection",
    "format_schedule",
    "parse_schedule",
    "pct_iterations",
    "replay",
    "replay_scenario",
    "scenarios",
    "schedules",
    "shrink",
    "simulated_call",
    "spawn",
    "verify_batch_node",
]
