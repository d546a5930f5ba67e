"""The runtime's error family: every error the runtime raises on purpose is one of these."""

from __future__ import annotations

__all__ = ["PrepareError", "SettingsError", "SplicingError", "TidalRuntimeError"]


class TidalRuntimeError(RuntimeError):
    """Base of all errors raised by :mod:`tidal.runtime` on purpose."""


class SettingsError(TidalRuntimeError):
    """The launcher's environment is inconsistent (bad world size, worker index, ...)."""


class PrepareError(TidalRuntimeError):
    """``tidal.prepare`` was given something it cannot make preemptible and elastic."""


class SplicingError(TidalRuntimeError):
    """The training loop did something replica splicing cannot reproduce exactly."""
