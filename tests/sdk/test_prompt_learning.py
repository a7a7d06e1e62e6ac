"""Prompt tuning, prefix tuning and P-tuning on tiny Llama, GPT-2 and classifier models.

Each method: forward and generate with (left-padded) attention masks, a frozen base model, one
training step that changes only prompt parameters, save/load with identical outputs, PEFT's file
layout, and round trips with the real ``peft`` package both ways (identical within 1e-5). Then the
multi-adapter rules, the clear errors, and the checks of an adapter against a base signature.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import sdk
from sdk.signature import Signature, check_adapter, signature_from_model
from sdk.tuners.prompt import PrefixTuningConfig, PromptEncoderConfig, PromptLearningLayer, PromptTuningConfig

ATOL = 1e-5
VOCAB = 100
N = 3  # virtual tokens


# --- models -----------------------------------------------------------------------------------------


def llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None  # greedy runs the full length, comparable to a manual loop
    return model


def gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    model.generation_config.eos_token_id = None
    return model


def llama_cls(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=3, pad_token_id=0)
    return LlamaForSequenceClassification(cfg).eval()


def bert_cls(seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


CAUSAL = {"llama": llama, "gpt2": gpt2}
METHODS: dict[str, Callable[..., sdk.AdapterConfig]] = {
    "prompt": lambda **kw: PromptTuningConfig(num_virtual_tokens=N, **kw),
    "prefix": lambda **kw: PrefixTuningConfig(num_virtual_tokens=N, **kw),
    "prefix-mlp": lambda **kw: PrefixTuningConfig(num_virtual_tokens=N, prefix_projection=True, encoder_hidden_size=8,
                                                  **kw),
    "ptuning-mlp": lambda **kw: PromptEncoderConfig(num_virtual_tokens=N, encoder_hidden_size=16, **kw),
    "ptuning-lstm": lambda **kw: PromptEncoderConfig(num_virtual_tokens=N, encoder_hidden_size=8,
                                                     encoder_reparameterization_type="LSTM", **kw),
}
PEFT_METHODS: dict[str, Callable[..., Any]] = {
    "prompt": lambda **kw: peft.PromptTuningConfig(num_virtual_tokens=N, **kw),
    "prefix": lambda **kw: peft.PrefixTuningConfig(num_virtual_tokens=N, **kw),
    "prefix-mlp": lambda **kw: peft.PrefixTuningConfig(num_virtual_tokens=N, prefix_projection=True,
                                                       encoder_hidden_size=8, **kw),
    "ptuning-mlp": lambda **kw: peft.PromptEncoderConfig(num_virtual_tokens=N, encoder_hidden_size=16, **kw),
    "ptuning-lstm": lambda **kw: peft.PromptEncoderConfig(num_virtual_tokens=N, encoder_hidden_size=8,
                                                          encoder_reparameterization_type="LSTM", **kw),
}


def batch(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (3 × 6) and a left-padding mask: sample 0 has two pads, sample 1 one."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (3, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    mask[1, :1] = 0
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (what ``generate`` uses)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def prompt_params(model: sdk.AdapterModel) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if ".encoders." in n}


def randomise(model: sdk.AdapterModel, seed: int = 7) -> None:
    """Random values in every prompt parameter (a zero-init prefix would hide layout mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prompt_params(model).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# --- forward, generate, training ----------------------------------------------------------------------


# the LSTM encoder is exercised by save/load and the peft round trips; it is the slowest to run
FAST = [m for m in METHODS if m != "ptuning-lstm"]


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("kind", list(CAUSAL))
def test_forward_masks_and_generate(kind: str, method: str) -> None:
    model = sdk.get_peft_model(CAUSAL[kind](), METHODS[method]())
    model.eval()
    randomise(model)
    ids, mask = batch()
    out = model(input_ids=ids, attention_mask=mask).logits
    extra = 0 if method.startswith("prefix") else N
    assert out.shape == (3, 6 + extra, VOCAB)  # prompt methods return logits for the virtual tokens too
    with model.disable_adapter():
        base = model(input_ids=ids, attention_mask=mask).logits
    assert (out[:, extra:] - base).abs().max() > 1e-3  # the prompt changes the output
    # the extended mask still hides the padding: a different token under a pad changes nothing
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % VOCAB
    again = model(input_ids=changed, attention_mask=mask).logits
    torch.testing.assert_close(again[0, extra + 2:], out[0, extra + 2:], atol=ATOL, rtol=0)
    # generate (virtual tokens / prefix only on the first step) equals a greedy loop over forward
    seq, m = ids.clone(), mask.clone()
    for _ in range(4):
        logits = model(input_ids=seq, attention_mask=m, position_ids=positions(m)).logits[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
        m = torch.cat([m, torch.ones(3, 1, dtype=m.dtype)], dim=1)
    generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, seq)


# (the contract table, tests/sdk/test_method_contract.py, also trains and reloads every method on both models)
LIGHT = [("llama", m) for m in METHODS] + [("gpt2", "prompt"), ("gpt2", "prefix"), ("gpt2", "ptuning-lstm")]


@pytest.mark.parametrize(("kind", "method"), [p for p in LIGHT if p[1] in FAST])
def test_one_training_step_changes_only_prompt_parameters(kind: str, method: str) -> None:
    model = sdk.get_peft_model(CAUSAL[kind](), METHODS[method]())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(prompt_params(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # labels padded for the virtual tokens
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trainable


# --- save / load ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "method"), LIGHT)
def test_save_load_identical(tmp_path: Path, kind: str, method: str) -> None:
    model = sdk.get_peft_model(CAUSAL[kind](), METHODS[method]())
    model.eval()
    randomise(model)
    ids, mask = batch()
    want = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    layers, heads, kv, hidden = (2, 4, 2, 32) if kind == "llama" else (2, 4, 4, 32)
    if method.startswith("prefix"):
        token_dim = kv * hidden // heads  # key/value width (grouped-query attention on Llama)
        assert tensors["prompt_embeddings"].shape == (N, layers * 2 * token_dim)
        assert config["num_attention_heads"] == kv
    else:
        token_dim = hidden
        assert tensors["prompt_embeddings"].shape == (N, hidden)
        assert config["num_attention_heads"] == heads
    assert list(tensors) == ["prompt_embeddings"]
    assert (config["token_dim"], config["num_layers"], config["num_transformer_submodules"]) == (token_dim, layers, 1)
    loaded = sdk.AdapterModel.from_pretrained(CAUSAL[kind](), tmp_path)
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, want, atol=ATOL, rtol=0)
    # loaded for training: the saved table is the trainable parameter, same outputs
    trainable = sdk.AdapterModel.from_pretrained(CAUSAL[kind](), tmp_path, is_trainable=True)
    assert [p.shape for p in trainable.parameters() if p.requires_grad] == [tensors["prompt_embeddings"].shape]
    torch.testing.assert_close(trainable(input_ids=ids, attention_mask=mask).logits, want, atol=ATOL, rtol=0)


# --- round trips with peft -------------------------------------------------------------------------


def _quiet() -> warnings.catch_warnings:
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore")
    return w


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("kind", list(CAUSAL))
def test_peft_round_trip_both_ways(tmp_path: Path, kind: str, method: str) -> None:
    ids, mask = batch()
    # ours -> peft
    ours = sdk.get_peft_model(CAUSAL[kind](), METHODS[method](task_type="CAUSAL_LM"))
    ours.eval()
    randomise(ours)
    want = ours(input_ids=ids, attention_mask=mask).logits
    ours.save_pretrained(tmp_path / "ours")
    w = _quiet()
    try:
        theirs = peft.PeftModel.from_pretrained(CAUSAL[kind](), tmp_path / "ours").eval()
        torch.testing.assert_close(theirs(input_ids=ids, attention_mask=mask).logits, want, atol=ATOL, rtol=0)
        # peft -> ours
        made = peft.get_peft_model(CAUSAL[kind](), PEFT_METHODS[method](task_type="CAUSAL_LM")).eval()
        with torch.no_grad():
            for p in made.prompt_encoder.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        want2 = made(input_ids=ids, attention_mask=mask).logits
        made.save_pretrained(tmp_path / "theirs")
        peft_config = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    finally:
        w.__exit__(None, None, None)
    loaded = sdk.AdapterModel.from_pretrained(CAUSAL[kind](), tmp_path / "theirs")
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, want2, atol=ATOL, rtol=0)
    # the model sizes we fill in are the ones peft fills in
    mine = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    for key in ("token_dim", "num_layers", "num_attention_heads", "num_transformer_submodules",
                "encoder_hidden_size", "num_virtual_tokens", "peft_type"):
        assert mine.get(key) == peft_config.get(key), key


@pytest.mark.parametrize("method", ["prompt", "ptuning-mlp"])
@pytest.mark.parametrize("make", [bert_cls, llama_cls], ids=["bert", "llama"])
def test_sequence_classifier_round_trip_with_peft(tmp_path: Path, make: Callable[[], nn.Module], method: str) -> None:
    ids, mask = batch()
    types = torch.zeros_like(ids) if make is bert_cls else None
    extra = {"token_type_ids": types} if types is not None else {}
    ours = sdk.get_peft_model(make(), METHODS[method](task_type="SEQ_CLS"))
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    head = "classifier" if make is bert_cls else "score"
    assert trainable == set(prompt_params(ours)) | {n for n in trainable if f"{head}.copies.default." in n}
    ours.eval()
    randomise(ours)
    want = ours(input_ids=ids, attention_mask=mask, **extra).logits
    assert want.shape == (3, 3)
    ours.save_pretrained(tmp_path / "ours")
    keys = set(load_file(str(tmp_path / "ours" / "adapter_model.safetensors")))
    assert "prompt_embeddings" in keys and f"base_model.{head}.weight" in keys  # PEFT's names
    w = _quiet()
    try:
        theirs = peft.PeftModel.from_pretrained(make(), tmp_path / "ours").eval()
        torch.testing.assert_close(theirs(input_ids=ids, attention_mask=mask, **extra).logits, want, atol=ATOL, rtol=0)
        made = peft.get_peft_model(make(), PEFT_METHODS[method](task_type="SEQ_CLS")).eval()
        with torch.no_grad():
            for p in made.prompt_encoder.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        want2 = made(input_ids=ids, attention_mask=mask, **extra).logits
        made.save_pretrained(tmp_path / "theirs")
    finally:
        w.__exit__(None, None, None)
    loaded = sdk.AdapterModel.from_pretrained(make(), tmp_path / "theirs")
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask, **extra).logits, want2, atol=ATOL, rtol=0)


