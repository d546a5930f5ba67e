"""``tidal run``: start a job's workers on this machine through torchrun, and stop them well.

The launcher runs ``python -m torch.distributed.run --standalone --nproc-per-node P`` with
the job's environment (``TIDAL_WORLD``, ``TIDAL_CHECKPOINT_DIR``, ...). The runtime inside
each worker resumes from the newest committed checkpoint by itself, so running the same
command again, with any P dividing W, continues the job.

Stopping: the first SIGTERM or SIGINT to the launcher is delivered as SIGTERM to every
worker directly (torchrun's agent would SIGKILL workers after its shutdown timeout); the
workers agree on a step boundary, write one checkpoint and exit. A second signal, or the
stop timeout, kills them. If no worker has reported ``running`` yet, nothing can be lost,
so the launcher kills at once. Exit status: 0 succeeded, 75 preempted (resumable), any
other value failed; ``DIR/status.json`` holds the same outcome.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from tidal.runtime import _launch_procs as procs
from tidal.runtime._launch_progress import ProgressDisplay
from tidal.runtime._launch_status import read_status, write_status

logger = logging.getLogger(__name__)

__all__ = [
    "EXIT_FAILED",
    "EXIT_PREEMPTED",
    "EXIT_SUCCEEDED",
    "LaunchError",
    "LaunchSpec",
    "launch",
    "torchrun_command",
    "worker_env",
]

EXIT_SUCCEEDED = 0
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped at a consistent cut; run the same command to resume
EXIT_FAILED = 1
LOCK_FILE = ".tidal-run.lock"
_POLL_S = 0.2


class LaunchError(Exception):
    """``tidal run`` cannot start; the message names the bad value."""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything ``tidal run`` needs; validated on construction."""

    script: Path
    world: int
    workers: int
    checkpoint_dir: Path
    script_args: tuple[str, ...] = ()
    checkpoint_every_steps: int | None = None
    checkpoint_every_s: float | None = None
    job_id: str | None = None
    stop_timeout_s: float = 600.0
    progress: bool = True

    def __post_init__(self) -> None:
        if type(self.world) is not int or self.world < 1:
            raise LaunchError(f"--world must be an integer >= 1, got {self.world!r}")
        if type(self.workers) is not int or self.workers < 1:
            raise LaunchError(f"--workers must be an integer >= 1, got {self.workers!r}")
        if self.world % self.workers != 0:
            divisors = [p for p in range(1, self.world + 1) if self.world % p == 0]
            raise LaunchError(
                f"--workers {self.workers} does not divide --world {self.world}; "
                f"choose one of {divisors}"
            )
        script = Path(self.script).absolute()
        if not script.is_file():
            raise LaunchError(f"script {self.script} does not exist (looked for {script})")
        object.__setattr__(self, "script", script)
        object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir).absolute())
        if self.checkpoint_dir.exists() and not self.checkpoint_dir.is_dir():
            raise LaunchError(f"--checkpoint-dir {self.checkpoint_dir} is not a directory")
        every = self.checkpoint_every_steps
        if every is not None and (type(every) is not int or every < 1):
            raise LaunchError(f"--checkpoint-every-steps must be an integer >= 1, got {every!r}")
        secs = self.checkpoint_every_s
        if secs is not None and not secs > 0:
            raise LaunchError(f"--checkpoint-every-s must be > 0 seconds, got {secs!r}")
        if not self.stop_timeout_s > 0:
            raise LaunchError(f"--stop-timeout must be > 0 seconds, got {self.stop_timeout_s!r}")
        if self.job_id is not None and not self.job_id.strip():
            raise LaunchError("--job-id must not be empty")
        object.__setattr__(self, "script_args", tuple(self.script_args))

    @property
    def resolved_job_id(self) -> str:
        """The given job id, or a stable one derived from the checkpoint directory."""
        if self.job_id:
            return self.job_id
        digest = hashlib.sha1(str(self.checkpoint_dir).encode()).hexdigest()[:8]
        return f"{self.checkpoint_dir.name}-{digest}"


