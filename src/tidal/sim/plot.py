"""Plots of simulation results (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tidal.sim.metrics import SimResult


def plot_results(
    results: Sequence[SimResult], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Write a PNG with the JCT CDF per policy and device utilization over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_cdf, ax_util) = plt.subplots(1, 2, figsize=(13, 4.8))
    for result in results:
        jcts = np.sort(np.array([j.jct for j in result.jobs if j.jct is not None], dtype=float))
        if jcts.size:
            hours = np.maximum(jcts / 3600.0, 1e-3)
            share = np.arange(1, hours.size + 1) / hours.size
            ax_cdf.step(hours, share, where="post", label=result.policy)
        series = result.utilization_series(bins=200)
        if series:
            xs = np.array([t for t, _ in series]) / 86400.0
            ys = np.array([u for _, u in series]) * 100.0
            ax_util.plot(xs, ys, label=result.policy, linewidth=1.0)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("job completion time (hours, log scale)")
    ax_cdf.set_ylabel("share of completed jobs")
    ax_cdf.set_title("JCT distribution")
    ax_cdf.grid(True, which="both", alpha=0.3)
    ax_cdf.legend(fontsize=8)
    ax_util.set_xlabel("time (days)")
    ax_util.set_ylabel("devices held (%)")
    ax_util.set_ylim(0, 105)
    ax_util.set_title("utilization over time")
    ax_util.grid(True, alpha=0.3)
    ax_util.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)
