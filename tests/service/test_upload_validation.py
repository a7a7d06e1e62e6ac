"""Malformed and mismatched pushes, table-driven: each is refused with a precise problem and leaves nothing behind.

Every case starts from one valid adapter saved by the SDK and breaks exactly one thing (a byte of
the safetensors header, a tensor shape, a config field, a form field, a filename, the token). The
test takes a snapshot of every table's row count and every blob key, pushes, checks the RFC 9457
answer (status, ``application/problem+json``, a ``detail`` and, for 422, ``problems`` entries of
``{tensor, expected, found, message}`` that name the problem), and checks the snapshot again.
The whole table runs against one local registry shared by the module (each case pushes to an adapter
of its own, and the snapshots are taken just around its push); a few representative cases also run
on S3, each against a fresh registry from the ``registry`` fixture.
"""

from __future__ import annotations

import functools
import json
import struct
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from litestar.testing import AsyncTestClient
from registry_testkit import TEMPLATE_DB, Registry, _db_url, register_base, saved_adapter, snapshot, tiny_llama
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import sdk
from registry_service.app import create_app
from registry_service.settings import Settings
from registry_service.storage import LocalBlobStore, blob_key

BASE = "meta/tiny-llama"
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
README = "README.md"
MAX_HEADER_BYTES = 16 * 2**20  # Settings.max_header_bytes
MAX_CONFIG_BYTES = 1 * 2**20

P = "base_model.model.model.layers."
Q0A = P + "0.self_attn.q_proj.lora_A.weight"
Q0B = P + "0.self_attn.q_proj.lora_B.weight"
V1B = P + "1.self_attn.v_proj.lora_B.weight"
K0A = P + "0.self_attn.k_proj.lora_A.weight"
GHOST = P + "7.self_attn.q_proj.lora_A.weight"  # the tiny Llama has two layers
DROP = object()  # a config value meaning "remove this key"


# --- the valid adapter every case starts from ----------------------------------------------------


@dataclass(frozen=True)
class Valid:
    """One adapter saved by the SDK (r=4 on q_proj and v_proj of the tiny Llama), as bytes."""

    config: bytes
    weights: bytes

    def cfg(self, **changes: Any) -> bytes:
        """The config JSON with some keys changed (``DROP`` removes a key)."""
        data = json.loads(self.config)
        for key, value in changes.items():
            if value is DROP:
                data.pop(key, None)
            else:
                data[key] = value
        return json.dumps(data, indent=2).encode()

    @property
    def header_len(self) -> int:
        return struct.unpack("<Q", self.weights[:8])[0]

    def header(self) -> dict[str, Any]:
        """The safetensors header as a dict (in file order)."""
        return json.loads(self.weights[8 : 8 + self.header_len])

    @property
    def data(self) -> bytes:
        return self.weights[8 + self.header_len :]

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(st_load(self.weights))


def pack(header: bytes, data: bytes) -> bytes:
    """A safetensors file from raw header bytes and a data section."""
    return struct.pack("<Q", len(header)) + header + data


def dump(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode()


def with_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """A well-formed safetensors file holding ``tensors`` (shape problems only, no layout problems)."""
    return st_save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})


def shift(header: dict[str, Any], start: int, by: int) -> None:
    """Move every tensor whose data starts at or after ``start`` by ``by`` bytes."""
    for name, entry in header.items():
        if name != "__metadata__" and entry["data_offsets"][0] >= start:
            entry["data_offsets"] = [o + by for o in entry["data_offsets"]]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Valid:
    folder = saved_adapter(tmp_path_factory.mktemp("valid"))
    return Valid((folder / CONFIG).read_bytes(), (folder / WEIGHTS).read_bytes())


# --- multipart bodies, built by hand so that odd names (NUL, '../') reach the server unchanged ----


@dataclass(frozen=True)
class Part:
    """One multipart part: a file when ``filename`` is set, a plain form field otherwise."""

    name: str
    data: bytes
    filename: str | None = None


