"""Hot-swapping LoRA adapters into a compiled model: no recompile, the same outputs as loading each
adapter fresh, refusals that say what to prepare for and change nothing, and a swapped model that
saves what it runs.

The adapters come out of the registry client's cache (``Client.pull`` of pinned versions, which is
answered from the cache without a request), as a serving process would get them.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import ids, tiny_llama
from safetensors.torch import load_file
from torch._dynamo.testing import CompileCounterWithBackend

import sdk
from sdk.client import Client
from sdk.client.cache import Cache, CachedVersion, registry_key

X = ids(batch=2, seq=5)


def _base() -> torch.nn.Module:
    return tiny_llama(layers=1)


URL = "http://127.0.0.1:9"  # nothing listens there: every pull below must come from the cache
ADAPTERS: list[dict[str, Any]] = [
    {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    {"r": 8, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]},
    {"r": 2, "lora_alpha": 16, "target_modules": ["q_proj"]},  # a subset of the modules
    {"r": 6, "lora_alpha": 3, "target_modules": ["q_proj", "v_proj"], "use_rslora": True},
]


def _save(folder: Path, seed: int, **config: Any) -> Path:
    torch.manual_seed(seed)
    sdk.get_peft_model(_base(), sdk.LoraConfig(init_lora_weights=False, **config)).save_pretrained(folder)
    return folder


def _cached_client(tmp_path: Path, folders: list[Path]) -> Client:
    """A client whose cache holds ``folders`` as versions 1, 2, … of ``alice/chat``."""
    cache = Cache(tmp_path / "cache")
    for version, folder in enumerate(folders, start=1):
        files = []
        for f in sorted(folder.iterdir()):
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
            cache.ensure_blob(sha, f.stat().st_size, lambda dest, f=f: Path(shutil.copyfile(f, dest)))
            files.append({"filename": f.name, "sha256": sha, "size": f.stat().st_size})
        record = CachedVersion(version, hashlib.sha1(str(files).encode()).hexdigest(), files)
        cache.make_snapshot(registry_key(URL), "alice", "chat", record)
        cache.record(registry_key(URL), "alice", "chat", record)
    return Client(URL, cache_dir=tmp_path / "cache", retries=0)


@pytest.fixture
def pulled(tmp_path: Path) -> list[Path]:
    client = _cached_client(tmp_path, [_save(tmp_path / f"a{i}", i, **c) for i, c in enumerate(ADAPTERS)])
    return [client.pull("alice/chat", version=v) for v in range(1, len(ADAPTERS) + 1)]


def _fresh(folder: Path) -> torch.Tensor:
    with torch.no_grad():
        return sdk.AdapterModel.from_pretrained(_base(), folder)(input_ids=X).logits


def test_compiled_model_swaps_three_adapters_without_recompiling(pulled: list[Path]) -> None:
    model = sdk.AdapterModel.from_pretrained(_base(), pulled[0])
    sdk.prepare_model_for_compiled_hotswap(model, target_rank=8)
    counter = CompileCounterWithBackend("eager")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    outputs = []
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids=X).logits, _fresh(pulled[0]), atol=1e-5, rtol=1e-5)
        for folder in pulled[1:]:
            sdk.hotswap_adapter(compiled, folder)
            outputs.append(compiled(input_ids=X).logits)
            torch.testing.assert_close(outputs[-1], _fresh(folder), atol=1e-5, rtol=1e-5)
    assert counter.frame_count == 1
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])


def test_refused_swaps_say_what_to_prepare_for_and_change_nothing(pulled: list[Path], tmp_path: Path) -> None:
    model = sdk.AdapterModel.from_pretrained(_base(), pulled[0])
    sdk.prepare_model_for_compiled_hotswap(model, target_rank=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.peft_config["default"].to_dict()
    wider = _save(tmp_path / "wide", 7, r=16, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    with pytest.raises(sdk.FormatError, match=r"prepare_model_for_compiled_hotswap\(model, target_rank=16\)"):
        sdk.hotswap_adapter(model, wider)
    elsewhere = _save(tmp_path / "elsewhere", 8, r=4, target_modules=["q_proj", "k_proj"])
    with pytest.raises(sdk.FormatError, match=r"model\.layers\.0\.self_attn\.k_proj.*load_adapter"):
        sdk.hotswap_adapter(model, elsewhere)
    dora = _save(tmp_path / "dora", 9, r=4, target_modules=["q_proj", "v_proj"], use_dora=True)
    with pytest.raises(sdk.AdapterStateError, match="use_dora"):
        sdk.hotswap_adapter(model, dora)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.peft_config["default"].to_dict() == config_before
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(sdk.AdapterStateError, match=r"before torch\.compile"):
        sdk.prepare_model_for_compiled_hotswap(compiled)


def test_a_swapped_model_saves_the_adapter_it_runs(pulled: list[Path], tmp_path: Path) -> None:
    """Padded factors are saved at the adapter's own rank; modules the swapped-in adapter skips are named with
    zero factors, so the saved folder loads again (with our SDK and with peft) and gives the same outputs."""
    from peft import PeftModel

    model = sdk.AdapterModel.from_pretrained(_base(), pulled[1])
    sdk.prepare_model_for_compiled_hotswap(model, target_rank=8)
    sdk.hotswap_adapter(model, pulled[2])  # r=2 on q_proj only
    model.save_pretrained(tmp_path / "saved")
    tensors = load_file(tmp_path / "saved" / "adapter_model.safetensors")
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape[0] == 2
    assert not tensors["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"].any()
    with torch.no_grad():
        ours = model(input_ids=X).logits
        torch.testing.assert_close(_fresh(tmp_path / "saved"), ours, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(_fresh(pulled[2]), ours, atol=1e-5, rtol=1e-5)
        theirs = PeftModel.from_pretrained(_base(), tmp_path / "saved").eval()(input_ids=X).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
