"""A short tour of the SDK on a tiny Llama built from a config (no downloads).

Run with ``python -m sdk.demo``: trains a LoRA adapter to copy tokens, adds a second adapter,
serves a mixed batch, merges and unmerges, saves in PEFT's format and loads it back.
"""

from __future__ import annotations

import tempfile

import torch
from tqdm import tqdm

from . import AdapterModel, LoraConfig, get_peft_model


def _tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg)


def main(steps: int = 150) -> None:
    """Run the tour and print what happens at each step."""
    model = get_peft_model(_tiny_llama(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    model.print_trainable_parameters()

    # Task: predict the token two positions back (a copy task the random base cannot do).
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    first = last = 0.0
    for step in (bar := tqdm(range(steps), desc="training 'default'")):
        x = torch.randint(0, 64, (16, 24))
        logits = model(input_ids=x).logits[:, 2:-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), x[:, 1:-2].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        first = loss.item() if step == 0 else first
        last = loss.item()
        bar.set_postfix(loss=f"{last:.3f}")
    print(f"loss {first:.3f} -> {last:.3f}")

    model.add_adapter("other", LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.eval()
    x = torch.randint(0, 64, (3, 12))
    with torch.no_grad():
        mixed = model(input_ids=x, adapter_names=["default", "other", "__base__"]).logits
        model.set_adapter("other")
        other = model(input_ids=x).logits
        model.set_adapter("default")
        plain = model(input_ids=x).logits
        print("mixed batch row 0 == 'default':", torch.allclose(mixed[0], plain[0], atol=1e-5))
        print("mixed batch row 1 == 'other':  ", torch.allclose(mixed[1], other[1], atol=1e-5))
        model.merge_adapter()
        merged = model(input_ids=x).logits
        model.unmerge_adapter()
        print("merged == unmerged:", torch.allclose(merged, plain, atol=1e-4))

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        loaded = AdapterModel.from_pretrained(_tiny_llama(), tmp)
        with torch.no_grad():
            again = loaded(input_ids=x).logits
        print(f"saved to PEFT format and reloaded; same outputs: {torch.allclose(again, plain, atol=1e-5)}")


if __name__ == "__main__":
    main()
