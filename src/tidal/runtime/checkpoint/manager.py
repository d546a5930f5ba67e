"""Checkpoints: one committed directory per step, shared state once, per-rank state per rank.

Layout under the checkpoint root (see ``docs/launch.md``)::

    ckpt-00000120/                 committed: renamed from ckpt-00000120.tmp when complete
      manifest.json                format, step, world, workers at save time, meta, files
      manifest.digest              checksum of manifest.json
      shared/                      PyTorch distributed checkpoint (DCP) of the shared state
      shared-structure.json        exact container structure of the shared state
      ranks/rank-00000.pt ...      per-logical-rank state (torch.save), one file per rank

Every worker calls :meth:`CheckpointManager.save` for the same step. Workers coordinate
only through the filesystem: each writes its per-rank files into the temporary directory,
then a done-marker listing their checksums; worker 0 writes the shared state, waits for
every marker, writes the manifest, fsyncs and renames. No collectives, so a save can run
on a background thread while training goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidal.runtime.checkpoint import commit, manifest
from tidal.runtime.checkpoint import files as cio
from tidal.runtime.checkpoint import tensors as state
from tidal.runtime.checkpoint.manifest import CheckpointInfo
from tidal.runtime.errors import CheckpointError, CheckpointWorldMismatch, StateFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointWorldMismatch",
]


@dataclass(frozen=True)
class _SaveJob:
    step: int
    shared: dict[str, Any] | None
    skeleton: dict[str, Any] | None  # the shared state's container structure
    per_rank: dict[int, dict[str, Any]]
    meta: dict[str, Any]


def _lower_priority() -> None:
    """Run background writes at a lower CPU priority than training (Linux: per thread; the
    helper threads the writer starts inherit it). Elsewhere a no-op."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class CheckpointManager:
    """Writes and finds the checkpoints of one job from one physical worker.

    ``worker`` is this process's physical index (0..workers-1); ``world`` the job's fixed
    logical world size W. ``keep`` committed checkpoints are kept (the newest always).
    ``commit_timeout_s`` bounds how long worker 0 waits for the other workers' parts.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        worker: int,
        workers: int,
        world: int,
        keep: int = 2,
        commit_timeout_s: float = 300.0,
        io_threads: int = 2,
        _on_phase: Callable[[str], None] | None = None,
    ) -> None:
        for name, value in (("workers", workers), ("world", world), ("keep", keep)):
            if type(value) is not int or value < 1:
                raise CheckpointError(f"{name} must be an int >= 1, got {value!r}")
        if type(worker) is not int or not 0 <= worker < workers:
            raise CheckpointError(f"worker must be in [0, {workers}), got {worker!r}")
        if world % workers != 0:
            raise CheckpointError(f"workers ({workers}) must divide world ({world})")
        if commit_timeout_s <= 0:
            raise CheckpointError(f"commit_timeout_s must be > 0, got {commit_timeout_s!r}")
        if type(io_threads) is not int or io_threads < 1:
            raise CheckpointError(f"io_threads must be an int >= 1, got {io_threads!r}")
        self.root = Path(root).absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create checkpoint root {self.root}: {e}") from e
        if not self.root.is_dir():
            raise CheckpointError(f"checkpoint root {self.root} is not a directory")
        self.worker = worker
        self.workers = workers
        self.world = world
        self.keep = keep
        self._commit_timeout_s = commit_timeout_s
        self._io_threads = io_threads
        self._on_phase = _on_phase  # test hook: called at each phase of a write
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._verified: dict[Path, tuple[tuple[int, int], CheckpointInfo, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        if worker == 0:
            self._remove_stale()

    # ------------------------------------------------------------ saving

    def save(
        self,
        step: int,
        *,
        shared: dict[str, Any] | None,
        per_rank: dict[int, dict[str, Any]],
        meta: dict[str, Any],
        asynchronous: bool = False,
    ) -> None:
        """Save this worker's part of the checkpoint of ``step`` (see the module docstring).

        Tensors are snapshotted before this returns. With ``asynchronous`` the files are
        written on a background thread; a save waits for the previous asynchronous one
        first, so at most one snapshot is held. Synchronous saves return when this
        worker's part is durable, and on worker 0 when the checkpoint is committed.
        """
        if self._closed:
            raise CheckpointError(f"checkpoint manager for {self.root} is closed")
        self._validate_save(step, shared, per_rank, meta)
        try:  # structure errors surface here, at the caller, even for asynchronous saves
            skeleton = None if shared is None else state.skeleton_of(shared)
            for r, s in per_rank.items():
                state.skeleton_of(s, f"per_rank[{r}]")
        except StateFormatError as e:
            raise CheckpointError(f"cannot checkpoint step {step}: {e}") from e
        self.wait()
        job = _SaveJob(
            step=step,
            skeleton=skeleton,
            shared=None if shared is None else state.snapshot(shared, copy_tensors=asynchronous),
            per_rank={
                r: state.snapshot(dict(s), copy_tensors=asynchronous)
                for r, s in sorted(per_rank.items())
            },
            meta=json.loads(json.dumps(meta)),
        )
        if not asynchronous:
            self._write(job)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="tidal-ckpt", initializer=_lower_priority
            )
        self._pending = self._pool.submit(self._write, job)

    @property
    def saving(self) -> bool:
        """Whether an asynchronous save is still being written."""
        pending = self._pending
        return pending is not None and not pending.done()

    def wait(self) -> None:
        """Block until the outstanding asynchronous save is done; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for outstanding saves (re-raising their errors) and release the thread."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _validate_save(
        self,
        step: int,
        shared: dict[str, Any] | None,
        per_rank: dict[int, dict[str, Any]],
        meta: dict[str, Any],
    ) -> None:
        if type(step) is not int or step < 0:
            raise CheckpointError(f"step must be an int >= 0, got {step!r}")
        if self.worker == 0 and not isinstance(shared, Mapping):
            raise CheckpointError(
                f"worker 0 must pass the shared state as a dict, got {type(shared).__name__}"
            )
        if self.worker != 0 and shared is not None:
            raise CheckpointError(
                f"only worker 0 passes shared state; worker {self.worker} passed a "
                f"{type(shared).__name__}"
            )
        if not isinstance(per_rank, Mapping):
            raise CheckpointError(f"per_rank must be a dict, got {type(per_rank).__name__}")
        for r, s in per_rank.items():
            if type(r) is not int or not 0 <= r < self.world:
                raise CheckpointError(
                    f"per_rank key {r!r} is not a logical rank in [0, {self.world})"
                )
            if not isinstance(s, Mapping):
                raise CheckpointError(f"per_rank[{r}] must be a dict, got {type(s).__name__}")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"meta must be JSON-serialisable: {e}") from e

    def _write(self, job: _SaveJob) -> None:
        started = time.monotonic()
        tmp = self.root / cio.temporary_name(job.step)
        try:
            self._phase("start")
            (tmp / cio.RANKS_DIR).mkdir(parents=True, exist_ok=True)
            if self.worker != 0:
                cio.remove_if_exists(tmp / cio.done_marker(self.worker))
            files: dict[str, cio.FileDigest] = {}
            if job.shared is not None:
                files.update(self._write_shared(tmp, job.shared, job.skeleton or {}))
            for r, rank_state in job.per_rank.items():
                data = state.encode_rank_state(rank_state)
                rel = cio.rank_file(r)
                cio.write_bytes_durably(tmp / rel, data)
                files[rel] = cio.digest_bytes(data)
                self._phase("rank-written")
            if self.worker != 0:
                cio.fsync_dir(tmp / cio.RANKS_DIR)
                cio.write_json_atomically(
                    tmp / cio.done_marker(self.worker),
                    {
                        "step": job.step,
                        "worker": self.worker,
                        "workers": self.workers,
                        "world": self.world,
                        "files": {rel: d.to_json() for rel, d in files.items()},
                    },
                )
                logger.debug("worker %d wrote its part of step %d", self.worker, job.step)
                return
            files.update(self._await_other_workers(tmp, job.step))
            self._check_ranks_complete(tmp, files)
            self._write_manifest(tmp, job, files)
            self._phase("manifest-written")
            final = self._commit(tmp, job.step)
            total = sum(d.size for d in files.values())
            logger.info(
                "checkpoint step %d committed: %.1f MB in %.2f s (%s)",
                job.step,
                total / 1e6,
                time.monotonic() - started,
                final,
            )
            self._prune(job.step)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"saving checkpoint of step {job.step} into {tmp} failed: {e}"
            ) from e

    def _write_shared(
        self, tmp: Path, shared: dict[str, Any], skeleton: dict[str, Any]
    ) -> dict[str, cio.FileDigest]:
        structure = json.dumps(skeleton, separators=(",", ":")).encode()
        cio.write_bytes_durably(tmp / cio.SHARED_STRUCTURE, structure)
        shared_dir = tmp / cio.SHARED_DIR
        if shared_dir.exists():  # a previous failed attempt in this process
            cio.remove_tree(shared_dir)
        written = state.save_shared(shared, shared_dir)
        self._phase("shared-written")
        digests = {f"{cio.SHARED_DIR}/{name}": d for name, d in written.items()}
        digests[cio.SHARED_STRUCTURE] = cio.digest_bytes(structure)
        return digests

    def _await_other_workers(self, tmp: Path, step: int) -> dict[str, cio.FileDigest]:
        return commit.await_markers(
            tmp, step, workers=self.workers, world=self.world, timeout_s=self._commit_timeout_s
        )

    def _check_ranks_complete(self, tmp: Path, files: Mapping[str, cio.FileDigest]) -> None:
        commit.check_ranks_complete(tmp, files, self.world)

    def _write_manifest(
        self, tmp: Path, job: _SaveJob, files: Mapping[str, cio.FileDigest]
    ) -> None:
        manifest.write_manifest(
            tmp, step=job.step, world=self.world, workers=self.workers, files=files, meta=job.meta
        )
        for worker in range(1, self.workers):
            cio.remove_if_exists(tmp / cio.done_marker(worker))
        cio.fsync_tree(tmp)

    def _commit(self, tmp: Path, step: int) -> Path:
        return commit.commit(self.root, tmp, step)

    def _prune(self, step: int) -> None:
        commit.prune(self.root, step, self.keep)

    def _remove_stale(self) -> None:
        commit.remove_stale(self.root)

    def _phase(self, name: str) -> None:
        if self._on_phase is not None:
            self._on_phase(name)

    # ------------------------------------------------------------ finding and loading

    def latest(self) -> CheckpointInfo | None:
        """The newest committed checkpoint whose checksums verify, or None.

        Partial or corrupt checkpoints are skipped with a warning. A checkpoint of another
        logical world size raises :class:`CheckpointWorldMismatch`.
        """
        for _step, path in sorted(cio.committed_steps(self.root).items(), reverse=True):
            try:
                return self._verified_entry(path)[0]
            except CheckpointWorldMismatch:
                raise
            except CheckpointError as e:
                logger.warning("skipping checkpoint %s: %s", path, e)
        return None

    def load_shared(self, info: CheckpointInfo, template: dict[str, Any]) -> dict[str, Any]:
        """Load the shared state; ``template`` has the structure ``shared`` had at save.

        Tensors whose shape and dtype match the template's are loaded in place into the
        template's tensors (keeping their device); the returned dict has the saved
        structure, including entries the template lacks (e.g. optimizer state that is
        still empty before the first step).
        """
        self._verified_entry(info.path)
        try:
            skeleton = cio.read_json(info.path / cio.SHARED_STRUCTURE)
            loaded = state.load_shared(info.path / cio.SHARED_DIR, skeleton, template)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load shared state from {info.path}: {e}") from e
        return dict(loaded)

    def load_rank(self, info: CheckpointInfo, logical_rank: int) -> dict[str, Any]:
        """Load the state of one logical rank (any physical worker may load any rank)."""
        if type(logical_rank) is not int or not 0 <= logical_rank < info.world:
            raise CheckpointError(
                f"logical_rank must be in [0, {info.world}) for {info.path}, got {logical_rank!r}"
            )
        _, raw = self._verified_entry(info.path)
        rel = cio.rank_file(logical_rank)
        path = info.path / rel
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CheckpointError(f"cannot read {path}: {e}") from e
        expected = manifest.expected_digest(raw, rel, info.path)
        if cio.digest_bytes(data) != expected:
            raise CheckpointError(f"{path} does not match its checksum in the manifest")
        try:
            return state.decode_rank_state(data, path)
        except Exception as e:
            raise CheckpointError(f"cannot load {path}: {e}") from e

    def _verified_entry(self, path: Path) -> tuple[CheckpointInfo, dict[str, Any]]:
        """Verify a checkpoint once per manifest version (cached by inode and mtime)."""
        manifest_path = path / cio.MANIFEST
        try:
            st = manifest_path.stat()
        except OSError as e:
            raise CheckpointError(f"{manifest_path} is missing: {e}") from e
        stamp = (st.st_ino, st.st_mtime_ns)
        with self._lock:
            cached = self._verified.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        info, raw = manifest.verify(path, self.world, self._io_threads)
        with self._lock:
            self._verified[path] = (stamp, info, raw)
        return info, raw
