"""Turn ``tiered``'s device counts into placements: keep, shrink in place, start, grow,
make room for premium jobs by migrating others (defragmentation), then fill leftovers."""

from __future__ import annotations

from tidal.core.packing import FreePool, fleet_index
from tidal.core.placement import EMPTY, Placement
from tidal.core.policies._common import Round, shrink_parts
from tidal.core.policies._tiered_alloc import Entry, TieredConfig, _wanted
from tidal.core.snapshot import ClusterSnapshot
from tidal.core.states import JobState
from tidal.core.tiers import Tier

_PREMIUM = Tier.PREMIUM


def realize(
    snapshot: ClusterSnapshot,
    stopping: dict[str, int],
    entries: list[Entry],
    admitted: list[Entry],
    config: TieredConfig,
    free_now: list[int],
) -> Round:
    """Place every entry at its target where possible (``entries`` in priority order).

    Jobs are first placed on devices that are free *now*, so they start at once; devices
    that jobs stopping or shrinking with a checkpoint release this round are used only
    for what does not fit otherwise (those starts wait for the release). A job that moves
    (grows onto other nodes, or migrates) keeps its old devices reserved for the rest of
    the round: it holds them while it checkpoints anyway, and if its move has to wait, no
    other job's start depends on devices it has not released.

    ``free_now`` counts the devices free before this round's actions on each node (fleet
    order): capacity less what stopping jobs and ``entries`` hold.
    """
    placements: dict[str, Placement] = {}
    released: dict[str, int] = {}  # freed this round, but only after a checkpoint
    growers: list[Entry] = []  # jobs to grow or start, in priority order
    short: list[Entry] = []  # non-premium entries that may get less than W
    running = JobState.RUNNING
    # The round's pool: what is free now, plus what shrunk and stopped jobs give up.
    round_free = list(free_now)
    bumped: set[int] = set()  # nodes where shrunk and stopped jobs give devices up
    index = fleet_index(snapshot.fleet).index
    for e in entries:
        target = e.target
        held = e.held
        if target < e.world and e.tier is not _PREMIUM:
            short.append(e)
        if held:
            current = e.view.placement
            if target >= held:
                if target > held:
                    growers.append(e)
                placements[e.id] = current
                continue
            kept = shrink_parts(current, target) if target else EMPTY
            left = kept.as_dict()
            # A running job that checkpoints releases its devices only after that.
            after_checkpoint = not e.kill and e.view.state is running
            for node, count in current.parts:
                gone = count - left.get(node, 0)
                if gone > 0:
                    i = index[node]
                    round_free[i] += gone
                    bumped.add(i)
                    if after_checkpoint:
                        released[node] = released.get(node, 0) + gone
            if target:
                placements[e.id] = kept
        elif target and e.tier is not _PREMIUM:
            growers.append(e)
    rnd = Round(snapshot, stopping, placements, round_free)
    pool = rnd.pool
    now = _NowFree(rnd, free_now, bumped)
    room = _Room(rnd, entries, now) if config.migrate else None
    # Largest first, so small premium jobs do not take the holes big ones need.
    premium = sorted(admitted, key=lambda e: (-e.world, e.spec.submit_time, e.id))
    hold = _Holds(pool, released)
    hold.take()
    later: list[Entry] = []
    for e in premium:  # first on devices free now: they start at once
        hint = e.hint
        if hint and hint.size == e.world:
            if pool.fits(hint):
                pool.take(hint)
                rnd.set(e.view, hint)
                continue  # where the premium finder meant it to go
        elif rnd.place(e.view, e.world):
            continue
        later.append(e)
    hold.give()
    blocked: set[str] = set()  # device types with a premium job left waiting
    for e in later:  # then on devices being released, or in a hole made by migration
        hint = e.hint
        device_type = e.spec.device_type
        free = pool.total_free(device_type)
        if hint and hint.size == e.world and pool.fits(hint):
            pool.take(hint)
            rnd.set(e.view, hint)
        elif not (
            rnd.place(e.view, e.world) or (free >= e.world and room is not None and room.make(e))
        ):
            blocked.add(device_type)
            if free >= e.world:
                e.reason = (
                    f"waiting: {free} devices free but fragmented (largest hole "
                    f"{pool.largest_free(device_type)}) for a {e.world}-device premium job"
                )
            else:
                e.reason = (
                    f"waiting: {free} of {e.world} devices free, the rest being released "
                    "by jobs that are checkpointing"
                )
    hold.take()
    late: list[Entry] = []
    for first in (True, False):
        if not first:
            hold.give()
        # First only at their full targets on devices free now; smaller sizes, and devices
        # being released, only after that.
        for e in growers:  # in priority order, starters and growers alike
            if e.held:
                if not _grow(rnd, e, e.target, e.target if first else e.held + 1):
                    late.append(e)
            elif not (
                rnd.place(e.view, e.target) or (not first and _place_best(rnd, e, e.target - 1, 1))
            ):
                late.append(e)
        growers, late = late, []
    if growers:
        short = sorted(short + [e for e in growers if e.target >= e.world], key=_priority)
    if blocked:  # keep what is free for the waiting premium job
        short = [e for e in short if e.spec.device_type not in blocked]
    _fill(rnd, short, now, config)
    return rnd


