"""A job's output: every worker's log file, merged and prefixed by worker.

The executor appends worker ``k``'s output to ``<checkpoint_root>/<job>/logs/worker-<k>.log``
(``k`` is the worker's index in its incarnation; a restarted job appends to the same
files). :func:`read_logs` reads on from a cursor (each file's byte offset), returns whole
lines only, each as ``[wK] text``, and a new cursor. Each read takes what is new in
worker 0's file, then worker 1's, and so on: lines of one worker keep their order; lines
of different workers are interleaved only as finely as the reader polls. Bytes that are
not UTF-8 are replaced (U+FFFD).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["LogChunk", "LogCursorError", "log_dir", "parse_cursor", "read_logs"]

_FILE_RE: Final = re.compile(r"^worker-(\d{1,6})\.log$")
_CURSOR_RE: Final = re.compile(r"^(\d{1,6}:\d{1,18})(,\d{1,6}:\d{1,18}){0,1023}$")


class LogCursorError(ValueError):
    """A log cursor that :func:`read_logs` did not make."""


@dataclass(frozen=True, slots=True)
class LogChunk:
    lines: list[str]
    cursor: str
    more: bool  # the read stopped at max_bytes: read again at once


def log_dir(checkpoint_root: Path, job_id: str) -> Path:
    return checkpoint_root / job_id / "logs"


def parse_cursor(cursor: str) -> dict[int, int]:
    """``"0:1234,1:56"`` → ``{0: 1234, 1: 56}``; ``""`` is the start of every file."""
    if not cursor:
        return {}
    if not _CURSOR_RE.match(cursor):
        raise LogCursorError(f"not a log cursor: {cursor[:80]!r}")
    offsets: dict[int, int] = {}
    for part in cursor.split(","):
        worker, offset = part.split(":")
        offsets[int(worker)] = int(offset)
    return offsets


def _format_cursor(offsets: dict[int, int]) -> str:
    return ",".join(f"{k}:{v}" for k, v in sorted(offsets.items()))


def _worker_files(directory: Path) -> list[tuple[int, Path]]:
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for path in entries:
        match = _FILE_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_logs(
    directory: Path, cursor: str = "", *, max_bytes: int = 256 * 1024, final: bool = False
) -> LogChunk:
    """The complete lines written since ``cursor`` to the worker logs in ``directory``,
    at most about ``max_bytes`` of them. With ``final`` (the job has ended, nothing more
    will be written) a last line without its newline is returned too."""
    offsets = parse_cursor(cursor)
    lines: list[str] = []
    budget = max_bytes
    more = False
    for worker, path in _worker_files(directory):
        if budget <= 0:
            more = True
            break
        start = offsets.get(worker, 0)
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size < start:  # truncated or replaced: read it again from its start
                    start = 0
                handle.seek(start)
                data = handle.read(budget)
        except FileNotFoundError:
            continue
        end = data.rfind(b"\n") + 1
        if final and start + len(data) == size:
            end = len(data)  # the job's last line, which has no newline
        elif end == 0 and len(data) == max_bytes:
            end = len(data)  # one line longer than a whole read: pass it on in pieces
        if start + len(data) < size:
            more = True
        body = data[:end]
        offsets[worker] = start + end
        budget -= end
        if body:
            text = body.decode("utf-8", errors="replace")
            prefix = f"[w{worker}] "
            parts = text.split("\n")
            if parts[-1] == "":
                parts.pop()
            lines.extend(prefix + line.removesuffix("\r") for line in parts)
    return LogChunk(lines, _format_cursor(offsets), more)
