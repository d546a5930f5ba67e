"""The discrete-event engine: arrivals, timed phases and completions over an injected clock.

Every scheduling round is the production path: snapshot → ``policy.schedule`` →
``plan.diff(snapshot)`` → the simulated executor applies the actions.

Rounds are coalesced: events (arrivals, completions, ends of checkpoints and restarts) are
handled at their exact times, and at most one round runs per distinct event time, only if
something a policy could act on changed: a job arrived, finished, or released devices at
the end of a checkpoint. The end of a restart only updates the job's view (no devices were
freed and no demand appeared), and the next round sees it. With ``min_round_interval`` > 0
a round runs at most that often: changes inside the interval are decided together at its
end, as a periodic scheduler would. A policy's ``round_interval`` batches the same way,
except that a premium job's arrival, or any change while a premium job waits, gets a
round at once. A policy with a ``tick`` (seconds) is also called at least that often
while jobs wait.

Views are reused: a job's :class:`JobView` is rebuilt only when the executor changed it,
and a running job's progress (``work_done``, ``attained``) is reported every
``progress_interval`` simulated seconds, as a live executor's heartbeats would; with 0 it
is exact at every round. Per-round work in the engine is O(changed jobs) plus building
the snapshot: a tuple of the views and a copy of the table of views by id, which the
snapshot takes as its own (both C-speed copies).
"""

from __future__ import annotations

import gc
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from tidal.core import (
    ClusterSnapshot,
    CoreError,
    Fleet,
    JobSpec,
    JobState,
    JobView,
    Policy,
    StateChange,
    Tier,
    make_policy,
)
from tidal.core.execution import Outcome
from tidal.core.round import RoundRules, run_round
from tidal.core.states import WAITING_STATES
from tidal.sim.clock import SimClock
from tidal.sim.costs import CostModel
from tidal.sim.errors import PolicyActionError, SimError
from tidal.sim.executor import FINISH, PHASE_END, SimExecutor
from tidal.sim.metrics import JobResult, SimResult, summarize
from tidal.sim.quotas import proportional_quotas
from tidal.sim.records import SimJob

logger = logging.getLogger(__name__)

_WAKE = 3  # a time the round rules asked to be woken at (a deferred round, a tick)

Progress = Callable[[int, int], None]
DEFAULT_MIN_ROUND_INTERVAL = 0.0
DEFAULT_PROGRESS_INTERVAL = 60.0
_RUNNING = JobState.RUNNING
_WAITING = WAITING_STATES
_PREMIUM = Tier.PREMIUM
_APPLIED = Outcome.APPLIED
_DEFERRED = Outcome.DEFERRED


