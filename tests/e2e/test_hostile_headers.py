"""A hostile safetensors header against the registry running as a real process: it is refused in
milliseconds with a 422 naming the limit, and the server keeps answering other requests meanwhile.

The header (1.6 MB) gives one tensor 80,000 dimensions of 10**18. Multiplying those out holds the
GIL for seconds (the whole server froze for 7.5 s, then answered 500); the parser now refuses a
shape of more than ``MAX_DIMS`` dimensions before it computes anything from it.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import uuid
from typing import TYPE_CHECKING

import httpx

from sdk.client import Client
from sdk.safetensors_header import MAX_DIMS

if TYPE_CHECKING:
    from e2e_server import Server


def tiny_llama_config() -> dict:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2).to_dict()


def test_a_hostile_header_is_refused_quickly_while_other_requests_are_served(local_server: Server,
                                                                               tmp_path) -> None:  # type: ignore[no-untyped-def]
    ns = f"hostile{uuid.uuid4().hex[:6]}"
    token = local_server.token(ns, "read", "write")
    with Client(local_server.url, token, cache_dir=tmp_path / "cache", quiet=True) as c:
        c.register_base_model(tiny_llama_config(), f"{ns}/base")
    config = json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                         "base_model_name_or_path": f"{ns}/base"}).encode()
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**18] * 80_000, "data_offsets": [0, 4]}}).encode()
    weights = struct.pack("<Q", len(header)) + header + b"\0" * 4
    assert len(weights) > 1_600_000

    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:  # GETs one after another for as long as the hostile push is in flight
        with httpx.Client(base_url=local_server.url, timeout=60) as other:
            while not done.is_set():
                start = time.perf_counter()
                assert other.get("/api/v1/health").status_code == 200
                latencies.append(time.perf_counter() - start)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        while not latencies:  # the poller is up
            time.sleep(0.01)
        start = time.perf_counter()
        r = httpx.post(f"{local_server.url}/api/v1/adapters/{ns}/x/versions", timeout=60,
                       headers={"Authorization": f"Bearer {token}"},
                       files={"adapter_config.json": ("adapter_config.json", config, "application/json"),
                              "adapter_model.safetensors": ("adapter_model.safetensors", weights,
                                                            "application/octet-stream")})
        took = time.perf_counter() - start
        served_during = len(latencies)
    finally:
        done.set()
        poller.join()

    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problems = r.json()["problems"]
    assert problems[0] == {"tensor": "w", "expected": f"at most {MAX_DIMS} dimensions", "found": "80000 dimensions",
                           "message": f"tensor 'w': shape has 80000 dimensions; the limit is {MAX_DIMS}"}
    # generous bounds for a loaded 2-core machine; the old parser took 7.5-13 s here and froze every request
    print(f"hostile push answered in {took:.3f} s; {served_during} GETs meanwhile, slowest {max(latencies):.3f} s")
    assert took < 3.0, took
    assert served_during >= 1 and max(latencies) < 2.0, (served_during, max(latencies))
