"""Issue 15, "Visibility is exact": visibility belongs to the adapter (a push cannot change it: 409;
a namespace admin changes it with PATCH), and the private-input rule of merge jobs is checked again
in the publishing transaction."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from registry_testkit import Registry, push_files, saved_adapter, writer_with_base
from test_merge_limits import job, run, setup, submit

BASE = {"base_model": "meta/tiny-llama"}


async def push(reg: Registry, name: str, folder: Path, token: str, **form: str) -> object:
    return await reg.client.post(f"/api/v1/adapters/{name}/versions", files=push_files(folder), data=BASE | form,
                                 headers=reg.auth(token))


async def test_a_push_cannot_change_visibility(local_registry: Registry, tmp_path: Path) -> None:
    """Before: private=true to a public adapter published a public version without a word."""
    reg = local_registry
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path)
    assert (await push(reg, "alice/open", folder, writer)).status_code == 201
    r = await push(reg, "alice/open", folder, writer, private="true")
    assert r.status_code == 409, r.text
    assert "alice/open is public; a push cannot make it private" in r.json()["detail"]
    assert "PATCH /api/v1/adapters/alice/open" in r.json()["detail"]
    assert (await reg.client.get("/api/v1/adapters/alice/open")).json()["versions"] == 1  # nothing published
    assert (await push(reg, "alice/shut", folder, writer, private="true")).status_code == 201
    r = await push(reg, "alice/shut", folder, writer, private="false")
    assert r.status_code == 409 and "alice/shut is private; a push cannot make it public" in r.json()["detail"]
    # saying nothing keeps the adapter's visibility; saying the same is fine
    assert (await push(reg, "alice/shut", folder, writer)).status_code == 201
    assert (await push(reg, "alice/shut", folder, writer, private="true")).status_code == 201
    info = (await reg.client.get("/api/v1/adapters/alice/shut", headers=reg.auth(writer))).json()
    assert info["visibility"] == "private" and info["versions"] == 3
    assert (await reg.client.get("/api/v1/adapters/alice/shut")).status_code == 404


async def test_only_a_namespace_admin_changes_visibility(local_registry: Registry, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    alice_admin = await reg.token("alice", "admin")
    bob_admin = await reg.token("bob", "admin")
    assert (await push(reg, "alice/x", saved_adapter(tmp_path), writer)).status_code == 201
    url = "/api/v1/adapters/alice/x"
    r = await reg.client.patch(url, json={"visibility": "private"}, headers=reg.auth(writer))
    assert r.status_code == 403 and "only an admin of namespace 'alice'" in r.json()["detail"]
    # a writer still edits the description
    assert (await reg.client.patch(url, json={"description": "d"}, headers=reg.auth(writer))).status_code == 200
    assert (await reg.client.patch(url, json={"visibility": "private"}, headers=reg.auth(bob_admin))).status_code == 403
    with caplog.at_level(logging.INFO, logger="adapter_registry.audit"):
        r = await reg.client.patch(url, json={"visibility": "private"}, headers=reg.auth(alice_admin))
    assert r.status_code == 200 and r.json()["visibility"] == "private"
    assert any("visibility of alice/x changed from public to private" in m for m in caplog.messages)
    assert (await reg.client.get(url)).status_code == 404
    r = await reg.client.patch(url, json={"visibility": "public"}, headers=reg.auth(reg.admin))
    assert r.status_code == 200 and (await reg.client.get(url)).status_code == 200


async def test_private_input_rule_is_checked_again_when_a_job_publishes(registry_with, tmp_path: Path) -> None:
    """An input made private between submit and publish, or the output made public: the job fails and
    publishes nothing (before, only the submit checked)."""
    reg = await registry_with()
    alice = await setup(reg, tmp_path)
    admin = await reg.token("alice", "admin")
    r = await submit(reg, alice, job())
    assert r.status_code == 202, r.text
    patched = await reg.client.patch("/api/v1/adapters/alice/a", json={"visibility": "private"},
                                     headers=reg.auth(admin))
    assert patched.status_code == 200
    done = await run(reg, r.json()["id"], tmp_path)
    assert done["state"] == "failed", done
    assert "inputs ['alice/a'] are private now" in done["error"] and "nothing was published" in done["error"]
    assert (await reg.client.get("/api/v1/adapters/alice/merged", headers=reg.auth(alice))).status_code == 404
    # the output adapter made public after a job with a private input was accepted
    r = await submit(reg, alice, job(output={"private": True}))
    assert r.status_code == 202, r.text
    first = await run(reg, r.json()["id"], tmp_path)
    assert first["state"] == "succeeded", first
    r = await submit(reg, alice, job())
    assert r.status_code == 202, r.text
    assert (await reg.client.patch("/api/v1/adapters/alice/merged", json={"visibility": "public"},
                                   headers=reg.auth(admin))).status_code == 200
    done = await run(reg, r.json()["id"], tmp_path)
    assert done["state"] == "failed" and "output adapter alice/merged is public" in done["error"], done
    assert (await reg.client.get("/api/v1/adapters/alice/merged")).json()["versions"] == 1
    # a merge cannot make a public output private either
    r = await submit(reg, alice, job(output={"adapter": "alice/b", "private": True}))
    assert r.status_code == 422 and "output adapter alice/b is public" in r.text


async def test_a_merged_version_never_names_inputs_its_reader_cannot_read(registry_with, tmp_path: Path) -> None:
    """bob may read bob/merged but not alice/a, one of its inputs: before, its parents, merge_recipe.json,
    README, Hub API, lineage and job all named alice/a and its commit to him."""
    reg = await registry_with()
    c = reg.client
    await setup(reg, tmp_path)
    admin = await reg.token("alice", "admin")
    assert (await c.patch("/api/v1/adapters/alice/a", json={"visibility": "private"},
                          headers=reg.auth(admin))).status_code == 200
    secret_commit = (await c.get("/api/v1/adapters/alice/a/versions/1", headers=reg.auth(admin))).json()["commit"]
    r = await submit(reg, reg.admin, job(output={"adapter": "bob/merged", "private": True}))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert (await run(reg, job_id, tmp_path))["state"] == "succeeded"
    bob = reg.auth(await reg.token("bob", "read"))
    assert (await c.get("/api/v1/adapters/alice/a", headers=bob)).status_code == 404

    def clean(text: str) -> None:
        assert "alice/a" not in text and secret_commit not in text, text

    version = await c.get("/api/v1/adapters/bob/merged/versions/1", headers=bob)
    clean(version.text)
    body = version.json()
    assert {"redacted": True, "weight": 0.5, "combination_type": "linear"} in body["parents"]
    assert any(p.get("adapter") == "alice/b" for p in body["parents"])  # the readable input stays
    assert sorted(f["filename"] for f in body["files"]) == ["adapter_config.json", "adapter_model.safetensors"]
    assert version.headers["cache-control"] == "private, no-cache"
    clean((await c.get("/api/v1/adapters/bob/merged/versions", headers=bob)).text)
    for name in ("merge_recipe.json", "README.md"):
        r = await c.get(f"/api/v1/adapters/bob/merged/versions/1/files/{name}", headers=bob)
        assert r.status_code == 404 and "names inputs of this merged version" in r.json()["detail"]
        r = await c.get(f"/bob/merged/resolve/main/{name}", headers=bob)
        assert r.status_code == 404 and r.headers.get("x-error-code") == "EntryNotFound"
    assert (await c.get("/api/v1/adapters/bob/merged/versions/1/files/adapter_config.json",
                        headers=bob)).status_code == 200
    for path in ("/api/models/bob/merged?blobs=true", "/api/models/bob/merged/tree/main",
                 "/api/v1/adapters/bob/merged/versions/1/lineage", f"/api/v1/merge-jobs/{job_id}",
                 "/api/v1/merge-jobs"):
        r = await c.get(path, headers=bob)
        assert r.status_code == 200, (path, r.text)
        clean(r.text)
        assert "merge_recipe.json" not in r.text or "merge-jobs" in path, path
    # the pages, signed in as bob
    from test_web_sessions import sign_in_form

    csrf = await sign_in_form(reg)
    bob_token = bob["Authorization"].split()[1]
    assert (await c.post("/sign-in", data={"token": bob_token, "_csrf_token": csrf},
                         follow_redirects=False)).status_code == 303
    for path in ("/adapters/bob/merged", f"/jobs/{job_id}"):
        page = await c.get(path)
        assert page.status_code == 200 and "bob/merged" in page.text, path
        clean(page.text)
    # whoever can read every input sees them all
    full = (await c.get("/api/v1/adapters/bob/merged/versions/1", headers=reg.auth(reg.admin))).json()
    assert any(p.get("adapter") == "alice/a" and p.get("commit") == secret_commit for p in full["parents"])
    recipe = await c.get("/api/v1/adapters/bob/merged/versions/1/files/merge_recipe.json", headers=reg.auth(reg.admin))
    assert recipe.status_code == 200 and "alice/a" in recipe.text


async def test_cache_headers_and_conditional_requests(registry_with, tmp_path: Path) -> None:
    reg = await registry_with()
    c = reg.client
    alice = await setup(reg, tmp_path)  # alice/a and alice/b, public
    admin = await reg.token("alice", "admin")
    files = "/api/v1/adapters/alice/a/versions/{}/files/adapter_config.json"
    pinned = await c.get(files.format(1))
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = pinned.headers["etag"]
    assert etag == f'"{pinned.headers["x-content-sha256"]}"'
    moving = await c.get(files.format("latest"))
    assert moving.headers["cache-control"] == "public, no-cache" and moving.headers["etag"] == etag
    again = await c.get(files.format("latest"), headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    commit = (await c.get("/api/v1/adapters/alice/a/versions/1")).json()["commit"]
    for path, cache in ((f"/api/v1/adapters/alice/a/versions/{commit}", "public, max-age=31536000, immutable"),
                        ("/api/v1/adapters/alice/a/versions/latest", "public, no-cache"),
                        ("/api/v1/adapters/alice/a/versions", "public, no-cache"),
                        ("/api/models/alice/a", "public, no-cache"),
                        (f"/api/models/alice/a/revision/{commit}", "public, max-age=31536000, immutable"),
                        ("/api/models/alice/a/tree/main", "public, no-cache"),
                        ("/alice/a/resolve/main/adapter_config.json", "public, no-cache"),
                        ("/alice/a/resolve/1/adapter_config.json", "public, max-age=31536000, immutable")):
        r = await c.get(path)
        assert r.status_code == 200 and r.headers["cache-control"] == cache and r.headers["etag"], path
        r304 = await c.get(path, headers={"If-None-Match": r.headers["etag"]})
        assert r304.status_code == 304 and r304.headers["etag"] == r.headers["etag"], path
    # private: never for shared caches, whatever the reference
    await c.patch("/api/v1/adapters/alice/a", json={"visibility": "private"}, headers=reg.auth(admin))
    for path in (files.format(1), f"/api/v1/adapters/alice/a/versions/{commit}", "/alice/a/resolve/1/README.md",
                 "/alice/a/resolve/1/adapter_config.json", "/api/models/alice/a"):
        r = await c.get(path, headers=reg.auth(alice))
        if r.status_code == 404:
            continue  # no README in this version
        assert r.headers["cache-control"] == "private, no-cache", path
    # a public merge whose input became private later: its answers differ by reader, so they are private
    await c.patch("/api/v1/adapters/alice/a", json={"visibility": "public"}, headers=reg.auth(admin))
    r = await submit(reg, alice, job(output={"adapter": "alice/mix"}))
    assert (await run(reg, r.json()["id"], tmp_path))["state"] == "succeeded"
    assert (await c.get("/api/v1/adapters/alice/mix/versions/1")).headers["cache-control"].startswith("public")
    await c.patch("/api/v1/adapters/alice/a", json={"visibility": "private"}, headers=reg.auth(admin))
    anon = await c.get("/api/v1/adapters/alice/mix/versions/1")
    assert anon.headers["cache-control"] == "private, no-cache" and "alice/a" not in anon.text
    assert (await c.get("/api/v1/adapters/alice/mix/versions/1/files/merge_recipe.json")).status_code == 404


async def test_presigned_redirects_of_private_files_are_not_cached(s3_registry: Registry, tmp_path: Path) -> None:
    reg = s3_registry
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path)
    assert (await push(reg, "alice/open", folder, writer)).status_code == 201
    assert (await push(reg, "alice/shut", folder, writer, private="true")).status_code == 201
    path = "/api/v1/adapters/alice/{}/versions/{}/files/adapter_model.safetensors"
    r = await reg.client.get(path.format("open", 1), follow_redirects=False)
    half = reg.settings.presign_expires_s // 2
    assert r.status_code == 302 and r.headers["cache-control"] == f"public, max-age={half}"
    r = await reg.client.get(path.format("open", "latest"), follow_redirects=False)
    assert r.status_code == 302 and r.headers["cache-control"] == "public, no-cache"
    r = await reg.client.get(path.format("shut", 1), follow_redirects=False, headers=reg.auth(writer))
    assert r.status_code == 302 and r.headers["cache-control"] == "private, no-store"
