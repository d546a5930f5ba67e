"""Tiresias' discretized two-dimensional least-attained-service scheduler (2D-LAS)."""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Sequence

from tidal.core.errors import SpecError
from tidal.core.plan import Plan
from tidal.core.policies._common import Round, capacity_by_type, log_round, split_jobs
from tidal.core.policies._gang import gang_in_order
from tidal.core.snapshot import ClusterSnapshot, JobView


class TiresiasPolicy:
    """Discretized 2D-LAS with checkpointed preemption (Gu et al., "Tiresias: A GPU
    Cluster Manager for Distributed Deep Learning", NSDI'19).

    A job's priority is its attained service in device-seconds (devices × time run, the
    paper's two dimensions). Jobs sit in ``len(thresholds) + 1`` queues: a job moves down
    when its attained service crosses the next threshold (defaults 3250 and 7200
    device-seconds, the queue limits of the Tiresias simulator's ``dlas-gpu``). Queues are
    served in order; within a queue jobs are served first-come first-served, running jobs
    ahead of waiting ones, so a job is only preempted by a job of a higher queue. Every job
    runs at full size W; admission counts devices in priority order and skips jobs that do
    not fit. Preemption checkpoints (the paper's design), so no progress is lost.

    Starvation prevention (the paper's ``PROMOTEKNOB``): with ``promote_knob`` set, a
    waiting job that has waited longer than ``promote_knob`` times its executed time is
    promoted to the highest queue. The simulator's default, used for the published
    numbers, is off; so is ours. Tidal policies keep no state between rounds, so the wait
    is measured since the job's last checkpoint (its last stop), and the promotion lasts as
    long as the job waits.

    Within a queue, waiting jobs are ordered by submission time (the simulator orders them
    by the time they entered the queue, which a stateless policy cannot know). ``tick``
    asks the simulator to re-run the policy at least that often while jobs wait, so that
    demotions take effect.
    """

    name = "tiresias"

    def __init__(
        self,
        thresholds: Sequence[float] = (3250.0, 7200.0),
        promote_knob: float | None = None,
        tick: float | None = 300.0,
    ) -> None:
        limits = tuple(float(t) for t in thresholds)
        if any(b <= a for a, b in itertools.pairwise(limits)) or any(t <= 0 for t in limits):
            raise SpecError(f"tiresias: thresholds must be positive and increasing, got {limits}")
        if promote_knob is not None and promote_knob <= 0:
            raise SpecError(f"tiresias: promote_knob must be > 0, got {promote_knob}")
        if tick is not None and tick <= 0:
            raise SpecError(f"tiresias: tick must be > 0 seconds, got {tick}")
        self.thresholds = limits
        self.promote_knob = promote_knob
        self.tick = tick
        self.round_interval: float | None = None

    def queue_of(self, view: JobView, now: float) -> int:
        queue = bisect_right(self.thresholds, view.attained)
        knob = self.promote_knob
        if knob is not None and queue > 0 and not view.placement and view.attained > 0:
            executed = view.attained / view.spec.world
            since = view.last_checkpoint_at
            waited = now - (since if since is not None else view.spec.submit_time)
            if waited >= knob * executed:
                return 0
        return queue

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        running, waiting, stopping = split_jobs(snapshot)
        rnd = Round(snapshot, stopping)
        now = snapshot.now
        keyed = [
            ((self.queue_of(v, now), 0, v.spec.submit_time, v.spec.id), v) for v in running
        ] + [((self.queue_of(v, now), 1, v.spec.submit_time, v.spec.id), v) for v in waiting]
        keyed.sort(key=lambda kv: kv[0])
        queues = {v.id: k[0] for k, v in keyed}

        texts: dict[tuple[int, bool], str] = {}

        def reason(view: JobView, preempted: bool) -> str:
            q = queues[view.id]
            text = texts.get((q, preempted))
            if text is None:  # one shared string per queue: rounds may have many waiting
                if preempted:
                    text = f"preempted: jobs of higher queues need the devices (queue {q})"
                else:
                    text = f"waiting in queue {q} of {len(self.thresholds) + 1}"
                texts[(q, preempted)] = text
            return text

        gang_in_order(rnd, [v for _, v in keyed], capacity_by_type(snapshot, stopping), reason)
        plan = rnd.plan(explain_rest=False)
        log_round(self.name, snapshot, plan)
        return plan
