"""The one function that builds a worker's environment: what the runtime inside it reads.

``tidal run`` calls :func:`worker_env` for each of its P local workers; the service's
executor calls it for the one worker each of its actors supervises. The runtime reads these
variables once, in ``tidal.prepare`` (``tidal.runtime.settings``).

==============================  ==========================================================
variable                        value
==============================  ==========================================================
``TIDAL_WORLD``                 the logical world size W
``RANK``, ``WORLD_SIZE``        this worker's index and the worker count P
``LOCAL_RANK``                  its index among the workers on its machine (device choice)
``LOCAL_WORLD_SIZE``            the number of workers on its machine
``MASTER_ADDR``, ``MASTER_PORT`` the rendezvous of worker 0's process group
``TIDAL_CHECKPOINT_DIR``        the job's checkpoint directory (absolute)
``TIDAL_JOB_ID``                the job's identity
``TIDAL_CHECKPOINT_EVERY_*``    periodic checkpoints (``_STEPS``, ``_S``), when asked for
``TIDAL_CHECKPOINT_KEEP``       committed checkpoints kept, when given
``OMP_NUM_THREADS``             intra-op threads: the same for every worker, whatever P
``CUDA_VISIBLE_DEVICES``        the devices the worker may use, when given
``PYTHONUNBUFFERED``            ``1``: output reaches the supervisor's log line by line
==============================  ==========================================================

The thread count is the job's, not P's: PyTorch's CPU kernels may split a sum differently
with another number of threads, so workers with different counts would not compute the
same bits (torchrun sets 1 only when P > 1). Everything else in ``base`` is kept, except
the variables above and other launchers' (``GROUP_RANK``, ``TORCHELASTIC_*``), which
would contradict them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tidal.launch.errors import LaunchRefused

__all__ = ["JobEnv", "worker_env"]

_REPLACED_PREFIXES = ("TORCHELASTIC_",)
_REPLACED = frozenset(
    {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "GROUP_WORLD_SIZE",
        "ROLE_RANK",
        "ROLE_WORLD_SIZE",
        "ROLE_NAME",
        "MASTER_ADDR",
        "MASTER_PORT",
    }
)


def _positive_int(name: str, value: object) -> None:
    if type(value) is not int or value < 1:
        raise LaunchRefused(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class JobEnv:
    """What every worker of one job is told (validated on construction).

    ``master_port`` may be None only for a single worker (no process group is formed).
    ``threads`` is the intra-op thread count of every worker.
    """

    world: int
    workers: int
    checkpoint_dir: Path
    job_id: str
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_s: float | None = None
    checkpoint_keep: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        _positive_int("the logical world size W", self.world)
        _positive_int("the worker count P", self.workers)
        if self.world % self.workers != 0:
            divisors = [p for p in range(1, self.world + 1) if self.world % p == 0]
            raise LaunchRefused(
                f"the worker count P={self.workers} does not divide the logical world size "
                f"W={self.world}; choose one of {divisors}"
            )
        if not Path(self.checkpoint_dir).is_absolute():
            raise LaunchRefused(f"checkpoint_dir {self.checkpoint_dir} must be absolute")
        if not self.job_id.strip():
            raise LaunchRefused("the job id must not be empty")
        if self.master_port is not None and not (
            type(self.master_port) is int and 0 < self.master_port < 65536
        ):
            raise LaunchRefused(f"master_port must be in 1..65535, got {self.master_port!r}")
        if self.workers > 1 and self.master_port is None:
            raise LaunchRefused(f"P={self.workers} workers need a rendezvous master_port")
        if self.checkpoint_every_steps is not None:
            _positive_int("checkpoint_every_steps", self.checkpoint_every_steps)
        secs = self.checkpoint_every_s
        if secs is not None and not (math.isfinite(secs) and secs > 0):
            raise LaunchRefused(f"checkpoint_every_s must be > 0 seconds, got {secs!r}")
        if self.checkpoint_keep is not None:
            _positive_int("checkpoint_keep", self.checkpoint_keep)
        _positive_int("threads", self.threads)


def worker_env(
    job: JobEnv,
    worker: int,
    base: Mapping[str, str],
    *,
    local_rank: int | None = None,
    local_workers: int | None = None,
    devices: Sequence[str] | None = None,
) -> dict[str, str]:
    """The environment of worker ``worker`` (0..P-1) of ``job``: ``base`` plus the job's.

    ``local_rank`` / ``local_workers`` default to ``worker`` / P (every worker on one
    machine, as ``tidal run``); a worker alone on its machine passes 0 / 1. ``devices``, when
    given, becomes ``CUDA_VISIBLE_DEVICES`` (e.g. the GPU ids a Ray actor was granted).
    """
    if type(worker) is not int or not 0 <= worker < job.workers:
        raise LaunchRefused(f"worker index {worker!r} is outside 0..{job.workers - 1}")
    local = worker if local_rank is None else local_rank
    count = job.workers if local_workers is None else local_workers
    if not 0 <= local < count:
        raise LaunchRefused(f"local_rank {local} is outside 0..{count - 1}")
    env = {
        k: v for k, v in base.items() if k not in _REPLACED and not k.startswith(_REPLACED_PREFIXES)
    }
    env.update(
        TIDAL_WORLD=str(job.world),
        RANK=str(worker),
        WORLD_SIZE=str(job.workers),
        LOCAL_RANK=str(local),
        LOCAL_WORLD_SIZE=str(count),
        MASTER_ADDR=job.master_addr,
        TIDAL_CHECKPOINT_DIR=str(job.checkpoint_dir),
        TIDAL_JOB_ID=job.job_id,
        OMP_NUM_THREADS=str(job.threads),
        PYTHONUNBUFFERED="1",
    )
    if job.master_port is not None:
        env["MASTER_PORT"] = str(job.master_port)
    if job.checkpoint_every_steps is not None:
        env["TIDAL_CHECKPOINT_EVERY_STEPS"] = str(job.checkpoint_every_steps)
    if job.checkpoint_every_s is not None:
        env["TIDAL_CHECKPOINT_EVERY_S"] = repr(float(job.checkpoint_every_s))
    if job.checkpoint_keep is not None:
        env["TIDAL_CHECKPOINT_KEEP"] = str(job.checkpoint_keep)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    return env
