"""Base-model weights: safetensors files checked against the signature, then stored by content.

A base model may carry its weights (one file, or the shards of a sharded checkpoint) so that
merges into the base can run on the server. Every file is checked from its header alone before
anything is kept: each tensor must be ``<module path>.<param>`` of a module of the stored
signature, with exactly the shape the signature records, in a floating-point dtype, and no tensor
may sit in two files. Storing follows the adapter push (``domain/blob_commits.py``): the bytes are
stored before a short transaction inserts the rows, and the blobs this upload stored are deleted
if that transaction fails before COMMIT, so a refused upload leaves no row and no blob.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sdk.errors import ValidationFailed
from sdk.problems import Problem
from sdk.safetensors_header import ReadAt, bytes_reader, non_float_problems, read_header

from ...db.models import BaseModel, BaseModelFile, BaseModelUpload
from ...errors import Conflict, reject
from ...settings import Settings
from ...storage import BlobStore
from ..auth.tokens import Principal
from ..blob_commits import commit_with_blobs
from ..events import new_event
from ..payloads import Payload
from ..quotas import check_quota
from ..upload_sessions import finalize_session

SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
MAX_FILENAME = 255


def check_weights_filename(filename: str | None) -> str:
    """A plain ``*.safetensors`` file name; pickles are refused with advice on converting them."""
    name = filename or ""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name or ".." in name:
        raise reject(f"invalid filename {name!r}: plain file names only", found=name)
    if len(name) > MAX_FILENAME:
        raise reject(f"filename is {len(name)} characters; the limit is {MAX_FILENAME}",
                     expected=f"<= {MAX_FILENAME} characters", found=f"{len(name)} characters")
    if name.endswith(PICKLE_SUFFIXES):
        raise reject(
            f"{name} is a pickle checkpoint; the registry never loads pickles. Convert it with "
            "`safetensors.torch.save_model(model, 'model.safetensors')` (it handles tied weights), or save the "
            "model with transformers' default safe_serialization=True",
            expected=f"*{SUFFIX}", found=name,
        )
    if not name.endswith(SUFFIX):
        raise reject(f"{name} is not a safetensors file; base-model weights are uploaded as *{SUFFIX}",
                     expected=f"*{SUFFIX}", found=name)
    return name


def expected_params(signature: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of every parameter in a stored signature (``<module path>.<param>``)."""
    out: dict[str, tuple[int, ...]] = {}
    for module in signature.get("modules", []):
        path = str(module["path"])
        for param, shape in (module.get("params") or {}).items():
            out[f"{path}.{param}" if path else str(param)] = tuple(int(d) for d in shape)
    return out


def _unknown(filename: str, tensor: str, expected: Mapping[str, tuple[int, ...]]) -> str:
    by_module: dict[str, list[str]] = {}
    for key in expected:
        module, _, param = key.rpartition(".")
        by_module.setdefault(module, []).append(param)
    owner = max((m for m in by_module if m and tensor.startswith(m + ".")), key=len, default=None)
    if owner is None:
        return f"{filename}: {tensor} maps to no module of the base model signature (weights of another model?)"
    return (f"{filename}: module {owner} has no parameter {tensor[len(owner) + 1 :]!r} "
            f"(it has {', '.join(sorted(by_module[owner]))})")


def check_weights_file(read_at: ReadAt, size: int, filename: str, expected: Mapping[str, tuple[int, ...]], *,
                       max_header_bytes: int) -> tuple[frozenset[str], list[Problem]]:
    """Header-only check of one file: (its tensor names, every problem found). Reads only the header."""
    header, problems = read_header(read_at, size, max_header_bytes=max_header_bytes)
    problems = [dataclasses.replace(p, message=f"{filename}: {p.message}") for p in problems]
    if header is None:
        return frozenset(), problems
    for p in non_float_problems(header):
        problems.append(dataclasses.replace(
            p, message=f"{filename}: tensor {p.tensor!r} is {p.found}; base-model weights must be floating point"))
    for name, info in header.tensors.items():
        want = expected.get(name)
        if want is None:
            problems.append(Problem(name, None, str(list(info.shape)), _unknown(filename, name, expected)))
        elif tuple(info.shape) != want:
            message = f"{filename}: {name} has shape {list(info.shape)}, the base model's is {list(want)}"
            problems.append(Problem(name, str(list(want)), str(list(info.shape)), message))
    return frozenset(header.tensors), problems


