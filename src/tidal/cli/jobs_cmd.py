"""``tidal submit | ls | show | logs | wait | cancel``: thin clients of the REST API.

Output meant for scripts goes to stdout (``submit`` prints the new job's id alone;
``--json`` prints JSON); messages go to stderr. Exit status: 0 done, 1 the server refused
or could not be reached, 2 bad input; ``wait`` exits 0 if the job succeeded, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from tidal.cli.client import ApiClient, ClientError, connect

TERMINAL = ("succeeded", "failed", "cancelled")
_LS_COLUMNS = ("ID", "NAME", "TENANT", "TIER", "STATE", "DEVICES", "STEP", "REASON")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"tidal: {message}", err=True)
    raise typer.Exit(code)


def client() -> ApiClient:
    try:
        return connect()
    except ClientError as exc:
        fail(str(exc))


def call(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``action(*args, **kwargs)``; a :class:`ClientError` ends the command with its
    message (exit 2 for a 422: the input was bad, else 1)."""
    try:
        return action(*args, **kwargs)
    except ClientError as exc:
        fail(str(exc), 2 if exc.status == 422 else 1)


def when(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Add the job commands to ``app``."""

    @app.command("submit", context_settings={"allow_interspersed_args": False})
    def submit(
        command: Annotated[
            list[str] | None, typer.Argument(help="The command to run, after `--`.")
        ] = None,
        file: Annotated[
            Path | None, typer.Option("--file", "-f", help="A YAML job spec; flags override it.")
        ] = None,
        name: Annotated[str | None, typer.Option(help="Job name (default: the script's).")] = None,
        tier: Annotated[
            str | None, typer.Option(help="premium | standard (default) | basic.")
        ] = None,
        world: Annotated[int | None, typer.Option(help="Logical world size W.")] = None,
        min_devices: Annotated[
            int | None, typer.Option(help="Fewest devices to run on (default 1).")
        ] = None,
        max_devices: Annotated[
            int | None, typer.Option(help="Most devices to run on (default W).")
        ] = None,
        device_type: Annotated[str | None, typer.Option(help="Device type (default gpu).")] = None,
        workdir: Annotated[
            str | None, typer.Option(help="Working directory (default: the current one).")
        ] = None,
        env: Annotated[
            list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE, repeatable.")
        ] = None,
        declared_steps: Annotated[
            int | None, typer.Option(help="The job's length in steps (an estimate).")
        ] = None,
        declared_hours: Annotated[
            float | None, typer.Option(help="Hours the job takes at full size (an estimate).")
        ] = None,
        checkpoint_every_steps: Annotated[
            int | None, typer.Option(help="Checkpoint every N steps.")
        ] = None,
        checkpoint_every_s: Annotated[
            float | None, typer.Option(help="Checkpoint every T seconds.")
        ] = None,
        checkpoint_keep: Annotated[int | None, typer.Option(help="Checkpoints to keep.")] = None,
        max_restarts: Annotated[
            int | None, typer.Option(help="Restarts after failures (default 3).")
        ] = None,
    ) -> None:
        """Submit a job; prints its id on stdout.

        tidal submit --tier basic --world 4 --min-devices 1 --name lm -- python train.py
        """
        from tidal.cli.spec_input import SpecInputError, build_submission

        flags = {
            "name": name,
            "tier": tier,
            "world": world,
            "min_devices": min_devices,
            "max_devices": max_devices,
            "device_type": device_type,
            "workdir": workdir,
            "declared_steps": declared_steps,
            "declared_hours": declared_hours,
            "checkpoint_every_steps": checkpoint_every_steps,
            "checkpoint_every_s": checkpoint_every_s,
            "checkpoint_keep": checkpoint_keep,
            "max_restarts": max_restarts,
        }
        try:
            spec = build_submission(
                file=file, flags=flags, command=command or [], env=env or [], cwd=Path.cwd()
            )
        except SpecInputError as exc:
            fail(str(exc), 2)
        with client() as api:
            job = call(api.post, "/jobs", spec.model_dump(mode="json"))
        typer.echo(
            f"submitted {job['id']} ({job['name']}): {job['tier']}, W={job['world']}", err=True
        )
        typer.echo(job["id"])

    @app.command("ls")
    def ls(
        state: Annotated[
            list[str] | None, typer.Option("--state", "-s", help="Only jobs in this state.")
        ] = None,
        tenant: Annotated[str | None, typer.Option(help="Admin: one tenant's jobs.")] = None,
        limit: Annotated[int, typer.Option(help="At most this many jobs.", min=1)] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    ) -> None:
        """Jobs, newest first: id, name, tenant, tier, state, devices held/W, step, reason."""
        jobs: list[dict[str, Any]] = []
        before = None
        with client() as api:
            while len(jobs) < limit:
                page = call(
                    api.get,
                    "/jobs",
                    state=state or None,
                    tenant=tenant,
                    before=before,
                    limit=min(500, limit - len(jobs)),
                )
                jobs += page["jobs"]
                before = page["next"]
                if before is None:
                    break
        if as_json:
            print_json(jobs)
            return
        rows = [
            (
                j["id"],
                j["name"],
                j["tenant"],
                j["tier"],
                j["state"] + (" (cancelling)" if j["cancel_requested"] else ""),
                f"{j['devices']}/{j['world']}",
                "-" if j["step"] is None else str(j["step"]),
                _one_line(_why(j)),
            )
            for j in jobs
        ]
        table(_LS_COLUMNS, rows)

    @app.command("show")
    def show(
        job: Annotated[str, typer.Argument(help="A job id.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """A job's spec, state, placement, progress and events with reasons."""
        with client() as api:
            detail = call(api.get, f"/jobs/{job}")
        if as_json:
            print_json(detail)
            return
        show_text(detail)

    @app.command("logs")
    def logs(
        job: Annotated[str, typer.Argument(help="A job id.")],
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
        ] = False,
    ) -> None:
        """The job's output, every worker's, each line prefixed by its worker's index."""
        cursor = ""
        with client() as api:
            while True:
                chunk = call(
                    api.get, f"/jobs/{job}/logs", cursor=cursor, wait=10 if follow else None
                )
                for line in chunk["lines"]:
                    typer.echo(line)
                sys.stdout.flush()
                cursor = chunk["cursor"]
                if chunk["done"] or (not follow and not chunk["lines"]):
                    return

    @app.command("wait")
    def wait(
        job: Annotated[str, typer.Argument(help="A job id.")],
        timeout: Annotated[
            float | None, typer.Option(help="Give up after this many seconds (exit 1).")
        ] = None,
    ) -> None:
        """Block until the job ends; exit 0 if it succeeded, 1 otherwise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.2
        with client() as api:
            while True:
                found = call(api.get, f"/jobs/{job}")
                if found["state"] in TERMINAL:
                    typer.echo(f"{job} {found['state']}: {found['reason']}", err=True)
                    raise typer.Exit(0 if found["state"] == "succeeded" else 1)
                if deadline is not None and time.monotonic() >= deadline:
                    fail(f"{job} is still {found['state']} after {timeout:g} s")
                time.sleep(pause)
                pause = min(2.0, pause * 1.5)

    @app.command("cancel")
    def cancel(job: Annotated[str, typer.Argument(help="A job id.")]) -> None:
        """Cancel a job (a running one stops at its next step boundary)."""
        with client() as api:
            found = call(api.delete, f"/jobs/{job}")
        if found["state"] == "cancelled":
            typer.echo(f"{job} cancelled", err=True)
        else:
            typer.echo(f"{job} is {found['state']}: cancel requested", err=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*row)
    Console(soft_wrap=True).print(out)


def show_text(job: dict[str, Any]) -> None:
    placement = ", ".join(f"{n}:{c}" for n, c in job["placement"].items()) or "-"
    declared = " / ".join(
        part
        for part in (
            job["declared_steps"] and f"{job['declared_steps']} steps",
            job["declared_hours"] and f"{job['declared_hours']:g} h",
        )
        if part
    )
    ckpt = job["checkpoint"]
    ckpt_text = ", ".join(
        part
        for part in (
            ckpt["every_steps"] and f"every {ckpt['every_steps']} steps",
            ckpt["every_s"] and f"every {ckpt['every_s']:g} s",
            ckpt["keep"] and f"keep {ckpt['keep']}",
        )
        if part
    )
    progress = "-"
    if job["step"] is not None:
        progress = f"{job['step']}"
        if job["samples_per_s"] is not None:
            progress += f" ({job['samples_per_s']:.1f} samples/s)"
        progress += f" at {when(job['progress_at'])}"
    state = job["state"] + (" (cancel requested)" if job["cancel_requested"] else "")
    fields = [
        ("id", job["id"]),
        ("name", job["name"]),
        ("tenant", job["tenant"]),
        ("tier", job["tier"]),
        ("state", state),
        ("reason", job["reason"]),
        ("scheduler", job.get("plan_reason") or "-"),
        ("devices", f"{job['devices']}/{job['world']} ({placement})"),
        ("sizes", f"{', '.join(map(str, job['sizes']))} {job['device_type']} (W={job['world']})"),
        ("step", progress),
        ("command", " ".join(job["command"])),
        ("workdir", job["workdir"] or "-"),
        ("env", " ".join(f"{k}={v}" for k, v in job["env"].items()) or "-"),
        ("declared", declared or "-"),
        ("checkpoint", ckpt_text or "runtime defaults"),
        ("restarts", f"{job['restarts']} of {job['max_restarts']}"),
        ("submitted", when(job["submitted_at"])),
        ("started", when(job["started_at"])),
        ("finished", when(job["finished_at"])),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        typer.echo(f"{key:<{width}}  {value}")
    shown = len(job["events"])
    more = f" (latest {shown} of {job['events_total']})" if shown < job["events_total"] else ""
    typer.echo(f"events{more}:")
    table(
        ("TIME", "STATE", "REASON"),
        [(when(e["time"]), e["state"], e["reason"]) for e in job["events"]],
    )


_LIVE = ("pending", "starting", "running", "stopping", "preempted", "restarting")


def _why(job: dict[str, Any]) -> str:
    """What ``ls`` says of a job: the scheduler's reason while it waits or runs short,
    else the reason of its last event."""
    if job["state"] in _LIVE and job.get("plan_reason"):
        return str(job["plan_reason"])
    return str(job["reason"])


def _one_line(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
