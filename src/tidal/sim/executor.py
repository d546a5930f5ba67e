"""The simulated executor: applies a plan's actions to simulated jobs and devices.

It implements :class:`tidal.core.execution.Executor`, as the service's Ray executor does,
and is the only simulated part besides the clock. Every state change goes through
:func:`tidal.core.transition` and is reported by :meth:`SimExecutor.observe`. Costs come from
:class:`~tidal.sim.costs.CostModel`:

- ``Start``: the job holds its devices in STARTING for the restart time (nothing on its
  first start), then RUNNING.
- ``Stop`` with checkpoint: STOPPING, holding its devices, for the checkpoint time, then
  PREEMPTED with its progress kept. A job still STARTING has nothing new to save and stops
  at once.
- ``Stop`` without checkpoint (a kill): PREEMPTED at once; progress since its last
  checkpoint is lost (the device-time that produced it counts as lost).
- ``Resize``/``Migrate``: STOPPING for the checkpoint time holding the union of its old and
  new devices (per node, the larger count), then PREEMPTED → STARTING on the new devices
  for the restart time (+ ``resize_extra_s``), then RUNNING.
- A stop whose checkpoint would end after the action's ``deadline`` ends at the deadline as
  a kill instead (progress since the last checkpoint is lost).
- ``Cancel``: a job holding devices releases them at once; CANCELLED.
- An action decided for an older generation of its job is refused as stale.

Devices a plan hands on from a job that is still checkpointing are not free yet: an action
that needs them is deferred (not applied); the next round, when they are free, decides
again. An action that would overcommit devices nobody is releasing, or that does not fit
its job's state, is refused; the engine takes any refusal for a policy bug and raises
:class:`~tidal.sim.errors.PolicyActionError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from tidal.core import (
    EMPTY,
    Action,
    Cancel,
    Fleet,
    JobState,
    Migrate,
    Placement,
    Resize,
    Start,
    Stop,
    transition,
)
from tidal.core.execution import ActionResult, Observation, Outcome
from tidal.core.states import WAITING_STATES
from tidal.sim.clock import SimClock
from tidal.sim.costs import CostModel
from tidal.sim.records import SimJob

logger = logging.getLogger(__name__)

PHASE_END = 1
FINISH = 2

_PENDING = JobState.PENDING
_STARTING = JobState.STARTING
_RUNNING = JobState.RUNNING
_STOPPING = JobState.STOPPING
_PREEMPTED = JobState.PREEMPTED
_SUCCEEDED = JobState.SUCCEEDED
_CANCELLED = JobState.CANCELLED
_APPLIED = Outcome.APPLIED
_DEFERRED = Outcome.DEFERRED
_REFUSED = Outcome.REFUSED

Schedule = Callable[[float, int, SimJob], None]


class _Refusal(Exception):
    """An action that cannot be applied; its message is the reason."""


class SimExecutor:
    """Applies actions at the clock's current time and keeps the device books.

    ``jobs`` is the engine's table of live jobs by id (shared, not copied): the jobs the
    actions name. Timed events (the ends of checkpoints and restarts, completions) are
    handed to ``schedule`` and come back through :meth:`phase_end` and :meth:`finish`.
    """

    def __init__(
        self,
        fleet: Fleet,
        costs: CostModel,
        clock: SimClock,
        schedule: Schedule,
        jobs: Mapping[str, SimJob],
    ) -> None:
        self._fleet = fleet
        self._costs = costs
        self._clock = clock
        self._schedule = schedule
        self._jobs = jobs
        self.free: dict[str, int] = {n.name: n.devices for n in fleet.nodes}
        self.allocated = 0
        self.usage_t: list[float] = [clock.now()]
        self.usage_n: list[int] = [0]
        self._changes: list[Observation] = []
        self._stopping: dict[str, SimJob] = {}

    # --- the Executor protocol ---------------------------------------------------------

    def apply(self, actions: Sequence[Action]) -> list[ActionResult]:
        """Apply ``actions`` in order, now."""
        results: list[ActionResult] = []
        jobs = self._jobs
        now = self._clock.now()
        for action in actions:
            job = jobs.get(action.job_id)
            if job is None:
                results.append(ActionResult(action, _REFUSED, f"unknown job {action.job_id!r}"))
                continue
            if action.generation != job.generation:
                results.append(
                    ActionResult(
                        action,
                        _REFUSED,
                        f"stale: job {job.id!r} is at generation {job.generation}, "
                        f"the action was decided at {action.generation}",
                    )
                )
                continue
            job.settle(now)
            try:
                done = self._apply(job, action)
            except _Refusal as refusal:
                results.append(ActionResult(action, _REFUSED, str(refusal)))
                continue
            results.append(ActionResult(action, _APPLIED if done else _DEFERRED))
        return results

    def observe(self) -> list[Observation]:
        """The state changes since the last call, oldest first."""
        changes = self._changes
        self._changes = []
        return changes

    # --- actions -----------------------------------------------------------------------

    def _apply(self, job: SimJob, action: Action) -> bool:
        """Apply ``action`` to ``job``: False if it had to be deferred."""
        if isinstance(action, Start):
            return self._start(job, action.placement, action.reason)
        if isinstance(action, Stop):
            self._stop(job, action.checkpoint, action.reason, action.deadline)
            return True
        if isinstance(action, Resize):
            return self._move(job, action.new, True, action.reason, action.deadline)
        if isinstance(action, Migrate):
            return self._move(job, action.new, False, action.reason, action.deadline)
        if isinstance(action, Cancel):
            self._cancel(job, action.reason)
            return True
        raise _Refusal(f"unknown action {action!r}")

    def _start(self, job: SimJob, placement: Placement, reason: str) -> bool:
        if job.state not in WAITING_STATES:
            raise _Refusal(f"Start for job {job.id!r} in state {job.state.value}")
        if not self._take(job, placement.parts):
            return False
        now = self._clock.now()
        self._set_placement(job, placement)
        job.placed_at = now
        self._move_state(job, _STARTING, reason or "start")
        if job.first_start is None:
            job.first_start = now
            delay = 0.0
        else:
            delay = self._costs.restart_time(job.spec)
        self._begin_starting(job, delay)
        return True

    def _stop(self, job: SimJob, checkpoint: bool, reason: str, deadline: float) -> None:
        state = job.state
        if state is not _RUNNING and state is not _STARTING:
            raise _Refusal(f"Stop for job {job.id!r} in state {state.value}")
        job.preemptions += 1
        job.version += 1
        job.rate = 0.0
        self._move_state(job, _STOPPING, reason or ("stop" if checkpoint else "kill"))
        if state is not _RUNNING:  # nothing done since the last checkpoint
            self._stopped(job, committed=False)
        elif not checkpoint:
            self._lose_uncommitted(job)
            self._stopped(job, committed=False)
        else:
            job.next_placement = None
            self._pause(job, self._costs.checkpoint_time(job.spec), deadline)

    def _cancel(self, job: SimJob, reason: str) -> None:
        state = job.state
        why = reason or "cancelled"
        if state.is_terminal:
            raise _Refusal(f"Cancel for job {job.id!r}, which is already {state.value}")
        job.version += 1
        job.rate = 0.0
        self._stopping.pop(job.id, None)
        if state.holds_devices:
            if state is not _STOPPING:
                self._move_state(job, _STOPPING, why)
            self._release(job.placement.parts)
            self._set_placement(job, EMPTY)
            job.next_placement = None
            job.placed_at = None
        self._move_state(job, _CANCELLED, why)

    def _move(
        self, job: SimJob, new: Placement, resize: bool, reason: str, deadline: float
    ) -> bool:
        state = job.state
        if state is not _RUNNING and state is not _STARTING:
            what = "Resize" if resize else "Migrate"
            raise _Refusal(f"{what} for job {job.id!r} in state {state.value}")
        old = job.placement
        if new == old:
            return True
        old_parts = dict(old.parts)
        union = dict(old_parts)
        for node, count in new.parts:
            if count > union.get(node, 0):
                union[node] = count
        extra = [(n, c - old_parts.get(n, 0)) for n, c in union.items() if c > old_parts.get(n, 0)]
        if not self._take(job, extra):
            return False
        if resize:
            job.resizes += 1
        else:
            job.migrations += 1
        job.placed_at = self._clock.now()
        job.version += 1
        job.rate = 0.0
        self._set_placement(job, Placement.of(union))
        job.next_placement = new
        self._move_state(job, _STOPPING, reason or ("resize" if resize else "migrate"))
        if state is _RUNNING:
            self._pause(job, self._costs.checkpoint_time(job.spec), deadline)
        else:
            self._moved(job, committed=False)
        return True

    # --- timed phases ------------------------------------------------------------------

    def phase_end(self, job: SimJob, version: int) -> bool:
        """A checkpoint or restart finished. True if that released devices (the only
        outcome a new round could act on); False for a restart or a stale event."""
        if version != job.version:
            return False
        job.settle(self._clock.now())
        if job.state is _STARTING:
            self._run(job)
            return False
        held = job.size
        committed = not job.kill_at_phase_end
        if not committed:  # the stop ran out of time: killed at its deadline
            job.kill_at_phase_end = False
            self._lose_uncommitted(job)
        if job.next_placement is not None:
            self._moved(job, committed=committed)
        else:
            self._stopped(job, committed=committed)
        return job.size < held

    def finish(self, job: SimJob, version: int) -> bool:
        """The job's work is done. False if the event is stale."""
        if version != job.version:
            return False
        now = self._clock.now()
        job.settle(now)
        job.work_done = job.spec.work
        job.finish = now
        job.version += 1
        self._release(job.placement.parts)
        self._set_placement(job, EMPTY)
        self._move_state(job, _SUCCEEDED, "work done")
        return True

    def _pause(self, job: SimJob, delay: float, deadline: float) -> None:
        now = self._clock.now()
        if now + delay > deadline:  # the checkpoint would finish too late: kill then
            delay = max(0.0, deadline - now)
            job.kill_at_phase_end = True
        if delay > 0.0:
            self._stopping[job.id] = job
            self._schedule(now + delay, PHASE_END, job)
        elif job.kill_at_phase_end:
            job.kill_at_phase_end = False
            self._lose_uncommitted(job)
            if job.next_placement is not None:
                self._moved(job, committed=False)
            else:
                self._stopped(job, committed=False)
        elif job.next_placement is not None:
            self._moved(job, committed=True)
        else:
            self._stopped(job, committed=True)

    def _begin_starting(self, job: SimJob, delay: float) -> None:
        if delay > 0.0:
            job.version += 1
            self._schedule(self._clock.now() + delay, PHASE_END, job)
        else:
            self._run(job)

    def _run(self, job: SimJob) -> None:
        self._move_state(job, _RUNNING, "started")
        world = job.spec.world
        job.rate = world * self._costs.speed(world, job.size)
        job.version += 1
        remaining = job.spec.work - job.work_done
        when = self._clock.now() + (remaining / job.rate if remaining > 0.0 else 0.0)
        self._schedule(when, FINISH, job)

    def _lose_uncommitted(self, job: SimJob) -> None:
        """A kill: the job falls back to its last checkpoint."""
        job.killed_s += job.since_ckpt_s
        job.since_ckpt_s = 0.0
        job.work_done = job.ckpt_work

    def _committed(self, job: SimJob) -> None:
        job.last_checkpoint_at = self._clock.now()
        job.ckpt_work = job.work_done
        job.since_ckpt_s = 0.0

    def _stopped(self, job: SimJob, committed: bool) -> None:
        self._stopping.pop(job.id, None)
        if committed:
            self._committed(job)
        self._release(job.placement.parts)
        self._set_placement(job, EMPTY)
        job.placed_at = None
        self._move_state(job, _PREEMPTED, "checkpointed" if committed else "stopped")

    def _moved(self, job: SimJob, committed: bool) -> None:
        self._stopping.pop(job.id, None)
        if committed:
            self._committed(job)
        new = job.next_placement or EMPTY
        job.next_placement = None
        self._move_state(job, _PREEMPTED, "checkpointed for move" if committed else "moving", EMPTY)
        keep = dict(new.parts)
        self._release((n, c - keep.get(n, 0)) for n, c in job.placement.parts)
        self._set_placement(job, new)
        self._move_state(job, _STARTING, "restarting after move")
        costs = self._costs
        self._begin_starting(job, costs.restart_time(job.spec) + costs.resize_extra_s)

    # --- books -------------------------------------------------------------------------

    def _move_state(
        self, job: SimJob, new: JobState, reason: str, placement: Placement | None = None
    ) -> None:
        """Change ``job``'s state (through :func:`transition`) and report it; the change
        names ``placement``, by default what the job holds now."""
        generation = job.generation + 1
        change = transition(
            job.spec.id,
            job.state,
            new,
            self._clock.now(),
            reason,
            generation,
            job.placement if placement is None else placement,
        )
        job.state = new
        job.generation = generation
        self._changes.append(change)

    def _set_placement(self, job: SimJob, placement: Placement) -> None:
        job.placement = placement
        job.size = placement.size

    def _take(self, job: SimJob, parts: Iterable[tuple[str, int]]) -> bool:
        parts = tuple(parts)
        free = self.free
        for node, count in parts:
            have = free[node]
            if count > have:
                draining = self._draining(node)
                if count <= have + draining:
                    logger.debug("deferred job %s: node %s releases devices soon", job.id, node)
                    return False
                raise _Refusal(
                    f"job {job.id!r} needs {count} devices on node {node!r} but only {have} are "
                    f"free ({draining} being released): the plan overcommits the node"
                )
        taken = 0
        for node, count in parts:
            free[node] -= count
            taken += count
        self._account(taken)
        return True

    def _release(self, parts: Iterable[tuple[str, int]]) -> None:
        free = self.free
        released = 0
        for node, count in parts:
            if count > 0:
                free[node] += count
                released += count
        self._account(-released)

    def _draining(self, node: str) -> int:
        total = 0
        for job in self._stopping.values():
            keep = dict(job.next_placement.parts) if job.next_placement else {}
            for n, c in job.placement.parts:
                if n == node:
                    total += c - keep.get(n, 0)
        return total

    def _account(self, delta: int) -> None:
        if not delta:
            return
        self.allocated += delta
        now = self._clock.now()
        if self.usage_t[-1] == now:
            self.usage_n[-1] = self.allocated
        else:
            self.usage_t.append(now)
            self.usage_n.append(self.allocated)
