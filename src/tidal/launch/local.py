"""``tidal run``: a job's P workers on this machine, each a supervised :class:`WorkerProcess`.

No torchrun: the launcher starts the P worker processes itself, with the environment of
:func:`tidal.launch.env.worker_env` (rendezvous on 127.0.0.1 and a free port), the same
per-worker supervision a service's actor uses, and the job directory's lock inherited by
every worker. The runtime inside each worker resumes from the newest committed checkpoint
by itself, so running the same command again, with any P dividing W, continues the job.

Before anything starts, the launch is refused (:class:`LaunchRefused`, exit status 2, and
``status.json`` untouched) when the directory is in use or its newest checkpoint has another
world size W. A stop request (SIGTERM, SIGINT, SIGHUP) is acted on whenever it arrives:

* before the workers started, or before the runtime reported ``running`` (nothing since the
  last checkpoint can be lost): the workers are killed at once;
* while they train: SIGTERM to each worker process; they agree on a step boundary, write
  one checkpoint and exit 0;
* a second request, or ``stop_timeout_s`` without an exit: SIGKILL.

A worker that fails ends the job: the others are killed at once (they would wait for it in
their next collective). The exit status is :func:`tidal.launch.outcome.job_exit_status`, and
``status.json`` is left saying the same.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tidal.core.states import JobState
from tidal.launch.env import JobEnv, worker_env
from tidal.launch.errors import LaunchRefused, StatusFormatError
from tidal.launch.jobdir import CheckpointHead, DirectoryLock, check_world
from tidal.launch.outcome import describe_exit, job_exit_status, state_for_exit
from tidal.launch.signals import StopSignals
from tidal.launch.status import StatusRecord, read_status, write_status
from tidal.launch.worker import WorkerProcess

logger = logging.getLogger(__name__)

__all__ = ["LOG_DIR", "LaunchSpec", "LogReporter", "Reporter", "launch"]

LOG_DIR = "logs"
_POLL_S = 0.2


@dataclass(frozen=True)
class LaunchSpec:
    """Everything ``tidal run`` needs; validated on construction (:class:`LaunchRefused`)."""

    script: Path
    world: int
    workers: int
    checkpoint_dir: Path
    script_args: tuple[str, ...] = ()
    checkpoint_every_steps: int | None = None
    checkpoint_every_s: float | None = None
    job_id: str | None = None
    stop_timeout_s: float = 600.0
    threads: int = 1
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        if type(self.world) is not int or self.world < 1:
            raise LaunchRefused(f"--world must be an integer >= 1, got {self.world!r}")
        if type(self.workers) is not int or self.workers < 1:
            raise LaunchRefused(f"--workers must be an integer >= 1, got {self.workers!r}")
        if self.world % self.workers != 0:
            divisors = [p for p in range(1, self.world + 1) if self.world % p == 0]
            raise LaunchRefused(
                f"--workers {self.workers} does not divide --world {self.world}; "
                f"choose one of {divisors}"
            )
        script = Path(self.script).absolute()
        if not script.is_file():
            raise LaunchRefused(f"script {self.script} does not exist (looked for {script})")
        object.__setattr__(self, "script", script)
        object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir).absolute())
        if self.checkpoint_dir.exists() and not self.checkpoint_dir.is_dir():
            raise LaunchRefused(f"--checkpoint-dir {self.checkpoint_dir} is not a directory")
        every = self.checkpoint_every_steps
        if every is not None and (type(every) is not int or every < 1):
            raise LaunchRefused(f"--checkpoint-every-steps must be an integer >= 1, got {every!r}")
        secs = self.checkpoint_every_s
        if secs is not None and not secs > 0:
            raise LaunchRefused(f"--checkpoint-every-s must be > 0 seconds, got {secs!r}")
        if not self.stop_timeout_s > 0:
            raise LaunchRefused(f"--stop-timeout must be > 0 seconds, got {self.stop_timeout_s!r}")
        if type(self.threads) is not int or self.threads < 1:
            raise LaunchRefused(f"--threads must be an integer >= 1, got {self.threads!r}")
        if self.job_id is not None and not self.job_id.strip():
            raise LaunchRefused("--job-id must not be empty")
        object.__setattr__(self, "script_args", tuple(self.script_args))

    @property
    def resolved_job_id(self) -> str:
        """The given job id, or a stable one derived from the checkpoint directory."""
        if self.job_id:
            return self.job_id
        digest = hashlib.sha1(str(self.checkpoint_dir).encode()).hexdigest()[:8]
        return f"{self.checkpoint_dir.name}-{digest}"

    def command(self) -> list[str]:
        """Each worker's command line: the script under this Python, unbuffered."""
        return [self.python, "-u", str(self.script), *self.script_args]

    def job_env(self, master_port: int | None) -> JobEnv:
        return JobEnv(
            world=self.world,
            workers=self.workers,
            checkpoint_dir=self.checkpoint_dir,
            job_id=self.resolved_job_id,
            master_addr="127.0.0.1",
            master_port=master_port,
            checkpoint_every_steps=self.checkpoint_every_steps,
            checkpoint_every_s=self.checkpoint_every_s,
            threads=self.threads,
        )


