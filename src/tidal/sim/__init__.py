"""Trace-driven simulator: same snapshot, policy and plan as production, simulated executor and clock.

Public API::

    jobs = load_trace("philly")                  # or a path, or synthetic_trace(...)
    result = simulate(jobs, Fleet.uniform(56, 8), "tiered", CostModel())
    result.to_dict()                             # the metrics, as ``tidal sim --json``
"""

from tidal.sim.clock import SimClock
from tidal.sim.costs import CostModel
from tidal.sim.engine import simulate
from tidal.sim.errors import PolicyActionError, SimError, TraceError
from tidal.sim.metrics import JobResult, SimMetrics, SimResult, percentile
from tidal.sim.quotas import proportional_quotas
from tidal.sim.synthetic import synthetic_trace
from tidal.sim.trace import (
    default_checkpoint_bytes,
    load_trace,
    misestimate,
    resolve_trace,
    save_trace,
    tier_for,
)

__all__ = [
    "CostModel",
    "JobResult",
    "PolicyActionError",
    "SimClock",
    "SimError",
    "SimMetrics",
    "SimResult",
    "TraceError",
    "default_checkpoint_bytes",
    "load_trace",
    "misestimate",
    "percentile",
    "proportional_quotas",
    "resolve_trace",
    "save_trace",
    "simulate",
    "synthetic_trace",
    "tier_for",
]
