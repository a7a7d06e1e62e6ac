"""Yank, purge and delete, as the REST routes, the Hub API and the UI call them.

- A **yanked** version stays (its number is never reused) but answers 410 Gone with its reason, is
  out of ``latest`` (which moves to the newest live version) and cannot carry an alias: yanking one
  that an alias points at is refused, naming the alias (move or remove it first). Namespace writers
  may yank.
- A **purged** version is a yanked version whose files are gone (namespace admins): its rows say
  when and why, its bytes are removed unless another file row uses them.
- Deleting an **adapter** removes it with every version (namespace admins); its name can be used
  again by a new push. Deleting a **base model** is refused while adapters or merged models depend
  on it (their names are listed) or a merge job on it is still to run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ...db.models import Adapter, AdapterVersion, Alias, BaseModel, BaseModelFile, File, MergeJob
from ...errors import BadRequest, Conflict, NotFound
from ...names import COMMIT, check_part
from ...storage import BlobStore
from ..adapters import service as adapters
from ..auth.tokens import Principal
from ..blob_commits import discard_blobs
from ..events import record_event

#: Characters of a yank reason.
MAX_REASON_CHARS = 1000
#: Dependents named in a refusal (the count says how many more there are).
MAX_NAMED = 20
_ACTIVE_JOB_STATES = ("queued", "running")


@dataclass
class Removed:
    """What a deletion took away: a description for the answer, and the blobs ``{sha256: key}`` its
    rows referenced (to be discarded once the transaction has committed)."""

    body: dict[str, object]
    blobs: dict[str, str] = field(default_factory=dict)


def _named(names: list[str], total: int) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {total - len(names[:MAX_NAMED])} more" if total > len(names[:MAX_NAMED]) else "")


async def _version_to_yank(db: AsyncSession, adapter: Adapter, ref: str) -> AdapterVersion:
    """The version ``ref`` names, by number or commit only (an alias moves, so it cannot name what to yank)."""
    if not (adapters.VERSION_NUMBER.match(ref) or COMMIT.match(ref)):
        raise BadRequest(f"name the version to yank by its number or its 40-hex commit, not {ref!r}")
    return await adapters.resolve_version(db, adapter, ref, yanked_ok=True)


async def yank(db: AsyncSession, principal: Principal, ns: str, name: str, ref: str, reason: str, *,
               purge: bool = False) -> Removed:
    """Yank version ``ref`` of ``ns/name`` (and with ``purge``, drop its files); in ``db``'s transaction,
    not committed. Yanking again only purges (when asked); the reason stays the first one."""
    if len(reason) > MAX_REASON_CHARS:
        raise BadRequest(f"the reason is longer than {MAX_REASON_CHARS} characters")
    adapter = await adapters.get_adapter(db, principal, ns, name, lock=True)
    principal.require_write(ns)
    if purge:
        principal.require_admin(ns)
    version = await _version_to_yank(db, adapter, ref)
    held = sorted(a for a in (await db.execute(select(Alias.name).where(
        Alias.version_id == version.id, Alias.name != "latest"))).scalars())
    if held:
        raise Conflict(f"{ns}/{name}@{version.version} is what alias(es) {', '.join(held)} point at; move or remove "
                       "them first (PUT or DELETE …/aliases/{alias})", extra={"aliases": held})
    now = dt.datetime.now(dt.UTC)
    if version.yanked_at is None:
        version.yanked_at, version.yanked_by, version.yank_reason = now, principal.name, reason
        await _move_latest(db, adapter, now)
        await record_event(db, "version.yanked", principal, namespace=ns, adapter=name,
                           subject=f"{ns}/{name}@{version.version}",
                           details={"version": version.version, "commit": version.commit, "reason": reason})
    removed = Removed({})
    if purge and version.purged_at is None:
        removed.blobs = {f.sha256: f.storage_key for f in version.files}
        await db.execute(delete(File).where(File.version_id == version.id))
        version.purged_at = now
        await record_event(db, "version.purged", principal, namespace=ns, adapter=name,
                           subject=f"{ns}/{name}@{version.version}",
                           details={"version": version.version, "commit": version.commit,
                                    "files": sorted(removed.blobs)})
    await db.flush()
    removed.body = {"adapter": f"{ns}/{name}", "version": version.version, "commit": version.commit,
                    "yanked": adapters.yank_info(version)}
    return removed


async def _move_latest(db: AsyncSession, adapter: Adapter, now: dt.datetime) -> None:
    """Point ``latest`` at the newest version that is not yanked (remove it when there is none)."""
    newest = (await db.execute(
        select(AdapterVersion.id).where(AdapterVersion.adapter_id == adapter.id, AdapterVersion.yanked_at.is_(None))
        .order_by(AdapterVersion.version.desc()).limit(1))).scalar_one_or_none()
    latest = await db.get(Alias, (adapter.id, "latest"))
    if newest is None:
        if latest is not None:
            await db.delete(latest)
    elif latest is None:
        db.add(Alias(adapter_id=adapter.id, name="latest", version_id=newest, updated_at=now))
    else:
        latest.version_id, latest.updated_at = newest, now


async def delete_adapter(db: AsyncSession, principal: Principal, ns: str, name: str) -> Removed:
    """Delete ``ns/name`` with all its versions (namespace admins); in ``db``'s transaction."""
    adapter = await adapters.get_adapter(db, principal, ns, name, lock=True)
    principal.require_admin(ns)
    rows = (await db.execute(select(File.sha256, File.storage_key).join(
        AdapterVersion, AdapterVersion.id == File.version_id).where(AdapterVersion.adapter_id == adapter.id))).all()
    versions = adapter.next_version - 1
    await db.delete(adapter)
    await record_event(db, "adapter.deleted", principal, namespace=ns, adapter=name,
                       details={"versions": versions, "files": len(rows)})
    await db.flush()
    return Removed({"deleted": f"{ns}/{name}", "versions": versions}, {sha: key for sha, key in rows})


