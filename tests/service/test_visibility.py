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
