"""``adapters base-models``: register base models by their config.json, and browse them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import JsonOpt, fields, plural, printable, read_config, respond, table

app = typer.Typer(no_args_is_help=True, help="Register and browse base models.")


@app.command("register")
def base_register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="namespace/name")],
    config: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                help="A transformers config.json.")] = None,
    from_model_dir: Annotated[Path | None, typer.Option(exists=True, file_okay=False,
                                                        help="A model folder with a config.json.")] = None,
    revision: Annotated[str | None, typer.Option(help="Revision to record (a hub commit or tag).")] = None,
    weights: Annotated[list[Path] | None, typer.Option(
        exists=True, help="A *.safetensors file (or a folder of them) with the base weights, for server-side "
                          "merges; repeat for shards.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a base model by its config.json (the registry builds its signature)."""
    if (config is None) == (from_model_dir is None):
        raise typer.BadParameter("give exactly one of --config and --from-model-dir")
    data = read_config(config or from_model_dir)  # type: ignore[arg-type]

    def show(body: dict[str, Any]) -> None:
        typer.echo(printable(f"registered {body['name']}: {body.get('architecture') or body.get('model_type')}, "
                             f"{body['modules']} modules, fingerprint {body['fingerprint'][:12]}"))
        if weights:
            typer.echo(f"weights: {plural(len(body['files']), 'file')} stored")

    respond(ctx, as_json, lambda c: c.register_base_model(data, name, revision, weights=list(weights or [])), show)


@app.command("ls")
def base_ls(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Text search.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Registered base models."""

    def show(items: list[dict[str, Any]]) -> None:
        if not items:
            typer.echo("no base models found", err=True)
            return
        table(["NAME", "ARCHITECTURE", "MODEL TYPE", "MODULES", "FINGERPRINT", "REVISION"],
              [[b["name"], b.get("architecture"), b.get("model_type"), b["modules"], b["fingerprint"][:12],
                b.get("revision")] for b in items])

    respond(ctx, as_json, lambda c: c.base_models(query), show)


@app.command("show")
def base_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="namespace/name")],
              as_json: JsonOpt = False) -> None:
    """A base model with a summary of its signature (--json: the whole signature)."""

    def show(body: dict[str, Any]) -> None:
        kinds: dict[str, int] = {}
        for m in body.get("signature", {}).get("modules", []):
            kinds[m.get("kind", "?")] = kinds.get(m.get("kind", "?"), 0) + 1
        fields([("name", body["name"]), ("architecture", body.get("architecture")),
                ("model type", body.get("model_type")), ("revision", body.get("revision")),
                ("fingerprint", body["fingerprint"]),
                ("modules", f"{body['modules']} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"),
                ("created", body.get("created_at"))])

    respond(ctx, as_json, lambda c: c.base_model(name), show)
