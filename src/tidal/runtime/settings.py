"""Runtime settings: the launcher's environment, read once when ``tidal.prepare`` runs.

This is the only module that reads ``os.environ`` (DESIGN habit 12). Everything else gets
a :class:`RuntimeSettings` value.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tidal.runtime.errors import SettingsError

__all__ = ["ReduceMode", "RuntimeSettings"]


class ReduceMode(enum.Enum):
    """How gradients are summed over the W logical ranks.

    ``ORDERED`` (default) sums in a fixed binary tree over logical ranks, so the result is
    bitwise the same for every number of workers P. ``NATIVE`` uses the backend's own
    all-reduce: equal within floating-point tolerance, not bitwise across P.
    """

    ORDERED = "ordered"
    NATIVE = "native"


def _int(env: Mapping[str, str], name: str, default: int | None, *, minimum: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name}={raw!r} must be a positive number of seconds")
    return value


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Who this process is in the job, and what the launcher asked of it.

    ``world`` is the logical world size W; ``workers`` the physical worker count P
    (torchrun's ``WORLD_SIZE``) and ``worker`` this process's index (``RANK``).
    """

    world: int = 1
    worker: int = 0
    workers: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    checkpoint_dir: Path | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_s: float | None = None
    checkpoint_keep: int = 2
    job_id: str | None = None
    reduce: ReduceMode = ReduceMode.ORDERED
    bucket_mb: float = 25.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bucket_mb) and self.bucket_mb >= 0):
            raise SettingsError(f"TIDAL_BUCKET_MB={self.bucket_mb} must be >= 0 (0: no overlap)")
        if self.world < 1:
            raise SettingsError(f"logical world size TIDAL_WORLD={self.world} must be >= 1")
        if self.workers < 1:
            raise SettingsError(f"worker count WORLD_SIZE={self.workers} must be >= 1")
        if not 0 <= self.worker < self.workers:
            raise SettingsError(
                f"worker index RANK={self.worker} is outside 0..{self.workers - 1} "
                f"(WORLD_SIZE={self.workers})"
            )
        if self.world % self.workers != 0:
            raise SettingsError(
                f"the number of workers WORLD_SIZE={self.workers} must divide the logical "
                f"world size TIDAL_WORLD={self.world}; pick P in "
                f"{[p for p in range(1, self.world + 1) if self.world % p == 0]}"
            )
        if self.workers > 1 and (self.master_addr is None or self.master_port is None):
            raise SettingsError(
                f"WORLD_SIZE={self.workers} needs MASTER_ADDR and MASTER_PORT "
                "(start the script with torchrun or `tidal run`)"
            )

    @property
    def ranks_per_worker(self) -> int:
        """k = W / P: how many logical ranks this worker runs inside every step."""
        return self.world // self.workers

    @property
    def hosted_ranks(self) -> range:
        """The consecutive logical ranks this worker hosts."""
        k = self.ranks_per_worker
        return range(self.worker * k, (self.worker + 1) * k)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Read the launcher's environment (``os.environ`` unless ``env`` is given)."""
        env = os.environ if env is None else env
        workers = _int(env, "WORLD_SIZE", 1, minimum=1)
        worker = _int(env, "RANK", 0, minimum=0)
        local_rank = _int(env, "LOCAL_RANK", 0, minimum=0)
        world = _int(env, "TIDAL_WORLD", workers, minimum=1)
        port = _int(env, "MASTER_PORT", None, minimum=1)
        every_steps = _int(env, "TIDAL_CHECKPOINT_EVERY_STEPS", None, minimum=1)
        keep = _int(env, "TIDAL_CHECKPOINT_KEEP", 2, minimum=1)
        raw_mode = env.get("TIDAL_REDUCE", "").strip().lower() or ReduceMode.ORDERED.value
        try:
            mode = ReduceMode(raw_mode)
        except ValueError:
            choices = ", ".join(m.value for m in ReduceMode)
            raise SettingsError(f"TIDAL_REDUCE={raw_mode!r} is not one of: {choices}") from None
        raw_bucket = env.get("TIDAL_BUCKET_MB", "").strip()
        try:
            bucket_mb = float(raw_bucket) if raw_bucket else None
        except ValueError:
            raise SettingsError(f"TIDAL_BUCKET_MB={raw_bucket!r} is not a number") from None
        ckpt = env.get("TIDAL_CHECKPOINT_DIR", "").strip()
        job = env.get("TIDAL_JOB_ID", "").strip()
        addr = env.get("MASTER_ADDR", "").strip()
        if world is None or workers is None or worker is None or local_rank is None:
            raise SettingsError("internal: defaults missing")  # unreachable: defaults given
        return cls(
            world=world,
            worker=worker,
            workers=workers,
            local_rank=local_rank,
            master_addr=addr or None,
            master_port=port,
            checkpoint_dir=Path(ckpt) if ckpt else None,
            checkpoint_every_steps=every_steps,
            checkpoint_every_s=_float(env, "TIDAL_CHECKPOINT_EVERY_S"),
            checkpoint_keep=keep if keep is not None else 2,
            job_id=job or None,
            reduce=mode,
            bucket_mb=25.0 if bucket_mb is None else bucket_mb,
        )
