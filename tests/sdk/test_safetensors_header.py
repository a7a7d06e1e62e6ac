"""Header-only safetensors validation: malformed headers built by hand, and cross-checks with the real library."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdk.safetensors_data import all_zero, read_tensor
from sdk.safetensors_header import (
    Header,
    Problem,
    TensorInfo,
    bytes_reader,
    non_float_problems,
    read_header,
    read_header_from_bytes,
    read_header_from_path,
)


def raw_file(header: bytes, data: bytes = b"", n: int | None = None) -> bytes:
    """``u64 N`` + header bytes + data; ``n`` overrides the declared header length."""
    return struct.pack("<Q", len(header) if n is None else n) + header + data


def st_file(header: object, data: bytes = b"") -> bytes:
    """A file whose header is ``header`` serialised as compact JSON."""
    return raw_file(json.dumps(header, separators=(",", ":")).encode(), data)


def t(dtype: str = "F32", shape: list[int] | None = None, offsets: list[int] | None = None) -> dict[str, object]:
    """One tensor entry (defaults: an F32 vector of 2 at [0, 8])."""
    return {"dtype": dtype, "shape": [2] if shape is None else shape, "data_offsets": offsets or [0, 8]}


class CountingReader:
    """A ``read_at`` over a small prefix of a (possibly huge, virtual) file that counts what is read."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.bytes_read = 0
        self.calls: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        if offset + length > len(self.prefix):
            raise AssertionError(f"read past the real prefix: {offset}+{length} > {len(self.prefix)}")
        self.bytes_read += length
        return self.prefix[offset : offset + length]


# ---------------------------------------------------------------------------------------------
# Malformed files: (file bytes, [(tensor or None, substring of the message)]) -- the list is exact.


@dataclass
class Case:
    data: bytes
    expected: list[tuple[str | None, str]]
    max_header_bytes: int = 100 * 2**20


