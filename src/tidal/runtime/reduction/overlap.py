"""The ordered cross-worker reduction, overlapped with the last micro-batch's backward.

Used when the cross-worker strategy is :class:`~tidal.runtime.reduction.cross_worker.HalvingReduce`
(ordered mode, W a power of two, P > 1) and every parameter is on the CPU (gloo). As in
DDP, the parameters are cut into buckets of about :data:`BUCKET_BYTES`, in reverse
parameter order (roughly the order in which backward produces their gradients); the
assignment is fixed when the job starts. During the final micro-batch's backward, each
parameter's post-accumulate-grad hook finishes that parameter's local subtree (its leaf,
scaled by 1/W, folded into the pairwise stack's partial sums in exactly the order
:class:`~tidal.runtime.reduction.tree.PairwiseStack` would use) and copies it into its bucket's flat
buffer. A bucket whose parameters are all ready is handed, in bucket order, to one
communication thread that runs the recursive halving/doubling on it while backward goes
on. The end-of-backward callback packs whatever is left (unused parameters), waits for
every bucket, and copies the sums back.

Every element still goes through the same fixed tree: the local subtree is element-wise,
and recursive halving computes each element's node ``left + right`` whatever segment
the element is in, so cutting the gradient into buckets changes no bit. The two integer
votes ride in the tail of the last bucket, which is launched last.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import torch

from tidal.runtime.errors import TidalRuntimeError
from tidal.runtime.reduction.cross_worker import FLAG_SLOTS, GradSet, HalvingReduce

__all__ = ["BUCKET_BYTES", "OverlappedReduce", "plan_buckets"]

BUCKET_BYTES = 25 * 1024 * 1024


def plan_buckets(params: Sequence[torch.Tensor], cap_bytes: int = BUCKET_BYTES) -> list[list[int]]:
    """Parameter indices per bucket: reverse parameter order, one device/dtype per bucket."""
    buckets: list[list[int]] = []
    size = 0
    key: tuple[torch.device, torch.dtype] | None = None
    for i in reversed(range(len(params))):
        p = params[i]
        nbytes = p.numel() * p.element_size()
        k = (p.device, p.dtype)
        if not buckets or k != key or (size + nbytes > cap_bytes and size > 0):
            buckets.append([])
            size, key = 0, k
        buckets[-1].append(i)
        size += nbytes
    return buckets


class _Bucket:
    __slots__ = ("flat", "indices", "missing", "scratch", "views")

    def __init__(self, indices: list[int], params: Sequence[torch.Tensor], extra: int) -> None:
        self.indices = indices
        n = sum(params[i].numel() for i in indices)
        p0 = params[indices[0]]
        self.flat = torch.empty(n + extra, dtype=p0.dtype, device=p0.device)
        self.scratch = torch.empty_like(self.flat)
        self.views: list[torch.Tensor] = []
        offset = 0
        for i in indices:
            m = params[i].numel()
            self.views.append(self.flat[offset : offset + m].view(params[i].shape))
            offset += m
        self.missing = len(indices)


class OverlappedReduce:
    """Bucketed, overlapped form of :class:`HalvingReduce` for the final micro-batch."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        cross: HalvingReduce,
        *,
        scale: float | None,
        cap_bytes: int = BUCKET_BYTES,
    ) -> None:
        self._cross = cross
        self._scale = scale
        plan = plan_buckets(params, cap_bytes)
        last = len(plan) - 1
        self._buckets = [
            _Bucket(idx, params, FLAG_SLOTS if b == last else 0) for b, idx in enumerate(plan)
        ]
        self._where: list[tuple[int, int]] = [(0, 0)] * len(params)
        for b, bucket in enumerate(self._buckets):
            for j, i in enumerate(bucket.indices):
                self._where[i] = (b, j)
        # A daemon thread, never joined: a bucket stuck on a peer that died must not keep
        # this process from exiting (the process group's timeout ends the wait otherwise).
        self._queue: queue.SimpleQueue[tuple[_Bucket, Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="tidal-reduce", daemon=True)
        self._thread.start()
        self._values: list[torch.Tensor | None] = [None] * len(params)
        self._futures: list[Future[None]] = []
        self._next = 0  # the next bucket to launch

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    def begin(self) -> None:
        """Start the final micro-batch of a step."""
        self._values = [None] * len(self._values)
        for bucket in self._buckets:
            bucket.missing = len(bucket.indices)
        self._futures = []
        self._next = 0

    def ready(self, index: int, value: torch.Tensor) -> None:
        """Parameter ``index``'s local subtree sum is ``value``: copy it into its bucket."""
        if self._values[index] is not None:
            raise TidalRuntimeError(f"parameter {index} was reduced twice in one backward")
        self._values[index] = value
        b, j = self._where[index]
        bucket = self._buckets[b]
        view = bucket.views[j]
        if self._scale is None:
            view.copy_(value)
        else:
            torch.mul(value, self._scale, out=view)
        bucket.missing -= 1

    def launch_ready(self, flags: Callable[[], torch.Tensor]) -> None:
        """Hand every complete bucket, in bucket order, to the communication thread."""
        while self._next < len(self._buckets) and self._buckets[self._next].missing == 0:
            bucket = self._buckets[self._next]
            if self._next == len(self._buckets) - 1:
                bucket.flat[bucket.flat.numel() - FLAG_SLOTS :].copy_(flags())
            fut: Future[None] = Future()
            self._queue.put((bucket, fut))
            self._futures.append(fut)
            self._next += 1

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            bucket, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                self._cross._allreduce(bucket.flat, bucket.scratch)
            except BaseException as e:  # handed to the waiting main thread
                fut.set_exception(e)
            else:
                fut.set_result(None)

    def has(self, index: int) -> bool:
        return self._values[index] is not None

    def finish(self) -> tuple[GradSet, torch.Tensor]:
        """Wait for every bucket; the per-parameter sums (the local value tensors) and flags."""
        if self._next != len(self._buckets):
            raise TidalRuntimeError(
                f"{len(self._buckets) - self._next} gradient bucket(s) were never completed"
            )
        for fut in self._futures:
            fut.result()
        self._futures = []
        values: GradSet = []
        for i, v in enumerate(self._values):
            if v is None:
                raise TidalRuntimeError(f"no gradient for parameter {i} in the reduction")
            values.append(v)
        for bucket in self._buckets:
            torch._foreach_copy_([values[i] for i in bucket.indices], bucket.views)
        last = self._buckets[-1].flat
        return values, last[last.numel() - FLAG_SLOTS :].clone()

    def abandon(self) -> None:
        """Forget a partial final micro-batch."""
        self._futures = []

    def close(self) -> None:
        self._queue.put(None)  # the thread ends after the buckets already queued
