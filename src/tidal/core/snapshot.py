"""What the scheduler sees at one instant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tidal.core.errors import PlanError
from tidal.core.fleet import Fleet
from tidal.core.placement import EMPTY, Placement
from tidal.core.spec import JobSpec
from tidal.core.states import JobState

_NO_QUOTAS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class JobView:
    """A live job as the scheduler sees it.

    ``work_done`` is progress in device-seconds at W devices (``spec.work`` when done).
    ``attained`` is the device-time the job has held while running (its attained service,
    as Tiresias counts it). ``placed_at`` is when its current placement took effect, and
    ``last_checkpoint_at`` when it last committed a checkpoint.
    """

    spec: JobSpec
    state: JobState = JobState.PENDING
    placement: Placement = EMPTY
    work_done: float = 0.0
    attained: float = 0.0
    placed_at: float | None = None
    last_checkpoint_at: float | None = None
    preemptions: int = 0

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def size(self) -> int:
        return self.placement.size

    @property
    def remaining(self) -> float:
        """Work left as the job declared it (``spec.estimate`` less ``work_done``), in
        device-seconds at W devices. A job that has outrun its estimate is taken to be
        halfway: as much again as it has done (it is not done, and run times are heavy-
        tailed), rather than 0, which would leave it never growing and never on a
        critical path."""
        done = self.work_done
        estimate = self.spec.estimate
        return estimate - done if done <= estimate else done

    @property
    def holds_devices(self) -> bool:
        return self.state.holds_devices and bool(self.placement)


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """The clock reading, the fleet, every live job, and tenant quotas.

    ``quotas`` maps a tenant to the devices its non-basic jobs are guaranteed; tenants
    not named share what is left. A policy is a pure function of this value.
    """

    now: float
    fleet: Fleet
    jobs: tuple[JobView, ...]
    quotas: Mapping[str, int] = field(default_factory=lambda: _NO_QUOTAS)
    round_id: int = 0
    _by_id: dict[str, JobView] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One C-speed pass: a snapshot is built every scheduling round, for every live job.
        by_id = {view.spec.id: view for view in self.jobs}
        if len(by_id) != len(self.jobs):
            seen: set[str] = set()
            for view in self.jobs:
                if view.spec.id in seen:
                    raise PlanError(f"job {view.spec.id!r} appears twice in the snapshot")
                seen.add(view.spec.id)
        object.__setattr__(self, "_by_id", by_id)

    def job(self, job_id: str) -> JobView:
        try:
            return self._by_id[job_id]
        except KeyError:
            raise PlanError(f"unknown job {job_id!r} in snapshot") from None

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._by_id

    def used_per_node(self) -> dict[str, int]:
        """Devices held on each node by jobs that hold devices."""
        used: dict[str, int] = {}
        for view in self.jobs:
            if view.holds_devices:
                for node, count in view.placement.parts:
                    used[node] = used.get(node, 0) + count
        return used

    def free_per_node(self) -> dict[str, int]:
        used = self.used_per_node()
        return {n.name: n.devices - used.get(n.name, 0) for n in self.fleet.nodes}
