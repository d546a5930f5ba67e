"""``tidal sim TRACE …`` and ``tidal demo``: compare scheduling policies on a trace."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from tidal.core import Fleet, JobSpec
    from tidal.sim import CostModel, SimResult

TRACE_DIR_ENV = "TIDAL_TRACE_DIR"
# Fleets the traces README suggests for its named traces: (nodes, devices per node).
KNOWN_FLEETS = {"philly": (56, 8), "philly_vc103959": (8, 4)}
FALLBACK_FLEET = (8, 8)
DEMO_JOBS = 1500
DEMO_FLEET = (8, 8)
DEMO_LOAD = 1.3
GIB = 1 << 30

_SIM_HELP = (
    "Simulate scheduling policies on a job trace and report JCT, utilization and SLAs.\n\n"
    "TRACE is a CSV file (job_id, submit_time, num_gpus, duration[, vc]) or the name of one "
    f"in ${TRACE_DIR_ENV} (philly, philly_vc103959). Without --nodes/--devices-per-node, "
    "named traces use the fleet their README suggests (philly 56×8, philly_vc103959 8×4), "
    "others 8×8."
)


def register(app: typer.Typer) -> None:
    """Add ``sim`` and ``demo`` to ``app``."""

    @app.command("sim", help=_SIM_HELP)
    def sim(
        trace: Annotated[
            str, typer.Argument(help=f"Trace file, or a trace name in ${TRACE_DIR_ENV}.")
        ],
        policy: Annotated[
            str, typer.Option("--policy", "-p", help="A policy name, or 'all'.")
        ] = "all",
        nodes: Annotated[int | None, typer.Option(help="Nodes in the fleet.", min=1)] = None,
        devices_per_node: Annotated[
            int | None, typer.Option(help="Devices on each node.", min=1)
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of the tier hash.")] = 0,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print a JSON list, one object per policy.")
        ] = False,
        plot: Annotated[
            Path | None, typer.Option(help="Write a PNG: JCT CDF and utilization over time.")
        ] = None,
        limit: Annotated[
            int | None, typer.Option(help="Simulate only the first N jobs.", min=1)
        ] = None,
        zero_cost: Annotated[
            bool, typer.Option(help="Charge nothing for checkpoints, restarts and splicing.")
        ] = False,
        checkpoint_s: Annotated[
            float | None, typer.Option(help="Fixed checkpoint cost, s (default 5).", min=0)
        ] = None,
        restart_s: Annotated[
            float | None, typer.Option(help="Fixed restart cost, s (default 20).", min=0)
        ] = None,
        write_gib_s: Annotated[
            float | None,
            typer.Option(help="Checkpoint write bandwidth, GiB/s (default 1).", min=0),
        ] = None,
        read_gib_s: Annotated[
            float | None,
            typer.Option(help="Checkpoint read bandwidth, GiB/s (default 2).", min=0),
        ] = None,
        splice_overhead: Annotated[
            float | None,
            typer.Option(help="Per-step slowdown below W devices (default 0.02).", min=0),
        ] = None,
        efficiency: Annotated[
            float | None,
            typer.Option(help="Scaling efficiency below W devices (default 1.0).", min=0),
        ] = None,
        min_round_interval: Annotated[
            float, typer.Option(help="Least simulated seconds between rounds.", min=0)
        ] = 0.0,
        progress_interval: Annotated[
            float,
            typer.Option(
                help="Seconds between progress reports of running jobs (0: exact).", min=0
            ),
        ] = 60.0,
        estimate_noise: Annotated[
            float,
            typer.Option(
                help="Jobs declare their work off by a log-normal factor exp(SIGMA·z) "
                "(policies that read declared work are misled; 0: exact).",
                min=0,
            ),
        ] = 0.0,
        options: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                help="A policy option KEY=VALUE (repeatable; VALUE read as JSON, e.g. "
                "basic_lane=0, round_interval=30, critical_margin=null). Needs one --policy.",
            ),
        ] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
    ) -> None:
        _logging(verbose)
        from tidal.core import Fleet
        from tidal.sim import SimError, load_trace

        costs = _costs(
            zero_cost,
            checkpoint_s,
            restart_s,
            write_gib_s,
            read_gib_s,
            splice_overhead,
            efficiency,
        )
        default_fleet = KNOWN_FLEETS.get(Path(trace).stem)
        n, d = default_fleet or FALLBACK_FLEET
        fleet = Fleet.uniform(nodes or n, devices_per_node or d)
        try:
            jobs = load_trace(
                trace, seed=seed, trace_dir=os.environ.get(TRACE_DIR_ENV) or None, limit=limit
            )
        except SimError as exc:
            _fail(str(exc), 2)
        if estimate_noise:
            from tidal.sim import misestimate

            jobs = misestimate(jobs, estimate_noise, seed)
        kwargs = _options(options or [])
        if kwargs and policy == "all":
            _fail("--set applies to one policy: name it with --policy", 2)
        names = _policies(policy, kwargs)
        title = f"{trace}: {len(jobs)} jobs on {fleet.capacity} devices"
        results = _run_all(
            jobs, fleet, names, costs, min_round_interval, progress_interval, as_json, kwargs
        )
        _report(results, as_json, plot, title)

    @app.command("demo")
    def demo(
        plot: Annotated[Path, typer.Option(help="Where to write the plot.")] = Path(
            "tidal-demo.png"
        ),
        jobs: Annotated[int, typer.Option(help="Synthetic jobs to simulate.", min=1)] = DEMO_JOBS,
        seed: Annotated[int, typer.Option(help="Seed of the synthetic trace.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
    ) -> None:
        """Compare every policy on a seeded synthetic Philly-like trace and write a plot."""
        _logging(verbose)
        from tidal.core import Fleet
        from tidal.sim import CostModel, synthetic_trace

        fleet = Fleet.uniform(*DEMO_FLEET)
        specs = synthetic_trace(jobs, seed=seed, capacity=fleet.capacity, load=DEMO_LOAD)
        title = f"demo: {len(specs)} synthetic jobs on {fleet.capacity} devices"
        results = _run_all(specs, fleet, _policies("all"), CostModel(), 0.0, 60.0, as_json)
        _report(results, as_json, plot, title)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _costs(
    zero: bool,
    checkpoint_s: float | None,
    restart_s: float | None,
    write_gib_s: float | None,
    read_gib_s: float | None,
    splice_overhead: float | None,
    efficiency: float | None,
) -> CostModel:
    from tidal.sim import CostModel, SimError

    base = CostModel.zero() if zero else CostModel()
    changes: dict[str, float] = {}
    if checkpoint_s is not None:
        changes["checkpoint_fixed_s"] = checkpoint_s
    if restart_s is not None:
        changes["restart_fixed_s"] = restart_s
    if write_gib_s is not None:
        changes["write_bandwidth"] = write_gib_s * GIB
    if read_gib_s is not None:
        changes["read_bandwidth"] = read_gib_s * GIB
    if splice_overhead is not None:
        changes["splice_overhead"] = splice_overhead
    if efficiency is not None:
        changes["scaling_efficiency"] = efficiency
    if not changes:
        return base
    from dataclasses import replace

    try:
        return replace(base, **changes)
    except SimError as exc:
        _fail(str(exc), 2)


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["basic_lane=0", "critical_margin=null"]`` -> ``{"basic_lane": 0, ...}``: each value
    is read as JSON, or taken as a string if it is not JSON."""
    import json

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            _fail(f"--set {pair!r}: expected KEY=VALUE, e.g. basic_lane=0", 2)
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def _policies(policy: str, options: dict[str, Any] | None = None) -> list[str]:
    from tidal.core import UnknownPolicyError, make_policy, policy_names

    if policy == "all":
        return list(policy_names())
    try:
        make_policy(policy, **(options or {}))
    except UnknownPolicyError as exc:
        _fail(str(exc), 2)
    except TypeError as exc:  # an option the policy does not take
        _fail(f"policy {policy!r}: bad --set option ({exc})", 2)
    except ValueError as exc:  # SpecError: a value out of range
        _fail(f"policy {policy!r}: {exc}", 2)
    return [policy]