class Simulation:
    """One policy over one job list on one fleet. Use :func:`simulate`."""

    def __init__(
        self,
        jobs: Sequence[JobSpec],
        fleet: Fleet,
        policy: Policy,
        costs: CostModel,
        quotas: Mapping[str, int],
        min_round_interval: float,
        progress_interval: float,
        until: float,
        progress: Progress | None,
        record_events: bool,
        stop_grace: float | None = None,
    ) -> None:
        self._specs = sorted(jobs, key=lambda s: s.submit_time)
        self._stop_grace = math.inf if stop_grace is None else stop_grace
        self._costs = costs
        self._fleet = fleet
        self._policy = policy
        self._quotas = quotas
        self._until = until
        self._progress = progress
        try:
            self._rules = RoundRules.for_policy(policy, min_round_interval, self._wake)
        except CoreError as err:
            raise SimError(str(err)) from None
        start = self._specs[0].submit_time if self._specs else 0.0
        self.clock = SimClock(start)
        self._heap: list[tuple[float, int, int, SimJob | None, int]] = []
        self._seq = 0
        self._pending = 0  # timed job events in the heap (stale ones included)
        self._live: dict[str, SimJob] = {}
        self.executor = SimExecutor(fleet, costs, self.clock, self._push, self._live)
        self._views: dict[str, JobView] = {}
        # Jobs whose state changed since the last round: their views are rebuilt then.
        self._dirty: dict[str, SimJob] = {}
        self._waiting = 0  # live jobs in a waiting state (pending, preempted, restarting)
        self._record = record_events
        self.events: list[StateChange] = []
        self._refresh: deque[tuple[float, SimJob, int]] = deque()
        self._progress_interval = progress_interval
        self._done: list[SimJob] = []
        self._next_arrival = 0
        self.rounds = 0
        self.deferred = 0

    def _push(self, when: float, kind: int, job: SimJob) -> None:
        self._seq += 1
        self._pending += 1
        heapq.heappush(self._heap, (when, self._seq, kind, job, job.version))

    def _wake(self, when: float) -> None:
        """The round rules want to be asked again at ``when``: make it an event time."""
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, _WAKE, None, 0))

    def run(self) -> None:
        specs = self._specs
        total = len(specs)
        step = max(1, total // 200)
        next_report = step
        heap = self._heap
        executor = self.executor
        live = self._live
        views = self._views
        rules = self._rules
        batching = rules.batching
        costs = self._costs
        pop = heapq.heappop
        ai = 0
        while True:
            t = specs[ai].submit_time if ai < total else math.inf
            if heap and heap[0][0] < t:
                t = heap[0][0]
            if t == math.inf or t > self._until:
                break
            self.clock.advance_to(t)
            changed = False
            urgent = False  # a premium job arrived
            while ai < total and specs[ai].submit_time == t:
                spec = specs[ai]
                ai += 1
                job = SimJob(spec, costs.checkpoint_time(spec), costs.restart_time(spec))
                live[spec.id] = job
                views[spec.id] = job.make_view(t)
                self._waiting += 1
                changed = True
                if batching and spec.tier is _PREMIUM:
                    urgent = True
                    rules.premium_waiting(spec.id, True)
            while heap and heap[0][0] == t:
                _, _, kind, job_or_none, version = pop(heap)
                if job_or_none is not None:
                    self._pending -= 1
                    if kind == PHASE_END:
                        changed = executor.phase_end(job_or_none, version) or changed
                    elif kind == FINISH and executor.finish(job_or_none, version):
                        self._finished(job_or_none)
                        changed = True
            if self._progress is not None and len(self._done) >= next_report:
                self._progress(len(self._done), total)
                next_report = len(self._done) + step
            if not rules.due(t, changed, urgent):
                continue
            applied = self._round(t)
            waiting = bool(self._waiting and live)
            if waiting and not applied and ai >= total and self._pending == 0:
                logger.warning(
                    "simulation stuck at t=%.0f: %d jobs wait and the policy starts none",
                    t,
                    self._waiting,
                )
                break
            rules.ran(t, waiting)
        self._absorb()  # what happened after the last round (completions), for the record
        self._next_arrival = ai
        if self._live:
            logger.warning(
                "simulation ended at t=%.0f with %d jobs unfinished", self.clock.now(), len(live)
            )
        if self._progress is not None:
            self._progress(len(self._done), total)

    def _absorb(self) -> None:
        """Take the executor's observations: the jobs that changed, the waiting count."""
        dirty = self._dirty
        record = self._record
        waiting = _WAITING
        for change in self.executor.observe():
            if not isinstance(change, StateChange):
                continue  # the simulated executor reports only state changes
            if change.old in waiting:
                self._waiting -= 1
            if change.new in waiting:
                self._waiting += 1
            job = self._live.get(change.job_id)
            if job is not None:
                dirty[change.job_id] = job
            if record:
                self.events.append(change)

    def _round(self, now: float) -> int:
        self.rounds += 1
        views = self._views
        self._absorb()
        # Running jobs report progress every ``progress_interval`` (a heartbeat); every
        # other view changes only when the executor changes the job.
        refresh = self._refresh
        every = self._progress_interval
        running = _RUNNING
        due = len(refresh)  # reports queued before this round (each is re-queued once)
        while due and refresh[0][0] <= now:
            due -= 1
            _, job, version = refresh.popleft()
            if job.version == version and job.state is running:
                views[job.spec.id] = job.make_view(now)
                refresh.append((now + every, job, version))
        rules = self._rules
        batching = rules.batching  # premium jobs waiting are tracked only to stop batching
        dirty = self._dirty
        for jid, job in dirty.items():
            if job.finish is None:
                views[jid] = job.make_view(now)
                if job.state is running:
                    refresh.append((now + every, job, job.version))
                elif batching and job.spec.tier is _PREMIUM and job.state in _WAITING:
                    rules.premium_waiting(jid, True)
        dirty.clear()
        snapshot = ClusterSnapshot(
            now=now,
            fleet=self._fleet,
            jobs=tuple(views.values()),
            quotas=self._quotas,
            round_id=self.rounds,
            by_id=views.copy(),  # a clone of the table: cheaper than indexing the jobs again
        )
        debug = logger.isEnabledFor(logging.DEBUG)
        started = time.perf_counter() if debug else 0.0
        report = run_round(
            self._policy, snapshot, self.executor, stop_deadline=now + self._stop_grace
        )
        applied = 0
        for result in report.results:
            outcome = result.outcome
            if outcome is _APPLIED:
                applied += 1
            elif outcome is _DEFERRED:
                self.deferred += 1
            else:  # the simulated executor refuses only what a correct policy never asks
                raise PolicyActionError(f"policy {self._policy.name!r}: {result.reason}")
        self._absorb()
        live = self._live
        premium = rules.premium_waiting_ids()
        if premium:
            # Those this round's actions started (or that are gone) wait no more.
            for jid in [j for j in premium if j in dirty or j not in live]:
                waiting = live.get(jid)
                if waiting is None or waiting.state not in _WAITING:
                    rules.premium_waiting(jid, False)
        if debug:
            logger.debug(
                "round %d t=%.1f jobs=%d actions=%d applied=%d took %.2f ms",
                self.rounds,
                now,
                len(snapshot.jobs),
                len(report.actions),
                applied,
                (time.perf_counter() - started) * 1e3,
            )
            for action in report.actions:
                logger.debug("round %d: %r", self.rounds, action)
            for jid, reason in report.plan.reasons.items():
                logger.debug("round %d: %s: %s", self.rounds, jid, reason)
        return applied

    def _finished(self, job: SimJob) -> None:
        jid = job.spec.id
        self._rules.premium_waiting(jid, False)
        del self._live[jid]
        del self._views[jid]
        self._done.append(job)

    def results(self) -> list[JobResult]:
        end = self.clock.now()
        out = []
        unarrived = [SimJob(spec) for spec in self._specs[self._next_arrival :]]
        for job in [*self._done, *self._live.values(), *unarrived]:
            if job.spec.submit_time <= end:
                job.settle(end)
            spec = job.spec
            out.append(
                JobResult(
                    id=spec.id,
                    tenant=spec.tenant,
                    tier=spec.tier,
                    world=spec.world,
                    submit=spec.submit_time,
                    first_start=job.first_start,
                    finish=job.finish,
                    held_s=job.held_s,
                    running_s=job.running_s,
                    lost_s=job.held_s - job.running_s + job.killed_s,
                    preemptions=job.preemptions,
                    resizes=job.resizes,
                    migrations=job.migrations,
                )
            )
        out.sort(key=lambda r: (r.submit, r.id))
        return out


@contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic garbage collector less often while simulating.

    A simulation allocates many short-lived objects (views, plans, policy scratch) next to
    a large, long-lived job population that every collection would scan again; none of it
    forms reference cycles in normal operation, so rarer passes cost nothing but time
    saved (about 10-20 % on philly.csv). The previous thresholds are restored afterwards.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 50_000), max(old[1], 20), max(old[2], 100))
    try:
        yield
    finally:
        gc.set_threshold(*old)


