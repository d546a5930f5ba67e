"""Gandiva-style time slicing of whole jobs."""

from __future__ import annotations

from tidal.core.errors import SpecError
from tidal.core.plan import Plan
from tidal.core.policies._common import Round, capacity_by_type, log_round, split_jobs
from tidal.core.policies._gang import gang_in_order
from tidal.core.snapshot import ClusterSnapshot, JobView

_SUSPENDED = "suspended: its time slice ended and other jobs are waiting"
_WAITING = "waiting for a time slice"


class GandivaPolicy:
    """Round-robin time slicing of gang-scheduled jobs (Xiao et al., "Gandiva:
    Introspective Cluster Scheduling for Deep Learning", OSDI'18; the ``gandiva`` mode of
    the Tiresias simulator).

    A new job starts at once, at full size, when devices are free. When jobs wait, the
    cluster is time-sliced: a running job keeps its devices for one ``quantum`` after it
    (re)started; once its quantum has expired it yields to jobs that have waited longer, in
    round-robin order of the time each became ready (a waiting job: its submission or last
    stop), then the running jobs whose quantum is over, by when it ended. Suspension
    checkpoints, so no progress is lost. Tier-blind and not elastic.

    Gandiva slices every 60 s because its suspend/resume takes about a hundred
    milliseconds. In the simulator a suspension costs a checkpoint and a restart (about
    25 s for a small job), so a 60 s quantum would spend a third of the devices' time
    switching; the default quantum is 600 s, which keeps that below 5 %. ``tick`` (default
    half a quantum) asks the simulator to re-run the policy while jobs wait, so quanta end
    on time. Gandiva's migration for locality and its packing of jobs onto shared devices
    are not modelled: devices here are never shared.
    """

    name = "gandiva"

    def __init__(self, quantum: float = 600.0, tick: float | None = None) -> None:
        if quantum <= 0:
            raise SpecError(f"gandiva: quantum must be > 0 seconds, got {quantum}")
        if tick is not None and tick <= 0:
            raise SpecError(f"gandiva: tick must be > 0 seconds, got {tick}")
        self.quantum = float(quantum)
        self.tick: float | None = tick if tick is not None else self.quantum / 2
        self.round_interval: float | None = None

    def _key(self, view: JobView, now: float) -> tuple[int, float, str]:
        if view.placement:
            placed = view.placed_at if view.placed_at is not None else view.spec.submit_time
            expires = placed + self.quantum
            if expires > now:
                return (0, placed, view.id)  # inside its quantum: keeps its devices
            return (2, expires, view.id)  # quantum over: back of the queue, behind waiters
        stopped = view.last_checkpoint_at
        ready = view.spec.submit_time if stopped is None else max(stopped, view.spec.submit_time)
        return (1, ready, view.id)

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        running, waiting, stopping = split_jobs(snapshot)
        rnd = Round(snapshot, stopping)
        now = snapshot.now
        keyed = sorted(((self._key(v, now), v) for v in running + waiting), key=lambda kv: kv[0])

        def reason(view: JobView, preempted: bool) -> str:
            return _SUSPENDED if preempted else _WAITING

        gang_in_order(rnd, [v for _, v in keyed], capacity_by_type(snapshot, stopping), reason)
        plan = rnd.plan(explain_rest=False)
        log_round(self.name, snapshot, plan)
        return plan
