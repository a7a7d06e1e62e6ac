"""The registry's Hugging Face Hub-compatible API, driven by the unmodified ``huggingface_hub`` and ``peft``.

``huggingface_hub`` reads ``HF_ENDPOINT`` (and ``HF_HOME``) once, when it is imported, so the client
side runs in a child process started with that environment: this very file, run as a script, serves
calls over its stdin/stdout (one JSON line each way). ``HF_ENDPOINT`` points at :class:`CountingProxy`,
a plain forwarding proxy in front of the registry process, which records every request the client
makes: that is how "a second call by commit makes no request" is shown. Presigned S3 URLs point
straight at SeaweedFS, so on S3 the bytes bypass the proxy (the redirect path).

Every test runs against both storage backends: local blobs (streamed by the API) and S3 (302 to
presigned URLs); one registry, proxy and client process per backend for the whole module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest

if TYPE_CHECKING:
    from e2e_server import Server
    from torch import nn

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


# --- shared by both processes: the same tiny model and inputs -------------------------------------


def tiny_llama(seed: int = 0) -> nn.Module:
    """A two-layer Llama with random weights, identical for the same seed in any process."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def logits(model: nn.Module) -> Any:
    import torch

    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model(input_ids=ids).logits


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- the client process: calls made with the real huggingface_hub / peft --------------------------


def call_download(repo: str, filename: str, revision: str | None, token: str | bool, cache_dir: str,
                  local_dir: str | None = None) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo, filename, revision=revision, token=token, cache_dir=cache_dir, local_dir=local_dir)
    return {"path": path, "sha256": sha256_file(path)}


def call_snapshot(repo: str, revision: str | None, token: str | bool, cache_dir: str) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(repo, revision=revision, token=token, cache_dir=cache_dir)
    return {"path": folder, "files": {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir())}}


def call_model_info(repo: str, revision: str | None, token: str | bool) -> dict[str, Any]:
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, revision=revision, token=token, files_metadata=True)
    return {"id": info.id, "sha": info.sha, "private": info.private, "library_name": info.library_name,
            "siblings": {s.rfilename: [s.size, s.lfs.sha256 if s.lfs else None] for s in info.siblings or []}}


def call_tree(repo: str, revision: str | None, token: str | bool) -> list[list[Any]]:
    from huggingface_hub import HfApi

    return [[f.path, f.size, f.blob_id, f.lfs.sha256 if f.lfs else None]
            for f in HfApi().list_repo_tree(repo, revision=revision, token=token, recursive=True)]


def call_file_exists(repo: str, filename: str, revision: str | None, token: str | bool) -> bool:
    from huggingface_hub import HfApi

    return HfApi().file_exists(repo, filename, revision=revision, token=token)


def call_peft_logits(repo: str, revision: str, token: str | bool, cache_dir: str) -> list[Any]:
    from peft import PeftModel

    model = PeftModel.from_pretrained(tiny_llama(0), repo, revision=revision, token=token, cache_dir=cache_dir)
    return logits(model.eval()).tolist()


def call_upload_folder(repo: str, folder: str, token: str | bool) -> dict[str, Any]:
    from huggingface_hub import HfApi

    info = HfApi().upload_folder(repo_id=repo, folder_path=folder, token=token, commit_message="from upload_folder")
    return {"oid": info.oid, "commit_url": info.commit_url, "repo_id": info.repo_url.repo_id}


def call_warm_up() -> bool:
    """Import the heavy client libraries while the test process sets up the registry."""
    import huggingface_hub  # noqa: F401
    import peft  # noqa: F401

    tiny_llama(0)
    return True


CALLS = {f.__name__: f for f in (call_download, call_snapshot, call_model_info, call_tree, call_file_exists,
                                  call_peft_logits, call_upload_folder, call_warm_up)}


