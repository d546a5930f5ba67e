"""One worker process under supervision: started, logged, stopped, and never orphaned.

:class:`WorkerProcess` is what ``tidal run`` uses for each of its P local workers, and what
a service's actor uses for the one worker it supervises:

* it starts the command (any argv) with a worker environment (:func:`tidal.launch.env.
  worker_env`) in a new session, so the worker leads its own process group (its DataLoader
  processes with it) and a terminal's Ctrl-C reaches only the supervisor;
* on Linux the worker gets a *parent-death signal*: the kernel SIGKILLs it when the
  supervisor dies, even by SIGKILL. The signal is tied to the thread that started the
  child, so every worker is started from one long-lived thread of this module, never from
  a caller's thread that may end (a Ray actor's method runs on a pool thread);
* its stdout and stderr go, line by line, to a log file (appended) and to an optional
  callback (``on_line(text, is_stderr)``), from which a supervisor prints them with a worker
  prefix;
* :meth:`terminate` sends SIGTERM to the worker process alone (the runtime stops at the
  next consistent cut; a DataLoader process must not get it), :meth:`kill` SIGKILLs the
  whole process group, :meth:`stop` does the first and then the second after a deadline;
* :attr:`returncode` is the truth: 0, the worker's exit status, or ``-N`` when signal N
  ended it.

The child also starts with every signal unblocked, whatever mask the supervisor runs
with (a supervisor may block stop signals while it starts, see ``tidal.launch.signals``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO

from tidal.launch.errors import LaunchError

logger = logging.getLogger(__name__)

__all__ = ["LineCallback", "WorkerProcess"]

LineCallback = Callable[[str, bool], None]
"""Called with each line (without its newline) and whether it came from stderr."""

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()


def _child_setup(parent: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: parent-death signal, clean signal mask."""
    prctl = _PRCTL

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:  # the supervisor died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


class _Spawner:
    """The one thread that forks every worker, alive as long as this process.

    Linux sends the parent-death signal when the *thread* that forked the child ends; a
    dedicated daemon thread ends only with the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def spawn(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # none yet, or forked since
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve, name="tidal-spawner", daemon=True
                )
                self._pid = os.getpid()
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._queue.put((start, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            start, done = self._queue.get()
            try:
                done.set_result(start())
            except BaseException as e:
                done.set_exception(e)


_SPAWNER = _Spawner()


class WorkerProcess:
    """One supervised worker process (see the module docstring).

    ``pass_fds`` are file descriptors the worker inherits, e.g. the job directory's lock
    (:class:`tidal.launch.jobdir.DirectoryLock`), which then lasts as long as the worker.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        name: str = "worker",
        log_path: Path | None = None,
        on_line: LineCallback | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        if not argv:
            raise LaunchError("a worker needs a command to run (argv is empty)")
        self.argv = [str(a) for a in argv]
        self.env = dict(env)
        self.name = name
        self.log_path = log_path
        self._on_line = on_line
        self._cwd = cwd
        self._pass_fds = tuple(pass_fds)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self.started_at: float | None = None
        self.terminated_at: float | None = None

    # ------------------------------------------------------------------ starting
    def start(self) -> WorkerProcess:
        """Start the worker; :class:`LaunchError` when the command cannot be started."""
        if self._proc is not None:
            raise LaunchError(f"{self.name} was started already (pid {self._proc.pid})")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        parent = os.getpid()

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=self._pass_fds,
                preexec_fn=_child_setup(parent),  # prctl and the mask only
            )

        try:
            proc = _SPAWNER.spawn(start)
        except OSError as e:
            self._close_log()
            raise LaunchError(f"cannot start {self.name} ({' '.join(self.argv)}): {e}") from e
        self._proc = proc
        self.started_at = time.monotonic()
        for stream, is_err in ((proc.stdout, False), (proc.stderr, True)):
            if stream is None:  # pragma: no cover - both are pipes
                continue
            pump = threading.Thread(
                target=self._pump, args=(stream, is_err), name=f"tidal-{self.name}-out", daemon=True
            )
            pump.start()
            self._pumps.append(pump)
        logger.info("started %s (pid %d): %s", self.name, proc.pid, " ".join(self.argv))
        return self

    def _pump(self, stream: IO[bytes], is_err: bool) -> None:
        try:
            for raw in iter(stream.readline, b""):
                with self._log_lock:
                    if self._log is not None:
                        self._log.write(raw if raw.endswith(b"\n") else raw + b"\n")
                        self._log.flush()
                if self._on_line is not None:
                    try:
                        self._on_line(raw.decode(errors="replace").rstrip("\r\n"), is_err)
                    except Exception:  # a broken console must not stop the log
                        logger.exception("output callback of %s failed", self.name)
        finally:
            stream.close()

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LaunchError(f"{self.name} has not been started")
        return self._proc.pid

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def returncode(self) -> int | None:
        """None while running; else its exit status, or ``-N`` when signal N ended it."""
        return None if self._proc is None else self._proc.poll()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the worker to exit; its return code, or None on timeout."""
        if self._proc is None:
            raise LaunchError(f"{self.name} has not been started")
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    # ------------------------------------------------------------------ stopping
    def terminate(self) -> bool:
        """SIGTERM to the worker process alone: "stop at the next consistent cut".

        Returns False when it has exited already (or was never started).
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
            if self.terminated_at is None:
                self.terminated_at = time.monotonic()
            logger.info("sent SIGTERM to %s (pid %d)", self.name, proc.pid)
            return True
        return False

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (it and its DataLoader processes)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return  # reaped: its pid (= its group's id) may belong to someone else by now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
            logger.info("killed %s (process group %d)", self.name, proc.pid)

    def stop(self, grace_s: float) -> int:
        """SIGTERM, up to ``grace_s`` seconds to exit, then SIGKILL; returns the exit code."""
        if self._proc is None:
            raise LaunchError(f"{self.name} has not been started")
        self.terminate()
        code = self.wait(timeout=grace_s)
        if code is None:
            logger.warning("%s did not stop within %.0f s: killing it", self.name, grace_s)
            self.kill()
            code = self._proc.wait()
        return code

    def close(self, timeout_s: float = 5.0) -> None:
        """After the worker exited: finish copying its output, close the log."""
        deadline = time.monotonic() + timeout_s
        for pump in self._pumps:
            pump.join(timeout=max(0.0, deadline - time.monotonic()))
        self._close_log()

    def _close_log(self) -> None:
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc is not None else None
        return f"WorkerProcess({self.name!r}, pid={pid}, returncode={self.returncode})"
