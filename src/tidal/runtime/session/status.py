"""Worker 0's writer of ``$TIDAL_CHECKPOINT_DIR/status.json`` (schema: :mod:`tidal.launch.status`).

Worker 0 owns the file while the job runs. A background thread rewrites it every
``interval_s`` (atomically) from the latest counters, so it is fresh at least that often
however slow or fast steps are, and the record says so (``heartbeat_s``) along with this
process's pid and host: a reader tells a live run from one that was killed without a word.
Every state change is written at once; once the run has ended (preempted, succeeded,
failed) the thread stops.

States: ``starting`` (from the start of ``prepare``), ``running``, ``stopping`` (the
consistent cut's checkpoint is being written), then ``preempted``, ``succeeded`` or
``failed``. The values are :class:`tidal.core.states.JobState`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

from tidal.core.states import JobState
from tidal.launch.status import ENDED_STATES, StatusRecord, write_status

__all__ = ["JobState", "StatusFile"]

logger = logging.getLogger(__name__)


class StatusFile:
    """Counters of the running job and the thread that publishes them."""

    def __init__(
        self,
        directory: Path | None,
        *,
        world: int,
        workers: int,
        job_id: str | None,
        interval_s: float = 0.5,
        window_s: float = 5.0,
    ) -> None:
        self._directory = directory
        self._world, self._workers, self._job_id = world, workers, job_id
        self._interval = interval_s
        self._window = window_s
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._state = JobState.STARTING
        self._step = 0
        self._epoch = 0
        self._last_ckpt: int | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._total_samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._write()
            self._thread = threading.Thread(target=self._loop, name="tidal-status", daemon=True)
            self._thread.start()

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def samples_per_s(self) -> float:
        """Samples per second over the last ``window_s`` seconds of steps."""
        with self._lock:
            if len(self._samples) < 2:
                return 0.0
            (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
            return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def record(self) -> StatusRecord:
        """The record as it would be written now."""
        rate = self.samples_per_s
        with self._lock:
            state, step, epoch, last = self._state, self._step, self._epoch, self._last_ckpt
        ended = state in ENDED_STATES
        return StatusRecord(
            state=state,
            step=step,
            epoch=epoch,
            world=self._world,
            workers=self._workers,
            samples_per_s=0.0 if ended else rate,
            last_checkpoint_step=last,
            job_id=self._job_id,
        ).written_now(heartbeat_s=None if ended else self._interval)

    def progress(self, *, step: int, epoch: int, samples: int) -> None:
        """Record a finished step (cheap; the thread publishes it)."""
        now = time.time()
        with self._lock:
            self._step, self._epoch = step, epoch
            self._total_samples += samples
            self._samples.append((now, self._total_samples))
            while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
                self._samples.popleft()

    def set_position(self, *, step: int, epoch: int) -> None:
        with self._lock:
            self._step, self._epoch = step, epoch

    def checkpointed(self, step: int) -> None:
        with self._lock:
            self._last_ckpt = step if self._last_ckpt is None else max(self._last_ckpt, step)

    def set_state(self, state: JobState) -> None:
        """Change state and publish it now. An ended run stays ended (except that it may
        still turn ``failed``), and its thread stops."""
        with self._lock:
            if self._state in ENDED_STATES and state not in (self._state, JobState.FAILED):
                return
            self._state = state
        self._write()
        if state in ENDED_STATES:
            self.close()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._write()

    def _write(self) -> None:
        if self._directory is None:
            return
        with self._write_lock:  # the thread and a state change never write out of order
            try:
                write_status(self._directory, self.record())
            except OSError as exc:  # a full or vanished disk must not kill training
                logger.warning("could not write %s/status.json: %s", self._directory, exc)
