"""``tidal up``: the control plane in the foreground (store, reconcile loop, REST API)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

_HELP = (
    "Run the control plane in the foreground: the store, the reconcile loop and the REST "
    "API, logging each scheduling round.\n\n"
    "Embedded defaults: SQLite in the data directory and a local Ray instance that Tidal "
    "starts itself (it outlives a crash of `tidal up`, whose next start re-adopts the running "
    "jobs). --ray-address joins an existing Ray cluster instead; --db "
    "postgresql+psycopg://... uses PostgreSQL. Ctrl-C stops running jobs at a consistent cut "
    "(they resume on the next start) and the embedded Ray instance. Other commands (submit, "
    "ls, ...) find this server through the data directory."
)


def register(app: typer.Typer) -> None:
    """Add ``up`` to ``app``."""

    @app.command("up", help=_HELP)
    def up(
        data_dir: Annotated[
            Path | None,
            typer.Option(
                "--data-dir",
                help="Store, credentials and job directories (default: ~/.local/share/tidal).",
            ),
        ] = None,
        host: Annotated[
            str | None, typer.Option("--host", help="Address to serve on (default 127.0.0.1).")
        ] = None,
        port: Annotated[int | None, typer.Option("--port", help="Port (default 8470).")] = None,
        ray_address: Annotated[
            str | None, typer.Option("--ray-address", help="Join this Ray cluster (host:port).")
        ] = None,
        db: Annotated[
            str | None,
            typer.Option("--db", help="Database URL (default: SQLite in the data directory)."),
        ] = None,
        devices: Annotated[
            int | None,
            typer.Option(
                "--devices",
                min=1,
                help="Device slots the embedded Ray node offers (CPU machines; GPUs are found).",
            ),
        ] = None,
        device_type: Annotated[
            str | None,
            typer.Option("--device-type", help="Type of those slots (default gpu)."),
        ] = None,
        policy: Annotated[
            str | None, typer.Option("--policy", help="Scheduling policy (default tiered).")
        ] = None,
        checkpoint_root: Annotated[
            Path | None,
            typer.Option(
                "--checkpoint-root",
                help="Where job directories live; every node must reach it (default DATA/jobs).",
            ),
        ] = None,
        stop_grace: Annotated[
            float | None,
            typer.Option(
                "--stop-grace", help="Seconds a stop at a consistent cut may take (default 60)."
            ),
        ] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    ) -> None:
        from tidal.control.errors import ControlError
        from tidal.control.plane import ControlPlane
        from tidal.control.settings import load_settings

        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        try:
            settings = load_settings(
                data_dir=data_dir,
                host=host,
                port=port,
                ray_address=ray_address,
                db=db,
                devices=devices,
                device_type=device_type,
                policy=policy,
                checkpoint_root=checkpoint_root,
                stop_grace=stop_grace,
            )
            plane = ControlPlane(settings)
            url = plane.start()
        except ControlError as err:
            typer.echo(f"tidal up: {err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"Tidal is up at {url} (data in {settings.data_dir})", err=True)
        try:
            plane.serve_forever()
        finally:
            typer.echo("shutting down: stopping jobs at a consistent cut", err=True)
            plane.close(stop_jobs=True)
