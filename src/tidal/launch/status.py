"""``DIR/status.json``: one schema for the runtime that writes it, the launcher and the service.

The file is one JSON object, replaced atomically (temporary file, then ``os.replace``) on
every write, so a reader sees either the old or the new record, never a mix::

    {"state": "running", "step": 120, "epoch": 2, "world": 4, "workers": 2,
     "samples_per_s": 851.3, "last_checkpoint_step": 100, "job_id": "ck-1a2b3c4d",
     "updated_at": 1764171234.5, "heartbeat_s": 0.5, "pid": 4242, "host": "node-3"}

``state`` is a value of the lifecycle enum :class:`tidal.core.states.JobState`, restricted
to the states a run reports itself (:data:`RUN_STATES`): ``starting``, ``running``,
``stopping`` (stopping at a consistent cut: the cut's checkpoint is being written),
``preempted``, ``succeeded`` and ``failed``. The other lifecycle states (``pending``,
``restarting``, ``cancelled``) are the control plane's decisions, never a run's report.

A field that is absent takes its default (older or partial writers still read); a field of
the wrong type is a :class:`StatusFormatError` naming it.

Liveness: ``updated_at`` is the wall-clock time of the write, ``pid`` and ``host`` name the
writing process, and ``heartbeat_s`` is how often that writer promises to rewrite the file
while the run has not ended (``null``: it does not). :meth:`StatusRecord.liveness` uses
them to tell a live run from one whose processes died without a word (a hard kill leaves
``running`` in the file forever).
"""

from __future__ import annotations

import enum
import json
import math
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tidal.core.states import JobState
from tidal.launch.errors import StatusFormatError

__all__ = [
    "ENDED_STATES",
    "RUN_STATES",
    "STATUS_FILE",
    "Liveness",
    "StatusRecord",
    "pid_alive",
    "read_status",
    "write_status",
]

STATUS_FILE = "status.json"

RUN_STATES: tuple[JobState, ...] = (
    JobState.STARTING,
    JobState.RUNNING,
    JobState.STOPPING,
    JobState.PREEMPTED,
    JobState.SUCCEEDED,
    JobState.FAILED,
)
"""The states a run reports in ``status.json``."""

ENDED_STATES: tuple[JobState, ...] = (JobState.PREEMPTED, JobState.SUCCEEDED, JobState.FAILED)
"""The run is over: its processes exit (``preempted`` is resumable, and not terminal for the
lifecycle, but this run of the job has ended)."""

STALE_FLOOR_S = 15.0
STALE_FACTOR = 20.0


class Liveness(enum.Enum):
    """What a reader can tell about the run behind a ``status.json``."""

    ALIVE = "alive"  # the writer is alive (same host) or its heartbeat is fresh
    DEAD = "dead"  # not ended, but its writer is gone or its heartbeat stopped
    ENDED = "ended"  # the run reported its end: preempted, succeeded or failed
    UNKNOWN = "unknown"  # written on another host by a writer without a heartbeat


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: existence is all we can know
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


_MISSING = object()


