"""The runtime context: the one object ``tidal.prepare`` creates for a training run.

It owns everything that makes the user's plain loop spliced, preemptible and resumable:
the process group, the per-rank random streams, the gradient splicer, the buffer rule,
the patched ``step`` methods, the status file and the checkpoint manager. The loop itself
(what happens per micro-batch and at each step boundary) is in :mod:`tidal.runtime.loop`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from tidal.runtime import dist_setup
from tidal.runtime.buffers import BufferRule
from tidal.runtime.data import SplicedLoader
from tidal.runtime.errors import PrepareError
from tidal.runtime.grads import GradSplicer, Micro
from tidal.runtime.objects import Kind, Prepared, classify
from tidal.runtime.reduce import Layout, make_cross_worker
from tidal.runtime.rng import MAIN, StreamSwitcher
from tidal.runtime.settings import RuntimeSettings
from tidal.runtime.status import JobState, StatusFile
from tidal.runtime.wrap import OPTIMIZER_METHODS, SCALER_METHODS, SCHEDULER_METHODS, Patches

logger = logging.getLogger(__name__)

__all__ = ["Position", "RuntimeContext"]


class Position:
    """Where training stands: global step, epoch, and steps done in the epoch."""

    __slots__ = ("epoch", "step", "step_in_epoch")

    def __init__(self, step: int = 0, epoch: int = 0, step_in_epoch: int = 0) -> None:
        self.step, self.epoch, self.step_in_epoch = step, epoch, step_in_epoch

    def __repr__(self) -> str:
        return f"Position(step={self.step}, epoch={self.epoch}, step_in_epoch={self.step_in_epoch})"


class RuntimeContext:
    """Everything one prepared training run needs. Create with :meth:`prepare`."""

    # set by prepare(); close() copes with a prepare that failed half-way
    rng: StreamSwitcher
    splicer: GradSplicer
    buffers: BufferRule
    patches: Patches

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.device = dist_setup.pick_device(settings)
        self.cuda_device = self.device if self.device.type == "cuda" else None
        self.group = dist_setup.open_group(settings, self.device)
        self.position = Position()
        self.items: list[Prepared] = []
        self.loader: SplicedLoader | None = None
        self.micro: Micro | None = None
        self.closed = False
        self.stop_requested = False
        self.checkpoint_requested = False
        self.last_checkpoint_step: int | None = None
        self.pending_checkpoint_step: int | None = None
        self.last_checkpoint_time = time.monotonic()
        self.in_epochs = False
        self.last_progress_log = time.monotonic()
        self.passes_in_epoch = 0
        self.resume_at: Position | None = None
        self.epoch_rng: Any = None  # RNGState of the main stream when the epoch began
        self._prev_sigterm: Any = None
        self._prev_excepthook: Callable[..., Any] | None = None
        self.status = StatusFile(
            settings.checkpoint_dir if settings.worker == 0 else None,
            world=settings.world,
            workers=settings.workers,
            job_id=settings.job_id,
        )
        self.manager: Any = None
        if settings.checkpoint_dir is not None:
            from tidal.runtime.checkpoint import CheckpointManager

            self.manager = CheckpointManager(
                settings.checkpoint_dir,
                worker=settings.worker,
                workers=settings.workers,
                world=settings.world,
                keep=settings.checkpoint_keep,
            )

    # ------------------------------------------------------------------ prepare
    def prepare(self, objects: Sequence[Any], *, seed: int | None = None) -> list[Any]:
        s = self.settings
        self.items = classify(objects)
        models = [p.obj for p in self.items if p.kind is Kind.MODEL]
        for m in models:
            m.to(self.device)
        if s.workers > 1:
            dist_setup.broadcast_module_state(models)
            dist_setup.broadcast_rng(self.cuda_device)
        params = _trainable(models)
        if not params:
            raise PrepareError("the prepared model(s) have no parameters with requires_grad=True")
        self.rng = StreamSwitcher(list(s.hosted_ranks), self.cuda_device)
        if seed is not None:
            self.rng.seed_slots(seed)
        cross = make_cross_worker(s.reduce, s.world, s.worker, s.workers, Layout.of(params))
        self.splicer = GradSplicer(
            params,
            world=s.world,
            ranks_per_worker=s.ranks_per_worker,
            cross=cross,
            votes=self._votes,
            bucket_bytes=int(s.bucket_mb * 1024 * 1024),
        )
        self.buffers = BufferRule(models, current_rank=self.current_rank, workers=s.workers)
        self.patches = Patches(self._skip_step)
        returned: list[Any] = []
        for item in self.items:
            if item.kind is Kind.OPTIMIZER:
                self.patches.patch(item.obj, OPTIMIZER_METHODS)
            elif item.kind is Kind.SCHEDULER:
                self.patches.patch(item.obj, SCHEDULER_METHODS)
                self.patches.hide_from_state(item.obj)
            elif item.kind is Kind.SCALER:
                self.patches.patch(item.obj, SCALER_METHODS)
            if item.kind is Kind.LOADER:
                from tidal.runtime.loop import Driver

                self.loader = SplicedLoader(
                    item.obj,
                    world=s.world,
                    hosted=s.hosted_ranks,
                    driver=Driver(self),
                    device=self.device,
                )
                returned.append(self.loader)
            else:
                returned.append(item.obj)
        if self.manager is not None:
            from tidal.runtime.state import resume_if_possible

            resume_if_possible(self)
        self._install_handlers()
        self.status.set_position(step=self.position.step, epoch=self.position.epoch)
        self.status.set_state(JobState.RUNNING)
        logger.info(
            "tidal runtime ready: worker %d/%d hosts logical ranks %s of W=%d on %s, reduce=%s%s",
            s.worker,
            s.workers,
            list(s.hosted_ranks),
            s.world,
            self.device,
            s.reduce.value,
            f", resumed at step {self.position.step}" if self.resume_at is not None else "",
        )
        return returned

    # ------------------------------------------------------------------ queries
    def current_rank(self) -> int | None:
        """The logical rank whose micro-batch is running, or None outside the loader loop."""
        return self.micro.rank if self.micro is not None else None

    def rank(self) -> int:
        r = self.current_rank()
        return r if r is not None else self.settings.hosted_ranks[0]

    def _skip_step(self) -> bool:
        return self.micro is not None and not self.micro.final

    def _votes(self) -> tuple[int, int]:
        due = (
            self.settings.worker == 0
            and self.settings.checkpoint_every_s is not None
            and time.monotonic() - self.last_checkpoint_time >= self.settings.checkpoint_every_s
        )
        return int(self.stop_requested), int(self.checkpoint_requested or due)

    def models(self) -> list[torch.nn.Module]:
        return [p.obj for p in self.items if p.kind is Kind.MODEL]

    # ------------------------------------------------------------------ epochs
    def epochs(self, count: int) -> Iterator[int]:
        from tidal.runtime.loop import run_epochs

        return run_epochs(self, count)

    # ------------------------------------------------------------------ signals, exit
    def _install_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._prev_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        else:
            logger.warning("prepare ran outside the main thread: SIGTERM will not stop at a step")
        if self.settings.worker == 0:
            self._prev_excepthook = sys.excepthook
            sys.excepthook = self._excepthook

    def _on_sigterm(self, signum: int, frame: types.FrameType | None) -> None:
        self.stop_requested = True

    def _excepthook(self, kind: type[BaseException], value: BaseException, tb: Any) -> None:
        try:
            self.status.set_state(JobState.FAILED)
        finally:
            previous = self._prev_excepthook or sys.__excepthook__
            previous(kind, value, tb)

    def close(self) -> None:
        """Undo everything prepare did to the user's objects and the process."""
        if self.closed:
            return
        self.closed = True
        self.micro = None
        try:
            if self.manager is not None:
                self.manager.close()
                if self.pending_checkpoint_step is not None:
                    self.status.checkpointed(self.pending_checkpoint_step)
        finally:
            splicer: GradSplicer | None = getattr(self, "splicer", None)
            buffers: BufferRule | None = getattr(self, "buffers", None)
            patches: Patches | None = getattr(self, "patches", None)
            rng: StreamSwitcher | None = getattr(self, "rng", None)
            if splicer is not None:
                splicer.close()
            if buffers is not None:
                buffers.close()
            if patches is not None:
                patches.undo()
            if rng is not None and rng.active != MAIN:
                rng.switch(MAIN)
            if (
                self._prev_sigterm is not None
                and threading.current_thread() is threading.main_thread()
            ):
                signal.signal(signal.SIGTERM, self._prev_sigterm)
            if self._prev_excepthook is not None and sys.excepthook == self._excepthook:
                sys.excepthook = self._prev_excepthook
            self.status.close()
            self.group.close()


def _trainable(models: Sequence[torch.nn.Module]) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    out = []
    for m in models:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out