async def delete_base_model(db: AsyncSession, principal: Principal, ns: str, name: str) -> Removed:
    """Delete base model ``ns/name`` and its weights (namespace admins); 409 naming what depends on it."""
    check_part(ns, "namespace")
    check_part(name, "base model name")
    principal.require_admin(ns)
    base = (await db.execute(select(BaseModel).where(BaseModel.namespace == ns, BaseModel.name == name)
                             .with_for_update())).scalar_one_or_none()
    if base is None:
        raise NotFound(f"base model {ns}/{name} not found")
    adapters_on = select(Adapter.namespace, Adapter.name).where(Adapter.base_model_id == base.id)
    merged = select(BaseModel.namespace, BaseModel.name).join(
        MergeJob, MergeJob.result_base_model_id == BaseModel.id).where(MergeJob.base_model_id == base.id).distinct()
    active = select(MergeJob.id).where(MergeJob.base_model_id == base.id, MergeJob.state.in_(_ACTIVE_JOB_STATES))
    total = 0
    dependents: list[str] = []
    for stmt, what in ((adapters_on, "adapter"), (merged, "merged model"), (active, "unfinished merge job")):
        total += await db.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = (await db.execute(stmt.limit(MAX_NAMED))).all()
        dependents += [f"{'/'.join(str(c) for c in row)} ({what})" for row in rows]
    if total:
        raise Conflict(f"base model {ns}/{name} is still used by {_named(dependents, total)}; delete those first",
                       extra={"dependents": dependents[:MAX_NAMED], "count": total})
    files = (await db.execute(select(BaseModelFile.sha256, BaseModelFile.storage_key).where(
        BaseModelFile.base_model_id == base.id))).all()
    await db.execute(delete(MergeJob).where(MergeJob.base_model_id == base.id))  # finished jobs whose outputs are gone
    await db.delete(base)
    await record_event(db, "base-model.deleted", principal, namespace=ns, subject=f"{ns}/{name}",
                       details={"base_model": f"{ns}/{name}", "files": len(files)})
    await db.flush()
    return Removed({"deleted": f"{ns}/{name}", "files": len(files)}, {sha: key for sha, key in files})


async def commit_and_discard(db: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore,
                             removed: Removed) -> dict[str, object]:
    """Commit the deletion, then remove its blobs that no row references any more; returns the answer."""
    await db.commit()
    await discard_blobs(sessionmaker, store, removed.blobs)
    return removed.body


__all__ = ["MAX_NAMED", "MAX_REASON_CHARS", "Removed", "commit_and_discard", "delete_adapter", "delete_base_model",
           "yank"]
