"""Will this adapter load on a serving engine? A report per engine, from the adapter's config and tensor names.

Pure logic: :func:`facts_from_files` reads what matters from ``adapter_config.json`` and the safetensors
header's names and shapes (no tensor data), :func:`serving_report` answers for vLLM, SGLang, TGI and
llama.cpp, each verdict with its reason and what the engine must be started with. The registry
computes it when a version is published (and keeps it); a client computes the same with
:func:`report_for_folder`.

The rules restate what each engine's own code does (read there, cited at each rule); they are checked
against the engines' releases of 2025, and an engine may lift a limit later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

ENGINES: tuple[str, ...] = ("vllm", "sglang", "tgi", "llama.cpp")
#: vLLM's ``--max-lora-rank`` choices: ``MaxLoRARanks`` in vllm/config/lora.py (docs.vllm.ai, vllm.config.lora).
VLLM_MAX_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Module names SGLang's LoRA layers take (python/sglang/srt/lora/utils.py, get_normalized_target_modules:
#: q/k/v fold into qkv_proj, gate/up into gate_up_proj; embed_tokens and lm_head since 2025).
SGLANG_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "gate_proj", "up_proj",
                            "gate_up_proj", "down_proj", "embed_tokens", "lm_head"})
#: Layers TGI gives adapter slots (ADAPTER_LAYERS of its flash models, e.g.
#: server/text_generation_server/models/custom_modeling/flash_llama_modeling.py).
TGI_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"})
#: HF module names llama.cpp's tensor map knows (gguf-py/gguf/tensor_mapping.py, used by
#: convert_lora_to_gguf.py through the architecture's modify_tensors), for the common architectures.
LLAMA_CPP_TARGETS = frozenset({
    "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj",
    "embed_tokens", "lm_head", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "c_attn", "c_proj",
    "c_fc", "wte", "fc1", "fc2", "out_proj", "W_pack", "wq", "wk", "wv", "wo", "w1", "w2", "w3", "word_embeddings",
})
EMBEDDING_NAMES = frozenset({"embed_tokens", "wte", "word_embeddings", "embeddings", "vocab_emb"})
_FACTOR = re.compile(r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.weight)?$")
_PREFIX = "base_model.model."
Verdict = Literal["yes", "no"]


@dataclass(frozen=True)
class AdapterFacts:
    """What the engines' rules read about an adapter."""

    method: str
    max_rank: int | None = None
    #: last names of the adapted modules (``q_proj``…)
    targets: tuple[str, ...] = ()
    use_dora: bool = False
    use_rslora: bool = False
    #: per-module scales differ from ``lora_alpha / r`` (rank_pattern/alpha_pattern), as a reason, else None
    uneven_scale: str | None = None
    #: llama.cpp's scale ``lora_alpha / rank`` differs from the adapter's for some module, as a reason, else None
    alpha_pattern_scale: str | None = None
    #: trained biases (``bias`` other than none, or ``lora_bias``)
    biases: bool = False
    #: tensors that are not LoRA factors (modules_to_save copies, biases, DoRA magnitudes…), a few named
    extra_tensors: tuple[str, ...] = ()
    embedding: bool = False
    lm_head: bool = False
    #: full copies of adapted base layers (PEFT's ``save_embedding_layers`` writes ``<module>.base_layer.weight``)
    base_copies: tuple[str, ...] = ()


