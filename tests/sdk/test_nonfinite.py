"""``sdk.nonfinite``: NaN/Inf counted per tensor from a safetensors file's bytes, fed in chunks of any
size, for every floating dtype (by bit pattern), checked against torch's own ``isfinite``."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import save

from sdk.nonfinite import NON_FINITE_RULES, NonFiniteScan, count_non_finite, scan_bytes, scanner_for
from sdk.safetensors_header import bytes_reader, read_header

TORCH_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
                "F8_E5M2": torch.float8_e5m2, "F8_E4M3": torch.float8_e4m3fn,
                "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E5M2FNUZ": torch.float8_e5m2fnuz}


def every_bit_pattern(dtype: torch.dtype) -> torch.Tensor:
    """Every value of a 1- or 2-byte float dtype (all bit patterns), a sample of wider ones."""
    size = torch.empty((), dtype=dtype).element_size()
    if size == 1:
        return torch.arange(256, dtype=torch.uint8).view(dtype)
    if size == 2:
        return torch.arange(-(2**15), 2**15, dtype=torch.int16).view(dtype)
    values = torch.randn(1000, dtype=dtype)
    values[::7] = float("nan")
    values[3::11] = float("inf")
    values[5::13] = -float("inf")
    return values


@pytest.mark.parametrize("name", sorted(TORCH_DTYPES))
def test_bit_patterns_agree_with_torch(name: str) -> None:
    values = every_bit_pattern(TORCH_DTYPES[name])
    expected = int((~torch.isfinite(values.float() if values.element_size() == 1 else values)).sum())
    assert expected > 0
    assert count_non_finite(name, values.contiguous().view(torch.uint8).numpy().tobytes()) == expected


def test_e8m0_nan_and_types_without_non_finite_values() -> None:
    assert count_non_finite("F8_E8M0", bytes([0, 1, 127, 254, 255, 255])) == 2
    for name in ("I32", "U8", "BOOL", "F4", "F6_E2M3"):
        assert name not in NON_FINITE_RULES and count_non_finite(name, b"\xff" * 16) == 0


def test_counts_per_tensor_whatever_the_chunks() -> None:
    """Elements split across chunk borders are counted once; integer tensors are never read."""
    tensors = {"a": torch.randn(33), "b": torch.randn(17, dtype=torch.float16),
               "c": torch.randn(9, dtype=torch.bfloat16), "d": torch.randn(5, dtype=torch.float64),
               "e": torch.full((7,), -1, dtype=torch.int32), "f": torch.randn(3, 3)}
    tensors["a"][5], tensors["a"][32] = float("nan"), float("inf")
    tensors["b"][16] = -float("inf")
    tensors["c"][0] = float("nan")
    tensors["d"][4] = -float("inf")
    data = save(tensors)
    header, _ = read_header(bytes_reader(data), len(data))
    assert header is not None
    rng = random.Random(0)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 40)))
        chunks = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        problems = scan_bytes(header, chunks, "w.safetensors")
        assert {p.tensor: p.found for p in problems} == {"a": "2 NaN/Inf of 33", "b": "1 NaN/Inf of 17",
                                                         "c": "1 NaN/Inf of 9", "d": "1 NaN/Inf of 5"}
    message = next(p.message for p in problems if p.tensor == "a")
    assert message.startswith("w.safetensors: tensor 'a' holds 2 non-finite values (NaN or Inf) of 33")
    scan = NonFiniteScan(header)
    for i in range(len(data)):  # one byte at a time
        scan.feed(data[i : i + 1])
    assert scan.counts == {"a": 2, "b": 1, "c": 1, "d": 1}


def test_a_finite_file_has_no_problems_and_a_broken_header_is_left_to_validation() -> None:
    data = save({"w": torch.randn(64, 64)})
    scan = scanner_for(bytes_reader(data), len(data))
    assert scan is not None
    scan.feed(data)
    assert scan.problems() == []
    assert scanner_for(bytes_reader(b"\xff" * 64), 64) is None
