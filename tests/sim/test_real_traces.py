"""End-to-end runs on the real traces (``@pytest.mark.trace``; skipped without them)."""

from __future__ import annotations

import pytest

from tidal.core import Fleet
from tidal.sim import CostModel, load_trace, simulate

from .conftest import trace_file

HOUR = 3600.0
# The Tiresias simulator's own FIFO (YARN-CS) on this trace and fleet (traces README).
TIRESIAS_FIFO_AVG_H = 37.33
TIRESIAS_FIFO_P50_H = 33.67


@pytest.mark.trace
def test_fifo_on_vc103959_matches_the_tiresias_simulator() -> None:
    jobs = load_trace(trace_file("philly_vc103959.csv"))
    result = simulate(jobs, Fleet.uniform(8, 4), "fifo", CostModel.zero())
    m = result.metrics
    assert m.completed == 876
    assert m.avg_jct_s is not None and m.p50_jct_s is not None
    assert m.avg_jct_s / HOUR == pytest.approx(TIRESIAS_FIFO_AVG_H, rel=0.10)
    assert m.p50_jct_s / HOUR == pytest.approx(TIRESIAS_FIFO_P50_H, rel=0.10)
    assert m.preemptions == 0 and m.lost_device_s == 0.0


@pytest.mark.trace
def test_every_policy_finishes_vc103959_with_costs() -> None:
    from tidal.core import policy_names

    jobs = load_trace(trace_file("philly_vc103959.csv"))
    for name in policy_names():
        result = simulate(jobs, Fleet.uniform(8, 4), name, CostModel())
        m = result.metrics
        assert m.completed == 876, name
        assert 0.0 < m.utilization <= 1.0, name
        held = sum(j.held_s for j in result.jobs)
        busy = sum(
            (b - a) * n
            for a, b, n in zip(
                result.usage_times,
                (*result.usage_times[1:], 0.0),
                result.usage_devices,
                strict=True,
            )
            if b > a
        )
        assert busy == pytest.approx(held, rel=1e-9), name  # the device books balance
