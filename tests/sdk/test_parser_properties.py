"""Property tests (hypothesis) for the parsers that take hostile input: the safetensors header
reader, the name grammar (the service's ``registry_service.names`` and the client's ``parse_ref``)
and the client's checks on registry answers. Whatever they are fed, they answer with their
documented result or error only, and quickly.

Runs are deterministic (``derandomize``, no example database) and small, so the file takes seconds.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry_service.errors import BadRequest
from registry_service.names import check_alias, check_part, split_name
from sdk import safetensors_header
from sdk.client import UnsafeResponse, parse_ref, trust
from sdk.client.cache import CachedVersion
from sdk.errors import AdapterError
from sdk.names import ALIAS, COMMIT, NAME_PART, VERSION
from sdk.problems import MAX_PROBLEMS, Problem
from sdk.safetensors_header import DTYPE_BITS, MAX_DIMS, read_header_from_bytes

FAST = settings(max_examples=100, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- the safetensors header -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=15,
)
dims = st.integers(min_value=-2, max_value=2**70) | st.sampled_from([0, 1, 2**63 - 1, 2**63, 10**18])
entries = st.fixed_dictionaries(
    {"dtype": st.sampled_from([*DTYPE_BITS, "Q8", 7]),
     "shape": st.lists(dims, max_size=MAX_DIMS + 4) | st.just([10**18] * 2000),
     "data_offsets": st.lists(st.integers(min_value=-1, max_value=2**65), min_size=0, max_size=3)},
    optional={"extra": json_values},
)
headers = st.dictionaries(st.text(max_size=12) | st.just("__metadata__"), entries | json_values, max_size=8)


def _file(header: Any, data_size: int) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * data_size


def _check_result(data: bytes) -> None:
    start = time.perf_counter()
    header, problems = read_header_from_bytes(data, max_header_bytes=1 << 20)
    assert time.perf_counter() - start < 1.0
    assert isinstance(problems, list) and all(isinstance(p, Problem) and isinstance(p.message, str) for p in problems)
    assert len(problems) <= MAX_PROBLEMS + 1
    assert all(len(p.message) < 5000 for p in problems)
    if not problems:  # a valid file: every tensor well formed, inside the data section, covering it exactly
        assert header is not None and header.tensors
        assert all(len(t.shape) <= MAX_DIMS and t.end <= header.data_size for t in header.tensors.values())
        assert sum(t.nbytes for t in header.tensors.values()) == header.data_size


@FAST
@given(st.binary(max_size=300))
def test_header_reader_takes_any_bytes(data: bytes) -> None:
    _check_result(data)


@FAST
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**64 - 1))
def test_header_reader_takes_any_length_prefix(body: bytes, n: int) -> None:
    _check_result(struct.pack("<Q", n) + body)


@FAST
@given(headers, st.integers(min_value=0, max_value=64))
def test_header_reader_takes_any_json_header(header: Any, data_size: int) -> None:
    _check_result(_file(header, data_size))


def test_many_bad_tensors_give_a_bounded_report_quickly() -> None:
    header = {f"t{i}": {"dtype": "F32", "shape": [2**62] * 8, "data_offsets": [0, 1]} for i in range(5_000)}
    start = time.perf_counter()
    _, problems = read_header_from_bytes(_file(header, 4))
    assert time.perf_counter() - start < 2.0
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1].message.startswith("... and ")


@pytest.mark.parametrize(("entry", "message"), [
    ({"dtype": "F32", "shape": [10**18] * 80_000, "data_offsets": [0, 4]}, "80000 dimensions; the limit is 8"),
    ({"dtype": "F32", "shape": [2**63], "data_offsets": [0, 4]}, "is too large; the limit is 2**63 - 1"),
    ({"dtype": "F32", "shape": [2**62] * 8, "data_offsets": [0, 4]}, "holds 2**63 elements or more"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [2**64, 2**64 + 4]}, "do not fit in 64 bits"),
])
def test_hostile_shapes_are_refused_in_milliseconds(entry: dict, message: str) -> None:
    data = _file({"w": entry}, 4)
    start = time.perf_counter()
    _, problems = read_header_from_bytes(data)
    assert time.perf_counter() - start < 0.5
    assert any(message in p.message for p in problems), problems


def test_too_many_tensors_and_too_long_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safetensors_header, "MAX_TENSORS", 1000)  # the default (100,000) costs seconds to build
    many = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(1001)}
    _, problems = read_header_from_bytes(_file(many, 1001))
    assert [p.message for p in problems] == ["the header lists 1001 tensors; the limit is 1000"]
    _, problems = read_header_from_bytes(_file(dict(list(many.items())[:1000]), 1000))
    assert problems == []
    long = "x" * 5000
    _, problems = read_header_from_bytes(_file({long: {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, 1))
    assert problems[0].message.startswith("tensor name 'xxx") and "5000 characters long; the limit is 1024" in \
        problems[0].message and len(problems[0].tensor or "") <= 80


# --- names and references ---------------------------------------------------------------------------

names = st.text(max_size=40) | st.from_regex(NAME_PART, fullmatch=True).map(lambda s: s + "\n") \
    | st.from_regex(NAME_PART, fullmatch=True)
refs = st.text(max_size=60) | st.builds(lambda a, b, r: f"{a}/{b}@{r}", names, names, names | st.text(max_size=8))


def _ascii_safe(s: str) -> bool:
    return s.isascii() and all(ch.isalnum() or ch in "_.-" for ch in s)


@FAST
@given(names, st.sampled_from(["namespace", "adapter name"]))
def test_service_name_parts(value: str, what: str) -> None:
    try:
        assert check_part(value, what) == value
    except BadRequest:
        return
    assert _ascii_safe(value) and 1 <= len(value) <= 96 and ".." not in value


@FAST
@given(names)
def test_service_aliases(value: str) -> None:
    try:
        assert check_alias(value) == value
    except BadRequest:
        return
    assert _ascii_safe(value) and value[0].isalpha() and len(value) <= 64 and not COMMIT.match(value)


@FAST
@given(refs)
def test_service_split_name(value: str) -> None:
    try:
        ns, name = split_name(value)
    except BadRequest:
        return
    assert f"{ns}/{name}" == value and _ascii_safe(ns) and _ascii_safe(name)


@FAST
@given(refs, st.none() | st.integers(min_value=0, max_value=10**20) | st.text(max_size=5))
def test_client_parse_ref(value: str, version: int | str | None) -> None:
    try:
        ns, name, ref = parse_ref(value, version)
    except AdapterError:
        return
    assert NAME_PART.match(ns) and NAME_PART.match(name) and value.startswith(f"{ns}/{name}")
    assert ref is None or bool(VERSION.match(ref) or COMMIT.match(ref) or ALIAS.match(ref))
    assert "\n" not in (ref or "")


@pytest.mark.parametrize("bad", ["alice\n", "alice\r", "\nalice", "al ice", "alice/", "ali..ce", "-alice", "a" * 97])
def test_names_are_anchored(bad: str) -> None:
    with pytest.raises(BadRequest):
        check_part(bad, "namespace")


@pytest.mark.parametrize("bad", ["prod\n", "prod\r\n", "\nprod", "pr od", "1prod", "p" * 65, "c" * 40, "prod/x"])
def test_aliases_are_anchored(bad: str) -> None:
    with pytest.raises(BadRequest):
        check_alias(bad)


# --- the client's checks on registry answers ----------------------------------------------------------

@FAST
@given(json_values | st.fixed_dictionaries({"version": json_values, "commit": json_values,
                                             "files": st.lists(st.dictionaries(
                                                 st.sampled_from(["filename", "sha256", "size"]), json_values),
                                                 max_size=3)}))
def test_version_answers(body: Any) -> None:
    try:
        v = CachedVersion.from_json(body)
    except UnsafeResponse:
        return
    assert COMMIT.match(v.commit) and v.version >= 1
    assert all("/" not in f["filename"] and not f["filename"].startswith(".") for f in v.files)


@FAST
@given(st.text(max_size=60) | st.builds(lambda p, s: f"{s}://{p}", st.text(max_size=30),
                                        st.sampled_from(["http", "https", "ftp", ""])),
       st.sampled_from(["http://127.0.0.1:8000", "https://registry.example"]))
def test_url_answers(url: str, base: str) -> None:
    for check in (trust.registry_url, trust.storage_url):
        try:
            assert check(base, url) == url
        except UnsafeResponse:
            pass
