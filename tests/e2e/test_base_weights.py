"""``register_base_model(..., weights=...)`` against the registry as a real process: the model's
weights (tied ones included) round-trip, big files go through an upload session, shards from paths."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import sdk
import sdk.client.api as client_api
from sdk.client import Client
from sdk.errors import AdapterError

if TYPE_CHECKING:
    from e2e_server import Server


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)).eval()


MODELS: dict[str, Callable[[], nn.Module]] = {"llama": tiny_llama, "gpt2": tiny_gpt2}


class Recorder(httpx.HTTPTransport):
    """A real transport that remembers ``METHOD path`` of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.seen.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No registry settings leak in from the environment or a real ``adapters login``."""
    for var in ("ADAPTER_REGISTRY_URL", "ADAPTER_REGISTRY_TOKEN", "ADAPTER_REGISTRY_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ADAPTER_REGISTRY_CONFIG", str(tmp_path / "no-login" / "config.json"))
    monkeypatch.setenv("ADAPTER_REGISTRY_QUIET", "1")
    monkeypatch.setattr(sdk, "_default_client", None)
    yield
    if sdk._default_client is not None:
        sdk._default_client.close()


def fetch(url: str, dest: Path) -> Path:
    """Download a listed URL (a 302 to presigned storage on S3) without any token."""
    r = httpx.get(url, follow_redirects=True)
    r.raise_for_status()
    dest.write_bytes(r.content)
    return dest


def assert_same_weights(model: nn.Module, loaded: dict[str, torch.Tensor]) -> None:
    """Every entry of the state dict is in the file, or is tied to (shares memory with) one that is."""
    sd = model.state_dict()
    assert set(loaded) <= set(sd)
    for key, tensor in sd.items():
        twin = key if key in loaded else next(
            (k for k in loaded if sd[k].data_ptr() == tensor.data_ptr() and sd[k].shape == tensor.shape), None)
        assert twin is not None, f"{key} is neither stored nor tied to a stored tensor"
        torch.testing.assert_close(loaded[twin], tensor, atol=0, rtol=0)


@pytest.mark.parametrize(("which", "arch"), [("server", "llama"), ("server", "gpt2"), ("local_server", "llama")])
def test_register_with_weights_round_trip(which: str, arch: str, request: pytest.FixtureRequest,
                                          tmp_path: Path) -> None:
    srv: Server = request.getfixturevalue(which)
    ns = f"bw-{uuid.uuid4().hex[:8]}"
    model = MODELS[arch]()
    if arch == "gpt2":
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    with Client(srv.url, srv.token(ns, "write"), cache_dir=tmp_path / "cache", quiet=True) as c:
        body = c.register_base_model(model, f"{ns}/tiny-{arch}", weights=True)
        assert body["has_weights"] is True
        [f] = body["files"]
        assert f["filename"] == "model.safetensors"
        listed = c.base_model(f"{ns}/tiny-{arch}")
        assert listed["has_weights"] is True and listed["files"] == body["files"]
    loaded = load_file(fetch(f["url"], tmp_path / "model.safetensors"))
    assert_same_weights(model, loaded)
    if arch == "gpt2":  # written once, under the name save_pretrained keeps
        assert "transformer.wte.weight" in loaded and "lm_head.weight" not in loaded


def test_large_weights_go_through_an_upload_session(server: Server, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_api, "DIRECT_UPLOAD_LIMIT", 1024)
    ns = f"bw-{uuid.uuid4().hex[:8]}"
    name = f"{ns}/tiny-llama"
    model = tiny_llama()
    tap = Recorder()
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "cache", transport=tap, storage_io="httpx",
                quiet=True) as c:
        body = c.register_base_model(model, name, weights=True)
        root = f"/api/v1/base-models/{name}"
        assert f"POST {root}/uploads" in tap.seen and f"POST {root}/files" not in tap.seen
        assert any(s.endswith("/finalize") for s in tap.seen)
        assert not any(s.startswith("PUT /api/") for s in tap.seen)  # S3: parts go straight to storage
        [f] = body["files"]
        assert_same_weights(model, load_file(fetch(f["url"], tmp_path / "model.safetensors")))

        # registering again with the same weights uploads nothing
        tap.seen.clear()
        again = c.register_base_model(model, name, weights=True)
        assert again["files"] == body["files"]
        assert not any("/uploads" in s or s == f"POST {root}/files" for s in tap.seen), tap.seen


def test_sharded_files_from_paths(server: Server, tmp_path: Path) -> None:
    ns = f"bw-{uuid.uuid4().hex[:8]}"
    model = tiny_llama()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    keys = sorted(sd)
    shards = tmp_path / "shards"
    shards.mkdir()
    save_file({k: sd[k] for k in keys[:8]}, str(shards / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in keys[8:]}, str(shards / "model-00002-of-00002.safetensors"))
    (shards / "config.json").write_text("{}")  # ignored: only *.safetensors of a folder are sent
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "cache", quiet=True) as c:
        with pytest.raises(AdapterError, match="needs the model itself"):
            c.register_base_model({"model_type": "llama"}, f"{ns}/x", weights=True)
        body = c.register_base_model(model, f"{ns}/sharded", weights=shards)
    assert [f["filename"] for f in body["files"]] == sorted(p.name for p in shards.glob("*.safetensors"))
    got: dict[str, torch.Tensor] = {}
    for f in body["files"]:
        got |= load_file(fetch(f["url"], tmp_path / f["filename"]))
    assert_same_weights(model, got)


def test_cli_register_with_weights(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from sdk.cli import app

    ns = f"bw-{uuid.uuid4().hex[:8]}"
    model = tiny_llama()
    folder = tmp_path / "llama"
    model.save_pretrained(folder)  # config.json + model.safetensors
    monkeypatch.setenv("ADAPTER_REGISTRY_URL", server.url)
    monkeypatch.setenv("ADAPTER_REGISTRY_TOKEN", server.token(ns, "write"))
    args = ["base-models", "register", f"{ns}/llama", "--from-model-dir", str(folder),
            "--weights", str(folder / "model.safetensors")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "weights: 1 file stored" in result.stdout
    result = CliRunner().invoke(app, ["--json", "base-models", "show", f"{ns}/llama"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert '"has_weights": true' in result.stdout
