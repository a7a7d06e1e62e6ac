"""``adapters compositions``: publish, show and search compositions (adapter versions stacked or routed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import AdapterError
from .common import JsonOpt, printable, respond, table
from .merges import _merge_input

app = typer.Typer(no_args_is_help=True, help=(
    "Compositions: adapter versions stacked with weights, or routed by Arrow or a learned router."))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="namespace/name of the composition (a new version is added).")],
    members: Annotated[list[str], typer.Argument(metavar="REF[:WEIGHT]...", help=(
        "Task members: namespace/name@version|alias|commit, each with an optional :weight (stacked)."))],
    routing: Annotated[str, typer.Option(help="stacked, arrow or router.")] = "stacked",
    general: Annotated[list[str] | None, typer.Option(help="Arrow GKS: a general-knowledge member (repeat).")
                       ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Arrow: experts per token.")] = 3,
    temperature: Annotated[float, typer.Option(help="Arrow: softmax temperature.")] = 1.0,
    rng_seed: Annotated[int | None, typer.Option(help="Arrow: power-iteration seed (none: exact SVD).")] = None,
    router_file: Annotated[Path | None, typer.Option(help=(
        "router: the Poly router file (safetensors, module_logits per layer; sdk.tuners.poly.skills).")
    )] = None,
    n_tasks: Annotated[int, typer.Option(min=1, help="router: tasks the router file has rows for.")] = 1,
    n_splits: Annotated[int, typer.Option(min=1, help="router: splits per skill (multi-head routing).")] = 1,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    description: Annotated[str | None, typer.Option(help="The composition's description.")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the composition private.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish a composition version; the registry pins each member by commit (and computes Arrow prototypes)."""
    if routing not in ("stacked", "arrow", "router"):
        raise AdapterError(f"--routing is 'stacked', 'arrow' or 'router', got {routing!r}")
    if (routing == "router") != (router_file is not None):
        raise AdapterError("--router-file goes with --routing router, and router routing needs it")
    body: list[dict[str, Any]] = [{"adapter": ref, "weight": w} for ref, w in map(_merge_input, members)]
    body += [{"adapter": ref, "role": "general"} for ref in general or []]
    spec: dict[str, Any] = {"kind": routing}
    if routing == "arrow":
        spec |= {"top_k": top_k, "router_temperature": temperature, "use_gks": bool(general), "rng_seed": rng_seed}
    router = router_file.read_bytes() if router_file is not None else None
    if routing == "router":
        spec |= {"n_tasks": n_tasks, "n_splits": n_splits}

    def show(v: dict[str, Any]) -> None:
        typer.echo(printable(f"{v['composition']}@{v['version']} ({v['commit']}) {v['routing']['kind']}, "
                             f"{len(v['members'])} members"))

    respond(ctx, as_json, lambda c: c.create_composition(name, body, spec, alias=alias, description=description,
                                                         private=private, router=router), show)


@app.command("show")
def show_composition(ctx: typer.Context, ref: Annotated[str, typer.Argument(help="namespace/name[@ref]")],
                     as_json: JsonOpt = False) -> None:
    """A composition version: its routing and pinned members."""
    def show(v: dict[str, Any]) -> None:
        typer.echo(printable(f"{v['composition']}@{v['version']} ({v['commit']}) on {v['base_model']}"))
        typer.echo(printable(f"routing: {v['routing']}"))
        for f in v.get("files", []):
            typer.echo(printable(f"file: {f['filename']} ({f['size']} bytes, sha256 {f['sha256']})"))
        table(["member", "version", "commit", "role", "weight"],
              [[m["adapter"], m["version"], m["commit"][:12], m.get("role", "task"), m.get("weight", 1.0)]
               for m in v["members"]])

    respond(ctx, as_json, lambda c: c.composition(ref), show)


@app.command("ls")
def ls(ctx: typer.Context, q: Annotated[str | None, typer.Option(help="Text in name or description.")] = None,
       base_model: Annotated[str | None, typer.Option(help="Only compositions for this base model.")] = None,
       as_json: JsonOpt = False) -> None:
    """Search compositions."""
    params = {k: v for k, v in {"q": q, "base_model": base_model}.items() if v}

    def show(page: dict[str, Any]) -> None:
        table(["name", "base model", "versions", "visibility"],
              [[i["name"], i["base_model"], i["versions"], i["visibility"]] for i in page["items"]])

    respond(ctx, as_json, lambda c: c.http.json("GET", "/api/v1/compositions", params=params), show)