class _Holds:
    """Devices kept out of the pool for a while (those released only after a checkpoint),
    taken back as far as they are still free."""

    def __init__(self, pool: FreePool, counts: dict[str, int]) -> None:
        self.pool = pool
        index = pool.fx.index
        # By node name, as (node index, devices): a round may release thousands of nodes.
        self.counts = [(index[node], count) for node, count in sorted(counts.items())]
        self.taken: list[tuple[int, int]] = []

    def take(self) -> None:
        pool = self.pool
        free = pool.free
        for i, count in self.counts:
            have = min(count, free[i])
            if have:
                pool.take_at(i, have)
                self.taken.append((i, have))

    def give(self) -> None:
        for i, count in self.taken:
            self.pool.give_at(i, count)
        self.taken = []


def _priority(e: Entry) -> tuple[int, int, int, float, str]:
    return e.key


def _place_best(rnd: Round, e: Entry, most: int, least: int) -> Placement:
    """Place ``e`` at the largest allowed size in ``[least, most]`` that fits now."""
    for size in reversed(e.spec.sizes):
        if size > most:
            continue
        if size < least:
            break
        placement = rnd.place(e.view, size)
        if placement:
            return placement
    return EMPTY


def _grow(rnd: Round, e: Entry, most: int, least: int = 0) -> bool:
    """Grow a job to the largest allowed size in ``[least, most]`` that fits: one starting
    this round is simply placed bigger; a running one that keeps its placement this round
    grows in place on its node if there is room, else onto a fresh compact placement (its
    old devices stay reserved)."""
    current = rnd.placements.get(e.id)
    if current is None:
        return False
    have = current.size
    pool = rnd.pool
    if not e.held:  # starting this round: just start it bigger, if it fits
        rnd.drop(e.view)
        if _place_best(rnd, e, most, max(least, have + 1)):
            return True
        pool.take(current)
        rnd.set(e.view, current)
        return False
    old = e.view.placement
    if current is not old:
        # Shrunk this round after all devices were counted: undo the shrink if its devices
        # are still free (no action at all is cheaper than a resize). Moved: leave it.
        if have < old.size <= most and _within(current, old):
            rest = Placement(tuple((n, c - current.as_dict().get(n, 0)) for n, c in old.parts))
            if pool.fits(rest):
                pool.take(rest)
                rnd.set(e.view, old)
                if old.size < most:
                    _grow(rnd, e, most)  # and on from there, if there is room
                return True
        return False
    node = current.parts[0][0] if len(current.parts) == 1 else ""
    free_here = pool.free_on(node) if node else 0
    device_type = e.spec.device_type
    node_cap = pool.fx.max_cap[device_type]
    for size in reversed(e.spec.sizes):
        if size > most:
            continue
        if size <= have or size < least:
            break
        if size - have <= free_here:
            pool.take(Placement(((node, size - have),)))
            rnd.set(e.view, Placement(((node, size),)))
            return True
        if size > node_cap and have % node_cap == 0:
            # Spanning jobs on whole nodes grow by adding nodes.
            extra = pool.allocate(size - have, device_type)
            if extra:
                rnd.set(e.view, Placement.of(current.parts + extra.parts))
                return True
        if rnd.place(e.view, size):
            return True
    return False


def _within(inner: Placement, outer: Placement) -> bool:
    have = outer.as_dict()
    return all(have.get(n, 0) >= c for n, c in inner.parts)


