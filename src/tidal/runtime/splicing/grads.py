"""Gradient splicing: per-logical-rank gradients, stashed and summed in a fixed order.

Within one optimizer step a worker runs the micro-batches of its k hosted logical ranks one
after another. At the end of each micro-batch's ``backward()`` (an autograd final callback
queued by a post-accumulate-grad hook), the rank's gradients are taken out of ``p.grad``,
scaled by 1/W (as DDP does before its all-reduce) and pushed into a pairwise stack. On
non-final micro-batches ``p.grad`` is left ``None``, so user code that runs before
``optimizer.step()`` (clipping, logging) touches nothing. At the end of the last
micro-batch's backward the stack is drained, the cross-worker strategy finishes the fixed
tree, and ``p.grad`` holds the averaged gradient, exactly as after a DDP backward.

With the ordered halving strategy on CPU (:mod:`tidal.runtime.reduction.overlap`), the last
micro-batch does not wait for the end of its backward: each parameter's post-accumulate
hook finishes that parameter's local subtree at once, and full buckets start their
cross-worker exchange while backward goes on; the end-of-backward callback only waits.

Two small integer votes ride along with the gradient (stop requested, checkpoint
requested); their sums are the workers' agreement for this step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.autograd import Variable
from torch.utils.hooks import RemovableHandle

from tidal.runtime.errors import SplicingError
from tidal.runtime.reduction.cross_worker import CrossWorker, GradSet, HalvingReduce, add_into
from tidal.runtime.reduction.overlap import OverlappedReduce
from tidal.runtime.reduction.tree import PairwiseStack

logger = logging.getLogger(__name__)

__all__ = ["Decision", "GradSplicer", "Micro"]


@dataclass(frozen=True, slots=True)
class Micro:
    """The micro-batch being run: logical ``rank``, its ``index`` in the step, and whether it is the last."""

    rank: int
    index: int
    final: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """What all workers agreed at the end of a step's reduction (vote counts)."""

    stop_votes: int
    checkpoint_votes: int

    @property
    def stop(self) -> bool:
        return self.stop_votes > 0

    @property
    def checkpoint(self) -> bool:
        return self.checkpoint_votes > 0