def encode(parts: list[Part]) -> tuple[bytes, str]:
    """``multipart/form-data`` body and content type."""
    boundary = f"----upload-validation-{uuid.uuid4().hex}"
    out = bytearray()
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if part.filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + part.data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def upload(config: bytes | None, weights: bytes | None, *extra: Part, **form: str | None) -> list[Part]:
    """The parts of a push: config and weights files (``None`` leaves one out), extra parts, form fields."""
    parts = []
    if config is not None:
        parts.append(Part(CONFIG, config, CONFIG))
    if weights is not None:
        parts.append(Part(WEIGHTS, weights, WEIGHTS))
    parts += extra
    fields: dict[str, str | None] = {"base_model": BASE, **form}
    parts += [Part(k, v.encode()) for k, v in fields.items() if v is not None]
    return parts


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """What a case can use to prepare the registry before the snapshot."""

    registry: Registry
    valid: Valid
    writer: str
    url: str


@dataclass(frozen=True)
class Case:
    """A push that must be refused."""

    id: str
    build: Callable[[Valid], list[Part]]
    status: int
    detail: str  # a distinctive substring of ``detail`` (and, for 422, of one problem's message)
    tensor: str | None = None  # the problem naming ``detail`` must be about this tensor
    token: str = "writer"  # "writer", "none", "garbage", "other-namespace", "read-only"
    setup: Callable[[Ctx], Awaitable[None]] | None = None
    problem_fields: dict[str, str] = field(default_factory=dict)  # substrings of expected/found


async def first_push(ctx: Ctx) -> None:
    """A successful first version of the case's adapter, before the snapshot."""
    r = await post(ctx.registry, ctx.url, upload(ctx.valid.config, ctx.valid.weights), ctx.writer)
    assert r.status_code == 201, r.text


# builders: each takes the valid adapter and breaks one thing


def truncated(v: Valid) -> list[Part]:
    return upload(v.config, v.weights[:-100])


def header_len_past_eof(v: Valid) -> list[Part]:
    return upload(v.config, struct.pack("<Q", len(v.weights)) + v.weights[8:])


def shorter_than_8(v: Valid) -> list[Part]:
    return upload(v.config, v.weights[:5])


def empty_weights(v: Valid) -> list[Part]:
    return upload(v.config, b"")


def overlapping(v: Valid) -> list[Part]:
    # lora_B of layer 0 q_proj (512 bytes) points at lora_A's bytes; its own bytes are removed,
    # so the data section is still exactly covered and only the overlap is wrong.
    h = v.header()
    begin, end = h[Q0B]["data_offsets"]
    h[Q0B]["data_offsets"] = list(h[Q0A]["data_offsets"])
    shift(h, end, -(end - begin))
    return upload(v.config, pack(dump(h), v.data[:begin] + v.data[end:]))


def gapped(v: Valid) -> list[Part]:
    h = v.header()
    begin = h[Q0B]["data_offsets"][0]
    shift(h, begin, 16)
    return upload(v.config, pack(dump(h), v.data[:begin] + bytes(16) + v.data[begin:]))


def offsets_past_data(v: Valid) -> list[Part]:
    h = v.header()
    h[V1B]["data_offsets"] = [o + 2**32 for o in h[V1B]["data_offsets"]]
    return upload(v.config, pack(dump(h), v.data))


def set_dtype(dtype: str) -> Callable[[Valid], list[Part]]:
    def build(v: Valid) -> list[Part]:
        h = v.header()
        h[Q0A]["dtype"] = dtype
        return upload(v.config, pack(dump(h), v.data))

    return build


def duplicate_key(v: Valid) -> list[Part]:
    h = v.header()
    entry = json.dumps(h[Q0A], separators=(",", ":"))
    text = dump(h).decode()
    doubled = text[:-1] + f',"{Q0A}":{entry}' + "}"  # the same key again, same entry
    return upload(v.config, pack(doubled.encode(), v.data))