def _fill(rnd: Round, entries: list[Entry], now: _NowFree, config: TieredConfig) -> None:
    """Work conservation after fragmentation: let non-premium jobs in priority order keep,
    take or grow into devices that are still free."""
    pool = rnd.pool
    placements = rnd.placements
    room: dict[str, int] = {}
    for device_type in pool.fx.by_type:
        room[device_type] = pool.largest_free(device_type)
    if not any(room.values()):
        return
    for e in entries:
        spec = e.spec
        device_type = spec.device_type
        if room.get(device_type, 0) < spec.min_size:
            continue  # the common case on a full fleet: tested first
        current = placements.get(e.id)
        have = current.size if current is not None else 0
        if have >= e.world:
            continue
        if current is None:
            if e.held:
                if e.fixed:
                    continue  # stopped for premium work: it must not come straight back
                if rnd.keep(e.view):
                    current = e.view.placement  # its devices were not needed after all
                    have = current.size
                else:
                    # Its devices went to others: move it, at most at its size, onto devices
                    # free now. Such a move (a migration or a shrink) is applied before any
                    # grow or start that takes its old devices; a grow might not be.
                    if now.relocate(e, e.held, 1):
                        e.reason = "moved: higher-priority work took its devices"
                        room[device_type] = pool.largest_free(device_type)
                    continue
            elif not _place_best(rnd, e, e.world, 1):
                continue
        if current is not None:
            wanted = _wanted(e, config)
            if wanted > have:
                _grow(rnd, e, wanted)
        room[device_type] = pool.largest_free(device_type)


class _NowFree:
    """Devices free *before* this round's actions, per node, less what moves took.

    A running job that moves (migrates, or is re-placed after losing its devices) may only
    move onto these, so that its move can be applied at once: other jobs may be starting on
    the devices it leaves, and must not wait on a move that itself waits.
    """

    def __init__(self, rnd: Round, free_now: list[int], bumped: set[int]) -> None:
        self.rnd = rnd
        self.free_now = free_now
        self._left: list[int] | None = None
        # The round's pool can have more free than ``free_now`` on a node only where
        # devices were given up (``bumped``) or given back to it (``pool.grown``).
        self.bumped = bumped
        rnd.pool.grown = set()

    def left(self) -> list[int]:
        if self._left is None:
            self._left = list(self.free_now)  # copied: moves count against it
        return self._left

    def releasing(self, device_type: str) -> list[tuple[int, int]]:
        """``(node, devices)``, in fleet order, for the devices of ``device_type`` that
        the round's pool holds free but that are not free now (being released by this
        round's stops, shrinks and moves). Only nodes whose count rose above ``free_now``
        can have any, so only those are looked at: a fleet has up to tens of thousands of
        nodes, and a round may relocate hundreds of jobs."""
        pool = self.rnd.pool
        free = pool.free
        types = pool.fx.types
        left = self.left()
        grown = pool.grown or set()
        out: list[tuple[int, int]] = []
        for j in sorted(self.bumped | grown):
            if types[j] == device_type:
                releasing = free[j] - max(0, left[j])
                if releasing > 0:
                    out.append((j, releasing))
        return out

    def relocate(self, e: Entry, most: int, least: int = 1) -> Placement:
        """Place a running job afresh, with ``least`` to ``most`` devices, on devices free
        now (whatever it holds must already be out of this round's pool)."""
        rnd = self.rnd
        pool = rnd.pool
        fx = pool.fx
        left = self.left()
        blocks: list[Placement] = []
        for j, releasing in self.releasing(e.spec.device_type):
            block = Placement(((fx.names[j], releasing),))
            pool.take(block)
            blocks.append(block)
        placement = _place_best(rnd, e, most, least)
        for block in blocks:
            pool.give(block)
        for node, count in placement.parts:
            left[fx.index[node]] -= count
        return placement