CASES: dict[str, Case] = {
    "shorter_than_8_bytes": Case(b"\x01\x02\x03", [(None, "shorter than the 8-byte header length")]),
    "empty_file": Case(b"", [(None, "file is 0 bytes")]),
    "header_length_past_eof": Case(raw_file(b'{"a":1}', n=500), [(None, "header length 500 runs past the end")]),
    "oversized_json": Case(st_file({"a": t()}, b"\0" * 8), [(None, "oversized JSON header")], max_header_bytes=16),
    "oversized_and_past_eof": Case(
        raw_file(b"{}", n=2**40), [(None, "oversized JSON header"), (None, "runs past the end of the file")]
    ),
    "header_length_zero": Case(raw_file(b""), [(None, "not valid JSON")]),
    "not_utf8": Case(raw_file(b'{"\xff\xfe":1}'), [(None, "not valid UTF-8")]),
    "not_json": Case(raw_file(b'{"a": {"dtype": "F32",'), [(None, "not valid JSON")]),
    "json_nan_constant": Case(raw_file(b'{"a": NaN}'), [(None, "not valid JSON")]),
    "json_trailing_garbage": Case(raw_file(b'{"a": 1} x'), [(None, "not valid JSON")]),
    "json_nested_too_deep": Case(
        raw_file(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), [(None, "not valid JSON")]
    ),
    "json_array": Case(raw_file(b"[1, 2]"), [(None, "must be a JSON object, found array")]),
    "json_string": Case(raw_file(b'"hi"'), [(None, "must be a JSON object, found string")]),
    "leading_whitespace": Case(
        raw_file(b' {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8),
        [(None, "must start with '{'")],
    ),
    "duplicate_tensor": Case(
        raw_file(
            b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
            b"\0" * 8,
        ),
        [("w", "key 'w' appears 2 times")],
    ),
    "duplicate_field": Case(
        raw_file(b'{"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,4]}}', b"\0" * 4),
        [("w", "field 'dtype' appears 2 times")],
    ),
    "duplicate_metadata": Case(
        raw_file(
            b'{"__metadata__":{"format":"pt"},"__metadata__":{"format":"pt"},'
            b'"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
            b"\0" * 8,
        ),
        [(None, "key '__metadata__' appears 2 times")],
    ),
    "metadata_not_object": Case(
        st_file({"__metadata__": ["pt"], "w": t()}, b"\0" * 8), [(None, "__metadata__ must be an object")]
    ),
    "metadata_value_not_string": Case(
        st_file({"__metadata__": {"format": "pt", "step": 3}, "w": t()}, b"\0" * 8),
        [(None, "__metadata__['step'] must be a string, found integer 3")],
    ),
    "entry_not_object": Case(st_file({"w": [0, 8]}), [("w", "entry must be an object")]),
    "missing_field": Case(
        st_file({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
        [("w", "missing field(s) data_offsets")],
    ),
    "extra_field": Case(st_file({"w": {**t(), "offset": 3}}, b"\0" * 8), [("w", "unexpected field(s) offset")]),
    "unknown_dtype": Case(st_file({"w": t("Q8")}, b"\0" * 8), [("w", "unknown dtype 'Q8'")]),
    "dtype_not_string": Case(st_file({"w": t(4)}, b"\0" * 8), [("w", "unknown dtype 4")]),  # type: ignore[arg-type]
    "dtype_wrong_case": Case(st_file({"w": t("f32")}, b"\0" * 8), [("w", "unknown dtype 'f32'")]),
    "shape_negative": Case(st_file({"w": t(shape=[-2])}, b"\0" * 8), [("w", "shape must be a list of non-negative")]),
    "shape_float": Case(st_file({"w": t(shape=[2.0])}, b"\0" * 8), [("w", "found [2.0]")]),  # type: ignore[list-item]
    "shape_bool": Case(st_file({"w": t(shape=[True, 2])}, b"\0" * 8), [("w", "found [true, 2]")]),
    "shape_not_list": Case(st_file({"w": {**t(), "shape": 2}}, b"\0" * 8), [("w", "shape must be a list")]),
    "offsets_one_int": Case(
        st_file({"w": {**t(), "data_offsets": [8]}}, b"\0" * 8),
        [("w", "data_offsets must be two integers")],
    ),
    "offsets_reversed": Case(
        st_file({"w": t(offsets=[8, 0])}, b"\0" * 8),
        [("w", "0 <= begin <= end, found [8, 0]")],
    ),
    "offsets_negative": Case(
        st_file({"w": t(offsets=[-8, 0])}, b"\0" * 8),
        [("w", "found [-8, 0]")],
    ),
    "size_mismatch": Case(
        st_file({"w": t("F32", [2, 2], [0, 12])}, b"\0" * 12),
        [("w", "needs 16 bytes, but data_offsets [0, 12] span 12 bytes")],
    ),
    "size_mismatch_bf16": Case(st_file({"w": t("BF16", [3], [0, 12])}, b"\0" * 12), [("w", "needs 6 bytes")]),
    "sub_byte_misaligned": Case(
        st_file({"w": t("F4", [3], [0, 2])}, b"\0" * 2), [("w", "not a whole number of bytes")]
    ),
    "offsets_past_data": Case(
        st_file({"w": t(offsets=[0, 8])}, b"\0" * 4), [("w", "run past the end of the data section (4 bytes)")]
    ),
    "overlap": Case(
        st_file({"a": t(offsets=[0, 8]), "b": t(offsets=[4, 12])}, b"\0" * 12), [("b", "overlap tensor 'a'")]
    ),
    "same_offsets": Case(
        st_file({"a": t(offsets=[0, 8]), "b": t(offsets=[0, 8])}, b"\0" * 8), [("b", "overlap tensor 'a'")]
    ),
    "empty_inside_other": Case(
        st_file({"a": t(offsets=[0, 8]), "e": t(shape=[0], offsets=[4, 4])}, b"\0" * 8),
        [("e", "overlap tensor 'a'")],
    ),
    "gap_between": Case(
        st_file({"a": t(offsets=[0, 8]), "b": t(offsets=[12, 20])}, b"\0" * 20),
        [("b", "gap of 4 unused bytes [8, 12) after tensor 'a'")],
    ),
    "not_starting_at_zero": Case(
        st_file({"a": t(offsets=[4, 12])}, b"\0" * 12), [("a", "at the start of the data section")]
    ),
    "unused_bytes_at_end": Case(
        st_file({"a": t()}, b"\0" * 11), [(None, "3 unused bytes at the end of the data section, after tensor 'a'")]
    ),
    "zero_tensors": Case(st_file({"__metadata__": {"format": "pt"}}), [(None, "contains no tensors")]),
    "lone_surrogate_name": Case(
        raw_file(b'{"\\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8),
        [("\\ud800", "not valid Unicode")],
    ),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_malformed(case_id: str) -> None:
    case = CASES[case_id]
    _, problems = read_header(bytes_reader(case.data), len(case.data), max_header_bytes=case.max_header_bytes)
    found = [(p.tensor, p.message) for p in problems]
    assert len(problems) == len(case.expected), found
    for tensor, text in case.expected:
        assert any(p.tensor == tensor and text in p.message for p in problems), (tensor, text, found)
    for p in problems:
        assert p.message and set(p.to_dict()) == {"tensor", "expected", "found", "message"}


def test_reports_every_problem_with_expected_and_found() -> None:
    header = {
        "a": t("Q8"),
        "b": t(shape=[-1], offsets=[8, 16]),
        "c": t("F32", [4], [16, 20]),
        "d": t(offsets=[24, 32]),
    }
    _, problems = read_header_from_bytes(st_file(header, b"\0" * 40))
    by_tensor = {p.tensor: p for p in problems}
    assert by_tensor["a"].found == "'Q8'" and "F32" in (by_tensor["a"].expected or "")
    assert by_tensor["b"].found == "[-1]"
    assert (by_tensor["c"].expected, by_tensor["c"].found) == ("16 bytes", "4 bytes")
    assert "gap of 4 unused bytes [20, 24)" in by_tensor["d"].message
    assert any(p.tensor is None and "8 unused bytes at the end" in p.message for p in problems)
    assert len(problems) == 5


def test_trailing_space_padding_and_unordered_keys_are_valid() -> None:
    body = json.dumps({"b": t(offsets=[8, 16]), "__metadata__": {}, "a": t()}).encode() + b"     "
    header, problems = read_header_from_bytes(raw_file(body, b"\0" * 16))
    assert problems == [] and header is not None
    assert [(i.name, i.start) for i in header.tensors.values()] == [("b", 8), ("a", 0)]


def test_partial_header_keeps_well_formed_entries() -> None:
    header, problems = read_header_from_bytes(st_file({"a": t(), "b": t("Q8", offsets=[8, 16])}, b"\0" * 16))
    assert problems and header is not None
    assert list(header.tensors) == ["a"]


def test_oversized_header_is_refused_before_reading() -> None:
    reader = CountingReader(struct.pack("<Q", 2**33))
    header, problems = read_header(reader, 2**40)
    assert header is None
    assert [p.message for p in problems] == [f"oversized JSON header: {2**33} bytes, the limit is {100_000_000}"]
    assert reader.calls == [(0, 8)]


def test_one_gigabyte_file_reads_only_the_header() -> None:
    n_elems = 2**28  # 1 GiB of F32
    body = json.dumps({"__metadata__": {"format": "pt"}, "big": t("F32", [2**14, 2**14], [0, 4 * n_elems])}).encode()
    prefix = raw_file(body)
    reader = CountingReader(prefix)
    header, problems = read_header(reader, len(prefix) + 4 * n_elems)
    assert problems == []
    assert header is not None and header.header_size == len(prefix) and header.data_size == 2**30
    assert header.tensors["big"] == TensorInfo("big", "F32", (2**14, 2**14), 0, 2**30)
    assert header.tensors["big"].nbytes == 2**30
    assert reader.bytes_read == len(prefix) == 8 + len(body)


def test_short_reads_are_problems_not_crashes() -> None:
    data = st_file({"a": t()}, b"\0" * 8)
    header, problems = read_header(lambda off, ln: data[off : off + ln][:3], len(data))
    assert header is None and "could read only 3 of the first 8 bytes" in problems[0].message


def test_negative_file_size_is_an_error() -> None:
    with pytest.raises(ValueError):
        read_header(bytes_reader(b""), -1)


# ---------------------------------------------------------------------------------------------
# Valid files written by the real library


def _valid_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "m.lora_A.weight": torch.randn(4, 16, generator=g),
        "m.lora_B.weight": torch.zeros(8, 4),
        "half": torch.randn(3, 5, generator=g).half(),
        "bf16": torch.randn(7, 3, generator=g).bfloat16(),
        "f64": torch.randn(2, 3, 4, generator=g).double(),
        "f8": torch.randn(6, generator=g).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.randn(5, generator=g).to(torch.float8_e5m2),
        "idx": torch.arange(5, dtype=torch.int64),
        "i8": torch.tensor([-3, 0, 7], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "i32": torch.tensor([[1, -2]], dtype=torch.int32),
        "scalar": torch.tensor(3.5),
        "scalar_bf16": torch.tensor(-1.25, dtype=torch.bfloat16),
        "empty_rows": torch.zeros(0, 3),
        "empty_cols": torch.zeros(3, 0, dtype=torch.bfloat16),
        "empty_1d": torch.zeros(0, dtype=torch.int64),
    }


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    tensors = _valid_tensors()
    path = tmp_path_factory.mktemp("st") / "adapter_model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path, tensors


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality (works for float8, where ``torch.equal`` may not)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)) if a.numel() else True


def test_valid_file_matches_safe_open(valid_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, tensors = valid_file
    header, problems = read_header_from_path(path)
    assert problems == [] and header is not None
    assert header.metadata == {"format": "pt"}
    assert header.header_size + header.data_size == path.stat().st_size
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    on_disk = json.loads(raw[8 : 8 + n])
    with safe_open(str(path), "pt") as f:
        assert set(header.tensors) == set(f.keys()) == set(tensors)
        assert f.metadata() == header.metadata
        for name, info in header.tensors.items():
            sl = f.get_slice(name)
            assert info.dtype == sl.get_dtype()
            assert list(info.shape) == sl.get_shape()
            assert [info.start, info.end] == on_disk[name]["data_offsets"]
        starts = [header.tensors[k].start for k in f.offset_keys()]
        assert starts == sorted(starts)
    assert {p.tensor for p in non_float_problems(header)} == {"idx", "i8", "u8", "mask", "i32", "empty_1d"}


def test_read_tensor_equals_loaded(valid_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, tensors = valid_file
    header, _ = read_header_from_path(path)
    assert header is not None
    with open(path, "rb") as fh, safe_open(str(path), "pt") as f:

        def read_at(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        for name, original in tensors.items():
            got = read_tensor(read_at, header, name)
            assert _same(got, f.get_tensor(name)), name
            assert _same(got, original), name
            if got.numel():
                got.view(-1)[:1] = got.view(-1)[:1]  # writable, owns its memory


def test_read_tensor_reads_only_its_bytes(valid_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, tensors = valid_file
    data = path.read_bytes()
    header, _ = read_header_from_bytes(data)
    assert header is not None
    reader = CountingReader(data)
    info = header.tensors["bf16"]
    out = read_tensor(reader, header, "bf16")
    assert out.dtype == torch.bfloat16 and _same(out, tensors["bf16"])
    assert reader.calls == [(header.header_size + info.start, info.nbytes)]
    with pytest.raises(KeyError):
        read_tensor(reader, header, "nope")


def test_in_memory_and_path_agree(valid_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, _ = valid_file
    assert read_header_from_bytes(path.read_bytes()) == read_header_from_path(path)


def test_save_file_without_metadata_and_single_empty_tensor(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    save_file({"e": torch.zeros(0, 4)}, str(path))
    header, problems = read_header_from_path(path)
    assert problems == [] and header is not None and header.metadata == {} and header.data_size == 0
    assert read_tensor(bytes_reader(path.read_bytes()), header, "e").shape == (0, 4)


# ---------------------------------------------------------------------------------------------
# all_zero


def _header_for(tensors: dict[str, torch.Tensor]) -> tuple[Header, bytes]:
    from safetensors.torch import save

    data = save(tensors)
    header, problems = read_header_from_bytes(data)
    assert problems == [] and header is not None
    return header, data


def test_all_zero_streams_in_chunks() -> None:
    big = torch.zeros(1000)
    big[777] = 1e-30
    header, data = _header_for({"z": torch.zeros(1000), "nz": big, "x": torch.ones(3)})
    reader = CountingReader(data)
    assert all_zero(reader, header, "z", chunk_bytes=256)
    assert all(length <= 256 for _, length in reader.calls) and len(reader.calls) == 16
    assert reader.bytes_read == 4000
    assert not all_zero(reader, header, "nz", chunk_bytes=256)
    assert not all_zero(reader, header, "x")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_zero_treats_negative_zero_as_zero(dtype: torch.dtype) -> None:
    neg = torch.full((5,), -0.0, dtype=dtype)
    nan = torch.zeros(5, dtype=dtype)
    nan[2] = float("nan")
    header, data = _header_for({"neg": neg, "nan": nan})
    assert all_zero(bytes_reader(data), header, "neg", chunk_bytes=3)  # rounded to whole elements
    assert not all_zero(bytes_reader(data), header, "nan")


def test_all_zero_on_integers_and_empty() -> None:
    header, data = _header_for(
        {"i": torch.zeros(4, dtype=torch.int64), "j": torch.tensor([0, -1]), "e": torch.zeros(0)}
    )
    read = bytes_reader(data)
    assert all_zero(read, header, "i")
    assert not all_zero(read, header, "j")
    assert all_zero(read, header, "e")


def test_all_zero_packed_f4_and_e8m0() -> None:
    data = st_file(
        {"neg0": t("F4", [2], [0, 1]), "one": t("F4", [2], [1, 2]), "scale": t("F8_E8M0", [1], [2, 3])},
        b"\x88\x02\x00",
    )
    header, problems = read_header_from_bytes(data)
    assert problems == [] and header is not None
    read = bytes_reader(data)
    assert all_zero(read, header, "neg0")
    assert not all_zero(read, header, "one")
    assert not all_zero(read, header, "scale")  # e8m0 has no zero


def test_non_float_problems_names_tensor() -> None:
    data = st_file(
        {"idx": t("I64", [1], [0, 8]), "w": t("BF16", [4], [8, 16]), "q": t("F8_E4M3", [1], [16, 17])}, b"\0" * 17
    )
    header, problems = read_header_from_bytes(data)
    assert problems == [] and header is not None
    [p] = non_float_problems(header)
    assert (p.tensor, p.found) == ("idx", "I64") and "not floating point" in p.message and "BF16" in (p.expected or "")


def test_problem_to_dict() -> None:
    p = Problem("w", "F32", "I64", "msg")
    assert p.to_dict() == {"tensor": "w", "expected": "F32", "found": "I64", "message": "msg"}
    assert json.loads(json.dumps(p.to_dict())) == p.to_dict()
