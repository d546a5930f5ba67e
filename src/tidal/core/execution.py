"""The execution contract's values: what became of an action, and what an executor observed.

The protocols themselves (:class:`~tidal.core.executor.Executor`, ``Clock``) live in
:mod:`tidal.core.executor`, which stays interpreted (runtime-checkable protocols cannot be
compiled); these values are compiled, as they are built every round.

One protocol serves the simulator and the service. Only the executor and the clock differ:
the simulated executor applies actions to simulated jobs on a simulated clock, the Ray
executor to worker processes on a real fleet.

- :meth:`Executor.apply` takes a round's actions, in order, and answers each with an
  :class:`ActionResult`: ``APPLIED`` (the action took effect, and its state change is among
  the next observations), ``DEFERRED`` (not now, e.g. its devices are still being released;
  the next round decides again) or ``REFUSED`` with a reason (stale generation, a job in a
  state the action does not fit, a placement on an unknown node).
- :meth:`Executor.observe` returns what happened since the last call, as typed observations:
  :class:`~tidal.core.states.StateChange` (a job reached a state, with its generation and
  placement), :class:`ProgressReported`, :class:`CheckpointCommitted`,
  :class:`WorkerExited`, :class:`NodeJoined`, :class:`NodeLeft`. The loop folds them into
  its job table and its store, and a round runs when one of them changed something a policy
  could act on.

The loop is level-triggered: an action that was deferred, refused or lost is simply decided
again from the next snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from tidal.core.actions import Action
from tidal.core.fleet import Node
from tidal.core.states import StateChange


class Outcome(Enum):
    APPLIED = "applied"
    DEFERRED = "deferred"
    REFUSED = "refused"


@dataclass(slots=True, init=False, unsafe_hash=True)
class ActionResult:
    """What became of one action (immutable)."""

    action: Final[Action]
    outcome: Final[Outcome]
    reason: Final[str]

    def __init__(self, action: Action, outcome: Outcome, reason: str = "") -> None:
        self.action = action
        self.outcome = outcome
        self.reason = reason

    @property
    def applied(self) -> bool:
        return self.outcome is Outcome.APPLIED


@dataclass(slots=True, init=False, unsafe_hash=True)
class ProgressReported:
    """A running job's progress: ``step`` optimizer steps done, ``work_done`` in
    device-seconds at W devices (as :class:`~tidal.core.snapshot.JobView` counts it), and
    its current speed (0 when unknown)."""

    job_id: Final[str]
    at: Final[float]
    step: Final[int]
    work_done: Final[float]
    samples_per_s: Final[float]

    def __init__(
        self, job_id: str, at: float, step: int, work_done: float, samples_per_s: float = 0.0
    ) -> None:
        self.job_id = job_id
        self.at = at
        self.step = step
        self.work_done = work_done
        self.samples_per_s = samples_per_s


@dataclass(slots=True, init=False, unsafe_hash=True)
class CheckpointCommitted:
    """A job committed a checkpoint at ``step`` (what it resumes from after a failure)."""

    job_id: Final[str]
    at: Final[float]
    step: Final[int]

    def __init__(self, job_id: str, at: float, step: int) -> None:
        self.job_id = job_id
        self.at = at
        self.step = step


@dataclass(slots=True, init=False, unsafe_hash=True)
class WorkerExited:
    """One of a job's worker processes exited with ``code`` (negative: killed by that
    signal). ``detail`` holds the last lines of its output when it failed. The state change
    it leads to (succeeded, restarting, failed, preempted) is reported beside it."""

    job_id: Final[str]
    at: Final[float]
    worker: Final[int]
    code: Final[int]
    detail: Final[str]

    def __init__(self, job_id: str, at: float, worker: int, code: int, detail: str = "") -> None:
        self.job_id = job_id
        self.at = at
        self.worker = worker
        self.code = code
        self.detail = detail


@dataclass(slots=True, init=False, unsafe_hash=True)
class NodeJoined:
    """A node (its devices, of one type) joined the fleet, or came back."""

    node: Final[Node]
    at: Final[float]

    def __init__(self, node: Node, at: float) -> None:
        self.node = node
        self.at = at


@dataclass(slots=True, init=False, unsafe_hash=True)
class NodeLeft:
    """A node left the fleet (shut down, lost, or removed): jobs on it were failed over."""

    name: Final[str]
    at: Final[float]
    reason: Final[str]

    def __init__(self, name: str, at: float, reason: str = "") -> None:
        self.name = name
        self.at = at
        self.reason = reason


Observation = (
    StateChange | ProgressReported | CheckpointCommitted | WorkerExited | NodeJoined | NodeLeft
)


__all__ = [
    "ActionResult",
    "CheckpointCommitted",
    "NodeJoined",
    "NodeLeft",
    "Observation",
    "Outcome",
    "ProgressReported",
    "WorkerExited",
]
