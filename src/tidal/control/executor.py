"""The Ray executor: the service's implementation of :class:`tidal.core.Executor`.

It moves jobs through the lifecycle in the shared :class:`~tidal.core.book.JobBook` (as the
simulated executor moves simulated jobs) and makes it so on a Ray cluster: a job's P
workers are P :mod:`worker <tidal.control.worker>` actors in one placement group whose
bundles are pinned to the nodes and device counts the plan names (all or none), each
supervising one process of the user's command.

Nothing here blocks the loop: :meth:`RayExecutor.apply` starts work (a placement group, its
actors, a SIGTERM) and returns; :meth:`RayExecutor.observe` advances each job's gang a step
at a time from the Ray calls that have completed (``ray.wait`` with no timeout), and reports
what it saw.

- ``Start``: STARTING; the gang is reserved, located (worker 0 picks the rendezvous port),
  and started; RUNNING once every worker process runs.
- ``Stop``: STOPPING; SIGTERM to every worker (the runtime stops at the next consistent
  cut, commits a checkpoint, and exits); past the stop's deadline, SIGKILL. Without a
  checkpoint: SIGKILL at once.
- ``Resize``/``Migrate``: a stop, then a start on the new placement, resuming from the
  checkpoint the stop committed.
- ``Cancel``: SIGKILL, then CANCELLED.
- A worker that exits while its job runs ends the gang: the others are killed, and the job
  succeeded (every worker exited 0), failed over (RESTARTING) or FAILED by the book's rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidal.control.fleet import FleetWatcher
from tidal.control.worker import NAMESPACE, actor_class, actor_name, log_path
from tidal.core import (
    Action,
    ActionResult,
    Cancel,
    CheckpointCommitted,
    Clock,
    JobState,
    Migrate,
    Observation,
    Outcome,
    Placement,
    ProgressReported,
    Resize,
    Start,
    Stop,
    TransitionError,
    WorkerExited,
)
from tidal.core.book import JobBook, LiveJob
from tidal.core.states import WAITING_STATES
from tidal.launch.outcome import job_exit_status
from tidal.launch.status import StatusRecord

logger = logging.getLogger(__name__)

__all__ = ["JobLaunch", "RayExecutor"]

_RESERVING = "reserving"
_LOCATING = "locating"
_STARTING = "starting"
_RUNNING = "running"
_DONE = "done"


@dataclass(frozen=True, slots=True)
class JobLaunch:
    """What the workers of a job run: argv, the job's own environment variables, its
    working directory, and its checkpoint settings."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_s: float | None = None
    checkpoint_keep: int | None = None


@dataclass(slots=True)
class _Meter:
    """What the executor measures of one job: the device-seconds one step costs, and how
    long its stops and restarts take (the policy's cost hints)."""

    per_step: float | None = None  # device-seconds per optimizer step
    last: tuple[float, int] | None = None  # (time, step) of the last report while running
    stop_begun: float | None = None
    start_begun: float | None = None
    start_step: int = 0


@dataclass(slots=True)
class _Gang:
    """A job's workers on Ray, for one start."""

    job_id: str
    placement: Placement
    incarnation: int
    pg: Any = None
    actors: list[Any] = field(default_factory=list)
    phase: str = _RESERVING
    pending: Any = None  # the Ray call(s) the current phase waits for
    codes: dict[int, int] = field(default_factory=dict)
    status: StatusRecord | None = None
    terminated: bool = False  # SIGTERM sent (a stop at a consistent cut)
    killed: bool = False
    last_poll: float = 0.0
    polls: list[Any] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.placement.size


