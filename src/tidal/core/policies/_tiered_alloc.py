"""How many devices each job gets under ``tiered``: tiers, quotas, victims, LAS order.

This module decides device *counts* per device type; :mod:`._tiered_place` turns them into
placements. See :class:`tidal.core.policies.tiered.TieredPolicy` for the rules.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tidal.core.placement import Placement
from tidal.core.snapshot import JobView
from tidal.core.spec import JobSpec
from tidal.core.states import JobState
from tidal.core.tiers import Tier

_PREMIUM = Tier.PREMIUM
_STANDARD = Tier.STANDARD
_BASIC = Tier.BASIC
_RUNNING = JobState.RUNNING


DEFAULT_MIN_HOLD = 900.0
DEFAULT_LAS_THRESHOLDS = (3600.0, 14400.0, 57600.0)
DEFAULT_GROW_MIN_REMAINING = 600.0
DEFAULT_KILL_MAX_LOSS = 900.0
GIB = float(1 << 30)


@dataclass(frozen=True, slots=True)
class TieredConfig:
    """Parameters of ``tiered`` (see :class:`~tidal.core.policies.tiered.TieredPolicy`)."""

    min_hold: float = DEFAULT_MIN_HOLD
    las_thresholds: tuple[float, ...] = DEFAULT_LAS_THRESHOLDS
    grow_min_remaining: float = DEFAULT_GROW_MIN_REMAINING
    kill_max_loss: float = DEFAULT_KILL_MAX_LOSS
    premium_sla: float = 0.95
    checkpoint_fixed_s: float = 5.0
    checkpoint_gib_per_s: float = 1.0
    migrate: bool = True


class Entry:
    """One job's bookkeeping during a round (mutable, private to ``tiered``)."""

    __slots__ = (
        "fixed",
        "held",
        "hint",
        "id",
        "key",
        "kill",
        "pinned",
        "reason",
        "spec",
        "target",
        "tenant",
        "tier",
        "view",
        "world",
    )

    def __init__(self, view: JobView) -> None:
        spec = view.spec
        self.view = view
        self.spec: JobSpec = spec
        self.id = spec.id
        self.tier = spec.tier
        self.tenant = spec.tenant
        self.world = spec.world
        self.held = view.placement.size
        self.target = 0
        self.fixed = False  # target set by premium preemption; not revisited this round
        self.pinned = False
        self.kill = False  # stopped without a checkpoint
        self.hint: Placement | None = None  # where a premium job fits beside premium work
        self.reason = ""
        self.key: tuple[int, int, int, float, str] = (0, 0, 0, 0.0, "")


def las_key(
    view: JobView, thresholds: Sequence[float], held: int
) -> tuple[int, int, int, float, str]:
    """Tier, then discretized least attained service: level, running before waiting,
    then first-come first-served."""
    spec = view.spec
    return (
        spec.tier.rank,
        bisect_right(thresholds, view.attained),
        0 if held else 1,
        spec.submit_time,
        spec.id,
    )


def victim_key(e: Entry) -> tuple[int, int, float, int, str]:
    """Cheapest victims to checkpoint first: not protected by min-hold, small checkpoint,
    most service already received (least attained service goes last, as LAS would)."""
    view = e.view
    return (1 if e.pinned else 0, e.spec.checkpoint_bytes, -view.attained, -e.held, e.id)


def kill_loss(e: Entry, now: float) -> float:
    """Device-seconds of work a kill would throw away: progress since the job's last
    checkpoint, or since it was (re)started; nothing while it is still starting."""
    view = e.view
    if view.state is not _RUNNING:
        return 0.0
    since = max(
        view.placed_at if view.placed_at is not None else view.spec.submit_time,
        view.last_checkpoint_at if view.last_checkpoint_at is not None else -math.inf,
    )
    return max(0.0, now - since) * e.held


