"""``adapters cache``: list the local cache's snapshots, and prune them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import JsonOpt, emit, plural, size, state, table

app = typer.Typer(no_args_is_help=True, help="Inspect and prune the local cache.")


@app.command("ls")
def cache_ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Cached adapter snapshots."""
    st = state(ctx, as_json)
    cache = st.cache()

    def show(entries: list[dict[str, Any]]) -> None:
        if not entries:
            typer.echo(f"the cache at {cache.root} is empty", err=True)
            return
        table(["ADAPTER", "VERSION", "COMMIT", "SIZE", "PATH"],
              [[e["adapter"], e["version"], e["commit"][:12], size(e["bytes"]), e["path"]] for e in entries])
        total = size(sum(e["bytes"] for e in entries))
        typer.echo(f"{plural(len(entries), 'snapshot')}, {total} in {cache.root}", err=True)

    emit(st, cache.entries(), show)


@app.command("prune")
def cache_prune(
    ctx: typer.Context,
    everything: Annotated[bool, typer.Option("--all", help="Remove every snapshot.")] = False,
    older_than: Annotated[float | None, typer.Option(min=0, metavar="DAYS",
                                                     help="Remove snapshots unused for DAYS days.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove snapshots (all, or old ones), then files no snapshot uses. Without options only the latter."""
    st = state(ctx, as_json)

    def show(result: dict[str, Any]) -> None:
        typer.echo(f"removed {plural(result['snapshots'], 'snapshot')} and {plural(result['blobs'], 'file')}, "
                   f"freed {size(result['bytes'])}")

    emit(st, st.cache().prune(older_than_days=older_than, everything=everything), show)
