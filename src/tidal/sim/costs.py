"""What preemption, resizing and splicing cost, in simulated seconds.

Defaults (see ``docs/simulator.md``):

- checkpoint: ``checkpoint_fixed_s`` (5 s: reaching a step boundary, agreeing on the cut,
  fsync and rename) plus ``checkpoint_bytes / write_bandwidth`` (1 GiB/s);
- restart (resume after a stop, resize or migration): ``restart_fixed_s`` (20 s: process
  launch, device and collective initialisation, warm-up) plus
  ``checkpoint_bytes / read_bandwidth`` (2 GiB/s); a job's *first* start costs nothing,
  because trace durations already include the job's own start-up;
- resize and migration: checkpoint, then restart, plus ``resize_extra_s`` (0 s);
- speed: a job on ``P < W`` devices runs at ``P/W × scaling_efficiency / (1 +
  splice_overhead)`` of its full speed (defaults 1.0 and 0.02: every step also swaps the
  small per-rank state of the ``W/P`` logical ranks each device runs); at ``P == W`` it runs
  at full speed, as recorded in the trace.

:meth:`CostModel.zero` charges nothing, like the Tiresias simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from tidal.core import JobSpec
from tidal.sim.errors import SimError

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class CostModel:
    checkpoint_fixed_s: float = 5.0
    write_bandwidth: float = 1.0 * GIB
    restart_fixed_s: float = 20.0
    read_bandwidth: float = 2.0 * GIB
    resize_extra_s: float = 0.0
    splice_overhead: float = 0.02
    scaling_efficiency: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            bandwidth = f.name.endswith("bandwidth")
            if (
                not isinstance(value, (int, float))
                or math.isnan(value)
                or value < 0
                or (math.isinf(value) and not bandwidth)
            ):
                raise SimError(
                    f"cost model: {f.name} must be a number >= 0"
                    + (" (inf allowed)" if bandwidth else "")
                    + f", got {value!r}"
                )
            if bandwidth and value == 0:
                raise SimError(f"cost model: {f.name} must be > 0, got {value!r}")
        if self.scaling_efficiency <= 0:
            raise SimError(
                f"cost model: scaling_efficiency must be > 0, got {self.scaling_efficiency!r}"
            )

    @classmethod
    def zero(cls) -> CostModel:
        """Preemption, resizing and splicing are free (bandwidth infinite, overhead 0)."""
        return cls(
            checkpoint_fixed_s=0.0,
            write_bandwidth=math.inf,
            restart_fixed_s=0.0,
            read_bandwidth=math.inf,
            resize_extra_s=0.0,
            splice_overhead=0.0,
            scaling_efficiency=1.0,
        )

    @property
    def is_zero(self) -> bool:
        return self == CostModel.zero()

    def checkpoint_time(self, spec: JobSpec) -> float:
        """Seconds a running job holds its devices, making no progress, to checkpoint."""
        return self.checkpoint_fixed_s + _transfer(spec.checkpoint_bytes, self.write_bandwidth)

    def restart_time(self, spec: JobSpec) -> float:
        """Seconds a resumed job holds its devices before it makes progress again."""
        return self.restart_fixed_s + _transfer(spec.checkpoint_bytes, self.read_bandwidth)

    def speed(self, world: int, devices: int) -> float:
        """Fraction of full speed (``W`` devices, as recorded) on ``devices`` devices."""
        if devices >= world:
            return 1.0
        return devices / world * self.scaling_efficiency / (1.0 + self.splice_overhead)


def _transfer(size: int, bandwidth: float) -> float:
    if size == 0 or math.isinf(bandwidth):
        return 0.0
    return size / bandwidth
