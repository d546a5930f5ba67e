"""Priority-ordered gang scheduling with preemption, shared by Tiresias and Gandiva."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tidal.core.policies._common import Round
from tidal.core.snapshot import JobView

Reason = Callable[[JobView, bool], str]


def gang_in_order(
    rnd: Round, ordered: Sequence[JobView], capacity: dict[str, int], reason: Reason
) -> None:
    """Run jobs at full size in priority order, preempting those that lose their turn.

    The *run set* is chosen by counting devices, as the Tiresias simulator does: walk the
    jobs in priority order and admit each one whose full size still fits in the devices
    left of its type (skipping those that do not, so smaller jobs further down may run).
    Admitted running jobs keep their devices, admitted waiting jobs are placed compactly,
    and the others are preempted. If fragmentation keeps an admitted job from being placed,
    a last pass lets the remaining jobs, in priority order, keep or take devices that are
    still free, so no device idles that some job could use. ``reason(view, preempted)``
    explains a job that does not run.
    """
    free = dict(capacity)
    admitted: list[JobView] = []
    others: list[JobView] = []
    for view in ordered:
        spec = view.spec
        left = free.get(spec.device_type, 0)
        if spec.world <= left:
            free[spec.device_type] = left - spec.world
            admitted.append(view)
        else:
            others.append(view)
    for view in admitted:
        if view.placement:
            rnd.keep(view)
    for view in admitted:
        if not view.placement:
            rnd.place(view, view.spec.world)
    placed = rnd.placements
    for view in ordered:
        if view.id in placed:
            continue
        if view.placement:
            if rnd.keep(view):
                continue
        elif rnd.place(view, view.spec.world):
            continue
        rnd.reasons[view.id] = reason(view, bool(view.placement))
