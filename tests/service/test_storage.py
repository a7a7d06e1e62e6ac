"""The blob store, against both backends: a local directory and a real S3 server (SeaweedFS).

Every test taking ``blob_store`` runs twice (``[local]`` and ``[s3]``), each on an empty store.
The fixtures come from ``s3_fixtures`` (imported by ``conftest.py``); async tests run through
pytest-asyncio's auto mode.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from s3_fixtures import S3Server

from registry_service.storage import (
    MIN_PART_SIZE,
    BlobNotFoundError,
    BlobStore,
    InvalidRangeError,
    LocalBlobStore,
    MultipartUpload,
    S3BlobStore,
    StorageError,
    UploadError,
    blob_key,
    blob_ref_key,
    content_disposition,
    is_direct_key,
    sha256_from_key,
)
from registry_service.storage.base import check_upload_key

DATA = os.urandom(3 * 1024 * 1024 + 12345)  # spans several 1 MiB chunks
DATA_SHA = hashlib.sha256(DATA).hexdigest()


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    """Join an ``open_range`` iterator."""
    return b"".join([chunk async for chunk in chunks])


class OneWayStream(io.RawIOBase):
    """A readable, non-seekable stream, like a request body."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 100_000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@contextmanager
def count_object_writes(store: BlobStore) -> Iterator[list[str]]:
    """Record the S3 operations that write an object, or the blob files (re)created locally."""
    writes: list[str] = []
    if isinstance(store, S3BlobStore):
        events = store.client.meta.events

        def record(model: object, params: dict[str, object], **_: object) -> None:
            writes.append(f"{getattr(model, 'name', model)} {params.get('Key')}")

        for op in ("PutObject", "CompleteMultipartUpload", "CopyObject", "UploadPartCopy"):
            events.register(f"provide-client-params.s3.{op}", record)
        try:
            yield writes
        finally:
            for op in ("PutObject", "CompleteMultipartUpload", "CopyObject", "UploadPartCopy"):
                events.unregister(f"provide-client-params.s3.{op}", record)
    else:
        assert isinstance(store, LocalBlobStore)
        before = {p: p.stat().st_ino for p in (store.root / "blobs").rglob("*") if p.is_file()}
        yield writes
        after = {p: p.stat().st_ino for p in (store.root / "blobs").rglob("*") if p.is_file()}
        writes.extend(str(p) for p, ino in after.items() if before.get(p) != ino)