@dataclass(frozen=True)
class CheckedFile:
    """A weights file that passed the header checks, with the tensor names it holds."""

    payload: Payload
    tensors: frozenset[str]


def check_files(payloads: Sequence[Payload], signature: Mapping[str, Any], *,
                max_header_bytes: int) -> list[CheckedFile]:
    """Check every file (synchronous: run in a worker thread); one ``ValidationFailed`` lists all problems."""
    expected = expected_params(signature)
    problems: list[Problem] = []
    checked: list[CheckedFile] = []
    owner: dict[str, str] = {}
    for p in payloads:
        names, found = check_weights_file(p.read_at, p.size, p.filename, expected, max_header_bytes=max_header_bytes)
        problems += found + p.problems  # the problems hashing found: NaN/Inf values
        for name in sorted(names):
            if name in owner:
                problems.append(_duplicate(name, owner[name], p.filename))
            owner.setdefault(name, p.filename)
        checked.append(CheckedFile(p, names))
    if problems:
        raise ValidationFailed(problems)
    return checked


def _duplicate(tensor: str, first: str, second: str) -> Problem:
    return Problem(tensor, f"{tensor} in one file", f"in {first} and {second}",
                   f"{second}: {tensor} is already in {first}; each tensor belongs to exactly one file")


async def stored_tensor_names(store: BlobStore, f: BaseModelFile, max_header_bytes: int) -> frozenset[str]:
    """The tensor names of a stored file, from two ranged reads of its header."""
    prefix = await store.read_range(f.storage_key, 0, 8)
    n = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
    head = prefix + (await store.read_range(f.storage_key, 8, n) if 0 < n <= max_header_bytes else b"")
    header, _ = read_header(bytes_reader(head), f.size, max_header_bytes=max_header_bytes)
    return frozenset(header.tensors) if header is not None else frozenset()


async def files_of(db: AsyncSession, base_ids: Iterable[int]) -> dict[int, list[BaseModelFile]]:
    """Weights files per base model id, by filename."""
    ids = list(base_ids)
    out: dict[int, list[BaseModelFile]] = {i: [] for i in ids}
    if ids:
        stmt = select(BaseModelFile).where(BaseModelFile.base_model_id.in_(ids)).order_by(BaseModelFile.filename)
        for f in (await db.execute(stmt)).scalars():
            out[f.base_model_id].append(f)
    return out


def file_url(root: str, base: BaseModel, filename: str) -> str:
    """Download URL of a weights file (``root`` is the service's public URL)."""
    return f"{root}/api/v1/base-models/{base.namespace}/{base.name}/files/{quote(filename, safe='')}"


def describe_file(f: BaseModelFile, base: BaseModel, root: str) -> dict[str, Any]:
    """The JSON form of a weights file."""
    return {"filename": f.filename, "size": f.size, "sha256": f.sha256, "url": file_url(root, base, f.filename)}


