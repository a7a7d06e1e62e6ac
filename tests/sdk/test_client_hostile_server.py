"""The client against a registry that lies: every server value is checked before it touches the
cache or receives the token.

The hostile registry is a real HTTP server (``http.server`` on a free port, started by the test)
that answers each request with what the test scripted and records every request it gets; a second
one plays "somewhere else" (another origin, or a storage host).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import save_file
from torch import zeros
from typer.testing import CliRunner

import sdk.client.api as client_api
from sdk.cli import app
from sdk.client import Client, UnsafeResponse, parse_ref, trust
from sdk.client.http import MAX_RESPONSE_BYTES
from sdk.errors import AdapterError

TOKEN = "secret-token-123"
FILE = b'{"peft_type": "LORA"}\n'
SHA = hashlib.sha256(FILE).hexdigest()
COMMIT = "c" * 40

Body = bytes | Callable[[Any], None]  # bytes, or a function writing to the socket file


@dataclass
class Answer:
    status: int = 200
    body: Body = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class Hostile:
    """A scripted HTTP server: ``answers[(method, path)]`` (``path`` ``"*"`` matches any path)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Answer] = {}
        self.seen: list[Seen] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                hostile.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                answer = hostile.answers.get((self.command, path)) or hostile.answers.get((self.command, "*")) or \
                    Answer(404, b'{"detail": "nothing here"}', {"content-type": "application/problem+json"})
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                if isinstance(answer.body, bytes):
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                else:
                    self.end_headers()
                    try:
                        answer.body(self.wfile)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def json(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.answers[(method, path)] = Answer(status, json.dumps(body).encode(), {"content-type": "application/json"})

    def tokens(self) -> list[str]:
        """Every Authorization header this server received."""
        return [s.headers["authorization"] for s in self.seen if "authorization" in s.headers]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry() -> Iterator[Hostile]:
    srv = Hostile()
    yield srv
    srv.close()


@pytest.fixture
def elsewhere() -> Iterator[Hostile]:
    srv = Hostile()
    yield srv
    srv.close()


def client(reg: Hostile, tmp_path: Path) -> Client:
    return Client(reg.url, TOKEN, cache_dir=tmp_path / "cache", quiet=True, retries=0)


def outside(tmp_path: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``tmp_path`` but outside the cache, with file contents."""
    return {str(p.relative_to(tmp_path)): p.read_bytes() if p.is_file() else None
            for p in sorted(tmp_path.rglob("*")) if not p.is_relative_to(tmp_path / "cache")}


def version(**changes: Any) -> dict[str, Any]:
    f = {"filename": "adapter_config.json", "sha256": SHA, "size": len(FILE)} | changes.pop("file", {})
    return {"version": 1, "commit": COMMIT, "files": [f]} | changes


# The snapshot folder is cache/snapshots/<registry>/a/b/<commit>, its staging folder one level deeper:
# these values climb out of the cache to tmp_path (where the victims live) on a client that trusts them.
HOSTILE_VERSIONS = {
    "filename climbs out of the snapshot": version(file={"filename": "../" * 6 + "victim.txt"}),
    "commit climbs out of the snapshots": version(commit="../" * 5 + "victim-dir"),
    "sha256 climbs out of the cache's tmp": version(file={"sha256": "../../victim"}),
    "absolute filename": version(file={"filename": "/tmp/x"}),
    "filename with a terminal escape": version(file={"filename": "a\x1b[2Jb"}),
    "hidden filename": version(file={"filename": ".bashrc"}),
    "same filename twice": version(files=[{"filename": "a.json", "sha256": SHA, "size": len(FILE)}] * 2),
    "negative size": version(file={"size": -1}),
    "size above the client's limit": version(file={"size": trust.MAX_FILE_BYTES + 1}),
    "size that is no integer": version(file={"size": "14"}),
    "version that is no number": version(version="1/../../x"),
    "commit with a trailing newline": version(commit=COMMIT + "\n"),
    "too many files": version(files=[{"filename": f"f{i}", "sha256": SHA, "size": 1} for i in range(65)]),
}


@pytest.mark.parametrize("case", list(HOSTILE_VERSIONS))
def test_pull_refuses_server_values_that_could_leave_the_cache(case: str, registry: Hostile, tmp_path: Path) -> None:
    (tmp_path / "victim.txt").write_bytes(b"precious")
    (tmp_path / "victim.part").write_bytes(b"precious too")
    (tmp_path / "victim-dir").mkdir()
    (tmp_path / "victim-dir" / "keep").write_bytes(b"keep me")
    registry.json("GET", "/api/v1/adapters/a/b/versions/latest", HOSTILE_VERSIONS[case])
    registry.answers[("GET", "*")] = Answer(200, FILE, {"content-type": "application/octet-stream"})
    before = outside(tmp_path)
    with client(registry, tmp_path) as c, pytest.raises(UnsafeResponse, match=r"refuses|file name|at most"):
        c.pull("a/b")
    assert outside(tmp_path) == before
    assert [s.path for s in registry.seen] == ["/api/v1/adapters/a/b/versions/latest"]  # not one byte fetched
    assert not list((tmp_path / "cache" / "snapshots").rglob("*"))


def test_pull_refuses_a_version_other_than_the_one_pinned(registry: Hostile, tmp_path: Path) -> None:
    registry.json("GET", "/api/v1/adapters/a/b/versions/3", version())  # asked for 3, answers 1
    with client(registry, tmp_path) as c, pytest.raises(UnsafeResponse, match="asked for a/b@3"):
        c.pull("a/b@3")


def test_a_download_never_writes_more_than_the_size_announced(registry: Hostile, tmp_path: Path) -> None:
    registry.json("GET", "/api/v1/adapters/a/b/versions/latest", version(file={"size": 4}))
    registry.answers[("GET", "*")] = Answer(200, FILE * 1000, {"content-type": "application/octet-stream"})
    with client(registry, tmp_path) as c, pytest.raises(UnsafeResponse, match="more than the 4 bytes"):
        c.pull("a/b")
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.parent.name != "locks"]
    assert all(p.stat().st_size <= 4 for p in cached), {str(p): p.stat().st_size for p in cached}


def test_an_endless_answer_is_cut_off(registry: Hostile, tmp_path: Path) -> None:
    def endless(out: Any) -> None:
        chunk = b" " * (1 << 20)
        for _ in range(MAX_RESPONSE_BYTES // len(chunk) + 16):
            out.write(chunk)

    registry.answers[("GET", "/api/v1/adapters/a/b/versions/latest")] = Answer(200, endless)
    with client(registry, tmp_path) as c, pytest.raises(UnsafeResponse, match=f"larger than {MAX_RESPONSE_BYTES}"):
        c.pull("a/b")


def test_a_redirected_download_goes_to_storage_without_the_token(registry: Hostile, elsewhere: Hostile,
                                                                 tmp_path: Path) -> None:
    registry.json("GET", "/api/v1/adapters/a/b/versions/latest", version())
    registry.answers[("GET", "*")] = Answer(302, b"", {"location": f"{elsewhere.url}/bucket/blob?X-Amz-Signature=s"})
    elsewhere.answers[("GET", "/bucket/blob")] = Answer(200, FILE)
    with client(registry, tmp_path) as c:
        folder = c.pull("a/b")
    assert (folder / "adapter_config.json").read_bytes() == FILE
    assert [s.path for s in elsewhere.seen] == ["/bucket/blob?X-Amz-Signature=s"]
    assert elsewhere.tokens() == [] and registry.tokens() == [f"Bearer {TOKEN}"] * 2


@pytest.mark.parametrize("size", [len(FILE), 40 << 20])  # one range, and three ranges fetched in parallel
@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://127.0.0.1/x", None])
def test_a_redirect_nowhere_safe_is_refused(location: str | None, size: int, registry: Hostile,
                                            tmp_path: Path) -> None:
    registry.json("GET", "/api/v1/adapters/a/b/versions/latest", version(file={"size": size}))
    registry.answers[("GET", "*")] = Answer(302, b"", {"location": location} if location else {})
    outcome: list[BaseException | None] = []

    def pull() -> None:
        try:
            with client(registry, tmp_path) as c:
                c.pull("a/b")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the download hung after refusing a redirect"
    assert isinstance(outcome[0], UnsafeResponse), outcome
    assert not list((tmp_path / "cache" / "blobs").rglob("*.*"))


# --- upload sessions: URLs the registry hands back ------------------------------------------------------

def _session(registry: Hostile, elsewhere: Hostile, finalize: str, part_url: str, direct: bool) -> None:
    root = "/api/v1/base-models/a/base"
    registry.json("POST", "/api/v1/base-models", {"name": "a/base"})
    registry.json("GET", f"{root}/files", {"items": []})
    registry.json("POST", f"{root}/uploads", {
        "id": "u1", "part_size": 1 << 20, "direct": direct, "finalize_url": finalize.format(elsewhere=elsewhere.url),
        "parts": [{"part_number": 1, "url": part_url.format(elsewhere=elsewhere.url), "method": "PUT"}]})
    registry.answers[("PUT", f"{root}/uploads/u1/parts/1")] = Answer(200, b"", {"etag": '"e1"'})
    registry.json("POST", f"{root}/uploads/u1/finalize", {"ok": True})
    registry.json("DELETE", f"{root}/uploads/u1", {})
    elsewhere.answers[("PUT", "*")] = Answer(200, b"", {"etag": '"e1"'})
    elsewhere.json("POST", "*", {"ok": True})


REFUSED_SESSIONS = {
    "finalize on another origin": ("{elsewhere}/finalize", "/api/v1/base-models/a/base/uploads/u1/parts/1", False),
    "finalize protocol-relative": ("//evil.example/finalize", "/api/v1/base-models/a/base/uploads/u1/parts/1", False),
    "registry part on another origin": ("/api/v1/base-models/a/base/uploads/u1/finalize", "{elsewhere}/part", False),
    "storage part that is no URL": ("/api/v1/base-models/a/base/uploads/u1/finalize", "file:///etc/passwd", True),
}


@pytest.mark.parametrize("case", list(REFUSED_SESSIONS))
def test_the_token_goes_only_to_the_registrys_origin(case: str, registry: Hostile, elsewhere: Hostile, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_api, "DIRECT_UPLOAD_LIMIT", 0)  # every file goes through an upload session
    save_file({"w": zeros(4)}, str(tmp_path / "model.safetensors"))
    _session(registry, elsewhere, *REFUSED_SESSIONS[case])
    with client(registry, tmp_path) as c, pytest.raises(UnsafeResponse, match="refuses"):
        c.register_base_model({"model_type": "llama"}, "a/base", weights=tmp_path / "model.safetensors")
    assert elsewhere.seen == []
    assert not any(s.method == "PUT" for s in registry.seen)  # nothing was uploaded
    assert registry.seen[-1].method == "DELETE"  # the session was given up


def test_storage_parts_go_without_the_token(registry: Hostile, elsewhere: Hostile, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_api, "DIRECT_UPLOAD_LIMIT", 0)
    save_file({"w": zeros(4)}, str(tmp_path / "model.safetensors"))
    _session(registry, elsewhere, "/api/v1/base-models/a/base/uploads/u1/finalize", "{elsewhere}/bucket/k?sig=1", True)
    with client(registry, tmp_path) as c:
        c.register_base_model({"model_type": "llama"}, "a/base", weights=tmp_path / "model.safetensors")
    assert [(s.method, s.path) for s in elsewhere.seen] == [("PUT", "/bucket/k?sig=1")]
    assert elsewhere.tokens() == []
    assert ("POST", "/api/v1/base-models/a/base/uploads/u1/finalize") in [(s.method, s.path) for s in registry.seen]
    assert set(registry.tokens()) == {f"Bearer {TOKEN}"}


def test_url_checks() -> None:
    base = "https://registry.example"
    assert trust.registry_url(base, "/api/v1/x") == "/api/v1/x"
    assert trust.registry_url(base, "https://REGISTRY.example:443/api") == "https://REGISTRY.example:443/api"
    for bad in ("http://registry.example/api", "https://registry.example:8443/api", "https://evil.example/api",
                "https://registry.example@evil.example/api", "//evil.example/api", "/api\\x", "/api x", 7):
        with pytest.raises(UnsafeResponse):
            trust.registry_url(base, bad)
    assert trust.storage_url(base, "https://s3.example/b/k?sig") == "https://s3.example/b/k?sig"
    for bad in ("http://s3.example/b/k", "ftp://s3.example/b/k", "/b/k", "https:///b/k"):
        with pytest.raises(UnsafeResponse):  # an https registry never falls back to http
            trust.storage_url(base, bad)
    assert trust.storage_url("http://registry.example", "http://s3.example/b") == "http://s3.example/b"


# --- names, refs and what the CLI shows -------------------------------------------------------------------

@pytest.mark.parametrize("ref", ["alice/x\n", "alice/x@prod\n", "alice/x@", "alice/..", "../x", "alice/x@../../t",
                                 "alice/x@²", "alice/x@" + "a" * 65, "alice/x y", "alice/x/y"])
def test_refs_that_break_the_grammar_are_refused_before_any_request(ref: str) -> None:
    with pytest.raises(AdapterError, match=r"invalid|look like|after it"):
        parse_ref(ref)


def test_server_text_cannot_drive_the_terminal(registry: Hostile, tmp_path: Path) -> None:
    escape = "\x1b]0;owned\x07\x1b[2J\u202e"
    registry.json("GET", "/api/v1/adapters/a/b", {"detail": f"no adapter {escape}"}, status=404)
    registry.json("GET", "/api/v1/adapters", {"items": [
        {"name": f"a/{escape}", "base_model": "m/x", "method": "lora", "versions": 1, "description": escape}],
        "total": 1})
    runner = CliRunner()
    args = ["--url", registry.url, "--token", TOKEN, "--cache-dir", str(tmp_path / "cache")]
    failed = runner.invoke(app, [*args, "info", "a/b"])
    listed = runner.invoke(app, [*args, "ls"])
    assert failed.exit_code == 1 and "no adapter" in failed.stderr
    assert listed.exit_code == 0 and "a/" in listed.stdout
    for out in (failed.stdout, failed.stderr, listed.stdout, listed.stderr):
        assert not any(ch in out for ch in "\x1b\x07\u202e"), out
    assert "\\x1b]0;owned" in failed.stderr
