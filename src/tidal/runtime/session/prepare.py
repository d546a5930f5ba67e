"""``prepare`` inside a fresh context: sort the user's objects, wrap them, resume.

Builds, on a :class:`~tidal.runtime.session.context.RuntimeContext` that has joined the
process group, everything that makes the user's loop spliced: worker 0's parameters and
random state on every worker, the per-rank random streams, the gradient splicer and its
cross-worker reduction, the buffer rule, the once-per-step ``step`` methods and the spliced
loader; then restores the newest committed checkpoint, if any, and reports ``running``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from tidal.runtime.errors import PrepareError
from tidal.runtime.reduction.cross_worker import Layout, make_cross_worker
from tidal.runtime.session import dist_setup
from tidal.runtime.session.context import RuntimeContext
from tidal.runtime.session.loop import Driver
from tidal.runtime.session.objects import Kind, classify
from tidal.runtime.session.state import resume_if_possible
from tidal.runtime.session.status import JobState
from tidal.runtime.splicing.buffers import BufferRule
from tidal.runtime.splicing.data import SplicedLoader
from tidal.runtime.splicing.grads import GradSplicer
from tidal.runtime.splicing.rng import StreamSwitcher
from tidal.runtime.splicing.wrap import (
    OPTIMIZER_METHODS,
    SCALER_METHODS,
    SCHEDULER_METHODS,
    Patches,
)

logger = logging.getLogger(__name__)

__all__ = ["prepare_objects"]


def prepare_objects(
    ctx: RuntimeContext, objects: Sequence[Any], *, seed: int | None = None
) -> list[Any]:
    """Wrap ``objects`` for ``ctx`` and resume; returns them in order (the loader spliced)."""
    s = ctx.settings
    ctx.items = classify(objects)
    models = ctx.models()
    for m in models:
        m.to(ctx.device)
    if s.workers > 1:
        dist_setup.broadcast_module_state(models)
        dist_setup.broadcast_rng(ctx.cuda_device)
    params = _trainable(models)
    if not params:
        raise PrepareError("the prepared model(s) have no parameters with requires_grad=True")
    ctx.rng = StreamSwitcher(list(s.hosted_ranks), ctx.cuda_device)
    if seed is not None:
        ctx.rng.seed_slots(seed)
    cross = make_cross_worker(s.reduce, s.world, s.worker, s.workers, Layout.of(params))
    ctx.splicer = GradSplicer(
        params,
        world=s.world,
        ranks_per_worker=s.ranks_per_worker,
        cross=cross,
        votes=ctx.votes,
        bucket_bytes=int(s.bucket_mb * 1024 * 1024),
    )
    ctx.buffers = BufferRule(models, current_rank=ctx.current_rank, workers=s.workers)
    ctx.patches = Patches(ctx.skip_step)
    returned: list[Any] = []
    for item in ctx.items:
        if item.kind is Kind.OPTIMIZER:
            ctx.patches.patch(item.obj, OPTIMIZER_METHODS)
        elif item.kind is Kind.SCHEDULER:
            ctx.patches.patch(item.obj, SCHEDULER_METHODS)
            ctx.patches.hide_from_state(item.obj)
        elif item.kind is Kind.SCALER:
            ctx.patches.patch(item.obj, SCALER_METHODS)
        if item.kind is Kind.LOADER:
            ctx.loader = SplicedLoader(
                item.obj,
                world=s.world,
                hosted=s.hosted_ranks,
                driver=Driver(ctx),
                device=ctx.device,
            )
            returned.append(ctx.loader)
        else:
            returned.append(item.obj)
    if ctx.manager is not None:
        resume_if_possible(ctx)
    ctx.install_excepthook()
    ctx.status.set_position(step=ctx.position.step, epoch=ctx.position.epoch)
    ctx.status.set_state(JobState.RUNNING)
    logger.info(
        "tidal runtime ready: worker %d/%d hosts logical ranks %s of W=%d on %s, reduce=%s%s",
        s.worker,
        s.workers,
        list(s.hosted_ranks),
        s.world,
        ctx.device,
        s.reduce.value,
        f", resumed at step {ctx.position.step}" if ctx.resume_at is not None else "",
    )
    return returned


def _trainable(models: Sequence[torch.nn.Module]) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    out = []
    for m in models:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out
