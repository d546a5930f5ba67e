"""Per-logical-rank random number streams, swapped in and out of the process.

Every logical rank owns a copy of the process-global generators (torch CPU, the current
CUDA device, Python ``random``, NumPy's legacy global ``RandomState``), as a DDP process
would. A :class:`StreamSwitcher` keeps them in slots and loads exactly one of them into the
process at a time; a switch to the stream that is already active costs nothing.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tidal.runtime.errors import TidalRuntimeError

__all__ = ["MAIN", "RNGState", "StreamSwitcher", "capture", "restore"]

MAIN = "main"
"""Slot name of the worker's main stream: used outside the loader loop, same on all workers."""


@dataclass(frozen=True, slots=True)
class RNGState:
    """One snapshot of every process-global generator."""

    torch_cpu: torch.Tensor
    cuda: torch.Tensor | None
    python: tuple[Any, ...]
    numpy: tuple[Any, ...]

    def to_dict(self) -> dict[str, Any]:
        """Checkpoint form: tensors, ints and floats only (loads with ``weights_only``)."""
        version, internal, gauss = self.python
        np_name, keys, pos, has_gauss, cached = self.numpy
        if np_name != "MT19937":
            raise TidalRuntimeError(f"unsupported NumPy bit generator {np_name!r}")
        return {
            "torch_cpu": self.torch_cpu.clone(),
            "has_cuda": int(self.cuda is not None),
            "cuda": self.cuda.clone()
            if self.cuda is not None
            else torch.zeros(0, dtype=torch.uint8),
            "python_version": int(version),
            "python_state": torch.tensor(internal, dtype=torch.int64),
            "python_has_gauss": int(gauss is not None),
            "python_gauss": float(gauss) if gauss is not None else 0.0,
            "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss),
            "numpy_gauss": float(cached),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RNGState:
        gauss = float(d["python_gauss"]) if int(d["python_has_gauss"]) else None
        python = (
            int(d["python_version"]),
            tuple(int(v) for v in d["python_state"].tolist()),
            gauss,
        )
        keys = np.asarray(d["numpy_keys"].numpy(), dtype=np.uint32)
        numpy_state = (
            "MT19937",
            keys,
            int(d["numpy_pos"]),
            int(d["numpy_has_gauss"]),
            float(d["numpy_gauss"]),
        )
        cuda = d["cuda"].clone() if int(d["has_cuda"]) else None
        torch_cpu = d["torch_cpu"].clone().to(torch.uint8)
        return cls(torch_cpu=torch_cpu, cuda=cuda, python=python, numpy=numpy_state)

    def equals(self, other: RNGState) -> bool:
        """Exact comparison (tests and sanity checks)."""
        same_cuda = (self.cuda is None and other.cuda is None) or (
            self.cuda is not None and other.cuda is not None and torch.equal(self.cuda, other.cuda)
        )
        same_python = self.python == other.python
        na, nb = self.numpy, other.numpy
        same_numpy = na[0] == nb[0] and np.array_equal(na[1], nb[1]) and na[2:] == nb[2:]
        return (
            bool(torch.equal(self.torch_cpu, other.torch_cpu))
            and same_cuda
            and same_python
            and same_numpy
        )


def capture(cuda_device: torch.device | None) -> RNGState:
    """Snapshot the process-global generators (CUDA only for ``cuda_device``)."""
    cuda = torch.cuda.get_rng_state(cuda_device) if cuda_device is not None else None
    return RNGState(
        torch_cpu=torch.get_rng_state(),
        cuda=cuda,
        python=random.getstate(),
        numpy=np.random.get_state(legacy=True),  # type: ignore[arg-type]
    )


def restore(state: RNGState, cuda_device: torch.device | None) -> None:
    """Load a snapshot into the process-global generators."""
    torch.set_rng_state(state.torch_cpu)
    if cuda_device is not None and state.cuda is not None:
        torch.cuda.set_rng_state(state.cuda, cuda_device)
    random.setstate(state.python)
    np.random.set_state(state.numpy)


class StreamSwitcher:
    """Keeps one :class:`RNGState` per slot and the active one loaded in the process.

    The process's generators always hold the active slot's stream; the other slots hold
    snapshots. ``switch`` saves the active stream and loads another one.
    """

    def __init__(self, slots: list[Hashable], cuda_device: torch.device | None) -> None:
        self._cuda = cuda_device
        now = capture(cuda_device)
        self._slots: dict[Hashable, RNGState] = {key: now for key in slots}
        self._slots.setdefault(MAIN, now)
        self._active: Hashable = MAIN

    @property
    def active(self) -> Hashable:
        return self._active

    def switch(self, key: Hashable) -> None:
        """Make ``key``'s stream the one the process draws from."""
        if key == self._active:
            return
        if key not in self._slots:
            raise TidalRuntimeError(f"no random stream for slot {key!r}")
        self._slots[self._active] = capture(self._cuda)
        restore(self._slots[key], self._cuda)
        self._active = key

    def seed_slots(self, seed: int) -> None:
        """Seed every logical-rank slot r with ``seed + r`` (torch, CUDA, NumPy, random).

        The idiom of DDP scripts that call ``torch.manual_seed(seed + rank)`` after setup.
        """
        if self._active != MAIN:
            raise TidalRuntimeError("seed_slots must run while the main stream is active")
        main = capture(self._cuda)
        for key in self._slots:
            if key == MAIN or not isinstance(key, int):
                continue
            torch.manual_seed(seed + key)
            np.random.seed((seed + key) % 2**32)
            random.seed(seed + key)
            self._slots[key] = capture(self._cuda)
        restore(main, self._cuda)

    def get(self, key: Hashable) -> RNGState:
        """The stream's current state (read live if it is the active one)."""
        if key == self._active:
            return capture(self._cuda)
        return self._slots[key]

    def set(self, key: Hashable, state: RNGState) -> None:
        """Replace a stream's state (loaded at once if it is the active one)."""
        if key not in self._slots:
            raise TidalRuntimeError(f"no random stream for slot {key!r}")
        self._slots[key] = state
        if key == self._active:
            restore(state, self._cuda)