def serve_calls() -> None:
    """Child main loop: one JSON request per stdin line, one JSON answer per stdout line."""
    out, sys.stdout = sys.stdout, sys.stderr  # anything a library prints goes to the log, not the channel
    for line in sys.stdin:
        req = json.loads(line)
        try:
            answer: dict[str, Any] = {"ok": CALLS[req["fn"]](**req["kwargs"])}
        except Exception as exc:  # reported to the test by class, MRO, message and HTTP status
            response = getattr(exc, "response", None)
            answer = {"error": type(exc).__name__, "classes": [c.__name__ for c in type(exc).__mro__],
                      "message": str(exc)[:3000], "status": getattr(response, "status_code", None)}
        out.write(json.dumps(answer) + "\n")
        out.flush()


@dataclass
class ClientError:
    """An exception raised in the client process."""

    name: str
    classes: list[str]
    message: str
    status: int | None

    def is_a(self, cls_name: str) -> bool:
        return cls_name in self.classes


class HubClient:
    """The client process: ``huggingface_hub`` and ``peft`` imported with ``HF_ENDPOINT`` already set."""

    def __init__(self, endpoint: str, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
        env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(home / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log = home / "client.log"
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-calls"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(self.log, "wb"), env=env, text=True)
        self._lock = threading.Lock()
        self._unread = 0  # answers of requests sent with :meth:`send` and not read yet

    def send(self, fn: str, **kwargs: Any) -> None:
        """Start a call without waiting for it (its answer is read and dropped by the next call)."""
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps({"fn": fn, "kwargs": kwargs}) + "\n")
            self.proc.stdin.flush()
            self._unread += 1

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the client process died:\n{self.log.read_text()[-3000:]}")
        return json.loads(line)

    def __call__(self, fn: str, **kwargs: Any) -> Any:
        """The call's result, or a :class:`ClientError` for an exception the client raised."""
        self.send(fn, **kwargs)
        with self._lock:
            while self._unread > 1:
                earlier = self._read()
                assert "error" not in earlier, earlier
                self._unread -= 1
            answer = self._read()
            self._unread -= 1
        if "error" in answer:
            return ClientError(answer["error"], answer["classes"], answer["message"], answer["status"])
        return answer["ok"]

    def ok(self, fn: str, **kwargs: Any) -> Any:
        """Like calling, but a client exception fails the test with its message."""
        out = self(fn, **kwargs)
        assert not isinstance(out, ClientError), f"{out.name}: {out.message}"
        return out

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- a proxy that records what the client asks the registry -----------------------------------------

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass
class Seen:
    method: str
    path: str
    status: int


class CountingProxy:
    """Forwards every request to ``upstream`` unchanged (raw path, headers, body) and records it.

    ``upstream`` is switched from one registry to the other between the module's two backends.
    """

    def __init__(self, upstream: str = "") -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.http = httpx.Client(timeout=60, follow_redirects=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                # Host goes through unchanged, as a reverse proxy keeps it: the registry's URLs name the proxy
                headers = {k: v for k, v in self.headers.items() if k.lower() == "host" or k.lower() not in _HOP}
                r = proxy.http.request(self.command, proxy.upstream + self.path, headers=headers, content=body)
                proxy.seen.append(Seen(self.command, self.path, r.status_code))
                self.send_response(r.status_code)
                for k, v in r.headers.multi_items():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                size = r.headers.get("content-length", "0") if self.command == "HEAD" else str(len(r.content))
                self.send_header("Content-Length", size)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def mark(self) -> int:
        return len(self.seen)

    def since(self, mark: int) -> list[Seen]:
        return self.seen[mark:]

    def close(self) -> None:
        self.server.shutdown()
        self.http.close()


# --- fixtures -----------------------------------------------------------------------------------------


@dataclass
class Hub:
    """One backend's registry with its published adapters, the proxy in front, and the client process."""

    srv: Server
    proxy: CountingProxy
    client: HubClient
    tmp: Path
    ns: str
    repo: str  # public: v1 (alias prod), v2 (latest)
    secret: str  # private, one version
    writer: str  # write token of ns
    reader: str  # read token of ns
    outsider: str  # read token of another namespace
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)  # version -> registry JSON
    secret_version: dict[str, Any] = field(default_factory=dict)

    @property
    def s3(self) -> bool:
        return bool(self.srv.bucket)

    def cache(self) -> str:
        """A fresh cache directory."""
        path = self.tmp / f"cache-{uuid.uuid4().hex[:8]}"
        return str(path)

    def files(self, version: int) -> dict[str, str]:
        return {f["filename"]: f["sha256"] for f in self.versions[version]["files"]}


def trained_adapter(seed: int) -> Any:
    """A LoRA on the tiny Llama with random B factors, so it changes the outputs."""
    import torch

    import sdk

    base = tiny_llama(0)
    torch.manual_seed(seed)
    cfg = sdk.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    return sdk.get_peft_model(base, cfg).eval()


@pytest.fixture(scope="module")
def hub_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CountingProxy, HubClient]]:
    """The proxy and the client process, shared by both backends (one import of peft, not two)."""
    proxy = CountingProxy()
    client = HubClient(proxy.url, tmp_path_factory.mktemp("hub-client"))
    client.send("call_warm_up")
    yield proxy, client
    client.close()
    proxy.close()


