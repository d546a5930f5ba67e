"""What a job asks for."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tidal.core.errors import SpecError
from tidal.core.tiers import Tier


def divisors_between(world: int, low: int, high: int) -> tuple[int, ...]:
    """Device counts P with ``low <= P <= high`` that divide ``world``, ascending."""
    return tuple(p for p in range(max(1, low), min(world, high) + 1) if world % p == 0)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job's request.

    ``world`` is the logical data-parallel world size W, fixed for the job's life. The job
    may run on any device count P that divides W and lies in ``[min_devices, W]``; premium
    jobs run only at W. ``work`` is the job's total work in device-seconds at W devices
    (its run time at full size times W); ``checkpoint_bytes`` sizes its checkpoint. Both
    are used by the simulator. ``declared_work`` is what the job *says* its work is (a
    user's estimate, as a Slurm time limit is); ``estimate`` is that, or ``work`` when
    nothing was declared. Policies read only the estimate (``JobView.remaining``), never
    ``work`` itself. ``max_devices`` caps the device counts (default W); ``declared_steps``
    is a length declared in optimizer steps, which the service turns into an estimate once
    it has measured a step.
    """

    id: str
    tenant: str
    tier: Tier
    world: int
    submit_time: float
    device_type: str = "gpu"
    min_devices: int = 1
    work: float = 0.0
    checkpoint_bytes: int = 0
    declared_work: float | None = None
    max_restarts: int = 3
    max_devices: int | None = None
    declared_steps: int | None = None
    sizes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    estimate: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            raise SpecError("job id must be a non-empty string")
        if not isinstance(self.tier, Tier):
            raise SpecError(f"job {self.id!r}: tier must be a Tier, got {self.tier!r}")
        if self.world < 1:
            raise SpecError(f"job {self.id!r}: world size must be >= 1, got {self.world}")
        if not 1 <= self.min_devices <= self.world:
            raise SpecError(
                f"job {self.id!r}: min_devices must be in [1, {self.world}], got {self.min_devices}"
            )
        if not math.isfinite(self.submit_time) or self.submit_time < 0:
            raise SpecError(f"job {self.id!r}: submit_time must be >= 0, got {self.submit_time}")
        if self.work < 0 or not math.isfinite(self.work):
            raise SpecError(f"job {self.id!r}: work must be >= 0, got {self.work}")
        declared = self.declared_work
        if declared is not None and (declared < 0 or not math.isfinite(declared)):
            raise SpecError(f"job {self.id!r}: declared_work must be >= 0, got {declared}")
        object.__setattr__(self, "estimate", self.work if declared is None else declared)
        if self.checkpoint_bytes < 0:
            raise SpecError(
                f"job {self.id!r}: checkpoint_bytes must be >= 0, got {self.checkpoint_bytes}"
            )
        if self.max_restarts < 0:
            raise SpecError(f"job {self.id!r}: max_restarts must be >= 0, got {self.max_restarts}")
        high = self.world if self.max_devices is None else self.max_devices
        if not self.min_devices <= high <= self.world:
            raise SpecError(
                f"job {self.id!r}: max_devices must be in [{self.min_devices}, {self.world}], "
                f"got {self.max_devices}"
            )
        if self.declared_steps is not None and self.declared_steps < 1:
            raise SpecError(
                f"job {self.id!r}: declared_steps must be >= 1, got {self.declared_steps}"
            )
        low = self.world if self.tier is Tier.PREMIUM else self.min_devices
        if self.tier is Tier.PREMIUM:
            high = self.world
        sizes = divisors_between(self.world, low, high)
        if not sizes:
            raise SpecError(
                f"job {self.id!r}: no device count in [{low}, {high}] divides world {self.world}"
            )
        object.__setattr__(self, "sizes", sizes)

    @property
    def elastic(self) -> bool:
        """Whether the job may run on fewer than W devices."""
        return len(self.sizes) > 1

    @property
    def min_size(self) -> int:
        return self.sizes[0]

    @property
    def full_duration(self) -> float:
        """Seconds the job truly needs at W devices with nothing lost (the simulator's
        truth; policies use ``estimate / world``)."""
        return self.work / self.world

    def fit_size(self, devices: int) -> int:
        """Largest allowed device count not above ``devices``; 0 if none fits."""
        best = 0
        for p in self.sizes:
            if p <= devices:
                best = p
            else:
                break
        return best
