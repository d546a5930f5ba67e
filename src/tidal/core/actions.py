"""What a plan asks the world to do. The simulator and the live executor apply the same ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tidal.core.placement import Placement

# Actions are immutable dataclasses with a hand-written ``__init__``, not frozen ones:
# compiled, they are built natively (see "Value types" in docs/architecture.md).


@dataclass(slots=True, init=False, unsafe_hash=True)
class Start:
    """Start (or resume from its last checkpoint) a job that holds no devices."""

    job_id: Final[str]
    placement: Final[Placement]
    reason: Final[str]

    def __init__(self, job_id: str, placement: Placement, reason: str = "") -> None:
        self.job_id = job_id
        self.placement = placement
        self.reason = reason


@dataclass(slots=True, init=False, unsafe_hash=True)
class Stop:
    """Release a job's devices. With ``checkpoint`` it stops at a consistent cut and keeps
    its progress; without, it is killed and restarts from scratch (baselines only)."""

    job_id: Final[str]
    placement: Final[Placement]
    checkpoint: Final[bool]
    reason: Final[str]

    def __init__(
        self, job_id: str, placement: Placement, checkpoint: bool = True, reason: str = ""
    ) -> None:
        self.job_id = job_id
        self.placement = placement
        self.checkpoint = checkpoint
        self.reason = reason


@dataclass(slots=True, init=False, unsafe_hash=True)
class _Move:
    """A running job from placement ``old`` to ``new`` (the fields of Resize and Migrate;
    never an action itself)."""

    job_id: Final[str]
    old: Final[Placement]
    new: Final[Placement]
    reason: Final[str]

    def __init__(self, job_id: str, old: Placement, new: Placement, reason: str = "") -> None:
        self.job_id = job_id
        self.old = old
        self.new = new
        self.reason = reason


@dataclass(slots=True, init=False, unsafe_hash=True)
class Resize(_Move):
    """Change a running job's device count (its node set may change too)."""


@dataclass(slots=True, init=False, unsafe_hash=True)
class Migrate(_Move):
    """Move a running job to other nodes, keeping its device count."""


Action = Start | Stop | Resize | Migrate

# The order a plan's actions are applied in: free devices before taking them.
_APPLY_ORDER = {Stop: 0, Resize: 1, Migrate: 2, Start: 3}


def apply_order(action: Action) -> tuple[int, int, str]:
    """Sort key: stops, then shrinks, migrations, grows, and starts; by job id within each."""
    kind = _APPLY_ORDER[type(action)]
    grow = 0
    if isinstance(action, Resize) and action.new.size > action.old.size:
        grow = 1
        kind = 2
    return (kind, grow, action.job_id)