async def save_files(sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, principal: Principal,
                     base: BaseModel, files: Sequence[CheckedFile], *,
                     max_header_bytes: int, quota: Settings | None = None) -> tuple[list[BaseModelFile], list[str]]:
    """Store checked files, then insert their rows in one short transaction (the bytes move before
    it: :func:`..blob_commits.commit_with_blobs`); returns (all files now, filenames added).
    ``quota``: check the namespace's byte quota in that transaction, under its quota lock.

    Re-sending a file that is already there byte for byte changes nothing; a different file under
    an existing name is a 409, and so is a tensor that another stored file already holds (422).
    """
    async with sessionmaker() as db:
        before = {f.filename: f for f in (await files_of(db, [base.id]))[base.id]}
    new = _new_files(before, files)
    if not new:
        return list(before.values()), []
    await _check_against_stored(store, before, new, max_header_bytes)

    async def insert(db: AsyncSession, keys: Mapping[str, str]) -> tuple[list[BaseModelFile], list[str]]:
        # NO KEY UPDATE: serializes uploads to this base model without blocking adapter pushes'
        # foreign-key checks (KEY SHARE) on the same row.
        locked = await db.execute(select(BaseModel.id).where(BaseModel.id == base.id).with_for_update(key_share=True))
        if locked.scalar_one_or_none() is None:
            raise Conflict(f"base model {base.namespace}/{base.name} is gone")
        existing = {f.filename: f for f in (await files_of(db, [base.id]))[base.id]}
        added = _new_files(existing, files)
        if any(c.payload.sha256 not in keys for c in added):
            raise Conflict(f"the weights of {base.namespace}/{base.name} changed during this upload; send it again")
        if quota is not None:
            await check_quota(db, quota, base.namespace, sum(c.payload.size for c in added), hold=True)
        # files stored by a concurrent upload since the check above (rare): their headers, under the row lock
        await _check_against_stored(store, {n: f for n, f in existing.items() if n not in before}, added,
                                    max_header_bytes)
        for c in added:
            db.add(BaseModelFile(base_model_id=base.id, filename=c.payload.filename, size=c.payload.size,
                                 sha256=c.payload.sha256, storage_key=keys[c.payload.sha256],
                                 created_by=principal.name))
        if added:
            db.add(new_event("base-model.weights", principal, namespace=base.namespace,
                             subject=f"{base.namespace}/{base.name}",
                             details={"files": {c.payload.filename: c.payload.sha256 for c in added}}))
        await db.flush()
        return (await files_of(db, [base.id]))[base.id], [c.payload.filename for c in added]

    saved = await commit_with_blobs(sessionmaker, store, [c.payload for c in new], insert)
    assert saved is not None  # insert always answers
    return saved


async def save_upload(db: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore,
                      principal: Principal, base: BaseModel, upload: BaseModelUpload, parts: Sequence[tuple[int, str]],
                      *, max_header_bytes: int) -> tuple[list[BaseModelFile], list[str]]:
    """Keep the file of upload session ``upload`` (locked in ``db``) as weights of ``base``: join its
    parts, check its size and sha256, then its header against the signature, and save it as
    :func:`save_files` does; the session ends either way. Returns (all files now, filenames added)."""
    async def keep(payload: Payload, verified: Awaitable[None]) -> tuple[tuple[list[BaseModelFile], list[str]], bool]:
        await verified
        checked = await asyncio.to_thread(check_files, [payload], base.signature, max_header_bytes=max_header_bytes)
        return await save_files(sessionmaker, store, principal, base, checked, max_header_bytes=max_header_bytes), False

    return await finalize_session(db, sessionmaker, store, upload, parts, keep, max_header_bytes=max_header_bytes)


def _new_files(existing: Mapping[str, BaseModelFile], files: Sequence[CheckedFile]) -> list[CheckedFile]:
    new = []
    for c in files:
        old = existing.get(c.payload.filename)
        if old is None:
            new.append(c)
        elif old.sha256 != c.payload.sha256 or old.size != c.payload.size:
            raise not_replaced(old)
    return new


def not_replaced(old: BaseModelFile) -> Conflict:
    """409: a different file under a stored filename (stored weights are never replaced)."""
    return Conflict(f"{old.filename} is already stored with other bytes (sha256 {old.sha256[:12]}…); stored "
                    "weights are not replaced: upload under a new filename, or register a new base model")


async def _check_against_stored(store: BlobStore, existing: Mapping[str, BaseModelFile], new: Sequence[CheckedFile],
                                max_header_bytes: int) -> None:
    if not new:
        return
    problems: list[Problem] = []
    for old in existing.values():
        held = await stored_tensor_names(store, old, max_header_bytes)
        for c in new:
            problems += [_duplicate(t, old.filename, c.payload.filename) for t in sorted(held & c.tensors)]
    if problems:
        raise ValidationFailed(problems)


__all__ = [
    "CheckedFile",
    "check_files",
    "check_weights_file",
    "check_weights_filename",
    "describe_file",
    "expected_params",
    "file_url",
    "files_of",
    "not_replaced",
    "save_files",
    "save_upload",
    "stored_tensor_names",
]