class Reporter(Protocol):
    """Where the launcher shows what happens (the CLI's console display implements it)."""

    def update(self, status: StatusRecord | None) -> None:
        """The job's latest ``status.json`` (called every poll)."""

    def note(self, message: str) -> None:
        """A launcher message: stop requested, escalation, the outcome."""

    def line(self, worker: int, text: str, is_stderr: bool) -> None:
        """One line of a worker's output."""


class LogReporter:
    """A plain reporter: worker lines to this process's stdout/stderr (prefixed with the
    worker index when there are several), notes to the log."""

    def __init__(self, workers: int) -> None:
        self._prefix = workers > 1
        self._lines = threading.Lock()  # workers' lines arrive on several threads

    def update(self, status: StatusRecord | None) -> None:
        pass

    def note(self, message: str) -> None:
        logger.warning("%s", message)

    def line(self, worker: int, text: str, is_stderr: bool) -> None:
        with self._lines:
            stream = sys.stderr if is_stderr else sys.stdout
            stream.write(f"[{worker}] {text}\n" if self._prefix else f"{text}\n")
            stream.flush()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the rendezvous of worker 0's process group)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _read(directory: Path) -> StatusRecord | None:
    try:
        return read_status(directory)
    except StatusFormatError as e:
        logger.warning("ignoring %s", e)
        return None


def launch(spec: LaunchSpec, reporter: Reporter | None = None, *, signals: StopSignals) -> int:
    """Run the job described by ``spec`` to its end; returns the exit status.

    ``signals`` counts the stop requests (install it as early as possible: see
    :func:`tidal.launch.signals.catch_stop_signals`). Raises :class:`LaunchRefused` (exit
    status 2) before anything is started or written.
    """
    directory = spec.checkpoint_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LaunchRefused(f"cannot create --checkpoint-dir {directory}: {e}") from e
    shown = reporter if reporter is not None else LogReporter(spec.workers)
    with DirectoryLock(directory) as lock:
        head = check_world(directory, spec.world)  # before anything is started or written
        return _LocalRun(spec, shown, lock, signals, head).run()


