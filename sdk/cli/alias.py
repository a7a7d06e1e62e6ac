"""``adapters alias``: point an adapter's aliases at versions, or remove them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import JsonOpt, printable, respond

app = typer.Typer(no_args_is_help=True, help="Move or remove the aliases of an adapter.")
NameArg = Annotated[str, typer.Argument(help="namespace/name")]


@app.command("set")
def alias_set(
    ctx: typer.Context,
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="The alias (not 'latest').")],
    version: Annotated[str, typer.Argument(help="Version number or commit.")],
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version."""

    def show(body: dict[str, Any]) -> None:
        typer.echo(printable(f"{name}@{body['alias']} -> version {body['version']} (commit {body['commit'][:12]})"))

    respond(ctx, as_json, lambda c: c.set_alias(name, alias, int(version) if version.isdigit() else version), show)


@app.command("rm")
def alias_rm(
    ctx: typer.Context,
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="The alias to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove an alias."""
    respond(ctx, as_json, lambda c: c.delete_alias(name, alias), lambda _: typer.echo(f"removed {name}@{alias}"))


@app.command("history")
def alias_history(ctx: typer.Context, name: NameArg, alias: Annotated[str, typer.Argument(help="The alias.")],
                  as_json: JsonOpt = False) -> None:
    """Every move of an alias, newest first: when, to which version (commit), by whom."""

    def show(body: dict[str, Any]) -> None:
        for m in body["items"]:
            target = f"version {m['version']} (commit {m['commit'][:12]})" if m["version"] else "removed"
            typer.echo(printable(f"{m['at']}  {name}@{alias} -> {target}  by {m['moved_by'] or '?'}"))

    respond(ctx, as_json, lambda c: c.alias_history(name, alias), show)
