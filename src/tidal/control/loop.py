"""The reconcile loop: the service's scheduling rounds, on the same contract as the simulator.

One thread owns the job table (a :class:`~tidal.core.book.JobBook`, shared with the
executor) and does, over and over:

1. take in what the API changed (new jobs, cancel requests, drained nodes), through the
   hook the service facade calls (:meth:`Reconciler.notify`), never by reading SQL;
2. poll the fleet (nodes joining and leaving) and the executor's observations, and write
   every state change through to the store (one event each, with its reason);
3. when :class:`~tidal.core.RoundRules` says so (a change, the policy's tick), run one
   round with :func:`~tidal.core.run_round`: snapshot → policy → check → diff → apply,
   and log it (id, duration, actions and reasons).

Level-triggered: an action that was refused or lost is decided again from the next
snapshot. Jobs on a drained node are stopped at a consistent cut (a request, as a cancel
is) and the node is left out of the fleet the policy sees, so nothing is placed there until
it is undrained.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tidal.control.executor import JobLaunch
from tidal.control.fleet import FleetWatcher
from tidal.control.records import JobRecord, NodeRecord
from tidal.control.store import Store
from tidal.core import (
    Action,
    Cancel,
    CheckpointCommitted,
    Clock,
    ClusterSnapshot,
    Executor,
    Fleet,
    JobSpec,
    JobState,
    NodeJoined,
    NodeLeft,
    Observation,
    Policy,
    ProgressReported,
    RoundReport,
    RoundRules,
    StateChange,
    Stop,
    Tier,
    WorkerExited,
    run_round,
)
from tidal.core.book import JobBook, LiveJob
from tidal.core.states import ACTIVE_STATES, WAITING_STATES

logger = logging.getLogger(__name__)

__all__ = ["LiveExecutor", "LoopSettings", "Reconciler", "WallClock", "job_launch", "job_spec"]


class LiveExecutor(Executor, Protocol):
    """What the loop asks of the service's executor besides the shared contract: fail over
    the jobs of a node that left, and take over the workers of a job found running at
    start-up (the Ray executor; :class:`~tidal.core.fake.FakeExecutor` in tests)."""

    def node_left(self, name: str) -> None: ...

    def adopt(self, record: LiveJob, incarnation: int) -> None: ...


class WallClock:
    """The service's clock: seconds since the epoch (the store's times are too)."""

    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """``stop_grace``: seconds a stop at a consistent cut may take before the workers are
    killed; ``poll_interval``: how often the loop looks at the fleet and the workers
    without being woken; ``progress_every``: the least seconds between two progress
    writes of one job to the store; the default cost hints until a job's own are
    measured."""

    stop_grace: float = 60.0
    poll_interval: float = 0.5
    progress_every: float = 5.0
    default_stop_cost: float = 15.0
    default_restart_cost: float = 20.0
    quotas: dict[str, int] = field(default_factory=dict)


def job_spec(record: JobRecord) -> JobSpec:
    """The scheduler's view of a stored job: what its user declared."""
    declared = None
    if record.declared_hours is not None:
        declared = record.declared_hours * 3600.0 * record.world
    return JobSpec(
        id=record.id,
        tenant=record.tenant,
        tier=record.tier,
        world=record.world,
        submit_time=record.submitted_at,
        device_type=record.device_type,
        min_devices=record.min_devices,
        declared_work=declared,
        max_restarts=record.max_restarts,
        max_devices=record.max_devices,
        declared_steps=record.declared_steps,
    )


def job_launch(record: JobRecord) -> JobLaunch:
    """What the workers of a stored job run."""
    return JobLaunch(
        argv=tuple(record.command),
        env=dict(record.env),
        workdir=record.workdir,
        checkpoint_every_steps=record.checkpoint.every_steps,
        checkpoint_every_s=record.checkpoint.every_s,
        checkpoint_keep=record.checkpoint.keep,
    )


