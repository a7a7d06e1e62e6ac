"""``adapters check``: check an adapter folder against a base model as the registry would on push,
against a registered base model or, offline, a config.json; nothing is uploaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import check_folder
from ..errors import AdapterError
from ..problems import Problem
from .common import JsonOpt, emit, plural, problem_line, read_config, state

app = typer.Typer()


def _local_config(arg: str) -> dict[str, Any] | None:
    """The config.json that ``arg`` names, or None when ``arg`` is a registry name."""
    path = Path(arg).expanduser()
    if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
        return read_config(path)
    if arg.endswith(".json") or path.is_dir():
        raise AdapterError(f"{arg}: no such config.json")
    return None


@app.command()
def check(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A folder written by save_pretrained.")],
    base_model: Annotated[str, typer.Option(
        help="A registered base model (namespace/name), or a config.json / model folder (checked offline).")],
    untrained: Annotated[bool, typer.Option("--untrained", help="Accept all-zero (initial) weights.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an adapter folder against a base model, as the registry would on push; nothing is uploaded."""
    st = state(ctx, as_json)
    local = _local_config(base_model)
    if local is not None:
        try:
            from ..signature import signature_from_config
        except ImportError as exc:  # pragma: no cover - transformers is a dependency of the dev/server extras
            raise AdapterError("checking against a config.json needs transformers (pip install transformers)") from exc
        problems = check_folder(folder, signature_from_config(local), untrained=untrained)
    else:
        with st.client() as c:
            problems = c.check(folder, base_model, untrained=untrained)

    def show(found: list[Problem]) -> None:
        if not found:
            typer.echo(f"OK: {folder} fits {base_model}")
            return
        typer.echo(f"{folder} does not pass against {base_model} ({plural(len(found), 'problem')}):")
        for p in found:
            typer.echo(problem_line(p))

    def report(found: list[Problem]) -> dict[str, Any]:
        return {"ok": not found, "folder": str(folder), "base_model": base_model,
                "problems": [p.to_dict() for p in found]}

    emit(st, problems, show, to_json=report)
    if problems:
        raise typer.Exit(1)
