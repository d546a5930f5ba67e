"""What the scheduler sees at one instant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from tidal.core.errors import PlanError
from tidal.core.fleet import Fleet
from tidal.core.placement import EMPTY, Placement
from tidal.core.spec import JobSpec
from tidal.core.states import JobState

_NO_QUOTAS: Mapping[str, int] = MappingProxyType({})


@dataclass(slots=True, init=False, unsafe_hash=True)
class JobView:
    """A live job as the scheduler sees it (immutable: see "Value types" in
    docs/architecture.md for why it is not a frozen dataclass).

    ``work_done`` is progress in device-seconds at W devices (``spec.work`` when done).
    ``attained`` is the device-time the job has held while running (its attained service,
    as Tiresias counts it). ``placed_at`` is when its current placement took effect, and
    ``last_checkpoint_at`` when it last committed a checkpoint. ``generation`` counts the
    job's state changes: actions carry it, and executors refuse an action decided for an
    older generation.

    ``estimate`` is the job's total work as far as anyone can tell, in device-seconds at W
    devices, or ``None`` when the job declared nothing: the simulator passes what the trace
    job declares, the service the declared length (hours, or steps times the measured time
    per step). Policies that read it say so (docs/policies.md).

    Cost hints, filled by whoever builds the snapshot (the simulator from its cost model,
    the service from measured times): ``stop_cost`` is the seconds a stop at a consistent
    cut takes until the devices are free (reaching a step boundary and writing the
    checkpoint), ``restart_cost`` the seconds from a start until the job makes progress
    again (launch, loading its checkpoint). Policies plan with these, never with a cost
    model of their own.
    """

    spec: Final[JobSpec]
    state: Final[JobState]
    placement: Final[Placement]
    work_done: Final[float]
    attained: Final[float]
    placed_at: Final[float | None]
    last_checkpoint_at: Final[float | None]
    preemptions: Final[int]
    generation: Final[int]
    stop_cost: Final[float]
    restart_cost: Final[float]
    estimate: Final[float | None]

    def __init__(
        self,
        spec: JobSpec,
        state: JobState = JobState.PENDING,
        placement: Placement = EMPTY,
        work_done: float = 0.0,
        attained: float = 0.0,
        placed_at: float | None = None,
        last_checkpoint_at: float | None = None,
        preemptions: int = 0,
        generation: int = 0,
        stop_cost: float = 0.0,
        restart_cost: float = 0.0,
        estimate: float | None = None,
    ) -> None:
        self.spec = spec
        self.state = state
        self.placement = placement
        self.work_done = work_done
        self.attained = attained
        self.placed_at = placed_at
        self.last_checkpoint_at = last_checkpoint_at
        self.preemptions = preemptions
        self.generation = generation
        self.stop_cost = stop_cost
        self.restart_cost = restart_cost
        self.estimate = estimate

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def size(self) -> int:
        return self.placement.size

    @property
    def remaining(self) -> float:
        """Work left as far as anyone can tell (``estimate`` less ``work_done``), in
        device-seconds at W devices. A job with no estimate, or one that has outrun its
        estimate, is taken to be halfway: as much again as it has done (it is not done, and
        run times are heavy-tailed), rather than 0, which would leave it never growing and
        never on a critical path."""
        done = self.work_done
        estimate = self.estimate
        if estimate is None:
            return done
        return estimate - done if done <= estimate else done

    @property
    def holds_devices(self) -> bool:
        return self.state.holds_devices and bool(self.placement)


# Compared by value, not hashable: it holds mappings.
@dataclass(slots=True, init=False)
class ClusterSnapshot:
    """The clock reading, the fleet, every live job, and tenant quotas (immutable).

    ``quotas`` maps a tenant to the devices its non-basic jobs are guaranteed; tenants
    not named share what is left. A policy is a pure function of this value.
    """

    now: Final[float]
    fleet: Final[Fleet]
    jobs: Final[tuple[JobView, ...]]
    quotas: Final[Mapping[str, int]]
    round_id: Final[int]
    _by_id: dict[str, JobView] = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        now: float,
        fleet: Fleet,
        jobs: tuple[JobView, ...],
        quotas: Mapping[str, int] = _NO_QUOTAS,
        round_id: int = 0,
        *,
        by_id: dict[str, JobView] | None = None,
    ) -> None:
        """``by_id``, if given, is ``jobs`` by id, which a caller that keeps its views in a
        dict (the simulator) already has: taken over, not copied, and checked only for its
        length."""
        self.now = now
        self.fleet = fleet
        self.jobs = jobs
        self.quotas = quotas
        self.round_id = round_id
        if by_id is None:
            # One C-speed pass: a snapshot is built every round, for every live job.
            by_id = {view.spec.id: view for view in jobs}
        if len(by_id) != len(jobs):
            seen: set[str] = set()
            for view in jobs:
                if view.spec.id in seen:
                    raise PlanError(f"job {view.spec.id!r} appears twice in the snapshot")
                seen.add(view.spec.id)
            raise PlanError(f"by_id names {len(by_id)} jobs, the snapshot has {len(jobs)}")
        self._by_id = by_id

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
