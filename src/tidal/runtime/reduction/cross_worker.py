"""Summing per-logical-rank gradients across workers.

A *value* here is a list of tensors, one per trainable parameter, in a fixed parameter
order (a "gradient set"). Each worker hands its frontier (see :mod:`tidal.runtime.reduction.tree`)
to a :class:`CrossWorker` strategy, which returns the sum over all W logical ranks
(identical on every worker) and the sum of a few small integer *flags* every worker
contributes (used to agree on stopping and checkpointing without an extra collective).

Strategies:

* :class:`LocalReduce` — one worker (P = 1): the tree is finished locally.
* :class:`HalvingReduce` — ordered, W a power of two: recursive halving then doubling
  across workers (each worker's block is one subtree); ring-like traffic.
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
from tidal.runtime.reduction.tree import Node, combine, frontier, is_power_of_two
from tidal.runtime.settings import ReduceMode

__all__ = [
    "CrossWorker",
    "GatherReduce",
    "GradSet",
    "HalvingReduce",
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
    _view_cache: dict[int, list[torch.Tensor]] = field(default_factory=dict)

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
        key = id(flat)
        views = self._view_cache.get(key)
        if views is None:
            group = self.groups[g]
            views = [
                flat[o : o + self.shapes[i].numel()].view(self.shapes[i])
                for i, o in zip(group.indices, group.offsets, strict=True)
            ]
            if any(f is flat for f in self._flats.values()):
                self._view_cache[key] = views
        return views

    def pack(
        self,
        value: GradSet,
        flags: torch.Tensor | None,
        slot: int = 0,
        scale: float | None = None,
    ) -> list[torch.Tensor]:
        """Copy (times ``scale``, fused) into the flat buffers; flags go in the tail slots."""
        flats = []
        for g, group in enumerate(self.groups):
            flat = self.flat(g, slot)
            views = self._views(g, flat)
            if scale is None:
                torch._foreach_copy_(views, [value[i] for i in group.indices])
            else:
                for view, i in zip(views, group.indices, strict=True):
                    torch.mul(value[i], scale, out=view)
            if g == 0:
                tail = flat[group.numel :]
                if flags is None:
                    tail.zero_()
                else:
                    tail.copy_(flags)
            flats.append(flat)
        return flats

    def unpack(self, flats: Sequence[torch.Tensor], into: GradSet) -> torch.Tensor:
        for g, group in enumerate(self.groups):
            torch._foreach_copy_([into[i] for i in group.indices], self._views(g, flats[g]))
        return flats[0][self.groups[0].numel :].clone()


def _scaled(value: GradSet, scale: float | None) -> GradSet:
    if scale is not None:
        torch._foreach_mul_(value, scale)
    return value


class CrossWorker:
    """Finishes the sum over logical ranks from this worker's frontier.

    ``scale``, if given, multiplies the (single, unscaled) leaf first: with one logical
    rank per worker the 1/W of the average is fused into the copy for transfer.
    """

    def __init__(self, world: int, worker: int, workers: int, layout: Layout) -> None:
        self.world, self.worker, self.workers, self.layout = world, worker, workers, layout
        k = world // workers
        self.block = (worker * k, (worker + 1) * k)

    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor, scale: float | None = None
    ) -> tuple[GradSet, torch.Tensor]:
        raise NotImplementedError


class LocalReduce(CrossWorker):
    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor, scale: float | None = None
    ) -> tuple[GradSet, torch.Tensor]:
        if scale is not None:
            nodes = {n: _scaled(v, scale) for n, v in nodes.items()}
        return combine(nodes, self.world, add_into), flags


def _only(nodes: dict[Node, GradSet]) -> GradSet:
    if len(nodes) != 1:
        raise TidalRuntimeError(f"expected one frontier node, got {sorted(nodes)}")
    return next(iter(nodes.values()))


class HalvingReduce(CrossWorker):
    """The top of the tree when each worker's block is one subtree (W and P powers of two).

    Reduce-scatter by recursive halving, then all-gather by recursive doubling
    (Rabenseifner): at distance d = 1, 2, 4, ... partners ``b`` and ``b ^ d`` hold the same
    segment of their subtrees' sums; each keeps one half and adds the partner's copy of
    it, which is exactly tree node (left + right) for that half. Every element of the
    result is computed on one worker, then copied to all. Traffic per worker is
    2 (P - 1) / P of the gradient, as a ring all-reduce.
    """

    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor, scale: float | None = None
    ) -> tuple[GradSet, torch.Tensor]:
        value = _only(nodes)
        flats = self.layout.pack(value, flags, slot=0, scale=scale)
        scratch = [self.layout.flat(g, 1) for g in range(len(flats))]
        for flat, tmp in zip(flats, scratch, strict=True):
            self._allreduce(flat, tmp)
        return value, self.layout.unpack(flats, value)

    def _allreduce(self, flat: torch.Tensor, tmp: torch.Tensor) -> None:
        # Every round's messages are cut into chunks posted at once, so that adding one
        # chunk overlaps with the transfer of the next.
        lo, hi = 0, flat.numel()
        trail: list[tuple[int, slice, slice]] = []  # (partner, mine, theirs) per round
        distance = 1
        while distance < self.workers:
            partner = self.worker ^ distance
            mid = (lo + hi) // 2
            keep_low = self.worker & distance == 0
            keep = slice(lo, mid) if keep_low else slice(mid, hi)
            give = slice(mid, hi) if keep_low else slice(lo, mid)
            sends = [_post(dist.isend(flat[c], partner)) for c in _chunks(give)]
            chunks = _chunks(keep)
            recvs = [_post(dist.irecv(tmp[c], partner)) for c in chunks]
            for c, req in zip(chunks, recvs, strict=True):
                req.wait()
                flat[c].add_(tmp[c])  # left + right == right + left, bit for bit
            for req in sends:
                req.wait()
            trail.append((partner, keep, give))
            lo, hi = keep.start, keep.stop
            distance *= 2
        for partner, mine, theirs in reversed(trail):
            reqs = [_post(dist.isend(flat[c], partner)) for c in _chunks(mine)]
            reqs += [_post(dist.irecv(flat[c], partner)) for c in _chunks(theirs)]
            for req in reqs:
                req.wait()


_CHUNK = 1 << 20  # elements per message


def _post(work: dist.Work | None) -> dist.Work:
    if work is None:  # only when this process is not in the group, which cannot happen here
        raise TidalRuntimeError("point-to-point transfer was not posted")
    return work


def _chunks(span: slice) -> list[slice]:
    return [slice(i, min(i + _CHUNK, span.stop)) for i in range(span.start, span.stop, _CHUNK)]


class GatherReduce(CrossWorker):
    """All-gather every worker's frontier nodes, then finish the fixed tree locally."""

    def reduce(
        self, nodes: dict[Node, GradSet], flags: torch.Tensor, scale: float | None = None
    ) -> tuple[GradSet, torch.Tensor]:
        if scale is not None:
            nodes = {n: _scaled(v, scale) for n, v in nodes.items()}
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
        self, nodes: dict[Node, GradSet], flags: torch.Tensor, scale: float | None = None
    ) -> tuple[GradSet, torch.Tensor]:
        ordered = [nodes[n] for n in sorted(nodes)]
        value = ordered[0]
        for other in ordered[1:]:
            add_into(value, other)
        flats = self.layout.pack(value, flags, slot=0, scale=scale)
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
        return HalvingReduce(world, worker, workers, layout)
    return GatherReduce(world, worker, workers, layout)
