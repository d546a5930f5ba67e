"""The ``tidal`` command. Each verb lives in its own module and imports heavy parts lazily."""

from __future__ import annotations

import sys

if sys.argv[1:2] == ["run"]:
    # `tidal run` supervises a job: count stop signals from now on, before the imports
    # below, so that a stop in its first moments ends as "preempted" (docs/launch.md).
    from tidal.launch.signals import catch_stop_signals

    catch_stop_signals()

import typer

from tidal.cli import admin_cmd, jobs_cmd, run_cmd, sim_cmd, up_cmd

app = typer.Typer(
    name="tidal",
    help="Tidal: preemptible, migratable, elastic deep-learning jobs and their scheduler.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Tidal: preemptible, migratable, elastic deep-learning jobs and their scheduler."""


sim_cmd.register(app)
run_cmd.register(app)
jobs_cmd.register(app)
admin_cmd.register(app)
up_cmd.register(app)


@app.command()
def version() -> None:
    """Print Tidal's version, and whether its scheduling hot path runs compiled."""
    from tidal import __version__
    from tidal._build import COMPILED, compiled_modules

    done = len(compiled_modules())
    if done == len(COMPILED):
        build = "compiled"
    elif not done:
        build = "pure Python"
    else:
        build = f"partly compiled: {done} of {len(COMPILED)} modules"
    typer.echo(f"{__version__} ({build})")


def main() -> None:
    app()


__all__ = ["app", "main"]
