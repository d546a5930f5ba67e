"""The execution contract's protocols: the executor, which acts on the world, and the clock.

One protocol serves the simulator and the service; only the executor and the clock differ
(see :mod:`tidal.core.execution` for the values they exchange). Not compiled: runtime-
checkable protocols stay Python classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tidal.core.actions import Action
from tidal.core.execution import ActionResult, Observation


@runtime_checkable
class Clock(Protocol):
    """Where the time comes from: the simulator's clock, advanced by its event loop, or the
    service's wall clock. ``now()`` is in seconds and never goes back."""

    def now(self) -> float: ...


@runtime_checkable
class Executor(Protocol):
    """Applies actions to the world and reports what it observed (see the module docs)."""

    def apply(self, actions: Sequence[Action]) -> list[ActionResult]:
        """Apply ``actions`` in order; one result per action, in the same order."""
        ...

    def observe(self) -> list[Observation]:
        """What happened since the last call, oldest first."""
        ...


__all__ = ["Clock", "Executor"]
