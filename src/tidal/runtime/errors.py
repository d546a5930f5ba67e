"""The runtime's error family: every error the runtime raises on purpose is one of these."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointWorldMismatch",
    "PrepareError",
    "SettingsError",
    "SplicingError",
    "StateFormatError",
    "TidalRuntimeError",
]


class TidalRuntimeError(RuntimeError):
    """Base of all errors raised by :mod:`tidal.runtime` on purpose."""


class SettingsError(TidalRuntimeError):
    """The launcher's environment is inconsistent (bad world size, worker index, ...)."""


class PrepareError(TidalRuntimeError):
    """``tidal.prepare`` was given something it cannot make preemptible and elastic."""


class SplicingError(TidalRuntimeError):
    """The training loop did something replica splicing cannot reproduce exactly."""


class CheckpointError(TidalRuntimeError):
    """A checkpoint cannot be written, found or read; the message names the path or value."""


class CheckpointWorldMismatch(CheckpointError):
    """The checkpoint root holds a checkpoint of a job with another logical world size."""


class StateFormatError(CheckpointError):
    """A state cannot be stored or rebuilt; the message names the path inside the state."""
