"""The Hub's view of the registry: repos are adapters, revisions are version references, and every
file is presented as a Git LFS file whose sha256 is its ETag.

Revisions map onto the adapters domain's references (resolution, visibility and file lookup are
its functions, not copies): ``main`` (and ``refs/heads/main``) is the latest version; a version
number, an alias or a version's 40-hex commit id name that version.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ...db.models import Adapter, AdapterVersion, File
from ...errors import BadRequest, Gone, NotFound
from ..adapters import reads
from ..adapters import service as adapters
from ..adapters.reads import AdapterRow, FileRow, VersionRow
from ..adapters.redaction import withheld_message
from ..auth.tokens import Principal
from .errors import EntryNotFound, RepoNotFound, RevisionGone, RevisionNotFound

DEFAULT_BRANCH = "main"
_REF_PREFIXES = ("refs/heads/", "refs/tags/")


def split_raw(raw_tail: str) -> tuple[str, str]:
    """``"<quoted revision>/<path>"`` -> (revision, path), both decoded.

    The client quotes the revision with ``safe=""`` (``refs/pr/1`` arrives as ``refs%2Fpr%2F1``)
    but keeps the ``/`` of file paths, so the split happens on the raw path, before decoding.
    """
    rev, _, path = raw_tail.lstrip("/").partition("/")
    return unquote(rev), unquote(path)


def registry_ref(revision: str) -> str:
    """The adapters-domain reference for a Hub revision (``main`` -> ``latest``)."""
    for prefix in _REF_PREFIXES:
        if revision.startswith(prefix):
            revision = revision[len(prefix) :]
    return "latest" if revision in ("", DEFAULT_BRANCH) else revision


async def find_repo(db: AsyncSession, principal: Principal, ns: str, name: str) -> Adapter:
    """The adapter behind repo ``ns/name``, or RepoNotFound (401 for anonymous callers, like the Hub)."""
    try:
        return await adapters.get_adapter(db, principal, ns, name)
    except (NotFound, BadRequest) as exc:
        raise RepoNotFound(f"Repository {ns}/{name} not found or not visible to this caller: {exc.detail}",
                           anonymous=not principal.authenticated) from exc


async def find_revision(db: AsyncSession, adapter: Adapter, revision: str) -> AdapterVersion:
    """The version a Hub revision names, or RevisionNotFound."""
    try:
        return await adapters.resolve_version(db, adapter, registry_ref(revision))
    except Gone as exc:
        repo = f"{adapter.namespace}/{adapter.name}"
        raise RevisionGone(f"Revision {revision!r} of {repo} is gone: {exc.detail}") from exc
    except NotFound as exc:
        raise RevisionNotFound(
            f"Revision {revision!r} not found for {adapter.namespace}/{adapter.name}: use 'main', a version number, "
            "an alias or a version's 40-hex commit id"
        ) from exc


async def find_repo_revision(reader: AsyncEngine, principal: Principal, ns: str, name: str,
                             revision: str) -> tuple[AdapterRow, VersionRow]:
    """The adapter behind repo ``ns/name`` and the version a Hub revision names, in one query;
    RepoNotFound or RevisionNotFound as :func:`find_repo` and :func:`find_revision` raise them."""
    try:
        return await reads.read_version(reader, principal, ns, name, registry_ref(revision))
    except Gone as exc:
        raise RevisionGone(f"Revision {revision!r} of {ns}/{name} is gone: {exc.detail}") from exc
    except reads.VersionNotFound as exc:
        raise RevisionNotFound(
            f"Revision {revision!r} not found for {ns}/{name}: use 'main', a version number, "
            "an alias or a version's 40-hex commit id"
        ) from exc
    except (NotFound, BadRequest) as exc:
        raise RepoNotFound(f"Repository {ns}/{name} not found or not visible to this caller: {exc.detail}",
                           anonymous=not principal.authenticated) from exc


def find_file(adapter: Adapter | AdapterRow, version: AdapterVersion | VersionRow, path: str,
              hidden: frozenset[str] = frozenset()) -> File | FileRow:
    """The file ``path`` of a version, or EntryNotFound (carrying the commit, so the client caches the absence);
    ``hidden``: files this reader may not see (:mod:`..adapters.redaction`)."""
    if path in hidden:
        raise EntryNotFound(withheld_message(f"{adapter.namespace}/{adapter.name}", version.version, path),
                            commit=version.commit)
    f = next((f for f in version.files if f.filename == path), None)
    if f is None:
        raise EntryNotFound(f"{adapter.namespace}/{adapter.name}@{version.commit} has no file {path!r}",
                            commit=version.commit)
    return f


def lfs_pointer(f: File | FileRow) -> bytes:
    """The Git LFS pointer file that stands for ``f`` in the Hub's Git view."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256}\nsize {f.size}\n".encode()


def blob_id(f: File | FileRow) -> str:
    """The Git blob id (sha1 of ``blob <len>\\0<content>``) of the file's LFS pointer."""
    pointer = lfs_pointer(f)
    return hashlib.sha1(b"blob %d\x00" % len(pointer) + pointer, usedforsecurity=False).hexdigest()


def file_headers(f: File | FileRow, commit: str) -> dict[str, str]:
    """What a resolve answer (200 or 302) must carry for the client: commit, quoted sha256 ETag, size."""
    etag = f'"{f.sha256}"'
    return {"X-Repo-Commit": commit, "ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(f.size)}


def tree_entry(f: File | FileRow) -> dict[str, Any]:
    """One ``/tree`` entry."""
    return {"type": "file", "path": f.filename, "size": f.size, "oid": blob_id(f),
            "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": len(lfs_pointer(f))}}


def model_info(adapter: Adapter | AdapterRow, version: AdapterVersion | VersionRow, *, blobs: bool,
               files: list[File] | list[FileRow] | None = None) -> dict[str, Any]:
    """The ``/api/models/{repo}`` JSON: enough for ``model_info``/``repo_info`` and ``snapshot_download``
    (``files``: those the reader may see, default all)."""
    repo = f"{adapter.namespace}/{adapter.name}"
    base = f"{adapter.base_model.namespace}/{adapter.base_model.name}"
    siblings: list[dict[str, Any]] = []
    for f in version.files if files is None else files:
        sibling: dict[str, Any] = {"rfilename": f.filename}
        if blobs:
            entry = tree_entry(f)
            sibling.update(size=f.size, blobId=entry["oid"],
                           lfs={"sha256": f.sha256, "size": f.size, "pointerSize": entry["lfs"]["pointerSize"]})
        siblings.append(sibling)
    return {
        "_id": f"{adapter.id}", "id": repo, "modelId": repo, "author": adapter.namespace, "sha": version.commit,
        "private": adapter.visibility != "public", "gated": False, "disabled": False,
        "lastModified": _iso(version.created_at), "createdAt": _iso(adapter.created_at),
        "library_name": "peft", "pipeline_tag": None, "downloads": 0, "likes": 0,
        "tags": ["peft", "safetensors", f"base_model:adapter:{base}", *sorted(adapter.tags or [])],
        "cardData": {"base_model": base, "library_name": "peft"},
        "siblings": siblings,
        "version": version.version,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


__all__ = [
    "DEFAULT_BRANCH", "blob_id", "file_headers", "find_file", "find_repo", "find_repo_revision", "find_revision",
    "lfs_pointer",
    "model_info", "registry_ref", "split_raw", "tree_entry",
]
