"""FIFO with EASY backfilling, as Slurm's ``sched/backfill`` does it."""

from __future__ import annotations

import math

from tidal.core.packing import FreePool
from tidal.core.placement import EMPTY, Placement
from tidal.core.plan import Plan
from tidal.core.policies._common import Round, log_round, split_jobs, submit_order, waiting_reason
from tidal.core.snapshot import ClusterSnapshot, JobView


def expected_end(view: JobView, now: float) -> float:
    """When a running job should finish: its remaining work at its current device count."""
    size = view.size or view.spec.world
    return now + view.remaining / size


class BackfillPolicy:
    """Gang, non-preemptive FIFO with EASY backfilling (Lifka, 1995; Slurm's backfill).

    Jobs start in submission order at full size. When the head of the queue does not fit,
    it gets a *reservation*: the earliest time (the "shadow time") at which enough devices,
    compactly placed, will have been released by running jobs, and the devices it would
    take then. A later job may start now only if it fits now and does not delay that
    reservation: either it will have finished by the shadow time, or it only uses devices
    the reservation does not need. Run times are estimated from the jobs' declared work
    (remaining work over device count), which plays the role of a Slurm time limit; the
    simulator's job durations are exact, so these estimates are perfect.
    """

    name = "fifo-backfill"
    tick: float | None = None
    round_interval: float | None = None

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        running, waiting, stopping = split_jobs(snapshot)
        rnd = Round(snapshot, stopping)
        rnd.keep_all(running)
        waiting.sort(key=submit_order)
        now = snapshot.now
        head: JobView | None = None
        shadow = math.inf
        future: FreePool | None = None
        started: list[tuple[float, str, Placement]] = []
        no_room: set[tuple[str, int]] = set()  # (device type, size) that did not fit
        for view in waiting:
            world = view.spec.world
            if head is None:
                placement = rnd.place(view, world)
                if placement:
                    started.append((now + view.remaining / world, view.id, placement))
                    continue
                head = view
                shadow, future = self._reserve(rnd, running, started, stopping, view, now)
                free = rnd.pool.total_free(view.spec.device_type)
                when = "never" if math.isinf(shadow) else f"t={shadow:.0f}"
                rnd.reasons[view.id] = waiting_reason(
                    world, free, f"head of the queue, devices reserved from {when}"
                )
                continue
            # Devices only get taken from here on (a backfilled job that would delay the
            # reservation gives its devices straight back), so a size that did not fit
            # does not fit later in the round either: queues run to thousands of jobs.
            size_key = (view.spec.device_type, world)
            placement = EMPTY if size_key in no_room else rnd.place(view, world)
            if not placement:
                no_room.add(size_key)
                rnd.reasons[view.id] = waiting_reason(
                    world, rnd.pool.total_free(view.spec.device_type), "no room to backfill"
                )
                continue
            if now + view.remaining / world <= shadow or future is None:
                continue  # done before the head's reservation starts
            if not future.fits(placement):
                rnd.drop(view)
                placement = self._place_beside(rnd, future, view)
            if placement:
                future.take(placement)  # still running at the shadow time, on spare devices
                continue
            rnd.reasons[view.id] = (
                f"waiting: would delay the reservation of {head.id} at t={shadow:.0f}"
            )
        plan = rnd.plan(explain_rest=False)
        log_round(self.name, snapshot, plan)
        return plan

    @staticmethod
    def _place_beside(rnd: Round, future: FreePool, view: JobView) -> Placement:
        """Place ``view`` now only on devices the reservation leaves spare."""
        pool = rnd.pool
        fx = pool.fx
        blocks = []
        for i in pool.nodes_of(view.spec.device_type):
            extra = pool.free[i] - future.free[i]
            if extra > 0:
                block = Placement(((fx.names[i], extra),))
                pool.take(block)
                blocks.append(block)
        placement = rnd.place(view, view.spec.world)
        for block in blocks:
            pool.give(block)
        return placement

    @staticmethod
    def _reserve(
        rnd: Round,
        running: list[JobView],
        started: list[tuple[float, str, Placement]],
        stopping: dict[str, int],
        head: JobView,
        now: float,
    ) -> tuple[float, FreePool | None]:
        """The head's shadow time and the pool as it will be then, with the head placed."""
        future = rnd.pool.copy()
        if stopping:
            future.give(Placement.of(stopping))  # they release their devices momentarily
        world = head.spec.world
        device_type = head.spec.device_type
        if future.allocate(world, device_type):
            return now, future
        ends = sorted(
            [
                (expected_end(v, now), v.id, v.placement)
                for v in running
                if v.spec.device_type == device_type
            ]
            + started
        )
        for end, _, placement in ends:
            future.give(placement)
            if future.allocate(world, device_type):
                return end, future
        return math.inf, None
