"""What the store holds, as immutable values: jobs, their events, nodes, tenants.

These are what the store returns and what the service hands to the reconcile loop
(``on_change`` passes the stored :class:`JobRecord`, so the loop never re-reads SQL). Times
are seconds since the epoch (the control plane's clock). Records are frozen but hold a
``dict`` (``env``): compare them, do not hash them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidal.core import JobState, Placement, Tier, divisors_between

__all__ = [
    "CheckpointSettings",
    "EventRecord",
    "Holding",
    "JobRecord",
    "NodeRecord",
    "TenantRecord",
]


@dataclass(frozen=True, slots=True)
class CheckpointSettings:
    """How often the job's runtime commits a checkpoint on its own (``None``: the runtime's
    default) and how many it keeps: ``TIDAL_CHECKPOINT_EVERY_STEPS`` / ``_EVERY_S`` /
    ``_KEEP`` in the workers' environment."""

    every_steps: int | None = None
    every_s: float | None = None
    keep: int | None = None


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant: the owner of jobs and tokens. An admin sees and manages everything."""

    name: str
    is_admin: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored: the full submission and its status.

    Submission: ``name, tier, world`` (W), ``min_devices``, ``max_devices`` (``None``: W),
    ``device_type``, ``command`` (argv), ``workdir`` (``None``: the executor's choice),
    ``env``, the declared length (``declared_steps`` or ``declared_hours``, or neither),
    ``checkpoint``, ``max_restarts``.

    Status: ``state``, ``placement`` (devices held per node), ``generation`` (counts the
    job's state changes), ``step`` and ``samples_per_s`` from the last progress report
    (at ``progress_at``), ``restarts`` (times it entered RESTARTING), ``reason`` (of the
    last event), ``cancel_requested`` (a cancel the loop has yet to carry out), the
    times it was submitted, first started and finished, ``plan_reason`` (the policy's
    latest reason for giving it less than it asked, if any) and ``attained`` (device-seconds
    held while running, as of the last progress report).
    """

    id: str
    tenant: str
    name: str
    tier: Tier
    world: int
    min_devices: int
    max_devices: int | None
    device_type: str
    command: tuple[str, ...]
    workdir: str | None
    env: dict[str, str]
    declared_steps: int | None
    declared_hours: float | None
    checkpoint: CheckpointSettings
    max_restarts: int
    state: JobState
    placement: Placement
    generation: int
    step: int | None
    samples_per_s: float | None
    progress_at: float | None
    restarts: int
    reason: str
    cancel_requested: bool
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    plan_reason: str | None = None
    attained: float = 0.0

    @property
    def devices(self) -> int:
        """Devices held now."""
        return self.placement.size

    @property
    def max_size(self) -> int:
        """The most devices the job may hold."""
        return self.world if self.max_devices is None else self.max_devices

    @property
    def sizes(self) -> tuple[int, ...]:
        """The device counts the job may run on (a premium job: only W)."""
        low = self.world if self.tier is Tier.PREMIUM else self.min_devices
        return divisors_between(self.world, low, self.max_size)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of a job's history: a state change (``old`` is ``None`` for the
    submission), or a request recorded while the state stayed (``old == new``, e.g. a
    cancel asked of a running job)."""

    job_id: str
    seq: int
    at: float
    old: JobState | None
    new: JobState
    reason: str
    generation: int
    placement: Placement


@dataclass(frozen=True, slots=True)
class Holding:
    """Devices one job holds on one node."""

    job_id: str
    tenant: str
    devices: int


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node of the fleet as last reported, whether an admin drained it, and (when read
    through ``Store.nodes``) which jobs hold its devices."""

    name: str
    device_type: str
    devices: int
    alive: bool
    drained: bool
    updated_at: float
    held: tuple[Holding, ...] = field(default=())

    @property
    def used(self) -> int:
        return sum(h.devices for h in self.held)

    @property
    def free(self) -> int:
        return max(0, self.devices - self.used)
