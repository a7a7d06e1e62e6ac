"""Prometheus metrics of the API processes, served at ``/metrics``.

- Requests by route template and status, with latency histograms and requests in progress
  (Litestar's Prometheus middleware, prefix ``adapter_registry``), and the bytes of request and
  response bodies by route (:class:`MeteredMiddleware`).
- Bytes clients moved straight to or from S3 (upload sessions finalized, downloads answered with
  a presigned redirect): :data:`S3_DIRECT_BYTES`, counted where that happens.
- The state in the database, read when ``/metrics`` is scraped (the same on every API process):
  upload sessions open and expired unfinished, merge jobs queued and running (the queue depth), and
  whether the database answered.

With several API processes (``serve --workers N``) the counters are shared through files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multi-process mode; ``serve`` sets it up), so any
process answers for all of them. Merge workers serve their own metrics (:mod:`registry_service.worker.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.types import Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text

PREFIX = "adapter_registry"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Request latency buckets, seconds: metadata calls take milliseconds, pushes of large files minutes.
LATENCY_BUCKETS: list[str | float] = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]

#: The upload-session tables, by the ``kind`` label of their gauges.
SESSION_TABLES = {"adapter": "upload_session", "base_model": "base_model_upload"}

log = logging.getLogger("adapter_registry.metrics")

RECEIVED_BYTES = Counter(f"{PREFIX}_http_received_bytes", "Bytes of request bodies received, by route",
                         ["method", "path"])
SENT_BYTES = Counter(f"{PREFIX}_http_sent_bytes", "Bytes of response bodies sent, by route", ["method", "path"])
S3_DIRECT_BYTES = Counter(
    f"{PREFIX}_s3_direct_bytes",
    "Bytes of files clients moved straight to or from S3 without passing through the API: "
    "direction=upload for finalized upload sessions, direction=download for presigned download redirects",
    ["direction"])


#: Most label combinations whose metric children :class:`MeteredMiddleware` keeps at hand (they are bounded
#: anyway: route templates × methods × status codes).
MAX_CACHED_CHILDREN = 4096


class MeteredMiddleware(PrometheusMiddleware):
    """Litestar's Prometheus middleware (the same metrics, names and labels), also counting body bytes in
    and out by route template.

    The metric children of each label combination are looked up once and kept: ``Metric.labels()`` takes
    a lock and validates the values every time, and it was called six times per request (a twentieth of a
    metadata read's CPU)."""

    def __init__(self, app: Any, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        self._children: dict[tuple[str, ...], Any] = {}
        # the plain case, served below; anything else the config adds goes through Litestar's own __call__
        self._plain = not (config.labels or config.exemplars or config.excluded_http_methods) and config.group_path

    def _child(self, kind: str, method: str, path: str, status: int) -> Any:
        key = (kind, method, path, str(status))
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= MAX_CACHED_CHILDREN:
                self._children.clear()
            labels: dict[str, str | int | float] = {"method": method, "path": path, "status_code": status,
                                                    "app_name": self._config.app_name}
            family = {"progress": self.requests_in_progress, "count": self.request_count, "time": self.request_time,
                      "error": self.requests_error_count}.get(kind)
            child = (family(labels).labels(*labels.values()) if family is not None
                     else (RECEIVED_BYTES if kind == "received" else SENT_BYTES).labels(method, path))
            self._children[key] = child
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        method, path = scope.get("method", ""), scope.get("path_template", "") or "unmatched"
        received, sent = self._child("received", method, path, 0), self._child("sent", method, path, 0)
        span = {"status": 200, "start": time.perf_counter(), "duration": 0.0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                received.inc(len(message["body"]))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                span["status"] = message["status"]
            elif message["type"] == "http.response.body":
                span["duration"] = time.perf_counter() - span["start"]
                if message.get("body"):
                    sent.inc(len(message["body"]))
            await send(message)

        if not self._plain:
            await PrometheusMiddleware.__call__(self, scope, counting_receive, counting_send)
            return
        progress = self._child("progress", method, path, 200)
        progress.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            progress.dec()
            status = int(span["status"])
            if status >= 500:
                self._child("error", method, path, status).inc()
            self._child("count", method, path, status).inc()
            self._child("time", method, path, status).observe(span["duration"])


def prometheus_config() -> PrometheusConfig:
    """Request metrics by route template (bounded label values), under the ``adapter_registry`` prefix."""
    return PrometheusConfig(app_name="adapter-registry", prefix=PREFIX, group_path=True, buckets=LATENCY_BUCKETS,
                            middleware_class=MeteredMiddleware)


class _Families:
    """A collector over metric families made for one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def database_state(state: State, timeout: float) -> list[Metric]:
    """Gauges read from the database: upload sessions open, merge jobs by state, database up."""
    up = GaugeMetricFamily(f"{PREFIX}_database_up", "Whether the database answered the last scrape (1) or not (0)")
    sessions = GaugeMetricFamily(f"{PREFIX}_upload_sessions_open",
                                 "Upload sessions open and not expired, by kind (adapter, base_model)", labels=["kind"])
    expired = GaugeMetricFamily(f"{PREFIX}_upload_sessions_expired",
                                "Upload sessions that expired unfinished, by kind: what they hold in storage stays "
                                "until a clean-up job removes it (none exists yet)", labels=["kind"])
    jobs = GaugeMetricFamily(f"{PREFIX}_merge_jobs", "Merge jobs waiting (queued: the queue depth) and running",
                             labels=["state"])

    async def read() -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        async with state.sessionmaker() as db:
            counts = " ".join(f"{'UNION ALL ' if i else ''}SELECT '{kind}', "
                              "count(*) FILTER (WHERE expires_at IS NULL OR expires_at > now()), "
                              f"count(*) FILTER (WHERE expires_at <= now()) FROM {table} "
                              "WHERE state IN ('open', 'finalizing')"
                              for i, (kind, table) in enumerate(SESSION_TABLES.items()))
            open_sessions = {str(kind): (int(live), int(dead)) for kind, live, dead in await db.execute(text(counts))}
            rows = await db.execute(text("SELECT state, count(*) FROM merge_job WHERE state IN ('queued', 'running') "
                                         "GROUP BY state"))
            by_state = {"queued": 0, "running": 0} | {str(s): int(n) for s, n in rows}
            return open_sessions, by_state

    try:
        open_sessions, by_state = await asyncio.wait_for(read(), timeout)
    except Exception as exc:  # the scrape still answers, with the database marked down
        log.warning("metrics: the database did not answer: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    for kind, (live, dead) in sorted(open_sessions.items()):
        sessions.add_metric([kind], live)
        expired.add_metric([kind], dead)
    for name, n in sorted(by_state.items()):
        jobs.add_metric([name], n)
    return [up, sessions, expired, jobs]


def process_registry() -> Any:
    """This process's metrics, or every API process's when they share a multi-process directory."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


@get("/metrics", tags=["service"], include_in_schema=False)
async def metrics(state: State) -> Response[bytes]:
    """Prometheus text exposition: request metrics, byte counters and the database's state."""
    body = generate_latest(process_registry())
    body += generate_latest(_Families(await database_state(state, state.settings.probe_timeout_s)))  # type: ignore[arg-type]
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def mark_process_dead() -> None:
    """In multi-process mode, drop this process's live gauges (call when an API process stops)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


__all__ = ["S3_DIRECT_BYTES", "MeteredMiddleware", "mark_process_dead", "metrics", "prometheus_config"]
