"""The Hub's write side, enough for ``HfApi().upload_folder``/``upload_file``/``create_commit``.

A commit to ``main`` publishes a new version through the adapters domain's ``publish`` (the same
validation as every push): it must carry ``adapter_config.json`` and ``adapter_model.safetensors``,
and may carry ``README.md``. Every file is declared "regular" at preupload, so the client sends
the bytes inline (base64) in the commit; nothing goes through Git LFS or Xet. The first commit
creates the adapter (public; its base model is the config's ``base_model_name_or_path``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from litestar import Controller, Request, post
from litestar.exceptions import HTTPException
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.plugins.problem_details import ProblemDetailsException
from sqlalchemy.ext.asyncio import AsyncSession

from sdk.errors import AdapterError, ValidationFailed
from sdk.provenance import PROVENANCE_NAME

from ...body_limits import body_limit, upload_slot
from ...errors import UploadRejected, reject
from ...openapi import TEXT, body_operation, hub_errors
from ...settings import Settings
from ...storage import BlobStore
from ..adapters import service as adapters
from ..adapters.controller import base_url
from ..adapters.provenance import provenance_from_file
from ..adapters.publish import PushOptions, publish
from ..adapters.validation import ALLOWED_FILES, CONFIG_FILE, README_FILE, WEIGHTS_FILE
from ..auth.guards import signed_in, writer
from ..auth.tokens import Principal
from ..payloads import bytes_payload
from ..quotas import check_quota
from . import service
from .controller import raw_tail
from .errors import HubError, RevisionNotFound, hub_error_response
from .schemas import CommitInfo, PreuploadAnswer, YamlCheck

#: A commit carries its files inline (base64) and is held in memory while it is decoded.
COMMIT_LIMIT = body_limit(lambda s: s.max_hub_commit_bytes, "the commit",
                          " (max_hub_commit_bytes); push larger adapters with `adapters push` (upload sessions)")


class PreconditionFailed(HubError):
    """``parentCommit`` is not the latest version's commit any more."""

    status = 412


def _branch(ns: str, name: str, request: Request, marker: str) -> str:
    """The target revision; commits only go to ``main`` (a new version becomes the latest)."""
    revision, _ = service.split_raw(raw_tail(request, f"/{ns}/{name}/{marker}/"))
    if service.registry_ref(revision) != "latest":
        raise RevisionNotFound(f"commits go to 'main' only (a new version); got revision {revision!r}")
    return revision


