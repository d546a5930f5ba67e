"""``tiered``: Tidal's own policy — SLA tiers on preemptible, migratable, elastic jobs."""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Sequence

from tidal.core.errors import SpecError
from tidal.core.packing import FreePool, fleet_index
from tidal.core.placement import Placement
from tidal.core.plan import Plan
from tidal.core.policies._common import LazyReasons, Round
from tidal.core.policies._premium import Premium, admit
from tidal.core.policies._tiered_alloc import (
    DEFAULT_BASIC_LANE,
    DEFAULT_CRITICAL_MARGIN,
    DEFAULT_CRITICAL_MIN,
    DEFAULT_CRITICAL_SHARE,
    DEFAULT_GROW_MIN_REMAINING,
    DEFAULT_KILL_MAX_LOSS,
    DEFAULT_LAS_THRESHOLDS,
    DEFAULT_MIN_HOLD,
    DEFAULT_SLACK_MARGIN,
    GIB,
    Account,
    Basis,
    Entry,
    TieredConfig,
    allocate_others,
    sort_entries,
)
from tidal.core.policies._tiered_place import realize
from tidal.core.snapshot import ClusterSnapshot, JobView
from tidal.core.states import ACTIVE_STATES, WAITING_STATES, JobState
from tidal.core.tiers import Tier

log = logging.getLogger(__name__)

_PREMIUM = Tier.PREMIUM


class _Group:
    """The entries of one device type, split as the round treats them (each list in
    snapshot order)."""

    __slots__ = ("others", "premium_running", "premium_waiting")

    def __init__(self) -> None:
        self.premium_running: list[Entry] = []
        self.premium_waiting: list[Entry] = []
        self.others: list[Entry] = []  # standard and basic


class _Carry:
    """What one round leaves the next: entries by job id, each device type's standard and
    basic entries in priority order and its tenants' accounts (which entries hold), and
    the round's stamp (``Entry.seen``)."""

    __slots__ = ("accounts", "config", "entries", "orders", "stamp")

    def __init__(self, config: TieredConfig) -> None:
        self.config = config
        self.entries: dict[str, Entry] = {}
        self.orders: dict[str, list[Entry]] = {}
        self.accounts: dict[str, dict[str, Account]] = {}  # by device type, then tenant
        self.stamp = 0


