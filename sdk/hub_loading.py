"""Where ``AdapterModel.from_pretrained`` / ``load_adapter`` find an adapter: a local folder, a registry
reference or a Hugging Face Hub repo id.

- a folder that exists: used as it is;
- ``"ns/name@ref"`` (``ref`` = version number, alias or 40-hex commit): the registry's Hub-compatible API
  at ``endpoint``, else the client's registry (``ADAPTER_REGISTRY_URL`` or ``adapters login``), with the
  registry token unless ``token`` is given;
- ``"ns/name"``: a Hub repo at ``endpoint``, else huggingface_hub's own (``HF_ENDPOINT`` or huggingface.co),
  with ``revision`` and huggingface_hub's token conventions (``HF_TOKEN``, the stored login).

Downloads go through ``huggingface_hub.snapshot_download`` with an explicit ``endpoint=`` (the process-wide
``HF_ENDPOINT`` is never set), so its cache, offline mode (``HF_HUB_OFFLINE=1``) and auth apply. The Hub's
own files go to huggingface_hub's cache; another endpoint's to a cache of its own under
``$HF_HOME/hub-endpoints/<host>-<port>/`` in the same layout, because huggingface_hub keys its cache by
repo id only and ``alice/chat`` on two servers are different adapters. A Hugging Face token never goes to
another endpoint. Only the adapter's own files are fetched (``adapter_config.json``,
``adapter_model.safetensors``, ``README.md``, ``provenance.json``), never a pickle.

Nothing the server sent is trusted: the snapshot must lie in the cache folder under a 40-hex commit, and
every file must be a link to a blob whose name is the hash of its content (sha256 for LFS files, the git
blob id otherwise), which is checked by hashing the file (:class:`~sdk.client.trust.UnsafeResponse`
otherwise). The weights are read with safetensors only.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .errors import AdapterError
from .names import COMMIT, part_problem, ref_problem, shown

#: The files of an adapter that are fetched; nothing else is downloaded.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "provenance.json")
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
_SHA1 = re.compile(r"\A[0-9a-f]{40}\Z")
_REPO_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}\Z")


def resolve_adapter_source(model_id: str | os.PathLike[str], *, subfolder: str | None = None,
                           revision: str | None = None, token: str | bool | None = None,
                           endpoint: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
                           local_files_only: bool = False, **_: Any) -> Path:
    """A local folder holding the adapter ``model_id`` names (downloaded if needed); see the module doc."""
    if subfolder is not None:
        _check_subfolder(subfolder)
    local = Path(model_id)
    if isinstance(model_id, os.PathLike) or (local.is_dir() and endpoint is None and revision is None):
        return local / subfolder if subfolder else local
    text = str(model_id)
    repo, has_at, at = text.partition("@")
    if has_at:
        ns, _, name = repo.partition("/")
        problem = part_problem(ns, "namespace") or part_problem(name, "adapter name") or ref_problem(at)
        if problem or "/" in name:
            raise AdapterError(f"{shown(text)} is not a registry reference 'namespace/name@version|alias|commit': "
                               f"{problem or 'one / only'}")
        if revision is not None and revision != at:
            raise AdapterError(f"{shown(text)} already names a version; do not also pass revision={revision!r}")
        revision = at
        registry = True
    else:
        if not _REPO_ID.match(text):
            raise AdapterError(f"{shown(text)} is neither a folder, nor a registry reference 'namespace/name@ref', "
                               "nor a Hub repo id 'namespace/name'")
        registry = False
    return _snapshot(repo, registry=registry, revision=revision, token=token, endpoint=endpoint,
                     cache_dir=cache_dir, local_files_only=local_files_only, subfolder=subfolder)


def _snapshot(repo: str, *, registry: bool, revision: str | None, token: str | bool | None, endpoint: str | None,
              cache_dir: str | os.PathLike[str] | None, local_files_only: bool, subfolder: str | None) -> Path:
    from huggingface_hub import constants, snapshot_download

    hub = constants.ENDPOINT.rstrip("/")
    registry_url, registry_token = _registry_settings()
    target = (endpoint or (registry_url if registry else hub)).rstrip("/")
    if target != hub and token is None:
        # the registry's token for the registry; never the Hugging Face token for another host
        token = registry_token if target == registry_url else False
    if cache_dir is None and target != hub:
        cache_dir = Path(constants.HF_HOME) / "hub-endpoints" / _slug(target)
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    folder = snapshot_download(repo, revision=revision, endpoint=target, token=token, cache_dir=cache_dir,
                               local_files_only=local_files_only, allow_patterns=[prefix + f for f in ADAPTER_FILES])
    snapshot = _check_snapshot(Path(folder), Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE))
    return snapshot / prefix if prefix else snapshot


def _registry_settings() -> tuple[str, str | None]:
    from .client.config import ClientConfig

    config = ClientConfig.resolve()
    return config.url.rstrip("/"), config.token


def _slug(url: str) -> str:
    parts = urlsplit(url)
    host = re.sub(r"[^A-Za-z0-9.\-]", "_", parts.hostname or "host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = re.sub(r"[^A-Za-z0-9.\-]", "_", parts.path.strip("/"))
    return f"{parts.scheme}-{host}-{port}" + (f"-{path}" if path else "")


def _check_subfolder(subfolder: str) -> None:
    parts = PurePosixPath(subfolder).parts
    if not parts or subfolder.startswith("/") or any(p in ("..", ".") or "\\" in p for p in parts):
        raise AdapterError(f"subfolder {shown(subfolder)} must be a relative path without '..'")


def _check_snapshot(snapshot: Path, cache_root: Path) -> Path:
    """``snapshot`` after proving it and its files are what the cache layout promises (module doc)."""
    from .client.trust import UnsafeResponse

    root = cache_root.resolve()
    real = snapshot.resolve()
    if not real.is_relative_to(root) or real.parent.name != "snapshots" or not COMMIT.match(real.name):
        raise UnsafeResponse(f"the download landed at {snapshot}, not in a commit folder of the cache {root}")
    for path in sorted(real.rglob("*")):
        if path.is_dir():
            continue
        target = path.resolve()
        if not target.is_relative_to(root):
            raise UnsafeResponse(f"{path} points outside the cache {root}")
        if path.is_symlink():
            _check_blob(path, target)
    return snapshot


def _check_blob(path: Path, blob: Path) -> None:
    """The blob's name is the hash of its bytes: sha256 (LFS) or the git blob id."""
    from .client.trust import UnsafeResponse

    name = blob.name
    if _SHA256.match(name):
        h = hashlib.sha256()
    elif _SHA1.match(name):
        h = hashlib.sha1(f"blob {blob.stat().st_size}\0".encode(), usedforsecurity=False)
    else:
        raise UnsafeResponse(f"{path} links to {name!r}, which is not a content hash")
    with open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != name:
        blob.unlink(missing_ok=True)
        raise UnsafeResponse(f"{path}: the bytes hash to {h.hexdigest()}, not to {name} as the server declared "
                             "(the blob was removed from the cache)")


__all__ = ["ADAPTER_FILES", "resolve_adapter_source"]