class _LocalRun:
    """One launch: start the workers, relay stops, decide and record the outcome."""

    def __init__(
        self,
        spec: LaunchSpec,
        reporter: Reporter,
        lock: DirectoryLock,
        signals: StopSignals,
        head: CheckpointHead | None,
    ) -> None:
        self.spec = spec
        self.reporter = reporter
        self.lock = lock
        self.signals = signals
        self.head = head
        self.workers: list[WorkerProcess] = []
        self.exits: list[tuple[int, int]] = []  # (worker, code) in the order they ended
        self.stop_started: float | None = None
        self.killed = False
        self.failed_first: int | None = None

    # ------------------------------------------------------------------ the run
    def run(self) -> int:
        spec = self.spec
        directory = spec.checkpoint_dir
        previous = _read(directory)
        self._write(previous, JobState.STARTING)
        if self.signals.requested:
            self.reporter.note("stop requested before the workers started: not starting them")
            return self._finish(stopped=True)
        job = spec.job_env(free_port() if spec.workers > 1 else None)
        try:
            for i in range(spec.workers):
                if self.signals.requested:
                    break
                self.workers.append(self._worker(job, i).start())
            self._supervise()
        finally:
            for w in self.workers:  # on the way out (an error too): none may outlive us
                if w.poll() is None:
                    w.kill()
                    w.wait()
                w.close()
        return self._finish(stopped=self.stop_started is not None or self.signals.requested)

    def _worker(self, job: JobEnv, i: int) -> WorkerProcess:
        def on_line(text: str, is_stderr: bool) -> None:
            self.reporter.line(i, text, is_stderr)

        return WorkerProcess(
            self.spec.command(),
            worker_env(job, i, os.environ),
            name=f"worker {i}",
            log_path=self.spec.checkpoint_dir / LOG_DIR / f"worker-{i}.log",
            on_line=on_line,
            pass_fds=(self.lock.fd,),  # the lock lasts as long as any worker
        )

    def _supervise(self) -> None:
        while True:
            self._collect_exits()
            if all(w.poll() is not None for w in self.workers):
                return
            status = _read(self.spec.checkpoint_dir)
            self.reporter.update(status)
            if self.signals.requested:
                self._stop(status)
            elif self.failed_first is not None and not self.killed:
                i = self.failed_first
                code = dict(self.exits)[i]
                self.reporter.note(f"worker {i} failed (exit status {code}): stopping the others")
                self._kill_all()
            time.sleep(_POLL_S)

    def _collect_exits(self) -> None:
        done = {i for i, _ in self.exits}
        for i, w in enumerate(self.workers):
            code = w.poll()
            if code is not None and i not in done:
                self.exits.append((i, code))
                if code != 0 and self.failed_first is None:
                    self.failed_first = i

    # ------------------------------------------------------------------ stopping
    def _stop(self, status: StatusRecord | None) -> None:
        now = time.monotonic()
        if self.stop_started is None:
            self.stop_started = now
            if status is None or status.state is JobState.STARTING:
                self.reporter.note("stop requested before the workers started training: killing")
                self._kill_all()
                return
            self.reporter.note(
                "stop requested: SIGTERM to every worker; they checkpoint at the next step "
                "boundary and exit (signal again to kill)"
            )
        if self.killed:
            return
        if self.signals.count >= 2 or now - self.stop_started > self.spec.stop_timeout_s:
            why = "second signal" if self.signals.count >= 2 else "stop timeout"
            self.reporter.note(f"{why}: killing the workers")
            self._kill_all()
            return
        for w in self.workers:
            if w.terminated_at is None:
                w.terminate()

    def _kill_all(self) -> None:
        self.killed = True
        for w in self.workers:
            w.kill()

    # ------------------------------------------------------------------ the outcome
    def _finish(self, *, stopped: bool) -> int:
        directory = self.spec.checkpoint_dir
        status = _read(directory)
        state = status.state if status is not None else None
        code = job_exit_status([c for _, c in self.exits], state, stopped=stopped)
        final = state_for_exit(code)
        if status is None or status.state is not final:
            self._write(status, final)
            status = _read(directory)
        self.reporter.update(status)
        self.reporter.note(f"{describe_exit(code)} (exit status {code})")
        return code

    def _write(self, previous: StatusRecord | None, state: JobState) -> None:
        spec = self.spec
        base = previous if previous is not None else StatusRecord(state)
        last = base.last_checkpoint_step
        if self.head is not None and (last is None or last < self.head.step):
            last = self.head.step
        record = base.written_now(
            state=state,
            world=spec.world,
            workers=spec.workers,
            job_id=spec.resolved_job_id,
            samples_per_s=0.0,
            last_checkpoint_step=last,
        )
        try:
            write_status(spec.checkpoint_dir, record)
        except OSError as e:
            logger.warning("could not write %s/status.json: %s", spec.checkpoint_dir, e)
