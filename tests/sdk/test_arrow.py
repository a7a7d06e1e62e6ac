"""Arrow routing: equal to PEFT 0.21's ``create_arrow_model`` on Linear (Llama) and Conv1D (GPT-2) models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import peft
import pytest
import torch
from _tiny import ids, tiny_gpt2, tiny_llama
from torch import nn

import sdk
from sdk.errors import ConfigError, MergeError, MixedBatchError
from sdk.layers import iter_adapter_modules
from sdk.tuners.lora import arrow as arrow_mod
from sdk.tuners.lora.arrow_math import expert_prototype
from sdk.tuners.lora.arrow_model import current_prototypes, routers

MODELS: dict[str, tuple[Callable[[], nn.Module], list[str]]] = {
    "linear": (tiny_llama, ["q_proj", "v_proj"]),
    "conv1d": (tiny_gpt2, ["c_attn"]),
}


def _experts(root: Path, kind: str, n: int, seed: int, r: int = 4) -> list[str]:
    make, targets = MODELS[kind]
    out = []
    for i in range(n):
        base = make()
        torch.manual_seed(seed + i)  # after building the base: each expert gets its own random A and B
        m = sdk.get_peft_model(base, sdk.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets,
                                                     init_lora_weights=False))
        path = root / f"{kind}-{seed}-{i}"
        m.save_pretrained(path)
        out.append(str(path))
    return out


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Per model kind: five task experts, two general adapters, one rank-2 misfit."""
    root = tmp_path_factory.mktemp("arrow")
    return {kind: (_experts(root, kind, 5, 10), _experts(root, kind, 2, 50), _experts(root, kind, 1, 90, r=2))
            for kind in MODELS}


def _both(kind: str, tasks: list[str], general: list[str] | None, **cfg: object) -> tuple[nn.Module, nn.Module]:
    make, _ = MODELS[kind]
    ours = sdk.create_arrow_model(make(), tasks, sdk.ArrowConfig(**cfg), general)  # type: ignore[arg-type]
    theirs = peft.create_arrow_model(make(), tasks, peft.ArrowConfig(**cfg), general).eval()
    return ours, theirs


def _logits(model: nn.Module, seed: int = 123) -> torch.Tensor:
    with torch.no_grad():
        return model(ids(batch=3, seq=9, seed=seed)).logits


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("gks", [False, True])
def test_equals_peft_create_arrow_model(kind: str, gks: bool, library: dict) -> None:
    tasks, general, _ = library[kind]
    ours, theirs = _both(kind, tasks[:4], general if gks else None, top_k=2, router_temperature=0.7,
                         use_gks=gks, rng_seed=3)
    base = _logits(MODELS[kind][0]())
    got, want = _logits(ours), _logits(theirs)
    assert (want - base).abs().max() > 1e-2  # the experts change the output
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(ours, seed=7), _logits(theirs, seed=7), atol=1e-5, rtol=1e-5)
    assert ours.active_adapters == ["arrow_router"]
    assert sorted(ours.adapter_names) == sorted(theirs.peft_config)


@pytest.mark.parametrize("gks", [False, True])
def test_adding_an_expert_refreshes_prototypes_as_peft(gks: bool, library: dict) -> None:
    tasks, general, _ = library["linear"]
    ours, theirs = _both("linear", tasks[:3], general if gks else None, top_k=2, use_gks=gks, rng_seed=5)
    before = _logits(ours)
    torch.testing.assert_close(before, _logits(theirs), atol=1e-5, rtol=1e-5)
    ours.load_adapter(tasks[4], "task_3")
    theirs.load_adapter(tasks[4], adapter_name="task_3")
    after = _logits(ours)
    assert (after - before).abs().max() > 1e-4
    torch.testing.assert_close(after, _logits(theirs), atol=1e-5, rtol=1e-5)
    assert all(r.experts == ("task_0", "task_1", "task_2", "task_3") and r.prototypes.shape[0] == 4
               for r in routers(ours).values())


