"""Where a job's devices are: a count of devices on each node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tidal.core.errors import SpecError


@dataclass(slots=True, init=False, unsafe_hash=True)
class Placement:
    """Devices held on each node, as ``(node name, count)`` pairs sorted by node name
    (immutable).

    Tidal schedules device *counts* per node; the node-local executor picks the device
    indices. Build one with :meth:`of`; the empty placement is :data:`EMPTY`.
    """

    parts: Final[tuple[tuple[str, int], ...]]
    _size: int = field(init=False, repr=False, compare=False)

    def __init__(self, parts: tuple[tuple[str, int], ...] = ()) -> None:
        self.parts = parts
        # Cached: sizes are read on every scheduling decision and every diff. Most
        # placements are on one node: skip the generator for those.
        self._size = parts[0][1] if len(parts) == 1 else sum(c for _, c in parts)

    @classmethod
    def of(cls, counts: Mapping[str, int] | Iterable[tuple[str, int]]) -> Placement:
        items = counts.items() if isinstance(counts, Mapping) else counts
        merged: dict[str, int] = {}
        for node, count in items:
            if count < 0:
                raise SpecError(f"placement on node {node!r}: negative device count {count}")
            if count:
                merged[node] = merged.get(node, 0) + count
        return cls(tuple(sorted(merged.items())))

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.parts)

    def union(self, other: Placement) -> Placement:
        """Per node, the larger of the two counts: what a job holds while it moves from
        one placement to the other."""
        counts = dict(self.parts)
        for node, count in other.parts:
            if count > counts.get(node, 0):
                counts[node] = count
        return Placement.of(counts)

    def as_dict(self) -> dict[str, int]:
        return dict(self.parts)

    def __bool__(self) -> bool:
        return bool(self.parts)

    def __str__(self) -> str:
        if not self.parts:
            return "-"
        return "+".join(f"{n}:{c}" for n, c in self.parts)


EMPTY = Placement()
