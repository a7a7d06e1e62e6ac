"""Merge jobs in the API and the web UI: checking a request before anything is queued, queueing,
reading (as JSON, and as :class:`JobView` for the pages), cancelling, and what the worker records
when a job's worker dies.

Everything that can be known before a worker runs is checked here, and every problem is reported
at once (422): inputs that do not exist or cannot be read, methods that cannot be combined
(only LoRA), inputs for different base models (by signature fingerprint), parameters the
combination type needs, an output that cannot be written, and a full-model merge for a base model
without registered weights. Inputs are pinned to their commits when the job is queued, so a
moving alias does not change what a queued job merges.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, exists, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sdk.merging.options import COMBINABLE, COMBINATION_TYPES, DENSITY_TYPES, FACTOR_TYPES, combinable
from sdk.problems import Problem

from ...db.models import Adapter, AdapterVersion, BaseModel, Event, MergeJob
from ...errors import BadRequest, Conflict, NotFound, ServiceError, UploadRejected
from ...names import check_alias, split_name
from ...settings import Settings
from ..adapters.metadata import check_output_metadata, clean_tags
from ..adapters.redaction import inputs_view_of, redact_inputs
from ..adapters.service import get_adapter, resolve_version
from ..adapters.validation import WEIGHTS_FILE
from ..auth.tokens import Principal
from ..base_models.weights import files_of
from ..events import Actor, By, new_event
from . import queue
from .limits import check_svd_rank, check_weight, human_bytes, memory_estimate
from .schemas import MergeInput, MergeJobRequest, MergeOutput

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = frozenset(STATES) - FINAL
MAX_INPUTS = 32


class MergeRefused(UploadRejected):
    """The merge request cannot run: every problem is listed in ``problems``."""

    status, title, kind = 422, "Merge refused", "merge-refused"


@dataclass
class ResolvedInput:
    """An input as it will be merged: the adapter, its pinned version and weight."""

    adapter: Adapter
    version: AdapterVersion
    weight: float

    def to_json(self) -> dict[str, Any]:
        return {"adapter": f"{self.adapter.namespace}/{self.adapter.name}", "version": self.version.version,
                "commit": self.version.commit, "weight": self.weight}


def _problem(message: str, *, expected: str | None = None, found: str | None = None) -> Problem:
    return Problem(None, expected, found, message)


def _config_rank(config: dict[str, Any]) -> int:
    ranks = [int(config.get("r") or 0), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def check_parameters(req: MergeJobRequest, n_inputs: int) -> list[Problem]:
    """The combination type and its parameters."""
    problems: list[Problem] = []
    ctype = req.combination_type
    if ctype not in COMBINATION_TYPES:
        problems.append(_problem(f"unknown combination_type {ctype!r}", expected=" | ".join(COMBINATION_TYPES),
                                 found=str(ctype)))
    if req.density is not None and (isinstance(req.density, bool) or not 0.0 < float(req.density) <= 1.0):
        problems.append(_problem("density must be in (0, 1]", expected="0 < density <= 1", found=str(req.density)))
    if ctype in DENSITY_TYPES and req.density is None and n_inputs > 1:
        problems.append(_problem(f"combination_type {ctype!r} needs density (the fraction of values kept)",
                                 expected="0 < density <= 1", found="none"))
    if req.majority_sign_method not in ("total", "frequency"):
        problems.append(_problem("majority_sign_method must be 'total' or 'frequency'", expected="total | frequency",
                                 found=str(req.majority_sign_method)))
    if req.svd_rank is not None and (isinstance(req.svd_rank, bool) or not isinstance(req.svd_rank, int)
                                     or req.svd_rank <= 0):
        problems.append(_problem("svd_rank must be a positive integer", expected="> 0", found=str(req.svd_rank)))
    if req.svd_clamp is not None and not 0.0 <= float(req.svd_clamp) <= 1.0:
        problems.append(_problem("svd_clamp is a quantile in [0, 1]", expected="0 <= svd_clamp <= 1",
                                 found=str(req.svd_clamp)))
    if req.seed is not None and (isinstance(req.seed, bool) or not isinstance(req.seed, int) or req.seed < 0):
        problems.append(_problem("seed must be a non-negative integer", expected=">= 0", found=str(req.seed)))
    return problems


async def _resolve_input(db: AsyncSession, principal: Principal, i: int, item: MergeInput,
                         problems: list[Problem], max_weight: float) -> ResolvedInput | None:
    where = f"inputs[{i}] {item.ref!r}"
    bad_weight = check_weight(where, item.weight, max_weight)
    if bad_weight is not None:
        problems.append(bad_weight)
        return None
    name, _, ref = str(item.ref).partition("@")
    try:
        ns, short = split_name(name, "adapter name")
        adapter = await get_adapter(db, principal, ns, short)
        version = await resolve_version(db, adapter, ref or None)
    except (BadRequest, NotFound) as exc:
        problems.append(_problem(f"{where}: {exc.detail}", expected="ns/name[@version|alias|commit] you can read",
                                 found=item.ref))
        return None
    refusals = combinable(version.config or {}, where)  # the SDK's rule: plain LoRA only
    if refusals:
        problems += refusals
        return None
    return ResolvedInput(adapter, version, float(item.weight))


async def _check_output(db: AsyncSession, principal: Principal, out: MergeOutput, base: BaseModel,
                        inputs: list[ResolvedInput], problems: list[Problem]) -> tuple[str, str]:
    """(kind, ns/name) of the output; 401/403 when the caller cannot write there."""
    if bool(out.adapter) == bool(out.model):
        raise MergeRefused([_problem("say where the result goes: output.adapter ('ns/name', a new version) or "
                                     "output.model ('ns/name', a merged full model), exactly one")])
    kind = "adapter" if out.adapter else "model"
    full = str(out.adapter or out.model)
    try:
        ns, name = split_name(full, f"output {kind} name")
    except BadRequest as exc:
        raise MergeRefused([_problem(str(exc.detail), expected="namespace/name", found=full)]) from exc
    principal.require_write(ns)
    private_inputs = [i.to_json()["adapter"] for i in inputs if i.adapter.visibility == "private"]
    if kind == "adapter":
        if out.alias:
            try:
                check_alias(out.alias)
                if out.alias == "latest":
                    raise BadRequest("'latest' is kept by the registry; choose another alias")
            except BadRequest as exc:
                problems.append(_problem(f"output.alias: {exc.detail}", found=out.alias))
        existing = (await db.execute(select(Adapter).where(Adapter.namespace == ns, Adapter.name == name))
                    ).unique().scalar_one_or_none()
        if existing is not None:
            if existing.method != COMBINABLE:
                problems.append(_problem(f"output adapter {full} holds {existing.method} adapters, a merge makes LoRA",
                                         expected=COMBINABLE, found=existing.method))
            if existing.base_model.fingerprint != base.fingerprint:
                problems.append(_problem(
                    f"output adapter {full} is for base model {existing.base_model.namespace}/"
                    f"{existing.base_model.name}, whose signature differs from the inputs'",
                    expected=base.fingerprint, found=existing.base_model.fingerprint))
            if out.private and existing.visibility != "private":
                problems.append(_problem(f"output adapter {full} is public; a merge cannot make it private (change "
                                         "it with PATCH, a namespace admin, or leave output.private out)",
                                         expected="public (output.private omitted)", found="output.private=true"))
        private_out = existing.visibility == "private" if existing is not None else out.private
        if private_inputs and not private_out:
            problems.append(_problem(f"inputs {private_inputs} are private; the output adapter must be private too "
                                     "(output.private=true)", expected="a private output", found=full))
    else:
        if await db.scalar(select(BaseModel.id).where(BaseModel.namespace == ns, BaseModel.name == name)):
            problems.append(_problem(f"base model {full} already exists; a merged model needs a new name",
                                     found=full))
        if not (await files_of(db, [base.id]))[base.id]:
            problems.append(_problem(
                f"base model {base.namespace}/{base.name} has no weights registered, so it cannot be merged into; "
                "upload them (POST /api/v1/base-models/{ns}/{name}/files) or ask for an adapter output",
                expected="registered *.safetensors weights", found="none"))
        if private_inputs:
            problems.append(_problem(f"inputs {private_inputs} are private, and a merged model is public (base "
                                     "models have no visibility); merge into an adapter output instead",
                                     found=", ".join(private_inputs)))
    return kind, f"{ns}/{name}"


async def _base_model(db: AsyncSession, req: MergeJobRequest, inputs: list[ResolvedInput],
                      problems: list[Problem]) -> BaseModel | None:
    prints = {i.adapter.base_model.fingerprint for i in inputs}
    if len(prints) > 1:
        listing = ", ".join(f"{i.to_json()['adapter']}: {i.adapter.base_model.namespace}/"
                            f"{i.adapter.base_model.name} ({i.adapter.base_model.fingerprint[:12]})" for i in inputs)
        problems.append(_problem(f"the inputs are adapters of different base models ({listing}); only adapters of "
                                 "one base model (one signature fingerprint) can be combined",
                                 expected="one fingerprint", found=", ".join(sorted(p[:12] for p in prints))))
        return None
    if not req.base_model:
        return inputs[0].adapter.base_model
    try:
        bns, bname = split_name(req.base_model, "base model name")
    except BadRequest as exc:
        problems.append(_problem(f"base_model: {exc.detail}", found=req.base_model))
        return None
    row = (await db.execute(select(BaseModel).where(BaseModel.namespace == bns, BaseModel.name == bname))
           ).scalar_one_or_none()
    if row is None:
        problems.append(_problem(f"base model {req.base_model} is not registered", found=req.base_model))
        return None
    if row.fingerprint not in prints:
        problems.append(_problem(f"base model {req.base_model} has another signature than the inputs' base model",
                                 expected=next(iter(prints)), found=row.fingerprint))
        return None
    return row


def _check_ranks(ctype: str, inputs: list[ResolvedInput], problems: list[Problem]) -> None:
    if ctype in FACTOR_TYPES and len(inputs) > 1:
        ranks = {i.to_json()["adapter"]: _config_rank(i.version.config or {}) for i in inputs}
        if len(set(ranks.values())) > 1:
            problems.append(_problem(f"combination_type {ctype!r} needs adapters of one rank, got {ranks}; use 'cat' "
                                     "or an '*svd' type for adapters of different ranks",
                                     expected="one rank", found=str(sorted(set(ranks.values())))))


def _check_size(req: MergeJobRequest, inputs: list[ResolvedInput], base: BaseModel, kind: str,
                settings: Settings, problems: list[Problem]) -> None:
    """``svd_rank`` within the inputs' ranks, and the job's memory estimate within the workers' limit."""
    ranks = [_config_rank(i.version.config or {}) for i in inputs]
    too_high = check_svd_rank(req.combination_type, req.svd_rank, ranks)
    if too_high is not None:
        problems.append(too_high)
    sizes = [next((f.size for f in i.version.files if f.filename == WEIGHTS_FILE), 0) for i in inputs]
    targets = {t for i in inputs for t in (i.version.summary or {}).get("targets", [])}
    need = memory_estimate(req.combination_type, sizes, targets, base.signature, model_output=kind == "model")
    if need > settings.max_merge_memory_bytes:
        problems.append(_problem(
            f"this merge needs about {human_bytes(need)} of memory by the workers' estimate, more than their limit "
            f"of {human_bytes(settings.max_merge_memory_bytes)} (max_merge_memory_bytes); merge fewer or smaller "
            "adapters, or use a type without SVD", expected=f"<= {settings.max_merge_memory_bytes} bytes",
            found=f"{need} bytes"))


