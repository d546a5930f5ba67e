"""Sorting what ``prepare`` was given into kinds, and naming each for checkpoints."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from tidal.runtime.errors import PrepareError

__all__ = ["Kind", "Prepared", "classify"]


class Kind(enum.Enum):
    MODEL = "model"
    OPTIMIZER = "optimizer"
    LOADER = "loader"
    SCHEDULER = "scheduler"
    SCALER = "scaler"
    EXTRA = "extra"


@dataclass(frozen=True, slots=True)
class Prepared:
    """One object given to ``prepare``: its kind, position and checkpoint key."""

    kind: Kind
    position: int
    key: str
    obj: Any


def _kind_of(obj: Any, position: int) -> Kind:
    if isinstance(obj, torch.nn.Module):
        return Kind.MODEL
    if isinstance(obj, torch.optim.Optimizer):
        return Kind.OPTIMIZER
    if isinstance(obj, DataLoader):
        return Kind.LOADER
    schedulers: tuple[type, ...] = (torch.optim.lr_scheduler.LRScheduler,)
    plateau = getattr(torch.optim.lr_scheduler, "ReduceLROnPlateau", None)
    if plateau is not None:
        schedulers = (*schedulers, plateau)
    if isinstance(obj, schedulers):
        return Kind.SCHEDULER
    if isinstance(obj, torch.amp.GradScaler):
        return Kind.SCALER
    if callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    ):
        return Kind.EXTRA
    raise PrepareError(
        f"prepare argument {position} is a {type(obj).__name__}: expected a model, optimizer, "
        "DataLoader, LR scheduler, GradScaler, or an object with state_dict/load_state_dict"
    )


def classify(objects: Sequence[Any]) -> list[Prepared]:
    """Kinds and checkpoint keys (``model``, ``model_1``, ``optimizer``, ...) in order given."""
    counts: dict[Kind, int] = {}
    seen: dict[int, int] = {}
    out = []
    for position, obj in enumerate(objects):
        if id(obj) in seen:
            raise PrepareError(
                f"prepare argument {position} is the same object as argument {seen[id(obj)]}"
            )
        seen[id(obj)] = position
        kind = _kind_of(obj, position)
        n = counts.get(kind, 0)
        counts[kind] = n + 1
        key = kind.value if n == 0 else f"{kind.value}_{n}"
        out.append(Prepared(kind, position, key, obj))
    if counts.get(Kind.LOADER, 0) > 1:
        raise PrepareError(
            f"prepare takes one DataLoader, the training loader; got {counts[Kind.LOADER]}. "
            "Leave evaluation loaders unprepared (see docs/runtime.md)"
        )
    if counts.get(Kind.MODEL, 0) == 0:
        raise PrepareError("prepare needs the model (a torch.nn.Module) among its arguments")
    return out
