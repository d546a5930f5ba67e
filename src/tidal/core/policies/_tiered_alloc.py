"""How many devices each job gets under ``tiered``: tiers, quotas, victims, LAS order.

This module decides device *counts* per device type; :mod:`._tiered_place` turns them into
placements. See :class:`tidal.core.policies.tiered.TieredPolicy` for the rules.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter

from tidal.core.placement import Placement
from tidal.core.snapshot import JobView
from tidal.core.spec import JobSpec
from tidal.core.tiers import Tier

_PREMIUM = Tier.PREMIUM
_STANDARD = Tier.STANDARD
_RANKS = {t.value: t.rank for t in Tier}  # by value: hashing Enum members is slow
_STANDARD_RANK = Tier.STANDARD.rank
_BASIC_RANK = Tier.BASIC.rank


_NO_KEY: tuple[int, int, int, float, str] = (-1, -1, -1, 0.0, "")  # before the first key

DEFAULT_MIN_HOLD = 3600.0
DEFAULT_LAS_THRESHOLDS = (7200.0, 28800.0, 115200.0)
DEFAULT_GROW_MIN_REMAINING = 600.0
DEFAULT_KILL_MAX_LOSS = 3600.0
DEFAULT_BASIC_LANE = 3
DEFAULT_CRITICAL_MARGIN = 21600.0
DEFAULT_CRITICAL_MIN = 259200.0
DEFAULT_CRITICAL_SHARE = 0.25
DEFAULT_SLACK_MARGIN = 4.0
GIB = float(1 << 30)


@dataclass(frozen=True, slots=True)
class TieredConfig:
    """Parameters of ``tiered`` (see :class:`~tidal.core.policies.tiered.TieredPolicy`)."""

    min_hold: float = DEFAULT_MIN_HOLD
    las_thresholds: tuple[float, ...] = DEFAULT_LAS_THRESHOLDS
    grow_min_remaining: float = DEFAULT_GROW_MIN_REMAINING
    kill_max_loss: float = DEFAULT_KILL_MAX_LOSS
    premium_sla: float = 0.95
    slack_margin: float = DEFAULT_SLACK_MARGIN
    standard_floor: float = 0.0
    basic_floor: float = 0.0
    floor_grace: float = 3600.0
    standard_yield: float = 0.0
    lowest_by_remaining: bool = True
    basic_lane: int = DEFAULT_BASIC_LANE
    critical_margin: float | None = DEFAULT_CRITICAL_MARGIN
    critical_min: float = DEFAULT_CRITICAL_MIN
    critical_share: float = DEFAULT_CRITICAL_SHARE
    checkpoint_fixed_s: float = 5.0
    checkpoint_gib_per_s: float = 1.0
    migrate: bool = True


class Basis:
    """What an entry derives from besides its job's view: the configuration and the clock
    of one round (made once per round)."""

    __slots__ = (
        "basic_lane",
        "by_remaining",
        "floors",
        "grace",
        "hold_since",
        "now",
        "thresholds",
        "yield_share",
    )

    def __init__(self, config: TieredConfig, now: float) -> None:
        self.now = now
        self.hold_since = now - config.min_hold  # placed after this: inside its hold
        self.thresholds: tuple[float, ...] = config.las_thresholds
        self.floors: dict[str, float] | None = None
        if config.standard_floor or config.basic_floor:
            self.floors = {"standard": config.standard_floor, "basic": config.basic_floor}
        self.grace = config.floor_grace
        self.yield_share = config.standard_yield
        self.by_remaining = config.lowest_by_remaining
        self.basic_lane = config.basic_lane


class Entry:
    """One job's bookkeeping during a round (mutable, private to ``tiered``).

    What derives from the job's spec (``spec``, ``id``, ``tier``, ``tenant``, ``world``,
    ``base_rank``) never changes; what derives from its view (``view``, ``held``, ``left``, ``las``,
    ``level``, ``rank``, ``timed``, and ``key`` where it does not depend on the time, see
    :meth:`retime`) changes with :meth:`update` when the job has a new view; and
    :meth:`renew` resets the rest, the round's decisions. So one entry follows its job
    from round to round. Reasons formatted after the round read the job's view, not its
    entry.
    """

    __slots__ = (
        "account",
        "base_rank",
        "critical",
        "fixed",
        "held",
        "hint",
        "id",
        "key",
        "key_gen",
        "kill",
        "las",
        "left",
        "level",
        "lowest",
        "pinned",
        "rank",
        "reason",
        "seen",
        "sorted_gen",
        "spec",
        "target",
        "tenant",
        "tier",
        "timed",
        "view",
        "world",
    )

    def __init__(self, view: JobView, held: int, basis: Basis) -> None:
        spec = view.spec
        self.spec: JobSpec = spec
        self.id = spec.id
        self.tier = spec.tier
        self.tenant = spec.tenant
        self.world = spec.world
        self.seen = 0  # the last round that saw it (``TieredPolicy``'s bookkeeping)
        self.base_rank = _RANKS[spec.tier._value_]  # once: an Enum's value is a dict lookup
        self.account = _NO_ACCOUNT  # its tenant's, set by its first `allocate_others`
        self.key = _NO_KEY
        self.key_gen = 0  # counts changes of `key`: see `set_key`
        self.sorted_gen = -1  # `key_gen` when last sorted (see `sort_entries`)
        self.update(view, held, basis)

    def update(self, view: JobView, held: int, basis: Basis) -> None:
        """Derive everything from ``view``, a view of the same job (the same spec): an
        entry follows its job from round to round, as its progress and state change."""
        spec = self.spec
        tier = self.tier
        world = self.world
        self.view = view
        self.held = held
        # Time it still needs at full size: the earliest it can finish is now + left.
        remaining = view.remaining
        self.left = remaining / world
        self.renew(basis.hold_since)
        thresholds = basis.thresholds
        # Priority within the tier: discretized least attained service, running jobs
        # before waiting ones at the same level, then first come first served.
        # `bisect_right(thresholds, attained)`, natively: a few thresholds, in order.
        attained = view.attained
        level = 0
        for threshold in thresholds:
            if threshold > attained:
                break
            level += 1
        self.las = level
        self.lowest = level == len(thresholds)  # where share floors may apply
        if basis.by_remaining and self.lowest and thresholds:
            # Within the lowest level, by declared work left: one sub-level per doubling,
            # `int(remaining / top).bit_length() - 1` (at least 0), natively.
            doublings = int(remaining / thresholds[-1])
            while doublings > 1:
                doublings >>= 1
                level += 1
        self.level = level
        self.rank = rank = self.base_rank
        # Within a level: running standard jobs, running basic jobs in the lane, waiting
        # standard jobs, waiting basic jobs in the lane; then first come first served.
        after = 0 if held else 2
        if rank == _BASIC_RANK and self.las < basis.basic_lane:
            # A young basic job queues with standard ones, behind those of its level.
            rank = self.rank = _STANDARD_RANK
            after += 1
        key = self.key
        if key[0] != rank or key[1] != level or key[2] != after:  # else: the same key
            self.set_key((rank, level, after, spec.submit_time, self.id))
        # Whether the key depends on the time (see :meth:`retime`).
        self.timed = bool(
            (basis.floors and self.lowest) or (basis.yield_share and tier is _STANDARD and not held)
        )
        if self.timed:
            self.retime(basis)

    def retime(self, basis: Basis) -> None:
        """The parts of the key that depend on the job's share of the device-time it asked
        for, ``attained / (W × age)``, once it is older than ``grace``:

        - Share floors guard against LAS starving long jobs: a job in the lowest service
          level whose share is below its tier's floor goes ahead of every level. Shorter
          jobs are left to LAS (they sit at a high level anyway).
        - ``yield_share``: a waiting standard job whose share is at least this (it has
          slack against its SLA) queues with basic jobs, by LAS, for the devices standard
          work leaves; it still takes devices from basic jobs once it has lost that slack.
        """
        spec = self.spec
        floors = basis.floors
        grace = basis.grace
        yield_share = basis.yield_share
        age = basis.now - spec.submit_time
        asked = spec.world * age
        attained = self.view.attained
        rank, level, after, submit, job_id = self.key
        new_rank, new_level = self.rank, self.level
        if floors and self.lowest:
            floor = floors.get(self.tier._value_, 0.0)
            if floor and age > grace and attained < floor * asked:
                new_level = -1
        waiting_standard = self.tier is _STANDARD and not self.held
        if yield_share and waiting_standard and age > grace and attained >= yield_share * asked:
            new_rank = _BASIC_RANK  # slack against its SLA: queues with basic jobs
        if (new_rank, new_level) != (rank, level):
            self.set_key((new_rank, new_level, after, submit, job_id))

    def set_key(self, key: tuple[int, int, int, float, str]) -> None:
        """Change the priority key. ``key_gen`` tells :func:`sort_entries` that it moved (a
        counter, not the tuple's identity: compiled, a fixed-length tuple is stored
        unboxed, and each read makes a new tuple object)."""
        self.key = key
        self.key_gen += 1

    def renew(self, hold_since: float) -> None:
        """Start a round: nothing decided yet."""
        self.target = 0
        self.critical = False  # on the critical path this round (see `_critical`)
        self.fixed = False  # target set by premium preemption; not revisited this round
        placed = self.view.placed_at
        # Inside its minimum hold time: keeps exactly what it has (premium work excepted).
        self.pinned = self.held > 0 and placed is not None and placed > hold_since
        self.kill = False  # stopped without a checkpoint
        self.hint: Placement | None = None  # where a premium job fits beside premium work
        self.reason = ""


class Account:
    """One tenant's standard devices of one device type in one allocation: asked for (W
    each), guaranteed, and given so far (premium use included when quotas apply)."""

    __slots__ = ("demand", "owed", "tenant", "used")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.demand = 0
        self.owed = 0
        self.used = 0

    def reset(self, quotas: Mapping[str, int], premium_use: Mapping[str, int]) -> None:
        self.demand = 0
        self.owed = 0
        self.used = premium_use.get(self.tenant, 0) if quotas else 0


_NO_ACCOUNT = Account("")  # an entry's account before its first allocation


def _account(
    e: Entry,
    accounts: dict[str, Account],
    quotas: Mapping[str, int],
    premium_use: Mapping[str, int],
) -> Account:
    """``e``'s tenant's account (found once per entry: entries keep theirs)."""
    account = e.account
    if account is _NO_ACCOUNT:
        found = accounts.get(e.tenant)
        if found is None:
            found = accounts[e.tenant] = Account(e.tenant)
            found.reset(quotas, premium_use)
        account = e.account = found
    return account


def guarantees(
    demand: Mapping[str, int],
    capacity: int,
    quotas: Mapping[str, int],
    premium_use: Mapping[str, int],
) -> dict[str, int]:
    """Devices each tenant's standard jobs are guaranteed this round (``demand``: the
    devices, W each, that a tenant's movable standard jobs ask for).

    With quotas: a named tenant's quota minus what its premium jobs use; tenants not
    named share what the quotas leave. Without: max-min fair shares of ``capacity`` over
    the tenants with live standard jobs (a tenant asking for less than its share leaves
    the rest to the others).
    """
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
    accounts: dict[str, Account],
) -> int:
    """Give the ``room`` devices premium work leaves to standard and basic jobs; returns
    the devices left over. Fixed entries (premium victims) keep their reduced targets.
    ``others`` comes in priority order (:func:`sort_entries`); jobs on the critical path
    are moved to its front. ``accounts`` are the device type's tenant accounts by tenant,
    kept from round to round (an entry keeps its own); this allocation resets them."""
    free = room
    critical = _critical(others, room, config) if config.critical_margin is not None else []
    if critical:  # they go first, in placement as in allocation
        others[:] = critical + [e for e in others if not e.critical]
    # One pass (in priority order) sets the pinned jobs' targets and splits the movable
    # jobs by tier, with each tenant's pinned standard devices and standard demand (in
    # the tenant's account, which each standard entry holds for the round).
    standard: list[Entry] = []
    basic: list[Entry] = []
    for account in accounts.values():
        account.reset(quotas, premium_use)
    for e in others:
        if e.fixed:
            free -= e.target
            continue
        if e.critical:
            if e.tier is _STANDARD:
                _account(e, accounts, quotas, premium_use).demand += e.world
            if e.pinned:
                e.target = e.held
                free -= e.held
            continue
        # By rank, not tier: a standard job with SLA slack (`standard_yield`) queues as
        # basic, and a young basic job (`basic_lane`) as standard.
        if e.key[0] == _STANDARD_RANK:
            standard.append(e)
            account = _account(e, accounts, quotas, premium_use)
            account.demand += e.world
            if e.pinned:
                e.target = e.held
                free -= e.held
                account.used += e.held
        else:
            basic.append(e)
            if e.pinned:
                e.target = e.held
                free -= e.held

    # Jobs on the critical path run at full size before any other standard or basic job.
    for e in critical:
        if e.pinned:
            size = e.held
        else:
            size = _fit(e.spec.sizes, _min(e.world, free))
            e.target = size
            free -= size
        if size and e.tier is _STANDARD:
            _account(e, accounts, quotas, premium_use).used += size
    # Standard jobs within their tenant's guarantee.
    demand = {tenant: account.demand for tenant, account in accounts.items() if account.demand}
    owed = guarantees(demand, room, quotas, premium_use)
    for tenant, account in accounts.items():
        account.owed = owed.get(tenant, 0)
    for e in standard:
        if free <= 0:
            break
        if e.pinned:
            continue
        account = e.account
        left = account.owed - account.used
        sizes = e.spec.sizes
        if left < sizes[0]:
            continue
        size = _fit(sizes, _min(_min(e.held or e.world, left), free))
        if size:
            e.target = size
            account.used += size
            free -= size
    # Then borrowing by standard jobs, then basic jobs, on whatever is left: running jobs
    # keep what they hold and waiting ones start, in priority order...
    for group in (standard, basic):
        for e in group:
            if free <= 0:
                break
            have = e.target
            held = e.held
            if held and have >= held:
                continue  # keeps what it holds already: nothing to borrow
            sizes = e.spec.sizes
            if sizes[0] > have + free:
                continue  # cannot start on what is left (a cheap test: queues may be long)
            size = _fit(sizes, _min(held or e.world, have + free))
            if size > have:
                free -= size - have
                e.target = size
    # ...and only devices nobody needs go to running jobs that grow: growth never
    # preempts anyone.
    for group in (standard, basic):
        for e in group:
            if free <= 0:
                break
            have = e.target
            if have < e.held or have >= e.world:
                continue
            size = _fit(e.spec.sizes, _min(_wanted(e, config), have + free))
            if size > have:
                free -= size - have
                e.target = size
    return free


def _critical(others: list[Entry], room: int, config: TieredConfig) -> list[Entry]:
    """The jobs on the critical path of this device type's backlog, longest first.

    ``Entry.left`` is the time a job still needs at full size. The longest ``left`` among
    the standard and basic jobs, ``top``, bounds from below when the backlog can be done,
    whatever else runs; LAS left alone starves exactly these jobs (they have the most
    service), and each week one of them waits pushes the last finish out by that week. A
    job is critical if its ``left`` is at least ``critical_min`` and within
    ``critical_margin`` of ``top`` (twice the margin once it runs, so that the running
    ones are not dropped and taken back as ``top`` moves), and critical jobs together ask
    for at most ``critical_share`` of ``room``. Longest-remaining-first on these few
    jobs keeps the last finish near ``top``'s; everyone else keeps LAS order.
    """
    margin = config.critical_margin or 0.0
    line = config.critical_min
    top = 0.0
    for e in others:
        if not e.fixed and e.left > top:
            top = e.left
    if top < line:
        return []
    line = max(line, top - margin)
    held_line = max(config.critical_min, top - 2 * margin)
    found = [e for e in others if not e.fixed and e.left >= (held_line if e.held else line)]
    found.sort(key=_by_left)
    budget = int(config.critical_share * room)
    chosen: list[Entry] = []
    for e in found:
        if e.world <= budget:
            budget -= e.world
            e.critical = True
            chosen.append(e)
    return chosen


def _by_left(e: Entry) -> tuple[float, tuple[object, ...]]:
    """Longest time left first, then priority order."""
    return (-e.left, e.key)


def _min(a: int, b: int) -> int:
    """``min`` of two ints (compiled, the builtin is a generic call)."""
    return a if a <= b else b


def _fit(sizes: tuple[int, ...], devices: int) -> int:
    """``JobSpec.fit_size`` on the spec's ``sizes`` (ascending): the largest not above
    ``devices``, 0 if none. A native scan (a job has a few sizes, the divisors of W in
    its range): compiled, calling ``bisect`` costs more."""
    fit = 0
    for size in sizes:
        if size > devices:
            break
        fit = size
    return fit


# Priority order (``Entry.key``); an attrgetter runs in C when sorting many entries.
_KEY = attrgetter("key")


def sort_entries(others: list[Entry], last: list[Entry] | None, stamp: int) -> list[Entry]:
    """A new list of ``others`` in priority order. ``others`` are this round's entries,
    each marked with ``stamp`` in ``Entry.seen``, and are left as they are; ``last`` is
    the same device type's list as this function returned it last round.

    The key is a total order (it ends with the job id), so the result is the sorted list
    whatever the start; only the work differs. Entries of ``last`` that are still here
    with the key they were sorted under (:meth:`Entry.set_key` counts changes) are still
    in order among themselves; only the rest (new jobs, and those whose level or state
    changed: a few per round) are inserted by binary search, instead of comparing every
    neighbouring pair of a long queue.
    """
    if not last:
        ordered = sorted(others, key=_KEY)  # a new list: ``others`` keeps snapshot order
        for e in ordered:
            e.sorted_gen = e.key_gen
        return ordered
    kept: list[Entry] = []
    for e in last:
        if e.seen == stamp and e.key_gen == e.sorted_gen:
            kept.append(e)
            e.seen = -stamp  # in `kept`: not to be inserted again
    if len(kept) == len(others):
        for e in kept:
            e.seen = stamp
        return kept
    moved = [e for e in others if e.seen == stamp]
    for e in kept:
        e.seen = stamp
    if 8 * len(moved) > len(kept):  # many moved: one sort of the lot is cheaper
        kept.extend(moved)
        kept.sort(key=_KEY)
    else:
        for e in moved:
            insort(kept, e, key=_KEY)
    for e in moved:
        e.sorted_gen = e.key_gen
    return kept


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
