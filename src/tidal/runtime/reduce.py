"""Summing per-logical-rank gradients across workers.

A *value* here is a list of tensors, one per trainable parameter, in a fixed parameter
order (a "gradient set"). Each worker hands its frontier (see :mod:`tidal.runtime.tree`)
to a :class:`CrossWorker` strategy, which returns the sum over all W logical ranks
(identical on every worker) and the sum of a few small integer *flags* every worker
contributes (used to agree on stopping and checkpointing without an extra collective).

Strategies:

* :class:`LocalReduce` — one worker (P = 1): the tree is finished locally.
* :class:`DoublingReduce` — ordered, W a power of two: recursive doubling across workers;
  ``log2 P`` exchanges of the whole gradient with one partner each.
* :class:`GatherReduce` — ordered, W not a power of two: every worker all-gathers every
  frontier node and finishes the tree locally (more traffic; correct for any W).
* :class:`NativeReduce` — the backend's all-reduce (``TIDAL_REDUCE=native``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from tidal.runtime.errors import TidalRuntimeError
from tidal.runtime.settings import ReduceMode
from tidal.runtime.tree import Node, combine, frontier, is_power_of_two

__all__ = [
    "CrossWorker",
    "DoublingReduce",
    "GatherReduce",
    "GradSet",
    "Layout",
    "LocalReduce",
    "NativeReduce",
    "add_into",
    "make_cross_worker",
]

GradSet = list[torch.Tensor]
FLAG_SLOTS = 2


def add_into(left: GradSet, right: GradSet) -> GradSet:
    """left += right, element-wise (IEEE addition is commutative, so order of the pair is moot)."""
    torch._foreach_add_(left, right)
    return left


@dataclass(frozen=True)
class _Group:
    device: torch.device
    dtype: torch.dtype
    indices: tuple[int, ...]
    offsets: tuple[int, ...]
    numel: int


@dataclass
class Layout:
    """Parameter shapes grouped by (device, dtype), and persistent flat buffers for transfer.

    The first group's flat buffer carries :data:`FLAG_SLOTS` extra elements at its end.
    """

    shapes: list[torch.Size]
    groups: list[_Group]
    flags_device: torch.device
    _flats: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, params: Sequence[torch.Tensor]) -> Layout:
        if not params:
            raise TidalRuntimeError("no trainable parameters to reduce")
        keyed: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            keyed.setdefault((p.device, p.dtype), []).append(i)
        groups = []
        for (device, dtype), idx in keyed.items():
            offsets, n = [], 0
            for i in idx:
                offsets.append(n)
                n += params[i].numel()
            groups.append(_Group(device, dtype, tuple(idx), tuple(offsets), n))
        return cls([p.shape for p in params], groups, groups[0].device)

    def flat(self, g: int, slot: int) -> torch.Tensor:
        """Persistent flat buffer ``slot`` of group ``g`` (slot 0: send/accumulate, 1: receive)."""
        key = g * 8 + slot
        buf = self._flats.get(key)
        if buf is None:
            group = self.groups[g]
            extra = FLAG_SLOTS if g == 0 else 0
            buf = torch.empty(group.numel + extra, dtype=group.dtype, device=group.device)
            self._flats[key] = buf
        return buf

    def _views(self, g: int, flat: torch.Tensor) -> list[torch.Tensor]:
        group = self.groups[g]
        return [
            flat[o : o + self.shapes[i].numel()].view(self.shapes[i])
            for i, o in zip(group.indices, group.offsets, strict=True)
        ]

    def pack(self, value: GradSet, flags: torch.Tensor | None, slot: int = 0) -> list[torch.Tensor]:
        flats = []
        for g, group in enumerate(self.groups):
            flat = self.flat(g, slot)
            torch._foreach_copy_(self._views(g, flat), [value[i] for i in group.indices])
            if g == 0:
                flat[group.numel :].copy_(flags if flags is not None else 0)
            flats.append(flat)
        return flats

    def unpack(self, flats: Sequence[torch.Tensor], into: GradSet) -> torch.Tensor:
        for g, group in enumerate(self.groups):
            torch._foreach_copy_([into[i] for i in group.indices], self._views(g, flats[g]))
        return flats[0][self.groups[0].numel :].clone()


class CrossWorker:
    """Finishes the sum over logical ranks from this worker's frontier."""

    def __init__(self, world: int, worker: int, workers: int, layout: Layout) -> None:
        self.world, self.worker, self.workers, self.layout = world, worker, workers, layout
        k = world // workers
        self.block = (worker * k, (worker + 1) * k)

    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor
    ) -> tuple[GradSet, torch.Tensor]:
        raise NotImplementedError


