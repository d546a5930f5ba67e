"""Strict first-in-first-out gang scheduling, the baseline every paper starts from."""

from __future__ import annotations

from tidal.core.plan import Plan
from tidal.core.policies._common import Round, log_round, split_jobs, submit_order, waiting_reason
from tidal.core.snapshot import ClusterSnapshot


class FifoPolicy:
    """Gang, non-preemptive, strict FIFO with head-of-line blocking.

    Follows the FIFO queue of YARN's capacity scheduler as used on Microsoft's Philly
    cluster (Jeon et al., ATC'19), plain Slurm without backfill, and the ``fifo`` scheduler
    of the Tiresias simulator (Gu et al., NSDI'19): jobs start in submission order, each
    at its full world size W on compactly placed devices, and run to completion. When the
    job at the head of the queue does not fit, nothing behind it starts.
    """

    name = "fifo"
    tick: float | None = None
    round_interval: float | None = None

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        running, waiting, stopping = split_jobs(snapshot)
        rnd = Round(snapshot, stopping)
        rnd.keep_all(running)
        waiting.sort(key=submit_order)
        for k, view in enumerate(waiting):
            if rnd.place(view, view.spec.world):
                continue
            free = rnd.pool.total_free(view.spec.device_type)
            largest = rnd.pool.largest_free(view.spec.device_type)
            rnd.reasons[view.id] = waiting_reason(
                view.spec.world, free, f"head of the FIFO queue; largest hole {largest}"
            )
            behind = f"waiting: behind {view.id} in the FIFO queue"  # one shared string
            rnd.reasons.update(dict.fromkeys([v.spec.id for v in waiting[k + 1 :]], behind))
            break
        plan = rnd.plan(explain_rest=False)
        log_round(self.name, snapshot, plan)
        return plan
