"""The Ray actor that supervises one worker process of a job.

A job's P workers are P of these actors, each in its own bundle of the job's placement
group (so on the node and device the plan named), each running one process of the user's
command under :class:`tidal.launch.WorkerProcess`: started with the environment
:func:`tidal.launch.worker_env` builds (the one ``tidal run`` uses too), logged line by
line to ``<job dir>/logs/worker-<k>.log``, stopped with SIGTERM (the runtime stops at the
next consistent cut and commits a checkpoint) and killed with SIGKILL. The worker gets a
parent-death signal, so it dies with its actor.

Actors are detached and named ``tidal/<job id>/<k>`` in the ``tidal`` namespace: they
outlive the control plane, which finds them again by name when it restarts. The class is
plain Python; :func:`actor_class` makes it a Ray actor on first use, so importing this
module does not import Ray.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from tidal.launch.env import JobEnv, worker_env
from tidal.launch.status import read_status
from tidal.launch.worker import WorkerProcess

__all__ = ["NAMESPACE", "WorkerSupervisor", "actor_class", "actor_name", "log_path"]

NAMESPACE = "tidal"


def actor_name(job_id: str, index: int) -> str:
    return f"tidal/{job_id}/{index}"


def log_path(job_dir: Path, index: int) -> Path:
    return job_dir / "logs" / f"worker-{index}.log"


class WorkerSupervisor:
    """One worker process of one job (see the module docstring)."""

    def __init__(self, job_id: str, index: int) -> None:
        self.job_id = job_id
        self.index = index
        self._worker: WorkerProcess | None = None
        self._port_socket: socket.socket | None = None

    def where(self) -> dict[str, Any]:
        """Where this actor runs: its node's address, and (worker 0) a free port for the
        job's rendezvous, held until the worker starts."""
        address = _node_address()
        port = None
        if self.index == 0:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            port = sock.getsockname()[1]
            self._port_socket = sock
        return {"address": address, "port": port, "pid": os.getpid()}

    def start(
        self,
        argv: list[str],
        job: dict[str, Any],
        env: dict[str, str],
        workdir: str | None,
    ) -> int:
        """Start the worker; returns its pid. ``job`` holds :class:`JobEnv`'s fields
        (``checkpoint_dir`` a string), ``env`` the job's own variables."""
        if self._worker is not None and self._worker.returncode is None:
            return self._worker.pid
        spec = JobEnv(**{**job, "checkpoint_dir": Path(job["checkpoint_dir"])})
        base = {**os.environ, **env}
        if "PATH" not in env:
            # `python`, `torchrun`, ... mean the cluster's Python environment (this actor's),
            # not whatever the node's PATH finds first.
            here = os.path.dirname(sys.executable)
            base["PATH"] = os.pathsep.join([here, os.environ.get("PATH", "")])
        devices = _gpu_ids()
        full = worker_env(spec, self.index, base, local_rank=0, local_workers=1, devices=devices)
        cwd = Path(workdir) if workdir and Path(workdir).is_dir() else Path.cwd()
        if self._port_socket is not None:  # let the worker bind the port it was given
            self._port_socket.close()
            self._port_socket = None
        self._worker = WorkerProcess(
            argv,
            full,
            name=f"{self.job_id}/w{self.index}",
            log_path=log_path(spec.checkpoint_dir, self.index),
            cwd=cwd,
        ).start()
        return self._worker.pid

    def poll(self) -> dict[str, Any]:
        """The worker's exit code (None while it runs) and, from worker 0, the job's
        ``status.json``."""
        code = None if self._worker is None else self._worker.returncode
        if code is not None and self._worker is not None:
            self._worker.close(timeout_s=1.0)
        status = None
        if self.index == 0:
            try:
                record = read_status(Path(self._checkpoint_dir()))
            except Exception:  # a torn or foreign status.json: no progress this time
                record = None
            if record is not None:
                status = record.to_json()
        return {"code": code, "status": status, "started": self._worker is not None}

    def terminate(self) -> bool:
        """SIGTERM: stop at the next consistent cut."""
        return self._worker.terminate() if self._worker is not None else False

    def kill(self) -> None:
        if self._worker is not None:
            self._worker.kill()

    def _checkpoint_dir(self) -> str:
        if self._worker is None:
            return ""
        return self._worker.env.get("TIDAL_CHECKPOINT_DIR", "")


def _node_address() -> str:
    import ray

    address: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return address


def _gpu_ids() -> list[str] | None:
    import ray

    ids = ray.get_gpu_ids()
    return [str(i) for i in ids] if ids else None


_ACTOR: Any = None


def actor_class() -> Any:
    """:class:`WorkerSupervisor` as a Ray actor class (made once)."""
    global _ACTOR
    if _ACTOR is None:
        import ray

        # Resources come from the placement group bundle; the actor itself asks for no
        # CPU, so a node's CPUs do not limit how many workers it hosts.
        remote: Any = ray.remote  # its stubs do not know actor-only options
        _ACTOR = remote(num_cpus=0, max_restarts=0, max_concurrency=4)(WorkerSupervisor)
    return _ACTOR
