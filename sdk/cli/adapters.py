"""``adapters push``, ``pull``, ``ls``, ``info`` and ``versions``: publishing, fetching and browsing adapters."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import Client, PushResult
from .common import JsonOpt, fields, printable, respond, size, table

app = typer.Typer()


@app.command()
def push(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A folder written by save_pretrained.")],
    name: Annotated[str, typer.Argument(help="namespace/name")],
    base_model: Annotated[str | None, typer.Option(
        help="Registered base model, namespace/name (default: the adapter's, or its config's).")] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    description: Annotated[str | None, typer.Option(help="Adapter description.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeat for several).")] = None,
    private: Annotated[bool, typer.Option("--private", help=(
        "Create the adapter private (only tokens of its namespace see it); an existing one keeps its visibility, "
        "and --private on a public one is refused (409)."))] = False,
    untrained: Annotated[bool, typer.Option("--untrained", help="Accept all-zero (initial) weights.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an adapter folder against its base model, then upload it as a new version."""

    def call(c: Client) -> PushResult:
        return c.push(folder, name, base_model, alias=alias, description=description, tags=tag or None,
                      private=True if private else None, untrained=untrained)

    def show(result: PushResult) -> None:
        for note in result.notes:
            typer.echo(printable(f"note: {note}"), err=True)
        typer.echo(f"pushed {result.name} version {result.version}")
        typer.echo(f"commit {result.commit}")
        if result.url:
            typer.echo(printable(result.url))

    respond(ctx, as_json, call, show, to_json=asdict)


@app.command()
def pull(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="namespace/name[@version|alias|commit]")],
    version: Annotated[str | None, typer.Option(help="Version number, alias or commit.")] = None,
    expect_commit: Annotated[str | None, typer.Option(
        help="Refuse (exit 1) unless the reference still resolves to this commit (a pinned alias).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an adapter into the cache and print its folder (nothing else; the folder is named by the commit)."""
    respond(ctx, as_json, lambda c: c.pull(ref, version, expect_commit=expect_commit),
            lambda path: typer.echo(str(path)),
            to_json=lambda path: {"ref": ref, "commit": path.name, "path": str(path),
                                  "files": sorted(p.name for p in path.iterdir())})


@app.command("ls")
def ls_adapters(
    ctx: typer.Context,
    base_model: Annotated[str | None, typer.Option(help="Only adapters for this base model.")] = None,
    method: Annotated[str | None, typer.Option(help="Only this method (lora, …).")] = None,
    tag: Annotated[str | None, typer.Option(help="Only adapters with this tag.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Text search.")] = None,
    page: Annotated[int, typer.Option(min=1, help="Result page.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Search adapters."""

    def show(body: dict[str, Any]) -> None:
        items = body.get("items", [])
        if not items:
            typer.echo("no adapters found", err=True)
            return
        table(["NAME", "BASE MODEL", "METHOD", "VERSIONS", "TAGS", "DESCRIPTION"],
              [[a["name"], a["base_model"], a["method"], a["versions"], ",".join(a.get("tags") or []),
                a.get("description")] for a in items])
        total = body.get("total")
        total = len(items) if total is None else total
        more = "" if body.get("total_exact", True) else " or more"  # the service counts up to a bound
        if total > len(items) or more:
            typer.echo(f"page {page}: {len(items)} of {total}{more} adapters (--page {page + 1} for more)", err=True)

    respond(ctx, as_json, lambda c: c.ls(base_model=base_model, method=method, tag=tag, q=query, page=page), show)


@app.command()
def info(ctx: typer.Context, name: Annotated[str, typer.Argument(help="namespace/name")],
         as_json: JsonOpt = False) -> None:
    """An adapter's metadata and aliases."""

    def show(body: dict[str, Any]) -> None:
        aliases = ", ".join(f"{k}={v}" for k, v in sorted(body.get("aliases", {}).items()))
        fields([("name", body["name"]), ("base model", body["base_model"]), ("method", body["method"]),
                ("versions", body["versions"]), ("aliases", aliases), ("visibility", body["visibility"]),
                ("tags", ", ".join(body.get("tags") or [])), ("description", body.get("description")),
                ("created", body.get("created_at")), ("updated", body.get("updated_at"))])

    respond(ctx, as_json, lambda c: c.info(name), show)


@app.command()
def versions(ctx: typer.Context, name: Annotated[str, typer.Argument(help="namespace/name")],
             as_json: JsonOpt = False) -> None:
    """Every version of an adapter, newest first, with the aliases pointing at each."""

    def call(c: Client) -> list[dict[str, Any]]:
        items = c.versions(name)
        aliases = c.info(name).get("aliases", {})
        for v in items:
            v["aliases"] = sorted(a for a, n in aliases.items() if n == v["version"])
        return items

    def show(items: list[dict[str, Any]]) -> None:
        table(["VERSION", "COMMIT", "ALIASES", "SIZE", "CREATED", "BY"],
              [[v["version"], v["commit"][:12], ",".join(v["aliases"]), size(sum(f["size"] for f in v["files"])),
                v.get("created_at"), v.get("created_by")] for v in items])

    respond(ctx, as_json, call, show)
