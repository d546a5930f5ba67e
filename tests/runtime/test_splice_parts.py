"""The pieces of replica splicing on their own: summation tree, random streams, status file."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tidal.runtime.reduction.tree import Node, PairwiseStack, combine, frontier, padded_size
from tidal.runtime.session.status import JobState, StatusFile
from tidal.runtime.splicing.rng import MAIN, RNGState, StreamSwitcher, capture
from tidal.runtime.splicing.wrap import Patches


def expression(world: int, workers: int) -> str:
    """The summation expression the workers of a (W, P) job compute together."""
    k = world // workers
    values: dict[Node, str] = {}
    for b in range(workers):
        stack: PairwiseStack[str] = PairwiseStack(world, lambda a, c: f"({a}+{c})")
        for r in range(b * k, (b + 1) * k):
            stack.push(r, str(r))
        nodes = stack.drain()
        assert list(nodes) == frontier(b * k, (b + 1) * k, world)
        values.update(nodes)
    return combine(values, world, lambda a, c: f"({a}+{c})")


@pytest.mark.parametrize("world", range(1, 17))
def test_summation_order_depends_on_the_world_size_only(world: int) -> None:
    exprs = {expression(world, p) for p in range(1, world + 1) if world % p == 0}
    assert len(exprs) == 1, exprs
    expr = exprs.pop()
    assert sorted(
        int(t) for t in expr.replace("(", " ").replace(")", " ").replace("+", " ").split()
    ) == list(range(world))


def test_the_tree_is_pairwise() -> None:
    assert expression(4, 1) == "((0+1)+(2+3))"
    assert expression(6, 2) == "(((0+1)+(2+3))+(4+5))"
    assert expression(3, 3) == "((0+1)+2)"
    assert padded_size(5) == 8 and padded_size(8) == 8
    assert frontier(3, 6, 6) == [Node(3, 4), Node(4, 6)]


def test_floating_point_sums_really_depend_on_the_order() -> None:
    # the reason for a fixed tree: a left fold and a pairwise sum differ in the last bits
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(10_000, generator=g) * 10 ** (i % 3) for i in range(4)]
    fold = ((leaves[0] + leaves[1]) + leaves[2]) + leaves[3]
    tree = (leaves[0] + leaves[1]) + (leaves[2] + leaves[3])
    assert not torch.equal(fold, tree)


def test_stream_switcher_keeps_each_slot_independent() -> None:
    torch.manual_seed(5)
    switcher = StreamSwitcher([0, 1], cuda_device=None)
    switcher.seed_slots(100)
    draws = {}
    for slot in (0, 1, 0, MAIN, 1):
        switcher.switch(slot)
        draws.setdefault(slot, []).append((torch.rand(1).item(), np.random.rand(), random.random()))
    switcher.switch(MAIN)
    # slot 0's two draws continue one stream seeded 100: same as drawing twice in a row
    torch.manual_seed(100)
    np.random.seed(100)
    random.seed(100)
    expected = [(torch.rand(1).item(), np.random.rand(), random.random()) for _ in range(2)]
    assert draws[0] == expected
    assert draws[1][0] != draws[0][0]
    # the main stream is the one seeded 5, untouched by the slots
    torch.manual_seed(5)
    assert draws[MAIN][0][0] == torch.rand(1).item()


def test_rng_state_round_trips_through_its_checkpoint_form() -> None:
    random.gauss(0, 1)  # leave a cached gaussian in Python's state
    np.random.standard_normal()
    state = capture(None)
    again = RNGState.from_dict(state.to_dict())
    assert again.equals(state)
    torch.save(state.to_dict(), buf := __import__("io").BytesIO())
    buf.seek(0)
    assert RNGState.from_dict(torch.load(buf, weights_only=True)).equals(state)


def test_status_file_is_fresh_every_half_second_and_atomic(tmp_path: Path) -> None:
    status = StatusFile(tmp_path, world=4, workers=2, job_id="j", interval_s=0.1)
    status.set_state(JobState.RUNNING)
    for step in range(1, 4):
        status.progress(step=step, epoch=0, samples=64)
        time.sleep(0.05)
    time.sleep(0.3)
    data = json.loads((tmp_path / "status.json").read_text())
    assert data["state"] == "running" and data["step"] == 3 and data["world"] == 4
    assert data["workers"] == 2 and data["job_id"] == "j" and data["samples_per_s"] > 0
    assert time.time() - data["updated_at"] < 0.5
    assert data["heartbeat_s"] == 0.1 and data["pid"] == os.getpid()
    status.checkpointed(3)
    status.set_state(JobState.PREEMPTED)
    status.set_state(JobState.RUNNING)  # terminal states stick (except for failed)
    data = json.loads((tmp_path / "status.json").read_text())
    assert data["state"] == "preempted" and data["last_checkpoint_step"] == 3
    assert data["heartbeat_s"] is None, "an ended run writes no more"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    assert not any(t.name == "tidal-status" for t in threading.enumerate())


def test_patched_methods_are_skipped_only_when_told() -> None:
    skip = [True]
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    patches = Patches(lambda: skip[0])
    patches.patch(opt, ("step",))
    model(torch.ones(1, 2)).sum().backward()
    before = model.weight.detach().clone()
    opt.step()
    assert torch.equal(model.weight, before)
    skip[0] = False
    opt.step()
    assert not torch.equal(model.weight, before)
    patches.undo()
    assert "step" not in vars(opt)