def simulate(
    jobs: Iterable[JobSpec],
    fleet: Fleet,
    policy: Policy | str,
    costs: CostModel | None = None,
    *,
    quotas: Mapping[str, int] | None = None,
    min_round_interval: float = DEFAULT_MIN_ROUND_INTERVAL,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    until: float | None = None,
    progress: Progress | None = None,
    record_events: bool = False,
    stop_grace: float | None = None,
) -> SimResult:
    """Run ``policy`` (an instance or a registered name) over ``jobs`` on ``fleet``.

    ``quotas`` defaults to :func:`proportional_quotas`; pass ``{}`` for none.
    ``min_round_interval`` is the least simulated time between two rounds (0: a round at
    every event time where something changed); ``progress_interval`` how often running
    jobs report progress to the scheduler (0: exact in every round). ``until``
    stops the clock early (unfinished jobs are reported as such). ``progress`` is called
    with ``(completed, total)`` now and then. ``record_events`` keeps every state change.
    ``stop_grace`` is the seconds a stop may take before it becomes a kill (default: no
    limit); a job whose checkpoint would take longer is killed then and loses its progress
    since its last checkpoint.
    """
    specs = list(jobs)
    if isinstance(policy, str):
        policy = make_policy(policy)
    if costs is None:
        costs = CostModel()
    for name, value in (
        ("min_round_interval", min_round_interval),
        ("progress_interval", progress_interval),
    ):
        if not math.isfinite(value) or value < 0:
            raise SimError(f"{name} must be a finite number >= 0, got {value!r}")
    if stop_grace is not None and (math.isnan(stop_grace) or stop_grace < 0):
        raise SimError(f"stop_grace must be a number of seconds >= 0, got {stop_grace!r}")
    horizon = math.inf if until is None else until
    if quotas is None:
        quotas = proportional_quotas(specs, fleet)
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise SimError(f"job id {spec.id!r} appears more than once in the job list")
        seen.add(spec.id)
    capacity = {kind: fleet.capacity_of(kind) for kind in fleet.device_types()}
    too_big = [s.id for s in specs if s.min_size > capacity.get(s.device_type, 0)]
    if too_big:
        logger.warning(
            "%d jobs can never fit on this fleet (e.g. %s); they will not complete",
            len(too_big),
            too_big[0],
        )
    started = time.perf_counter()
    with fewer_gc_passes():
        sim = Simulation(
            specs,
            fleet,
            policy,
            costs,
            quotas,
            min_round_interval,
            progress_interval,
            horizon,
            progress,
            record_events,
            stop_grace,
        )
        sim.run()
        results = sim.results()
    wall = time.perf_counter() - started
    metrics = summarize(policy.name, results, fleet.capacity, sim.rounds, wall)
    logger.info(
        "simulated %s: %d jobs, %d rounds, %d deferred actions in %.1f s",
        policy.name,
        len(results),
        sim.rounds,
        sim.deferred,
        wall,
    )
    return SimResult(
        metrics=metrics,
        jobs=tuple(results),
        capacity=fleet.capacity,
        usage_times=tuple(sim.executor.usage_t),
        usage_devices=tuple(sim.executor.usage_n),
        events=tuple(sim.events),
    )
