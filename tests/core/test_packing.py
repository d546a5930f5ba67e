"""Best-fit, compact placement over the free-device pool."""

from __future__ import annotations

import random

import pytest

from tidal.core import EMPTY, Fleet, Node, Placement, PlanError
from tidal.core.packing import FreePool


def pool_with(free: list[int], per_node: int = 8) -> FreePool:
    fleet = Fleet.uniform(len(free), per_node)
    used = {n.name: per_node - f for n, f in zip(fleet.nodes, free, strict=True)}
    return FreePool(fleet, used)


@pytest.mark.parametrize(
    ("free", "size", "expected"),
    [
        ([8, 3, 5], 3, {"n1": 3}),  # best fit: the tightest node that holds it
        ([8, 3, 5], 4, {"n2": 4}),
        ([8, 3, 5], 6, {"n0": 6}),
        ([2, 2, 2, 2], 3, None),  # 8 free in total, but no node holds 3: fragmented
        ([8, 8, 1], 16, {"n0": 8, "n1": 8}),  # whole free nodes
        ([8, 8, 4, 6], 20, {"n0": 8, "n1": 8, "n2": 4}),  # whole nodes + best-fit rest
        ([8, 7, 7], 16, None),  # needs two whole nodes; only one is free
        ([8, 2, 3], 11, {"n0": 8, "n2": 3}),
    ],
)
def test_allocate(free: list[int], size: int, expected: dict[str, int] | None) -> None:
    pool = pool_with(free)
    before = list(pool.free)
    got = pool.allocate(size, "gpu")
    if expected is None:
        assert got is EMPTY
        assert pool.free == before  # nothing taken on failure
    else:
        assert got == Placement.of(expected)
        assert sum(before) - sum(pool.free) == size


def test_take_give_fits_and_errors() -> None:
    pool = pool_with([4, 8])
    p = Placement.of({"n0": 4, "n1": 2})
    assert pool.fits(p)
    pool.take(p)
    assert (pool.free_on("n0"), pool.free_on("n1")) == (0, 6)
    assert not pool.fits(Placement.of({"n0": 1}))
    with pytest.raises(PlanError, match="node 'n0': cannot take 1 devices, only 0 free"):
        pool.take(Placement.of({"n0": 1}))
    pool.give(p)
    assert pool.largest_free("gpu") == 8 and pool.total_free("gpu") == 12
    with pytest.raises(PlanError, match="overflows"):
        pool.give(Placement.of({"n1": 1}))
    with pytest.raises(PlanError, match="overcommitted: 9 of 8"):
        FreePool(Fleet.uniform(1, 8), {"n0": 9})


def test_grown_tracks_nodes_given_back_to_once_asked() -> None:
    pool = pool_with([4, 8, 8])
    pool.take(Placement.of({"n0": 2}))
    assert pool.grown is None  # not tracked unless asked
    pool.grown = set()
    pool.take(Placement.of({"n1": 3}))  # taking never grows a node
    pool.take_at(2, 1)
    assert pool.grown == set()
    pool.give(Placement.of({"n1": 1}))
    pool.give_at(2, 1)
    assert pool.grown == {1, 2}
    assert pool.copy().grown is None


def test_device_types_never_mix() -> None:
    fleet = Fleet((Node("g0", 8, "a100"), Node("g1", 4, "h100"), Node("g2", 8, "h100")))
    pool = FreePool(fleet)
    assert pool.allocate(4, "h100") == Placement.of({"g1": 4})
    assert pool.allocate(8, "h100") == Placement.of({"g2": 8})
    assert pool.allocate(1, "h100") is EMPTY
    assert pool.allocate(8, "a100") == Placement.of({"g0": 8})
    assert pool.allocate(1, "tpu") is EMPTY


def test_packing_keeps_fragmentation_low() -> None:
    """Filling a fleet with small jobs by best fit leaves whole nodes for big ones."""
    pool = pool_with([8] * 4)
    for _ in range(6):
        assert pool.allocate(2, "gpu")  # 12 devices: best fit fills n0, then half of n1
    assert pool.free == [0, 4, 8, 8]
    assert pool.allocate(16, "gpu") == Placement.of({"n2": 8, "n3": 8})


def test_matches_brute_force_best_fit() -> None:
    """Random take/give sequences: the bucketed pool picks what a full scan would."""
    rng = random.Random(7)
    fleet = Fleet.uniform(40, 8)
    pool = FreePool(fleet)
    free = [8] * 40
    held: list[Placement] = []
    for _ in range(3000):
        if held and rng.random() < 0.45:
            p = held.pop(rng.randrange(len(held)))
            pool.give(p)
            for name, c in p.parts:
                free[fleet.nodes.index(fleet.node(name))] += c
            continue
        size = rng.choice([1, 1, 2, 3, 4, 5, 8])
        fits = [f for f in free if f >= size]
        got = pool.allocate(size, "gpu")
        if not fits:
            assert got is EMPTY
            continue
        ((name, count),) = got.parts
        i = int(name[1:])
        assert count == size and free[i] == min(fits)  # the tightest node
        free[i] -= size
        held.append(got)
    assert pool.free == free
