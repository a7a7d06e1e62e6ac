"""Large files: a multipart upload straight to storage, then a finalize call that publishes.

1. ``POST …/uploads`` with ``{filename, size}`` (and ``sha256`` if the client knows it already)
   opens a session and returns one URL per part: presigned S3 URLs (the bytes never pass through
   the API), or, on the local backend, ``PUT …/uploads/{id}/parts/{n}`` on this service.
2. The client PUTs each part and keeps the ``ETag`` of each response (it may hash the file
   meanwhile).
3. ``POST …/uploads/{id}/finalize`` (multipart form: ``adapter_config.json``, optional
   ``README.md``, ``parts`` as JSON ``[[n, etag], …]``, ``sha256`` unless declared at step 1, and
   the usual push fields) joins the parts, checks size and sha256 against what was declared by
   reading the stored bytes back, validates, and publishes the version.

On S3 the parts go to a fresh upload blob key (``blobs/uploads/<random>``) where the verified
object stays: the file row records that key, so finalizing needs no server-side copy. If the
same bytes are stored already, the version uses the stored copy and the upload is deleted; it
is deleted too if anything fails. A client never gets a version that points at stored bytes it
has not proven it holds.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, post, put
from litestar.status_codes import HTTP_201_CREATED
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ...body_limits import body_limit, upload_slot
from ...db.models import UploadSession
from ...errors import BadRequest, reject
from ...names import check_part
from ...openapi import BINARY, TEXT, body_operation, form_schema, problems
from ...params import FileSize, NamePart, PartNumber, Sha256
from ...settings import Settings
from ...storage import BlobStore
from ...storage.base import check_part_number
from .. import upload_sessions as sessions
from ..auth.guards import writer
from ..auth.tokens import Principal
from . import service
from .controller import ROOT, base_url, read_small
from .publish import UploadFinish, publish_upload, restrictive_note
from .schemas import PartStored, PublishedVersion, UploadEnded, UploadSessionInfo
from .validation import CONFIG_FILE, MAX_CONFIG_BYTES, MAX_README_BYTES, README_FILE, WEIGHTS_FILE, check_filename

#: A finalize form: the config, a README, the list of parts (10,000 at most) and the push fields.
FINALIZE_LIMIT = body_limit(lambda _: MAX_CONFIG_BYTES + MAX_README_BYTES + 2 * 2**20, "the finalize form")


class NewUpload(msgspec.Struct):
    """The file to upload: its name, exact size and, if known yet, its sha256 (hex; else given at finalize)."""

    size: FileSize
    sha256: Sha256 | None = None
    filename: Annotated[str, msgspec.Meta(max_length=255)] = WEIGHTS_FILE


#: A part's bytes, sent as they are.
PART_BODY = body_operation("application/octet-stream", BINARY, "The part's bytes")
#: The finalize form: the version's other files, the parts as uploaded, the sha256 and the push fields.
FINALIZE_FORM = form_schema({CONFIG_FILE: True, README_FILE: False}, {
    "parts": TEXT, "sha256": TEXT, "base_model": TEXT, "alias": TEXT, "tags": TEXT, "description": TEXT,
    "private": TEXT, "untrained": TEXT,
    "metrics": TEXT, "params": TEXT, "dataset": TEXT})


class UploadController(Controller):
    """``/api/v1/adapters/{ns}/{name}/uploads``"""

    path = ROOT + "/{ns:str}/{name:str}/uploads"
    tags = ["uploads"]

    async def _session(self, db: AsyncSession, ns: NamePart, name: NamePart, upload_id: str, *,
                       allow_expired: bool = False) -> UploadSession:
        """The open session ``upload_id`` of adapter ``ns/name``, locked for this transaction."""
        def query(key: uuid.UUID) -> Select[tuple[UploadSession]]:
            return select(UploadSession).where(UploadSession.id == key, UploadSession.namespace == ns,
                                               UploadSession.name == name).with_for_update()

        return await sessions.find_open(db, upload_id, query, f"{ns}/{name}", allow_expired=allow_expired)

    @post("/", status_code=HTTP_201_CREATED, guards=[writer], responses=problems(401, 403, 413, 422))
    async def start(self, ns: NamePart, name: NamePart, data: NewUpload, db: AsyncSession, principal: Principal,
                    store: BlobStore, settings: Settings, request: Request) -> UploadSessionInfo:
        """Open an upload session; returns the part size and a URL per part."""
        check_part(ns, "namespace")
        check_part(name, "adapter name")
        principal.require_write(ns)
        check_filename(data.filename, data.filename)
        if data.filename != WEIGHTS_FILE:
            raise reject(f"only {WEIGHTS_FILE} is uploaded this way; send the config with finalize",
                         found=data.filename)
        sha = sessions.declared_sha256(data.sha256)
        return await sessions.open_session(
            db, store, settings, UploadSession, namespace=ns, owner={"namespace": ns, "name": name},
            filename=data.filename,
            size=data.size, sha256=sha, created_by=principal.name, hint=f"{ns}-{name}", direct=True,
            uploads_url=f"{base_url(request, settings)}{ROOT}/{ns}/{name}/uploads")

    @put("/{upload_id:str}/parts/{part_number:int}", guards=[writer], request_max_body_size=None,
         responses=problems(401, 403, 404, 413, 422),
         operation_class=PART_BODY)
    async def upload_part(self, ns: NamePart, name: NamePart, upload_id: str, part_number: PartNumber, request: Request,
                          db: AsyncSession, principal: Principal, store: BlobStore) -> Response[PartStored]:
        """Receive one part through the API (the local backend, which has no presigned URLs)."""
        principal.require_write(ns)
        row = await self._session(db, ns, name, upload_id)
        return await sessions.receive_part(row, part_number, request, db, store)

    @delete("/{upload_id:str}", status_code=200, guards=[writer], responses=problems(401, 403, 404))
    async def abort(self, ns: NamePart, name: NamePart, upload_id: str, db: AsyncSession, principal: Principal,
                    store: BlobStore) -> UploadEnded:
        """Abandon an upload (an expired one too); its parts are deleted."""
        principal.require_write(ns)
        row = await self._session(db, ns, name, upload_id, allow_expired=True)
        return await sessions.abort_session(db, store, row, upload_id)

    @post("/{upload_id:str}/finalize", status_code=HTTP_201_CREATED,
          guards=[writer, FINALIZE_LIMIT], request_max_body_size=None,
          responses=problems(401, 403, 404, 409, 413, 422), operation_class=body_operation(
              "multipart/form-data", FINALIZE_FORM, "The version's other files, the parts, and the push fields"))
    async def finalize(self, ns: NamePart, name: NamePart, upload_id: str, request: Request, db: AsyncSession,
                       principal: Principal, store: BlobStore, settings: Settings) -> Response[PublishedVersion]:
        """Join the parts, check size and sha256, validate, publish; nothing is kept if any check fails."""
        principal.require_write(ns)
        row = await self._session(db, ns, name, upload_id)
        async with upload_slot(request):  # a form of a few MiB, then the parts joined and checked
            finish = await _finish_form(await request.form())
            adapter, version, notes = await publish_upload(
                db, request.app.state.sessionmaker, store, principal, ns, name, row, finish,
                max_header_bytes=settings.max_header_bytes)
        if settings.restrictive(adapter.base_model.license):
            notes.append(restrictive_note(adapter.base_model))
        body = PublishedVersion(**service.describe_version(adapter, version, base_url(request, settings),
                                                           restrictive=settings.restrictive), notes=notes)
        return Response(body, status_code=HTTP_201_CREATED)


async def _finish_form(form: Any) -> UploadFinish:
    """The finalize form: ``adapter_config.json``, optional ``README.md``, ``parts`` as JSON
    ``[[n, etag], …]``, ``sha256`` and the push fields (the weights must not come again)."""
    for key, value in form.multi_items():
        if key in (CONFIG_FILE, README_FILE, WEIGHTS_FILE) or not isinstance(value, str):
            check_filename(key, getattr(value, "filename", None))
            if key == WEIGHTS_FILE:
                raise reject(f"{WEIGHTS_FILE} was uploaded in parts; do not send it again")
    if CONFIG_FILE not in form:
        raise reject(f"finalize needs {CONFIG_FILE}", expected=CONFIG_FILE)
    try:
        parts = [(check_part_number(int(n)), str(etag)) for n, etag in json.loads(form.get("parts") or "[]")]
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadRequest("'parts' must be JSON [[part_number, etag], ...]") from exc
    config_raw = await read_small(form[CONFIG_FILE], MAX_CONFIG_BYTES, CONFIG_FILE)
    readme = await read_small(form[README_FILE], MAX_README_BYTES, README_FILE) if README_FILE in form else None
    return UploadFinish(parts, config_raw, readme, form,
                        sessions.declared_sha256(str(form.get("sha256") or "") or None))
