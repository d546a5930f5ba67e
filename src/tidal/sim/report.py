"""Turn simulation results into the ``--json`` text and the rows of a comparison table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tidal.sim.metrics import SimResult


def results_json(results: Sequence[SimResult], indent: int | None = 2) -> str:
    """A JSON list with one metrics object per policy, in the order given."""
    return json.dumps([r.to_dict() for r in results], indent=indent)


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


ROWS: tuple[tuple[str, str], ...] = (
    ("jobs completed", "completed"),
    ("avg JCT (h)", "avg_jct_s"),
    ("median JCT (h)", "p50_jct_s"),
    ("p99 JCT (h)", "p99_jct_s"),
    ("avg queueing (h)", "avg_queue_s"),
    ("makespan (h)", "makespan_s"),
    ("utilization", "utilization"),
    ("useful utilization", "useful_utilization"),
    ("premium SLA met", "premium_sla_met"),
    ("standard SLA met", "standard_sla_met"),
    ("premium preemptions", "premium_preemptions"),
    ("preemptions", "preemptions"),
    ("resizes", "resizes"),
    ("migrations", "migrations"),
    ("lost device-hours", "lost_device_s"),
    ("rounds", "rounds"),
    ("wall time (s)", "wall_s"),
)


def format_cell(key: str, value: Any) -> str:
    if key in ("utilization", "useful_utilization", "premium_sla_met", "standard_sla_met"):
        return _pct(value)
    if key == "wall_s":
        return f"{value:.1f}"
    if key.endswith("_s"):
        return _hours(value)
    return str(value)


def table_rows(results: Sequence[SimResult]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one column per policy, one row per metric; times in hours."""
    dicts = [r.to_dict() for r in results]
    header = ["metric", *(str(d["policy"]) for d in dicts)]
    rows = [[label, *(format_cell(key, d[key]) for d in dicts)] for label, key in ROWS]
    return header, rows