class LocalReduce(CrossWorker):
    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor
    ) -> tuple[GradSet, torch.Tensor]:
        return combine(nodes, self.world, add_into), flags


def _only(nodes: dict[Node, GradSet]) -> GradSet:
    if len(nodes) != 1:
        raise TidalRuntimeError(f"expected one frontier node, got {sorted(nodes)}")
    return next(iter(nodes.values()))


class DoublingReduce(CrossWorker):
    """Recursive doubling over workers; each worker's block is one subtree (W, P powers of 2)."""

    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor
    ) -> tuple[GradSet, torch.Tensor]:
        value = _only(nodes)
        mine = self.layout.pack(value, flags, slot=0)
        theirs = [self.layout.flat(g, 1) for g in range(len(mine))]
        distance = 1
        while distance < self.workers:
            partner = self.worker ^ distance
            reqs = []
            for a, b in zip(mine, theirs, strict=True):
                reqs.append(dist.isend(a, partner))
                reqs.append(dist.irecv(b, partner))
            for req in reqs:
                req.wait()
            for a, b in zip(mine, theirs, strict=True):
                a.add_(b)  # a + b == b + a bitwise: both partners hold the same node value
            distance *= 2
        return value, self.layout.unpack(mine, value)


class GatherReduce(CrossWorker):
    """All-gather every worker's frontier nodes, then finish the fixed tree locally."""

    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor
    ) -> tuple[GradSet, torch.Tensor]:
        k = self.world // self.workers
        plans = [frontier(b * k, (b + 1) * k, self.world) for b in range(self.workers)]
        mine = plans[self.worker]
        if list(nodes) != mine:
            raise TidalRuntimeError(f"frontier {sorted(nodes)} != planned {mine}")
        template = next(iter(nodes.values()))
        values: dict[Node, GradSet] = {}
        total_flags = torch.zeros_like(flags)
        for j in range(max(len(p) for p in plans)):
            source = nodes[mine[j]] if j < len(mine) else [torch.zeros_like(t) for t in template]
            flats = self.layout.pack(source, flags if j == 0 else None)
            gathered = []
            for flat in flats:
                outs = [torch.empty_like(flat) for _ in range(self.workers)]
                dist.all_gather(outs, flat)
                gathered.append(outs)
            for b, plan in enumerate(plans):
                if j < len(plan):
                    into = [torch.empty_like(t) for t in template]
                    got = self.layout.unpack([outs[b] for outs in gathered], into)
                    values[plan[j]] = into
                    if j == 0:
                        total_flags += got.to(total_flags.dtype).cpu()
        return combine(values, self.world, add_into), total_flags


class NativeReduce(CrossWorker):
    """Local sum of the frontier, then the backend's all-reduce (not bitwise across P)."""

    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor
    ) -> tuple[GradSet, torch.Tensor]:
        ordered = [nodes[n] for n in sorted(nodes)]
        value = ordered[0]
        for other in ordered[1:]:
            add_into(value, other)
        flats = self.layout.pack(value, flags, slot=0)
        for flat in flats:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return value, self.layout.unpack(flats, value)


def make_cross_worker(
    mode: ReduceMode, world: int, worker: int, workers: int, layout: Layout
) -> CrossWorker:
    """Pick the strategy for this job's shape and reduce mode."""
    if workers == 1:
        return LocalReduce(world, worker, workers, layout)
    if mode is ReduceMode.NATIVE:
        return NativeReduce(world, worker, workers, layout)
    if is_power_of_two(world):
        return DoublingReduce(world, worker, workers, layout)
    return GatherReduce(world, worker, workers, layout)