@pytest.fixture(scope="module", params=["local_server", "server"], ids=["local", "s3"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        hub_client: tuple[CountingProxy, HubClient]) -> Iterator[Hub]:
    from sdk.client import Client

    proxy, client = hub_client
    srv: Server = request.getfixturevalue(request.param)
    tmp = tmp_path_factory.mktemp(f"hub-{request.param}")
    ns = f"hub-{uuid.uuid4().hex[:8]}"
    with Client(srv.url, srv.admin, cache_dir=tmp / "sdk-cache", quiet=True) as admin:
        admin.register_base_model(tiny_llama(0), f"{ns}/tiny-llama")
    writer = srv.token(ns, "write")
    repo, secret = f"{ns}/chat", f"{ns}/secret"
    with Client(srv.url, writer, cache_dir=tmp / "sdk-cache", quiet=True) as c:
        c.push(trained_adapter(1), repo, base_model=f"{ns}/tiny-llama", alias="prod")
        c.push(trained_adapter(2), repo, base_model=f"{ns}/tiny-llama")
        c.push(trained_adapter(3), secret, base_model=f"{ns}/tiny-llama", private=True)
        versions = {v["version"]: v for v in c.versions(repo)}
        secret_version = c.versions(secret)[0]
    proxy.upstream = srv.url
    yield Hub(srv, proxy, client, tmp, ns, repo, secret, writer, srv.token(ns, "read"), srv.token(f"x{ns}", "read"),
              versions, secret_version)


# --- reading files ------------------------------------------------------------------------------------


def test_hf_hub_download_by_main_version_alias_and_commit(hub: Hub) -> None:
    v1, v2 = hub.files(1), hub.files(2)
    assert v1[WEIGHTS] != v2[WEIGHTS]
    commit1 = hub.versions[1]["commit"]
    cache = hub.cache()
    for revision, want in [(None, v2), ("main", v2), ("latest", v2), ("2", v2), ("prod", v1), ("1", v1),
                           (commit1, v1), ("refs/heads/main", v2)]:
        for filename in (CONFIG, WEIGHTS):
            got = hub.client.ok("call_download", repo=hub.repo, filename=filename, revision=revision, token=False,
                                cache_dir=cache)
            assert got["sha256"] == want[filename], (revision, filename)
            assert got["path"].startswith(cache)
    # to a local folder: the client re-hashes files whose ETag is a sha256, so this checks our ETags too
    local = hub.client.ok("call_download", repo=hub.repo, filename=WEIGHTS, revision="prod", token=False,
                          cache_dir=hub.cache(), local_dir=str(hub.tmp / "local-dir"))
    assert Path(local["path"]) == hub.tmp / "local-dir" / WEIGHTS and local["sha256"] == v1[WEIGHTS]

    # the bytes: streamed by the API (local), or fetched from a presigned URL that bypasses the proxy (S3)
    mark = hub.proxy.mark()
    hub.client.ok("call_download", repo=hub.repo, filename=WEIGHTS, revision="2", token=False, cache_dir=hub.cache())
    seen = [(s.method, s.status) for s in hub.proxy.since(mark)]
    assert seen == ([("HEAD", 302)] if hub.s3 else [("HEAD", 200), ("GET", 200)]), seen


def test_resolve_headers_match_the_protocol(hub: Hub) -> None:
    f = next(f for f in hub.versions[1]["files"] if f["filename"] == WEIGHTS)
    url = f"{hub.srv.url}/{hub.repo}/resolve/prod/{WEIGHTS}"
    head = httpx.head(url, headers={"Accept-Encoding": "identity"})
    assert head.headers["X-Repo-Commit"] == hub.versions[1]["commit"]
    assert head.headers["ETag"] == head.headers["X-Linked-Etag"] == f'"{f["sha256"]}"'
    assert head.headers["X-Linked-Size"] == str(f["size"])
    if hub.s3:  # a redirect to ANOTHER origin (storage), carrying the metadata itself
        assert head.status_code == 302
        location = urlsplit(head.headers["Location"])
        assert (location.hostname, location.port) != (urlsplit(url).hostname, urlsplit(url).port)
        body = httpx.get(head.headers["Location"])
    else:
        assert head.status_code == 200 and head.headers["Content-Length"] == str(f["size"])
        body = httpx.get(url)
    assert body.status_code == 200 and hashlib.sha256(body.content).hexdigest() == f["sha256"]
    # resuming: a Range request on the API is answered with the rest of the file
    rest = httpx.get(url, headers={"Range": "bytes=10-"}, follow_redirects=True)
    assert rest.status_code == 206 and rest.content == body.content[10:]


def test_snapshot_download_by_alias_then_by_commit_makes_no_request(hub: Hub) -> None:
    cache = hub.cache()
    commit1 = hub.versions[1]["commit"]
    first = hub.client.ok("call_snapshot", repo=hub.repo, revision="prod", token=False, cache_dir=cache)
    assert first["files"] == hub.files(1)
    assert Path(first["path"]).name == commit1

    mark = hub.proxy.mark()  # by commit, everything is cached: not a single request
    again = hub.client.ok("call_snapshot", repo=hub.repo, revision=commit1, token=False, cache_dir=cache)
    assert again == first
    assert hub.proxy.since(mark) == []
    got = hub.client.ok("call_download", repo=hub.repo, filename=WEIGHTS, revision=commit1, token=False,
                        cache_dir=cache)
    assert got["sha256"] == hub.files(1)[WEIGHTS] and hub.proxy.since(mark) == []

    # by alias: one request (is 'prod' still that commit?), no file traffic
    hub.client.ok("call_snapshot", repo=hub.repo, revision="prod", token=False, cache_dir=cache)
    assert [(s.method, s.path.split("?")[0]) for s in hub.proxy.since(mark)] == [
        ("GET", f"/api/models/{hub.repo}/revision/prod")]

    # a fresh cache by commit: tree listing + files, then again nothing
    fresh = hub.cache()
    mark = hub.proxy.mark()
    assert hub.client.ok("call_snapshot", repo=hub.repo, revision=commit1, token=False, cache_dir=fresh)[
        "files"] == hub.files(1)
    paths = [s.path.split("?")[0] for s in hub.proxy.since(mark)]
    assert f"/api/models/{hub.repo}/tree/{commit1}" in paths
    mark = hub.proxy.mark()
    hub.client.ok("call_snapshot", repo=hub.repo, revision=commit1, token=False, cache_dir=fresh)
    assert hub.proxy.since(mark) == []


def test_peft_from_pretrained_gives_the_same_outputs_as_sdk_load(hub: Hub) -> None:
    import torch

    from sdk.client import Client

    got = torch.tensor(hub.client.ok("call_peft_logits", repo=hub.repo, revision="prod", token=False,
                                     cache_dir=hub.cache()))
    with Client(hub.srv.url, cache_dir=hub.tmp / f"sdk-{uuid.uuid4().hex[:6]}", quiet=True) as anon:
        want = logits(anon.load(tiny_llama(0), f"{hub.repo}@prod"))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got, logits(tiny_llama(0)), atol=1e-4), "the adapter must change the outputs"
    assert not torch.allclose(got, logits(trained_adapter(2)), atol=1e-4), "'prod' is version 1, not the latest"