def _run_all(
    jobs: Sequence[JobSpec],
    fleet: Fleet,
    names: Sequence[str],
    costs: CostModel,
    min_round_interval: float,
    progress_interval: float,
    quiet: bool,
    options: dict[str, Any] | None = None,
) -> list[SimResult]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from tidal.core import make_policy
    from tidal.sim import SimError, simulate

    console = Console(stderr=True)
    bar: AbstractContextManager[Any]
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    bar = progress if len(jobs) >= 2000 else nullcontext()
    results: list[SimResult] = []
    with bar:
        for name in names:
            try:
                policy = make_policy(name, **(options or {}))
            except ImportError as exc:
                console.print(f"[yellow]skipping policy {name!r}: not available ({exc})")
                continue
            task = progress.add_task(name, total=len(jobs))

            def update(done: int, total: int, task: Any = task) -> None:
                progress.update(task, completed=done, total=total)

            try:
                results.append(
                    simulate(
                        jobs,
                        fleet,
                        policy,
                        costs,
                        min_round_interval=min_round_interval,
                        progress_interval=progress_interval,
                        progress=update,
                    )
                )
            except SimError as exc:
                _fail(f"policy {name!r}: {exc}")
            progress.remove_task(task)
            if not quiet and not console.is_terminal:
                console.print(f"{name}: done in {results[-1].metrics.wall_s:.1f} s")
    return results


def _report(results: Sequence[SimResult], as_json: bool, plot: Path | None, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from tidal.sim.report import results_json, table_rows

    if as_json:
        typer.echo(results_json(results))
    else:
        header, rows = table_rows(results)
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console = Console()
        if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
            console = Console(width=160)
        console.print(table)
    if plot is not None:
        from tidal.sim.plot import plot_results

        plot_results(results, plot, title=title)
        typer.echo(f"wrote {plot}", err=as_json)
