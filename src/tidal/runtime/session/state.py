"""What a Tidal checkpoint holds, and putting it back.

``shared`` (stored once, by worker 0, in PyTorch DCP format): every prepared object's
``state_dict()`` under its key (``model``, ``optimizer``, ``scheduler``, ``scaler``,
``extra``, with ``_1``, ``_2`` ... for further ones of a kind) and ``tidal``: the step,
epoch, steps done in the epoch, and the main random stream as the epoch began.
``per_rank[r]`` (one file per logical rank): rank r's random streams, its data position,
and its loader generator's state if the user gave the loader a generator.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from tidal.runtime.checkpoint.manager import CheckpointManager
from tidal.runtime.errors import TidalRuntimeError
from tidal.runtime.session.context import Position, RuntimeContext
from tidal.runtime.session.objects import Kind
from tidal.runtime.splicing.rng import MAIN, RNGState

logger = logging.getLogger(__name__)

__all__ = [
    "per_rank_state",
    "poll_async_checkpoint",
    "resume_if_possible",
    "save_checkpoint",
    "shared_state",
]

FORMAT = 1


def _manager(ctx: RuntimeContext) -> CheckpointManager:
    if ctx.manager is None:
        raise TidalRuntimeError("internal: checkpointing without TIDAL_CHECKPOINT_DIR")
    return ctx.manager


def shared_state(ctx: RuntimeContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in ctx.items:
        if item.kind is not Kind.LOADER:
            out[item.key] = item.obj.state_dict()
    pos = ctx.position
    epoch_rng = ctx.epoch_rng if ctx.epoch_rng is not None else ctx.rng.get(MAIN)
    out["tidal"] = {
        "format": FORMAT,
        "world": ctx.settings.world,
        "step": pos.step,
        "epoch": pos.epoch,
        "step_in_epoch": pos.step_in_epoch,
        "epoch_rng": epoch_rng.to_dict(),
    }
    return out


def per_rank_state(ctx: RuntimeContext) -> dict[int, dict[str, Any]]:
    pos = ctx.position
    generators = ctx.loader.generator_states() if ctx.loader is not None else {}
    out: dict[int, dict[str, Any]] = {}
    for r in ctx.settings.hosted_ranks:
        entry: dict[str, Any] = {
            "rng": ctx.rng.get(r).to_dict(),
            "data": {"epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch},
        }
        if r in generators:
            entry["loader_generator"] = generators[r]
        out[r] = entry
    return out


def save_checkpoint(ctx: RuntimeContext, *, asynchronous: bool) -> None:
    """Every worker calls this at the same step boundary."""
    pos = ctx.position
    meta = {
        "step": pos.step,
        "epoch": pos.epoch,
        "step_in_epoch": pos.step_in_epoch,
        "world": ctx.settings.world,
        "workers": ctx.settings.workers,
        "job_id": ctx.settings.job_id,
        "reduce": ctx.settings.reduce.value,
    }
    started = time.monotonic()
    _manager(ctx).save(
        pos.step,
        shared=shared_state(ctx) if ctx.settings.worker == 0 else None,
        per_rank=per_rank_state(ctx),
        meta=meta,
        asynchronous=asynchronous,
    )
    ctx.last_checkpoint_step = pos.step
    ctx.last_checkpoint_time = time.monotonic()
    if not asynchronous:
        ctx.status.checkpointed(pos.step)
    else:
        ctx.pending_checkpoint_step = pos.step
    logger.info(
        "checkpoint of step %d %s in %.3fs",
        pos.step,
        "started" if asynchronous else "committed",
        time.monotonic() - started,
    )


def poll_async_checkpoint(ctx: RuntimeContext) -> None:
    """Report an asynchronous checkpoint in the status file once it has been committed."""
    step = ctx.pending_checkpoint_step
    if step is None or _manager(ctx).saving:
        return
    ctx.pending_checkpoint_step = None
    try:
        _manager(ctx).wait()  # done already: returns at once, or raises the write's error
    except Exception as exc:  # training goes on; the next checkpoint tries again
        logger.error("asynchronous checkpoint of step %d failed: %s", step, exc)
        return
    ctx.status.checkpointed(step)


def resume_if_possible(ctx: RuntimeContext) -> None:
    """Load the newest committed checkpoint, if there is one, into everything prepared."""
    manager = _manager(ctx)
    info = manager.latest()
    if info is None:
        return
    if info.world != ctx.settings.world:
        raise TidalRuntimeError(
            f"checkpoint {info.path} is for logical world size {info.world}, "
            f"but this job has TIDAL_WORLD={ctx.settings.world}"
        )
    loaded = manager.load_shared(info, shared_state(ctx))
    for item in ctx.items:
        if item.kind is Kind.LOADER:
            continue
        if item.key not in loaded:
            raise TidalRuntimeError(
                f"checkpoint {info.path} has no state for prepare argument {item.position} "
                f"({item.key}); were the same kinds of objects prepared in the same order?"
            )
        item.obj.load_state_dict(loaded[item.key])
    meta = loaded["tidal"]
    pos = ctx.position
    pos.step = int(meta["step"])
    pos.epoch = int(meta["epoch"])
    pos.step_in_epoch = int(meta["step_in_epoch"])
    ctx.resume_at = Position(pos.step, pos.epoch, pos.step_in_epoch)
    ctx.epoch_rng = RNGState.from_dict(meta["epoch_rng"])
    ctx.rng.set(MAIN, ctx.epoch_rng)
    for r in ctx.settings.hosted_ranks:
        rank_state = manager.load_rank(info, r)
        data = rank_state["data"]
        if (int(data["epoch"]), int(data["step_in_epoch"])) != (pos.epoch, pos.step_in_epoch):
            raise TidalRuntimeError(
                f"checkpoint {info.path}: logical rank {r} is at epoch {data['epoch']} step "
                f"{data['step_in_epoch']}, the job at epoch {pos.epoch} step {pos.step_in_epoch}"
            )
        ctx.rng.set(r, RNGState.from_dict(rank_state["rng"]))
        if "loader_generator" in rank_state and ctx.loader is not None:
            ctx.loader.set_generator_state(r, torch.as_tensor(rank_state["loader_generator"]))
    ctx.buffers.reset_from_module()
    ctx.last_checkpoint_step = pos.step
    ctx.status.checkpointed(pos.step)
    logger.info(
        "resumed from %s: step %d, epoch %d (+%d steps)",
        info.path,
        pos.step,
        pos.epoch,
        pos.step_in_epoch,
    )
