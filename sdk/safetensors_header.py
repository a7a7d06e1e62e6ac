"""Header-only reader and validator for safetensors files, and the dtype tables of the format.

A safetensors file is ``u64 little-endian N`` + ``N`` bytes of UTF-8 JSON + a data section. The JSON
maps tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
data section) plus an optional ``"__metadata__"`` dict of strings.

:func:`read_header` validates a file from its first ``8 + N`` bytes and its total size alone, so
the registry can check an upload without loading it (and the SDK can check a file before sending
it). It never reads past the header, refuses an oversized header before reading it, never
unpickles anything, and reports the problems it finds rather than stopping at the first (up to
:data:`MAX_PROBLEMS` of them, then how many more there were).

Hostile headers cost little: besides the header's length, the number of tensors
(:data:`MAX_TENSORS`), a tensor name's length (:data:`MAX_NAME_CHARS`), a shape's rank
(:data:`MAX_DIMS`) and every dimension, element count and offset (below 2**63 or 2**64) are
bounded, and each is checked before anything is computed from it, so the work is linear in the
header's length and no arithmetic runs on unbounded integers.

Everything reads through a ``read_at(offset, length)`` callable, which can be backed by a local
file (:func:`file_reader`), by ranged S3 GETs, or by bytes in memory (:func:`bytes_reader`).
Reading tensor data through the same callable (:func:`~sdk.safetensors_data.read_tensor`,
:func:`~sdk.safetensors_data.all_zero`) is in :mod:`sdk.safetensors_data`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import torch

from .problems import MAX_PROBLEMS, Problem, ProblemList

__all__ = [
    "DTYPE_BITS",
    "FLOAT_DTYPES",
    "MAX_DIMS",
    "MAX_DIM_SIZE",
    "MAX_HEADER_BYTES",
    "MAX_NAME_CHARS",
    "MAX_OFFSET",
    "MAX_PROBLEMS",
    "MAX_TENSORS",
    "Header",
    "Problem",
    "ReadAt",
    "TensorInfo",
    "bytes_reader",
    "file_reader",
    "non_float_problems",
    "read_header",
    "read_header_from_bytes",
    "read_header_from_path",
]

ReadAt = Callable[[int, int], bytes]
"""``read_at(offset, length) -> bytes``: up to ``length`` bytes of the file starting at ``offset``."""

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
"""Default limit on the JSON header's length ``N`` (100 MiB)."""
MAX_TENSORS = 100_000
"""Most tensors one file may hold."""
MAX_NAME_CHARS = 1024
"""Longest tensor name (and ``__metadata__`` key), in characters."""
MAX_DIMS = 8
"""Most dimensions a tensor's shape may have."""
MAX_DIM_SIZE = 2**63 - 1
"""Largest dimension, and largest element count of a tensor (what torch's int64 sizes hold)."""
MAX_OFFSET = 2**64 - 1
"""Largest data offset (a u64, as in the format's reference reader)."""

METADATA_KEY = "__metadata__"
TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
"""Every dtype the safetensors format defines, with its width in bits."""

FLOAT_DTYPES = frozenset(
    {
        "F16",
        "BF16",
        "F32",
        "F64",
        "F8_E4M3",
        "F8_E5M2",
        "F8_E4M3FNUZ",
        "F8_E5M2FNUZ",
        "F8_E8M0",
        "F4",
        "F6_E2M3",
        "F6_E3M2",
    }
)
"""Real floating-point dtypes (the only ones an adapter's weights may use)."""

_KNOWN_DTYPES_TEXT = ", ".join(DTYPE_BITS)


def _torch_dtypes() -> dict[str, torch.dtype]:
    """Safetensors dtype names mapped to the torch dtypes this torch build has."""
    names = {
        "BOOL": "bool",
        "U8": "uint8",
        "I8": "int8",
        "I16": "int16",
        "U16": "uint16",
        "F16": "float16",
        "BF16": "bfloat16",
        "I32": "int32",
        "U32": "uint32",
        "F32": "float32",
        "C64": "complex64",
        "F64": "float64",
        "I64": "int64",
        "U64": "uint64",
        "F8_E5M2": "float8_e5m2",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E8M0": "float8_e8m0fnu",
        "F8_E4M3FNUZ": "float8_e4m3fnuz",
        "F8_E5M2FNUZ": "float8_e5m2fnuz",
    }
    return {st: getattr(torch, tn) for st, tn in names.items() if isinstance(getattr(torch, tn, None), torch.dtype)}


