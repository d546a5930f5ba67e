"""Module buffers (BatchNorm running statistics, ...) under DDP's ``broadcast_buffers`` rule.

Under DDP every rank keeps its own buffers, and before each training forward rank 0's
buffers are broadcast to all ranks. So within a step every rank's forward starts from
rank 0's buffers as they stood after rank 0's previous forward, and what rank 0 holds at
the end (what ``torch.save(model.state_dict())`` on rank 0 writes) is rank 0's buffers
after its own last forward.

Replica splicing reproduces that with one copy of the module per worker: a *canonical*
copy of the buffers (rank 0's) is loaded into the module at the first forward of every
micro-batch; after logical rank 0's forward its buffers are kept as the next canonical
copy, and at the end of the step they become worker 0's module buffers (so worker 0 holds,
and checkpoints, rank 0's buffers, as DDP's rank 0 does). When the next step begins,
worker 0 broadcasts its canonical copy to every worker: the same single broadcast per step
that DDP makes before each forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle

__all__ = ["BufferRule"]


class BufferRule:
    """Keeps rank 0's buffers and loads them before each micro-batch's first forward."""

    def __init__(
        self,
        modules: Sequence[torch.nn.Module],
        *,
        current_rank: Callable[[], int | None],
        workers: int,
    ) -> None:
        self._current_rank = current_rank
        self._workers = workers
        self._per_module: list[list[torch.Tensor]] = []
        seen: set[int] = set()
        for m in modules:
            own = []
            for b in m.buffers():
                if id(b) not in seen:
                    seen.add(id(b))
                    own.append(b)
            self._per_module.append(own)
        self._live = [b for own in self._per_module for b in own]
        self._canonical = [b.detach().clone() for b in self._live]
        self._next: list[torch.Tensor] | None = None
        self._dirty = False
        self._loaded: set[int] = set()
        self._handles: list[RemovableHandle] = []
        for i, m in enumerate(modules):
            if self._per_module[i]:
                self._handles.append(m.register_forward_pre_hook(self._pre_hook(i)))
                self._handles.append(m.register_forward_hook(self._post_hook(i)))

    @property
    def active(self) -> bool:
        return bool(self._live)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def begin_micro(self) -> None:
        self._loaded.clear()

    def _pre_hook(self, i: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _args: Any) -> None:
            if self._current_rank() is None or i in self._loaded:
                return
            self._loaded.add(i)
            start = sum(len(o) for o in self._per_module[:i])
            own = self._per_module[i]
            with torch.no_grad():
                torch._foreach_copy_(own, self._canonical[start : start + len(own)])

        return hook

    def _post_hook(self, i: int) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _args: Any, _out: Any) -> None:
            if self._current_rank() != 0:
                return
            if self._next is None:
                self._next = [c.clone() for c in self._canonical]
            start = sum(len(o) for o in self._per_module[:i])
            own = self._per_module[i]
            with torch.no_grad():
                torch._foreach_copy_(self._next[start : start + len(own)], own)

        return hook

    def begin_step(self) -> None:
        """Every worker, before a step's first micro-batch: adopt worker 0's copy (P > 1)."""
        if self._dirty and self._workers > 1:
            self._broadcast()
        self._dirty = False

    def end_step(self) -> None:
        """Rank 0's buffers of this step become the canonical copy (no communication)."""
        if not self._live:
            return
        self._dirty = True
        if self._next is not None:
            self._canonical, self._next = self._next, None
            with torch.no_grad():
                torch._foreach_copy_(self._live, self._canonical)

    def _broadcast(self) -> None:
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, b in enumerate(self._canonical):
            by_kind.setdefault((b.device, b.dtype), []).append(i)
        for idx in by_kind.values():
            tensors = [self._canonical[i] for i in idx]
            flat = torch.cat([t.reshape(-1) for t in tensors])
            dist.broadcast(flat, src=0)
            offset = 0
            for t in tensors:
                n = t.numel()
                t.copy_(flat[offset : offset + n].view_as(t))
                offset += n

    def reset_from_module(self) -> None:
        """The module's buffers became the truth (prepare, resume): adopt them."""
        self._canonical = [b.detach().clone() for b in self._live]
        self._next = None
        self._dirty = False