async def submit(db: AsyncSession, principal: Principal, req: MergeJobRequest, settings: Settings) -> MergeJob:
    """Check ``req`` and queue it (the caller commits): 422 with every problem, or the new job."""
    if not principal.authenticated:
        principal.require_write("-")  # 401 with the usual message
    problems: list[Problem] = []
    if not req.inputs:
        raise MergeRefused([_problem("give at least one input adapter version", expected="inputs: [{ref, weight}]")])
    if len(req.inputs) > MAX_INPUTS:
        raise MergeRefused([_problem(f"at most {MAX_INPUTS} inputs", found=str(len(req.inputs)))])
    problems += check_parameters(req, len(req.inputs))
    problems += check_output_metadata(req.output.description, req.tags)
    resolved = [await _resolve_input(db, principal, i, item, problems, settings.max_merge_weight)
                for i, item in enumerate(req.inputs)]
    inputs = [r for r in resolved if r is not None]
    if len(inputs) < len(resolved):  # without every input, further checks would only add noise
        raise MergeRefused(problems)
    seen = [i.version.commit for i in inputs]
    if len(set(seen)) != len(seen):
        problems.append(_problem("an adapter version is given twice; give each input once with its total weight"))
    base = await _base_model(db, req, inputs, problems)
    if base is None:
        raise MergeRefused(problems)
    _check_ranks(req.combination_type, inputs, problems)
    kind, out_name = await _check_output(db, principal, req.output, base, inputs, problems)
    _check_size(req, inputs, base, kind, settings, problems)
    if problems:
        raise MergeRefused(problems)

    parameters: dict[str, Any] = {
        "density": req.density, "majority_sign_method": req.majority_sign_method, "svd_rank": req.svd_rank,
        "svd_clamp": req.svd_clamp, "seed": req.seed if req.seed is not None else secrets.randbelow(2**31),
    }
    output = {"kind": kind, "name": out_name, "alias": req.output.alias, "description": req.output.description,
              "private": bool(req.output.private), "tags": clean_tags(req.tags)}
    job = MergeJob(
        id=uuid.uuid4(), namespace=out_name.split("/", 1)[0], state="queued", output=output,
        inputs=[i.to_json() for i in inputs], base_model_id=base.id, combination_type=req.combination_type,
        parameters=parameters, progress=0.0, cancel_requested=False, attempts=0, token_id=principal.token_id,
        created_by=principal.name,
    )
    db.add(job)
    await db.flush()
    job.queue_job_id = await queue.enqueue(db, str(job.id))
    db.add(job_event(job, "merge.submitted", principal, {"state": "queued", "inputs": job.inputs}))
    await db.flush()
    return job


