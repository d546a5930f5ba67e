"""Tidal: scheduling for deep-learning jobs that are preemptible, migratable and elastic.

The user-facing runtime verbs (``prepare``, ``epochs``, ``is_main``, ``rank``) live in
:mod:`tidal.runtime` and are re-exported here lazily, so that ``import tidal`` for the
scheduler or simulator never imports PyTorch.
"""

from __future__ import annotations

from typing import Any

from tidal._build import warn_if_stale

warn_if_stale()  # an edited module that still runs compiled from before the edit

__version__ = "0.1.0"

_RUNTIME_NAMES = ("prepare", "epochs", "is_main", "rank", "world", "checkpoint_now")

__all__ = ["__version__", *_RUNTIME_NAMES]


def __getattr__(name: str) -> Any:
    if name in _RUNTIME_NAMES:
        from tidal import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'tidal' has no attribute {name!r}")
