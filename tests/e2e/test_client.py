"""The SDK client against the registry running as a real process (uvicorn, embedded PostgreSQL,
SeaweedFS S3): push, pull, load, aliases, privacy, the local cache, and resilient transfers.

Requests are observed (and, where a test needs it, broken) by :class:`Tap`, a real
``httpx.HTTPTransport`` wrapped so that it records every request the client sends, to the API and
to presigned storage URLs alike.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import sdk
import sdk.client.api as client_api
from sdk.client import (
    Cache,
    Client,
    IntegrityError,
    RegistryAuthError,
    RegistryNotFound,
    RegistryUnavailable,
    save_login,
)
from sdk.client import transfers as client_transfers
from sdk.errors import ValidationFailed

if TYPE_CHECKING:
    from e2e_server import Server

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
HIDDEN, INTERMEDIATE = 1024, 2048
MiB = 1 << 20


# --- helpers --------------------------------------------------------------------------------------


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tiny_llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_llama_config() -> dict[str, Any]:
    return tiny_llama().config.to_dict() | {"architectures": ["LlamaForCausalLM"]}


def tiny_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


MODELS: dict[str, tuple[Callable[[int], nn.Module], list[str]]] = {
    "llama": (tiny_llama, ["q_proj", "v_proj", "down_proj"]),
    "gpt2": (tiny_gpt2, ["c_attn", "c_fc"]),
}


def token_ids() -> torch.Tensor:
    return torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(7))


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=token_ids()).logits


def trained_adapter(arch: str = "llama", seed: int = 1, r: int = 4) -> sdk.AdapterModel:
    """A tiny adapter whose B factors are random (``init_lora_weights=False``), so it changes outputs."""
    make, targets = MODELS[arch]
    base = make(0)
    torch.manual_seed(seed)
    cfg = sdk.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False)
    return sdk.get_peft_model(base, cfg).eval()


def saved_adapter(folder: Path, arch: str = "llama", seed: int = 1) -> Path:
    trained_adapter(arch, seed).save_pretrained(folder)
    return folder


def wide_base_config() -> dict[str, Any]:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=2,
                       num_attention_heads=8, num_key_value_heads=8).to_dict() | {"architectures": ["LlamaForCausalLM"]}


_WIDE_SHAPES = {  # module -> (submodule, in_features, out_features)
    "q_proj": ("self_attn", HIDDEN, HIDDEN), "k_proj": ("self_attn", HIDDEN, HIDDEN),
    "v_proj": ("self_attn", HIDDEN, HIDDEN), "o_proj": ("self_attn", HIDDEN, HIDDEN),
    "gate_proj": ("mlp", HIDDEN, INTERMEDIATE), "up_proj": ("mlp", HIDDEN, INTERMEDIATE),
    "down_proj": ("mlp", INTERMEDIATE, HIDDEN),
}


def wide_adapter(folder: Path, r: int, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 seed: int = 0) -> Path:
    """A LoRA for the wide (hidden 1024) base, written tensor by tensor so that it can be large:
    ``r * 64 KiB`` for the four attention projections of the two layers, ``r * 136 KiB`` for all seven."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(2):
        for m in targets:
            sub, d_in, d_out = _WIDE_SHAPES[m]
            key = f"base_model.model.model.layers.{layer}.{sub}.{m}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, d_in, generator=g)
            tensors[f"{key}.lora_B.weight"] = torch.randn(d_out, r, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(sdk.LoraConfig(r=r, lora_alpha=r, target_modules=list(targets)).to_json())
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    return folder


def register_wide_base(srv: Server, tmp: Path) -> str:
    """Register the wide base model by its config.json (idempotent: the same name and signature)."""
    name = "e2e-meta/wide-llama"
    with Client(srv.url, srv.admin, cache_dir=tmp / "admin-cache", quiet=True) as admin:
        admin.register_base_model(wide_base_config(), name, revision="main")
    return name


def register_tiny(srv: Server, tmp: Path, arch: str) -> str:
    name = f"e2e-meta/tiny-{arch}"
    with Client(srv.url, srv.admin, cache_dir=tmp / "admin-cache", quiet=True) as admin:
        admin.register_base_model(MODELS[arch][0](0), name)
    return name


def files_of(folder: Path) -> dict[str, str]:
    return {p.name: sha256_of(p) for p in sorted(folder.iterdir())}


def server_files(client: Client, name: str, version: int) -> dict[str, dict[str, Any]]:
    v = next(v for v in client.versions(name) if v["version"] == version)
    return {f["filename"]: f for f in v["files"]}


def cache_leftovers(cache_dir: Path) -> list[str]:
    """Anything in the cache that is neither a verified blob, a lock, a ref, nor a finished snapshot."""
    root = Path(cache_dir)
    out = [str(p) for p in (root / "tmp").rglob("*")]
    out += [str(p) for p in (root / "snapshots").rglob(".*")]  # staging folders of unfinished snapshots
    out += [str(p) for p in (root / "refs").rglob("*.tmp")]
    return out


# --- observing the client's HTTP ------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    url: httpx.URL
    range: str | None
    authorization: str | None
    status: int | None = None  # None: no answer (a connection error)

    @property
    def host(self) -> str:
        return f"{self.url.host}:{self.url.port}"

    @property
    def is_data(self) -> bool:
        """A GET that was answered with file bytes (not a redirect, not an error)."""
        return self.method == "GET" and self.status in (200, 206) and self.range is not None


class CutStream(httpx.SyncByteStream):
    """A response body that breaks with a connection error after ``limit`` bytes."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            room = self.limit - sent
            if len(chunk) >= room:
                if room:
                    yield chunk[:room]
                raise httpx.ReadError("connection reset by peer (test)")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


Fault = Callable[["Tap", httpx.Request, int], "httpx.Response | None"]


class Tap(httpx.BaseTransport):
    """A real transport that records every request; ``fault(tap, request, n)`` may answer instead
    (a 503, a cut body) or raise; ``offline`` refuses every connection."""

    def __init__(self, fault: Fault | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[Seen] = []
        self.fault = fault
        self.offline = False
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        seen = Seen(request.method, request.url, request.headers.get("range"), request.headers.get("authorization"))
        with self._lock:
            self.seen.append(seen)
            n = len(self.seen)
        if self.offline:
            raise httpx.ConnectError("connection refused (test: offline)", request=request)
        answer = self.fault(self, request, n) if self.fault is not None else None
        if answer is None:
            answer = self.inner.handle_request(request)
        seen.status = answer.status_code
        return answer

    def forward_cut(self, request: httpx.Request, limit: int) -> httpx.Response:
        """Forward, but break the body of a 206/200 answer after ``limit`` bytes."""
        r = self.inner.handle_request(request)
        if r.status_code not in (200, 206):
            return r
        assert isinstance(r.stream, httpx.SyncByteStream)
        return httpx.Response(r.status_code, headers=r.headers, stream=CutStream(r.stream, limit),
                              extensions=r.extensions, request=request)

    def reset(self) -> list[Seen]:
        with self._lock:
            seen, self.seen = self.seen, []
        return seen

    def close(self) -> None:
        self.inner.close()


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No registry settings leak in from the environment or a real ``adapters login``."""
    for var in ("ADAPTER_REGISTRY_URL", "ADAPTER_REGISTRY_TOKEN", "ADAPTER_REGISTRY_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ADAPTER_REGISTRY_CONFIG", str(tmp_path / "no-login" / "config.json"))
    monkeypatch.setenv("ADAPTER_REGISTRY_QUIET", "1")
    monkeypatch.setattr(sdk, "_default_client", None)
    yield
    if sdk._default_client is not None:
        sdk._default_client.close()


# --- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "arch"), [("server", "llama"), ("server", "gpt2"), ("local_server", "llama")])
def test_round_trip_push_pull_load_gives_the_same_outputs(which: str, arch: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    srv: Server = request.getfixturevalue(which)
    ns = uniq("rt")
    name = f"{ns}/{arch}-chat"
    base_name = register_tiny(srv, tmp_path, arch)
    model = trained_adapter(arch)
    want = logits(model)
    base_out = logits(MODELS[arch][0](0))
    assert not torch.allclose(want, base_out, atol=1e-4), "the adapter must change the outputs"

    writer = srv.token(ns, "write")
    with Client(srv.url, writer, cache_dir=tmp_path / "push-cache", quiet=True) as c:
        pushed = c.push(model, name, base_model=base_name, alias="prod", description="round trip",
                        tags=["e2e", arch])
        assert pushed.name == name and pushed.version == 1 and len(pushed.commit) == 40
        assert pushed.url.startswith(srv.url) and pushed.url.endswith(f"/adapters/{name}")
        info = c.info(name)
        assert info["base_model"] == base_name and info["description"] == "round trip"
        assert sorted(info["tags"]) == sorted(["e2e", arch]) and info["aliases"] == {"latest": 1, "prod": 1}
        on_server = server_files(c, name, 1)

    tap = Tap()
    with Client(srv.url, cache_dir=tmp_path / "cache", transport=tap, storage_io="httpx",
                quiet=True) as anon:  # public: no token
        folder = anon.pull(f"{name}@prod")
        assert sorted(p.name for p in folder.iterdir()) == sorted(on_server)
        assert {CONFIG, WEIGHTS} <= set(on_server)
        assert files_of(folder) == {f: meta["sha256"] for f, meta in on_server.items()}
        assert folder.name == pushed.commit
        loaded = anon.load(MODELS[arch][0](0), name, adapter_name="chat", version=1)
    assert isinstance(loaded, sdk.AdapterModel) and loaded.active_adapters == ["chat"]
    got = logits(loaded)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, base_out, atol=1e-4)

    api_host = f"{urlsplit(srv.url).hostname}:{urlsplit(srv.url).port}"
    data = [s for s in tap.seen if s.is_data]
    assert data, tap.seen
    if srv.bucket:  # S3: the bytes come straight from storage (presigned), and the token never goes there
        assert all(s.host != api_host and s.authorization is None for s in data)
    else:  # local blobs: the API streams them
        assert all(s.host == api_host for s in data)


def test_module_level_functions_use_the_environment_and_the_login_file(server: Server, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ns = uniq("env")
    name = f"{ns}/support"
    writer = server.token(ns, "write")
    monkeypatch.setenv("ADAPTER_REGISTRY_URL", server.url)
    monkeypatch.setenv("ADAPTER_REGISTRY_TOKEN", writer)
    monkeypatch.setenv("ADAPTER_REGISTRY_CACHE", str(tmp_path / "env-cache"))

    base = sdk.register_base_model(tiny_llama_config(), f"{ns}/tiny-llama", revision="v1")
    assert base["name"] == f"{ns}/tiny-llama" and base["revision"] == "v1"
    # the same signature again, now from the live model: idempotent
    assert sdk.register_base_model(tiny_llama(), f"{ns}/tiny-llama")["fingerprint"] == base["fingerprint"]

    model = trained_adapter("llama", seed=3)
    want = logits(model)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    v1 = sdk.push(folder, name, base_model=f"{ns}/tiny-llama", alias="prod", description="env push",
                  tags=["support"])
    assert v1.version == 1
    assert sdk.default_client().config.cache_dir == tmp_path / "env-cache"

    pulled = sdk.pull(f"{name}@prod")
    assert pulled.is_relative_to(tmp_path / "env-cache")
    assert files_of(pulled) == files_of(folder)
    assert sdk.pull(name, version=1) == pulled == sdk.pull(f"{name}@{v1.commit}")

    loaded = sdk.load(tiny_llama(), f"{name}@prod", adapter_name="support")
    assert loaded.active_adapters == ["support"]
    torch.testing.assert_close(logits(loaded), want, atol=1e-6, rtol=0)
    # a second adapter into the same AdapterModel
    other = trained_adapter("llama", seed=4)
    sdk.push(other, f"{ns}/other", base_model=f"{ns}/tiny-llama")
    assert sdk.load(loaded, f"{ns}/other", adapter_name="other") is loaded
    assert loaded.active_adapters == ["other"] and sorted(loaded.adapter_names) == ["other", "support"]
    torch.testing.assert_close(logits(loaded), logits(other), atol=1e-6, rtol=0)
    # push one named adapter out of a model that holds several
    again = sdk.push(loaded, f"{ns}/again", base_model=f"{ns}/tiny-llama", adapter_name="support")
    assert load_file(str(sdk.pull(f"{ns}/again@{again.commit}") / WEIGHTS)).keys() == load_file(
        str(folder / WEIGHTS)).keys()
    torch.testing.assert_close(logits(sdk.load(tiny_llama(), f"{ns}/again@1")), want, atol=1e-6, rtol=0)

    # `adapters login` writes a config file; with no environment, the module functions use it
    sdk._default_client.close()
    sdk._default_client = None
    for var in ("ADAPTER_REGISTRY_URL", "ADAPTER_REGISTRY_TOKEN"):
        monkeypatch.delenv(var)
    login = tmp_path / "login" / "config.json"
    monkeypatch.setenv("ADAPTER_REGISTRY_CONFIG", str(login))
    save_login(server.url + "/", writer)
    assert login.stat().st_mode & 0o777 == 0o600
    client = sdk.default_client()
    assert client.config.url == server.url and client.config.token == writer
    v2 = sdk.push(trained_adapter("llama", seed=5), name)  # base model taken from the existing adapter
    assert v2.version == 2
    assert sdk.pull(name).name == v2.commit


# --- validation before upload -----------------------------------------------------------------------


def raw_push(srv: Server, token: str, name: str, folder: Path, base_model: str, **form: str) -> httpx.Response:
    """The same push, posted by hand: what the server itself answers."""
    files = {CONFIG: (CONFIG, (folder / CONFIG).read_bytes(), "application/json"),
             WEIGHTS: (WEIGHTS, (folder / WEIGHTS).read_bytes(), "application/octet-stream")}
    return httpx.post(f"{srv.url}/api/v1/adapters/{name}/versions", files=files,
                      data={"base_model": base_model, **form}, headers={"Authorization": f"Bearer {token}"},
                      timeout=60)


def test_push_checks_locally_with_the_servers_messages(server: Server, tmp_path: Path) -> None:
    ns = uniq("val")
    writer = server.token(ns, "write")
    tiny = register_tiny(server, tmp_path, "llama")
    wide = register_wide_base(server, tmp_path)
    tiny_folder = saved_adapter(tmp_path / "tiny")  # hidden 32: does not fit the wide base
    untrained = tmp_path / "untrained"
    sdk.get_peft_model(tiny_llama(), sdk.LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(untrained)

    cases = [(f"{ns}/misfit", tiny_folder, wide, "in_features is 32, expected 1024"),
             (f"{ns}/fresh", untrained, tiny, "all zeros")]
    tap = Tap()
    with Client(server.url, writer, cache_dir=tmp_path / "cache", transport=tap, storage_io="httpx", quiet=True) as c:
        for name, folder, base, words in cases:
            tap.reset()
            with pytest.raises(ValidationFailed) as caught:
                c.push(folder, name, base_model=base)
            assert any(words in p.message for p in caught.value.problems), caught.value.problems
            assert all(s.method == "GET" for s in tap.seen), "nothing may be uploaded"
            with pytest.raises(RegistryNotFound):
                c.versions(name)  # no adapter, no version was created

            answer = raw_push(server, writer, name, folder, base)
            assert answer.status_code == 422, answer.text
            body = answer.json()
            assert [p.to_dict() for p in caught.value.problems] == body["problems"]
            assert str(caught.value) == body["detail"]
            with pytest.raises(RegistryNotFound):
                c.versions(name)
        # the local check lets through what the server accepts
        assert c.push(untrained, f"{ns}/fresh", base_model=tiny, untrained=True).version == 1


# --- aliases, privacy -----------------------------------------------------------------------------


def test_alias_moves_are_seen_by_pull(server: Server, tmp_path: Path) -> None:
    """Also issue 19: resolving an alias names its commit (client, API, Hub ``X-Repo-Commit``); ``expect_commit``
    refuses an alias that moved since, and a pull by the alias then gives the new bytes, never the old."""
    ns = uniq("alias")
    name = f"{ns}/ranker"
    base = register_tiny(server, tmp_path, "llama")
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "cache", quiet=True) as c:
        v1 = c.push(saved_adapter(tmp_path / "a1", seed=11), name, base_model=base, alias="prod")
        v2 = c.push(saved_adapter(tmp_path / "a2", seed=12), name, base_model=base)
        assert files_of(c.pull(f"{name}@prod")) == files_of(tmp_path / "a1")
        assert c.pull(name).name == v2.commit  # latest
        assert c.pull(name, version="latest").name == v2.commit
        pinned = c.resolve(f"{name}@prod")
        assert (pinned.version, pinned.commit, pinned.ref) == (1, v1.commit, "prod")
        hub = f"{server.url}/{name}/resolve/prod/adapter_config.json"
        assert httpx.head(hub).headers["X-Repo-Commit"] == v1.commit
        assert c.pull(f"{name}@prod", expect_commit=pinned.commit).name == v1.commit

        c.set_alias(name, "prod", 2)
        with pytest.raises(client_api.AliasMoved) as moved:
            c.pull(f"{name}@prod", expect_commit=pinned.commit)
        assert moved.value.found == v2.commit and "moved since it was pinned" in str(moved.value)
        with pytest.raises(client_api.AliasMoved):
            c.load(tiny_llama(), f"{name}@prod", expect_commit=pinned.commit)
        assert httpx.head(hub).headers["X-Repo-Commit"] == v2.commit
        prod = c.pull(f"{name}@prod")  # the cache is keyed by commit: the moved alias gives the new bytes
        assert prod.name == v2.commit and files_of(prod) == files_of(tmp_path / "a2")
        assert c.pull(f"{name}@{v1.commit}", expect_commit=v1.commit).name == v1.commit  # the pin still loads
        with pytest.raises(sdk.AdapterError, match="40-hex commit"):
            c.pull(f"{name}@prod", expect_commit="nope")

        c.set_alias(name, "prod", v1.commit)  # by commit
        assert c.pull(name, version="prod").name == v1.commit

        v3 = c.push(saved_adapter(tmp_path / "a3", seed=13), name, alias="prod")  # a push moves it too
        assert c.pull(f"{name}@prod").name == v3.commit
        assert c.info(name)["aliases"] == {"latest": 3, "prod": 3}

        c.delete_alias(name, "prod")
        with pytest.raises(RegistryNotFound):
            c.pull(f"{name}@prod")
        assert c.pull(f"{name}@1").name == v1.commit  # pinned versions stay


def test_private_adapters_need_a_token_of_their_namespace(server: Server, tmp_path: Path) -> None:
    ns = uniq("priv")
    name = f"{ns}/secret"
    base = register_tiny(server, tmp_path, "llama")
    folder = saved_adapter(tmp_path / "a", seed=21)
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as writer:
        pushed = writer.push(folder, name, base_model=base, private=True, alias="prod")
        assert writer.info(name)["visibility"] == "private"

    with Client(server.url, cache_dir=tmp_path / "anon", quiet=True) as anon:
        assert anon.config.token is None
        for attempt in (lambda: anon.pull(name), lambda: anon.pull(f"{name}@1"), lambda: anon.info(name),
                        lambda: anon.load(tiny_llama(), f"{name}@prod")):
            with pytest.raises(RegistryNotFound):
                attempt()
        assert name not in [a["name"] for a in anon.ls(q=ns)["items"]]
        with pytest.raises(RegistryAuthError) as denied:  # and no anonymous push
            anon.push(folder, f"{ns}/other", base_model=base)
        assert denied.value.status == 401
        assert not any((tmp_path / "anon" / "blobs").rglob("*/*"))

    with Client(server.url, server.token(uniq("elsewhere"), "read"), cache_dir=tmp_path / "other",
                quiet=True) as stranger:
        with pytest.raises(RegistryNotFound):
            stranger.pull(f"{name}@prod")
        with pytest.raises(RegistryAuthError) as denied:
            stranger.push(folder, f"{ns}/other", base_model=base)
        assert denied.value.status == 403

    tap = Tap()
    with Client(server.url, server.token(ns, "read"), cache_dir=tmp_path / "reader", transport=tap, storage_io="httpx",
                quiet=True) as reader:
        got = reader.pull(f"{name}@prod")
        assert got.name == pushed.commit and files_of(got) == files_of(folder)
        assert name in [a["name"] for a in reader.ls(q=ns)["items"]]
    api_host = f"{urlsplit(server.url).hostname}:{urlsplit(server.url).port}"
    storage = [s for s in tap.seen if s.host != api_host]
    assert storage and all(s.authorization is None for s in storage)  # the token stays with the registry
    assert all(s.authorization for s in tap.seen if s.host == api_host)


# --- the cache ----------------------------------------------------------------------------------------


def test_pinned_pull_makes_no_request_and_alias_pull_one(server: Server, tmp_path: Path) -> None:
    ns = uniq("pin")
    name = f"{ns}/cached"
    base = register_tiny(server, tmp_path, "llama")
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as w:
        v1 = w.push(saved_adapter(tmp_path / "a", seed=31), name, base_model=base, alias="prod")

    tap = Tap()
    with Client(server.url, cache_dir=tmp_path / "cache", transport=tap, storage_io="httpx", quiet=True,
                retries=0) as c:
        first = c.pull(f"{name}@1")
        assert len([s for s in tap.reset() if s.is_data]) == len(list(first.iterdir())) >= 2  # each file once

        assert c.pull(f"{name}@1") == first
        assert c.pull(name, version=1) == first
        assert c.pull(f"{name}@{v1.commit}") == first
        assert tap.reset() == []  # pinned by number or commit: no request at all

        assert c.pull(f"{name}@prod") == first
        assert c.pull(name) == first
        for s, suffix in zip(tap.reset(), ("/versions/prod", "/versions/latest"), strict=True):
            assert s.method == "GET" and s.url.path.endswith(suffix)  # one small request each

        # the registry unreachable: pinned pulls still work from the cache, aliases cannot resolve
        tap.offline = True
        assert c.pull(f"{name}@1") == first and c.pull(f"{name}@{v1.commit}") == first
        assert tap.reset() == []
        with pytest.raises(RegistryUnavailable):
            c.pull(f"{name}@prod")
        assert len(tap.reset()) == 1

    # another client (another process, say) on the same cache directory benefits too
    tap2 = Tap()
    tap2.offline = True
    with Client(server.url, cache_dir=tmp_path / "cache", transport=tap2, storage_io="httpx", quiet=True,
                retries=0) as again:
        assert again.pull(f"{name}@1") == first
        assert files_of(first) == files_of(tmp_path / "a")
    assert tap2.seen == []


def _pull_in_process(url: str, cache_dir: str, ref: str, barrier: Any, results: Any) -> None:
    """A worker process: wait for the others, then pull into the shared cache."""
    try:
        with Client(url, cache_dir=cache_dir, quiet=True) as c:
            barrier.wait(timeout=60)
            folder = c.pull(ref)
            results.put(("ok", str(folder), files_of(folder)))
    except BaseException as exc:
        results.put(("error", repr(exc), {}))
        raise


def test_concurrent_pulls_from_several_processes_share_one_cache(server: Server, tmp_path: Path) -> None:
    ns = uniq("conc")
    name = f"{ns}/shared"
    base = register_wide_base(server, tmp_path)
    folder = wide_adapter(tmp_path / "a", r=32, seed=3)  # ~2 MB
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as w:
        pushed = w.push(folder, name, base_model=base)
        on_server = server_files(w, name, 1)

    cache_dir = tmp_path / "shared-cache"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_pull_in_process, args=(server.url, str(cache_dir), f"{name}@1", barrier, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    answers = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(status == "ok" for status, _, _ in answers), answers
    assert {path for _, path, _ in answers} == {str(Cache(cache_dir).snapshot_dir(
        client_api.registry_key(server.url), ns, "shared", pushed.commit))}
    want = {f: meta["sha256"] for f, meta in on_server.items()}
    assert all(files == want for _, _, files in answers)
    assert files_of(folder) == want

    blobs = sorted(p for p in (cache_dir / "blobs").rglob("*") if p.is_file())
    assert [p.parent.name + p.name for p in blobs] == sorted(want.values())  # each blob once
    assert cache_leftovers(cache_dir) == []
    snaps = list((cache_dir / "snapshots").rglob("*"))
    assert [p.name for p in snaps if p.is_dir() and len(p.name) == 40] == [pushed.commit]


# --- transfers ------------------------------------------------------------------------------------


def test_large_push_goes_to_storage_in_parallel_parts(server: Server, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ns = uniq("big")
    name = f"{ns}/wide"
    base = register_wide_base(server, tmp_path)
    folder = wide_adapter(tmp_path / "a", r=160, targets=tuple(_WIDE_SHAPES), seed=5)  # ~21 MiB: two 16 MiB parts
    size = (folder / WEIGHTS).stat().st_size
    assert 16 * MiB < size <= 32 * MiB
    monkeypatch.setattr(client_api, "DIRECT_UPLOAD_LIMIT", 1 * MiB)

    api = f"{urlsplit(server.url).hostname}:{urlsplit(server.url).port}"
    hiccups: list[str] = []

    def storage_hiccup(tap: Tap, req: httpx.Request, n: int) -> httpx.Response | None:
        if req.method == "PUT" and f"{req.url.host}:{req.url.port}" != api and not hiccups:
            hiccups.append(req.url.params["partNumber"])
            return httpx.Response(503, text="<Error><Code>SlowDown</Code></Error>", request=req)
        return None

    tap = Tap(storage_hiccup)
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "cache", transport=tap, storage_io="httpx",
                quiet=True) as c:
        c.http.backoff = 0.01
        pushed = c.push(folder, name, base_model=base, alias="big")
        seen = tap.reset()
        on_server = server_files(c, name, 1)

    posts = [s.url.path for s in seen if s.method == "POST"]
    assert posts[0] == f"/api/v1/adapters/{name}/uploads" and posts[-1].endswith("/finalize")
    assert f"/api/v1/adapters/{name}/versions" not in posts  # not through the API in one request
    puts = [s for s in seen if s.method == "PUT"]
    assert all(s.host != api and s.authorization is None for s in puts)  # presigned S3, no token sent there
    assert sorted(s.url.params["partNumber"] for s in puts if s.status == 200) == ["1", "2"]  # 16 MiB parts
    assert len(hiccups) == 1 and len(puts) == 3  # the part answered 503 was sent again
    assert on_server[WEIGHTS]["sha256"] == sha256_of(folder / WEIGHTS) and on_server[WEIGHTS]["size"] == size

    tap = Tap()
    with Client(server.url, cache_dir=tmp_path / "pull-cache", transport=tap, storage_io="httpx", quiet=True) as anon:
        got = anon.pull(f"{name}@big")
    assert got.name == pushed.commit and files_of(got) == files_of(folder)
    # the weights stay under the upload's own key (blobs/uploads/…), the small files under their content keys
    ranges = [s.range for s in tap.seen if s.is_data and "/blobs/uploads/" in s.url.path]
    assert len(ranges) == len(set(ranges)) == -(-size // client_transfers.PART_BYTES) > 1  # ranged, each once


@pytest.mark.parametrize("which", ["server", "local_server"])
def test_interrupted_download_resumes_with_only_the_missing_ranges(which: str, request: pytest.FixtureRequest,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    srv: Server = request.getfixturevalue(which)
    ns = uniq("resume")
    name = f"{ns}/wide"
    base = register_wide_base(srv, tmp_path)
    folder = wide_adapter(tmp_path / "a", r=160, seed=7)  # 10 MiB
    with Client(srv.url, srv.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as w:
        w.push(folder, name, base_model=base)
        weights = server_files(w, name, 1)[WEIGHTS]
    size, sha = weights["size"], weights["sha256"]
    part = 1 * MiB
    count = -(-size // part)
    assert count >= 8
    monkeypatch.setattr(client_api, "download", functools.partial(client_transfers.download, part_bytes=part))
    broken = {2, 5}

    def cut_two_parts(tap: Tap, req: httpx.Request, n: int) -> httpx.Response | None:
        rng = req.headers.get("range", "")
        if rng.startswith("bytes=") and int(rng[6:].split("-")[0]) // part in broken:
            return tap.forward_cut(req, 100_000)  # the connection drops mid-part
        return None

    cache_dir = tmp_path / "cache"
    cache = Cache(cache_dir)
    with Client(srv.url, cache_dir=cache_dir, transport=Tap(cut_two_parts), storage_io="httpx", quiet=True,
                retries=0) as c:
        with pytest.raises(RegistryUnavailable):
            c.pull(f"{name}@1")
    partial = cache.tmp_path(sha).with_name(sha + ".part")
    state = cache.tmp_path(sha).with_name(sha + ".part.json")
    assert partial.is_file() and state.is_file()
    saved = json.loads(state.read_text())
    done = set(saved["done"])
    # the first range always completes (it is fetched alone, to learn where the bytes are); parts still
    # queued when the connection dropped may not have started
    assert saved["sha256"] == sha and 0 in done and not done & broken and done <= set(range(count))
    assert not cache.has_blob(sha) and not (cache_dir / "snapshots").joinpath(
        client_api.registry_key(srv.url), ns).exists()

    tap = Tap()
    with Client(srv.url, cache_dir=cache_dir, transport=tap, storage_io="httpx", quiet=True) as c:
        got = c.pull(f"{name}@1")
    data = sorted(s.range for s in tap.seen if s.is_data)
    want = sorted(f"bytes={i * part}-{min((i + 1) * part, size) - 1}" for i in set(range(count)) - done)
    assert data == want  # only what was missing
    assert sha256_of(got / WEIGHTS) == sha and files_of(got) == files_of(folder)
    assert cache.has_blob(sha, size) and cache_leftovers(cache_dir) == []


def test_retries_with_backoff_on_5xx_and_network_errors(server: Server, tmp_path: Path) -> None:
    ns = uniq("retry")
    name = f"{ns}/flaky"
    base = register_tiny(server, tmp_path, "llama")
    folder = saved_adapter(tmp_path / "a", seed=41)
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as w:
        w.push(folder, name, base_model=base)

    failures: list[str] = []

    def flaky(tap: Tap, req: httpx.Request, n: int) -> httpx.Response | None:
        path = req.url.path
        if path.endswith("/versions/1") and failures.count("version") < 2:
            failures.append("version")
            return httpx.Response(503, json={"title": "Service unavailable"}, request=req)
        if path.endswith(f"/files/{WEIGHTS}") and failures.count("probe") < 1:
            failures.append("probe")
            return httpx.Response(502, text="bad gateway", request=req)
        if req.headers.get("range") and "/api/v1/" not in path:  # the bytes, from storage
            if failures.count("connect") < 1:
                failures.append("connect")
                raise httpx.ConnectError("connection refused (test)", request=req)
            if failures.count("cut") < 1:
                failures.append("cut")
                return tap.forward_cut(req, 10)
            if failures.count("storage-503") < 1:
                failures.append("storage-503")
                return httpx.Response(503, text="slow down", request=req)
        return None

    tap = Tap(flaky)
    with Client(server.url, cache_dir=tmp_path / "cache", transport=tap, storage_io="httpx", quiet=True) as c:
        c.http.backoff = 0.01
        got = c.pull(f"{name}@1")
    assert files_of(got) == files_of(folder)
    assert sorted(failures) == sorted(["version", "version", "probe", "connect", "cut", "storage-503"])
    assert cache_leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("ranges", ["one", "several"])
def test_corrupted_blob_in_the_bucket_is_detected_and_not_cached(ranges: str, server: Server, s3_server: Any,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from registry_service.storage import blob_key

    ns = uniq("rot")
    name = f"{ns}/bitrot"
    if ranges == "one":  # hashed while it downloads
        base = register_tiny(server, tmp_path, "llama")
        folder = saved_adapter(tmp_path / "a", seed=51)
    else:  # parallel ranges, hashed once complete
        base = register_wide_base(server, tmp_path)
        folder = wide_adapter(tmp_path / "a", r=32, seed=52)  # 2 MiB in 512 KiB ranges
        monkeypatch.setattr(client_api, "download",
                            functools.partial(client_transfers.download, part_bytes=MiB // 2))
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "w", quiet=True) as w:
        pushed = w.push(folder, name, base_model=base)
        weights = server_files(w, name, 1)[WEIGHTS]
    sha, size = weights["sha256"], weights["size"]
    key = f"blobs/sha256/{sha[:2]}/{sha[2:]}"
    assert key == blob_key(sha)
    s3 = s3_server.client()
    original = s3.get_object(Bucket=server.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(original).hexdigest() == sha
    rotten = bytearray(original)
    rotten[len(rotten) // 2] ^= 0xFF  # one flipped byte, same size
    s3.put_object(Bucket=server.bucket, Key=key, Body=bytes(rotten))

    cache_dir = tmp_path / "cache"
    cache = Cache(cache_dir)
    snap = cache.snapshot_dir(client_api.registry_key(server.url), ns, "bitrot", pushed.commit)
    with Client(server.url, cache_dir=cache_dir, quiet=True) as c:
        for _ in range(2):  # nothing bad was kept, so the second pull checks again
            with pytest.raises(IntegrityError) as caught:
                c.pull(f"{name}@1")
            assert sha in str(caught.value)
            assert not cache.has_blob(sha) and not snap.exists()
            assert cache.lookup(client_api.registry_key(server.url), ns, "bitrot", "1") is None
            assert cache_leftovers(cache_dir) == []
        with pytest.raises(IntegrityError):
            c.load(tiny_llama(), f"{name}@{pushed.commit}")

        s3.put_object(Bucket=server.bucket, Key=key, Body=original)  # repaired storage: the pull works
        got = c.pull(f"{name}@1")
    assert sha256_of(got / WEIGHTS) == sha and cache.has_blob(sha, size)


def test_a_push_racing_a_push_of_the_same_bytes_shares_the_stored_copy(server: Server, s3_server: Any,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3 each upload lands under its own key, hashed by the client while it uploads. If another
    push stores the same bytes while this upload is open, both publish at once and share one copy."""
    ns = uniq("race")
    base = register_wide_base(server, tmp_path)
    folder = wide_adapter(tmp_path / "a", r=160, targets=tuple(_WIDE_SHAPES), seed=6)
    monkeypatch.setattr(client_api, "DIRECT_UPLOAD_LIMIT", 1 * MiB)
    token = server.token(ns, "write")
    rival: list[int] = []
    s3 = s3_server.client()

    def uploads() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix="blobs/uploads/")
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    def rival_push_first(tap: Tap, req: httpx.Request, n: int) -> httpx.Response | None:
        if req.method == "POST" and req.url.path.endswith("/finalize") and not rival:
            with Client(server.url, token, cache_dir=tmp_path / "rival-cache", quiet=True) as other:
                rival.append(other.push(folder, f"{ns}/rival", base_model=base).version)
        return None

    before = uploads()
    tap = Tap(rival_push_first)
    with Client(server.url, token, cache_dir=tmp_path / "cache", transport=tap, storage_io="httpx", quiet=True) as c:
        pushed = c.push(folder, f"{ns}/mine", base_model=base)
        seen = tap.reset()
        mine, theirs = server_files(c, f"{ns}/mine", 1), server_files(c, f"{ns}/rival", 1)
    assert rival == [1] and pushed.version == 1
    sessions = [s for s in seen if s.method == "POST" and s.url.path.endswith("/uploads")]
    assert [s.status for s in seen if s.method == "POST" and s.url.path.endswith("/finalize")] == [201]
    assert len(sessions) == 1
    assert mine[WEIGHTS]["sha256"] == theirs[WEIGHTS]["sha256"] == sha256_of(folder / WEIGHTS)
    assert len(uploads() - before) == 1  # one stored copy; the later upload was deleted
    with Client(server.url, cache_dir=tmp_path / "pull", quiet=True) as anon:
        assert files_of(anon.pull(f"{ns}/mine@1")) == files_of(folder)
