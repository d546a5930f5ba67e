"""Tidal runtime: what runs inside a training process.

``prepare`` wraps the user's model, optimizer(s), loader, scheduler(s), GradScaler and
extra stateful objects; ``epochs`` drives the outer loop and resumes where the job
stopped. See ``docs/runtime.md``.

The package is layered, each layer importing only the ones before it:

* :mod:`~tidal.runtime.errors`, :mod:`~tidal.runtime.settings`: the error family, and the
  launcher's environment read once (stdlib only);
* :mod:`~tidal.runtime.reduction`: the fixed summation order over logical ranks and the
  cross-worker strategies that keep it;
* :mod:`~tidal.runtime.splicing`: running a worker's logical ranks one after another (data
  shards, random streams, gradient stash, buffers, once-per-step ``step()``);
* :mod:`~tidal.runtime.checkpoint`: the checkpoint manager and its on-disk format;
* :mod:`~tidal.runtime.session`: the context ``prepare`` creates, the loop, the consistent
  cut, resume, ``status.json``;
* :mod:`~tidal.runtime.api`: the user's verbs.

Importing this package loads neither PyTorch nor any of the layers: the verbs are imported
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidal.runtime.errors import (
    CheckpointError,
    CheckpointWorldMismatch,
    PrepareError,
    SettingsError,
    SplicingError,
    StateFormatError,
    TidalRuntimeError,
)

if TYPE_CHECKING:
    from tidal.runtime.api import checkpoint_now, epochs, is_main, prepare, rank, world

_VERBS = ("checkpoint_now", "epochs", "is_main", "prepare", "rank", "world")

__all__ = [
    "CheckpointError",
    "CheckpointWorldMismatch",
    "PrepareError",
    "SettingsError",
    "SplicingError",
    "StateFormatError",
    "TidalRuntimeError",
    "checkpoint_now",
    "epochs",
    "is_main",
    "prepare",
    "rank",
    "world",
]


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        from tidal.runtime import api

        return getattr(api, name)
    raise AttributeError(f"module 'tidal.runtime' has no attribute {name!r}")
