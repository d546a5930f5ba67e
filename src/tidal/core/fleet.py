"""Nodes with typed devices, grouped into clusters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tidal.core.errors import SpecError


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    devices: int
    device_type: str = "gpu"
    cluster: str = "default"

    def __post_init__(self) -> None:
        if not self.name:
            raise SpecError("node name must be a non-empty string")
        if self.devices < 1:
            raise SpecError(f"node {self.name!r}: devices must be >= 1, got {self.devices}")


@dataclass(frozen=True, slots=True)
class Fleet:
    """An immutable set of nodes. Node names are unique."""

    nodes: tuple[Node, ...]
    _by_name: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Node] = {}
        for node in self.nodes:
            if node.name in by_name:
                raise SpecError(f"duplicate node name {node.name!r} in fleet")
            by_name[node.name] = node
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def uniform(
        cls,
        nodes: int,
        devices_per_node: int,
        device_type: str = "gpu",
        clusters: int = 1,
    ) -> Fleet:
        """``nodes`` identical nodes, spread round-robin over ``clusters`` clusters."""
        if nodes < 1:
            raise SpecError(f"fleet needs at least one node, got {nodes}")
        if clusters < 1:
            raise SpecError(f"fleet needs at least one cluster, got {clusters}")
        width = len(str(nodes - 1))
        return cls(
            tuple(
                Node(
                    name=f"n{i:0{width}d}",
                    devices=devices_per_node,
                    device_type=device_type,
                    cluster=f"c{i % clusters}",
                )
                for i in range(nodes)
            )
        )

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise SpecError(f"unknown node {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def capacity(self) -> int:
        return sum(n.devices for n in self.nodes)

    def capacity_of(self, device_type: str) -> int:
        return sum(n.devices for n in self.nodes if n.device_type == device_type)

    def device_types(self) -> tuple[str, ...]:
        return tuple(sorted({n.device_type for n in self.nodes}))

    def of_type(self, device_type: str) -> Iterable[Node]:
        return (n for n in self.nodes if n.device_type == device_type)
