"""Turn simulation results into the ``--json`` text and a Rich table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tidal.sim.metrics import SimResult

if TYPE_CHECKING:
    from rich.table import Table


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


def results_table(results: Sequence[SimResult], title: str | None = None) -> Table:
    """A Rich table with one column per policy and one row per metric; times in hours."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    rows = [r.to_dict() for r in results]
    for row in rows:
        table.add_column(str(row["policy"]), justify="right", no_wrap=True)
    for label, key in ROWS:
        table.add_row(label, *(format_cell(key, row[key]) for row in rows))
    return table
