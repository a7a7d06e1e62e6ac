"""Issue 14, "the server holds its ground": a request body is read only once the caller is known to
be allowed to send it, only up to its route's limit, and only so many large ones at once; parts of
an upload stream through a bounded spool and stop at their declared size.

The app is called as an ASGI server calls it (``asgi_probe``), so the tests see how much of each
body the app asked for, not only what it answered.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid

from asgi_probe import CHUNK, Probe, in_app_loop, probe, send_raw, zeros

MiB = 2**20
UPLOAD = uuid.uuid4()

#: Routes that take a body and write to the namespace in their path ("alice").
WRITE_ROUTES = [
    ("POST", "/api/v1/adapters/alice/chat/versions"),
    ("PATCH", "/api/v1/adapters/alice/chat"),
    ("PUT", "/api/v1/adapters/alice/chat/aliases/prod"),
    ("POST", "/api/v1/adapters/alice/chat/uploads"),
    ("PUT", f"/api/v1/adapters/alice/chat/uploads/{UPLOAD}/parts/1"),
    ("POST", f"/api/v1/adapters/alice/chat/uploads/{UPLOAD}/finalize"),
    ("POST", "/api/v1/base-models/alice/llama/files"),
    ("POST", "/api/v1/base-models/alice/llama/uploads"),
    ("PUT", f"/api/v1/base-models/alice/llama/uploads/{UPLOAD}/parts/1"),
    ("POST", f"/api/v1/base-models/alice/llama/uploads/{UPLOAD}/finalize"),
    ("POST", "/api/models/alice/chat/preupload/main"),
    ("POST", "/api/models/alice/chat/commit/main"),
]
#: Routes that take a body and need a token (the namespace, if any, is in the body).
SIGNED_IN_ROUTES = [
    ("POST", "/api/validate-yaml"),
    ("POST", "/api/v1/base-models"),
    ("POST", "/api/v1/merge-jobs"),
    ("POST", "/api/v1/tokens"),
]


def bearer(token: str, content_type: str = "application/json") -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": content_type}


def message(answer: Probe) -> str:
    """The error message of a problem-details body, or of a Hub route's ``{"error"}`` body."""
    body = json.loads(answer.body)
    return str(body.get("detail") or body.get("error"))


async def test_anonymous_and_foreign_bodies_are_refused_unread(registry_with) -> None:
    """401 for anonymous callers, 403 for another namespace's token, before one byte of the body is
    read, on every route that takes one, whether the body declares its length or not (main read up to
    516 MiB of anonymous bodies first)."""
    reg = await registry_with()
    bob = await reg.token("bob", "write")
    size = 64 * MiB
    for (method, path), declared in itertools.product(WRITE_ROUTES + SIGNED_IN_ROUTES, (True, False)):
        answer = await probe(reg.client, method, path, zeros(size), headers={"content-type": "application/json"},
                             content_length=size if declared else None)
        assert (answer.status, answer.chunks_read) == (401, 0), (method, path, answer.status, answer.body[:300])
        assert answer.headers["www-authenticate"].startswith("Bearer")
    for (method, path), declared in itertools.product(WRITE_ROUTES, (True, False)):
        answer = await probe(reg.client, method, path, zeros(size), headers=bearer(bob),
                             content_length=size if declared else None)
        assert (answer.status, answer.chunks_read) == (403, 0), (method, path, answer.status, answer.body[:300])
        assert "alice" in message(answer)


async def test_three_big_anonymous_bodies_cost_nothing(registry_with) -> None:
    """The issue's measurement, at its scale: three 400 MiB anonymous requests at once read no byte."""
    reg = await registry_with()

    async def three() -> list[Probe]:
        return await asyncio.gather(*(send_raw(reg.client.app, "POST", path, zeros(400 * MiB),
                                               headers={"content-type": "application/json"})
                                      for path in ("/api/validate-yaml", "/api/models/alice/chat/commit/main",
                                                   "/api/models/alice/chat/preupload/main")))

    probes = await in_app_loop(reg.client, three)
    assert [(p.status, p.bytes_read) for p in probes] == [(401, 0)] * 3


async def test_small_routes_read_small_bodies(registry_with) -> None:
    """JSON routes take max_body_bytes: a declared larger body is refused unread, an undeclared one as
    soon as it passes the limit (main took 516 MiB on every route)."""
    reg = await registry_with(max_body_bytes=1 * MiB)
    alice = await reg.token("alice", "write")
    for method, path in [("PATCH", "/api/v1/adapters/alice/chat"), ("PUT", "/api/v1/adapters/alice/chat/aliases/p"),
                         ("POST", "/api/v1/adapters/alice/chat/uploads"), ("POST", "/api/v1/merge-jobs"),
                         ("POST", "/api/validate-yaml"), ("POST", "/api/models/alice/chat/preupload/main")]:
        declared = await probe(reg.client, method, path, zeros(3 * MiB), headers=bearer(alice), content_length=3 * MiB)
        assert (declared.status, declared.chunks_read) == (413, 0), (path, declared.body[:300])
        chunked = await probe(reg.client, method, path, zeros(8 * MiB, chunk=256 * 1024), headers=bearer(alice))
        assert chunked.status == 413, (path, chunked.body[:300])
        assert chunked.bytes_read <= 1 * MiB + 256 * 1024, path


