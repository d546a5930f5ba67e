"""Compact, best-fit placement over a pool of free devices.

Every policy places jobs with the same rules, so that comparisons between them are honest:

* a job whose size fits in one node goes on one node: the node with the *fewest* free
  devices that still holds it (best fit), which keeps large holes open for large jobs;
* a job larger than a node takes whole free nodes and puts the remainder on one node,
  again by best fit;
* devices of a job must all be of the job's device type.

:class:`FreePool` keeps, per device type, one bucket per free count (0..devices per
node). A bucket is a stack of node indices with lazy deletion: an entry is valid while
the node still has exactly that many free devices. Allocating scans at most one bucket per
free count, so one allocation costs O(devices per node), independent of the fleet size.
The pool is deterministic: the same sequence of calls gives the same placements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tidal.core.errors import PlanError
from tidal.core.fleet import Fleet
from tidal.core.placement import EMPTY, Placement

__all__ = ["FleetIndex", "FreePool", "fleet_index"]


class FleetIndex:
    """Node names, capacities and types as flat lists; built once per fleet."""

    __slots__ = ("by_type", "cap", "capacity", "index", "max_cap", "names", "types")

    def __init__(self, fleet: Fleet) -> None:
        self.names: list[str] = [n.name for n in fleet.nodes]
        self.cap: list[int] = [n.devices for n in fleet.nodes]
        self.types: list[str] = [n.device_type for n in fleet.nodes]
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.by_type: dict[str, list[int]] = {}
        for i, t in enumerate(self.types):
            self.by_type.setdefault(t, []).append(i)
        self.max_cap: dict[str, int] = {
            t: max(self.cap[i] for i in idx) for t, idx in self.by_type.items()
        }
        self.capacity: dict[str, int] = {
            t: sum(self.cap[i] for i in idx) for t, idx in self.by_type.items()
        }


_last_index: tuple[Fleet, FleetIndex] | None = None


def fleet_index(fleet: Fleet) -> FleetIndex:
    """The :class:`FleetIndex` of ``fleet``, cached for the last fleet seen (fleets are
    immutable, and a simulation or control loop reuses one fleet object for every round)."""
    global _last_index
    cached = _last_index
    if cached is not None and cached[0] is fleet:
        return cached[1]
    index = FleetIndex(fleet)
    _last_index = (fleet, index)
    return index


class FreePool:
    """Free devices per node, with O(devices per node) best-fit allocation.

    ``used`` maps node names to devices already taken (for instance by jobs that are
    stopping), and ``taken`` lists placements already made. Nodes of every type share the
    pool; each allocation names its type.
    """

    __slots__ = ("_buckets", "_total", "free", "fx", "grown")

    def __init__(
        self,
        fleet: Fleet | FleetIndex,
        used: Mapping[str, int] | None = None,
        taken: Iterable[Placement] = (),
        free: list[int] | None = None,
    ) -> None:
        fx = fleet if isinstance(fleet, FleetIndex) else fleet_index(fleet)
        if free is not None:  # counted by the caller (see `from_free`)
            self._fill(fx, free)
            return
        free = list(fx.cap)
        index = fx.index
        if used:
            for name, count in used.items():
                free[index[name]] -= count
        for placement in taken:
            for name, count in placement.parts:
                free[index[name]] -= count
        self._fill(fx, free)

    @classmethod
    def from_free(cls, fleet: Fleet, free: list[int]) -> FreePool:
        """A pool with ``free[i]`` free devices on node ``i`` (in fleet order), for callers
        that have counted them already; the pool takes ownership of the list."""
        return cls(fleet, free=free)

    def _fill(self, fx: FleetIndex, free: list[int]) -> None:
        if min(free, default=0) < 0:
            i = free.index(min(free))
            raise PlanError(
                f"node {fx.names[i]!r} overcommitted: {fx.cap[i] - free[i]} of {fx.cap[i]} devices"
            )
        self.fx = fx
        self.free = free
        # Nodes whose free count rose since tracking began (None: not tracked).
        self.grown: set[int] | None = None
        self._total: dict[str, int] = {
            t: sum(free[i] for i in idx) for t, idx in fx.by_type.items()
        }
        self._buckets: dict[str, list[list[int]]] = {}
        for t, idx in fx.by_type.items():
            buckets: list[list[int]] = [[] for _ in range(fx.max_cap[t] + 1)]
            # Pushed in reverse so the lowest-numbered node is on top of its stack.
            for i in reversed(idx):
                f = free[i]
                if f:
                    buckets[f].append(i)
            self._buckets[t] = buckets

    # -- queries -----------------------------------------------------------------------

    def free_on(self, node: str) -> int:
        return self.free[self.fx.index[node]]

    def total_free(self, device_type: str) -> int:
        return self._total.get(device_type, 0)

    def largest_free(self, device_type: str) -> int:
        """Most free devices on any one node of ``device_type``."""
        buckets = self._buckets.get(device_type)
        if buckets is None:
            return 0
        free = self.free
        for f in range(len(buckets) - 1, 0, -1):
            stack = buckets[f]
            while stack:
                if free[stack[-1]] == f:
                    return f
                stack.pop()
        return 0

    def copy(self) -> FreePool:
        clone = FreePool(self.fx, free=list(self.free))
        # The same stacks, stale entries and all, so the copy allocates as the original.
        clone._total = dict(self._total)
        clone._buckets = {t: [list(s) for s in b] for t, b in self._buckets.items()}
        return clone

    # -- taking and giving back ----------------------------------------------------------

    def _set(self, i: int, new: int) -> None:
        t = self.fx.types[i]
        old = self.free[i]
        self._total[t] += new - old
        self.free[i] = new
        if new > old and self.grown is not None:
            self.grown.add(i)
        if new:
            self._buckets[t][new].append(i)

    def take(self, placement: Placement) -> None:
        """Mark ``placement``'s devices as used; raise if they are not all free."""
        index = self.fx.index
        free = self.free
        for name, count in placement.parts:
            i = index[name]
            if free[i] < count:
                raise PlanError(f"node {name!r}: cannot take {count} devices, only {free[i]} free")
        for name, count in placement.parts:
            i = index[name]
            self._set(i, free[i] - count)

    def take_at(self, i: int, count: int) -> None:
        """:meth:`take` of ``count`` devices on the node of index ``i`` (no placement to
        build, for callers that hold many blocks of one node each)."""
        free = self.free[i]
        if free < count:
            name = self.fx.names[i]
            raise PlanError(f"node {name!r}: cannot take {count} devices, only {free} free")
        self._set(i, free - count)

    def give_at(self, i: int, count: int) -> None:
        """:meth:`give` of ``count`` devices on the node of index ``i``."""
        new = self.free[i] + count
        if new > self.fx.cap[i]:
            name = self.fx.names[i]
            raise PlanError(f"node {name!r}: giving back {count} devices overflows it")
        self._set(i, new)

    def fits(self, placement: Placement) -> bool:
        """Whether every device of ``placement`` is free."""
        index = self.fx.index
        free = self.free
        return all(free[index[name]] >= count for name, count in placement.parts)

    def give(self, placement: Placement) -> None:
        """Return ``placement``'s devices to the pool."""
        index = self.fx.index
        free = self.free
        cap = self.fx.cap
        for name, count in placement.parts:
            i = index[name]
            new = free[i] + count
            if new > cap[i]:
                raise PlanError(f"node {name!r}: giving back {count} devices overflows it")
            self._set(i, new)

    def _best_node(self, buckets: list[list[int]], size: int) -> int:
        """Index of the node with the fewest free devices >= ``size``; -1 if none."""
        free = self.free
        for f in range(size, len(buckets)):
            stack = buckets[f]
            while stack:
                i = stack[-1]
                if free[i] == f:
                    return i
                stack.pop()
        return -1

    def allocate(self, size: int, device_type: str) -> Placement:
        """Take ``size`` devices of ``device_type`` compactly; :data:`EMPTY` if impossible.

        Nothing is taken when the allocation fails.
        """
        buckets = self._buckets.get(device_type)
        if buckets is None or size <= 0:
            return EMPTY
        names = self.fx.names
        i = self._best_node(buckets, size)
        if i >= 0:
            self._set(i, self.free[i] - size)
            return Placement(((names[i], size),))
        if size < len(buckets):  # would fit one node of this type, but none has room
            return EMPTY
        return self._allocate_spanning(buckets, size)

    def _allocate_spanning(self, buckets: list[list[int]], size: int) -> Placement:
        """Whole free nodes, largest first, then the remainder on one node by best fit."""
        cap = self.fx.cap
        free = self.free
        taken: list[tuple[int, int]] = []
        need = size
        for f in range(len(buckets) - 1, 0, -1):
            if need < f:
                continue
            stack = buckets[f]
            pos = len(stack) - 1
            while pos >= 0 and need >= f:
                i = stack[pos]
                pos -= 1
                if free[i] == f and cap[i] == f:
                    self._set(i, 0)
                    taken.append((i, f))
                    need -= f
        if need:
            i = self._best_node(buckets, need)
            if i < 0:
                for j, count in taken:  # undo
                    self._set(j, free[j] + count)
                return EMPTY
            self._set(i, free[i] - need)
            taken.append((i, need))
        names = self.fx.names
        return Placement(tuple(sorted((names[i], c) for i, c in taken)))

    def nodes_of(self, device_type: str) -> Iterable[int]:
        return self.fx.by_type.get(device_type, ())
