"""Small version files (configs) are served from memory after their first read: the same bytes, ranges
and headers as from storage, no storage round trip, and still only to callers who may read them; the
Hub's read routes set no CSRF cookie."""

from __future__ import annotations

from pathlib import Path

from registry_testkit import Registry, push_files, saved_adapter, writer_with_base

from registry_service.domain.adapters.reads import FileRow
from registry_service.domain.adapters.small_files import SmallFiles

CONFIG = "adapter_config.json"


async def pushed(reg: Registry, tmp_path: Path, private: bool) -> tuple[str, bytes]:
    """alice/a version 1 (private or public); the writer's token and the config's bytes."""
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path)
    data = {"base_model": "meta/tiny-llama"} | ({"private": "true"} if private else {})
    r = await reg.client.post("/api/v1/adapters/alice/a/versions", files=push_files(folder), data=data,
                              headers=reg.auth(writer))
    assert r.status_code == 201, r.text
    return writer, (folder / CONFIG).read_bytes()


async def test_a_config_is_read_from_storage_once_and_served_alike_after(local_registry: Registry,
                                                                         tmp_path: Path) -> None:
    reg = local_registry
    _, config = await pushed(reg, tmp_path, private=False)
    url = f"/alice/a/resolve/1/{CONFIG}"
    first = await reg.client.get(url)
    assert first.status_code == 200 and first.content == config
    for blob in (reg.store.root / "blobs").rglob("*"):  # failure injection: storage loses every blob
        if blob.is_file():
            blob.unlink()
    again = await reg.client.get(url)
    assert again.status_code == 200 and again.content == config  # no storage round trip
    assert again.headers.get_list("content-length") == [str(len(config))]
    for key in ("etag", "x-repo-commit", "x-linked-size", "cache-control", "content-type", "content-disposition"):
        assert again.headers.get(key) == first.headers.get(key), key
    part = await reg.client.get(url, headers={"Range": "bytes=2-9"})
    assert part.status_code == 206 and part.content == config[2:10]
    assert part.headers["content-range"] == f"bytes 2-9/{len(config)}"
    api = await reg.client.get(f"/api/v1/adapters/alice/a/versions/1/files/{CONFIG}")
    assert api.status_code == 200 and api.content == config
    # a large file is still streamed from storage, which has lost it
    assert (await reg.client.get("/alice/a/resolve/1/adapter_model.safetensors")).status_code == 404


async def test_cached_bytes_are_never_served_to_who_cannot_read_them(local_registry: Registry,
                                                                     tmp_path: Path) -> None:
    reg = local_registry
    writer, config = await pushed(reg, tmp_path, private=True)
    url = f"/alice/a/resolve/1/{CONFIG}"
    r = await reg.client.get(url, headers=reg.auth(writer))
    assert r.status_code == 200 and r.content == config  # cached now
    stranger = await reg.token("bob", "read")
    for headers in ({}, reg.auth(stranger)):
        r = await reg.client.get(url, headers=headers)
        assert r.status_code in (401, 404) and config not in r.content


async def test_the_hub_routes_set_no_csrf_cookie(local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    await pushed(reg, tmp_path, private=False)
    for url in (f"/alice/a/resolve/main/{CONFIG}", "/api/models/alice/a"):
        r = await reg.client.get(url)
        assert r.status_code == 200 and "set-cookie" not in r.headers, url
    assert "registry_csrf" in (await reg.client.get("/")).headers.get("set-cookie", "")  # the pages still do


def test_the_cache_keeps_only_whole_files_within_its_budget() -> None:
    cache = SmallFiles(budget=10)
    a, b = FileRow("a", 6, "sa", "ka"), FileRow("b", 6, "sb", "kb")
    cache.put(a, b"12345")  # not the file's size: not kept
    assert cache.get(a) is None
    cache.put(a, b"123456")
    cache.put(b, b"abcdef")  # over budget: the least recently used goes
    assert cache.get(a) is None and cache.get(b) == b"abcdef" and cache.used == 6
    assert cache.get(FileRow("b", 6, "other sha", "kb")) is None  # the key is the stored object and its sha256
