"""Turning training state into checkpoint files and back.

* :func:`snapshot` copies a nested state (dicts, lists, tuples, tensors, plain values)
  so training may mutate the live objects while the copy is written.
* Shared state is written with PyTorch's distributed checkpoint (DCP) without a process
  group, so stock tools read it. DCP stringifies dict keys and drops empty containers,
  so we also store the *structure* (a JSON skeleton that remembers int keys, lists and
  empty dicts) and rebuild exactly the structure that was saved.
* Per-logical-rank state is one ``torch.save`` file per rank, loadable with
  ``weights_only=True`` for the usual contents (tensors, numbers, RNG states, NumPy
  arrays).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import os
import pickle
import threading
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from tidal.runtime.checkpoint import files as cio
from tidal.runtime.errors import StateFormatError

logger = logging.getLogger(__name__)

# DCP warns on every call that no process group is used; that is what we want.
warnings.filterwarnings(
    "ignore",
    message=r"torch\.distributed is disabled, unavailable or uninitialized",
    category=UserWarning,
)
warnings.filterwarnings(
    "ignore", message=r"Detected an existing checkpoint in .*overwriting", category=UserWarning
)

Skeleton = dict[str, Any]

# Pickling these would drag whole live objects into the checkpoint (a bound method pickles
# its instance) and rebind them to copies on load; state dicts must hold data.
_CODE_TYPES = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    functools.partial,
)
PathKey = tuple[str | int, ...]


# ---------------------------------------------------------------- snapshot


def snapshot(obj: Any, *, copy_tensors: bool) -> Any:
    """Copy a nested state: containers rebuilt, tensors detached on CPU.

    With ``copy_tensors`` every tensor is cloned (for asynchronous writes); otherwise CPU
    tensors are shared and only non-CPU tensors are copied to the CPU.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            return t.to("cpu", copy=True)
        return t.clone() if copy_tensors else t
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = snapshot(v, copy_tensors=copy_tensors)
        meta = getattr(obj, "_metadata", None)
        if meta is not None:
            out._metadata = copy.deepcopy(meta)  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list):
        return [snapshot(v, copy_tensors=copy_tensors) for v in obj]
    if type(obj) is tuple:
        return tuple(snapshot(v, copy_tensors=copy_tensors) for v in obj)
    if not copy_tensors or obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    try:
        return copy.deepcopy(obj)
    except Exception:  # an object that cannot be copied is stored as it is
        logger.debug("could not deep-copy a %s; storing it by reference", type(obj).__name__)
        return obj


# ---------------------------------------------------------------- structure skeleton