class _Room:
    """Defragmentation: move non-premium jobs off nodes so a premium job fits."""

    def __init__(self, rnd: Round, entries: list[Entry], now: _NowFree) -> None:
        self.rnd = rnd
        self.now = now
        self.entries = entries
        self._by_id: dict[str, Entry] | None = None
        self._occ: dict[int, dict[str, int]] | None = None

    @property
    def by_id(self) -> dict[str, Entry]:
        """Entries by job id, built the first time a premium job needs room made (rarely:
        most rounds never defragment, and the map costs a pass over every job)."""
        if self._by_id is None:
            self._by_id = {e.id: e for e in self.entries}
        return self._by_id

    def _occupancy(self) -> dict[int, dict[str, int]]:
        """Node index -> non-premium job id -> devices there, as targeted so far."""
        if self._occ is None:
            index = self.rnd.pool.fx.index
            placements = self.rnd.placements
            occ: dict[int, dict[str, int]] = {}
            for e in self.entries:
                if e.tier is _PREMIUM:
                    continue
                placement = placements.get(e.id)
                if placement is None:
                    continue
                for node, count in placement.parts:
                    i = index[node]
                    jobs = occ.get(i)
                    if jobs is None:
                        occ[i] = {e.id: count}
                    else:
                        jobs[e.id] = count
            self._occ = occ
        return self._occ

    def make(self, premium: Entry) -> bool:
        """Clear room for ``premium`` and place it; False (and nothing moved) if impossible."""
        pool = self.rnd.pool
        fx = pool.fx
        device_type = premium.spec.device_type
        size = premium.world
        node_cap = fx.max_cap[device_type]
        occ = self._occupancy()
        free = pool.free
        cap = fx.cap
        movable = {i: sum(jobs.values()) for i, jobs in occ.items()}
        nodes = fx.by_type[device_type]
        # Whole nodes (for jobs larger than a node): only nodes nothing unmovable holds.
        whole = size // node_cap if size > node_cap else 0
        rest = size - whole * node_cap
        chosen: list[tuple[int, int]] = []  # (node, devices needed from it)
        if whole:
            full = sorted(
                (movable.get(i, 0), i)
                for i in nodes
                if cap[i] == node_cap and free[i] + movable.get(i, 0) == cap[i]
            )
            if len(full) < whole:
                return self._make_at_hint(premium, movable)
            chosen = [(i, cap[i] - free[i]) for _, i in full[:whole]]
        if rest:
            taken = {i for i, _ in chosen}
            best: tuple[int, int] | None = None
            for i in nodes:
                if i in taken or cap[i] < rest:
                    continue
                have = free[i] + movable.get(i, 0)
                if have < rest:
                    continue
                cand = (max(0, rest - free[i]), i)
                if best is None or cand < best:
                    best = cand
            if best is None:
                return self._make_at_hint(premium, movable)
            chosen.append((best[1], best[0]))
        self._clear(chosen, premium)
        return bool(self.rnd.place(premium.view, size))

    def _make_at_hint(self, premium: Entry, movable: dict[int, int]) -> bool:
        """Clear the nodes where the job fits beside premium work (its ``hint``)."""
        hint = premium.hint
        if not hint:
            return False
        pool = self.rnd.pool
        index = pool.fx.index
        chosen: list[tuple[int, int]] = []
        for node, count in hint.parts:
            i = index[node]
            if pool.free[i] + movable.get(i, 0) < count:
                return False
            chosen.append((i, max(0, count - pool.free[i])))
        self._clear(chosen, premium)
        if not pool.fits(hint):
            return False
        pool.take(hint)
        self.rnd.set(premium.view, hint)
        return True

    def _clear(self, chosen: list[tuple[int, int]], premium: Entry) -> None:
        """Move jobs off the chosen nodes until each has the devices needed free."""
        rnd = self.rnd
        pool = rnd.pool
        fx = pool.fx
        occ = self._occupancy()
        # Block the chosen nodes so that moved jobs land elsewhere, and devices others are
        # still releasing, so that every migration can be applied at once.
        blocks = [Placement(((fx.names[i], pool.free[i]),)) for i, _ in chosen if pool.free[i]]
        for block in blocks:
            pool.take(block)
        now_left = self.now.left()
        chosen_nodes = {i for i, _ in chosen}
        for j, releasing in self.now.releasing(fx.types[chosen[0][0]]):
            if j not in chosen_nodes:
                block = Placement(((fx.names[j], releasing),))
                pool.take(block)
                blocks.append(block)
        blocked = {i for i, _ in chosen}
        for i, need in chosen:
            freed = 0
            for job_id, count in sorted(occ.get(i, {}).items(), key=lambda kv: (-kv[1], kv[0])):
                if freed >= need:
                    break
                e = self.by_id[job_id]
                old = rnd.target(job_id)
                rnd.drop(e.view)
                for node, _ in old.parts:
                    occ.get(fx.index[node], {}).pop(job_id, None)
                freed += count
                # Its devices on the blocked nodes stay free for the premium job.
                for node, c in old.parts:
                    if fx.index[node] in blocked:
                        hold = Placement(((node, c),))
                        pool.take(hold)
                        blocks.append(hold)
                new = _place_best(rnd, e, old.size, 1)
                if new:
                    for node, c in new.parts:
                        j = fx.index[node]
                        occ.setdefault(j, {})[job_id] = c
                        now_left[j] -= c
                    verb = "migrated" if new.size == old.size else f"shrunk {old.size}→{new.size}"
                    e.reason = f"{verb} to make room for premium job {premium.id}"
                else:
                    e.fixed = True
                    e.reason = f"stopped to make room for premium job {premium.id}"
        for block in blocks:
            pool.give(block)