def torchrun_command(spec: LaunchSpec, python: str = sys.executable) -> list[str]:
    """The torchrun command line for ``spec`` (one node, P worker processes)."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(spec.workers),
        "--max-restarts",
        "0",
        # Used only if the agent itself gets a signal (e.g. from Slurm): then it forwards
        # SIGTERM and waits this long before SIGKILL, instead of its default 30 s.
        "--shutdown-timeout",
        str(max(1, round(spec.stop_timeout_s))),
        str(spec.script),
        *spec.script_args,
    ]


def worker_env(spec: LaunchSpec, base: Mapping[str, str]) -> dict[str, str]:
    """The workers' environment: ``base`` plus the job's TIDAL_* settings."""
    env = dict(base)
    env["TIDAL_WORLD"] = str(spec.world)
    env["TIDAL_CHECKPOINT_DIR"] = str(spec.checkpoint_dir)
    env["TIDAL_JOB_ID"] = spec.resolved_job_id
    if spec.checkpoint_every_steps is not None:
        env["TIDAL_CHECKPOINT_EVERY_STEPS"] = str(spec.checkpoint_every_steps)
    if spec.checkpoint_every_s is not None:
        env["TIDAL_CHECKPOINT_EVERY_S"] = repr(float(spec.checkpoint_every_s))
    return env


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold ``DIR/.tidal-run.lock`` so two launches never share a checkpoint directory."""
    path = directory / LOCK_FILE
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise LaunchError(
                f"--checkpoint-dir {directory} is in use by another `tidal run` ({holder})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _forward(src: IO[bytes], to_stderr: bool) -> None:
    """Copy a child's output line by line to our stdout/stderr (looked up per line, so a
    live display that redirects them places the lines above itself)."""
    for raw in iter(src.readline, b""):
        stream = sys.stderr if to_stderr else sys.stdout
        stream.write(raw.decode(errors="replace"))
        stream.flush()
    src.close()


class _Supervisor:
    """Runs torchrun, relays stop signals to the workers, and decides the exit status."""

    def __init__(self, spec: LaunchSpec, display: ProgressDisplay) -> None:
        self.spec = spec
        self.display = display
        self.signals = 0
        self.stop_started: float | None = None
        self.signalled: set[int] = set()
        self.killed = False
        self.proc: subprocess.Popen[bytes] | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    def run(self) -> int:
        spec = self.spec
        directory = spec.checkpoint_dir
        write_status(
            directory,
            read_status(directory),
            state="starting",
            world=spec.world,
            workers=spec.workers,
            job_id=spec.resolved_job_id,
            samples_per_s=0.0,
        )
        env = worker_env(spec, os.environ)
        forward = self.display.live
        if forward:
            env["PYTHONUNBUFFERED"] = "1"
        cmd = torchrun_command(spec)
        logger.info("starting %s", " ".join(cmd))
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,  # terminal Ctrl-C reaches only us; we relay it
            stdout=subprocess.PIPE if forward else None,
            stderr=subprocess.PIPE if forward else None,
        )
        threads = []
        if forward and self.proc.stdout is not None and self.proc.stderr is not None:
            for src, err in ((self.proc.stdout, False), (self.proc.stderr, True)):
                t = threading.Thread(target=_forward, args=(src, err), daemon=True)
                t.start()
                threads.append(t)
        rc = self._supervise(self.proc)
        for t in threads:
            t.join(timeout=5)
        return self._outcome(rc)

    def _supervise(self, proc: subprocess.Popen[bytes]) -> int:
        while True:
            try:
                return proc.wait(timeout=_POLL_S)
            except subprocess.TimeoutExpired:
                pass
            status = read_status(self.spec.checkpoint_dir)
            self.display.update(status)
            if self.signals:
                self._stop(proc, status)

    def _stop(self, proc: subprocess.Popen[bytes], status: Mapping[str, Any] | None) -> None:
        now = time.monotonic()
        state = (status or {}).get("state", "starting")
        if self.stop_started is None:
            self.stop_started = now
            if state == "starting":
                self.display.note("stop requested before the workers started training: killing")
                self._kill(proc)
                return
            self.display.note(
                "stop requested: SIGTERM to every worker; they checkpoint at the next step "
                "boundary and exit (signal again to kill)"
            )
        if self.killed:
            return
        if self.signals >= 2 or now - self.stop_started > self.spec.stop_timeout_s:
            why = "second signal" if self.signals >= 2 else "stop timeout"
            self.display.note(f"{why}: killing the workers")
            self._kill(proc)
            return
        if not procs.can_list_children():
            if proc.pid not in self.signalled:  # let torchrun forward it (it waits
                procs.send(proc.pid, signal.SIGTERM)  # --shutdown-timeout before killing)
                self.signalled.add(proc.pid)
            return
        for pid in procs.worker_pids(proc.pid, self.spec.script):
            if pid not in self.signalled and procs.send(pid, signal.SIGTERM):
                self.signalled.add(pid)
                logger.info("sent SIGTERM to worker process %d", pid)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        self.killed = True
        for pid in procs.worker_pids(proc.pid, self.spec.script):
            procs.kill_group(pid)  # each worker leads its own process group
        procs.kill_group(proc.pid)

    def _outcome(self, rc: int) -> int:
        directory = self.spec.checkpoint_dir
        status = read_status(directory)
        state = (status or {}).get("state")
        if state == "succeeded":
            if rc != 0:
                self.display.note(f"workers reported success, torchrun exited {rc}")
            code = EXIT_SUCCEEDED
        elif state == "preempted":
            code = EXIT_PREEMPTED
        elif state == "failed":
            code = rc if rc not in (EXIT_SUCCEEDED, EXIT_PREEMPTED) else EXIT_FAILED
        elif self.stop_started is not None:
            # Stopped before a consistent cut was reported: the last committed
            # checkpoint is intact (commits are atomic), so the job is resumable.
            write_status(directory, status, state="preempted", samples_per_s=0.0)
            code = EXIT_PREEMPTED
        elif rc == 0:
            write_status(directory, status, state="succeeded", samples_per_s=0.0)
            code = EXIT_SUCCEEDED
        else:
            write_status(directory, status, state="failed", samples_per_s=0.0)
            code = rc if 0 < rc < 256 and rc != EXIT_PREEMPTED else EXIT_FAILED
        self.display.update(read_status(directory))
        outcome = {EXIT_SUCCEEDED: "succeeded", EXIT_PREEMPTED: "preempted (resumable)"}
        self.display.note(f"{outcome.get(code, 'failed')} (exit status {code})")
        return code


def launch(spec: LaunchSpec) -> int:
    """Run the job described by ``spec`` to its end; returns the exit status."""
    directory = spec.checkpoint_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LaunchError(f"cannot create --checkpoint-dir {directory}: {e}") from e
    with _exclusive(directory):
        display = ProgressDisplay(job_id=spec.resolved_job_id, live=True, enabled=spec.progress)
        supervisor = _Supervisor(spec, display)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, supervisor.on_signal) for sig in handled}
        try:
            with display:
                return supervisor.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            proc = supervisor.proc
            if proc is not None and proc.poll() is None:  # we are dying: take them along
                supervisor._kill(proc)
                proc.wait()
