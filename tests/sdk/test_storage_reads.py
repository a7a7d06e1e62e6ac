"""Presigned storage URLs reached with the standard library (the fast paths of
``sdk.client.transfers``): ranged downloads and part uploads retry on 5xx and cut connections,
and give clear errors otherwise.

A real HTTP server on loopback plays the registry API (which redirects) and the storage (which
answers ``Range`` requests, and misbehaves on purpose where a test says so).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sdk.client.http import Http
from sdk.client.transfers import IntegrityError, download, upload_parts
from sdk.errors import AdapterError

DATA = os.urandom(5 * 2**20 + 123)
SHA = hashlib.sha256(DATA).hexdigest()


class Storage:
    """What the fake storage does next: a queue of faults ('503', 'cut', '403'), then plain answers."""

    def __init__(self) -> None:
        self.faults: list[str] = []
        self.requests: list[str] = []
        self.puts: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


@pytest.fixture
def storage() -> Iterator[tuple[str, Storage]]:
    state = Storage()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            fault = state.next_fault()
            if fault in ("503", "403"):
                self.send_response(int(fault))
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"refused")
                return
            if fault == "cut":
                self.close_connection = True
                return  # no answer at all
            state.puts[self.path] = body
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if self.path.startswith("/api/"):
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/blob?X-Amz-Signature=x")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            assert "Authorization" not in self.headers  # no registry token at storage
            start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers["Range"]).groups())
            state.requests.append(self.headers["Range"])
            fault = state.next_fault()
            if fault in ("503", "403"):
                body = b"<Error><Code>SlowDown</Code></Error>" if fault == "503" else b"<Error>Expired</Error>"
                self.send_response(int(fault))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            chunk = DATA[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(DATA)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            self.wfile.write(chunk[: len(chunk) // 2] if fault == "cut" else chunk)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", state
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str, dest: Path, sha256: str = SHA) -> Path:
    http = Http(url, "secret-token", backoff=0.001)
    assert http.storage_io == "stdlib"
    try:
        return download(http, "/api/file", dest, size=len(DATA), sha256=sha256, label="weights", quiet=True,
                        part_bytes=2**20, workers=3)
    finally:
        http.close()


def test_ranges_are_read_in_parallel_and_verified(storage: tuple[str, Storage], tmp_path: Path) -> None:
    url, state = storage
    got = fetch(url, tmp_path / "w.bin")
    assert got.read_bytes() == DATA
    assert len(state.requests) == len(set(state.requests)) == 6  # 1 MiB ranges, each once
    assert not list(tmp_path.glob("*.part*"))


def test_a_5xx_or_a_cut_body_is_retried(storage: tuple[str, Storage], tmp_path: Path) -> None:
    url, state = storage
    state.faults = ["503", "cut", "503"]
    assert fetch(url, tmp_path / "w.bin").read_bytes() == DATA
    assert len(state.requests) == 6 + 3


def test_a_refusal_is_a_clear_error_and_nothing_is_kept(storage: tuple[str, Storage], tmp_path: Path) -> None:
    url, state = storage
    state.faults = ["403"]
    with pytest.raises(AdapterError, match="storage refused the download of weights: 403"):
        fetch(url, tmp_path / "w.bin")
    assert not (tmp_path / "w.bin").exists()


def test_wrong_bytes_are_not_kept(storage: tuple[str, Storage], tmp_path: Path) -> None:
    url, _ = storage
    with pytest.raises(IntegrityError):
        fetch(url, tmp_path / "w.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_parts_are_put_with_retries(storage: tuple[str, Storage], tmp_path: Path) -> None:
    url, state = storage
    src = tmp_path / "w.bin"
    src.write_bytes(DATA)
    part = 2 * 2**20
    session = {"part_size": part, "direct": True,
               "parts": [{"part_number": n, "url": f"{url}/up?partNumber={n}&X-Amz-Signature=x"} for n in (1, 2, 3)]}
    state.faults = ["503", "cut"]
    http = Http(url, "secret-token", backoff=0.001)
    try:
        etags = upload_parts(http, session, src, quiet=True, workers=2)
        assert [n for n, _ in etags] == [1, 2, 3]
        assert b"".join(state.puts[f"/up?partNumber={n}&X-Amz-Signature=x"] for n in (1, 2, 3)) == DATA
        assert [e for _, e in etags] == [f'"{hashlib.md5(DATA[i:i + part]).hexdigest()}"'
                                         for i in range(0, len(DATA), part)]
        state.faults = ["403"]
        with pytest.raises(AdapterError, match="storage refused an upload part: 403"):
            upload_parts(http, session | {"parts": session["parts"][:1]}, src, quiet=True)
    finally:
        http.close()


def test_storage_io_is_an_explicit_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    url = "http://storage.example/bucket/key?X-Amz-Signature=x"
    stdlib, through_httpx = Http("http://registry.example", None), Http("http://registry.example", None,
                                                                         storage_io="httpx")
    try:
        assert stdlib.stdlib_storage(url) and not through_httpx.stdlib_storage(url)
        monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
        assert not stdlib.stdlib_storage(url)  # a proxied URL goes through httpx, which honours the proxy
    finally:
        stdlib.close()
        through_httpx.close()
    with pytest.raises(ValueError, match="storage_io"):
        Http("http://registry.example", None, storage_io="urllib3")  # type: ignore[arg-type]