def parse_commit(body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header and the files (path -> bytes) of an ndjson commit; anything we cannot publish is refused."""
    header: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError) as exc:
            raise reject(f"commit line {number} is not a JSON object with 'key' and 'value'") from exc
        if not isinstance(value, dict):
            raise reject(f"commit line {number}: 'value' must be a JSON object, not {type(value).__name__}")
        if key == "header":
            header = value
        elif key == "file":
            path = value.get("path", "")
            if path not in (*ALLOWED_FILES, PROVENANCE_NAME):
                raise reject(f"{path!r} cannot be part of an adapter version; it holds {list(ALLOWED_FILES)} "
                             f"(and {PROVENANCE_NAME}, read as its provenance)",
                             found=path, expected=" | ".join(ALLOWED_FILES))
            if value.get("encoding", "base64") != "base64":
                raise reject(f"{path}: unsupported encoding {value.get('encoding')!r}", expected="base64")
            content = value.get("content", "")
            try:
                if not isinstance(content, str):
                    raise TypeError(type(content).__name__)
                files[path] = base64.b64decode(content, validate=True)
            except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError; so are non-ASCII characters
                raise reject(f"{path}: the content is not valid base64") from exc
        elif key == "lfsFile":
            raise reject(f"{value.get('path')!r} was sent as a Git LFS file; this registry takes files inline "
                         "(preupload answers 'regular')")
        else:
            raise reject(f"commit operation {key!r} is not supported: a version is made of the files a commit "
                         "carries, and published versions never change")
    for needed in (CONFIG_FILE, WEIGHTS_FILE):
        if needed not in files:
            raise reject(f"the commit has no {needed}; every commit publishes a complete adapter version",
                         expected=needed)
    return header, files


#: ``preupload``: the files about to be committed.
PREUPLOAD_BODY = Schema(type=OpenAPIType.OBJECT, required=["files"], properties={"files": Schema(
    type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT, properties={
        "path": TEXT, "sample": TEXT, "size": Schema(type=OpenAPIType.INTEGER)}))})


class HubCommitController(Controller):
    """``preupload`` and ``commit`` for a repo, and the YAML check the client runs on README.md."""

    path = "/api"
    tags = ["hub-compatible"]
    exception_handlers = {HubError: hub_error_response, ProblemDetailsException: hub_error_response,
                          HTTPException: hub_error_response, Exception: hub_error_response}

    @post("/validate-yaml", status_code=200, guards=[signed_in], responses=hub_errors(413),
          operation_class=body_operation("application/json", Schema(type=OpenAPIType.OBJECT), "The model card"))
    async def validate_yaml(self, request: Request) -> YamlCheck:
        """Model-card metadata is not interpreted here: nothing to report (the body is read, within the
        app's small body limit, only to end the request cleanly)."""
        await request.body()
        return {"errors": [], "warnings": []}

    @post("/models/{ns:str}/{name:str}/preupload/{rest:path}", status_code=200,
          guards=[writer], responses=hub_errors(401, 403, 404, 413, 422), operation_class=body_operation(
              "application/json", PREUPLOAD_BODY, "The files to be committed"))
    async def preupload(self, ns: str, name: str, request: Request, principal: Principal) -> PreuploadAnswer:
        """Every file is uploaded inline ("regular"), none is ignored."""
        body = await request.json()
        principal.require_write(ns)
        _branch(ns, name, request, "preupload")
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list):
            raise reject("preupload expects {'files': [{'path', 'sample', 'size'}, ...]}")
        return {"files": [{"path": f.get("path"), "uploadMode": "regular", "shouldIgnore": False}
                          for f in files if isinstance(f, dict)]}

    @post("/models/{ns:str}/{name:str}/commit/{rest:path}", status_code=200,
          guards=[writer, COMMIT_LIMIT], request_max_body_size=None,
          responses=hub_errors(401, 403, 404, 409, 412, 413, 422), operation_class=body_operation(
              "application/x-ndjson", TEXT, "One JSON object a line: the header, then each file inline (base64)"))
    async def commit(self, ns: str, name: str, request: Request, db: AsyncSession, principal: Principal,
                     store: BlobStore, settings: Settings) -> CommitInfo:
        """Publish the commit's files as a new version; ``commitOid`` is the version's commit id."""
        async with upload_slot(request):
            return await self._commit(ns, name, request, db, principal, store, settings)

    async def _commit(self, ns: str, name: str, request: Request, db: AsyncSession, principal: Principal,
                      store: BlobStore, settings: Settings) -> dict:
        body = await request.body()
        principal.require_write(ns)
        _branch(ns, name, request, "commit")
        header, files = parse_commit(body)
        del body
        await check_quota(db, settings, ns, sum(len(data) for data in files.values()))
        await db.rollback()
        parent = header.get("parentCommit")
        if parent:
            try:
                latest = await adapters.resolve_version(db, await adapters.get_adapter(db, principal, ns, name),
                                                        "latest")
            except HTTPException:
                latest = None
            if latest is None or latest.commit != parent:
                raise PreconditionFailed(f"parentCommit {parent} is not the latest version of {ns}/{name}")
            await db.rollback()
        try:
            _, version, _ = await publish(
                request.app.state.sessionmaker, store, principal, ns, name, config_raw=files[CONFIG_FILE],
                weights=bytes_payload(WEIGHTS_FILE, files[WEIGHTS_FILE], max_header_bytes=settings.max_header_bytes),
                readme=files.get(README_FILE),
                options=PushOptions(provenance=provenance_from_file(files.get(PROVENANCE_NAME))),
                max_header_bytes=settings.max_header_bytes, quota=settings,
            )
        except ValidationFailed as exc:
            raise UploadRejected(exc.problems) from exc
        except AdapterError as exc:
            raise UploadRejected([], detail=str(exc)) from exc
        root = base_url(request, settings)
        return {"commitUrl": f"{root}/{ns}/{name}/commit/{version.commit}", "commitOid": version.commit,
                "commitMessage": header.get("summary", ""), "pullRequestUrl": None, "version": version.version}


__all__ = ["HubCommitController", "parse_commit"]