class TieredPolicy:
    """SLA tiers with elastic, checkpointed preemption, in the spirit of Microsoft's
    Singularity (Shukla et al., 2022: transparent preemption, migration and elastic
    resizing of every job under SLA tiers), with least-attained-service ordering within a
    tier from Tiresias (Gu et al., NSDI'19) and quota sharing with borrowing as in YARN's
    capacity scheduler and Kueue's cohorts.

    Each round, per device type:

    1. **Premium** jobs always run at full size W. Running ones keep their devices (nobody
       takes a premium job's devices); waiting ones start, in submission order, as soon as
       the devices not held by premium work can hold them.
    2. If the free devices do not suffice, premium jobs **take devices** from basic jobs
       first, then standard ones; within a tier, elastic victims are *shrunk* before any
       job is *stopped*, and the cheapest go first (jobs past their minimum hold time,
       smaller checkpoints, more service already received). A stop checkpoints, unless
       the premium job cannot wait for that (its SLA slack, from its declared run time
       divided by ``slack_margin``, is shorter) and the victim loses little since its
       last checkpoint (``kill_max_loss``): then the victim is killed.
    3. If the premium job's devices are scattered over nodes, running jobs are
       **migrated** (or, failing that, shrunk or stopped) to clear a node for it.
    4. **Standard** jobs share the rest by tenant quota (``snapshot.quotas``; without
       quotas, max-min fair shares among tenants with live standard jobs), then **borrow**
       what other tenants leave idle; borrowed devices go back to their owner's jobs once
       the borrower's minimum hold time has passed.
    5. **Basic** jobs run on whatever is left, except that a basic job in the first
       ``basic_lane`` LAS levels queues with standard jobs of its level, behind them (a
       young basic job need not wait behind long standard work, and never goes before
       a standard job as young).
    6. Within a tier, jobs are served by discretized least attained service
       (``las_thresholds``, device-seconds), running jobs before waiting ones of the same
       level, then first-come first-served — short jobs finish first without knowing
       their length. In the lowest level (``lowest_by_remaining``), sub-levels by declared
       work left, one per doubling, put long jobs near their end first.
    6a. **Critical path**: the standard or basic jobs with the longest run time left at
       full size (at least ``critical_min``, within ``critical_margin`` of the longest)
       run at full size before all other standard and basic work, up to
       ``critical_share`` of the devices premium work leaves, so that starving them does
       not push out the time the whole backlog is done.
    7. **No thrashing**: a standard or basic job keeps what it was given for ``min_hold``
       seconds after its placement changed, unless premium work needs the devices.
    8. **Work conserving**: elastic jobs grow towards W and waiting jobs start (at a
       smaller allowed size if need be) while devices are free. A running job grows only
       if its remaining work at its current size exceeds ``grow_min_remaining`` seconds
       (using its declared work as an estimate), so a resize's restart pays off.

    Every job that gets less than it asked for has a reason. ``tick`` asks the caller to
    re-run the policy at least that often while jobs wait (LAS demotions and hold-time
    expiries happen between events). ``round_interval`` (default ``None``: a round for
    every change) lets the caller batch changes into periodic rounds, premium ones
    excepted (see :class:`~tidal.core.policy.Policy`).
    """

    name = "tiered"

    def __init__(
        self,
        min_hold: float = DEFAULT_MIN_HOLD,
        las_thresholds: Sequence[float] = DEFAULT_LAS_THRESHOLDS,
        grow_min_remaining: float = DEFAULT_GROW_MIN_REMAINING,
        kill_max_loss: float = DEFAULT_KILL_MAX_LOSS,
        premium_sla: float = 0.95,
        slack_margin: float = DEFAULT_SLACK_MARGIN,
        checkpoint_fixed_s: float = 5.0,
        checkpoint_gib_per_s: float = 1.0,
        standard_floor: float = 0.0,
        basic_floor: float = 0.0,
        floor_grace: float = 3600.0,
        standard_yield: float = 0.0,
        lowest_by_remaining: bool = True,
        basic_lane: int = DEFAULT_BASIC_LANE,
        critical_margin: float | None = DEFAULT_CRITICAL_MARGIN,
        critical_min: float = DEFAULT_CRITICAL_MIN,
        critical_share: float = DEFAULT_CRITICAL_SHARE,
        migrate: bool = True,
        tick: float | None = 300.0,
        round_interval: float | None = None,
    ) -> None:
        thresholds = tuple(float(t) for t in las_thresholds)
        if any(t <= 0 for t in thresholds) or list(thresholds) != sorted(set(thresholds)):
            raise SpecError(
                f"tiered: las_thresholds must be positive and increasing, got {thresholds}"
            )
        if min_hold < 0:
            raise SpecError(f"tiered: min_hold must be >= 0 seconds, got {min_hold}")
        if not (0 <= standard_floor <= 1 and 0 <= basic_floor <= 1) or floor_grace < 0:
            raise SpecError(
                "tiered: standard_floor and basic_floor must be in [0, 1] and floor_grace "
                f">= 0, got {standard_floor}, {basic_floor} and {floor_grace}"
            )
        if not 0 <= standard_yield <= 1:
            raise SpecError(f"tiered: standard_yield must be in [0, 1], got {standard_yield}")
        if basic_lane < 0 or basic_lane > len(thresholds):
            raise SpecError(
                f"tiered: basic_lane must be between 0 and {len(thresholds)} (the number of "
                f"LAS thresholds), got {basic_lane}"
            )
        if critical_margin is not None and critical_margin < 0:
            raise SpecError(
                f"tiered: critical_margin must be >= 0 seconds (or None), got {critical_margin}"
            )
        if critical_min < 0 or not 0 <= critical_share <= 1:
            raise SpecError(
                "tiered: critical_min must be >= 0 seconds and critical_share in [0, 1], got "
                f"{critical_min} and {critical_share}"
            )
        if kill_max_loss < 0:
            raise SpecError(f"tiered: kill_max_loss must be >= 0, got {kill_max_loss}")
        if not 0 < premium_sla <= 1:
            raise SpecError(f"tiered: premium_sla must be in (0, 1], got {premium_sla}")
        if not 1 <= slack_margin < float("inf"):
            raise SpecError(f"tiered: slack_margin must be >= 1, got {slack_margin}")
        if checkpoint_fixed_s < 0 or checkpoint_gib_per_s <= 0:
            raise SpecError(
                "tiered: checkpoint_fixed_s must be >= 0 and checkpoint_gib_per_s > 0, got "
                f"{checkpoint_fixed_s} and {checkpoint_gib_per_s}"
            )
        if grow_min_remaining < 0:
            raise SpecError(
                f"tiered: grow_min_remaining must be >= 0 seconds, got {grow_min_remaining}"
            )
        if tick is not None and tick <= 0:
            raise SpecError(f"tiered: tick must be > 0 seconds, got {tick}")
        if round_interval is not None and not 0 <= round_interval < float("inf"):
            raise SpecError(
                f"tiered: round_interval must be >= 0 seconds (or None), got {round_interval}"
            )
        self.config = TieredConfig(
            min_hold=float(min_hold),
            las_thresholds=thresholds,
            grow_min_remaining=float(grow_min_remaining),
            kill_max_loss=float(kill_max_loss),
            premium_sla=float(premium_sla),
            slack_margin=float(slack_margin),
            checkpoint_fixed_s=float(checkpoint_fixed_s),
            checkpoint_gib_per_s=float(checkpoint_gib_per_s),
            standard_floor=float(standard_floor),
            basic_floor=float(basic_floor),
            floor_grace=float(floor_grace),
            standard_yield=float(standard_yield),
            lowest_by_remaining=bool(lowest_by_remaining),
            basic_lane=int(basic_lane),
            critical_margin=None if critical_margin is None else float(critical_margin),
            critical_min=float(critical_min),
            critical_share=float(critical_share),
            migrate=migrate,
        )
        self.tick = tick
        self.round_interval = round_interval
        # The entries of the last round, by job id. An entry follows its job: renewed when
        # the job's (immutable) view is the one it was made from, re-derived from the new
        # view when the job progressed or moved. Either costs less than building an entry
        # (and makes no garbage for the cycle collector, which was a fifth of a round on
        # large fleets). A round takes the cache out of this list, updates it in place
        # (entries of jobs gone are dropped), and returns it when done, so concurrent
        # rounds never share entries; the cache changes no decision. It also keeps each
        # device type's standard and basic entries in last round's priority order, so
        # that a round sorts only the few entries that moved (`sort_entries`), not a
        # whole queue of tuples.
        self._spare: list[_Carry] = []

    def _take_carry(self) -> _Carry:
        """What the last round left, if it ran under the same configuration."""
        try:
            carry = self._spare.pop()
        except IndexError:
            return _Carry(self.config)
        self._spare.clear()  # keep at most one: concurrent rounds may each return one
        return carry if carry.config is self.config else _Carry(self.config)

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        config = self.config
        fx = fleet_index(snapshot.fleet)
        capacity = fx.capacity
        index = fx.index
        now = snapshot.now
        basis = Basis(config, now)
        hold_since = basis.hold_since
        # One pass over the jobs (tens of thousands on large fleets): classify them, build
        # the round's entries, and count the devices free now on each node (capacity less
        # what stopping and running jobs hold), so no later step walks every job for it.
        active, startable, stop = ACTIVE_STATES, WAITING_STATES, JobState.STOPPING
        groups: dict[str, _Group] = {}
        stopping: dict[str, int] = {}
        stopping_views: list[JobView] = []
        free_now = list(fx.cap)
        premium_held: list[Placement] = []  # placements of running premium jobs
        premium_waits = False
        carry = self._take_carry()
        entries = carry.entries  # by job id: this round's, for the next round
        stamp = carry.stamp + 1  # marks the entries of this round
        last_type = ""  # the device type of `group`, the last job's
        group = _Group()
        for view in snapshot.jobs:
            state = view.state
            spec = view.spec
            if state in active:
                placement = view.placement
                held = placement.size
                if not held:
                    continue  # a holding state without devices: nothing to schedule
                for name, count in placement.parts:
                    free_now[index[name]] -= count
            elif state in startable:
                held = 0
            else:
                if state is stop:
                    stopping_views.append(view)
                    for name, count in view.placement.parts:
                        stopping[name] = stopping.get(name, 0) + count
                        free_now[index[name]] -= count
                continue
            job_id = spec.id
            e = entries.get(job_id)
            if e is not None and e.view is view:  # unchanged since the last round
                e.renew(hold_since)
                if e.timed:
                    e.retime(basis)
            elif e is not None and e.spec is spec:  # the same job, progressed or moved
                e.update(view, held, basis)
            else:
                e = entries[job_id] = Entry(view, held, basis)
            e.seen = stamp
            device_type = spec.device_type
            if device_type is not last_type:  # most specs share one type string
                found = groups.get(device_type)
                group = groups[device_type] = _Group() if found is None else found
                last_type = device_type
            if e.tier is _PREMIUM:
                if held:
                    group.premium_running.append(e)
                    premium_held.append(view.placement)
                else:
                    group.premium_waiting.append(e)
                    premium_waits = True
            else:
                group.others.append(e)
        if len(entries) > len(snapshot.jobs):  # jobs gone: forget them (and any not seen)
            for job_id in [k for k, e in entries.items() if e.seen != stamp]:
                del entries[job_id]
        releasing: dict[str, int] = {}  # devices held by stopping jobs, per type
        for name, count in stopping.items():
            t = fx.types[index[name]]
            releasing[t] = releasing.get(t, 0) + count
        premium_pool: list[FreePool] = []

        def room_for_premium(e: Entry) -> Placement:
            """Where ``e`` fits compactly once only premium jobs hold devices."""
            if not premium_pool:
                premium_pool.append(FreePool(snapshot.fleet, taken=premium_held))
            return premium_pool[0].allocate(e.world, e.spec.device_type)

        now_pool: FreePool | None = None  # devices free now (for premium jobs)
        soon_delay: dict[str, float] = {}  # per type: longest a stopping job may still take
        if premium_waits:
            for view in stopping_views:
                t = view.spec.device_type
                delay = config.checkpoint_fixed_s + (
                    view.spec.checkpoint_bytes / GIB / config.checkpoint_gib_per_s
                )
                soon_delay[t] = max(soon_delay.get(t, 0.0), delay)
            now_pool = FreePool.from_free(snapshot.fleet, list(free_now))
        ordered: list[Entry] = []
        orders: dict[str, list[Entry]] = {}
        admitted_all: list[Entry] = []
        left_by_type: dict[str, int] = {}
        for device_type in sorted(groups):
            group = groups[device_type]
            total = capacity.get(device_type, 0)  # devices being released included
            soon = releasing.get(device_type, 0)
            others = sort_entries(group.others, carry.orders.get(device_type), stamp)
            orders[device_type] = others[:]  # the next round sorts from this order
            premium_running = group.premium_running
            admitted = admit(premium_running, group.premium_waiting, total, room_for_premium)
            premium_held_here = sum(e.held for e in premium_running)
            wanted = sum(e.world for e in admitted)
            from_soon = 0
            if admitted and now_pool is not None:
                finder = Premium(
                    fx,
                    device_type,
                    group.others,  # in snapshot order (its last resort stops in this order)
                    now_pool,
                    soon,
                    soon_delay.get(device_type, 0.0),
                    now,
                    config,
                )
                for e in admitted:
                    finder.find(e)
                from_soon = finder.claimed
            premium_use: dict[str, int] = {}
            for e in premium_running + admitted:
                premium_use[e.tenant] = premium_use.get(e.tenant, 0) + e.target
            room = total - premium_held_here - wanted - (soon - from_soon)
            accounts = carry.accounts.get(device_type)
            if accounts is None:
                accounts = carry.accounts[device_type] = {}
            left_by_type[device_type] = allocate_others(
                others, room, snapshot.quotas, premium_use, now, config, accounts
            )
            ordered.extend(premium_running)
            ordered.extend(admitted)
            ordered.extend(e for e in group.premium_waiting if not e.target)
            ordered.extend(others)
            admitted_all.extend(admitted)
        rnd = realize(snapshot, stopping, ordered, admitted_all, config, free_now)
        killed: list[str] = []
        reasons = self._explain(rnd, ordered, left_by_type, killed)
        plan = rnd.plan(explain_rest=False, kill=frozenset(killed), reasons=reasons)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "round %d at t=%.1f: %d jobs, %d placed, %d short: %s",
                snapshot.round_id,
                snapshot.now,
                len(ordered),
                len(plan.placements),
                len(plan.reasons),
                "; ".join(f"{k}: {v}" for k, v in list(plan.reasons.items())[:20]),
            )
        # Done with them: the next round may renew them.
        carry.orders = orders
        carry.stamp = stamp
        self._spare.append(carry)
        return plan

    def _explain(
        self, rnd: Round, ordered: list[Entry], left: dict[str, int], killed: list[str]
    ) -> LazyReasons[JobView]:
        """A reason for every job that gets less than it asked for (found and formatted on
        demand, from the round's snapshot and placements: the entries move on with the
        next round). Adds the jobs to stop without a checkpoint to ``killed`` (in the same
        pass over the entries)."""
        fixed = rnd.reasons
        for e in ordered:
            if e.reason:  # premium victims, moves: say why, short or not
                fixed[e.id] = e.reason
            if e.kill:
                killed.append(e.id)
        snapshot = rnd.snapshot
        placements = rnd.placements  # the plan's own: not changed after this round
        entries = tuple(ordered)  # in order; an entry's id never changes
        thresholds = self.config.las_thresholds

        def short(job_id: str) -> JobView | None:
            """The job's view if it had an entry this round and gets less than W."""
            if job_id not in snapshot:
                return None
            view = snapshot.job(job_id)
            state = view.state
            if state in ACTIVE_STATES:
                if not view.placement.parts:
                    return None
            elif state not in WAITING_STATES:
                return None
            placement = placements.get(job_id)
            return view if placement is None or placement.size < view.spec.world else None

        def make(view: JobView) -> str:
            spec = view.spec
            placement = placements.get(spec.id)
            size = placement.size if placement is not None else 0
            held = view.placement.size if view.state.holds_devices else 0
            tier = spec.tier.value
            level = bisect_right(thresholds, view.attained)
            if not size:
                if held:
                    return (
                        f"preempted: higher-priority work needs its {held} devices "
                        f"({tier}, service level {level})"
                    )
                return (
                    f"waiting: needs {spec.min_size} of {spec.world} devices, "
                    f"{max(0, left.get(spec.device_type, 0))} free after higher-priority "
                    f"work ({tier}, service level {level})"
                )
            if held and size < held:
                return f"shrunk {held}→{size}: higher-priority work needs devices"
            return f"running on {size} of {spec.world} devices: no more free"

        return LazyReasons(fixed, short, lambda: (e.id for e in entries), make)