async def test_large_routes_have_limits_of_their_own(registry_with) -> None:
    """Pushes, weights forms, registrations and Hub commits each have their own limit (a setting)."""
    reg = await registry_with(max_direct_upload_bytes=1 * MiB, max_hub_commit_bytes=1 * MiB,
                              max_signature_body_bytes=1 * MiB)
    alice = await reg.token("alice", "write")
    await reg.client.post("/api/v1/base-models", headers=reg.auth(alice),
                          json={"name": "alice/b", "signature": {"modules": [{"path": "x", "kind": "Linear"}]}})
    form = "multipart/form-data; boundary=xyz"
    for path, limit, kind in [("/api/v1/adapters/alice/chat/versions", 5 * MiB, form),
                              ("/api/v1/base-models/alice/b/files", 2 * MiB, form),
                              ("/api/models/alice/chat/commit/main", 1 * MiB, "application/x-ndjson"),
                              ("/api/v1/base-models", 1 * MiB, "application/json")]:
        answer = await probe(reg.client, "POST", path, zeros(limit + 1), headers=bearer(alice, kind),
                             content_length=limit + 1)
        assert (answer.status, answer.chunks_read) == (413, 0), (path, answer.body[:300])
        assert f"the limit is {limit}" in message(answer)
        chunked = await probe(reg.client, "POST", path, zeros(limit + 8 * MiB), headers=bearer(alice, kind))
        assert chunked.status == 413 and chunked.bytes_read <= limit + CHUNK, (path, chunked.body[:300])


async def test_concurrent_uploads_are_bounded(registry_with) -> None:
    """With max_concurrent_uploads=1, a second large body while one is being received gets 503 with
    Retry-After, unread; once the first ends, uploads are taken again."""
    reg = await registry_with(max_concurrent_uploads=1)
    alice = await reg.token("alice", "write")
    app = reg.client.app
    form = {"authorization": f"Bearer {alice}", "content-type": "multipart/form-data; boundary=xyz"}

    async def scenario() -> tuple[Probe, list[Probe], Probe, Probe]:
        gate = asyncio.Event()
        held = Probe()
        first = asyncio.create_task(send_raw(app, "POST", "/api/v1/adapters/alice/a/versions", zeros(4 * MiB),
                                             headers=form, gate=gate, probe=held))
        for _ in range(500):
            if held.chunks_read:
                break
            await asyncio.sleep(0.01)
        assert held.chunks_read == 1
        busy = [await send_raw(app, "POST", path, zeros(2 * MiB), headers=form, content_length=2 * MiB)
                for path in ("/api/v1/adapters/alice/b/versions", "/api/models/alice/b/commit/main")]
        # a registration's body is parsed before its handler runs: a large one waits for a slot too
        busy.append(await send_raw(app, "POST", "/api/v1/base-models", zeros(2 * MiB), content_length=2 * MiB,
                                   headers={**form, "content-type": "application/json"}))
        small = await send_raw(app, "POST", "/api/v1/base-models", [b"{}"], content_length=2,
                               headers={**form, "content-type": "application/json"})
        gate.set()
        await first
        after = await send_raw(app, "POST", "/api/v1/adapters/alice/b/versions", zeros(2 * MiB), headers=form,
                               content_length=2 * MiB)
        return held, busy, after, small

    held, busy, after, small = await in_app_loop(reg.client, scenario)
    assert small.status == 400, small.body[:300]  # a small body needs no slot: read, and refused as incomplete
    for answer in busy:
        assert (answer.status, answer.chunks_read) == (503, 0), answer.body[:300]
        assert int(answer.headers["retry-after"]) > 0
        assert "max_concurrent_uploads" in message(answer)
    assert held.status == 400  # zeros are no multipart form; the slot is given back all the same
    assert after.status == 400 and after.chunks_read > 0


async def test_parts_stream_and_stop_at_their_size(registry_with, tmp_path) -> None:
    """Part numbers stay within the session (main stored part 9999 of a one-part file); a part stops
    being read as soon as it passes its declared size, and nothing of it is kept."""
    reg = await registry_with()
    alice = await reg.token("alice", "write")
    opened = await reg.client.post("/api/v1/adapters/alice/chat/uploads", json={"size": 6 * MiB},
                                   headers=reg.auth(alice))
    assert opened.status_code == 201, opened.text
    session = opened.json()
    assert [p["size"] for p in session["parts"]] == [5 * MiB, 1 * MiB]
    root = f"/api/v1/adapters/alice/chat/uploads/{session['id']}/parts"
    for number in (3, 9999):
        answer = await probe(reg.client, "PUT", f"{root}/{number}", zeros(MiB), headers=bearer(alice),
                             content_length=MiB)
        assert (answer.status, answer.chunks_read) == (400, 0), (number, answer.body[:300])
        # part 0 breaks the schema's declared range (1..10000) before the session's own 1..2 is checked
        assert ("part_number" in answer.body.decode()) if number == 0 else ("parts 1..2" in message(answer))
    declared = await probe(reg.client, "PUT", f"{root}/2", zeros(2 * MiB), headers=bearer(alice),
                           content_length=2 * MiB)
    assert (declared.status, declared.chunks_read) == (413, 0)
    streamed = await probe(reg.client, "PUT", f"{root}/1", zeros(64 * MiB, chunk=256 * 1024), headers=bearer(alice))
    assert streamed.status == 413 and streamed.bytes_read <= 5 * MiB + 256 * 1024
    assert not list((tmp_path / "blobs" / "multipart").rglob("part-*"))
    fits = await probe(reg.client, "PUT", f"{root}/2", zeros(MiB), headers=bearer(alice), content_length=MiB)
    assert fits.status == 200 and fits.headers["etag"]
    assert [p.name for p in (tmp_path / "blobs" / "multipart").rglob("part-*")] == ["part-00002"]
    finalize = await reg.client.post(session["finalize_url"], headers=reg.auth(alice),
                                     files={"adapter_config.json": ("adapter_config.json", b"{}")},
                                     data={"parts": json.dumps([[2, fits.headers["etag"]], [3, "x"]]),
                                           "sha256": "0" * 64})
    assert finalize.status_code == 400 and "no part 3" in finalize.json()["detail"], finalize.text
