"""The embedded Ray instance: a one-node Ray cluster that ``tidal up`` starts for itself.

It runs apart from the control plane (``ray start --head``, its own processes), so that jobs
outlive ``tidal up``: killed or crashed, ``tidal up`` finds the instance again on its next
start (its address is kept in ``<data dir>/ray.json``) and re-adopts the running workers. A
clean shutdown stops it. It offers ``devices`` device slots of ``device_type`` (the custom
resource ``tidal_dev_<type>``) unless the machine has GPUs, which Ray finds by itself.

Only this instance's processes are ever stopped: they are found by the temporary
directory it was started with (``ray stop`` would end every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tidal.control.errors import ControlError
from tidal.control.fleet import NAME_LABEL, device_resource

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedRay", "RayInstance"]

_STATE_FILE = "ray.json"


@dataclass(frozen=True, slots=True)
class RayInstance:
    address: str
    temp_dir: str


class EmbeddedRay:
    """The local Ray instance of the data directory ``data_dir`` (see the module docs)."""

    def __init__(
        self, data_dir: Path, devices: int | None, device_type: str, node_name: str = "local"
    ) -> None:
        self.data_dir = data_dir
        self.devices = devices
        self.device_type = device_type
        self.node_name = node_name
        # Ray's socket paths must stay short: a temp dir under /tmp, named for the data dir.
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
        self.temp_dir = Path("/tmp") / f"tidal-ray-{digest}"

    @property
    def state_file(self) -> Path:
        return self.data_dir / _STATE_FILE

    def running(self) -> RayInstance | None:
        """The instance recorded in the data directory, if it still answers."""
        try:
            raw = json.loads(self.state_file.read_text())
            instance = RayInstance(str(raw["address"]), str(raw["temp_dir"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        host, _, port = instance.address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                pass
        except (OSError, ValueError):
            return None
        return instance

    def ensure(self) -> RayInstance:
        """The running instance, started first if there is none."""
        found = self.running()
        if found is not None:
            logger.info("reusing the embedded Ray instance at %s", found.address)
            return found
        self._stop_processes(self.temp_dir)  # leftovers of an instance that died
        port = _free_port()
        address = f"127.0.0.1:{port}"
        command = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={os.cpu_count() or 1}",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--labels={json.dumps({NAME_LABEL: self.node_name})}",
        ]
        if self.devices:
            resources = {device_resource(self.device_type): self.devices}
            command.append(f"--resources={json.dumps(resources)}")
        logger.info("starting an embedded Ray instance at %s", address)
        started = time.monotonic()
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            start_new_session=True,  # not in tidal up's process group: it outlives it
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise ControlError(
                f"could not start Ray (`{' '.join(command)}` exited {done.returncode}): "
                f"{done.stderr.strip()[-2000:]}"
            )
        instance = RayInstance(address, str(self.temp_dir))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"address": address, "temp_dir": str(self.temp_dir)}))
        logger.info("embedded Ray is up in %.1f s", time.monotonic() - started)
        return instance

    def stop(self) -> None:
        """Stop this instance's processes (and only them)."""
        self._stop_processes(self.temp_dir)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    @staticmethod
    def _stop_processes(temp_dir: Path, grace_s: float = 10.0) -> None:
        import psutil  # type: ignore[import-untyped]  # comes with ray

        marker = str(temp_dir)
        mine = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or ())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if marker in cmdline and proc.pid != os.getpid():
                mine.append(proc)
        if not mine:
            return
        logger.info("stopping %d processes of the embedded Ray instance", len(mine))
        for proc in mine:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(mine, timeout=grace_s)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
