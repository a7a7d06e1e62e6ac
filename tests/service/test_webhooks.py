"""Webhooks: namespace admins manage them, targets obey the SSRF rule, and a worker delivers events
signed with HMAC-SHA256, retrying after a 500 with a growing wait, with every attempt in the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from registry_testkit import push_files, saved_adapter, writer_with_base

from registry_service.domain.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from registry_service.settings import WorkerSettings
from registry_service.worker.process import make_queue_app, run_worker

SECRET = "a-webhook-secret-of-some-length"


class Receiver:
    """A local HTTP server that records what it receives and answers 500 to the first ``fail`` requests."""

    def __init__(self, fail: int) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail = fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(receiver.received) <= receiver.fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail=1)
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()


async def test_targets_must_be_public_unless_allowed(registry_with: Any) -> None:
    reg = await registry_with()
    admin = reg.auth(await reg.token("alice", "admin"))
    for url, why in (("http://127.0.0.1:9/hook", "not a public address"),
                     ("http://169.254.169.254/latest/meta-data", "not a public address"),
                     ("http://[::1]/", "not a public address"), ("ftp://example.com/", "http:// or https://"),
                     ("http://user:pw@example.com/", "credentials")):
        r = await reg.client.post("/api/v1/namespaces/alice/webhooks", json={"url": url}, headers=admin)
        assert r.status_code == 400 and why in r.json()["detail"], (url, r.text)
    r = await reg.client.post("/api/v1/namespaces/alice/webhooks", json={"url": "http://127.0.0.1:9/",
                              "events": ["nope"]}, headers=admin)
    assert r.status_code == 400 and "unknown event kinds" in r.json()["detail"]
    # writers and other namespaces' admins may not manage alice's webhooks
    writer = reg.auth(await reg.token("alice", "write"))
    bob = reg.auth(await reg.token("bob", "admin"))
    for h in (writer, bob):
        assert (await reg.client.get("/api/v1/namespaces/alice/webhooks", headers=h)).status_code == 403


async def test_deliveries_are_signed_and_retried_after_a_500(registry_with: Any, receiver: Receiver,
                                                             tmp_path: Path) -> None:
    reg = await registry_with(webhook_allow_private=True)
    writer = await writer_with_base(reg)
    admin = reg.auth(await reg.token("alice", "admin"))
    r = await reg.client.post("/api/v1/namespaces/alice/webhooks",
                              json={"url": receiver.url, "events": ["push"], "secret": SECRET}, headers=admin)
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["secret"] == SECRET
    listed = (await reg.client.get("/api/v1/namespaces/alice/webhooks", headers=admin)).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    pushed = await reg.client.post("/api/v1/adapters/alice/a/versions", files=push_files(saved_adapter(tmp_path)),
                                   data={"base_model": "meta/tiny-llama"}, headers=reg.auth(writer))
    assert pushed.status_code == 201
    await reg.client.put("/api/v1/adapters/alice/a/aliases/prod", json={"version": 1}, headers=reg.auth(writer))
    worker = WorkerSettings(name="test-worker", poll_s=0.5, heartbeat_s=1, webhook_backoff_s=1,
                            webhook_max_attempts=3, scratch_dir=tmp_path)
    task = asyncio.create_task(run_worker(reg.db_url, reg.settings, worker))
    try:
        for _ in range(300):
            if len(receiver.received) >= 2 or task.done():
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(task, 20)
    assert len(receiver.received) == 2, receiver.received  # the 500, then the retry (the alias event is not wanted)
    (h1, b1), (h2, b2) = receiver.received
    for headers, body in receiver.received:
        assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()])
        assert not verify("another-secret-of-some-length", body, headers[SIGNATURE_HEADER.lower()])
        assert headers[EVENT_HEADER.lower()] == "push"
    assert h1[DELIVERY_HEADER.lower()] == h2[DELIVERY_HEADER.lower()] and b1 == b2
    event = json.loads(b2)["event"]
    assert event["kind"] == "push" and event["adapter"] == "a" and event["details"]["version"] == 1
    assert event["request_id"] == pushed.headers["x-request-id"]
    log = (await reg.client.get(f"/api/v1/namespaces/alice/webhooks/{hook['id']}/deliveries", headers=admin)).json()
    assert [(d["state"], d["attempts"], d["last_status"]) for d in log["items"]] == [("delivered", 2, 204)]
    # deleting the webhook ends its deliveries and its log
    gone = await reg.client.delete(f"/api/v1/namespaces/alice/webhooks/{hook['id']}", headers=admin)
    assert gone.status_code == 200
    assert (await reg.client.get(f"/api/v1/namespaces/alice/webhooks/{hook['id']}/deliveries",
                                 headers=admin)).status_code == 404


def test_the_collection_is_a_periodic_task_on_the_workers(tmp_path: Path) -> None:
    worker = WorkerSettings(gc_cron="*/5 * * * *", scratch_dir=tmp_path)
    app = make_queue_app("postgresql://unused/db", worker)
    periodic = {t.task.name: t.cron for t in app.periodic_registry.periodic_tasks.values()}
    assert periodic == {"registry.gc": "*/5 * * * *"}
    assert "registry.webhook" in app.tasks
