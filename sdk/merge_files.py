"""Merging adapters saved as folders: the file-level front of :mod:`sdk.merging`.

:func:`combine_lora_adapter_dirs` combines saved adapter folders into a new saved adapter, and
:func:`merge_adapter_into_base` merges a saved (or in-memory) LoRA adapter into a base model's
safetensors files. Both read PEFT's format with :mod:`sdk.formats` and turn the config into the
plain values :mod:`sdk.merging` works on, which does the tensor work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch import Tensor

from .config import AdapterConfig
from .errors import MergeError
from .formats import read_adapter_weights, read_config, save_adapter
from .merging.combine import combine_lora_adapters
from .merging.deltas import LayerKind
from .merging.into_base import MergeProgress, MergeReport, merge_lora_into_shards, read_base_shards
from .merging.options import CombinationType, LoraSettings
from .methods import config_from_dict
from .tuners.lora.config import LoraConfig


def combine_lora_adapter_dirs(
    adapter_dirs: Sequence[str | Path],
    weights: Sequence[float],
    out_dir: str | Path,
    combination_type: CombinationType = "svd",
    **options: object,
) -> LoraConfig:
    """:func:`~sdk.merging.combine.combine_lora_adapters` over saved adapter folders; writes the result to ``out_dir``.

    ``options`` are :func:`~sdk.merging.combine.combine_lora_adapters`' keyword arguments. Returns the new config.
    """
    configs = [config_from_dict(read_config(d)) for d in adapter_dirs]
    tensors = [read_adapter_weights(d) for d in adapter_dirs]
    state, config = combine_lora_adapters(tensors, configs, weights, combination_type, **options)  # type: ignore[arg-type]
    save_adapter(out_dir, config, state)
    return config  # type: ignore[return-value]  # a combination of LoRA configs is one


def _read_adapter(adapter: str | Path | tuple[Mapping[str, Tensor], AdapterConfig]
                  ) -> tuple[dict[str, Tensor], AdapterConfig]:
    """A saved adapter's (or an in-memory one's) tensors and config; the config is read first."""
    if isinstance(adapter, tuple):
        tensors, config = adapter
        return dict(tensors), config
    config = config_from_dict(read_config(adapter))
    return read_adapter_weights(adapter), config


def merge_adapter_into_base(
    base_dir_or_files: str | Path | Sequence[str | Path],
    adapter_dir: str | Path | tuple[Mapping[str, Tensor], LoraConfig],
    out_dir: str | Path,
    *,
    kinds: Mapping[str, LayerKind] | None = None,
    weight: float = 1.0,
    progress: Callable[[MergeProgress], None] | None = None,
    show_progress: bool = False,
    chunk_bytes: int = 16 << 20,
    copy_other_files: bool = True,
    verify: bool = False,
) -> MergeReport:
    """Write the base model with ``adapter_dir``'s LoRA merged in (W + weight·scale·B·A) to ``out_dir``.

    ``base_dir_or_files`` is a folder (``model.safetensors`` or shards with
    ``model.safetensors.index.json``) or a list of safetensors files. ``adapter_dir`` is a saved
    PEFT LoRA folder or an in-memory ``(state_dict, LoraConfig)``. ``kinds`` maps module paths to
    ``"linear"``/``"conv1d"``/``"embedding"``/``"conv2d"`` where shapes alone are ambiguous
    (square weights default to ``conv1d`` when the config says ``fan_in_fan_out``). ``progress`` is
    called after every tensor (for jobs); ``show_progress`` draws a tqdm bar. ``chunk_bytes`` bounds
    the copy buffer and each float32 block of ΔW. Other files of a base
    folder (``config.json``, tokenizer…; never pickles) are copied along with ``copy_other_files``.
    Raises :class:`~sdk.errors.MergeError`, before writing anything, when the adapter targets
    modules missing from the base files or shapes do not match. The streaming itself is
    :func:`sdk.merging.into_base.merge_lora_into_shards`. With ``verify=True`` the written files are read
    back and every merged weight checked against W + ΔW on probe inputs
    (:func:`sdk.merging.verify.check_merged_files`, as the registry's merge jobs do): a tensor that fails
    raises :class:`~sdk.merging.verify.MergeCheckFailed`.
    """
    base = read_base_shards(base_dir_or_files, out_dir)
    tensors, config = _read_adapter(adapter_dir)
    if not isinstance(config, LoraConfig) or config.peft_type != "LORA":
        raise MergeError(f"only LoRA adapters can be merged into base files, got {config.peft_type}")
    if config.use_dora:
        raise MergeError("DoRA adapters (use_dora=True) cannot be merged into base files yet: the merged weight "
                         "needs each row's norm; merge in memory with AdapterModel.merge_and_unload() instead")
    settings = LoraSettings.from_config(config)
    report = merge_lora_into_shards(
        base, tensors, settings, out_dir, kinds=kinds, weight=weight, progress=progress,
        show_progress=show_progress, chunk_bytes=chunk_bytes, copy_other_files=copy_other_files,
    )
    if verify:
        from .merging.verify import check_merged_files

        check_merged_files(base.files, [Path(out_dir) / f.name for f in base.files], tensors, settings,
                           kinds or {}, weight=weight)
    return report


__all__ = ["combine_lora_adapter_dirs", "merge_adapter_into_base"]
