"""The checkpoint manifest: what a verified checkpoint is, and verification.

``manifest.json`` lists every file of a committed checkpoint with its checksum and size;
``manifest.digest`` holds the checksum of ``manifest.json`` itself, so a damaged manifest
is detected too. A checkpoint is used only when all of these match.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidal.runtime.checkpoint import files as cio
from tidal.runtime.errors import CheckpointError, CheckpointWorldMismatch

__all__ = ["CheckpointInfo", "expected_digest", "read_manifest", "verify", "write_manifest"]


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint whose checksums verified."""

    step: int
    path: Path
    world: int
    meta: dict[str, Any] = field(hash=False)


def write_manifest(
    tmp: Path,
    *,
    step: int,
    world: int,
    workers: int,
    files: Mapping[str, cio.FileDigest],
    meta: Mapping[str, Any],
) -> None:
    """Write ``manifest.json`` and ``manifest.digest`` (fsynced) into the temporary directory."""
    import torch

    manifest = {
        "format": cio.FORMAT_NAME,
        "version": cio.FORMAT_VERSION,
        "checksum": cio.HASH_NAME,
        "step": step,
        "world": world,
        "workers": workers,
        "created_at": time.time(),
        "torch_version": torch.__version__,
        "shared": cio.SHARED_DIR,
        "shared_structure": cio.SHARED_STRUCTURE,
        "ranks": {str(r): cio.rank_file(r) for r in range(world)},
        "files": {rel: files[rel].to_json() for rel in sorted(files)},
        "meta": dict(meta),
    }
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    cio.write_bytes_durably(tmp / cio.MANIFEST, data)
    cio.write_bytes_durably(tmp / cio.MANIFEST_DIGEST, cio.digest_bytes(data).digest.encode())


def read_manifest(path: Path, world: int) -> dict[str, Any]:
    """Read and check a committed checkpoint's manifest (not yet its files)."""
    manifest_path = path / cio.MANIFEST
    try:
        data = manifest_path.read_bytes()
        recorded = (path / cio.MANIFEST_DIGEST).read_text().strip()
    except OSError as e:
        raise CheckpointError(f"cannot read the manifest of {path}: {e}") from e
    if cio.digest_bytes(data).digest != recorded:
        raise CheckpointError(f"{manifest_path} does not match {cio.MANIFEST_DIGEST}")
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise CheckpointError(f"{manifest_path} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{manifest_path} is not a JSON object")
    if manifest.get("format") != cio.FORMAT_NAME or manifest.get("version") != cio.FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: unsupported format {manifest.get('format')!r} "
            f"version {manifest.get('version')!r}"
        )
    for key, kind in (("step", int), ("world", int), ("workers", int), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise CheckpointError(f"{manifest_path}: {key!r} is missing or not a {kind.__name__}")
    if not isinstance(manifest.get("meta"), dict):
        raise CheckpointError(f"{manifest_path}: 'meta' is missing or not an object")
    if cio.committed_name(manifest["step"]) != path.name:
        raise CheckpointError(
            f"{manifest_path} says step {manifest['step']}, the directory is {path.name}"
        )
    if manifest["world"] != world:
        raise CheckpointWorldMismatch(
            f"{path} was written by a job with world {manifest['world']}; this job has "
            f"world {world} (the logical world size is fixed for a job's life: use "
            "another checkpoint directory)"
        )
    return manifest


def verify(path: Path, world: int, threads: int) -> tuple[CheckpointInfo, dict[str, Any]]:
    """Check the manifest and every file's size and checksum; return the info and manifest."""
    manifest = read_manifest(path, world)
    expected = {rel: _digest_from_manifest(manifest, rel, path) for rel in manifest["files"]}
    for rel, digest in expected.items():
        file_path = path / rel
        try:
            size = file_path.stat().st_size
        except OSError as e:
            raise CheckpointError(f"{file_path} is missing: {e}") from e
        if size != digest.size:
            raise CheckpointError(f"{file_path} has {size} bytes, the manifest says {digest.size}")
    actual = cio.digest_files(path, expected, threads)
    for rel, digest in expected.items():
        if actual[rel] != digest:
            raise CheckpointError(f"{path / rel} does not match its checksum in the manifest")
    info = CheckpointInfo(
        step=manifest["step"], path=path, world=manifest["world"], meta=manifest["meta"]
    )
    return info, manifest


def _digest_from_manifest(manifest: Mapping[str, Any], rel: str, path: Path) -> cio.FileDigest:
    try:
        return cio.FileDigest.from_json(manifest["files"].get(rel), f"{path / cio.MANIFEST}: {rel}")
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def expected_digest(manifest: Mapping[str, Any], rel: str, path: Path) -> cio.FileDigest:
    """The manifest's record of one file (CheckpointError when it has none)."""
    return _digest_from_manifest(manifest, rel, path)
