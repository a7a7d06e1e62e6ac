"""The registry end to end over HTTP: base models, pushes, versions, aliases, search, downloads, auth."""

from __future__ import annotations

import hashlib
from pathlib import Path

from registry_testkit import Registry, push_files, register_base, saved_adapter, tiny_gpt2, tiny_llama

from sdk.signature import signature_from_config, signature_from_model


async def test_health_and_openapi(registry: Registry) -> None:
    r = await registry.client.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    schema = (await registry.client.get("/schema/openapi.json")).json()
    assert "/api/v1/adapters/{ns}/{name}/versions" in schema["paths"]


async def test_base_model_by_signature_and_by_config_agree(registry: Registry) -> None:
    admin = registry.admin
    model = tiny_llama()
    by_sig = await register_base(registry, "meta/tiny-llama", model, admin)
    r = await registry.client.post("/api/v1/base-models", json={"name": "meta/tiny-llama-cfg",
                                                                "config": model.config.to_dict()},
                                   headers=registry.auth(admin))
    assert r.status_code == 201, r.text
    assert r.json()["fingerprint"] == by_sig["fingerprint"] == signature_from_model(model).fingerprint
    assert signature_from_config(model.config.to_dict()).fingerprint == by_sig["fingerprint"]
    # registering the same again is a no-op; another signature under the same name is a conflict
    again = await registry.client.post("/api/v1/base-models", json={"name": "meta/tiny-llama",
                                                                    "signature": signature_from_model(model).to_dict()},
                                       headers=registry.auth(admin))
    assert again.status_code == 200
    clash = await registry.client.post("/api/v1/base-models",
                                       json={"name": "meta/tiny-llama",
                                             "signature": signature_from_model(tiny_gpt2()).to_dict()},
                                       headers=registry.auth(admin))
    assert clash.status_code == 409 and clash.headers["content-type"].startswith("application/problem+json")
    detail = (await registry.client.get("/api/v1/base-models/meta/tiny-llama")).json()
    assert len(detail["signature"]["modules"]) == detail["modules"] > 0