# --- metadata -----------------------------------------------------------------------------------------


def test_model_info_and_tree_by_revision(hub: Hub) -> None:
    v1, v2 = hub.versions[1], hub.versions[2]
    latest = hub.client.ok("call_model_info", repo=hub.repo, revision=None, token=False)
    assert latest["id"] == hub.repo and latest["sha"] == v2["commit"] and latest["private"] is False
    assert latest["library_name"] == "peft"
    info = hub.client.ok("call_model_info", repo=hub.repo, revision="prod", token=False)
    assert info["sha"] == v1["commit"]
    assert info["siblings"] == {f["filename"]: [f["size"], f["sha256"]] for f in v1["files"]}
    by_commit = hub.client.ok("call_model_info", repo=hub.repo, revision=v1["commit"], token=False)
    assert by_commit == info

    tree = hub.client.ok("call_tree", repo=hub.repo, revision="prod", token=False)
    assert {p: (size, sha) for p, size, _, sha in tree} == {f["filename"]: (f["size"], f["sha256"])
                                                            for f in v1["files"]}
    assert all(len(blob) == 40 for _, _, blob, _ in tree)
    assert sorted(hub.client.ok("call_file_exists", repo=hub.repo, filename=name, revision="prod", token=False)
                  for name in (CONFIG, WEIGHTS, "adapter_model.bin")) == [False, True, True]


