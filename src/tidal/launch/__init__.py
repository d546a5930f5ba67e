"""Tidal launch: the supervisor of a job's worker processes, and the job directory's contract.

Torch-free (standard library only, and :mod:`tidal.core`'s lifecycle enum), so a supervisor
(``tidal run``, or an actor of the service) imports it in a fraction of a second:

* :mod:`.env`: :func:`worker_env`, the one function that builds a worker's environment;
* :mod:`.worker`: :class:`WorkerProcess`, one supervised worker: started with a
  parent-death signal in its own process group, logged line by line, stopped with SIGTERM
  then SIGKILL, its exit code reported as it is;
* :mod:`.status`: the ``status.json`` schema (:class:`StatusRecord`, reader and writer,
  liveness from a heartbeat and a pid);
* :mod:`.jobdir`: the directory lock, and the newest committed checkpoint's step and W
  read from its JSON manifest;
* :mod:`.outcome`: the exit status contract (0, 75, 2, anything else);
* :mod:`.signals`: stop signals counted from a supervisor's first moment;
* :mod:`.local`: ``tidal run``, P local workers under one launcher.

See ``docs/launch.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tidal.launch.errors import LaunchError, LaunchRefused, StatusFormatError, WorldMismatch

if TYPE_CHECKING:
    from tidal.launch.env import JobEnv, worker_env
    from tidal.launch.jobdir import CheckpointHead, DirectoryLock, check_world, last_checkpoint
    from tidal.launch.local import LaunchSpec, launch
    from tidal.launch.outcome import (
        EXIT_FAILED,
        EXIT_PREEMPTED,
        EXIT_REFUSED,
        EXIT_SUCCEEDED,
        job_exit_status,
    )
    from tidal.launch.signals import StopSignals, catch_stop_signals
    from tidal.launch.status import Liveness, StatusRecord, read_status, write_status
    from tidal.launch.worker import WorkerProcess

_LAZY = {
    "JobEnv": "env",
    "worker_env": "env",
    "CheckpointHead": "jobdir",
    "DirectoryLock": "jobdir",
    "check_world": "jobdir",
    "last_checkpoint": "jobdir",
    "LaunchSpec": "local",
    "launch": "local",
    "EXIT_FAILED": "outcome",
    "EXIT_PREEMPTED": "outcome",
    "EXIT_REFUSED": "outcome",
    "EXIT_SUCCEEDED": "outcome",
    "job_exit_status": "outcome",
    "StopSignals": "signals",
    "catch_stop_signals": "signals",
    "Liveness": "status",
    "StatusRecord": "status",
    "read_status": "status",
    "write_status": "status",
    "WorkerProcess": "worker",
}

__all__ = [
    "EXIT_FAILED",
    "EXIT_PREEMPTED",
    "EXIT_REFUSED",
    "EXIT_SUCCEEDED",
    "CheckpointHead",
    "DirectoryLock",
    "JobEnv",
    "LaunchError",
    "LaunchRefused",
    "LaunchSpec",
    "Liveness",
    "StatusFormatError",
    "StatusRecord",
    "StopSignals",
    "WorkerProcess",
    "WorldMismatch",
    "catch_stop_signals",
    "check_world",
    "job_exit_status",
    "last_checkpoint",
    "launch",
    "read_status",
    "worker_env",
    "write_status",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidal.launch' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tidal.launch.{module}"), name)