class Reconciler:
    """The loop (see the module docstring). Build it, :meth:`load` what the store holds,
    then :meth:`run` it on a thread (or call :meth:`step` from a test)."""

    def __init__(
        self,
        *,
        store: Store,
        policy: Policy,
        book: JobBook,
        executor: LiveExecutor,
        fleet: FleetWatcher,
        launches: dict[str, JobLaunch],
        clock: Clock,
        settings: LoopSettings | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.book = book
        self.executor = executor
        self.fleet = fleet
        self._launches = launches
        self.clock = clock
        self.settings = settings or LoopSettings()
        self._inbox: queue.SimpleQueue[JobRecord | NodeRecord | list[Action] | None] = (
            queue.SimpleQueue()
        )
        self._requests: list[Action] = []
        self.pause_rounds = False  # set on shutdown: apply requests, start nothing new
        self._wake = threading.Event()
        self._rules = RoundRules.for_policy(policy, wake=lambda _at: self._wake.set())
        self._cancels: dict[str, str] = {}  # job id -> reason
        self._drained: set[str] = set()
        self._progress_written: dict[str, float] = {}
        self._reasons: dict[str, str] = {}
        self.rounds = 0
        self.round_ms: list[float] = []  # the duration of each round, for benchmarks
        self.on_round: Callable[[RoundReport], None] | None = None

    # --- feeding the loop --------------------------------------------------------------

    def notify(self, notice: JobRecord | NodeRecord | None) -> None:
        """The service facade's hook: something changed (thread-safe, never blocks)."""
        self._inbox.put(notice)
        self._wake.set()

    def request(self, actions: Sequence[Action]) -> None:
        """Actions to apply in the next pass, before the policy's (thread-safe)."""
        self._inbox.put(list(actions))
        self._wake.set()

    def load(self) -> None:
        """Take over the live jobs and drained nodes the store holds (at start-up), and
        re-adopt the workers of jobs that were running while the control plane was down."""
        now = self.clock.now()
        self._drained = set(self.store.drained_nodes())
        for change in self.fleet.poll(now):
            self._fold_node(change)
        for record in self.store.live_jobs():
            live = self._adopt(record)
            if record.cancel_requested:
                self._cancels[record.id] = record.reason or "cancel requested"
            if record.plan_reason is not None:
                self._reasons[record.id] = record.plan_reason  # cleared when it no longer holds
            if live.state.holds_devices:
                self.executor.adopt(live, live.generation)
        logger.info(
            "loaded %d live jobs (%d holding devices), %d drained nodes",
            len(self.book),
            sum(1 for r in self.book if r.state.holds_devices),
            len(self._drained),
        )
        self._wake.set()

    def _adopt(self, record: JobRecord) -> LiveJob:
        live = LiveJob(job_spec(record), self.clock.now())
        live.state = record.state
        live.placement = record.placement
        live.generation = record.generation
        live.restarts = record.restarts
        live.step = record.step or 0
        live.attained = record.attained
        live.stop_cost = self.settings.default_stop_cost
        live.restart_cost = self.settings.default_restart_cost
        live.estimate = live.spec.declared_work
        if record.state is JobState.STOPPING:
            live.stop_deadline = self.clock.now() + self.settings.stop_grace
        self.book.adopt(live)
        self._launches[record.id] = job_launch(record)
        return live

    # --- running -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # a bad round must not take the control plane down
                logger.exception("reconcile step failed; going on")
            timeout = self.settings.poll_interval
            wake_at = self._rules.next_wakeup()
            if wake_at != float("inf"):
                timeout = max(0.0, min(timeout, wake_at - self.clock.now()))
            self._wake.wait(timeout)
            self._wake.clear()

    def step(self) -> RoundReport | None:
        """One pass: intake, fleet, observations, and a round if one is due."""
        now = self.clock.now()
        changed, urgent = self._intake(now)
        for change in self.fleet.poll(now):
            changed = True
            self._fold_node(change)
        changed = self._fold(self.executor.observe()) or changed
        if self.pause_rounds:
            requests, self._requests = self._requests, []
            if requests:
                for result in self.executor.apply(requests):
                    if not result.applied:
                        logger.warning("%r: %s", result.action, result.reason)
                self._fold(self.executor.observe())
            return None
        if not self._rules.due(now, changed, urgent):
            return None
        report = self._round(now)
        self._fold(self.executor.observe())
        waiting = any(r.state in WAITING_STATES for r in self.book)
        self._rules.ran(now, waiting)
        return report

    def _intake(self, now: float) -> tuple[bool, bool]:
        changed = urgent = False
        while True:
            try:
                notice = self._inbox.get_nowait()
            except queue.Empty:
                return changed, urgent
            changed = True
            if isinstance(notice, list):
                self._requests.extend(notice)
            elif isinstance(notice, JobRecord):
                if notice.id not in self.book and notice.state is JobState.PENDING:
                    live = self._adopt(notice)
                    urgent = urgent or live.spec.tier is Tier.PREMIUM
                    logger.info(
                        "job %s (%s, %s, W=%d) submitted",
                        notice.id,
                        notice.name,
                        notice.tier.value,
                        notice.world,
                    )
                if notice.cancel_requested and notice.id in self.book:
                    self._cancels[notice.id] = notice.reason or "cancel requested"
            elif isinstance(notice, NodeRecord):
                if notice.drained:
                    self._drained.add(notice.name)
                else:
                    self._drained.discard(notice.name)

    def _round(self, now: float) -> RoundReport:
        self.rounds += 1
        fleet = self._schedulable()
        views = []
        requests: list[Action] = self._requests
        self._requests = []
        grace = self.settings.stop_grace
        for record in list(self.book):
            reason = self._cancels.pop(record.id, None)
            if reason is not None and not record.state.is_terminal:
                requests.append(Cancel(record.id, reason, record.generation))
            view = record.view(now)
            off = [n for n in record.placement.nodes if n not in fleet]
            if off and record.state.holds_devices:
                # On a drained node: stopped at a consistent cut, shown to the policy as
                # stopping on the nodes it can see.
                if record.state in ACTIVE_STATES and reason is None:
                    requests.append(
                        Stop(
                            record.id,
                            record.placement,
                            True,
                            f"node {off[0]} drained",
                            record.generation,
                            now + grace,
                        )
                    )
                view = _restricted(view, fleet)
            views.append(view)
        snapshot = ClusterSnapshot(
            now, fleet, tuple(views), self.settings.quotas, round_id=self.rounds
        )
        started = time.perf_counter()
        report = run_round(
            self.policy, snapshot, self.executor, stop_deadline=now + grace, requests=requests
        )
        took = (time.perf_counter() - started) * 1e3
        self.round_ms.append(took)
        self._log_round(report, snapshot, took)
        if self.on_round is not None:
            self.on_round(report)
        return report

    def _schedulable(self) -> Fleet:
        fleet = self.fleet.fleet
        if not self._drained:
            return fleet
        return Fleet(tuple(n for n in fleet.nodes if n.name not in self._drained))

    def _log_round(self, report: RoundReport, snapshot: ClusterSnapshot, took: float) -> None:
        if report.actions:
            logger.info(
                "round %d: %d jobs, %d actions (%d applied) in %.1f ms",
                report.round_id,
                len(snapshot.jobs),
                len(report.actions),
                report.applied,
                took,
            )
        else:
            logger.debug(
                "round %d: %d jobs, no actions in %.1f ms",
                report.round_id,
                len(snapshot.jobs),
                took,
            )
        for action, result in zip(report.actions, report.results, strict=True):
            logger.info(
                "round %d: %s %s%s%s",
                report.round_id,
                type(action).__name__.lower(),
                action.job_id,
                f" ({action.reason})" if action.reason else "",
                "" if result.applied else f": {result.outcome.value} {result.reason}".rstrip(),
            )
        reasons = report.plan.reasons
        changed: dict[str, str | None] = {}
        for job_id, reason in reasons.items():
            if self._reasons.get(job_id) != reason:
                logger.info("round %d: %s: %s", report.round_id, job_id, reason)
                changed[job_id] = reason
        for job_id in self._reasons.keys() - reasons.keys():
            if job_id in self.book:
                changed[job_id] = None
        self._reasons = dict(reasons)
        if changed:
            try:
                self.store.set_plan_reasons(changed)
            except Exception:
                logger.exception("storing the policy's reasons failed")

    # --- folding observations into the store -------------------------------------------

    def _fold(self, observations: Iterable[Observation]) -> bool:
        changed = False
        for obs in observations:
            if isinstance(obs, StateChange):
                try:
                    self.store.record_change(obs)
                except Exception:
                    logger.exception("job %s: storing %s failed", obs.job_id, obs.new.value)
                if obs.new is not JobState.RUNNING:
                    changed = True
                logger.info(
                    "job %s: %s -> %s (%s)", obs.job_id, obs.old.value, obs.new.value, obs.reason
                )
                if obs.new.is_terminal:
                    self.book.forget(obs.job_id)
                    self._launches.pop(obs.job_id, None)
                    self._progress_written.pop(obs.job_id, None)
            elif isinstance(obs, ProgressReported):
                last = self._progress_written.get(obs.job_id, -1e18)
                if obs.at - last >= self.settings.progress_every:
                    self._progress_written[obs.job_id] = obs.at
                    live = self.book.get(obs.job_id)
                    attained = None
                    if live is not None:
                        live.settle(obs.at)
                        attained = live.attained
                    self.store.record_progress(
                        obs.job_id, obs.step, obs.samples_per_s, obs.at, attained
                    )
            elif isinstance(obs, CheckpointCommitted):
                logger.info("job %s: checkpoint committed at step %d", obs.job_id, obs.step)
            elif isinstance(obs, WorkerExited):
                logger.info("job %s: worker %d exited with %d", obs.job_id, obs.worker, obs.code)
            elif isinstance(obs, (NodeJoined, NodeLeft)):
                self._fold_node(obs)
                changed = True
        return changed

    def _fold_node(self, change: Observation) -> None:
        now = self.clock.now()
        if isinstance(change, NodeJoined):
            node = change.node
            self.store.upsert_node(node.name, node.device_type, node.devices, True, now)
        elif isinstance(change, NodeLeft):
            self.executor.node_left(change.name)
            for known in self.store.nodes():
                if known.name == change.name:
                    self.store.upsert_node(known.name, known.device_type, known.devices, False, now)


def _restricted(view, fleet: Fleet):  # type: ignore[no-untyped-def]
    """``view`` shown as stopping, holding only the devices on nodes in ``fleet``."""
    from dataclasses import replace

    from tidal.core import Placement

    kept = Placement.of([(n, c) for n, c in view.placement.parts if n in fleet])
    return replace(view, state=JobState.STOPPING, placement=kept)
