"""The runtime context: the one object ``tidal.prepare`` creates for a training run.

It owns everything that makes the user's plain loop spliced, preemptible and resumable:
the process group, the per-rank random streams, the gradient splicer, the buffer rule,
the patched ``step`` methods, the status file and the checkpoint manager. Filling it in
from the user's objects is :mod:`tidal.runtime.session.prepare`; what happens per
micro-batch and at each step boundary is :mod:`tidal.runtime.session.loop`. Neither is
imported here: they build on the context, never the other way round.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import torch

from tidal.runtime.checkpoint.manager import CheckpointManager
from tidal.runtime.session import dist_setup
from tidal.runtime.session.objects import Kind, Prepared
from tidal.runtime.session.status import JobState, StatusFile
from tidal.runtime.settings import RuntimeSettings
from tidal.runtime.splicing.buffers import BufferRule
from tidal.runtime.splicing.data import SplicedLoader
from tidal.runtime.splicing.grads import GradSplicer, Micro
from tidal.runtime.splicing.rng import MAIN, StreamSwitcher
from tidal.runtime.splicing.wrap import Patches

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
    """Everything one prepared training run needs; filled in by
    :func:`~tidal.runtime.session.prepare.prepare_objects`."""

    # set by prepare_objects(); close() copes with a prepare that failed half-way
    rng: StreamSwitcher
    splicer: GradSplicer
    buffers: BufferRule
    patches: Patches

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.stop_requested = False
        self._prev_sigterm: Any = None
        self._prev_excepthook: Callable[..., Any] | None = None
        # First of all: a stop that arrives while the group forms or a checkpoint loads is
        # kept, and acted on at the first step boundary.
        self._catch_sigterm()
        try:
            self._start(settings)
        except BaseException:
            self._release_sigterm()
            status: StatusFile | None = getattr(self, "status", None)
            if status is not None:
                status.close()
            raise

    def _start(self, settings: RuntimeSettings) -> None:
        self.device = dist_setup.pick_device(settings)
        self.cuda_device = self.device if self.device.type == "cuda" else None
        self.group = dist_setup.open_group(settings, self.device)
        self.position = Position()
        self.items: list[Prepared] = []
        self.loader: SplicedLoader | None = None
        self.micro: Micro | None = None
        self.closed = False
        self.checkpoint_requested = False
        self.last_checkpoint_step: int | None = None
        self.pending_checkpoint_step: int | None = None
        self.last_checkpoint_time = time.monotonic()
        self.in_epochs = False
        self.last_progress_log = time.monotonic()
        self.passes_in_epoch = 0
        self.resume_at: Position | None = None
        self.epoch_rng: Any = None  # RNGState of the main stream when the epoch began
        self.status = StatusFile(
            settings.checkpoint_dir if settings.worker == 0 else None,
            world=settings.world,
            workers=settings.workers,
            job_id=settings.job_id,
        )
        self.manager: CheckpointManager | None = None
        if settings.checkpoint_dir is not None:
            self.manager = CheckpointManager(
                settings.checkpoint_dir,
                worker=settings.worker,
                workers=settings.workers,
                world=settings.world,
                keep=settings.checkpoint_keep,
            )

    # ------------------------------------------------------------------ queries
    def current_rank(self) -> int | None:
        """The logical rank whose micro-batch is running, or None outside the loader loop."""
        return self.micro.rank if self.micro is not None else None

    def rank(self) -> int:
        r = self.current_rank()
        return r if r is not None else self.settings.hosted_ranks[0]

    def skip_step(self) -> bool:
        """Whether ``step()`` calls are skipped now (a micro-batch that is not the last)."""
        return self.micro is not None and not self.micro.final

    def votes(self) -> tuple[int, int]:
        """This worker's (stop, checkpoint) votes for the step being reduced."""
        due = (
            self.settings.worker == 0
            and self.settings.checkpoint_every_s is not None
            and time.monotonic() - self.last_checkpoint_time >= self.settings.checkpoint_every_s
        )
        return int(self.stop_requested), int(self.checkpoint_requested or due)

    def models(self) -> list[torch.nn.Module]:
        return [p.obj for p in self.items if p.kind is Kind.MODEL]

    # ------------------------------------------------------------------ signals, exit
    def _catch_sigterm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._prev_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        else:
            logger.warning("prepare ran outside the main thread: SIGTERM will not stop at a step")

    def _release_sigterm(self) -> None:
        if self._prev_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._prev_sigterm = None

    def install_excepthook(self) -> None:
        """On worker 0, an uncaught error marks the run failed in ``status.json``."""
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
            self._release_sigterm()
            if self._prev_excepthook is not None and sys.excepthook == self._excepthook:
                sys.excepthook = self._prev_excepthook
            self.status.close()
            self.group.close()
