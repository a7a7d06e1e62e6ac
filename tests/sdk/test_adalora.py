"""AdaLoRA: config checks, the budget schedule and pruning against hand computations, rank
allocation following the gradients, the orthogonal regulariser, the ``on_step_end`` hook, and
PEFT round trips both ways after training with pruning (outputs equal to 1e-5)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from safetensors import safe_open
from sdk_builders import build_model, model_inputs
from torch import nn

import sdk
from sdk.config import AdapterConfig
from sdk.errors import AdapterStateError, ConfigError
from sdk.signature import check_adapter, signature_from_model
from sdk.tuners.adalora import AdaLoraConfigWarning, AdaLoraLayer
from sdk.tuners.adalora.allocator import budget_schedule

ATOL = 1e-5
BETA = 0.85


def _config(lib: Any, **kw: Any) -> Any:
    """The same AdaLoRA config in ``sdk`` or ``peft``."""
    base: dict[str, Any] = {"init_r": 4, "target_r": 2, "tinit": 1, "tfinal": 2, "deltaT": 1, "total_step": 6}
    return lib.AdaLoraConfig(**{**base, **kw})


def _loss(model: nn.Module, kind: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    if kind == "conv":
        return model(**inputs).pow(2).mean()
    return model(**inputs, labels=inputs["input_ids"]).loss


def _train(model: nn.Module, kind: str, steps: int, hook: Callable[[int], None], lr: float = 2e-2) -> list[float]:
    """A plain loop: backward, step, the AdaLoRA hook, zero_grad. Returns the losses."""
    inputs = model_inputs(kind)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        loss = _loss(model, kind, inputs)
        loss.backward()
        opt.step()
        hook(step)
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def _outputs(model: nn.Module, kind: str) -> torch.Tensor:
    with torch.no_grad():
        out = model(**model_inputs(kind))
    return out if isinstance(out, torch.Tensor) else out.logits


def _layers(model: nn.Module) -> dict[str, AdaLoraLayer]:
    return {p: m for p, m in model.named_modules() if isinstance(m, AdaLoraLayer)}


def _saved(folder: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    config = json.loads((folder / "adapter_config.json").read_text())
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return config, shapes


TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "conv": ["conv", "fc"]}


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_step": None}, "total_step"),
        ({"total_step": 0}, "total_step"),
        ({"tinit": 4, "tfinal": 2, "total_step": 6}, "tinit < total_step - tfinal"),
        ({"tinit": 5, "tfinal": 0, "total_step": 5}, "tinit < total_step - tfinal"),
        ({"orth_reg_weight": -0.1}, "orth_reg_weight"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta2": 0.0}, "beta2"),
        ({"deltaT": 0}, "deltaT"),
        ({"target_r": 5}, "must not exceed `init_r`"),
        ({"init_r": 0, "target_r": 0}, "init_r"),
        ({"rank_pattern": {"q_proj": 4}}, "lora_E"),
        ({"rank_pattern": {"model.layers.0.self_attn.q_proj.lora_E": [True, False]}}, "init_r=4 booleans"),
    ],
)
def test_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(sdk, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"total_step": None}, {"total_step": 0}, {"tinit": 4, "tfinal": 2, "total_step": 6}, {"orth_reg_weight": -1.0}],
)
def test_config_errors_match_peft(kwargs: dict[str, Any]) -> None:
    """Where PEFT refuses a config, so do we."""
    with pytest.raises(ValueError):
        _config(peft, **kwargs)
    with pytest.raises(ConfigError):
        _config(sdk, **kwargs)


def test_config_refuses_peft_features_it_lacks_and_warns_on_ignored_fields() -> None:
    data = _config(sdk).to_dict()
    for key, value in (("use_dora", True), ("loftq_config", {"loftq_bits": 4})):
        with pytest.raises(ConfigError, match=key):
            sdk.config_from_dict({**data, key: value})
    with pytest.warns(AdaLoraConfigWarning, match="init_r"):
        _config(sdk, r=16)


def test_config_json_round_trip_with_peft_fields() -> None:
    cfg = _config(sdk, rank_pattern={"a.lora_E": [True, False, 1, 0]}, lora_alpha=16)
    data = json.loads(cfg.to_json())
    assert data["peft_type"] == "ADALORA"
    assert data["rank_pattern"] == {"a.lora_E": [True, False, True, False]}
    again = sdk.config_from_dict(data)
    assert again == cfg
    assert again.rank_for("a") == 2 and again.rank_for("b") == 4
    peft_keys = set(_config(peft).to_dict())
    assert {"init_r", "target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight",
            "total_step", "rank_pattern"} <= peft_keys & set(data)


# --- budget schedule and pruning ---------------------------------------------------------------


def test_budget_schedule_hand_values() -> None:
    """b0=48, bT=16, tinit=2, tfinal=3, T=10, deltaT=2: cubic decrease over steps 3..7."""
    cfg = _config(sdk, init_r=12, target_r=4, tinit=2, tfinal=3, total_step=10, deltaT=2)
    # step 3: 1 - 1/5 = 0.8 -> 32·0.512 + 16 = 32.384; 4: 0.6 -> 22.912; 5: 0.4 -> 18.048; 6: 0.2 -> 16.256; 7: 0 -> 16
    expected = [(48, False), (48, False), (48, False), (32, False), (22, True), (18, False), (16, True),
                (16, False), (16, True), (16, True)]
    assert [budget_schedule(t, cfg, 48, 16) for t in range(10)] == expected


def test_pruning_matches_hand_computation() -> None:
    """One hook call: EMAs from zero, triplet scores, the k lowest across all modules zeroed."""
    model = sdk.get_peft_model(
        build_model("llama"),
        _config(sdk, init_r=4, target_r=1, tinit=0, tfinal=0, total_step=10, init_lora_weights=False,
                orth_reg_weight=0.0, target_modules=TARGETS["llama"]),
    )
    layers = _layers(model.base_model)
    _loss(model.train(), "llama", model_inputs("llama")).backward()
    before = {p: {k: getattr(m, k)["default"].detach().clone() for k in ("lora_A", "lora_B", "lora_E")}
              for p, m in layers.items()}
    grads = {p: {k: getattr(m, k)["default"].grad.clone() for k in ("lora_A", "lora_B", "lora_E")}
             for p, m in layers.items()}
    model.on_step_end(1)
    # by hand: I = |p·g|; Ī = (1-β)·I; Ū = (1-β)·|I - Ī| = (1-β)·β·I; s = Ī·Ū
    scores = {}
    for path in layers:
        ipt = {k: (before[path][k] * grads[path][k]).abs() for k in before[path]}
        s = {k: ((1 - BETA) * v) * ((1 - BETA) * (v - (1 - BETA) * v).abs()) for k, v in ipt.items()}
        scores[path] = s["lora_E"].view(-1) + s["lora_A"].mean(dim=1) + s["lora_B"].mean(dim=0)
    # budget at t=1: int(12·0.9³ + 4) = int(12.748) = 12 of 16, so the 4 lowest triplets go
    assert budget_schedule(1, model.peft_config["default"], 16, 4) == (12, True)
    flat = sorted((v.item(), p, i) for p, s in scores.items() for i, v in enumerate(s))
    pruned = {(p, i) for _, p, i in flat[:4]}
    pattern = model.peft_config["default"].rank_pattern
    assert pattern is not None and sum(sum(m) for m in pattern.values()) == 12
    for path, layer in layers.items():
        e = layer.lora_E["default"].detach().view(-1)
        for i in range(4):
            if (path, i) in pruned:
                assert e[i] == 0 and pattern[f"{path}.lora_E"][i] is False
            else:
                assert e[i] == before[path]["lora_E"].view(-1)[i] and pattern[f"{path}.lora_E"][i] is True
        assert torch.equal(layer.lora_A["default"], before[path]["lora_A"])  # only Λ is pruned


class TwoPaths(nn.Module):
    """Two parallel layers; the loss depends 1000× more on ``strong`` than on ``weak``."""

    def __init__(self) -> None:
        super().__init__()
        self.strong = nn.Linear(16, 16)
        self.weak = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.strong(x) * 10.0 + self.weak(x) * 0.01


def test_rank_moves_to_the_layer_with_larger_gradients() -> None:
    torch.manual_seed(0)
    model = sdk.get_peft_model(
        TwoPaths(), _config(sdk, init_r=4, target_r=2, tinit=2, tfinal=3, total_step=15,
                            target_modules=["strong", "weak"]),
    )
    x, target = torch.randn(32, 16), torch.randn(32, 16)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(15):
        nn.functional.mse_loss(model(x), target).backward()
        opt.step()
        model.on_step_end(step)
        opt.zero_grad()
    pattern = model.peft_config["default"].rank_pattern
    assert sum(pattern["strong.lora_E"]) == 4  # the whole budget of 2 × 2 went to the layer that matters
    assert sum(pattern["weak.lora_E"]) == 0
    assert torch.all(model.base_model.weak.lora_E["default"] == 0)


# --- the hooks ------------------------------------------------------------------------------------


def test_orthogonal_regulariser_is_added_in_training_only(tmp_path: Path) -> None:
    cfg = _config(sdk, init_lora_weights=False, orth_reg_weight=0.3, target_modules=TARGETS["llama"],
                  task_type="CAUSAL_LM")
    model = sdk.get_peft_model(build_model("llama"), cfg)
    inputs = model_inputs("llama")
    model.eval()
    plain = model(**inputs, labels=inputs["input_ids"]).loss
    model.train()
    with_reg = model(**inputs, labels=inputs["input_ids"]).loss
    norms = []
    for layer in _layers(model.base_model).values():
        a, b = layer.lora_A["default"].detach(), layer.lora_B["default"].detach()
        for cov in (a @ a.T, b.T @ b):
            norms.append(math.sqrt(sum((cov[i, j].item() - (i == j)) ** 2 for i in range(4) for j in range(4))))
    assert with_reg.item() - plain.item() == pytest.approx(0.3 * sum(norms) / len(norms), rel=1e-4)
    with_reg.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # the same weights in PEFT give the same training loss (PEFT adds the term only through a
    # task-specific wrapper such as CAUSAL_LM's, but then to any loss, also in eval mode)
    model.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(build_model("llama"), tmp_path, is_trainable=True)
    assert theirs(**inputs, labels=inputs["input_ids"]).loss.item() == pytest.approx(with_reg.item(), abs=ATOL)


def test_on_step_end_needs_gradients_and_is_a_no_op_for_lora() -> None:
    model = sdk.get_peft_model(build_model("llama"), _config(sdk, target_modules=TARGETS["llama"]))
    with pytest.raises(AdapterStateError, match=r"before optimizer\.zero_grad"):
        model.on_step_end(2)
    lora = sdk.get_peft_model(build_model("llama"), sdk.LoraConfig(target_modules=["q_proj"]))
    lora.on_step_end(0)  # nothing to do, and no error
    out = lora.train()(**model_inputs("llama"), labels=model_inputs("llama")["input_ids"])
    lora.eval()
    again = lora(**model_inputs("llama"), labels=model_inputs("llama")["input_ids"])
    assert out.loss.item() == pytest.approx(again.loss.item())  # LoRA adds no extra loss


def test_update_and_allocate_is_on_step_end() -> None:
    """PEFT's name does the same; after the final step the masks stay applied."""
    patterns = []
    for use_alias in (False, True):
        model = sdk.get_peft_model(build_model("llama"), _config(sdk, target_modules=TARGETS["llama"]))
        hook = model.update_and_allocate if use_alias else model.on_step_end
        _train(model, "llama", 6, hook)
        patterns.append(model.peft_config["default"].rank_pattern)
        for path, layer in _layers(model.base_model).items():
            keep = torch.tensor(patterns[-1][f"{path}.lora_E"])
            assert torch.all(layer.lora_E["default"].view(-1)[~keep] == 0)
    assert patterns[0] == patterns[1]
    assert sum(sum(m) for m in patterns[0].values()) == 2 * 4  # target_r × modules