def invalid_utf8_header(v: Valid) -> list[Part]:
    raw = dump(v.header())
    assert raw.count(b'"pt"') == 1
    return upload(v.config, pack(raw.replace(b'"pt"', b'"p\xff"'), v.data))


def invalid_json_header(v: Valid) -> list[Part]:
    raw = dump(v.header())
    return upload(v.config, pack(raw[:-1] + b" ", v.data))  # the closing brace is missing


def header_is_array(v: Valid) -> list[Part]:
    return upload(v.config, pack(b"[1, 2, 3]", v.data))


def oversized_header(v: Valid) -> list[Part]:
    h = v.header()
    h["__metadata__"]["padding"] = "x" * MAX_HEADER_BYTES
    raw = dump(h)
    assert len(raw) > MAX_HEADER_BYTES
    return upload(v.config, pack(raw, v.data))


def no_tensors(v: Valid) -> list[Part]:
    return upload(v.config, pack(b'{"__metadata__":{"format":"pt"}}', b""))


def replace_tensor(name: str, shape: tuple[int, ...]) -> Callable[[Valid], list[Part]]:
    def build(v: Valid) -> list[Part]:
        t = v.tensors()
        t[name] = torch.randn(shape)
        return upload(v.config, with_tensors(t))

    return build


def drop_tensor(name: str) -> Callable[[Valid], list[Part]]:
    def build(v: Valid) -> list[Part]:
        t = v.tensors()
        del t[name]
        return upload(v.config, with_tensors(t))

    return build


def rank_pattern_mismatch(v: Valid) -> list[Part]:
    return upload(v.cfg(rank_pattern={"q_proj": 8}), v.weights)


def all_b_zero(v: Valid, **form: str) -> list[Part]:
    t = v.tensors()
    for name in t:
        if ".lora_B." in name:
            t[name] = torch.zeros_like(t[name])
    return upload(v.config, with_tensors(t), **form)


# other methods: one valid adapter each (random weights, the same tiny Llama), then one tensor broken
METHOD_CONFIGS: dict[str, Callable[[], Any]] = {
    "IA3": lambda: sdk.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                                 init_ia3_weights=False),
    "LOHA": lambda: sdk.LoHaConfig(r=4, target_modules=["q_proj", "v_proj"], init_weights=False),
    "LOKR": lambda: sdk.LoKrConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_weights=False),
    "DORA": lambda: sdk.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False),
    "POLY": lambda: sdk.PolyConfig(r=4, n_tasks=3, n_skills=2, n_splits=2, target_modules=["q_proj", "v_proj"],
                                   init_weights=False),
    "PROMPT_TUNING": lambda: sdk.PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    "PREFIX_TUNING": lambda: sdk.PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
}


@functools.cache
def method_adapter(method: str) -> Valid:
    """A valid adapter of ``method`` (a ``METHOD_CONFIGS`` key) for the registered base model, as bytes."""
    torch.manual_seed(1)
    model = sdk.get_peft_model(tiny_llama(), METHOD_CONFIGS[method]())
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return Valid((Path(tmp) / CONFIG).read_bytes(), (Path(tmp) / WEIGHTS).read_bytes())


def method_tensor(method: str, name: str, shape: tuple[int, ...]) -> Callable[[Valid], list[Part]]:
    def build(_: Valid) -> list[Part]:
        adapter = method_adapter(method)
        t = adapter.tensors()
        assert name in t, f"{name} is not in the {method} adapter"
        t[name] = torch.randn(shape)
        return upload(adapter.config, with_tensors(t))

    return build


def method_config(method: str, **changes: Any) -> Callable[[Valid], list[Part]]:
    """The ``method`` adapter with some config keys changed (its weights as saved)."""
    return lambda _: upload(method_adapter(method).cfg(**changes), method_adapter(method).weights)


def config(raw: Callable[[Valid], bytes], **form: str | None) -> Callable[[Valid], list[Part]]:
    return lambda v: upload(raw(v), v.weights, **form)


