"""What a plan asks the world to do. The simulator and the live executor apply the same ones.

Every action carries the ``generation`` of the job it was decided for (``JobView.generation``:
the number of state changes the job has been through). An executor refuses an action whose
generation is not the job's current one: the job changed after the snapshot the action was
decided on (a worker exited, a stop completed), so the action is stale and the next round
decides again, rather than applying it twice or to a job it no longer fits.

A stop (``Stop`` with a checkpoint, and the stop that begins a ``Resize`` or ``Migrate``) has a
``deadline``: the clock reading after which the executor kills the job's workers if they have
not committed their checkpoint and exited. The job then resumes from its last checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from tidal.core.placement import Placement

# Actions are immutable dataclasses with a hand-written ``__init__``, not frozen ones:
# compiled, they are built natively (see "Value types" in docs/architecture.md).

NO_DEADLINE: Final = math.inf


@dataclass(slots=True, init=False, unsafe_hash=True)
class Start:
    """Start (or resume from its last checkpoint) a job that holds no devices."""

    job_id: Final[str]
    placement: Final[Placement]
    reason: Final[str]
    generation: Final[int]

    def __init__(
        self, job_id: str, placement: Placement, reason: str = "", generation: int = 0
    ) -> None:
        self.job_id = job_id
        self.placement = placement
        self.reason = reason
        self.generation = generation


@dataclass(slots=True, init=False, unsafe_hash=True)
class Stop:
    """Release a job's devices. With ``checkpoint`` it stops at a consistent cut and keeps
    its progress (killed at ``deadline`` if it has not stopped by then); without, it is
    killed at once and resumes from its last checkpoint."""

    job_id: Final[str]
    placement: Final[Placement]
    checkpoint: Final[bool]
    reason: Final[str]
    generation: Final[int]
    deadline: Final[float]

    def __init__(
        self,
        job_id: str,
        placement: Placement,
        checkpoint: bool = True,
        reason: str = "",
        generation: int = 0,
        deadline: float = NO_DEADLINE,
    ) -> None:
        self.job_id = job_id
        self.placement = placement
        self.checkpoint = checkpoint
        self.reason = reason
        self.generation = generation
        self.deadline = deadline


@dataclass(slots=True, init=False, unsafe_hash=True)
class _Move:
    """A running job from placement ``old`` to ``new`` (the fields of Resize and Migrate;
    never an action itself): a stop at a consistent cut, then a start on ``new``."""

    job_id: Final[str]
    old: Final[Placement]
    new: Final[Placement]
    reason: Final[str]
    generation: Final[int]
    deadline: Final[float]

    def __init__(
        self,
        job_id: str,
        old: Placement,
        new: Placement,
        reason: str = "",
        generation: int = 0,
        deadline: float = NO_DEADLINE,
    ) -> None:
        self.job_id = job_id
        self.old = old
        self.new = new
        self.reason = reason
        self.generation = generation
        self.deadline = deadline


@dataclass(slots=True, init=False, unsafe_hash=True)
class Resize(_Move):
    """Change a running job's device count (its node set may change too)."""


@dataclass(slots=True, init=False, unsafe_hash=True)
class Migrate(_Move):
    """Move a running job to other nodes, keeping its device count."""


@dataclass(slots=True, init=False, unsafe_hash=True)
class Cancel:
    """End a job for good, at a user's or an admin's request (never a policy's): a job
    holding devices has its workers stopped without a checkpoint; then it is CANCELLED."""

    job_id: Final[str]
    reason: Final[str]
    generation: Final[int]

    def __init__(self, job_id: str, reason: str = "", generation: int = 0) -> None:
        self.job_id = job_id
        self.reason = reason
        self.generation = generation


Action = Start | Stop | Resize | Migrate | Cancel

# The order a plan's actions are applied in: free devices before taking them.
_APPLY_ORDER = {Cancel: 0, Stop: 1, Resize: 2, Migrate: 3, Start: 4}


def apply_order(action: Action) -> tuple[int, int, str]:
    """Sort key: cancels, stops, then shrinks, migrations, grows, and starts; by job id
    within each."""
    kind = _APPLY_ORDER[type(action)]
    grow = 0
    if isinstance(action, Resize) and action.new.size > action.old.size:
        grow = 1
        kind = 3
    return (kind, grow, action.job_id)
