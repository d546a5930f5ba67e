"""Tier priorities with kill-based preemption, like default Kubernetes priority preemption."""

from __future__ import annotations

from tidal.core.plan import Plan
from tidal.core.policies._common import Round, log_round, split_jobs, waiting_reason
from tidal.core.snapshot import ClusterSnapshot, JobView
from tidal.core.tiers import Tier

# Kubernetes PriorityClass values: larger is more important.
_PRIORITY = {Tier.PREMIUM: 2, Tier.STANDARD: 1, Tier.BASIC: 0}
_LOWEST = Tier.BASIC  # preempts nobody
_NEVER = 1 << 62


def _queue_key(view: JobView) -> tuple[int, float, str]:
    return (view.spec.tier.rank, view.spec.submit_time, view.spec.id)


class PriorityKillPolicy:
    """Priority scheduling with preemption by killing, as default Kubernetes does it.

    Follows the kube-scheduler's priority queue and preemption ("Pod Priority and
    Preemption", Kubernetes docs; ``DefaultPreemption`` plugin): pending jobs are tried in
    order of tier priority, then submission time, each at full size W; a job that fits
    starts, one that does not is skipped (no head-of-line blocking). A job that does not
    fit may preempt jobs of *lower* tiers: for each node the scheduler removes all
    lower-priority jobs, re-admits ("reprieves") the most important of them while the
    preemptor still fits, and picks the node whose victims have the lowest highest
    priority, then the lowest sum of priorities, then the fewest victims, then the latest
    start. Jobs of the same tier never preempt each other. Victims are killed (graceful
    termination does not save training state), so they lose all progress since their last
    checkpoint and restart from it: the plan has ``checkpoint_on_stop=False``. Jobs larger
    than one node (which Kubernetes cannot gang-schedule) clear the cheapest whole nodes the
    same way.
    """

    name = "priority-kill"
    tick: float | None = None
    round_interval: float | None = None

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        running, waiting, stopping = split_jobs(snapshot)
        rnd = Round(snapshot, stopping)
        held: dict[str, JobView] = {}
        for view in running:
            if rnd.keep(view):
                held[view.id] = view
        waiting.sort(key=_queue_key)
        # Per (device type, tier): the smallest one-node size whose preemption failed this
        # round. Later jobs of that tier only fill devices or trade victims for themselves,
        # so no node gains room for that tier: a size at least as large fails too, and is
        # not searched again (the search walks every running job; queues run to thousands).
        failed: dict[tuple[str, Tier], int] = {}
        node_cap = rnd.pool.fx.max_cap
        for view in waiting:
            spec = view.spec
            world = spec.world
            if rnd.place(view, world):
                held[view.id] = view
                continue
            tier = spec.tier
            memo = (spec.device_type, tier)
            if tier is _LOWEST or world >= failed.get(memo, _NEVER):
                victims = None  # nobody below it, or no more room than when it last failed
            else:
                victims = self._preempt(rnd, held, view)
                if victims is None and world <= node_cap.get(spec.device_type, 0):
                    failed[memo] = world
            if victims is None:
                rnd.reasons[view.id] = waiting_reason(
                    world,
                    rnd.pool.total_free(view.spec.device_type),
                    "no lower-priority jobs to preempt",
                )
                continue
            held[view.id] = view
            for victim in victims:
                del held[victim.id]
                rnd.reasons[victim.id] = (
                    f"killed for {view.spec.tier.value} job {view.id} (loses progress)"
                )
        plan = rnd.plan(checkpoint_on_stop=False, explain_rest=False)
        log_round(self.name, snapshot, plan)
        return plan

    @staticmethod
    def _occupants(
        rnd: Round, held: dict[str, JobView], preemptor: JobView
    ) -> dict[int, list[tuple[JobView, int]]]:
        """Node index -> lower-priority jobs on it (with their devices there)."""
        index = rnd.pool.fx.index
        rank = preemptor.spec.tier.rank
        device_type = preemptor.spec.device_type
        occ: dict[int, list[tuple[JobView, int]]] = {}
        for view in held.values():
            if view.spec.tier.rank <= rank or view.spec.device_type != device_type:
                continue
            for node, count in rnd.target(view.id).parts:
                occ.setdefault(index[node], []).append((view, count))
        return occ

    def _preempt(
        self, rnd: Round, held: dict[str, JobView], preemptor: JobView
    ) -> list[JobView] | None:
        """Kill the cheapest lower-priority jobs so that ``preemptor`` fits; None if none do."""
        occ = self._occupants(rnd, held, preemptor)
        if not occ:
            return None
        pool = rnd.pool
        world = preemptor.spec.world
        device_type = preemptor.spec.device_type
        node_cap = pool.fx.max_cap[device_type]
        killed: list[JobView] = []
        cleared: set[int] = set()
        remaining = world
        # Multi-node jobs first clear whole nodes (cheapest first), then place the rest.
        while True:
            best: tuple[tuple[int, int, int, float, int], list[JobView]] | None = None
            target = min(remaining, node_cap)
            for i, jobs in occ.items():
                if i in cleared or pool.fx.cap[i] < target:
                    continue
                chosen = _victims_on_node(pool.free[i], jobs, target)
                if chosen is None:
                    continue
                key = (*_victim_score(chosen), i)
                if best is None or key < best[0]:
                    best = (key, chosen)
            if best is None:
                break
            cleared.add(best[0][-1])
            for victim in best[1]:
                if victim in killed:
                    continue
                killed.append(victim)
                rnd.drop(victim)
                for i, jobs in occ.items():
                    occ[i] = [(v, c) for v, c in jobs if v is not victim]
            placement = rnd.place(preemptor, world)
            if placement:
                return killed
            remaining = max(1, remaining - target)
        # Could not make room: re-admit the victims where they were.
        for victim in reversed(killed):
            if rnd.pool.fits(victim.placement):
                rnd.keep(victim)
        return None


def _victims_on_node(free: int, jobs: list[tuple[JobView, int]], need: int) -> list[JobView] | None:
    """Victims on one node so that ``need`` devices become free, after reprieves."""
    total = free + sum(c for _, c in jobs)
    if total < need:
        return None
    # Reprieve the most important first: higher priority, then earlier start.
    order = sorted(
        jobs,
        key=lambda vc: (-_PRIORITY[vc[0].spec.tier], vc[0].placed_at or 0.0, vc[0].id),
    )
    victims: list[JobView] = []
    for view, count in order:
        if total - count >= need:
            total -= count  # reprieved: it keeps running
        else:
            victims.append(view)
    return victims


def _victim_score(victims: list[JobView]) -> tuple[int, int, int, float]:
    prios = [_PRIORITY[v.spec.tier] for v in victims]
    latest = max((v.placed_at or 0.0) for v in victims) if victims else 0.0
    return (max(prios, default=-1), sum(prios), len(victims), -latest)
