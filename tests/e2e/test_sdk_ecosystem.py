"""The SDK at home in the Hugging Face ecosystem, against the registry as a real process (SeaweedFS S3):
provenance on versions (API bounds and JSON), pushing anything PEFT-shaped (``AdapterModel``,
``peft.PeftModel``, a folder), and ``AdapterModel.from_pretrained`` / ``load_adapter`` straight from a
registry reference or a Hub repo id through ``huggingface_hub.snapshot_download`` and the registry's
Hub-compatible API (no internet: the endpoint is the registry)."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import torch

import sdk
from sdk.client import Client

if TYPE_CHECKING:
    from e2e_server import Server


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model(input_ids=ids).logits


def lora(seed: int = 1) -> sdk.AdapterModel:
    torch.manual_seed(seed)
    cfg = sdk.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return sdk.get_peft_model(tiny_llama(0), cfg).eval()


@pytest.fixture(scope="module")
def base(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = "e2e-meta/tiny-llama"
    with Client(server.url, server.admin, cache_dir=tmp_path_factory.mktemp("c"), quiet=True) as admin:
        admin.register_base_model(tiny_llama(0), name)
    return name


def test_provenance_is_stored_bounded_and_returned(server: Server, base: str, tmp_path: Path) -> None:
    ns = uniq("prov")
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "c", quiet=True) as c:
        pushed = c.push(lora(), f"{ns}/chat", base_model=base, description="first try",
                        metrics={"eval_loss": 1.25, "accuracy": 0.5}, params={"learning_rate": 2e-4, "optim": "adamw"},
                        dataset={"name": "toy", "sha256": "ab" * 32})
        v = c.http.json("GET", f"/api/v1/adapters/{ns}/chat/versions/{pushed.version}")
        assert v["metrics"] == {"eval_loss": 1.25, "accuracy": 0.5}
        assert v["params"] == {"learning_rate": 2e-4, "optim": "adamw"}
        assert v["dataset"] == {"name": "toy", "sha256": "ab" * 32} and v["description"] == "first try"
        # the client refuses bad provenance before uploading anything
        with pytest.raises(sdk.ConfigError, match="finite"):
            c.push(lora(), f"{ns}/chat", base_model=base, metrics={"loss": math.nan})
    # the server refuses it too (a client that skips the checks): 422 naming each problem, no version
    token = server.token(ns, "write")
    folder = tmp_path / "a"
    lora().save_pretrained(folder)
    bad = [
        {"metrics": '{"loss": NaN}'}, {"metrics": json.dumps({f"m{i}": 1 for i in range(65)})},
        {"params": '{"lr": [1, 2]}'}, {"dataset": '{"name": "x", "sha256": "nothex"}'}, {"metrics": "{not json"},
        {"params": json.dumps({"x": "y" * 70_000})},
    ]
    for fields in bad:
        files = {"adapter_config.json": (folder / "adapter_config.json").read_bytes(),
                 "adapter_model.safetensors": (folder / "adapter_model.safetensors").read_bytes()}
        r = httpx.post(f"{server.url}/api/v1/adapters/{ns}/chat/versions", files=files,
                       data={"base_model": base, **fields}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 422, (fields, r.text)
        assert r.json()["problems"], r.text
    versions = httpx.get(f"{server.url}/api/v1/adapters/{ns}/chat/versions",
                         headers={"Authorization": f"Bearer {token}"}).json()["items"]
    assert [v["version"] for v in versions] == [1]


def test_a_trained_model_pushes_its_record_with_no_extra_argument(server: Server, base: str, tmp_path: Path) -> None:
    ns = uniq("trained")
    model = sdk.get_peft_model(tiny_llama(0), sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": (ids := torch.randint(0, 12, (8,), generator=g)), "labels": ids.clone()} for _ in range(8)]
    sdk.train(model, data, data[:2], max_steps=2, batch_size=4, learning_rate=1e-2, dataset_name="toy-lm",
              progress=False)
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "c", quiet=True) as c:
        pushed = model.push(f"{ns}/trained", base_model=base, client=c, metrics={"extra": 1.0})
        v = c.http.json("GET", f"/api/v1/adapters/{ns}/trained/versions/{pushed.version}")
    assert v["params"]["learning_rate"] == 1e-2 and v["params"]["trainer"] == "sdk.train"
    assert {"eval_loss", "train_loss", "extra"} <= set(v["metrics"])
    assert v["dataset"]["name"] == "toy-lm" and len(v["dataset"]["sha256"]) == 64
    # the saved folder carries it too (provenance.json), through the Hub API as well: unmodified huggingface_hub
    from huggingface_hub import HfApi

    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "provenance.json").read_text())["dataset"]["name"] == "toy-lm"
    info = HfApi(endpoint=server.url).upload_folder(repo_id=f"{ns}/trained", folder_path=str(tmp_path / "saved"),
                                                    token=server.token(ns, "write"))
    hub_v = httpx.get(f"{server.url}/api/v1/adapters/{ns}/trained/versions/{info.oid}").json()
    assert hub_v["version"] == pushed.version + 1 and hub_v["params"]["trainer"] == "sdk.train"
    assert "provenance.json" not in {f["filename"] for f in hub_v["files"]}  # metadata, not a file
    (tmp_path / "saved" / "provenance.json").write_text('{"metrics": {"loss": "low"}}')
    with pytest.raises(Exception, match=r"422|must be a number"):
        HfApi(endpoint=server.url).upload_folder(repo_id=f"{ns}/trained", folder_path=str(tmp_path / "saved"),
                                                 token=server.token(ns, "write"))


def test_push_takes_a_peft_model_and_a_peft_folder_and_refuses_other_things(server: Server, base: str,
                                                                            tmp_path: Path) -> None:
    import peft

    ns = uniq("peft")
    torch.manual_seed(3)
    pm = peft.get_peft_model(tiny_llama(0), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                            init_lora_weights=False)).eval()
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "c", quiet=True) as c:
        pushed = c.push(pm, f"{ns}/from-peft", base_model=base, alias="prod")
        loaded = c.load(tiny_llama(0), f"{ns}/from-peft@prod")
        assert torch.allclose(logits(loaded), logits(pm), atol=1e-5)
        pm.save_pretrained(str(tmp_path / "peft-folder"))
        again = c.push(tmp_path / "peft-folder", f"{ns}/from-peft")
        assert again.version == pushed.version + 1
        for wrong, message in [(tiny_llama(0), "not a LlamaForCausalLM"), (42, "not a int"),
                               (tmp_path / "missing", "is not a folder")]:
            with pytest.raises(sdk.AdapterError, match=message):
                c.push(wrong, f"{ns}/from-peft")


def test_from_pretrained_loads_registry_references_through_huggingface_hub(
        server: Server, base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    ns = uniq("hubload")
    model = lora(5)
    token = server.token(ns, "write")
    with Client(server.url, token, cache_dir=tmp_path / "c", quiet=True) as c:
        v1 = c.push(model, f"{ns}/chat", base_model=base, alias="prod", private=True)
    expected = logits(model)
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("ADAPTER_REGISTRY_URL", server.url)
    monkeypatch.setenv("ADAPTER_REGISTRY_TOKEN", token)
    monkeypatch.setenv("ADAPTER_REGISTRY_CONFIG", str(tmp_path / "no-login.json"))
    # a registry reference: the client's registry and token, huggingface_hub's cache layout per endpoint
    loaded = sdk.AdapterModel.from_pretrained(tiny_llama(0), f"{ns}/chat@prod")
    assert torch.allclose(logits(loaded), expected, atol=1e-5)
    cache = tmp_path / "hf-home" / "hub-endpoints"
    snapshots = list(cache.glob(f"*/models--{ns}--chat/snapshots/{v1.commit}"))
    assert len(snapshots) == 1, list(cache.rglob("*"))
    assert {p.name for p in snapshots[0].iterdir()} <= {"adapter_config.json", "adapter_model.safetensors",
                                                         "README.md"}
    # by number and by commit; a Hub repo id with revision= and an explicit endpoint and token
    for ref, kwargs in [(f"{ns}/chat@1", {}), (f"{ns}/chat@{v1.commit}", {}),
                        (f"{ns}/chat", {"revision": "prod", "endpoint": server.url, "token": token,
                                        "cache_dir": tmp_path / "explicit"})]:
        again = sdk.AdapterModel.from_pretrained(tiny_llama(0), ref, **kwargs)
        assert torch.allclose(logits(again), expected, atol=1e-5)
    # offline (huggingface_hub's local_files_only / HF_HUB_OFFLINE): served from the cache alone
    monkeypatch.setenv("ADAPTER_REGISTRY_URL", "http://127.0.0.1:9")  # nothing listens there
    offline = sdk.AdapterModel.from_pretrained(tiny_llama(0), f"{ns}/chat@{v1.commit}", endpoint=server.url,
                                               local_files_only=True)
    assert torch.allclose(logits(offline), expected, atol=1e-5)
    # private: without a token the registry says no, as the Hub does
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        sdk.AdapterModel.from_pretrained(tiny_llama(0), f"{ns}/chat@prod", endpoint=server.url, token=False,
                                         cache_dir=tmp_path / "anon")
    # load_adapter: a second adapter from a reference, next to the first
    loaded.load_adapter(f"{ns}/chat@1", "again", endpoint=server.url, token=token)
    assert set(loaded.adapter_names) == {"default", "again"}
    # nothing the server sent is trusted: a blob whose bytes do not hash to its name is refused and removed
    weights = snapshots[0] / "adapter_model.safetensors"
    blob = weights.resolve()
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(sdk.UnsafeResponse, match="hash"):
        sdk.AdapterModel.from_pretrained(tiny_llama(0), f"{ns}/chat@{v1.commit}", endpoint=server.url,
                                         local_files_only=True)
    assert not blob.exists()


def test_bad_references_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(sdk.AdapterError, match="neither a folder"):
        sdk.AdapterModel.from_pretrained(tiny_llama(0), str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(sdk.AdapterError, match="already names a version"):
        sdk.AdapterModel.from_pretrained(tiny_llama(0), "alice/chat@prod", revision="3")
    with pytest.raises(sdk.AdapterError, match="registry reference"):
        sdk.AdapterModel.from_pretrained(tiny_llama(0), "alice/chat@bad ref")
    with pytest.raises(sdk.AdapterError, match="subfolder"):
        sdk.AdapterModel.from_pretrained(tiny_llama(0), "alice/chat@prod", subfolder="../x")


def test_version_page_shows_provenance_and_the_compare_page_diffs_two_versions(server: Server, base: str,
                                                                                tmp_path: Path) -> None:
    import re

    ns = uniq("cmp")
    with Client(server.url, server.token(ns, "write"), cache_dir=tmp_path / "c", quiet=True) as c:
        c.push(lora(1), f"{ns}/chat", base_model=base, metrics={"eval_loss": 2.5}, params={"learning_rate": 0.001},
               dataset="toy <b>set</b>")
        torch.manual_seed(2)
        wider = sdk.get_peft_model(tiny_llama(0), sdk.LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                                                 target_modules=["q_proj", "v_proj", "o_proj"]))
        c.push(wider, f"{ns}/chat", metrics={"eval_loss": 1.5, "accuracy": 0.75}, description="wider and better")
        c.push(lora(3), f"{ns}/secret", base_model=base, private=True)
    page = httpx.get(f"{server.url}/adapters/{ns}/chat/versions/1")
    assert page.status_code == 200
    assert re.search(r"<dt>eval_loss</dt><dd class=\"metric\">2.5</dd>", page.text)
    assert re.search(r"<dt>learning_rate</dt><dd class=\"param\">0.001</dd>", page.text)
    assert "toy &lt;b&gt;set&lt;/b&gt;" in page.text and "<b>set</b>" not in page.text  # escaped
    assert f"/adapters/{ns}/chat/compare?b=1" in page.text
    cmp = httpx.get(f"{server.url}/adapters/{ns}/chat/compare", params={"a": "1", "b": "2"})
    assert cmp.status_code == 200, cmp.text[:500]
    html = cmp.text
    diff = html[html.index('id="config-diff"'):]
    for key in ("r", "lora_alpha", "target_modules"):
        assert f"<th>{key}</th>" in diff
    assert "<th>lora_dropout</th>" not in diff  # the same in both: not listed
    metrics = html[html.index('id="metrics"'):html.index('id="params"')]
    assert re.search(r"<th>eval_loss</th><td class=\"num\">2.5</td><td class=\"num\">1.5</td>", metrics)
    assert re.search(r"<th>accuracy</th><td class=\"num\">–</td><td class=\"num\">0.75</td>", metrics)
    assert "wider and better" in html and "o_proj" in html
    # the default: the latest against the one before it
    assert httpx.get(f"{server.url}/adapters/{ns}/chat/compare").text.count("@2") >= 1
    # private stays private: anonymous viewers get the same 404 as for a missing adapter
    assert httpx.get(f"{server.url}/adapters/{ns}/chat/compare", params={"a": "1", "b": f"{ns}/secret@1"}
                     ).status_code == 404
    assert httpx.get(f"{server.url}/adapters/{ns}/secret/compare", params={"a": "1", "b": "1"}).status_code == 404
    assert httpx.get(f"{server.url}/adapters/{ns}/chat/compare", params={"a": "9"}).status_code == 404
