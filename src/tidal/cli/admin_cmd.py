"""``tidal nodes | drain | undrain`` and ``tidal tenant add | ls | token``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tidal.cli.jobs_cmd import call, client, print_json, table, when

tenant_app = typer.Typer(help="Tenants and their tokens (admin).", no_args_is_help=True)


def _holders(node: dict[str, Any]) -> str:
    parts = []
    for h in node["held"]:
        who = f"{h['job']} ({h['tenant']})" if h["job"] else "others"
        parts.append(f"{who}: {h['devices']}")
    return ", ".join(parts) or "-"


def register(app: typer.Typer) -> None:
    """Add the node and tenant commands to ``app``."""

    @app.command("nodes")
    def nodes(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """Nodes: device type, devices free / held, and by whom."""
        with client() as api:
            found = call(api.get, "/nodes")
        if as_json:
            print_json(found)
            return
        rows = [
            (
                n["name"],
                n["device_type"],
                f"{n['free']}/{n['devices']}",
                ("up" if n["alive"] else "down") + (", drained" if n["drained"] else ""),
                _holders(n),
            )
            for n in found
        ]
        table(("NODE", "TYPE", "FREE", "STATUS", "HELD BY"), rows)

    @app.command("drain")
    def drain(node: Annotated[str, typer.Argument(help="A node's name.")]) -> None:
        """Admin: move every job off NODE (for maintenance) and keep it empty."""
        with client() as api:
            call(api.post, f"/nodes/{node}/drain")
        typer.echo(f"node {node} drained: its jobs move elsewhere, nothing new lands", err=True)

    @app.command("undrain")
    def undrain(node: Annotated[str, typer.Argument(help="A node's name.")]) -> None:
        """Admin: let jobs use NODE again."""
        with client() as api:
            call(api.post, f"/nodes/{node}/undrain")
        typer.echo(f"node {node} undrained", err=True)

    @tenant_app.command("add")
    def tenant_add(
        name: Annotated[str, typer.Argument(help="The tenant's name: a-z, 0-9, _ and -.")],
        admin: Annotated[bool, typer.Option(help="Make it an admin.")] = False,
    ) -> None:
        """Add a tenant; prints its token (shown once) as the last line."""
        with client() as api:
            created = call(api.post, "/tenants", {"name": name, "admin": admin})
        typer.echo(f"tenant {created['name']} added; its token (shown only now):", err=True)
        typer.echo(created["token"])

    @tenant_app.command("ls")
    def tenant_ls(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Tenants."""
        with client() as api:
            found = call(api.get, "/tenants")
        if as_json:
            print_json(found)
            return
        table(
            ("TENANT", "ADMIN", "CREATED"),
            [(t["name"], "yes" if t["admin"] else "", when(t["created_at"])) for t in found],
        )

    @tenant_app.command("token")
    def tenant_token(name: Annotated[str, typer.Argument(help="A tenant's name.")]) -> None:
        """Issue another token for a tenant (its other tokens stay valid)."""
        with client() as api:
            issued = call(api.post, f"/tenants/{name}/tokens")
        typer.echo(f"new token for {name} (shown only now):", err=True)
        typer.echo(issued["token"])

    app.add_typer(tenant_app, name="tenant")