def oversized_config(v: Valid) -> bytes:
    data = json.loads(v.config)
    data["padding"] = "x" * MAX_CONFIG_BYTES
    return json.dumps(data).encode()


def config_not_utf8(v: Valid) -> bytes:
    raw = v.config.replace(b'"task_type": null', b'"task_type": "caf\xe9"')  # Latin-1 'é': not UTF-8
    assert raw != v.config
    return raw


def form(*files: str, **fields: str | None) -> Callable[[Valid], list[Part]]:
    """The valid files with some form fields changed; ``files`` adds a README with unique bytes."""
    extra = [Part(f, f"# {uuid.uuid4()}\n".encode(), f) for f in files]
    return lambda v: upload(v.config, v.weights, *extra, **fields)


def extra_part(part: Part, *, weights: bool = True) -> Callable[[Valid], list[Part]]:
    return lambda v: upload(v.config, v.weights if weights else None, part)


def weights_named(filename: str) -> Callable[[Valid], list[Part]]:
    return lambda v: upload(v.config, None, Part(WEIGHTS, v.weights, filename))


def pickle_upload(v: Valid) -> list[Part]:
    return upload(v.config, None, Part("adapter_model.bin", b"\x80\x04\x95" + bytes(64), "adapter_model.bin"))


CASES: list[Case] = [
    # the safetensors container
    Case("truncated-file", truncated, 422, "run past the end of the data section", tensor=V1B),
    Case("header-length-past-eof", header_len_past_eof, 422, "runs past the end of the file"),
    Case("file-shorter-than-8-bytes", shorter_than_8, 422, "shorter than the 8-byte header length"),
    Case("empty-weights-file", empty_weights, 422, "file is 0 bytes"),
    Case("overlapping-offsets", overlapping, 422, "overlap tensor", tensor=Q0B),
    Case("gap-in-offsets", gapped, 422, "gap of 16 unused bytes", tensor=Q0B),
    Case("offsets-past-data", offsets_past_data, 422, "run past the end of the data section", tensor=V1B),
    Case("unknown-dtype", set_dtype("Q4_K"), 422, "unknown dtype 'Q4_K'", tensor=Q0A),
    Case("integer-dtype", set_dtype("I32"), 422, "dtype I32 is not floating point", tensor=Q0A),
    Case("duplicate-tensor-key", duplicate_key, 422, "appears 2 times in the header", tensor=Q0A),
    Case("header-not-utf8", invalid_utf8_header, 422, "header is not valid UTF-8"),
    Case("header-not-json", invalid_json_header, 422, "header is not valid JSON"),
    Case("header-json-array", header_is_array, 422, "header must be a JSON object"),
    Case("header-oversized", oversized_header, 422, "oversized JSON header",
         problem_fields={"expected": f"header <= {MAX_HEADER_BYTES} bytes"}),
    Case("no-tensors", no_tensors, 422, "the file contains no tensors"),
    # shapes against the config and the base model's signature
    Case("wrong-rank", replace_tensor(Q0A, (8, 32)), 422, "r is 8, expected 4", tensor=Q0A,
         problem_fields={"expected": "[4, 32]", "found": "[8, 32]"}),
    Case("rank-pattern-mismatch", rank_pattern_mismatch, 422, "r is 4, expected 8", tensor=Q0A,
         problem_fields={"expected": "[8, 32]", "found": "[4, 32]"}),
    Case("wrong-in-features", replace_tensor(Q0A, (4, 16)), 422, "in_features is 16, expected 32", tensor=Q0A),
    Case("wrong-out-features", replace_tensor(Q0B, (16, 4)), 422, "out_features is 16, expected 32", tensor=Q0B),
    Case("wrong-number-of-dims", replace_tensor(Q0A, (4, 32, 1)), 422, "has 3 dimensions, expected 2",
         tensor=Q0A),
    Case("module-not-in-base-model", lambda v: upload(v.config, with_tensors({**v.tensors(),
                                                                              GHOST: torch.randn(4, 32)})),
         422, "maps to no module of the base model signature", tensor=GHOST),
    Case("module-not-targeted", lambda v: upload(v.config, with_tensors({**v.tensors(), K0A: torch.randn(4, 32)})),
         422, "model.layers.0.self_attn.k_proj exists in the base model, but the adapter config does not target",
         tensor=K0A),
    Case("missing-lora-B", drop_tensor(V1B), 422, "v_proj.lora_B.weight is missing", tensor=V1B),
    # other methods' tensors against the config and the signature
    Case("ia3-feedforward-vector-as-output-vector", method_tensor("IA3", P + "0.mlp.down_proj.ia3_l", (64, 1)), 422,
         "in_features is 1, expected 64", tensor=P + "0.mlp.down_proj.ia3_l",
         problem_fields={"expected": "[1, 64]", "found": "[64, 1]"}),
    Case("ia3-wrong-out-features", method_tensor("IA3", P + "1.self_attn.v_proj.ia3_l", (32, 1)), 422,
         "out_features is 32, expected 16", tensor=P + "1.self_attn.v_proj.ia3_l"),
    Case("loha-wrong-rank", method_tensor("LOHA", P + "0.self_attn.q_proj.hada_w1_a", (32, 8)), 422,
         "r is 8, expected 4", tensor=P + "0.self_attn.q_proj.hada_w1_a",
         problem_fields={"expected": "[32, 4]", "found": "[32, 8]"}),
    Case("loha-wrong-in-features", method_tensor("LOHA", P + "1.self_attn.v_proj.hada_w2_b", (4, 16)), 422,
         "in_features is 16, expected 32", tensor=P + "1.self_attn.v_proj.hada_w2_b"),
    Case("lokr-wrong-kronecker-factor", method_tensor("LOKR", P + "0.mlp.down_proj.lokr_w2", (8, 4)), 422,
         "d is 4, expected 8", tensor=P + "0.mlp.down_proj.lokr_w2",
         problem_fields={"expected": "[8, 8]", "found": "[8, 4]"}),
    Case("dora-magnitude-wrong-length",
         method_tensor("DORA", P + "0.self_attn.v_proj.lora_magnitude_vector", (32,)), 422,
         "out_features is 32, expected 16", tensor=P + "0.self_attn.v_proj.lora_magnitude_vector"),
    Case("poly-router-wrong-n-tasks",
         method_tensor("POLY", P + "0.self_attn.q_proj.poly_router.module_logits", (5, 4)), 422,
         "n_tasks is 5, expected 3", tensor=P + "0.self_attn.q_proj.poly_router.module_logits",
         problem_fields={"expected": "[3, 4]", "found": "[5, 4]"}),
    Case("poly-skills-wrong-rank", method_tensor("POLY", P + "1.self_attn.v_proj.poly_lora_B", (2, 2, 8, 8)), 422,
         "r is 8, expected 4", tensor=P + "1.self_attn.v_proj.poly_lora_B"),
    Case("poly-n_splits-does-not-divide", method_config("POLY", n_splits=3), 422, "n_splits=3 must divide"),
    # prompt methods: the table's shape, and token_dim / num_layers / heads against the base model's config
    Case("prompt-embeddings-wrong-rows", method_tensor("PROMPT_TUNING", "prompt_embeddings", (5, 32)), 422,
         "num_virtual_tokens·num_transformer_submodules is 5, expected 4", tensor="prompt_embeddings",
         problem_fields={"expected": "[4, 32]", "found": "[5, 32]"}),
    Case("prompt-token_dim-not-hidden-size", method_config("PROMPT_TUNING", token_dim=64), 422,
         "token_dim=64 but the base model's width of the virtual tokens is 32 (its hidden size)"),
    Case("prefix-num_layers-mismatch", method_config("PREFIX_TUNING", num_layers=3), 422,
         "num_layers=3 but the base model's number of transformer layers is 2"),
    Case("prefix-heads-not-key-value-heads", method_config("PREFIX_TUNING", num_attention_heads=4), 422,
         "num_attention_heads=4 but the base model's number of attention heads is 2 (its key/value heads)"),
    Case("all-lora-B-zero-not-untrained", all_b_zero, 422, "is all zeros",
         problem_fields={"found": "untrained weights"}),
    # pickles and file names
    Case("pickle-field-adapter_model.bin", pickle_upload, 422, "the registry never loads pickles"),
    Case("pickle-bin-filename", weights_named("adapter_model.bin"), 422, "the registry never loads pickles"),
    Case("traversal-filename", weights_named("../adapter_model.safetensors"), 422, "invalid filename"),
    Case("traversal-field-name", extra_part(Part("../x", b"x", "x")), 422, "invalid filename '../x'"),
    Case("absolute-filename", weights_named("/etc/adapter_model.safetensors"), 422, "invalid filename"),
    Case("backslash-filename", weights_named("..\\adapter_model.safetensors"), 422, "invalid filename"),
    Case("nul-in-filename", weights_named("adapter_model\x00.safetensors"), 422, "invalid filename"),
    Case("unexpected-file", extra_part(Part("model.onnx", b"onnx", "model.onnx")), 422,
         "unexpected file 'model.onnx'"),
    Case("missing-config", lambda v: upload(None, v.weights), 422, "the push has no adapter_config.json"),
    Case("missing-weights", lambda v: upload(v.config, None), 422, "the push has no adapter_model.safetensors"),
    Case("weights-sent-twice", extra_part(Part(WEIGHTS, b"\x00" * 16, WEIGHTS)), 422,
         "adapter_model.safetensors was sent twice"),
    Case("config-sent-twice", extra_part(Part(CONFIG, b"{}", CONFIG)), 422, "adapter_config.json was sent twice"),
    Case("weights-as-text-field", lambda v: upload(v.config, None, Part(WEIGHTS, b"not a file")), 422,
         "must be sent as a file"),
    Case("readme-too-large", extra_part(Part(README, b"#" * (MAX_CONFIG_BYTES + 1), README)), 413,
         "README.md is larger than"),
    # the config
    Case("config-not-json", config(lambda v: b'{"peft_type": "LORA", r: 4}'), 422, "is not valid JSON"),
    Case("config-not-utf8", config(config_not_utf8), 422, "is not valid UTF-8"),
    Case("config-json-array", config(lambda v: b"[]"), 422, "must hold a JSON object"),
    Case("config-without-peft_type", config(lambda v: v.cfg(peft_type=DROP)), 422, "has no 'peft_type'"),
    Case("config-unknown-peft_type", config(lambda v: v.cfg(peft_type="SPLINE")), 422,
         "unknown adapter method peft_type='SPLINE'"),
    Case("config-use_dora-without-magnitudes", config(lambda v: v.cfg(use_dora=True)), 422,
         "q_proj.lora_magnitude_vector is missing", tensor=P + "0.self_attn.q_proj.lora_magnitude_vector"),
    Case("config-r-zero", config(lambda v: v.cfg(r=0)), 422, "`r` must be a positive integer, got 0"),
    Case("config-oversized", config(oversized_config), 413, "adapter_config.json is larger than 1048576 bytes"),
    Case("config-lora_dropout-not-a-number", config(lambda v: v.cfg(lora_dropout="high")), 422, "lora_dropout"),
    Case("config-target_modules-integer", config(lambda v: v.cfg(target_modules=5)), 422, "target_modules"),
    Case("config-rank_pattern-bad-regex", config(lambda v: v.cfg(rank_pattern={"q_proj(": 8})), 422,
         "rank_pattern"),
    # the base model
    Case("base-model-not-registered", form(base_model="meta/nope"), 422, "base model meta/nope is not registered"),
    Case("base-model-omitted-no-usable-name", form(base_model=None), 422, "say which registered base model"),
    Case("base-model-omitted-name-without-namespace",
         config(lambda v: v.cfg(base_model_name_or_path="tiny-llama"), base_model=None), 422,
         "say which registered base model"),
    Case("base-model-malformed-name", form(base_model="tiny-llama"), 422, "'tiny-llama'"),
    Case("second-push-different-base-model", form(base_model="mirror/tiny-llama-copy"), 422,
         "is an adapter for meta/tiny-llama, not mirror/tiny-llama-copy", setup=first_push,
         problem_fields={"expected": BASE, "found": "mirror/tiny-llama-copy"}),
    Case("second-push-wrong-rank", replace_tensor(Q0A, (8, 32)), 422, "r is 8, expected 4", tensor=Q0A,
         setup=first_push),
    # other form fields
    Case("alias-latest", form(alias="latest"), 422, "'latest' is kept by the registry"),
    Case("alias-latest-on-existing-adapter", form(alias="latest"), 422, "'latest' is kept by the registry",
         setup=first_push),
    Case("alias-invalid", form(alias="1st release"), 422, "invalid alias '1st release'"),
    # (these two carry a README of their own, so that a blob is new even when the store is shared,
    # and the clean-up of blobs written before a failing insert is exercised)
    Case("nul-in-tag", form(README, tags="chat,e\x00n"), 422, "tag"),
    Case("tag-longer-than-64", form(tags="chat," + "t" * 70), 422, "t" * 70),  # the column is VARCHAR(64)[]
    Case("nul-in-description", form(README, description="a chat\x00adapter"), 422, "description"),
    # who may push
    Case("no-token", lambda v: upload(v.config, v.weights), 401, "bearer token", token="none"),
    Case("garbage-token", lambda v: upload(v.config, v.weights), 401, "unknown or revoked token",
         token="garbage"),
    Case("other-namespace-token", lambda v: upload(v.config, v.weights), 403,
         "cannot write to namespace 'alice'", token="other-namespace"),
    Case("read-only-token", lambda v: upload(v.config, v.weights), 403,
         "cannot write to namespace 'alice'", token="read-only"),
]

