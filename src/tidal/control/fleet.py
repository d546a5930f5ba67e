"""The fleet, as Ray sees it: which nodes offer how many devices of which type.

A device is a Ray resource. GPUs are Ray's own ``GPU`` resource, typed by the node's
``accelerator_type:<NAME>`` resource (``gpu`` when Ray does not say). A node without GPUs
offers device slots of a named type through a custom resource ``tidal_dev_<type>``
(``ray start --resources='{"tidal_dev_cpu": 4}'``, or ``tidal up --devices 4
--device-type cpu`` for the embedded instance), so a laptop or a CI runner has a fleet to
schedule. A node's name in Tidal is its ``tidal-node`` label (``ray start
--labels='{"tidal-node": "alpha"}'``), else ``node-`` and the first 8 hex digits of its Ray
node id.

:func:`discover` reads ``ray.nodes()``-shaped dicts (pure, tested without Ray);
:class:`FleetWatcher` polls them and reports :class:`~tidal.core.NodeJoined` and
:class:`~tidal.core.NodeLeft` as the fleet changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidal.core import Fleet, Node, NodeJoined, NodeLeft, Observation

logger = logging.getLogger(__name__)

DEVICE_RESOURCE_PREFIX = "tidal_dev_"
NAME_LABEL = "tidal-node"
_GPU = "GPU"
_ACCELERATOR = "accelerator_type:"

__all__ = [
    "DEVICE_RESOURCE_PREFIX",
    "NAME_LABEL",
    "FleetWatcher",
    "RayNode",
    "device_resource",
    "discover",
]


def device_resource(device_type: str) -> str:
    """The Ray resource that counts CPU-node device slots of ``device_type``."""
    return f"{DEVICE_RESOURCE_PREFIX}{device_type}"


@dataclass(frozen=True, slots=True)
class RayNode:
    """One Ray node that offers devices: its Tidal name, Ray node id and address, its
    device type and count, and the Ray resource one device is (``GPU`` or
    ``tidal_dev_<type>``)."""

    name: str
    node_id: str
    address: str
    device_type: str
    devices: int
    resource: str

    def as_node(self) -> Node:
        return Node(name=self.name, devices=self.devices, device_type=self.device_type)


def discover(ray_nodes: Sequence[Mapping[str, Any]]) -> list[RayNode]:
    """The live nodes among ``ray_nodes`` (``ray.nodes()``'s dicts) that offer devices,
    sorted by name. A node offering nothing (the head of a GPU-less cluster started
    without ``tidal_dev_*``) is left out."""
    found: dict[str, RayNode] = {}
    for raw in ray_nodes:
        if not raw.get("Alive", False):
            continue
        node_id = str(raw.get("NodeID", ""))
        resources: Mapping[str, float] = raw.get("Resources") or {}
        labels: Mapping[str, str] = raw.get("Labels") or {}
        offer = _offer(node_id, resources)
        if offer is None:
            continue
        device_type, devices, resource = offer
        name = labels.get(NAME_LABEL) or f"node-{node_id[:8]}"
        if name in found:
            logger.warning(
                "two Ray nodes are named %r (label %s): keeping %s, ignoring %s",
                name,
                NAME_LABEL,
                found[name].node_id[:8],
                node_id[:8],
            )
            continue
        address = str(raw.get("NodeManagerAddress", ""))
        found[name] = RayNode(name, node_id, address, device_type, devices, resource)
    return [found[name] for name in sorted(found)]


def _offer(node_id: str, resources: Mapping[str, float]) -> tuple[str, int, str] | None:
    gpus = int(resources.get(_GPU, 0))
    if gpus > 0:
        kinds = [k[len(_ACCELERATOR) :] for k in resources if k.startswith(_ACCELERATOR)]
        return (kinds[0] if len(kinds) == 1 else "gpu"), gpus, _GPU
    slots = sorted(
        (k[len(DEVICE_RESOURCE_PREFIX) :], int(v))
        for k, v in resources.items()
        if k.startswith(DEVICE_RESOURCE_PREFIX) and int(v) > 0
    )
    if not slots:
        return None
    if len(slots) > 1:
        logger.warning(
            "Ray node %s offers several device types %s: using %r",
            node_id[:8],
            [s for s, _ in slots],
            slots[0][0],
        )
    kind, count = slots[0]
    return kind, count, device_resource(kind)


class FleetWatcher:
    """The fleet as of the last :meth:`poll`, and what changed since the one before.

    ``ray_nodes`` returns ``ray.nodes()``-shaped dicts. A node whose device type or count
    changed (restarted with other resources) leaves and joins again.
    """

    def __init__(self, ray_nodes: Callable[[], Sequence[Mapping[str, Any]]]) -> None:
        self._source = ray_nodes
        self._nodes: dict[str, RayNode] = {}
        self.fleet = Fleet(())

    @property
    def nodes(self) -> Mapping[str, RayNode]:
        return self._nodes

    def poll(self, now: float) -> list[Observation]:
        current = {n.name: n for n in discover(self._source())}
        changes: list[Observation] = []
        for name, old in self._nodes.items():
            new = current.get(name)
            if new is None or new.node_id != old.node_id or new.as_node() != old.as_node():
                changes.append(NodeLeft(name, now, "gone from Ray" if new is None else "replaced"))
        for name, new in current.items():
            before = self._nodes.get(name)
            if before is None or new.node_id != before.node_id or new.as_node() != before.as_node():
                changes.append(NodeJoined(new.as_node(), now))
        if changes:
            self._nodes = current
            self.fleet = Fleet(tuple(n.as_node() for n in current.values()))
            for change in changes:
                logger.info("fleet: %s", _describe(change))
        return changes


def _describe(change: Observation) -> str:
    if isinstance(change, NodeJoined):
        node = change.node
        return f"node {node.name} joined with {node.devices} {node.device_type} devices"
    if isinstance(change, NodeLeft):
        return f"node {change.name} left ({change.reason})"
    return repr(change)