# --- privacy and errors -------------------------------------------------------------------------------


def test_private_adapter_needs_the_token(hub: Hub) -> None:
    want = {f["filename"]: f["sha256"] for f in hub.secret_version["files"]}
    anon = hub.client("call_download", repo=hub.secret, filename=CONFIG, revision=None, token=False,
                      cache_dir=hub.cache())
    assert isinstance(anon, ClientError) and anon.is_a("RepositoryNotFoundError") and anon.status == 401
    other = hub.client("call_download", repo=hub.secret, filename=CONFIG, revision=None, token=hub.outsider,
                       cache_dir=hub.cache())
    assert isinstance(other, ClientError) and other.is_a("RepositoryNotFoundError") and other.status == 404
    bogus = hub.client("call_model_info", repo=hub.secret, revision=None, token="arg_not-a-real-token")
    assert isinstance(bogus, ClientError) and bogus.status == 401 and not bogus.is_a("RepositoryNotFoundError")
    assert "Invalid credentials" in bogus.message
    anon_snap = hub.client("call_snapshot", repo=hub.secret, revision=None, token=False, cache_dir=hub.cache())
    assert isinstance(anon_snap, ClientError) and anon_snap.is_a("RepositoryNotFoundError")

    cache = hub.cache()
    snap = hub.client.ok("call_snapshot", repo=hub.secret, revision="main", token=hub.reader, cache_dir=cache)
    assert snap["files"] == want
    info = hub.client.ok("call_model_info", repo=hub.secret, revision=None, token=hub.reader)
    assert info["private"] is True and info["sha"] == hub.secret_version["commit"]