def test_prefix_tuning_on_llama_classifier(tmp_path: Path) -> None:
    """peft 0.21.2 cannot run prefix tuning on a classifier with transformers 5 (it looks for a
    ``past_key_values`` argument); ours runs it, and the file is in peft's layout."""
    ids, mask = batch()
    model = sdk.get_peft_model(llama_cls(), PrefixTuningConfig(num_virtual_tokens=N, task_type="SEQ_CLS"))
    model.eval()
    randomise(model)
    out = model(input_ids=ids, attention_mask=mask).logits
    with model.disable_adapter():
        assert (model(input_ids=ids, attention_mask=mask).logits - out).abs().max() > 1e-4
    model.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert tensors["prompt_embeddings"].shape == (N, 2 * 2 * 16) and "base_model.score.weight" in tensors
    loaded = sdk.AdapterModel.from_pretrained(llama_cls(), tmp_path)
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, out, atol=ATOL, rtol=0)
    with pytest.raises(sdk.UnsupportedLayerError, match="key/value cache"):
        sdk.get_peft_model(bert_cls(), PrefixTuningConfig(num_virtual_tokens=N))


# --- TEXT init with a local tokenizer ------------------------------------------------------------------


def tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]"] + [f"w{i}" for i in range(60)] + ["classify", "the", "review"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def test_text_init_from_tokenizer_object_and_local_folder_matches_peft(tmp_path: Path) -> None:
    tok = tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    text = "classify the review"
    from_object = sdk.get_peft_model(llama(), PromptTuningConfig(
        num_virtual_tokens=5, prompt_tuning_init="TEXT", prompt_tuning_init_text=text, tokenizer=tok))
    table = next(iter(prompt_params(from_object).values())).detach()
    embed = llama().get_input_embeddings().weight.detach()
    torch.testing.assert_close(table, embed[[62, 63, 64, 62, 63]])  # the text's ids, repeated to 5 rows
    from_folder = sdk.get_peft_model(llama(), PromptTuningConfig(
        num_virtual_tokens=5, prompt_tuning_init="TEXT", prompt_tuning_init_text=text,
        tokenizer_name_or_path=str(tmp_path / "tok")))
    torch.testing.assert_close(next(iter(prompt_params(from_folder).values())).detach(), table)
    w = _quiet()
    try:
        theirs = peft.get_peft_model(llama(), peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=5, prompt_tuning_init="TEXT", prompt_tuning_init_text=text,
            tokenizer_name_or_path=str(tmp_path / "tok")))
    finally:
        w.__exit__(None, None, None)
    torch.testing.assert_close(theirs.prompt_encoder["default"].embedding.weight.detach(), table)
    # the tokenizer object is not saved; a reloaded TEXT config needs no tokenizer
    from_object.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    assert "tokenizer" not in saved and saved["prompt_tuning_init"] == "TEXT"
    loaded = sdk.AdapterModel.from_pretrained(llama(), tmp_path / "saved", is_trainable=True)
    torch.testing.assert_close(next(iter(prompt_params(loaded).values())).detach(), table)
    with pytest.raises(sdk.ConfigError, match="needs a tokenizer"):
        PromptTuningConfig(num_virtual_tokens=5, prompt_tuning_init="TEXT", prompt_tuning_init_text=text)
    with pytest.raises(sdk.ConfigError, match="nothing is downloaded"):
        sdk.get_peft_model(llama(), PromptTuningConfig(
            num_virtual_tokens=5, prompt_tuning_init="TEXT", prompt_tuning_init_text=text,
            tokenizer_name_or_path=str(tmp_path / "no-such-tokenizer")))


