"""Publishing a version: validate first, then store the blobs, then insert the rows in one short
transaction (:func:`..blob_commits.commit_with_blobs`: no transaction is open while bytes move).

A failed push leaves nothing behind: validation happens before anything is written, and if the
transaction fails before COMMIT, the blobs this push stored are deleted unless another version
references them by then. A file whose bytes are stored already (under their content key, or under
the key another file row recorded) is not stored again: its row records the existing key.

:func:`publish` takes the weights from a push or, through :func:`publish_upload`, from a finished
upload session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, Unpack

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sdk.config import AdapterConfig
from sdk.errors import ValidationFailed
from sdk.serving_compat import facts_from_files, serving_report
from sdk.signature import Signature

from ...db.models import Adapter, AdapterVersion, Alias, BaseModel, File, Namespace, UploadSession
from ...errors import BadRequest, Conflict, reject
from ...inputs import json_problem
from ...names import check_alias, check_part, split_name
from ...settings import Settings
from ...storage import BlobStore
from ..auth.tokens import Principal
from ..blob_commits import commit_with_blobs
from ..events import new_event
from ..payloads import Payload, bytes_payload
from ..quotas import check_quota
from ..upload_sessions import finalize_session
from .alias_history import record_moves
from .metadata import check_metadata, clean_tags
from .provenance import provenance_from_form
from .validation import CONFIG_FILE, README_FILE, check_weights, parse_config


@dataclass
class PushOptions:
    """Form fields that come with a push."""

    base_model: str | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    #: None: not said (a new adapter is public, an existing one keeps its visibility); True/False must match
    #: an existing adapter's visibility (:func:`check_push_visibility`), which only a PATCH changes.
    private: bool | None = None
    alias: str | None = None
    untrained: bool = False
    #: ``{"metrics", "params", "dataset"}`` of the version (:mod:`.provenance`)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the adapter's own license; None: the model card's ``license:`` if it has one
    license: str | None = None


def _truthy(value: Any) -> bool:
    """A form field's yes/no: ``1``, ``true``, ``yes`` or ``on`` (any case) is yes."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def push_options(form: Any) -> PushOptions:
    """The :class:`PushOptions` in a push's (or an upload finalize's) form fields; 422 for a description
    or tags out of bounds (:mod:`.metadata`)."""
    tags_raw = form.get("tags") or ""
    tags = clean_tags(str(tags_raw).replace(";", ",").split(","))
    description = form.get("description")
    description = None if description is None else str(description)
    check_metadata(description, tags)
    return PushOptions(
        base_model=(form.get("base_model") or None),
        description=description,
        tags=tags,
        private=None if str(form.get("private") or "").strip() == "" else _truthy(form.get("private")),
        alias=(form.get("alias") or None),
        untrained=_truthy(form.get("untrained", "false")),
        provenance=provenance_from_form(form),
        license=_license(form.get("license")),
    )


def _license(value: Any) -> str | None:
    """A license field: trimmed, at most 128 characters (422 past that), None when empty."""
    text = str(value or "").strip()
    if len(text) > 128:
        raise reject(f"license is {len(text)} characters; at most 128", expected="at most 128 characters",
                     found=f"{len(text)} characters")
    return text or None


