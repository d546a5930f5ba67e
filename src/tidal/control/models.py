"""The job spec and the REST API's bodies, as pydantic models.

:class:`JobSubmission` is the one model that ``tidal submit`` flags, a YAML job file
(``-f job.yaml``) and ``POST /api/v1/jobs`` all map to; it validates everything a job
asks for, so the store only ever holds specs the scheduler can run. Field names are the
flags' names in snake case. Strings and lists are bounded and strings may not hold NUL
or lone surrogates (they cannot reach a process's argv or the database): bad input is a
422 whose ``loc`` names the field.

This module imports pydantic and :mod:`tidal.core` only: the CLI client uses it too.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tidal.core import JobState, Tier, divisors_between

__all__ = [
    "MAX_WORLD",
    "TENANT_PATTERN",
    "CheckpointSpec",
    "ErrorOut",
    "EventOut",
    "HoldingOut",
    "JobDetailOut",
    "JobOut",
    "JobPage",
    "JobSubmission",
    "LogChunkOut",
    "NodeOut",
    "TenantCreated",
    "TenantIn",
    "TenantOut",
]

MAX_WORLD: Final = 65_536
# Bounds on what a job may ask for. Together they keep every valid spec well under the
# API's body limit (16 MiB, even with every character escaped as \uXXXX), so a body
# refused for its size is never one the schema allows.
MAX_ARG_CHARS: Final = 4_096
MAX_ARGS: Final = 256
MAX_ENV: Final = 128
MAX_ENV_VALUE_CHARS: Final = 4_096
MAX_PATH_CHARS: Final = 4_096
_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(value: str) -> str:
    """Refuse what no argv, environment or database column can carry."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if _SURROGATE.search(value):
        raise ValueError("must be valid Unicode (no lone surrogates)")
    return value


def _absolute(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"must be an absolute path, got {value!r}")
    return value


Text = Annotated[str, AfterValidator(_clean)]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$"),
]
DeviceType = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Arg = Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS), AfterValidator(_clean)]
AbsPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PATH_CHARS),
    StringConstraints(pattern=r"^/"),
    AfterValidator(_clean),
    AfterValidator(_absolute),
]
EnvName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
EnvValue = Annotated[str, StringConstraints(max_length=MAX_ENV_VALUE_CHARS), AfterValidator(_clean)]
TENANT_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]*$"
TenantName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TENANT_PATTERN)]
Size = Annotated[StrictInt, Field(ge=1, le=MAX_WORLD)]


class CheckpointSpec(BaseModel):
    """How often the job checkpoints on its own, and how many checkpoints it keeps
    (``None``: the runtime's defaults). A stop always checkpoints, whatever these say."""

    model_config = ConfigDict(extra="forbid")

    every_steps: Annotated[StrictInt, Field(ge=1, le=10**12)] | None = None
    every_s: Annotated[StrictFloat, Field(gt=0, le=10**8, allow_inf_nan=False)] | None = None
    keep: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None


class JobSubmission(BaseModel):
    """A job spec, as submitted.

    ``world`` is the logical world size W; the job may run on any device count P that
    divides W within ``[min_devices, max_devices]`` (``max_devices`` defaults to W; a
    premium job runs only at W). ``command`` is the argv to run on every worker, in
    ``workdir`` (an absolute path; the CLI sends its current directory) with ``env`` added
    to the environment. ``declared_steps`` and ``declared_hours`` are the job's own
    estimate of its length (its step count, and the hours it takes at full size), which
    the scheduler uses to order and grow jobs; either or both may be given, and without
    them the policy orders by attained service alone. ``name`` defaults to the script's
    or program's name.
    """

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    tier: Tier = Tier.STANDARD
    world: Size
    min_devices: Size = 1
    max_devices: Size | None = None
    device_type: DeviceType = "gpu"
    command: Annotated[list[Arg], Field(min_length=1, max_length=MAX_ARGS)]
    workdir: AbsPath | None = None
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_ENV)] = Field(default_factory=dict)
    declared_steps: Annotated[StrictInt, Field(ge=1, le=10**15)] | None = None
    declared_hours: Annotated[StrictFloat, Field(gt=0, le=100_000, allow_inf_nan=False)] | None = (
        None
    )
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    max_restarts: Annotated[StrictInt, Field(ge=0, le=1_000)] = 3

    @field_validator("min_devices")
    @classmethod
    def _min_within_world(cls, value: int, info: ValidationInfo) -> int:
        world = info.data.get("world")
        if world is not None and value > world:
            raise ValueError(f"min_devices {value} is more than world {world}")
        return value

    @field_validator("max_devices")
    @classmethod
    def _max_leaves_a_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        world = info.data.get("world")
        low = info.data.get("min_devices")
        if value is None or world is None or low is None:
            return value
        if value > world:
            raise ValueError(f"max_devices {value} is more than world {world}")
        if value < low:
            raise ValueError(f"max_devices {value} is less than min_devices {low}")
        if info.data.get("tier") is Tier.PREMIUM and value != world:
            raise ValueError(f"a premium job runs only at world {world}; max_devices is {value}")
        if not divisors_between(world, low, value):
            raise ValueError(
                f"no device count in [{low}, {value}] divides world {world}: "
                f"allowed counts are the divisors of {world}"
            )
        return value

    @model_validator(mode="after")
    def _default_name(self) -> JobSubmission:
        if self.name is None:
            self.name = default_name(self.command)
        return self

    @property
    def sizes(self) -> tuple[int, ...]:
        """The device counts the job may run on."""
        low = self.world if self.tier is Tier.PREMIUM else self.min_devices
        high = self.world if self.max_devices is None else self.max_devices
        return divisors_between(self.world, low, high)


