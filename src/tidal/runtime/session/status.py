"""``$TIDAL_CHECKPOINT_DIR/status.json``: what the job is doing, for launchers and people.

Worker 0 owns the file. A background thread rewrites it every ``interval_s`` (atomically:
temporary file, then ``os.replace``) from the latest counters, so it is fresh at least once
a second however slow or fast steps are; every state change is written at once.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JobState", "StatusFile", "StatusSnapshot"]

logger = logging.getLogger(__name__)

FILE_NAME = "status.json"


class JobState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    CHECKPOINTING = "checkpointing"
    PREEMPTED = "preempted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.PREEMPTED, JobState.SUCCEEDED, JobState.FAILED)


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    state: JobState
    step: int
    epoch: int
    world: int
    workers: int
    samples_per_s: float
    last_checkpoint_step: int | None
    job_id: str | None
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "step": self.step,
            "epoch": self.epoch,
            "world": self.world,
            "workers": self.workers,
            "samples_per_s": round(self.samples_per_s, 3),
            "last_checkpoint_step": self.last_checkpoint_step,
            "job_id": self.job_id,
            "updated_at": self.updated_at,
        }


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
        self._path = directory / FILE_NAME if directory is not None else None
        self._world, self._workers, self._job_id = world, workers, job_id
        self._interval = interval_s
        self._window = window_s
        self._lock = threading.Lock()
        self._state = JobState.STARTING
        self._step = 0
        self._epoch = 0
        self._last_ckpt: int | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._total_samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._write()
            self._thread = threading.Thread(target=self._loop, name="tidal-status", daemon=True)
            self._thread.start()

    @property
    def state(self) -> JobState:
        return self._state

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            now = time.time()
            rate = 0.0
            if len(self._samples) >= 2:
                (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
                if t1 > t0:
                    rate = (n1 - n0) / (t1 - t0)
            return StatusSnapshot(
                state=self._state,
                step=self._step,
                epoch=self._epoch,
                world=self._world,
                workers=self._workers,
                samples_per_s=rate,
                last_checkpoint_step=self._last_ckpt,
                job_id=self._job_id,
                updated_at=now,
            )

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
        """Change state and publish it now. Terminal states stop the thread."""
        with self._lock:
            if self._state.terminal and state not in (self._state, JobState.FAILED):
                return
            self._state = state
        self._write()
        if state.terminal:
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
        if self._path is None:
            return
        payload = json.dumps(self.snapshot().to_json(), sort_keys=True)
        tmp = self._path.with_name(f".{FILE_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(payload)
            os.replace(tmp, self._path)
        except OSError as exc:  # a full or vanished disk must not kill training
            logger.warning("could not write %s: %s", self._path, exc)
