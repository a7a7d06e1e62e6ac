"""Worker settings, read from ``ADAPTER_REGISTRY_WORKER_*`` variables (the service settings stay in
:mod:`registry_service.settings`; these only concern the processes that run merge jobs)."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

ENV = "ADAPTER_REGISTRY_WORKER_"


def _default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs jobs, notices dead workers, and reports progress."""

    #: Jobs run at once by one worker process.
    concurrency: int = 1
    #: Seconds between the worker's heartbeats in the queue.
    heartbeat_s: float = 10.0
    #: A worker without a heartbeat for this long is dead: its running jobs are retried.
    stall_timeout_s: float = 60.0
    #: Seconds between looks for jobs of dead workers (every worker looks; the first one retries them).
    stall_check_s: float = 15.0
    #: Seconds between looks for jobs the queue retried (new jobs arrive at once through LISTEN/NOTIFY).
    poll_s: float = 5.0
    #: Runs of one job at most (worker deaths and unexpected errors both count).
    max_attempts: int = 3
    #: Seconds between progress writes (and looks at the cancel flag) while a job runs.
    progress_interval_s: float = 1.0
    #: A pause at every step of a job. For tests and demos only: makes jobs slow enough to watch.
    step_delay_s: float = 0.0
    #: Where inputs are downloaded and results written before they are stored.
    scratch_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    #: How this worker signs the jobs it runs.
    name: str = field(default_factory=_default_name)

    @classmethod
    def from_env(cls, **overrides: object) -> WorkerSettings:
        """Read ``ADAPTER_REGISTRY_WORKER_*`` (``CONCURRENCY``, ``HEARTBEAT_S``, ``STALL_TIMEOUT_S``, …);
        keyword overrides that are not None win."""
        values: dict[str, object] = {}
        for f in cls.__dataclass_fields__.values():
            raw = os.environ.get(ENV + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
            try:
                values[f.name] = {"int": int, "float": float, "Path": Path}.get(kind, str)(raw)  # type: ignore[operator]
            except ValueError as exc:
                raise ValueError(f"{ENV + f.name.upper()}={raw!r} is not a valid {kind}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = replace(cls(), **values)  # type: ignore[arg-type]
        if s.concurrency < 1 or s.max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if s.heartbeat_s >= s.stall_timeout_s:
            raise ValueError(f"the heartbeat ({s.heartbeat_s}s) must come more often than the stall timeout "
                             f"({s.stall_timeout_s}s), or live workers would look dead")
        return s