async def upload_parts(store: BlobStore, upload: MultipartUpload, parts: list[bytes]) -> list[tuple[int, str]]:
    """Send parts the way a client would: PUT to presigned URLs (S3) or through the API (local)."""
    done: list[tuple[int, str]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for number, body in enumerate(parts, start=1):
            url = await store.presign_part(upload.staging_key, upload.upload_id, number)
            if url is None:
                etag = await store.write_part(upload.staging_key, number, body)
            else:
                response = await http.put(url, content=body)
                assert response.status_code == 200, response.text
                etag = response.headers["etag"]
            done.append((number, etag))
    return done


def multipart_payload() -> tuple[list[bytes], bytes]:
    """Two parts: one of exactly the S3 minimum, and a small last part."""
    whole = os.urandom(MIN_PART_SIZE + 4321)
    return [whole[:MIN_PART_SIZE], whole[MIN_PART_SIZE:]], whole


# -- keys ------------------------------------------------------------------------------------------


def test_blob_key_layout() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert blob_key(sha) == f"blobs/sha256/{sha[:2]}/{sha[2:]}"
    assert blob_key(sha.upper()) == blob_key(sha)
    assert sha256_from_key(blob_key(sha)) == sha
    for bad in ("", "abc", "g" * 64, sha + "0"):
        with pytest.raises(ValueError):
            blob_key(bad)
    with pytest.raises(ValueError):
        sha256_from_key(f"staging/{sha}")


def test_blob_refs_and_upload_keys() -> None:
    """A blob is referred to by its sha256, its content key, or the upload blob key a file row recorded."""
    sha = hashlib.sha256(b"x").hexdigest()
    assert blob_ref_key(sha) == blob_ref_key(sha.upper()) == blob_ref_key(blob_key(sha)) == blob_key(sha)
    upload = "blobs/uploads/" + "0123456789abcdef" * 2
    assert blob_ref_key(upload) == check_upload_key(upload) == upload and is_direct_key(upload)
    assert check_upload_key("staging/x-1") == "staging/x-1" and not is_direct_key("staging/x-1")
    for bad in ("", "staging/x", "blobs/uploads/../../etc", "blobs/uploads/" + "g" * 32, "blobs/other/" + sha,
                "/" + blob_key(sha)):
        with pytest.raises(ValueError):
            blob_ref_key(bad)
    for bad in ("blobs/uploads/x", "blobs/uploads/" + "0" * 31, blob_key(sha), "../staging/x"):
        with pytest.raises(ValueError):
            check_upload_key(bad)


async def test_direct_multipart_upload_stays_where_it_lands(blob_store: BlobStore) -> None:
    """``direct=True``: S3 uploads into a fresh upload blob key, readable as a blob by that key;
    the local backend (whose promotion is a rename) stages as always."""
    parts, whole = multipart_payload()
    upload = await blob_store.start_multipart("direct", direct=True)
    assert is_direct_key(upload.staging_key) == isinstance(blob_store, S3BlobStore)
    etags = [(n, await blob_store.write_part(upload.staging_key, n, data, upload_id=upload.upload_id))
             for n, data in enumerate(parts, start=1)]
    await blob_store.complete_multipart(upload.staging_key, upload.upload_id, etags)
    assert await blob_store.staging_sha256_and_size(upload.staging_key) == (hashlib.sha256(whole).hexdigest(),
                                                                            len(whole))
    if is_direct_key(upload.staging_key):
        key = upload.staging_key
        assert await blob_store.exists(key) and await blob_store.size(key) == len(whole)
        assert await blob_store.read_range(key, 10, 5) == whole[10:15]
        assert await collect(await blob_store.open_range(key, 1, 3)) == whole[1:4]
        assert key in (await blob_store.presigned_get_url(key, "w.safetensors") or "")
        assert await blob_store.list_keys("blobs/uploads/") == [key]
        await blob_store.delete(key)
        assert not await blob_store.exists(key)
    else:
        await blob_store.delete_staging(upload.staging_key)


def test_content_disposition() -> None:
    assert content_disposition("adapter_model.safetensors") == 'attachment; filename="adapter_model.safetensors"'
    value = content_disposition('mödel "v2".bin')
    assert value.startswith('attachment; filename="m_del _v2_.bin"; ')
    assert value.endswith("filename*=UTF-8''m%C3%B6del%20%22v2%22.bin")


# -- put, dedupe, exists, size, delete -------------------------------------------------------------


async def test_put_file_from_path(blob_store: BlobStore, tmp_path: Path) -> None:
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(DATA)

    info = await blob_store.put_file(path)

    assert (info.sha256, info.size, info.key) == (DATA_SHA, len(DATA), blob_key(DATA_SHA))
    assert await blob_store.exists(DATA_SHA)
    assert await blob_store.size(DATA_SHA) == len(DATA)
    assert await blob_store.list_keys() == [info.key]
    assert await collect(await blob_store.open_range(DATA_SHA)) == DATA


async def test_put_same_content_is_stored_once(blob_store: BlobStore, tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(DATA)
    first = await blob_store.put_file(str(path))

    with count_object_writes(blob_store) as writes:
        again = await blob_store.put_file(io.BytesIO(DATA))
        from_stream = await blob_store.put_file(OneWayStream(DATA))  # type: ignore[arg-type]

    assert first == again == from_stream
    assert writes == []
    assert await blob_store.list_keys() == [first.key]


async def test_put_distinct_files_and_file_objects(blob_store: BlobStore) -> None:
    other = b"another adapter"
    infos = [
        await blob_store.put_file(io.BytesIO(DATA)),
        await blob_store.put_file(OneWayStream(other)),  # type: ignore[arg-type]
    ]
    assert [i.sha256 for i in infos] == [DATA_SHA, hashlib.sha256(other).hexdigest()]
    assert await blob_store.list_keys() == sorted(i.key for i in infos)
    assert await blob_store.read_range(infos[1].sha256, 0, 100) == other


async def test_put_file_object_not_at_start_stores_the_rest(blob_store: BlobStore) -> None:
    fileobj = io.BytesIO(b"HEADER" + DATA)
    fileobj.seek(6)
    info = await blob_store.put_file(fileobj)
    assert info.sha256 == DATA_SHA
    assert await blob_store.read_range(DATA_SHA, 0, 16) == DATA[:16]


async def test_empty_blob(blob_store: BlobStore) -> None:
    info = await blob_store.put_file(io.BytesIO(b""))
    assert (info.sha256, info.size) == (hashlib.sha256(b"").hexdigest(), 0)
    assert await blob_store.size(info.sha256) == 0
    assert await collect(await blob_store.open_range(info.sha256)) == b""
    assert await blob_store.read_range(info.sha256, 0, 8) == b""
    with pytest.raises(InvalidRangeError):
        await blob_store.open_range(info.sha256, 0, 0)


async def test_missing_blob(blob_store: BlobStore) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not await blob_store.exists(sha)
    with pytest.raises(BlobNotFoundError):
        await blob_store.size(sha)
    with pytest.raises(BlobNotFoundError):
        await blob_store.open_range(sha, 0, 10)
    with pytest.raises(BlobNotFoundError):
        await blob_store.read_range(sha, 0, 8)
    await blob_store.delete(sha)  # deleting nothing is fine


async def test_delete(blob_store: BlobStore) -> None:
    keep = await blob_store.put_file(io.BytesIO(b"keep me"))
    drop = await blob_store.put_file(io.BytesIO(DATA))

    await blob_store.delete(drop.sha256)

    assert not await blob_store.exists(drop.sha256)
    assert await blob_store.exists(keep.sha256)
    assert await blob_store.list_keys() == [keep.key]
    again = await blob_store.put_file(io.BytesIO(DATA))  # and it can come back
    assert again == drop


async def test_invalid_sha_is_refused(blob_store: BlobStore) -> None:
    with pytest.raises(ValueError):
        await blob_store.exists("../../etc/passwd")
    with pytest.raises(ValueError):
        await blob_store.delete("abc")


# -- ranges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 99, slice(0, 100)),  # first bytes
        (1000, 2_500_000, slice(1000, 2_500_001)),  # middle, across chunk boundaries
        (len(DATA) - 100, None, slice(len(DATA) - 100, None)),  # suffix to the end
        (len(DATA) - 1, len(DATA) - 1, slice(len(DATA) - 1, None)),  # exactly the last byte
        (0, None, slice(None)),  # everything
        (len(DATA) - 10, len(DATA) + 1000, slice(len(DATA) - 10, None)),  # end past the blob: clamped
        (len(DATA), None, slice(len(DATA), None)),  # the empty tail
    ],
)
async def test_open_range(blob_store: BlobStore, start: int, end: int | None, expected: slice) -> None:
    await blob_store.put_file(io.BytesIO(DATA))
    assert await collect(await blob_store.open_range(DATA_SHA, start, end)) == DATA[expected]


