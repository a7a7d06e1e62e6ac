"""Reading tensor data from a safetensors file whose header :mod:`.safetensors_header` has parsed.

Single tensors can be read (:func:`read_tensor`) or checked for zeros in chunks (:func:`all_zero`)
through the same ``read_at(offset, length)`` callable the header was read with, which can be
backed by a local file, by ranged S3 GETs, or by bytes in memory. Only the bytes of the tensor
asked for are read.
"""

from __future__ import annotations

import sys

import torch

from .safetensors_header import _TORCH_DTYPES, Header, ReadAt, TensorInfo

__all__ = ["all_zero", "read_tensor"]

# For all_zero: a byte mask per group of bytes (little-endian) that clears the sign bit(s), so that
# -0.0 counts as zero. Dtypes absent here are compared byte for byte.
_SIGN_CLEARING_MASK: dict[str, bytes] = {
    "F16": b"\xff\x7f",
    "BF16": b"\xff\x7f",
    "F32": b"\xff\xff\xff\x7f",
    "F64": b"\xff" * 7 + b"\x7f",
    "C64": b"\xff\xff\xff\x7f",  # real and imaginary float32 halves
    "F8_E4M3": b"\x7f",
    "F8_E5M2": b"\x7f",
    "F4": b"\x77",  # two e2m1 values per byte, sign bit at the top of each nibble
}


def _read_exact(read_at: ReadAt, offset: int, length: int) -> bytes:
    """Exactly ``length`` bytes at ``offset``; a short read is an error, not a shorter tensor."""
    data = read_at(offset, length)
    if len(data) != length:
        raise ValueError(f"short read: asked for {length} bytes at offset {offset}, got {len(data)}")
    return bytes(data)


def _info(header: Header, name: str) -> TensorInfo:
    """The header's entry for ``name``, refused when its bytes would lie past the data section."""
    try:
        info = header.tensors[name]
    except KeyError:
        raise KeyError(f"no tensor {name!r} in the header") from None
    if info.end > header.data_size:
        raise ValueError(f"tensor {name!r}: data_offsets [{info.start}, {info.end}] run past the data section")
    return info


def read_tensor(read_at: ReadAt, header: Header, name: str) -> torch.Tensor:
    """Read one tensor's bytes (and only those) and return it as a CPU tensor that owns its memory."""
    info = _info(header, name)
    dtype = _TORCH_DTYPES.get(info.dtype)
    if dtype is None:
        raise ValueError(f"tensor {name!r}: dtype {info.dtype} has no torch equivalent")
    if info.nbytes != info.numel * dtype.itemsize:
        raise ValueError(f"tensor {name!r}: {info.nbytes} bytes do not hold shape {list(info.shape)} of {info.dtype}")
    if info.numel == 0:
        return torch.empty(info.shape, dtype=dtype)
    raw = bytearray(_read_exact(read_at, header.header_size + info.start, info.nbytes))  # a private copy
    flat = torch.frombuffer(raw, dtype=torch.uint8)
    if sys.byteorder == "big" and dtype.itemsize > 1:  # safetensors stores little-endian
        flat = flat.view(-1, dtype.itemsize).flip(-1).reshape(-1)
    return flat.view(dtype).reshape(info.shape)


def all_zero(read_at: ReadAt, header: Header, name: str, chunk_bytes: int = 1 << 20) -> bool:
    """Whether every element of a tensor is zero, streaming it ``chunk_bytes`` at a time.

    For floating dtypes with a sign bit, -0.0 counts as zero (the sign bit is masked off); NaN
    never does. Integer/bool dtypes, the FNUZ float8 types (whose 0x80 is NaN) and the 6-bit floats
    are compared byte for byte. ``F8_E8M0`` has no zero, so only an empty tensor passes.
    """
    info = _info(header, name)
    if info.nbytes == 0:
        return True
    if info.dtype == "F8_E8M0":
        return False
    mask_bytes = _SIGN_CLEARING_MASK.get(info.dtype, b"\xff")
    group = len(mask_bytes)
    mask = torch.frombuffer(bytearray(mask_bytes), dtype=torch.uint8)
    step = max(group, chunk_bytes - chunk_bytes % group)
    offset = header.header_size + info.start
    remaining = info.nbytes
    while remaining:
        length = min(step, remaining)
        chunk = torch.frombuffer(bytearray(_read_exact(read_at, offset, length)), dtype=torch.uint8)
        if (chunk.view(-1, group) & mask).any():
            return False
        offset += length
        remaining -= length
    return True