def _field(raw: Mapping[str, Any], name: str, kind: type | tuple[type, ...], *, null: bool) -> Any:
    """``raw[name]`` checked against ``kind``; ``_MISSING`` when absent (the default applies)."""
    if name not in raw:
        return _MISSING
    value = raw[name]
    if value is None and null:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise StatusFormatError(
            f"status field {name!r} = {value!r} is not {'null or ' if null else ''}{want}"
        )
    return value


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """One ``status.json``: what the run is doing, and who says so."""

    state: JobState
    step: int = 0
    epoch: int = 0
    world: int | None = None
    workers: int | None = None
    samples_per_s: float = 0.0
    last_checkpoint_step: int | None = None
    job_id: str | None = None
    updated_at: float = 0.0
    heartbeat_s: float | None = None
    pid: int | None = None
    host: str | None = None

    def __post_init__(self) -> None:
        if self.state not in RUN_STATES:
            allowed = ", ".join(s.value for s in RUN_STATES)
            raise StatusFormatError(
                f"status state {self.state.value!r} is not one a run reports ({allowed})"
            )
        if self.heartbeat_s is not None and not (
            math.isfinite(self.heartbeat_s) and self.heartbeat_s > 0
        ):
            raise StatusFormatError(f"heartbeat_s={self.heartbeat_s!r} must be > 0 or null")

    @property
    def ended(self) -> bool:
        """Whether the run reported its end (preempted, succeeded or failed)."""
        return self.state in ENDED_STATES

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
            "heartbeat_s": self.heartbeat_s,
            "pid": self.pid,
            "host": self.host,
        }

    @classmethod
    def from_json(cls, raw: Any) -> StatusRecord:
        """Parse a ``status.json`` object; :class:`StatusFormatError` names a bad field."""
        if not isinstance(raw, Mapping):
            raise StatusFormatError(f"status.json holds a {type(raw).__name__}, not an object")
        state = _field(raw, "state", str, null=False)
        if state is _MISSING:
            raise StatusFormatError("status field 'state' is missing")
        try:
            parsed = JobState(state)
        except ValueError:
            raise StatusFormatError(
                f"status field 'state' = {state!r} is not a job state"
            ) from None
        number = (int, float)
        checks: dict[str, tuple[type | tuple[type, ...], bool]] = {
            "step": (int, False),
            "epoch": (int, False),
            "world": (int, True),
            "workers": (int, True),
            "samples_per_s": (number, False),
            "last_checkpoint_step": (int, True),
            "job_id": (str, True),
            "updated_at": (number, False),
            "heartbeat_s": (number, True),
            "pid": (int, True),
            "host": (str, True),
        }
        values: dict[str, Any] = {}
        for name, (kind, null) in checks.items():
            value = _field(raw, name, kind, null=null)
            if value is not _MISSING:
                values[name] = float(value) if kind is number and value is not None else value
        return cls(state=parsed, **values)

    def written_now(self, *, heartbeat_s: float | None = None, **changes: Any) -> StatusRecord:
        """A copy with ``changes``, stamped as written now by this process."""
        return replace(
            self,
            **changes,
            updated_at=time.time(),
            heartbeat_s=heartbeat_s,
            pid=os.getpid(),
            host=socket.gethostname(),
        )

    def liveness(
        self,
        *,
        now: float | None = None,
        host: str | None = None,
        stale_after_s: float | None = None,
    ) -> Liveness:
        """Whether the run behind this record is alive, ended, or died without a word.

        Not ended: on the writer's host, a writer process that no longer exists means
        ``DEAD``; a writer with a heartbeat whose last write is older than
        ``stale_after_s`` (default: ``max(15 s, 20 heartbeats)``) is ``DEAD`` too (stalled,
        or on another host). ``now`` defaults to the wall clock, ``host`` to this host.
        """
        if self.ended:
            return Liveness.ENDED
        here = socket.gethostname() if host is None else host
        local = self.pid is not None and self.host == here
        if local and self.pid is not None and not pid_alive(self.pid):
            return Liveness.DEAD
        if self.heartbeat_s is not None:
            limit = (
                stale_after_s
                if stale_after_s is not None
                else max(STALE_FLOOR_S, STALE_FACTOR * self.heartbeat_s)
            )
            age = (time.time() if now is None else now) - self.updated_at
            return Liveness.DEAD if age > limit else Liveness.ALIVE
        return Liveness.ALIVE if local else Liveness.UNKNOWN


def read_status(directory: Path) -> StatusRecord | None:
    """The record in ``directory/status.json``; None when there is none.

    Raises :class:`StatusFormatError` when the file exists but does not follow the schema.
    """
    path = Path(directory) / STATUS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StatusFormatError(f"cannot read {path}: {e}") from e
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise StatusFormatError(f"{path} is not JSON: {e}") from e
    try:
        return StatusRecord.from_json(raw)
    except StatusFormatError as e:
        raise StatusFormatError(f"{path}: {e}") from None


def write_status(directory: Path, record: StatusRecord) -> None:
    """Replace ``directory/status.json`` with ``record`` atomically (``OSError`` on failure)."""
    path = Path(directory) / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(record.to_json(), sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
