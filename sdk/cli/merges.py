"""``adapters merge`` and ``adapters jobs``: server-side merges of adapter versions, and following,
listing and cancelling the merge jobs that run them."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Annotated, Any

import typer

from ..client import Client, MergeJob, parse_ref
from ..client.merges import follow
from ..errors import AdapterError, ValidationFailed
from .common import JsonOpt, fail, fields, print_json, printable, respond, state, table

app = typer.Typer()
jobs_app = typer.Typer(no_args_is_help=True, help="Follow and cancel server-side merge jobs.")


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
    try:
        return follow(c.http, job, timeout=timeout, poll=0.5, quiet=c.quiet)
    except TimeoutError as exc:
        raise AdapterError(f"{exc}; it keeps running (adapters jobs show {job.id})") from exc
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; merge job {job.id} keeps running (adapters jobs cancel {job.id} stops it)",
                   err=True)
        raise typer.Exit(130) from None


def _job_raw(job: MergeJob) -> dict[str, Any]:
    """A job as ``--json`` prints it: the registry's own JSON."""
    return job.raw


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
    st = state(ctx, as_json)
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
            fail(exc, 1, refused="the registry refused the merge")
        if not no_wait:
            if not st.json:
                typer.echo(printable(f"merge job {job.id} {job.state}"), err=True)
            job = _follow(c, job, timeout)
    if st.json:
        print_json(job.raw)
    elif no_wait:
        typer.echo(job.id)
        typer.echo(printable(f"merge job {job.id} {job.state}: follow it with 'adapters jobs show {job.id} --wait'"),
                   err=True)
    else:
        typer.echo(printable(f"merged into {_job_result(job)}"))
        typer.echo(f"job {job.id}")


@jobs_app.command("ls")
def jobs_ls(
    ctx: typer.Context,
    job_state: Annotated[str | None, typer.Option(
        "--state", help="queued, running, succeeded, failed or cancelled.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Only jobs whose output is in this namespace.")] = None,
    page: Annotated[int, typer.Option(min=1, help="Result page (50 jobs a page, newest first).")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Merge jobs the token may see, newest first."""
    params = {k: v for k, v in {"state": job_state, "namespace": namespace, "page": page}.items() if v is not None}

    def show(body: dict[str, Any]) -> None:
        items = body.get("items", [])
        if not items:
            typer.echo("no merge jobs found", err=True)
            return
        jobs = [MergeJob.from_json(j) for j in items]
        table(["ID", "STATE", "PROGRESS", "TYPE", "INPUTS", "OUTPUT", "RESULT", "CREATED"],
              [[j.id, j.state, f"{round(100 * j.progress)}%", j.raw.get("combination_type"), _job_inputs(j.raw),
                _job_output(j.raw), _job_result(j) or j.error, j.raw.get("created_at")] for j in jobs])
        total = body.get("total", len(items))
        if total > (page - 1) * 50 + len(items):
            typer.echo(f"page {page}: {len(items)} of {total} jobs (--page {page + 1} for more)", err=True)

    respond(ctx, as_json, lambda c: c.http.json("GET", "/api/v1/merge-jobs", params=params), show)


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

    def call(c: Client) -> MergeJob:
        job = c.merge_job(job_id)
        return _follow(c, job, timeout) if wait else job

    def show(job: MergeJob) -> None:
        raw = job.raw
        fields([("id", job.id), ("state", job.state + (" (cancel requested)" if raw.get("cancel_requested") and
                                                        not job.done else "")),
                ("progress", f"{round(100 * job.progress)}%"), ("type", raw.get("combination_type")),
                ("parameters", json.dumps(raw.get("parameters") or {}, sort_keys=True)),
                ("inputs", _job_inputs(raw)), ("output", _job_output(raw)), ("base model", raw.get("base_model")),
                ("result", _job_result(job)), ("error", job.error), ("attempts", raw.get("attempts")),
                ("created", raw.get("created_at")), ("finished", raw.get("finished_at"))])

    respond(ctx, as_json, call, show, to_json=_job_raw)


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    as_json: JsonOpt = False,
) -> None:
    """Cancel a merge job: a queued one at once, a running one at its next step."""

    def show(job: MergeJob) -> None:
        if job.state == "cancelled":
            typer.echo(f"cancelled merge job {job.id}")
        else:
            typer.echo(printable(f"merge job {job.id} is {job.state}: it stops at its next step"))

    respond(ctx, as_json, lambda c: c.cancel_merge(job_id), show, to_json=_job_raw)