S3_CASES = ("truncated-file", "wrong-rank", "all-lora-B-zero-not-untrained", "pickle-field-adapter_model.bin",
            "second-push-different-base-model", "config-use_dora-without-magnitudes", "nul-in-tag")

BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"


# --- running a case ------------------------------------------------------------------------------


async def prepare(registry: Registry) -> None:
    """The base models the cases push against (the second one for "another base model")."""
    await register_base(registry, BASE, tiny_llama(), registry.admin)
    await register_base(registry, "mirror/tiny-llama-copy", tiny_llama(), registry.admin)


async def token_for(registry: Registry, kind: str, writer: str) -> str | None:
    if kind == "writer":
        return writer
    if kind == "none":
        return None
    if kind == "garbage":
        return "not-a-real-token"
    if kind == "other-namespace":
        return await registry.token("bob", "write")
    assert kind == "read-only", kind
    return await registry.token("alice", "read")


async def post(registry: Registry, url: str, parts: list[Part], token: str | None) -> Any:
    body, ctype = encode(parts)
    return await registry.client.post(url, content=body, headers={"Content-Type": ctype, **registry.auth(token)})


async def run_case(registry: Registry, case: Case, valid: Valid) -> None:
    url = f"/api/v1/adapters/alice/{case.id}/versions"  # an adapter of its own, even on a shared registry
    writer = await registry.token("alice", "write")
    if case.setup is not None:
        await case.setup(Ctx(registry, valid, writer, url))
    parts = case.build(valid)
    token = await token_for(registry, case.token, writer)
    before = await snapshot(registry)

    r = await post(registry, url, parts, token)

    assert r.status_code == case.status, f"{case.id}: {r.status_code} {r.text[:2000]}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = r.json()
    assert body["status"] == case.status
    assert case.detail in body["detail"], f"{case.id}: {body['detail']!r}"
    if case.status == 422:
        problems = body["problems"]
        assert problems, body
        for p in problems:
            assert set(p) == {"tensor", "expected", "found", "message"}, p
        named = [p for p in problems if case.detail in p["message"]]
        assert named, f"{case.id}: no problem says {case.detail!r}: {problems}"
        if case.tensor is not None:
            assert any(p["tensor"] == case.tensor for p in named), f"{case.id}: {named}"
        for key, text in case.problem_fields.items():
            assert any(text in (p[key] or "") for p in named), f"{case.id}: {key} {text!r} not in {named}"
    if case.status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert await snapshot(registry) == before, f"{case.id}: the failed push left rows or blobs behind"


