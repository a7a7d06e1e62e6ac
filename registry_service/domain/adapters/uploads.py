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

import asyncio
import json
import uuid
from dataclasses import dataclass

from litestar import Controller, Request, Response, delete, post, put
from litestar.status_codes import HTTP_201_CREATED
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import UploadSession
from ...errors import BadRequest, NotFound, reject
from ...names import check_part
from ...settings import Settings
from ...storage import BlobStore
from ...storage.base import check_sha256
from ..auth.tokens import Principal
from ..upload_sessions import part_size_for, receive_part, release_storage, session_body, staged_payload
from . import service
from .controller import ROOT, base_url, push_options, read_small
from .publish import publish
from .validation import CONFIG_FILE, MAX_README_BYTES, README_FILE, WEIGHTS_FILE, check_filename


@dataclass
class NewUpload:
    """The file to upload: its name, exact size and, if known yet, its sha256 (hex; else given at finalize)."""

    size: int
    sha256: str | None = None
    filename: str = WEIGHTS_FILE


class UploadController(Controller):
    """``/api/v1/adapters/{ns}/{name}/uploads``"""

    path = ROOT + "/{ns:str}/{name:str}/uploads"
    tags = ["uploads"]

    async def _session(self, db: AsyncSession, ns: str, name: str, upload_id: str) -> UploadSession:
        try:
            key = uuid.UUID(upload_id)
        except ValueError as exc:
            raise NotFound(f"no upload {upload_id!r}") from exc
        row = (await db.execute(
            select(UploadSession).where(UploadSession.id == key, UploadSession.namespace == ns,
                                        UploadSession.name == name).with_for_update()
        )).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no upload {upload_id!r} for {ns}/{name}")
        if row.state != "open":
            raise BadRequest(f"upload {upload_id} is {row.state}")
        return row

    @post("/", status_code=HTTP_201_CREATED)
    async def start(self, ns: str, name: str, data: NewUpload, db: AsyncSession, principal: Principal,
                    store: BlobStore, settings: Settings, request: Request) -> dict:
        """Open an upload session; returns the part size and a URL per part."""
        check_part(ns, "namespace")
        check_part(name, "adapter name")
        principal.require_write(ns)
        check_filename(data.filename, data.filename)
        if data.filename != WEIGHTS_FILE:
            raise reject(f"only {WEIGHTS_FILE} is uploaded this way; send the config with finalize",
                         found=data.filename)
        sha = _declared_sha256(data.sha256)
        if data.size < 8:
            raise reject(f"{data.size} bytes cannot be a safetensors file", found=str(data.size))
        part = part_size_for(data.size, settings)
        mp = await store.start_multipart(f"{ns}-{name}", direct=True)
        row = UploadSession(namespace=ns, name=name, filename=data.filename, size=data.size, sha256=sha,
                            staging_key=mp.staging_key, storage_upload_id=mp.upload_id, part_size=part,
                            created_by=principal.name)
        db.add(row)
        await db.flush()
        root = f"{base_url(request, settings)}{ROOT}/{ns}/{name}/uploads/{row.id}"
        body = await session_body(store, mp, str(row.id), data.size, part, root, settings)
        await db.commit()
        return body

    @put("/{upload_id:str}/parts/{part_number:int}")
    async def upload_part(self, ns: str, name: str, upload_id: str, part_number: int, request: Request,
                          db: AsyncSession, principal: Principal, store: BlobStore) -> Response[dict]:
        """Receive one part through the API (the local backend, which has no presigned URLs)."""
        principal.require_write(ns)
        row = await self._session(db, ns, name, upload_id)
        return await receive_part(row, part_number, request, db, store)

    @delete("/{upload_id:str}", status_code=200)
    async def abort(self, ns: str, name: str, upload_id: str, db: AsyncSession, principal: Principal,
                    store: BlobStore) -> dict:
        """Abandon an upload; its parts are deleted."""
        principal.require_write(ns)
        row = await self._session(db, ns, name, upload_id)
        await release_storage(store, row)
        row.state = "aborted"
        await db.commit()
        return {"id": upload_id, "state": "aborted"}

    @post("/{upload_id:str}/finalize", status_code=HTTP_201_CREATED)
    async def finalize(self, ns: str, name: str, upload_id: str, request: Request, db: AsyncSession,
                       principal: Principal, store: BlobStore, settings: Settings) -> Response[dict]:
        """Join the parts, check size and sha256, validate, publish; nothing is kept if any check fails."""
        principal.require_write(ns)
        row = await self._session(db, ns, name, upload_id)
        form = await request.form()
        for key, value in form.multi_items():
            if key in (CONFIG_FILE, README_FILE, WEIGHTS_FILE) or not isinstance(value, str):
                check_filename(key, getattr(value, "filename", None))
                if key == WEIGHTS_FILE:
                    raise reject(f"{WEIGHTS_FILE} was uploaded in parts; do not send it again")
        if CONFIG_FILE not in form:
            raise reject(f"finalize needs {CONFIG_FILE}", expected=CONFIG_FILE)
        try:
            parts = [(int(n), str(etag)) for n, etag in json.loads(form.get("parts") or "[]")]
        except (ValueError, TypeError) as exc:
            raise BadRequest("'parts' must be JSON [[part_number, etag], ...]") from exc
        config_raw = await read_small(form[CONFIG_FILE], 1 * 2**20, CONFIG_FILE)
        readme = await read_small(form[README_FILE], MAX_README_BYTES, README_FILE) if README_FILE in form else None
        declared = _declared_sha256(str(form.get("sha256") or "") or None)
        if declared and row.sha256 and declared != row.sha256:
            raise reject("finalize declares another sha256 than the upload was opened with",
                         expected=row.sha256, found=declared)
        row.sha256 = declared or row.sha256
        if not row.sha256:
            raise reject("finalize needs the file's sha256 (form field 'sha256') when the upload was opened "
                         "without it", expected="sha256")
        row.state = "finalizing"
        await db.commit()
        state = "failed"
        kept = False
        try:
            await store.complete_multipart(row.staging_key, row.storage_upload_id or "", parts)
            payload = staged_payload(store, row, asyncio.get_running_loop())
            check = asyncio.ensure_future(_check_uploaded(store, row))  # hashing overlaps the validation
            try:
                adapter, version, notes = await publish(
                    request.app.state.sessionmaker, store, principal, ns, name, weights=payload,
                    config_raw=config_raw, readme=readme, options=push_options(form),
                    max_header_bytes=settings.max_header_bytes, verified=check)
            finally:
                await asyncio.wait([check])  # never delete the object under a running hash
                if not check.cancelled():
                    check.exception()  # raised through publish, or a validation error came first
            kept = any(f.storage_key == row.staging_key for f in version.files)
            state = "done"
        finally:
            await release_storage(store, row, keep=kept)
            async with request.app.state.sessionmaker() as db2, db2.begin():
                done = await db2.get(UploadSession, row.id)
                if done is not None:
                    done.state = state
        body = service.describe_version(adapter, version, base_url(request, settings))
        body["notes"] = notes
        return Response(body, status_code=HTTP_201_CREATED)


async def _check_uploaded(store: BlobStore, row: UploadSession) -> None:
    """The completed upload must be exactly the declared file (size and sha256)."""
    sha, size = await store.staging_sha256_and_size(row.staging_key)
    if size != row.size or sha != row.sha256:
        raise reject("the uploaded bytes are not the declared file", tensor=None,
                     expected=f"{row.size} bytes, sha256 {row.sha256}", found=f"{size} bytes, sha256 {sha}")


def _declared_sha256(value: str | None) -> str | None:
    """A declared sha256, lowercased; a clear 400 if it is not 64 hex digits."""
    if value is None:
        return None
    try:
        return check_sha256(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
