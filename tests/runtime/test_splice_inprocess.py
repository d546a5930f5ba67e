"""Replica splicing inside one process (P = 1), against explicit references.

* W = 1 is exactly a plain PyTorch loop over a one-replica DistributedSampler.
* W = 4 on one worker is exactly a by-hand emulation of four DDP ranks: per-rank shards
  and random streams, rank 0's buffers before every forward, gradients scaled by 1/W and
  summed as ((g0 + g1) + (g2 + g3)), one optimizer/scheduler step per real step.
* Code between backward() and step() sees nothing on non-final micro-batches and the
  fully reduced gradient on the last one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import tidal
from tests.runtime.splice_support import (
    BATCH,
    digits,
    make_objects,
    mismatches,
    small_dataset,
    train_with_tidal,
)
from tidal.runtime import api
from tidal.runtime.errors import PrepareError, SplicingError


@pytest.fixture(autouse=True)
def runtime_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name in [k for k in list(__import__("os").environ) if k.startswith("TIDAL_")]:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: fast on a small machine, kernels alike
    yield
    api.shutdown()
    torch.set_num_threads(threads)


def set_streams(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def get_streams():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def put_streams(s) -> None:
    torch.set_rng_state(s[0])
    np.random.set_state(s[1])
    random.setstate(s[2])


def emulate_ddp(world: int, epochs: int, dataset: TensorDataset, seen=None):
    """W DDP ranks, one after another, by hand: the semantics splicing promises."""
    model, optimizer, _, scheduler = make_objects(world, epochs, dataset)
    main = get_streams()
    streams = []
    for r in range(world):
        set_streams(100 + r)
        streams.append(get_streams())
    put_streams(main)
    samplers = [
        DistributedSampler(dataset, num_replicas=world, rank=r, shuffle=True, seed=0)
        for r in range(world)
    ]
    loaders = [DataLoader(dataset, batch_size=BATCH, sampler=s, drop_last=True) for s in samplers]
    buffers = [b for b in model.buffers()]
    for epoch in range(epochs):
        model.train()
        iters = []
        for r in range(world):
            put_streams(streams[r])
            samplers[r].set_epoch(epoch)
            iters.append(iter(loaders[r]))
            streams[r] = get_streams()
        for _ in range(len(loaders[0])):
            rank0 = [b.clone() for b in buffers]
            next_rank0 = None
            leaves = []
            for r in range(world):
                put_streams(streams[r])
                x, y = next(iters[r])
                with torch.no_grad():
                    for b, v in zip(buffers, rank0, strict=True):
                        b.copy_(v)
                digits.train_step(model, x, y)
                if r == 0:
                    next_rank0 = [b.clone() for b in buffers]
                leaves.append([p.grad.mul_(1.0 / world) for p in model.parameters()])
                for p in model.parameters():
                    p.grad = None
                streams[r] = get_streams()
            while len(leaves) > 1:  # pairwise tree over logical ranks
                leaves = [
                    [a + b for a, b in zip(leaves[i], leaves[i + 1], strict=True)]
                    for i in range(0, len(leaves), 2)
                ]
            for p, g in zip(model.parameters(), leaves[0], strict=True):
                p.grad = g
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if seen is not None:
                seen.append((float(norm), [p.grad.clone() for p in model.parameters()]))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            with torch.no_grad():
                for b, v in zip(buffers, next_rank0, strict=True):
                    b.copy_(v)
        put_streams(main)
    return model


def test_one_logical_rank_is_a_plain_pytorch_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    data = small_dataset()
    spliced = train_with_tidal(1, 2, data, monkeypatch)
    model, optimizer, _, scheduler = make_objects(1, 2, data)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler, drop_last=True)
    set_streams(100)  # prepare(seed=100): logical rank 0's streams
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for x, y in loader:
            digits.train_step(model, x, y)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    assert mismatches(spliced.state_dict(), model.state_dict()) == []


def test_four_logical_ranks_on_one_worker_equal_hand_emulated_ddp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = small_dataset()
    seen: list = []
    spliced = train_with_tidal(4, 2, data, monkeypatch, seen=seen)
    expected: list = []
    reference = emulate_ddp(4, 2, data, seen=expected)
    assert mismatches(spliced.state_dict(), reference.state_dict()) == []
    # between backward() and step(): nothing on ranks 0-2, the reduced gradient on rank 3
    steps = len(expected)
    assert len(seen) == 4 * steps
    for i, (rank, norm, grads) in enumerate(seen):
        assert rank == i % 4
        if rank < 3:
            assert norm == 0.0 and all(g is None for g in grads)
        else:
            ref_norm, ref_grads = expected[i // 4]
            assert norm == ref_norm
            assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads, strict=True))


def test_loader_yields_each_hosted_rank_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_WORLD", "3")
    data = TensorDataset(torch.arange(20.0).unsqueeze(1), torch.arange(20))
    model = torch.nn.Linear(1, 1)
    loader = DataLoader(data, batch_size=2, shuffle=False)
    model, loader = tidal.prepare(model, loader)
    assert len(loader) == 4  # ceil(20 / 3) = 7 samples per rank: 4 batches of 2 (last 1)
    got = [(tidal.rank(), y.tolist()) for _, y in loader]
    expected = []
    per_rank = [
        list(DistributedSampler(data, num_replicas=3, rank=r, shuffle=False)) for r in range(3)
    ]
    for step in range(4):
        for r in range(3):
            expected.append((r, per_rank[r][2 * step : 2 * step + 2]))
    assert got == expected
    assert tidal.rank() == 0 and tidal.world() == 3 and tidal.is_main()


def test_steps_take_effect_once_per_real_step_with_a_grad_scaler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDAL_WORLD", "2")
    data = small_dataset(128)
    model, optimizer, loader, scheduler = make_objects(2, 1, data)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=2)
    model, optimizer, loader, scheduler, scaler = tidal.prepare(
        model, optimizer, loader, scheduler, scaler, seed=100
    )
    for _ in tidal.epochs(1):
        for x, y in loader:
            loss = F.cross_entropy(model(digits.augment(x)), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad()
    api.shutdown()
    steps = len(loader)
    assert scheduler.last_epoch == steps
    assert optimizer.state[next(model.parameters())]["step"].item() == steps
    assert scaler.get_scale() == 2.0**4 * 2 ** (steps // 2)  # grew every 2 real steps
    # power-of-two loss scaling is exact, so the result is the unscaled run's, bit for bit
    plain = train_with_tidal(2, 1, data, monkeypatch)
    assert mismatches(model.state_dict(), plain.state_dict()) == []


def test_backward_twice_in_a_micro_batch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_WORLD", "2")
    model, optimizer, loader, _ = make_objects(2, 1, small_dataset(64))
    model, optimizer, loader = tidal.prepare(model, optimizer, loader)
    batches = iter(loader)  # keep the pass alive: the micro-batch lasts until the next batch
    x, y = next(batches)
    loss = F.cross_entropy(model(x), y)
    loss.backward(retain_graph=True)
    with pytest.raises(SplicingError, match="backward\\(\\) ran twice"):
        loss.backward()


def test_prepare_again_replaces_the_context_and_restores_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDAL_WORLD", "2")
    model, optimizer, loader, scheduler = make_objects(2, 1, small_dataset(64))
    tidal.prepare(model, optimizer, loader, scheduler)
    assert hasattr(optimizer.step, "_tidal_original") and model._forward_pre_hooks
    first = api.current()
    tidal.prepare(model, optimizer, loader, scheduler)
    assert first.closed and api.current() is not first
    api.shutdown()
    assert not hasattr(optimizer.step, "_tidal_original")  # the LR scheduler's wrapper again
    assert hasattr(optimizer.step, "_wrapped_by_lr_sched")
    assert "state_dict" not in vars(scheduler) and "step" not in vars(scheduler)
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())


def test_prepare_rejects_what_it_cannot_make_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(2, 2)
    data = TensorDataset(torch.zeros(8, 2))
    with pytest.raises(PrepareError, match="argument 1 is a str"):
        tidal.prepare(model, "nope")
    with pytest.raises(PrepareError, match="one DataLoader"):
        tidal.prepare(model, DataLoader(data), DataLoader(data))
    sampler = torch.utils.data.WeightedRandomSampler([1.0] * 8, 8)
    with pytest.raises(PrepareError, match="WeightedRandomSampler"):
        tidal.prepare(model, DataLoader(data, sampler=sampler))
    with pytest.raises(PrepareError, match="needs the model"):
        tidal.prepare(DataLoader(data))
