"""Tidal runtime: what runs inside a training process.

``prepare`` wraps the user's model, optimizer(s), loader, scheduler(s), GradScaler and
extra stateful objects; ``epochs`` drives the outer loop and resumes where the job
stopped. See ``docs/runtime.md``.
"""

from __future__ import annotations

from tidal.runtime.api import checkpoint_now, epochs, is_main, prepare, rank, world
from tidal.runtime.errors import (
    PrepareError,
    SettingsError,
    SplicingError,
    TidalRuntimeError,
)

__all__ = [
    "PrepareError",
    "SettingsError",
    "SplicingError",
    "TidalRuntimeError",
    "checkpoint_now",
    "epochs",
    "is_main",
    "prepare",
    "rank",
    "world",
]
