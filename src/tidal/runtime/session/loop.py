"""The spliced loop: micro-batches, step boundaries, the consistent cut.

For every step, the prepared loader yields the batch of each hosted logical rank in
turn, with that rank's random streams loaded. When the user asks for the batch after the
last micro-batch of a step, the step is over (its ``optimizer.step()`` has run): that is
the step boundary, where buffers are synchronised, the agreed stop/checkpoint votes of the
step's gradient reduction are acted on, and the status file is updated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import torch

from tidal.runtime.errors import SplicingError
from tidal.runtime.session.context import RuntimeContext
from tidal.runtime.session.state import poll_async_checkpoint, save_checkpoint
from tidal.runtime.session.status import JobState
from tidal.runtime.splicing.data import SplicedLoader, move_to_device
from tidal.runtime.splicing.grads import Micro
from tidal.runtime.splicing.rng import MAIN, capture, restore

logger = logging.getLogger(__name__)

__all__ = ["EXIT_PREEMPTED_NO_CHECKPOINT", "Driver", "run_epochs"]

EXIT_PREEMPTED_NO_CHECKPOINT = 143
"""Exit status after SIGTERM when no checkpoint directory was given (128 + SIGTERM)."""

_LOG_EVERY_S = 10.0
_IDLE, _IN_STEP, _FINAL_YIELDED = 0, 1, 2


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, list | tuple) and batch:
        return _batch_len(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_len(next(iter(batch.values())))
    return 0


class Driver:
    """Runs passes over a :class:`SplicedLoader` for one context."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self._last_log = time.monotonic()

    def iterate(self, loader: SplicedLoader) -> Iterator[Any]:
        ctx = self.ctx
        if ctx.closed:
            raise SplicingError(
                "this loader belongs to a closed tidal runtime (prepare ran again?)"
            )
        pos = ctx.position
        if not ctx.in_epochs and ctx.passes_in_epoch > 0:
            pos.epoch += 1  # without tidal.epochs(), every pass is the next epoch
            pos.step_in_epoch = 0
        ctx.passes_in_epoch += 1
        start = 0
        resumed = ctx.resume_at is not None and ctx.resume_at.epoch == pos.epoch
        if resumed and ctx.resume_at is not None:
            start = ctx.resume_at.step_in_epoch
            ctx.resume_at = None
        pos.step_in_epoch = start
        return self._pass(loader, start, resumed)

    def _pass(self, loader: SplicedLoader, start: int, resumed: bool) -> Iterator[Any]:
        ctx = self.ctx
        k = len(loader.hosted)
        steps = loader.steps_per_epoch
        if start >= steps:
            return
        iters = []
        for j, r in enumerate(loader.hosted):
            ctx.rng.switch(r)
            if resumed and start > 0:
                # The rank's saved stream already includes the draw its loader made when
                # this epoch began; opening the iterator again must not draw a second time.
                saved = capture(ctx.cuda_device)
                iters.append(loader.open_rank(j, ctx.position.epoch, start))
                restore(saved, ctx.cuda_device)
            else:
                iters.append(loader.open_rank(j, ctx.position.epoch, start))
        phase = _IDLE
        samples = 0
        try:
            for _ in range(start, steps):
                samples = 0
                phase = _IN_STEP
                for j, r in enumerate(loader.hosted):
                    ctx.rng.switch(r)
                    micro = Micro(rank=r, index=j, final=j == k - 1)
                    if j == 0:
                        ctx.buffers.begin_step()
                    ctx.splicer.begin_micro(micro)
                    ctx.buffers.begin_micro()
                    ctx.micro = micro
                    try:
                        batch = next(iters[j])
                    except StopIteration:
                        raise SplicingError(
                            f"logical rank {r}'s loader ended early in epoch {ctx.position.epoch}"
                        ) from None
                    samples += _batch_len(batch)
                    if micro.final:
                        phase = _FINAL_YIELDED
                    yield move_to_device(batch, loader.device)
                    ctx.micro = None
                    ctx.splicer.end_micro()
                phase = _IDLE
                complete_step(ctx, samples * ctx.settings.workers)
                act_on_votes(ctx)
        finally:
            ctx.micro = None
            if not ctx.closed:
                ctx.splicer.end_micro()
                if phase == _FINAL_YIELDED:
                    # the user left the loop right after a step's last micro-batch: the step
                    # is done; its votes wait for the next step's reduction
                    complete_step(ctx, samples * ctx.settings.workers)
                elif phase == _IN_STEP:
                    logger.warning(
                        "left the loader loop in the middle of step %d; its partial gradients "
                        "are dropped",
                        ctx.position.step,
                    )
                    ctx.splicer.abandon()
                ctx.rng.switch(MAIN)