def _uneven(config: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(why one global scale is wrong, why llama.cpp's alpha/rank is wrong) for the config's patterns."""
    r, alpha = config.get("r") or 1, config.get("lora_alpha") or 1
    rslora = bool(config.get("use_rslora"))
    ranks, alphas = dict(config.get("rank_pattern") or {}), dict(config.get("alpha_pattern") or {})

    def scale(rank: float, a: float) -> float:
        return a / math.sqrt(rank) if rslora else a / rank

    base = scale(r, alpha)
    uneven = next((k for k in sorted(set(ranks) | set(alphas))
                   if not math.isclose(scale(ranks.get(k, r), alphas.get(k, alpha)), base)), None)
    wrong_alpha = next((k for k in sorted(alphas) if not math.isclose(alphas[k], alpha)), None)
    return (f"module pattern {uneven!r} has its own scale (rank_pattern/alpha_pattern)" if uneven else None,
            f"alpha_pattern gives {wrong_alpha!r} lora_alpha {alphas[wrong_alpha]}" if wrong_alpha else None)


def facts_from_files(config: Mapping[str, Any], shapes: Mapping[str, Sequence[int]]) -> AdapterFacts:
    """The facts of an adapter from its config (the JSON dict) and its tensors' names and shapes."""
    method = str(config.get("peft_type") or "?").upper()
    ranks: list[int] = []
    targets: set[str] = set()
    extra: list[str] = []
    copies: list[str] = []
    embedding = False
    for name, shape in shapes.items():
        found = _FACTOR.search(name)
        if found is None:
            (copies if ".base_layer." in name else extra).append(name.removeprefix(_PREFIX))
            continue
        path = name[: found.start()].removeprefix(_PREFIX)
        targets.add(path.rsplit(".", 1)[-1])
        embedding = embedding or "embedding" in found.group(1)
        if found.group(1) in ("lora_A", "lora_embedding_A") and shape:
            ranks.append(int(shape[0]))
    facts = _facts(config, method, max(ranks) if ranks else None, targets, embedding, extra)
    return replace(facts, base_copies=tuple(sorted(copies)[:5]))


def facts_from_summary(config: Mapping[str, Any], summary: Mapping[str, Any]) -> AdapterFacts:
    """The facts of a version published before reports existed: from its config and stored summary
    (targets by name, ranks from the config; copies and biases from the config's fields)."""
    method = str(config.get("peft_type") or summary.get("method") or "?").upper()
    ranks = [int(r) for r in [summary.get("r") or config.get("r"), *dict(summary.get("rank_pattern") or {}).values()]
             if isinstance(r, int)]
    extra = [f"{m} (modules_to_save)" for m in config.get("modules_to_save") or []]
    if config.get("use_dora"):
        extra.append("lora_magnitude_vector (DoRA)")
    targets = set(summary.get("targets") or [])
    return _facts(config, method, max(ranks) if ranks else None, targets, bool(targets & EMBEDDING_NAMES), extra)


def _facts(config: Mapping[str, Any], method: str, max_rank: int | None, targets: set[str], embedding: bool,
           extra: list[str]) -> AdapterFacts:
    uneven, alpha_wrong = _uneven(config) if method == "LORA" else (None, None)
    bias = str(config.get("bias") or "none")
    return AdapterFacts(
        method=method, max_rank=max_rank, targets=tuple(sorted(targets)), use_dora=bool(config.get("use_dora")),
        use_rslora=bool(config.get("use_rslora")), uneven_scale=uneven, alpha_pattern_scale=alpha_wrong,
        biases=bias != "none" or bool(config.get("lora_bias")), extra_tensors=tuple(sorted(extra)[:5]) if extra else (),
        embedding=embedding or bool(targets & EMBEDDING_NAMES), lm_head="lm_head" in targets,
    )


@dataclass
class EngineVerdict:
    """One engine's answer: ``yes``/``no``, why, and what the engine must be started with."""

    verdict: Verdict
    reason: str
    requires: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept with the version."""
        return {"verdict": self.verdict, "reason": self.reason, "requires": self.requires, **self.details}


def _no(reason: str) -> EngineVerdict:
    return EngineVerdict("no", reason)


def _common(f: AdapterFacts, engine: str) -> EngineVerdict | None:
    """Refusals every engine shares: only LoRA, no DoRA."""
    if f.method != "LORA":
        return _no(f"{engine} serves LoRA adapters only; this is a {f.method} adapter")
    if f.use_dora:
        return _no(f"{engine} has no DoRA support: the magnitude vectors (use_dora=True) cannot be applied")
    return None


def _extra(f: AdapterFacts) -> str:
    return ", ".join(f.extra_tensors) or "trained biases"


def _copies_note(f: AdapterFacts) -> str:
    """convert_lora_to_gguf.py skips ``.base_layer.weight`` tensors; the servers load the base model's own."""
    if not f.base_copies:
        return ""
    return (f"; the saved base copies ({', '.join(f.base_copies)}) are not loaded: the base model's own layers are "
            "used, the same unless the vocabulary was resized")


def vllm(f: AdapterFacts) -> EngineVerdict:
    """vLLM: vllm/lora/peft_helper.py (PEFTHelper._validate_features refuses modules_to_save and DoRA, one
    scale ``vllm_lora_scaling_factor`` = lora_alpha/r or /√r with rsLoRA), vllm/config/lora.py (MaxLoRARanks),
    --enable-lora-bias up to v0.10 (removed by vllm-project/vllm#25807)."""
    if (refused := _common(f, "vLLM")) is not None:
        if f.use_dora:
            refused.reason = "vLLM refuses DoRA adapters (\"vLLM does not yet support DoRA\", vllm/lora/peft_helper.py)"
        return refused
    copies = [t for t in f.extra_tensors if not t.endswith(".bias")]
    if copies:
        return _no(f"vLLM refuses modules_to_save (\"vLLM only supports modules_to_save being None\"); this adapter "
                   f"carries {', '.join(copies)}")
    if f.uneven_scale:
        return _no(f"vLLM applies one scale (lora_alpha/r) to every module; {f.uneven_scale}")
    if f.max_rank is None:
        return _no("the adapter has no LoRA factors")
    rank = next((r for r in VLLM_MAX_LORA_RANKS if r >= f.max_rank), None)
    if rank is None:
        return _no(f"rank {f.max_rank} is above vLLM's largest --max-lora-rank ({VLLM_MAX_LORA_RANKS[-1]})")
    requires = ["--enable-lora", f"--max-lora-rank {rank}"]
    notes = [f"largest rank {f.max_rank}, so --max-lora-rank {rank} or more"]
    if f.biases:
        requires.append("--enable-lora-bias")
        notes.append("trained biases need --enable-lora-bias (vLLM ≤ 0.10; 0.11 removed LoRA bias support)")
    if f.embedding or f.lm_head:
        notes.append("LoRA on embed_tokens/lm_head needs a model class that lists them as embedding_modules")
    if f.use_rslora:
        notes.append("rsLoRA's scale is applied")
    return EngineVerdict("yes", "; ".join(notes) + _copies_note(f), requires, {"max_lora_rank": rank})


def _weights_only_refusal(f: AdapterFacts, engine: str, layers: frozenset[str], *, rslora: bool,
                          embeddings: bool) -> EngineVerdict | None:
    """Refusals of a server that loads only lora_A/lora_B weights, with one scale per adapter, into ``layers``."""
    if (refused := _common(f, engine)) is not None:
        return refused
    if f.extra_tensors or f.biases:
        return _no(f"{engine} loads only lora_A/lora_B weights; this adapter's {_extra(f)} would be ignored")
    if f.use_rslora and not rslora:
        return _no(f"{engine} scales by lora_alpha/r; rsLoRA's lora_alpha/√r would not be applied")
    if f.embedding and not embeddings:
        return _no(f"{engine} maps lora_A/lora_B weights only; LoRA on embeddings (lora_embedding_A/B) is not served")
    if f.uneven_scale:
        return _no(f"{engine} applies one scale (lora_alpha/r) to every module; {f.uneven_scale}")
    unknown = sorted(set(f.targets) - layers)
    if unknown:
        return _no(f"{engine} has no LoRA layer for {', '.join(unknown)}")
    if f.max_rank is None:
        return _no("the adapter has no LoRA factors")
    return None


def sglang(f: AdapterFacts) -> EngineVerdict:
    """SGLang: python/sglang/srt/lora/ (lora_A/lora_B weights only, one scale lora_alpha/r per adapter,
    target names normalized by utils.get_normalized_target_modules; --max-lora-rank, --lora-target-modules)."""
    if (refused := _weights_only_refusal(f, "SGLang", SGLANG_TARGETS, rslora=False, embeddings=True)) is not None:
        return refused
    return EngineVerdict("yes", f"targets {', '.join(f.targets)} are SGLang LoRA modules; rank {f.max_rank}"
                         + _copies_note(f),
                         [f"--max-lora-rank {f.max_rank}", f"--lora-target-modules {' '.join(f.targets)}"],
                         {"max_lora_rank": f.max_rank})


def tgi(f: AdapterFacts) -> EngineVerdict:
    """TGI: server/text_generation_server/adapters/lora.py (LoraConfig keeps r, lora_alpha, use_rslora, target
    modules; map_weights_for_model takes ``<module>.lora_A.weight``/``lora_B.weight`` only; ranks are padded
    for the SGMV kernels)."""
    if (refused := _weights_only_refusal(f, "TGI", TGI_TARGETS, rslora=True, embeddings=False)) is not None:
        return refused
    return EngineVerdict("yes", f"targets {', '.join(f.targets)} have adapter slots; ranks are padded for the "
                         "SGMV kernels" + ("; rsLoRA's scale is applied" if f.use_rslora else "") + _copies_note(f),
                         ["--lora-adapters <id>"])


def llama_cpp(f: AdapterFacts) -> EngineVerdict:
    """llama.cpp: convert_lora_to_gguf.py (every tensor must be a lora_A/lora_B/lora_embedding pair, else it
    stops; one lora_alpha is written and llama.cpp scales by alpha/rank), names mapped by gguf-py's tensor map."""
    if (refused := _common(f, "llama.cpp")) is not None:
        if f.use_dora:
            refused.reason = ("convert_lora_to_gguf.py stops at DoRA's lora_magnitude_vector tensors (\"not a lora_A "
                              "or lora_B tensor\")")
        return refused
    if f.extra_tensors or f.biases:
        return _no(f"convert_lora_to_gguf.py stops at tensors that are not LoRA factors: {_extra(f)}")
    if f.use_rslora:
        return _no("llama.cpp scales by lora_alpha/rank; rsLoRA's lora_alpha/√r would be lost in conversion")
    if f.alpha_pattern_scale:
        return _no(f"the GGUF adapter holds one lora_alpha; {f.alpha_pattern_scale}")
    mapped = sorted(set(f.targets) & LLAMA_CPP_TARGETS)
    unmapped = sorted(set(f.targets) - LLAMA_CPP_TARGETS)
    details = {"mapped": mapped, "unmapped": unmapped}
    if unmapped or not mapped:
        verdict = _no(f"llama.cpp's tensor map has no entry for {', '.join(unmapped) or 'any target'}")
        verdict.details = details
        return verdict
    notes = f"targets {', '.join(mapped)} map to GGUF tensors"
    if f.lm_head:
        notes += "; lm_head fails on models whose output is tied to the embeddings"
    if f.base_copies:
        notes += f"; the converter skips the saved base copies ({', '.join(f.base_copies)})"
    return EngineVerdict("yes", notes, ["convert_lora_to_gguf.py --base <base model dir>", "--lora <adapter.gguf>"],
                         details)


RULES = {"vllm": vllm, "sglang": sglang, "tgi": tgi, "llama.cpp": llama_cpp}


def serving_report(facts: AdapterFacts) -> dict[str, Any]:
    """Every engine's verdict, ``serves`` (the engines answering yes) and vLLM's ``max_lora_rank`` (or None)."""
    engines = {name: RULES[name](facts).to_json() for name in ENGINES}
    serves = [name for name in ENGINES if engines[name]["verdict"] == "yes"]
    return {"engines": engines, "serves": serves, "max_lora_rank": engines["vllm"].get("max_lora_rank")}


def report_for_folder(folder: str | Path) -> dict[str, Any]:
    """The report of a saved PEFT adapter folder (reads the config and the safetensors header only)."""
    from .config import read_config_dict
    from .safetensors_header import read_header_from_path

    path = Path(folder)
    header, problems = read_header_from_path(path / "adapter_model.safetensors")
    if header is None:
        raise ValueError("; ".join(p.message for p in problems[:3]) or f"cannot read {path}")
    return serving_report(facts_from_files(read_config_dict(path), {n: i.shape for n, i in header.tensors.items()}))


def matches(report: Mapping[str, Any], serves: Iterable[str] = (), max_lora_rank: int | None = None) -> bool:
    """Whether a report passes search filters: every engine in ``serves`` answers yes, and vLLM needs at
    most ``max_lora_rank``."""
    if any(e not in report.get("serves", []) for e in serves):
        return False
    need = report.get("max_lora_rank")
    return max_lora_rank is None or (need is not None and need <= max_lora_rank)


__all__ = ["ENGINES", "VLLM_MAX_LORA_RANKS", "AdapterFacts", "EngineVerdict", "facts_from_files",
           "facts_from_summary", "matches", "report_for_folder", "serving_report"]