_TORCH_DTYPES = _torch_dtypes()


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header; ``start``/``end`` are offsets into the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Bytes the tensor occupies in the data section (``end - start``)."""
        return self.end - self.start

    @property
    def numel(self) -> int:
        """Number of elements implied by ``shape`` (1 for a scalar)."""
        return math.prod(self.shape)


@dataclass
class Header:
    """A parsed header: tensors by name, string metadata, and the sizes of both file sections.

    ``header_size`` is ``8 + N`` (where the data section starts in the file); ``data_size`` is the
    length of the data section, ``file_size - header_size``.
    """

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    header_size: int = 0
    data_size: int = 0


# ---------------------------------------------------------------------------------------------
# Readers


def bytes_reader(data: bytes | bytearray | memoryview) -> ReadAt:
    """A ``read_at`` over bytes in memory."""
    view = memoryview(data).cast("B")

    def read_at(offset: int, length: int) -> bytes:
        return bytes(view[offset : offset + length])

    return read_at


def file_reader(f: IO[bytes]) -> ReadAt:
    """A ``read_at`` over an open binary file (seeks, then reads)."""

    def read_at(offset: int, length: int) -> bytes:
        f.seek(offset)
        return f.read(length)

    return read_at


# ---------------------------------------------------------------------------------------------
# Parsing and validation


class _Obj(dict[str, Any]):
    """A JSON object that remembers keys that appeared more than once."""

    duplicates: dict[str, int]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    counts: dict[str, int] = {}
    for key, value in pairs:
        counts[key] = counts.get(key, 0) + 1
        obj[key] = value  # last one wins, as in most JSON parsers
    obj.duplicates = {k: n for k, n in counts.items() if n > 1}
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _cut(name: str, limit: int = 80) -> str:
    """A name cut to ``limit`` characters (for the ``tensor`` field of a problem)."""
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a JSON value, cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_unicode(text: str) -> bool:
    """False for strings holding lone surrogates (legal as JSON escapes, not as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_metadata(value: Any, problems: list[Problem]) -> dict[str, str]:
    if value is None:  # the reference library accepts an explicit null: no metadata
        return {}
    if not isinstance(value, dict):
        problems.append(
            Problem(
                None,
                "an object of string values",
                _type_name(value),
                f"{METADATA_KEY} must be an object mapping strings to strings, found {_type_name(value)}",
            )
        )
        return {}
    for key, n in getattr(value, "duplicates", {}).items():
        problems.append(
            Problem(
                None, "unique keys", f"{_short(key)} {n} times", f"{METADATA_KEY} has the key {_short(key)} {n} times"
            )
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        if len(key) > MAX_NAME_CHARS:
            problems.append(
                Problem(
                    None,
                    f"keys of at most {MAX_NAME_CHARS} characters",
                    f"{len(key)} characters",
                    f"{METADATA_KEY} key {_short(key)} is {len(key)} characters long; the limit is {MAX_NAME_CHARS}",
                )
            )
        elif not isinstance(item, str):
            problems.append(
                Problem(
                    None,
                    "string",
                    _type_name(item),
                    f"{METADATA_KEY}[{key!r}] must be a string, found {_type_name(item)} {_short(item)}",
                )
            )
        elif not (_is_unicode(key) and _is_unicode(item)):
            problems.append(
                Problem(None, "valid Unicode", "lone surrogate", f"{METADATA_KEY}[{key!r}] is not valid Unicode")
            )
        else:
            out[key] = item
    return out


def _check_entry(name: str, entry: Any, problems: list[Problem]) -> tuple[TensorInfo | None, tuple[int, int] | None]:
    """Validate one tensor entry; returns its info when well formed, and its offsets when usable."""
    if len(name) > MAX_NAME_CHARS:
        problems.append(
            Problem(
                _cut(name),
                f"a name of at most {MAX_NAME_CHARS} characters",
                f"{len(name)} characters",
                f"tensor name {_short(name)} is {len(name)} characters long; the limit is {MAX_NAME_CHARS}",
            )
        )
        return None, None
    if not _is_unicode(name):
        problems.append(
            Problem(
                name.encode("utf-8", "backslashreplace").decode(),
                "valid Unicode",
                "lone surrogate",
                f"tensor name {name!r} is not valid Unicode",
            )
        )
        return None, None
    if not isinstance(entry, dict):
        problems.append(
            Problem(
                name,
                "an object with dtype, shape, data_offsets",
                _type_name(entry),
                f"tensor {name!r}: entry must be an object with dtype, shape and data_offsets, "
                f"found {_type_name(entry)} {_short(entry)}",
            )
        )
        return None, None

    ok = True
    for key, n in getattr(entry, "duplicates", {}).items():
        ok = False
        problems.append(
            Problem(name, "unique fields", f"{key!r} {n} times", f"tensor {name!r}: field {key!r} appears {n} times")
        )
    missing = sorted(TENSOR_FIELDS - entry.keys())
    extra = sorted(entry.keys() - TENSOR_FIELDS)
    if missing:
        ok = False
        problems.append(
            Problem(
                name,
                "dtype, shape, data_offsets",
                ", ".join(sorted(entry.keys())) or "no fields",
                f"tensor {name!r}: missing field(s) {', '.join(missing)}",
            )
        )
    if extra:
        ok = False
        problems.append(
            Problem(
                name,
                "only dtype, shape, data_offsets",
                ", ".join(extra),
                f"tensor {name!r}: unexpected field(s) {', '.join(extra)}",
            )
        )

    dtype = entry.get("dtype")
    dtype_ok = isinstance(dtype, str) and dtype in DTYPE_BITS
    if "dtype" in entry and not dtype_ok:
        problems.append(
            Problem(
                name,
                f"one of {_KNOWN_DTYPES_TEXT}",
                _short(dtype),
                f"tensor {name!r}: unknown dtype {_short(dtype)}",
            )
        )

    shape = entry.get("shape")
    shape_ok = _shape_ok(name, shape, problems) if "shape" in entry else False

    offsets = entry.get("data_offsets")
    offsets_ok = (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_int(o) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    )
    if "data_offsets" in entry and not offsets_ok:
        problems.append(
            Problem(
                name,
                "[begin, end] integers with 0 <= begin <= end",
                _short(offsets),
                f"tensor {name!r}: data_offsets must be two integers [begin, end] with 0 <= begin <= end, "
                f"found {_short(offsets)}",
            )
        )
    elif offsets_ok and offsets[1] > MAX_OFFSET:
        offsets_ok = False
        problems.append(
            Problem(
                name,
                "offsets below 2**64",
                _short(offsets),
                f"tensor {name!r}: data_offsets {_short(offsets)} do not fit in 64 bits",
            )
        )

    span = (offsets[0], offsets[1]) if offsets_ok else None
    if dtype_ok and shape_ok and span is not None:
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        nbytes = span[1] - span[0]
        if bits % 8:
            ok = False
            problems.append(
                Problem(
                    name,
                    "a whole number of bytes",
                    f"{bits} bits",
                    f"tensor {name!r}: shape {list(shape)} of {dtype} ({DTYPE_BITS[dtype]} bits each) "
                    f"is {bits} bits, not a whole number of bytes",
                )
            )
        elif bits // 8 != nbytes:
            ok = False
            problems.append(
                Problem(
                    name,
                    f"{bits // 8} bytes",
                    f"{nbytes} bytes",
                    f"tensor {name!r}: shape {list(shape)} of {dtype} needs {bits // 8} bytes, "
                    f"but data_offsets {list(span)} span {nbytes} bytes",
                )
            )
    if not (ok and dtype_ok and shape_ok and span is not None):
        return None, span
    return TensorInfo(name, dtype, tuple(shape), span[0], span[1]), span


def _shape_ok(name: str, shape: Any, problems: list[Problem]) -> bool:
    """Whether ``shape`` is a list of at most :data:`MAX_DIMS` integers in ``[0, 2**63)`` whose
    product (the element count) stays below 2**63; each bound is checked before the next step
    looks at more of the value, so a hostile shape costs time linear in its JSON text."""
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        problems.append(
            Problem(
                name,
                "a list of non-negative integers",
                _short(shape),
                f"tensor {name!r}: shape must be a list of non-negative integers, found {_short(shape)}",
            )
        )
        return False
    if len(shape) > MAX_DIMS:
        problems.append(
            Problem(
                name,
                f"at most {MAX_DIMS} dimensions",
                f"{len(shape)} dimensions",
                f"tensor {name!r}: shape has {len(shape)} dimensions; the limit is {MAX_DIMS}",
            )
        )
        return False
    big = [d for d in shape if d > MAX_DIM_SIZE]
    if big:
        problems.append(
            Problem(
                name,
                "dimensions below 2**63",
                _short(big[0]),
                f"tensor {name!r}: dimension {_short(big[0])} is too large; the limit is 2**63 - 1",
            )
        )
        return False
    if math.prod(shape) > MAX_DIM_SIZE:  # at most 8 factors below 2**63: cheap
        problems.append(
            Problem(
                name,
                "fewer than 2**63 elements",
                _short(shape),
                f"tensor {name!r}: shape {_short(shape)} holds 2**63 elements or more",
            )
        )
        return False
    return True


def _check_layout(spans: dict[str, tuple[int, int]], data_size: int, problems: list[Problem]) -> None:
    """Offsets inside the data section, and the data section covered exactly, without overlap."""
    for name, (begin, end) in spans.items():
        if end > data_size:
            problems.append(
                Problem(
                    name,
                    f"end <= {data_size} (data section size)",
                    f"[{begin}, {end}]",
                    f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the data section "
                    f"({data_size} bytes)",
                )
            )
    cursor = 0
    owner: str | None = None  # the tensor that ends at ``cursor``
    for name, (begin, end) in sorted(spans.items(), key=lambda kv: (kv[1], kv[0])):
        if begin < cursor:
            problems.append(
                Problem(
                    name,
                    f"begin >= {cursor} (end of {owner!r})",
                    f"[{begin}, {end}]",
                    f"tensor {name!r}: data_offsets [{begin}, {end}] overlap tensor {owner!r}, which ends at {cursor}",
                )
            )
        elif begin > cursor:
            where = f"after tensor {owner!r}" if owner is not None else "at the start of the data section"
            problems.append(
                Problem(
                    name,
                    f"begin == {cursor}",
                    f"begin == {begin}",
                    f"gap of {begin - cursor} unused bytes [{cursor}, {begin}) {where}, before tensor {name!r}",
                )
            )
        if end >= cursor:
            cursor, owner = end, name
    if spans and cursor < data_size:
        problems.append(
            Problem(
                None,
                f"tensors cover all {data_size} bytes of the data section",
                f"last tensor ends at {cursor}",
                f"{data_size - cursor} unused bytes at the end of the data section, after tensor {owner!r}",
            )
        )


def read_header(
    read_at: ReadAt, file_size: int, *, max_header_bytes: int = MAX_HEADER_BYTES
) -> tuple[Header | None, list[Problem]]:
    """Read and validate a safetensors header from its first ``8 + N`` bytes and the file's size.

    Returns ``(header, problems)``. The file is valid exactly when ``problems`` is empty. ``header``
    is ``None`` when the JSON could not be read as an object at all; otherwise it holds the tensor
    entries that are well formed on their own (known dtype, valid shape and offsets, matching size),
    even if the file as a whole has problems. Never reads more than ``8 + N`` bytes, and refuses
    ``N > max_header_bytes`` without reading the header.
    """
    if file_size < 0:
        raise ValueError(f"file_size must be >= 0, got {file_size}")
    problems = ProblemList(MAX_PROBLEMS)
    header, _ = _read_header(read_at, file_size, max_header_bytes, problems)
    return header, problems.finish()


def _read_header(
    read_at: ReadAt, file_size: int, max_header_bytes: int, problems: list[Problem]
) -> tuple[Header | None, list[Problem]]:
    """:func:`read_header`'s work, its problems collected in ``problems``."""
    if file_size < 8:
        problems.append(
            Problem(
                None,
                "at least 8 bytes",
                f"{file_size} bytes",
                f"file is {file_size} bytes, shorter than the 8-byte header length",
            )
        )
        return None, problems
    prefix = read_at(0, 8)
    if len(prefix) != 8:
        problems.append(
            Problem(None, "8 bytes", f"{len(prefix)} bytes", f"could read only {len(prefix)} of the first 8 bytes")
        )
        return None, problems
    n = int.from_bytes(prefix, "little")
    if n > max_header_bytes:
        problems.append(
            Problem(
                None,
                f"header <= {max_header_bytes} bytes",
                f"{n} bytes",
                f"oversized JSON header: {n} bytes, the limit is {max_header_bytes}",
            )
        )
    if 8 + n > file_size:
        problems.append(
            Problem(
                None,
                f"header length <= {file_size - 8}",
                f"{n}",
                f"header length {n} runs past the end of the file ({file_size} bytes)",
            )
        )
    if problems:
        return None, problems

    raw = read_at(8, n)
    if len(raw) != n:
        problems.append(
            Problem(None, f"{n} bytes", f"{len(raw)} bytes", f"could read only {len(raw)} of the {n}-byte header")
        )
        return None, problems
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(
            Problem(None, "UTF-8", f"byte {raw[exc.start]:#04x} at {exc.start}", f"header is not valid UTF-8: {exc}")
        )
        return None, problems
    try:
        parsed = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
    except RecursionError:
        problems.append(Problem(None, "JSON", "nesting too deep", "header is not valid JSON: nested too deeply"))
        return None, problems
    except ValueError as exc:  # json.JSONDecodeError is a ValueError, as is a rejected NaN
        problems.append(Problem(None, "JSON", _short(text, 40), f"header is not valid JSON: {exc}"))
        return None, problems
    if not isinstance(parsed, dict):
        problems.append(
            Problem(
                None,
                "a JSON object",
                _type_name(parsed),
                f"header must be a JSON object, found {_type_name(parsed)}",
            )
        )
        return None, problems
    if not text.startswith("{"):
        # The format spec says the header MUST begin with "{" (the Rust reader does not enforce it; others do).
        problems.append(
            Problem(
                None, "'{' as the first byte", _short(text[:1]), "header must start with '{' (no leading whitespace)"
            )
        )

    header_size = 8 + n
    data_size = file_size - header_size
    for key, count in parsed.duplicates.items():
        problems.append(
            Problem(
                None if key == METADATA_KEY else _cut(key),
                "unique keys",
                f"{_short(key)} {count} times",
                f"key {_short(key)} appears {count} times in the header",
            )
        )
    tensor_count = len(parsed) - (METADATA_KEY in parsed)
    if tensor_count > MAX_TENSORS:
        problems.append(
            Problem(
                None,
                f"at most {MAX_TENSORS} tensors",
                f"{tensor_count} tensors",
                f"the header lists {tensor_count} tensors; the limit is {MAX_TENSORS}",
            )
        )
        return None, problems

    metadata = _check_metadata(parsed.get(METADATA_KEY), problems)
    tensors: dict[str, TensorInfo] = {}
    spans: dict[str, tuple[int, int]] = {}
    for name, entry in parsed.items():
        if name == METADATA_KEY:
            continue
        info, span = _check_entry(name, entry, problems)
        if span is not None:
            spans[name] = span
        if info is not None:
            tensors[name] = info
    if not any(name != METADATA_KEY for name in parsed):
        problems.append(Problem(None, "at least one tensor", "0 tensors", "the file contains no tensors"))
    _check_layout(spans, data_size, problems)
    return Header(tensors, metadata, header_size, data_size), problems


def read_header_from_path(
    path: str | os.PathLike[str], *, max_header_bytes: int = MAX_HEADER_BYTES
) -> tuple[Header | None, list[Problem]]:
    """:func:`read_header` on a local file (reads only the header)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return read_header(file_reader(f), size, max_header_bytes=max_header_bytes)


def read_header_from_bytes(
    data: bytes | bytearray | memoryview, *, max_header_bytes: int = MAX_HEADER_BYTES
) -> tuple[Header | None, list[Problem]]:
    """:func:`read_header` on a file held in memory."""
    view = memoryview(data).cast("B")
    return read_header(bytes_reader(view), view.nbytes, max_header_bytes=max_header_bytes)


def non_float_problems(header: Header) -> list[Problem]:
    """One problem per tensor whose dtype is not a real floating-point type.

    Kept apart from :func:`read_header` because integer tensors (indices, masks) are legal in
    safetensors files in general; adapter weights, however, must be floating point.
    """
    expected = "a floating-point dtype (" + ", ".join(sorted(FLOAT_DTYPES)) + ")"
    return [
        Problem(
            info.name,
            expected,
            info.dtype,
            f"tensor {info.name!r}: dtype {info.dtype} is not floating point; adapter weights must be",
        )
        for info in header.tensors.values()
        if info.dtype not in FLOAT_DTYPES
    ]