def public_jobs() -> ColumnElement[bool]:
    """SQL condition: jobs anyone may see, those with a public output: not asked to be private, and not into
    an adapter that is private (a private input requires a private output, so their inputs are public)."""
    private_output = exists().where(Adapter.visibility != "public",
                                    Adapter.namespace + "/" + Adapter.name == MergeJob.output["name"].astext)
    return MergeJob.output["private"].as_boolean().is_not(True) & ~private_output


def visible_jobs(principal: Principal) -> Any:
    """SQL condition: jobs the caller may see (public ones, and those whose output namespace it can read)."""
    if principal.is_admin:
        return true()
    if principal.namespace and principal.scopes:
        return or_(MergeJob.namespace == principal.namespace, public_jobs())
    return public_jobs()


async def get_job(db: AsyncSession, principal: Principal, job_id: str, *, lock: bool = False) -> MergeJob:
    """The job ``job_id``; 404 when missing or not the caller's to see."""
    try:
        key = uuid.UUID(str(job_id))
    except ValueError as exc:
        raise NotFound(f"no merge job {job_id!r}") from exc
    stmt = select(MergeJob).where(MergeJob.id == key, visible_jobs(principal))
    if lock:
        stmt = stmt.with_for_update()
    row = (await db.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no merge job {job_id!r}")
    return row


async def list_jobs(db: AsyncSession, principal: Principal, *, state: str | None = None,
                    namespace: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[MergeJob], int]:
    """Jobs the caller may see, newest first, with the total count."""
    stmt = select(MergeJob).where(visible_jobs(principal))
    if state:
        if state not in STATES:
            raise BadRequest(f"state must be one of {list(STATES)}, got {state!r}")
        stmt = stmt.where(MergeJob.state == state)
    if namespace:
        stmt = stmt.where(MergeJob.namespace == namespace)
    total = (await db.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = (await db.execute(stmt.order_by(MergeJob.created_at.desc(), MergeJob.id).limit(limit).offset(offset)))
    return list(rows.scalars()), total


async def cancel(db: AsyncSession, principal: Principal, job_id: str) -> MergeJob:
    """Cancel a job (the caller commits): a queued one at once, a running one at its next step."""
    job = await get_job(db, principal, job_id, lock=True)
    principal.require_write(job.namespace)
    if job.state in FINAL:
        raise Conflict(f"merge job {job.id} already {job.state}; only queued or running jobs can be cancelled")
    now = dt.datetime.now(dt.UTC)
    job.cancel_requested = True
    job.updated_at = now
    if job.state == "queued" and job.queue_job_id is not None and await queue.cancel_if_waiting(db, job.queue_job_id):
        job.state, job.finished_at = "cancelled", now
    db.add(job_event(job, "merge.cancelled", principal, {"state": job.state}))
    await db.flush()
    return job


async def mark_stalled(sessionmaker: async_sessionmaker[AsyncSession], job_id: str, *, state: str, note: str,
                       actor: str) -> None:
    """Record that the worker running ``job_id`` stopped responding: ``state`` is 'queued' (the queue
    retries it) or 'failed' (no attempts left). A job that finished meanwhile keeps its state; the
    event is written either way."""
    now = dt.datetime.now(dt.UTC)
    values: dict[str, object] = {"state": state, "error": note, "updated_at": now}
    if state == "failed":
        values["finished_at"] = now
    async with sessionmaker() as db, db.begin():
        job = await db.get(MergeJob, uuid.UUID(str(job_id)))
        await db.execute(update(MergeJob).where(MergeJob.id == uuid.UUID(str(job_id)),
                                                MergeJob.state.not_in(FINAL)).values(**values))
        if job is not None:
            db.add(job_event(job, "merge.failed" if state == "failed" else "merge.requeued", By(actor),
                             {"state": state, "note": note}))


async def job_state(sessionmaker: async_sessionmaker[AsyncSession], job_id: str) -> str | None:
    """The state of merge job ``job_id`` (None when there is no such job), for the worker's logs and metrics."""
    async with sessionmaker() as db:
        return (await db.execute(select(MergeJob.state).where(MergeJob.id == uuid.UUID(str(job_id))))).scalar()


async def describe(db: AsyncSession, job: MergeJob, root: str = "", viewer: Principal | None = None
                   ) -> dict[str, Any]:
    """The JSON form of a job, with its result once there is one; inputs ``viewer`` cannot read are
    redacted (:mod:`..adapters.redaction`)."""
    base = await db.get(BaseModel, job.base_model_id)
    inputs: list[Any] = list(job.inputs)
    if viewer is not None:
        view = await inputs_view_of(db, viewer, inputs)
        inputs = redact_inputs(inputs, view)
    result: dict[str, Any] | None = None
    if job.result_version_id is not None:
        row = (await db.execute(select(Adapter, AdapterVersion).join(AdapterVersion, AdapterVersion.adapter_id
                                == Adapter.id).where(AdapterVersion.id == job.result_version_id))).unique().first()
        if row is not None:
            a, v = row
            result = {"kind": "adapter", "adapter": f"{a.namespace}/{a.name}", "version": v.version,
                      "commit": v.commit, "ref": f"{a.namespace}/{a.name}@{v.version}",
                      "url": f"{root}/api/v1/adapters/{a.namespace}/{a.name}/versions/{v.version}"}
    elif job.result_base_model_id is not None:
        m = await db.get(BaseModel, job.result_base_model_id)
        if m is not None:
            result = {"kind": "model", "model": f"{m.namespace}/{m.name}",
                      "url": f"{root}/api/v1/base-models/{m.namespace}/{m.name}",
                      "files": f"{root}/api/v1/base-models/{m.namespace}/{m.name}/files"}

    def iso(t: dt.datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {
        "id": str(job.id), "state": job.state, "progress": round(float(job.progress or 0.0), 4), "error": job.error,
        "cancel_requested": job.cancel_requested, "inputs": inputs, "combination_type": job.combination_type,
        "parameters": job.parameters, "output": job.output,
        "base_model": f"{base.namespace}/{base.name}" if base else None, "result": result,
        "verification": job.verification,
        "attempts": job.attempts, "worker": job.worker, "created_by": job.created_by,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "updated_at": iso(job.updated_at), "url": f"{root}/api/v1/merge-jobs/{job.id}",
    }


@dataclass(frozen=True)
class JobView:
    """One merge job as the pages show it: what it combines, how far it got, and what it produced."""

    id: str
    state: str
    method: str
    inputs: list[str] = field(default_factory=list)
    output: str | None = None
    #: 0.0 … 1.0, None while unknown.
    progress: float | None = None
    error: str | None = None
    #: ``ns/name@version`` of the published result, once there is one.
    result: str | None = None
    #: ``ns/name`` of the base model a full-model merge registered, once there is one.
    result_model: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    #: The output's namespace (who may cancel), the combination's parameters, the inputs as
    #: ``(adapter, version, weight)``, who asked for it, and when it ran.
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    input_refs: list[tuple[str | None, int | None, float]] = field(default_factory=list)  # (None, None, w): redacted
    created_by: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    cancel_requested: bool = False
    base_model: str | None = None

    @property
    def active(self) -> bool:
        """Still queued or running (its page refreshes itself)."""
        return self.state in ACTIVE

    @property
    def percent(self) -> int:
        """Progress in whole percent."""
        return round(100 * (self.progress or 0.0))


async def _view(db: AsyncSession, row: MergeJob, viewer: Principal) -> JobView:
    """A job row as the pages show it (from the same JSON form the jobs API answers with)."""
    body = await describe(db, row, viewer=viewer)
    result = body["result"] or {}
    return JobView(
        id=body["id"], state=body["state"], method=body["combination_type"],
        inputs=[("an input you cannot read" if i.get("redacted") else f"{i['adapter']}@{i['version']}")
                + f" ×{i['weight']}" for i in body["inputs"]],
        output=f"{body['output']['name']} ({body['output']['kind']})", progress=body["progress"],
        error=body["error"], result=result.get("ref"),  # ns/name@version of a merged adapter version
        result_model=result.get("model"),  # ns/name of a merged full model (a base model)
        created_at=row.created_at, updated_at=row.updated_at, namespace=row.namespace,
        parameters={k: v for k, v in (body["parameters"] or {}).items() if v is not None},
        input_refs=[(None, None, float(i["weight"])) if i.get("redacted")
                    else (str(i["adapter"]), int(i["version"]), float(i["weight"])) for i in body["inputs"]],
        created_by=row.created_by, started_at=row.started_at, finished_at=row.finished_at,
        cancel_requested=bool(row.cancel_requested), base_model=body["base_model"],
    )


async def list_views(db: AsyncSession, viewer: Principal, *, limit: int = 50) -> list[JobView]:
    """The newest jobs the viewer may see, for the pages (the jobs API's visibility rules)."""
    rows, _ = await list_jobs(db, viewer, limit=limit)
    return [await _view(db, r, viewer) for r in rows]


async def find_view(db: AsyncSession, viewer: Principal, job_id: str) -> JobView | None:
    """One job for its page, or None when missing or not visible."""
    try:
        return await _view(db, await get_job(db, viewer, job_id), viewer)
    except NotFound:
        return None


def job_event(job: MergeJob, kind: str, actor: Actor, details: dict[str, Any]) -> Event:
    """An audit event about merge job ``job`` (in its output's namespace, on its output adapter)."""
    out_name = str(job.output.get("name", ""))
    ns, _, adapter = out_name.partition("/")
    return new_event(kind, actor, namespace=ns or job.namespace,
                     adapter=adapter if job.output.get("kind") == "adapter" and adapter else None,
                     subject=out_name or str(job.id), details={"job": str(job.id), **details})


__all__ = ["ACTIVE", "FINAL", "STATES", "JobView", "MergeRefused", "ServiceError", "cancel", "describe", "find_view",
           "get_job", "job_event", "list_jobs", "list_views", "mark_stalled", "public_jobs", "submit",
           "visible_jobs"]

