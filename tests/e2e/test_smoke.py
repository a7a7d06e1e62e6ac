"""The registry process answers and the SDK client talks to it."""

from __future__ import annotations

from e2e_server import Server

from sdk.client import Client


def test_server_health_and_whoami(server: Server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Client(server.url, server.admin, cache_dir=tmp_path) as c:
        assert c.http.json("GET", "/api/v1/health")["storage"] == "S3BlobStore"
        assert c.http.json("GET", "/api/v1/whoami")["admin"] is True
