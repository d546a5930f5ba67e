"""Reading the fleet from Ray's node table (pure: the table is given)."""

from __future__ import annotations

from typing import Any

from tidal.control.fleet import FleetWatcher, discover
from tidal.core import Node, NodeJoined, NodeLeft


def raw(
    node_id: str, resources: dict[str, float], alive: bool = True, **labels: str
) -> dict[str, Any]:
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerAddress": "127.0.0.1",
        "Resources": resources,
        "Labels": labels,
    }


def test_devices_are_gpus_or_named_slots() -> None:
    nodes = discover(
        [
            raw("aa" * 28, {"CPU": 8.0, "GPU": 4.0, "accelerator_type:H100": 1.0}),
            raw("bb" * 28, {"CPU": 2.0, "tidal_dev_cpu": 3.0}, **{"tidal-node": "laptop"}),
            raw("cc" * 28, {"CPU": 2.0}),  # offers no devices: left out
            raw("dd" * 28, {"GPU": 2.0}, alive=False),  # dead
        ]
    )
    assert [(n.name, n.device_type, n.devices, n.resource) for n in nodes] == [
        ("laptop", "cpu", 3, "tidal_dev_cpu"),
        ("node-aaaaaaaa", "H100", 4, "GPU"),
    ]


def test_the_watcher_reports_joins_and_leaves_once() -> None:
    table = [raw("aa" * 28, {"tidal_dev_cpu": 2.0}, **{"tidal-node": "a"})]
    watcher = FleetWatcher(lambda: table)
    assert watcher.poll(1.0) == [NodeJoined(Node("a", 2, "cpu"), 1.0)]
    assert watcher.poll(2.0) == []
    table.append(raw("bb" * 28, {"tidal_dev_cpu": 4.0}, **{"tidal-node": "b"}))
    assert watcher.poll(3.0) == [NodeJoined(Node("b", 4, "cpu"), 3.0)]
    table[0] = raw("ee" * 28, {"tidal_dev_cpu": 2.0}, **{"tidal-node": "a"})  # a restarted
    assert watcher.poll(4.0) == [
        NodeLeft("a", 4.0, "replaced"),
        NodeJoined(Node("a", 2, "cpu"), 4.0),
    ]
    del table[1]
    assert watcher.poll(5.0) == [NodeLeft("b", 5.0, "gone from Ray")]
    assert [n.name for n in watcher.fleet.nodes] == ["a"]
