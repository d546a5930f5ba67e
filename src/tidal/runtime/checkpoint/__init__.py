"""Checkpoints: one committed directory per step, shared state once, per-rank state per rank.

* :mod:`.manager`: :class:`CheckpointManager`, which writes (synchronously or on a background
  thread), finds and loads the checkpoints of one job from one physical worker;
* :mod:`.commit`: waiting for every worker's part, the atomic rename, pruning;
* :mod:`.manifest`: the manifest with every file's checksum, and verification;
* :mod:`.files`: durable file primitives and checksums (no PyTorch);
* :mod:`.tensors`: turning training state into files and back (PyTorch DCP, ``torch.save``).

The directory names and the manifest's header (step, world) are the job directory's
contract with the supervisor, defined in :mod:`tidal.launch.jobdir`. The format is
described in ``docs/launch.md``. Importing this package loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidal.runtime.errors import CheckpointError, CheckpointWorldMismatch

if TYPE_CHECKING:
    from tidal.runtime.checkpoint.manager import CheckpointManager
    from tidal.runtime.checkpoint.manifest import CheckpointInfo

__all__ = ["CheckpointError", "CheckpointInfo", "CheckpointManager", "CheckpointWorldMismatch"]

_LAZY = {
    "CheckpointManager": "tidal.runtime.checkpoint.manager",
    "CheckpointInfo": "tidal.runtime.checkpoint.manifest",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidal.runtime.checkpoint' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
