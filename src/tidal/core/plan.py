"""A policy's decision: a target placement per job, a reason for every job left short."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tidal.core.actions import Action, Migrate, Resize, Start, Stop, apply_order
from tidal.core.errors import PlanError
from tidal.core.placement import EMPTY, Placement
from tidal.core.snapshot import ClusterSnapshot
from tidal.core.states import JobState

_STARTABLE = frozenset({JobState.PENDING, JobState.PREEMPTED})
_EMPTY_REASONS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Plan:
    """Target placements (jobs not named get none) and reasons.

    ``reasons`` holds a human-readable line for every job that gets less than it asked
    for ("waiting: 6 of 8 devices free", "shrunk 8→4 for premium job j-17"). With
    ``checkpoint_on_stop`` false, stopped jobs are killed and lose their progress: only
    baselines that model kill-based preemption set it.
    """

    placements: Mapping[str, Placement]
    reasons: Mapping[str, str] = field(default_factory=lambda: _EMPTY_REASONS)
    checkpoint_on_stop: bool = True

    def target(self, job_id: str) -> Placement:
        return self.placements.get(job_id, EMPTY)

    def diff(self, snapshot: ClusterSnapshot) -> list[Action]:
        """The actions that move ``snapshot`` to this plan, in the order to apply them.

        Jobs in transition out (STOPPING) are left alone until they settle; a job that
        holds devices and gets none is stopped.
        """
        actions: list[Action] = []
        for view in snapshot.jobs:
            target = self.placements.get(view.id, EMPTY)
            reason = self.reasons.get(view.id, "")
            if view.holds_devices and view.state is not JobState.STOPPING:
                current = view.placement
                if not target:
                    actions.append(
                        Stop(view.id, current, checkpoint=self.checkpoint_on_stop, reason=reason)
                    )
                elif target == current:
                    continue
                elif target.size != current.size:
                    actions.append(Resize(view.id, current, target, reason=reason))
                else:
                    actions.append(Migrate(view.id, current, target, reason=reason))
            elif view.state in _STARTABLE and target:
                actions.append(Start(view.id, target, reason=reason))
        actions.sort(key=apply_order)
        return actions

    def validate(self, snapshot: ClusterSnapshot) -> None:
        """Raise :class:`PlanError` unless every target fits its job and the fleet."""
        used: dict[str, int] = {}
        for job_id, placement in self.placements.items():
            if not placement:
                continue
            view = snapshot.job(job_id)
            if placement.size not in view.spec.sizes:
                raise PlanError(
                    f"job {job_id!r}: {placement.size} devices is not an allowed size "
                    f"{view.spec.sizes}"
                )
            for node_name, count in placement.parts:
                node = snapshot.fleet.node(node_name)
                if node.device_type != view.spec.device_type:
                    raise PlanError(
                        f"job {job_id!r} wants {view.spec.device_type!r} devices but node "
                        f"{node_name!r} has {node.device_type!r}"
                    )
                used[node_name] = used.get(node_name, 0) + count
        # Jobs that keep devices while stopping still occupy them.
        for view in snapshot.jobs:
            if view.state is JobState.STOPPING and view.holds_devices:
                for node_name, count in view.placement.parts:
                    used[node_name] = used.get(node_name, 0) + count
        for node_name, count in used.items():
            cap = snapshot.fleet.node(node_name).devices
            if count > cap:
                raise PlanError(f"node {node_name!r} overcommitted: {count} of {cap} devices")