def premium_admission(
    entries: list[Entry], capacity: int, fits: Callable[[Entry], Placement | None]
) -> tuple[list[Entry], list[Entry]]:
    """Premium jobs first: running ones keep W; waiting ones are admitted, in submission
    order, while the devices not held by premium work (``capacity`` counts devices still
    being released) can hold them and ``fits(entry)`` finds them a compact placement once
    every non-premium job is out of the way (None: no need to look; EMPTY: none), which
    is kept as the entry's ``hint``. Returns ``(running, admitted)``."""
    running = [e for e in entries if e.tier is _PREMIUM and e.held]
    waiting = sorted(
        (e for e in entries if e.tier is _PREMIUM and not e.held),
        key=lambda e: (e.spec.submit_time, e.id),
    )
    avail = capacity
    for e in running:
        e.target = e.held
        e.fixed = True
        avail -= e.held
    admitted: list[Entry] = []
    for e in waiting:
        e.fixed = True
        if e.world > avail:
            e.reason = (
                f"waiting: premium jobs hold {capacity - avail} of {capacity} devices, "
                f"{avail} left for a {e.world}-device job"
            )
        elif (hint := fits(e)) is not None and not hint:
            e.reason = f"waiting: premium jobs leave no room for {e.world} devices together"
        else:
            e.hint = hint
            e.target = e.world
            avail -= e.world
            admitted.append(e)
    return running, admitted


def stop_delay(e: Entry, config: TieredConfig) -> float:
    """Estimated seconds until a checkpointed stop of ``e`` releases its devices."""
    return config.checkpoint_fixed_s + e.spec.checkpoint_bytes / GIB / config.checkpoint_gib_per_s


def sla_slack(p: Entry, config: TieredConfig) -> float:
    """Seconds premium job ``p`` may wait and still meet its SLA (its declared work is the
    run-time estimate)."""
    return (1.0 / config.premium_sla - 1.0) * p.spec.full_duration


def take_for_premium(
    others: list[Entry],
    admitted: list[Entry],
    free_now: int,
    soon: int,
    now: float,
    config: TieredConfig,
) -> int:
    """Find devices for each admitted premium job, in order: free ones, then ones being
    released (unless it cannot afford to wait for them), then victims — basic before
    standard, shrink before stop, cheapest first. Returns how many devices being released
    were claimed.

    A premium job too short to wait for a checkpoint (its SLA slack is below the fastest
    checkpointed stop) takes devices from victims that are *killed* instead — those that
    lose the least progress, at most ``config.kill_max_loss`` device-seconds each; a
    shrink would need a checkpoint too. Victims get ``target``, ``fixed``, ``kill`` and
    ``reason`` set.
    """
    if not admitted:
        return 0
    victims = [e for e in others if e.held]
    by_cost: dict[Tier, list[Entry]] = {}
    by_loss: dict[Tier, list[tuple[float, Entry]]] = {}
    claimed = 0
    fastest = config.checkpoint_fixed_s
    for p in admitted:
        need = p.world
        use = min(free_now, need)
        free_now -= use
        need -= use
        tight = sla_slack(p, config) < fastest + 1.0 / config.checkpoint_gib_per_s
        if need and not tight:
            use = min(soon - claimed, need)
            claimed += use
            need -= use
        if not need:
            continue
        if not by_cost:
            for tier in (_BASIC, _STANDARD):
                group = [e for e in victims if e.tier is tier]
                by_cost[tier] = sorted(group, key=victim_key)
                by_loss[tier] = sorted(
                    ((kill_loss(e, now), e) for e in group), key=lambda le: (le[0], le[1].id)
                )
        if tight:
            for tier in (_BASIC, _STANDARD):
                for loss, e in by_loss[tier]:
                    if need <= 0 or loss > config.kill_max_loss:
                        break
                    need -= _take(e, 0, p, kill=True)
        for tier in (_BASIC, _STANDARD):
            for stop in (False, True):
                for e in by_cost[tier]:
                    if need <= 0:
                        break
                    have = e.target if e.fixed else e.held
                    if have <= 0:
                        continue
                    if stop:
                        need -= _take(e, 0, p, kill=False)
                        continue
                    new = e.spec.fit_size(have - need) or e.spec.min_size
                    if new < have:
                        need -= _take(e, new, p, kill=False)
        if need > 0:  # nothing left to take: wait for devices being released after all
            use = min(soon - claimed, need)
            claimed += use
    return claimed


