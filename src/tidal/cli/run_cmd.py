"""``tidal run SCRIPT --world W --workers P --checkpoint-dir DIR [-- ARGS]``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

_HELP = (
    "Run a training script on this machine with W logical ranks on P worker processes.\n\n"
    "The launcher starts the P workers itself (no torchrun) and they die with it. Running "
    "the same command again with the same --checkpoint-dir resumes the job, with any P that "
    "divides W; a different --world is refused before anything starts. SIGTERM or Ctrl-C "
    "stops the job at a consistent cut (one checkpoint); a second one kills it. Every "
    "worker gets the same --threads (OMP_NUM_THREADS), whatever P, so every P computes "
    "the same bits.\n\n"
    "Exit status: 0 every worker succeeded, 75 preempted (resumable: run the same command "
    "again), 2 refused before starting, anything else failed. DIR/status.json holds the "
    "job's state, DIR/logs/ each worker's output. Arguments after `--` are passed to the "
    "script."
)


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``app``."""

    @app.command("run", help=_HELP)
    def run(
        script: Annotated[Path, typer.Argument(help="The training script (a Python file).")],
        world: Annotated[
            int, typer.Option("--world", "-w", help="Logical world size W (fixed for the job).")
        ],
        checkpoint_dir: Annotated[
            Path,
            typer.Option(
                "--checkpoint-dir", "-d", help="Checkpoints, status.json and logs live here."
            ),
        ],
        workers: Annotated[
            int, typer.Option("--workers", "-p", help="Worker processes P (must divide W).")
        ] = 1,
        script_args: Annotated[
            list[str] | None, typer.Argument(help="Arguments for the script, after `--`.")
        ] = None,
        checkpoint_every_steps: Annotated[
            int | None,
            typer.Option("--checkpoint-every-steps", help="Periodic checkpoint every N steps."),
        ] = None,
        checkpoint_every_s: Annotated[
            float | None,
            typer.Option("--checkpoint-every-s", help="Periodic checkpoint every T seconds."),
        ] = None,
        job_id: Annotated[
            str | None,
            typer.Option("--job-id", help="Job identity (default: derived from the directory)."),
        ] = None,
        stop_timeout: Annotated[
            float,
            typer.Option(
                "--stop-timeout",
                help="Seconds the workers get to checkpoint and exit after a stop request.",
            ),
        ] = 600.0,
        threads: Annotated[
            int,
            typer.Option(
                "--threads",
                envvar="OMP_NUM_THREADS",
                help="Intra-op threads of every worker, whatever P (sets OMP_NUM_THREADS).",
            ),
        ] = 1,
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="Show progress on stderr.")
        ] = True,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="Log launcher steps.")
        ] = False,
    ) -> None:
        from tidal.cli.run_progress import ProgressDisplay
        from tidal.launch.errors import LaunchError, LaunchRefused
        from tidal.launch.local import LaunchSpec, launch
        from tidal.launch.outcome import EXIT_FAILED, EXIT_REFUSED
        from tidal.launch.signals import catch_stop_signals, release_stop_signals

        # Counted from the moment the `tidal` command started (tidal/cli/__init__.py), or
        # from here when called otherwise.
        signals = catch_stop_signals()
        logging.basicConfig(
            level=logging.INFO if verbose else logging.WARNING,
            format="%(asctime)s %(name)s %(levelname)s %(message)s",
        )
        try:
            spec = LaunchSpec(
                script=script,
                world=world,
                workers=workers,
                checkpoint_dir=checkpoint_dir,
                script_args=tuple(script_args or ()),
                checkpoint_every_steps=checkpoint_every_steps,
                checkpoint_every_s=checkpoint_every_s,
                job_id=job_id,
                stop_timeout_s=stop_timeout,
                threads=threads,
            )
            with ProgressDisplay(
                job_id=spec.resolved_job_id, workers=spec.workers, enabled=progress
            ) as display:
                code = launch(spec, display, signals=signals)
        except LaunchRefused as e:
            typer.echo(f"tidal run: {e}", err=True)
            code = EXIT_REFUSED
        except LaunchError as e:
            typer.echo(f"tidal run: {e}", err=True)
            code = EXIT_FAILED
        finally:
            release_stop_signals()
        raise typer.Exit(code)