def card_license(readme: bytes | None) -> str | None:
    """The ``license:`` of a model card's YAML front matter (the Hub's convention), if any."""
    lines = (readme or b"")[:65536].decode("utf-8", "replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            return None
        key, _, value = line.partition(":")
        if key.strip() == "license" and value.strip():
            return _license(value.strip().strip("\"'"))
    return None


@dataclass
class UploadFinish:
    """What a client sends to finalize an upload session: the parts as uploaded, the version's other
    files and push fields, and the file's sha256 unless it was declared when the session opened."""

    parts: list[tuple[int, str]]
    config_raw: bytes
    readme: bytes | None
    #: the form with the push fields, read by :func:`push_options` only when publishing starts
    fields: Any
    sha256: str | None = None


@dataclass
class PreparedVersion:
    """A version that passed validation, ready to be stored and inserted."""

    ns: str
    name: str
    base: BaseModel
    config: AdapterConfig
    files: list[Payload]
    #: the version's summary, with the fingerprint of the base model it was validated against
    summary: dict[str, Any]
    options: PushOptions
    notes: list[str]
    #: the serving-compatibility report (:mod:`sdk.serving_compat`)
    serving: dict[str, Any] = field(default_factory=dict)
    #: the adapter's own license (push field, else the model card's)
    license: str | None = None


class NewVersion(TypedDict):
    """What a new version is made of, as :func:`prepare_version` and :func:`publish` take it.

    ``extra_files``: more files of the version written by the registry itself (a merge job's
    ``merge_recipe.json``); their names must not clash with the adapter's own files.
    ``verified``: a check still running on the weights (an upload's sha256), awaited after the
    validation, so the two overlap."""

    config_raw: bytes
    weights: Payload
    readme: bytes | None
    options: PushOptions
    max_header_bytes: int
    extra_files: NotRequired[Sequence[Payload]]
    verified: NotRequired[Awaitable[Any] | None]


async def prepare_version(sessionmaker: async_sessionmaker[AsyncSession], principal: Principal, ns: str, name: str,
                          **new: Unpack[NewVersion]) -> PreparedVersion:
    """Check the caller, the names and the files of a new version of ``ns/name``; nothing is written."""
    options, weights, config_raw = new["options"], new["weights"], new["config_raw"]
    check_part(ns, "namespace")
    check_part(name, "adapter name")
    principal.require_write(ns)
    if options.alias:
        try:
            check_alias(options.alias)
        except BadRequest as exc:
            raise reject(str(exc.detail), expected="a letter, then letters, digits, '_', '.', '-' (max 64)",
                         found=options.alias) from exc
        if options.alias == "latest":
            raise reject("'latest' is kept by the registry; choose another alias")
    config, _, notes = parse_config(config_raw)
    if (problem := json_problem(config.to_dict())) is not None:
        raise reject(f"{CONFIG_FILE} has {problem}", found=CONFIG_FILE)
    async with sessionmaker() as lookup:
        base = await _base_model_for(lookup, ns, name, config, options)
        signature = Signature.from_dict(base.signature)
    checked = await asyncio.to_thread(
        check_weights, weights.read_at, weights.size, config, signature,
        allow_untrained=options.untrained, max_header_bytes=new["max_header_bytes"],
    )
    if (verified := new.get("verified")) is not None:
        await verified
    if weights.problems:  # NaN/Inf found while the weights were hashed
        raise ValidationFailed(weights.problems)
    files = [bytes_payload(CONFIG_FILE, config_raw), weights]
    if (readme := new["readme"]) is not None:
        files.append(bytes_payload(README_FILE, readme))
    for extra in new.get("extra_files", ()):
        if any(f.filename == extra.filename for f in files):
            raise BadRequest(f"{extra.filename} is already a file of this version")
        files.append(extra)
    summary = checked.summary | {"base_fingerprint": base.fingerprint}  # what it was validated against
    shapes = {n: i.shape for n, i in checked.header.tensors.items()}
    serving = serving_report(facts_from_files(config.to_dict(), shapes))
    return PreparedVersion(ns, name, base, config, files, summary, options, notes, serving,
                           options.license or card_license(readme))


def restrictive_note(base: BaseModel) -> str:
    """What a push against a base under a restrictive license is told."""
    return (f"base model {base.namespace}/{base.name} is under the {base.license!r} license, which this registry "
            "marks as restrictive: using this adapter is bound by that license's terms")


async def insert_version(db: AsyncSession, principal: Principal, prepared: PreparedVersion,
                         keys: Mapping[str, str], parents: list[dict[str, Any]] | None = None
                         ) -> tuple[Adapter, AdapterVersion]:
    """Insert the version's rows in ``db``'s transaction (``keys``: where each file's bytes are stored,
    by sha256); numbering, aliases and the push event included."""
    p = prepared
    columns = {"serving": p.serving, "serves": list(p.serving.get("serves", [])),
               "max_lora_rank": p.serving.get("max_lora_rank"), "base_revision": p.base.revision, "license": p.license}
    return await _insert_version(db, principal, p.ns, p.name, p.base, p.config, p.files, keys, p.options,
                                 p.summary, parents or [], columns)


async def publish(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, principal: Principal, ns: str,
                  name: str, *, parents: list[dict[str, Any]] | None = None, quota: Settings | None = None,
                  **new: Unpack[NewVersion]) -> tuple[Adapter, AdapterVersion, list[str]]:
    """Validate and publish a new version of ``ns/name`` (``parents``: its lineage); returns (adapter,
    version, notes). The files are stored before the version's short transaction (see
    :mod:`..blob_commits`); ``quota``: check the namespace's byte quota in it, under its quota lock
    (not for an upload session's file: opening the session reserved its bytes)."""
    prepared = await prepare_version(sessionmaker, principal, ns, name, **new)

    async def insert(db: AsyncSession, keys: Mapping[str, str]) -> tuple[Adapter, AdapterVersion]:
        if quota is not None:
            await check_quota(db, quota, ns, sum(p.size for p in prepared.files), hold=True)
        return await insert_version(db, principal, prepared, keys, parents)

    inserted = await commit_with_blobs(sessionmaker, store, prepared.files, insert)
    assert inserted is not None  # insert always publishes
    adapter, version = inserted
    return adapter, version, prepared.notes


async def publish_upload(
    db: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    store: BlobStore,
    principal: Principal,
    ns: str,
    name: str,
    row: UploadSession,
    finish: UploadFinish,
    *,
    max_header_bytes: int,
) -> tuple[Adapter, AdapterVersion, list[str]]:
    """Publish the file of upload session ``row`` (locked in ``db``) as a new version of ``ns/name``:
    join its parts, check size and sha256 against what was declared while validating, publish; the
    session ends either way, and nothing is kept if any check fails. Returns (adapter, version, notes)."""
    if finish.sha256 and row.sha256 and finish.sha256 != row.sha256:
        raise reject("finalize declares another sha256 than the upload was opened with",
                     expected=row.sha256, found=finish.sha256)
    row.sha256 = finish.sha256 or row.sha256
    if not row.sha256:
        raise reject("finalize needs the file's sha256 (form field 'sha256') when the upload was opened "
                     "without it", expected="sha256")

    async def publish_weights(weights: Payload, verified: Awaitable[None]
                              ) -> tuple[tuple[Adapter, AdapterVersion, list[str]], bool]:
        adapter, version, notes = await publish(
            sessionmaker, store, principal, ns, name, weights=weights, config_raw=finish.config_raw,
            readme=finish.readme, options=push_options(finish.fields), max_header_bytes=max_header_bytes,
            verified=verified)
        return (adapter, version, notes), any(f.storage_key == row.staging_key for f in version.files)

    return await finalize_session(db, sessionmaker, store, row, finish.parts, publish_weights,
                                  max_header_bytes=max_header_bytes)


def check_push_visibility(adapter: Adapter, private: bool | None) -> None:
    """409 when a push says ``private`` and the existing ``adapter`` is not (or the other way round):
    visibility belongs to the adapter and changes only through ``PATCH /api/v1/adapters/{ns}/{name}``."""
    if private is None or (adapter.visibility == "private") == private:
        return
    full = f"{adapter.namespace}/{adapter.name}"
    wanted = "private" if private else "public"
    raise Conflict(f"{full} is {adapter.visibility}; a push cannot make it {wanted} (it was sent with "
                   f"private={str(private).lower()}). Push without 'private' to keep its visibility, or let a "
                   f"namespace admin change it first: PATCH /api/v1/adapters/{full} {{\"visibility\": \"{wanted}\"}}")


async def _base_model_for(db: AsyncSession, ns: str, name: str, config: AdapterConfig,
                          options: PushOptions) -> BaseModel:
    existing = (
        await db.execute(select(Adapter).where(Adapter.namespace == ns, Adapter.name == name))
    ).unique().scalar_one_or_none()
    wanted = options.base_model
    if existing is not None:
        check_push_visibility(existing, options.private)
        current = f"{existing.base_model.namespace}/{existing.base_model.name}"
        if wanted and wanted != current:
            raise reject(f"{ns}/{name} is an adapter for {current}, not {wanted}; push to a new adapter name",
                         expected=current, found=wanted)
        if existing.method != config.peft_type:
            raise reject(f"{ns}/{name} holds {existing.method} adapters, this is {config.peft_type}",
                         expected=existing.method, found=config.peft_type)
        return existing.base_model
    if not wanted:
        wanted = config.base_model_name_or_path
        if not wanted or "/" not in wanted:
            raise reject("say which registered base model this adapter is for (base_model='namespace/name')")
    try:
        bns, bname = split_name(wanted, "base model name")
    except BadRequest as exc:
        raise reject(str(exc.detail), expected="namespace/name", found=wanted) from exc
    row = (
        await db.execute(select(BaseModel).where(BaseModel.namespace == bns, BaseModel.name == bname))
    ).scalar_one_or_none()
    if row is None:
        raise reject(f"base model {bns}/{bname} is not registered; register it first "
                     "(POST /api/v1/base-models or sdk.register_base_model)", found=f"{bns}/{bname}")
    return row


async def _insert_version(
    db: AsyncSession,
    principal: Principal,
    ns: str,
    name: str,
    base: BaseModel,
    config: AdapterConfig,
    files: list[Payload],
    keys: Mapping[str, str],
    options: PushOptions,
    summary: dict[str, Any],
    parents: list[dict[str, Any]],
    columns: Mapping[str, Any],
) -> tuple[Adapter, AdapterVersion]:
    await db.execute(insert(Namespace).values(name=ns).on_conflict_do_nothing(index_elements=["name"]))
    created = (await db.execute(
        insert(Adapter)
        .values(
            namespace=ns, name=name, base_model_id=base.id, method=config.peft_type,
            description=options.description or "", tags=sorted(set(options.tags)),
            visibility="private" if options.private else "public", next_version=1,
        )
        .on_conflict_do_nothing(index_elements=["namespace", "name"])
        .returning(Adapter.id)
    )).scalar_one_or_none()
    adapter = (
        await db.execute(
            select(Adapter).where(Adapter.namespace == ns, Adapter.name == name).with_for_update(of=Adapter)
        )
    ).unique().scalar_one()
    if created is None:  # again under the row lock: a PATCH may have changed it since the push was checked
        check_push_visibility(adapter, options.private)
    number = adapter.next_version
    now = dt.datetime.now(dt.UTC)
    await db.execute(
        update(Adapter).where(Adapter.id == adapter.id).values(next_version=number + 1, updated_at=now)
    )
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"{ns}/{name}@{number}:{uuid.uuid4().hex}".encode())
    for f in sorted(files, key=lambda f: f.filename):
        digest.update(f"{f.filename}:{f.sha256}".encode())
    version = AdapterVersion(
        adapter_id=adapter.id, version=number, commit=digest.hexdigest(), config=config.to_dict(),
        summary=summary, parents=parents, created_by=principal.name, provenance=options.provenance,
        description=options.description, **columns,
    )
    db.add(version)
    await db.flush()
    for f in files:
        db.add(File(version_id=version.id, filename=f.filename, size=f.size, sha256=f.sha256,
                    storage_key=keys[f.sha256]))
    names = ["latest"] + ([options.alias] if options.alias else [])
    await record_moves(db, adapter.id, names, version, principal.name)
    for alias in names:
        await db.execute(
            insert(Alias)
            .values(adapter_id=adapter.id, name=alias, version_id=version.id, updated_at=now)
            .on_conflict_do_update(index_elements=["adapter_id", "name"],
                                   set_={"version_id": version.id, "updated_at": now})
        )
    db.add(new_event("push", principal, namespace=ns, adapter=name, subject=f"{ns}/{name}@{number}",
                     details={"version": number, "commit": version.commit, "alias": options.alias,
                              "files": {f.filename: f.sha256 for f in files}}))
    await db.flush()
    await db.refresh(version, ["files"])
    adapter.next_version = number + 1
    return adapter, version
