"""The user's verbs: ``prepare``, ``epochs``, ``is_main``, ``rank``, ``world``, ``checkpoint_now``.

The only state here is the current :class:`RuntimeContext`, created by ``prepare``; calling
``prepare`` again closes the previous context (undoing its hooks and patches) and replaces
it, so one process can run several prepared trainings one after the other.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Iterator
from typing import Any

from tidal.runtime.errors import TidalRuntimeError
from tidal.runtime.session.context import RuntimeContext
from tidal.runtime.session.loop import run_epochs
from tidal.runtime.session.prepare import prepare_objects
from tidal.runtime.settings import RuntimeSettings

logger = logging.getLogger(__name__)

__all__ = ["checkpoint_now", "current", "epochs", "is_main", "prepare", "rank", "shutdown", "world"]

_current: RuntimeContext | None = None
_atexit_registered = False


def prepare(*objects: Any, seed: int | None = None) -> Any:
    """Make a training run spliced, preemptible and resumable; returns the objects in order.

    Accepts models, optimizers, one training DataLoader, LR schedulers, a GradScaler, and
    any object with ``state_dict``/``load_state_dict``. With one argument, returns it; with
    several, a tuple. If ``TIDAL_CHECKPOINT_DIR`` holds a committed checkpoint, every object
    is restored from it before this returns.

    Every logical rank's random streams start as a copy of worker 0's generators at this
    call (as DDP processes seeded alike). With ``seed``, logical rank r's streams are
    seeded with ``seed + r`` instead (the DDP idiom ``torch.manual_seed(seed + rank)``).
    """
    global _current, _atexit_registered
    if not objects:
        raise TidalRuntimeError("prepare needs at least the model")
    settings = RuntimeSettings.from_env()
    shutdown()
    ctx = RuntimeContext(settings)
    try:
        returned = prepare_objects(ctx, objects, seed=seed)
    except BaseException:
        ctx.close()
        raise
    _current = ctx
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    return returned[0] if len(returned) == 1 else tuple(returned)


def current() -> RuntimeContext:
    """The context of the last ``prepare`` (raises if there is none)."""
    if _current is None or _current.closed:
        raise TidalRuntimeError("call tidal.prepare(model, optimizer, loader, ...) first")
    return _current


def shutdown() -> None:
    """Close the current context: finish async checkpoints, remove hooks, leave the group."""
    global _current
    ctx, _current = _current, None
    if ctx is not None:
        ctx.close()


def epochs(count: int) -> Iterator[int]:
    """``for epoch in tidal.epochs(n)``: epoch numbers from where the job stands to ``n - 1``."""
    return run_epochs(current(), count)


def _settings() -> RuntimeSettings:
    if _current is not None and not _current.closed:
        return _current.settings
    return RuntimeSettings.from_env()


def is_main() -> bool:
    """True on physical worker 0 (the one that hosts logical rank 0)."""
    return _settings().worker == 0


def rank() -> int:
    """Inside the loader loop: the logical rank whose batch is running. Outside: the first
    logical rank this worker hosts (so ``rank() == 0`` exactly on the main worker)."""
    if _current is not None and not _current.closed:
        return _current.rank()
    settings = _settings()
    return settings.hosted_ranks[0]


def world() -> int:
    """The logical world size W (fixed for the job's life, whatever the worker count)."""
    return _settings().world


def checkpoint_now() -> None:
    """Ask for a checkpoint at the next step boundary (agreed by all workers)."""
    ctx = current()
    if ctx.manager is None:
        logger.warning("checkpoint_now(): TIDAL_CHECKPOINT_DIR is not set; nothing will be saved")
        return
    ctx.checkpoint_requested = True