def test_missing_repo_revision_and_file_raise_the_clients_exceptions(hub: Hub) -> None:
    cases = [
        (dict(repo=f"{hub.ns}/nope", filename=CONFIG, revision=None), "RepositoryNotFoundError"),
        (dict(repo="no-such-ns/nope", filename=CONFIG, revision="main"), "RepositoryNotFoundError"),
        (dict(repo=hub.repo, filename=CONFIG, revision="staging"), "RevisionNotFoundError"),
        (dict(repo=hub.repo, filename=CONFIG, revision="99"), "RevisionNotFoundError"),
        (dict(repo=hub.repo, filename=CONFIG, revision="f" * 40), "RevisionNotFoundError"),
        (dict(repo=hub.repo, filename=CONFIG, revision="refs/pr/1"), "RevisionNotFoundError"),
        (dict(repo=hub.repo, filename="tokenizer.json", revision="prod"), "EntryNotFoundError"),
        (dict(repo=hub.repo, filename="sub/adapter_config.json", revision=None), "EntryNotFoundError"),
    ]
    for kwargs, error in cases:
        for token in (False, hub.reader):
            out = hub.client("call_download", token=token, cache_dir=hub.cache(), **kwargs)
            assert isinstance(out, ClientError) and out.is_a(error), (kwargs, token, out)
    for repo, revision, error in [(f"{hub.ns}/nope", None, "RepositoryNotFoundError"),
                                  (hub.repo, "staging", "RevisionNotFoundError")]:
        for fn in ("call_model_info", "call_tree"):
            out = hub.client(fn, repo=repo, revision=revision, token=hub.reader)
            assert isinstance(out, ClientError) and out.is_a(error), (fn, repo, revision, out)
        snap = hub.client("call_snapshot", repo=repo, revision=revision, token=hub.reader, cache_dir=hub.cache())
        assert isinstance(snap, ClientError) and snap.is_a(error), (repo, revision, snap)


if __name__ == "__main__" and sys.argv[1:] == ["--serve-calls"]:
    serve_calls()


# --- writing: HfApi().upload_folder publishes a version ---------------------------------------------------


def test_upload_folder_publishes_a_version(hub: Hub) -> None:
    from sdk.client import Client

    folder = hub.tmp / f"upload-{uuid.uuid4().hex[:6]}"
    trained_adapter(4).save_pretrained(folder)
    config = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps(config | {"base_model_name_or_path": f"{hub.ns}/tiny-llama"}))
    repo = f"{hub.ns}/uploaded"

    anon = hub.client("call_upload_folder", repo=repo, folder=str(folder), token=False)
    assert isinstance(anon, ClientError) and anon.status == 401
    outsider = hub.client("call_upload_folder", repo=repo, folder=str(folder), token=hub.outsider)
    assert isinstance(outsider, ClientError) and outsider.status == 403

    first = hub.client.ok("call_upload_folder", repo=repo, folder=str(folder), token=hub.writer)
    assert len(first["oid"]) == 40 and first["repo_id"] == repo
    assert first["commit_url"] == f"{hub.proxy.url}/{repo}/commit/{first['oid']}"
    with Client(hub.srv.url, cache_dir=hub.tmp / f"sdk-{uuid.uuid4().hex[:6]}", quiet=True) as anon_sdk:
        pulled = anon_sdk.pull(f"{repo}@{first['oid']}")
        assert {p.name: sha256_file(p) for p in pulled.iterdir()} == {
            p.name: sha256_file(p) for p in folder.iterdir()}
        assert [v["version"] for v in anon_sdk.versions(repo)] == [1]
    got = hub.client.ok("call_download", repo=repo, filename=WEIGHTS, revision="main", token=False,
                        cache_dir=hub.cache())
    assert got["sha256"] == sha256_file(folder / WEIGHTS)

    trained_adapter(5).save_pretrained(folder)  # a second commit: version 2, now the latest
    (folder / CONFIG).write_text(json.dumps(config | {"base_model_name_or_path": f"{hub.ns}/tiny-llama"}))
    second = hub.client.ok("call_upload_folder", repo=repo, folder=str(folder), token=hub.writer)
    assert second["oid"] != first["oid"]
    assert hub.client.ok("call_model_info", repo=repo, revision=None, token=False)["sha"] == second["oid"]

    (folder / "notes.txt").write_text("not part of an adapter")  # refused with a message naming the file
    bad = hub.client("call_upload_folder", repo=repo, folder=str(folder), token=hub.writer)
    assert isinstance(bad, ClientError) and bad.status == 422 and "notes.txt" in bad.message
