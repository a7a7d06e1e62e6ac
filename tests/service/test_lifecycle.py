"""Deletion: yanking (410 with the reason, out of latest, no alias on it), purging (bytes removed
unless shared), deleting adapters and base models (refused while something depends on them), and
the audit events these and other writes leave."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from registry_testkit import Registry, push_files, saved_adapter, snapshot, writer_with_base

CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def sign_in(reg: Registry, token: str) -> Any:
    """Sign in to the pages with ``token`` (through the form, with its CSRF token)."""
    csrf = CSRF_FIELD.search((await reg.client.get("/sign-in")).text).group(1)
    return await reg.client.post("/sign-in", data={"token": token, "next": "/", "_csrf_token": csrf},
                                 follow_redirects=False)


async def _push(reg: Registry, token: str, name: str, folder: Path, **data: str) -> dict:
    r = await reg.client.post(f"/api/v1/adapters/{name}/versions", files=push_files(folder),
                              data={"base_model": "meta/tiny-llama", **data}, headers=reg.auth(token))
    assert r.status_code == 201, r.text
    return r.json()


async def test_yank_answers_410_leaves_latest_and_refuses_aliases(local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=1), alias="prod")
    v2 = await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=2))
    h = reg.auth(writer)
    # an alias on it: refused, naming the alias
    r = await reg.client.delete("/api/v1/adapters/alice/a/versions/1", params={"reason": "bad data"}, headers=h)
    assert r.status_code == 409 and "prod" in r.json()["detail"] and r.json()["aliases"] == ["prod"]
    assert (await reg.client.delete("/api/v1/adapters/alice/a/aliases/prod", headers=h)).status_code == 200
    # anonymous and foreign writers cannot yank
    assert (await reg.client.delete("/api/v1/adapters/alice/a/versions/1")).status_code == 401
    bob = await reg.token("bob", "write")
    assert (await reg.client.delete("/api/v1/adapters/alice/a/versions/1", headers=reg.auth(bob))).status_code == 403
    # an alias cannot name what to yank
    assert (await reg.client.delete("/api/v1/adapters/alice/a/versions/latest", headers=h)).status_code == 400
    r = await reg.client.delete("/api/v1/adapters/alice/a/versions/1", params={"reason": "bad data"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["yanked"]["reason"] == "bad data" and not r.json()["yanked"]["purged"]
    for path in ("/api/v1/adapters/alice/a/versions/1",
                 "/api/v1/adapters/alice/a/versions/1/files/adapter_config.json",
                 "/alice/a/resolve/1/adapter_config.json", "/api/models/alice/a/revision/1"):
        got = await reg.client.get(path, headers=h)
        assert got.status_code == 410, (path, got.text)
        assert "bad data" in got.text
    listed = (await reg.client.get("/api/v1/adapters/alice/a/versions", headers=h)).json()
    assert [v["yanked"] is not None for v in listed["items"]] == [False, True]
    # no alias may point at it
    r = await reg.client.put("/api/v1/adapters/alice/a/aliases/prod", json={"version": 1}, headers=h)
    assert r.status_code == 410
    # yanking the newest moves latest back; yanking every version leaves latest gone (410)
    v3 = await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=3))
    assert (await reg.client.delete("/api/v1/adapters/alice/a/versions/3", headers=h)).status_code == 200
    latest = (await reg.client.get("/api/v1/adapters/alice/a/versions/latest", headers=h)).json()
    assert latest["version"] == 2 and latest["commit"] == v2["commit"]
    r = await reg.client.delete(f"/api/v1/adapters/alice/a/versions/{v2['commit']}", headers=h)
    assert r.status_code == 200
    r = await reg.client.get("/api/v1/adapters/alice/a/versions/latest", headers=h)
    assert r.status_code == 410 and "every version" in r.json()["detail"]
    assert (await reg.client.get("/alice/a/resolve/main/adapter_config.json", headers=h)).status_code == 410
    # a new push is the latest again
    v4 = await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=4))
    assert v4["version"] == 4 and v3["version"] == 3
    assert (await reg.client.get("/api/v1/adapters/alice/a/versions/latest", headers=h)).json()["version"] == 4


async def test_purge_removes_bytes_only_where_unshared(registry: Registry, tmp_path: Path) -> None:
    reg = registry
    writer = await writer_with_base(reg)
    folder = saved_adapter(tmp_path, seed=1)
    one = await _push(reg, writer, "alice/a", folder)
    await _push(reg, writer, "alice/b", folder)  # the same bytes, in another adapter
    other = await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=2))
    weights_of = {f["filename"]: f["sha256"] for f in other["files"]}["adapter_model.safetensors"]
    shared = {f["filename"]: f["sha256"] for f in one["files"]}["adapter_model.safetensors"]
    h = reg.auth(writer)
    # purging needs a namespace admin
    r = await reg.client.delete("/api/v1/adapters/alice/a/versions/2", params={"purge": "true"}, headers=h)
    assert r.status_code == 403
    admin = reg.auth(await reg.token("alice", "admin"))
    for n in (1, 2):
        r = await reg.client.delete(f"/api/v1/adapters/alice/a/versions/{n}", params={"purge": "true",
                                    "reason": "leaked data"}, headers=admin)
        assert r.status_code == 200 and r.json()["yanked"]["purged"], r.text
    assert not await reg.store.exists(weights_of)  # only version 2 of alice/a had these bytes
    assert await reg.store.exists(shared)  # alice/b still uses them
    assert (await reg.client.get("/api/v1/adapters/alice/b/versions/1/files/adapter_model.safetensors?stream=1")
            ).status_code == 200
    r = await reg.client.get("/api/v1/adapters/alice/a/versions/2", headers=h)
    assert r.status_code == 410 and r.json()["yanked"]["purged"] is True


async def test_delete_adapter_and_base_model(local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    pushed = await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=1))
    admin = reg.auth(await reg.token("alice", "admin"))
    assert (await reg.client.delete("/api/v1/adapters/alice/a", headers=reg.auth(writer))).status_code == 403
    # the base model is in use: refused, naming the adapter
    r = await reg.client.delete("/api/v1/base-models/meta/tiny-llama", headers=reg.auth(reg.admin))
    assert r.status_code == 409 and "alice/a (adapter)" in r.json()["detail"], r.text
    r = await reg.client.delete("/api/v1/adapters/alice/a", headers=admin)
    assert r.status_code == 200 and r.json() == {"deleted": "alice/a", "versions": 1}
    assert (await reg.client.get("/api/v1/adapters/alice/a")).status_code == 404
    assert (await reg.client.delete("/api/v1/adapters/alice/a", headers=admin)).status_code == 404
    for f in pushed["files"]:
        assert not await reg.store.exists(f["sha256"])
    # alice's admin token does not cover meta's base model; the global admin's does
    assert (await reg.client.delete("/api/v1/base-models/meta/tiny-llama", headers=admin)).status_code == 403
    r = await reg.client.delete("/api/v1/base-models/meta/tiny-llama", headers=reg.auth(reg.admin))
    assert r.status_code == 200, r.text
    assert (await reg.client.get("/api/v1/base-models/meta/tiny-llama")).status_code == 404
    # the name can be used again
    counts, _ = await snapshot(reg)
    assert counts["adapter"] == 0 and counts["base_model"] == 0


async def test_every_write_is_an_event_for_namespace_admins(local_registry: Registry, tmp_path: Path) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    h = reg.auth(writer)
    pushed = await reg.client.post("/api/v1/adapters/alice/a/versions", files=push_files(saved_adapter(tmp_path)),
                                   data={"base_model": "meta/tiny-llama"}, headers=h)
    push_request = pushed.headers["x-request-id"]
    await reg.client.put("/api/v1/adapters/alice/a/aliases/prod", json={"version": 1}, headers=h)
    await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=2))
    await reg.client.put("/api/v1/adapters/alice/a/aliases/prod", json={"version": 2}, headers=h)
    await reg.client.delete("/api/v1/adapters/alice/a/aliases/prod", headers=h)
    await reg.client.patch("/api/v1/adapters/alice/a", json={"description": "x"}, headers=h)
    admin_token = await reg.token("alice", "admin")  # only namespace admins change visibility
    r = await reg.client.patch("/api/v1/adapters/alice/a", json={"visibility": "private"},
                               headers=reg.auth(admin_token))
    assert r.status_code == 200, r.text
    await reg.client.delete("/api/v1/adapters/alice/a/versions/1", params={"reason": "old"}, headers=h)
    # writers cannot read the log; namespace admins (and global admins) can
    assert (await reg.client.get("/api/v1/events", params={"namespace": "alice"}, headers=h)).status_code == 403
    assert (await reg.client.get("/api/v1/events", params={"namespace": "alice"})).status_code == 401
    r = await reg.client.get("/api/v1/events", params={"namespace": "alice", "adapter": "a"},
                             headers=reg.auth(admin_token))
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    kinds = [e["kind"] for e in items]
    assert kinds == ["version.yanked", "visibility.changed", "adapter.edited", "alias.removed", "alias.moved",
                     "push", "alias.set", "push"], kinds
    first_push = items[-1]
    assert first_push["request_id"] == push_request
    assert first_push["actor"]["name"] and first_push["actor"]["token_id"] is not None
    assert first_push["details"]["version"] == 1
    assert items[4]["details"] == {"alias": "prod", "version": 2, "from": 1}
    assert items[1]["details"] == {"from": "public", "to": "private"}
    assert items[1]["actor"]["name"] != first_push["actor"]["name"]  # the admin, not the writer
    # a bounded page with a cursor walks the whole log, newest first, without repeats
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params = {"namespace": "alice", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await reg.client.get("/api/v1/events", params=params, headers=reg.auth(admin_token))).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) >= len(items)
    assert (await reg.client.get("/api/v1/events", params={"namespace": "alice", "limit": 1000},
                                 headers=reg.auth(admin_token))).status_code == 400


async def test_the_adapter_page_lists_activity_and_yanks_with_confirmation(local_registry: Registry,
                                                                           tmp_path: Path) -> None:
    reg = local_registry
    writer = await writer_with_base(reg)
    await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=1))
    await _push(reg, writer, "alice/a", saved_adapter(tmp_path, seed=2))
    anonymous = (await reg.client.get("/adapters/alice/a")).text
    assert 'id="activity"' not in anonymous and "/yank" not in anonymous  # members only
    assert (await sign_in(reg, writer)).status_code == 303
    page = (await reg.client.get("/adapters/alice/a/versions/2")).text
    assert 'id="activity"' in page and page.count(">push</span>") == 2
    assert 'action="/adapters/alice/a/versions/2/yank"' in page and "/delete" not in page  # writers cannot delete
    csrf = CSRF_FIELD.search(page).group(1)
    forged = await reg.client.post("/adapters/alice/a/versions/2/yank", data={"reason": "x", "confirm": "1"})
    assert forged.status_code == 403  # no CSRF token: refused
    unconfirmed = await reg.client.post("/adapters/alice/a/versions/2/yank",
                                        data={"reason": "broken", "_csrf_token": csrf})
    assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.text
    assert (await reg.client.get("/api/v1/adapters/alice/a/versions/2")).status_code == 200
    done = await reg.client.post("/adapters/alice/a/versions/2/yank",
                                 data={"reason": "broken", "confirm": "1", "_csrf_token": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/adapters/alice/a"
    assert (await reg.client.get("/api/v1/adapters/alice/a/versions/2")).status_code == 410
    page = (await reg.client.get("/adapters/alice/a")).text
    assert "version.yanked" in page and "broken" in page and "Version 1" in page
    # a namespace admin also gets the delete form
    admin = await reg.token("alice", "admin")
    await sign_in(reg, admin)
    page = (await reg.client.get("/adapters/alice/a")).text
    assert 'action="/adapters/alice/a/delete"' in page
    gone = await reg.client.post("/adapters/alice/a/delete", data={"confirm": "1",
                                 "_csrf_token": CSRF_FIELD.search(page).group(1)}, follow_redirects=False)
    assert gone.status_code == 303 and (await reg.client.get("/api/v1/adapters/alice/a")).status_code == 404


async def test_tokens_made_anywhere_are_events(local_registry: Registry) -> None:
    reg = local_registry
    alice_admin = await reg.token("alice", "admin")  # made by the global admin
    r = await reg.client.post("/api/v1/tokens", json={"namespace": "alice", "scopes": ["read"], "name": "ci"},
                              headers=reg.auth(alice_admin))
    assert r.status_code in (200, 201)
    events = (await reg.client.get("/api/v1/events", params={"namespace": "alice"},
                                   headers=reg.auth(alice_admin))).json()["items"]
    assert [e["kind"] for e in events] == ["token.created", "token.created"]
    newest, first = events
    assert newest["details"]["name"] == "ci" and newest["details"]["scopes"] == ["read"]
    assert newest["actor"]["token_id"] == first["details"]["token"]  # alice's admin token made it
    assert newest["request_id"] == r.headers["x-request-id"]
    assert first["actor"]["token_id"] is not None  # the bootstrap admin token made alice's
    revoked = await reg.client.delete(f"/api/v1/tokens/{newest['details']['token']}", headers=reg.auth(alice_admin))
    assert revoked.status_code == 200, revoked.text
    latest = (await reg.client.get("/api/v1/events", params={"namespace": "alice", "limit": 1},
                                   headers=reg.auth(alice_admin))).json()["items"][0]
    assert latest["kind"] == "token.revoked" and latest["details"]["token"] == newest["details"]["token"]
