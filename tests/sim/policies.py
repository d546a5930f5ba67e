"""Tiny policies for engine tests: a gang FIFO and a scripted one whose plans are given."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tidal.core import ClusterSnapshot, JobState, Placement, Plan

_WAITING = (JobState.PENDING, JobState.PREEMPTED)


def pack(free: dict[str, int], size: int) -> Placement | None:
    """Best fit on one node, else fill the emptiest nodes first; takes from ``free``."""
    fits = [(c, n) for n, c in free.items() if c >= size]
    if fits:
        _, node = min(fits)
        free[node] -= size
        return Placement.of({node: size})
    if sum(free.values()) < size:
        return None
    parts: dict[str, int] = {}
    need = size
    for node, count in sorted(free.items(), key=lambda kv: (-kv[1], kv[0])):
        take = min(count, need)
        if take:
            parts[node] = take
            free[node] -= take
            need -= take
        if not need:
            break
    return Placement.of(parts)


class GangFifo:
    """Non-preemptive FIFO at full size W, head-of-line blocking (like YARN-CS)."""

    name = "test-fifo"
    tick: float | None = None
    round_interval: float | None = None

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        free = snapshot.free_per_node()
        placements: dict[str, Placement] = {}
        blocked = False
        for view in snapshot.jobs:
            if view.holds_devices:
                placements[view.id] = view.placement
            elif view.state in _WAITING and not blocked:
                got = pack(free, view.spec.world)
                if got is None:
                    blocked = True
                else:
                    placements[view.id] = got
        return Plan(placements)


Script = Callable[[ClusterSnapshot], Mapping[str, Placement]]


class Scripted:
    """Plans whatever ``script(snapshot)`` returns; jobs it leaves out keep their placement
    unless ``script`` names them with an empty placement."""

    def __init__(self, script: Script, checkpoint_on_stop: bool = True, tick: float | None = None):
        self.name = "scripted"
        self.tick = tick
        self.round_interval: float | None = None
        self._script = script
        self._checkpoint = checkpoint_on_stop
        self.calls: list[float] = []

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        self.calls.append(snapshot.now)
        placements = {v.id: v.placement for v in snapshot.jobs if v.holds_devices}
        placements.update(self._script(snapshot))
        return Plan(placements, checkpoint_on_stop=self._checkpoint)


class GreedyFit(GangFifo):
    """Like :class:`GangFifo` but skips jobs that do not fit (no head-of-line blocking)."""

    name = "test-greedy"

    def schedule(self, snapshot: ClusterSnapshot) -> Plan:
        free = snapshot.free_per_node()
        left = sum(free.values())
        placements: dict[str, Placement] = {}
        for view in snapshot.jobs:
            if view.holds_devices:
                placements[view.id] = view.placement
            elif left and view.state in _WAITING and view.spec.world <= left:
                got = pack(free, view.spec.world)
                if got is not None:
                    placements[view.id] = got
                    left -= view.spec.world
        return Plan(placements)
