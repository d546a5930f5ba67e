"""The books of a live fleet's jobs: one record per job, and the lifecycle steps that change it.

The service's reconcile loop and its executor share one :class:`JobBook` (as the simulator's
engine and executor share their table of simulated jobs): the loop adds submitted jobs and
builds each round's snapshot from the records; the executor moves them through the lifecycle
as it acts and as it sees workers start, stop and exit. Every step goes through
:func:`tidal.core.states.transition` and queues the resulting
:class:`~tidal.core.states.StateChange`; :meth:`JobBook.drain` hands them to the executor's
``observe``. The test executor (:class:`tidal.core.fake.FakeExecutor`) keeps the same books.

Failure rules, in one place:

- a worker that exits with an error while the job runs, or a start that fails, puts the job
  in ``RESTARTING`` (its devices released; it resumes from its last checkpoint wherever the
  policy places it next) while it has restarts left (``JobSpec.max_restarts``), then
  ``FAILED``; exit code 2 ("refused before starting": wrong world size, bad arguments)
  fails at once, since a retry would be refused again;
- a node that leaves puts its jobs in ``RESTARTING`` without counting a restart: it was not
  the job's fault;
- a stop that misses its deadline is a kill: the job is ``PREEMPTED`` and resumes from its
  last checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from tidal.core.actions import NO_DEADLINE, Action
from tidal.core.errors import TransitionError
from tidal.core.execution import Observation
from tidal.core.placement import EMPTY, Placement
from tidal.core.snapshot import JobView
from tidal.core.spec import JobSpec
from tidal.core.states import ACTIVE_STATES, WAITING_STATES, JobState, transition

# The launch contract's exit codes (DESIGN.md, "Launch").
EXIT_OK = 0
EXIT_REFUSED = 2  # refused before starting: a retry would be refused again
EXIT_PREEMPTED = 75  # stopped at a consistent cut, resumable (EX_TEMPFAIL)

_STARTING = JobState.STARTING
_RUNNING = JobState.RUNNING
_STOPPING = JobState.STOPPING


class LiveJob:
    """Where one live job stands (mutable; only :class:`JobBook` changes it)."""

    __slots__ = (
        "attained",
        "cancelling",
        "estimate",
        "generation",
        "last_checkpoint_at",
        "last_step",
        "next_placement",
        "placed_at",
        "placement",
        "preemptions",
        "restart_cost",
        "restarts",
        "settled_at",
        "spec",
        "state",
        "step",
        "stop_cost",
        "stop_deadline",
        "work_done",
    )

    def __init__(self, spec: JobSpec, now: float) -> None:
        self.spec = spec
        self.state = JobState.PENDING
        self.placement: Placement = EMPTY
        self.generation = 0
        self.restarts = 0  # restarts after failures, counted against spec.max_restarts
        self.preemptions = 0
        self.placed_at: float | None = None
        self.last_checkpoint_at: float | None = None
        self.step = 0  # optimizer steps done (the last progress report)
        self.last_step = 0  # the step of the last committed checkpoint
        self.work_done = 0.0
        self.attained = 0.0  # device-seconds held while RUNNING
        self.settled_at = now
        self.estimate: float | None = None
        self.stop_cost = 0.0
        self.restart_cost = 0.0
        self.stop_deadline = NO_DEADLINE
        self.next_placement: Placement | None = None  # set while stopping for a move
        self.cancelling = False

    @property
    def id(self) -> str:
        return self.spec.id

    def settle(self, now: float) -> None:
        """Bring attained service up to ``now``."""
        dt = now - self.settled_at
        if dt > 0.0:
            if self.state is _RUNNING:
                self.attained += self.placement.size * dt
            self.settled_at = now

    def view(self, now: float) -> JobView:
        """The job as the scheduler sees it at ``now``."""
        self.settle(now)
        return JobView(
            self.spec,
            self.state,
            self.placement,
            self.work_done,
            self.attained,
            self.placed_at,
            self.last_checkpoint_at,
            self.preemptions,
            self.generation,
            self.stop_cost,
            self.restart_cost,
        )


class JobBook:
    """Every live job's record, by id, and the lifecycle steps (see the module docs)."""

    def __init__(self) -> None:
        self._records: dict[str, LiveJob] = {}
        self._changes: list[Observation] = []

    # --- the table ---------------------------------------------------------------------

    def add(self, spec: JobSpec, now: float) -> LiveJob:
        if spec.id in self._records:
            raise TransitionError(f"job {spec.id!r} is already in the book")
        record = self._records[spec.id] = LiveJob(spec, now)
        return record

    def adopt(self, record: LiveJob) -> None:
        """Take over a record rebuilt from the store (after a restart of the service)."""
        if record.id in self._records:
            raise TransitionError(f"job {record.id!r} is already in the book")
        self._records[record.id] = record

    def get(self, job_id: str) -> LiveJob | None:
        return self._records.get(job_id)

    def __getitem__(self, job_id: str) -> LiveJob:
        return self._records[job_id]

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._records

    def __iter__(self) -> Iterator[LiveJob]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def forget(self, job_id: str) -> None:
        """Drop a job that reached a terminal state."""
        record = self._records.get(job_id)
        if record is not None and not record.state.is_terminal:
            raise TransitionError(f"job {job_id!r} is {record.state.value}: not done, kept")
        self._records.pop(job_id, None)

    def drain(self) -> list[Observation]:
        """The state changes since the last call, oldest first."""
        changes = self._changes
        self._changes = []
        return changes

    def refusal(self, action: Action) -> str:
        """Why ``action`` must be refused before anything is done ("" if it may go on):
        an unknown job, or one that changed since the action was decided."""
        record = self._records.get(action.job_id)
        if record is None:
            return f"unknown job {action.job_id!r}"
        if action.generation != record.generation:
            return (
                f"stale: job {record.id!r} is at generation {record.generation}, "
                f"the action was decided at {action.generation}"
            )
        return ""

    # --- lifecycle steps ---------------------------------------------------------------

    def _move(
        self, record: LiveJob, new: JobState, now: float, reason: str, placement: Placement
    ) -> None:
        record.settle(now)
        generation = record.generation + 1
        change = transition(record.id, record.state, new, now, reason, generation, placement)
        record.state = new
        record.generation = generation
        record.placement = placement
        self._changes.append(change)

    def start(self, record: LiveJob, placement: Placement, now: float, reason: str) -> None:
        """A waiting job is being started on ``placement`` (its workers are launching)."""
        if record.state not in WAITING_STATES:
            raise TransitionError(f"job {record.id!r}: cannot start from {record.state.value}")
        record.placed_at = now
        record.next_placement = None
        record.stop_deadline = NO_DEADLINE
        self._move(record, _STARTING, now, reason or "start", placement)

    def running(self, record: LiveJob, now: float, reason: str = "workers running") -> None:
        """Every worker of a starting job is up."""
        if record.state is _STARTING:
            self._move(record, _RUNNING, now, reason, record.placement)

    def stop(
        self,
        record: LiveJob,
        now: float,
        reason: str,
        deadline: float = NO_DEADLINE,
        next_placement: Placement | None = None,
    ) -> None:
        """Ask a job holding devices to stop at a consistent cut by ``deadline``; with
        ``next_placement`` (a resize or migration) it starts there once stopped, and holds
        the union of both placements meanwhile."""
        if record.state not in ACTIVE_STATES:
            raise TransitionError(f"job {record.id!r}: cannot stop from {record.state.value}")
        record.stop_deadline = deadline
        record.next_placement = next_placement
        record.preemptions += 1
        held = (
            record.placement if next_placement is None else record.placement.union(next_placement)
        )
        self._move(record, _STOPPING, now, reason or "stop", held)

    def stopped(self, record: LiveJob, now: float, committed: bool, reason: str = "") -> None:
        """A stopping job's workers are gone; ``committed``: at a new checkpoint (else it
        resumes from its last one). It is then PREEMPTED, or CANCELLED if it was being
        cancelled, or STARTING at its next placement if it was moving."""
        if record.state is not _STOPPING:
            raise TransitionError(f"job {record.id!r}: not stopping ({record.state.value})")
        if committed:
            record.last_checkpoint_at = now
            record.last_step = record.step
        if record.cancelling:
            self._move(record, JobState.CANCELLED, now, reason or "cancelled", EMPTY)
            return
        nxt = record.next_placement
        record.next_placement = None
        record.stop_deadline = NO_DEADLINE
        record.placed_at = None
        what = reason or ("checkpointed" if committed else "stopped without a new checkpoint")
        self._move(record, JobState.PREEMPTED, now, what, EMPTY)
        if nxt is not None:
            self.start(record, nxt, now, "restarting after move")

    def overdue(self, now: float) -> list[LiveJob]:
        """Stopping jobs whose deadline has passed: the executor kills their workers and
        reports them :meth:`stopped` without a commit."""
        return [
            r
            for r in self._records.values()
            if r.state is _STOPPING and not math.isinf(r.stop_deadline) and now >= r.stop_deadline
        ]

    def cancel(self, record: LiveJob, now: float, reason: str) -> bool:
        """End the job for good. True if it holds workers the executor must stop first
        (it is then STOPPING, and :meth:`stopped` makes it CANCELLED)."""
        state = record.state
        why = reason or "cancelled"
        if state.is_terminal:
            raise TransitionError(f"job {record.id!r} is already {state.value}")
        if state in WAITING_STATES:
            self._move(record, JobState.CANCELLED, now, why, EMPTY)
            return False
        record.cancelling = True
        record.next_placement = None
        if state is not _STOPPING:
            record.stop_deadline = now
            self._move(record, _STOPPING, now, why, record.placement)
        return True

    def exited(self, record: LiveJob, now: float, code: int, detail: str = "") -> None:
        """The job's workers are gone: ``code`` is the first non-zero exit code among
        them, or 0 if every worker exited 0."""
        state = record.state
        if state is _STOPPING:
            self.stopped(record, now, committed=code == EXIT_PREEMPTED)
            return
        if state not in ACTIVE_STATES:
            raise TransitionError(f"job {record.id!r}: no workers to exit ({state.value})")
        if code == EXIT_OK:
            record.work_done = max(record.work_done, record.estimate or 0.0)
            self._move(record, JobState.SUCCEEDED, now, "every worker exited 0", EMPTY)
            return
        if code == EXIT_PREEMPTED:  # stopped by someone else (a node's own SIGTERM)
            record.last_checkpoint_at = now
            record.last_step = record.step
            record.placed_at = None
            self._move(record, JobState.PREEMPTED, now, "stopped at a consistent cut", EMPTY)
            return
        what = f"worker exited with {_describe(code)}"
        if detail:
            what += f": {detail}"
        if code == EXIT_REFUSED:
            self._move(record, JobState.FAILED, now, f"refused to start ({what})", EMPTY)
            return
        self.failed(record, now, what, counted=True)

    def failed(self, record: LiveJob, now: float, reason: str, counted: bool) -> None:
        """The job's workers failed or were lost: RESTARTING from its last checkpoint, or
        FAILED once ``counted`` failures exceed its restarts."""
        if counted:
            record.restarts += 1
            if record.restarts > record.spec.max_restarts:
                limit = record.spec.max_restarts
                self._move(
                    record,
                    JobState.FAILED,
                    now,
                    f"{reason} (failed {record.restarts} times; {limit} restarts allowed)",
                    EMPTY,
                )
                return
        record.placed_at = None
        record.next_placement = None
        record.stop_deadline = NO_DEADLINE
        self._move(record, JobState.RESTARTING, now, reason, EMPTY)

    def node_lost(self, record: LiveJob, now: float, node: str) -> None:
        """A node the job runs on left the fleet: restart it elsewhere (not counted)."""
        state = record.state
        if state is _STOPPING:
            self.stopped(record, now, committed=False, reason=f"node {node} left while stopping")
        elif state in ACTIVE_STATES:
            self.failed(record, now, f"node {node} left the fleet", counted=False)

    def progress(self, record: LiveJob, now: float, step: int, work_done: float) -> None:
        record.settle(now)
        record.step = step
        record.work_done = work_done

    def committed(self, record: LiveJob, now: float, step: int) -> None:
        record.last_checkpoint_at = now
        record.last_step = step


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {-code}"
    if code > 128:
        return f"code {code} (signal {code - 128}?)"
    return f"code {code}"


__all__ = ["EXIT_OK", "EXIT_PREEMPTED", "EXIT_REFUSED", "JobBook", "LiveJob"]
