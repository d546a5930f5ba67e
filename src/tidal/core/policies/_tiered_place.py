"""Turn ``tiered``'s device counts into placements: keep, shrink in place, start, grow,
make room for premium jobs by migrating others (defragmentation), then fill leftovers."""

from __future__ import annotations

from tidal.core.placement import EMPTY, Placement
from tidal.core.policies._common import Round, shrink_parts
from tidal.core.policies._tiered_alloc import Entry, TieredConfig, _wanted
from tidal.core.snapshot import ClusterSnapshot
from tidal.core.tiers import Tier

_PREMIUM = Tier.PREMIUM


def realize(
    snapshot: ClusterSnapshot,
    stopping: dict[str, int],
    entries: list[Entry],
    admitted: list[Entry],
    config: TieredConfig,
) -> Round:
    """Place every entry at its target where possible (``entries`` in priority order).

    A job that moves (grows onto other nodes, or migrates) keeps its old devices reserved
    for the rest of the round: it holds them while it checkpoints anyway, and if its move
    has to wait, no other job's start depends on devices it has not released.
    """
    placements: dict[str, Placement] = {}
    used = dict(stopping)
    growers: list[Entry] = []
    starters: list[Entry] = []
    short: list[Entry] = []  # non-premium entries that may get less than W
    for e in entries:
        target = e.target
        held = e.held
        if target < e.world and e.tier is not _PREMIUM:
            short.append(e)
        if held:
            if target >= held:
                kept = e.view.placement
                if target > held:
                    growers.append(e)
            elif target:
                kept = shrink_parts(e.view.placement, target)
            else:
                continue
            placements[e.id] = kept
            for node, count in kept.parts:
                used[node] = used.get(node, 0) + count
        elif target and e.tier is not _PREMIUM:
            starters.append(e)
    rnd = Round(snapshot, used)
    rnd.placements.update(placements)
    pool = rnd.pool
    room = _Room(rnd, entries, stopping) if config.migrate else None
    blocked: set[str] = set()  # device types with a premium job left waiting
    for e in admitted:
        device_type = e.spec.device_type
        if rnd.place(e.view, e.world):
            continue
        free = pool.total_free(device_type)
        if free >= e.world and room is not None and room.make(e):
            continue
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
    failed: list[Entry] = []
    for e in growers:
        if not _grow(rnd, e, e.target):
            failed.append(e)
    for e in starters:
        if rnd.place(e.view, e.target) or _place_best(rnd, e, e.target - 1, 1):
            continue
        failed.append(e)
    if failed:
        short = sorted(short + [e for e in failed if e.target >= e.world], key=_priority)
    if blocked:  # keep what is free for the waiting premium job
        short = [e for e in short if e.spec.device_type not in blocked]
    _fill(rnd, short, config)
    return rnd


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


def _grow(rnd: Round, e: Entry, most: int) -> bool:
    """Grow a job that keeps its current placement this round: in place on its node if
    there is room, else onto a fresh compact placement (its old devices stay reserved)."""
    current = rnd.placements.get(e.id)
    if current is None or current is not e.view.placement:
        return False  # already moved or shrunk this round
    have = current.size
    pool = rnd.pool
    if len(current.parts) == 1:
        node, count = current.parts[0]
        free = pool.free_on(node)
        for size in reversed(e.spec.sizes):
            if have < size <= most and size - count <= free:
                pool.take(Placement(((node, size - count),)))
                rnd.set(e.view, Placement(((node, size),)))
                return True
    return bool(_place_best(rnd, e, most, have + 1))


def _fill(rnd: Round, entries: list[Entry], config: TieredConfig) -> None:
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
        current = placements.get(e.id)
        have = current.size if current is not None else 0
        if have >= e.world:
            continue
        device_type = e.spec.device_type
        if room.get(device_type, 0) < e.spec.min_size:
            continue
        if current is None:
            if e.held:
                if e.fixed or not rnd.keep(e.view):
                    continue  # stopped for premium work, or its devices went to others
            elif not _place_best(rnd, e, e.world, 1):
                continue
        elif _wanted(e, config) <= have or not _grow(rnd, e, e.world):
            continue
        room[device_type] = pool.largest_free(device_type)


class _Room:
    """Defragmentation: move non-premium jobs off nodes so a premium job fits."""

    def __init__(self, rnd: Round, entries: list[Entry], stopping: dict[str, int]) -> None:
        self.rnd = rnd
        self.entries = entries
        self.stopping = stopping
        self.by_id = {e.id: e for e in entries}
        self._occ: dict[int, dict[str, int]] | None = None
        self._now_left: list[int] | None = None

    def _free_now(self) -> list[int]:
        """Per node, devices free *before* this round's actions (what a migration may use
        without waiting for others to release theirs), less what migrations took."""
        if self._now_left is None:
            fx = self.rnd.pool.fx
            left = list(fx.cap)
            index = fx.index
            for node, count in self.stopping.items():
                left[index[node]] -= count
            for e in self.entries:
                if e.held:
                    for node, count in e.view.placement.parts:
                        left[index[node]] -= count
            self._now_left = left
        return self._now_left

    def _occupancy(self) -> dict[int, dict[str, int]]:
        """Node index -> non-premium job id -> devices there, as targeted so far."""
        if self._occ is None:
            index = self.rnd.pool.fx.index
            occ: dict[int, dict[str, int]] = {}
            for job_id, placement in self.rnd.placements.items():
                e = self.by_id.get(job_id)
                if e is None or e.tier is _PREMIUM:
                    continue
                for node, count in placement.parts:
                    occ.setdefault(index[node], {})[job_id] = count
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
                return False
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
                return False
            chosen.append((best[1], best[0]))
        self._clear(chosen, premium)
        return bool(self.rnd.place(premium.view, size))

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
        now_left = self._free_now()
        chosen_nodes = {i for i, _ in chosen}
        for j in pool.nodes_of(fx.types[chosen[0][0]]):
            releasing = pool.free[j] - max(0, now_left[j])
            if releasing > 0 and j not in chosen_nodes:
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