def complete_step(ctx: RuntimeContext, samples: int) -> None:
    """Local bookkeeping once a step's last micro-batch is done (no collectives)."""
    pos = ctx.position
    pos.step += 1
    pos.step_in_epoch += 1
    ctx.buffers.end_step()
    ctx.status.progress(step=pos.step, epoch=pos.epoch, samples=samples)
    if ctx.manager is not None:
        poll_async_checkpoint(ctx)
    now = time.monotonic()
    if ctx.settings.worker == 0 and now - ctx.last_progress_log > _LOG_EVERY_S:
        ctx.last_progress_log = now
        rate = ctx.status.samples_per_s
        logger.info("step %d epoch %d: %.1f samples/s", pos.step, pos.epoch, rate)


def act_on_votes(ctx: RuntimeContext) -> None:
    """The step boundary's decisions; identical on every worker (the votes were reduced)."""
    decision = ctx.splicer.decision
    ctx.splicer.decision = None
    stop = decision is not None and decision.stop
    wanted = decision is not None and decision.checkpoint
    if wanted:
        ctx.checkpoint_requested = False
    every = ctx.settings.checkpoint_every_steps
    if every is not None and ctx.position.step % every == 0:
        wanted = True
    if stop:
        preempt(ctx)
    elif wanted and ctx.manager is not None:
        save_checkpoint(ctx, asynchronous=True)


def preempt(ctx: RuntimeContext) -> None:
    """The consistent cut: checkpoint (if a directory was given), mark preempted, exit."""
    step = ctx.position.step
    if ctx.manager is not None:
        ctx.status.set_state(JobState.STOPPING)
        save_checkpoint(ctx, asynchronous=False)
        ctx.status.set_state(JobState.PREEMPTED)
        logger.info("preempted at step %d: checkpoint committed, exiting", step)
        code = 0
    else:
        logger.warning(
            "SIGTERM: stopped at step %d, but TIDAL_CHECKPOINT_DIR is not set, so nothing "
            "was saved",
            step,
        )
        code = EXIT_PREEMPTED_NO_CHECKPOINT
    ctx.close()
    raise SystemExit(code)


def run_epochs(ctx: RuntimeContext, count: int) -> Iterator[int]:
    """``tidal.epochs(count)``: yields epoch numbers, resuming where the job stopped."""
    if count < 0:
        raise SplicingError(f"tidal.epochs({count}): the epoch count must be >= 0")
    ctx.in_epochs = True
    first = ctx.resume_at.epoch if ctx.resume_at is not None else ctx.position.epoch
    try:
        for epoch in range(first, count):
            resuming = ctx.resume_at is not None and ctx.resume_at.epoch == epoch
            if resuming and ctx.epoch_rng is not None:
                ctx.rng.set(MAIN, ctx.epoch_rng)  # the main stream as this epoch began
            else:
                ctx.position.step_in_epoch = 0
            ctx.position.epoch = epoch
            ctx.passes_in_epoch = 0
            ctx.epoch_rng = ctx.rng.get(MAIN)
            ctx.status.set_position(step=ctx.position.step, epoch=epoch)
            yield epoch
        finish(ctx, count)
    finally:
        ctx.in_epochs = False


def finish(ctx: RuntimeContext, count: int) -> None:
    """Training ran to the end: final checkpoint (so a rerun is a no-op), then succeeded."""
    pos = ctx.position
    pos.epoch, pos.step_in_epoch = max(count, pos.epoch), 0
    ctx.resume_at = None
    ctx.epoch_rng = ctx.rng.get(MAIN)
    if ctx.manager is not None and ctx.last_checkpoint_step != pos.step:
        save_checkpoint(ctx, asynchronous=False)  # still ``running`` while it is written
    ctx.status.set_position(step=pos.step, epoch=pos.epoch)
    ctx.status.set_state(JobState.SUCCEEDED)
