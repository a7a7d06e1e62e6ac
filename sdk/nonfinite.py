"""Finding NaN and infinite values in a safetensors file while its bytes stream past.

:class:`NonFiniteScan` is fed the file's bytes in order, in chunks of any size (the same pass
that hashes them), and counts per floating-point tensor the elements that are NaN or ±Inf, by
their bit patterns alone: nothing is converted or held beyond one partial element between chunks.
The registry runs it on every upload and on every merge result before publishing, so a tensor that
would poison a model is refused by name.

Bit patterns (little-endian, as safetensors stores them): for the IEEE formats (F16, BF16, F32,
F64, the two halves of C64, F8_E5M2) an all-ones exponent; for F8_E4M3 (``float8_e4m3fn``) the
pattern S.1111.111; for the FNUZ formats the single NaN 0x80; for F8_E8M0 the NaN 0xFF. Integer
and bool dtypes, F4 and the F6 formats have no non-finite values and are not read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .problems import Problem
from .safetensors_header import MAX_HEADER_BYTES, Header, ReadAt, TensorInfo, read_header

__all__ = ["NON_FINITE_RULES", "NonFiniteScan", "count_non_finite", "scan_bytes", "scanner_for"]


@dataclass(frozen=True)
class _Rule:
    """An element is non-finite when ``(bits & mask) == value`` (``bits`` read as ``word``)."""

    word: str
    mask: int
    value: int


#: How each dtype's non-finite values look (see the module docstring).
NON_FINITE_RULES: dict[str, _Rule] = {
    "F16": _Rule("<u2", 0x7C00, 0x7C00),
    "BF16": _Rule("<u2", 0x7F80, 0x7F80),
    "F32": _Rule("<u4", 0x7F80_0000, 0x7F80_0000),
    "C64": _Rule("<u4", 0x7F80_0000, 0x7F80_0000),
    "F64": _Rule("<u8", 0x7FF0_0000_0000_0000, 0x7FF0_0000_0000_0000),
    "F8_E5M2": _Rule("u1", 0x7C, 0x7C),
    "F8_E4M3": _Rule("u1", 0x7F, 0x7F),
    "F8_E4M3FNUZ": _Rule("u1", 0xFF, 0x80),
    "F8_E5M2FNUZ": _Rule("u1", 0xFF, 0x80),
    "F8_E8M0": _Rule("u1", 0xFF, 0xFF),
}


def count_non_finite(dtype: str, data: bytes | memoryview) -> int:
    """How many elements of ``data`` (whole elements of ``dtype``) are NaN or infinite."""
    rule = NON_FINITE_RULES.get(dtype)
    if rule is None or not len(data):
        return 0
    words = np.frombuffer(data, dtype=rule.word)
    return int(np.count_nonzero((words & words.dtype.type(rule.mask)) == rule.value))


class NonFiniteScan:
    """Counts non-finite values per tensor of a file described by ``header``, fed its bytes in order.

    Call :meth:`feed` with consecutive chunks from the start of the file (header bytes included),
    then :meth:`problems`. Bytes past the last tensor are ignored.
    """

    def __init__(self, header: Header, filename: str = "") -> None:
        self.filename = filename
        self._spans = sorted(((header.header_size + t.start, header.header_size + t.end, t)
                              for t in header.tensors.values() if t.dtype in NON_FINITE_RULES and t.end > t.start),
                             key=lambda s: (s[0], s[1]))
        self._first = 0  # spans before this one have been read to their end
        self._pos = 0
        self._carry: dict[str, bytes] = {}
        self.counts: dict[str, int] = {}

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """The next ``len(chunk)`` bytes of the file."""
        view = memoryview(chunk).cast("B")
        start, end = self._pos, self._pos + len(view)
        self._pos = end
        spans = self._spans
        while self._first < len(spans) and spans[self._first][1] <= start:
            self._first += 1
        i = self._first
        while i < len(spans) and spans[i][0] < end:
            lo, hi, info = spans[i]
            if hi > start:
                self._scan(info, lo, view[max(lo, start) - start : min(hi, end) - start], max(lo, start))
            i += 1

    def _scan(self, info: TensorInfo, tensor_start: int, data: memoryview, at: int) -> None:
        """Count the whole elements of ``data`` (file offset ``at``), keeping a split one for later."""
        item = np.dtype(NON_FINITE_RULES[info.dtype].word).itemsize
        carry = self._carry.pop(info.name, b"")
        if offset := (at - tensor_start) % item:  # the rest of an element begun in an earlier chunk
            head = bytes(data[: item - offset])
            data = data[item - offset :]
            if len(head) < item - offset:
                self._carry[info.name] = carry + head
                return
            if len(carry) + len(head) == item:
                self._add(info, count_non_finite(info.dtype, carry + head))
        whole = len(data) - len(data) % item
        self._add(info, count_non_finite(info.dtype, data[:whole]))
        if whole < len(data):
            self._carry[info.name] = bytes(data[whole:])

    def _add(self, info: TensorInfo, n: int) -> None:
        if n:
            self.counts[info.name] = self.counts.get(info.name, 0) + n

    def problems(self) -> list[Problem]:
        """One problem per tensor holding NaN or Inf values, naming it and how many it holds."""
        where = f"{self.filename}: " if self.filename else ""
        out = []
        for _, _, info in self._spans:
            n = self.counts.get(info.name)
            if n:
                out.append(Problem(info.name, "finite values", f"{n} NaN/Inf of {info.numel}",
                                   f"{where}tensor {info.name!r} holds {n} non-finite values (NaN or Inf) of "
                                   f"{info.numel}; such weights would poison every output"))
        return out


def scan_bytes(header: Header, chunks: Iterable[bytes], filename: str = "") -> list[Problem]:
    """:meth:`NonFiniteScan.problems` of a whole file given as consecutive ``chunks``."""
    scan = NonFiniteScan(header, filename)
    for chunk in chunks:
        scan.feed(chunk)
    return scan.problems()


def scanner_for(read_at: ReadAt, size: int, filename: str = "", *,
                max_header_bytes: int = MAX_HEADER_BYTES) -> NonFiniteScan | None:
    """A scan for the safetensors file of ``size`` bytes behind ``read_at`` (its header read through
    it), or None when the header does not parse: validating the header reports that."""
    header, _ = read_header(read_at, size, max_header_bytes=max_header_bytes)
    return None if header is None else NonFiniteScan(header, filename)