@pytest.fixture(scope="module")
def shared_db_url(pg_server: Any) -> Iterator[str]:
    """One database for the local table (like ``db_url``, but cloned once per module)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB};")
    yield _db_url(pg_server, name)
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local_registry(shared_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Registry]:
    """The ``registry`` fixture's local variant, started once for the whole table (each case pushes to an
    adapter of its own and compares snapshots taken just around its push, so cases cannot disturb each other)."""
    tmp = tmp_path_factory.mktemp("registry")
    settings = Settings(data_dir=tmp, database_url=shared_db_url, apply_migrations=False, debug=True)
    store = LocalBlobStore(tmp / "blobs")
    async with AsyncTestClient(app=create_app(settings, store=store)) as client:
        registry = Registry(client, store, (tmp / "admin-token").read_text().strip(), settings, shared_db_url)
        await prepare(registry)
        yield registry


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_refused_push_leaves_nothing(local_registry: Registry, case: Case, valid: Valid) -> None:
    assert not local_registry.settings.uses_s3
    await run_case(local_registry, case, valid)


@pytest.mark.parametrize("registry", ["s3"], indirect=True)
@pytest.mark.parametrize("case", [BY_ID[i] for i in S3_CASES], ids=list(S3_CASES))
async def test_refused_push_leaves_nothing_on_s3(registry: Registry, case: Case, valid: Valid) -> None:
    assert registry.settings.uses_s3
    await prepare(registry)
    await run_case(registry, case, valid)


# --- the same bytes, pushed the right way, are accepted ------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_all_zero_lora_B_is_accepted_as_untrained(local_registry: Registry, valid: Valid) -> None:
    registry = local_registry
    writer = await registry.token("alice", "write")
    before = await snapshot(registry)
    r = await post(registry, "/api/v1/adapters/alice/untrained/versions", all_b_zero(valid, untrained="true"), writer)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    counts, keys = await snapshot(registry)
    assert counts["adapter_version"] == before[0]["adapter_version"] + 1
    assert {blob_key(f["sha256"]) for f in r.json()["files"]} <= set(keys)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_valid_adapter_is_accepted(local_registry: Registry, valid: Valid) -> None:
    """The starting point of every case is itself a good push (so each case fails for its one defect)."""
    registry = local_registry
    writer = await registry.token("alice", "write")
    readme = Part(README, b"# chat\n", README)
    r = await post(registry, "/api/v1/adapters/alice/valid/versions",
                   upload(valid.config, valid.weights, readme, alias="prod", tags="chat,en", description="ok",
                          private="false"), writer)
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["r"] == 4


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("method", ["PROMPT_TUNING", "PREFIX_TUNING", "POLY"])
async def test_prompt_adapters_are_accepted(local_registry: Registry, method: str) -> None:
    """A prompt adapter (top-level ``prompt_embeddings``) that fits the base model is published, and so is a
    Poly adapter (skills and router in one file)."""
    registry = local_registry
    writer = await registry.token("alice", "write")
    adapter = method_adapter(method)
    r = await post(registry, f"/api/v1/adapters/alice/{method.lower()}/versions",
                   upload(adapter.config, adapter.weights), writer)
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["method"] == method
