"""The job lifecycle: one Enum that knows its terminal states and legal moves."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from tidal.core.errors import TransitionError


class JobState(Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    PREEMPTED = "preempted"
    RESTARTING = "restarting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    # Membership is tested on the value strings: hashing an Enum member runs Python code,
    # and these two are asked for every job in every scheduling round.
    @property
    def is_terminal(self) -> bool:
        return self._value_ in _TERMINAL_VALUES

    @property
    def holds_devices(self) -> bool:
        """Whether a job in this state occupies devices."""
        return self._value_ in _HOLDING_VALUES

    def can_become(self, new: JobState) -> bool:
        return new in _ALLOWED[self]


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_HOLDING = frozenset({JobState.STARTING, JobState.RUNNING, JobState.STOPPING, JobState.RESTARTING})
_TERMINAL_VALUES = frozenset(s.value for s in _TERMINAL)
_HOLDING_VALUES = frozenset(s.value for s in _HOLDING)
_END = {JobState.FAILED, JobState.CANCELLED}
_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.STARTING, *_END}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.STOPPING, JobState.RESTARTING, *_END}),
    JobState.RUNNING: frozenset(
        {JobState.STOPPING, JobState.RESTARTING, JobState.SUCCEEDED, *_END}
    ),
    JobState.STOPPING: frozenset({JobState.PREEMPTED, JobState.SUCCEEDED, *_END}),
    JobState.PREEMPTED: frozenset({JobState.STARTING, *_END}),
    JobState.RESTARTING: frozenset({JobState.RUNNING, JobState.STOPPING, *_END}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


@dataclass(slots=True, init=False, unsafe_hash=True)
class StateChange:
    """A recorded state change: the one event every transition produces (immutable)."""

    job_id: Final[str]
    old: Final[JobState]
    new: Final[JobState]
    at: Final[float]
    reason: Final[str]

    def __init__(self, job_id: str, old: JobState, new: JobState, at: float, reason: str) -> None:
        self.job_id = job_id
        self.old = old
        self.new = new
        self.at = at
        self.reason = reason


def transition(job_id: str, old: JobState, new: JobState, at: float, reason: str) -> StateChange:
    """The one place that validates a state change and describes it as an event."""
    if not old.can_become(new):
        raise TransitionError(
            f"job {job_id!r}: illegal state change {old.value} -> {new.value} ({reason})"
        )
    return StateChange(job_id=job_id, old=old, new=new, at=at, reason=reason)
