"""Committing checkpoints: waiting for every worker's part, the atomic rename, pruning,
and cleaning up after interrupted writes. Coordination is through files only."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from tidal.runtime.checkpoint import files as cio
from tidal.runtime.errors import CheckpointError

logger = logging.getLogger(__name__)


def await_markers(
    tmp: Path, step: int, *, workers: int, world: int, timeout_s: float
) -> dict[str, cio.FileDigest]:
    """Wait for workers 1..P-1's done-markers in ``tmp``; return the files they list.

    A marker counts only if it is for this step, this P and this W, and was written after
    this process started (an older one is debris of an earlier launch; the worker replaces
    it with a fresh one).
    """
    waiting = set(range(1, workers))
    files: dict[str, cio.FileDigest] = {}
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    expected = {"step": step, "workers": workers, "world": world}
    while waiting:
        for worker in sorted(waiting):
            marker = tmp / cio.done_marker(worker)
            try:
                if marker.stat().st_mtime < cio.PROCESS_STARTED_AT:
                    continue
                raw = cio.read_json(marker)
            except (FileNotFoundError, ValueError):
                continue  # not written yet (markers are renamed into place)
            if any(raw.get(k) != v for k, v in expected.items()):
                continue
            for rel, d in raw.get("files", {}).items():
                try:
                    files[rel] = cio.FileDigest.from_json(d, f"{marker}: {rel}")
                except ValueError as e:
                    raise CheckpointError(str(e)) from e
            waiting.discard(worker)
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise CheckpointError(
                f"checkpoint of step {step} in {tmp}: workers {sorted(waiting)} did not "
                f"finish their part within {timeout_s:.0f} s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return files


def check_ranks_complete(tmp: Path, files: Mapping[str, cio.FileDigest], world: int) -> None:
    """Every logical rank's file is present, with the size its writer reported."""
    missing = [r for r in range(world) if cio.rank_file(r) not in files]
    if missing:
        raise CheckpointError(
            f"checkpoint in {tmp} lacks the state of logical ranks {missing}: every "
            f"rank in [0, {world}) must be saved by the worker hosting it"
        )
    for rel, digest in files.items():
        size = (tmp / rel).stat().st_size
        if size != digest.size:
            raise CheckpointError(
                f"{tmp / rel} has {size} bytes, its writer reported {digest.size}"
            )


def commit(root: Path, tmp: Path, step: int) -> Path:
    """Rename the complete temporary directory to its committed name (atomic), fsync root."""
    final = root / cio.committed_name(step)
    if final.exists():  # an abandoned timeline reached this step before
        aside = root / f"{final.name}.old-{os.getpid()}"
        os.rename(final, aside)
        cio.remove_tree(aside)
    os.rename(tmp, final)
    cio.fsync_dir(root)
    return final


def prune(root: Path, step: int, keep: int) -> None:
    """After committing ``step``: keep it and ``keep - 1`` older ones; drop debris.

    Committed steps above ``step`` belong to a timeline the job abandoned when it resumed
    from an earlier checkpoint (the newer one was damaged), so they go too.
    """
    committed = cio.committed_steps(root)
    for s, path in committed.items():
        if s > step:
            logger.warning(
                "removing checkpoint %s: the job resumed from an earlier step and "
                "committed step %d",
                path,
                step,
            )
            cio.remove_tree(path)
    older = sorted((s for s in committed if s < step), reverse=True)
    for s in older[keep - 1 :]:
        cio.remove_tree(committed[s])
    for s, path in cio.temporary_steps(root).items():
        if s < step:  # every worker finished its saves up to ``step``
            cio.remove_tree(path)
    for path in cio.doomed_dirs(root):
        cio.remove_tree(path)


def remove_stale(root: Path) -> None:
    """Worker 0 at start-up removes temporary directories of interrupted writes.

    Anything last modified before this process started belongs to an earlier launch (a
    launch's workers reach their first checkpoint only after worker 0 started); a temporary
    directory that a faster worker of this launch already writes is kept.
    """
    for path in [*cio.temporary_steps(root).values(), *cio.doomed_dirs(root)]:
        try:
            stale = cio.newest_mtime(path) < cio.PROCESS_STARTED_AT
        except FileNotFoundError:
            continue
        if stale:
            logger.info("removing %s left by an interrupted checkpoint write", path)
            cio.remove_tree(path)