_INTERPRETERS = re.compile(r"^(python[0-9.]*|torchrun|bash|sh|uv|env)$")


def default_name(command: list[str]) -> str:
    """A job's name from its command: the script's stem (``python train.py`` → ``train``),
    else the program's name; reduced to the characters a name may hold."""
    words = [os.path.basename(a) for a in command if a and not a.startswith("-")]
    pick = words[0] if words else "job"
    if _INTERPRETERS.match(pick) and len(words) > 1:
        scripts = [w for w in words[1:] if w.endswith((".py", ".sh"))]
        pick = scripts[0] if scripts else words[1]
    stem = pick.rsplit(".", 1)[0] if "." in pick[1:] else pick
    cleaned = re.sub(r"[^A-Za-z0-9._@+-]", "-", stem).lstrip("._@+-")[:128]
    return cleaned or "job"


# --- responses ----------------------------------------------------------------------------


class ErrorOut(BaseModel):
    """The body of every 4xx the service raises itself (422s carry pydantic's list)."""

    detail: str


class EventOut(BaseModel):
    """One entry of a job's history. ``previous`` is null for the submission; equal to
    ``state`` for a request recorded without a state change (a cancel of a running job)."""

    time: datetime
    state: JobState
    previous: JobState | None
    reason: str
    generation: int
    placement: dict[str, int]


class JobOut(BaseModel):
    """A job as listed: its identity, size, state and progress."""

    id: str
    name: str
    tenant: str
    tier: Tier
    state: JobState
    world: int
    min_devices: int
    max_devices: int
    device_type: str
    devices: int = Field(description="devices held now")
    placement: dict[str, int] = Field(description="devices held per node")
    step: int | None
    samples_per_s: float | None
    restarts: int
    reason: str = Field(description="the reason given with the job's last event")
    plan_reason: str | None = Field(
        None, description="the scheduler's latest reason for giving the job less than it asked"
    )
    cancel_requested: bool
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobDetailOut(JobOut):
    """A job with its whole submission and its history (the latest events, oldest first;
    ``events_total`` counts them all)."""

    sizes: list[int] = Field(description="the device counts the job may run on")
    command: list[str]
    workdir: str | None
    env: dict[str, str]
    declared_steps: int | None
    declared_hours: float | None
    checkpoint: CheckpointSpec
    max_restarts: int
    generation: int
    progress_at: datetime | None
    events: list[EventOut]
    events_total: int


class JobPage(BaseModel):
    """One page of jobs, newest first. ``next`` is the cursor of the following page
    (pass it as ``before``), null on the last one."""

    jobs: list[JobOut]
    next: str | None


class HoldingOut(BaseModel):
    """Devices held on a node by one job (or, as seen by a tenant, by other tenants'
    jobs together: ``job`` and ``tenant`` are null)."""

    job: str | None
    tenant: str | None
    devices: int


class NodeOut(BaseModel):
    name: str
    device_type: str
    devices: int
    free: int
    alive: bool
    drained: bool
    held: list[HoldingOut]
    updated_at: datetime


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TenantName
    admin: StrictBool = False


class TenantOut(BaseModel):
    name: str
    admin: bool
    created_at: datetime


class TenantCreated(TenantOut):
    """A new tenant and its token, shown this once (the store keeps only its hash)."""

    token: str


class LogChunkOut(BaseModel):
    """Lines of a job's output, each prefixed by its worker (``[w0] ...``). Pass
    ``cursor`` back to read on; ``done`` is true once the job has ended and every line has
    been read."""

    lines: list[str]
    cursor: str
    done: bool
    state: JobState
