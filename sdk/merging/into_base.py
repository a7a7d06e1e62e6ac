"""Merging a LoRA adapter into base-model weights on disk, one tensor at a time.

:func:`read_base_shards` checks the base model's safetensors shards (headers only), and
:func:`merge_lora_into_shards` writes merged copies
(same file names, same tensor names, dtypes, shapes and layout, plus a rewritten
``model.safetensors.index.json``), adding ``scale·B·A`` to each adapted weight. It never loads a
whole shard: tensors the adapter does not touch are copied in fixed-size byte chunks, and each
adapted weight is read alone into memory, updated in row blocks (ΔW is computed in float32 and
the result stored in the weight's own dtype) and written out before the next is read. Peak memory
is therefore about the largest adapted tensor plus one block of ΔW, whatever the model's size.

Tensors are read with plain positioned file reads rather than a memory map, so pages of the
shards do not accumulate in the process's resident set. Every check (adapter modules present in
the base files, shapes) runs before anything is written; each shard is written to a temporary
name and renamed when complete. The adapter comes in as a state dict and plain
:class:`~sdk.merging.options.LoraSettings`; :func:`sdk.merge_adapter_into_base` is the front
that reads it from a saved folder.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import MergeError
from ..safetensors_header import _TORCH_DTYPES, Header, TensorInfo, read_header_from_path
from .deltas import LayerKind
from .lora_keys import group_lora_tensors
from .options import LoraSettings

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class MergeProgress:
    """Where a merge is: bytes of tensor data written out of the total, and the current file/tensor."""

    done_bytes: int
    total_bytes: int
    file: str
    tensor: str

    @property
    def fraction(self) -> float:
        """``done_bytes / total_bytes`` (1.0 for an empty model)."""
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


@dataclass
class MergeReport:
    """What a merge wrote: the output files, the weights changed and replaced, and the byte count."""

    files: list[Path] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    total_bytes: int = 0


@dataclass(frozen=True)
class _Planned:
    a: Tensor
    b: Tensor
    scaling: float
    kind: LayerKind


def _base_files(base: str | Path | Sequence[str | Path]) -> tuple[list[Path], dict[str, object] | None, Path | None]:
    """The shard files, the parsed index (if any) and the folder of extra files to copy along."""
    if isinstance(base, (str, Path)) and Path(base).is_dir():
        folder = Path(base)
        index = folder / INDEX_NAME
        if index.is_file():
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
                weight_map = data["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise MergeError(f"{index} is not a valid safetensors index: {exc}") from exc
            names = list(dict.fromkeys(weight_map.values()))
            return [folder / n for n in names], data, folder
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise MergeError(f"no *.safetensors files (and no {INDEX_NAME}) in {folder}")
        return files, None, folder
    paths = [Path(base)] if isinstance(base, (str, Path)) else [Path(p) for p in base]
    if not paths:
        raise MergeError("no base model files given")
    return paths, None, None


def _read_headers(files: Sequence[Path]) -> dict[Path, Header]:
    headers: dict[Path, Header] = {}
    for f in files:
        if not f.is_file():
            raise MergeError(f"base model file {f} does not exist")
        header, problems = read_header_from_path(f)
        if problems or header is None:
            raise MergeError(f"{f} is not a valid safetensors file: " + "; ".join(p.message for p in problems[:5]))
        headers[f] = header
    return headers


def _kind(path: str, a: Tensor, b: Tensor, embedding: bool, shape: tuple[int, ...], settings: LoraSettings,
          kinds: Mapping[str, LayerKind] | None) -> LayerKind | str:
    """The layer kind of an adapted weight, or a message saying why the factors do not fit it."""
    if embedding:
        want = (a.shape[1], b.shape[0])
        return "embedding" if shape == want else f"embedding weight {shape}, the factors need {want}"
    if a.dim() == 4:
        want4 = (b.shape[0], a.shape[1], a.shape[2], a.shape[3])
        return "conv2d" if shape == want4 else f"conv weight {shape}, the factors need {want4}"
    out_f, in_f = b.shape[0], a.shape[1]
    if kinds and path in kinds:
        kind = kinds[path]
    elif out_f == in_f:
        kind = "conv1d" if settings.fan_in_fan_out else "linear"
    else:
        kind = "linear" if shape == (out_f, in_f) else "conv1d"
    want = (in_f, out_f) if kind == "conv1d" else (out_f, in_f)
    return kind if shape == want else f"weight {shape}, the factors need {want} ({kind})"


def _plan(
    tensors: Mapping[str, Tensor], settings: LoraSettings, where: dict[str, tuple[Path, TensorInfo]],
    kinds: Mapping[str, LayerKind] | None, weight: float,
) -> tuple[dict[str, _Planned], dict[str, Tensor]]:
    """ΔW factors per base tensor name, and base tensors the adapter replaces; every problem at once."""
    from ..formats import PREFIX

    halves, other = group_lora_tensors(tensors, PREFIX)
    replaced: dict[str, Tensor] = {}
    problems: list[str] = []
    for path, t in other.items():
        name = path.replace(".base_layer.", ".")
        if name not in where:
            problems.append(f"{name}: the adapter replaces it (modules_to_save or a trained bias) but the base "
                            "files have no such tensor")
        elif tuple(t.shape) != where[name][1].shape:
            problems.append(f"{name}: the adapter's copy has shape {tuple(t.shape)}, the base tensor "
                            f"{where[name][1].shape}")
        else:
            replaced[name] = t
    planned: dict[str, _Planned] = {}
    for path, pair in halves.items():
        if set(pair) != {"a", "b"}:
            problems.append(f"{path}: the adapter has only one of its two LoRA factors")
            continue
        (a, emb), (b, _) = pair["a"], pair["b"]
        name = f"{path}.weight"
        if name not in where:
            problems.append(f"{path}: the adapter targets this module but the base files have no tensor {name!r}")
            continue
        info = where[name][1]
        kind = _kind(path, a, b, emb, info.shape, settings, kinds)
        if kind not in ("linear", "conv1d", "embedding", "conv2d"):
            problems.append(f"{name}: shapes do not match: {kind}")
            continue
        if info.dtype not in ("F32", "F16", "BF16", "F64"):
            problems.append(f"{name}: base dtype {info.dtype} cannot be merged into (float32/16, bfloat16, float64)")
            continue
        planned[name] = _Planned(a.float(), b.float(), settings.scaling_for(path, int(a.shape[0])) * weight, kind)
    if problems:
        raise MergeError("the adapter does not fit the base model files:\n  " + "\n  ".join(problems))
    return planned, replaced


def _factors_2d(p: _Planned) -> tuple[Tensor, Tensor]:
    """``(L, R)`` with ΔW (in the base weight's layout, flattened to 2-D) = scaling·L·R."""
    if p.kind in ("conv1d", "embedding"):  # weight in×out (vocab×dim): ΔW = (B·A)ᵀ = Aᵀ·Bᵀ
        return p.a.T.contiguous(), p.b.T.contiguous()
    return p.b.flatten(1).contiguous(), p.a.flatten(1).contiguous()


def _buffer(nbytes: int) -> mmap.mmap | bytearray:
    """A zeroed writable buffer; large ones are anonymous maps, returned to the OS as soon as they are dropped
    (a heap block could stay in the resident set after it is freed)."""
    return mmap.mmap(-1, nbytes) if nbytes >= (1 << 20) else bytearray(nbytes)


def _read_into(f: object, offset: int, nbytes: int) -> mmap.mmap | bytearray:
    buf = _buffer(nbytes)
    view = memoryview(buf)
    got = 0
    fd = f.fileno()  # type: ignore[attr-defined]
    while got < nbytes:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise MergeError(f"short read in {getattr(f, 'name', 'a base file')} at offset {offset + got}")
        got += n
    return buf


def _merged_bytes(src: object, header: Header, info: TensorInfo, p: _Planned | None, replace: Tensor | None,
                  scratch: Tensor) -> mmap.mmap | bytearray:
    """The tensor's bytes after the merge: read, ΔW added in place block by block (``addmm_``, no
    temporaries), in float32 through ``scratch`` for half-precision weights."""
    dtype = _TORCH_DTYPES[info.dtype]
    if replace is None:
        buf = _read_into(src, header.header_size + info.start, info.nbytes)
    else:
        buf = _buffer(info.nbytes)
    w = torch.frombuffer(buf, dtype=dtype).view(info.shape) if info.nbytes else torch.empty(info.shape, dtype=dtype)
    with torch.no_grad():
        if replace is not None:  # a copy saved with the adapter (modules_to_save, or PEFT's saved embedding)
            w.copy_(replace.to(dtype))
        if p is None or w.numel() == 0:
            return buf
        left, right = _factors_2d(p)
        flat = w.view(w.shape[0], -1)
        if dtype == torch.float64:
            left, right = left.double(), right.double()
        step = max(1, scratch.numel() // flat.shape[1])
        for start in range(0, flat.shape[0], step):
            block = flat[start : start + step]
            if dtype in (torch.float32, torch.float64):
                block.addmm_(left[start : start + step], right, alpha=p.scaling)
            else:
                acc = scratch[: block.numel()].view(block.shape)
                acc.copy_(block)
                acc.addmm_(left[start : start + step], right, alpha=p.scaling)
                block.copy_(acc)
    return buf


@dataclass(frozen=True)
class BaseShards:
    """A base model's safetensors files, checked: their headers and which file holds each tensor."""

    files: list[Path]
    #: The parsed ``model.safetensors.index.json``, if the base came with one.
    index: dict[str, object] | None
    #: The base folder, whose other files (``config.json``, tokenizer…) can be copied along.
    folder: Path | None
    headers: dict[Path, Header]
    where: dict[str, tuple[Path, TensorInfo]]


def read_base_shards(base_dir_or_files: str | Path | Sequence[str | Path], out_dir: str | Path) -> BaseShards:
    """Read and check the headers of the base files a merge into ``out_dir`` will copy.

    ``base_dir_or_files`` is a folder (``model.safetensors`` or shards with
    ``model.safetensors.index.json``) or a list of safetensors files. Raises
    :class:`~sdk.errors.MergeError` when they cannot be read, share names or lie in ``out_dir``.
    """
    if sys.byteorder != "little":
        raise MergeError("merging safetensors files needs a little-endian machine")
    files, index, folder = _base_files(base_dir_or_files)
    out = Path(out_dir)
    if any(f.resolve().parent == out.resolve() for f in files):
        raise MergeError(f"out_dir {out} holds the base files; write the merged model to another folder")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise MergeError(f"base files share names {names}; they would overwrite each other in {out}")
    headers = _read_headers(files)
    where: dict[str, tuple[Path, TensorInfo]] = {}
    for f, h in headers.items():
        for name, info in h.tensors.items():
            if name in where:
                raise MergeError(f"tensor {name!r} is in both {where[name][0].name} and {f.name}")
            where[name] = (f, info)
    return BaseShards(files, index, folder, headers, where)


def merge_lora_into_shards(
    base: BaseShards, tensors: Mapping[str, Tensor], settings: LoraSettings, out_dir: str | Path, *,
    kinds: Mapping[str, LayerKind] | None = None, weight: float = 1.0,
    progress: Callable[[MergeProgress], None] | None = None, show_progress: bool = False,
    chunk_bytes: int = 16 << 20, copy_other_files: bool = True,
) -> MergeReport:
    """Write ``base`` with the LoRA adapter ``tensors`` (PEFT keys) merged in (W + weight·scale·B·A) to ``out_dir``.

    The keywords are :func:`sdk.merge_adapter_into_base`'s. Every check of the adapter against
    the base runs before anything is written.
    """
    files, headers, out = base.files, base.headers, Path(out_dir)
    planned, replaced = _plan(tensors, settings, base.where, kinds, weight)

    out.mkdir(parents=True, exist_ok=True)
    total = sum(h.data_size for h in headers.values())
    report = MergeReport(total_bytes=total)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc="merge")
    done = 0
    copy_buf = _buffer(max(1, chunk_bytes))
    scratch_buf = _buffer(max(4, chunk_bytes - chunk_bytes % 4))
    scratch = torch.frombuffer(scratch_buf, dtype=torch.float32)
    try:
        for f in files:
            header = headers[f]
            target = out / f.name
            partial = target.with_name(target.name + ".partial")
            with open(f, "rb") as src, open(partial, "wb") as dst:
                dst.write(_read_into(src, 0, header.header_size))  # same tensors, same layout: same header
                pos = 0
                for info in sorted(header.tensors.values(), key=lambda i: i.start):
                    if info.start > pos:  # padding between tensors, kept as it is
                        _copy_range(src, dst, header.header_size + pos, info.start - pos, copy_buf)
                    p, r = planned.get(info.name), replaced.get(info.name)
                    if p is None and r is None:
                        _copy_range(src, dst, header.header_size + info.start, info.nbytes, copy_buf)
                    else:
                        dst.write(_merged_bytes(src, header, info, p, r, scratch))
                        if p is not None:
                            report.merged.append(info.name)
                        if r is not None:
                            report.replaced.append(info.name)
                    pos = info.end
                    done += info.nbytes
                    if bar is not None:
                        bar.update(info.nbytes)
                    if progress is not None:
                        progress(MergeProgress(done, total, f.name, info.name))
                if header.data_size > pos:
                    _copy_range(src, dst, header.header_size + pos, header.data_size - pos, copy_buf)
            os.replace(partial, target)
            report.files.append(target)
    finally:
        if bar is not None:
            bar.close()
    if base.index is not None or len(files) > 1:
        report.files.append(_write_index(out, files, headers, base.index))
    if copy_other_files and base.folder is not None:
        for extra in sorted(base.folder.iterdir()):
            if (extra.is_file() and extra.suffix != ".safetensors" and extra.name != INDEX_NAME
                    and not extra.name.endswith(_PICKLE_SUFFIXES) and not (out / extra.name).exists()):
                shutil.copyfile(extra, out / extra.name)
    return report


def _copy_range(src: object, dst: object, offset: int, nbytes: int, buf: mmap.mmap | bytearray) -> None:
    """Copy ``nbytes`` from ``src`` at ``offset`` to the end of ``dst`` through the reusable ``buf``."""
    view = memoryview(buf)
    fd = src.fileno()  # type: ignore[attr-defined]
    while nbytes > 0:
        n = os.preadv(fd, [view[: min(nbytes, len(buf))]], offset)
        if n <= 0:
            raise MergeError(f"short read in {getattr(src, 'name', 'a base file')} at offset {offset}")
        dst.write(view[:n])  # type: ignore[attr-defined]
        offset += n
        nbytes -= n


def _write_index(out: Path, files: Sequence[Path], headers: Mapping[Path, Header],
                 index: Mapping[str, object] | None) -> Path:
    metadata = dict(index.get("metadata") or {}) if index else {}  # type: ignore[call-overload]
    metadata["total_size"] = sum(i.nbytes for h in headers.values() for i in h.tensors.values())
    weight_map = {name: f.name for f in files for name in sorted(headers[f].tensors)}
    path = out / INDEX_NAME
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"metadata": metadata, "weight_map": weight_map}, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


__all__ = ["INDEX_NAME", "BaseShards", "MergeProgress", "MergeReport", "merge_lora_into_shards", "read_base_shards"]
