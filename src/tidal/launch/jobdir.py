"""The job directory, as a supervisor sees it: the lock, and the last committed checkpoint.

A job's checkpoint directory ``DIR`` is its identity on disk. Besides ``status.json``
(:mod:`tidal.launch.status`) it holds:

* ``DIR/.tidal-run.lock``: held (``flock``) by the supervisor that runs the job on this
  machine, *and by every worker it starts*: the workers inherit the locked file, and the
  lock is released only when the last process holding it has exited, so a second launch is
  refused as long as any worker of the first one lives;
* ``DIR/ckpt-NNNNNNNN/``: the committed checkpoints, written by the runtime
  (:mod:`tidal.runtime.checkpoint`). Their ``manifest.json`` is JSON, so a supervisor reads
  the step and the logical world size W of the newest one without PyTorch.

The names here are the one definition of that layout; the runtime's checkpoint writer
imports them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tidal.launch.errors import LaunchRefused, WorldMismatch

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_FILE",
    "MANIFEST",
    "CheckpointHead",
    "DirectoryLock",
    "check_world",
    "committed_checkpoints",
    "committed_name",
    "last_checkpoint",
    "temporary_name",
]

LOCK_FILE = ".tidal-run.lock"
MANIFEST = "manifest.json"
COMMITTED = re.compile(r"^ckpt-(\d{8,})$")
TEMPORARY = re.compile(r"^ckpt-(\d{8,})\.tmp$")


def committed_name(step: int) -> str:
    """The directory name of the committed checkpoint of ``step``."""
    return f"ckpt-{step:08d}"


def temporary_name(step: int) -> str:
    """The directory a checkpoint of ``step`` is written into before it is committed."""
    return f"ckpt-{step:08d}.tmp"


def committed_checkpoints(root: Path) -> dict[int, Path]:
    """Every committed checkpoint directory under ``root``, by step (not verified)."""
    found: dict[int, Path] = {}
    try:
        entries = list(Path(root).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        match = COMMITTED.match(entry.name)
        if match and entry.is_dir():
            found[int(match.group(1))] = entry
    return found


@dataclass(frozen=True, slots=True)
class CheckpointHead:
    """What a committed checkpoint's manifest says about it: its step and world size."""

    step: int
    world: int
    workers: int
    path: Path


def _head(path: Path) -> CheckpointHead:
    manifest = path / MANIFEST
    raw = json.loads(manifest.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{manifest} is not a JSON object")
    values = {}
    for key in ("step", "world", "workers"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{manifest}: {key!r} = {value!r} is not an integer")
        values[key] = value
    if committed_name(values["step"]) != path.name:
        raise ValueError(f"{manifest} says step {values['step']}, the directory is {path.name}")
    return CheckpointHead(values["step"], values["world"], values["workers"], path)


def last_checkpoint(root: Path) -> CheckpointHead | None:
    """The newest committed checkpoint whose manifest reads, or None.

    Only the manifest is read (no checksums: the runtime verifies every file when it
    resumes, and skips a damaged checkpoint for the one before it). A checkpoint whose
    manifest does not read is skipped with a warning.
    """
    for _step, path in sorted(committed_checkpoints(root).items(), reverse=True):
        try:
            return _head(path)
        except (OSError, ValueError) as e:
            logger.warning("skipping checkpoint %s: %s", path, e)
    return None


def check_world(root: Path, world: int) -> CheckpointHead | None:
    """Refuse a world size W other than the newest committed checkpoint's.

    Returns that checkpoint's head (None when the directory holds none); raises
    :class:`WorldMismatch` naming both sizes. W is fixed for a job's whole life.
    """
    head = last_checkpoint(root)
    if head is not None and head.world != world:
        raise WorldMismatch(
            f"--world {world} does not match the checkpoint {head.path} of this job, which "
            f"has logical world size {head.world} (W is fixed for a job's life: resume with "
            f"--world {head.world}, or use another --checkpoint-dir)"
        )
    return head


class DirectoryLock:
    """``DIR/.tidal-run.lock``: one launch per checkpoint directory on this machine.

    ``acquire`` takes an exclusive ``flock`` without waiting (:class:`LaunchRefused`, naming
    the holder, when another launch holds it). Pass :attr:`fd` to the workers
    (``pass_fds``): the lock then lasts until the last of them and this process have exited.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise LaunchRefused(f"{self.path} is not held")
        return self._fd

    def acquire(self) -> DirectoryLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LaunchRefused(
                f"--checkpoint-dir {self.path.parent} is in use by another `tidal run` "
                f"({holder}) or by a worker it started"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Close this process's hold (workers that inherited it keep the lock alive)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