class RayExecutor:
    """See the module docstring. ``launches`` gives each job's :class:`JobLaunch`;
    ``jobs_root`` holds each job's directory (checkpoints, ``status.json``, logs), which
    every node must be able to read and write."""

    def __init__(
        self,
        book: JobBook,
        fleet: FleetWatcher,
        launches: Callable[[str], JobLaunch],
        jobs_root: Path,
        clock: Clock,
        *,
        poll_interval: float = 1.0,
        ship_workdir: bool = False,
        threads: int = 1,
        default_stop_cost: float = 15.0,
        default_restart_cost: float = 20.0,
    ) -> None:
        self.book = book
        self._fleet = fleet
        self._launches = launches
        self._jobs_root = jobs_root
        self._clock = clock
        self._poll_interval = poll_interval
        self._ship = ship_workdir
        self._threads = threads
        self._stop_cost = default_stop_cost
        self._restart_cost = default_restart_cost
        self._gangs: dict[str, _Gang] = {}
        self._meters: dict[str, _Meter] = {}
        self._extra: list[Observation] = []

    # --- the Executor protocol ---------------------------------------------------------

    def apply(self, actions: Sequence[Action]) -> list[ActionResult]:
        results = []
        for action in actions:
            refusal = self.book.refusal(action)
            if refusal:
                results.append(ActionResult(action, Outcome.REFUSED, refusal))
                continue
            try:
                self._apply(self.book[action.job_id], action)
            except TransitionError as err:
                results.append(ActionResult(action, Outcome.REFUSED, str(err)))
                continue
            results.append(ActionResult(action, Outcome.APPLIED))
        return results

    def observe(self) -> list[Observation]:
        now = self._clock.now()
        for record in self.book.overdue(now):
            gang = self._gangs.get(record.id)
            if gang is not None and not gang.killed:
                logger.warning("job %s: stop deadline passed, killing its workers", record.id)
                self._kill(gang)
        for record in list(self.book):
            if record.state is JobState.STARTING and record.id not in self._gangs:
                self._launch(record)  # started by a move, or adopted mid-start
        for gang in list(self._gangs.values()):
            try:
                self._advance(gang, now)
            except Exception:
                logger.exception("job %s: advancing its workers failed", gang.job_id)
                self._fail_gang(gang, now, "the executor lost track of the workers")
        out = [*self._extra, *self.book.drain()]
        self._extra = []
        return out

    # --- lifecycle that the loop drives ------------------------------------------------

    def node_left(self, name: str) -> None:
        """A node left the fleet: every job on it fails over (not counted as its fault)."""
        now = self._clock.now()
        for record in list(self.book):
            if name in record.placement.nodes and record.state.holds_devices:
                gang = self._gangs.pop(record.id, None)
                if gang is not None:
                    self._teardown(gang)
                self.book.node_lost(record, now, name)

    def adopt(self, record: LiveJob, incarnation: int) -> None:
        """Take over the gang of a job that was running when the control plane stopped:
        its actors are found by name (``tidal/<job>/<k>``) and polled from now on."""
        import ray
        from ray.util.placement_group import get_placement_group

        gang = _Gang(record.id, record.placement, incarnation)
        try:
            gang.actors = [
                ray.get_actor(actor_name(record.id, k), namespace=NAMESPACE)
                for k in range(record.placement.size)
            ]
            gang.pg = get_placement_group(_pg_name(record.id))
        except ValueError:
            logger.warning("job %s: its workers are gone; it restarts", record.id)
            self._gangs[record.id] = gang
            self._fail_gang(
                gang, self._clock.now(), "workers lost while the control plane was down"
            )
            return
        gang.phase = _RUNNING
        self._gangs[record.id] = gang
        self._meters.setdefault(record.id, _Meter())

    def shutdown_gangs(self) -> list[str]:
        """The jobs whose workers run now (for a clean shutdown of the service)."""
        return [g.job_id for g in self._gangs.values() if g.phase != _DONE]

    # --- actions -----------------------------------------------------------------------

    def _apply(self, record: LiveJob, action: Action) -> None:
        now = self._clock.now()
        book = self.book
        gang = self._gangs.get(record.id)
        if isinstance(action, Start):
            if record.state not in WAITING_STATES:
                raise TransitionError(f"Start for job {record.id!r} in {record.state.value}")
            book.start(record, action.placement, now, action.reason)
            self._launch(record)
        elif isinstance(action, Stop):
            if action.checkpoint:
                book.stop(record, now, action.reason, action.deadline)
                self._meter(record.id).stop_begun = now
                self._terminate(gang)
            else:
                book.stop(record, now, action.reason or "kill", now)
                if gang is not None:
                    self._kill(gang)
        elif isinstance(action, (Resize, Migrate)):
            book.stop(record, now, action.reason, action.deadline, next_placement=action.new)
            self._meter(record.id).stop_begun = now
            self._terminate(gang)
        elif isinstance(action, Cancel):
            holds_workers = book.cancel(record, now, action.reason)
            if holds_workers and gang is not None:
                self._kill(gang)

    def _meter(self, job_id: str) -> _Meter:
        meter = self._meters.get(job_id)
        if meter is None:
            meter = self._meters[job_id] = _Meter()
        return meter

    # --- a gang's life -----------------------------------------------------------------

    def _launch(self, record: LiveJob) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundles: list[dict[str, float]] = []
        selectors: list[dict[str, str]] = []
        nodes = self._fleet.nodes
        for name, count in record.placement.parts:
            node = nodes.get(name)
            if node is None:
                self.book.node_lost(record, self._clock.now(), name)
                return
            for _ in range(count):
                bundles.append({node.resource: 1.0})
                selectors.append({"ray.io/node-id": node.node_id})
        gang = _Gang(record.id, record.placement, record.generation)
        pg = placement_group(
            bundles,
            strategy="PACK",
            name=_pg_name(record.id),
            lifetime="detached",
            bundle_label_selector=selectors,
        )
        gang.pg = pg
        launch = self._launches(record.id)
        options: dict[str, Any] = {}
        if self._ship and launch.workdir:
            options["runtime_env"] = {"working_dir": launch.workdir}
        actor = actor_class()
        gang.actors = [
            actor.options(
                name=actor_name(record.id, k),
                namespace=NAMESPACE,
                lifetime="detached",
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=k
                ),
                **options,
            ).remote(record.id, k)
            for k in range(len(bundles))
        ]
        gang.pending = [a.where.remote() for a in gang.actors]
        gang.phase = _LOCATING
        meter = self._meter(record.id)
        meter.start_begun = self._clock.now()
        meter.start_step = record.step
        meter.last = None
        self._gangs[record.id] = gang
        logger.info("job %s: launching %d workers on %s", record.id, len(bundles), record.placement)
        del ray  # imported for its side effect of being initialised; calls go through handles

    def _advance(self, gang: _Gang, now: float) -> None:
        import ray

        record = self.book.get(gang.job_id)
        if record is None or record.state.is_terminal:
            self._teardown(gang)
            return
        if gang.phase == _LOCATING and _ready(gang.pending):
            located = ray.get(gang.pending)
            master = located[0]
            launch = self._launches(gang.job_id)
            job = {
                "world": record.spec.world,
                "workers": gang.size,
                "checkpoint_dir": str(self.job_dir(gang.job_id)),
                "job_id": gang.job_id,
                "master_addr": master["address"],
                "master_port": master["port"] if gang.size > 1 else None,
                "checkpoint_every_steps": launch.checkpoint_every_steps,
                "checkpoint_every_s": launch.checkpoint_every_s,
                "checkpoint_keep": launch.checkpoint_keep,
                "threads": self._threads,
            }
            gang.pending = [
                a.start.remote(list(launch.argv), job, dict(launch.env), launch.workdir)
                for a in gang.actors
            ]
            gang.phase = _STARTING
        elif gang.phase == _STARTING and _ready(gang.pending):
            try:
                ray.get(gang.pending)
            except Exception as err:  # the command could not be started
                self._fail_gang(gang, now, f"workers could not start: {_short(err)}")
                return
            gang.pending = None
            gang.phase = _RUNNING
            self.book.running(record, now)
        elif gang.phase == _RUNNING:
            self._poll(gang, record, now)

    def _poll(self, gang: _Gang, record: LiveJob, now: float) -> None:
        import ray

        if gang.polls:
            if not _ready(gang.polls):
                return
            replies: list[dict[str, Any] | None] = []
            for k, ref in enumerate(gang.polls):
                try:
                    replies.append(ray.get(ref))
                except Exception:  # the actor died: its worker with it
                    replies.append(None)
                    gang.codes.setdefault(k, -9)
            gang.polls = []
            for k, reply in enumerate(replies):
                if reply is None:
                    continue
                if reply["code"] is not None:
                    gang.codes.setdefault(k, int(reply["code"]))
                if k == 0 and reply.get("status"):
                    try:
                        gang.status = StatusRecord.from_json(reply["status"])
                    except Exception:
                        gang.status = None
                    else:
                        self._progress(record, gang, now)
            self._judge(gang, record, now)
            return
        if now - gang.last_poll >= self._poll_interval or gang.terminated or gang.killed:
            gang.last_poll = now
            gang.polls = [a.poll.remote() for a in gang.actors]

    def _judge(self, gang: _Gang, record: LiveJob, now: float) -> None:
        """After a poll: end the gang if its workers are done, or if one failed."""
        if not gang.codes:
            return
        if len(gang.codes) < gang.size:
            failed = [c for c in gang.codes.values() if c != 0]
            if failed and not gang.killed and record.state is not JobState.STOPPING:
                self._kill(gang)  # one crashed: the others would wait for it forever
            return
        codes = [gang.codes[k] for k in sorted(gang.codes)]
        state = gang.status.state if gang.status is not None else None
        code = job_exit_status(codes, state, stopped=gang.terminated or gang.killed)
        detail = ""
        for k, c in sorted(gang.codes.items()):
            self._extra.append(WorkerExited(gang.job_id, now, k, c))
            if c not in (0, 75) and not detail:
                detail = _tail(log_path(self.job_dir(gang.job_id), k))
        self._teardown(gang)
        meter = self._meter(gang.job_id)
        if record.state is JobState.STOPPING and meter.stop_begun is not None:
            if code == 75 and not gang.killed:
                record.stop_cost = _blend(record.stop_cost, now - meter.stop_begun)
            meter.stop_begun = None
        if gang.killed and record.state is JobState.STOPPING and not record.cancelling:
            self.book.stopped(record, now, committed=False, reason="killed at the stop deadline")
            return
        self.book.exited(record, now, code, detail)

    def _progress(self, record: LiveJob, gang: _Gang, now: float) -> None:
        status = gang.status
        if status is None:
            return
        meter = self._meter(record.id)
        step = status.step
        if meter.last is not None and record.state is JobState.RUNNING:
            t0, s0 = meter.last
            if step > s0 and now > t0:
                cost = gang.size * (now - t0) / (step - s0)
                meter.per_step = (
                    cost if meter.per_step is None else 0.8 * meter.per_step + 0.2 * cost
                )
        if meter.start_begun is not None and step > meter.start_step:
            record.restart_cost = _blend(record.restart_cost, now - meter.start_begun)
            meter.start_begun = None
        meter.last = (now, step)
        work = record.attained if meter.per_step is None else step * meter.per_step
        self.book.progress(record, now, step, work)
        declared = record.spec.declared_steps
        if declared is not None and meter.per_step is not None:
            record.estimate = declared * meter.per_step
        if step != record.step or status.samples_per_s:
            self._extra.append(
                ProgressReported(record.id, now, step, record.work_done, status.samples_per_s)
            )
        ckpt = status.last_checkpoint_step
        if ckpt is not None and ckpt > record.last_step:
            self.book.committed(record, now, ckpt)
            self._extra.append(CheckpointCommitted(record.id, now, ckpt))

    def _terminate(self, gang: _Gang | None) -> None:
        if gang is None:
            return
        if gang.phase != _RUNNING:
            self._kill(gang)  # nothing runs yet that could commit a checkpoint
            return
        gang.terminated = True
        for actor in gang.actors:
            actor.terminate.remote()

    def _kill(self, gang: _Gang) -> None:
        import ray

        gang.killed = True
        if gang.phase != _RUNNING:
            # No worker process yet (or ever): the gang ends here.
            record = self.book.get(gang.job_id)
            self._teardown(gang)
            if record is not None and record.state is JobState.STOPPING:
                self.book.stopped(record, self._clock.now(), committed=False)
            return
        for actor in gang.actors:
            try:
                actor.kill.remote()
            except Exception:
                ray.kill(actor)

    def _fail_gang(self, gang: _Gang, now: float, reason: str) -> None:
        self._teardown(gang)
        record = self.book.get(gang.job_id)
        if record is None:
            return
        if record.state is JobState.STOPPING:
            self.book.stopped(record, now, committed=False, reason=reason)
        elif record.state.holds_devices:
            self.book.failed(record, now, reason, counted=False)

    def _teardown(self, gang: _Gang) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        gang.phase = _DONE
        self._gangs.pop(gang.job_id, None)
        for actor in gang.actors:
            try:
                ray.kill(actor)
            except Exception:
                logger.debug("job %s: actor already gone", gang.job_id)
        if gang.pg is not None:
            try:
                remove_placement_group(gang.pg)
            except Exception:
                logger.debug("job %s: placement group already gone", gang.job_id)

    def job_dir(self, job_id: str) -> Path:
        return self._jobs_root / job_id


def _pg_name(job_id: str) -> str:
    return f"tidal/{job_id}"


def _ready(refs: Any) -> bool:
    import ray

    if not refs:
        return True
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
    return len(ready) == len(refs)


def _blend(old: float, new: float) -> float:
    return new if old <= 0.0 else 0.5 * old + 0.5 * new


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__


def _tail(path: Path, lines: int = 5, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    tail = " | ".join(text.strip().splitlines()[-lines:])
    return tail[-limit:]


_ = time  # kept for the monotonic clock helpers used in tests