# --- PEFT round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2", "conv"])
def test_sdk_trained_adapter_loads_in_peft(kind: str, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gpt2: fan_in_fan_out set for Conv1D
        model = sdk.get_peft_model(build_model(kind), _config(sdk, target_modules=TARGETS[kind]))
    losses = _train(model, kind, 6, model.on_step_end)
    assert losses[-1] < losses[0]
    cfg = model.peft_config["default"]
    assert cfg.rank_pattern is not None and sum(sum(m) for m in cfg.rank_pattern.values()) == 2 * len(_layers(model))
    ours = _outputs(model, kind)
    with model.disable_adapter():
        assert not torch.allclose(_outputs(model, kind), ours, atol=1e-4)
    model.save_pretrained(tmp_path)
    saved_cfg, shapes = _saved(tmp_path)
    assert saved_cfg["peft_type"] == "ADALORA" and saved_cfg["rank_pattern"] == cfg.rank_pattern
    for key, mask in cfg.rank_pattern.items():
        path = "base_model.model." + key.removesuffix(".lora_E")
        assert shapes[f"{path}.lora_E"] == (sum(mask), 1)
        assert shapes[f"{path}.lora_A"][0] == sum(mask) and shapes[f"{path}.lora_B"][1] == sum(mask)
    assert check_adapter(signature_from_model(build_model(kind)), sdk.config_from_dict(saved_cfg), shapes) == []
    theirs = peft.PeftModel.from_pretrained(build_model(kind), tmp_path).eval()
    torch.testing.assert_close(_outputs(theirs, kind), ours, atol=ATOL, rtol=ATOL)
    back = sdk.AdapterModel.from_pretrained(build_model(kind), tmp_path)
    torch.testing.assert_close(_outputs(back, kind), ours, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "conv"])
