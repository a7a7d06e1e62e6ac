"""Running a merge job on a worker: fetch the pinned inputs, combine them with :mod:`sdk.merging.combine`
(and merge into the base weights with :mod:`sdk.merging.into_base` for a full model), then publish.

Exactly once: the result's files are stored first (no transaction open, no lock held while they
move), then one short transaction locks the job row, checks that the job has no result yet, and
records the result on it (``domain/blob_commits.py``). A worker killed before that commit published
nothing (blobs it stored are unreferenced content-addressed copies); a worker killed after it leaves
a job whose retry finds the result and only marks the job succeeded.

Heavy work runs in threads so the worker's event loop keeps its heartbeat. The threads report
progress and check for cancellation through a :class:`Control` at every step (every tensor of a
full-model merge); a watcher task writes progress to the job row and reads its cancel flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sdk.errors import AdapterError, ValidationFailed

from ...db.models import AdapterVersion, BaseModel, BaseModelFile, MergeJob
from ...db.session import make_engine, make_sessionmaker
from ...errors import ServiceError, Unauthorized
from ...settings import Settings, WorkerSettings
from ...storage import BlobStore, make_store
from ..adapters.publish import PushOptions, insert_version, prepare_version
from ..auth.tokens import Principal, principal_by_id
from ..base_models.weights import files_of
from ..blob_commits import commit_with_blobs
from ..events import By, new_event
from ..payloads import Payload, bytes_payload, file_payload
from ..quotas import check_quota
from .service import FINAL, job_event
from .visibility import recheck_private_inputs

log = logging.getLogger("adapter_registry.jobs")
RECIPE_FILE = "merge_recipe.json"
_KINDS = {"Linear": "linear", "Conv1D": "conv1d", "Embedding": "embedding", "Conv2d": "conv2d"}


class JobCancelled(Exception):
    """The job's cancel flag was seen at a step."""


class JobFailed(Exception):
    """The job cannot succeed (bad inputs, revoked token…): fail it with this message, no retry."""


#: Errors that a retry cannot fix: the job fails with their message.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (JobFailed, AdapterError, ValidationFailed, ServiceError)


@dataclass
class Runtime:
    """What a worker process shares between jobs."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: BlobStore
    settings: Settings
    worker: WorkerSettings


@contextlib.asynccontextmanager
async def open_runtime(database_url: str, settings: Settings, worker: WorkerSettings) -> AsyncIterator[Runtime]:
    """A worker process's runtime: a database pool sized for ``worker.concurrency`` jobs, and the blob
    store the settings name (its bucket created if missing). The pool is closed on exit."""
    engine = make_engine(database_url, pool_size=max(2, worker.concurrency + 1))
    try:
        store = make_store(settings)
        ensure = getattr(store, "ensure_bucket", None)
        if ensure is not None:
            await ensure()
        yield Runtime(make_sessionmaker(engine), store, settings, worker)
    finally:
        await engine.dispose()


class JobTimedOut(JobCancelled):
    """The job ran past the worker's ``job_timeout_s`` (seen at a step, or before publishing)."""


