"""Issue 19 in the registry: the serving report kept with each version (API, page, search filters), alias
history, and base-model license and revision."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from registry_testkit import Registry, push_files, saved_adapter, tiny_llama

from sdk.signature import signature_from_model

BASE = "meta/llama"


async def _base(reg: Registry, license_id: str | None = None, revision: str | None = "abc123") -> None:
    body = {"name": BASE, "signature": signature_from_model(tiny_llama()).to_dict(), "revision": revision,
            "license": license_id}
    r = await reg.client.post("/api/v1/base-models", json=body, headers=reg.auth(reg.admin))
    assert r.status_code == 201, r.text
    assert r.json()["license"] == license_id and r.json()["revision"] == revision


async def _push(reg: Registry, token: str, name: str, folder: Path, **data: str) -> dict:
    r = await reg.client.post(f"/api/v1/adapters/alice/{name}/versions", headers=reg.auth(token),
                              data={"base_model": BASE, **data}, files=push_files(folder))
    assert r.status_code == 201, r.text
    return r.json()


async def test_serving_report_is_kept_shown_and_searchable(local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    alice = await reg.token("alice", "write")
    await _base(reg)
    plain = await _push(reg, alice, "plain", saved_adapter(tmp_path))  # r=4 on q/v: everything serves it
    assert plain["serving"]["serves"] == ["vllm", "sglang", "tgi", "llama.cpp"]
    assert plain["serving"]["engines"]["vllm"]["requires"] == ["--enable-lora", "--max-lora-rank 8"]
    assert plain["serving"]["engines"]["llama.cpp"]["mapped"] == ["q_proj", "v_proj"]
    dora = await _push(reg, alice, "dora", saved_adapter(tmp_path, use_dora=True))
    assert dora["serving"]["serves"] == [] and "DoRA" in dora["serving"]["engines"]["vllm"]["reason"]
    big = await _push(reg, alice, "big", saved_adapter(tmp_path, r=24, target_modules=["q_proj"]))
    assert big["serving"]["max_lora_rank"] == 32
    got = (await reg.client.get("/api/v1/adapters/alice/big/versions/1")).json()
    assert got["serving"] == big["serving"]

    async def names(**params: object) -> set[str]:
        r = await reg.client.get("/api/v1/adapters", params=params)
        assert r.status_code == 200, r.text
        return {a["name"] for a in r.json()["items"]}

    assert await names(serves="vllm") == {"alice/plain", "alice/big"}
    assert await names(serves="vllm", max_lora_rank=16) == {"alice/plain"}
    assert await names(max_lora_rank=32) == {"alice/plain", "alice/big"}
    assert await names(serves="tgi", q="dora") == set()
    assert await names() == {"alice/plain", "alice/big", "alice/dora"}  # without the new filters: as before
    bad = await reg.client.get("/api/v1/adapters", params={"serves": "triton"})
    assert bad.status_code == 400, bad.text
    # a new latest version that vLLM cannot load takes the adapter out of the filter
    await _push(reg, alice, "plain", saved_adapter(tmp_path, modules_to_save=["lm_head"]))
    assert await names(serves="vllm") == {"alice/big"}

    page = await reg.client.get("/adapters", params={"serves": "vllm", "max_lora_rank": "16"})
    assert page.status_code == 200 and 'value="vllm" selected' in page.text
    assert "alice/big" not in page.text and "3 adapters" not in page.text
    version_page = await reg.client.get("/adapters/alice/dora")
    assert 'id="serving"' in version_page.text and "vLLM does not yet support DoRA" in version_page.text.replace(
        "&#34;", '"')


async def test_alias_history_is_kept_and_resolution_names_the_commit(local_registry: Registry,
                                                                     tmp_path: Path) -> None:
    reg = local_registry
    alice = await reg.token("alice", "write")
    await _base(reg)
    v1 = await _push(reg, alice, "x", saved_adapter(tmp_path, seed=1), alias="prod")
    v2 = await _push(reg, alice, "x", saved_adapter(tmp_path, seed=2))
    assert (await reg.client.get("/api/v1/adapters/alice/x/versions/prod")).json()["commit"] == v1["commit"]
    r = await reg.client.put("/api/v1/adapters/alice/x/aliases/prod", json={"version": 2}, headers=reg.auth(alice))
    assert r.json() == {"alias": "prod", "version": 2, "commit": v2["commit"]}
    assert (await reg.client.get("/api/v1/adapters/alice/x/versions/prod")).json()["commit"] == v2["commit"]
    same = await reg.client.put("/api/v1/adapters/alice/x/aliases/prod", json={"version": 2}, headers=reg.auth(alice))
    assert same.status_code == 200  # not a move: no history row
    await reg.client.delete("/api/v1/adapters/alice/x/aliases/prod", headers=reg.auth(alice))
    r = await reg.client.get("/api/v1/adapters/alice/x/aliases/prod/history")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alias"] == "prod" and body["current"] is None
    moves = [(m["version"], m["commit"], m["previous_version"]) for m in body["items"]]
    assert moves == [(None, None, 2), (2, v2["commit"], 1), (1, v1["commit"], None)]
    assert all(m["moved_by"] for m in body["items"])
    older = await reg.client.get("/api/v1/adapters/alice/x/aliases/prod/history",
                                 params={"before": body["items"][0]["id"], "limit": 1})
    assert [m["version"] for m in older.json()["items"]] == [2]
    latest = (await reg.client.get("/api/v1/adapters/alice/x/aliases/latest/history")).json()
    assert [m["version"] for m in latest["items"]] == [2, 1] and latest["current"] == 2
    missing = await reg.client.get("/api/v1/adapters/alice/x/aliases/staging/history")
    assert missing.status_code == 404
    page = await reg.client.get("/adapters/alice/x")
    assert 'id="alias-history"' in page.text and v2["commit"][:12] in page.text and "removed" in page.text
    # private adapters' history is private too
    await _push(reg, alice, "secret", saved_adapter(tmp_path), private="true", alias="prod")
    assert (await reg.client.get("/api/v1/adapters/alice/secret/aliases/prod/history")).status_code == 404
    own = await reg.client.get("/api/v1/adapters/alice/secret/aliases/prod/history", headers=reg.auth(alice))
    assert own.status_code == 200 and own.json()["current"] == 1


async def test_base_license_and_revision_are_carried_along(local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    alice = await reg.token("alice", "write")
    await _base(reg, "llama3.1", "rev-7")
    folder = saved_adapter(tmp_path)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: meta/llama\n---\n# x\n")
    files = push_files(folder) | {"README.md": ("README.md", (folder / "README.md").open("rb"), "text/markdown")}
    r = await reg.client.post("/api/v1/adapters/alice/lic/versions", headers=reg.auth(alice),
                              data={"base_model": BASE}, files=files)
    assert r.status_code == 201, r.text
    body = r.json()
    assert any("'llama3.1' license, which this registry marks as restrictive" in n for n in body["notes"])
    assert body["license"] == "apache-2.0"
    assert body["base_model"] == {"name": BASE, "revision": "rev-7", "validated_revision": "rev-7",
                                  "license": "llama3.1", "license_restrictive": True}
    explicit = await _push(reg, alice, "lic", saved_adapter(tmp_path, seed=3), license="mit")
    assert explicit["license"] == "mit"
    page = await reg.client.get("/adapters/alice/lic/versions/1")
    assert "restrictive license" in page.text and "llama3.1" in page.text and "apache-2.0" in page.text
    assert "rev-7" in page.text
    too_long = await reg.client.post("/api/v1/adapters/alice/lic/versions", headers=reg.auth(alice),
                                     data={"base_model": BASE, "license": "x" * 200}, files=push_files(folder))
    assert too_long.status_code == 422 and "license is 200 characters" in too_long.text


async def test_an_open_base_license_adds_no_note(local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    alice = await reg.token("alice", "write")
    await _base(reg, "apache-2.0")
    body = await _push(reg, alice, f"open-{uuid.uuid4().hex[:4]}", saved_adapter(tmp_path))
    assert not any("restrictive" in n for n in body["notes"])
    assert body["base_model"]["license_restrictive"] is False
    assert json.dumps(body)  # the whole answer is JSON