async def test_open_range_refuses_unsatisfiable_ranges(blob_store: BlobStore) -> None:
    await blob_store.put_file(io.BytesIO(DATA))
    for start, end in [(len(DATA), len(DATA) + 5), (len(DATA) + 1, None), (10, 9), (-1, 5)]:
        with pytest.raises(InvalidRangeError):
            await blob_store.open_range(DATA_SHA, start, end)


async def test_open_range_can_stop_early(blob_store: BlobStore) -> None:
    await blob_store.put_file(io.BytesIO(DATA))
    chunks = await blob_store.open_range(DATA_SHA)
    first = await anext(aiter(chunks))
    await chunks.aclose()  # type: ignore[attr-defined]
    assert DATA.startswith(first) and first
    unused = await blob_store.open_range(DATA_SHA, 5, 10)  # never iterated: nothing to release
    del unused


async def test_read_range(blob_store: BlobStore) -> None:
    await blob_store.put_file(io.BytesIO(DATA))
    assert await blob_store.read_range(DATA_SHA, 0, 8) == DATA[:8]  # a safetensors header length
    assert await blob_store.read_range(DATA_SHA, 8, 4096) == DATA[8:4104]
    assert await blob_store.read_range(DATA_SHA, len(DATA) - 5, 100) == DATA[-5:]  # truncated at the end
    assert await blob_store.read_range(DATA_SHA, len(DATA), 10) == b""
    assert await blob_store.read_range(DATA_SHA, 100, 0) == b""
    for start, length in [(len(DATA) + 1, 1), (-1, 4), (0, -1)]:
        with pytest.raises(InvalidRangeError):
            await blob_store.read_range(DATA_SHA, start, length)


# -- presigned downloads ---------------------------------------------------------------------------


async def test_presigned_get_url(blob_store: BlobStore) -> None:
    info = await blob_store.put_file(io.BytesIO(DATA))
    url = await blob_store.presigned_get_url(info.sha256, "adapter_model.safetensors", expires=300)
    if isinstance(blob_store, LocalBlobStore):
        assert url is None
        return
    assert url is not None
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(url)
        assert response.status_code == 200, response.text
        assert response.content == DATA
        assert response.headers["content-disposition"] == 'attachment; filename="adapter_model.safetensors"'
        partial = await http.get(url, headers={"Range": "bytes=10-19"})
        assert partial.status_code == 206
        assert partial.content == DATA[10:20]


