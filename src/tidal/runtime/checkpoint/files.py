"""Durable file primitives for checkpoints: layout names, fsync, atomic writes, checksums.

Nothing here knows about PyTorch; :mod:`tidal.runtime.checkpoint.tensors` turns state into
files and :mod:`tidal.runtime.checkpoint` coordinates workers through these files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from tidal.launch.jobdir import MANIFEST as MANIFEST
from tidal.launch.jobdir import TEMPORARY as _TEMPORARY
from tidal.launch.jobdir import committed_checkpoints
from tidal.launch.jobdir import committed_name as committed_name
from tidal.launch.jobdir import temporary_name as temporary_name

FORMAT_NAME = "tidal-checkpoint"
FORMAT_VERSION = 1
HASH_NAME = "xxh3_128"  # the key of each file's checksum in the manifest

MANIFEST_DIGEST = "manifest.digest"
SHARED_DIR = "shared"  # a PyTorch distributed-checkpoint (DCP) directory
SHARED_STRUCTURE = "shared-structure.json"
RANKS_DIR = "ranks"

_DOOMED = re.compile(r"^ckpt-(\d{8,})\.old-\d+$")

_CHUNK = 8 * 1024 * 1024


def rank_file(logical_rank: int) -> str:
    """Path of a logical rank's state, relative to the checkpoint directory."""
    return f"{RANKS_DIR}/rank-{logical_rank:05d}.pt"


def done_marker(worker: int) -> str:
    """Name of the file a worker writes, last, into the temporary directory when its part is durable."""
    return f"done-worker-{worker:05d}.json"


def committed_steps(root: Path) -> dict[int, Path]:
    """Every committed checkpoint directory under ``root`` by step (verified or not)."""
    return committed_checkpoints(root)


def temporary_steps(root: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and entry.is_dir():
            found[int(match.group(1))] = entry
    return found


def doomed_dirs(root: Path) -> list[Path]:
    """Directories renamed aside to be deleted (a crash may have left them)."""
    if not root.is_dir():
        return []
    return [e for e in root.iterdir() if _DOOMED.match(e.name) and e.is_dir()]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_durably(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` and fsync it (not its directory)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON to a sibling temporary file, fsync it, rename it over ``path``, fsync the dir."""
    part = path.with_name(f".{path.name}.part-{os.getpid()}")
    write_bytes_durably(part, json.dumps(payload, indent=1, sort_keys=True).encode())
    os.replace(part, path)
    fsync_dir(path.parent)


def remove_tree(path: Path) -> None:
    """Delete a directory tree, tolerating concurrent deletion."""
    shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class FileDigest:
    """Checksum (``HASH_NAME``, hex) and size of one file of a checkpoint."""

    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {HASH_NAME: self.digest, "size": self.size}

    @staticmethod
    def from_json(raw: Any, where: str) -> FileDigest:
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get(HASH_NAME), str)
            or not isinstance(raw.get("size"), int)
        ):
            raise ValueError(f"{where}: expected {{'{HASH_NAME}': str, 'size': int}}, got {raw!r}")
        return FileDigest(raw[HASH_NAME], raw["size"])


def new_hasher() -> xxhash.xxh3_128:
    """The checksum of checkpoint files: xxh3-128, which detects corruption (not tampering)
    at several GB/s, so hashing never limits write throughput the way sha256 (~0.5-1 GB/s
    on one core) did."""
    return xxhash.xxh3_128()


def digest_bytes(data: bytes | memoryview) -> FileDigest:
    h = new_hasher()
    h.update(data)
    return FileDigest(h.hexdigest(), len(data))


def digest_file(path: Path) -> FileDigest:
    """Checksum of a file, read in large chunks."""
    h = new_hasher()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return FileDigest(h.hexdigest(), size)


def digest_files(base: Path, relpaths: Iterable[str], threads: int = 4) -> dict[str, FileDigest]:
    """Digest many files under ``base`` in parallel; keys are the relative paths."""
    rels = sorted(relpaths)
    if len(rels) <= 1 or threads <= 1:
        return {rel: digest_file(base / rel) for rel in rels}
    # Large files first so the pool stays busy.
    rels.sort(key=lambda rel: -(base / rel).stat().st_size)
    with ThreadPoolExecutor(max_workers=min(threads, len(rels))) as pool:
        digests = list(pool.map(lambda rel: digest_file(base / rel), rels))
    return dict(zip(rels, digests, strict=True))


def files_under(base: Path, sub: str) -> list[str]:
    """Relative paths (posix) of every regular file under ``base/sub``."""
    top = base / sub
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            out.append((Path(dirpath) / name).relative_to(base).as_posix())
    return out


def fsync_tree(path: Path) -> None:
    """fsync every directory under ``path`` (files are fsynced when written)."""
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        fsync_dir(Path(dirpath))


def read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def remove_if_exists(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _measure_process_start() -> float:
    """Wall-clock time this process started (Linux /proc), else the time of this import."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, counted after "pid (comm)"
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


PROCESS_STARTED_AT = _measure_process_start()


def newest_mtime(path: Path) -> float:
    """Latest modification time of a directory tree (the directory and everything in it)."""
    newest = path.stat().st_mtime
    for dirpath, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, (Path(dirpath) / name).stat().st_mtime)
    return newest
