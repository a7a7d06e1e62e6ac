"""``adapters``: the adapter registry from the command line.

Results go to stdout (``--json`` makes them JSON and nothing else), messages and errors to
stderr. Exit codes: 0 success, 1 a user error (bad input, unknown adapter, refused upload,
failed check), 2 a usage error, 3 the registry could not be reached. Set
``ADAPTER_REGISTRY_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import httpx
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from .client import (
    Cache,
    Client,
    ClientConfig,
    MergeJob,
    RegistryAuthError,
    RegistryUnavailable,
    check_folder,
    parse_ref,
    save_login,
)
from .errors import AdapterError, ValidationFailed
from .problems import Problem

# --- plumbing --------------------------------------------------------------------------------


def _debug() -> bool:
    return os.environ.get("ADAPTER_REGISTRY_DEBUG", "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _problem_line(p: Problem) -> str:
    named = p.tensor and (p.tensor in p.message or p.tensor.removeprefix("base_model.model.") in p.message)
    where = f"{p.tensor}: " if p.tensor and not named else ""
    detail = [f"{k} {v}" for k, v in (("expected", p.expected), ("found", p.found)) if v is not None]
    return f"  - {where}{p.message}" + (f" ({', '.join(detail)})" if detail else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fail(exc: BaseException, code: int, refused: str = "the adapter does not validate") -> NoReturn:
    """One ``error:`` line on stderr (then a ValidationFailed's problems, one a line), and exit."""
    if isinstance(exc, ValidationFailed) and exc.problems:
        typer.echo(f"error: {refused} ({_plural(len(exc.problems), 'problem')}):", err=True)
        for p in exc.problems:
            typer.echo(_problem_line(p), err=True)
    else:
        typer.echo(f"error: {_one_line(str(exc)) or type(exc).__name__}", err=True)
    raise typer.Exit(code)


class _Group(TyperGroup):
    """The root group: turns expected errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (AdapterError, OSError, httpx.HTTPError) as exc:
            if _debug():
                raise
            _fail(exc, 3 if isinstance(exc, (RegistryUnavailable, httpx.TransportError)) else 1)


@dataclass
class State:
    """The global options."""

    url: str | None = None
    token: str | None = None
    cache_dir: Path | None = None
    quiet: bool = False
    json: bool = False

    def client(self) -> Client:
        """A client for the chosen registry (progress bars only on a terminal, and not with --quiet)."""
        return Client(self.url, self.token, cache_dir=self.cache_dir, quiet=True if self.quiet else None)

    def cache(self) -> Cache:
        """The local cache."""
        return Cache(ClientConfig.resolve(self.url, self.token, self.cache_dir).cache_dir)


def _state(ctx: typer.Context, as_json: bool = False) -> State:
    st = ctx.find_object(State) or State()
    st.json = st.json or as_json
    return st


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _console() -> Console:
    """Rich output on stdout; when that is not a terminal, lines are never wrapped or cut."""
    console = Console(markup=False, highlight=False)
    return console if console.is_terminal else Console(markup=False, highlight=False, width=10_000)


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for col in table.columns:  # fold (not cut) everything but descriptions on a narrow terminal
        col.overflow = "ellipsis" if col.header == "DESCRIPTION" else "fold"
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    _console().print(table)


def _fields(pairs: list[tuple[str, Any]]) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(key, "" if value is None else str(value))
    _console().print(table)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` (a file, or a folder holding one) as a dict."""
    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AdapterError(f"{file} does not hold a JSON object")
    return data


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Push, pull, browse and check adapters in an adapter registry.")
alias_app = typer.Typer(no_args_is_help=True, help="Move or remove the aliases of an adapter.")
base_app = typer.Typer(no_args_is_help=True, help="Register and browse base models.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect and prune the local cache.")
jobs_app = typer.Typer(no_args_is_help=True, help="Follow and cancel server-side merge jobs.")
app.add_typer(alias_app, name="alias")
app.add_typer(base_app, name="base-models")
app.add_typer(cache_app, name="cache")
app.add_typer(jobs_app, name="jobs")


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        help="Registry URL (default: $ADAPTER_REGISTRY_URL, the login file, or http://127.0.0.1:8000).")] = None,
    token: Annotated[str | None, typer.Option(
        help="API token (default: $ADAPTER_REGISTRY_TOKEN or the login file).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Cache folder (default: $ADAPTER_REGISTRY_CACHE or ~/.cache/adapter-registry).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push, pull, browse and check adapters in an adapter registry."""
    ctx.obj = State(url, token, cache_dir, quiet, as_json)


# --- login, push, pull ------------------------------------------------------------------------


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Registry URL.")] = None,
    token: Annotated[str | None, typer.Option(help="API token (prompted for when missing).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a token with the registry and save it (with the URL) for later commands."""
    st = _state(ctx, as_json)
    final_url = ClientConfig.resolve(url or st.url).url
    secret = token or st.token or typer.prompt("Token", hide_input=True, err=True)
    with Client(final_url, secret, cache_dir=st.cache_dir) as c:
        try:
            who = c.http.json("GET", "/api/v1/whoami")
        except RegistryAuthError as exc:
            raise AdapterError(f"{final_url} did not accept this token (HTTP {exc.status})") from exc
    if not who.get("authenticated"):
        raise AdapterError(f"{final_url} did not accept this token")
    path = save_login(final_url, secret)
    if st.json:
        _print_json({"url": final_url, "whoami": who, "config": str(path)})
        return
    scope = f"namespace {who.get('namespace')}" if who.get("namespace") else "all namespaces"
    typer.echo(f"logged in to {final_url} as {who.get('name')} ({scope}; scopes: {', '.join(who.get('scopes', []))})")
    typer.echo(f"saved to {path}")


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
    private: Annotated[bool, typer.Option("--private", help="Only tokens of the namespace can see it.")] = False,
    untrained: Annotated[bool, typer.Option("--untrained", help="Accept all-zero (initial) weights.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an adapter folder against its base model, then upload it as a new version."""
    st = _state(ctx, as_json)
    with st.client() as c:
        result = c.push(folder, name, base_model, alias=alias, description=description, tags=tag or None,
                        private=private, untrained=untrained)
    if st.json:
        _print_json(asdict(result))
        return
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"pushed {result.name} version {result.version}")
    typer.echo(f"commit {result.commit}")
    if result.url:
        typer.echo(result.url)


@app.command()
def pull(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="namespace/name[@version|alias|commit]")],
    version: Annotated[str | None, typer.Option(help="Version number, alias or commit.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an adapter into the cache and print its folder (nothing else)."""
    st = _state(ctx, as_json)
    with st.client() as c:
        path = c.pull(ref, version)
    if st.json:
        _print_json({"ref": ref, "path": str(path), "files": sorted(p.name for p in path.iterdir())})
    else:
        typer.echo(str(path))


# --- browsing ---------------------------------------------------------------------------------


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
    st = _state(ctx, as_json)
    with st.client() as c:
        body = c.ls(base_model=base_model, method=method, tag=tag, q=query, page=page)
    if st.json:
        _print_json(body)
        return
    items = body.get("items", [])
    if not items:
        typer.echo("no adapters found", err=True)
        return
    _table(["NAME", "BASE MODEL", "METHOD", "VERSIONS", "TAGS", "DESCRIPTION"],
           [[a["name"], a["base_model"], a["method"], a["versions"], ",".join(a.get("tags") or []),
             a.get("description")] for a in items])
    total = body.get("total", len(items))
    if total > len(items):
        typer.echo(f"page {page}: {len(items)} of {total} adapters (--page {page + 1} for more)", err=True)


@app.command()
def info(ctx: typer.Context, name: Annotated[str, typer.Argument(help="namespace/name")],
         as_json: JsonOpt = False) -> None:
    """An adapter's metadata and aliases."""
    st = _state(ctx, as_json)
    with st.client() as c:
        body = c.info(name)
    if st.json:
        _print_json(body)
        return
    aliases = ", ".join(f"{k}={v}" for k, v in sorted(body.get("aliases", {}).items()))
    _fields([("name", body["name"]), ("base model", body["base_model"]), ("method", body["method"]),
             ("versions", body["versions"]), ("aliases", aliases), ("visibility", body["visibility"]),
             ("tags", ", ".join(body.get("tags") or [])), ("description", body.get("description")),
             ("created", body.get("created_at")), ("updated", body.get("updated_at"))])


@app.command()
def versions(ctx: typer.Context, name: Annotated[str, typer.Argument(help="namespace/name")],
             as_json: JsonOpt = False) -> None:
    """Every version of an adapter, newest first, with the aliases pointing at each."""
    st = _state(ctx, as_json)
    with st.client() as c:
        items = c.versions(name)
        aliases = c.info(name).get("aliases", {})
    for v in items:
        v["aliases"] = sorted(a for a, n in aliases.items() if n == v["version"])
    if st.json:
        _print_json(items)
        return
    _table(["VERSION", "COMMIT", "ALIASES", "SIZE", "CREATED", "BY"],
           [[v["version"], v["commit"][:12], ",".join(v["aliases"]), _size(sum(f["size"] for f in v["files"])),
             v.get("created_at"), v.get("created_by")] for v in items])


# --- aliases ----------------------------------------------------------------------------------


@alias_app.command("set")
def alias_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="namespace/name")],
    alias: Annotated[str, typer.Argument(help="The alias (not 'latest').")],
    version: Annotated[str, typer.Argument(help="Version number or commit.")],
    as_json: JsonOpt = False,
) -> None:
    """Point an alias at a version."""
    st = _state(ctx, as_json)
    with st.client() as c:
        body = c.set_alias(name, alias, int(version) if version.isdigit() else version)
    if st.json:
        _print_json(body)
    else:
        typer.echo(f"{name}@{body['alias']} -> version {body['version']} (commit {body['commit'][:12]})")


@alias_app.command("rm")
def alias_rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="namespace/name")],
    alias: Annotated[str, typer.Argument(help="The alias to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove an alias."""
    st = _state(ctx, as_json)
    with st.client() as c:
        body = c.delete_alias(name, alias)
    if st.json:
        _print_json(body)
    else:
        typer.echo(f"removed {name}@{alias}")


# --- base models ------------------------------------------------------------------------------


@base_app.command("register")
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
    st = _state(ctx, as_json)
    data = _read_config(config or from_model_dir)  # type: ignore[arg-type]
    with st.client() as c:
        body = c.register_base_model(data, name, revision, weights=list(weights or []))
    if st.json:
        _print_json(body)
    else:
        typer.echo(f"registered {body['name']}: {body.get('architecture') or body.get('model_type')}, "
                   f"{body['modules']} modules, fingerprint {body['fingerprint'][:12]}")
        if weights:
            typer.echo(f"weights: {_plural(len(body['files']), 'file')} stored")


@base_app.command("ls")
def base_ls(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Text search.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Registered base models."""
    st = _state(ctx, as_json)
    with st.client() as c:
        items = c.base_models(query)
    if st.json:
        _print_json(items)
        return
    if not items:
        typer.echo("no base models found", err=True)
        return
    _table(["NAME", "ARCHITECTURE", "MODEL TYPE", "MODULES", "FINGERPRINT", "REVISION"],
           [[b["name"], b.get("architecture"), b.get("model_type"), b["modules"], b["fingerprint"][:12],
             b.get("revision")] for b in items])


@base_app.command("show")
def base_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="namespace/name")],
              as_json: JsonOpt = False) -> None:
    """A base model with a summary of its signature (--json: the whole signature)."""
    st = _state(ctx, as_json)
    with st.client() as c:
        body = c.base_model(name)
    if st.json:
        _print_json(body)
        return
    kinds: dict[str, int] = {}
    for m in body.get("signature", {}).get("modules", []):
        kinds[m.get("kind", "?")] = kinds.get(m.get("kind", "?"), 0) + 1
    _fields([("name", body["name"]), ("architecture", body.get("architecture")),
             ("model type", body.get("model_type")), ("revision", body.get("revision")),
             ("fingerprint", body["fingerprint"]),
             ("modules", f"{body['modules']} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"),
             ("created", body.get("created_at"))])


# --- server-side merges -----------------------------------------------------------------------


class MergeInto(StrEnum):
    """What a merge produces."""

    adapter = "adapter"
    model = "model"


def _merge_input(text: str) -> tuple[str, float]:
    """``namespace/name@ref[:weight]`` as (reference, weight); the weight is 1 when omitted."""
    ref, sep, weight = text.rpartition(":")
    if not sep:
        ref, weight = text, "1"
    try:
        value = float(weight)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise AdapterError(f"merge inputs look like 'namespace/name@ref[:weight]' with a finite number as weight, "
                           f"got {text!r}")
    parse_ref(ref)  # the same shape check as pull
    return ref, value


def _job_inputs(raw: dict[str, Any]) -> str:
    return ", ".join(f"{i.get('adapter')}@{i.get('version')}×{i.get('weight')}" for i in raw.get("inputs") or [])


def _job_output(raw: dict[str, Any]) -> str:
    out = raw.get("output") or {}
    return f"{out.get('name')} ({out.get('kind')})" if out else ""


def _job_result(job: MergeJob) -> str:
    """The new adapter version, or the new base model, of a succeeded job."""
    res = job.result or {}
    if res.get("ref"):
        return str(res["ref"])
    return f"{res['model']} (base model)" if res.get("model") else ""


def _follow(c: Client, job: MergeJob, timeout: float | None) -> MergeJob:
    """Wait for a job to end (a progress bar on a terminal); Ctrl-C stops waiting, not the job."""
    from .client.merges import follow

    try:
        return follow(c.http, job, timeout=timeout, poll=0.5, quiet=c.quiet)
    except TimeoutError as exc:
        raise AdapterError(f"{exc}; it keeps running (adapters jobs show {job.id})") from exc
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; merge job {job.id} keeps running (adapters jobs cancel {job.id} stops it)",
                   err=True)
        raise typer.Exit(130) from None


@app.command()
def merge(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(metavar="REF[:WEIGHT]...", help=(
        "Adapter versions to merge: namespace/name@version|alias|commit, each with an optional :weight (1).")
    )],
    output: Annotated[str, typer.Option("--output", "-o", help=(
        "namespace/name of the result: an adapter (gets a new version), or with --into model a new base model."))],
    into: Annotated[MergeInto, typer.Option(help=(
        "adapter: a new adapter version; model: the base model's weights with the inputs merged in."))
    ] = MergeInto.adapter,
    combination_type: Annotated[str, typer.Option("--type", help=(
        "linear, cat, svd, ties, dare_linear, dare_ties, magnitude_prune, or an *_svd form of the last four."))
    ] = "linear",
    density: Annotated[float | None, typer.Option(help="Fraction of values kept (ties, dare_*, magnitude_prune).")
                       ] = None,
    majority_sign_method: Annotated[str | None, typer.Option(help="total or frequency (ties, dare_ties).")] = None,
    svd_rank: Annotated[int | None, typer.Option(min=1, help="Rank of the *_svd results.")] = None,
    svd_clamp: Annotated[float | None, typer.Option(help="Quantile clamp of the *_svd results.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the dare_* random masks (else chosen and recorded).")
                    ] = None,
    alias: Annotated[str | None, typer.Option(help="Adapter outputs: point this alias at the new version.")] = None,
    description: Annotated[str | None, typer.Option(help="Adapter outputs: the adapter's description.")] = None,
    private: Annotated[bool, typer.Option("--private", help="Adapter outputs: create the adapter private.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the queued job's id and return at once.")] = False,
    timeout: Annotated[float | None, typer.Option(min=0, help="Stop waiting after this many seconds.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the registry to merge adapter versions on its workers; waits for the result unless --no-wait."""
    st = _state(ctx, as_json)
    pairs = [_merge_input(text) for text in inputs]
    extra: dict[str, Any] = {"alias": alias, "description": description, "private": private or None}
    given = {k: v for k, v in extra.items() if v is not None}
    if into is MergeInto.model and given:
        raise AdapterError(f"--{'/--'.join(given)} only apply to adapter outputs, not to --into model")
    with st.client() as c:
        try:
            job = c.merge(pairs, output, combination_type=combination_type, into=into.value, wait=False,
                          density=density, majority_sign_method=majority_sign_method, svd_rank=svd_rank,
                          svd_clamp=svd_clamp, seed=seed, **given)
        except ValidationFailed as exc:
            _fail(exc, 1, refused="the registry refused the merge")
        if not no_wait:
            if not st.json:
                typer.echo(f"merge job {job.id} {job.state}", err=True)
            job = _follow(c, job, timeout)
    if st.json:
        _print_json(job.raw)
    elif no_wait:
        typer.echo(job.id)
        typer.echo(f"merge job {job.id} {job.state}: follow it with 'adapters jobs show {job.id} --wait'", err=True)
    else:
        typer.echo(f"merged into {_job_result(job)}")
        typer.echo(f"job {job.id}")


@jobs_app.command("ls")
def jobs_ls(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Only jobs whose output is in this namespace.")] = None,
    page: Annotated[int, typer.Option(min=1, help="Result page (50 jobs a page, newest first).")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Merge jobs the token may see, newest first."""
    st = _state(ctx, as_json)
    params = {k: v for k, v in {"state": state, "namespace": namespace, "page": page}.items() if v is not None}
    with st.client() as c:
        body = c.http.json("GET", "/api/v1/merge-jobs", params=params)
    if st.json:
        _print_json(body)
        return
    items = body.get("items", [])
    if not items:
        typer.echo("no merge jobs found", err=True)
        return
    jobs = [MergeJob.from_json(j) for j in items]
    _table(["ID", "STATE", "PROGRESS", "TYPE", "INPUTS", "OUTPUT", "RESULT", "CREATED"],
           [[j.id, j.state, f"{round(100 * j.progress)}%", j.raw.get("combination_type"), _job_inputs(j.raw),
             _job_output(j.raw), _job_result(j) or j.error, j.raw.get("created_at")] for j in jobs])
    total = body.get("total", len(items))
    if total > (page - 1) * 50 + len(items):
        typer.echo(f"page {page}: {len(items)} of {total} jobs (--page {page + 1} for more)", err=True)


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job ends (exit 1 unless it succeeds).")
                    ] = False,
    timeout: Annotated[float | None, typer.Option(min=0, help="Stop waiting after this many seconds.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A merge job: state, progress, inputs, output, and its result or error."""
    st = _state(ctx, as_json)
    with st.client() as c:
        job = c.merge_job(job_id)
        if wait:
            job = _follow(c, job, timeout)
    if st.json:
        _print_json(job.raw)
        return
    raw = job.raw
    _fields([("id", job.id), ("state", job.state + (" (cancel requested)" if raw.get("cancel_requested") and
                                                     not job.done else "")),
             ("progress", f"{round(100 * job.progress)}%"), ("type", raw.get("combination_type")),
             ("parameters", json.dumps(raw.get("parameters") or {}, sort_keys=True)),
             ("inputs", _job_inputs(raw)), ("output", _job_output(raw)), ("base model", raw.get("base_model")),
             ("result", _job_result(job)), ("error", job.error), ("attempts", raw.get("attempts")),
             ("created", raw.get("created_at")), ("finished", raw.get("finished_at"))])


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    as_json: JsonOpt = False,
) -> None:
    """Cancel a merge job: a queued one at once, a running one at its next step."""
    st = _state(ctx, as_json)
    with st.client() as c:
        job = c.cancel_merge(job_id)
    if st.json:
        _print_json(job.raw)
    elif job.state == "cancelled":
        typer.echo(f"cancelled merge job {job.id}")
    else:
        typer.echo(f"merge job {job.id} is {job.state}: it stops at its next step")


# --- local checks -----------------------------------------------------------------------------


def _local_config(arg: str) -> dict[str, Any] | None:
    """The config.json that ``arg`` names, or None when ``arg`` is a registry name."""
    path = Path(arg).expanduser()
    if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
        return _read_config(path)
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
    st = _state(ctx, as_json)
    local = _local_config(base_model)
    if local is not None:
        try:
            from .signature import signature_from_config
        except ImportError as exc:  # pragma: no cover - transformers is a dependency of the dev/server extras
            raise AdapterError("checking against a config.json needs transformers (pip install transformers)") from exc
        problems = check_folder(folder, signature_from_config(local), untrained=untrained)
    else:
        with st.client() as c:
            problems = c.check(folder, base_model, untrained=untrained)
    if st.json:
        _print_json({"ok": not problems, "folder": str(folder), "base_model": base_model,
                     "problems": [p.to_dict() for p in problems]})
    elif not problems:
        typer.echo(f"OK: {folder} fits {base_model}")
    else:
        typer.echo(f"{folder} does not pass against {base_model} ({_plural(len(problems), 'problem')}):")
        for p in problems:
            typer.echo(_problem_line(p))
    if problems:
        raise typer.Exit(1)


# --- the cache --------------------------------------------------------------------------------


@cache_app.command("ls")
def cache_ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Cached adapter snapshots."""
    st = _state(ctx, as_json)
    cache = st.cache()
    entries = cache.entries()
    if st.json:
        _print_json(entries)
        return
    if not entries:
        typer.echo(f"the cache at {cache.root} is empty", err=True)
        return
    _table(["ADAPTER", "VERSION", "COMMIT", "SIZE", "PATH"],
           [[e["adapter"], e["version"], e["commit"][:12], _size(e["bytes"]), e["path"]] for e in entries])
    total = _size(sum(e["bytes"] for e in entries))
    typer.echo(f"{_plural(len(entries), 'snapshot')}, {total} in {cache.root}", err=True)


@cache_app.command("prune")
def cache_prune(
    ctx: typer.Context,
    everything: Annotated[bool, typer.Option("--all", help="Remove every snapshot.")] = False,
    older_than: Annotated[float | None, typer.Option(min=0, metavar="DAYS",
                                                     help="Remove snapshots unused for DAYS days.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove snapshots (all, or old ones), then files no snapshot uses. Without options only the latter."""
    st = _state(ctx, as_json)
    result = st.cache().prune(older_than_days=older_than, everything=everything)
    if st.json:
        _print_json(result)
    else:
        typer.echo(f"removed {_plural(result['snapshots'], 'snapshot')} and {_plural(result['blobs'], 'file')}, "
                   f"freed {_size(result['bytes'])}")


def main() -> None:
    """The ``adapters`` console script."""
    app(prog_name="adapters")


if __name__ == "__main__":
    main()
