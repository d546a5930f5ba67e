"""Which of Tidal's modules are compiled, and a guard against running stale ones.

The scheduling round and the simulator's event loop are plain, strictly typed Python that
``setup.py`` compiles to C extensions with mypyc when Tidal is installed (unless
``TIDAL_COMPILE=0``). Python imports such an extension in place of the ``.py`` file beside
it, so in an editable install an edited source file has no effect until Tidal is built
again: :func:`warn_if_stale` (run when :mod:`tidal` is imported) says so.
"""

from __future__ import annotations

import os
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# The modules setup.py compiles (read from this file, so the list lives in one place).
# Not listed: package __init__s, exception classes (mypyc cannot compile subclasses of
# built-in exceptions), the Policy protocol (runtime-checkable protocols must stay Python
# classes), and code off the hot path (the CLI, trace parsing, plots, the runtime).
# Compiled classes check the types of their fields when built: a JobSpec given a string
# for its tier raises TypeError ("Tier object expected; got str") before its own checks,
# which in pure Python raise SpecError.
COMPILED = (
    "tidal.core.actions",
    "tidal.core.execution",
    "tidal.core.fleet",
    "tidal.core.packing",
    "tidal.core.placement",
    "tidal.core.plan",
    "tidal.core.round",
    "tidal.core.snapshot",
    "tidal.core.spec",
    "tidal.core.states",
    "tidal.core.tiers",
    "tidal.core.policies._common",
    "tidal.core.policies._gang",
    "tidal.core.policies._premium",
    "tidal.core.policies._tiered_alloc",
    "tidal.core.policies._tiered_place",
    "tidal.core.policies.backfill",
    "tidal.core.policies.fifo",
    "tidal.core.policies.gandiva",
    "tidal.core.policies.priority_kill",
    "tidal.core.policies.tiered",
    "tidal.core.policies.tiresias",
    "tidal.sim.clock",
    "tidal.sim.costs",
    "tidal.sim.engine",
    "tidal.sim.executor",
    "tidal.sim.metrics",
    "tidal.sim.quotas",
    "tidal.sim.records",
)

_ROOT = Path(__file__).resolve().parent  # the tidal package


class StaleBuildWarning(RuntimeWarning):
    """A compiled module is older than its source: Python runs the old code."""


def _files(module: str) -> tuple[Path, list[Path]]:
    """The module's source file and the C extensions built from it."""
    base = _ROOT.joinpath(*module.split(".")[1:])
    return base.with_suffix(".py"), [Path(f"{base}{suffix}") for suffix in EXTENSION_SUFFIXES]


def compiled_modules() -> list[str]:
    """The modules of :data:`COMPILED` that have a C extension beside their source."""
    return [m for m in COMPILED if any(p.exists() for p in _files(m)[1])]


def stale_modules() -> list[str]:
    """Compiled modules whose source changed after they were built (by more than a
    second: an installed wheel writes both within moments of each other)."""
    stale = []
    for module in COMPILED:
        source, extensions = _files(module)
        for ext in extensions:
            try:
                if source.stat().st_mtime > ext.stat().st_mtime + 1.0:
                    stale.append(module)
                    break
            except FileNotFoundError:
                continue
    return stale


def warn_if_stale() -> None:
    if os.environ.get("TIDAL_IGNORE_STALE_BUILD") == "1":
        return
    stale = stale_modules()
    if stale:
        warnings.warn(
            f"{', '.join(stale)}: source changed after it was compiled, so Python runs the "
            "old compiled code. Rebuild with `make setup` (or `pip install -e .`), or "
            "install pure Python with `TIDAL_COMPILE=0 make setup`.",
            StaleBuildWarning,
            stacklevel=2,
        )