class GradSplicer:
    """Owns ``p.grad`` of the prepared parameters while a micro-batch is active."""

    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        *,
        world: int,
        ranks_per_worker: int,
        cross: CrossWorker,
        votes: Callable[[], tuple[int, int]],
        bucket_bytes: int = 0,
    ) -> None:
        self._params = list(params)
        self._world = world
        self._k = ranks_per_worker
        self._cross = cross
        self._votes = votes
        self._stack: PairwiseStack[GradSet] = PairwiseStack(world, add_into)
        self._micro: Micro | None = None
        self._carry: list[torch.Tensor | None] | None = None
        self._queued = False
        self._done_this_micro = False
        self.decision: Decision | None = None
        self._index = {id(p): i for i, p in enumerate(self._params)}
        self._overlap: OverlappedReduce | None = None
        if (
            bucket_bytes > 0
            and isinstance(cross, HalvingReduce)
            and all(p.device.type == "cpu" for p in self._params)
        ):
            # one rank per worker: the 1/W is fused into the copy into the bucket
            scale = 1.0 / world if world > 1 and ranks_per_worker == 1 else None
            self._overlap = OverlappedReduce(
                self._params, cross, scale=scale, cap_bytes=bucket_bytes
            )
        self._handles: list[RemovableHandle] = [
            p.register_post_accumulate_grad_hook(self._on_accumulated)  # type: ignore[no-untyped-call]
            for p in self._params
        ]

    @property
    def micro(self) -> Micro | None:
        return self._micro

    @property
    def overlapped(self) -> bool:
        """Whether the cross-worker reduction overlaps the last micro-batch's backward."""
        return self._overlap is not None

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._micro = None
        if self._overlap is not None:
            self._overlap.close()

    # -- the loader drives these -------------------------------------------------------
    def begin_micro(self, micro: Micro) -> None:
        """Called just before the micro-batch's batch is handed to the user."""
        if micro.index == 0:
            if len(self._stack):
                raise SplicingError(
                    "a step ended before every hosted logical rank ran backward(); "
                    "every micro-batch must call backward() exactly once"
                )
            self.decision = None
            self._carry = None
            if self._k > 1:
                grads = [p.grad for p in self._params]
                if any(g is not None for g in grads):
                    # DDP semantics for grads kept from the previous step: every rank
                    # starts its backward from the same accumulated value.
                    self._carry = [g.detach().clone() if g is not None else None for g in grads]
        else:
            carry = self._carry
            for i, p in enumerate(self._params):
                c = carry[i] if carry is not None else None
                p.grad = c.clone() if c is not None else None
        self._micro = micro
        self._done_this_micro = False
        if micro.final and self._overlap is not None:
            self._overlap.begin()

    def end_micro(self) -> None:
        """Called when the user asks for the next batch (or leaves the loop)."""
        self._micro = None

    def abandon(self) -> None:
        """Drop a partial step (the user left the loop in the middle of one)."""
        self._stack.drain()
        self._micro = None
        self._carry = None
        if self._overlap is not None:
            self._overlap.abandon()

    # -- autograd side -----------------------------------------------------------------
    def _on_accumulated(self, param: torch.Tensor) -> None:
        micro = self._micro
        if micro is None:
            return
        if not self._queued:
            self._queued = True
            Variable._execution_engine.queue_callback(self._after_backward)
        overlap = self._overlap
        if overlap is not None and micro.final and not self._done_this_micro:
            self._ready(self._index[id(param)], param.grad)
            overlap.launch_ready(self._flags)

    def _ready(self, i: int, g: torch.Tensor | None) -> None:
        """Final micro-batch, overlapped: finish parameter i's local subtree now.

        The same element-wise operations, in the same order, as the leaf scaling in
        :meth:`_after_backward` followed by :meth:`PairwiseStack.push` of the last leaf
        (which, with one subtree per worker, folds every partial sum on the stack).
        """
        assert self._overlap is not None
        if g is None:
            g = torch.zeros_like(self._params[i])
        elif g.is_sparse:
            raise SplicingError("sparse gradients are not supported by replica splicing")
        if self._world > 1 and self._k > 1:
            g.mul_(1.0 / self._world)
        value = g
        for partial in reversed(self._stack.partials()):
            value = partial[i].add_(value)
        self._overlap.ready(i, value)

    def _flags(self) -> torch.Tensor:
        stop, ckpt = self._votes()
        return torch.tensor([float(stop), float(ckpt)])

    def _after_backward(self) -> None:
        self._queued = False
        micro = self._micro
        if micro is None:
            return
        if self._done_this_micro:
            raise SplicingError(
                f"backward() ran twice in one micro-batch (logical rank {micro.rank}); "
                "Tidal reduces gradients at the end of each micro-batch's backward, so sum "
                "the losses and call backward() once per batch"
            )
        self._done_this_micro = True
        if micro.final and self._overlap is not None:
            self._finish_overlapped()
            return
        leaf: GradSet = []
        for p in self._params:
            g = p.grad
            if g is None:
                g = torch.zeros_like(p)
            elif g.is_sparse:
                raise SplicingError("sparse gradients are not supported by replica splicing")
            leaf.append(g)
        if self._world > 1 and self._k > 1:
            torch._foreach_mul_(leaf, 1.0 / self._world)  # as DDP: each rank's share, then sum
        if not micro.final:
            for p in self._params:
                p.grad = None
        self._stack.push(micro.rank, leaf)
        if micro.final:
            self._reduce()

    def _finish_overlapped(self) -> None:
        overlap = self._overlap
        assert overlap is not None
        for i, p in enumerate(self._params):
            if not overlap.has(i):  # no hook fired: unused in this backward
                self._ready(i, p.grad)
        overlap.launch_ready(self._flags)
        total, summed = overlap.finish()
        self._stack.drain()
        self._set_result(total, summed)

    def _reduce(self) -> None:
        flags = self._flags()
        # one rank per worker: the 1/W is fused into the copy made for the transfer
        scale = 1.0 / self._world if self._world > 1 and self._k == 1 else None
        total, summed = self._cross.reduce(self._stack.drain(), flags, scale)
        self._set_result(total, summed)

    def _set_result(self, total: GradSet, summed: torch.Tensor) -> None:
        for p, g in zip(self._params, total, strict=True):
            p.grad = g
        votes = [round(v) for v in summed.float().tolist()]
        self.decision = Decision(stop_votes=votes[0], checkpoint_votes=votes[1])