async def test_push_versions_aliases_and_download(registry: Registry, tmp_path: Path) -> None:
    c, admin = registry.client, registry.admin
    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/tiny-llama", tiny_llama(), admin)
    folder = saved_adapter(tmp_path)
    r = await c.post("/api/v1/adapters/alice/chat/versions", files=push_files(folder),
                     data={"base_model": "meta/tiny-llama", "description": "a chat adapter", "tags": "chat,en"},
                     headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert v1["version"] == 1 and len(v1["commit"]) == 40
    assert v1["summary"]["r"] == 4 and v1["summary"]["targets"] == ["q_proj", "v_proj"]
    r = await c.post("/api/v1/adapters/alice/chat/versions", files=push_files(saved_adapter(tmp_path, seed=2)),
                     data={"alias": "prod"}, headers=registry.auth(writer))
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    info = (await c.get("/api/v1/adapters/alice/chat")).json()
    assert info["aliases"] == {"latest": 2, "prod": 2} and info["tags"] == ["chat", "en"]
    # move prod back to 1; refs by number, alias and commit
    r = await c.put("/api/v1/adapters/alice/chat/aliases/prod", json={"version": 1}, headers=registry.auth(writer))
    assert r.status_code == 200, r.text
    for ref in ("1", "prod", v1["commit"]):
        got = (await c.get(f"/api/v1/adapters/alice/chat/versions/{ref}")).json()
        assert got["version"] == 1, ref
    assert (await c.get("/api/v1/adapters/alice/chat/versions/latest")).json()["version"] == 2
    assert (await c.get("/api/v1/adapters/alice/chat/versions/7")).status_code == 404
    # downloads: whole file and ranges, bytes identical to what was pushed
    data = (folder / "adapter_model.safetensors").read_bytes()
    url = "/api/v1/adapters/alice/chat/versions/1/files/adapter_model.safetensors?stream=1"
    whole = await c.get(url)
    assert whole.status_code == 200, whole.text[:3000]
    assert whole.content == data
    assert whole.headers["x-content-sha256"] == hashlib.sha256(data).hexdigest()
    part = await c.get(url, headers={"Range": "bytes=8-15"})
    assert part.status_code == 206 and part.content == data[8:16]
    assert part.headers["content-range"] == f"bytes 8-15/{len(data)}"
    tail = await c.get(url, headers={"Range": "bytes=-10"})
    assert tail.content == data[-10:]
    bad = await c.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416
    if registry.settings.uses_s3:
        redirect = await c.get(url.removesuffix("?stream=1"), follow_redirects=False)
        assert redirect.status_code == 302 and "X-Amz-Signature" in redirect.headers["location"]


async def test_identical_files_are_stored_once(registry: Registry, tmp_path: Path) -> None:
    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/tiny-llama", tiny_llama(), registry.admin)
    folder = saved_adapter(tmp_path)
    for name in ("one", "two"):
        r = await registry.client.post(f"/api/v1/adapters/alice/{name}/versions", files=push_files(folder),
                                       data={"base_model": "meta/tiny-llama"}, headers=registry.auth(writer))
        assert r.status_code == 201, r.text
    keys = await registry.store.list_keys("blobs/")
    assert len(keys) == 2  # config + weights, shared by both adapters


async def test_search_and_compatible_adapters(registry: Registry, tmp_path: Path) -> None:
    c = registry.client
    writer = await registry.token("alice", "write")
    await register_base(registry, "meta/tiny-llama", tiny_llama(), registry.admin)
    await register_base(registry, "mirror/tiny-llama-copy", tiny_llama(), registry.admin)
    await register_base(registry, "openai/tiny-gpt2", tiny_gpt2(), registry.admin)
    pushes = [("chat", "meta/tiny-llama", tiny_llama, "chat"), ("code", "mirror/tiny-llama-copy", tiny_llama, "code"),
              ("story", "openai/tiny-gpt2", tiny_gpt2, "chat")]
    for name, base, make, tag in pushes:
        kw = {"target_modules": ["c_attn"]} if make is tiny_gpt2 else {}
        files = push_files(saved_adapter(tmp_path, make, **kw))
        r = await c.post(f"/api/v1/adapters/alice/{name}/versions", files=files,
                         data={"base_model": base, "tags": tag, "description": f"{name} adapter"},
                         headers=registry.auth(writer))
        assert r.status_code == 201, r.text
    names = lambda r: sorted(i["name"] for i in r.json()["items"])  # noqa: E731
    assert names(await c.get("/api/v1/adapters", params={"tag": "chat"})) == ["alice/chat", "alice/story"]
    assert names(await c.get("/api/v1/adapters", params={"base_model": "openai/tiny-gpt2"})) == ["alice/story"]
    assert names(await c.get("/api/v1/adapters", params={"q": "code"})) == ["alice/code"]
    everything = ["alice/chat", "alice/code", "alice/story"]
    assert names(await c.get("/api/v1/adapters", params={"method": "lora"})) == everything
    # same architecture under another name counts as compatible
    assert names(await c.get("/api/v1/base-models/meta/tiny-llama/adapters")) == ["alice/chat", "alice/code"]


async def test_auth_scopes_and_private_adapters(registry: Registry, tmp_path: Path) -> None:
    c = registry.client
    await register_base(registry, "meta/tiny-llama", tiny_llama(), registry.admin)
    alice_w = await registry.token("alice", "write")
    alice_r = await registry.token("alice", "read")
    bob_w = await registry.token("bob", "write")
    folder = saved_adapter(tmp_path)
    url = "/api/v1/adapters/alice/secret/versions"
    form = {"base_model": "meta/tiny-llama", "private": "true"}
    assert (await c.post(url, files=push_files(folder), data=form)).status_code == 401
    assert (await c.post(url, files=push_files(folder), data=form, headers=registry.auth(bob_w))).status_code == 403
    assert (await c.post(url, files=push_files(folder), data=form, headers=registry.auth(alice_r))).status_code == 403
    bad = await c.post(url, files=push_files(folder), data=form, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Bearer")
    assert (await c.post(url, files=push_files(folder), data=form, headers=registry.auth(alice_w))).status_code == 201
    # private: 404 to anonymous and to other namespaces, visible to alice's readers and admins
    for headers in ({}, registry.auth(bob_w)):
        assert (await c.get("/api/v1/adapters/alice/secret", headers=headers)).status_code == 404
        assert (await c.get("/api/v1/adapters/alice/secret/versions/1/files/adapter_config.json",
                            headers=headers)).status_code == 404
        assert (await c.get("/api/v1/adapters", headers=headers)).json()["total"] == 0
    for token in (alice_r, registry.admin):
        assert (await c.get("/api/v1/adapters/alice/secret", headers=registry.auth(token))).status_code == 200
    # tokens are stored hashed only
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from registry_service.db.session import async_url

    engine = create_async_engine(async_url(registry.db_url))
    async with engine.connect() as conn:
        stored = [r[0] for r in await conn.execute(text("SELECT token_sha256 FROM api_token"))]
    await engine.dispose()
    assert alice_w not in stored and hashlib.sha256(alice_w.encode()).hexdigest() in stored