def _take(e: Entry, new: int, premium: Entry, kill: bool) -> int:
    """Cut victim ``e`` to ``new`` devices for ``premium``; returns the devices freed."""
    have = e.target if e.fixed else e.held
    if have <= new:
        return 0
    e.target = new
    e.fixed = True
    if new:
        e.reason = f"shrunk {e.held}→{new} for premium job {premium.id}"
    elif kill:
        e.kill = True
        e.reason = f"stopped at once (no checkpoint) for premium job {premium.id}"
    else:
        e.kill = False
        e.reason = f"stopped for premium job {premium.id}"
    return have - new


def guarantees(
    standard: list[Entry],
    capacity: int,
    quotas: Mapping[str, int],
    premium_use: Mapping[str, int],
) -> dict[str, int]:
    """Devices each tenant's standard jobs are guaranteed this round.

    With quotas: a named tenant's quota minus what its premium jobs use; tenants not
    named share what the quotas leave. Without: max-min fair shares of ``capacity`` over
    the tenants with live standard jobs (a tenant asking for less than its share leaves
    the rest to the others).
    """
    demand: dict[str, int] = {}
    for e in standard:
        demand[e.tenant] = demand.get(e.tenant, 0) + e.world
    result: dict[str, int] = {}
    pool = capacity
    shared = demand
    if quotas:
        shared = {}
        for tenant, d in demand.items():
            if tenant in quotas:
                result[tenant] = max(0, quotas[tenant] - premium_use.get(tenant, 0))
            else:
                shared[tenant] = d
        pool = max(0, capacity - sum(quotas.values()))
    # Max-min fair water-filling over `shared`, in integer devices.
    order = sorted(shared.items(), key=lambda kv: (kv[1], kv[0]))
    left = len(order)
    for tenant, d in order:
        share = pool // left if left else 0
        give = min(d, share)
        result[tenant] = give
        pool -= give
        left -= 1
    return result


def allocate_others(
    others: list[Entry],
    room: int,
    quotas: Mapping[str, int],
    premium_use: Mapping[str, int],
    now: float,
    config: TieredConfig,
) -> int:
    """Give the ``room`` devices premium work leaves to standard and basic jobs; returns
    the devices left over. Fixed entries (premium victims) keep their reduced targets.
    Sorts ``others`` into priority order."""
    free = room
    min_hold = config.min_hold
    thresholds = config.las_thresholds
    for e in others:
        view = e.view
        e.key = las_key(view, thresholds, e.held)
        if e.fixed:
            free -= e.target
        elif e.held and view.placed_at is not None and now - view.placed_at < min_hold:
            e.pinned = True
            e.target = e.held
            free -= e.held
    others.sort(key=_key_of)
    movable = [e for e in others if not e.fixed]
    standard = [e for e in movable if e.tier is _STANDARD]
    basic = [e for e in movable if e.tier is _BASIC]

    # Standard jobs within their tenant's guarantee.
    owed = guarantees(standard, room, quotas, premium_use)
    used = dict(premium_use) if quotas else {}
    for e in standard:
        if e.pinned:
            used[e.tenant] = used.get(e.tenant, 0) + e.target
    for e in standard:
        if free <= 0:
            break
        if e.pinned:
            continue
        left = owed.get(e.tenant, 0) - used.get(e.tenant, 0)
        if left <= 0:
            continue
        size = e.spec.fit_size(min(_wanted(e, config), left, free))
        if size:
            e.target = size
            used[e.tenant] = used.get(e.tenant, 0) + size
            free -= size
    # Then borrowing by standard jobs, then basic jobs, on whatever is left.
    for group in (standard, basic):
        for e in group:
            if free <= 0:
                break
            have = e.target
            if have >= e.world:
                continue
            size = e.spec.fit_size(min(_wanted(e, config), have + free))
            if size > have:
                free -= size - have
                e.target = size
    return free


def _key_of(e: Entry) -> tuple[int, int, int, float, str]:
    return e.key


def _wanted(e: Entry, config: TieredConfig) -> int:
    """W, except that a running job grows past what it holds only once its minimum hold
    time is over (no resize churn) and if it has enough work left to repay the restart a
    resize costs."""
    held = e.held
    if not held or held >= e.world:
        return e.world
    if not e.pinned and e.view.remaining / held >= config.grow_min_remaining:
        return e.world
    return held