class Control:
    """Progress, cancellation and the time limit between the job's threads and its watcher (thread-safe)."""

    def __init__(self, step_delay_s: float = 0.0, timeout_s: float | None = None) -> None:
        self.progress = 0.0
        self.cancelled = threading.Event()
        self.step_delay_s = step_delay_s
        self.timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s if timeout_s else None

    def check(self) -> None:
        """Stop with :class:`JobTimedOut` past the deadline, :class:`JobCancelled` when cancellation was asked for."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            self.cancelled.set()
            raise JobTimedOut()
        if self.cancelled.is_set():
            raise JobCancelled()

    def step(self, progress: float) -> None:
        """Record progress (0..1), then :meth:`check`."""
        self.progress = max(self.progress, min(1.0, progress))
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        self.check()

    def span(self, start: float, stop: float) -> Callable[[float], None]:
        """A step function mapping 0..1 of one phase onto ``start..stop`` of the job."""
        return lambda f: self.step(start + (stop - start) * f)


async def _watch(rt: Runtime, job_id: uuid.UUID, control: Control, should_abort: Callable[[], bool]) -> None:
    """Write progress to the job row and read its cancel flag until cancelled (by the runner)."""
    written = -1.0
    while True:
        await asyncio.sleep(rt.worker.progress_interval_s)
        try:
            async with rt.sessionmaker() as db, db.begin():
                params = {"id": job_id, "p": control.progress}
                if control.progress != written:
                    row = await db.execute(text("UPDATE merge_job SET progress = :p, updated_at = now() "
                                                "WHERE id = :id RETURNING cancel_requested"), params)
                else:
                    row = await db.execute(text("SELECT cancel_requested FROM merge_job WHERE id = :id"), params)
                flag = row.scalar_one_or_none()
            written = control.progress
            if flag or should_abort():
                control.cancelled.set()
        except Exception:  # a lost connection must not kill the job; the next round tries again
            log.warning("could not report progress of merge job %s", job_id, exc_info=True)


async def _finish(rt: Runtime, job_id: uuid.UUID, state: str, error: str | None = None) -> None:
    async with rt.sessionmaker() as db, db.begin():
        job = await db.get(MergeJob, job_id, with_for_update=True)
        if job is None or job.state in FINAL:
            return
        now = dt.datetime.now(dt.UTC)
        job.state, job.error, job.updated_at = state, error, now
        if state in FINAL:
            job.finished_at = now
        kind = {"failed": "merge.failed", "cancelled": "merge.cancelled", "queued": "merge.requeued"}.get(state)
        if kind is not None:
            db.add(job_event(job, kind, By(job.created_by or "", job.token_id),
                             {"state": state, **({"error": error} if error else {})}))


async def _claim(rt: Runtime, job_id: uuid.UUID, attempt: int) -> MergeJob | None:
    """Mark the job running (None when there is nothing to run: gone, finished, cancelled, or done)."""
    async with rt.sessionmaker() as db, db.begin():
        job = await db.get(MergeJob, job_id, with_for_update=True)
        if job is None:
            log.warning("merge job %s does not exist; nothing to run", job_id)
            return None
        if job.state in FINAL:
            return None
        now = dt.datetime.now(dt.UTC)
        if job.result_version_id is not None or job.result_base_model_id is not None:
            job.state, job.progress, job.finished_at, job.updated_at = "succeeded", 1.0, now, now
            return None
        if job.cancel_requested:
            job.state, job.finished_at, job.updated_at = "cancelled", now, now
            return None
        job.state, job.attempts, job.worker = "running", attempt, rt.worker.name
        job.started_at = job.started_at or now
        job.updated_at = now
        return job


async def run_job(rt: Runtime, job_id: uuid.UUID, *, attempt: int, last_attempt: bool,
                  should_abort: Callable[[], bool] = lambda: False) -> None:
    """Run merge job ``job_id`` (``attempt`` counts from 1). Unexpected errors are raised for the queue to
    retry, unless this is the ``last_attempt``; the job row says what happened in every case."""
    job = await _claim(rt, job_id, attempt)
    if job is None:
        return
    control = Control(rt.worker.step_delay_s, rt.worker.job_timeout_s)
    watcher = asyncio.create_task(_watch(rt, job_id, control, should_abort))
    scratch = Path(tempfile.mkdtemp(prefix=f"merge-{job_id}-", dir=rt.worker.scratch_dir))
    try:
        await _execute(rt, job, control, scratch)
    except JobTimedOut:
        await _finish(rt, job_id, "failed", f"timed out: the job ran longer than {rt.worker.job_timeout_s:g} s "
                      "(the worker's job_timeout_s); nothing was published")
    except JobCancelled:
        await _finish(rt, job_id, "cancelled")
    except PERMANENT_ERRORS as exc:
        if not _transient(exc):
            await _finish(rt, job_id, "failed", _message(exc))
            return
        await _retry_or_fail(rt, job_id, attempt, last_attempt, exc)
    except asyncio.CancelledError:
        control.cancelled.set()  # the worker is shutting down: stop the threads; the queue retries the job
        raise
    except Exception as exc:
        await _retry_or_fail(rt, job_id, attempt, last_attempt, exc)
    finally:
        control.cancelled.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await asyncio.to_thread(shutil.rmtree, scratch, True)


def _transient(exc: BaseException) -> bool:
    """A service error that a retry may fix: an outage of the database or storage (a 5xx)."""
    return isinstance(exc, ServiceError) and exc.status_code >= 500


async def _retry_or_fail(rt: Runtime, job_id: uuid.UUID, attempt: int, last_attempt: bool, exc: Exception) -> None:
    """After an unexpected error: fail the job on its last attempt, else queue it again and raise
    ``exc`` (from the ``except`` block that called this) for the queue to retry."""
    log.error("merge job %s: attempt %d failed", job_id, attempt, exc_info=exc)
    if last_attempt:
        await _finish(rt, job_id, "failed", f"attempt {attempt} failed: {_message(exc)}")
        return
    await _finish(rt, job_id, "queued", f"attempt {attempt} failed, retrying: {_message(exc)}")
    raise exc


def _message(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return str(exc.detail)
    return str(exc) or type(exc).__name__


async def _principal(db: AsyncSession, job: MergeJob) -> Principal:
    """The submitter, as it is now: a revoked or expired token stops the job."""
    try:
        return await principal_by_id(db, job.token_id)
    except Unauthorized as exc:
        raise JobFailed(f"the token that submitted this job was revoked or has expired ({exc.detail})") from exc


async def _download(store: BlobStore, ref: str, path: Path) -> Path:
    """A blob (by sha256 or recorded storage key) into a local file, streamed."""
    chunks = await store.open_range(ref)
    with open(path, "wb") as fh:
        async for chunk in chunks:
            await asyncio.to_thread(fh.write, chunk)
    return path


async def _load_inputs(rt: Runtime, job: MergeJob, control: Control, scratch: Path, stop: float
                       ) -> tuple[list[dict[str, torch.Tensor]], list[Any]]:
    from safetensors.torch import load_file

    from sdk.methods import config_from_dict

    tensors, configs = [], []
    async with rt.sessionmaker() as db:
        for i, entry in enumerate(job.inputs):
            version = (await db.execute(select(AdapterVersion).where(AdapterVersion.commit == entry["commit"]))
                       ).scalar_one_or_none()
            if version is None:
                raise JobFailed(f"input {entry['adapter']}@{entry['version']} was deleted after the job was queued")
            f = next((f for f in version.files if f.filename == "adapter_model.safetensors"), None)
            if f is None:
                raise JobFailed(f"input {entry['adapter']}@{entry['version']} has no adapter_model.safetensors")
            path = await _download(rt.store, f.storage_key, scratch / f"input-{i}.safetensors")
            tensors.append(await asyncio.to_thread(load_file, str(path)))
            configs.append(config_from_dict(version.config))
            await asyncio.to_thread(control.step, stop * (i + 1) / len(job.inputs))
    return tensors, configs


def _combine(job: MergeJob, signature: dict[str, Any], tensors: list[dict[str, torch.Tensor]],
             configs: list[Any], control: Control, start: float, stop: float
             ) -> tuple[dict[str, torch.Tensor], Any]:
    """Combine the inputs module by module, reporting progress from ``start`` to ``stop`` (and
    stopping at the next module when the job is cancelled)."""
    from sdk.merging.combine import iter_combined_tensors, plan_lora_combination
    from sdk.merging.options import CombineOptions

    p = job.parameters
    generator = torch.Generator().manual_seed(int(p["seed"]))
    plan = plan_lora_combination(tensors, configs, CombineOptions(
        [float(e["weight"]) for e in job.inputs], job.combination_type,  # type: ignore[arg-type]
        svd_rank=p.get("svd_rank"), svd_clamp=p.get("svd_clamp"), density=p.get("density"),
        majority_sign_method=p.get("majority_sign_method") or "total", generator=generator,
        module_order=[m["path"] for m in signature.get("modules", [])],
    ))
    total = 2 * len(plan.modules) + len(plan.copies)  # A and B per module, then the copies
    state: dict[str, torch.Tensor] = {}
    for i, (key, tensor) in enumerate(iter_combined_tensors(plan)):
        state[key] = tensor.clone() if i >= 2 * len(plan.modules) else tensor  # copies are the inputs' own
        control.step(start + (stop - start) * (i + 1) / max(total, 1))
    return state, plan.config


def recipe(job: MergeJob, base: BaseModel) -> dict[str, Any]:
    """What ``merge_recipe.json`` holds: enough to redo the merge."""
    return {
        "job": str(job.id), "base_model": f"{base.namespace}/{base.name}", "base_fingerprint": base.fingerprint,
        "combination_type": job.combination_type, "parameters": job.parameters, "inputs": job.inputs,
        "library": "sdk.combine_lora_adapters",
    }


async def _execute(rt: Runtime, job: MergeJob, control: Control, scratch: Path) -> None:
    async with rt.sessionmaker() as db:
        base = await db.get_one(BaseModel, job.base_model_id)
        await _principal(db, job)
    model_output = job.output["kind"] == "model"
    tensors, configs = await _load_inputs(rt, job, control, scratch, 0.1 if model_output else 0.4)
    if model_output and len(tensors) == 1:
        state, config, weight = tensors[0], configs[0], float(job.inputs[0]["weight"])
    else:
        state, config = await asyncio.to_thread(_combine, job, base.signature, tensors, configs, control,
                                                0.1 if model_output else 0.4, 0.15 if model_output else 0.7)
        weight = 1.0
    await asyncio.to_thread(control.step, 0.15 if model_output else 0.7)
    inputs = Inputs(tensors, configs)
    if model_output:
        await _merge_model(rt, job, base, state, config, weight, control, scratch, inputs)
    else:
        await _publish_adapter(rt, job, base, state, config, control, scratch, inputs)


@dataclass(frozen=True)
class Inputs:
    """The job's inputs as loaded: PEFT state dicts and configs, in the job's order."""

    tensors: list[dict[str, torch.Tensor]]
    configs: list[Any]


def _check_combination(job: MergeJob, inputs: Inputs, result: Mapping[str, torch.Tensor], config: Any
                       ) -> dict[str, Any]:
    """:func:`sdk.merging.verify.check_combination` of ``result`` against the job's inputs; the job fails,
    naming the module, when the result breaks what the combination promises."""
    from sdk.merging.options import LoraSettings
    from sdk.merging.verify import MergeCheckFailed, check_combination

    combination_type = job.combination_type if len(inputs.tensors) > 1 else "linear"
    try:
        check = check_combination(
            [(t, LoraSettings.from_config(c)) for t, c in zip(inputs.tensors, inputs.configs, strict=True)],
            [float(e["weight"]) for e in job.inputs], combination_type, result, LoraSettings.from_config(config),
            seed=int(job.parameters.get("seed") or 0))
    except MergeCheckFailed as exc:
        raise JobFailed(f"the merge result failed its check on probe inputs, so nothing was published: {exc}") from exc
    return {"combination": combination_type, **check.to_json()}


def _check_published_adapter(job: MergeJob, inputs: Inputs, out: Path) -> dict[str, Any]:
    """Read the adapter about to be published back from ``out`` and check it (:func:`_check_combination`)."""
    from sdk.formats import read_adapter_weights, read_config
    from sdk.methods import config_from_dict

    return _check_combination(job, inputs, read_adapter_weights(out), config_from_dict(read_config(out)))


def _check_merged_model(job: MergeJob, base_files: list[Path], out_files: list[Path], adapter: Mapping[str, Any],
                        config: Any, weight: float, kinds: Mapping[str, str]) -> dict[str, Any]:
    """Check the merged model files about to be published against the base files and the adapter
    (:func:`sdk.merging.verify.check_merged_files`); the job fails, naming the tensor, when one breaks W + ΔW."""
    from sdk.merging.options import LoraSettings
    from sdk.merging.verify import MergeCheckFailed, check_merged_files

    try:
        check = check_merged_files(base_files, out_files, adapter, LoraSettings.from_config(config), kinds,
                                   weight=weight, seed=int(job.parameters.get("seed") or 0))
    except MergeCheckFailed as exc:
        raise JobFailed("the merged weights failed their check on probe inputs (W + ΔW), so nothing was "
                        f"published: {exc}") from exc
    return check.to_json()


async def _publish_adapter(rt: Runtime, job: MergeJob, base: BaseModel, state: dict[str, torch.Tensor], config: Any,
                           control: Control, scratch: Path, loaded: Inputs) -> None:
    from sdk.formats import save_adapter

    out = scratch / "out"
    config.base_model_name_or_path = f"{base.namespace}/{base.name}"
    await asyncio.to_thread(save_adapter, out, config, state)
    inputs = ", ".join(f"{e['adapter']}@{e['version']} (weight {e['weight']})" for e in job.inputs)
    readme = (f"# Merged LoRA adapter\n\nMade by merge job `{job.id}`: `{job.combination_type}` of {inputs}, on "
              f"base model `{base.namespace}/{base.name}`. The recipe is in `{RECIPE_FILE}`.\n").encode()
    weights = await asyncio.to_thread(file_payload, out / "adapter_model.safetensors", "adapter_model.safetensors",
                                      max_header_bytes=rt.settings.max_header_bytes)
    _refuse_non_finite([weights])
    verification = await asyncio.to_thread(_check_published_adapter, job, loaded, out)
    extra = bytes_payload(RECIPE_FILE, (json.dumps(recipe(job, base) | {"verification": verification}, indent=2,
                                                   sort_keys=True) + "\n").encode())
    parents = [{**e, "job": str(job.id), "combination_type": job.combination_type,
                **({"density": job.parameters["density"]} if job.parameters.get("density") is not None else {})}
               for e in job.inputs]
    await asyncio.to_thread(control.step, 0.8)
    ns, name = job.output["name"].split("/", 1)
    options = PushOptions(base_model=f"{base.namespace}/{base.name}", description=job.output.get("description"),
                          tags=list(job.output.get("tags") or []), private=True if job.output.get("private") else None,
                          alias=job.output.get("alias"))
    async with rt.sessionmaker() as db:
        submitter = await _principal(db, job)
    prepared = await prepare_version(
        rt.sessionmaker, submitter, ns, name, config_raw=(out / "adapter_config.json").read_bytes(),
        weights=weights, readme=readme, options=options, max_header_bytes=rt.settings.max_header_bytes,
        extra_files=[extra],
    )

    async def insert(db: AsyncSession, keys: Mapping[str, str]) -> int | None:
        locked = await _lock_unfinished(db, job.id, control)
        if locked is None:
            return None
        principal = await _principal(db, locked)  # as it is now, under the job's lock
        principal.require_write(ns)
        await recheck_private_inputs(db, locked.inputs, locked.output)
        await check_quota(db, rt.settings, ns, sum(p.size for p in (weights, extra)) + len(readme), hold=True)
        _adapter, version = await insert_version(db, principal, prepared, keys, parents)
        version.merge_check = verification
        locked.verification = verification
        _succeed(db, locked, result_version_id=version.id)
        return version.id

    await commit_with_blobs(rt.sessionmaker, rt.store, prepared.files, insert)


def _refuse_non_finite(payloads: list[Payload]) -> None:
    """Fail the job, before anything is stored, when a result holds NaN or Inf values."""
    problems = [p for payload in payloads for p in payload.problems]
    if problems:
        more = f" ({len(problems) - 1} more tensors too)" if len(problems) > 1 else ""
        raise JobFailed(f"the merge result is not finite, so nothing was published: {problems[0].message}{more}; "
                        "lower the weights, or check the inputs")


async def _lock_unfinished(db: AsyncSession, job_id: uuid.UUID, control: Control) -> MergeJob | None:
    """The job row, locked, if it still wants a result (the exactly-once check); else marks it and returns None.
    A job past its time limit or cancelled stops here, before anything is published."""
    control.check()
    job = await db.get(MergeJob, job_id, with_for_update=True, populate_existing=True)
    if job is None or job.state in FINAL:
        return None
    now = dt.datetime.now(dt.UTC)
    if job.result_version_id is not None or job.result_base_model_id is not None:
        job.state, job.progress, job.finished_at, job.updated_at = "succeeded", 1.0, now, now
        return None
    if job.cancel_requested:
        raise JobCancelled()
    return job


def _succeed(db: AsyncSession, job: MergeJob, **result: int) -> None:
    now = dt.datetime.now(dt.UTC)
    for key, value in result.items():
        setattr(job, key, value)
    job.state, job.progress, job.error, job.finished_at, job.updated_at = "succeeded", 1.0, None, now, now
    db.add(job_event(job, "merge.published", By(job.created_by or "", job.token_id), {"state": "succeeded", **result}))


async def _merge_model(rt: Runtime, job: MergeJob, base: BaseModel, state: dict[str, torch.Tensor], config: Any,
                       weight: float, control: Control, scratch: Path, inputs: Inputs) -> None:
    from sdk.merge_files import merge_adapter_into_base
    from sdk.merging.into_base import MergeProgress

    async with rt.sessionmaker() as db:
        files: list[BaseModelFile] = (await files_of(db, [base.id]))[base.id]
    if not files:
        raise JobFailed(f"base model {base.namespace}/{base.name} has no weights any more")
    base_dir = scratch / "base"
    base_dir.mkdir()
    total = sum(f.size for f in files) or 1
    done = 0
    for f in files:
        await _download(rt.store, f.storage_key, base_dir / f.filename)
        done += f.size
        await asyncio.to_thread(control.step, 0.15 + 0.15 * done / total)
    kinds = {m["path"]: _KINDS[m["kind"]] for m in base.signature.get("modules", []) if m.get("kind") in _KINDS}
    merging = control.span(0.3, 0.85)

    def on_progress(p: MergeProgress) -> None:
        merging(p.fraction)

    out = scratch / "merged"
    await asyncio.to_thread(merge_adapter_into_base, [base_dir / f.filename for f in files], (state, config), out,
                            kinds=kinds, weight=weight, progress=on_progress, copy_other_files=False)
    payloads = [await asyncio.to_thread(file_payload, out / f.filename, f.filename,
                                        max_header_bytes=rt.settings.max_header_bytes) for f in files]
    _refuse_non_finite(payloads)
    combined = None
    if len(inputs.tensors) > 1:  # the combination is checked in memory, the merged files against it
        combined = await asyncio.to_thread(_check_combination, job, inputs, state, config)
    merged_check = await asyncio.to_thread(_check_merged_model, job, [base_dir / f.filename for f in files],
                                           [out / f.filename for f in files], state, config, weight, kinds)
    verification = {"into_base": merged_check, **({"combination": combined} if combined else {})}
    await asyncio.to_thread(control.step, 0.9)
    ns, name = job.output["name"].split("/", 1)

    async def insert(db: AsyncSession, keys: Mapping[str, str]) -> int | None:
        locked = await _lock_unfinished(db, job.id, control)
        if locked is None:
            return None
        principal = await _principal(db, locked)
        principal.require_write(ns)
        await recheck_private_inputs(db, locked.inputs, locked.output)
        await check_quota(db, rt.settings, ns, sum(p.size for p in payloads), hold=True)
        if await db.scalar(select(BaseModel.id).where(BaseModel.namespace == ns, BaseModel.name == name)):
            raise JobFailed(f"base model {ns}/{name} was registered while the job ran; choose another name")
        merged = BaseModel(namespace=ns, name=name, revision=f"merge-job-{job.id}", license=base.license,
                           architecture=base.architecture,
                           model_type=base.model_type, config=base.config, signature=base.signature,
                           fingerprint=base.fingerprint, created_by=principal.name)
        db.add(merged)
        await db.flush()
        for p in payloads:
            db.add(BaseModelFile(base_model_id=merged.id, filename=p.filename, size=p.size, sha256=p.sha256,
                                 storage_key=keys[p.sha256], created_by=principal.name))
        db.add(new_event("base-model.registered", principal, namespace=ns, subject=f"{ns}/{name}",
                         details={"job": str(job.id), "recipe": recipe(job, base),
                                  "files": {p.filename: p.sha256 for p in payloads}}))
        locked.verification = verification
        _succeed(db, locked, result_base_model_id=merged.id)
        return merged.id

    # the merged files are stored first; the job's lock guards only the decision to publish them
    await commit_with_blobs(rt.sessionmaker, rt.store, payloads, insert)


__all__ = ["RECIPE_FILE", "Control", "JobCancelled", "JobFailed", "JobTimedOut", "Runtime", "open_runtime", "recipe",
           "run_job"]
