"""The local cache: content-addressed blobs, version records, and snapshot folders.

Layout under the cache root::

    blobs/sha256/ab/cdef…                      verified file contents, stored once
    tmp/                                       downloads in progress (``.part`` + ``.part.json``)
    locks/                                     file locks (several processes may pull at once)
    refs/<registry>/<ns>/<name>/v<N>.json      what version N is: commit and files
    refs/<registry>/<ns>/<name>/<commit>.json  the same, by commit
    snapshots/<registry>/<ns>/<name>/<commit>/ the folder ``pull`` returns (hard links to blobs)

Blobs and snapshots appear by atomic rename only, after their sha256 was checked, so the cache
never holds a partial or corrupted file. Every path is built from checked pieces (a commit is 40 hex
digits, a digest 64, a file name one plain segment: :mod:`.trust`), then resolved and proved to lie
under the cache root before anything is written, linked, renamed or deleted there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock

from ..errors import AdapterError
from ..names import COMMIT, VERSION, part_problem
from . import trust


def registry_key(url: str) -> str:
    """A folder name for a registry URL (host and port)."""
    parts = urlsplit(url)
    key = re.sub(r"[^A-Za-z0-9._-]", "_", parts.netloc or url) or "default"
    return "_" + key if key.startswith(".") else key


@dataclass(frozen=True)
class CachedVersion:
    """A version record: commit and files (filename, sha256, size)."""

    version: int
    commit: str
    files: list[dict[str, Any]]

    @classmethod
    def from_json(cls, body: Any) -> CachedVersion:
        """A version as the registry (or a cached record) describes it, every value checked: a
        positive version number, a commit, and at most :data:`~.trust.MAX_FILES` files with plain,
        distinct names, sha256 digests and bounded sizes. Raises :class:`~.trust.UnsafeResponse`."""
        if not isinstance(body, dict):
            raise trust.UnsafeResponse(f"the registry's version answer is {type(body).__name__}, not an object")
        files = body.get("files")
        if not isinstance(files, list) or len(files) > trust.MAX_FILES:
            count = len(files) if isinstance(files, list) else type(files).__name__
            raise trust.UnsafeResponse(f"the registry listed {count} files for a version; the client takes a list "
                                       f"of at most {trust.MAX_FILES}")
        checked = []
        for f in files:
            if not isinstance(f, dict):
                raise trust.UnsafeResponse(f"the registry listed a file as {type(f).__name__}, not an object")
            checked.append({"filename": trust.filename(f.get("filename")), "sha256": trust.sha256(f.get("sha256")),
                            "size": trust.size(f.get("size"))})
        names = [f["filename"] for f in checked]
        if len(set(names)) != len(names):
            raise trust.UnsafeResponse(f"the registry listed a file name twice in one version: {names}")
        return cls(trust.version_number(body.get("version")), trust.commit(body.get("commit")), checked)


class Cache:
    """A cache directory shared safely between processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("blobs", "tmp", "locks", "refs", "snapshots"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._real_root = self.root.resolve()

    # --- paths and locks -----------------------------------------------------------------
    def inside(self, path: Path) -> Path:
        """``path`` if, with every link and ``..`` resolved, it lies strictly under the cache root;
        otherwise an error (nothing outside the cache is ever written or deleted)."""
        real = path.resolve()
        if real == self._real_root or not real.is_relative_to(self._real_root):
            raise AdapterError(f"refusing to touch {path}: it lies outside the cache at {self.root}")
        return path

    def blob_path(self, sha256: str) -> Path:
        sha256 = trust.sha256(sha256)
        return self.inside(self.root / "blobs" / "sha256" / sha256[:2] / sha256[2:])

    def tmp_path(self, sha256: str) -> Path:
        return self.inside(self.root / "tmp" / trust.sha256(sha256))

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An inter-process lock named ``name``."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        with FileLock(str(self.root / "locks" / f"{safe}.lock")):
            yield

    def _adapter(self, kind: str, registry: str, ns: str, name: str) -> Path:
        """``<root>/<kind>/<registry>/<ns>/<name>``, each piece checked."""
        problem = part_problem(ns, "namespace") or part_problem(name, "name")
        if problem or registry.startswith(".") or "/" in registry or "\\" in registry:
            raise AdapterError(problem or f"invalid registry key {registry!r}")
        return self.inside(self.root / kind / registry / ns / name)

    def _refs(self, registry: str, ns: str, name: str) -> Path:
        return self._adapter("refs", registry, ns, name)

    def snapshot_dir(self, registry: str, ns: str, name: str, commit: str) -> Path:
        return self.inside(self._adapter("snapshots", registry, ns, name) / trust.commit(commit))

    # --- version records -----------------------------------------------------------------
    def lookup(self, registry: str, ns: str, name: str, ref: str) -> CachedVersion | None:
        """A cached version by number (``"3"``) or commit; aliases are never cached."""
        if VERSION.match(ref):
            key = f"v{ref}"
        elif COMMIT.match(ref):
            key = ref
        else:
            return None
        try:
            path = self._refs(registry, ns, name) / f"{key}.json"
            return CachedVersion.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, AdapterError):  # missing, unreadable or tampered with: not cached
            return None

    def record(self, registry: str, ns: str, name: str, v: CachedVersion) -> None:
        """Remember a version by number and by commit (atomic writes)."""
        folder = self._refs(registry, ns, name)
        folder.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": v.version, "commit": v.commit, "files": v.files})
        for key in (f"v{v.version}", v.commit):
            tmp = folder / f".{key}.{uuid.uuid4().hex}.tmp"
            tmp.write_text(body)
            os.replace(tmp, folder / f"{key}.json")

    # --- blobs and snapshots ---------------------------------------------------------------
    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def ensure_blob(self, sha256: str, size: int, fetch: Callable[[Path], Path]) -> Path:
        """The blob, downloading it with ``fetch(tmp_dest)`` under a lock if missing."""
        path = self.blob_path(sha256)
        if self.has_blob(sha256, size):
            return path
        with self.lock(f"blob-{sha256}"):
            if self.has_blob(sha256, size):  # another process fetched it meanwhile
                return path
            tmp = self.tmp_path(sha256)
            fetch(tmp)  # verifies the sha256 before returning
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        return path

    def complete(self, snapshot: Path, files: list[dict[str, Any]]) -> bool:
        """Whether a snapshot folder holds every file with the right size."""
        if not snapshot.is_dir():
            return False
        for f in files:
            p = self.inside(snapshot / trust.filename(f["filename"]))
            if not p.is_file() or p.stat().st_size != f["size"]:
                return False
        return True

    def make_snapshot(self, registry: str, ns: str, name: str, v: CachedVersion) -> Path:
        """The snapshot folder of a version whose blobs are cached (built atomically once)."""
        final = self.snapshot_dir(registry, ns, name, v.commit)
        if self.complete(final, v.files):
            return final
        with self.lock(f"snap-{v.commit}"):
            if self.complete(final, v.files):
                return final
            staging = self.inside(final.parent / f".{v.commit}.{uuid.uuid4().hex}")
            staging.mkdir(parents=True)
            for f in v.files:
                src = self.blob_path(f["sha256"])
                dest = self.inside(staging / trust.filename(f["filename"]))
                try:
                    os.link(src, dest)
                except OSError:
                    shutil.copyfile(src, dest)
            if final.exists():
                shutil.rmtree(self.inside(final))
            os.replace(staging, final)
        return final

    # --- inspection and pruning ----------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Cached snapshots: registry, adapter, commit, version, size, last used."""
        out = []
        base = self.root / "snapshots"
        for snap in sorted(base.glob("*/*/*/*")):
            if snap.name.startswith("."):
                continue
            registry, ns, name, commit = snap.relative_to(base).parts
            size = sum(p.stat().st_size for p in snap.iterdir() if p.is_file())
            rec = self.lookup(registry, ns, name, commit)
            out.append({"registry": registry, "adapter": f"{ns}/{name}", "commit": commit,
                        "version": rec.version if rec else None, "bytes": size, "path": str(snap),
                        "modified": snap.stat().st_mtime})
        return out

    def prune(self, older_than_days: float | None = None, everything: bool = False) -> dict[str, int]:
        """Drop snapshots (all, or unused for ``older_than_days``), then blobs no snapshot uses and
        leftover temporary files. Returns counts and bytes freed."""
        removed = freed = 0
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        for entry in self.entries():
            if everything or (cutoff is not None and entry["modified"] < cutoff):
                freed += entry["bytes"]
                shutil.rmtree(self.inside(Path(entry["path"])), ignore_errors=True)
                removed += 1
        used = set()
        for snap in (self.root / "snapshots").glob("*/*/*/*"):
            for p in snap.iterdir():
                used.add(p.stat().st_ino)
        blobs = 0
        with self.lock("prune"):
            for blob in (self.root / "blobs").glob("sha256/*/*"):
                if blob.stat().st_ino not in used and blob.stat().st_nlink <= 1:
                    freed += blob.stat().st_size
                    blob.unlink()
                    blobs += 1
            for tmp in (self.root / "tmp").iterdir():
                if time.time() - tmp.stat().st_mtime > 86400 or everything:
                    tmp.unlink(missing_ok=True)
        return {"snapshots": removed, "blobs": blobs, "bytes": freed}