def test_removing_an_expert_refreshes_prototypes(library: dict) -> None:
    tasks, _, _ = library["conv1d"]
    ours = sdk.create_arrow_model(tiny_gpt2(), tasks[:4], sdk.ArrowConfig(top_k=2, rng_seed=1))
    before = _logits(ours)
    ours.delete_adapter("task_1")
    fresh = sdk.create_arrow_model(tiny_gpt2(), [tasks[0], tasks[2], tasks[3]], sdk.ArrowConfig(top_k=2, rng_seed=1))
    after = _logits(ours)
    assert (after - before).abs().max() > 1e-4
    torch.testing.assert_close(after, _logits(fresh), atol=1e-6, rtol=1e-6)
    assert {r.prototypes.shape[0] for r in routers(ours).values()} == {3}


def test_given_prototypes_skip_the_svd(library: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks, general, _ = library["linear"]
    cfg = {"top_k": 3, "use_gks": True, "rng_seed": 2}
    ref = sdk.create_arrow_model(tiny_llama(), tasks[:4], sdk.ArrowConfig(**cfg), general)  # type: ignore[arg-type]
    protos = current_prototypes(ref)

    def refuse(*args: object) -> torch.Tensor:
        raise AssertionError("prototypes were recomputed")

    monkeypatch.setattr(arrow_mod, "expert_prototype", refuse)
    given = sdk.create_arrow_model(tiny_llama(), tasks[:4], sdk.ArrowConfig(**cfg), general,  # type: ignore[arg-type]
                                   prototypes=protos)
    torch.testing.assert_close(_logits(given), _logits(ref), atol=1e-6, rtol=1e-6)


def test_unseeded_prototype_is_the_exact_top_singular_vector() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 32, generator=g), torch.randn(24, 4, generator=g)
    v = expert_prototype(a, b, None)
    want = torch.linalg.svd(b @ a).Vh[0]
    assert abs(float(v @ want)) == pytest.approx(1.0, abs=1e-5)
    seeded = expert_prototype(a, b, 0)  # PEFT's 15 power steps land near it
    assert abs(float(seeded @ want)) > 0.99


def test_bad_libraries_are_refused_and_leave_the_base_model_alone(library: dict) -> None:
    tasks, _, misfit = library["linear"]
    base = tiny_llama()
    with pytest.raises(ConfigError, match="other shapes"):
        sdk.create_arrow_model(base, [tasks[0], misfit[0]], sdk.ArrowConfig(top_k=1))
    assert not list(iter_adapter_modules(base))
    with pytest.raises(ConfigError, match="top_k=3"):
        sdk.create_arrow_model(base, tasks[:2], sdk.ArrowConfig(top_k=3))
    with pytest.raises(ConfigError, match="general_adapter_paths"):
        sdk.create_arrow_model(base, tasks[:2], sdk.ArrowConfig(top_k=1, use_gks=True))
    with pytest.raises(ConfigError, match="neither a local adapter folder"):
        sdk.create_arrow_model(base, ["no/such/folder"], sdk.ArrowConfig(top_k=1))
    with pytest.raises(ConfigError, match="top_k"):
        sdk.ArrowConfig(top_k=0)
    with pytest.raises(ConfigError, match="router_temperature"):
        sdk.ArrowConfig(router_temperature=0.0)


def test_router_cannot_merge_or_join_a_mixed_batch(library: dict, tmp_path: Path) -> None:
    tasks, _, _ = library["linear"]
    model = sdk.create_arrow_model(tiny_llama(), tasks[:3], sdk.ArrowConfig(top_k=2, rng_seed=0))
    with pytest.raises(MergeError, match="per token"):
        model.merge_adapter()
    with pytest.raises(MixedBatchError, match="Arrow router"):
        model(ids(batch=2), adapter_names=["arrow_router", "task_0"])
    model.save_pretrained(tmp_path / "saved", selected_adapters=["arrow_router"])
    saved = peft.LoraConfig.from_pretrained(tmp_path / "saved" / "arrow_router")
    assert saved.arrow_config.top_k == 2 and saved.arrow_config.rng_seed == 0  # PEFT reads our router config
    written = json.loads((tmp_path / "saved" / "arrow_router" / "adapter_config.json").read_text())
    assert written["arrow_config"]["task_adapter_names"] == ["task_0", "task_1", "task_2"]