def skeleton_of(obj: Any, where: str = "shared") -> Skeleton:
    """JSON description of the containers in ``obj``: dict keys (int or str), lists, leaves."""
    if isinstance(obj, Mapping):
        keys = []
        for k, v in obj.items():
            if type(k) is not str and type(k) is not int:
                raise StateFormatError(
                    f"{where}: dict key {k!r} has type {type(k).__name__}; "
                    "checkpointed state may only use str or int keys"
                )
            keys.append([k, skeleton_of(v, f"{where}[{k!r}]")])
        node: Skeleton = {"t": "dict", "k": keys}
        meta = getattr(obj, "_metadata", None)
        if isinstance(meta, Mapping):
            try:
                import json

                json.dumps(meta)
                node["m"] = meta
            except (TypeError, ValueError):
                pass
        return node
    if isinstance(obj, list):
        return {"t": "list", "v": [skeleton_of(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, tuple):
        for i, v in enumerate(obj):
            skeleton_of(v, f"{where}[{i}]")  # only to reject code inside tuples
    elif isinstance(obj, _CODE_TYPES):
        raise StateFormatError(
            f"{where} is a {type(obj).__name__} ({getattr(obj, '__qualname__', obj)!r}): a "
            "checkpoint stores data, not code (was a method patched onto the object, so that "
            "its state_dict() picked it up?)"
        )
    return {"t": "leaf"}


def rebuild(skeleton: Skeleton, flat_by_path: Mapping[PathKey, Any]) -> Any:
    """Rebuild the saved structure from DCP's loaded values keyed by DCP object paths."""

    def build(node: Skeleton, path: PathKey) -> Any:
        if path in flat_by_path:
            return flat_by_path[path]
        kind = node.get("t")
        if kind == "dict":
            out: dict[Any, Any] = OrderedDict() if "m" in node else {}
            for key, child in node["k"]:
                out[key] = build(child, (*path, str(key)))
            if "m" in node:
                out._metadata = node["m"]  # type: ignore[attr-defined]
            return out
        if kind == "list":
            return [build(child, (*path, i)) for i, child in enumerate(node["v"])]
        raise StateFormatError(
            f"value at {'.'.join(map(str, path))} is missing from the checkpoint"
        )

    if skeleton.get("t") != "dict":
        raise StateFormatError("the shared state must be a dict")
    return {key: build(child, (str(key),)) for key, child in skeleton["k"]}


def _template_tensor(template: Any, path: PathKey) -> torch.Tensor | None:
    """The tensor at a DCP object path inside ``template``, matching str keys to int keys."""
    node = template
    for part in path:
        if isinstance(node, Mapping):
            if part in node:
                node = node[part]
                continue
            if isinstance(part, str) and part.lstrip("-").isdigit() and int(part) in node:
                node = node[int(part)]
                continue
            return None
        if isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            continue
        return None
    return node if isinstance(node, torch.Tensor) else None


# ---------------------------------------------------------------- shared state (DCP)


class _HashingStream(io.RawIOBase):
    """A write-only file that computes its checksum as it is written (no second read).

    A large chunk is hashed on a helper thread *while* it is being written (the hash and the
    write release the GIL), and write() returns only when both are done: torch's zip
    writer may reuse its buffer afterwards, and waiting avoids copying the chunk. Small
    chunks are hashed in place. The helper is created by the writing thread, so it inherits
    that thread's CPU priority.
    """

    _OVERLAP_MIN = 1 << 20

    def __init__(self, raw: Any, path: Path, sink: _DigestSink) -> None:
        super().__init__()
        self._raw = raw
        self._path = path
        self._sink = sink
        self._hash = cio.new_hasher()
        self._size = 0
        self._sequential = True
        self._helper: ThreadPoolExecutor | None = None

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if len(view) < self._OVERLAP_MIN:
            n = self._raw.write(view)
            n = len(view) if n is None else n
            self._hash.update(view[:n])
        else:
            if self._helper is None:
                self._helper = ThreadPoolExecutor(1, thread_name_prefix="tidal-ckpt-hash")
            hashed = self._helper.submit(self._hash.update, view)
            try:
                n = self._raw.write(view)
            finally:
                hashed.result()
            n = len(view) if n is None else n
            if n != len(view):  # a short write: hash what was written, from scratch
                self._sequential = False
        self._size += n
        return n

    def tell(self) -> int:
        return int(self._raw.tell())

    def seek(self, offset: int, whence: int = 0) -> int:
        self._sequential = False  # the running hash no longer describes the file
        return int(self._raw.seek(offset, whence))

    def fileno(self) -> int:
        return int(self._raw.fileno())

    def flush(self) -> None:
        if not self._raw.closed:
            self._raw.flush()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
            if self._helper is not None:
                self._helper.shutdown()
            if self._sequential:
                self._sink.put(self._path, cio.FileDigest(self._hash.hexdigest(), self._size))
        super().close()


class _DigestSink:
    """Digests of the files a DCP save wrote, by path (thread-safe: DCP writes in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.digests: dict[Path, cio.FileDigest] = {}

    def put(self, path: Path, digest: cio.FileDigest) -> None:
        with self._lock:
            self.digests[path] = digest

    def rename(self, old: Path, new: Path) -> None:
        with self._lock:
            if old in self.digests:
                self.digests[new] = self.digests.pop(old)


def _hashing_writer(directory: Path, threads: int, sink: _DigestSink) -> Any:
    """DCP's FileSystemWriter, with streams that hash what they write (same files on disk)."""
    from torch.distributed.checkpoint.filesystem import FileSystem, FileSystemWriter

    class HashingFileSystem(FileSystem):
        @contextlib.contextmanager
        def create_stream(self, path: str | os.PathLike[str], mode: str) -> Iterator[Any]:
            if "w" not in mode:
                with super().create_stream(path, mode) as stream:
                    yield stream
                return
            target = Path(path)
            with open(target, mode) as raw, _HashingStream(raw, target, sink) as stream:
                yield stream

        def rename(self, path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> None:
            super().rename(path, new_path)
            sink.rename(Path(path), Path(new_path))

    writer = FileSystemWriter(
        directory, single_file_per_rank=True, sync_files=True, thread_count=threads
    )
    writer.fs = HashingFileSystem()
    return writer


def _without_zip_crc() -> contextlib.AbstractContextManager[Any]:
    """torch.save without the per-record zip CRC32 (this thread only).

    The CRC costs more than the write itself (~0.6 GB/s on one core) and is redundant here:
    every checkpoint file's checksum is in the manifest and checked before loading. The
    override is thread-local, so the user's own ``torch.save`` calls are unaffected.
    """
    from torch.utils.serialization import config

    return config.patch({"save.compute_crc32": False})  # type: ignore[attr-defined,no-any-return]


def save_shared(state: Mapping[str, Any], directory: Path) -> dict[str, cio.FileDigest]:
    """Write ``state`` as a DCP checkpoint into ``directory`` (files fsynced by DCP).

    Returns the checksum of every file written, keyed by its name inside ``directory``; the
    hashes are computed while writing, and any file that was not written strictly
    sequentially is read back to hash it. One writer thread: without the CRC the write is
    bound by the disk, and DCP's extra threads would not inherit the thread-local setting.
    """
    from torch.distributed.checkpoint.state_dict_saver import save

    sink = _DigestSink()
    with _without_zip_crc():
        save(dict(state), storage_writer=_hashing_writer(directory, 1, sink), no_dist=True)
    digests: dict[str, cio.FileDigest] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        known = sink.digests.get(path)
        digests[rel] = known if known is not None else cio.digest_file(path)
    return digests


def load_shared(directory: Path, skeleton: Skeleton, template: Mapping[str, Any]) -> Any:
    """Read a DCP checkpoint written by :func:`save_shared` and rebuild its structure.

    Tensors are loaded in place into ``template``'s tensors where shape and dtype match
    (so they keep their device); other tensors are allocated on the CPU.
    """
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict_loader import load

    reader = FileSystemReader(directory)
    metadata = reader.read_metadata()
    mappings: Mapping[str, PathKey] = metadata.planner_data or {}
    flat: dict[str, Any] = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            path = tuple(mappings.get(fqn, (fqn,)))
            live = _template_tensor(template, path)
            if live is not None and live.shape == md.size and live.dtype == md.properties.dtype:
                flat[fqn] = live.detach()
            else:
                flat[fqn] = torch.empty(md.size, dtype=md.properties.dtype)
        else:
            flat[fqn] = None  # filled in by the planner from the pickled bytes
    planner = DefaultLoadPlanner(flatten_state_dict=False, flatten_sharded_tensors=False)
    load(flat, storage_reader=FileSystemReader(directory), planner=planner, no_dist=True)
    by_path = {tuple(mappings.get(fqn, (fqn,))): value for fqn, value in flat.items()}
    return rebuild(skeleton, by_path)


# ---------------------------------------------------------------- per-rank state


def encode_rank_state(state: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    with _without_zip_crc():
        torch.save(dict(state), buf)
    return buf.getvalue()


def _numpy_safe_globals() -> list[Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    found: list[Any] = [np.ndarray, np.dtype]
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["_reconstruct"])
            found.append(mod._reconstruct)
            break
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found.extend(getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType"))
    return found


def decode_rank_state(data: bytes, where: Path) -> dict[str, Any]:
    """Load a per-rank file; ``weights_only`` first, full unpickling only for exotic contents.

    The bytes were checked against the manifest's checksum before this is called.
    """
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        logger.debug("%s needs full unpickling (non-tensor objects in per-rank state)", where)
        loaded = torch.load(io.BytesIO(data), weights_only=False, map_location="cpu")
    if not isinstance(loaded, dict):
        raise StateFormatError(f"{where}: expected a dict, found {type(loaded).__name__}")
    return loaded