# -- multipart uploads -----------------------------------------------------------------------------


async def test_multipart_upload_then_promote(blob_store: BlobStore) -> None:
    parts, whole = multipart_payload()
    upload = await blob_store.start_multipart("my adapter/../model.safetensors")
    assert upload.staging_key.startswith("staging/my-adapter-..-model.safetensors-")
    assert await blob_store.list_multipart_uploads() == [upload]

    etags = await upload_parts(blob_store, upload, parts)
    await blob_store.complete_multipart(upload.staging_key, upload.upload_id, etags)

    assert await blob_store.list_multipart_uploads() == []
    assert await blob_store.list_keys("staging/") == [upload.staging_key]
    assert await blob_store.list_keys() == []  # nothing is a blob before it is verified
    sha, size = await blob_store.staging_sha256_and_size(upload.staging_key)
    assert (sha, size) == (hashlib.sha256(whole).hexdigest(), len(whole))
    assert await blob_store.read_staging_range(upload.staging_key, 0, 8) == whole[:8]  # validate before promoting
    assert await blob_store.read_staging_range(upload.staging_key, len(whole) - 3, 10) == whole[-3:]
    assert await blob_store.read_staging_range(upload.staging_key, len(whole), 10) == b""
    with pytest.raises(InvalidRangeError):
        await blob_store.read_staging_range(upload.staging_key, len(whole) + 1, 10)

    info = await blob_store.promote_staging(upload.staging_key, sha)

    assert (info.sha256, info.size, info.key) == (sha, len(whole), blob_key(sha))
    assert await blob_store.list_keys("") == [info.key]  # staging is gone
    assert await blob_store.read_range(sha, MIN_PART_SIZE - 2, 4) == whole[MIN_PART_SIZE - 2 : MIN_PART_SIZE + 2]
    for gone in (
        blob_store.staging_sha256_and_size(upload.staging_key),
        blob_store.read_staging_range(upload.staging_key, 0, 8),
    ):
        with pytest.raises(BlobNotFoundError):
            await gone


async def test_multipart_parts_through_the_api_process(blob_store: BlobStore) -> None:
    parts, whole = multipart_payload()
    upload = await blob_store.start_multipart("proxied")
    etags = [
        (n, await blob_store.write_part(upload.staging_key, n, body, upload_id=upload.upload_id))
        for n, body in [(2, io.BytesIO(parts[1])), (1, memoryview(parts[0]))]  # any order, any buffer
    ]
    await blob_store.complete_multipart(upload.staging_key, upload.upload_id, etags)
    assert await blob_store.staging_sha256_and_size(upload.staging_key) == (
        hashlib.sha256(whole).hexdigest(),
        len(whole),
    )


async def test_promote_onto_an_existing_blob_only_drops_staging(blob_store: BlobStore) -> None:
    parts, whole = multipart_payload()
    existing = await blob_store.put_file(io.BytesIO(whole))
    upload = await blob_store.start_multipart("dup")
    await blob_store.complete_multipart(
        upload.staging_key, upload.upload_id, await upload_parts(blob_store, upload, parts)
    )

    with count_object_writes(blob_store) as writes:
        info = await blob_store.promote_staging(upload.staging_key, existing.sha256)

    assert info == existing
    assert writes == []
    assert await blob_store.list_keys("") == [existing.key]


async def test_abort_leaves_nothing(blob_store: BlobStore) -> None:
    parts, _ = multipart_payload()
    upload = await blob_store.start_multipart("abandoned")
    await upload_parts(blob_store, upload, parts[:1])

    await blob_store.abort_multipart(upload.staging_key, upload.upload_id)

    assert await blob_store.list_multipart_uploads() == []
    assert await blob_store.list_keys("") == []
    await blob_store.abort_multipart(upload.staging_key, upload.upload_id)  # twice is fine
    with pytest.raises(UploadError):
        await blob_store.complete_multipart(upload.staging_key, upload.upload_id, [(1, '"0"')])