def test_peft_trained_adapter_loads_in_sdk(kind: str, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        theirs = peft.get_peft_model(build_model(kind), _config(peft, target_modules=TARGETS[kind]))
    _train(theirs, kind, 6, theirs.base_model.update_and_allocate)
    expected = _outputs(theirs, kind)
    theirs.save_pretrained(tmp_path)
    saved_cfg, shapes = _saved(tmp_path)
    assert saved_cfg["rank_pattern"]
    config = sdk.config_from_dict(saved_cfg)
    assert check_adapter(signature_from_model(build_model(kind)), config, shapes) == []
    ours = sdk.AdapterModel.from_pretrained(build_model(kind), tmp_path)
    torch.testing.assert_close(_outputs(ours, kind), expected, atol=ATOL, rtol=ATOL)
    for path, layer in _layers(ours).items():
        assert layer.r["default"] == sum(saved_cfg["rank_pattern"][f"{path.removeprefix('base_model.')}.lora_E"])
    # mixed batches and merged weights agree with the plain forward
    names = ["default", "__base__"] * 2 + ["default"]  # one per sample of the 5
    with torch.no_grad():
        mixed = ours(**model_inputs(kind), adapter_names=names)
    mixed = mixed if isinstance(mixed, torch.Tensor) else mixed.logits
    with ours.disable_adapter():
        plain = _outputs(ours, kind)
    torch.testing.assert_close(mixed[0::2], expected[0::2], atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(mixed[1::2], plain[1::2], atol=ATOL, rtol=ATOL)
    ours.merge_adapter()
    torch.testing.assert_close(_outputs(ours, kind), expected, atol=1e-4, rtol=1e-4)


def test_loaded_trained_adapter_keeps_its_ranks_when_trained_on(tmp_path: Path) -> None:
    """A cut adapter's allocation is finished: the hook leaves it alone, the regulariser still applies."""
    model = sdk.get_peft_model(build_model("llama"), _config(sdk, target_modules=TARGETS["llama"]))
    _train(model, "llama", 6, model.on_step_end)
    model.save_pretrained(tmp_path)
    again = sdk.AdapterModel.from_pretrained(build_model("llama"), tmp_path, is_trainable=True)
    ranks = {p: m.r["default"] for p, m in _layers(again).items()}
    _train(again, "llama", 3, again.on_step_end)
    assert {p: m.r["default"] for p, m in _layers(again).items()} == ranks


def test_untrained_adapter_has_zero_singular_values_and_registry_shapes(tmp_path: Path) -> None:
    model = sdk.get_peft_model(build_model("llama"), _config(sdk, target_modules=TARGETS["llama"]))
    model.save_pretrained(tmp_path)
    saved_cfg, shapes = _saved(tmp_path)
    assert saved_cfg["rank_pattern"] is None
    tuner = sdk.get_method("ADALORA").tuner
    zero = [k for k in shapes if tuner.zero_at_init(k)]
    assert len(zero) == 4 and all(shapes[k] == (4, 1) for k in zero)
    sig = signature_from_model(build_model("llama"))
    cfg: AdapterConfig = sdk.config_from_dict(saved_cfg)
    assert check_adapter(sig, cfg, shapes) == []
    bad = dict(shapes)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A"
    bad[key] = (3, 32)
    problems = check_adapter(sig, cfg, bad)
    assert [p.tensor for p in problems] == [key] and "r is 3, expected 4" in problems[0].message


def test_schedule_matches_peft_step_by_step(tmp_path: Path) -> None:
    """Same start, data and optimizer: the same masks at every step and the same final model."""
    kw = {"target_modules": TARGETS["llama"], "task_type": "CAUSAL_LM", "init_r": 6, "target_r": 2,
          "tinit": 1, "tfinal": 2, "deltaT": 2, "total_step": 9}
    theirs = peft.get_peft_model(build_model("llama"), _config(peft, **kw))
    theirs.save_pretrained(tmp_path)  # the untrained start, so that both begin identical
    ours = sdk.AdapterModel.from_pretrained(build_model("llama"), tmp_path, is_trainable=True)
    seen: dict[str, list[dict[str, list[bool]] | None]] = {"peft": [], "sdk": []}

    def record(lib: str, model: Any, hook: Callable[[int], None]) -> Callable[[int], None]:
        def run(step: int) -> None:
            hook(step)
            pattern = model.peft_config["default"].rank_pattern
            seen[lib].append({k.replace(".default", ""): list(v) for k, v in pattern.items()} if pattern else None)
        return run

    _train(theirs, "llama", 9, record("peft", theirs, theirs.base_model.update_and_allocate))
    _train(ours, "llama", 9, record("sdk", ours, ours.on_step_end))
    assert seen["sdk"] == seen["peft"]
    assert sum(seen["sdk"][3][k].count(True) for k in seen["sdk"][3]) < 6 * 4  # pruning happened mid-way
    torch.testing.assert_close(_outputs(ours, "llama"), _outputs(theirs, "llama"), atol=ATOL, rtol=ATOL)


def test_registry_validation_accepts_peft_files_with_pruned_modules(tmp_path: Path) -> None:
    """PEFT writes modules pruned to rank 0 as empty tensors; the upload check takes them, and
    refuses an untrained adapter (every Λ zero) unless it is pushed as untrained."""
    from sdk.validation import ValidationFailed, check_weights

    sig = signature_from_model(build_model("llama"))
    theirs = peft.get_peft_model(build_model("llama"), _config(peft, target_modules=TARGETS["llama"], target_r=1))
    theirs.save_pretrained(tmp_path / "untrained")
    _train(theirs, "llama", 6, theirs.base_model.update_and_allocate)
    theirs.save_pretrained(tmp_path / "trained")
    for name in ("untrained", "trained"):
        folder = tmp_path / name
        data = (folder / "adapter_model.safetensors").read_bytes()
        config = sdk.config_from_dict(_saved(folder)[0])

        def read_at(offset: int, size: int, data: bytes = data) -> bytes:
            return data[offset:offset + size]

        if name == "untrained":
            with pytest.raises(ValidationFailed, match="lora_E"):
                check_weights(read_at, len(data), config, sig)
            check_weights(read_at, len(data), config, sig, allow_untrained=True)
        else:
            checked = check_weights(read_at, len(data), config, sig)
            assert checked.summary["method"] == "ADALORA" and checked.summary["modules"] == 4
