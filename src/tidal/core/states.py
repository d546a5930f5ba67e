"""The job lifecycle: one Enum, one table of how the scheduler treats each state, and the
one function that changes a job's state.

::

    PENDING → STARTING → RUNNING → SUCCEEDED | FAILED | CANCELLED
                         RUNNING → STOPPING → PREEMPTED → STARTING    (preempt, resize, migrate)
              STARTING | RUNNING → RESTARTING → STARTING               (worker or node failure)

A job that fails (a worker exits with an error, its node leaves) releases its devices and
waits in ``RESTARTING`` to be placed again and resume from its last checkpoint, perhaps
smaller and on other nodes; after its allowed number of restarts it is ``FAILED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from tidal.core.errors import TransitionError
from tidal.core.placement import EMPTY, Placement


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

    # Membership is tested on the value strings: hashing an Enum member runs Python code.
    @property
    def is_terminal(self) -> bool:
        return self._value_ in _TERMINAL_VALUES

    @property
    def holds_devices(self) -> bool:
        """Whether a job in this state occupies devices."""
        return self._value_ in _HOLDING_VALUES

    @property
    def phase(self) -> Phase:
        """How the scheduler treats a job in this state (see :class:`Phase`)."""
        return _PHASE_OF_VALUE[self._value_]

    def can_become(self, new: JobState) -> bool:
        return new in _ALLOWED[self]


class Phase(Enum):
    """How a scheduling round treats a job, by its state."""

    WAITING = "waiting"  # holds no devices and may be started: pending, preempted, restarting
    ACTIVE = "active"  # holds devices it may keep, resize, move or lose: starting, running
    STOPPING = "stopping"  # holds devices it is releasing: left alone until it settles
    DONE = "done"  # terminal


# The one table of states by phase. Hot loops test membership in the tuples below (a
# tuple compares by identity first, at C speed; hashing an Enum member runs Python code).
_PHASES: Final[dict[JobState, Phase]] = {
    JobState.PENDING: Phase.WAITING,
    JobState.PREEMPTED: Phase.WAITING,
    JobState.RESTARTING: Phase.WAITING,
    JobState.STARTING: Phase.ACTIVE,
    JobState.RUNNING: Phase.ACTIVE,
    JobState.STOPPING: Phase.STOPPING,
    JobState.SUCCEEDED: Phase.DONE,
    JobState.FAILED: Phase.DONE,
    JobState.CANCELLED: Phase.DONE,
}
WAITING_STATES: Final[tuple[JobState, ...]] = tuple(
    s for s, p in _PHASES.items() if p is Phase.WAITING
)
ACTIVE_STATES: Final[tuple[JobState, ...]] = tuple(
    s for s, p in _PHASES.items() if p is Phase.ACTIVE
)
_PHASE_OF_VALUE: Final[dict[str, Phase]] = {s.value: p for s, p in _PHASES.items()}
_TERMINAL_VALUES: Final = frozenset(s.value for s, p in _PHASES.items() if p is Phase.DONE)
_HOLDING_VALUES: Final = frozenset(
    s.value for s, p in _PHASES.items() if p is Phase.ACTIVE or p is Phase.STOPPING
)
_END = {JobState.FAILED, JobState.CANCELLED}
_ALLOWED: Final[dict[JobState, frozenset[JobState]]] = {
    JobState.PENDING: frozenset({JobState.STARTING, *_END}),
    # A job may end before it was seen running (a short job, a start that fails).
    JobState.STARTING: frozenset(
        {JobState.RUNNING, JobState.STOPPING, JobState.RESTARTING, JobState.SUCCEEDED, *_END}
    ),
    JobState.RUNNING: frozenset(
        {JobState.STOPPING, JobState.RESTARTING, JobState.SUCCEEDED, *_END}
    ),
    JobState.STOPPING: frozenset({JobState.PREEMPTED, JobState.SUCCEEDED, *_END}),
    JobState.PREEMPTED: frozenset({JobState.STARTING, *_END}),
    JobState.RESTARTING: frozenset({JobState.STARTING, *_END}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


@dataclass(slots=True, init=False, unsafe_hash=True)
class StateChange:
    """A job reached a new state: the one event every transition produces, recorded in
    the job's history and reported by executors as an observation (immutable).

    ``generation`` is the job's generation after the change (executors count the changes
    of each job, and refuse an action made for an older generation); ``placement`` is
    what the job holds after it.
    """

    job_id: Final[str]
    old: Final[JobState]
    new: Final[JobState]
    at: Final[float]
    reason: Final[str]
    generation: Final[int]
    placement: Final[Placement]

    def __init__(
        self,
        job_id: str,
        old: JobState,
        new: JobState,
        at: float,
        reason: str,
        generation: int = 0,
        placement: Placement = EMPTY,
    ) -> None:
        self.job_id = job_id
        self.old = old
        self.new = new
        self.at = at
        self.reason = reason
        self.generation = generation
        self.placement = placement


def transition(
    job_id: str,
    old: JobState,
    new: JobState,
    at: float,
    reason: str,
    generation: int = 0,
    placement: Placement = EMPTY,
) -> StateChange:
    """The one place that validates a state change and describes it as an event."""
    if not old.can_become(new):
        raise TransitionError(
            f"job {job_id!r}: illegal state change {old.value} -> {new.value} ({reason})"
        )
    return StateChange(job_id, old, new, at, reason, generation, placement)