async def test_complete_refuses_wrong_parts(blob_store: BlobStore) -> None:
    parts, _ = multipart_payload()
    upload = await blob_store.start_multipart("wrong")
    etags = await upload_parts(blob_store, upload, parts)
    bad_etag = [(1, '"' + "0" * 32 + '"'), etags[1]]
    missing_part = [*etags, (3, etags[1][1])]
    for attempt in (bad_etag, missing_part, []):
        with pytest.raises(UploadError):
            await blob_store.complete_multipart(upload.staging_key, upload.upload_id, attempt)
    with pytest.raises(UploadError):
        await blob_store.complete_multipart(upload.staging_key, "not-the-upload-id", etags)
    assert await blob_store.list_keys("") == []
    await blob_store.complete_multipart(upload.staging_key, upload.upload_id, etags)  # the upload survived
    assert len(await blob_store.list_keys("staging/")) == 1


async def test_delete_staging(blob_store: BlobStore) -> None:
    parts, _ = multipart_payload()
    upload = await blob_store.start_multipart("rejected")
    await blob_store.complete_multipart(
        upload.staging_key, upload.upload_id, await upload_parts(blob_store, upload, parts)
    )
    await blob_store.delete_staging(upload.staging_key)
    await blob_store.delete_staging(upload.staging_key)
    assert await blob_store.list_keys("") == []
    with pytest.raises(BlobNotFoundError):
        await blob_store.promote_staging(upload.staging_key, hashlib.sha256(b"").hexdigest())


async def test_staging_keys_are_checked(blob_store: BlobStore) -> None:
    for key in ("staging/../blobs/x", "blobs/sha256/ab/cd", "staging/", "staging/a/b", "/etc/passwd"):
        with pytest.raises(ValueError):
            await blob_store.staging_sha256_and_size(key)
        with pytest.raises(ValueError):
            await blob_store.delete_staging(key)
        with pytest.raises(ValueError):
            await blob_store.read_staging_range(key, 0, 8)


# -- backend specifics -----------------------------------------------------------------------------


async def test_s3_refuses_small_parts_but_local_does_not(blob_store: BlobStore) -> None:
    upload = await blob_store.start_multipart("small")
    etags = await upload_parts(blob_store, upload, [b"a" * 1000, b"b" * 10])
    if isinstance(blob_store, S3BlobStore):
        with pytest.raises(UploadError, match="EntityTooSmall"):
            await blob_store.complete_multipart(upload.staging_key, upload.upload_id, etags)
        await blob_store.abort_multipart(upload.staging_key, upload.upload_id)
    else:
        await blob_store.complete_multipart(upload.staging_key, upload.upload_id, etags)
        assert await blob_store.staging_sha256_and_size(upload.staging_key) == (
            hashlib.sha256(b"a" * 1000 + b"b" * 10).hexdigest(),
            1010,
        )


async def test_s3_write_part_needs_the_upload_id(s3_server: S3Server, s3_bucket: str) -> None:
    store = s3_server.store(s3_bucket)
    upload = await store.start_multipart("x")
    with pytest.raises(ValueError):
        await store.write_part(upload.staging_key, 1, b"abc")
    with pytest.raises(UploadError):
        await store.write_part(upload.staging_key, 1, b"abc", upload_id="bogus")
    await store.abort_multipart(upload.staging_key, upload.upload_id)


async def test_s3_ensure_bucket_creates_it_once(s3_server: S3Server) -> None:
    store = s3_server.store(s3_server.new_bucket_name("ensure"))
    try:
        await store.ensure_bucket()
        await store.ensure_bucket()  # already there: fine
        info = await store.put_file(io.BytesIO(b"hello"))
        assert await store.list_keys() == [info.key]
    finally:
        s3_server.delete_bucket(store.bucket)


async def test_s3_put_is_verified_by_the_server(s3_server: S3Server, s3_bucket: str) -> None:
    """The sha256 goes along with the PUT; a body that does not match it is refused, not stored."""
    store = s3_server.store(s3_bucket)

    class Changing(io.BytesIO):
        """Hashes as one content, then reads back different bytes (a file rewritten mid-upload)."""

        def seek(self, pos: int, whence: int = 0) -> int:
            self.getbuffer()[:5] = b"XXXXX"  # the rewind after hashing is the first seek
            return super().seek(pos, whence)

    with pytest.raises(StorageError, match="BadDigest"):
        await store.put_file(Changing(b"hello world"))
    assert await store.list_keys("") == []


def test_local_layout_and_atomic_writes(tmp_path: Path) -> None:
    """Local blobs sit at their key under the root; no temporary file survives a write."""
    import asyncio

    store = LocalBlobStore(tmp_path)
    info = asyncio.run(store.put_file(io.BytesIO(DATA)))
    assert (tmp_path / info.key).read_bytes() == DATA
    assert list(tmp_path.rglob(".tmp-*")) == []
    assert asyncio.run(store.presign_part("staging/x", "id", 1)) is None