# --- several adapters, and what is refused ---------------------------------------------------------------


def test_several_prompt_adapters_switch_and_unload() -> None:
    ids, mask = batch()
    model = sdk.get_peft_model(gpt2(), PromptTuningConfig(num_virtual_tokens=N))
    model.add_adapter("pre", PrefixTuningConfig(num_virtual_tokens=2))
    model.eval()
    randomise(model)
    first = model(input_ids=ids, attention_mask=mask).logits
    model.set_adapter("pre")
    second = model(input_ids=ids, attention_mask=mask).logits
    assert second.shape[1] == 6 and first.shape[1] == 6 + N
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n in prompt_params(model) if ".encoders.pre." in n}
    with pytest.raises(sdk.AdapterStateError, match="only one prompt adapter"):
        model.set_adapter(["default", "pre"])
    assert model.active_adapters == ["pre"]
    model.set_adapter("default")
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, first)
    model.delete_adapter("pre")
    plain = model.unload()
    assert not any(isinstance(m, PromptLearningLayer) for m in plain.modules())
    assert not plain._forward_pre_hooks  # the call-rewriting hook is gone too
    torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask).logits, gpt2()(input_ids=ids,
                                                                                        attention_mask=mask).logits)


def test_refusals_name_the_reason() -> None:
    ids, _ = batch()
    model = sdk.get_peft_model(llama(), PromptTuningConfig(num_virtual_tokens=N))
    with pytest.raises(sdk.AdapterStateError, match="cannot be combined in one model"):
        model.add_adapter("lora", sdk.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(sdk.MergeError, match="nothing to add into the weights"):
        model.merge_adapter()
    with pytest.raises(sdk.MergeError, match="cannot be merged"):
        model.merge_and_unload()
    model.eval()
    with pytest.raises(sdk.MixedBatchError, match="cannot be mixed per sample"):
        model(input_ids=ids, adapter_names=["default", "__base__", "default"])
    lora = sdk.get_peft_model(llama(), sdk.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(sdk.AdapterStateError, match="cannot be combined in one model"):
        lora.add_adapter("prompt", PrefixTuningConfig(num_virtual_tokens=N))
    with pytest.raises(sdk.ConfigError, match="token_dim=48 but the base model's width of the virtual tokens is 32"):
        sdk.get_peft_model(llama(), PromptTuningConfig(num_virtual_tokens=N, token_dim=48))
    with pytest.raises(sdk.ConfigError, match="num_virtual_tokens"):
        PromptTuningConfig()
    with pytest.raises(sdk.ConfigError, match="encoder-decoder"):
        PrefixTuningConfig(num_virtual_tokens=N, num_transformer_submodules=2)
    with pytest.raises(sdk.ConfigError, match="encoder_reparameterization_type"):
        PromptEncoderConfig(num_virtual_tokens=N, encoder_reparameterization_type="GRU")


# --- against a base-model signature ---------------------------------------------------------------------


def shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}


@pytest.mark.parametrize("method", list(METHODS))
def test_signature_checks(tmp_path: Path, method: str) -> None:
    sdk.get_peft_model(llama(), METHODS[method]()).save_pretrained(tmp_path)
    config = sdk.config_from_dict(json.loads((tmp_path / "adapter_config.json").read_text()))
    sig = signature_from_model(llama())
    assert sig.dims == {"hidden_size": 32, "num_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                        "head_dim": 8}
    assert Signature.from_dict(json.loads(json.dumps(sig.to_dict()))) == sig
    assert Signature(sig.modules, sig.model_type, sig.architecture, sig.output_heads).fingerprint == sig.fingerprint
    found = shapes(tmp_path)
    assert check_adapter(sig, config, found) == []
    for field, value, message in [
        ("num_layers", 5, "num_layers=5 but the base model's number of transformer layers is 2"),
        ("num_attention_heads", 8, "num_attention_heads=8"),
        ("token_dim", 64, "token_dim=64"),
    ]:
        problems = check_adapter(sig, config.copy(**{field: value}), found)
        assert len(problems) == 1 and message in problems[0].message, problems
    wrong = dict(found, prompt_embeddings=(N + 1, found["prompt_embeddings"][1]))
    problems = check_adapter(sig, config, wrong)
    assert [p.tensor for p in problems] == ["prompt_embeddings"] and "num_virtual_tokens" in problems[0].message
    problems = check_adapter(sig, config, {})
    assert [p.tensor for p in problems] == ["prompt_embeddings"] and "missing" in problems[0].message
    problems = check_adapter(sig, config, {"base_model.model.prompt_embeddings": found["prompt_embeddings"]})
    assert {p.tensor for p in problems} == {"base_model.model.prompt_embeddings", "prompt_embeddings"}
    # the tiny GPT-2 has the same hidden size, layers and heads, but 4 key/value heads where the Llama has 2:
    # input-side prompts fit it, a prefix does not
    other = check_adapter(signature_from_model(gpt2()), config, found)
    if method.startswith("prefix"):
        assert len(other) == 1 and "token_dim=16 but the base model's width" in other[0].message, other
        assert "key/value heads 4 × head_dim 8" in other[0].message
    else:
        assert other == []
