"""The simulator's injected clock: time moves only when the engine says so."""

from __future__ import annotations

import math

from tidal.sim.errors import SimError


class SimClock:
    """A clock that starts at ``start`` and is advanced by the event loop, never backwards.

    The live control plane reads a wall clock through the same ``now()`` call; nothing
    else in the simulator differs from production in how it learns the time.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise SimError(f"clock start must be finite, got {start!r}")
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t < self._now:
            raise SimError(f"clock cannot go back from {self._now} to {t}")
        self._now = t
