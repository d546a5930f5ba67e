"""The fixed summation order over logical ranks (pure functions, no torch.distributed).

Gradients of the W logical ranks are summed in one binary tree, fixed by W alone. The
tree is the perfect binary tree over ``W' = next_power_of_two(W)`` leaf slots; slots at
or beyond W are absent, and a node whose right half is absent takes its left child's value
unchanged. Every worker hosts a consecutive block of ranks; it sums the largest subtrees
that lie inside its block (its *frontier*), and the nodes above are combined from every
worker's frontier. Because floating-point addition is commutative (but not associative),
each node's value depends only on the tree, never on which worker computed it: the result
is bitwise the same for every P.

When W is a power of two every block of W/P ranks is one subtree, so each worker's
frontier is a single node and the top of the tree is recursive doubling across workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from tidal.runtime.errors import TidalRuntimeError

__all__ = ["Node", "PairwiseStack", "combine", "frontier", "is_power_of_two", "padded_size"]

T = TypeVar("T")


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def padded_size(world: int) -> int:
    """W' = the smallest power of two >= W."""
    return 1 << (world - 1).bit_length()


@dataclass(frozen=True, slots=True, order=True)
class Node:
    """A tree node over logical ranks ``[lo, hi)`` (``hi`` already clipped to W)."""

    lo: int
    hi: int


def _node(lo: int, span: int, world: int) -> Node:
    return Node(lo, min(lo + span, world))


def frontier(lo: int, hi: int, world: int) -> list[Node]:
    """The maximal aligned subtrees that lie inside ``[lo, hi)``, left to right.

    These are exactly the partial sums a worker hosting ranks ``[lo, hi)`` computes
    locally (see :class:`PairwiseStack`).
    """
    if not 0 <= lo < hi <= world:
        raise TidalRuntimeError(f"block [{lo}, {hi}) is not inside 0..{world}")
    nodes: list[Node] = []
    pos = lo
    while pos < hi:
        span = 1
        while pos % (span * 2) == 0 and pos + span * 2 <= hi:
            span *= 2
        nodes.append(Node(pos, pos + span))
        pos += span
    return nodes


def combine(values: Mapping[Node, T], world: int, add: Callable[[T, T], T]) -> T:
    """Value of the root, given values for nodes that partition ``[0, W)``.

    ``add(left, right)`` must return left + right (it may reuse ``left``'s storage).
    """

    def value(lo: int, span: int) -> T:
        node = _node(lo, span, world)
        if node in values:
            return values[node]
        if span == 1:
            raise TidalRuntimeError(f"no value for logical rank {lo} in the reduction")
        half = span // 2
        left = value(lo, half)
        if lo + half >= world:
            return left
        return add(left, value(lo + half, half))

    return value(0, padded_size(world))


class PairwiseStack(Generic[T]):
    """Streams one worker's leaves (in rank order) into its frontier subtrees.

    Memory: at most ``log2(k) + 1`` partial sums for k leaves.
    """

    def __init__(self, world: int, add: Callable[[T, T], T]) -> None:
        self._world = world
        self._add = add
        self._stack: list[tuple[int, int, T]] = []  # (lo, span, value)
        self._next: int | None = None

    def push(self, rank: int, value: T) -> None:
        if self._next is not None and rank != self._next:
            raise TidalRuntimeError(f"leaf for logical rank {rank} arrived, expected {self._next}")
        self._next = rank + 1
        lo, span = rank, 1
        while self._stack:
            plo, pspan, pval = self._stack[-1]
            if pspan != span or plo + pspan != lo or plo % (2 * span) != 0:
                break
            self._stack.pop()
            value = self._add(pval, value)
            lo, span = plo, 2 * span
        self._stack.append((lo, span, value))

    def partials(self) -> list[T]:
        """The partial sums on the stack, bottom (leftmost) first."""
        return [v for _, _, v in self._stack]

    def drain(self) -> dict[Node, T]:
        """The frontier nodes and their values; the stack is empty afterwards."""
        out = {_node(lo, span, self._world): v for lo, span, v in self._stack}
        self._stack.clear()
        self._next = None
        return out

    def __len__(self) -> int:
        return len(self._stack)
