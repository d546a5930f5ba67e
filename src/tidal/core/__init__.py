"""Tidal's pure model: specs, tiers, fleet, snapshots, plans, actions and policies.

Nothing here imports torch, ray, sqlalchemy, fastapi or reads the wall clock.
"""

from tidal.core.actions import Action, Migrate, Resize, Start, Stop, apply_order
from tidal.core.errors import CoreError, PlanError, SpecError, TransitionError, UnknownPolicyError
from tidal.core.fleet import Fleet, Node
from tidal.core.placement import EMPTY, Placement
from tidal.core.plan import Plan
from tidal.core.policy import Policy, make_policy, policy_names, register_policy
from tidal.core.snapshot import ClusterSnapshot, JobView
from tidal.core.spec import JobSpec, divisors_between
from tidal.core.states import JobState, StateChange, transition
from tidal.core.tiers import Tier

__all__ = [
    "EMPTY",
    "Action",
    "ClusterSnapshot",
    "CoreError",
    "Fleet",
    "JobSpec",
    "JobState",
    "JobView",
    "Migrate",
    "Node",
    "Placement",
    "Plan",
    "PlanError",
    "Policy",
    "Resize",
    "SpecError",
    "Start",
    "StateChange",
    "Stop",
    "Tier",
    "TransitionError",
    "UnknownPolicyError",
    "apply_order",
    "divisors_between",
    "make_policy",
    "policy_names",
    "register_policy",
    "transition",
]
