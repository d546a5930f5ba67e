"""Scheduling-round latency of ``tiered`` at fleet scale, and a full Philly simulation.

Prints one JSON object::

    {"round_ms_p99": {"1000": ..., "10000": ..., "100000": ...}, "philly_sim_s": ...,
     ...details...}

``round_ms_p99[n]`` is the 99th percentile wall time of one ``tiered`` round
(``schedule`` + ``plan.diff``) on a fleet of ``n`` devices (8 per node) with ``n / 5``
live jobs: a Philly-like mix of sizes, tiers (20/50/30) and tenants, the fleet nearly
full, the rest waiting (premium jobs rarely: they start when they arrive, so only about
one in twenty of those that do not fit is still waiting), some jobs at smaller sizes,
some inside their minimum hold time, a few stopping. ``philly_sim_s`` is the
wall time of simulating the whole of ``philly.csv`` (from ``$TIDAL_TRACE_DIR``) under
``tiered`` on 56 nodes × 8 devices; it is null, with a note on stderr, when the trace or
the simulator is missing. ``compiled`` says whether the round ran compiled (mypyc, as
installed by default) or as pure Python.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from tidal._build import compiled_modules
from tidal.core import (
    ClusterSnapshot,
    Fleet,
    JobSpec,
    JobState,
    JobView,
    Tier,
    make_policy,
)
from tidal.core.packing import FreePool

SIZES = (1, 2, 4, 8, 16, 32, 64)
SIZE_WEIGHTS = (40, 10, 15, 25, 6, 3, 1)
TIERS = (Tier.PREMIUM, Tier.STANDARD, Tier.BASIC)
TIER_WEIGHTS = (20, 50, 30)
GIB = 1 << 30


def make_snapshot(devices: int, seed: int, per_node: int = 8) -> ClusterSnapshot:
    """A busy fleet of ``devices`` devices with ``devices // 5`` live jobs."""
    rng = random.Random(seed)
    fleet = Fleet.uniform(devices // per_node, per_node)
    pool = FreePool(fleet)
    now = 1_000_000.0
    jobs: list[JobView] = []
    n_jobs = devices // 5
    for k in range(n_jobs):
        world = rng.choices(SIZES, SIZE_WEIGHTS)[0]
        tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
        if tier is Tier.PREMIUM and pool.total_free("gpu") < world and rng.random() > 0.05:
            # Premium jobs start as soon as they arrive: few wait at any one time (those
            # that arrived since the last round).
            tier = rng.choices(TIERS[1:], TIER_WEIGHTS[1:])[0]
        duration = rng.lognormvariate(7.0, 2.0) + 60.0
        spec = JobSpec(
            id=f"j{k:06d}",
            tenant=f"vc{rng.randrange(15):02d}",
            tier=tier,
            world=world,
            submit_time=now - rng.uniform(0, 86_400),
            work=duration * world,
            checkpoint_bytes=min(world, 32) * GIB,
        )
        done = rng.uniform(0, 0.9) * spec.work
        size = world
        if tier is not Tier.PREMIUM and rng.random() < 0.2:
            size = rng.choice(spec.sizes)
        placement = pool.allocate(size, "gpu")
        if placement:
            state = JobState.STOPPING if rng.random() < 0.01 else JobState.RUNNING
            placed = now - rng.uniform(0, 7_200)
            jobs.append(
                JobView(
                    spec,
                    state,
                    placement,
                    done,
                    done,
                    placed,
                    placed,
                    rng.randrange(3),
                    estimate=spec.work,  # jobs declare their length exactly
                )
            )
        else:
            state = JobState.PREEMPTED if done > 0 and rng.random() < 0.5 else JobState.PENDING
            done = done if state is JobState.PREEMPTED else 0.0
            jobs.append(JobView(spec, state, work_done=done, attained=done, estimate=spec.work))
    return ClusterSnapshot(now=now, fleet=fleet, jobs=tuple(jobs), round_id=seed)


def time_rounds(devices: int, rounds: int, snapshots: int) -> dict[str, float]:
    """Wall and CPU milliseconds of ``rounds`` rounds on each of ``snapshots`` snapshots.

    Rounds run under the garbage-collector thresholds Tidal schedules with
    (:func:`tidal.sim.engine.fewer_gc_passes`): with CPython's defaults about one round in
    four at 100k devices pays for a full collection of the whole job population.
    """
    from tidal.sim.engine import fewer_gc_passes

    policy = make_policy("tiered")
    times: list[float] = []
    cpu: list[float] = []
    for seed in range(snapshots):
        snapshot = make_snapshot(devices, seed)
        policy.schedule(snapshot)  # warm the fleet index
        with fewer_gc_passes():
            for k in range(rounds):
                # Every running job has reported progress since the last round (a fresh
                # view, as heartbeats give); waiting jobs' views are unchanged, as live.
                snapshot = heartbeat(snapshot, 10.0 * (k + 1))
                t0 = time.perf_counter()
                c0 = time.process_time()
                plan = policy.schedule(snapshot)
                plan.diff(snapshot)
                cpu.append((time.process_time() - c0) * 1000.0)
                times.append((time.perf_counter() - t0) * 1000.0)
    return {"p99": _p99(times), "p50": _p50(times), "cpu_p99": _p99(cpu), "cpu_p50": _p50(cpu)}


def heartbeat(snapshot: ClusterSnapshot, dt: float) -> ClusterSnapshot:
    """``snapshot`` ``dt`` seconds later: running jobs' progress advanced (new views)."""
    jobs = tuple(
        replace(v, work_done=v.work_done + dt * v.size, attained=v.attained + dt * v.size)
        if v.state is JobState.RUNNING
        else v
        for v in snapshot.jobs
    )
    return replace(snapshot, now=snapshot.now + dt, jobs=jobs)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def philly_sim_seconds() -> float | None:
    trace_dir = os.environ.get("TIDAL_TRACE_DIR")
    path = Path(trace_dir) / "philly.csv" if trace_dir else None
    if path is None or not path.is_file():
        print(
            f"philly_sim_s: no trace at {path or '$TIDAL_TRACE_DIR/philly.csv'} "
            "(set TIDAL_TRACE_DIR)",
            file=sys.stderr,
        )
        return None
    try:
        from tidal.sim import load_trace, simulate  # type: ignore[attr-defined]
    except ImportError as exc:
        print(f"philly_sim_s: simulator not available ({exc})", file=sys.stderr)
        return None
    jobs = load_trace(str(path), seed=0)
    t0 = time.perf_counter()
    c0 = time.process_time()
    simulate(jobs, Fleet.uniform(56, 8), make_policy("tiered"))
    print(f"philly_sim: {time.process_time() - c0:.1f} s of CPU time", file=sys.stderr)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per snapshot")
    parser.add_argument("--snapshots", type=int, default=5, help="snapshots per fleet size")
    parser.add_argument("--no-sim", action="store_true", help="skip the Philly simulation")
    args = parser.parse_args()
    detail = {str(n): time_rounds(n, args.rounds, args.snapshots) for n in args.sizes}
    result = {
        "round_ms_p99": {n: round(d["p99"], 2) for n, d in detail.items()},
        "philly_sim_s": None if args.no_sim else philly_sim_seconds(),
        "round_ms_p50": {n: round(d["p50"], 2) for n, d in detail.items()},
        "round_cpu_ms_p99": {n: round(d["cpu_p99"], 2) for n, d in detail.items()},
        "round_cpu_ms_p50": {n: round(d["cpu_p50"], 2) for n, d in detail.items()},
        "live_jobs": {n: int(n) // 5 for n in detail},
        # Whether the round ran as C (mypyc, the default install) or as pure Python
        # (TIDAL_COMPILE=0): the figures differ about twofold.
        "compiled": "tidal.core.policies.tiered" in compiled_modules(),
    }
    if result["philly_sim_s"] is not None:
        result["philly_sim_s"] = round(result["philly_sim_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
