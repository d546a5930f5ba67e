"""Finding torchrun's worker processes and signalling them.

torchrun (torch.distributed.elastic) starts each worker with ``start_new_session=True``,
so a worker is the leader of its own process group, and on SIGTERM the agent forwards the
signal but SIGKILLs workers after ``--shutdown-timeout`` (30 s by default). The launcher
therefore delivers SIGTERM to the workers itself (the agent is not signalled, so no kill
timer starts) and escalates only on a second signal or after its own stop timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

_PROC = Path("/proc")


def can_list_children() -> bool:
    """Whether worker processes can be found (Linux ``/proc``)."""
    return (_PROC / "self" / "stat").exists()


def _ppid(pid: int) -> int | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def children_of(parent: int) -> list[int]:
    """Direct children of ``parent`` (empty where /proc is unavailable)."""
    found = []
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name.isdigit() and _ppid(int(entry.name)) == parent:
            found.append(int(entry.name))
    return sorted(found)


def worker_pids(agent: int, script: Path) -> list[int]:
    """torchrun's children that run ``script`` (the workers)."""
    wanted = str(script)
    return [pid for pid in children_of(agent) if wanted in _cmdline(pid)]


def send(pid: int, sig: signal.Signals) -> bool:
    """Signal one process; False when it is already gone."""
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group (a worker with its data-loader processes)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
